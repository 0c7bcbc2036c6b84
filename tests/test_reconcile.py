"""Reconciliation (SPEC 11) against the real Redis, real workers, a real local sink and local
HTTP servers that behave as each provider's documented status API does: its paths, headers,
signatures, status values and field names; wrong credentials answered 401 (IPN: an `error`);
429s and 500s when told to."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
import pytest
import pytest_asyncio
import structlog
from aiohttp import web

from relay import reconcile_api
from relay.keys import Keys, reconcile_due, reconcile_lease, reconcile_stat
from relay.monitor import take_snapshot
from relay.providers import calypso, coinpayments, coinpayments_ipn, ivpay
from relay.providers.coinpayments import BOM
from tests.conftest import IVPAY_KEY, TEST_SECRETS, ivpay_body, wait_for
from tests.sink_servers import SinkServer

KEYS = Keys()
WHSEC = "whsec_cmVjb25jaWxlLXRlc3Qtc2luay1zZWNyZXQtMzI="
CP_CLIENT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CP_SECRET = TEST_SECRETS["COINPAYMENTS_CLIENT_SECRET"]
CP_URL = "https://relay.example.com/hooks/coinpayments"
CALYPSO_KEY, CALYPSO_SECRET, CALYPSO_ACCOUNT = "calypso-api-public", "calypso-api-secret", "0xacc"
IPN_PUBLIC, IPN_PRIVATE = "ipn-api-public-key", "ipn-api-private-key"
QUICK = {"after": "1s", "backoff": "1s", "max_backoff": "4s"}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class FakeApis:
    """The four status APIs on one local server, by path prefix. `status[(provider, id)]` is
    what the API says (then `later[...]` from the second question on); `errors` are answered
    first, one per request (429 with Retry-After: 1, or any other status)."""

    def __init__(self) -> None:
        self.status: dict[tuple[str, str], str] = {}
        self.later: dict[tuple[str, str], str] = {}
        self.errors: deque[int] = deque()
        self.calls: list[tuple[str, str, float]] = []
        self.server: Any = None

    def url(self, prefix: str) -> str:
        return str(self.server.make_url(prefix))

    def asked(self, provider: str, payment_id: str | None = None) -> int:
        return sum(1 for p, i, _ in self.calls if p == provider and payment_id in (None, i))

    def _call(self, provider: str, payment_id: str) -> None:
        self.calls.append((provider, payment_id, time.monotonic()))

    def _answer(self, provider: str, payment_id: str) -> str | web.Response | None:
        """The status to report, or an error response (a call with the right credentials)."""
        if self.errors:
            status = self.errors.popleft()
            headers = {"Retry-After": "1"} if status == 429 else {}
            return web.Response(status=status, text=f"error {status}", headers=headers)
        key = (provider, payment_id)
        found = self.status.get(key)
        if key in self.later:
            self.status[key] = self.later.pop(key)
        return found

    async def ivpay(self, request: web.Request) -> web.Response:
        payment_id = request.match_info["id"]
        self._call("ivpay", payment_id)
        if request.headers.get("X-API-KEY") != IVPAY_KEY:
            return _json({"success": False, "error": "Wrong auth parameters"}, 401)
        status = self._answer("ivpay", payment_id)
        if isinstance(status, web.Response):
            return status
        if status is None:
            return _json({"success": False, "error": "Payment not found"}, 400)
        data: dict[str, Any] = {
            "payment_id": payment_id,
            "foreign_id": f"order-{payment_id}",
            "status": status,
        }
        if status != "CREATED":
            data["processed_at"] = int(time.time())
        return _json({"success": True, "data": data})

    async def coinpayments(self, request: web.Request) -> web.Response:
        client = request.headers.get("X-CoinPayments-Client", "")
        stamp = request.headers.get("X-CoinPayments-Timestamp", "")
        message = BOM + b"GET" + str(request.url).encode() + client.encode() + stamp.encode()
        wanted = base64.b64encode(hmac.new(CP_SECRET.encode(), message, "sha256").digest())
        payment_id = request.match_info["id"]
        self._call("coinpayments", payment_id)
        if (
            client != CP_CLIENT
            or request.headers.get("X-CoinPayments-Signature") != wanted.decode()
        ):
            return _json({"title": "Unauthorized", "status": 401}, 401)
        status = self._answer("coinpayments", payment_id)
        if isinstance(status, web.Response) or status is None:
            return status or _json({"title": "Not Found", "status": 404}, 404)
        amount = {"currencyId": "5057", "value": "10000", "valueAsDecimal": "100.00"}
        return _json({"id": payment_id, "invoiceId": "0067", "status": status, "amount": amount})

    async def calypso(self, request: web.Request) -> web.Response:
        raw = await request.read()
        sign = hmac.new(CALYPSO_SECRET.encode(), raw, hashlib.sha512).hexdigest()
        self._call("calypso", orjson.loads(raw)["payload"]["id"])
        if request.headers.get("Key") != CALYPSO_KEY or request.headers.get("Sign") != sign:
            return _json({"code": "UNAUTHORIZED", "message": "wrong sign"}, 401)
        body = orjson.loads(raw)
        if (
            abs(body["timestamp"] - time.time() * 1000) > 180_000
            or body["account"] != CALYPSO_ACCOUNT
        ):
            return _json({"code": "BAD_REQUEST", "message": "timestamp"}, 400)
        payment_id = body["payload"]["id"]
        status = self._answer("calypso", payment_id)
        if isinstance(status, web.Response) or status is None:
            return status or _json({"code": "NOT_FOUND"}, 400)
        answer = (  # amounts are JSON numbers with more digits than a float holds
            b'{"id":"%s","state":"%s","amount":0.123456789012345678,"currency":"ETH",'
            b'"externalId":"order-9","lastDepositHash":"0xfeed"}'
            % (payment_id.encode(), status.encode())
        )
        return web.Response(body=answer, content_type="application/json")

    async def ipn(self, request: web.Request) -> web.Response:
        raw = await request.read()
        form = dict(parse_qsl(raw.decode()))
        sign = hmac.new(IPN_PRIVATE.encode(), raw, hashlib.sha512).hexdigest()
        self._call("coinpayments_ipn", form["txid"])
        if form.get("key") != IPN_PUBLIC or request.headers.get("HMAC") != sign:
            return _json({"error": "HMAC signature does not match", "result": []})
        status = self._answer("coinpayments_ipn", form["txid"])
        if isinstance(status, web.Response) or status is None:
            return status or _json({"error": "Invalid payment ID", "result": []})
        result = {
            "status": int(status),
            "status_text": "x",
            "coin": "BTC",
            "amountf": "0.00025000",
            "receivedf": "0.00025000",
            "recv_confirms": 3,
        }
        return _json({"error": "ok", "result": result})


@pytest_asyncio.fixture
async def apis() -> AsyncIterator[FakeApis]:
    from aiohttp.test_utils import TestServer

    fake = FakeApis()
    app = web.Application()
    app.router.add_get("/ivpay/payment/{id}", fake.ivpay)
    app.router.add_get("/cp/api/v2/merchant/invoices/{id}", fake.coinpayments)
    app.router.add_post("/calypso/api/v1/invoice", fake.calypso)
    app.router.add_post("/ipn/api.php", fake.ipn)
    fake.server = TestServer(app)
    await fake.server.start_server()
    yield fake
    await fake.server.close()


def ivpay_source(apis: FakeApis, **reconcile: Any) -> dict[str, Any]:
    return {
        "provider": "ivpay",
        "api_key": "${IVPAY_API_KEY}",
        "reconcile": {"api_url": apis.url("/ivpay"), **QUICK, **reconcile},
    }


def relay_config(sink: SinkServer, **sources: Any) -> dict[str, Any]:
    return {
        "sources": sources,
        "sinks": {"shop": {"type": "http", "url": sink.url("/shop"), "secret": WHSEC}},
    }


async def post_ivpay(client: Any, payment_id: str, status: str, source: str = "ivpay") -> None:
    response = await client.post(
        f"/hooks/{source}", data=ivpay_body(payment_id, status), headers={"X-API-KEY": IVPAY_KEY}
    )
    assert response.status == 200, await response.text()


def shop(sink: SinkServer) -> list[dict[str, Any]]:
    return [r.json() for r in sink.requests("/shop") if r.status == 200]


async def stat(redis: Any, source: str, outcome: str) -> int:
    return int(await redis.hget(KEYS.stats, reconcile_stat(source, outcome)) or 0)


# --- end to end --------------------------------------------------------------------------------


async def test_a_payment_whose_only_webhook_was_created_is_found_paid_and_delivered_once(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    apis: FakeApis,
    redis: Any,
) -> None:
    apis.status[("ivpay", "p1")], apis.later[("ivpay", "p1")] = "CREATED", "PAID"
    raw = relay_config(sink_server, ivpay=ivpay_source(apis))
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    await post_ivpay(client, "p1", "CREATED")
    await sink_server.wait_for_requests(1, "/shop")
    accepted = time.monotonic()
    await sink_server.wait_for_requests(2, "/shop", timeout=8)
    found_after = time.monotonic() - accepted
    # after (1 s), one backoff step (1 s, +10% jitter), two ticks of 0.25 s, and the delivery
    assert 1.8 <= found_after <= 1 + 1.1 + 0.5 + 1.0, found_after
    created, paid = shop(sink_server)
    assert (created["type"], created["reconciled"]) == ("payment.created", False)
    assert (paid["type"], paid["reconciled"], paid["provider_event"]) == (
        "payment.paid",
        True,
        "PAID",
    )
    assert paid["data"]["data"]["status"] == "PAID" and paid["payment"]["sequence"] == 2
    assert paid["payment"]["reference"] == "order-p1"
    assert apis.asked("ivpay", "p1") == 2
    # The real webhook, late: IVPAY's key (payment_id:status) gives it the same event id.
    await post_ivpay(client, "p1", "PAID")
    await wait_for(lambda: redis.hget(KEYS.stats, "evt:ivpay:duplicate"))
    await asyncio.sleep(0.3)
    assert len(shop(sink_server)) == 2
    assert await stat(redis, "ivpay", "recovered") == 1
    assert await stat(redis, "ivpay", "attempted") == 2
    # PAID is IVPAY's last word: one more look (the reconciled event reopened it), then done.
    await wait_for(lambda: apis.asked("ivpay", "p1") == 3, timeout=4)
    await wait_for(lambda: redis_absent(redis, reconcile_due(KEYS, "ivpay"), "p1"))


async def redis_absent(redis: Any, key: str, member: str) -> bool:
    return await redis.zscore(key, member) is None


async def test_a_429_and_a_500_back_off_and_a_later_webhook_of_that_stage_is_a_duplicate(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    apis: FakeApis,
    redis: Any,
) -> None:
    """CoinPayments v2: signed API requests; the webhook's dedupe key (a digest of its invoice)
    differs from the reconciled event's, so the claim's per-stage mark drops the webhook."""
    apis.status[("coinpayments", "inv-1")] = "paid"
    apis.errors.extend([429, 500])
    source = {
        "provider": "coinpayments",
        "client_id": CP_CLIENT,
        "client_secret": "${COINPAYMENTS_CLIENT_SECRET}",
        "notification_url": CP_URL,
        "reconcile": {"api_url": apis.url("/cp/api/v2"), **QUICK},
    }
    raw = relay_config(sink_server, coinpayments=source)
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    await post_coinpayments(client, "InvoiceCreated", "Unpaid")
    await sink_server.wait_for_requests(2, "/shop", timeout=10)
    paid = shop(sink_server)[1]
    assert (paid["type"], paid["reconciled"], paid["data"]["status"]) == (
        "payment.paid",
        True,
        "paid",
    )
    assert paid["payment"]["amount"] == "100.00"
    assert apis.asked("coinpayments") == 3  # 429, 500, then the answer
    assert await stat(redis, "coinpayments", "api_error") == 2
    assert await stat(redis, "coinpayments", "recovered") == 1
    await post_coinpayments(client, "InvoicePaid", "Paid")
    await wait_for(lambda: redis.hget(KEYS.stats, "evt:coinpayments:duplicate"))
    await asyncio.sleep(0.3)
    assert [e["type"] for e in shop(sink_server)] == ["payment.created", "payment.paid"]
    # A new stage still goes through: completed, by webhook.
    await post_coinpayments(client, "InvoiceCompleted", "Completed")
    await sink_server.wait_for_requests(3, "/shop")
    assert shop(sink_server)[2]["reconciled"] is False


async def post_coinpayments(client: Any, kind: str, state: str) -> None:
    now = datetime.now(UTC)
    body = orjson.dumps(
        {
            "id": hashlib.sha256(kind.encode()).hexdigest()[:32],
            "type": kind,
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00"),
            "invoice": {"id": "inv-1", "invoiceId": "0067", "state": state},
        }
    )
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S")
    headers = {
        "X-CoinPayments-Client": CP_CLIENT,
        "X-CoinPayments-Timestamp": stamp,
        "X-CoinPayments-Signature": coinpayments.signature(
            CP_SECRET, CP_URL, CP_CLIENT, stamp, body
        ),
        "Content-Type": "application/json",
    }
    response = await client.post("/hooks/coinpayments", data=body, headers=headers)
    assert response.status == 200, await response.text()


async def test_wrong_credentials_are_a_clear_error_in_status_and_the_log_never_a_crash_loop(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    apis: FakeApis,
    redis: Any,
) -> None:
    from rich.console import Console

    from relay.status import render

    apis.status[("ivpay", "p2")] = "PAID"
    source = ivpay_source(apis, api_key="not-the-key", backoff="2s", max_backoff="8s")
    raw = relay_config(sink_server, ivpay=source)
    client = await ingress(raw)
    loaded = config_factory(raw)
    with structlog.testing.capture_logs() as logs:
        await run_worker(loaded)
        await post_ivpay(client, "p2", "CREATED")
        await wait_for(lambda: apis.asked("ivpay") >= 1, timeout=5)
        await asyncio.sleep(3)
    # The source waits 2 s, then 4 s (backoff doubling): two calls in the first 3 s.
    assert apis.asked("ivpay") == 2
    refused = [e for e in logs if e["event"].startswith("reconciliation paused")]
    assert refused and refused[0]["log_level"] == "error" and "401" in refused[0]["error"]
    assert "sources.ivpay" in refused[0]["fix"]
    calls = apis.asked("ivpay")
    snapshot = await take_snapshot(redis, loaded.config)
    (status,) = snapshot.reconcile
    assert status.source == "ivpay" and status.paused and status.tracked == 1
    assert "credentials refused (HTTP 401)" in (status.last_error or "")
    assert snapshot.to_dict()["reconcile"]["ivpay"]["api_error"] == calls
    console = Console(record=True, width=240)
    console.print(render(snapshot))
    report = " ".join(console.export_text().replace("│", " ").split())  # cells wrap
    assert "Reconciliation" in report and "credentials refused (HTTP 401)" in report
    metrics = await (await client.get("/metrics")).text()
    assert f'relay_reconcile_total{{outcome="api_error",source="ivpay"}} {calls}.0' in metrics
    assert 'relay_reconcile_paused{source="ivpay"} 1.0' in metrics
    page = await (await client.get("/status")).text()
    assert 'data-reconcile="ivpay"' in page and "credentials refused (HTTP 401)" in page
    assert len(shop(sink_server)) == 1  # only the webhook's created


async def test_give_up_ends_the_checks(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    apis: FakeApis,
    redis: Any,
) -> None:
    apis.status[("ivpay", "p3")] = "CREATED"
    source = ivpay_source(apis, after="500ms", backoff="500ms", give_up="1600ms")
    raw = relay_config(sink_server, ivpay=source)
    client = await ingress(raw)
    await run_worker(config_factory(raw))
    await post_ivpay(client, "p3", "CREATED")
    await wait_for(lambda: stat(redis, "ivpay", "gave_up"), timeout=6)
    asked = apis.asked("ivpay", "p3")
    assert asked == 2  # at 0.5 s and 1 s; at 2 s give_up (1.6 s) had passed
    await asyncio.sleep(1.5)
    assert apis.asked("ivpay", "p3") == asked
    assert await redis.zcard(reconcile_due(KEYS, "ivpay")) == 0


async def test_nothing_calls_an_api_for_a_source_without_reconcile(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    apis: FakeApis,
    redis: Any,
) -> None:
    apis.status[("ivpay", "a1")] = apis.status[("ivpay", "b1")] = "CREATED"
    plain = {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}
    raw = relay_config(sink_server, ivpay=ivpay_source(apis), plain=plain)
    client = await ingress(raw)
    worker = await run_worker(config_factory(raw))
    await post_ivpay(client, "a1", "CREATED")
    await post_ivpay(client, "b1", "CREATED", source="plain")
    await wait_for(lambda: apis.asked("ivpay", "a1") >= 2, timeout=5)
    assert apis.asked("ivpay", "b1") == 0
    assert not await redis.exists(reconcile_due(KEYS, "plain"))
    assert set(worker.ctx["reconciler"].settings) == {"ivpay"}
    # And a relay where no source reconciles runs no scheduler at all.
    lonely = await run_worker(config_factory(relay_config(sink_server, plain=plain)))
    await wait_for(lambda: "pipeline" in lonely.ctx)  # started
    assert "reconciler" not in lonely.ctx


async def test_two_workers_only_one_reconciles_at_a_time_and_the_lease_passes_on(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    apis: FakeApis,
    redis: Any,
) -> None:
    apis.status[("ivpay", "p4")] = "CREATED"
    raw = relay_config(sink_server, ivpay=ivpay_source(apis))
    loaded = config_factory(raw)
    first, second = await run_worker(loaded), await run_worker(loaded)
    await wait_for(lambda: "reconciler" in first.ctx and "reconciler" in second.ctx)
    a, b = first.ctx["reconciler"], second.ctx["reconciler"]
    await wait_for(lambda: a.passes + b.passes >= 6)
    holder, idle = (a, b) if a.passes else (b, a)
    assert idle.passes == 0
    assert await redis.get(reconcile_lease(KEYS)) == holder.owner.encode()
    await run_worker.stop(first if holder is a else second)  # releases the lease
    before = idle.passes
    await wait_for(lambda: idle.passes > before + 2, timeout=3)
    # A holder that died without releasing: its lease runs out, then the other takes it.
    await redis.set(reconcile_lease(KEYS), "dead-worker", px=1200)
    await asyncio.sleep(0.3)
    frozen = idle.passes
    await asyncio.sleep(0.5)
    assert idle.passes == frozen
    await wait_for(lambda: idle.passes > frozen, timeout=3)
    assert await redis.get(reconcile_lease(KEYS)) == idle.owner.encode()


# --- the providers' clients, against their documented APIs ---------------------------------------


def source_config(provider: str, apis: FakeApis, wrong: bool = False) -> Any:
    from tests.conftest import make_config

    bad = "wrong-" if wrong else ""
    sources: dict[str, Any] = {
        "ivpay": {
            "provider": "ivpay",
            "api_key": IVPAY_KEY,
            "reconcile": {"api_url": apis.url("/ivpay"), "api_key": f"{bad}{IVPAY_KEY}"},
        },
        "coinpayments": {
            "provider": "coinpayments",
            "client_id": CP_CLIENT,
            "client_secret": f"{bad}{CP_SECRET}",
            "notification_url": CP_URL,
            "reconcile": {"api_url": apis.url("/cp/api/v2")},
        },
        "calypso": {
            "provider": "calypso",
            "secret_key": "webhook-secret",
            "reconcile": {
                "api_url": apis.url("/calypso"),
                "account": CALYPSO_ACCOUNT,
                "api_key": CALYPSO_KEY,
                "api_secret": f"{bad}{CALYPSO_SECRET}",
            },
        },
        "coinpayments_ipn": {
            "provider": "coinpayments_ipn",
            "ipn_secret": "ipn-secret",
            "merchant_id": "m1",
            "reconcile": {
                "api_url": apis.url("/ipn/api.php"),
                "public_key": IPN_PUBLIC,
                "private_key": f"{bad}{IPN_PRIVATE}",
            },
        },
    }
    return make_config({"sources": {provider: sources[provider]}}).config.sources[provider]


CLIENTS: dict[str, tuple[Any, str, str, str, str | None]] = {
    "ivpay": (ivpay.fetch_status, "x1", "PAID", "payment.paid", "x1:PAID"),
    "coinpayments": (coinpayments.fetch_status, "inv-9", "completed", "payment.completed", None),
    "calypso": (calypso.fetch_status, "42", "MEM_POOL_FOUND", "payment.pending", None),
    "coinpayments_ipn": (
        coinpayments_ipn.fetch_status,
        "CPX1",
        "100",
        "payment.completed",
        "txn:CPX1:100:3:got:0.00025000",
    ),
}


@pytest.mark.parametrize("provider", list(CLIENTS))
async def test_each_client_speaks_its_documented_api(provider: str, apis: FakeApis) -> None:
    fetch, payment_id, status, kind, key = CLIENTS[provider]
    apis.status[(provider, payment_id)] = status
    async with aiohttp.ClientSession() as session:
        answer = await fetch(session, source_config(provider, apis), payment_id)
        assert (answer.type, answer.provider_event) == (kind, status)
        assert answer.payment["id"] == payment_id
        if key is not None:  # the webhook's own dedupe key: the same event id
            assert answer.dedupe_key == key
        if provider == "calypso":
            assert str(answer.payment["amount"]) == "0.123456789012345678"
        with pytest.raises(reconcile_api.ApiError) as refused:
            await fetch(session, source_config(provider, apis, wrong=True), payment_id)
        assert refused.value.kind == reconcile_api.AUTH
        apis.errors.extend([429, 503])
        for kind_wanted in (reconcile_api.RATE_LIMITED, reconcile_api.UNAVAILABLE):
            with pytest.raises(reconcile_api.ApiError) as failed:
                await fetch(session, source_config(provider, apis), payment_id)
            assert failed.value.kind == kind_wanted
        with pytest.raises(reconcile_api.ApiError) as unknown:
            await fetch(session, source_config(provider, apis), "no-such-payment")
        assert unknown.value.kind == reconcile_api.BAD_ANSWER


def test_reconcile_config_is_validated_with_paths() -> None:
    from relay.config.model import ConfigError
    from tests.conftest import make_config

    def errors(source: dict[str, Any]) -> list[tuple[str, str]]:
        with pytest.raises(ConfigError) as failed:
            make_config({"sources": {"s": source}})
        return failed.value.errors

    ivpay_base = {"provider": "ivpay", "api_key": "k" * 8}
    assert errors({**ivpay_base, "reconcile": {}}) == [
        ("sources.s.reconcile.api_url", "required key is missing")
    ]
    wrong = errors(
        {**ivpay_base, "reconcile": {"api_url": "ftp://x", "after": "2h", "give_up": "1h"}}
    )
    assert [w for w, _ in wrong] == ["sources.s.reconcile.api_url"]
    (order,) = errors(
        {**ivpay_base, "reconcile": {"api_url": "https://x", "after": "2h", "give_up": "1h"}}
    )
    assert order == ("sources.s.reconcile", "give_up must be longer than after")
    (unknown,) = errors({"provider": "coinable", "url_token": "t" * 20, "reconcile": {}})
    assert unknown == ("sources.s.reconcile", "unknown key")


async def test_relay_reconcile_dry_run_asks_and_shows_but_emits_nothing(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    apis: FakeApis,
    redis: Any,
    monkeypatch: Any,
) -> None:
    from relay.cli import reconcile as command

    printed: list[Any] = []  # the command's stdout (the worker logs to stdout too in tests)
    monkeypatch.setattr(command, "print_json", printed.append)
    monkeypatch.setattr(command, "print_lines", lambda lines: printed.append("\n".join(lines)))
    reconcile_now = command.reconcile_now

    apis.status[("ivpay", "p5")] = "PAID"
    raw = relay_config(sink_server, ivpay=ivpay_source(apis, after="1h"))
    client = await ingress(raw)
    loaded = config_factory(raw)
    worker = await run_worker(loaded)
    await post_ivpay(client, "p5", "CREATED")
    await sink_server.wait_for_requests(1, "/shop")
    assert await reconcile_now(redis, loaded, None, None, True, True) == 0
    checks = printed.pop()["checks"]
    assert [(c["payment_id"], c["outcome"], c["event_type"]) for c in checks] == [
        ("p5", "would_emit", "payment.paid")
    ]
    assert checks[0]["event"]["reconciled"] is True
    await asyncio.sleep(0.5)
    assert len(shop(sink_server)) == 1 and await stat(redis, "ivpay", "attempted") == 0
    # Now for real, one payment: queued for the workers, delivered once.
    assert await reconcile_now(redis, loaded, "ivpay", "p5", False, False) == 0
    assert "1 queued for the workers" in printed.pop()
    await sink_server.wait_for_requests(2, "/shop")
    assert shop(sink_server)[1]["reconciled"] is True
    assert await reconcile_now(redis, loaded, None, "nope", False, False) == 1
    assert "not tracked" in printed.pop()
    assert worker.ctx["reconciler"].passes > 0
