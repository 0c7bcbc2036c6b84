"""GET /metrics (Prometheus text format) and the admin token on /metrics and /status."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from relay.keys import LATENCY_BUCKETS
from tests.conftest import ADMIN_TOKEN, Realistic

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from an exposition (the parser is strict)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def test_metrics_figures(realistic: Realistic) -> None:
    """Every metric SPEC 8 names is there, with the values of the traffic that went through."""
    response = await realistic.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    found = samples(text)
    families = {f.name: f.type for f in text_string_to_metric_families(text)}

    assert families["relay_queue_depth"] == "gauge"
    assert value(found, "relay_queue_depth", state="waiting") == 0
    assert value(found, "relay_queue_depth", state="scheduled") == 3
    assert value(found, "relay_queue_depth", state="in_progress") == 0
    assert value(found, "relay_queue_oldest_age_seconds") == 0
    assert value(found, "relay_dlq_size") == 2
    assert value(found, "relay_workers") == 1

    assert families["relay_inbound"] == "counter"
    assert value(found, "relay_inbound_total", source="ivpay", outcome="stored") == 3
    assert value(found, "relay_inbound_total", source="ivpay", outcome="duplicate") == 1
    assert value(found, "relay_inbound_total", source="ivpay", outcome="bad_signature") == 1
    assert value(found, "relay_inbound_total", source="_unknown", outcome="unknown_source") == 1
    assert value(found, "relay_events_total", source="ivpay", type="payment.paid") == 2

    assert families["relay_deliveries"] == "counter"
    assert value(found, "relay_deliveries_total", sink="shop", outcome="delivered") == 3
    assert value(found, "relay_deliveries_total", sink="ops", outcome="retry") == 3
    assert value(found, "relay_deliveries_total", sink="legacy", outcome="failed") == 2
    assert value(found, "relay_deliveries_total", sink="ops", outcome="delivered") == 0
    assert value(found, "relay_sink_retrying", sink="ops") == 3
    assert value(found, "relay_sink_gone", sink="legacy") == 1
    assert value(found, "relay_sink_gone", sink="shop") == 0


async def test_latency_histogram_is_cumulative(realistic: Realistic) -> None:
    """Redis keeps per-bucket counts; the exposition's `le` buckets are cumulative."""
    text = await (await realistic.client.get("/metrics")).text()
    (family,) = [
        f
        for f in text_string_to_metric_families(text)
        if f.name == "relay_delivery_latency_seconds"
    ]
    assert family.type == "histogram"
    shop = [s for s in family.samples if s.labels.get("sink") == "shop"]
    buckets = [(s.labels["le"], s.value) for s in shop if s.name.endswith("_bucket")]
    assert [float(le) for le, _ in buckets] == [*LATENCY_BUCKETS, float("inf")]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "cumulative buckets never decrease"
    assert counts[-1] == 3
    count = next(s.value for s in shop if s.name.endswith("_count"))
    total = next(s.value for s in shop if s.name.endswith("_sum"))
    assert count == 3 and total > 0
    ops = [s for s in family.samples if s.labels.get("sink") == "ops" and s.name.endswith("_count")]
    assert ops[0].value == 0


async def test_token_enforced(realistic_with_token: Realistic) -> None:
    """With admin.token set: bearer token (constant-time compared) on every admin route;
    `?token=` only for the page and its JSON (a browser), never for /metrics."""
    client = realistic_with_token.client
    for path in ("/metrics", "/status", "/status.json"):
        missing = await client.get(path)
        assert missing.status == 401, path
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await client.get(path, headers={"Authorization": "Bearer nope"})).status == 401
        assert (await client.get(path, headers={"Authorization": ADMIN_TOKEN})).status == 401
        assert (await client.get(path, headers=AUTH)).status == 200, path
    assert (await client.get("/metrics", params={"token": ADMIN_TOKEN})).status == 401
    assert (await client.get("/status", params={"token": ADMIN_TOKEN})).status == 200
    assert (await client.get("/status.json", params={"token": ADMIN_TOKEN})).status == 200
    assert (await client.get("/status", params={"token": ADMIN_TOKEN[:-1]})).status == 401
    # The webhook path itself never needs the admin token.
    assert (await client.get("/healthz")).status == 200
    page = await (await client.get("/status", headers=AUTH)).text()
    assert ADMIN_TOKEN not in page


async def test_open_without_token(realistic: Realistic) -> None:
    """With no admin.token the routes are open."""
    for path in ("/metrics", "/status", "/status.json"):
        assert (await realistic.client.get(path)).status == 200, path


async def test_status_json_and_page_figures(realistic: Realistic) -> None:
    """/status.json is the snapshot; /status shows the same figures and is private."""
    data = await (await realistic.client.get("/status.json")).json()
    assert data["queue"]["scheduled"] == 3 and data["dlq_size"] == 2
    assert data["sinks"]["shop"]["delivered"] == 3
    response = await realistic.client.get("/status")
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'nonce-" in response.headers["Content-Security-Policy"]
    html = await response.text()
    assert 'data-sink="legacy"' in html and "gone (404/410)" in html
    partial = await (await realistic.client.get("/status", params={"partial": "1"})).text()
    assert "<html" not in partial and 'data-sink="ops"' in partial


async def test_redis_down_is_503(ingress: Any, redis: Any, redis_server: Any) -> None:
    """With Redis unreachable /metrics and /status.json answer 503, the page says why."""
    from relay.embedded import free_port

    client = await ingress({"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    assert (await client.get("/metrics")).status == 503
    assert (await client.get("/status.json")).status == 503
    page = await client.get("/status")
    assert page.status == 503
    assert "Redis unreachable" in await page.text()
