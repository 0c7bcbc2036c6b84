"""Calypso Pay (docs.calypso.finance; Paykilla publishes the identical payload docs).

Authentication: `Sign` = hex HMAC-SHA512 of the raw body, keyed with the webhook subscription's
`secretKey`; `Key` carries the subscription's public key, checked when `public_key` is set.

Amounts are JSON floats: the payload is parsed with `relay.events.loads`, which keeps every
number's digits as a Decimal, so `0.123456789012345678` reaches `payment.amount` unchanged.

Amounts (seed 002's per-event parameter tables): `amount` is the invoice's amount, except in
INVOICE_FUNDS_RECEIVED_FOR_INVOICE, INVOICE_COMPLIANCE_CHECK/PENDING_COMPLIANCE and
INVOICE_COMPLIANCE_DECLINED, where it is "amount of received money to invoice wallet": there it
is `amount_received` (and the invoice's amount is not sent). INVOICE_PAID and
INVOICE_MEMPOOL_FOUND add `realAmount`, "amount of money that client really paid": also
`amount_received`.

Review reasons: INVOICE_PENDING_INTERVENTION is Calypso's "intervention" state, of two types,
Underpay and Overpay (docs.calypso.finance "How to manage interventions via API"; the invoice
state PENDING_INTERVENTION adds "funds were transferred from different client accounts"). The
webhook does not say which ("use Get a Specific Invoice"), so the reason is `underpaid` or
`overpaid` when the payload carries both `amount` and `realAmount` that differ, else `other`.
The compliance checks are `compliance`.

Dedupe key: the envelope `id`, Calypso's event id: the same on each of its 19 retries and new
for every event (`requestId` is the subscription's id, not the event's). Without one: the
invoice (`parentExternalId`) + event type + transaction hash, then a digest of the body.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field

from relay.config.types import ApiUrl, ReconcileConfig, Secrets, SourceConfig
from relay.events import PaymentEvent, dumps
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    SampleRequest,
    any_secret_matches,
    as_dict,
    bad_signature,
    body_digest,
    check_json_object,
    decode_signature,
    first,
    hmac_digest,
    parse_json_object,
    safe_time,
    same_text,
    scalar,
)
from relay.reconcile_api import BAD_ANSWER, ApiError, StatusAnswer, as_object, call_api

_TYPES = {
    "INVOICE_CREATE_INVOICE": "payment.created",
    "INVOICE_CREATE_UNLIMITED_INVOICE": "payment.created",
    "INVOICE_MEMPOOL_FOUND": "payment.pending",
    "INVOICE_FUNDS_RECEIVED_FOR_INVOICE": "payment.pending",
    "INVOICE_PAID": "payment.paid",
    "INVOICE_TRANSLATION_TO_ACCOUNT_COMPLETED": "payment.completed",
    "INVOICE_PENDING_INTERVENTION": "payment.review",  # over- or under-payment
    # The event list says PENDING_COMPLIANCE, the payload docs say COMPLIANCE_CHECK: take both.
    "INVOICE_PENDING_COMPLIANCE": "payment.review",
    "INVOICE_COMPLIANCE_CHECK": "payment.review",
    "INVOICE_COMPLIANCE_DECLINED": "payment.failed",
    "INVOICE_EXPIRED": "payment.expired",
    # Seen in a public consumer's schemas (reference 3): the top-up flavour of the same checks.
    "TOP_UP_COMPLIANCE_CHECK": "payment.review",
    "TOP_UP_COMPLIANCE_DECLINED": "payment.failed",
}

_SAMPLES = {
    "created": "INVOICE_CREATE_INVOICE",
    "pending": "INVOICE_MEMPOOL_FOUND",
    "paid": "INVOICE_PAID",
    "completed": "INVOICE_TRANSLATION_TO_ACCOUNT_COMPLETED",
    "review": "INVOICE_PENDING_INTERVENTION",
    "expired": "INVOICE_EXPIRED",
    "failed": "INVOICE_COMPLIANCE_DECLINED",
}


# Events whose `amount` is what was received, not the invoice's amount.
_AMOUNT_IS_RECEIVED = frozenset(
    {
        "INVOICE_FUNDS_RECEIVED_FOR_INVOICE",
        "INVOICE_COMPLIANCE_CHECK",
        "INVOICE_PENDING_COMPLIANCE",
        "INVOICE_COMPLIANCE_DECLINED",
        "TOP_UP_COMPLIANCE_CHECK",
        "TOP_UP_COMPLIANCE_DECLINED",
    }
)
_COMPLIANCE = frozenset(
    {"INVOICE_PENDING_COMPLIANCE", "INVOICE_COMPLIANCE_CHECK", "TOP_UP_COMPLIANCE_CHECK"}
)


class CalypsoReconcile(ReconcileConfig):
    """`reconcile:` of a Calypso source: the API has its own key pair (not the webhook
    subscription's) and acts for one merchant `account`."""

    api_url: ApiUrl = "https://api.calypso.finance"
    account: str = Field(min_length=1)  # the merchant account id the requests name
    api_key: str = Field(min_length=1)  # the public key, sent in `Key`
    api_secret: str = Field(min_length=1)  # signs each request body (`Sign`)


class CalypsoConfig(SourceConfig):
    provider: Literal["calypso"]
    secret_key: Secrets
    public_key: str = ""  # when set, the `Key` header must equal it
    reconcile: CalypsoReconcile | None = None  # SPEC 11: fetch_status below


class CalypsoProvider(Provider):
    kind = "calypso"
    Config = CalypsoConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLES)
    config: CalypsoConfig

    def verify(self, request: InboundRequest) -> None:
        given = request.header("sign")
        if not given:
            raise bad_signature("Sign header missing")
        if self.config.public_key and not same_text(self.config.public_key, request.header("key")):
            raise bad_signature("Key header is not the configured public_key")
        candidate = decode_signature(given, "hex")
        if not candidate or not any_secret_matches(
            self.config.secret_key, request.body, [candidate], "sha512"
        ):
            raise bad_signature("Sign matches no configured secret_key")
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        envelope = parse_json_object(request.body)
        data = as_dict(envelope.get("data"))
        event_type = scalar(first(envelope.get("eventType"), data.get("type")))
        name = None if event_type is None else str(event_type)
        fiat = data.get("fiatAmount")
        # `fiatAmount` is a number in some events and an object in others.
        fiat_amount = (
            first(as_dict(fiat).get("amount"), as_dict(fiat).get("value"))
            if isinstance(fiat, dict)
            else fiat
        )
        fiat_currency = first(
            data.get("fiatCurrency"), data.get("fiatcurrency"), as_dict(fiat).get("currency")
        )
        tx_hash = scalar(data.get("transactionHash"))
        upper = (name or "").upper()
        kind = _TYPES.get(upper, "payment.other")
        amount, received = scalar(data.get("amount")), scalar(data.get("realAmount"))
        if upper in _AMOUNT_IS_RECEIVED:
            amount, received = None, amount
        return [
            self.event(
                request,
                dedupe_key=_dedupe_key(envelope, data, name, tx_hash, request.body),
                type=kind,
                provider_event=name,
                occurred_at=safe_time(
                    scalar(first(envelope.get("createdDate"), data.get("createdDate")))
                ),
                payment={
                    "id": scalar(data.get("parentExternalId")),
                    "reference": scalar(data.get("externalId")),
                    "amount": amount,
                    "amount_received": received,
                    "currency": scalar(data.get("currency")),
                    "fiat_amount": scalar(fiat_amount),
                    "fiat_currency": scalar(fiat_currency),
                    "tx_hash": tx_hash,
                    "description": scalar(first(data.get("description"), data.get("message"))),
                    "review_reason": review_reason(upper, amount, received),
                },
                data=envelope,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        event_type = _SAMPLES[event]
        created = safe_time(now - 120) or ""
        data: dict[str, Any] = {
            "type": event_type,
            "parentExternalId": 3,
            "externalId": "order-1001",
            "idempotencyKey": "5b0ca8da-6af4-4a1c-9efd-5cbfc19ace09",
            "amount": Decimal("0.01"),
            "currency": "ETH",
            "fiatCurrency": "USD",
            "fiatAmount": Decimal("25.40"),
            "message": "Invoice example",
            "createdDate": created.removesuffix("Z"),  # Calypso sends no zone
        }
        if event in ("pending", "paid"):
            data["realAmount"] = Decimal("0.01")
            data["transactionHash"] = (
                "0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad43550bfbaf41bb1"
            )
        envelope = {
            "requestId": "bf9348b7-2c14-46d7-868c-b597852da319",
            "id": int(now * 1000) % 2_000_000_000,
            "createdDate": (safe_time(now) or "").removesuffix("Z"),
            "level": "SUCCESS",
            "service": "INVOICE",
            "eventType": event_type,
            "data": data,
        }
        body = dumps(envelope)
        headers = {
            "Content-Type": "application/json",
            "Sign": hmac_digest(self.config.secret_key[0], body, "sha512").hex(),
        }
        if self.config.public_key:
            headers["Key"] = self.config.public_key
        return SampleRequest(body=body, headers=headers)


def review_reason(event_type: str, amount: Any, received: Any) -> str | None:
    """Why a review event needs a person (see the module docstring); None for other events."""
    if event_type in _COMPLIANCE:
        return "compliance"
    if _TYPES.get(event_type) != "payment.review":
        return None
    try:
        due, got = Decimal(str(amount)), Decimal(str(received))
    except ArithmeticError:  # decimal.InvalidOperation: an amount not sent (None) or not a number
        return "other"
    if not (due.is_finite() and got.is_finite()) or due == got:
        return "other"  # e.g. "funds were transferred from different client accounts"
    return "underpaid" if got < due else "overpaid"


def _dedupe_key(
    envelope: dict[str, Any], data: dict[str, Any], name: str | None, tx_hash: Any, body: bytes
) -> str:
    event_id = scalar(envelope.get("id"))
    if event_id is not None and event_id != "":
        return f"id:{event_id}"
    invoice = scalar(data.get("parentExternalId"))
    if invoice is not None:
        return f"invoice:{invoice}:{name}:{tx_hash}"
    return f"body:{body_digest(body)}"


# --- reconciliation (SPEC 11): the status API -------------------------------------------------

# Invoice `state` (docs.calypso.finance general/enum-descriptions, acquiring/invoices).
_API_STATES = {
    "PENDING_PAYMENT": "payment.created",
    "MEM_POOL_FOUND": "payment.pending",
    "PAID": "payment.paid",
    "COMPLETED": "payment.completed",
    "PENDING_INTERVENTION": "payment.review",
    "PENDING_COMPLIANCE_CHECK": "payment.review",
    "DECLINED": "payment.failed",
    "ARCHIVED": "payment.cancelled",  # "deleted by merchant"
    "EXPIRED": "payment.expired",  # not in the enum: the webhooks have INVOICE_EXPIRED
}


async def fetch_status(
    session: aiohttp.ClientSession, config: CalypsoConfig, payment_id: str
) -> StatusAnswer:
    """Calypso's "Get a specific Invoice", `POST {api_url}/api/v1/invoice` with the body
    `{"account", "timestamp", "payload": {"id"}}`, as docs.calypso.finance documents it
    (api-reference/invoice-api; reference/authentification; guides/.../get-started-with-api):
    headers `Key` (the API public key) and `Sign` = hex HMAC-SHA512 of the body keyed with the
    API secret key; `timestamp` is Unix ms, within 3 minutes of Calypso's clock. The answer is
    an InvoiceDTO whose `state` is PENDING_PAYMENT, MEM_POOL_FOUND, PAID,
    PENDING_INTERVENTION, COMPLETED, ARCHIVED, PENDING_COMPLIANCE_CHECK or DECLINED; amounts
    are JSON numbers, read with exact digits. Documented errors: 400 and 500 with a
    PublicGatewayErrorResponse.

    Not documented: the answer to wrong keys (401/403 are read as such; a 400 is an error of
    this payment), a rate limit, an expired state (the webhooks have INVOICE_EXPIRED: EXPIRED
    is accepted), and whether `id` is the webhooks' `parentExternalId` (it is used as such).
    The webhook's dedupe key is its envelope `id`, which no status answer carries: the
    reconciled event has a key of its own, and the claim script's per-stage mark
    (relay.ledger.record) makes the later webhook of that stage a duplicate.
    """
    if config.reconcile is None:
        raise ValueError("this source has no reconcile: section")
    settings = config.reconcile
    body = dumps(
        {
            "account": settings.account,
            "timestamp": int(time.time() * 1000),
            "payload": {"id": payment_id},
        }
    )
    answer = as_object(
        await call_api(
            session,
            "POST",
            f"{settings.api_url}/api/v1/invoice",
            headers={
                "Content-Type": "application/json",
                "Key": settings.api_key,
                "Sign": hmac_digest(settings.api_secret, body, "sha512").hex(),
            },
            body=body,
            timeout=settings.timeout,
        ),
        "the answer",
    )
    state = scalar(answer.get("state"))
    if state is None:
        raise ApiError(BAD_ANSWER, "the answer has no invoice state")
    return StatusAnswer(
        type=_API_STATES.get(str(state).upper()),
        provider_event=str(state),
        dedupe_key=f"reconciled:{payment_id}:{str(state).upper()}",
        data=answer,
        payment={
            "id": payment_id,
            "reference": scalar(answer.get("externalId")),
            "amount": scalar(answer.get("amount")),
            "currency": scalar(answer.get("currency")),
            "fiat_amount": scalar(answer.get("fiatAmount")),
            "fiat_currency": scalar(answer.get("fiatCurrency")),
            "tx_hash": scalar(answer.get("lastDepositHash")),
            "description": scalar(answer.get("description")),
        },
        # Not `createdDate` (the invoice's creation): the answer says not when the state began.
    )
