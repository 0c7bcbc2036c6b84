"""Cryptomus payment webhooks (Heleket, the platform's other brand: relay.providers.heleket).

Follows Cryptomus' documentation (doc.cryptomus.com `payments/webhook`: the fields, the
statuses a webhook carries, `sign`; and the same platform's doc.heleket.com
`methods/payments/payment-statuses` and `general/request-format`) and the platform's own code:
CryptomusCom/api-php-sdk `src/RequestBuilder.php` (`sign = md5(base64_encode($body) . $key)`
over `json_encode($data, JSON_UNESCAPED_UNICODE)`), and Heleket's official SDKs, which verify
these webhooks: Heleket/php-sdk `src/Webhook/WebhookVerifier.php`, `src/Signature/Signer.php`,
`src/Enum/PaymentStatus.php`, `docs/06-webhooks.md`, `docs/10-reference.md`, and Heleket/go-sdk
`webhook/verifier.go` (cuts `sign` out of the raw body, keeping every other byte).

Authentication: the `sign` field of the JSON body = md5 (hex) of base64 of the body WITHOUT
`sign`, as PHP's `json_encode($data, JSON_UNESCAPED_UNICODE)` writes it, followed by the API key
(the payment key for `payment`/`wallet` webhooks, the payout key for `payout` ones: list both in
`api_key`, which also allows rotation). The provider signs a re-serialization, so (only for
that) the relay parses the body and writes it again exactly as that PHP does
(relay.providers.jsonforms: key order kept, `/` escaped as a backslash and `/`, non-ASCII kept
but U+2028 and U+2029 escaped, PHP's spelling of numbers); it also accepts the same digest over
the raw body with its `sign` member cut out (Heleket's Go SDK) and over the docs' Node variant
(`JSON.stringify(data)` with every `/` escaped). Each covers every field; comparisons are
constant-time, over every form and key. A body with no `sign`, or that is not a JSON object, is
answered 401, as is one over 64 KiB (writing a body again costs far more than a digest, so a
stranger's large bodies are not worked on). Cryptomus gives one sending address, 91.227.144.54
(on the webhook page, as integrations quote it; that part of the page was not in what we could
read): put it in `allowed_ips`.

Statuses (`status`) and the canonical types:

| `status` | type | review_reason |
|---|---|---|
| check (waiting for the transaction to appear on-chain) | created | |
| process (processing) | pending | |
| confirm_check (seen on-chain, waiting for confirmations) | pending | |
| paid (exact amount; the merchant's balance is credited) | completed | |
| paid_over (more than asked: successful, but someone must settle the excess) | review | overpaid |
| wrong_amount (less than asked; final) | review | underpaid |
| wrong_amount_waiting (less than asked; more may still come) | review | underpaid |
| fail (payment error) | failed | |
| system_fail (error on the provider's side) | failed | |
| cancel (the client did not pay) | cancelled | |
| locked (funds held by the AML programme) | review | compliance |
| refund_process, refund_fail, refund_paid | review | other |
| anything else, and every `type: payout` webhook (money out, not a payment) | other | |

Refunds map to review, not cancelled: SPEC 11 would mark a cancellation after completion stale,
and a refund is news for a person.

Fields: `payment.id` is `uuid`; `reference` `order_id`; `amount`/`currency` the invoice's
`amount`/`currency` (the currency may be fiat, e.g. USD); `amount_received` `payment_amount`
(what the client actually paid; `merchant_amount`, net of `commission`, stays in `data`);
`fiat_amount` `payment_amount_usd` with `fiat_currency` USD; `network`; `tx_hash` `txid` (absent
for a payment inside the platform); `description` `additional_data`. Webhooks carry no time, so
`occurred_at` is null.

Dedupe key: no event id is sent. `type` + `uuid` + `status` + `payment_amount` + `txid`: the
platform re-sends a webhook until it is answered 200, and the resend API (`/v1/payment/resend`)
sends it again, with the same payload: one event. A second partial payment changes
`payment_amount` (wrong_amount_waiting, then paid or wrong_amount): a new event. Heleket's SDK
keys on `(uuid, status)` alone, which would merge two partial payments. Without a `uuid`: a body
digest. The retry schedule is not documented.

Status API: `POST https://api.cryptomus.com/v1/payment/info` with body `{"uuid": ...}` (or
`{"order_id": ...}`) and headers `merchant` and `sign` (md5 of base64 of the body + the payment
API key), answering the same fields and `payment_status`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from decimal import Decimal
from typing import Any, ClassVar, Literal

from relay.config.types import Secrets, SourceConfig
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers import jsonforms
from relay.providers.base import (
    Provider,
    Rejected,
    SampleRequest,
    bad_signature,
    body_digest,
    check_json_object,
    decode_signature,
    parse_json_object,
    scalar,
)

WEBHOOK_IPS = ("91.227.144.54",)
# A webhook is about 1 KiB. Writing a body again costs far more than an HMAC of it, so a larger
# body is not worked on at all (a stranger's 256 KiB would cost ~0.1 s each).
MAX_SIGNED_BYTES = 65_536

_STATUSES: dict[str, tuple[str, str | None]] = {
    "check": ("payment.created", None),
    "process": ("payment.pending", None),
    "confirm_check": ("payment.pending", None),
    "paid": ("payment.completed", None),
    "paid_over": ("payment.review", "overpaid"),
    "wrong_amount": ("payment.review", "underpaid"),
    "wrong_amount_waiting": ("payment.review", "underpaid"),
    "fail": ("payment.failed", None),
    "system_fail": ("payment.failed", None),
    "cancel": ("payment.cancelled", None),
    "locked": ("payment.review", "compliance"),
    "refund_process": ("payment.review", "other"),
    "refund_fail": ("payment.review", "other"),
    "refund_paid": ("payment.review", "other"),
}


class MerchantConfig(SourceConfig):
    """Keys shared by the platform's brands (Cryptomus, Heleket)."""

    api_key: Secrets  # the payment API key (and the payout key, for payout webhooks)


class CryptomusConfig(MerchantConfig):
    provider: Literal["cryptomus"]


def sign(unsigned_json: str, api_key: str) -> str:
    """md5(base64(json) + key), hex: the platform's request and webhook signature."""
    encoded = base64.b64encode(unsigned_json.encode()).decode()
    return hashlib.md5((encoded + api_key).encode(), usedforsecurity=False).hexdigest()


def signed_forms(body: bytes) -> list[str]:
    """The serializations of the body without `sign` that the platform's code signs."""
    value = jsonforms.parse_exact(body)
    if not isinstance(value, dict):
        return []
    unsigned = {key: item for key, item in value.items() if key != "sign"}
    forms: list[str] = []
    php = jsonforms.php_json_encode(unsigned, escape_unicode=False)
    if php is not None:
        forms.append(php)
    raw = jsonforms.members_without(body.decode(), "sign")
    if raw is not None and raw not in forms:
        forms.append(raw)
    node = jsonforms.js_stringify(unsigned).replace("/", "\\/")
    if node not in forms:
        forms.append(node)
    return forms


def classify(data: dict[str, Any]) -> tuple[str, str | None]:
    if str(scalar(data.get("type")) or "").casefold() == "payout":
        return "payment.other", None
    return _STATUSES.get(str(scalar(data.get("status")) or "").casefold(), ("payment.other", None))


def dedupe_key(data: dict[str, Any], body: bytes) -> str:
    uuid = scalar(data.get("uuid"))
    if uuid is None or uuid == "":
        return f"body:{body_digest(body)}"
    amount = scalar(data.get("payment_amount"))
    with contextlib.suppress(ArithmeticError):  # 1.50 and 1.5000 are one amount
        amount = Decimal(str(amount)).normalize() if amount is not None else None
    kind, status, txid = (scalar(data.get(key)) for key in ("type", "status", "txid"))
    return f"{kind}:{uuid}:{status}:{amount}:{txid}"


class CryptomusProvider(Provider):
    kind = "cryptomus"
    Config: ClassVar[type[SourceConfig]] = CryptomusConfig
    brand: ClassVar[str] = "Cryptomus"
    sample_events: ClassVar[tuple[str, ...]] = (
        "created",
        "pending",
        "completed",
        "cancelled",
        "failed",
        "review",
    )
    config: MerchantConfig

    def verify(self, request: InboundRequest) -> None:
        if len(request.body) > MAX_SIGNED_BYTES:
            raise bad_signature(f"body over {MAX_SIGNED_BYTES} bytes, larger than any webhook")
        try:
            check_json_object(request.body)
            parsed = parse_json_object(request.body)
        except Rejected:
            raise bad_signature("body is not a JSON object, so it carries no sign") from None
        given = scalar(parsed.get("sign"))
        if not isinstance(given, str) or not given:
            raise bad_signature("sign field missing from the body")
        candidate = decode_signature(given, "hex")
        if not candidate:
            raise bad_signature("sign is not hex")
        try:
            forms = signed_forms(request.body)
        except (ValueError, RecursionError):
            raise bad_signature("body cannot be read as the signer wrote it") from None
        found = False
        for form in forms:  # every form and key is compared: timing tells nothing
            for key in self.config.api_key:
                expected = bytes.fromhex(sign(form, key))
                found |= hmac.compare_digest(expected, candidate)
        if not found:
            raise bad_signature(f"sign matches no configured {self.brand} api_key")

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        data = parse_json_object(request.body)
        canonical, reason = classify(data)
        usd = scalar(data.get("payment_amount_usd"))
        return [
            self.event(
                request,
                dedupe_key=dedupe_key(data, request.body),
                type=canonical,
                provider_event=scalar(data.get("status")),
                payment={
                    "id": scalar(data.get("uuid")),
                    "reference": scalar(data.get("order_id")),
                    "amount": scalar(data.get("amount")),
                    "currency": scalar(data.get("currency")),
                    "amount_received": scalar(data.get("payment_amount")),
                    "fiat_amount": usd,
                    "fiat_currency": "USD" if usd is not None and usd != "" else None,
                    "network": scalar(data.get("network")),
                    "tx_hash": scalar(data.get("txid")),
                    "description": scalar(data.get("additional_data")),
                    "review_reason": reason,
                },
                data=data,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        payload = sample_payload(event, now)
        unsigned = jsonforms.php_json_encode(payload, escape_unicode=False) or ""
        payload["sign"] = sign(unsigned, self.config.api_key[0])
        # Sent as the platform's PHP writes it: compact, `\/` in URLs.
        body = jsonforms.php_json_encode(payload, escape_unicode=False) or ""
        return SampleRequest(body=body.encode(), headers={"Content-Type": "application/json"})


_SAMPLE_STATUS = {
    "created": "check",
    "pending": "confirm_check",
    "completed": "paid",
    "cancelled": "cancel",
    "failed": "fail",
    "review": "wrong_amount_waiting",
}


def sample_payload(event: str, now: float) -> dict[str, Any]:
    """A webhook with the documented fields, in the documented order."""
    status = _SAMPLE_STATUS[event]
    paid = {"check": "0.00000000", "cancel": "0.00000000", "wrong_amount_waiting": "1.50000000"}
    amount = paid.get(status, "3.00000000")
    payload: dict[str, Any] = {
        "type": "payment",
        # Each sample its own invoice (a later sample of a lower stage would be stale).
        "uuid": f"62f88b36-a9d5-4fa6-aa26-{int(now) % 10**10:010d}{list(_SAMPLE_STATUS).index(event):02d}",
        "order_id": "order-1001",
        "amount": "3.00000000",
        "payment_amount": amount,
        "payment_amount_usd": "0.23" if amount != "0.00000000" else "0.00",
        "merchant_amount": "2.94000000",
        "commission": "0.06000000",
        "is_final": status in ("paid", "cancel", "fail"),
        "status": status,
        "from": "THgEWubVc8tPKXLJ4VZ5zbiiAK7AgqSeGH",
        "wallet_address_uuid": None,
        "network": "tron",
        "currency": "TRX",
        "payer_currency": "TRX",
        "additional_data": "https://shop.example.com/orders/1001",
    }
    if status in ("confirm_check", "paid", "wrong_amount_waiting"):
        payload["txid"] = "6f0d9c8374db57cac0d806251473de754f361c83a03cd805f74aa9da3193486b"
    return payload
