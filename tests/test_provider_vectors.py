"""Across providers: the reference's test vectors, samples, and hostile input never being a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.events import EVENT_TYPES, dumps
from relay.providers import PROVIDERS, InboundRequest, Provider, Rejected
from relay.providers.coinpayments import signature as coinpayments_signature
from tests.conftest import TEST_SECRETS, make_config, wait_for

DATA = Path(__file__).parent / "data"
CP_URL = "https://relay.example.com/hooks/coinpayments"
CP_CLIENT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
MERCHANT = "0123456789abcdef"

# One source of every provider kind this module covers, with every event type mapped where
# the mapping is configurable, so every sample event is available.
ALL_TYPES = {f"ev.{t.removeprefix('payment.')}": t for t in EVENT_TYPES if t != "payment.other"}
SOURCES: dict[str, dict[str, Any]] = {
    "coinpayments": {
        "provider": "coinpayments",
        "client_id": CP_CLIENT,
        "client_secret": "${COINPAYMENTS_CLIENT_SECRET}",
        "notification_url": CP_URL,
    },
    "coinpayments_ipn": {
        "provider": "coinpayments_ipn",
        "ipn_secret": "${COINPAYMENTS_IPN_SECRET}",
        "merchant_id": MERCHANT,
    },
    "calypso": {"provider": "calypso", "secret_key": "${CALYPSO_SECRET_KEY}", "public_key": "pk-1"},
    "cryptoix": {"provider": "cryptoix", "secret": "${CRYPTOIX_WEBHOOK_SECRET}"},
    "coinable": {"provider": "coinable", "url_token": "${COINABLE_URL_TOKEN}"},
    "standard_webhooks": {
        "provider": "standard_webhooks",
        "secret": "${PARTNER_WHSEC}",
        "fields": {"payment_id": "data.id", "amount": "data.amount", "reference": "data.ref"},
        "event_types": ALL_TYPES,
    },
    "hmac": {
        "provider": "hmac",
        "secret": "${HMAC_WEBHOOK_SECRET}",
        "signature_header": "X-Sig",
        "signature_prefix": "sha256=",
        "fields": {"payment_id": "id", "event_id": "event_id"},
        "event_types": ALL_TYPES,
    },
}
CONFIG = {"sources": SOURCES}


def provider(kind: str, source: dict[str, Any] | None = None) -> Provider:
    loaded = make_config({"sources": {kind: source or SOURCES[kind]}})
    return PROVIDERS[loaded.config.sources[kind].provider](kind, loaded.config.sources[kind])


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# --- signing any body the way each provider would ---------------------------------------------


def _hex(secret: str, body: bytes, algorithm: Any = hashlib.sha256) -> str:
    return hmac.new(secret.encode(), body, algorithm).hexdigest()


def _sign_coinpayments(body: bytes) -> dict[str, str]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    secret = TEST_SECRETS["COINPAYMENTS_CLIENT_SECRET"]
    return {
        "X-CoinPayments-Client": CP_CLIENT,
        "X-CoinPayments-Timestamp": stamp,
        "X-CoinPayments-Signature": coinpayments_signature(secret, CP_URL, CP_CLIENT, stamp, body),
    }


def _sign_standard(body: bytes) -> dict[str, str]:
    key = base64.b64decode(TEST_SECRETS["PARTNER_WHSEC"].removeprefix("whsec_"))
    msg_id, stamp = "msg_bad_input", str(int(time.time()))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


SIGNERS: dict[str, Callable[[bytes], dict[str, str]]] = {
    "coinpayments": _sign_coinpayments,
    "coinpayments_ipn": lambda b: {
        "HMAC": _hex(TEST_SECRETS["COINPAYMENTS_IPN_SECRET"], b, hashlib.sha512)
    },
    "calypso": lambda b: {
        "Sign": _hex(TEST_SECRETS["CALYPSO_SECRET_KEY"], b, hashlib.sha512),
        "Key": "pk-1",
    },
    "cryptoix": lambda b: {
        "X-Cryptoix-Signature": _hex(TEST_SECRETS["CRYPTOIX_WEBHOOK_SECRET"], b)
    },
    "coinable": lambda b: {},
    "standard_webhooks": _sign_standard,
    "hmac": lambda b: {"X-Sig": "sha256=" + _hex(TEST_SECRETS["HMAC_WEBHOOK_SECRET"], b)},
}


def url(kind: str) -> str:
    return (
        f"/hooks/{kind}/{TEST_SECRETS['COINABLE_URL_TOKEN']}"
        if kind == "coinable"
        else f"/hooks/{kind}"
    )


def test_every_new_provider_is_covered() -> None:
    """Every registered provider kind is exercised: here, or in its own test module (IVPAY and
    the SPEC 13 providers, whose vectors come from their own published code; Heleket shares
    Cryptomus's module)."""
    own = {
        p.stem.removeprefix("test_providers_")
        for p in Path(__file__).parent.glob("test_providers_*.py")
    }
    own |= {"ivpay", "heleket"}
    assert set(SOURCES) == set(SIGNERS)
    assert set(PROVIDERS) <= set(SOURCES) | own, set(PROVIDERS) - set(SOURCES) - own


# --- providers.md section 8 -------------------------------------------------------------------


def test_calypso_vector() -> None:
    """Calypso: HMAC-SHA512 of {"timestamp":1} under the published key verifies."""
    made = provider(
        "calypso", {"provider": "calypso", "secret_key": "b823a6b9ea72408583cef9ec8d67fa52"}
    )
    sign = (
        "b16e9d45f49f2069becbc4f108b237bee588cfc353fe9501df103e692acbc68d482a10d34c12bea22fedde7e"
        "28e1b8e57a6a0a373b0e9a27c5257bd8b36e13b9"
    )
    body = (DATA / "calypso" / "sign_vector.json").read_bytes()
    made.verify(InboundRequest(source="calypso", body=body, headers={"sign": sign}))


def test_cryptoix_vector() -> None:
    """Cryptoix: the SDK's test vector verifies."""
    made = provider("cryptoix", {"provider": "cryptoix", "secret": "whsec_test_secret_1234567890"})
    body = (DATA / "cryptoix" / "sdk_completed_vector.json").read_bytes()
    sign = "9bc6d23d70a52f2960d404a6bf2fd067ee8f15e2e30c4e53cfde3559251a7e25"
    made.verify(
        InboundRequest(source="cryptoix", body=body, headers={"x-cryptoix-signature": sign})
    )


def test_coinpayments_vector() -> None:
    """CoinPayments v2: the self-computed vector (BOM, POST, URL, client, time, body) verifies."""
    made = provider(
        "coinpayments",
        {
            "provider": "coinpayments",
            "client_id": CP_CLIENT,
            "client_secret": "test-client-secret",
            "notification_url": CP_URL,
        },
    )
    body = (DATA / "coinpayments" / "invoice_completed_vector.json").read_bytes()
    headers = {
        "x-coinpayments-client": CP_CLIENT,
        "x-coinpayments-timestamp": "2025-01-02T03:04:05",
        "x-coinpayments-signature": "zBor1R8fuU/PlfcqVAcO8uBy09Lizqu64d3fayzCc3U=",
    }
    received = datetime(2025, 1, 2, 3, 4, 30, tzinfo=UTC).timestamp()  # 25 s after it was signed
    made.verify(
        InboundRequest(source="coinpayments", body=body, headers=headers, received_at=received)
    )


def test_coinpayments_ipn_vector() -> None:
    """CoinPayments IPN: the self-computed HMAC-SHA512 vector verifies."""
    made = provider(
        "coinpayments_ipn",
        {"provider": "coinpayments_ipn", "ipn_secret": "my ipn secret", "merchant_id": MERCHANT},
    )
    body = (DATA / "coinpayments_ipn" / "api_complete_vector.txt").read_bytes()
    sign = (
        "077e0cf4507df9cf597a5da0a14459d128dc5f4235ff670911281e1c9f4689ddc6a03b636d311c497953f821c"
        "f56a5a6f87e7e0110703652061154f10ff32c39"
    )
    made.verify(InboundRequest(source="ipn", body=body, headers={"hmac": sign}))


def test_coinify_vector_through_generic_hmac() -> None:
    """The Coinify HMAC-SHA256 hex sanity vector verifies through a generic `hmac` source."""
    made = provider(
        "coinify",
        {
            "provider": "hmac",
            "secret": "my-shared-secret",
            "signature_header": "X-Coinify-Callback-Signature",
        },
    )
    body = (DATA / "hmac" / "coinify_vector.json").read_bytes()
    sign = "bcdbb89e3031905f3cc1a20d16b5f969a17a7d8fa0c26e4a807c2193402d66f4"
    made.verify(
        InboundRequest(source="coinify", body=body, headers={"x-coinify-callback-signature": sign})
    )


# --- samples (relay trigger) ------------------------------------------------------------------

SAMPLE_CASES = [(kind, event) for kind in SOURCES for event in provider(kind).sample_events]


@pytest.mark.parametrize(("kind", "event"), SAMPLE_CASES)
def test_sample_verifies_and_normalizes(kind: str, event: str) -> None:
    """sample(event) is accepted by the same provider and normalizes to payment.<event>."""
    made = provider(kind)
    now = time.time()
    sample = made.sample(event, now)
    headers = lower(sample.headers)
    made.verify(
        InboundRequest(
            source=kind, body=sample.body, headers=headers, received_at=now, token=sample.token
        )
    )
    # The worker only sees the headers the provider asked the ingress to keep.
    kept = {name: headers[name] for name in made.keep_headers if name in headers}
    events = made.normalize(
        InboundRequest(source=kind, body=sample.body, headers=kept, received_at=now)
    )
    assert [e.type for e in events] == [f"payment.{event}"]


@pytest.mark.parametrize("kind", list(SOURCES))
async def test_sample_is_stored_by_the_ingress(kind: str, ingress: Any, redis: Any) -> None:
    """What `relay trigger` would POST for the first sample event is stored by a real ingress."""
    made = provider(kind)
    sample = made.sample(made.sample_events[0], time.time())
    path = f"/hooks/{kind}/{sample.token}" if sample.token else f"/hooks/{kind}"
    client = await ingress(CONFIG)
    response = await client.post(path, data=sample.body, headers=sample.headers)
    assert response.status == 200, await response.text()
    assert await redis.zcard("relay:queue") == 1


@pytest.mark.parametrize("kind", list(SOURCES))
async def test_sample_travels_through_the_worker(
    kind: str, ingress: Any, run_worker: Any, redis: Any, config_factory: Any
) -> None:
    """A stored sample is normalized by a real worker (with only keep_headers) and delivered."""
    config = {**CONFIG, "sinks": {"console": {"type": "log"}}}
    made = provider(kind)
    event = made.sample_events[-1]
    sample = made.sample(event, time.time())
    path = f"/hooks/{kind}/{sample.token}" if sample.token else f"/hooks/{kind}"
    client = await ingress(config)
    assert (await client.post(path, data=sample.body, headers=sample.headers)).status == 200
    await run_worker(config_factory(config))
    await wait_for(lambda: redis.hget("relay:stats", "dlv:console:delivered"))
    assert await redis.hget("relay:stats", f"evt:{kind}:payment.{event}") == b"1"


def test_configurable_providers_offer_only_mapped_samples() -> None:
    """A mapped source offers samples only for the types its event_types maps, plus other."""
    source = {**SOURCES["hmac"], "event_types": {"Settled": "payment.completed"}}
    made = provider("hmac", source)
    assert made.sample_events == ("completed", "other")
    with pytest.raises(ValueError, match="event_types"):
        made.sample("paid", time.time())


# --- hostile input via the ingress: 400/401, never 500, never stored ---------------------------

BAD_BODIES = {
    "invalid_json": (b'{"id": 1,', "application/json"),
    "json_not_object": (b"[1, 2, 3]", "application/json"),
    "empty_body": (b"", "application/json"),
    "non_utf8": (b"\xff\xfe\x00{\x80\x81}", "application/json"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
@pytest.mark.parametrize("kind", list(SOURCES))
async def test_signed_bad_body_is_malformed(kind: str, case: str, ingress: Any, redis: Any) -> None:
    """A correctly authenticated body the provider cannot parse is 400 malformed, not stored."""
    body, content_type = BAD_BODIES[case]
    if kind == "coinpayments_ipn" and case == "json_not_object":
        body = b"not a form"
    client = await ingress(CONFIG)
    response = await client.post(
        url(kind), data=body, headers={"Content-Type": content_type, **SIGNERS[kind](body)}
    )
    assert response.status == 400
    assert await response.json() == {"error": "malformed"}
    assert await redis.zcard("relay:queue") == 0


@pytest.mark.parametrize("kind", list(SOURCES))
async def test_signed_body_of_the_wrong_format_is_malformed(
    kind: str, ingress: Any, redis: Any
) -> None:
    """A signed body in the other format (form vs JSON), labelled so, is 400 malformed."""
    if kind == "coinpayments_ipn":
        body, content_type = b'{"ipn_mode": "hmac"}', "application/json"
    else:
        body, content_type = b"status=paid&id=1", "application/x-www-form-urlencoded"
    client = await ingress(CONFIG)
    response = await client.post(
        url(kind), data=body, headers={"Content-Type": content_type, **SIGNERS[kind](body)}
    )
    assert response.status == 400
    assert await redis.zcard("relay:queue") == 0


@pytest.mark.parametrize("kind", list(SOURCES))
async def test_content_type_label_does_not_matter(kind: str, ingress: Any, redis: Any) -> None:
    """A valid signed body labelled text/plain is still stored: verification reads bytes only."""
    made = provider(kind)
    sample = made.sample(made.sample_events[0], time.time())
    headers = {**sample.headers, "Content-Type": "text/plain"}
    path = f"/hooks/{kind}/{sample.token}" if sample.token else f"/hooks/{kind}"
    client = await ingress(CONFIG)
    response = await client.post(path, data=sample.body, headers=headers)
    assert response.status == 200
    assert await redis.zcard("relay:queue") == 1


@pytest.mark.parametrize("case", list(BAD_BODIES))
@pytest.mark.parametrize("kind", list(SOURCES))
async def test_unsigned_bad_body_is_unauthorized(
    kind: str, case: str, ingress: Any, redis: Any
) -> None:
    """An unauthenticated unparseable body is 401: authentication is checked before parsing."""
    body, content_type = BAD_BODIES[case]
    path = f"/hooks/{kind}/wrong-token" if kind == "coinable" else f"/hooks/{kind}"
    client = await ingress(CONFIG)
    response = await client.post(path, data=body, headers={"Content-Type": content_type})
    assert response.status == 401
    assert await redis.zcard("relay:queue") == 0


# --- hostile input straight into verify and normalize ------------------------------------------

HEADER_NAMES = sorted(
    {
        "x-coinpayments-signature",
        "x-coinpayments-client",
        "x-coinpayments-timestamp",
        "hmac",
        "sign",
        "key",
        "x-cryptoix-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-sig",
    }
)
header_values = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789abcdefABCDEF", max_size=130),
    st.builds(lambda s: "v1," + s, st.text(max_size=60)),
    st.builds(lambda s: "sha256=" + s, st.text(max_size=70)),
    st.just("2025-01-02T03:04:05"),
    st.just(str(int(time.time()))),
    st.just("\udcff\udcfe surrogate-escaped bytes"),
    st.just("x" * 100_000),
)


@pytest.mark.parametrize("kind", list(SOURCES))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=300),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values),
    token=st.one_of(st.none(), st.text(max_size=40)),
)
def test_verify_only_ever_raises_rejected(
    kind: str, body: bytes, headers: dict[str, str], token: str | None
) -> None:
    """Whatever the bytes, headers or token, verify returns or raises Rejected, nothing else."""
    made = PROVIDERS_BY_KIND[kind]
    try:
        made.verify(
            InboundRequest(
                source=kind, body=body, headers=headers, token=token, received_at=time.time()
            )
        )
    except Rejected as rejected:
        assert rejected.status in (400, 401)


PROVIDERS_BY_KIND = {kind: provider(kind) for kind in SOURCES}

KEYS = [
    "id",
    "type",
    "event",
    "eventType",
    "status",
    "timestamp",
    "createdDate",
    "invoice",
    "data",
    "amount",
    "transaction_id",
    "uuid",
    "parentExternalId",
    "externalId",
    "fiatAmount",
    "txHash",
    "transactionId",
    "confirmation_count",
    "confirmations",
    "metadata",
    "event_id",
    "total",
]
json_values = st.recursive(
    # Integers stay within 64 bits: beyond that see test_big_integer_in_payload_serializes.
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.decimals(allow_nan=False, allow_infinity=False, places=8),
        st.text(max_size=20),
        st.just("2024-07-01T11:04:06.8033575+00:00"),
        st.just(10**17),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("kind", [k for k in SOURCES if k != "coinpayments_ipn"])
@settings(max_examples=150, deadline=None)
@given(payload=st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8))
def test_normalize_never_fails_on_any_json_object(kind: str, payload: dict[str, Any]) -> None:
    """Any JSON object normalizes to canonical events that serialize, never an exception."""
    made = PROVIDERS_BY_KIND[kind]
    body = dumps(payload)
    headers = {"webhook-id": "msg_1"} if kind == "standard_webhooks" else {}
    for event in made.normalize(
        InboundRequest(source=kind, body=body, headers=headers, received_at=1.0)
    ):
        assert event.type in EVENT_TYPES
        orjson.loads(event.to_json())


def test_big_integer_in_payload_serializes() -> None:
    """A payload integer beyond 64 bits (valid JSON) still gives an event that serializes."""
    made = PROVIDERS_BY_KIND["calypso"]
    body = b'{"id": 1, "eventType": "INVOICE_PAID", "data": {"amount": 12345678901234567890123}}'
    (event,) = made.normalize(
        InboundRequest(source="calypso", body=body, headers={}, received_at=1.0)
    )
    assert b'"amount":12345678901234567890123' in event.to_json()


@settings(max_examples=150, deadline=None)
@given(
    form=st.dictionaries(
        st.sampled_from(
            [
                "ipn_type",
                "status",
                "txn_id",
                "amount1",
                "amount2",
                "currency1",
                "currency2",
                "received_confirms",
                "ipn_id",
            ]
        ),
        st.text(max_size=12),
        min_size=1,
    )
)
def test_ipn_normalize_never_fails_on_any_form(form: dict[str, str]) -> None:
    """Any non-empty form normalizes to a canonical event that serializes."""
    made = PROVIDERS_BY_KIND["coinpayments_ipn"]
    (event,) = made.normalize(
        InboundRequest(source="ipn", body=urlencode(form).encode(), headers={})
    )
    orjson.loads(event.to_json())


# --- conventions every provider module keeps ------------------------------------------------


@pytest.mark.parametrize("kind", list(PROVIDERS))
def test_module_documents_its_dedupe_key(kind: str) -> None:
    """Every provider module's docstring states its dedupe key."""
    assert "Dedupe key" in (sys.modules[PROVIDERS[kind].__module__].__doc__ or "")


@pytest.mark.parametrize("kind", list(PROVIDERS))
def test_keep_headers_are_lower_case(kind: str) -> None:
    """keep_headers names are lower case, as InboundRequest.headers are."""
    assert all(name == name.lower() for name in PROVIDERS[kind].keep_headers)
