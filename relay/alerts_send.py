"""Running and sending alerts (SPEC 12): the evaluator, its lease, the outbox, the alert's JSON.

- The **Evaluator** runs in the workers (started by workers/jobs.py), one process at a time,
  every `alerts.interval`: it reads one snapshot (relay.monitor, the figures `relay status`
  shows), runs the rules (relay.alerts) against the states kept in Redis
  (keys.alert_states: a restart re-sends nothing), commits the new states with the messages
  due, pauses the sinks that auto-pause asks for (relay.pause), then sends.
- The **lease** (keys.alert_lease) is one string: the id of the process evaluating, set with
  NX and a TTL of three rounds (at least LEASE_MIN_S), renewed every round. A process that
  dies stops renewing; another worker takes it within the TTL.
- **commit** writes the alerts' new states and every message due, one outbox entry per
  target sink, in one script that first checks the lease: a process that lost it writes
  nothing and sends nothing, so two processes never both raise the same alert.
- **flush** sends what is due from the outbox through the sink modules themselves (an http
  sink POSTs the alert's JSON signed like any delivery, `webhook-id` the alert id; Discord and
  Slack format it: relay.sinks.discord / slack `alert_payload`). Each entry is claimed first
  (under the lease, pushed CLAIM_S ahead), so a holder that stalls mid-send cannot have it
  sent twice. One that fails is retried with backoff and logged every time; after MAX_AGE_S
  it is dropped with an error line holding the whole alert. A paused target keeps its
  alerts until it is resumed.
- An alert never goes through the sink it is about: with no other target it is logged only,
  and the log says so. Every alert is logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from relay import pause
from relay.alerts import AlertState, Check, Notice, evaluate, step
from relay.events import StoredEvent
from relay.keys import (
    ALERT_OUTBOX_CAP,
    ALERT_TYPE,
    ALERTS_TTL_S,
    Keys,
    alert_lease,
    alert_outbox,
    alert_states,
)
from relay.logs import get_logger
from relay.monitor import take_snapshot
from relay.redact import known, redact
from relay.sinks import Delivered, RetryLater, Sink
from relay.sinks.client import SinkClient

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig
    from relay.snapshot import Snapshot

log = get_logger("relay.alerts")

LEASE_MIN_S = 2.0
CLAIM_S = 60.0  # an entry being sent is not due again for this long (longer than a send)
MAX_AGE_S = 86400.0  # an alert that could not be sent for a day is dropped, logged as error
MAX_BACKOFF_S = 900.0
RETRY_SCAN_CAP = 20_000  # scheduled jobs a round reads to count retries per sink
STOP_WAIT_S = 5.0  # a stopping worker waits this long for its round to end
SINK_RULES = ("sink_failing", "sink_gone", "auto_pause")
SOURCE_RULES = ("bad_signatures", "reconciled")

# KEYS: lease. ARGV: owner, TTL ms. Renew ours, or take a free one. 1: held, 0: another's.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lease, states, outbox. ARGV: owner, TTL s, n states to set, their (field, JSON)s,
# n states to delete, their fields, then outbox (field, JSON)s. -1: not the lease holder.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2
end
local deleted = tonumber(ARGV[i]); i = i + 1
for _ = 1, deleted do redis.call('HDEL', KEYS[2], ARGV[i]); i = i + 1 end
while i <= #ARGV do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2 end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""
# KEYS: lease, outbox. ARGV: owner, field, entry JSON (its next try pushed ahead).
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


class Lease:
    def __init__(self, redis: Any, keys: Keys, owner: str, interval: float) -> None:
        self.redis = redis
        self.key = alert_lease(keys)
        self.owner = owner
        self.ttl_ms = int(max(LEASE_MIN_S, 3 * interval) * 1000)
        self.held = False
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Renew the lease, or take it if free: True while this process evaluates."""
        held = bool(await self._hold(keys=[self.key], args=[self.owner, self.ttl_ms]))
        if held != self.held:
            message = "alert evaluation taken on" if held else "alert evaluation passed on"
            log.info(message, owner=self.owner)
        self.held = held
        return held

    async def release(self) -> None:
        if self.held:
            await self._release(keys=[self.key], args=[self.owner])
            self.held = False


def _rfc3339(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def alert_id(rule: str, subject: str, state: str, at: float) -> str:
    digest = hashlib.sha256(f"{rule}\x00{subject}\x00{state}\x00{at!r}".encode()).digest()
    return "alr_" + base64.b32encode(digest).decode().lower().rstrip("=")[:26]


def subject_kind(rule: str) -> str:
    if rule in SINK_RULES:
        return "sink"
    return "source" if rule in SOURCE_RULES else "relay"


def alert_body(
    check: Check, state: AlertState, notice: Notice, now: float, secrets: Iterable[str] = ()
) -> dict[str, Any]:
    """The alert as JSON (`type: relay.alert`): what an http sink receives and what Discord
    and Slack format. Text from outside (the last error, a rejection's reason) is redacted
    again here, with every configured secret."""
    error = redact(check.last_error, known(secrets)) if check.last_error else None
    return {
        "id": alert_id(check.rule, check.subject, notice.state, now),
        "type": ALERT_TYPE,
        "rule": check.rule,
        "subject": check.subject,
        "subject_kind": subject_kind(check.rule),
        "state": notice.state,
        "reminder": notice.reminder,
        "summary": check.summary,
        "figure": check.figure,
        "threshold": check.threshold,
        "last_error": error[:500] if error else None,
        "error_label": check.error_label,
        "action": check.action if notice.state == "firing" else "",
        "commands": list(check.commands) if notice.state == "firing" else [],
        "since": _rfc3339(state.since),
        "at": _rfc3339(now),
    }


def targets(to: Iterable[str], sink: str | None, sinks: Mapping[str, Sink]) -> list[str]:
    """The `alerts.to` sinks an alert goes to: never the sink it is about."""
    return [name for name in to if name != sink and name in sinks]


class Outbox:
    def __init__(
        self,
        redis: Any,
        keys: Keys,
        lease: Lease,
        sinks: Mapping[str, Sink],
        client: SinkClient,
        secrets: Iterable[str],
        interval: float,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.lease = lease
        self.sinks = sinks
        self.client = client
        self.secrets = tuple(secrets)
        self.interval = interval
        self.key = alert_outbox(keys)
        self._commit = redis.register_script(_COMMIT)
        self._claim = redis.register_script(_CLAIM)

    async def commit(
        self,
        to: list[str],
        changed: Mapping[tuple[str, str], AlertState],
        dropped: Iterable[tuple[str, str]],
        raised: list[tuple[Check, AlertState, Notice]],
        now: float,
    ) -> list[dict[str, Any]] | None:
        """Write the states and queue the alerts, if this process still holds the lease.
        Returns the alerts (None: the lease was lost, nothing was written)."""
        gone = [f"{rule}:{subject}" for rule, subject in dropped]
        if not changed and not gone and not raised:
            return []
        args: list[Any] = [self.lease.owner, ALERTS_TTL_S, len(changed)]
        for (rule, subject), state in changed.items():
            args += [f"{rule}:{subject}", state.to_json()]
        args += [len(gone), *gone]
        alerts: list[tuple[dict[str, Any], list[str]]] = []
        for check, state, notice in raised:
            body = alert_body(check, state, notice, now, self.secrets)
            sent_to = targets(to, check.sink, self.sinks)
            alerts.append((body, sent_to))
            for name in sent_to:
                entry = {"alert": body, "sink": name, "tries": 0, "first_at": now, "next_at": now}
                args += [f"{body['id']}:{name}", orjson.dumps(entry)]
        keys = [self.lease.key, alert_states(self.keys), self.key]
        if int(await self._commit(keys=keys, args=args)) < 0:
            self.lease.held = False
            return None
        for body, sent_to in alerts:
            _log_alert(body, sent_to, to)
        return [body for body, _ in alerts]

    async def flush(self, snapshot: Snapshot) -> None:
        """Send every alert that is due (a round's worth, all at once)."""
        raw = await self.redis.hgetall(self.key)
        entries = {
            (k.decode() if isinstance(k, bytes) else str(k)): orjson.loads(v)
            for k, v in raw.items()
        }
        await self._trim(entries)
        now = snapshot.taken_at
        due = []
        for fieldname, entry in sorted(entries.items(), key=lambda kv: kv[1]["first_at"]):
            target = snapshot.sink(entry["sink"])
            if entry["next_at"] > now or (target is not None and target.paused):
                continue  # a paused sink receives nothing (SPEC 9): its alerts wait
            if entry["sink"] not in self.sinks:
                await self._give_up(fieldname, entry, "its sink is no longer configured")
                continue
            claimed = {**entry, "next_at": now + CLAIM_S}
            args = [self.lease.owner, fieldname, orjson.dumps(claimed)]
            if not await self._claim(keys=[self.lease.key, self.key], args=args):
                return  # the lease passed on: the new holder sends
            due.append((fieldname, entry))
        await asyncio.gather(*(self._send(f, e, now) for f, e in due))

    async def _send(self, fieldname: str, entry: dict[str, Any], now: float) -> None:
        sink = self.sinks[entry["sink"]]
        alert = entry["alert"]
        try:
            outcome = await sink.deliver(
                self.client, StoredEvent(orjson.dumps(alert)), entry["tries"] + 1
            )
        except Exception as exc:  # noqa: BLE001 - a sink bug: retried like a failed send
            outcome = RetryLater(f"internal error in sink: {type(exc).__name__}")
        if isinstance(outcome, Delivered):
            await self.redis.hdel(self.key, fieldname)
            log.info("alert sent", alert_id=alert["id"], rule=alert["rule"], sink=sink.name)
            return
        tries = entry["tries"] + 1
        if now - entry["first_at"] >= MAX_AGE_S:
            await self._give_up(fieldname, entry, outcome.reason)
            return
        wait = min(MAX_BACKOFF_S, self.interval * 2**tries)
        if isinstance(outcome, RetryLater) and outcome.after:
            wait = max(wait, outcome.after)
        retry = {**entry, "tries": tries, "next_at": now + wait, "last_error": outcome.reason}
        await self.redis.hset(self.key, fieldname, orjson.dumps(retry))
        log.warning(
            "alert not sent, will retry",
            alert_id=alert["id"],
            rule=alert["rule"],
            subject=alert["subject"],
            sink=sink.name,
            reason=outcome.reason,
            tries=tries,
            retry_in_s=round(wait, 3),
        )

    async def _give_up(self, fieldname: str, entry: dict[str, Any], reason: str) -> None:
        await self.redis.hdel(self.key, fieldname)
        log.error(
            "alert dropped: it could not be sent",
            sink=entry["sink"],
            reason=reason,
            tries=entry["tries"],
            alert=entry["alert"],
        )

    async def _trim(self, entries: dict[str, dict[str, Any]]) -> None:
        excess = sorted(entries, key=lambda f: entries[f]["first_at"])[:-ALERT_OUTBOX_CAP]
        for fieldname in excess:
            await self._give_up(fieldname, entries.pop(fieldname), "the outbox is full")


def _log_alert(body: dict[str, Any], sent_to: list[str], to: list[str]) -> None:
    fields = {
        "alert_id": body["id"],
        "rule": body["rule"],
        "subject": body["subject"],
        "state": body["state"],
        "summary": body["summary"],
        "figure": body["figure"],
        "threshold": body["threshold"],
        "last_error": body["last_error"],
        "sent_to": sent_to,
    }
    level = log.warning if body["state"] == "firing" else log.info
    if sent_to:
        level("alert", **fields)
    elif to:
        level(
            "alert logged only: its only alert sink is the sink it is about",
            **fields,
            not_sent_to=[n for n in to if n not in sent_to],
        )
    else:
        level("alert logged only: alerts.to names no sink", **fields)


# --- the evaluator ------------------------------------------------------------------------------


class Evaluator:
    """Runs the rules every `alerts.interval` in the one process that holds the lease."""

    def __init__(
        self,
        redis: Any,
        loaded: LoadedConfig,
        sinks: Mapping[str, Sink],
        client: SinkClient,
        owner: str,
        *,
        standby: bool = False,
    ) -> None:
        # standby (web dynos): evaluate only while every worker that beat has gone silent, so
        # `no_worker` is told even when no worker is left to tell it.
        self.standby = standby
        self.redis = redis
        self.config = loaded.config
        self.keys = Keys(self.config.key_prefix)
        self.owner = f"{owner}:{secrets.token_hex(4)}"  # two evaluators in one process differ
        self.interval = self.config.alerts.interval
        self.lease = Lease(redis, self.keys, self.owner, self.interval)
        self.outbox = Outbox(
            redis, self.keys, self.lease, sinks, client, loaded.secrets, self.interval
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Evaluator:
        self.task = asyncio.create_task(self.run(), name="relay-alerts")
        return self

    async def stop(self) -> None:
        """Stop evaluating and hand the lease on at once."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task], timeout=STOP_WAIT_S)
            self.task = None
        try:
            await self.lease.release()
        except (RedisError, OSError) as exc:
            log.warning("alert lease not released", error=type(exc).__name__)

    async def run(self) -> None:
        while True:
            try:
                if (not self.standby or await self._workers_lost()) and await self.lease.hold():
                    await self.round()
            except (RedisError, OSError) as exc:
                log.warning("alerts not evaluated: Redis unavailable", error=repr(exc)[:200])
            except Exception:  # a bug in a rule must not stop the others for good
                log.exception("alert evaluation failed")
            # A cancel that arrives while redis-py is inside a command can be lost (the
            # command returns normally: workers/settings.py): honour it here.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self.interval)

    async def round(self, now: float | None = None) -> list[dict[str, Any]]:
        """One evaluation (the caller holds the lease). Returns the alerts raised."""
        snapshot = await take_snapshot(
            self.redis, self.config, now=now, retry_scan_cap=RETRY_SCAN_CAP
        )
        states = await self._states()
        checks = evaluate(snapshot, self.config, {k: s.memo for k, s in states.items()})
        now = snapshot.taken_at
        changed: dict[tuple[str, str], AlertState] = {}
        raised: list[tuple[Check, AlertState, Notice]] = []
        for check in checks:
            key = (check.rule, check.subject)
            new, notice = step(states.get(key), check, now, self.config.alerts.repeat)
            if new != states.get(key):
                changed[key] = new
            if notice is not None:
                raised.append((check, new, notice))
        dropped = set(states) - {(c.rule, c.subject) for c in checks}
        alerts = await self.outbox.commit(self.config.alerts.to, changed, dropped, raised, now)
        if alerts is None:
            return []  # the lease passed on meanwhile: the new holder decides
        for check in checks:
            sink = snapshot.sink(check.subject)
            if check.pause and sink is not None and not sink.paused:
                await pause.pause(self.redis, self.keys, check.subject)
                log.warning("sink paused automatically", sink=check.subject)
        await self.outbox.flush(snapshot)
        return alerts

    async def _workers_lost(self) -> bool:
        """Workers have beaten (their ids are listed) but none for `alerts.no_worker`. A clean
        stop removes its id, so scaling workers to zero is not a loss."""
        threshold = self.config.alerts.no_worker
        newest = await self.redis.zrange(self.keys.workers, -1, -1, withscores=True)
        if threshold is None or not newest:
            return False
        seconds, micros = await self.redis.time()
        return float(newest[0][1]) < int(seconds) + int(micros) / 1e6 - threshold

    async def _states(self) -> dict[tuple[str, str], AlertState]:
        states: dict[tuple[str, str], AlertState] = {}
        for fieldname, blob in (await self.redis.hgetall(alert_states(self.keys))).items():
            name = fieldname.decode() if isinstance(fieldname, bytes) else str(fieldname)
            rule, _, subject = name.partition(":")
            try:
                states[(rule, subject)] = AlertState.from_json(blob)
            except (orjson.JSONDecodeError, TypeError):
                log.warning("alert state unreadable: starting it afresh", alert=name)
        return states
