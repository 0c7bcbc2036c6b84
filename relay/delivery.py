"""The worker's data path after the queue: normalize -> dedupe -> route -> deliver -> record.

Crash safety rests on one rule: the state of each (event, sink) lives in Redis and names its
owner. Missing: the inbound job owns it. `job:<id>`: that retry job owns it. `ok` / `dlq`:
finished. A job re-run after a crash acts only on what it still owns, and every state change
is written in the same MULTI as the job or dead letter it points at.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from dataclasses import replace
from typing import Any

from relay import clock, pause
from relay.admission import DEFAULT_RATE_WAIT_S, Admission, default_max_in_flight
from relay.attempt import Attempt, next_delay, state_ttl_s
from relay.config.model import RelayConfig
from relay.dlq import DeadLetter, DeadLetterQueue, delivery_letter_id
from relay.events import PaymentEvent, StoredEvent, dumps
from relay.keys import (
    LATENCY_BUCKETS,
    Keys,
    delivery_job_id,
    delivery_stat,
    event_stat,
    inbound_stat,
)
from relay.ledger import record as ledger
from relay.ledger.gate import LogGate
from relay.logs import get_logger
from relay.providers import InboundRequest, Provider
from relay.queue import DELIVER, add_job
from relay.ratelimit import RateLimiter
from relay.reconcile_api import reconciling
from relay.redact import redact
from relay.routing import route
from relay.script_batcher import ScriptBatcher
from relay.sinks import Delivered, Failed, Outcome, RetryLater, Sink
from relay.sinks.client import SinkClient

log = get_logger("relay.worker")

MAX_WAITS = 2000  # 429 / rate-limit waits per delivery before a wait counts as an attempt
MIN_WAIT_CEILING_S = 3600.0  # a sink may always ask for up to an hour, whatever the schedule
RATE_WAIT_INLINE_S = 2.0  # wait this long inside the job for a rate-limit slot, then reschedule

# Mark deliveries done, count them, observe their latency and log the attempts: one script
# call per event, because per-command client cost (not Redis) dominates a worker's CPU.
# KEYS: state hash, stats hash, log event hash, then per sink its latency and health hashes.
# ARGV: state TTL, now, then per sink: name, its stats field, latency bucket, seconds, write
# health (1/0), log attempt field, log attempt record.
_DELIVERED = """
local n = (#ARGV - 2) / 7
local logged = redis.call('EXISTS', KEYS[3]) == 1
for i = 0, n - 1 do
  local name = ARGV[3 + 7 * i]
  redis.call('HSET', KEYS[1], name, 'ok')
  redis.call('HINCRBY', KEYS[2], ARGV[4 + 7 * i], 1)
  redis.call('HINCRBY', KEYS[4 + 2 * i], ARGV[5 + 7 * i], 1)
  redis.call('HINCRBYFLOAT', KEYS[4 + 2 * i], 'sum', ARGV[6 + 7 * i])
  if ARGV[7 + 7 * i] == '1' then
    redis.call('HSET', KEYS[5 + 2 * i], 'last_ok_at', ARGV[2], 'gone', 0)
  end
  if logged then
    redis.call('HSET', KEYS[3], 'st:' .. name, 'delivered', ARGV[8 + 7 * i], ARGV[9 + 7 * i])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return n
"""

# The delivery's owner and whether its sink is paused, in the one read a retry job makes.
# KEYS: delivery states, paused. ARGV: sink.
_OWNER = """
return {redis.call('HGET', KEYS[1], ARGV[1]) or '', redis.call('HEXISTS', KEYS[2], ARGV[1])}
"""


class Pipeline:
    def __init__(
        self,
        redis: Any,
        config: RelayConfig,
        sinks: dict[str, Sink],
        client: SinkClient,
    ) -> None:
        self.redis = redis
        self.config = config
        self.keys = Keys(config.key_prefix)
        self.sinks = sinks
        self.client = client  # the sinks' HTTP client (relay.sinks.client)
        self.dlq = DeadLetterQueue(redis, self.keys, config.dlq.max_entries)
        self.limiter = RateLimiter(redis)
        # Concurrent jobs' claims and delivered marks share round trips (relay.script_batcher).
        self._claim = ScriptBatcher(redis, ledger.CLAIM, max_in_flight=2)
        self._delivered = ScriptBatcher(redis, _DELIVERED, max_in_flight=2)
        self._owner = redis.register_script(_OWNER)
        self._hold = redis.register_script(pause.HOLD)
        self.log_gate = LogGate(config)  # retention_s 0: write no log (relay.ledger.gate)
        self.window_ms = int(config.dedupe.window * 1000)
        self.state_ttl_s = state_ttl_s(config)
        self.sink_configs = {name: sink.config for name, sink in sinks.items()}
        self.admission = Admission(
            {
                name: cfg.max_in_flight or default_max_in_flight(config.worker.concurrency)
                for name, cfg in self.sink_configs.items()
            }
        )
        self._last_ok_written: dict[str, float] = {}
        # SPEC 11: each reconciling source's `after` (ms): the claim schedules its checks.
        self.reconcile_after_ms = {n: int(s.after * 1000) for n, s in reconciling(config).items()}

    # --- inbound ------------------------------------------------------------------------

    async def process_inbound(
        self, inbound_id: str, request: InboundRequest, provider: Provider | None
    ) -> None:
        if provider is None:
            await self.dead_inbound(
                inbound_id, request, f"source {request.source!r} is not configured"
            )
            return
        try:
            events = provider.normalize(request)
        except Exception as exc:  # a provider bug must not lose the request
            log.exception("normalize failed", source=request.source, inbound_id=inbound_id)
            await self.dead_inbound(
                inbound_id, request, f"normalize failed: {type(exc).__name__}: {exc}"
            )
            return
        if not events:  # e.g. a ping: nothing to relay, but it was seen
            await self.redis.hincrby(self.keys.stats, inbound_stat(request.source, "no_event"), 1)
        if len(events) == 1:  # the usual case: no task to start (a loop turn sooner)
            await self.handle_event(events[0], inbound_id, request.received_at)
            return
        await asyncio.gather(
            *(self.handle_event(e, inbound_id, request.received_at) for e in events)
        )

    async def handle_event(
        self, event: PaymentEvent, inbound_id: str, received_at: float, seen_seq: int | None = None
    ) -> None:
        targets = route(self.sink_configs, event.type, event.source)
        body = event.to_dict()
        call = ledger.claim_call(
            self.keys,
            event,
            dumps(body),
            inbound_id,
            self.window_ms,
            event_stat(event.source, event.type),
            event_stat(event.source, "duplicate"),
            self.log_gate.retention_s,
            [(name, self.sink_configs[name].drops_stale()) for name in targets],
            max(self.log_gate.retention_s, self.state_ttl_s),
            self.reconcile_after_ms.get(event.source),
            seen_seq,
        )
        claimed = await self._claim(keys=call.keys, args=call.args)
        if claimed is None:
            log.info(
                "duplicate event dropped",
                event_id=event.id,
                source=event.source,
                inbound_id=inbound_id,
            )
            return
        go_raw, held_raw, sequence, stale, dropped = claimed
        if event.payment.id:  # SPEC 11: numbered and judged in the claim, atomically
            body["stale"] = bool(stale)
            body["payment"]["sequence"] = int(sequence)
        stored = StoredEvent.of_body(body)
        for name in dropped:
            log.info(
                "delivery dropped: stale event",
                **self._fields(Attempt(stored, name.decode(), 0, 0, received_at)),
            )
        go = [name.decode() for name in go_raw]
        held = [name.decode() for name in held_raw]
        go += [a.sink for a in await self.hold(stored, held, received_at, "") if a is not None]
        if go:
            await self.deliver_each([Attempt(stored, name, 1, 0, received_at) for name in go])

    async def hold(
        self, event: StoredEvent, sinks: list[str], received_at: float, owner: str
    ) -> list[Attempt | None]:
        """Hold each first attempt for a paused sink (relay.pause). Returns the attempts to
        send now instead (the sink was resumed meanwhile); None for one held or not ours."""
        return [
            await self.hold_attempt(Attempt(event, sink, 1, 0, received_at), owner)
            for sink in sinks
        ]

    async def hold_attempt(self, attempt: Attempt, owner: str) -> Attempt | None:
        """Park `attempt` while its sink is paused; the attempt itself when it is not."""
        job_id = delivery_job_id(
            attempt.event.id, attempt.sink, attempt.number, f"h{uuid.uuid4().hex[:10]}"
        )
        keys, args = pause.hold_call(
            self.keys,
            event_id=attempt.event.id,
            sink=attempt.sink,
            expected_owner=owner,
            job_id=job_id,
            kwargs=attempt.job_kwargs(),
            received_at=attempt.received_at,
            state_ttl_s=self.state_ttl_s,
        )
        result = int(await self._hold(keys=keys, args=args))
        if result == 0:
            return attempt
        if result == 1:
            log.info("delivery held: sink paused", **self._fields(attempt))
        return None

    async def deliver_each(self, attempts: list[Attempt]) -> None:
        """Send to every sink at once and record each sink's outcome as soon as it is known:
        a slow sink neither delays the record of a fast one (which would widen the window for
        duplicates) nor its next event. Outcomes that arrive together share one record."""
        pending = {asyncio.ensure_future(self.send(a)): a for a in attempts}
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                await self.record([(pending.pop(task), task.result()) for task in done])
        finally:  # cancelled (SIGTERM, the job's deadline): the unrecorded attempts stop too
            for task in pending:
                task.cancel()

    async def dead_inbound(self, inbound_id: str, request: InboundRequest, reason: str) -> None:
        letter = DeadLetter(
            id=inbound_id,
            kind="inbound",
            source=request.source,
            failed_at=clock.now(),
            reason=reason,
            received_at=request.received_at,
            inbound={
                "source": request.source,
                "body": request.body,
                "headers": dict(request.headers),
                "client_ip": request.client_ip,
                "received_at": request.received_at,
            },
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            self.dlq.add(pipe, letter)
            pipe.hincrby(self.keys.stats, inbound_stat(request.source, "dead_lettered"), 1)
            await pipe.execute()
        await self.dlq.trim()
        # The body stays in the dead letter (`relay dlq list --json`), never in the log.
        log.error(
            "inbound dead-lettered", inbound_id=inbound_id, source=request.source, reason=reason
        )

    # --- one delivery -------------------------------------------------------------------

    async def run_job(self, job_id: str, attempt: Attempt) -> None:
        """A `deliver` job: act only if this job still owns the (event, sink) delivery."""
        raw_state, paused = await self._owner(
            keys=[self.keys.deliveries(attempt.event.id), self.keys.paused], args=[attempt.sink]
        )
        state, owner = raw_state.decode(), f"job:{job_id}"
        if state and state != owner:
            log.info(
                "delivery already handled",
                event_id=attempt.event.id,
                sink=attempt.sink,
                state=state,
            )
            return
        if paused and await self.hold_attempt(attempt, state) is None:
            return
        if attempt.sink not in self.sinks:
            outcome: Outcome = Failed(f"sink {attempt.sink!r} is no longer configured")
        else:
            outcome = await self.send(attempt)
        await self.record([(attempt, outcome)])

    async def send(self, attempt: Attempt) -> Outcome:
        """One try at one sink (after a rate-limit slot, when the sink has a limit)."""
        sink = self.sinks[attempt.sink]
        limit = sink.config.rate_limit
        if limit is not None:
            wait = await self._rate_slot(attempt.sink, limit)
            if wait > 0:
                return RetryLater("rate limit", after=wait, rate_limited=True)
        refused = await self.admission.admit(attempt.sink)
        if refused is not None:
            return refused
        outcome: Outcome | None = None
        started = time.monotonic()
        try:
            outcome = await sink.deliver(self.client, attempt.event, attempt.number)
            outcome = replace(outcome, duration_ms=round((time.monotonic() - started) * 1000))
        except Exception as exc:  # a sink bug: retry on schedule, then dead-letter
            log.exception("sink raised", sink=attempt.sink, event_id=attempt.event.id)
            reason = redact(f"internal error in sink: {type(exc).__name__}: {exc}")
            outcome = RetryLater(reason[:300])
        finally:
            self.admission.leave(attempt.sink, outcome)
        return outcome

    async def _rate_slot(self, sink: str, limit: Any) -> float:
        deadline = time.monotonic() + RATE_WAIT_INLINE_S
        while True:
            wait = await self.limiter.acquire(self.keys.rate(sink), limit)
            if wait <= 0 or time.monotonic() + wait > deadline:
                return wait
            await asyncio.sleep(wait)

    # --- recording ----------------------------------------------------------------------

    async def record(self, results: list[tuple[Attempt, Outcome]]) -> None:
        """Write what happened to one event's deliveries: marks and counters for the delivered
        (one script call), and in one MULTI/EXEC for the rest, each state change with the
        retry job or dead letter it points at."""
        now = clock.now()
        delivered = [(a, o) for a, o in results if isinstance(o, Delivered)]
        failed: list[tuple[Attempt, RetryLater | Failed]] = [
            (a, o) for a, o in results if not isinstance(o, Delivered)
        ]
        if delivered:
            await self._mark_delivered(delivered, now)
        if failed:
            dead = False
            async with self.redis.pipeline(transaction=True) as pipe:
                for attempt, outcome in failed:
                    dead |= self._record_failure(pipe, attempt, outcome, now)
                # After the writes: EXPIRE on a key that does not exist yet does nothing.
                pipe.expire(self.keys.deliveries(failed[0][0].event.id), self.state_ttl_s)
                await pipe.execute()
            if dead:
                await self.dlq.trim()

    async def _mark_delivered(self, results: list[tuple[Attempt, Delivered]], now: float) -> None:
        event = results[0][0].event
        keys = [self.keys.deliveries(event.id), self.keys.stats, self.keys.log_event(event.id)]
        args: list[Any] = [self.state_ttl_s, now]
        for attempt, outcome in results:
            sink, seconds = attempt.sink, max(0.0, now - attempt.received_at)
            write_health = now - self._last_ok_written.get(sink, 0.0) >= 1.0  # 1 s is enough
            if write_health:
                self._last_ok_written[sink] = now
            keys += [self.keys.latency(sink), self.keys.sink_health(sink)]
            entry = ledger.attempt_log(
                attempt.sink,
                attempt.replay,
                attempt.number,
                attempt.waits,
                outcome,
                "delivered",
                now,
            )
            args += [
                sink,
                delivery_stat(sink, "delivered"),
                _bucket(seconds),
                f"{seconds:.6f}",
                int(write_health),
                entry.field(),
                entry.record(),
            ]
        await self._delivered(keys=keys, args=args)
        for attempt, outcome in results:  # SPEC 9: one line per sink and outcome
            log.info(
                "delivered", status=outcome.status, ms=outcome.duration_ms, **self._fields(attempt)
            )

    @staticmethod
    def _fields(attempt: Attempt) -> dict[str, Any]:
        """What every delivery log line names (SPEC 9)."""
        payment = attempt.event.body.get("payment") or {}
        return {
            "event_id": attempt.event.id,
            "payment_id": payment.get("id"),
            "reference": payment.get("reference"),
            "source": attempt.event.source,
            "sink": attempt.sink,
            "attempt": attempt.number,
        }

    def _record_failure(
        self, pipe: Any, attempt: Attempt, outcome: RetryLater | Failed, now: float
    ) -> bool:
        """A retry (the next attempt's job) or a dead letter; True for a dead letter."""
        event_id, sink = attempt.event.id, attempt.sink
        state_key = self.keys.deliveries(event_id)
        fields = self._fields(attempt)
        health = {
            "last_error": outcome.reason,
            "last_error_at": now,
            "last_status": outcome.status or 0,
        }
        self._last_ok_written.pop(sink, None)  # the next success is written at once
        retry = self._next(attempt, outcome)
        if retry is not None:
            delay, following = retry
            job_id = delivery_job_id(event_id, sink, following.number, following.waits)
            add_job(pipe, self.keys, job_id, DELIVER, following.job_kwargs(), delay)
            pipe.hset(state_key, sink, f"job:{job_id}")
            kind = "rate_limited" if following.number == attempt.number else "retry"
            self._log_attempt(
                pipe,
                event_id,
                ledger.attempt_log(
                    attempt.sink,
                    attempt.replay,
                    attempt.number,
                    attempt.waits,
                    outcome,
                    kind,
                    now,
                    delay,
                ),
            )
            pipe.hincrby(self.keys.stats, delivery_stat(sink, kind), 1)
            pipe.hset(self.keys.sink_health(sink), mapping=health)
            log.warning(
                "delivery will be retried",
                reason=outcome.reason,
                status=outcome.status,
                retry_in_s=round(delay, 3),
                **fields,
            )
            return False
        health["gone"] = int(isinstance(outcome, Failed) and outcome.sink_gone)
        self.dlq.add(
            pipe,
            DeadLetter(
                id=delivery_letter_id(event_id, sink),
                kind="delivery",
                source=attempt.event.source,
                failed_at=now,
                reason=outcome.reason,
                attempts=attempt.number,
                sink=sink,
                event_id=event_id,
                event_type=attempt.event.type,
                last_status=outcome.status,
                excerpt=outcome.excerpt,
                received_at=attempt.received_at,
                event=attempt.event.json,
            ),
        )
        pipe.hset(state_key, sink, "dlq")
        self._log_attempt(
            pipe,
            event_id,
            ledger.attempt_log(
                attempt.sink, attempt.replay, attempt.number, attempt.waits, outcome, "failed", now
            ),
        )
        pipe.hincrby(self.keys.stats, delivery_stat(sink, "failed"), 1)
        pipe.hset(self.keys.sink_health(sink), mapping=health)
        log.error("delivery dead-lettered", reason=outcome.reason, status=outcome.status, **fields)
        return True

    def _next(self, attempt: Attempt, outcome: RetryLater | Failed) -> tuple[float, Attempt] | None:
        """The delay and the attempt that follows a failure, or None: dead-letter it."""
        if isinstance(outcome, Failed):
            return None
        retry = (
            self.config.retry_for(self.sinks[attempt.sink].config)
            if attempt.sink in self.sinks
            else self.config.retry
        )
        # What a sink asks for is bounded by the schedule's own longest wait (an hour at
        # least); non-finite or negative values are treated as absent (sinks parse them so).
        ceiling = max([*retry.schedule, MIN_WAIT_CEILING_S])
        asked = outcome.after
        if asked is not None and not (math.isfinite(asked) and asked >= 0):
            asked = None
        if outcome.rate_limited and attempt.waits < MAX_WAITS:
            # A rate limit is a wait, not a failure: same attempt number, as long as asked.
            delay = min(ceiling, asked if asked is not None else DEFAULT_RATE_WAIT_S)
            delay += random.uniform(0, min(1.0, delay * 0.1))  # spread the herd a little
            return delay, attempt.then(attempt.number, attempt.waits + 1)
        scheduled = next_delay(retry, attempt.number)
        if scheduled is None:
            return None
        # Never sooner than Retry-After asks.
        delay = scheduled if asked is None else max(scheduled, min(ceiling, asked))
        return delay, attempt.then(attempt.number + 1, attempt.waits)

    def _log_attempt(self, pipe: Any, event_id: str, entry: ledger.AttemptLog) -> None:
        """The attempt and its state, in the caller's MULTI (EVAL: see ledger.record.WRITE)."""
        if self.log_gate.retention_s:
            pipe.eval(ledger.WRITE, 1, self.keys.log_event(event_id), *entry.fields())


def _bucket(seconds: float) -> str:
    """The latency histogram field for one observation (buckets are not cumulative)."""
    return next((str(b) for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
