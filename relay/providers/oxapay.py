"""OxaPay (oxapay.com): JSON webhooks signed in the `HMAC` header.

Authentication: `HMAC` = lowercase hex HMAC-SHA512 of the raw body, keyed with the **merchant
API key** for payment callbacks and the **payout API key** for payout callbacks
(docs.oxapay.com/webhook "Validating Callbacks"; oxapaysdk/php-sdk `src/Endpoints/Webhook.php`
`verify`, which hashes `php://input` and picks the key by the payload's `type`; the Python SDK
docs say the same). Every configured key is tried before the unsigned `type` is trusted, and a
`type: payout` body must match a payout key, any other a merchant key, so a payout key cannot
pass a payment off (as izadoesdev/oxapay-ts also checks). Keys are lists (rotation).

Payload (docs.oxapay.com/webhook): `track_id`, `type` (invoice, white_label, static_address,
payment_link, donation, payout), `status`, `amount` + `currency` (the invoice), `order_id` (the
merchant's, the reference), `email`, `description`, `date` (Unix seconds) and `txs[]`, each with
`tx_hash`, `sent_amount`, `received_amount`, `currency`, `network`, `confirmations`, `status`,
`date`. The legacy API (docs.oxapay.com/legacy/webhook) sends camelCase (`trackId`,
`orderId`, `payAmount`, `payCurrency`, `txID`); both spellings are read.

Statuses (any case): new, waiting -> created; paying, confirming -> pending (a transaction
seen, not yet confirmed: OxaPay says wait for the next callback); paid -> completed (confirmed,
OxaPay takes on the risk and credits the balance); manual_accept -> completed (the merchant
accepted an underpayment); underpaid -> review (`review_reason` underpaid); expired -> expired;
failed -> failed; refunding, refunded -> other; every payout callback -> other (not a payment).
`amount_received` is the sum of the transactions' `received_amount` when they are all in the
invoice's currency (else unknown); `tx_hash`, `network`, `confirmations` are the last
transaction's.

Answer: OxaPay counts a delivery as done on HTTP 200 with the body `ok` (else it retries, at
most 5 times): `stored_answer` gives exactly that, as text/plain.

Dedupe key: `track_id` + `type` + status + each transaction's hash, status and confirmations.
OxaPay retries up to 5 times (about 1 min, 3 min, 30 min, 3 h apart) with the same body: one
event. A second partial payment adds a transaction: a new event. Without a track id, a digest.

Status API: `GET https://api.oxapay.com/v1/payment/{track_id}` with the `merchant_api_key`
header ("Payment Information").
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator

from relay.config.types import Secrets, SourceConfig
from relay.events import PaymentEvent, dumps
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    SampleRequest,
    any_secret_matches,
    as_dict,
    bad_signature,
    body_digest,
    decode_signature,
    first,
    hmac_digest,
    parse_json_object,
    safe_time,
    scalar,
)


def _empty_is_none(value: Any) -> Any:
    """An optional secret left empty (`${VAR:-}`) is unset, not an error."""
    return None if value in ("", []) else value


OptionalSecrets = Annotated[Secrets | None, BeforeValidator(_empty_is_none)]

_STATUSES = {
    "new": "payment.created",
    "waiting": "payment.created",
    "paying": "payment.pending",
    "confirming": "payment.pending",
    "paid": "payment.completed",
    "manual_accept": "payment.completed",
    "underpaid": "payment.review",
    "expired": "payment.expired",
    "failed": "payment.failed",
    "refunding": "payment.other",
    "refunded": "payment.other",
}

# Canonical short name -> the OxaPay status a sample carries.
_SAMPLES = {
    "created": "Waiting",
    "pending": "Paying",
    "completed": "Paid",
    "review": "Underpaid",
    "expired": "Expired",
    "failed": "Failed",
    "other": "Refunded",
}
_SAMPLE_TX = "0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad43550bfbaf41bb1"


class OxapayConfig(SourceConfig):
    provider: Literal["oxapay"]
    merchant_api_key: Secrets  # Merchant service -> API key: signs payment callbacks
    payout_api_key: OptionalSecrets = None  # Payout service -> API key: signs payout callbacks


def _get(obj: dict[str, Any], *names: str) -> Any:
    """The first of these spellings (snake_case, legacy camelCase) present as a scalar."""
    return first(*(scalar(obj.get(name)) for name in names))


def _received(currency: Any, txs: list[dict[str, Any]]) -> str | None:
    """Sum of the transactions' received amounts, when all are in the invoice's currency."""
    if not txs or any(_get(tx, "currency") != currency for tx in txs):
        return None
    try:
        total = sum(
            (Decimal(str(_get(tx, "received_amount", "receivedAmount"))) for tx in txs),
            Decimal(0),
        )
    except (ArithmeticError, ValueError):  # InvalidOperation, Overflow
        return None
    return str(total) if total.is_finite() else None


class OxapayProvider(Provider):
    kind = "oxapay"
    Config = OxapayConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLES)
    config: OxapayConfig

    def verify(self, request: InboundRequest) -> None:
        given = request.header("hmac")
        if not given:
            raise bad_signature("HMAC header missing")
        candidate = decode_signature(given, "hex")
        if not candidate:
            raise bad_signature("HMAC is not hex")
        body = request.body
        merchant = any_secret_matches(self.config.merchant_api_key, body, [candidate], "sha512")
        payout = any_secret_matches(self.config.payout_api_key or [], body, [candidate], "sha512")
        if not (merchant or payout):
            raise bad_signature("HMAC matches no configured merchant_api_key or payout_api_key")
        is_payout = str(scalar(parse_json_object(body).get("type"))).casefold() == "payout"
        if is_payout and not payout:
            raise bad_signature("a payout callback must be signed with a payout_api_key")
        if not is_payout and not merchant:
            raise bad_signature("a payment callback must be signed with a merchant_api_key")

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        payload = parse_json_object(request.body)
        listed = payload.get("txs")
        txs = (
            [as_dict(tx) for tx in listed if isinstance(tx, dict)]
            if isinstance(listed, list)
            else []
        )
        last = txs[-1] if txs else {}
        status, kind = _get(payload, "status"), _get(payload, "type")
        name = None if status is None else str(status)
        if str(kind).casefold() == "payout":
            canonical = "payment.other"
        else:
            canonical = _STATUSES.get((name or "").strip().casefold(), "payment.other")
        track_id = _get(payload, "track_id", "trackId")
        tx_hash = first(_get(last, "tx_hash", "txHash"), _get(payload, "tx_hash", "txID"))
        if track_id is not None:
            seen = "|".join(
                f"{_get(tx, 'tx_hash', 'txHash')}/{_get(tx, 'status')}/{_get(tx, 'confirmations')}"
                for tx in txs
            )
            key = f"track:{track_id}:{kind}:{name}:{seen or tx_hash}"
        else:
            key = f"body:{body_digest(request.body)}"
        currency = _get(payload, "currency")
        payment = {
            "id": track_id,
            "reference": _get(payload, "order_id", "orderId"),
            "amount": _get(payload, "amount"),
            "amount_received": _received(currency, txs),
            "currency": currency,
            "network": first(_get(last, "network"), _get(payload, "network")),
            "tx_hash": tx_hash,
            "confirmations": _get(last, "confirmations"),
            "description": _get(payload, "description"),
        }
        if canonical == "payment.review":
            payment["review_reason"] = "underpaid"
        occurred = first(_get(payload, "date"), _get(last, "date"))
        return [
            self.event(
                request,
                dedupe_key=key,
                type=canonical,
                provider_event=name,
                occurred_at=safe_time(occurred),
                payment=payment,
                data=payload,
            )
        ]

    def stored_answer(self, inbound_id: str, duplicate: bool) -> tuple[bytes, str] | None:
        """OxaPay counts a delivery as done only on the body `ok`."""
        del inbound_id, duplicate
        return b"ok", "text/plain"

    def sample(self, event: str, now: float) -> SampleRequest:
        status = _SAMPLES[event]
        received = {"Waiting": None, "Underpaid": "4.5", "Expired": None}.get(status, "10")
        payload: dict[str, Any] = {
            "track_id": "151811887",
            "status": status,
            "type": "invoice",
            "module_name": "OxaPay",
            "amount": Decimal(10),
            "currency": "USDT",
            "order_id": "order-1001",
            "email": "customer@example.com",
            "description": "Sample order",
            "date": int(now),
            "txs": [],
        }
        if received is not None:
            payload["txs"] = [
                {
                    "status": "confirming" if status == "Paying" else "confirmed",
                    "tx_hash": _SAMPLE_TX,
                    "sent_amount": Decimal(received),
                    "received_amount": Decimal(received),
                    "currency": "USDT",
                    "network": "Polygon Network",
                    "address": "0x9a7c1f0e3b2d4c5a6f7e8d9c0b1a2f3e4d5c6b7a",
                    "confirmations": 1 if status == "Paying" else 12,
                    "date": int(now),
                }
            ]
        body = dumps(payload)
        digest = hmac_digest(self.config.merchant_api_key[0], body, "sha512").hex()
        return SampleRequest(
            body=body, headers={"Content-Type": "application/json", "HMAC": digest}
        )
