"""Coinable (Solana checkout; docs.coinablepay.com, coinable/coinable-docs).

Authentication: Coinable signs nothing and sends no credential (none documented, in any
revision of its docs). The relay therefore gives each Coinable source an unguessable URL,
`POST /hooks/{source}/{url_token}`, registered as the webhook endpoint in Coinable's dashboard;
`allowed_ips` may narrow it further. A missing or wrong token is `401 bad_token`.

Payload: only `{"type": ..., "data": {...}}` is documented; the schema of `data` is not. The
obvious names are read when present (`data.id`, `data.amount`, `data.currency`,
`data.metadata.order_id`, ...); everything is in `data` regardless.

Dedupe key: none is documented. `type` + `data.id` (+ transaction signature/hash when present)
when there is an id: one event per checkout and state. Without an id, a digest of the body.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson

from relay.config.types import Secrets, SourceConfig
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    SampleRequest,
    as_dict,
    bad_token,
    body_digest,
    check_json_object,
    first,
    parse_json_object,
    safe_time,
    scalar,
    token_matches,
)

_TYPES = {
    "checkout.session.payment_attempt": "payment.pending",  # an attempt: no funds moved yet
    "checkout.session.completed": "payment.completed",  # tokens are in the merchant's wallet
    "checkout.session.failed": "payment.failed",  # amount mismatch, typically malicious
}

_SAMPLES = {short.removeprefix("payment."): name for name, short in _TYPES.items()}


class CoinableConfig(SourceConfig):
    provider: Literal["coinable"]
    url_token: Secrets  # the secret last path segment: POST /hooks/<source>/<url_token>


class CoinableProvider(Provider):
    kind = "coinable"
    Config = CoinableConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLES)
    config: CoinableConfig

    def verify(self, request: InboundRequest) -> None:
        if not token_matches(self.config.url_token, request.token):
            raise bad_token("URL token missing or not a configured url_token")
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        payload = parse_json_object(request.body)
        data = as_dict(payload.get("data"))
        metadata = as_dict(data.get("metadata"))
        name = scalar(payload.get("type"))
        provider_event = None if name is None else str(name)
        payment_id = scalar(first(data.get("id"), data.get("checkout_id"), data.get("session_id")))
        tx_hash = scalar(first(data.get("signature"), data.get("tx_hash"), data.get("transaction")))
        if payment_id is not None:
            key = f"checkout:{payment_id}:{provider_event}:{tx_hash}"
        else:
            key = f"body:{body_digest(request.body)}"
        return [
            self.event(
                request,
                dedupe_key=key,
                type=_TYPES.get(provider_event or "", "payment.other"),
                provider_event=provider_event,
                occurred_at=safe_time(
                    scalar(first(data.get("created_at"), payload.get("created_at")))
                ),
                payment={
                    "id": payment_id,
                    "reference": scalar(first(metadata.get("order_id"), metadata.get("orderId"))),
                    "amount": scalar(data.get("amount")),
                    "currency": scalar(first(data.get("currency"), data.get("token"))),
                    "network": "SOL",  # Coinable is a Solana checkout
                    "tx_hash": tx_hash,
                    "description": scalar(first(data.get("description"), data.get("title"))),
                },
                data=payload,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        data: dict[str, Any] = {
            "id": "cs_relay_sample_1",
            "amount": "0.86",
            "currency": "SOL",
            "description": "simple test product",
            "metadata": {"order_id": "order-1001"},
            "created_at": safe_time(int(now)),
        }
        body = orjson.dumps({"type": _SAMPLES[event], "data": data})
        return SampleRequest(
            body=body,
            headers={"Content-Type": "application/json"},
            token=self.config.url_token[0],
        )
