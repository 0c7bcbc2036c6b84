"""One delivery attempt of one event to one sink, and when the next one is due."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from relay.config.model import RelayConfig
from relay.config.types import RetryConfig
from relay.events import StoredEvent

_RNG = random.Random()  # jitter only, never secrets


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt of one event to one sink (the kwargs of a `deliver` job)."""

    event: StoredEvent
    sink: str
    number: int  # counts from 1; a rate-limit wait keeps it (the job kwarg is `attempt`)
    waits: int
    received_at: float
    replay: int = 0  # 0: the first sending; n: the n-th replay (its attempts count from 1 again)

    def job_kwargs(self) -> dict[str, Any]:
        return {
            "event": self.event.json,
            "sink": self.sink,
            "attempt": self.number,
            "waits": self.waits,
            "received_at": self.received_at,
            "replay": self.replay,
        }

    def then(self, number: int, waits: int) -> Attempt:
        """The attempt that follows this one (same event, sink and replay round)."""
        return Attempt(self.event, self.sink, number, waits, self.received_at, self.replay)


def next_delay(retry: RetryConfig, attempt: int, rng: random.Random | None = None) -> float | None:
    """Seconds until attempt `attempt + 1`, or None when the schedule is used up."""
    if attempt > len(retry.schedule):
        return None
    base = retry.schedule[attempt - 1]
    return max(0.0, base * (1 + (rng or _RNG).uniform(-retry.jitter, retry.jitter)))


def state_ttl_s(config: RelayConfig) -> int:
    """How long an event's delivery states live: past the longest retry schedule (a day
    more) and the dedupe window."""
    longest = max([sum(config.retry_for(s).schedule) for s in config.sinks.values()] or [0.0])
    return int(max(config.dedupe.window, longest + 86_400))
