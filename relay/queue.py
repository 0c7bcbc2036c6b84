"""Storing a raw request as an arq job in one Redis round trip, and the job format.

Why not `ArqRedis.enqueue_job`: it costs three round trips (WATCH, EXISTS, MULTI/EXEC) and
has no notion of "already stored, answer duplicate". One Lua script does the byte-identical
check, writes the job the way arq's worker reads it, queues it and counts it, atomically;
concurrent requests share one round trip (ScriptBatcher).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack
from arq.constants import expires_extra_ms, job_key_prefix
from arq.jobs import serialize_job

from relay import clock
from relay.clock import LUA_NOW_MS
from relay.inbound import InboundRequest
from relay.keys import INBOUND_JOB_TTL_S, Keys, delivery_job_id, inbound_stat, sink_of_job
from relay.redis import replica_ack
from relay.script_batcher import ScriptBatcher

__all__ = ["delivery_job_id", "sink_of_job"]  # re-exported: the job format lives in keys

PROCESS_INBOUND = "process_inbound"
DELIVER = "deliver"

# KEYS: byte-identical marker, arq job key, arq queue, stats hash, wake list.
# ARGV: job id, marker TTL ms, job blob, job TTL ms, (unused), stored field, duplicate field.
# The job is scored with Redis's own clock (relay.clock), never the ingress host's.
_STORE = (
    LUA_NOW_MS
    + """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) == false then
  redis.call('HINCRBY', KEYS[4], ARGV[7], 1)
  return 0
end
redis.call('PSETEX', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], now_ms, ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
redis.call('LPUSH', KEYS[5], 1)
redis.call('LTRIM', KEYS[5], 0, 0)
return 1
"""
)


def serialize(obj: Any) -> bytes:
    """Arq's job serializer: msgpack keeps raw body bytes as bytes (JSON could not)."""
    return msgpack.packb(obj, use_bin_type=True)


def deserialize(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)


def inbound_id(source: str, body: bytes) -> str:
    """Same source and same bytes -> same id: a provider's retry is recognised at the door."""
    digest = hashlib.sha256(source.encode() + b"\x00" + body).digest()
    return "in_" + base64.b32encode(digest).decode().lower().rstrip("=")[:26]


def request_to_job(request: InboundRequest, keep_headers: tuple[str, ...]) -> dict[str, Any]:
    # The URL token is a secret and verification is done: it is not stored. Header values are
    # kept as the bytes received (aiohttp surrogate-escapes non-UTF-8 bytes; msgpack cannot).
    headers = {
        name: request.headers[name].encode("utf-8", "surrogateescape")
        for name in keep_headers
        if name in request.headers
    }
    return {
        "source": request.source,
        "body": request.body,
        "headers": headers,
        "client_ip": request.client_ip,
        "received_at": request.received_at,
    }


def job_to_request(job: dict[str, Any]) -> InboundRequest:
    return InboundRequest(
        source=job["source"],
        body=job["body"],
        headers={
            name: value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
            for name, value in (job.get("headers") or {}).items()
        },
        client_ip=job.get("client_ip", ""),
        received_at=job.get("received_at", 0.0),
    )


@dataclass(frozen=True)
class Stored:
    id: str
    duplicate: bool


class InboundStore:
    def __init__(self, redis: Any, keys: Keys, dedupe_window_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.window_ms = int(dedupe_window_s * 1000)
        self._script = ScriptBatcher(redis, _STORE, replica_ack(redis))

    async def store(self, request: InboundRequest, keep_headers: tuple[str, ...]) -> Stored:
        job_id = inbound_id(request.source, request.body)
        now_ms = clock.now_ms()
        blob = serialize_job(
            PROCESS_INBOUND,
            (),
            {"inbound": request_to_job(request, keep_headers)},
            None,
            now_ms,
            serializer=serialize,
        )
        created = await self._script(
            keys=[
                self.keys.inbound_seen(job_id),
                job_key_prefix + job_id,
                self.keys.queue,
                self.keys.stats,
                self.keys.wake,
            ],
            args=[
                job_id,
                self.window_ms,
                blob,
                INBOUND_JOB_TTL_S * 1000,
                0,
                inbound_stat(request.source, "stored"),
                inbound_stat(request.source, "duplicate"),
            ],
        )
        return Stored(id=job_id, duplicate=not created)


def job_blob(function: str, kwargs: dict[str, Any], now_ms: int | None = None) -> bytes:
    """A job as arq's worker reads it, for scripts that write jobs themselves (relay.pause)."""
    enqueued = clock.now_ms() if now_ms is None else now_ms
    return serialize_job(function, (), kwargs, None, enqueued, serializer=serialize)


def add_job(
    pipe: Any,
    keys: Keys,
    job_id: str,
    function: str,
    kwargs: dict[str, Any],
    defer_s: float = 0.0,
) -> None:
    """Queue an arq job inside the caller's MULTI pipeline (so it lands with the state that
    points at it). NX on both: re-running the same step never replaces a job in flight."""
    now_ms = clock.now_ms()  # Redis's time: a worker with a wrong host clock still schedules right
    run_at_ms = now_ms + int(defer_s * 1000)
    blob = job_blob(function, kwargs, now_ms)
    # arq drops a job whose key expired before it ran: keep it as long past its run time as
    # arq's own enqueue_job does.
    pipe.set(job_key_prefix + job_id, blob, px=run_at_ms - now_ms + expires_extra_ms, nx=True)
    pipe.zadd(keys.queue, {job_id: run_at_ms}, nx=True)
    if defer_s <= 0:
        wake(pipe, keys)


def wake(pipe: Any, keys: Keys) -> None:
    """Tell an idle worker a job is due now (Keys.wake), inside the caller's pipeline."""
    pipe.lpush(keys.wake, 1)
    pipe.ltrim(keys.wake, 0, 0)
