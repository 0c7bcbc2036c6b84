"""The ingress's checks before verification: body size, client address, and the rejection log."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from relay import clock
from relay.keys import REJECTIONS_CAP, UNKNOWN_SOURCE, Keys, inbound_stat
from relay.logs import get_logger

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
    """Every rejection: a log line, a counter and an entry in a capped list for `relay status`."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def record(
        self, source: str, known: bool, status: int, error: str, reason: str, client: str
    ) -> None:
        name = source if known else UNKNOWN_SOURCE
        log.warning(
            "webhook rejected",
            source=source[:64],
            status=status,
            error=error,
            reason=reason,
            client_ip=client,
        )
        entry = orjson.dumps(
            {
                "at": clock.now(),
                "source": source[:64],
                "status": status,
                "error": error,
                "reason": reason[:300],
                "client_ip": client,
            }
        )
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(self.keys.rejections, entry)
                pipe.ltrim(self.keys.rejections, 0, REJECTIONS_CAP - 1)
                pipe.hincrby(self.keys.stats, inbound_stat(name, error), 1)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the answer stands even if Redis is down
            log.warning("could not record rejection", error=str(exc))
