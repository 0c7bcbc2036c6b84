"""Reconciliation (SPEC 11): ask a provider's status API about a payment whose next webhook
never came, and emit the stage it reports through the normal path.

- **What is due.** The claim script (relay.ledger.record) keeps one sorted set per source that
  reconciles (keys.reconcile_due: payment id -> when to ask next, ms): an event at an open
  status (created, pending, paid) sets it to `after` from now, any other status removes it.
  A pass reads only what is due, never the log.
- **One scheduler.** Every worker runs a `Reconciler`; only the holder of the lease
  (keys.reconcile_lease: SET NX PX, renewed every tick and before every API call) works.
  When it dies the lease expires and another worker's next tick takes it.
- **Backoff.** Each tick (a quarter of the smallest `after`/`backoff`, 0.2 to 5 s) asks about
  at most BATCH due payments per source, within the source's `rate_limit`; each is then due
  again after `backoff`, doubling up to `max_backoff`, until its status is final (the claim
  removes it), `give_up` has passed since it went quiet, or it left the log. The state
  (keys.reconcile_payment) is in Redis: a restart goes on where it was.
- **Emitting.** A later stage than the relay has seen becomes a canonical event with
  `"reconciled": true` and the API's answer in `data`, queued as a `reconciled` job that the
  workers run through Pipeline.handle_event: the claim (dedupe, sequence, stale), routing and
  sinks of every webhook. Its dedupe key is the webhook's where the answer tells it (IVPAY,
  IPN); and the claim marks the stage (`r:<type>`), so the webhook of that stage arriving
  later is a duplicate whatever its key; and it drops the reconciled event when the payment
  got an event since the scheduler read it (a webhook and the scheduler racing: one wins).
- **Errors.** 401/403 pause the source (backoff doubling to max_backoff; a config with other
  credentials ends the pause) with the error in `relay status` and the log; a 429 pauses it
  for Retry-After; 5xx, timeouts and unreadable answers back the payment off. Nothing raises
  out of a tick: a broken provider never makes a crash loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from relay import clock
from relay.config.model import RelayConfig
from relay.config.types import ReconcileConfig
from relay.events import Payment, PaymentEvent, loads
from relay.keys import (
    Keys,
    reconcile_due,
    reconcile_lease,
    reconcile_payment,
    reconcile_rate,
    reconcile_source,
    reconcile_stat,
)
from relay.logs import get_logger
from relay.payments import FINAL, rank
from relay.providers import calypso, coinpayments, coinpayments_ipn, ivpay
from relay.queue import add_job
from relay.ratelimit import RateLimiter
from relay.reconcile_api import AUTH, RATE_LIMITED, ApiError, StatusAnswer, reconciling

log = get_logger("relay.reconcile")

RECONCILED_JOB = "reconciled"  # the arq job that delivers a reconciled event (workers.jobs)
FetchStatus = Callable[[aiohttp.ClientSession, Any, str], Awaitable[StatusAnswer]]
CLIENTS: dict[str, FetchStatus] = {  # provider kind -> its status API client
    "ivpay": ivpay.fetch_status,
    "coinpayments": coinpayments.fetch_status,
    "calypso": calypso.fetch_status,
    "coinpayments_ipn": coinpayments_ipn.fetch_status,
}
LEASE_S = 15.0  # a dead scheduler's lease passes on this soon
BATCH = 20  # due payments asked about per source and tick
EVERY_CAP = 1000  # payments one `relay reconcile` pass looks at per source
STATE_EXTRA_S = 86400  # a payment's scheduler state outlives its give_up by this
SOURCE_TTL_S = 30 * 86400
STAGES = {0: "created", 1: "pending", 2: "paid", 3: "completed"}  # an open payment's top rank

# The lease: renew it if it is ours, take it if nobody holds it. KEYS: lease. ARGV: owner, ms.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# The next check, unless the payment got an event meanwhile (its claim rescheduled it) or was
# finished (removed: ZADD XX adds nothing). KEYS: due set, scheduler state, payment state.
# ARGV: payment id, seq read, next ms, checks made, quiet since ms, state TTL s, last result.
_RESCHEDULE = """
if (redis.call('HGET', KEYS[3], 'seq') or '0') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'n', ARGV[4], 'since', ARGV[5], 'next', ARGV[3],
  'last', ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
"""


@dataclass
class Check:
    """What one look at one payment found (the `relay reconcile` answer, one per payment).
    `outcome`: emitted, would_emit (dry run), up_to_date, final (the provider's last status:
    checks end), api_error, gave_up, gone (left the log), not_tracked (not open, or its source does not reconcile), waiting (source paused)
    or throttled (rate limit: asked next tick)."""

    source: str
    payment_id: str
    outcome: str
    relay_status: str | None = None
    provider_status: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    error: str | None = None
    next_check_at: float | None = None
    event: dict[str, Any] | None = None  # the event that was (or would be) emitted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Open:
    """An open payment as the scheduler reads it."""

    seq: int
    top: int  # the highest stage rank seen
    since_ms: int  # quiet since
    checks: int  # made since it went quiet
    due_ms: int | None  # its next check; None: not in the due set


def is_later(event_type: str | None, top: int) -> bool:
    """Whether a status the provider reports is news for a payment whose highest stage rank is
    `top` (and whose latest status is open, since only open payments are asked about): a
    higher stage, or a final one at the same rank (pending -> expired)."""
    stage = rank(event_type or "")
    if stage is None or event_type is None:
        return False
    return stage > top or (stage == top and event_type.removeprefix("payment.") in FINAL)


def tick_seconds(settings: list[ReconcileConfig]) -> float:
    quickest = min((min(s.after, s.backoff) for s in settings), default=20.0)
    return max(0.2, min(5.0, quickest / 4))


def fingerprint(source: Any) -> str:
    """A digest of a source's config (credentials included): a pause for refused credentials
    holds only while the config is the one that was refused."""
    return hashlib.sha256(source.model_dump_json().encode()).hexdigest()[:16]


def event_from_json(raw: bytes) -> PaymentEvent:
    """A reconciled job's event, back from its JSON (exact decimals kept)."""
    body = loads(raw)
    payment = Payment(**body.pop("payment"))
    return PaymentEvent(**body, payment=payment)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(float(_text(value))) if value not in (None, b"", "") else default
    except ValueError:
        return default


class Reconciler:
    """The scheduler of one process, and the one pass `relay reconcile` runs."""

    def __init__(
        self, redis: Any, config: RelayConfig, session: aiohttp.ClientSession, owner: str
    ) -> None:
        self.redis = redis
        self.config = config
        self.session = session
        self.owner = owner
        self.keys = Keys(config.key_prefix)
        self.settings: dict[str, ReconcileConfig] = reconciling(config)
        self.limiter = RateLimiter(redis)
        self.tick_s = tick_seconds(list(self.settings.values()))
        timeouts = [s.timeout for s in self.settings.values()]
        self.lease_ms = int(max(LEASE_S, 3 * self.tick_s, max(timeouts, default=0) + 5) * 1000)
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)
        self._reschedule = redis.register_script(_RESCHEDULE)
        self.passes = 0  # ticks run holding the lease

    # --- the scheduler ----------------------------------------------------------------------

    async def run(self) -> None:
        """Tick until cancelled. Every error is logged and the next tick comes as usual."""
        while True:
            try:
                if await self.hold_lease():
                    self.passes += 1
                    await asyncio.gather(*(self.pass_source(name) for name in self.settings))
            except (RedisError, OSError) as exc:
                log.warning("reconciliation tick failed: Redis", error=repr(exc)[:200])
            except Exception:  # a bug must not stop the scheduler, nor spin it
                log.exception("reconciliation tick failed")
            await asyncio.sleep(self.tick_s)

    async def hold_lease(self) -> bool:
        return bool(
            await self._lease(keys=[reconcile_lease(self.keys)], args=[self.owner, self.lease_ms])
        )

    async def release(self) -> None:
        await self._release(keys=[reconcile_lease(self.keys)], args=[self.owner])

    async def pass_source(
        self, name: str, *, dry_run: bool = False, every: bool = False
    ) -> list[Check]:
        """Ask about the source's due payments (`every`: all it tracks, due or not, as the
        CLI does; dry_run: write nothing, emit nothing). Stops at a pause or the rate limit."""
        due_key = reconcile_due(self.keys, name)
        if every:
            members = await self.redis.zrange(due_key, 0, EVERY_CAP - 1)
        else:
            if await self._paused(name):
                return []
            members = await self.redis.zrangebyscore(
                due_key, "-inf", clock.now_ms(), start=0, num=BATCH
            )
        checks: list[Check] = []
        for member in members:
            check = await self.check(name, _text(member), dry_run=dry_run, wait=every)
            checks.append(check)
            if check.outcome in ("throttled", "waiting"):
                break
            if check.outcome == "api_error" and not every and await self._paused(name):
                break  # the answer paused the source (credentials, 429): the rest waits too
        return checks

    # --- one payment ------------------------------------------------------------------------

    async def check(
        self, name: str, payment_id: str, *, dry_run: bool = False, wait: bool = False
    ) -> Check:
        """Look at one tracked payment now: give up, ask the API, emit or reschedule."""
        settings = self.settings.get(name)
        if settings is None:
            return Check(name, payment_id, "not_tracked", error="the source does not reconcile")
        now_ms = clock.now_ms()
        found = await self._read(name, payment_id, settings, now_ms)
        if isinstance(found, Check):
            if found.outcome == "gone" and not dry_run:
                await self.redis.zrem(reconcile_due(self.keys, name), payment_id)
            return found
        seen = STAGES.get(found.top)
        if now_ms - found.since_ms > settings.give_up * 1000:
            if not dry_run:
                await self._end(name, payment_id, "gave up", stat="gave_up")
                log.info("reconciliation gave up", source=name, payment_id=payment_id)
            return Check(name, payment_id, "gave_up", seen)
        if not await self._slot(name, settings, wait=wait):
            return Check(name, payment_id, "throttled", seen)
        if not wait and not dry_run and not await self.hold_lease():
            return Check(name, payment_id, "waiting", seen)  # the lease moved on meanwhile
        try:
            answer = await self._ask(name, payment_id, dry_run)
        except ApiError as exc:
            return await self._failed(name, payment_id, settings, found, exc, dry_run)
        later = is_later(answer.type, found.top)
        final = answer.final or (answer.type or "").removeprefix("payment.") in FINAL
        if not later:
            outcome = "final" if final else "up_to_date"
            check = Check(name, payment_id, outcome, seen, answer.provider_event)
        else:
            event = replace(
                PaymentEvent.build(
                    source=name,
                    provider=self.config.sources[name].provider,
                    dedupe_key=answer.dedupe_key,
                    type=str(answer.type),
                    provider_event=answer.provider_event,
                    received_at=now_ms / 1000,
                    occurred_at=answer.occurred_at,
                    payment=answer.payment,
                    data=answer.data,
                ),
                reconciled=True,
            )
            outcome = "would_emit" if dry_run else "emitted"
            check = Check(name, payment_id, outcome, seen, answer.provider_event, event.id)
            check.event_type, check.event = event.type, event.to_dict()
            if not dry_run:
                await self._emit(event, found.seq)
        if dry_run:
            return check
        if final and not later:  # nothing more will come: the checks end
            await self._end(name, payment_id, f"{answer.provider_event}: final")
        else:
            last = f"{check.provider_status}: {check.outcome}"
            check.next_check_at = await self._next(name, payment_id, settings, found, last)
        return check

    async def _read(
        self, name: str, payment_id: str, settings: ReconcileConfig, now_ms: int
    ) -> _Open | Check:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.payment_state(name, payment_id), "seq", "rank")
            pipe.hmget(reconcile_payment(self.keys, name, payment_id), "seq", "since", "n", "next")
            pipe.zscore(reconcile_due(self.keys, name), payment_id)
            (seq, top), (seen_seq, since, checks, planned), due = await pipe.execute()
        if seq is None:  # the log forgot it (retention), or never had it
            if due is None:
                return Check(name, payment_id, "not_tracked", error="unknown payment")
            return Check(name, payment_id, "gone", error="no longer in the event log")
        if due is None:
            return Check(
                name, payment_id, "not_tracked", STAGES.get(_int(top, -1)), error="not open"
            )
        due_ms = int(due)
        # An event since the last check that reset the wait (the claim rescheduled it): quiet
        # since that claim. A stale one leaves the schedule, and the quiet time, as they were.
        if _int(seen_seq, -1) != _int(seq) and _int(planned, -1) != due_ms:
            since, checks = due_ms - int(settings.after * 1000), 0
        return _Open(
            seq=_int(seq),
            top=_int(top, -1),
            since_ms=_int(since, now_ms),
            checks=_int(checks),
            due_ms=due_ms,
        )

    async def _ask(self, name: str, payment_id: str, dry_run: bool) -> StatusAnswer:
        source = self.config.sources[name]
        if not dry_run:
            await self.redis.hincrby(self.keys.stats, reconcile_stat(name, "attempted"), 1)
        try:
            answer = await CLIENTS[source.provider](self.session, source, payment_id)
        except ApiError:
            raise
        except Exception as exc:  # a client bug: this payment backs off, the tick goes on
            log.exception("status API client failed", source=name, payment_id=payment_id)
            raise ApiError("bad_answer", f"internal error: {type(exc).__name__}") from exc
        if not dry_run:
            async with self.redis.pipeline(transaction=False) as pipe:
                key = reconcile_source(self.keys, name)
                pipe.hset(
                    key, mapping={"last_ok_at": clock.now(), "failures": 0, "paused_until": 0}
                )
                pipe.expire(key, SOURCE_TTL_S)
                await pipe.execute()
        return answer

    async def _emit(self, event: PaymentEvent, seen_seq: int) -> None:
        """Queue the event for the workers' normal path; its job id is the event's, so a
        second emission of one stage while the first waits is not queued twice."""
        kwargs = {"event": event.to_json(), "seen_seq": seen_seq, "received_at": clock.now()}
        async with self.redis.pipeline(transaction=True) as pipe:
            add_job(pipe, self.keys, f"rc_{event.id}", RECONCILED_JOB, kwargs)
            pipe.hincrby(self.keys.stats, reconcile_stat(event.source, "recovered"), 1)
            await pipe.execute()
        log.warning(
            "missed webhook recovered by reconciliation",
            source=event.source,
            payment_id=event.payment.id,
            reference=event.payment.reference,
            event_id=event.id,
            type=event.type,
            provider_status=event.provider_event,
        )

    async def _next(
        self, name: str, payment_id: str, settings: ReconcileConfig, found: _Open, last: str
    ) -> float:
        """Due again after the backoff; returns when (Unix seconds)."""
        delay = min(settings.backoff * 2**found.checks, settings.max_backoff)
        delay *= 1 + random.uniform(0, 0.1)  # spread payments that went quiet together
        next_ms = clock.now_ms() + int(delay * 1000)
        await self._reschedule(
            keys=[
                reconcile_due(self.keys, name),
                reconcile_payment(self.keys, name, payment_id),
                self.keys.payment_state(name, payment_id),
            ],
            args=[
                payment_id,
                found.seq,
                next_ms,
                found.checks + 1,
                found.since_ms,
                int(settings.give_up) + STATE_EXTRA_S,
                last[:300],
            ],
        )
        return next_ms / 1000

    async def _end(self, name: str, payment_id: str, last: str, stat: str | None = None) -> None:
        """No more checks of this payment (a later event of it starts them again)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(reconcile_due(self.keys, name), payment_id)
            pipe.hset(reconcile_payment(self.keys, name, payment_id), "last", last)
            if stat is not None:
                pipe.hincrby(self.keys.stats, reconcile_stat(name, stat), 1)
            await pipe.execute()

    # --- errors, pauses, the rate limit -----------------------------------------------------

    async def _failed(
        self,
        name: str,
        payment_id: str,
        settings: ReconcileConfig,
        found: _Open,
        error: ApiError,
        dry_run: bool,
    ) -> Check:
        seen = STAGES.get(found.top)
        message = f"{self.config.sources[name].provider} status API: {error}"
        check = Check(name, payment_id, "api_error", seen, error=message)
        if dry_run:
            return check
        pause_s: float | None = None
        if error.kind in (AUTH, RATE_LIMITED):
            pause_s = await self._pause(name, settings, error, message)
        else:
            check.next_check_at = await self._next(name, payment_id, settings, found, message)
        await self.redis.hincrby(self.keys.stats, reconcile_stat(name, "api_error"), 1)
        fields = {"source": name, "payment_id": payment_id, "error": message}
        if error.kind == AUTH:
            log.error(
                "reconciliation paused: the status API refused the credentials",
                fix=f"check the credentials of sources.{name} (and its reconcile: section)",
                paused_for_s=pause_s,
                **fields,
            )
        else:
            log.warning("reconciliation: status API error", paused_for_s=pause_s, **fields)
        return check

    async def _pause(
        self, name: str, settings: ReconcileConfig, error: ApiError, message: str
    ) -> float:
        key = reconcile_source(self.keys, name)
        failures = _int(await self.redis.hget(key, "failures"))
        if error.kind == AUTH:
            seconds = min(settings.backoff * 2**failures, settings.max_backoff)
        else:
            seconds = min(error.retry_after or settings.backoff, settings.max_backoff)
        now = clock.now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "last_error": message[:300],
                    "last_error_at": now,
                    "paused_until": int((now + seconds) * 1000),
                    "paused_cfg": fingerprint(self.config.sources[name]),
                    "failures": failures + 1,
                },
            )
            pipe.expire(key, SOURCE_TTL_S)
            await pipe.execute()
        return float(seconds)

    async def _paused(self, name: str) -> bool:
        until, config = await self.redis.hmget(
            reconcile_source(self.keys, name), "paused_until", "paused_cfg"
        )
        if _int(until) <= clock.now_ms():
            return False
        return _text(config) == fingerprint(self.config.sources[name])

    async def _slot(self, name: str, settings: ReconcileConfig, *, wait: bool) -> bool:
        """A rate-limit slot for one API call; `wait`: sleep for it (the CLI), else False."""
        while True:
            delay = await self.limiter.acquire(reconcile_rate(self.keys, name), settings.rate_limit)
            if delay <= 0:
                return True
            if not wait:
                return False
            await asyncio.sleep(delay)
