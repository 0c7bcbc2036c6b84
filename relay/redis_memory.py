"""Redis's memory state (used, max, eviction policy) and the judgements made on it.

Two ways a full Redis loses or stalls webhooks (issue 8):

- an evicting `maxmemory-policy` (`allkeys-*`, and `volatile-*` since every relay key has a
  TTL) silently deletes queued jobs the ingress already answered 2xx for: only `noeviction` is
  safe, and the processes refuse to start on anything else unless `allow_redis_eviction`;
- under `noeviction` a full Redis refuses every write, the worker's included, so nothing can
  drain: the ingress sheds (503) above `server.shed_memory_ratio` of `maxmemory` (and keeps
  at least MIN_HEADROOM_BYTES free), leaving the rest as headroom for the workers.

Read with `INFO memory`, not `CONFIG GET`: hosted Redis (Heroku, ElastiCache) often disables
CONFIG. A policy that cannot be read is warned about, never refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, ResponseError

NOEVICTION = "noeviction"
CHECK_TIMEOUT_S = 5.0  # a start-up check must not wait out a long Redis outage
# The least free memory the ingress leaves (when shed_memory_ratio leaves less): a worker
# needs about 1 MiB to drain (its connections' buffers, ~0.7 MiB measured, and the claims of
# its jobs in flight); under noeviction, without it, its writes are refused and nothing drains.
MIN_HEADROOM_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class MemoryState:
    """One `INFO memory` reading. None: Redis did not say (INFO refused or a field missing)."""

    used_bytes: int | None = None  # what Redis compares with maxmemory
    max_bytes: int | None = None  # 0: no limit
    policy: str | None = None

    @property
    def fraction(self) -> float | None:
        """Used / max, or None when there is no limit or it is unknown."""
        if not self.max_bytes or self.used_bytes is None:
            return None
        return self.used_bytes / self.max_bytes

    @property
    def evicting(self) -> bool:
        return self.policy is not None and self.policy != NOEVICTION

    def to_dict(self) -> dict[str, Any]:
        return {
            "used_bytes": self.used_bytes,
            "max_bytes": self.max_bytes,
            "policy": self.policy,
            "fraction": self.fraction,
        }


class EvictingRedis(Exception):
    """Redis may evict keys and the config does not allow it: the process must not start."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        super().__init__(eviction_message(policy, allowed=False))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_info(info: dict[str, Any]) -> MemoryState:
    used = _int(info.get("used_memory"))
    # Redis leaves replication and AOF buffers out of its maxmemory check: so do we.
    not_counted = _int(info.get("mem_not_counted_for_evict")) or 0
    policy = info.get("maxmemory_policy")
    return MemoryState(
        used_bytes=None if used is None else max(0, used - not_counted),
        max_bytes=_int(info.get("maxmemory")),
        policy=str(policy) if policy else None,
    )


async def read_memory(redis: Any) -> MemoryState:
    """One `INFO memory`. A refused INFO gives an unknown state; an unreachable Redis raises
    (RedisError, OSError, TimeoutError), so callers can tell "unknown" from "down"."""
    try:
        info = await redis.info("memory")
    except ResponseError:  # INFO renamed or disabled by the host
        return MemoryState()
    return parse_info(info)


def eviction_message(policy: str, allowed: bool) -> str:
    """The loud message for an evicting policy: what it does and how to fix it."""
    what = (
        f"Redis maxmemory-policy is {policy!r}: when Redis is full it deletes keys, "
        "including queued webhooks the relay has already answered 2xx for (lost for good)"
    )
    fix = (
        "Set it to noeviction: on Heroku `heroku redis:maxmemory --policy noeviction`; "
        "self-hosted `redis-cli CONFIG SET maxmemory-policy noeviction` and "
        "`maxmemory-policy noeviction` in redis.conf"
    )
    if allowed:
        return f"{what}. Running anyway because allow_redis_eviction is true. {fix}."
    return f"{what}. {fix}. To run anyway, set `allow_redis_eviction: true` in the config."


def shed_at_bytes(max_bytes: int, ratio: float) -> int:
    """Used memory from which the ingress sheds: `ratio` of maxmemory, lowered to keep at
    least MIN_HEADROOM_BYTES free (a small Redis), but never below half of maxmemory."""
    return int(max(0.5 * max_bytes, min(ratio * max_bytes, max_bytes - MIN_HEADROOM_BYTES)))


def memory_message(state: MemoryState, ratio: float, extra_bytes: int = 0) -> str | None:
    """The shed verdict: why the ingress must answer 503 now, or None to accept.

    Shed when the reading is at or over `shed_at_bytes`. `extra_bytes` is what this process
    stored since the reading (estimated): it only counts from a quarter into the headroom, so
    a burst cannot eat the workers' headroom within one interval, while the steady verdict
    follows what Redis says (and `relay status`, which has no estimate, agrees)."""
    if not state.max_bytes or state.used_bytes is None:
        return None  # no limit set (or unknown): nothing to keep headroom under
    limit, used = state.max_bytes, state.used_bytes
    shed_at = shed_at_bytes(limit, ratio)
    if used >= shed_at:
        return (
            f"Redis memory at {used / limit:.0%} of maxmemory ({_mib(used)} of "
            f"{_mib(limit)}; the ingress sheds from {_mib(shed_at)} so the workers keep "
            "room to drain): if the queue is long add workers, else raise maxmemory"
        )
    if used + extra_bytes >= shed_at + (limit - shed_at) / 4:
        return (
            f"this ingress stored about {_mib(extra_bytes)} since Redis read "
            f"{used / limit:.0%} of maxmemory: holding back until the next reading"
        )
    return None


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def enforce_policy(state: MemoryState, allow: bool, log: Any) -> None:
    """Raise EvictingRedis for an evicting policy unless allowed; log what was found."""
    if state.policy is None:
        log.warning(
            "cannot read Redis maxmemory-policy (INFO memory gave none): not checked; "
            "make sure it is noeviction"
        )
    elif state.evicting:
        if not allow:
            raise EvictingRedis(state.policy)
        log.error(
            "redis may evict queued webhooks",
            policy=state.policy,
            detail=eviction_message(state.policy, allowed=True),
        )


async def check_eviction_policy(
    redis: Any, allow: bool, log: Any, timeout: float = CHECK_TIMEOUT_S
) -> None:
    """The start-up check of both processes: raises EvictingRedis when Redis may evict and
    `allow` is False; warns (and returns) when the policy cannot be read."""
    try:
        async with asyncio.timeout(timeout):
            state = await read_memory(redis)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "cannot read Redis maxmemory-policy (Redis unreachable): not checked at start",
            error=type(exc).__name__,
        )
        return
    enforce_policy(state, allow, log)
