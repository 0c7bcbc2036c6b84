"""Every provider's authentication at the door, as one table: a request correctly made for a
source is accepted (ACCEPTED), and each row of REJECTED is such a request with one thing wrong
(a changed body, another secret, a missing header, a stale timestamp, ...). Each runs through
the real ingress over HTTP against the real Redis: a rejection is answered with its status and
error, stores nothing and is recorded for `relay status`; an accepted request is queued.

Signatures are computed here (or by the Standard Webhooks reference SDK), never by the
provider modules' own `sample()`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from relay.providers import PROVIDERS
from relay.providers.coinpayments import signature as coinpayments_signature
from relay.queue import inbound_id
from tests import test_providers_binance_pay as binance_test
from tests import test_providers_btcpay as btcpay_test
from tests import test_providers_coinbase_commerce as coinbase_test
from tests import test_providers_coingate as coingate_test
from tests import test_providers_cryptomus as cryptomus_test
from tests import test_providers_nowpayments as nowpayments_test
from tests import test_providers_oxapay as oxapay_test
from tests import test_providers_plisio as plisio_test
from tests.conftest import TEST_SECRETS

DATA = Path(__file__).parent / "data"
SECRET = TEST_SECRETS

CP_URL = "https://relay.example.com/hooks/coinpayments"
CP_CLIENT = "dc6a16e545c34187ba21a9edbbe484a5"
IPN_MERCHANT = "0123456789abcdef"
CALYPSO_PUBLIC = "calypso-public-key-1"

SOURCES: dict[str, dict[str, Any]] = {
    "ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"},
    "coinpayments": {
        "provider": "coinpayments",
        "client_id": CP_CLIENT,
        "notification_url": CP_URL,
        "client_secret": ["${COINPAYMENTS_CLIENT_SECRET}", "${COINPAYMENTS_CLIENT_SECRET_2}"],
    },
    "ipn": {
        "provider": "coinpayments_ipn",
        "merchant_id": IPN_MERCHANT,
        "ipn_secret": ["${COINPAYMENTS_IPN_SECRET}", "${COINPAYMENTS_IPN_SECRET_2}"],
    },
    "calypso": {
        "provider": "calypso",
        "secret_key": ["${CALYPSO_SECRET_KEY}", "${CALYPSO_SECRET_KEY_2}"],
    },
    "calypso-keyed": {
        "provider": "calypso",
        "secret_key": "${CALYPSO_SECRET_KEY}",
        "public_key": CALYPSO_PUBLIC,
    },
    "cryptoix": {
        "provider": "cryptoix",
        "secret": ["${CRYPTOIX_WEBHOOK_SECRET}", "${CRYPTOIX_WEBHOOK_SECRET_2}"],
    },
    "cryptoix-custom": {
        "provider": "cryptoix",
        "secret": "${CRYPTOIX_WEBHOOK_SECRET}",
        "signature_header": "X-Signature",
    },
    "coinable": {
        "provider": "coinable",
        "url_token": ["${COINABLE_URL_TOKEN}", "${COINABLE_URL_TOKEN_2}"],
    },
    # Only TEST-NET-3 may post; the test client is 127.0.0.1.
    "coinable-fenced": {
        "provider": "coinable",
        "url_token": "${COINABLE_URL_TOKEN}",
        "allowed_ips": ["203.0.113.0/24"],
    },
    "partner": {
        "provider": "standard_webhooks",
        "secret": ["${PARTNER_WHSEC}", "${PARTNER_WHSEC_2}"],
        "fields": {"payment_id": "data.id", "event": "type"},
        "event_types": {"invoice.paid": "payment.paid"},
    },
    "btcpay": {
        "provider": "hmac",
        "secret": "${BTCPAY_WEBHOOK_SECRET}",
        "signature_header": "BTCPay-Sig",
        "signature_prefix": "sha256=",
        "fields": {"payment_id": "invoiceId", "event": "type"},
    },
    "generic": {
        "provider": "hmac",
        "algorithm": "sha512",
        "encoding": "base64",
        "secret": ["${HMAC_WEBHOOK_SECRET}", "${HMAC_WEBHOOK_SECRET_2}"],
        "signature_header": "X-Signature",
        "fields": {"payment_id": "id"},
    },
    "plisio": plisio_test.CONFIG["sources"]["plisio"],
    **coingate_test.SOURCES,
    "oxapay": oxapay_test.SOURCE,
    "binance": binance_test.SOURCE,
    "btcpay-server": btcpay_test.SOURCE,
    "coinbase-commerce": coinbase_test.SOURCE,
    "nowpayments": nowpayments_test.SOURCE,
    "cryptomus": cryptomus_test.CRYPTOMUS,
    "heleket": cryptomus_test.HELEKET,
}
CONFIG = {"sources": SOURCES}

IVPAY_BODY = b'{"payment_id": "6b577835", "status": "PAID", "foreign_id": "123456"}'
CP_BODY = (DATA / "coinpayments" / "invoice_created_docs.json").read_bytes()
IPN_BODY = (DATA / "coinpayments_ipn" / "api_complete_vector.txt").read_bytes()
CALYPSO_BODY = (DATA / "calypso" / "invoice_create_invoice.json").read_bytes()
CRYPTOIX_BODY = (DATA / "cryptoix" / "payment_received_docs.json").read_bytes()
COINABLE_BODY = (DATA / "coinable" / "checkout_session_completed.json").read_bytes()
PARTNER_BODY = (DATA / "standard_webhooks" / "invoice_paid.json").read_bytes()
BTCPAY_BODY = (DATA / "hmac" / "btcpay_invoice_settled.json").read_bytes()
GENERIC_BODY = b'{"id": "p1", "status": "done"}'
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Sent:
    """One request as a sender would make it."""

    source: str
    body: bytes
    headers: dict[str, str]
    token: str | None = None  # the URL token segment (Coinable)

    @property
    def path(self) -> str:
        return f"/hooks/{self.source}" + (f"/{self.token}" if self.token is not None else "")


def tampered(sent: Sent, old: bytes, new: bytes) -> Sent:
    """The same headers (signature included) with the body changed after signing."""
    assert old in sent.body
    return replace(sent, body=sent.body.replace(old, new))


def without(sent: Sent, header: str) -> Sent:
    assert header in sent.headers
    return replace(sent, headers={k: v for k, v in sent.headers.items() if k != header})


def hex_hmac(secret: str, body: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, digest).hexdigest()


# --- one correctly made request per source; keyword arguments make it wrong in one way ---------


def ivpay(key: str = SECRET["IVPAY_API_KEY"]) -> Sent:
    return Sent("ivpay", IVPAY_BODY, {**JSON, "X-API-KEY": key})


def coinpayments(
    secret: str = SECRET["COINPAYMENTS_CLIENT_SECRET"],
    client: str = CP_CLIENT,
    age_s: float = 0.0,
    url: str = CP_URL,
) -> Sent:
    when = datetime.fromtimestamp(time.time() - age_s, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return Sent(
        "coinpayments",
        CP_BODY,
        {
            **JSON,
            "X-CoinPayments-Client": client,
            "X-CoinPayments-Timestamp": when,
            "X-CoinPayments-Signature": coinpayments_signature(secret, url, client, when, CP_BODY),
        },
    )


def ipn(
    secret: str = SECRET["COINPAYMENTS_IPN_SECRET"], body: bytes = IPN_BODY, upper: bool = False
) -> Sent:
    digest = hex_hmac(secret, body, "sha512")
    return Sent(
        "ipn",
        body,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "HMAC": digest.upper() if upper else digest,
        },
    )


def ipn_form(**fields: str) -> bytes:
    base = {
        "ipn_version": "1.0",
        "ipn_type": "api",
        "ipn_mode": "hmac",
        "ipn_id": "i1",
        "merchant": IPN_MERCHANT,
        "txn_id": "CPXX1",
        "status": "0",
    }
    return urlencode({**base, **fields}).encode()


def calypso(
    secret: str = SECRET["CALYPSO_SECRET_KEY"], source: str = "calypso", key: str | None = None
) -> Sent:
    headers = {**JSON, "Sign": hex_hmac(secret, CALYPSO_BODY, "sha512")}
    if key is not None:
        headers["Key"] = key
    return Sent(source, CALYPSO_BODY, headers)


def cryptoix(
    secret: str = SECRET["CRYPTOIX_WEBHOOK_SECRET"],
    source: str = "cryptoix",
    header: str = "X-Cryptoix-Signature",
) -> Sent:
    return Sent(source, CRYPTOIX_BODY, {**JSON, header: hex_hmac(secret, CRYPTOIX_BODY)})


def coinable(token: str | None = SECRET["COINABLE_URL_TOKEN"], source: str = "coinable") -> Sent:
    return Sent(source, COINABLE_BODY, dict(JSON), token)


def partner(
    secret: str = SECRET["PARTNER_WHSEC"], age_s: float = 0.0, shift_stamp_s: int = 0
) -> Sent:
    """Signed by the Standard Webhooks reference SDK; `shift_stamp_s` moves the timestamp
    header after signing."""
    moment = datetime.fromtimestamp(int(time.time() - age_s), UTC)
    msg_id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    return Sent(
        "partner",
        PARTNER_BODY,
        {
            **JSON,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(moment.timestamp()) + shift_stamp_s),
            "webhook-signature": Webhook(secret).sign(msg_id, moment, PARTNER_BODY.decode()),
        },
    )


def btcpay(secret: str = SECRET["BTCPAY_WEBHOOK_SECRET"], prefix: str = "sha256=") -> Sent:
    signed = prefix + hex_hmac(secret, BTCPAY_BODY)
    return Sent("btcpay", BTCPAY_BODY, {**JSON, "BTCPay-Sig": signed})


def generic(secret: str = SECRET["HMAC_WEBHOOK_SECRET"], signature: str | None = None) -> Sent:
    digest = hmac.new(secret.encode(), GENERIC_BODY, hashlib.sha512).digest()
    given = base64.b64encode(digest).decode() if signature is None else signature
    return Sent("generic", GENERIC_BODY, {**JSON, "X-Signature": given})


def plisio(secret: str = plisio_test.SECRET, shape: str = "form") -> Sent:
    if shape == "json":
        return Sent("plisio", plisio_test.json_body(plisio_test.fields(), secret), dict(JSON))
    return Sent("plisio", plisio_test.form_body(plisio_test.fields(), secret), {})


def coingate(token: str | None = coingate_test.DOCS_TOKEN, source: str = "coingate") -> Sent:
    changes = {} if token is None else {"token": token}
    body = coingate_test.form(**changes)
    if token is None:
        body = body.replace(b"&token=" + coingate_test.DOCS_TOKEN.encode(), b"")
    return Sent(source, body, {})


def oxapay(key: str = oxapay_test.MERCHANT_KEY) -> Sent:
    return Sent("oxapay", oxapay_test.PAID, oxapay_test.sign(oxapay_test.PAID, key))


def binance(key: bytes = binance_test.PRIVATE, age_s: float = 0.0) -> Sent:
    body = binance_test.DOCS_BODY
    return Sent("binance", body, binance_test.headers(body, key, time.time() - age_s))


def btcpay_server(secret: str = btcpay_test.SECRET) -> Sent:
    body = btcpay_test.RECEIVED
    return Sent("btcpay-server", body, btcpay_test.sig(body, secret))


def coinbase_commerce(secret: str = coinbase_test.SECRET) -> Sent:
    body = coinbase_test.CONFIRMED
    return Sent("coinbase-commerce", body, coinbase_test.sig(body, secret))


def nowpayments(signature: str | None = None, secret: str = nowpayments_test.SECRET) -> Sent:
    """Signed by Node (the vector), or the docs' Python way with `secret`."""
    body = nowpayments_test.PARTIAL
    if signature is None:
        signature = nowpayments_test.python_docs_signature(body, secret)
    return Sent("nowpayments", body, nowpayments_test.header(signature))


def cryptomus(key: str = cryptomus_test.KEY, source: str = "cryptomus") -> Sent:
    """A PHP-signed webhook; another key re-signs the same payload (the PHP-written form)."""
    body = cryptomus_test.PAID if key == cryptomus_test.KEY else cryptomus_test.HELEKET_PAID
    if key not in (cryptomus_test.KEY, cryptomus_test.HELEKET_KEY):
        body = cryptomus_test.signed(
            cryptomus_test.php_json(cryptomus_test.unsigned(cryptomus_test.HELEKET_PAID)), key
        )
    return Sent(source, body, dict(JSON))


# --- the tables ---------------------------------------------------------------------------------

Row = tuple[str, Callable[[], Sent]]

ACCEPTED: list[Row] = [
    ("ivpay", ivpay),
    ("coinpayments", coinpayments),
    ("coinpayments-second-secret", lambda: coinpayments(SECRET["COINPAYMENTS_CLIENT_SECRET_2"])),
    ("ipn", ipn),
    ("ipn-second-secret", lambda: ipn(SECRET["COINPAYMENTS_IPN_SECRET_2"])),
    ("ipn-upper-case-hex", lambda: ipn(upper=True)),
    ("calypso", calypso),
    ("calypso-second-secret", lambda: calypso(SECRET["CALYPSO_SECRET_KEY_2"])),
    ("calypso-matching-public-key", lambda: calypso(source="calypso-keyed", key=CALYPSO_PUBLIC)),
    ("cryptoix", cryptoix),
    ("cryptoix-second-secret", lambda: cryptoix(SECRET["CRYPTOIX_WEBHOOK_SECRET_2"])),
    (
        "cryptoix-configured-header",
        lambda: cryptoix(source="cryptoix-custom", header="X-Signature"),
    ),
    ("coinable", coinable),
    ("coinable-second-token", lambda: coinable(SECRET["COINABLE_URL_TOKEN_2"])),
    ("standard-webhooks", partner),
    ("standard-webhooks-second-secret", lambda: partner(SECRET["PARTNER_WHSEC_2"])),
    ("hmac-btcpay", btcpay),
    ("hmac-second-secret", lambda: generic(SECRET["HMAC_WEBHOOK_SECRET_2"])),
    ("plisio-form", plisio),
    ("plisio-json", lambda: plisio(shape="json")),
    ("plisio-second-secret", lambda: plisio("plisio-old-key")),
    ("coingate", coingate),
    ("coingate-second-token", lambda: coingate("coingate-old-token")),
    ("oxapay", oxapay),
    ("oxapay-second-key", lambda: oxapay("oxapay-old-merchant-key")),
    ("binance-pay", binance),
    ("binance-pay-second-key", lambda: binance(binance_test.OTHER_PRIVATE)),
    ("btcpay", btcpay_server),
    ("btcpay-second-secret", lambda: btcpay_server("btcpay-old-secret")),
    ("coinbase-commerce", coinbase_commerce),
    ("coinbase-commerce-second-secret", lambda: coinbase_commerce("coinbase-old-shared-secret")),
    (
        "nowpayments-node-sdk",
        lambda: nowpayments(
            nowpayments_test.VECTORS["ipn_partially_paid_unicode.json"]["node_signature"]
        ),
    ),
    (
        "nowpayments-php-docs",
        lambda: nowpayments(
            nowpayments_test.VECTORS["ipn_partially_paid_unicode.json"]["php_signature"]
        ),
    ),
    ("nowpayments-second-secret", lambda: nowpayments(secret="nowpayments-old-ipn-secret")),
    ("cryptomus", cryptomus),
    ("cryptomus-payout-key", lambda: cryptomus("cryptomus-test-payout-key-0001")),
    ("heleket", lambda: cryptomus(cryptomus_test.HELEKET_KEY, "heleket")),
]

WRONG_WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BAD_SIGNATURE = (401, "bad_signature")
BAD_TOKEN = (401, "bad_token")
STALE = (401, "stale_timestamp")

REJECTED: list[tuple[str, Callable[[], Sent], tuple[int, str]]] = [
    ("ivpay-wrong-api-key", lambda: ivpay("wrong"), BAD_SIGNATURE),
    ("ivpay-api-key-prefix", lambda: ivpay(SECRET["IVPAY_API_KEY"][:-1]), BAD_SIGNATURE),
    ("ivpay-no-api-key", lambda: without(ivpay(), "X-API-KEY"), BAD_SIGNATURE),
    (
        "coinpayments-tampered",
        lambda: tampered(coinpayments(), b"Unpaid", b"Paid!!"),
        BAD_SIGNATURE,
    ),
    ("coinpayments-wrong-secret", lambda: coinpayments("nope"), BAD_SIGNATURE),
    (
        "coinpayments-no-signature",
        lambda: without(coinpayments(), "X-CoinPayments-Signature"),
        BAD_SIGNATURE,
    ),
    ("coinpayments-other-client", lambda: coinpayments(client="0" * 32), BAD_SIGNATURE),
    # Signed over the URL the request reached, not the configured notification_url.
    (
        "coinpayments-other-url",
        lambda: coinpayments(url="http://127.0.0.1:8000/hooks/coinpayments"),
        BAD_SIGNATURE,
    ),
    ("coinpayments-ten-minutes-old", lambda: coinpayments(age_s=600), STALE),
    ("ipn-tampered", lambda: tampered(ipn(), b"amount1=10.00", b"amount1=99.00"), BAD_SIGNATURE),
    ("ipn-wrong-secret", lambda: ipn("nope"), BAD_SIGNATURE),
    ("ipn-no-hmac", lambda: without(ipn(), "HMAC"), BAD_SIGNATURE),
    ("ipn-other-merchant", lambda: ipn(body=ipn_form(merchant="fedcba9876543210")), BAD_SIGNATURE),
    ("ipn-mode-httpauth", lambda: ipn(body=ipn_form(ipn_mode="httpauth")), BAD_SIGNATURE),
    ("calypso-tampered", lambda: tampered(calypso(), b"0.01", b"0.02"), BAD_SIGNATURE),
    ("calypso-wrong-secret", lambda: calypso("nope"), BAD_SIGNATURE),
    ("calypso-no-sign", lambda: without(calypso(), "Sign"), BAD_SIGNATURE),
    (
        "calypso-other-public-key",
        lambda: calypso(source="calypso-keyed", key="other"),
        BAD_SIGNATURE,
    ),
    ("calypso-no-public-key", lambda: calypso(source="calypso-keyed"), BAD_SIGNATURE),
    ("cryptoix-tampered", lambda: tampered(cryptoix(), b"1.50", b"9.50"), BAD_SIGNATURE),
    ("cryptoix-wrong-secret", lambda: cryptoix("nope"), BAD_SIGNATURE),
    ("cryptoix-no-signature", lambda: without(cryptoix(), "X-Cryptoix-Signature"), BAD_SIGNATURE),
    (
        "cryptoix-default-header-when-another-is-configured",
        lambda: cryptoix(source="cryptoix-custom"),
        BAD_SIGNATURE,
    ),
    ("coinable-wrong-token", lambda: coinable("not-the-token"), BAD_TOKEN),
    ("coinable-no-token", lambda: coinable(None), BAD_TOKEN),
    ("coinable-token-prefix", lambda: coinable(SECRET["COINABLE_URL_TOKEN"][:-1]), BAD_TOKEN),
    (
        "coinable-address-not-allowed",
        lambda: coinable(source="coinable-fenced"),
        (403, "ip_not_allowed"),
    ),
    ("standard-webhooks-tampered", lambda: tampered(partner(), b"ETH", b"BTC"), BAD_SIGNATURE),
    ("standard-webhooks-wrong-secret", lambda: partner(WRONG_WHSEC), BAD_SIGNATURE),
    (
        "standard-webhooks-no-signature",
        lambda: without(partner(), "webhook-signature"),
        BAD_SIGNATURE,
    ),
    ("standard-webhooks-timestamp-moved", lambda: partner(shift_stamp_s=1), BAD_SIGNATURE),
    ("standard-webhooks-ten-minutes-old", lambda: partner(age_s=600), STALE),
    ("hmac-tampered", lambda: tampered(btcpay(), b"order-1001", b"order-1002"), BAD_SIGNATURE),
    ("hmac-wrong-secret", lambda: btcpay("nope"), BAD_SIGNATURE),
    ("hmac-no-signature", lambda: without(btcpay(), "BTCPay-Sig"), BAD_SIGNATURE),
    ("hmac-no-prefix", lambda: btcpay(prefix=""), BAD_SIGNATURE),
    ("hmac-not-base64", lambda: generic(signature="%%%"), BAD_SIGNATURE),
    (
        "plisio-tampered",
        lambda: tampered(plisio(), b"amount=0.00047", b"amount=0.00048"),
        BAD_SIGNATURE,
    ),
    (
        "plisio-json-tampered",
        lambda: tampered(plisio(shape="json"), b"0.00047000", b"0.00047001"),
        BAD_SIGNATURE,
    ),
    ("plisio-wrong-secret", lambda: plisio("nope"), BAD_SIGNATURE),
    (
        "plisio-no-verify-hash",
        lambda: replace(plisio(), body=plisio().body.split(b"&verify_hash=")[0]),
        BAD_SIGNATURE,
    ),
    ("coingate-tampered-token", lambda: tampered(coingate(), b"a33", b"a34"), BAD_TOKEN),
    ("coingate-wrong-token", lambda: coingate("not-the-token"), BAD_TOKEN),
    ("coingate-no-token", lambda: coingate(None), BAD_TOKEN),
    ("coingate-static-token-on-keyed-source", lambda: coingate(source="coingate-keyed"), BAD_TOKEN),
    ("oxapay-tampered", lambda: tampered(oxapay(), b"ORD-12345", b"ORD-12346"), BAD_SIGNATURE),
    ("oxapay-wrong-key", lambda: oxapay("nope"), BAD_SIGNATURE),
    ("oxapay-no-hmac", lambda: without(oxapay(), "HMAC"), BAD_SIGNATURE),
    (
        "binance-pay-tampered",
        lambda: tampered(binance(), b"0.88000000", b"0.88000001"),
        BAD_SIGNATURE,
    ),
    (
        "binance-pay-wrong-key",
        lambda: binance(binance_test.wrong_private_key()),
        BAD_SIGNATURE,
    ),
    (
        "binance-pay-no-signature",
        lambda: without(binance(), "BinancePay-Signature"),
        BAD_SIGNATURE,
    ),
    ("binance-pay-ten-minutes-old", lambda: binance(age_s=600), STALE),
    (
        "btcpay-tampered",
        lambda: tampered(btcpay_server(), b"order-4711", b"order-4712"),
        BAD_SIGNATURE,
    ),
    ("btcpay-wrong-secret", lambda: btcpay_server("nope"), BAD_SIGNATURE),
    ("btcpay-no-signature", lambda: without(btcpay_server(), "BTCPay-Sig"), BAD_SIGNATURE),
    (
        "coinbase-commerce-tampered",
        lambda: tampered(coinbase_commerce(), b"XA6G6ZFR", b"XA6G6ZFS"),
        BAD_SIGNATURE,
    ),
    ("coinbase-commerce-wrong-secret", lambda: coinbase_commerce("nope"), BAD_SIGNATURE),
    (
        "coinbase-commerce-no-signature",
        lambda: without(coinbase_commerce(), "X-CC-Webhook-Signature"),
        BAD_SIGNATURE,
    ),
    (
        "nowpayments-tampered",
        lambda: tampered(nowpayments(), b'"actually_paid":0.00002', b'"actually_paid":0.00003'),
        BAD_SIGNATURE,
    ),
    ("nowpayments-wrong-secret", lambda: nowpayments(secret="nope"), BAD_SIGNATURE),
    (
        "nowpayments-no-signature",
        lambda: without(nowpayments(), "x-nowpayments-sig"),
        BAD_SIGNATURE,
    ),
    ("cryptomus-tampered", lambda: tampered(cryptomus(), b'"15.00"', b'"16.00"'), BAD_SIGNATURE),
    ("cryptomus-wrong-key", lambda: cryptomus("nope"), BAD_SIGNATURE),
    (
        "cryptomus-no-sign",
        lambda: replace(cryptomus(), body=cryptomus().body.split(b',"sign"')[0] + b"}"),
        BAD_SIGNATURE,
    ),
    (
        "heleket-tampered",
        lambda: tampered(
            cryptomus(cryptomus_test.HELEKET_KEY, "heleket"), b"order-42", b"order-43"
        ),
        BAD_SIGNATURE,
    ),
    ("heleket-cryptomus-key", lambda: cryptomus(source="heleket"), BAD_SIGNATURE),
]


def _kind(sent: Sent) -> str:
    return str(SOURCES[sent.source]["provider"])


def test_tables_cover_every_provider() -> None:
    """Each provider kind has an accepted request and at least two ways to be rejected."""
    accepted = {_kind(build()) for _, build in ACCEPTED}
    rejected = [_kind(build()) for _, build, _ in REJECTED]
    assert accepted == set(rejected) == set(PROVIDERS)
    assert min(rejected.count(kind) for kind in PROVIDERS) >= 2


@pytest.mark.parametrize("build", [pytest.param(b, id=i) for i, b in ACCEPTED])
async def test_accepted(build: Callable[[], Sent], ingress: Any, redis: Any) -> None:
    client = await ingress(CONFIG)
    sent = build()
    response = await client.post(sent.path, data=sent.body, headers=sent.headers)
    assert response.status == 200, await response.text()
    if response.content_type == "application/json":
        answer = await response.json()
        assert answer["ok"] is True
        assert answer["id"] == expected_id(sent)
    else:  # a provider that needs its own answer (OxaPay: `ok`)
        assert await response.text() == "ok"
    assert await redis.zscore("relay:queue", expected_id(sent)) is not None
    assert await redis.llen("relay:rejections") == 0


def expected_id(sent: Sent) -> str:
    """The inbound id the ingress gives: the source in the path and the body (relay.queue)."""
    return inbound_id(sent.path.split("/")[2], sent.body)


@pytest.mark.parametrize(("build", "expected"), [pytest.param(b, e, id=i) for i, b, e in REJECTED])
async def test_rejected(
    build: Callable[[], Sent], expected: tuple[int, str], ingress: Any, redis: Any
) -> None:
    client = await ingress(CONFIG)
    sent = build()
    status, error = expected
    response = await client.post(sent.path, data=sent.body, headers=sent.headers)
    assert response.status == status, await response.text()
    assert await response.json() == {"error": error}
    assert await redis.zcard("relay:queue") == 0
    (entry,) = [orjson.loads(raw) for raw in await redis.lrange("relay:rejections", 0, -1)]
    assert (entry["source"], entry["status"], entry["error"]) == (sent.source, status, error)
    assert await redis.hget("relay:stats", f"in:{sent.source}:{error}") == b"1"
