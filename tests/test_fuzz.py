"""Fuzzing what a stranger can send: the ingress over real HTTP, and signed garbage through a
worker.

tests/test_provider_vectors.py already fuzzes each provider's `verify` and `normalize` in
isolation; this module drives the same surface end to end:

1. hypothesis-made requests (methods, paths, source names, URL tokens, headers, bodies of
   every shape and size, chunked or not, sometimes correctly signed) against a real ingress
   over HTTP, and raw bytes on a socket for what an HTTP client library refuses to send
   (dot segments, control bytes, non-UTF-8 headers): never a 500, every answer in SPEC 3's
   set with its JSON body, nothing stored for anything rejected;
2. correctly signed random payloads of every provider kind through the ingress and a real
   worker with log, http, Discord and Slack sinks on the fake server: every stored request
   ends as an event (delivered or duplicate), a no-event, or a dead letter; the counters add
   up, nothing stays queued, no job or sink raises, and no chat message breaks a platform rule.

hypothesis and pytest-asyncio's session loop do not mix, so cases are drawn by a @given
function run on the spot (`draw`), then awaited one by one; a failure prints the case.
Set FUZZ_SEED to replay a run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import time
from collections import Counter
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import pytest
import structlog
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from relay.dlq import DeadLetterQueue
from relay.events import EVENT_TYPES, dumps, loads
from relay.keys import Keys
from relay.providers import (
    PROVIDERS,
    InboundRequest,
    Rejected,
    cryptomus,
    jsonforms,
    nowpayments,
)
from relay.providers.base import parse_json_object
from relay.providers.plisio import json_messages
from relay.queue import inbound_id
from tests import test_providers_binance_pay as binance_test
from tests import test_providers_btcpay as btcpay_test
from tests import test_providers_coinbase_commerce as coinbase_test
from tests import test_providers_coingate as coingate_test
from tests import test_providers_cryptomus as cryptomus_test
from tests import test_providers_oxapay as oxapay_test
from tests import test_providers_plisio as plisio_test
from tests.conftest import TEST_SECRETS, wait_for, worker_idle
from tests.sink_servers import SinkServer
from tests.test_provider_vectors import KEYS, MERCHANT, SIGNERS, SOURCES, json_values

# --- the relay under test ---------------------------------------------------------------------

IVPAY_KEY = TEST_SECRETS["IVPAY_API_KEY"]
COINABLE_TOKEN = TEST_SECRETS["COINABLE_URL_TOKEN"]
ALL_SOURCES: dict[str, dict[str, Any]] = {
    **SOURCES,
    "ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"},
    # Only reachable from TEST-NET-3: every request to it is 403 (unless it is too large).
    "fenced": {
        "provider": "ivpay",
        "api_key": "${IVPAY_API_KEY}",
        "allowed_ips": ["203.0.113.0/24"],
    },
    "plisio": plisio_test.CONFIG["sources"]["plisio"],
    "coingate": coingate_test.SOURCES["coingate"],
    "oxapay": oxapay_test.SOURCE,
    "binance_pay": binance_test.SOURCE,
    "btcpay": btcpay_test.SOURCE,
    "coinbase_commerce": coinbase_test.SOURCE,
    "nowpayments": {"provider": "nowpayments", "ipn_secret": "nowpayments-fuzz-secret"},
    "cryptomus": cryptomus_test.CRYPTOMUS,
    "heleket": cryptomus_test.HELEKET,
}


def _sign_oxapay(body: bytes) -> dict[str, str]:
    try:
        payout = str(orjson.loads(body).get("type")).casefold() == "payout"
    except (orjson.JSONDecodeError, AttributeError):
        payout = False
    return oxapay_test.sign(body, oxapay_test.PAYOUT_KEY if payout else oxapay_test.MERCHANT_KEY)


def _with_member(body: bytes, name: str, value: str) -> bytes:
    """A JSON object body with one more string member (Plisio's and CoinGate's auth is inside)."""
    member = orjson.dumps({name: value})[1:-1]
    inner = body.rstrip()[:-1].rstrip()
    return inner + (b"," if not inner.endswith(b"{") else b"") + member + b"}"


def _plisio_signed(body: bytes) -> bytes:
    message = json_messages(parse_json_object(body))[0]
    digest = hmac.new(plisio_test.SECRET.encode(), message, hashlib.sha1).hexdigest()
    return _with_member(body, "verify_hash", digest)


def _nowpayments_sig(body: bytes) -> dict[str, str]:
    """NOWPayments signs the parsed payload (the Node SDK's form); nothing for non-JSON."""
    try:
        value = jsonforms.parse_exact(body)
    except (ValueError, RecursionError):
        return {}
    return {"x-nowpayments-sig": nowpayments.signature("nowpayments-fuzz-secret", value)}


def _cryptomus_signed(key: str) -> Any:
    """`sign` over the body's own members (the raw form Heleket's Go SDK checks), appended."""

    def sign(body: bytes) -> bytes:
        members = jsonforms.members_without(body.decode(), "sign")
        return body if members is None else _with_member(body, "sign", cryptomus.sign(members, key))

    return sign


# Providers whose credential is inside the body: how a signed random JSON payload gets it.
BODY_AUTH = {
    "cryptomus": _cryptomus_signed(cryptomus_test.KEY),
    "heleket": _cryptomus_signed(cryptomus_test.HELEKET_KEY),
    "plisio": _plisio_signed,
    "coingate": lambda body: _with_member(body, "token", coingate_test.DOCS_TOKEN),
}
ALL_SIGNERS = {
    **SIGNERS,
    "ivpay": lambda body: {"X-API-KEY": IVPAY_KEY},
    "fenced": lambda body: {"X-API-KEY": IVPAY_KEY},
    "plisio": lambda body: {},
    "coingate": lambda body: {},
    "oxapay": _sign_oxapay,
    "binance_pay": binance_test.headers,
    "btcpay": btcpay_test.sig,
    "coinbase_commerce": coinbase_test.sig,
    "nowpayments": _nowpayments_sig,
    "cryptomus": lambda body: {},
    "heleket": lambda body: {},
}
KINDS = sorted(ALL_SOURCES)
MAX_BODY = 262_144  # server.max_body_bytes default

STATUSES = {200, 400, 401, 403, 404, 405, 413, 503}
ERRORS = {
    400: {"malformed"},
    401: {"bad_signature", "bad_token", "stale_timestamp"},
    403: {"ip_not_allowed"},
    404: {"unknown_source"},
    413: {"too_large"},
    503: {"unavailable"},
}
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"schedule": ["50ms", "50ms"], "jitter": 0.1}


def test_every_provider_kind_has_a_source() -> None:
    assert {cfg["provider"] for cfg in ALL_SOURCES.values()} == set(PROVIDERS)
    assert set(ALL_SIGNERS) == set(ALL_SOURCES)


# --- drawing cases with hypothesis --------------------------------------------------------------


def draw(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """`n` examples of `strategy`, generated by hypothesis (not `.example()`)."""
    cases: list[Any] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: Any) -> None:
        cases.append(case)

    if os.environ.get("FUZZ_SEED"):
        collect = seed(int(os.environ["FUZZ_SEED"]))(collect)
    collect()
    return cases


def test_draw_gives_varied_cases() -> None:
    cases = draw(st.binary(max_size=64), 50)
    assert len(cases) >= 40 and len(set(cases)) >= 30


# --- strategies: what a stranger sends ----------------------------------------------------------

SIGNATURE_HEADERS = [
    "X-API-KEY",
    "X-CoinPayments-Signature",
    "X-CoinPayments-Client",
    "X-CoinPayments-Timestamp",
    "HMAC",
    "Sign",
    "Key",
    "X-Cryptoix-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "X-Sig",
    "BTCPay-Sig",
    "X-CC-Webhook-Signature",
    "x-nowpayments-sig",
    "Content-Type",
    "X-Forwarded-For",
    "Authorization",
    "X-Random",
]  # Content-Encoding: see test_content_encoding_* below
# What aiohttp's client will put in a header value (no control characters but tab, no lone
# surrogates); the raw-socket tests below send the rest.
header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\t"), max_size=80)
header_values = st.one_of(
    header_text,
    st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=130),
    st.builds(lambda s: "v1," + s, st.text(alphabet="ABCDEFabcdef0123456789+/=", max_size=60)),
    st.builds(lambda s: "sha256=" + s, st.text(alphabet="0123456789abcdef", max_size=70)),
    st.sampled_from(
        [
            IVPAY_KEY,
            IVPAY_KEY + " ",
            IVPAY_KEY.upper(),
            "pk-1",
            "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            "2025-01-02T03:04:05",
            str(int(time.time())),
            "-1",
            "99999999999999999999",
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain; charset=utf-16",
            "chunked",
            "10.0.0.1, 203.0.113.7",
            "203.0.113.9",
            "::ffff:203.0.113.9",
            "not-an-ip",
            "v1a,abc v1,",
            "ÿþ unicode ✓ 💥",
            "identity",
            "x" * 4000,
        ]
    ),
)
source_names = st.one_of(
    st.sampled_from(KINDS),
    st.sampled_from(
        [
            "",
            "IVPAY",
            "ivpay ",
            " ivpay",
            "ivpay\t",
            "_unknown",
            "..",
            ".",
            "%2e%2e",
            "hooks",
            "ivpay%00",
            "ivpay/..",
            "ïvpay",
            "x" * 300,
            "healthz",
            "../readyz",
        ]
    ),
    st.text(max_size=30),
)
tokens = st.one_of(
    st.none(),
    st.just(COINABLE_TOKEN),
    st.just(COINABLE_TOKEN + "x"),
    st.just(COINABLE_TOKEN[:-1]),
    st.just(TEST_SECRETS["COINABLE_URL_TOKEN_2"]),
    st.text(max_size=40),
)
json_text = st.builds(dumps, json_values)
form_text = st.builds(
    lambda d: urlencode(d).encode(),
    st.dictionaries(
        st.sampled_from(["ipn_mode", "merchant", "status", "txn_id", "amount1", "x"]),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
        max_size=6,
    ),
)
bodies = st.one_of(
    st.binary(max_size=600),
    json_text,
    st.builds(dumps, st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)),
    form_text,
    st.just(b""),
    st.sampled_from(
        [
            b"{}",
            b"[]",
            b"null",
            b'{"a":NaN}',
            b"\xef\xbb\xbf{}",
            b'{"a": 1e999}',
            b"{" * 5000,
            b'{"a":' * 3000,
            b"\xff\xfe{\x00}\x00",
            b"%%%&&&===",
            b"ipn_mode=hmac&merchant=" + MERCHANT.encode(),
        ]
    ),
    # around the size limit
    st.builds(
        lambda n, c: c * n,
        st.sampled_from([MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, 3 * MAX_BODY]),
        st.sampled_from([b"a", b"{"]),
    ),
)
methods = st.one_of(
    st.just("POST"),
    st.just("POST"),
    st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PURGE"]),
)


@st.composite
def http_cases(draw_: Any) -> dict[str, Any]:
    source = draw_(source_names)
    body = draw_(bodies)
    headers = draw_(st.dictionaries(st.sampled_from(SIGNATURE_HEADERS), header_values, max_size=6))
    signed = source in ALL_SIGNERS and draw_(st.booleans())
    if signed:
        headers.update(ALL_SIGNERS[source](body))
    return {
        "proxied": draw_(st.booleans()),
        "method": draw_(methods),
        "source": source,
        "token": draw_(tokens),
        "headers": headers,
        "body": body,
        "signed": signed,
        "chunked": draw_(st.booleans()),
    }


# --- 1a. the ingress over real HTTP -------------------------------------------------------------


async def _chunks(body: bytes) -> Any:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]
        await asyncio.sleep(0)


def check_answer(case: Any, status: int, raw: bytes, hooks_route: bool) -> None:
    """SPEC 3: the status is one of the table's, and a /hooks answer carries its JSON body."""
    assert status in STATUSES, f"status {status}: {raw[:300]!r}"
    if not hooks_route:
        return
    if status == 200 and raw == b"ok":  # OxaPay's own answer (relay.providers.oxapay)
        return
    answer = orjson.loads(raw)
    if status == 200:
        assert answer.get("ok") is True and re.fullmatch(r"in_[a-z2-7]{26}", answer["id"])
    else:
        assert set(answer) == {"error"} and answer["error"] in ERRORS[status], answer


async def test_ingress_answers_strangers_by_the_table(ingress: Any, redis: Any) -> None:
    """Random methods, paths, tokens, headers and bodies: never a 500, always the table."""
    config = {"sources": ALL_SOURCES}
    direct = await ingress(config)
    proxied = await ingress({**config, "server": {"trusted_proxy_hops": 1}})
    cases = draw(http_cases(), 600)
    # A few fixed cases, so every branch of the table is reached whatever was drawn.
    fixed = {"proxied": False, "method": "POST", "token": None, "signed": True, "chunked": False}
    ok = b'{"payment_id": "p-fixed", "status": "PAID"}'
    cases += [
        {**fixed, "source": "ivpay", "body": ok, "headers": ALL_SIGNERS["ivpay"](ok)},
        {**fixed, "source": "fenced", "body": ok, "headers": ALL_SIGNERS["ivpay"](ok)},
        {**fixed, "source": "ivpay", "body": b"{" * (MAX_BODY + 1), "headers": {}, "chunked": True},
    ]
    seen: Counter[int] = Counter()
    for case in cases:
        client = proxied if case["proxied"] else direct
        path = "/hooks/" + quote(case["source"], safe="")
        if case["token"] is not None:
            path += "/" + quote(case["token"], safe="")
        data = _chunks(case["body"]) if case["chunked"] else case["body"]
        before = await redis.zcard("relay:queue")
        response = await client.request(case["method"], path, data=data, headers=case["headers"])
        raw = await response.read()
        status = response.status
        seen[status] += 1
        # A path of the two /hooks routes as sent (the client drops dot segments); anything
        # else is aiohttp's plain 404. Braces reach the handler too (routes match [^/]+).
        hooks_route = case["method"] == "POST" and bool(
            re.fullmatch(r"/hooks/[^/]+(/[^/]+)?", response.url.raw_path)
        )
        try:
            check_answer(case, status, raw, hooks_route)
            after = await redis.zcard("relay:queue")
            if status == 200:
                duplicate = raw != b"ok" and orjson.loads(raw).get("duplicate")  # `ok`: OxaPay
                assert after == before + (0 if duplicate else 1) or (
                    raw == b"ok" and after >= before
                )
            else:
                assert after == before, "a rejected request was stored"
            if case["method"] == "POST":
                known = case["source"] in ALL_SOURCES
                if not known or not hooks_route:
                    assert status == 404
                elif len(case["body"]) > MAX_BODY:
                    assert status == 413
                elif case["source"] == "fenced" and not case["proxied"]:
                    assert status == 403
                elif not case["signed"] and case["source"] not in ("coinable", "ivpay"):
                    # (the drawn header values include IVPAY's key; a proxied "fenced" is 403)
                    assert status in ((401, 403) if case["source"] == "fenced" else (401,))
        except AssertionError:
            print("failing case:", {**case, "body": case["body"][:200]}, "->", status, raw[:300])
            raise
    print("statuses:", dict(seen))
    assert {200, 400, 401, 403, 404, 405, 413} <= set(seen)  # the fuzzing reached every branch


# --- 1b. raw bytes on the socket ----------------------------------------------------------------

raw_paths = st.one_of(
    st.builds(
        lambda s: b"/hooks/" + s,
        st.binary(max_size=60).map(
            lambda b: b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")
        ),
    ),
    st.sampled_from(
        [
            b"/hooks/../healthz",
            b"/hooks/./ivpay",
            b"/hooks/ivpay/../ivpay",
            b"/hooks//ivpay",
            b"/hooks/ivpay/",
            b"/hooks/ivpay//",
            b"/hooks/%2e%2e/%2e%2e/readyz",
            b"/hooks/ivpay%2f..",
            b"/hooks/ivpay?x=1",
            b"/hooks/ivpay#frag",
            b"/hooks/\xc3\xafvpay",
            b"/hooks/\xff\xfe",
            b"/hooks/ivpay%00",
            b"//hooks/ivpay",
            b"/HOOKS/ivpay",
            b"/hooks",
            b"/hooks/",
            b"/hooks/coinable/" + COINABLE_TOKEN.encode() + b"/extra",
            b"*",
            b"http://x/hooks/ivpay",
            b"/hooks/" + b"a" * 9000,
            b"/hooks/ivpay\t",
            b"/hooks/\x7f",
        ]
    ),
)
raw_header_lines = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(
                [
                    b"X-API-KEY",
                    b"webhook-id",
                    b"Sign",
                    b"HMAC",
                    b"Content-Type",
                    b"X-Forwarded-For",
                    b"Transfer-Encoding",
                    b"X-Odd",
                ]
            ),
            st.binary(min_size=1, max_size=20),
        ),
        st.one_of(
            st.binary(max_size=60),
            st.just(IVPAY_KEY.encode() + b"\xff"),
            st.just(b"chunked, gzip"),
            st.just(b"\x00" * 8),
            st.just(b"x" * 9000),
        ),
    )
    .map(
        lambda nv: (
            nv[0].replace(b"\r", b"").replace(b"\n", b""),
            nv[1].replace(b"\r", b"").replace(b"\n", b""),
        )
    )
    # Expect and Content-Encoding: see the xfail tests below.
    .filter(lambda nv: nv[0].strip().lower() not in (b"expect", b"content-encoding")),
    max_size=5,
)


@st.composite
def raw_cases(draw_: Any) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    method = draw_(
        st.sampled_from([b"POST", b"POST", b"GET", b"PUT", b"post", b"P\xd3ST", b"HEAD"])
    )
    return method, draw_(raw_paths), draw_(raw_header_lines), draw_(st.binary(max_size=300))


async def raw_request(client: Any, request: bytes) -> tuple[int | None, bytes]:
    """Send bytes, read until the server closes; (status or None, everything read)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    return (int(match.group(1)) if match else None), data


def raw_http(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: relay.test", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_raw_bytes_never_make_a_500(ingress: Any, redis: Any) -> None:
    """Request lines and headers no HTTP library would send: an answer of the set, or none."""
    client = await ingress({"sources": ALL_SOURCES})
    seen: Counter[int | None] = Counter()
    for method, path, headers, body in draw(raw_cases(), 300):
        status, data = await raw_request(client, raw_http(method, path, headers, body))
        seen[status] += 1
        if status is not None:
            assert status in STATUSES, (method, path, headers, data[:300])
        assert status != 200 and await redis.zcard("relay:queue") == 0
    print("statuses:", dict(seen))


@st.composite
def odd_header_ids(draw_: Any) -> bytes:
    return draw_(
        st.one_of(
            st.binary(min_size=1, max_size=40).map(
                lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip() or b"x"
            ),
            st.just(b"msg_\xff\xfe"),
            st.just("msg_é✓".encode()),
            st.just(b"msg_\xed\xa0\x80"),
        )
    )


def _sign_standard(msg_id: bytes, body: bytes) -> bytes:
    key = base64.b64decode(TEST_SECRETS["PARTNER_WHSEC"].removeprefix("whsec_"))
    stamp = str(int(time.time())).encode()
    digest = hmac.new(key, msg_id + b"." + stamp + b"." + body, hashlib.sha256).digest()
    return b"webhook-timestamp: " + stamp + b"\r\nwebhook-signature: v1," + base64.b64encode(digest)


async def test_signed_request_with_non_utf8_header_bytes(ingress: Any, redis: Any) -> None:
    """A correctly signed Standard Webhooks request whose webhook-id holds any bytes: the table
    still holds (stored, or rejected without storing); never a 500."""
    client = await ingress({"sources": ALL_SOURCES})
    failures = []
    for msg_id in draw(odd_header_ids(), 40):
        body = dumps({"type": "ev.paid", "data": {"id": "p1"}, "n": msg_id.hex()})
        request = (
            b"POST /hooks/standard_webhooks HTTP/1.1\r\nHost: relay.test\r\n"
            b"Connection: close\r\nContent-Type: application/json\r\nwebhook-id: "
            + msg_id
            + b"\r\n"
            + _sign_standard(msg_id, body)
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        before = await redis.zcard("relay:queue")
        status, data = await raw_request(client, request)
        if status not in STATUSES or (status != 200 and await redis.zcard("relay:queue") != before):
            failures.append((msg_id, status, data[-200:]))
    assert not failures, failures


# --- deviations found by fuzzing, fixed: regression tests


@pytest.mark.parametrize(
    ("encoding", "source"),
    [("gzip", "ivpay"), ("deflate", "ivpay"), ("br", "ivpay"), ("zstd", "nosuch")],
)
async def test_content_encoding_is_answered_by_the_table(
    encoding: str, source: str, ingress: Any, redis: Any
) -> None:
    client = await ingress({"sources": ALL_SOURCES})
    body = b"definitely not compressed"
    headers = {"Content-Encoding": encoding, **ALL_SIGNERS["ivpay"](body)}
    response = await client.post(f"/hooks/{source}", data=body, headers=headers)
    check_answer(None, response.status, await response.read(), True)
    assert await redis.zcard("relay:queue") == 0


async def test_signature_covers_the_raw_bytes_even_when_compressed(
    ingress: Any, redis: Any
) -> None:
    import gzip

    client = await ingress({"sources": ALL_SOURCES})
    plain = b'{"uuid": "tx_1", "status": "paid"}'
    response = await client.post(
        "/hooks/cryptoix",
        data=gzip.compress(plain),
        headers={"Content-Encoding": "gzip", **ALL_SIGNERS["cryptoix"](plain)},
    )
    assert response.status == 401  # the signature is over other bytes than were sent


@pytest.mark.parametrize("path", ["/hooks/a%7Db", "/hooks/coinable/%7Btoken%7D"])
async def test_braces_in_source_or_token_get_the_table(path: str, ingress: Any) -> None:
    client = await ingress({"sources": ALL_SOURCES})
    response = await client.post(path, data=b"{}")
    assert response.status in (401, 404)
    assert (await response.json())["error"] in ("unknown_source", "bad_token")


@pytest.mark.parametrize("value", [b"\x90$", b"foo"])
async def test_odd_expect_header(value: bytes, ingress: Any) -> None:
    client = await ingress({"sources": ALL_SOURCES})
    status, data = await raw_request(
        client, raw_http(b"POST", b"/hooks/ivpay", [(b"Expect", value)], b"{}")
    )
    assert status in STATUSES, data


# --- 2. signed random payloads through ingress and worker ---------------------------------------

SURROGATE = "@@lone-surrogate@@"
hostile_scalars = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "@everyone",
            "@here <!channel> <@123>",
            "**bold** `code` [link](http://x)",
            "<script>&amp;</script>",
            "a\nb\r\nc\td",
            "\u202eevil",
            "💸" * 30,
            "x" * 5000,
            "javascript:alert(1)",
            "https://etherscan.io/tx/0xabc",
            "NaN",
            "Infinity",
            "-0",
            "1e400",
            "2024-07-01T11:04:06.8033575+00:00",
            "9999-12-31T23:59:59Z",
            "0000-01-01",
            "PAID",
            "paid",
            "INVOICE_PAID",
            "InvoiceCompleted",
            "checkout.session.completed",
            "ev.paid",
            "payment_received",
            "99999999999999999999999",
            "-1",
            "100",
            SURROGATE,
        ]
    ),
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.none(),
    # Decimals go out as written: exponents, and integers beyond 64 bits.
    st.sampled_from(
        [
            Decimal("1E+400"),
            Decimal("-1E-300"),
            Decimal("0.1000000000000000000001"),
            Decimal("1E+4000"),
            Decimal(10**30),
            Decimal(-(10**30)),
            Decimal(2**64),
            10**17,
            1.5e308,
            5e-324,
        ]
    ),
    st.decimals(allow_nan=False, allow_infinity=False),
)
payload_values = st.recursive(
    hostile_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=15,
)
# Keys each provider reads, so random values land where normalize looks.
PROVIDER_KEYS = sorted(
    set(KEYS)
    | {
        "payment_id",
        "status",
        "foreign_id",
        "network",
        "tx_url",
        "processed_at",
        "invoice",
        "transactionId",
        "spendRequestId",
        "txHash",
        "eventType",
        "createdDate",
        "fiatCurrency",
        "transactionHash",
        "description",
        "message",
        "event",
        "transaction_id",
        "order_id",
        "payment_hash",
        "amount_fiat",
        "currency",
        "checkout_id",
        "signature",
        "created_at",
        "ref",
        # btcpay, coinbase_commerce, nowpayments, cryptomus/heleket
        "invoiceId",
        "deliveryId",
        "originalDeliveryId",
        "webhookId",
        "afterExpiration",
        "payment",
        "paymentMethodId",
        "payment_status",
        "actually_paid",
        "pay_amount",
        "payin_hash",
        "uuid",
        "payment_amount",
        "txid",
        "sign",
    }
)


def json_payload(payload: dict[str, Any]) -> bytes:
    def default(obj: Any) -> Any:
        if isinstance(obj, float):
            return orjson.Fragment(repr(obj).encode())
        return orjson.Fragment(str(obj).encode()) if isinstance(obj, Decimal) else obj

    # Half a surrogate pair, escaped: valid JSON grammar that no UTF-8 text can hold.
    return orjson.dumps(payload, default=default).replace(
        f'"{SURROGATE}"'.encode(), b'"\\ud800x\\udfff"'
    )


@st.composite
def signed_payloads(draw_: Any) -> tuple[str, bytes]:
    kind = draw_(st.sampled_from([k for k in KINDS if k != "fenced"]))
    if kind == "coinpayments_ipn":
        form = draw_(
            st.dictionaries(
                st.sampled_from(
                    [
                        "status",
                        "txn_id",
                        "amount1",
                        "amount2",
                        "currency1",
                        "currency2",
                        "received_confirms",
                        "confirms",
                        "ipn_id",
                        "ipn_type",
                        "invoice",
                        "item_name",
                        "status_text",
                        "deposit_id",
                        "amount",
                    ]
                )
                | st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8),
                st.one_of(
                    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
                    st.sampled_from(["100", "-2", "2", "1" * 5000, "deposit", "x" * 3000]),
                ),
                max_size=8,
            )
        )
        form.update(ipn_mode="hmac", merchant=MERCHANT)
        body = urlencode(form).encode()
        if draw_(st.booleans()):  # percent-encoded bytes that are not UTF-8
            body += b"&note=%FF%FE%ED%A0%80"
        return kind, body
    payload = draw_(st.dictionaries(st.sampled_from(PROVIDER_KEYS), payload_values, max_size=10))
    body = json_payload(payload)
    return kind, BODY_AUTH.get(kind, lambda b: b)(body)


def sinks_config(server: Any) -> dict[str, Any]:
    return {
        "console": {"type": "log", "full": True},
        "shop": {"type": "http", "url": server.url("/shop"), "secret": WHSEC, "retry": FAST},
        "ops": {
            "type": "discord",
            "url": server.discord_url(),
            "project": "Fuzz <@&1> *Store*",
            "retry": FAST,
        },
        "sales": {"type": "slack", "url": server.slack_url(), "retry": FAST},
    }


BUG_LOGS = {
    "normalize failed",
    "inbound job failed",
    "deliver job failed",
    "sink raised",
    "inbound dead-lettered",
    "delivery dead-lettered",
}


async def run_through_worker(
    cases: list[tuple[str, bytes]],
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    server: Any,
    redis: Any,
) -> None:
    raw = {
        "sources": ALL_SOURCES,
        "sinks": sinks_config(server),
        "worker": {"concurrency": 20, "poll_delay": "10ms"},
    }
    client = await ingress(raw)
    stored: Counter[str] = Counter()
    ids: set[str] = set()
    for kind, body in cases:
        path = f"/hooks/{kind}/{COINABLE_TOKEN}" if kind == "coinable" else f"/hooks/{kind}"
        response = await client.post(path, data=body, headers=ALL_SIGNERS[kind](body))
        answer = await response.read()
        assert response.status == 200, (kind, body[:300], answer)
        seen_before = inbound_id(kind, body) in ids
        ids.add(inbound_id(kind, body))  # OxaPay's answer is `ok`: duplicates by the id
        if not seen_before:
            stored[kind] += 1
    with structlog.testing.capture_logs() as logs:
        worker = await run_worker(config_factory(raw))

        async def drained() -> bool:
            counts = await redis.hgetall("relay:stats")
            done = sum(
                int(v)
                for k, v in counts.items()
                if re.fullmatch(rb"in:.+:(no_event|dead_lettered)|evt:.+", k)
            )
            # No job queued or running: nothing is still to come (no work without a job).
            return done >= sum(stored.values()) and await worker_idle(worker, redis)

        await wait_for(drained, timeout=30)
    stats = {k.decode(): int(v) for k, v in (await redis.hgetall("relay:stats")).items()}
    problems = [
        entry
        for entry in logs
        if entry["event"] in BUG_LOGS or entry.get("log_level") in ("error", "critical")
    ]
    letters = await DeadLetterQueue(redis, Keys()).recent(limit=1000)
    assert not problems and not letters, (
        [{k: str(v)[:300] for k, v in e.items()} for e in problems[:10]],
        [(d.kind, d.source, d.sink, d.reason, d.excerpt[:200]) for d in letters[:10]],
    )
    assert worker.jobs_failed == 0 and worker.jobs_retried == 0
    # Every stored request ended somewhere; every new event reached every sink once.
    new_events = 0
    for kind, count in stored.items():
        assert stats.get(f"in:{kind}:stored") == count
        ended = sum(stats.get(f"evt:{kind}:{t}", 0) for t in EVENT_TYPES)
        new_events += ended
        ended += stats.get(f"evt:{kind}:duplicate", 0) + stats.get(f"in:{kind}:no_event", 0)
        assert ended == count, (kind, count, stats)
    for sink in ("console", "shop", "ops", "sales"):
        assert stats.get(f"dlv:{sink}:delivered") == new_events, (sink, stats)
    shop = [r for r in server.requests("/shop") if r.status == 200]
    assert len({r.headers["webhook-id"] for r in shop}) == new_events
    for request in shop:
        event = Webhook(WHSEC).verify(request.body, dict(request.headers))
        assert event["type"] in EVENT_TYPES
        loads(request.body)
    chat = server.requests(server.discord_url()) + server.requests(server.slack_url())
    assert [r.violations for r in chat if r.violations] == []


async def test_signed_random_payloads_survive_the_worker(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    redis: Any,
) -> None:
    """Correctly signed random payloads of every provider: the worker relays each or accounts
    for it; nothing is lost, nothing raises, nothing stays queued."""
    cases = draw(signed_payloads(), 250)
    assert len({kind for kind, _ in cases}) >= len(PROVIDERS) - 1
    await run_through_worker(cases, ingress, run_worker, config_factory, sink_server, redis)


# --- regressions for what the fuzzing found in provider modules (fixed) ---------------------------


def _provider(kind: str) -> Any:
    from tests.conftest import make_config

    loaded = make_config({"sources": {kind: ALL_SOURCES[kind]}})
    return PROVIDERS[loaded.config.sources[kind].provider](kind, loaded.config.sources[kind])


@pytest.mark.parametrize("processed_at", [b"1E+5000", b'"99999999999999999999"', b"-1e30"])
def test_ivpay_time_no_calendar_holds(processed_at: bytes) -> None:
    """IVPAY used rfc3339 on processed_at directly: OverflowError/OSError/ValueError, so a
    well-formed webhook was dead-lettered. Now occurred_at is just unknown."""
    body = b'{"payment_id": "p1", "status": "PAID", "processed_at": ' + processed_at + b"}"
    (event,) = _provider("ivpay").normalize(InboundRequest(source="ivpay", body=body, headers={}))
    assert event.type == "payment.paid" and event.occurred_at is None


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("coinpayments_ipn", "fenced")])
def test_lone_surrogate_escape_is_relayed(kind: str) -> None:
    r"""`"\\ud800"` is valid JSON grammar but no UTF-8 can hold it: event id (ivpay) or event
    JSON (all) raised. It is read as U+FFFD now, and the event serializes."""
    body = b'{"payment_id": "\\ud800", "id": "a\\udfffb", "x": {"\\udc80": "\xed\xa0\x80"}}'
    made = _provider(kind)
    (event,) = made.normalize(
        InboundRequest(source=kind, body=body, headers={"webhook-id": "m"}, received_at=1.0)
    )
    assert "\ufffd" in loads(event.to_json())["data"]["x"]["\ufffd"]


def test_standard_webhooks_non_utf8_webhook_id() -> None:
    """A webhook-id with non-UTF-8 bytes (surrogate-escaped by aiohttp) made the event id
    unwritable; two different such ids stay two events."""
    made = _provider("standard_webhooks")
    ids = set()
    for msg_id in ("msg_\udcff", "msg_\udcfe"):
        (event,) = made.normalize(
            InboundRequest(
                source="standard_webhooks",
                body=b'{"type": "ev.paid"}',
                headers={"webhook-id": msg_id},
            )
        )
        ids.add(event.id)
        event.to_json()
    assert len(ids) == 2


# --- what fuzzing found in relay/events.py, fixed: regression tests -------------------------------


def test_big_exponent_in_data_round_trips() -> None:
    made = _provider("cryptoix")
    (event,) = made.normalize(InboundRequest(source="cryptoix", body=b'{"x": 1E+5000}', headers={}))
    assert loads(event.to_json())["data"]["x"] == Decimal("1E+5000")


async def test_deeply_nested_payload_is_rejected_at_the_door(ingress: Any, redis: Any) -> None:
    """JSON nested past what can be relayed is a 400 malformed at the ingress, never stored."""
    made = _provider("cryptoix")
    body = b'{"x": ' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(Rejected) as info:
        made.normalize(InboundRequest(source="cryptoix", body=body, headers={}))
    assert info.value.status == 400
    shallow = b'{"x": ' + b"[" * 150 + b"]" * 150 + b"}"
    (event,) = made.normalize(InboundRequest(source="cryptoix", body=shallow, headers={}))
    assert event.to_json()
