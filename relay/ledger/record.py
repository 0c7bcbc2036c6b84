"""Writing the event log (SPEC 9) inside the round trips the worker already makes.

Nothing here sends a command of its own. The worker's claim script (`CLAIM`) writes the event,
its lookups and each routed sink's `pending` state when it claims the event; the delivered
script (relay.delivery) and the failure MULTI add each attempt with the state it leads to.
Every key written expires `log.retention` after the event was accepted; a later write never
creates a key again once it has expired (so no key is left without a TTL).

An attempt is stored as a compact JSON array (see `attempt_record`); relay.ledger.query turns
it back into the public JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from relay.clock import LUA_NOW_MS
from relay.events import PaymentEvent
from relay.keys import (
    LOG_AT,
    LOG_EVENT,
    LOG_INBOUND,
    LOG_SEQUENCE,
    LOG_SOURCE,
    LOG_STALE,
    LOG_TYPE,
    RECONCILED_MARK,
    Keys,
    log_attempt_field,
    log_state_field,
    log_wait_field,
    reconcile_due,
)
from relay.payments import FINAL, rank
from relay.sinks.base import Delivered, Outcome

ANSWER_BYTES = 512  # of each attempt's answer (SPEC 9)

# Claim an event for this inbound request (or find our own earlier claim after a crash), count
# it, number it within its payment and judge it stale (SPEC 11), log it, and sort the routed
# sinks into "send now", "hold" (paused) and "dropped" (stale, for sinks that drop those):
# one round trip. Another carrier's claim -> duplicate (false).
# KEYS: claim, delivery states, stats, paused, log event, log index, payment list, payment
# state (both the log event key again when the event names no payment), the source's
# reconciliation due set, then the lookups.
# ARGV: inbound id, window ms, stat field, duplicate field, retention s (0: log off), event id,
# event JSON, source, type, has payment (1/0), sink count, the routed sinks, then: the
# event's rank ('' for none), payment state TTL s, per routed sink 1 if it drops stale, and
# reconciliation (SPEC 11, relay.reconcile): the payment `seq` the reconciler read ('' for a
# webhook's event), the due entry ('' when the source does not reconcile, '-' to remove it,
# else ms from now to the next check) and the payment id (its member in the due set).
# Returns {send now, hold, sequence, stale, dropped}.
CLAIM = (
    LUA_NOW_MS
    + f"""
local n = tonumber(ARGV[11])
local seen = ARGV[14 + 2 * n]
-- Reconciliation, before this event's first claim (a re-run of its own claim goes on): a
-- webhook's event of a stage the reconciler emitted is a duplicate; a reconciled event is
-- dropped when the payment got an event since the reconciler read it (it looks again).
if ARGV[10] == '1' then
  local blocked
  if seen == '' then
    blocked = redis.call('HEXISTS', KEYS[8], '{RECONCILED_MARK}' .. ARGV[9]) == 1
  else
    blocked = (redis.call('HGET', KEYS[8], 'seq') or '0') ~= seen
  end
  if blocked and redis.call('GET', KEYS[1]) ~= ARGV[1] then
    if seen == '' then redis.call('HINCRBY', KEYS[3], ARGV[4], 1) end
    return false
  end
end
local claimed = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if claimed then
  redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
elseif redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  return false
end
local ttl = tonumber(ARGV[5])
if claimed and ttl > 0 then
  redis.call('HSET', KEYS[5], '{LOG_EVENT}', ARGV[7], '{LOG_INBOUND}', ARGV[1],
    '{LOG_AT}', now_ms, '{LOG_SOURCE}', ARGV[8], '{LOG_TYPE}', ARGV[9])
  redis.call('EXPIRE', KEYS[5], ttl)
  redis.call('ZADD', KEYS[6], now_ms, ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now_ms - ttl * 1000)
  redis.call('EXPIRE', KEYS[6], ttl)
  if ARGV[10] == '1' then
    redis.call('RPUSH', KEYS[7], ARGV[6])
    redis.call('EXPIRE', KEYS[7], ttl)
  end
  for i = 10, #KEYS do
    redis.call('SADD', KEYS[i], ARGV[6])
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
local logged = ttl > 0 and redis.call('EXISTS', KEYS[5]) == 1
local seq, stale = 0, 0
if ARGV[10] == '1' then
  local mine = 'e:' .. ARGV[6]
  local known = redis.call('HGET', KEYS[8], mine)
  if known then
    local colon = string.find(known, ':')
    seq, stale = tonumber(string.sub(known, 1, colon - 1)), tonumber(string.sub(known, colon + 1))
  else
    seq = redis.call('HINCRBY', KEYS[8], 'seq', 1)
    local r = tonumber(ARGV[12 + n])
    if r then
      local top = tonumber(redis.call('HGET', KEYS[8], 'rank') or '-1')
      if top > r then stale = 1 elseif r > top then redis.call('HSET', KEYS[8], 'rank', r) end
    end
    redis.call('HSET', KEYS[8], mine, seq .. ':' .. stale)
    if seen ~= '' then redis.call('HSET', KEYS[8], '{RECONCILED_MARK}' .. ARGV[9], seq) end
    redis.call('EXPIRE', KEYS[8], ARGV[13 + n])
  end
  if logged then redis.call('HSET', KEYS[5], '{LOG_SEQUENCE}', seq, '{LOG_STALE}', stale) end
  -- The due set: a non-stale event at an open status (re)starts the wait for its next
  -- stage; one at any other status ends the checks.
  local due = ARGV[15 + 2 * n]
  if due == '-' and stale == 0 then
    redis.call('ZREM', KEYS[9], ARGV[16 + 2 * n])
  elseif due ~= '' and stale == 0 then
    redis.call('ZADD', KEYS[9], now_ms + tonumber(due), ARGV[16 + 2 * n])
    redis.call('EXPIRE', KEYS[9], ARGV[13 + n])
  end
end
local go, hold, dropped = {{}}, {{}}, {{}}
for i = 12, 11 + n do
  local sink = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], sink) == 0 then
    if stale == 1 and ARGV[13 + n + i - 11] == '1' then
      redis.call('HSET', KEYS[2], sink, 'dropped')
      redis.call('EXPIRE', KEYS[2], ARGV[13 + n])
      if logged then redis.call('HSET', KEYS[5], 'st:' .. sink, 'dropped') end
      table.insert(dropped, sink)
    elseif redis.call('HEXISTS', KEYS[4], sink) == 1 then
      table.insert(hold, sink)
    else
      table.insert(go, sink)
      if logged then redis.call('HSETNX', KEYS[5], 'st:' .. sink, 'pending') end
    end
  end
end
return {{go, hold, seq, stale, dropped}}
"""
)

# Set fields of a log hash only while it exists (a log entry past its retention is not made
# again without a TTL). Sent with EVAL inside the failure MULTI: EVALSHA there would make
# redis-py check the script cache first, a round trip of its own.
# KEYS: the log event hash. ARGV: field, value, field, value, ...
WRITE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """What the claim script needs beyond the claim itself."""

    keys: list[str]
    args: list[Any]


def claim_call(
    keys: Keys,
    event: PaymentEvent,
    event_json: bytes,
    inbound_id: str,
    window_ms: int,
    stat: str,
    duplicate_stat: str,
    retention_s: int,
    targets: list[tuple[str, bool]],
    payment_ttl_s: int,
    reconcile_after_ms: int | None = None,
    seen_seq: int | None = None,
) -> Claim:
    """The keys and arguments of one CLAIM call (retention_s 0: the log is off). `targets`:
    the routed sinks, each with whether it drops stale events. `reconcile_after_ms`: the
    source's `reconcile.after` (None: it does not reconcile); `seen_seq`: for a reconciled
    event, the payment's event count when the reconciler read it (relay.reconcile)."""
    payment_id = event.payment.id
    payment_key = (
        keys.log_payment(event.source, payment_id) if payment_id else keys.log_event(event.id)
    )
    state_key = (
        keys.payment_state(event.source, payment_id) if payment_id else keys.log_event(event.id)
    )
    stage = rank(event.type)
    lookups = lookup_values(event, inbound_id)
    due = ""  # SPEC 11: an open status (created, pending, paid) waits `after` for the next one
    if reconcile_after_ms is not None and payment_id:
        is_open = stage is not None and event.type.removeprefix("payment.") not in FINAL
        due = str(reconcile_after_ms) if is_open else "-"
    return Claim(
        keys=[
            keys.event_claim(event.id),
            keys.deliveries(event.id),
            keys.stats,
            keys.paused,
            keys.log_event(event.id),
            keys.log_index,
            payment_key,
            state_key,
            reconcile_due(keys, event.source),
            *(keys.log_find(value) for value in lookups),
        ],
        args=[
            inbound_id,
            window_ms,
            stat,
            duplicate_stat,
            retention_s,
            event.id,
            event_json,
            event.source,
            event.type,
            1 if payment_id else 0,
            len(targets),
            *(name for name, _ in targets),
            "" if stage is None else stage,
            payment_ttl_s,
            *(int(drops) for _, drops in targets),
            "" if seen_seq is None else seen_seq,
            due,
            payment_id or "",
        ],
    )


def lookup_values(event: PaymentEvent, inbound_id: str) -> list[str]:
    """The ids an operator may search by (SPEC 9), each once: payment id, merchant reference,
    transaction hash, inbound id. The event id is its own key."""
    payment = event.payment
    values = [payment.id, payment.reference, payment.tx_hash, inbound_id]
    return list(dict.fromkeys(v for v in values if v))


@dataclass(frozen=True)
class AttemptLog:
    """One attempt as the log keeps it."""

    sink: str
    replay: int
    number: int
    at_ms: int
    outcome: str  # delivered, retry, rate_limited, failed
    status: int | None
    duration_ms: int | None
    answer: str
    next_at_ms: int | None = None
    waits: int = 0

    def field(self) -> str:
        if self.outcome == "rate_limited":
            return log_wait_field(self.sink, self.replay)
        return log_attempt_field(self.sink, self.replay, self.number)

    def record(self) -> bytes:
        """[number, at ms, outcome, status, duration ms, next attempt ms, answer, waits]."""
        return orjson.dumps(
            [
                self.number,
                self.at_ms,
                self.outcome,
                self.status,
                self.duration_ms,
                self.next_at_ms,
                _cut(self.answer),
                self.waits,
            ]
        )

    def state(self) -> str:
        """The delivery's state after this attempt (keys.LOG_STATES)."""
        return {"delivered": "delivered", "failed": "failed", "rate_limited": "pending"}.get(
            self.outcome, "retrying"
        )

    def fields(self) -> list[Any]:
        """Field/value pairs for WRITE: the attempt and the state it leads to."""
        return [self.field(), self.record(), log_state_field(self.sink), self.state()]


def attempt_log(
    sink: str,
    replay: int,
    number: int,
    waits: int,
    outcome: Outcome,
    kind: str,
    now: float,
    delay: float | None = None,
) -> AttemptLog:
    """How one attempt is logged: `kind` is delivered, retry, rate_limited or failed; `delay`
    the seconds until the next attempt, when there is one."""
    answer = outcome.excerpt
    if not isinstance(outcome, Delivered) and not answer:
        answer = outcome.reason  # a network error or timeout has no answer: say what happened
    return AttemptLog(
        sink=sink,
        replay=replay,
        number=number,
        at_ms=int(now * 1000),
        outcome=kind,
        status=outcome.status,
        duration_ms=outcome.duration_ms,
        answer=answer,
        next_at_ms=None if delay is None else int((now + delay) * 1000),
        waits=waits,
    )


def _cut(text: str) -> str:
    """The first ANSWER_BYTES bytes of an answer, never splitting a character."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= ANSWER_BYTES:
        return text
    return raw[:ANSWER_BYTES].decode("utf-8", "ignore")
