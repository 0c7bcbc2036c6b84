"""Rejected requests kept with their raw bytes (SPEC 9): written by the ingress, read and
replayed by `relay rejections`, the JSON API and the console.

The functions at the end (`list_rejected`, `get_rejected`, `rejected_usage`,
`replay_rejected`) are the one query layer: each returns JSON-able dicts, and every reader
calls them, so the command line and the API give the same JSON for the same question.

What is kept of a rejected request (msgpack, one field of `Keys.rejected` per request): the
source as routed, the path with any URL token replaced by `…`, the method, the headers (values
as the bytes received), the raw body, the client address, the receipt time (Redis's clock), and
the answer given (status, error, reason). What is never kept:

- the URL token of `/hooks/{source}/{token}`, and the query string;
- every header that carries a credential: `ALWAYS_SECRET_HEADERS` and every provider's
  `secret_headers`, whatever the source (an unknown source may become any provider); their
  names are kept, so a replay can say which credential it lacks (`cannot_verify`);
- the body of a request rejected before it was read in full (413 too large, 400 incomplete):
  no byte of it, since part of a body can neither be verified nor replayed.

Signatures (HMACs of the body) are no secret and are kept in full, so a replay can verify them
again; what the readers return shows them shortened (`SHOWN_SIGNATURE_CHARS` and `…`).

Limits (`log.rejected_max_bytes`, `log.rejected_retention`): one Lua script per rejection adds
the entry and its size to the field `_bytes`, drops the entries older than the retention (by
index score against Redis's TIME), then the oldest while the total exceeds the cap, and sets
both keys to expire after the retention. The size counted is the msgpack entry's length; an
entry bigger than the whole cap is not kept (logged).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
from redis.exceptions import NoScriptError

from relay.clock import LUA_NOW_MS
from relay.events import rfc3339
from relay.inbound import InboundRequest
from relay.ingress.guard import ip_allowed
from relay.keys import Keys, rejection_id
from relay.ledger.query import MAX_LIMIT, BadQuery
from relay.logs import get_logger
from relay.providers import PROVIDERS, Provider, Rejected, build_sources
from relay.queue import InboundStore

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig, LogConfig

log = get_logger("relay.rejected")

# Credentials whatever the provider; each provider adds its own (Provider.secret_headers).
ALWAYS_SECRET_HEADERS = ("authorization", "cookie", "x-api-key", "proxy-authorization")
SECRET_HEADERS = frozenset(
    ALWAYS_SECRET_HEADERS + tuple(h for cls in PROVIDERS.values() for h in cls.secret_headers)
)
SHOWN_SIGNATURE_CHARS = 12
BYTES_FIELD = "_bytes"  # the field of Keys.rejected holding the total size kept
MAX_SOURCE_CHARS = 100  # a configured name has at most 64: a longer one is kept cut here
MAX_REASON_CHARS = 300
_FORMAT = 1

# KEYS: the entries hash, the index. ARGV: id, entry, max bytes, retention ms, received ms.
# Returns the number of older entries dropped.
_KEEP = (
    LUA_NOW_MS
    + """
local entries, index = KEYS[1], KEYS[2]
local max_bytes, retention = tonumber(ARGV[3]), tonumber(ARGV[4])
local total = tonumber(redis.call('HGET', entries, '_bytes') or '0')
local dropped = 0
local function drop(id)
  total = total - redis.call('HSTRLEN', entries, id)
  redis.call('HDEL', entries, id)
  redis.call('ZREM', index, id)
  dropped = dropped + 1
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. (now_ms - retention))) do
  drop(id)
end
local size = string.len(ARGV[2])
while total + size > max_bytes do
  local oldest = redis.call('ZRANGE', index, 0, 0)
  if #oldest == 0 then total = 0 break end
  drop(oldest[1])
end
redis.call('HSET', entries, ARGV[1], ARGV[2], '_bytes', total + size)
redis.call('ZADD', index, ARGV[5], ARGV[1])
redis.call('PEXPIRE', entries, retention)
redis.call('PEXPIRE', index, retention)
return dropped
"""
)

# KEYS: the entries hash, the index. ARGV: id. Returns 1 when the entry was there.
_FORGET = """
local size = redis.call('HSTRLEN', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], '_bytes', -size)
return 1
"""


@dataclass(frozen=True)
class RejectedRequest:
    """A request as the ingress received it, before anything secret is taken out."""

    source: str
    method: str
    headers: Mapping[str, str]  # lower-case names, values as aiohttp gives them
    body: bytes | None  # None: not read in full (413, incomplete), so nothing of it is kept
    client_ip: str
    received_at: float  # Unix seconds, Redis's clock
    has_token: bool = False  # the URL had a /{token} segment


def stored_path(source: str, has_token: bool) -> str:
    """The path as kept: a URL token is never stored."""
    return f"/hooks/{source}/…" if has_token else f"/hooks/{source}"


def encode_entry(request: RejectedRequest, status: int, error: str, reason: str) -> bytes:
    headers: dict[str, bytes] = {}
    dropped: list[str] = []
    for name, value in request.headers.items():
        if name in SECRET_HEADERS:
            dropped.append(name)
        else:  # the bytes received (aiohttp surrogate-escapes non-UTF-8 bytes; msgpack cannot)
            headers[name] = value.encode("utf-8", "surrogateescape")
    source = request.source[:MAX_SOURCE_CHARS]
    entry = {
        "v": _FORMAT,
        "source": source,
        "path": stored_path(source, request.has_token),
        "method": request.method,
        "headers": headers,
        "dropped": dropped,
        "token": request.has_token,
        "body": request.body,
        "client_ip": request.client_ip,
        "received_at": request.received_at,
        "status": status,
        "error": error,
        "reason": reason[:MAX_REASON_CHARS],
    }
    blob: bytes = msgpack.packb(entry, use_bin_type=True)
    return blob


def decode_entry(blob: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = msgpack.unpackb(blob, raw=False)
    return entry


@dataclass
class PendingKeep:
    """One rejected request on its way into Redis: `queue` it in the caller's pipeline, then
    `Keeper.settle` the script's answer."""

    id: str
    keys: list[str]
    args: list[Any] = field(default_factory=list)

    def queue(self, pipe: Any, sha: str) -> None:
        pipe.evalsha(sha, len(self.keys), *self.keys, *self.args)


class Keeper:
    """Writes rejected requests within `log.rejected_max_bytes` and `log.rejected_retention`."""

    def __init__(self, redis: Any, keys: Keys, config: LogConfig) -> None:
        self.keys = keys
        self.max_bytes = config.rejected_max_bytes
        self.retention_ms = int(config.rejected_retention * 1000)
        self.script = redis.register_script(_KEEP)  # its sha is computed here, no round trip

    def prepare(
        self, request: RejectedRequest, status: int, error: str, reason: str
    ) -> PendingKeep | None:
        """None when nothing is kept: the cap is 0, or this entry alone is over it (logged)."""
        if self.max_bytes <= 0:
            return None
        received_ms = int(request.received_at * 1000)
        ident = rejection_id(received_ms)
        blob = encode_entry(request, status, error, reason)
        if len(blob) > self.max_bytes:
            log.warning(
                "rejected request not kept: larger than log.rejected_max_bytes",
                source=request.source[:64],
                size=len(blob),
                max_bytes=self.max_bytes,
            )
            return None
        return PendingKeep(
            ident,
            [self.keys.rejected, self.keys.rejected_index],
            [ident, blob, self.max_bytes, self.retention_ms, received_ms],
        )

    def queue(self, pipe: Any, pending: PendingKeep) -> None:
        pending.queue(pipe, self.script.sha)

    async def settle(self, pending: PendingKeep, result: Any) -> None:
        """The script's answer from the pipeline; a Redis that forgot the script runs it again."""
        if isinstance(result, NoScriptError):
            result = await self.script(keys=pending.keys, args=pending.args)
        if isinstance(result, Exception):
            raise result
        if result:
            log.info("rejected requests dropped to make room", dropped=int(result))


# --- reading: the query layer ----------------------------------------------------------------


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def shown_header(name: str, value: str) -> str:
    """A header value as readers see it: a signature cut to its first characters."""
    if ("sig" in name or "hmac" in name) and len(value) > SHOWN_SIGNATURE_CHARS:
        return value[:SHOWN_SIGNATURE_CHARS] + "…"
    return value


def _summary(ident: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    body = entry.get("body")
    return {
        "id": ident,
        "source": entry["source"],
        "received_at": rfc3339(entry["received_at"]),
        "status": entry["status"],
        "error": entry["error"],
        "reason": entry["reason"],
        "client_ip": entry["client_ip"],
        "method": entry["method"],
        "path": entry["path"],
        "body_bytes": len(body) if body is not None else 0,
        "body_kept": body is not None,
    }


def _detail(ident: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    detail = _summary(ident, entry)
    detail["headers"] = {
        name: shown_header(name, _text(value)) for name, value in entry["headers"].items()
    }
    detail["dropped_headers"] = list(entry.get("dropped", []))
    body: bytes | None = entry.get("body")
    detail["body"] = None
    if body is not None:
        try:
            detail["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            detail["body_base64"] = base64.b64encode(body).decode()
    return detail


async def list_rejected(
    redis: Any, keys: Keys, *, limit: int = 50, source: str | None = None
) -> list[dict[str, Any]]:
    """The newest kept rejected requests first (no headers, no body: `get_rejected` has them).
    A limit outside 1..MAX_LIMIT is `BadQuery` (the CLI exits 2, the API answers 400)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
    found: list[dict[str, Any]] = []
    page = limit if source is None else max(limit, 200)
    start = 0
    while len(found) < limit:
        ids = [
            _text(i) for i in await redis.zrevrange(keys.rejected_index, start, start + page - 1)
        ]
        if not ids:
            break
        for ident, blob in zip(ids, await redis.hmget(keys.rejected, ids), strict=True):
            if blob is None:  # trimmed between the two reads
                continue
            entry = decode_entry(blob)
            if source is None or entry["source"] == source:
                found.append(_summary(ident, entry))
                if len(found) == limit:
                    break
        start += page
    return found


async def get_rejected(redis: Any, keys: Keys, rejection_id: str) -> dict[str, Any] | None:
    """One kept rejected request with its headers and body; None when there is no such id."""
    if not rejection_id.startswith("rj_"):
        return None
    blob = await redis.hget(keys.rejected, rejection_id)
    return None if blob is None else _detail(rejection_id, decode_entry(blob))


async def rejected_usage(redis: Any, keys: Keys) -> dict[str, int]:
    """How many rejected requests are kept, and their size (counted against the cap)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.rejected_index)
        pipe.hget(keys.rejected, BYTES_FIELD)
        count, size = await pipe.execute()
    return {"count": int(count), "bytes": int(size or 0)}


# --- replay ----------------------------------------------------------------------------------


class CannotVerify(Exception):
    """A credential the check needs was not kept (or the body was not)."""


class _Watched(Mapping[str, str]):
    """Headers that note which names were asked for and were not there."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers
        self.missing: set[str] = set()

    def __getitem__(self, name: str) -> str:
        try:
            return self.headers[name]
        except KeyError:
            self.missing.add(name)
            raise

    def __iter__(self) -> Iterator[str]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)


def _verify_again(
    entry: Mapping[str, Any], loaded: LoadedConfig, sources: Mapping[str, Provider]
) -> tuple[Provider, InboundRequest]:
    """The ingress's checks, in its order, with the current config on what was kept; raises
    `Rejected` (it fails now) or `CannotVerify`."""
    source = entry["source"]
    provider = sources.get(source)
    if provider is None:
        raise Rejected(404, "unknown_source", f"no source {source!r} in the current config")
    body = entry["body"]
    if body is None:
        raise CannotVerify("the body was not kept (the request was refused before it was read)")
    max_body = loaded.config.server.max_body_bytes
    if len(body) > max_body:
        raise Rejected(413, "too_large", f"body over {max_body} bytes")
    if not ip_allowed(entry["client_ip"], provider.config.allowed_ips):
        raise Rejected(403, "ip_not_allowed", f"{entry['client_ip']} not allowed")
    headers = _Watched(
        {name: value.decode("utf-8", "surrogateescape") for name, value in entry["headers"].items()}
    )
    inbound = InboundRequest(
        source=source,
        body=body,
        headers=headers,
        client_ip=entry["client_ip"],
        received_at=entry["received_at"],  # timestamps are judged against the original receipt
        method=entry["method"],
    )
    try:
        provider.verify(inbound)
    except Rejected as rejected:
        lacking = sorted(headers.missing & set(entry.get("dropped", [])))
        if lacking:
            names = ", ".join(lacking)
            raise CannotVerify(f"the {names} header carries a secret and was not kept") from None
        if rejected.error == "bad_token" and entry.get("token"):
            raise CannotVerify("the URL token is a secret and was not kept") from None
        raise
    return provider, inbound


async def forget_rejected(redis: Any, keys: Keys, rejection_id: str) -> bool:
    """Delete one kept rejected request (its size leaves the total); False when not there."""
    gone = await redis.eval(_FORGET, 2, keys.rejected, keys.rejected_index, rejection_id)
    return bool(gone)


async def _replay_one(
    redis: Any,
    loaded: LoadedConfig,
    sources: Mapping[str, Provider],
    store: InboundStore,
    rejection_id: str,
) -> dict[str, Any]:
    keys = store.keys
    blob = await redis.hget(keys.rejected, rejection_id) if rejection_id.startswith("rj_") else None
    if blob is None:
        return {"id": rejection_id, "result": "not_found"}
    entry = decode_entry(blob)
    answer: dict[str, Any] = {"id": rejection_id, "source": entry["source"]}
    try:
        provider, inbound = _verify_again(entry, loaded, sources)
    except Rejected as rejected:
        return {
            **answer,
            "result": "still_rejected",
            "status": rejected.status,
            "error": rejected.error,
            "reason": rejected.reason,
        }
    except CannotVerify as cannot:
        return {**answer, "result": "cannot_verify", "reason": str(cannot)}
    stored = await store.store(inbound, provider.keep_headers)
    await forget_rejected(redis, keys, rejection_id)
    # No log line here: a command's stdout is its answer (the API logs its own requests).
    result = "duplicate" if stored.duplicate else "stored"
    return {**answer, "result": result, "inbound_id": stored.id}


async def replay_rejected(
    redis: Any, loaded: LoadedConfig, ids: Iterable[str]
) -> list[dict[str, Any]]:
    """Verify each kept request again with the current config; store those that pass as the
    ingress does (and forget them). One answer per id, in order: `result` is `stored` or
    `duplicate` (with `inbound_id`), `still_rejected` (with `status`, `error`, `reason`),
    `cannot_verify` (with `reason`: which credential was not kept) or `not_found`. No id at
    all is `BadQuery`."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise BadQuery("give the ids of rejected requests to replay")
    keys = Keys(loaded.config.key_prefix)
    sources = build_sources(loaded)
    store = InboundStore(redis, keys, loaded.config.dedupe.window)
    return [await _replay_one(redis, loaded, sources, store, ident) for ident in ids]
