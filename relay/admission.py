"""Which deliveries a worker process lets through to a sink right now, so that one sick sink
costs only itself.

Two rules, both per sink and per process (no Redis round trip: each process learns from its
own requests within one request, which is what bounds the cost):

- **In flight.** At most `max_in_flight` requests to one sink at a time. A sink that hangs
  holds a worker slot for its whole timeout; without a cap a hung sink at 30 events/s with a
  15 s timeout wants 450 slots, takes all 200, and every other sink waits behind it. Past
  the cap a delivery is not sent. While the sink's last answer was a success and it answered
  within the last BUSY_SILENCE_S, it is only busy (a burst: a resume releasing held
  deliveries, a backlog drained): the delivery waits in the job for a slot, up to
  BUSY_WAIT_S, then is rescheduled to come back in a second or two without using an attempt.
  Otherwise the sink is sick: it is an attempt that failed fast ("saturated"), retried on the
  sink's schedule like a timeout would have been, without holding a slot.
- **429.** After a sink answers 429, nothing more is sent to it until the wait it asked for
  has passed, then one request a second (`PROBE_INTERVAL_S`) until one succeeds. Deliveries
  held back wait without using an attempt, as a 429 itself does (SPEC 6). A 429 storm then
  costs about one request a second per sink and process, not one per waiting delivery.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from dataclasses import dataclass, field

from relay.sinks import Delivered, Outcome, RetryLater

_BUSY = "busy: "  # the reason of a delivery refused because its healthy sink is at its cap
PROBE_INTERVAL_S = 1.0  # after a 429 storm: one request a second until the sink answers 2xx
MAX_HOLD_SPREAD_S = 60.0
DEFAULT_RATE_WAIT_S = 5.0  # a 429 that says nothing about when to come back
BUSY_WAIT_S = 1.0  # how long a delivery to a busy (healthy, at its cap) sink waits for a slot
BUSY_SILENCE_S = 1.0  # no answer for this long with requests out: not busy but sick


@dataclass
class _SinkState:
    in_flight: int = 0
    blocked_until: float = 0.0  # monotonic: the wait a 429 asked for ends here
    limited: bool = False  # a 429 was seen and no 2xx since: send at most one per probe
    next_probe_at: float = 0.0
    held: int = 0  # deliveries held back since the last 2xx: spreads their next look
    answering: bool = True  # the last answer was a success (or none came yet)
    last_heard: float = 0.0  # monotonic: the last answer, or the first request after idling
    # Deliveries waiting in their job for a slot, first come first served (`Admission.admit`).
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)

    def hold(self, until: float, now: float, reason: str) -> RetryLater:
        # Held deliveries come back spread over a window that grows with how many were held,
        # so waiting costs about one job run a second per sink, not one per delivery per second.
        self.held += 1
        spread = random.uniform(0, min(MAX_HOLD_SPREAD_S, PROBE_INTERVAL_S * self.held))
        return RetryLater(reason, after=until - now + spread, rate_limited=True)


class Admission:
    def __init__(self, max_in_flight: dict[str, int]) -> None:
        self._caps = max_in_flight
        self._sinks: dict[str, _SinkState] = {}

    def _state(self, sink: str) -> _SinkState:
        state = self._sinks.get(sink)
        if state is None:
            state = self._sinks[sink] = _SinkState()
        return state

    def in_flight(self, sink: str) -> int:
        return self._state(sink).in_flight

    async def admit(self, sink: str) -> RetryLater | None:
        """As `enter`, but a delivery to a busy sink waits for a slot (up to BUSY_WAIT_S)
        instead of being rescheduled at once: a backlog drained at full speed keeps a healthy
        sink at its cap, and a reschedule costs a job run a second or two later."""
        refused = self.enter(sink)
        if refused is None or not refused.reason.startswith(_BUSY):
            return refused
        state, loop = self._state(sink), asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT_S
        while refused is not None and refused.reason.startswith(_BUSY):
            waiter: asyncio.Future[None] = loop.create_future()
            state.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                return refused
            finally:
                if not waiter.done():
                    state.waiters.remove(waiter)
            refused = self.enter(sink)
        return refused

    def enter(self, sink: str) -> RetryLater | None:
        """None: go ahead (and call `leave` after). Else the outcome to record instead."""
        state, now = self._state(sink), time.monotonic()
        if now < state.blocked_until:
            return state.hold(
                state.blocked_until, now, "rate limited: waiting as the sink asked (429)"
            )
        if state.limited:
            if now < state.next_probe_at:
                return state.hold(
                    state.next_probe_at,
                    now,
                    "rate limited: the sink is asked once a second until it accepts",
                )
            state.next_probe_at = now + PROBE_INTERVAL_S
        cap = self._caps.get(sink)
        if cap is not None and state.in_flight >= cap:
            if state.answering and now - state.last_heard < BUSY_SILENCE_S:
                return RetryLater(
                    f"{_BUSY}{cap} requests to this sink already in flight",
                    after=BUSY_WAIT_S + random.uniform(0, BUSY_WAIT_S),
                    rate_limited=True,
                )
            return RetryLater(
                f"saturated: {cap} requests to this sink already in flight "
                "(it answers too slowly or not at all)"
            )
        if state.in_flight == 0:
            state.last_heard = now
        state.in_flight += 1
        return None

    def leave(self, sink: str, outcome: Outcome | None) -> None:
        """After a request that `enter` let through (outcome None: it raised)."""
        state = self._state(sink)
        state.in_flight -= 1
        state.last_heard = time.monotonic()
        while state.waiters:  # the freed slot goes to the longest-waiting delivery
            waiter = state.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if not (isinstance(outcome, RetryLater) and outcome.rate_limited):
            state.answering = isinstance(outcome, Delivered)
        if isinstance(outcome, Delivered):
            state.limited = False
            state.held = 0
        elif isinstance(outcome, RetryLater) and outcome.rate_limited:
            wait = outcome.after if outcome.after is not None else DEFAULT_RATE_WAIT_S
            now = time.monotonic()
            state.blocked_until = max(state.blocked_until, now + wait)
            state.limited = True
            state.next_probe_at = max(state.next_probe_at, state.blocked_until)


def default_max_in_flight(concurrency: int) -> int:
    """Half the worker's slots: one hung sink leaves the other half to every other sink."""
    return max(1, concurrency // 2)
