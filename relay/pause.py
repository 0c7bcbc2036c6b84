"""Pausing a sink (SPEC 9): its deliveries wait, use up no attempt, and go out in the order
received once it is resumed. Shared by every process: the state is one Redis hash.

How a delivery waits: the worker that would send it writes its `deliver` job, unchanged
(same attempt number, same waits), into arq's queue at a score no clock reaches
(`keys.HOLD_AT_MS`), and the job id into the sink's held set scored by receipt time. Resume
re-scores the held jobs to now, in receipt order, spaced by the sink's rate limit. The hold is
one script that also checks the pause and the delivery's owner, so a resume racing a hold
cannot strand a delivery, and a worker killed at any point leaves either the old owner (the
job runs again) or the held job. Nothing is kept in any process's memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from arq.constants import expires_extra_ms, job_key_prefix

from relay import clock
from relay.clock import LUA_NOW_MS
from relay.config.model import RelayConfig
from relay.keys import HELD_TTL_S, HOLD_AT_MS, Keys, log_state_field
from relay.ledger.record import WRITE
from relay.logs import get_logger
from relay.queue import DELIVER, job_blob

log = get_logger("relay.pause")

RELEASE_BATCH = 500  # held jobs re-scored per script call (a call stays well under a ms each)
UNLIMITED_SPACING_MS = 1  # apart, so receipt order survives in the queue (ties sort by id)

# KEYS: paused, delivery states, new job key, queue, held set, log event.
# ARGV: sink, expected owner ('' for none), job id, job blob, job TTL ms, received ms,
# held TTL s, hold score, delivery state TTL s.
# Returns 1 held, 0 not paused (send now), -1 the delivery has another owner (do nothing).
HOLD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[2], ARGV[1])
if (state or '') ~= ARGV[2] then return -1 end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5], 'NX')
redis.call('ZADD', KEYS[4], 'NX', ARGV[8], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], 'job:' .. ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[9])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[3])
redis.call('EXPIRE', KEYS[5], ARGV[7])
if redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('HSET', KEYS[6], 'st:' .. ARGV[1], 'paused')
end
return 1
"""

# KEYS: paused, held set, queue, wake. ARGV: sink, batch, spacing ms, offset, only when
# expired (1/0).
# Re-scores the oldest held jobs to now (+ spacing each); unpauses once none is left.
# Returns {left, released ids...}; {-1} when `only when expired` and it has not expired.
_RELEASE = (
    LUA_NOW_MS
    + """
local untl = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[5] == '1' then
  if not untl or tonumber(untl) == 0 or tonumber(untl) > now_ms then return {-1} end
end
local ids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local spacing, offset = tonumber(ARGV[3]), tonumber(ARGV[4])
for i, id in ipairs(ids) do
  redis.call('ZADD', KEYS[3], 'XX', now_ms + math.floor((offset + i - 1) * spacing), id)
end
if #ids > 0 then
  redis.call('ZREM', KEYS[2], unpack(ids))
  redis.call('LPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], 0, 0)
end
local left = redis.call('ZCARD', KEYS[2])
if left == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
table.insert(ids, 1, left)
return ids
"""
)

_HELD_JOB = re.compile(r"dlv_(evt_[a-z2-7]+)_")


@dataclass(frozen=True)
class PauseState:
    sink: str
    paused: bool
    until: float | None = None  # Unix seconds; None: until resumed
    held: int = 0


async def pause(redis: Any, keys: Keys, sink: str, for_s: float | None = None) -> PauseState:
    """Pause `sink` now, until resumed or for `for_s` seconds (by Redis's clock)."""
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    until_ms = now_ms + int(for_s * 1000) if for_s else 0
    await redis.hset(keys.paused, sink, until_ms)
    log.info("sink paused", sink=sink, until=until_ms / 1000 if until_ms else None)
    return await state(redis, keys, sink)


async def state(redis: Any, keys: Keys, sink: str) -> PauseState:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.paused, sink)
        pipe.zcard(keys.held(sink))
        until, held = await pipe.execute()
    if until is None:
        return PauseState(sink, paused=False, held=int(held))
    until_ms = int(until)
    return PauseState(sink, True, until_ms / 1000 if until_ms else None, int(held))


async def paused_sinks(redis: Any, keys: Keys) -> dict[str, float | None]:
    """Every paused sink -> until when (None: until resumed)."""
    raw = await redis.hgetall(keys.paused)
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (int(v) / 1000 if int(v) else None)
        for k, v in raw.items()
    }


async def resume(
    redis: Any, keys: Keys, config: RelayConfig, sink: str, *, only_if_expired: bool = False
) -> int:
    """Release every held delivery of `sink` in the order received, then unpause it. Returns
    how many were released (-1: `only_if_expired` and the pause has not expired)."""
    script = redis.register_script(_RELEASE)
    spacing = _spacing_ms(config, sink)
    released = 0
    while True:
        left, *ids = await script(
            keys=[keys.paused, keys.held(sink), keys.queue, keys.wake],
            args=[sink, RELEASE_BATCH, spacing, released, int(only_if_expired)],
        )
        if int(left) < 0:
            return -1
        await _mark_pending(redis, keys, sink, ids)
        released += len(ids)
        if int(left) == 0:
            break
    log.info("sink resumed", sink=sink, released=released)
    return released


async def resume_expired(redis: Any, keys: Keys, config: RelayConfig) -> int:
    """Resume every sink whose `pause --for` has passed (the workers call this each beat)."""
    released = 0
    now = clock.now()
    for sink, until in (await paused_sinks(redis, keys)).items():
        if until is not None and until <= now:
            released += max(0, await resume(redis, keys, config, sink, only_if_expired=True))
    return released


async def _mark_pending(redis: Any, keys: Keys, sink: str, job_ids: list[Any]) -> None:
    """The log's state of the deliveries just released: `paused` -> `pending`."""
    if not job_ids:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            match = _HELD_JOB.match(job_id.decode() if isinstance(job_id, bytes) else job_id)
            if match:
                pipe.eval(
                    WRITE, 1, keys.log_event(match.group(1)), log_state_field(sink), "pending"
                )
        await pipe.execute()


def hold_call(
    keys: Keys,
    *,
    event_id: str,
    sink: str,
    expected_owner: str,
    job_id: str,
    kwargs: dict[str, Any],
    received_at: float,
    state_ttl_s: int,
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of one hold script call."""
    return (
        [
            keys.paused,
            keys.deliveries(event_id),
            job_key_prefix + job_id,
            keys.queue,
            keys.held(sink),
            keys.log_event(event_id),
        ],
        [
            sink,
            expected_owner,
            job_id,
            job_blob(DELIVER, kwargs),
            HELD_TTL_S * 1000 + expires_extra_ms,
            int(received_at * 1000),
            HELD_TTL_S,
            HOLD_AT_MS,
            state_ttl_s,
        ],
    )


def _spacing_ms(config: RelayConfig, sink: str) -> float:
    cfg = config.sinks.get(sink)
    limit = cfg.rate_limit if cfg is not None else None
    if limit is None:
        return UNLIMITED_SPACING_MS
    return float(max(UNLIMITED_SPACING_MS, limit.per * 1000 / limit.count))
