"""The event log gives way to deliveries when Redis is nearly full.

Under `maxmemory-policy noeviction` the ingress sheds from `server.shed_memory_ratio` of
maxmemory so the workers keep room to drain: each event a worker finishes frees its queued
request (~0.9 KB). With the log on it also writes ~3.7 KB of history, so a near-full Redis would
fill up while draining and then refuse the worker's writes too. So from 10 points below the
shed line the worker writes no new log entries (logged once each way): a payment's delivery
matters more than its history. The margin is taken from the shed line itself (after
`shed_at_bytes` keeps its minimum headroom), so on a small Redis the two never coincide.
"""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import RedisError

from relay.config.model import RelayConfig
from relay.logs import get_logger
from relay.redis_memory import read_memory, shed_at_bytes

log = get_logger("relay.worker")

CHECK_EVERY_S = 1.0
MARGIN = 0.1  # of maxmemory, below the ingress's shed line


class LogGate:
    def __init__(self, config: RelayConfig) -> None:
        self.configured_s = int(config.log.retention) if config.log.enabled else 0
        self.ratio = config.server.shed_memory_ratio
        self.retention_s = self.configured_s  # 0 while the log is off or paused
        self._checked_at = 0.0

    async def refresh(self, redis: Any) -> None:
        """Read Redis's memory (at most every CHECK_EVERY_S) and pause or resume the log."""
        if not self.configured_s or time.monotonic() - self._checked_at < CHECK_EVERY_S:
            return
        self._checked_at = time.monotonic()
        try:
            state = await read_memory(redis)
        except (RedisError, OSError):
            return
        full = bool(
            state.max_bytes
            and state.used_bytes is not None
            and state.used_bytes >= pause_at_bytes(state.max_bytes, self.ratio)
        )
        if full and self.retention_s:
            log.warning(
                "event log paused: Redis is nearly full, deliveries first",
                used_bytes=state.used_bytes,
                max_bytes=state.max_bytes,
            )
            self.retention_s = 0
        elif not full and not self.retention_s:
            log.info("event log resumed", used_bytes=state.used_bytes)
            self.retention_s = self.configured_s


def pause_at_bytes(max_bytes: int, shed_ratio: float) -> int:
    """Used memory from which the log pauses: MARGIN of maxmemory below the shed line."""
    return max(0, shed_at_bytes(max_bytes, shed_ratio) - int(MARGIN * max_bytes))
