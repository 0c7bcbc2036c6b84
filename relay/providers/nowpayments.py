"""NOWPayments (Instant Payment Notifications, IPN).

Follows NOWPayments' API documentation (documenter.getpostman.com/view/7907941/S1a32n38 and the
sandbox T1LSCRHC: "Instant payments notifications", the payment statuses and the IPN payload of
"Get payment status"; the mass-payouts T1DtdF9a for payout IPNs), its help centre
(nowpayments.zendesk.com `21395546303389-IPN-and-how-to-setup`: the sending addresses, answer
within 3000 ms, no auth on the endpoint) and NOWPayments' own code:
NowPaymentsIO/nowpayments-sdk-nodejs `src/ipn.js` (`createWebhookSignature`: HMAC-SHA512 of
`JSON.stringify(sortObjectDeep(payload))` keyed with the trimmed IPN secret, hex; verified with
`timingSafeEqual`).

Authentication: `x-nowpayments-sig` is an HMAC-SHA512 (hex) keyed with the IPN secret (Store
Settings > IPN secret key) over a RE-SERIALIZATION of the body, not its bytes: the payload with
its keys sorted, written as NOWPayments' published code writes it. So, and only because the
provider signs that, the relay parses the raw body and writes it again byte for byte as that
code does (relay.providers.jsonforms), then compares in constant time against every configured
secret. It accepts the forms NOWPayments publishes, each covering every field:

1. the Node SDK's `JSON.stringify(sortObjectDeep(body))`: keys sorted at every level, arrays
   kept, JavaScript's spelling of numbers (doubles: `0.00001`, `1e-7`, `155.38559757`),
   non-ASCII and `/` unescaped;
2. the docs' `sortObject`, the same except that it turns an array into an object keyed "0",
   "1", ... (tried only when the payload has an array);
3. the docs' PHP example: `tksort` then `json_encode($data, JSON_UNESCAPED_SLASHES)` (PHP's
   spelling of doubles, `1.0e-5`; non-ASCII escaped to ASCII);
4. the docs' Python example: `json.dumps(json.loads(body), separators=(',', ':'),
   sort_keys=True)` (Python's spelling of floats, `1e-05`; non-ASCII escaped).

The docs' older one-liner `JSON.stringify(params, Object.keys(params).sort())` is NOT accepted:
a replacer array filters nested keys too, so it would leave a nested object (`fee`) unsigned.
Because a signature covers the values as JavaScript reads them (doubles), digits past a
double's 17 significant ones are not covered (NOWPayments' own receivers have the same limit);
`payment.amount` still shows the digits as sent. A body that is not a JSON object cannot be
checked and is answered 401, as is a body over 64 KiB (an IPN is about 1 KiB; writing a body
again costs far more than an HMAC, so a stranger's large bodies are not worked on). Webhooks
come from 51.89.194.21, 51.75.77.69, 138.201.172.58 and
65.21.158.36 (the help centre): put them in `allowed_ips`.

Statuses (`payment_status`) and the canonical types:

| `payment_status` | type | review_reason |
|---|---|---|
| waiting (the initial status: waiting for the customer's payment) | created | |
| confirming (the transaction is seen on the blockchain) | pending | |
| confirmed (enough confirmations: NOWPayments has the funds) | paid | |
| sending (the funds are being sent to the merchant's wallet) | paid | |
| finished (the funds reached the merchant's wallet) | completed | |
| partially_paid (the customer sent less than the price) | review | underpaid |
| failed | failed | |
| refunded (the funds went back to the customer) | review | other |
| expired | expired | |
| anything else; payout IPNs (`batch_withdrawal_id`, `status`) | other | |

A refund maps to review, not cancelled: SPEC 11 would mark a cancellation after completion
stale, and a refund is news that needs a person.

Fields: `payment.id` is `payment_id`; `reference` `order_id`; `amount`/`currency` `pay_amount`
/`pay_currency` (what the customer is to send); `amount_received` `actually_paid`;
`fiat_amount`/`fiat_currency` `price_amount`/`price_currency`; `tx_hash` `payin_hash` (where
sent); `network` `network`; `description` `order_description`; `occurred_at` `updated_at` (else
`created_at`). Numbers keep the digits sent.

Dedupe key: no event id is sent. `payment_id` + `payment_status` + `actually_paid` +
`payin_hash`: a repeated IPN of one state is one event (the docs' "recurrent notifications":
after an error NOWPayments sends the same IPN again, by default 3 times a minute apart, as many
as set in Payment Settings > Instant Payment Notifications; and one requested again from the
dashboard); a second partial payment raises `actually_paid`, or arrives as a "repeated deposit",
its own `payment_id` with `parent_payment_id` naming the first: a new event either way.
Payouts: `id` + `status` + `hash`. Without ids: a body digest.

Status API: `GET https://api.nowpayments.io/v1/payment/{payment_id}` with header `x-api-key`
(the same fields and `payment_status`).
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

from relay.config.types import Secrets, SourceConfig
from relay.events import PaymentEvent, dumps
from relay.inbound import InboundRequest
from relay.providers import jsonforms
from relay.providers.base import (
    Provider,
    Rejected,
    SampleRequest,
    any_secret_matches,
    bad_signature,
    body_digest,
    check_json_object,
    decode_signature,
    first,
    hmac_digest,
    parse_json_object,
    safe_time,
    scalar,
)

WEBHOOK_IPS = ("51.89.194.21", "51.75.77.69", "138.201.172.58", "65.21.158.36")
# An IPN is about 1 KiB. Writing a body again costs far more than an HMAC of it, so a larger
# body is not worked on at all (a stranger's 256 KiB would cost ~0.1 s each).
MAX_SIGNED_BYTES = 65_536

_STATUSES: dict[str, tuple[str, str | None]] = {
    "waiting": ("payment.created", None),
    "confirming": ("payment.pending", None),
    "confirmed": ("payment.paid", None),
    "sending": ("payment.paid", None),
    "finished": ("payment.completed", None),
    "partially_paid": ("payment.review", "underpaid"),
    "failed": ("payment.failed", None),
    "refunded": ("payment.review", "other"),
    "expired": ("payment.expired", None),
}


class NowpaymentsConfig(SourceConfig):
    provider: Literal["nowpayments"]
    ipn_secret: Secrets  # Store Settings > IPN secret key; a list while rotating


def signed_forms(body: bytes) -> list[bytes]:
    """The serializations of the body that NOWPayments' published code signs (see above)."""
    value = jsonforms.parse_exact(body)
    forms = [jsonforms.js_stringify(value, sort_keys=True)]
    if jsonforms.has_array(value):
        forms.append(jsonforms.js_stringify(value, sort_keys=True, arrays_as_objects=True))
    php = jsonforms.php_json_encode(value, sort_keys=True, escape_slashes=False)
    if php is not None:
        forms.append(php)
    forms.append(json.dumps(json.loads(body), separators=(",", ":"), sort_keys=True))
    return list(dict.fromkeys(form.encode("utf-8", "surrogatepass") for form in forms))


def signature(secret: str, payload: Any) -> str:
    """What NOWPayments sends for `payload` (a parsed body): the Node SDK's form."""
    form = jsonforms.js_stringify(payload, sort_keys=True).encode()
    return hmac_digest(secret.strip(), form, "sha512").hex()


def classify(data: dict[str, Any]) -> tuple[str, str | None]:
    if "payment_status" not in data:
        return "payment.other", None  # a payout (mass payments) IPN
    status = str(scalar(data.get("payment_status")) or "").casefold()
    return _STATUSES.get(status, ("payment.other", None))


def _number_key(value: Any) -> str:
    """A number as a dedupe-key part: 0.50 and 0.5 are one amount."""
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    return str(number.normalize()) if number.is_finite() else str(value)


def dedupe_key(data: dict[str, Any], body: bytes) -> str:
    payment_id = scalar(data.get("payment_id"))
    if payment_id is not None and "payment_status" in data:
        paid = _number_key(scalar(data.get("actually_paid")))
        status = scalar(data.get("payment_status"))
        return f"payment:{payment_id}:{status}:{paid}:{scalar(data.get('payin_hash'))}"
    payout = scalar(data.get("id"))
    if payout is not None:
        return f"payout:{payout}:{scalar(data.get('status'))}:{scalar(data.get('hash'))}"
    return f"body:{body_digest(body)}"


class NowpaymentsProvider(Provider):
    kind = "nowpayments"
    Config = NowpaymentsConfig
    sample_events: ClassVar[tuple[str, ...]] = (
        "created",
        "pending",
        "paid",
        "completed",
        "expired",
        "failed",
        "review",
    )
    config: NowpaymentsConfig

    def verify(self, request: InboundRequest) -> None:
        given = request.header("x-nowpayments-sig")
        if not given:
            raise bad_signature("x-nowpayments-sig header missing")
        candidate = decode_signature(given, "hex")
        if not candidate:
            raise bad_signature("x-nowpayments-sig is not hex")
        if len(request.body) > MAX_SIGNED_BYTES:
            raise bad_signature(
                f"body over {MAX_SIGNED_BYTES} bytes, larger than any IPN: not checked"
            )
        try:
            check_json_object(request.body)
            forms = signed_forms(request.body)
        except (Rejected, ValueError, RecursionError):
            # NOWPayments signs the parsed payload: what is not a JSON object cannot be checked.
            raise bad_signature("body is not a JSON object, so no signature can match it") from None
        secrets = [secret.strip() for secret in self.config.ipn_secret]
        found = False
        for form in forms:  # every form is tried: timing says nothing about which one matched
            found |= any_secret_matches(secrets, form, [candidate], "sha512")
        if not found:
            raise bad_signature("x-nowpayments-sig matches no configured ipn_secret")

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        data = parse_json_object(request.body)
        canonical, reason = classify(data)
        return [
            self.event(
                request,
                dedupe_key=dedupe_key(data, request.body),
                type=canonical,
                provider_event=scalar(first(data.get("payment_status"), data.get("status"))),
                occurred_at=safe_time(
                    scalar(first(data.get("updated_at"), data.get("created_at")))
                ),
                payment={
                    "id": scalar(first(data.get("payment_id"), data.get("id"))),
                    "reference": scalar(data.get("order_id")),
                    "amount": scalar(first(data.get("pay_amount"), data.get("amount"))),
                    "currency": scalar(first(data.get("pay_currency"), data.get("currency"))),
                    "amount_received": scalar(data.get("actually_paid")),
                    "fiat_amount": scalar(data.get("price_amount")),
                    "fiat_currency": scalar(data.get("price_currency")),
                    "network": scalar(data.get("network")),
                    "tx_hash": scalar(first(data.get("payin_hash"), data.get("hash"))),
                    "description": scalar(data.get("order_description")),
                    "review_reason": reason,
                },
                data=data,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        payload = sample_payload(event, now)
        return SampleRequest(
            body=dumps(payload),
            headers={
                "Content-Type": "application/json",
                "x-nowpayments-sig": signature(self.config.ipn_secret[0], payload),
            },
        )


_SAMPLE_STATUS = {
    "created": "waiting",
    "pending": "confirming",
    "paid": "confirmed",
    "completed": "finished",
    "expired": "expired",
    "failed": "failed",
    "review": "partially_paid",
}


def sample_payload(event: str, now: float) -> dict[str, Any]:
    """An IPN shaped as the docs' example (fields in NOWPayments' order, not sorted)."""
    status = _SAMPLE_STATUS[event]
    paid = {"waiting": "0", "expired": "0", "failed": "0", "partially_paid": "0.00061"}
    when = safe_time(now) or ""
    return {
        # Each sample its own payment (a later sample of a lower stage would be stale).
        "payment_id": 5_000_000_000 + (int(now) % 10**6) * 10 + list(_SAMPLE_STATUS).index(event),
        "parent_payment_id": None,
        "invoice_id": None,
        "payment_status": status,
        "pay_address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        "payin_extra_id": None,
        "price_amount": Decimal("42.50"),
        "price_currency": "usd",
        "pay_amount": Decimal("0.00125"),
        "actually_paid": Decimal(paid.get(status, "0.00125")),
        "actually_paid_at_fiat": 0,
        "pay_currency": "btc",
        "order_id": "order-1001",
        "order_description": "Sample order from relay trigger",
        "purchase_id": "6084744717",
        "created_at": when,
        "updated_at": when,
        "outcome_amount": Decimal("0.00123"),
        "outcome_currency": "btc",
        "fee": {"currency": "btc", "depositFee": 0, "withdrawalFee": 0, "serviceFee": 0},
    }
