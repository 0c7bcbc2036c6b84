"""The ingress's checks before verification: body size, client address, and the rejection log."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from relay import clock
from relay.keys import (
    AUTH_ERRORS,
    AUTH_FAILURES_CAP,
    AUTH_FAILURES_TTL_S,
    REJECTIONS_CAP,
    UNKNOWN_SOURCE,
    Keys,
    auth_failures,
    inbound_stat,
)
from relay.logs import get_logger

if TYPE_CHECKING:
    from relay.rejected import Keeper, PendingKeep, RejectedRequest

log = get_logger("relay.ingress")


class TooLarge(Exception):
    pass


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, never reading past `limit` bytes (TooLarge instead)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def client_ip(request: web.Request, trusted_proxy_hops: int) -> str:
    """The socket peer, or with N trusted proxies the address the outermost of them saw."""
    peer = request.remote or ""
    if trusted_proxy_hops <= 0:
        return peer
    forwarded = [
        part.strip() for part in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
    ]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < trusted_proxy_hops:
        return peer
    return forwarded[-trusted_proxy_hops]


def ip_allowed(
    address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class RejectionLog:
    """Every rejection: a log line, a counter, an entry in a capped list for `relay status` and,
    with a keeper, the request itself for `relay rejections` (relay.rejected): one round trip."""

    def __init__(self, redis: Any, keys: Keys, keeper: Keeper | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.keeper = keeper

    async def record(
        self,
        source: str,
        known: bool,
        status: int,
        error: str,
        reason: str,
        client: str,
        kept: RejectedRequest | None = None,
    ) -> None:
        name = source if known else UNKNOWN_SOURCE
        pending = self.keeper.prepare(kept, status, error, reason) if self.keeper and kept else None
        extra = {"rejection_id": pending.id} if pending else {}
        log.warning(
            "webhook rejected",
            source=source[:64],
            status=status,
            error=error,
            reason=reason,
            client_ip=client,
            **extra,
        )
        at = clock.now()
        entry = {
            "at": at,
            "source": source[:64],
            "status": status,
            "error": error,
            "reason": reason[:300],
            "client_ip": client,
        }
        if pending:
            entry["id"] = pending.id  # the kept request: `relay rejections show ID`
        auth = (name, at, reason) if known and error in AUTH_ERRORS else None
        try:
            await self._write(orjson.dumps(entry), inbound_stat(name, error), pending, auth)
        except Exception as exc:  # noqa: BLE001 - the answer stands even if Redis is down
            log.warning("could not record rejection", error=str(exc))

    async def _write(
        self,
        entry: bytes,
        stat: str,
        pending: PendingKeep | None,
        auth: tuple[str, float, str] | None = None,
    ) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self.keys.rejections, entry)
            pipe.ltrim(self.keys.rejections, 0, REJECTIONS_CAP - 1)
            pipe.hincrby(self.keys.stats, stat, 1)
            if self.keeper and pending:
                self.keeper.queue(pipe, pending)  # the request itself, in the same round trip
            if auth:
                self._count_auth_failure(pipe, *auth)
            results = await pipe.execute(raise_on_error=False)
        errors = [result for result in results[:3] if isinstance(result, Exception)]
        if errors:
            raise errors[0]
        if self.keeper and pending:
            await self.keeper.settle(pending, results[3])

    def _count_auth_failure(self, pipe: Any, source: str, at: float, reason: str) -> None:
        """A bad signature or token, in the source's window the bad_signatures alert counts
        (relay.alerts), with its reason: the newest AUTH_FAILURES_CAP of the last hour."""
        key, at_ms = auth_failures(self.keys, source), int(at * 1000)
        pipe.zadd(key, {f"{at_ms}:{secrets.token_hex(4)}:{reason[:120]}": at_ms})
        pipe.zremrangebyscore(key, "-inf", at_ms - AUTH_FAILURES_TTL_S * 1000)
        pipe.zremrangebyrank(key, 0, -AUTH_FAILURES_CAP - 1)
        pipe.expire(key, AUTH_FAILURES_TTL_S)
