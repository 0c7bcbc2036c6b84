"""The dead-letter queue: deliveries that failed for good, and raw requests that could not be
normalized. Nothing is dropped: each entry keeps what is needed to replay it.

Entries are msgpack (raw bytes and exact event JSON survive) in one hash, ordered by a sorted
set of failure times, capped at `dlq.max_entries` (the oldest go first, and that is logged).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from relay.keys import Keys, delivery_job_id
from relay.logs import get_logger
from relay.queue import DELIVER, PROCESS_INBOUND, add_job

log = get_logger("relay.dlq")

# KEYS: the index (sorted by failure time), the entries hash. ARGV: the cap.
# Drops the oldest entries past the cap; returns how many.
_TRIM = """
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local oldest = redis.call('ZPOPMIN', KEYS[1], excess)
for i = 1, #oldest, 2 do redis.call('HDEL', KEYS[2], oldest[i]) end
return #oldest / 2
"""


@dataclass
class DeadLetter:
    id: str
    kind: str  # "delivery" or "inbound"
    source: str
    failed_at: float
    reason: str
    attempts: int = 0
    sink: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    last_status: int | None = None
    excerpt: str = ""
    received_at: float = 0.0
    event: bytes | None = None  # the canonical event JSON, exactly as sent
    inbound: dict[str, Any] | None = field(default=None)  # the raw request, for kind "inbound"

    def pack(self) -> bytes:
        return msgpack.packb(asdict(self), use_bin_type=True)

    @classmethod
    def unpack(cls, blob: bytes) -> DeadLetter:
        return cls(**msgpack.unpackb(blob, raw=False))


def delivery_letter_id(event_id: str, sink: str) -> str:
    return f"{event_id}:{sink}"


class DeadLetterQueue:
    def __init__(self, redis: Any, keys: Keys, max_entries: int = 100_000) -> None:
        self.redis = redis
        self.keys = keys
        self.max_entries = max_entries
        self._trim = redis.register_script(_TRIM)

    def add(self, pipe: Any, letter: DeadLetter) -> None:
        """Add inside the caller's pipeline, with the state change that goes with it."""
        pipe.hset(self.keys.dlq, letter.id, letter.pack())
        pipe.zadd(self.keys.dlq_index, {letter.id: letter.failed_at})

    async def trim(self) -> int:
        """Enforce the cap; returns how many of the oldest entries were dropped."""
        # One script: count and pop together, so trims running at once cannot each pop the
        # same excess and leave the queue below the cap.
        dropped = int(
            await self._trim(keys=[self.keys.dlq_index, self.keys.dlq], args=[self.max_entries])
        )
        if dropped:
            log.error(
                "dead-letter queue full: oldest entries dropped",
                dropped=dropped,
                cap=self.max_entries,
            )
        return dropped

    async def size(self) -> int:
        return int(await self.redis.zcard(self.keys.dlq_index))

    async def recent(self, limit: int = 100, sink: str | None = None) -> list[DeadLetter]:
        ids = await self.redis.zrevrange(self.keys.dlq_index, 0, -1 if sink else limit - 1)
        letters = await self.get([i.decode() if isinstance(i, bytes) else i for i in ids])
        if sink:
            letters = [letter for letter in letters if letter.sink == sink][:limit]
        return letters

    async def get(self, ids: list[str]) -> list[DeadLetter]:
        if not ids:
            return []
        blobs = await self.redis.hmget(self.keys.dlq, ids)
        return [DeadLetter.unpack(blob) for blob in blobs if blob]

    async def select(
        self, ids: list[str] | None, sink: str | None, everything: bool
    ) -> list[DeadLetter]:
        if ids:
            return await self.get(ids)
        if sink or everything:
            return await self.recent(limit=self.max_entries, sink=sink)
        return []

    async def replay(self, letters: list[DeadLetter]) -> int:
        """Send each entry through the normal path again, with a fresh retry schedule."""
        count = 0
        for letter in letters:
            async with self.redis.pipeline(transaction=True) as pipe:
                if letter.kind == "delivery" and letter.event and letter.sink:
                    job_id = delivery_job_id(
                        letter.event_id or "", letter.sink, 1, f"r{uuid.uuid4().hex[:8]}"
                    )
                    add_job(
                        pipe,
                        self.keys,
                        job_id,
                        DELIVER,
                        {
                            "event": letter.event,
                            "sink": letter.sink,
                            "attempt": 1,
                            "waits": 0,
                            "received_at": letter.received_at,
                        },
                    )
                    pipe.hset(
                        self.keys.deliveries(letter.event_id or ""), letter.sink, f"job:{job_id}"
                    )
                elif letter.kind == "inbound" and letter.inbound:
                    job_id = f"{letter.id}_replay_{uuid.uuid4().hex[:8]}"
                    add_job(
                        pipe,
                        self.keys,
                        job_id,
                        PROCESS_INBOUND,
                        {"inbound": letter.inbound, "inbound_id": letter.id},
                    )
                else:
                    continue
                pipe.hdel(self.keys.dlq, letter.id)
                pipe.zrem(self.keys.dlq_index, letter.id)
                await pipe.execute()
            log.info(
                "dead letter replayed", dlq_id=letter.id, sink=letter.sink, event_id=letter.event_id
            )
            count += 1
        return count

    async def purge(self, letters: list[DeadLetter]) -> int:
        if not letters:
            return 0
        ids = [letter.id for letter in letters]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.dlq, *ids)
            pipe.zrem(self.keys.dlq_index, *ids)
            await pipe.execute()
        return len(ids)
