"""Storing a raw request as an arq job in one Redis round trip, and the job format.

Why not `ArqRedis.enqueue_job`: it costs three round trips (WATCH, EXISTS, MULTI/EXEC) and
has no notion of "already stored, answer duplicate". One Lua script does the byte-identical
check, writes the job the way arq's worker reads it, queues it and counts it, atomically.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import msgpack
from arq.constants import job_key_prefix

from relay.keys import INBOUND_JOB_TTL_S, Keys
from relay.providers.base import InboundRequest

PROCESS_INBOUND = "process_inbound"
DELIVER = "deliver"

_STORE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) == false then
  redis.call('HINCRBY', KEYS[4], ARGV[7], 1)
  return 0
end
redis.call('PSETEX', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
return 1
"""


def delivery_job_id(event_id: str, sink: str, attempt: int, tag: str | int) -> str:
    """`dlv_<event id>_<sink>_<attempt>_<tag>`: deterministic, so a re-run step cannot queue twice."""
    return f"dlv_{event_id}_{sink}_{attempt}_{tag}"


def sink_of_job(job_id: str) -> str | None:
    """The sink a `deliver` job id belongs to (event ids have a fixed length)."""
    if not job_id.startswith("dlv_evt_"):
        return None
    rest = job_id[len("dlv_") + 30 + 1:]
    parts = rest.rsplit("_", 2)
    return parts[0] if len(parts) == 3 else None


def serialize(obj: Any) -> bytes:
    """arq's job serializer: msgpack keeps raw body bytes as bytes (JSON could not)."""
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
    headers = {name: request.headers[name].encode("utf-8", "surrogateescape")
               for name in keep_headers if name in request.headers}
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
        headers={name: value.decode("utf-8", "surrogateescape") if isinstance(value, bytes)
                 else value for name, value in (job.get("headers") or {}).items()},
        client_ip=job.get("client_ip", ""),
        received_at=job.get("received_at", 0.0),
    )


@dataclass(frozen=True)
class Stored:
    id: str
    duplicate: bool


class InboundStore:
    def __init__(self, redis: Any, keys: Keys, dedupe_window_s: float):
        self.redis = redis
        self.keys = keys
        self.window_ms = int(dedupe_window_s * 1000)
        self._script = redis.register_script(_STORE)

    async def store(self, request: InboundRequest, keep_headers: tuple[str, ...]) -> Stored:
        job_id = inbound_id(request.source, request.body)
        now_ms = int(time.time() * 1000)
        blob = serialize(
            {
                "t": None,
                "f": PROCESS_INBOUND,
                "a": [],
                "k": {"inbound": request_to_job(request, keep_headers)},
                "et": now_ms,
            }
        )
        created = await self._script(
            keys=[
                self.keys.inbound_seen(job_id),
                job_key_prefix + job_id,
                self.keys.queue,
                self.keys.stats,
            ],
            args=[
                job_id,
                self.window_ms,
                blob,
                INBOUND_JOB_TTL_S * 1000,
                now_ms,
                f"in:{request.source}:stored",
                f"in:{request.source}:duplicate",
            ],
        )
        return Stored(id=job_id, duplicate=not created)


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
    now_ms = int(time.time() * 1000)
    run_at_ms = now_ms + int(defer_s * 1000)
    blob = serialize({"t": None, "f": function, "a": [], "k": kwargs, "et": now_ms})
    # arq drops a job whose key expired before it ran: keep it a day past its run time.
    pipe.set(job_key_prefix + job_id, blob, px=run_at_ms - now_ms + 86_400_000, nx=True)
    pipe.zadd(keys.queue, {job_id: run_at_ms}, nx=True)
