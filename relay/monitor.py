"""One read of every monitoring figure from Redis: `relay status`, `/metrics` and `/status`.

Everything comes from Redis (never from this process's memory), so any web dyno reports the
whole system, workers included. The read costs two pipelined round trips in the common case:

1. counts and hashes: queue (due / scheduled, the first due members, the scheduled members
   for per-sink retry counts), DLQ size, the stats hash, sink health and latency hashes, the
   recent rejections, and the first page of a SCAN for worker heartbeats;
2. which of the first due jobs arq is running now (`arq:in-progress:<id>`), the rest of the
   heartbeat SCAN and the heartbeats themselves.

Figures are a consistent-enough picture, not a transaction: a job can move between two reads.
What a snapshot holds, and its JSON, is in relay.snapshot.
"""

from __future__ import annotations

from typing import Any

import orjson
from arq.constants import in_progress_key_prefix

from relay.config.model import RelayConfig
from relay.keys import (
    DELIVERY,
    DELIVERY_OUTCOMES,
    EVENT,
    HOLD_AT_MS,
    INBOUND,
    WORKER_TTL_S,
    Keys,
    alert_states,
    auth_failures,
    delivery_stat,
    parse_stat,
    sink_of_job,
)
from relay.redis_memory import read_memory
from relay.snapshot import (
    BUCKET_LABELS,
    AlertStatus,
    Latency,
    QueueDepth,
    Rejection,
    SinkStatus,
    Snapshot,
    SourceStatus,
    WorkerStatus,
)

RETRY_SCAN_CAP = 100_000  # scheduled jobs read to count retries per sink (ids are ~80 bytes)
OLDEST_PAGE = 256  # due jobs checked per round trip for the oldest one not running
OLDEST_MAX_PAGES = 8  # beyond 2048 running jobs the oldest age is an estimate (a lower bound)
REJECTIONS_SHOWN = 50  # of the capped list (keys.REJECTIONS_CAP), newest first

__all__ = ["BUCKET_LABELS", "Snapshot", "take_snapshot"]  # BUCKET_LABELS: the tests read it here


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
    if now is None:
        now = await _redis_now(redis)
    now_ms = int(now * 1000)
    sink_names = list(config.sinks)

    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(keys.queue, "-inf", now_ms)
        pipe.zcount(keys.queue, f"({now_ms}", f"({HOLD_AT_MS}")
        pipe.zrangebyscore(keys.queue, "-inf", now_ms, start=0, num=OLDEST_PAGE, withscores=True)
        pipe.zrangebyscore(keys.queue, f"({now_ms}", f"({HOLD_AT_MS}", start=0, num=retry_scan_cap)
        pipe.zcount(keys.queue, HOLD_AT_MS, "+inf")
        pipe.hgetall(keys.paused)
        pipe.zcard(keys.dlq_index)
        pipe.hgetall(keys.stats)
        pipe.lrange(keys.rejections, 0, REJECTIONS_SHOWN - 1)
        pipe.zrangebyscore(keys.workers, now - WORKER_TTL_S, "+inf")
        for name in sink_names:
            pipe.hgetall(keys.sink_health(name))
            pipe.hgetall(keys.latency(name))
        _read_alert_figures(pipe, keys, config, now_ms)
        (
            due,
            scheduled,
            first_due,
            later,
            held,
            paused,
            dlq_size,
            stats,
            rejections,
            worker_ids,
            *rest,  # the sinks' hashes, then _read_alert_figures'
        ) = await pipe.execute()

    stats = _hash(stats)
    sources, extra_sinks = _sources_and_sinks(stats, config)
    health = _health_pairs(sink_names, rest)
    health.update(await _removed_sinks_health(redis, keys, extra_sinks))

    workers = await _workers(redis, keys, worker_ids, now)
    memory = await read_memory(redis)  # its own round trip: a host may refuse INFO alone
    in_progress = sum(w.running for w in workers)
    retrying = _retrying_by_sink(later)
    sinks = [
        _sink_status(name, name in config.sinks, stats, *health[name], retrying.get(name, 0))
        for name in [*sink_names, *extra_sinks]
    ]
    await _add_pauses(redis, keys, sinks, _hash(paused))
    queue = QueueDepth(
        waiting=max(0, int(due) - in_progress),
        scheduled=int(scheduled),
        in_progress=in_progress,
        held=int(held),
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
        reconcile=await _reconcile(redis, keys, config, stats, now),
        redis_memory=memory,
        shed_memory_ratio=config.server.shed_memory_ratio,
        allow_redis_eviction=config.allow_redis_eviction,
        alerts=_alert_figures(sources, rest[2 * len(sink_names) :]),  # fills `sources` in
    )


def _read_alert_figures(pipe: Any, keys: Keys, config: RelayConfig, now_ms: int) -> None:
    """SPEC 12: the alerts' states; per configured source its bad signatures within the
    bad_signatures window and the last one (relay.ingress.guard writes them)."""
    pipe.hgetall(alert_states(keys))
    window_ms = int(config.alerts.auth_window_s * 1000)
    for name in config.sources:
        pipe.zcount(auth_failures(keys, name), now_ms - window_ms, "+inf")
        pipe.zrevrange(auth_failures(keys, name), 0, 0)


def _alert_figures(sources: list[SourceStatus], read: list[Any]) -> list[AlertStatus]:
    """What _read_alert_figures read, into the sources (configured ones come first, in config
    order, as it read them). Returns the alerts."""
    states, auth = read[0], read[1:]
    for source, count, last in zip(sources, auth[0::2], auth[1::2], strict=False):
        source.auth_failures = int(count)
        source.auth_failure_reason = _s(last[0]).split(":", 2)[-1] if last else None
    return _alerts(_hash(states))


def _alerts(states: dict[str, str]) -> list[AlertStatus]:
    """What relay.alerts keeps per rule and subject: firing or not, since when, and why."""
    alerts: list[AlertStatus] = []
    for fieldname, blob in sorted(states.items()):
        rule, _, subject = fieldname.partition(":")
        try:
            state = orjson.loads(blob)
            alerts.append(
                AlertStatus(
                    rule,
                    subject,
                    firing=bool(state.get("firing")),
                    since=_float(str(state.get("since") or "")),
                    summary=str(state.get("summary") or ""),
                )
            )
        except (orjson.JSONDecodeError, AttributeError):
            continue  # one bad entry must not break the status page
    return alerts


async def _redis_now(redis: Any) -> float:
    """Redis's time: heartbeats and job scores are written by it (relay.clock)."""
    seconds, micros = await redis.time()
    return int(seconds) + int(micros) / 1e6


def _health_pairs(
    names: list[str], hashes: list[Any]
) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Per sink name: its health hash and its latency hash, read in that order."""
    return {name: (_hash(hashes[2 * i]), _hash(hashes[2 * i + 1])) for i, name in enumerate(names)}


def _sources_and_sinks(
    stats: dict[str, str], config: RelayConfig
) -> tuple[list[SourceStatus], list[str]]:
    """Per-source counts from `in:` and `evt:` fields; sink names seen in `dlv:` fields that
    the config no longer lists. Configured names come first, in config order."""
    sources = {name: SourceStatus(name) for name in config.sources}
    extra_sinks: list[str] = []
    for fieldname, value in stats.items():
        stat = parse_stat(fieldname)
        if stat is None:
            continue
        name, what = stat.subject, stat.what
        if stat.kind in (INBOUND, EVENT):
            source = sources.setdefault(name, SourceStatus(name, configured=False))
            if stat.kind == INBOUND:
                source.inbound[what] = _int(value)
            elif what == "duplicate":
                source.duplicates = _int(value)
            else:
                source.events[what] = _int(value)
        elif stat.kind == DELIVERY and name not in config.sinks and name not in extra_sinks:
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
    counts = {o: _int(stats.get(delivery_stat(name, o))) for o in DELIVERY_OUTCOMES}
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
        delivered=counts["delivered"],
        retry=counts["retry"],
        rate_limited=counts["rate_limited"],
        failed=counts["failed"],
    )


async def _removed_sinks_health(
    redis: Any, keys: Keys, names: list[str]
) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Sinks removed from the config still have counters and maybe retries."""
    if not names:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.sink_health(name))
            pipe.hgetall(keys.latency(name))
        return _health_pairs(names, await pipe.execute())


async def _add_pauses(
    redis: Any, keys: Keys, sinks: list[SinkStatus], paused: dict[str, str]
) -> None:
    """Which sinks are paused, and how many deliveries each holds (one more round trip, only
    while some sink is paused)."""
    names = [s for s in sinks if s.name in paused]
    if not names:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for sink in names:
            pipe.zcard(keys.held(sink.name))
        counts = await pipe.execute()
    for sink, count in zip(names, counts, strict=True):
        until = _int(paused[sink.name])
        sink.paused, sink.paused_until, sink.held = True, until / 1000 if until else None, count


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
        workers.append(
            WorkerStatus(
                id=str(info.get("id") or key.removeprefix(f"{keys.prefix}:worker:")),
                running=int(info.get("running") or 0),
                started_at=_float(str(info.get("started_at", ""))),
                at=at,
                complete=int(info.get("complete") or 0),
                retried=int(info.get("retried") or 0),
                failed=int(info.get("failed") or 0),
            )
        )
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
        more = await redis.zrangebyscore(
            keys.queue, "-inf", now_ms, start=offset, num=OLDEST_PAGE, withscores=True
        )
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


async def _reconcile(
    redis: Any, keys: Keys, config: RelayConfig, stats: dict[str, str], now: float
) -> list[Any]:
    """SPEC 11, per source that reconciles: its counters, how many open payments it tracks and
    its status API's health (relay.reconcile); one more round trip, only when some source
    reconciles."""
    from relay.keys import RECONCILE_OUTCOMES, reconcile_due, reconcile_source, reconcile_stat
    from relay.reconcile_api import reconciling
    from relay.snapshot import ReconcileStatus

    names = list(reconciling(config))
    if not names:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(reconcile_source(keys, name))
            pipe.zcard(reconcile_due(keys, name))
        found = await pipe.execute()
    statuses = []
    for name, raw, tracked in zip(names, found[0::2], found[1::2], strict=True):
        health = _hash(raw)
        until = _int(health.get("paused_until")) / 1000
        statuses.append(
            ReconcileStatus(
                name,
                **{o: _int(stats.get(reconcile_stat(name, o))) for o in RECONCILE_OUTCOMES},
                tracked=int(tracked),
                last_ok_at=_float(health.get("last_ok_at")),
                last_error=health.get("last_error") or None,
                last_error_at=_float(health.get("last_error_at")),
                paused_until=until if until > now else None,
            )
        )
    return statuses
