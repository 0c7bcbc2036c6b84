"""The operator JSON API under /api/ (SPEC 10) against a real Redis, a real ingress on a real
port, real workers and real local sinks: the token, the same JSON as relay.operator (what the
CLI prints), 404 and 400 answers, pause and resume, replay, the OpenAPI 3.1 document, and
schemathesis run against the running server with that document.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay import operator, rejected
from relay.events import dumps, loads
from relay.ingress.app import create_app
from relay.ingress.openapi import document
from relay.keys import Keys
from tests.conftest import ADMIN_TOKEN, IVPAY_KEY, Client, Realistic, make_config, wait_for
from tests.sink_servers import SinkServer

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
KEYS = Keys()
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def get(client: Client, path: str, **params: str) -> Any:
    """GET with the token; the JSON answer (numbers with their exact digits), asserting 200."""
    response = await client.get(path, params=params, headers=AUTH)
    text = await response.text()
    assert response.status == 200, text
    assert response.headers["Cache-Control"] == "no-store"
    return loads(text)


async def post(client: Client, path: str, body: Any = None) -> Any:
    response = await client.post(path, json=body, headers=AUTH)
    text = await response.text()
    assert response.status == 200, text
    return loads(text)


def same(value: Any) -> Any:
    """An operator function's result as JSON would carry it (as the CLI prints it)."""
    return loads(dumps(value))


async def error(response: Any, status: int, code: str) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    found: dict[str, Any] = orjson.loads(text)
    assert found["error"] == code, found
    return found


# --- the token ------------------------------------------------------------------------------


async def test_without_a_configured_token_the_api_answers_403(realistic: Realistic) -> None:
    client = realistic.client
    for path in ("/api/status", "/api/openapi.json", "/api/events", "/api/nowhere"):
        for headers in ({}, AUTH):
            response = await client.get(path, headers=headers)
            assert await error(response, 403, "admin_token_not_set")
    await error(await client.post("/api/replay", json={"ids": ["x"]}), 403, "admin_token_not_set")


async def test_a_missing_or_wrong_token_gets_401(realistic_with_token: Realistic) -> None:
    client = realistic_with_token.client
    wrong = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    ]
    for headers in wrong:
        for path in ("/api/status", "/api/openapi.json", "/api/nowhere"):
            response = await client.get(path, headers=headers)
            await error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # No ?token= on the API (the /status page takes one; a URL ends up in logs).
    response = await client.get("/api/status", params={"token": ADMIN_TOKEN})
    await error(response, 401, "unauthorized")
    response = await client.post("/api/sinks/shop/pause", headers={"Authorization": "Bearer no"})
    await error(response, 401, "unauthorized")
    status = await get(client, "/api/status")  # the right token
    assert status["sinks"]["shop"]["delivered"] == 3


# --- the same JSON as relay.operator (what `relay ... --json` prints) ------------------------


def _steady(status: dict[str, Any]) -> dict[str, Any]:
    """A status without what changes from one read to the next (its time, heartbeats, ages,
    Redis's memory)."""
    steady = {k: v for k, v in status.items() if k not in ("taken_at", "workers", "queue")}
    steady["redis"] = {
        k: v for k, v in status["redis"].items() if k not in ("used_bytes", "fraction")
    }
    return steady


async def test_each_answer_is_the_operator_functions_json(
    realistic_with_token: Realistic, redis: Any
) -> None:
    client = realistic_with_token.client
    loaded = realistic_with_token.loaded
    config = loaded.config
    status = await get(client, "/api/status")
    assert _steady(status) == _steady(same(await operator.status(redis, config)))

    listed = await get(client, "/api/events")
    assert listed == same(
        await operator.events_list(redis, config, await operator.event_filter(redis))
    )
    assert listed["count"] == 3
    filters = {
        "since": "1h",
        "source": "ivpay",
        "type": "payment.*",
        "sink": "shop",
        "state": "delivered",
        "limit": "2",
    }
    flt = await operator.event_filter(
        redis, since="1h", source="ivpay", type="payment.*", sink="shop", state="delivered", limit=2
    )
    found = await get(client, "/api/events", **filters)
    assert found == same(await operator.events_list(redis, config, flt))
    assert found["count"] == 2

    for summary in listed["events"]:
        record = await get(client, f"/api/events/{summary['id']}")
        assert record == same(await operator.event_show(redis, config, summary["id"]))
        inbound = record["inbound_id"]
        became = await get(client, f"/api/events/{inbound}")
        assert became == same(await operator.event_show(redis, config, inbound))
        assert [e["id"] for e in became["events"]] == [summary["id"]]

    for text, params in (("p1", {}), ("order-p2", {"source": "ivpay"}), (inbound, {})):
        shown = await get(client, f"/api/payments/{text}", **params)
        assert shown == same(
            await operator.payments_show(redis, config, text, params.get("source"))
        )

    assert await get(client, "/api/sinks") == same(await operator.sinks_list(redis, config))
    letters = await get(client, "/api/dead-letters")
    assert letters == same(await operator.dead_letters(redis, config, limit=50))
    assert letters["total"] == 2
    one = await get(client, "/api/dead-letters", sink="legacy", limit="1")
    assert one == same(await operator.dead_letters(redis, config, sink="legacy", limit=1))

    kept = await get(client, "/api/rejections")
    assert kept == same(await rejected.list_rejected(redis, KEYS, limit=50))
    assert {r["source"] for r in kept} == {"ivpay", "ivpey"}
    assert await get(client, "/api/rejections", source="ivpey", limit="5") == same(
        await rejected.list_rejected(redis, KEYS, limit=5, source="ivpey")
    )
    for item in kept:
        detail = await get(client, f"/api/rejections/{item['id']}")
        assert detail == same(await rejected.get_rejected(redis, KEYS, item["id"]))

    dry = await post(client, "/api/replay", {"since": "1h", "sinks": ["shop"], "dry_run": True})
    flt = await operator.event_filter(redis, since="1h")
    plan = await operator.replay_plan(redis, config, flt=flt, sinks=["shop"])
    assert dry == same(await operator.replay_run(redis, config, plan, dry_run=True))
    assert (dry["events"], dry["queued"]) == (3, 0)


# --- 404, 405, 400, 413, 415, 503 -------------------------------------------------------------


def api_config(
    merchant_url: str = "http://127.0.0.1:9", token: str = ADMIN_TOKEN
) -> dict[str, Any]:
    return {
        "admin": {"token": token},
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {"shop": {"type": "http", "url": f"{merchant_url}/shop", "secret": WHSEC}},
    }


async def test_unknown_ids_and_paths_are_404(ingress: Any) -> None:
    client = await ingress(api_config())
    for path in (
        "/api/events/evt_" + "a" * 26,
        "/api/events/in_nothing",
        "/api/events/not-an-id",
        "/api/payments/nothing-like-it",
        "/api/rejections/rj_nothing",
        "/api/rejections/zzz",
        "/api/nowhere",
        "/api/",
        "/api",
    ):
        await error(await client.get(path, headers=AUTH), 404, "not_found")
    for action in ("pause", "resume"):
        response = await client.post(f"/api/sinks/nosuch/{action}", headers=AUTH)
        assert "nosuch" in (await error(response, 404, "not_found"))["detail"]
    for path in ("/api/replay", "/api/rejections/replay", "/api/dead-letters/replay"):
        response = await client.get(path, headers=AUTH)
        await error(response, 405, "method_not_allowed")
        assert response.headers["Allow"] == "POST"
    await error(await client.post("/api/events", headers=AUTH), 405, "method_not_allowed")
    await error(await client.delete("/api/sinks", headers=AUTH), 405, "method_not_allowed")


HUGE = "1" * 400 + "s"  # a duration no float holds

BAD_QUERIES = [
    ("/api/events", {"limit": "0"}),
    ("/api/events", {"limit": "10001"}),
    ("/api/events", {"limit": "abc"}),
    ("/api/events", {"limit": "-1"}),
    ("/api/events", {"limit": "1.5"}),
    ("/api/events", {"limit": "١٢"}),  # digits, but not ASCII ones
    ("/api/events", {"limit": ""}),
    ("/api/events", {"state": "lost"}),
    ("/api/events", {"since": "yesterday"}),
    ("/api/events", {"since": "1h", "until": "2h"}),
    ("/api/events", {"since": HUGE}),
    ("/api/events", {"bogus": "1"}),
    ("/api/events?state=failed&state=delivered", {}),
    ("/api/dead-letters", {"limit": "0"}),
    ("/api/rejections", {"limit": "99999"}),
    ("/api/status", {"x": "1"}),
    ("/api/payments/%20", {}),
]


@pytest.mark.parametrize(("path", "params"), BAD_QUERIES)
async def test_malformed_queries_are_400(ingress: Any, path: str, params: dict[str, str]) -> None:
    client = await ingress(api_config())
    response = await client.get(path, params=params, headers=AUTH)
    found = await error(response, 400, "bad_request")
    assert found["detail"]


BAD_BODIES: list[tuple[str, Any]] = [
    ("/api/replay", b"not json"),
    ("/api/replay", b"[1]"),
    ("/api/replay", b'{"since": NaN}'),
    ("/api/replay", {}),
    ("/api/replay", {"ids": "evt_x"}),
    ("/api/replay", {"ids": []}),
    ("/api/replay", {"ids": [1]}),
    ("/api/replay", {"ids": None, "since": "1h"}),  # a list is never null
    ("/api/replay", {"since": "1h", "sinks": None}),
    ("/api/replay", {"ids": [""]}),
    ("/api/replay", {"ids": ["evt_x"], "since": "2h"}),
    ("/api/replay", {"since": "1h", "state": "lost"}),
    ("/api/replay", {"since": "1h", "sinks": ["nosuch"]}),
    ("/api/replay", {"since": "1h", "dry_run": "yes"}),
    ("/api/replay", {"since": HUGE}),
    ("/api/replay", {"since": "", "source": ""}),  # no filter at all (not: every event)
    ("/api/replay", {"since": "1h", "state": ""}),
    ("/api/replay", {"bogus": 1}),
    ("/api/sinks/shop/pause", {"for": "soon"}),
    ("/api/sinks/shop/pause", {"for": "0s"}),
    ("/api/sinks/shop/pause", {"for": 5}),
    ("/api/sinks/shop/pause", {"for": HUGE}),
    ("/api/sinks/shop/pause", {"for": "99999999999d"}),
    ("/api/sinks/shop/resume", {"x": 1}),
    ("/api/dead-letters/replay", {}),
    ("/api/dead-letters/replay", {"all": False}),
    ("/api/dead-letters/replay", {"ids": ["a"], "all": True}),
    ("/api/dead-letters/replay", {"sink": ""}),
    ("/api/dead-letters/replay", {"sink": "legacy", "ids": None}),
    ("/api/rejections/replay", {}),
    ("/api/rejections/replay", {"ids": "rj_x"}),
    ("/api/rejections/replay", b'"just a string"'),
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES)
async def test_malformed_bodies_are_400(ingress: Any, path: str, body: Any) -> None:
    client = await ingress(api_config())
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {**AUTH, "Content-Type": "application/json"}
    response = await client.post(path, data=data, headers=headers)
    assert (await error(response, 400, "bad_request"))["detail"]


async def test_a_body_that_is_not_json_or_too_large_is_refused(ingress: Any) -> None:
    client = await ingress(api_config())
    headers = {**AUTH, "Content-Type": "text/plain"}
    response = await client.post("/api/replay", data=b'{"ids": ["x"]}', headers=headers)
    await error(response, 415, "unsupported_media_type")
    big = orjson.dumps({"ids": ["evt_" + "a" * 26] * 20_000})
    response = await client.post(
        "/api/replay", data=big, headers={**AUTH, "Content-Type": "application/json"}
    )
    await error(response, 413, "too_large")
    # No Content-Type and an empty body: a pause without a duration.
    paused = await post(client, "/api/sinks/shop/pause")
    assert (paused["state"], paused["paused_until"]) == ("paused", None)


async def test_redis_unavailable_is_503(redis: Any) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from relay.embedded import free_port

    loaded = make_config(api_config(), f"redis://127.0.0.1:{free_port()}")
    async with TestClient(TestServer(create_app(loaded))) as client:
        for path in ("/api/status", "/api/events", "/api/sinks"):
            response = await client.get(path, headers=AUTH)
            await error(response, 503, "unavailable")
            assert response.headers["Retry-After"] == "5"
        response = await client.post("/api/sinks/shop/pause", headers=AUTH)
        await error(response, 503, "unavailable")


# --- commands: pause and resume, replay, dead letters, rejections -----------------------------


async def paused_metric(client: Client, sink: str) -> float:
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    for family in text_string_to_metric_families(await response.text()):
        if family.name == "relay_sink_paused":
            return next(s.value for s in family.samples if s.labels["sink"] == sink)
    raise AssertionError("no relay_sink_paused")


async def test_pause_and_resume_show_in_sinks_and_metrics(
    realistic_with_token: Realistic, redis: Any
) -> None:
    client = realistic_with_token.client
    before = time.time()
    paused = await post(client, "/api/sinks/shop/pause", {"for": "2h"})
    assert paused["sink"] == "shop"
    assert paused["state"] == "paused"
    until = paused["paused_until"]
    assert before + 7100 < datetime_seconds(until) < time.time() + 7300
    [shop] = [s for s in (await get(client, "/api/sinks"))["sinks"] if s["name"] == "shop"]
    assert (shop["state"], shop["paused_until"]) == ("paused", until)
    assert await paused_metric(client, "shop") == 1
    assert await paused_metric(client, "ops") == 0

    resumed = await post(client, "/api/sinks/shop/resume")
    assert (resumed["state"], resumed["paused_until"], resumed["released"]) == ("active", None, 0)
    [shop] = [s for s in (await get(client, "/api/sinks"))["sinks"] if s["name"] == "shop"]
    assert shop["state"] == "active"
    assert await paused_metric(client, "shop") == 0


def datetime_seconds(text: str) -> float:
    from relay.events import parse_iso

    return parse_iso(text).timestamp()


def replay_config(server: SinkServer) -> dict[str, Any]:
    fast = {"schedule": ["50ms", "50ms"], "jitter": 0.1}
    return {
        "admin": {"token": ADMIN_TOKEN},
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {
            "shop": {"type": "http", "url": server.url("/shop"), "secret": WHSEC, "retry": fast},
        },
    }


def accepted(server: SinkServer) -> list[str]:
    return [r.headers["webhook-id"] for r in server.requests("/shop") if r.status == 200]


AMOUNT = "12.345678901234567890123456789"  # more digits than any float keeps
REFERENCE = "shop/order #77"


def client_config(raw: dict[str, Any]) -> Any:
    return make_config(raw).config


async def test_replay_via_the_api_delivers_the_original_event_again(
    ingress: Any, run_worker: Any, config_factory: Any, sink_server: SinkServer, redis: Any
) -> None:
    raw = replay_config(sink_server)
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    payload = b'{"payment_id": "pay-r1", "status": "PAID", "foreign_id": "%s", "amount": %s}' % (
        REFERENCE.encode(),
        AMOUNT.encode(),
    )
    response = await client.post("/hooks/ivpay", data=payload, headers={"X-API-KEY": IVPAY_KEY})
    inbound = (await response.json())["id"]
    await wait_for(lambda: len(accepted(sink_server)) == 1)
    [event_id] = accepted(sink_server)
    shown = await client.get(f"/api/events/{event_id}", headers=AUTH)
    assert f'"amount":{AMOUNT}' in await shown.text()  # event data keeps its exact digits
    # A reference with a slash, a space and a #, sent URL-encoded in the path.
    timeline = await get(client, f"/api/payments/{quote(REFERENCE, safe='')}")
    assert timeline["query"] == REFERENCE
    assert [e["id"] for e in timeline["payments"][0]["events"]] == [event_id]
    assert timeline == same(await operator.payments_show(redis, client_config(raw), REFERENCE))

    dry = await post(client, "/api/replay", {"ids": [inbound], "dry_run": True})
    assert (dry["dry_run"], dry["queued"], dry["events"]) == (True, 0, 1)
    assert [(d["event_id"], d["sink"], d["state"]) for d in dry["deliveries"]] == [
        (event_id, "shop", "delivered")
    ]
    done = await post(client, "/api/replay", {"ids": [event_id, "evt_" + "b" * 26]})
    assert (done["queued"], done["not_found"]) == (1, ["evt_" + "b" * 26])
    await wait_for(lambda: len(accepted(sink_server)) == 2)
    assert accepted(sink_server) == [event_id, event_id]  # the original webhook-id both times
    assert sink_server.requests("/shop")[1].body == sink_server.requests("/shop")[0].body

    async def replayed() -> bool:
        record = await get(client, f"/api/events/{event_id}")
        [shop] = record["deliveries"]
        return shop["state"] == "delivered" and [a["replay"] for a in shop["attempts"]] == [0, 1]

    await wait_for(replayed)


async def test_dead_letters_replay_via_the_api(realistic_with_token: Realistic, redis: Any) -> None:
    client = realistic_with_token.client
    letters = (await get(client, "/api/dead-letters", sink="legacy"))["dead_letters"]
    assert len(letters) == 2
    nothing = await post(client, "/api/dead-letters/replay", {"ids": ["nope"]})
    assert nothing == {"replayed": 0, "ids": [], "not_found": ["nope"]}
    first = await post(client, "/api/dead-letters/replay", {"ids": [letters[0]["id"]]})
    assert (first["replayed"], first["ids"]) == (1, [letters[0]["id"]])
    rest = await post(client, "/api/dead-letters/replay", {"sink": "legacy"})
    assert rest["ids"] == [letters[1]["id"]]


async def test_rejections_replay_via_the_api(realistic_with_token: Realistic, redis: Any) -> None:
    client = realistic_with_token.client
    [wrong_key] = await get(client, "/api/rejections", source="ivpay")
    [typo] = await get(client, "/api/rejections", source="ivpey")
    ids = [wrong_key["id"], typo["id"], "rj_nothing"]
    expected = same(await rejected.replay_rejected(redis, realistic_with_token.loaded, ids))
    results = await post(client, "/api/rejections/replay", {"ids": ids})
    assert results == expected
    # The API key was not kept (a secret), and the source is still unknown.
    assert [r["result"] for r in results] == ["cannot_verify", "still_rejected", "not_found"]


# --- the OpenAPI document ---------------------------------------------------------------------


async def test_the_openapi_document_is_valid_openapi_3_1(ingress: Any) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

    client = await ingress(api_config())
    served = await get(client, "/api/openapi.json")
    assert served == document()
    validate(served, cls=OpenAPIV31SpecValidator)
    assert served["openapi"] == "3.1.0"
    operations = {(m, p) for p, item in served["paths"].items() for m in item}
    assert len(operations) == 14
    for path, item in served["paths"].items():
        for op in item.values():
            assert {"400", "401", "403", "503"} <= set(op["responses"]), path


# --- schemathesis against the running server --------------------------------------------------

POSITIVE_EXAMPLES = 60  # per operation: schema-valid data
NEGATIVE_EXAMPLES = 40  # per operation with parameters or a body: schema-violating data
KNOWN_ID_EXAMPLES = 15  # per operation with an id in its path, with a real one


@dataclass
class FuzzReport:
    operations: list[str] = field(default_factory=list)
    examples: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)


def fuzz_one(
    report: FuzzReport, name: str, strategy: Any, count: int, base_url: str, checks: list[Any]
) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples each run: a failure can be run again
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def call(case: Any) -> None:
        report.examples[name] += 1
        call_and_check(report, case, base_url, checks)

    call()


def run_schemathesis(base_url: str, known: dict[str, str]) -> FuzzReport:
    """Every operation of the served document, called for real: positive and negative data,
    and real ids in paths; the checks raise on a 500, an undocumented status, content type or
    header, a body that breaks its schema, or schema-violating data accepted."""
    import schemathesis
    from schemathesis import checks as st_checks

    checks = [
        st_checks.not_a_server_error,
        st_checks.status_code_conformance,
        st_checks.content_type_conformance,
        st_checks.response_headers_conformance,
        st_checks.response_schema_conformance,
        st_checks.negative_data_rejection,
        st_checks.unsupported_method,
        st_checks.allow_header_conformance,
    ]
    import requests

    url = f"{base_url}/api/openapi.json"
    schema = schemathesis.openapi.from_url(url, headers=AUTH)
    # from_url leaves out the operation that serves the document: the same document, loaded
    # as a dict, gives it.
    served = schemathesis.openapi.from_dict(requests.get(url, headers=AUTH, timeout=10).json())
    report = FuzzReport()
    for loaded in (schema, served):
        # The token goes with every call (the tests above cover its absence): no example is
        # spent on a request without it.
        loaded.config.generation.update(with_security_parameters=False)
        for result in loaded.get_all_operations():
            operation = result.ok()
            if operation.label not in report.operations:
                report.operations.append(operation.label)
                fuzz_operation(report, operation, base_url, known, checks)
    return report


def fuzz_operation(
    report: FuzzReport, operation: Any, base_url: str, known: dict[str, str], checks: list[Any]
) -> None:
    from schemathesis import GenerationMode
    from schemathesis.core.failures import FailureGroup

    runs: list[tuple[str, Any, int]] = [
        ("positive", operation.as_strategy(GenerationMode.POSITIVE), POSITIVE_EXAMPLES)
    ]
    if operation.query or operation.body:  # a string in a path alone has no invalid value
        runs.append(("negative", operation.as_strategy(GenerationMode.NEGATIVE), NEGATIVE_EXAMPLES))
    real = known.get(operation.path)
    if real is not None:
        [param] = operation.path_parameters
        strategy = operation.as_strategy(path_parameters={param.name: real})
        runs.append(("known id", strategy, KNOWN_ID_EXAMPLES))
    for mode, strategy, count in runs:
        name = f"{operation.label} ({mode})"
        try:
            fuzz_one(report, name, strategy, count, base_url, checks)
        except (Exception, FailureGroup) as exc:  # noqa: BLE001 - all reported at the end
            report.failures[name] = f"{type(exc).__name__}: {exc}"[:3000]
    # Schemathesis's coverage cases: each boundary and each way to break the schema (a missing
    # field, a wrong type, a repeated parameter, an unexpected method), deterministic.
    schema = operation.schema
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    config = schema.config.generation_for(operation=operation)
    name = f"{operation.label} (coverage)"
    for case in schema.iter_coverage_cases(
        operation, generation_modes=modes, generation_config=config
    ):
        report.examples[name] += 1
        try:
            call_and_check(report, case, base_url, checks)
        except (Exception, FailureGroup) as exc:  # noqa: BLE001 - all reported at the end
            report.failures.setdefault(name, f"{type(exc).__name__}: {exc}"[:3000])


def call_and_check(report: FuzzReport, case: Any, base_url: str, checks: list[Any]) -> None:
    response = case.call(base_url=base_url, headers=AUTH)
    report.statuses[response.status_code] += 1
    case.validate_response(response, checks=checks, headers=AUTH)


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    realistic_with_token: Realistic, redis: Any
) -> None:
    client = realistic_with_token.client
    listed = await get(client, "/api/events")
    event_id = listed["events"][0]["id"]
    [rejection, *_] = await get(client, "/api/rejections")
    known = {
        "/api/events/{id}": event_id,
        "/api/payments/{query}": "p1",
        "/api/rejections/{id}": rejection["id"],
        "/api/sinks/{name}/pause": "shop",
        "/api/sinks/{name}/resume": "shop",
    }
    base_url = str(client.make_url("")).rstrip("/")
    started = time.monotonic()
    report = await asyncio.to_thread(run_schemathesis, base_url, known)
    took = time.monotonic() - started
    print(
        f"\nschemathesis: {len(report.operations)} operations, "
        f"{sum(report.examples.values())} examples in {took:.1f} s, "
        f"statuses {dict(sorted(report.statuses.items()))}, {len(report.failures)} failures"
    )
    assert not report.failures, "\n\n".join(f"{k}:\n{v}" for k, v in report.failures.items())
    assert len(report.operations) == 14, sorted(report.operations)
    assert 500 not in report.statuses
    assert report.statuses[200] and report.statuses[400] and report.statuses[404]


async def test_a_bug_is_a_logged_json_500(
    ingress: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one 500: a bug (here a planted one), answered as JSON and logged with its traceback."""

    async def broken(redis: Any, config: Any) -> dict[str, Any]:
        raise RuntimeError("planted")

    monkeypatch.setattr(operator, "sinks_list", broken)
    client = await ingress(api_config())
    response = await client.get("/api/sinks", headers=AUTH)
    assert (await error(response, 500, "internal_error"))["detail"]
    assert "RuntimeError: planted" in capsys.readouterr().out
