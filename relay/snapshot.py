"""What one monitoring read holds (a `Snapshot`), its JSON shape, and the short durations
that `relay status`, `/metrics` and `/status` show. relay.monitor reads it from Redis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson

from relay.keys import INBOUND_OUTCOMES, LATENCY_BUCKETS, UNAVAILABLE
from relay.redis_memory import MemoryState, eviction_message, memory_message, shed_at_bytes

UNREADABLE_POLICY = (
    "Redis maxmemory-policy could not be read (INFO memory): make sure it is noeviction"
)
BUCKET_LABELS = (*tuple(str(b) for b in LATENCY_BUCKETS), "+Inf")


@dataclass
class QueueDepth:
    waiting: int = 0  # runnable now, not yet picked up
    scheduled: int = 0  # runnable later: retries and rate-limit waits
    in_progress: int = 0  # jobs the live workers are running (from their heartbeats)
    held: int = 0  # deliveries held for paused sinks (relay.pause)
    oldest_waiting_age_s: float | None = None  # None: nothing is waiting


@dataclass
class Latency:
    """Receipt-to-delivery histogram. `buckets` are per-bucket (NOT cumulative) counts, in the
    order of BUCKET_LABELS; the Prometheus exposition makes them cumulative."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKET_LABELS))
    sum: float = 0.0
    count: int = 0

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (None: no data; inf: overflow)."""
        if self.count <= 0:
            return None
        target = q * self.count
        seen = 0
        for label, n in zip(BUCKET_LABELS, self.buckets, strict=True):
            seen += n
            if seen >= target and n:
                return float(label) if label != "+Inf" else float("inf")
        return float("inf")

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


@dataclass
class SinkStatus:
    name: str
    configured: bool = True  # False: seen in Redis but no longer in the config
    delivered: int = 0
    retry: int = 0  # attempts that failed and were scheduled again (a counter)
    rate_limited: int = 0  # waits for a rate limit (a counter; not failures)
    failed: int = 0  # deliveries dead-lettered (a counter)
    retrying_now: int = 0  # deliver jobs scheduled for later right now (a gauge)
    last_ok_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_status: int | None = None
    gone: bool = False  # the endpoint answered 404/410: fix the URL
    paused: bool = False  # `relay sinks pause`: its deliveries are held
    paused_until: float | None = None  # None while paused: until resumed
    held: int = 0  # deliveries waiting for the resume
    latency: Latency = field(default_factory=Latency)

    @property
    def healthy(self) -> bool:
        """No error since the last success (or never an error), and not paused."""
        if self.gone or self.paused:
            return False
        if self.last_error_at is None:
            return True
        return self.last_ok_at is not None and self.last_ok_at >= self.last_error_at


@dataclass
class SourceStatus:
    name: str
    configured: bool = True
    inbound: dict[str, int] = field(default_factory=dict)  # outcome -> count
    events: dict[str, int] = field(default_factory=dict)  # event type -> count
    duplicates: int = 0  # semantic duplicates dropped by the worker
    auth_failures: int = 0  # bad signatures / tokens within the bad_signatures window
    auth_failure_reason: str | None = None  # the latest one's reason

    @property
    def stored(self) -> int:
        return self.inbound.get("stored", 0)

    @property
    def rejected(self) -> int:
        return sum(
            n for k, n in self.inbound.items() if k not in INBOUND_OUTCOMES and k != UNAVAILABLE
        )

    @property
    def unavailable(self) -> int:
        return self.inbound.get(UNAVAILABLE, 0)


@dataclass
class WorkerStatus:
    id: str
    running: int = 0
    started_at: float | None = None
    at: float | None = None  # the heartbeat's time
    complete: int = 0
    retried: int = 0
    failed: int = 0


@dataclass
class ReconcileStatus:
    """One reconciling source (SPEC 11, relay.reconcile): its counters, how many open
    payments it tracks, and its status API's health."""

    source: str
    attempted: int = 0  # status API calls
    recovered: int = 0  # missed stages emitted
    api_error: int = 0  # calls that failed (401, 429, 5xx, timeouts, unreadable answers)
    gave_up: int = 0  # payments still open when give_up passed
    tracked: int = 0  # open payments the scheduler will ask about (a gauge)
    last_ok_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    paused_until: float | None = None  # credentials refused or 429: no call before this

    @property
    def paused(self) -> bool:
        return self.paused_until is not None


@dataclass
class Rejection:
    at: float
    source: str
    status: int
    error: str
    reason: str
    client_ip: str


@dataclass
class AlertStatus:
    """One alert's state (relay.alerts): per rule and subject (a sink, a source, `queue`...)."""

    rule: str
    subject: str
    firing: bool
    since: float | None  # when it started firing, or cleared
    summary: str  # what the rule last said about it


@dataclass
class Snapshot:
    taken_at: float
    prefix: str
    queue: QueueDepth
    dlq_size: int
    sources: list[SourceStatus]
    sinks: list[SinkStatus]
    workers: list[WorkerStatus]
    rejections: list[Rejection]
    retry_scan_truncated: bool = False  # over RETRY_SCAN_CAP scheduled jobs: counts are partial
    reconcile: list[ReconcileStatus] = field(default_factory=list)  # SPEC 11, per source
    redis_memory: MemoryState | None = None  # None: not read
    shed_memory_ratio: float = 0.9
    allow_redis_eviction: bool = False
    alerts: list[AlertStatus] = field(default_factory=list)

    @property
    def firing(self) -> list[AlertStatus]:
        """The alerts firing now."""
        return [a for a in self.alerts if a.firing]

    @property
    def shedding(self) -> str | None:
        """Why the ingress answers 503 now, judged from this reading as the ingress does
        (without its estimate of what it stored since its own last reading)."""
        memory = self.redis_memory
        if memory is None:
            return None
        if memory.evicting and not self.allow_redis_eviction:
            return eviction_message(str(memory.policy), allowed=False)
        return memory_message(memory, self.shed_memory_ratio)

    @property
    def degraded_reasons(self) -> list[str]:
        """Redis conditions that lose or refuse webhooks: an evicting policy (even an allowed
        one: it can lose 2xx-answered webhooks) and shedding."""
        memory = self.redis_memory
        reasons: list[str] = []
        if memory is not None and memory.evicting and self.allow_redis_eviction:
            reasons.append(eviction_message(str(memory.policy), allowed=True))
        if (shed := self.shedding) is not None:
            reasons.append(f"the ingress is shedding (503): {shed}")
        return reasons

    @property
    def warnings(self) -> list[str]:
        if self.redis_memory is not None and self.redis_memory.policy is None:
            return [UNREADABLE_POLICY]
        return []

    @property
    def unavailable(self) -> int:
        """503s answered, all sources (counted by each ingress, added to Redis each second)."""
        return sum(s.unavailable for s in self.sources)

    def sink(self, name: str) -> SinkStatus | None:
        return next((s for s in self.sinks if s.name == name), None)

    def source(self, name: str) -> SourceStatus | None:
        return next((s for s in self.sources if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The `relay status --json` / `/status.json` shape: maps keyed by name for scripts."""
        return {
            "taken_at": self.taken_at,
            "prefix": self.prefix,
            "queue": dataclasses.asdict(self.queue),
            "dlq_size": self.dlq_size,
            "workers": [dataclasses.asdict(w) for w in self.workers],
            "sources": {
                s.name: {
                    "configured": s.configured,
                    "inbound": s.inbound,
                    "events": s.events,
                    "duplicates": s.duplicates,
                    "auth_failures": s.auth_failures,
                }
                for s in self.sources
            },
            "sinks": {s.name: _sink_dict(s) for s in self.sinks},
            "rejections": [dataclasses.asdict(r) for r in self.rejections],
            "reconcile": {
                r.source: {**dataclasses.asdict(r), "paused": r.paused} for r in self.reconcile
            },
            "retry_scan_truncated": self.retry_scan_truncated,
            "redis": self._redis_dict(),
            "degraded": bool(self.degraded_reasons),
            "degraded_reasons": self.degraded_reasons,
            "warnings": self.warnings,
            "alerts": [dataclasses.asdict(a) for a in self.firing],
        }

    def _redis_dict(self) -> dict[str, Any]:
        memory = self.redis_memory.to_dict() if self.redis_memory else {}
        limit = self.redis_memory.max_bytes if self.redis_memory else None
        shed_at = shed_at_bytes(limit, self.shed_memory_ratio) if limit else None
        return {
            **memory,
            "shed_memory_ratio": self.shed_memory_ratio,
            "shed_at_bytes": shed_at,
            "allow_redis_eviction": self.allow_redis_eviction,
            "shedding": self.shedding is not None,
            "unavailable": self.unavailable,
        }

    def to_json(self, indent: bool = True) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 if indent else 0)


def _sink_dict(sink: SinkStatus) -> dict[str, Any]:
    data = dataclasses.asdict(sink)
    data.pop("name")
    data["healthy"] = sink.healthy
    latency = sink.latency
    data["latency"] = {
        "buckets": dict(zip(BUCKET_LABELS, latency.buckets, strict=True)),
        "sum": latency.sum,
        "count": latency.count,
        "p50": _finite(latency.quantile(0.5)),
        "p95": _finite(latency.quantile(0.95)),
    }
    return data


def _finite(value: float | None) -> float | str | None:
    # JSON has no Infinity: say "+Inf" like Prometheus does.
    return "+Inf" if value == float("inf") else value


# --- formatting (shared by the CLI and the status page) -----------------------------------


def duration(seconds: float | None) -> str:
    """A short human duration: 850ms, 42s, 17m, 3.5h, 2.1d; "-" for none, "> 1d" overflow."""
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return f"> {duration(LATENCY_BUCKETS[-1])}"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def ago(at: float | None, now: float) -> str:
    return "never" if at is None else f"{duration(now - at)} ago"
