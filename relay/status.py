"""The `relay status` report: a snapshot (relay.snapshot) drawn as rich tables.

The command itself (reading, --json, --watch) is relay.cli.status.
"""

from __future__ import annotations

import time
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from relay.keys import INBOUND_OUTCOMES, UNAVAILABLE, UNKNOWN_SOURCE
from relay.redis_memory import shed_at_bytes
from relay.snapshot import Snapshot, ago, duration

REJECTIONS_SHOWN = 10


def render(snapshot: Snapshot) -> Group:
    """The whole report: queue, sinks, sources, workers, recent rejections."""
    parts: list[Any] = [
        *_verdict(snapshot),
        *([_alerts_table(snapshot)] if snapshot.firing else []),
        _redis_table(snapshot),
        _queue_table(snapshot),
        _sinks_table(snapshot),
        _sources_table(snapshot),
        *([_reconcile_table(snapshot)] if snapshot.reconcile else []),
        _workers_table(snapshot),
    ]
    if snapshot.rejections:
        parts.append(_rejections_table(snapshot))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.taken_at))
    parts.append(Text(f"prefix {snapshot.prefix!r} · {when}", style="dim"))
    return Group(*parts)


def _verdict(snapshot: Snapshot) -> list[Text]:
    """DEGRADED first and loud: an evicting Redis loses webhooks, a shedding ingress refuses."""
    lines = [Text(f"DEGRADED: {reason}", style="bold red") for reason in snapshot.degraded_reasons]
    lines += [Text(f"warning: {warning}", style="yellow") for warning in snapshot.warnings]
    return lines


def _alerts_table(snapshot: Snapshot) -> Table:
    """What is firing now (relay.alerts), each with the figure and threshold it last saw."""
    table = Table(title="Alerts firing", title_justify="left", title_style="bold red")
    for column in ("rule", "subject", "since", "what"):
        table.add_column(column, overflow="fold")
    for alert in snapshot.firing:
        table.add_row(
            Text(alert.rule, style="bold red"),
            Text(alert.subject),
            ago(alert.since, snapshot.taken_at),
            Text(alert.summary),
        )
    return table


def _redis_table(snapshot: Snapshot) -> Table:
    table = Table(title="Redis", title_justify="left")
    for column in ("memory", "maxmemory-policy", "ingress", "answered 503"):
        table.add_column(column)
    memory = snapshot.redis_memory
    policy = memory.policy if memory and memory.policy else "unknown"
    shedding = snapshot.shedding is not None
    table.add_row(
        _memory_text(snapshot),
        Text(policy, style="bold red" if memory and memory.evicting else ""),
        Text("SHEDDING (503)", style="bold red") if shedding else Text("accepting", style="green"),
        Text(str(snapshot.unavailable), style="yellow" if snapshot.unavailable else ""),
    )
    return table


def _memory_text(snapshot: Snapshot) -> str:
    memory = snapshot.redis_memory
    if memory is None or memory.used_bytes is None:
        return "unknown"
    used = f"{memory.used_bytes / 1048576:.1f} MiB"
    if not memory.max_bytes:
        return f"{used} (no maxmemory)"
    shed_at = shed_at_bytes(memory.max_bytes, snapshot.shed_memory_ratio)
    return (
        f"{used} of {memory.max_bytes / 1048576:.1f} MiB ({memory.fraction:.0%}; "
        f"sheds from {shed_at / 1048576:.1f} MiB)"
    )


def _queue_table(snapshot: Snapshot) -> Table:
    queue = snapshot.queue
    table = Table(title="Queue", title_justify="left", show_header=True)
    for column in ("waiting", "scheduled", "in progress", "oldest waiting", "dead letters"):
        table.add_column(column, justify="right")
    oldest = duration(queue.oldest_waiting_age_s) if queue.oldest_waiting_age_s is not None else "-"
    dlq = Text(str(snapshot.dlq_size), style="bold red" if snapshot.dlq_size else "")
    table.add_row(str(queue.waiting), str(queue.scheduled), str(queue.in_progress), oldest, dlq)
    return table


def _sinks_table(snapshot: Snapshot) -> Group:
    """Two tables, so 80 columns hold them: the figures, then each sink's last success/error."""
    now = snapshot.taken_at
    table = _compact("Sinks")
    _name_column(table, "sink", [_sink_label(s) for s in snapshot.sinks])
    table.add_column("state", overflow="fold")
    for column in ("delivered", "retrying", "failed", "429", "p50", "p95"):
        table.add_column(column, justify="right", overflow="fold")
    if snapshot.retry_scan_truncated:
        table.caption = "retrying counts are partial: too many scheduled jobs to scan"
    last = _compact("Sinks: last success and last error")
    _name_column(last, "sink", [_sink_label(s) for s in snapshot.sinks])
    last.add_column("last success", overflow="fold")
    last.add_column("last error", overflow="fold")
    for sink in snapshot.sinks:
        error = "-"
        if sink.last_error:
            status = (
                f"HTTP {sink.last_status}: "
                if sink.last_status and str(sink.last_status) not in sink.last_error
                else ""
            )
            error = f"{status}{sink.last_error} ({ago(sink.last_error_at, now)})"
        table.add_row(
            _sink_label(sink),
            _sink_state(sink),
            str(sink.delivered),
            str(sink.retrying_now),
            Text(str(sink.failed), style="red" if sink.failed else ""),
            str(sink.rate_limited),
            duration(sink.latency.quantile(0.5)),
            duration(sink.latency.quantile(0.95)),
        )
        last.add_row(
            _sink_label(sink),
            ago(sink.last_ok_at, now),
            Text(error, style="red" if not sink.healthy else "dim"),
        )
    return Group(table, last)


def _compact(title: str) -> Table:
    """A table with no vertical rules: the wide ones fit 80 columns beside long names."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


def _name_column(table: Table, header: str, names: list[str]) -> None:
    """A column of names, never cut: at 80 columns the figures beside it wrap instead."""
    widest = max((len(name) for name in names), default=0)
    table.add_column(header, no_wrap=True, min_width=max(widest, len(header)))


def _sink_label(sink: Any) -> str:
    return sink.name if sink.configured else f"{sink.name} (not configured)"


def _sink_state(sink: Any) -> Text:
    if sink.gone:
        return Text("GONE", style="bold red")
    if sink.paused:
        return Text(f"PAUSED ({sink.held} held)", style="bold yellow")
    if not sink.healthy:
        return Text("failing", style="yellow")
    if sink.last_ok_at is None:
        return Text("idle", style="dim")
    return Text("ok", style="green")


def _sources_table(snapshot: Snapshot) -> Table:
    table = _compact("Sources")
    _name_column(table, "source", [_source_label(s).plain for s in snapshot.sources])
    for column in ("stored", "duplicate", "503", "rejected", "events", "dup. events"):
        table.add_column(column, justify="right", overflow="fold")
    table.add_column("rejections by reason", overflow="fold")
    for source in snapshot.sources:
        reasons = ", ".join(
            f"{k} {n}"
            for k, n in sorted(source.inbound.items())
            if k not in (*INBOUND_OUTCOMES, UNAVAILABLE)
        )
        table.add_row(
            _source_label(source),
            str(source.stored),
            str(source.inbound.get("duplicate", 0)),
            Text(str(source.unavailable), style="yellow" if source.unavailable else ""),
            Text(str(source.rejected), style="yellow" if source.rejected else ""),
            str(sum(source.events.values())),
            str(source.duplicates),
            reasons or "-",
        )
    return table


def _reconcile_table(snapshot: Snapshot) -> Table:
    """SPEC 11: what each reconciling source's status API calls found, and their health."""
    now = snapshot.taken_at
    table = Table(title="Reconciliation", title_justify="left")
    table.add_column("source")
    for column in ("open", "asked", "recovered", "API errors", "gave up"):
        table.add_column(column, justify="right")
    table.add_column("last answer")
    table.add_column("last error", overflow="fold", max_width=60)
    for status in snapshot.reconcile:
        error = "-"
        if status.last_error:
            error = f"{status.last_error} ({ago(status.last_error_at, now)})"
            if status.paused_until is not None:
                error = f"PAUSED {duration(status.paused_until - now)}: {error}"
        failing = status.last_error_at is not None and (
            status.last_ok_at is None or status.last_error_at > status.last_ok_at
        )
        table.add_row(
            Text(status.source),
            str(status.tracked),
            str(status.attempted),
            str(status.recovered),
            Text(str(status.api_error), style="yellow" if status.api_error else ""),
            str(status.gave_up),
            ago(status.last_ok_at, now),
            Text(error, style="red" if failing else "dim"),
        )
    return table


def _source_label(source: Any) -> Text:
    if source.name == UNKNOWN_SOURCE:
        return Text("unknown names", style="dim")
    return Text(source.name if source.configured else f"{source.name} (not configured)")


def _workers_table(snapshot: Snapshot) -> Table:
    now = snapshot.taken_at
    table = Table(title=f"Workers ({len(snapshot.workers)} alive)", title_justify="left")
    _name_column(table, "worker", [w.id for w in snapshot.workers])
    for column, justify in (
        ("running", "right"),
        ("completed", "right"),
        ("up", "right"),
        ("last beat", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for worker in snapshot.workers:
        up = duration(now - worker.started_at) if worker.started_at else "-"
        table.add_row(
            Text(worker.id), str(worker.running), str(worker.complete), up, ago(worker.at, now)
        )
    if not snapshot.workers:
        table.add_row(
            Text("no worker is running: nothing is being delivered", style="bold red"),
            "",
            "",
            "",
            "",
        )
    return table


def _rejections_table(snapshot: Snapshot) -> Table:
    now = snapshot.taken_at
    table = Table(title="Recent rejections (newest first)", title_justify="left")
    for column in ("when", "source", "status", "error", "reason", "client"):
        table.add_column(column, overflow="fold")
    for rejection in snapshot.rejections[:REJECTIONS_SHOWN]:
        # Text(), not markup: a source name or reason comes from the request and may hold '['.
        table.add_row(
            ago(rejection.at, now),
            Text(rejection.source),
            str(rejection.status),
            Text(rejection.error),
            Text(rejection.reason),
            Text(rejection.client_ip),
        )
    return table
