"""CoinGate (coingate.com): payment callbacks authenticated by the order's own `token`.

Authentication: CoinGate signs nothing. When a merchant creates an order it may pass a `token`
("your custom token to validate payment callback"); CoinGate posts it back in every callback for
that order, and the merchant compares it (developer.coingate.com/reference/api-callbacks, its
"Accepting Payment Callback" PHP and Rails examples; coingate/woocommerce-plugin
`payment_callback`/`is_token_valid`, which keeps CoinGate's token per order). The relay keeps no
order table, so a source says how to check the token (at least one of):

- `tokens`: static tokens (a list, for rotation): pass one of them as `token` for every order;
- `token_key`: keys (a list): pass `token` = hex HMAC-SHA256(token_key, order_id) when creating
  the order, and the relay recomputes it from the callback's `order_id`, so each order has its
  own token and a leaked one is good for that order only.

A missing or wrong token is `401 bad_token` (so is a body that is neither a form nor a JSON
object: it has no token, and SPEC 3 checks the token before the format). CoinGate sends callbacks from the addresses its API lists (live
`https://api.coingate.com/v2/ips-v4`, sandbox `https://api-sandbox.coingate.com/v2/ips-v4`,
one per line; no fixed list is published, and CoinGate asks to refresh it regularly): put them
in `allowed_ips`. The token is the callback's credential, so the relay drops it from `data`
before relaying (everything else is the payload unchanged).

Format: form-encoded by default, JSON when the API app is set so (Merchant -> API -> Apps); both
are read. Fields (developer.coingate.com/reference/payment-callback): `id` (CoinGate order id),
`order_id` (the merchant's, the reference), `status`, `price_amount`/`price_currency` (the
price), `pay_amount`/`pay_currency` (crypto paid by the shopper), `receive_amount`/
`receive_currency` (credited to the merchant), `underpaid_amount`, `overpaid_amount`,
`created_at`, `token`, `fees`.

Statuses (reference/order-statuses): new -> created; pending (awaiting payment), confirming
(transaction seen, awaiting confirmations) -> pending; paid -> completed (confirmed and credited
to the merchant's CoinGate balance, as the WooCommerce plugin notes; CoinGate's last success
state); invalid -> failed; expired -> expired; canceled -> cancelled; refunded,
partially_refunded -> other (no canonical type; still relayed). `amount_received` is
`pay_amount` once funds were seen (confirming, paid, refunded, partially_refunded).

Dedupe key: `id` + status + `pay_amount` + `underpaid_amount` + `overpaid_amount`: CoinGate
retries a callback (up to 40 times, 1 min to 1 day apart) with the same fields, one event; a
second partial payment changes the underpaid amount, a new event. Without `id`, a body digest.

Status API: `GET https://api.coingate.com/v2/orders/{id}` with `Authorization: Token
<auth token>` (the WooCommerce plugin re-reads every order there before trusting a callback).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlencode

from pydantic import BeforeValidator, model_validator

from relay.config.types import Secrets, SourceConfig
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    Rejected,
    SampleRequest,
    bad_token,
    body_digest,
    first,
    parse_form,
    parse_json_object,
    scalar,
    token_matches,
)


def _empty_is_none(value: Any) -> Any:
    """An optional secret left empty (`${VAR:-}`) is unset, not an error."""
    return None if value in ("", []) else value


OptionalSecrets = Annotated[Secrets | None, BeforeValidator(_empty_is_none)]

_STATUSES = {
    "new": "payment.created",
    "pending": "payment.pending",
    "confirming": "payment.pending",
    "paid": "payment.completed",
    "invalid": "payment.failed",
    "expired": "payment.expired",
    "canceled": "payment.cancelled",
    "cancelled": "payment.cancelled",
    "refunded": "payment.other",
    "partially_refunded": "payment.other",
}
_FUNDS_SEEN = ("confirming", "paid", "refunded", "partially_refunded")

# Canonical short name -> the CoinGate status a sample carries.
_SAMPLES = {
    "created": "new",
    "pending": "confirming",
    "completed": "paid",
    "failed": "invalid",
    "expired": "expired",
    "cancelled": "canceled",
    "other": "refunded",
}


class CoingateConfig(SourceConfig):
    provider: Literal["coingate"]
    tokens: OptionalSecrets = None  # the `token` passed with every order (static)
    token_key: OptionalSecrets = None  # token = hex HMAC-SHA256(token_key, order_id), per order

    @model_validator(mode="after")
    def _one_way_to_check(self) -> Self:
        if not self.tokens and not self.token_key:
            raise ValueError("set tokens or token_key: how the relay checks CoinGate's `token`")
        return self


def order_token(key: str, order_id: str) -> str:
    """The per-order token for `token_key`: hex HMAC-SHA256 of the merchant's order id."""
    return hmac.new(key.encode(), order_id.encode(), hashlib.sha256).hexdigest()


def parse(body: bytes) -> dict[str, Any]:
    """The callback as a dict: JSON when it is JSON, else a form (400 malformed otherwise)."""
    if body.lstrip()[:1] == b"{":
        return parse_json_object(body)
    return dict(parse_form(body))


class CoingateProvider(Provider):
    kind = "coingate"
    Config = CoingateConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLES)
    config: CoingateConfig

    def verify(self, request: InboundRequest) -> None:
        try:
            payload = parse(request.body)
        except Rejected as unreadable:  # no token can be found: SPEC 3 says 401 first
            raise bad_token(f"token missing ({unreadable.reason})") from None
        token, order_id = payload.get("token"), payload.get("order_id")
        if not isinstance(token, str) or not token:
            raise bad_token("token missing from the callback")
        expected = list(self.config.tokens or [])
        if isinstance(order_id, (str, int)) and not isinstance(order_id, bool):
            expected += [order_token(key, str(order_id)) for key in self.config.token_key or []]
        if not token_matches(expected, token):
            raise bad_token("token is not a configured token nor the order's token_key token")

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        payload = {k: v for k, v in parse(request.body).items() if k != "token"}
        get = {k: first(scalar(v)) for k, v in payload.items()}  # "" is absent
        status = get.get("status")
        name = None if status is None else str(status)
        folded = (name or "").strip().casefold()
        coingate_id, paid = get.get("id"), get.get("pay_amount")
        if coingate_id is not None:
            key = (
                f"order:{coingate_id}:{name}:{paid}:"
                f"{get.get('underpaid_amount')}:{get.get('overpaid_amount')}"
            )
        else:
            key = f"body:{body_digest(request.body)}"
        pay_currency, price_currency = get.get("pay_currency"), get.get("price_currency")
        fiat = price_currency is not None and price_currency != pay_currency
        payment = {
            "id": coingate_id,
            "reference": get.get("order_id"),
            "amount": paid if pay_currency is not None else get.get("price_amount"),
            "amount_received": paid if folded in _FUNDS_SEEN else None,
            "currency": pay_currency if pay_currency is not None else price_currency,
            "fiat_amount": get.get("price_amount") if fiat and pay_currency is not None else None,
            "fiat_currency": price_currency if fiat and pay_currency is not None else None,
            "description": get.get("title"),
        }
        return [
            self.event(
                request,
                dedupe_key=key,
                type=_STATUSES.get(folded, "payment.other"),
                provider_event=name,
                payment=payment,
                data=payload,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        status = _SAMPLES[event]
        order_id = "order-1001"
        if self.config.tokens:
            token = self.config.tokens[0]
        else:
            token = order_token((self.config.token_key or [""])[0], order_id)
        seen = status in _FUNDS_SEEN or status == "invalid"
        fields = {
            "id": "343",
            "order_id": order_id,
            "status": status,
            "price_amount": "1050.99",
            "price_currency": "USD",
            "receive_currency": "EUR",
            "receive_amount": "926.73" if seen else "",
            "pay_amount": "0.01781234" if status != "new" else "",
            "pay_currency": "BTC" if status != "new" else "",
            "underpaid_amount": "0",
            "overpaid_amount": "0",
            "is_refundable": "true" if seen else "false",
            "created_at": "2024-11-03T13:07:28+00:00",
            "token": token,
        }
        return SampleRequest(
            body=urlencode(fields).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
