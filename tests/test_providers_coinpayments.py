"""CoinPayments v2: BOM-prefixed base64 HMAC-SHA256 over method, URL, client, timestamp and body.

What the ingress accepts and rejects (signatures, secrets, tokens, timestamps) is one table in
tests/test_provider_rejections.py; this module tests the rest (normalization, configuration).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.providers import PROVIDERS, InboundRequest, Rejected
from relay.providers.coinpayments import CoinpaymentsProvider, signature
from tests.conftest import TEST_SECRETS, make_config

DATA = Path(__file__).parent / "data" / "coinpayments"
URL = "https://relay.example.com/hooks/coinpayments"
CLIENT = "dc6a16e545c34187ba21a9edbbe484a5"
SECRET = TEST_SECRETS["COINPAYMENTS_CLIENT_SECRET"]
SOURCE = {
    "provider": "coinpayments",
    "client_id": CLIENT,
    "client_secret": ["${COINPAYMENTS_CLIENT_SECRET}", "${COINPAYMENTS_CLIENT_SECRET_2}"],
    "notification_url": URL,
}
BODY = (DATA / "invoice_created_docs.json").read_bytes()


def stamp(moment: float | None = None) -> str:
    return datetime.fromtimestamp(moment or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S")


def headers(
    body: bytes, secret: str = SECRET, when: str | None = None, client: str = CLIENT
) -> dict[str, str]:
    when = when or stamp()
    return {
        "Content-Type": "application/json",
        "X-CoinPayments-Client": client,
        "X-CoinPayments-Timestamp": when,
        "X-CoinPayments-Signature": signature(secret, URL, client, when, body),
    }


def provider(**overrides: Any) -> CoinpaymentsProvider:
    loaded = make_config({"sources": {"cp": {**SOURCE, **overrides}}})
    made = PROVIDERS["coinpayments"]("cp", loaded.config.sources["cp"])
    assert isinstance(made, CoinpaymentsProvider)
    return made


def normalize(body: bytes) -> Any:
    (event,) = provider().normalize(
        InboundRequest(source="cp", body=body, headers={}, received_at=1.0)
    )
    return event


def test_dashed_client_id_in_config_matches_undashed_header() -> None:
    """A client id configured as the dashboard's dashed UUID matches the header's 32 hex digits."""
    dashed = "dc6a16e5-45c3-4187-ba21-a9edbbe484a5"
    sent = {k.lower(): v for k, v in headers(BODY).items()}
    provider(client_id=dashed).verify(InboundRequest(source="cp", body=BODY, headers=sent))


def test_tolerance_is_configurable() -> None:
    """`timestamp_tolerance: 1h` accepts a request signed ten minutes ago."""
    sent = {k.lower(): v for k, v in headers(BODY, when=stamp(time.time() - 600)).items()}
    provider(timestamp_tolerance="1h").verify(InboundRequest(source="cp", body=BODY, headers=sent))


def test_stale_reason_says_how_old() -> None:
    """A request signed 10 minutes ago is rejected as stale, "600 s old" (not "from now")."""
    now = int(time.time())
    sent = {k.lower(): v for k, v in headers(BODY, when=stamp(now - 600)).items()}
    with pytest.raises(Rejected) as rejected:
        provider().verify(InboundRequest(source="cp", body=BODY, headers=sent, received_at=now))
    assert rejected.value.error == "stale_timestamp"
    assert rejected.value.reason.endswith("is 600 s old"), rejected.value.reason


def rejected_reason(body: bytes, sent: dict[str, str], **overrides: Any) -> str:
    inbound = InboundRequest(
        source="cp", body=body, headers={k.lower(): v for k, v in sent.items()}
    )
    with pytest.raises(Rejected) as rejected:
        provider(**overrides).verify(inbound)
    assert rejected.value.error == "bad_signature"
    return rejected.value.reason


def signed_for(url: str, secret: str = SECRET, **extra: str) -> dict[str, str]:
    when = stamp()
    return {
        "X-CoinPayments-Client": CLIENT,
        "X-CoinPayments-Timestamp": when,
        "X-CoinPayments-Signature": signature(secret, url, CLIENT, when, BODY),
        **extra,
    }


def test_signature_for_the_requests_own_url_names_it() -> None:
    """Signed for the URL the request came to, not the configured notification_url: the
    reason names that URL (CoinPayments' most common mistake), not a wrong secret."""
    sent = signed_for("https://relay.example.com/hooks/cp", Host="relay.example.com")
    reason = rejected_reason(BODY, sent)
    assert reason == (
        "signature would match for URL https://relay.example.com/hooks/cp: set notification_url "
        "to the URL registered with CoinPayments"
    )


def test_signature_for_another_scheme_or_host_names_it() -> None:
    """An http URL registered while https is configured, or the host behind a proxy: named."""
    reason = rejected_reason(BODY, signed_for(URL.replace("https:", "http:")))
    assert "would match for URL http://relay.example.com/hooks/coinpayments:" in reason
    proxied = "https://pay.shop.example/hooks/coinpayments"
    sent = signed_for(proxied, **{"X-Forwarded-Host": "pay.shop.example", "Host": "10.0.0.5"})
    assert f"would match for URL {proxied}:" in rejected_reason(BODY, sent)


def test_other_host_without_a_match_says_so() -> None:
    """A wrong secret from another host: the reason names the host and notification_url."""
    sent = signed_for(URL, secret="not-the-secret", Host="other.example")
    reason = rejected_reason(BODY, sent)
    assert "came to host other.example" in reason and URL in reason
    assert "not-the-secret" not in reason and SECRET not in reason


def test_wrong_secret_reason_never_holds_a_secret() -> None:
    """Same host, wrong secret: no URL would match; the reason names neither secret."""
    sent = signed_for(URL, secret="not-the-secret", Host="relay.example.com")
    reason = rejected_reason(BODY, sent)
    assert reason.startswith("X-CoinPayments-Signature matches no configured client_secret")
    assert "would match" not in reason
    assert "not-the-secret" not in reason and SECRET not in reason


def test_docs_example_normalizes() -> None:
    """The docs' InvoiceCreated example becomes payment.created with the invoice's ids."""
    event = normalize(BODY)
    assert event.type == "payment.created"
    assert event.provider_event == "InvoiceCreated"
    assert event.payment.id == "2008d68d-0f66-44ec-8500-68d054b882b9"
    assert event.payment.reference == "0067"
    assert event.occurred_at == "2024-07-01T11:04:06.803Z"
    assert event.data == orjson.loads(BODY)


def test_minor_unit_amount_stays_in_data_only() -> None:
    """An integer minor-unit total is kept in `data` and not guessed into payment.amount."""
    event = normalize(BODY)
    assert event.payment.amount is None
    assert event.data["invoice"]["amount"]["total"] == 10000


def test_vector_body_normalizes_to_completed() -> None:
    """The reference's InvoiceCompleted vector body becomes payment.completed."""
    event = normalize((DATA / "invoice_completed_vector.json").read_bytes())
    assert event.type == "payment.completed"
    assert event.payment.reference == "0067"


def test_event_names_match_in_any_case() -> None:
    """invoicePaid, InvoicePaid and INVOICEPAID all become payment.paid."""
    for name in ("invoicePaid", "InvoicePaid", "INVOICEPAID"):
        body = orjson.dumps({"id": "n1", "type": name, "invoice": {"id": "i1"}})
        assert normalize(body).type == "payment.paid"


def test_full_event_table() -> None:
    """Every documented invoice and payment event maps per SPEC 4; others are payment.other."""
    expected = {
        "invoiceCreated": "payment.created",
        "paymentCreated": "payment.created",
        "invoicePending": "payment.pending",
        "invoicePaid": "payment.paid",
        "invoiceCompleted": "payment.completed",
        "invoiceCancelled": "payment.cancelled",
        "invoiceTimedOut": "payment.expired",
        "paymentTimedOut": "payment.expired",
        "utxoExternalReceive": "payment.other",
    }
    for name, kind in expected.items():
        assert (
            normalize(orjson.dumps({"id": "n", "type": name, "invoice": {"id": "i"}})).type == kind
        )


def test_redelivery_with_new_notification_id_is_the_same_event() -> None:
    """A re-delivery whose top-level id changed but whose invoice did not keeps its event id."""
    first = orjson.loads(BODY)
    second = {
        **first,
        "id": "ffffffffffffffffffffffffffffffff",
        "timestamp": "2024-07-01T11:05:00+00:00",
    }
    assert normalize(orjson.dumps(first)).id == normalize(orjson.dumps(second)).id


def test_new_invoice_state_is_a_new_event() -> None:
    """The same event type carrying a changed invoice (e.g. a new confirmation) is a new event."""
    first = orjson.loads(BODY)
    changed = {**first, "invoice": {**first["invoice"], "payments": [{"confirmations": 2}]}}
    assert normalize(orjson.dumps(first)).id != normalize(orjson.dumps(changed)).id


# The wallet webhook payload as CoinPayments documents it (CoinPaymentsNET.github.io
# openapi/components/responses/wallets/wallet-notification-payload.yaml: its example ids, hash
# and address), with the amounts as strings as CoinPaymentsNet/examples
# MerchantWalletNotification.cs types them; the amounts and counts are ours.
WALLET = {
    "walletId": "4ca18e8e-915b-4a69-a17a-0b0b666858a7",
    "address": "myGTmrMtU6vUULkYRCDxJMggF7egsXhcTi",
    "transactionId": "cb44e78f-a97b-44b5-a23d-1e3b025aab47",
    "txHash": "9d9dd1f6f4a62388797e6beeb76c1a3c34d41942303ce6fb49177d3c88a74d11",
    "transactionType": "UtxoExternalReceive",
    "amount": "0.00150000",
    "symbol": "BTC",
    "coinPaymentsFee": "0.00000750",
    "coinPaymentsFeeSymbol": "BTC",
    "blockchainFee": "0",
    "blockchainFeeSymbol": "BTC",
    "totalAmount": "0.00150750",
    "totalAmountSymbol": "BTC",
    "nativeAmount": "97.52",
    "coinPaymentsFeeNativeAmount": "0.49",
    "blockchainFeeNativeAmount": "0",
    "totalNativeAmount": "98.01",
    "nativeSymbol": "USD",
    "confirmations": 2,
    "requiredConfirmations": 2,
}


def test_wallet_receive_is_paid_with_currency_fiat_and_event() -> None:
    """A confirmed UtxoExternalReceive is payment.paid with its symbol, fiat value, event name,
    hash and exact amount (issue 14: it was payment.other with no currency)."""
    event = normalize(orjson.dumps(WALLET))
    assert (event.type, event.provider_event) == ("payment.paid", "UtxoExternalReceive")
    payment = event.payment
    assert (payment.id, payment.amount, payment.currency) == (
        WALLET["transactionId"],
        "0.00150000",
        "BTC",
    )
    assert (payment.fiat_amount, payment.fiat_currency) == ("97.52", "USD")
    assert (payment.amount_received, payment.tx_hash, payment.confirmations) == (
        "0.00150000",
        WALLET["txHash"],
        2,
    )


def test_wallet_receive_short_of_confirmations_is_pending() -> None:
    """Fewer confirmations than required: payment.pending, and each new count a new event."""
    one = normalize(orjson.dumps({**WALLET, "confirmations": 1}))
    zero = normalize(orjson.dumps({**WALLET, "confirmations": 0}))
    assert one.type == zero.type == "payment.pending"
    assert one.id != zero.id != normalize(orjson.dumps(WALLET)).id
    assert normalize(orjson.dumps(WALLET)).id == normalize(orjson.dumps(WALLET)).id


def test_every_wallet_receive_type_is_funds_received() -> None:
    """Each documented receive type, in either case, is paid when confirmed; spends are other."""
    receives = (
        "InternalReceive",
        "utxoExternalReceive",
        "AccountBasedExternalReceive",
        "AccountBasedExternalTokenReceive",
        "SameUserReceive",
        "ReceiveTestFundsFromPool",
    )
    for name in receives:
        assert normalize(orjson.dumps({**WALLET, "transactionType": name})).type == "payment.paid"
    for name in (
        "ExternalSpend",
        "InternalSpend",
        "SameUserSpend",
        "AccountBasedTokenSpend",
        "Conversion",
        "AutoSweeping",
        "ReturnTestFundsToPool",
        "Unknown",
    ):
        event = normalize(orjson.dumps({**WALLET, "transactionType": name, "spendRequestId": "s"}))
        assert (event.type, event.payment.currency, event.payment.amount_received) == (
            "payment.other",
            "BTC",
            None,
        ), name
        assert event.provider_event == name


def test_internal_receive_without_counts_is_paid() -> None:
    """An internal transfer carries no confirmation counts: the funds are in, payment.paid."""
    body = {k: v for k, v in WALLET.items() if "onfirmations" not in k}
    assert normalize(orjson.dumps({**body, "transactionType": "InternalReceive"})).type == (
        "payment.paid"
    )


def test_wallet_integer_amount_is_not_guessed() -> None:
    """A bare JSON integer wallet amount (possibly minor units) stays in data only."""
    event = normalize(orjson.dumps({**WALLET, "amount": 150000, "nativeAmount": 9752}))
    assert (event.payment.amount, event.payment.fiat_amount) == (None, None)
    assert event.data["amount"] == 150000
