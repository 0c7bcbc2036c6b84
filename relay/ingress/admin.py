"""The ingress's admin routes (SPEC 8): `/metrics` for Prometheus and the `/status` page.

Both read one `relay.monitor` snapshot from Redis per request, so every web dyno reports the
whole system. When `admin.token` is set they need `Authorization: Bearer <token>` (and
`/status.json` takes `?token=`), and `/status` is the operator console instead
(relay.ingress.console: a sign-in form and a session cookie; an old `?token=` link signs in).
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.exceptions import RedisError

from relay import __version__
from relay.ingress import console
from relay.ingress.auth import token_matches
from relay.ingress.state import CONFIG, REDIS
from relay.keys import (
    DELIVERY_OUTCOMES,
    INBOUND_OUTCOMES,
    RECONCILE_OUTCOMES,
    UNAVAILABLE,
    UNKNOWN_SOURCE,
)
from relay.monitor import take_snapshot
from relay.redis_memory import shed_at_bytes
from relay.snapshot import BUCKET_LABELS, Snapshot, ago, duration

SNAPSHOT_TIMEOUT_S = 5.0  # a scrape must not hang on a sick Redis (Prometheus times out at 10 s)
PAGE_REFRESH_S = 5
# The classic text format, which every Prometheus version parses; our names are all legacy-safe,
# so the body is the same whatever prometheus-client calls "latest".
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TEMPLATES = Path(__file__).parent / "templates"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status_page)
    app.router.add_get("/status.json", status_json)
    console.add_routes(app)  # the console's sign-in, sign-out and script (SPEC 10)


# --- access -------------------------------------------------------------------------------


def _authorized(request: web.Request, allow_query: bool) -> bool:
    """Open when no token is configured; else the bearer token (or `?token=` where allowed),
    compared in constant time (relay.ingress.auth)."""
    expected = request.app[CONFIG].config.admin.token
    return not expected or token_matches(request, expected, allow_query=allow_query)


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "unauthorized", "hint": "send Authorization: Bearer <admin.token>"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="payrelay"', "Cache-Control": "no-store"},
    )


async def _snapshot(request: web.Request) -> Snapshot:
    async with asyncio.timeout(SNAPSHOT_TIMEOUT_S):
        return await take_snapshot(request.app[REDIS], request.app[CONFIG].config)


# --- /metrics -----------------------------------------------------------------------------


class SnapshotCollector:
    """A prometheus_client Collector that yields the metric families of one snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> list[Metric]:
        return [
            *self._queue(),
            *self._inbound(),
            *self._sinks(),
            *self._workers(),
            *self._redis(),
            self._alerts(),
        ]

    def _alerts(self) -> Metric:
        """SPEC 12: every alert relay.alerts keeps a state for, 1 while it fires."""
        firing = GaugeMetricFamily(
            "relay_alerts_firing",
            "1 while the alert (rule, subject) fires, else 0 (relay.alerts).",
            labels=["rule", "subject"],
        )
        for alert in self.snapshot.alerts:
            firing.add_metric([alert.rule, alert.subject], int(alert.firing))
        return firing

    def _queue(self) -> list[Metric]:
        snap = self.snapshot
        depth = GaugeMetricFamily(
            "relay_queue_depth",
            "Jobs in the queue by state: waiting "
            "(runnable now), scheduled (retries, later), in_progress, "
            "held (for paused sinks).",
            labels=["state"],
        )
        depth.add_metric(["waiting"], snap.queue.waiting)
        depth.add_metric(["scheduled"], snap.queue.scheduled)
        depth.add_metric(["in_progress"], snap.queue.in_progress)
        depth.add_metric(["held"], snap.queue.held)
        oldest = GaugeMetricFamily(
            "relay_queue_oldest_age_seconds",
            "Age of the oldest job waiting to run (0 when none waits).",
        )
        oldest.add_metric([], snap.queue.oldest_waiting_age_s or 0.0)
        dlq = GaugeMetricFamily("relay_dlq_size", "Entries in the dead-letter queue.")
        dlq.add_metric([], snap.dlq_size)
        return [depth, oldest, dlq]

    def _inbound(self) -> list[Metric]:
        inbound = CounterMetricFamily(
            "relay_inbound_total",
            "Webhooks received, by source and "
            "outcome (stored, duplicate, no_event, dead_lettered, "
            "unavailable: answered 503, or the rejection error).",
            labels=["source", "outcome"],
        )
        events = CounterMetricFamily(
            "relay_events_total",
            "Canonical events normalized, by source and type.",
            labels=["source", "type"],
        )
        dups = CounterMetricFamily(
            "relay_event_duplicates_total",
            "Semantic duplicate events dropped, by source.",
            labels=["source"],
        )
        for source in self.snapshot.sources:
            # Zero series for configured sources, so rate() works from the first webhook on.
            counts = {"stored": 0, "duplicate": 0, UNAVAILABLE: 0} if source.configured else {}
            counts.update(source.inbound)
            for outcome, n in sorted(counts.items()):
                inbound.add_metric([source.name, outcome], n)
            for kind, n in sorted(source.events.items()):
                events.add_metric([source.name, kind], n)
            dups.add_metric([source.name], source.duplicates)
        return [inbound, events, dups, *self._reconcile()]

    def _reconcile(self) -> list[Metric]:
        """SPEC 11, per source that reconciles (relay.reconcile)."""
        total = CounterMetricFamily(
            "relay_reconcile_total",
            "Reconciliation by source and outcome: attempted (status API calls), recovered "
            "(missed stages emitted), api_error (failed calls), gave_up (give_up passed).",
            labels=["source", "outcome"],
        )
        tracked = GaugeMetricFamily(
            "relay_reconcile_tracked",
            "Open payments the scheduler will ask the provider about.",
            labels=["source"],
        )
        paused = GaugeMetricFamily(
            "relay_reconcile_paused",
            "1 while the source's status API calls wait (credentials refused, or a 429).",
            labels=["source"],
        )
        for status in self.snapshot.reconcile:
            for outcome in RECONCILE_OUTCOMES:
                total.add_metric([status.source, outcome], getattr(status, outcome))
            tracked.add_metric([status.source], status.tracked)
            paused.add_metric([status.source], int(status.paused))
        return [total, tracked, paused]

    def _sinks(self) -> list[Metric]:
        deliveries = CounterMetricFamily(
            "relay_deliveries_total",
            "Delivery attempts by sink "
            "and outcome (delivered, retry, rate_limited, failed: "
            "dead-lettered).",
            labels=["sink", "outcome"],
        )
        latency = HistogramMetricFamily(
            "relay_delivery_latency_seconds",
            "From receipt of the webhook to delivery to the sink.",
            labels=["sink"],
        )
        retrying = GaugeMetricFamily(
            "relay_sink_retrying",
            "Deliveries scheduled to be tried again, by sink.",
            labels=["sink"],
        )
        gone = GaugeMetricFamily(
            "relay_sink_gone", "1 when the sink's endpoint answered 404/410.", labels=["sink"]
        )
        paused = GaugeMetricFamily(
            "relay_sink_paused",
            "1 while the sink is paused (relay sinks pause): its deliveries are held.",
            labels=["sink"],
        )
        last_ok = GaugeMetricFamily(
            "relay_sink_last_success_timestamp_seconds",
            "Unix time of the last delivery to the sink.",
            labels=["sink"],
        )
        last_err = GaugeMetricFamily(
            "relay_sink_last_error_timestamp_seconds",
            "Unix time of the last failed attempt.",
            labels=["sink"],
        )
        for sink in self.snapshot.sinks:
            for outcome in DELIVERY_OUTCOMES:
                deliveries.add_metric([sink.name, outcome], getattr(sink, outcome))
            cumulative, buckets = 0, []
            for label, n in zip(BUCKET_LABELS, sink.latency.buckets, strict=True):
                cumulative += n  # Redis keeps per-bucket counts; Prometheus wants le-cumulative
                buckets.append((label, cumulative))
            latency.add_metric([sink.name], buckets, sink.latency.sum)
            retrying.add_metric([sink.name], sink.retrying_now)
            gone.add_metric([sink.name], int(sink.gone))
            paused.add_metric([sink.name], int(sink.paused))
            if sink.last_ok_at is not None:
                last_ok.add_metric([sink.name], sink.last_ok_at)
            if sink.last_error_at is not None:
                last_err.add_metric([sink.name], sink.last_error_at)
        return [deliveries, latency, retrying, gone, paused, last_ok, last_err]

    def _workers(self) -> list[Metric]:
        workers = GaugeMetricFamily("relay_workers", "Worker processes with a live heartbeat.")
        workers.add_metric([], len(self.snapshot.workers))
        rejections = GaugeMetricFamily(
            "relay_recent_rejections",
            "Entries in the capped list of recent rejections shown by `relay status`.",
        )
        rejections.add_metric([], len(self.snapshot.rejections))
        info = GaugeMetricFamily("relay_build_info", "The relay's version.", labels=["version"])
        info.add_metric([__version__], 1)
        return [workers, rejections, info]

    def _redis(self) -> list[Metric]:
        """Why the ingress sheds or the relay is degraded: Redis's memory and policy."""
        snap = self.snapshot
        memory = snap.redis_memory
        shedding = GaugeMetricFamily(
            "relay_ingress_shedding",
            "1 while the ingress answers 503 because Redis is near maxmemory or may evict.",
        )
        shedding.add_metric([], int(snap.shedding is not None))
        policy = GaugeMetricFamily(
            "relay_redis_maxmemory_policy",
            "Redis's maxmemory-policy (anything but noeviction can lose queued webhooks).",
            labels=["policy"],
        )
        policy.add_metric([(memory.policy if memory else None) or "unknown"], 1)
        safe = GaugeMetricFamily(
            "relay_redis_eviction_safe",
            "1 when maxmemory-policy is noeviction, 0 when it may evict or cannot be read.",
        )
        safe.add_metric([], int(memory is not None and bool(memory.policy) and not memory.evicting))
        families: list[Metric] = [shedding, policy, safe]
        if memory is not None and memory.used_bytes is not None:
            used = GaugeMetricFamily(
                "relay_redis_memory_used_bytes", "Redis memory counted against maxmemory."
            )
            used.add_metric([], memory.used_bytes)
            families.append(used)
        if memory is not None and memory.max_bytes:
            limit = GaugeMetricFamily("relay_redis_memory_max_bytes", "Redis maxmemory.")
            limit.add_metric([], memory.max_bytes)
            shed_at = GaugeMetricFamily(
                "relay_redis_memory_shed_bytes",
                "Used memory from "
                "which the ingress sheds (server.shed_memory_ratio, "
                "at least 4 MiB below maxmemory).",
            )
            shed_at.add_metric([], shed_at_bytes(memory.max_bytes, snap.shed_memory_ratio))
            families += [limit, shed_at]
        return families


def render_metrics(snapshot: Snapshot) -> bytes:
    # A registry per scrape: the collector is the snapshot; nothing lives in process memory.
    # The snapshot lists every configured source and sink (with zeros) besides those seen.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


async def metrics(request: web.Request) -> web.Response:
    if not _authorized(request, allow_query=False):
        return _unauthorized()
    try:
        snapshot = await _snapshot(request)
    except (RedisError, OSError, TimeoutError) as exc:
        # A failed scrape (up == 0 in Prometheus) is the honest answer: no stale figures.
        return web.Response(
            status=503,
            text=f"redis unavailable: {type(exc).__name__}\n",
            headers={"Retry-After": "5"},
        )
    body = render_metrics(snapshot)
    return web.Response(
        body=body, headers={"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": "no-store"}
    )


# --- /status and /status.json -------------------------------------------------------------


async def status_json(request: web.Request) -> web.Response:
    if not _authorized(request, allow_query=True):
        return _unauthorized()
    try:
        snapshot = await _snapshot(request)
    except (RedisError, OSError, TimeoutError):
        return web.json_response({"error": "unavailable"}, status=503, headers={"Retry-After": "5"})
    return web.Response(
        body=snapshot.to_json(indent=False),
        content_type="application/json",
        headers=_private_headers(),
    )


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,  # every figure, name, reason and error text is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    env.filters["iso"] = _iso
    return env


def _iso(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _private_headers(nonce: str | None = None) -> dict[str, str]:
    headers = {
        "Cache-Control": "no-store",
        # The page URL may carry ?token=: never send it to another site in a Referer.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
    if nonce is not None:
        headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
    return headers


def page_context(snapshot: Snapshot | None, error: str | None) -> dict[str, Any]:
    """What the template shows, with the judgement calls (overall state, badges) made here."""
    now = snapshot.taken_at if snapshot else time.time()
    context: dict[str, Any] = {
        "snapshot": snapshot,
        "error": error,
        "now": now,
        "ago": ago,
        "version": __version__,
        "refresh_s": PAGE_REFRESH_S,
        "inbound_outcomes": INBOUND_OUTCOMES,
        "unknown_source": UNKNOWN_SOURCE,
    }
    if snapshot is None:
        context.update(state="down", state_text="Redis unreachable")
    else:
        context.update(_overall(snapshot))
    return context


def _overall(snapshot: Snapshot) -> dict[str, str]:
    if not snapshot.workers:
        return {"state": "down", "state_text": "No worker running"}
    if any(s.gone for s in snapshot.sinks):
        return {"state": "warn", "state_text": "A sink is gone"}
    if any(not s.healthy for s in snapshot.sinks) or snapshot.dlq_size:
        return {"state": "warn", "state_text": "Degraded"}
    return {"state": "ok", "state_text": "All systems normal"}


async def status_page(request: web.Request) -> web.Response:
    """With `admin.token` set, the console (relay.ingress.console: sign-in, then the
    page that works through /api/); without one, this read-only page, open as before."""
    if request.app[CONFIG].config.admin.token:
        return await console.page(request)
    if not _authorized(request, allow_query=True):
        return _unauthorized()
    snapshot: Snapshot | None = None
    error: str | None = None
    try:
        snapshot = await _snapshot(request)
    except (RedisError, OSError, TimeoutError) as exc:
        error = f"Redis unreachable ({type(exc).__name__}); figures will return when it answers."
    context = page_context(snapshot, error)
    status = 200 if snapshot is not None else 503
    if request.query.get("partial") == "1":
        # The page's script swaps this fragment in every few seconds: one template, no
        # client-side rendering to keep in step with it.
        body = _environment().get_template("status_body.html").render(context)
        return web.Response(
            text=body, status=status, content_type="text/html", headers=_private_headers()
        )
    nonce = secrets.token_urlsafe(16)
    body = _environment().get_template("status.html").render(context, nonce=nonce)
    return web.Response(
        text=body, status=status, content_type="text/html", headers=_private_headers(nonce)
    )
