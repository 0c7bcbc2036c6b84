"""Alerts (SPEC 12): rules over the monitoring snapshot, and when each alert fires and clears.

- **Rules** are pure functions of one `Snapshot` (relay.monitor: the figures `relay status`
  shows, nothing else) and what the rule kept from its last round (its memo: when a run of
  failures began, a counter's baseline). Each yields a `Check` per subject (a sink, a source,
  `queue`, `workers`, `dlq`, `memory`, `policy`) whose verdict is True (the condition holds),
  False (it has cleared) or None (no change: between two thresholds, or not known).
- **step** turns a Check and the alert's state into the new state and the message due, if
  any: a firing message when it starts (then again, as a reminder, at most once per `repeat`
  while it holds), a resolved message once when it clears after a firing message was sent.
  A condition that comes back within `repeat` of the last firing message waits until the
  repeat has passed (flapping costs one message per repeat).
- **Auto-pause**: a sink with `pause_after` of failures and no success is paused
  (relay.pause: its deliveries are held, none is lost) and an `auto_pause` alert says so; it
  clears when someone resumes the sink.

relay.alerts_send runs the rules in the workers, one process at a time, keeps the states in
Redis and sends the messages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from relay.config.model import RelayConfig
from relay.snapshot import SinkStatus, Snapshot, ago, duration

AUTO_PAUSE = "auto_pause"  # the alert of a sink's pause_after (not a rule of `alerts:`)
IDLE_GAP_S = 900.0  # an error this old with no retry scheduled: nothing is due any more
MEMORY_HYSTERESIS = 0.05  # redis_memory clears 5 points below its threshold

Memos = Mapping[tuple[str, str], Mapping[str, Any]]


@dataclass(frozen=True)
class Check:
    """One rule's verdict on one subject, with what a person needs to act on it."""

    rule: str
    subject: str
    verdict: bool | None
    summary: str  # one sentence: the subject and what is wrong (or right again)
    figure: str = ""  # what was measured
    threshold: str = ""
    action: str = ""  # what to do
    commands: tuple[str, ...] = ()
    last_error: str | None = None
    error_label: str = "Last error"
    sink: str | None = None  # the sink it is about: the alert never goes through it
    pause: bool = False  # pause this sink now (auto-pause)
    memo: Mapping[str, Any] = field(default_factory=dict)  # kept to the next round
    memo_sent: Mapping[str, Any] | None = None  # replaces memo when a message goes out


@dataclass(frozen=True)
class AlertState:
    """What Redis keeps per rule and subject (keys.alert_states)."""

    firing: bool = False
    since: float | None = None  # when it started firing, or cleared
    announced: bool = False  # the last message sent said "firing"
    fired_at: float | None = None  # when the last firing message (or reminder) went out
    summary: str = ""
    memo: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, blob: bytes | str) -> AlertState:
        return cls(**{k: v for k, v in orjson.loads(blob).items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Notice:
    """A message due: `firing` (a reminder when it was already announced) or `resolved`."""

    state: str
    reminder: bool = False


def step(
    state: AlertState | None, check: Check, now: float, repeat: float
) -> tuple[AlertState, Notice | None]:
    """The alert's next state, and the message to send now (None: nothing)."""
    old = state or AlertState()
    new = replace(old, memo=dict(check.memo))
    notice: Notice | None = None
    if check.verdict is True:
        if not old.firing:
            new = replace(new, firing=True, since=now)
        if old.fired_at is None or now - old.fired_at >= repeat:
            notice = Notice("firing", reminder=old.firing and old.announced)
            new = replace(new, announced=True, fired_at=now)
            if check.memo_sent is not None:
                new = replace(new, memo=dict(check.memo_sent))
    elif check.verdict is False and old.firing:
        new = replace(new, firing=False, since=now, announced=False)
        if old.announced:
            notice = Notice("resolved")
    if new.firing or notice is not None or new.firing != old.firing:
        new = replace(new, summary=headline(check))
    return new, notice


def headline(check: Check) -> str:
    """The one line `relay status` and /status show for a firing alert."""
    threshold = f" (threshold {check.threshold})" if check.threshold else ""
    return check.summary + (f": {check.figure}" if check.figure else "") + threshold


def span(seconds: float) -> str:
    """A threshold as the config writes it: 15m, 1h, 5d, 90s, 500ms."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- the rules --------------------------------------------------------------------------------


def evaluate(snapshot: Snapshot, config: RelayConfig, memos: Memos) -> list[Check]:
    """Every enabled rule's checks on this snapshot."""
    rules = config.alerts
    checks: list[Check] = []
    if rules.sink_failing is not None:
        checks += _sink_failing(snapshot, config, memos, rules.sink_failing)
    if rules.sink_gone:
        checks += _sink_gone(snapshot, config)
    if rules.dead_letters is not None:
        checks += _dead_letters(snapshot, memos, rules.dead_letters, rules.repeat)
    if rules.bad_signatures is not None:
        checks += _bad_signatures(snapshot, config, rules.bad_signatures.count)
    if rules.oldest_waiting is not None:
        checks += _oldest_waiting(snapshot, rules.oldest_waiting)
    if rules.no_worker is not None:
        checks += _no_worker(snapshot, memos, rules.no_worker)
    if rules.reconciled:
        checks += _reconciled(snapshot, memos, rules.repeat)
    if rules.redis_memory is not None:
        checks += _redis_memory(snapshot, rules.redis_memory)
    checks += _auto_pause(snapshot, config, memos)
    return checks


def failing_since(
    sink: SinkStatus, memo: Mapping[str, Any], now: float
) -> tuple[float | None, dict[str, Any]]:
    """When the sink's current run of failures began (None: it is not failing, it is paused,
    or nothing has been due for IDLE_GAP_S), and the memo for the next round. Sightings are
    every round, so the first error seen is at most one round late; a success in between, or
    a pause, starts a new run (so a resumed sink is not paused again at once)."""
    if sink.paused:
        return None, {"paused_at": now}
    if sink.last_error_at is None or (
        sink.last_ok_at is not None and sink.last_ok_at >= sink.last_error_at
    ):
        return None, {}
    if sink.retrying_now == 0 and now - sink.last_error_at > IDLE_GAP_S:
        return None, {}
    since = memo.get("since")
    if since is None or (sink.last_ok_at is not None and sink.last_ok_at > since):
        since = max(sink.last_error_at, float(memo.get("paused_at") or 0))
    return since, {"since": since}


def _error(sink: SinkStatus, now: float) -> str | None:
    if not sink.last_error:
        return None
    status = sink.last_status
    head = f"HTTP {status}: " if status and f"HTTP {status}" not in sink.last_error else ""
    return f"{head}{sink.last_error} ({ago(sink.last_error_at, now)})"


def _configured_sinks(snapshot: Snapshot, config: RelayConfig) -> Iterator[SinkStatus]:
    return (sink for sink in snapshot.sinks if sink.configured and sink.name in config.sinks)


def _sink_failing(
    snapshot: Snapshot, config: RelayConfig, memos: Memos, threshold: float
) -> Iterator[Check]:
    now = snapshot.taken_at
    for sink in _configured_sinks(snapshot, config):
        name = sink.name
        since, memo = failing_since(sink, memos.get(("sink_failing", name), {}), now)
        verdict: bool | None = None
        if since is not None and now - since >= threshold:
            verdict = True
        elif since is None and not sink.paused:
            verdict = False
        pause_after = config.sinks[name].pause_after
        waiting = f"; {_plural(sink.retrying_now, 'delivery')} waiting to retry"
        figure = f"last success {ago(sink.last_ok_at, now)}"
        if since is not None:
            figure = f"no successful delivery for {duration(now - since)}"
            figure += waiting if sink.retrying_now else ""
        elif sink.paused:
            figure = f"paused, {_plural(sink.held, 'delivery')} held"
        yield Check(
            "sink_failing",
            name,
            verdict,
            f"Sink {name} delivers again" if verdict is False else f"Sink {name} is failing",
            figure,
            span(threshold),
            "Check that its endpoint is up and accepts the relay's requests: the last error "
            "says what it answered. Deliveries are retried on schedule, then dead-lettered; "
            "pausing the sink holds them without using up attempts."
            + (f" It is paused automatically after {span(pause_after)}." if pause_after else ""),
            (f"relay sinks pause {name}", "relay status"),
            last_error=_error(sink, now),
            sink=name,
            memo=memo,
        )


def _sink_gone(snapshot: Snapshot, config: RelayConfig) -> Iterator[Check]:
    now = snapshot.taken_at
    for sink in _configured_sinks(snapshot, config):
        name = sink.name
        yield Check(
            "sink_gone",
            name,
            sink.gone,
            f"Sink {name} is gone" if sink.gone else f"Sink {name} answers again",
            (
                f"its endpoint answered HTTP {sink.last_status or '404/410'}"
                if sink.gone
                else f"last success {ago(sink.last_ok_at, now)}"
            ),
            "404/410",
            "The webhook or channel behind it no longer exists (a Discord webhook deleted, a "
            "Slack channel archived, a URL that moved): put a working URL in the config and "
            "deploy, then send its dead letters again.",
            (f"relay dlq list --sink {name}", f"relay dlq replay --sink {name}"),
            last_error=_error(sink, now),
            sink=name,
        )


def _counter(
    memo: Mapping[str, Any], counts: dict[str, int], now: float, repeat: float, threshold: int
) -> tuple[bool | None, dict[str, int], dict[str, Any], dict[str, Any]]:
    """A counter rule: new counts since the last message (True from `threshold` on); clears
    once `repeat` has passed with none new. -> verdict, the new counts, memo, memo when sent."""
    total = sum(counts.values())
    base: dict[str, int] = dict(counts if memo.get("base") is None else memo["base"])
    base = {k: min(int(base.get(k, 0)), n) for k, n in counts.items()}  # a reset counter
    new = {k: n - base[k] for k, n in counts.items() if n > base[k]}
    changed_at = float(memo.get("changed_at") or now)
    if total != memo.get("seen", total):
        changed_at = now
    keep = {"seen": total, "changed_at": changed_at}
    quiet = not new and now - changed_at >= repeat
    verdict = True if sum(new.values()) >= threshold else (False if quiet else None)
    return verdict, new, {**keep, "base": base}, {**keep, "base": counts}


def _dead_letters(
    snapshot: Snapshot, memos: Memos, threshold: int, repeat: float
) -> Iterator[Check]:
    now = snapshot.taken_at
    counts = {s.name: s.failed for s in snapshot.sinks}
    counts |= {
        f"inbound from {s.name}": s.inbound["dead_lettered"]
        for s in snapshot.sources
        if s.inbound.get("dead_lettered")
    }
    verdict, new, memo, memo_sent = _counter(
        memos.get(("dead_letters", "dlq"), {}), counts, now, repeat, threshold
    )
    sinks = [name for name in new if snapshot.sink(name) is not None]
    worst = snapshot.sink(max(sinks, key=lambda n: new[n])) if sinks else None
    in_queue = f"{snapshot.dlq_size} in the dead-letter queue"
    total = sum(new.values())
    yield Check(
        "dead_letters",
        "dlq",
        verdict,
        f"{_plural(total, 'new dead letter')}" if total else "No new dead letters",
        (
            ", ".join(f"{k} {n}" for k, n in sorted(new.items())) + f"; {in_queue}"
            if total
            else f"none for {span(repeat)}; {in_queue}"
        ),
        str(threshold),
        "Deliveries that failed for good wait in the dead-letter queue, nothing is lost: see "
        "why they failed, fix the cause, then send them again.",
        (
            "relay dlq list",
            f"relay dlq replay --sink {worst.name}" if worst else "relay dlq replay ID...",
        ),
        last_error=_error(worst, now) if worst else None,
        memo=memo,
        memo_sent=memo_sent,
    )


def _bad_signatures(snapshot: Snapshot, config: RelayConfig, threshold: int) -> Iterator[Check]:
    window = span(config.alerts.auth_window_s)
    for name in config.sources:
        source = snapshot.source(name)
        if source is None:
            continue
        count = source.auth_failures
        verdict = True if count >= threshold else (False if count == 0 else None)
        yield Check(
            "bad_signatures",
            name,
            verdict,
            (
                f"Source {name} rejects webhooks: bad signature or token"
                if verdict is not False
                else f"Source {name} accepts webhooks again"
            ),
            f"{count} rejected in the last {window}",
            f"{threshold}/{window}",
            f"Check the secret of source {name}: the one in the config (or its environment "
            "variable) must be the one set at the provider; a rotated or mistyped secret "
            "rejects every webhook. Rejected requests are kept: replay them once it is fixed.",
            (f"relay rejections list --source {name}", "relay rejections replay ID..."),
            last_error=source.auth_failure_reason,
            error_label="Last reason",
        )


def _oldest_waiting(snapshot: Snapshot, threshold: float) -> Iterator[Check]:
    queue = snapshot.queue
    age = queue.oldest_waiting_age_s
    verdict: bool | None = None
    if age is not None and age >= threshold:
        verdict = True
    elif age is None or age < threshold / 2:
        verdict = False
    workers = len(snapshot.workers)
    yield Check(
        "oldest_waiting",
        "queue",
        verdict,
        "Jobs wait too long to run" if verdict is not False else "Jobs run on time again",
        f"the oldest has waited {duration(age)}; {queue.waiting} waiting, "
        f"{_plural(workers, 'worker')} running {queue.in_progress}",
        span(threshold),
        "The workers are not keeping up, or are stuck: add worker processes, or look for a "
        "slow sink holding their slots.",
        ("relay status", "heroku ps:scale worker=2"),
    )


def _no_worker(snapshot: Snapshot, memos: Memos, threshold: float) -> Iterator[Check]:
    now = snapshot.taken_at
    since = float(memos.get(("no_worker", "workers"), {}).get("empty_since") or now)
    verdict = None if now - since < threshold else True
    figure = f"no worker heartbeat for {duration(now - since)}"
    if snapshot.workers:
        verdict, figure = False, f"{_plural(len(snapshot.workers), 'worker')} alive"
    yield Check(
        "no_worker",
        "workers",
        verdict,
        "No worker is running" if verdict is not False else "Workers are running again",
        figure,
        span(threshold),
        "Webhooks are stored but nothing is delivered: start the worker processes and read "
        "their logs.",
        ("relay worker", "heroku ps:scale worker=1"),
        memo={} if snapshot.workers else {"empty_since": since},
    )


def _reconciled(snapshot: Snapshot, memos: Memos, repeat: float) -> Iterator[Check]:
    for status in snapshot.reconcile:  # the sources that reconcile (SPEC 11)
        name = status.source
        verdict, new, memo, memo_sent = _counter(
            memos.get(("reconciled", name), {}), {name: status.recovered}, snapshot.taken_at,
            repeat, 1,
        )  # fmt: skip
        found = sum(new.values())
        yield Check(
            "reconciled",
            name,
            verdict,
            (
                f"Payments of source {name} were found only by reconciliation"
                if verdict is not False
                else f"No payment of source {name} needed reconciliation"
            ),
            (
                f"{_plural(found, 'payment')} found by asking the provider: its webhook never "
                "arrived"
                if found
                else f"none for {span(repeat)}"
            ),
            "1",
            f"Check the webhook URL set at the provider for source {name}: it must be this "
            f"relay's /hooks/{name}, reachable from the internet; rejected requests would "
            "show in relay rejections.",
            (f"relay rejections list --source {name}", f"relay events list --source {name}"),
            memo=memo,
            memo_sent=memo_sent,
        )


def _redis_memory(snapshot: Snapshot, threshold: float) -> Iterator[Check]:
    memory = snapshot.redis_memory
    if memory is None:
        return
    fraction = memory.fraction
    used = (
        f"{(memory.used_bytes or 0) / 1048576:.1f} of {(memory.max_bytes or 0) / 1048576:.1f} MiB"
    )
    verdict: bool | None = None
    if memory.max_bytes == 0:
        verdict = False  # no limit: never full
    elif fraction is not None:
        verdict = True if fraction >= threshold else None
        verdict = False if fraction < threshold - MEMORY_HYSTERESIS else verdict
    yield Check(
        "redis_memory",
        "memory",
        verdict,
        "Redis is nearly full" if verdict is not False else "Redis memory is back to normal",
        f"{fraction:.0%} of maxmemory ({used})" if fraction is not None else "no maxmemory",
        f"{threshold:.0%}",
        f"From {snapshot.shed_memory_ratio:.0%} the ingress answers 503 to keep room for the "
        "workers. If the queue is long, add workers; else purge old dead letters or raise "
        "maxmemory (a bigger Redis plan).",
        ("relay status", "relay dlq list"),
    )
    policy = memory.policy
    yield Check(
        "redis_memory",
        "policy",
        None if policy is None else memory.evicting,
        (
            f"Redis may evict keys: maxmemory-policy is {policy}"
            if memory.evicting
            else "Redis maxmemory-policy is noeviction again"
        ),
        f"maxmemory-policy {policy}",
        "noeviction",
        "When Redis is full it deletes keys, queued webhooks the relay answered 2xx for "
        "included: set the policy to noeviction.",
        (
            "heroku redis:maxmemory --policy noeviction",
            "redis-cli CONFIG SET maxmemory-policy noeviction",
        ),
    )


def _auto_pause(snapshot: Snapshot, config: RelayConfig, memos: Memos) -> Iterator[Check]:
    now = snapshot.taken_at
    for sink in _configured_sinks(snapshot, config):
        name, pause_after = sink.name, config.sinks[sink.name].pause_after
        if pause_after is None:
            continue
        since, memo = failing_since(sink, memos.get((AUTO_PAUSE, name), {}), now)
        due = not sink.paused and since is not None and now - since >= pause_after
        verdict = True if due else (None if sink.paused else False)
        yield Check(
            AUTO_PAUSE,
            name,
            verdict,
            f"Sink {name} was paused automatically" if due else f"Sink {name} was resumed",
            (
                f"no successful delivery for {duration(now - (since or now))}"
                if due
                else "its held deliveries are being sent"
            ),
            f"pause_after {span(pause_after)}",
            "Its deliveries are held, none is lost, and none is tried until it is resumed. "
            "Fix its endpoint (the last error says what it answered), then resume it: the "
            "held deliveries go out in the order received.",
            (f"relay sinks resume {name}",),
            last_error=_error(sink, now),
            sink=name,
            pause=due,
            memo=memo,
        )


__all__ = ["AUTO_PAUSE", "AlertState", "Check", "Notice", "evaluate", "step"]
