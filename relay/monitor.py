"""One read of every monitoring figure from Redis: `relay status`, `/metrics` and `/status`.

Everything comes from Redis (never from this process's memory), so any web dyno reports the
whole system, workers included. The read costs two pipelined round trips in the common case:

1. counts and hashes: queue (due / scheduled, the first due members, the scheduled members
   for per-sink retry counts), DLQ size, the stats hash, sink health and latency hashes, the
   recent rejections, and the first page of a SCAN for worker heartbeats;
2. which of the first due jobs arq is running now (`arq:in-progress:<id>`), the rest of the
   heartbeat SCAN and the heartbeats themselves.

Figures are a consistent-enough picture, not a transaction: a job can move between two reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson
from arq.constants import in_progress_key_prefix

from relay.config.model import RelayConfig
from relay.keys import LATENCY_BUCKETS, WORKER_TTL_S, Keys
from relay.queue import sink_of_job
from relay.redis_memory import (
    MemoryState,
    eviction_message,
    memory_message,
    read_memory,
    shed_at_bytes,
)

RETRY_SCAN_CAP = 100_000  # scheduled jobs read to count retries per sink (ids are ~80 bytes)
OLDEST_PAGE = 256  # due jobs checked per round trip for the oldest one not running
OLDEST_MAX_PAGES = 8  # beyond 2048 running jobs the oldest age is an estimate (a lower bound)
REJECTIONS_SHOWN = 50  # of the capped list (keys.REJECTIONS_CAP), newest first

INBOUND_OUTCOMES = ("stored", "duplicate", "no_event", "dead_lettered")
UNREADABLE_POLICY = ("Redis maxmemory-policy could not be read (INFO memory): make sure it "
                     "is noeviction")
UNAVAILABLE = "unavailable"  # answered 503: Redis down, full or evicting (not the request's fault)
DELIVERY_OUTCOMES = ("delivered", "retry", "rate_limited", "failed")
BUCKET_LABELS = tuple(str(b) for b in LATENCY_BUCKETS) + ("+Inf",)


@dataclass
class QueueDepth:
    waiting: int = 0  # runnable now, not yet picked up
    scheduled: int = 0  # runnable later: retries and rate-limit waits
    in_progress: int = 0  # jobs the live workers are running (from their heartbeats)
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
    latency: Latency = field(default_factory=Latency)

    @property
    def healthy(self) -> bool:
        """No error since the last success (or never an error)."""
        if self.gone:
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

    @property
    def stored(self) -> int:
        return self.inbound.get("stored", 0)

    @property
    def rejected(self) -> int:
        return sum(n for k, n in self.inbound.items()
                   if k not in INBOUND_OUTCOMES and k != UNAVAILABLE)

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
class Rejection:
    at: float
    source: str
    status: int
    error: str
    reason: str
    client_ip: str


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
    redis_memory: MemoryState | None = None  # None: not read
    shed_memory_ratio: float = 0.9
    allow_redis_eviction: bool = False

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
                s.name: {"configured": s.configured, "inbound": s.inbound, "events": s.events,
                         "duplicates": s.duplicates}
                for s in self.sources
            },
            "sinks": {s.name: _sink_dict(s) for s in self.sinks},
            "rejections": [dataclasses.asdict(r) for r in self.rejections],
            "retry_scan_truncated": self.retry_scan_truncated,
            "redis": self._redis_dict(),
            "degraded": bool(self.degraded_reasons),
            "degraded_reasons": self.degraded_reasons,
            "warnings": self.warnings,
        }

    def _redis_dict(self) -> dict[str, Any]:
        memory = self.redis_memory.to_dict() if self.redis_memory else {}
        limit = self.redis_memory.max_bytes if self.redis_memory else None
        shed_at = shed_at_bytes(limit, self.shed_memory_ratio) if limit else None
        return {**memory, "shed_memory_ratio": self.shed_memory_ratio, "shed_at_bytes": shed_at,
                "allow_redis_eviction": self.allow_redis_eviction,
                "shedding": self.shedding is not None, "unavailable": self.unavailable}

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


# --- reading ------------------------------------------------------------------------------


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _hash(raw: dict[Any, Any] | None) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (raw or {}).items()}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _int(value: str | None) -> int:
    try:
        return int(float(value)) if value not in (None, "") else 0
    except ValueError:
        return 0


async def take_snapshot(
    redis: Any,
    config: RelayConfig,
    *,
    now: float | None = None,
    retry_scan_cap: int = RETRY_SCAN_CAP,
) -> Snapshot:
    """Every figure of SPEC 8, read from Redis in (usually) two pipelined round trips."""
    keys = Keys(config.key_prefix)
    if now is None:  # Redis's time: heartbeats and job scores are written by it (relay.clock)
        seconds, micros = await redis.time()
        now = int(seconds) + int(micros) / 1e6
    now_ms = int(now * 1000)
    sink_names = list(config.sinks)

    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(keys.queue, "-inf", now_ms)
        pipe.zcount(keys.queue, f"({now_ms}", "+inf")
        pipe.zrangebyscore(keys.queue, "-inf", now_ms, start=0, num=OLDEST_PAGE, withscores=True)
        pipe.zrangebyscore(keys.queue, f"({now_ms}", "+inf", start=0, num=retry_scan_cap)
        pipe.zcard(keys.dlq_index)
        pipe.hgetall(keys.stats)
        pipe.lrange(keys.rejections, 0, REJECTIONS_SHOWN - 1)
        pipe.zrangebyscore(keys.workers, now - WORKER_TTL_S, "+inf")
        for name in sink_names:
            pipe.hgetall(keys.sink_health(name))
            pipe.hgetall(keys.latency(name))
        (due, scheduled, first_due, later, dlq_size, stats, rejections, worker_ids,
         *sink_hashes) = await pipe.execute()

    stats = _hash(stats)
    sources, extra_sinks = _sources_and_sinks(stats, config)
    health = {name: (_hash(sink_hashes[2 * i]), _hash(sink_hashes[2 * i + 1]))
              for i, name in enumerate(sink_names)}
    if extra_sinks:  # sinks removed from the config still have counters and maybe retries
        async with redis.pipeline(transaction=False) as pipe:
            for name in extra_sinks:
                pipe.hgetall(keys.sink_health(name))
                pipe.hgetall(keys.latency(name))
            extra = await pipe.execute()
        health.update({name: (_hash(extra[2 * i]), _hash(extra[2 * i + 1]))
                       for i, name in enumerate(extra_sinks)})

    workers = await _workers(redis, keys, worker_ids, now)
    memory = await read_memory(redis)  # its own round trip: a host may refuse INFO alone
    in_progress = sum(w.running for w in workers)
    retrying = _retrying_by_sink(later)
    sinks = [
        _sink_status(name, name in config.sinks, stats, *health[name], retrying.get(name, 0))
        for name in [*sink_names, *extra_sinks]
    ]
    queue = QueueDepth(
        waiting=max(0, int(due) - in_progress),
        scheduled=int(scheduled),
        in_progress=in_progress,
        oldest_waiting_age_s=await _oldest_waiting_age(redis, keys, first_due, int(due), now_ms),
    )
    return Snapshot(
        taken_at=now,
        prefix=config.key_prefix,
        queue=queue,
        dlq_size=int(dlq_size),
        sources=sources,
        sinks=sinks,
        workers=workers,
        rejections=[r for r in (_rejection(raw) for raw in rejections) if r is not None],
        retry_scan_truncated=len(later) >= retry_scan_cap and int(scheduled) > retry_scan_cap,
        redis_memory=memory,
        shed_memory_ratio=config.server.shed_memory_ratio,
        allow_redis_eviction=config.allow_redis_eviction,
    )


def _sources_and_sinks(
    stats: dict[str, str], config: RelayConfig
) -> tuple[list[SourceStatus], list[str]]:
    """Per-source counts from `in:` and `evt:` fields; sink names seen in `dlv:` fields that
    the config no longer lists. Configured names come first, in config order."""
    sources = {name: SourceStatus(name) for name in config.sources}
    extra_sinks: list[str] = []
    for fieldname, value in stats.items():
        kind, _, rest = fieldname.partition(":")
        name, _, what = rest.rpartition(":")  # names have no ':'; event types have none either
        if not name:
            continue
        if kind in ("in", "evt"):
            source = sources.setdefault(name, SourceStatus(name, configured=False))
            if kind == "in":
                source.inbound[what] = _int(value)
            elif what == "duplicate":
                source.duplicates = _int(value)
            else:
                source.events[what] = _int(value)
        elif kind == "dlv" and name not in config.sinks and name not in extra_sinks:
            extra_sinks.append(name)
    return list(sources.values()), sorted(extra_sinks)


def _sink_status(
    name: str,
    configured: bool,
    stats: dict[str, str],
    health: dict[str, str],
    latency: dict[str, str],
    retrying_now: int,
) -> SinkStatus:
    counts = {o: _int(stats.get(f"dlv:{name}:{o}")) for o in DELIVERY_OUTCOMES}
    status = _int(health.get("last_status"))
    return SinkStatus(
        name=name,
        configured=configured,
        retrying_now=retrying_now,
        last_ok_at=_float(health.get("last_ok_at")),
        last_error=health.get("last_error") or None,
        last_error_at=_float(health.get("last_error_at")),
        last_status=status or None,  # 0 is written for "no HTTP status" (a network error)
        gone=health.get("gone") == "1",
        latency=Latency(
            buckets=(buckets := [_int(latency.get(label)) for label in BUCKET_LABELS]),
            sum=_float(latency.get("sum")) or 0.0,
            count=sum(buckets),  # the hash keeps no count: it is the sum of the buckets
        ),
        **counts,
    )


def _retrying_by_sink(job_ids: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for raw in job_ids:
        sink = sink_of_job(_s(raw))
        if sink is not None:
            counts[sink] = counts.get(sink, 0) + 1
    return counts


async def _workers(redis: Any, keys: Keys, worker_ids: Any, now: float) -> list[WorkerStatus]:
    """Live workers: ids that beat recently (keys.workers), with their heartbeat records."""
    ordered = sorted(keys.worker(_s(i)) for i in worker_ids)
    if not ordered:
        return []
    workers: list[WorkerStatus] = []
    for key, blob in zip(ordered, await redis.mget(ordered), strict=True):
        if blob is None:  # expired between SCAN and MGET: that worker is gone
            continue
        try:
            info = orjson.loads(blob)
        except orjson.JSONDecodeError:
            continue
        at = _float(str(info.get("at", "")))
        if at is not None and now - at > WORKER_TTL_S:
            continue
        workers.append(WorkerStatus(
            id=str(info.get("id") or key.removeprefix(f"{keys.prefix}:worker:")),
            running=int(info.get("running") or 0),
            started_at=_float(str(info.get("started_at", ""))),
            at=at,
            complete=int(info.get("complete") or 0),
            retried=int(info.get("retried") or 0),
            failed=int(info.get("failed") or 0),
        ))
    return workers


async def _oldest_waiting_age(
    redis: Any, keys: Keys, first_due: list[Any], due: int, now_ms: int
) -> float | None:
    """Age of the oldest due job that no worker is running. Running jobs stay in arq's sorted
    set with their old score, so the head of the set is often in progress: skip those."""
    page = [(_s(member), float(score)) for member, score in first_due]
    offset = 0
    for _ in range(OLDEST_MAX_PAGES):
        if not page:
            return None
        async with redis.pipeline(transaction=False) as pipe:
            for member, _score in page:
                pipe.exists(in_progress_key_prefix + member)
            running = await pipe.execute()
        for (_member, score), busy in zip(page, running, strict=True):
            if not busy:
                return max(0.0, (now_ms - score) / 1000)
        offset += len(page)
        if offset >= due:
            return None  # every due job is running: nothing waits
        more = await redis.zrangebyscore(keys.queue, "-inf", now_ms, start=offset,
                                         num=OLDEST_PAGE, withscores=True)
        page = [(_s(member), float(score)) for member, score in more]
    # More running jobs than we look through: report the next unchecked job's age, an upper
    # bound that is close (everything before it was running).
    return max(0.0, (now_ms - page[0][1]) / 1000) if page else None


def _rejection(raw: Any) -> Rejection | None:
    try:
        entry = orjson.loads(raw)
        return Rejection(
            at=float(entry.get("at") or 0.0),
            source=str(entry.get("source", "")),
            status=int(entry.get("status") or 0),
            error=str(entry.get("error", "")),
            reason=str(entry.get("reason", "")),
            client_ip=str(entry.get("client_ip", "")),
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None  # one bad entry must not break the status page
