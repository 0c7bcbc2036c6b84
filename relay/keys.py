"""Every Redis key the relay writes, with its lifetime and why. arq's own keys are `arq:*`.

Every key that can grow has a TTL or a cap (SPEC 7).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

REJECTIONS_CAP = 200  # recent rejections kept for `relay status` (a list, trimmed on write)
WORKER_TTL_S = 20  # a worker's heartbeat outlives several beats; gone means the worker is gone
HEARTBEAT_S = 5
INBOUND_JOB_TTL_S = 7 * 86400  # an unprocessed raw request outlives a week-long worker outage
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    21600.0,
    86400.0,
)


@dataclass(frozen=True)
class Keys:
    prefix: str = "relay"

    @property
    def queue(self) -> str:
        """Arq's sorted set of job ids (score = ms when runnable); running jobs stay in it."""
        return f"{self.prefix}:queue"

    def inbound_seen(self, inbound_id: str) -> str:
        """Marks a stored raw request, so a byte-identical retry is not queued twice (TTL: dedupe window)."""
        return f"{self.prefix}:in:{inbound_id}"

    def event_claim(self, event_id: str) -> str:
        """The inbound id that first carried this event; a later carrier is a duplicate (TTL: window)."""
        return f"{self.prefix}:evt:{event_id}"

    def deliveries(self, event_id: str) -> str:
        """Hash sink -> state for one event, so a re-run never re-sends a delivered sink (TTL)."""
        return f"{self.prefix}:dlv:{event_id}"

    @property
    def wake(self) -> str:
        """List of at most one token, pushed when a job becomes due now (the ingress's store,
        a retry due at once, a resume); idle workers block on it between poll ticks, so a new
        job waits for no tick. A lost token costs one tick, never a job."""
        return f"{self.prefix}:wake"

    @property
    def stats(self) -> str:
        """Hash of counters (inbound per source/outcome, deliveries per sink/outcome). Bounded by config."""
        return f"{self.prefix}:stats"

    def sink_health(self, sink: str) -> str:
        """Hash: last status, last error and when, and whether the endpoint is gone (404/410)."""
        return f"{self.prefix}:sink:{sink}"

    def latency(self, sink: str) -> str:
        """Hash: receipt-to-delivery histogram buckets, sum and count for one sink."""
        return f"{self.prefix}:lat:{sink}"

    @property
    def rejections(self) -> str:
        """List of recent rejections (newest first), capped at REJECTIONS_CAP."""
        return f"{self.prefix}:rejections"

    @property
    def dlq(self) -> str:
        """Hash dead-letter id -> entry JSON. Capped by `dlq.max_entries` (oldest dropped, logged)."""
        return f"{self.prefix}:dlq"

    @property
    def dlq_index(self) -> str:
        """Sorted set dead-letter id -> time it failed, for listing in order and trimming."""
        return f"{self.prefix}:dlq:index"

    def worker(self, worker_id: str) -> str:
        """One worker process's heartbeat (jobs running, started at); TTL WORKER_TTL_S."""
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def workers(self) -> str:
        """Sorted set worker id -> last beat, so status finds workers without a SCAN; trimmed
        of ids older than WORKER_TTL_S on every beat."""
        return f"{self.prefix}:workers"

    def rate(self, sink: str) -> str:
        """Sorted set of recent send times for a rate-limited sink; trimmed to its window."""
        return f"{self.prefix}:rate:{sink}"

    # --- the event log (SPEC 9): every key below expires `log.retention` after it is made ---

    def log_event(self, event_id: str) -> str:
        """Hash: the event JSON, its inbound id, when it was accepted, and per sink its state
        and attempts (fields: relay.keys.log_*_field)."""
        return f"{self.prefix}:log:evt:{event_id}"

    @property
    def log_index(self) -> str:
        """Sorted set event id -> accepted at (ms): `relay events list`, newest first. Trimmed
        by score to the retention on every write."""
        return f"{self.prefix}:log:index"

    def log_payment(self, source: str, payment_id: str) -> str:
        """List of one payment's event ids in the order the relay accepted them."""
        return f"{self.prefix}:log:pay:{source}:{payment_id}"

    def payment_state(self, source: str, payment_id: str) -> str:
        """Hash: the payment's event count (`seq`), the highest stage seen (`rank`) and each
        event's `sequence:stale` (SPEC 11). TTL: the log's retention, at least the window."""
        return f"{self.prefix}:pay:{source}:{payment_id}"

    def log_find(self, value: str) -> str:
        """Set of the event ids a payment id, merchant reference, tx hash or inbound id names."""
        return f"{self.prefix}:log:find:{value}"

    # --- pause (SPEC 9): shared by every process -------------------------------------------

    @property
    def paused(self) -> str:
        """Hash sink -> paused until (ms by Redis's clock; 0: until resumed). One field per
        paused sink, deleted on resume: bounded by the config."""
        return f"{self.prefix}:paused"

    def held(self, sink: str) -> str:
        """Sorted set of a paused sink's held delivery job ids -> when the event was received
        (ms), so resume sends them in the order received. TTL HELD_TTL_S, renewed on write."""
        return f"{self.prefix}:held:{sink}"

    # --- rejected requests (SPEC 9): within log.rejected_max_bytes and rejected_retention ---

    @property
    def rejected(self) -> str:
        """Hash rejection id -> the request as received (msgpack), minus secret headers; the
        field `_bytes` is the total size kept. Trimmed oldest first on every write."""
        return f"{self.prefix}:rej"

    @property
    def rejected_index(self) -> str:
        """Sorted set rejection id -> when it was received (ms)."""
        return f"{self.prefix}:rej:index"


# --- fields of one event's log hash (Keys.log_event) -----------------------------------------
# Sink names contain no ':' (config validates names), so a field splits at ':'.

LOG_EVENT, LOG_INBOUND, LOG_AT, LOG_SOURCE, LOG_TYPE = "e", "in", "at", "src", "type"
LOG_SEQUENCE, LOG_STALE = "seq", "stale"  # SPEC 11, known once the claim numbered the event
LOG_STATES = ("pending", "delivered", "retrying", "paused", "failed", "dropped")
HELD_TTL_S = 30 * 86400  # a paused sink holds its deliveries this long at most
# Held delivery jobs sit in arq's queue at this score (year 33658): never due, until resume
# re-scores them. Status counts them as held, not scheduled.
HOLD_AT_MS = 10**15


def log_state_field(sink: str) -> str:
    """The (event, sink) delivery's state, one of LOG_STATES."""
    return f"st:{sink}"


def log_attempt_field(sink: str, replay: int, number: int) -> str:
    """Attempt `number` (from 1) of the delivery's `replay`-th round (0: the first sending;
    each replay or resend starts a new round, so the earlier attempts are kept)."""
    return f"a:{sink}:{replay}:{number}"


def log_wait_field(sink: str, replay: int) -> str:
    """The latest rate-limit wait of a round (a 429 is a wait, not an attempt): overwritten,
    so a long run of 429s costs one field."""
    return f"w:{sink}:{replay}"


@dataclass(frozen=True)
class LogField:
    kind: str  # "st", "a" or "w"
    sink: str
    replay: int = 0
    number: int = 0


def parse_log_field(field: str) -> LogField | None:
    """A per-sink field of the log hash, or None for the event's own fields."""
    kind, _, rest = field.partition(":")
    parts = rest.split(":")
    try:
        if kind == "st" and len(parts) == 1:
            return LogField(kind, parts[0])
        if kind == "a" and len(parts) == 3:
            return LogField(kind, parts[0], int(parts[1]), int(parts[2]))
        if kind == "w" and len(parts) == 2:
            return LogField(kind, parts[0], int(parts[1]))
    except ValueError:
        return None
    return None


# --- the stats hash: one counter per field, `<kind>:<subject>:<what>` ---------------------
# Subjects (source and sink names) and event types contain no ':' (config validates names),
# so a field splits at its first and last ':'. Everything that counts uses these builders;
# relay.monitor reads them back with parse_stat. The vocabulary is here too, so the ingress,
# the worker and the readers share it without importing each other.

INBOUND, EVENT, DELIVERY = "in", "evt", "dlv"

UNKNOWN_SOURCE = "_unknown"  # one stats bucket for every unknown name, so the hash stays bounded
# Inbound outcomes that are not rejections; any other outcome is a rejection's error.
INBOUND_OUTCOMES = ("stored", "duplicate", "no_event", "dead_lettered")
UNAVAILABLE = "unavailable"  # answered 503: Redis down, full or evicting (not the request's fault)
DELIVERY_OUTCOMES = ("delivered", "retry", "rate_limited", "failed")


def inbound_stat(source: str, outcome: str) -> str:
    """Requests per source: `stored`, `duplicate`, `unavailable`, a rejection's error, ..."""
    return f"{INBOUND}:{source}:{outcome}"


def event_stat(source: str, what: str) -> str:
    """Events per source: by type (`payment.paid`), or `duplicate`."""
    return f"{EVENT}:{source}:{what}"


def delivery_stat(sink: str, outcome: str) -> str:
    """Deliveries per sink: `delivered`, `retry`, `rate_limited`, `failed`."""
    return f"{DELIVERY}:{sink}:{outcome}"


@dataclass(frozen=True)
class StatField:
    kind: str  # INBOUND, EVENT or DELIVERY
    subject: str  # the source or sink name
    what: str


def parse_stat(field: str) -> StatField | None:
    kind, _, rest = field.partition(":")
    subject, _, what = rest.rpartition(":")
    if kind not in (INBOUND, EVENT, DELIVERY) or not subject:
        return None
    return StatField(kind, subject, what)


# --- delivery job ids: `dlv_<event id>_<sink>_<attempt>_<tag>` ------------------------------

_DELIVERY_JOB = re.compile(r"dlv_(evt_[a-z2-7]+)_(.+)_(\d+)_([^_]+)")


def delivery_job_id(event_id: str, sink: str, attempt: int, tag: str | int) -> str:
    """Deterministic for one step of one delivery, so a re-run step cannot queue it twice."""
    return f"dlv_{event_id}_{sink}_{attempt}_{tag}"


def sink_of_job(job_id: str) -> str | None:
    """The sink a delivery job id belongs to; None for any other job."""
    match = _DELIVERY_JOB.fullmatch(job_id)
    return match.group(2) if match else None


# --- rejected request ids: `rj_<received ms, 12 hex><random, 8 hex>` (Keys.rejected) ---------


def rejection_id(received_ms: int, nonce: int | None = None) -> str:
    """Time-ordered (ids sort as they were received) and unique (32 random bits per ms)."""
    tail = secrets.randbits(32) if nonce is None else nonce & 0xFFFFFFFF
    return f"rj_{received_ms & 0xFFFFFFFFFFFF:012x}{tail:08x}"


# --- reconciliation (SPEC 11, relay.reconcile) ---------------------------------------------
# Keys: Keys.reconcile_*; the claim script (relay.ledger.record) keeps the due sets and the
# per-payment `r:<type>` marker; relay.reconcile does the rest. Stats fields: reconcile_stat.

RECONCILE = "rec"
# attempted: API calls; recovered: missed stages emitted; api_error: failed calls (401, 429,
# 5xx, timeouts, unreadable answers); gave_up: payments whose give_up passed unfinished.
RECONCILE_OUTCOMES = ("attempted", "recovered", "api_error", "gave_up")
RECONCILED_MARK = "r:"  # payment state field `r:<event type>`: that stage was reconciled


def reconcile_stat(source: str, outcome: str) -> str:
    """Reconciliation counts per source, one of RECONCILE_OUTCOMES (`rec:<source>:<outcome>`;
    parse_stat leaves them alone, relay.monitor reads them by name)."""
    return f"{RECONCILE}:{source}:{outcome}"


def reconcile_due(keys: Keys, source: str) -> str:
    """Sorted set payment id -> when to ask the provider next (ms). Written by the claim
    script (a non-final event: `after` from now; final: removed) and by the scheduler (its
    backoff); one per source that reconciles. TTL: the payment state's, renewed on write."""
    return f"{keys.prefix}:rec:due:{source}"


def reconcile_payment(keys: Keys, source: str, payment_id: str) -> str:
    """Hash: the scheduler's view of one payment (`seq` it last saw, `since` quiet since,
    `n` checks made, `next`, `last`): TTL give_up plus a day, renewed on write."""
    return f"{keys.prefix}:rec:pay:{source}:{payment_id}"


def reconcile_source(keys: Keys, source: str) -> str:
    """Hash: one source's API health (`last_ok_at`, `last_error`, `last_error_at`,
    `paused_until`, `failures`), for status. One per configured source; TTL 30 days."""
    return f"{keys.prefix}:rec:src:{source}"


def reconcile_lease(keys: Keys) -> str:
    """The scheduler's lease: the id of the one process reconciling, SET NX PX, renewed every
    tick; when that process dies it expires and another worker takes it."""
    return f"{keys.prefix}:rec:lease"


def reconcile_rate(keys: Keys, source: str) -> str:
    """Sorted set of one source's recent status API calls (relay.ratelimit), trimmed to the
    window of `reconcile.rate_limit`: every process shares the limit."""
    return f"{keys.prefix}:rec:rate:{source}"


# --- alerts (SPEC 12, relay.alerts) ----------------------------------------------------------

ALERT_TYPE = "relay.alert"  # the `type` of an alert's JSON, as http sinks receive it
AUTH_ERRORS = ("bad_signature", "bad_token")  # rejections the bad_signatures rule counts
AUTH_FAILURES_CAP = 500  # newest kept per source: enough to count any threshold it allows
AUTH_FAILURES_TTL_S = 3600  # the longest bad_signatures window
ALERTS_TTL_S = 30 * 86400  # the alert state and outbox outlive a month without a worker
ALERT_OUTBOX_CAP = 1000  # unsent alerts kept for retrying (the oldest are dropped, logged)


def alert_states(keys: Keys) -> str:
    """Hash `<rule>:<subject>` -> that alert's state JSON (firing, since, what was last sent,
    the rule's baselines): survives restarts, so a deploy re-sends nothing. Bounded by the
    config's rules x subjects (states of subjects no longer checked are deleted); TTL
    ALERTS_TTL_S, renewed on write."""
    return f"{keys.prefix}:alerts"


def alert_outbox(keys: Keys) -> str:
    """Hash `<alert id>:<sink>` -> an alert still to send to that sink (JSON, with its tries
    and next try), retried by the evaluator until sent; capped at ALERT_OUTBOX_CAP, TTL
    ALERTS_TTL_S renewed on write."""
    return f"{keys.prefix}:alerts:outbox"


def alert_lease(keys: Keys) -> str:
    """The alert evaluator's lease: the id of the one process evaluating, SET NX PX, renewed
    every round; when that process dies it expires and another worker takes it."""
    return f"{keys.prefix}:alerts:lease"


def auth_failures(keys: Keys, source: str) -> str:
    """Sorted set of one source's recent bad_signature / bad_token rejections (member
    `<ms>:<nonce>:<reason>`, score ms), written by the ingress's rejection log: the
    bad_signatures rule counts a window of it. Trimmed to AUTH_FAILURES_TTL_S and
    AUTH_FAILURES_CAP on every write; TTL AUTH_FAILURES_TTL_S."""
    return f"{keys.prefix}:authfail:{source}"
