"""Config-driven payload mapping, shared by the `standard_webhooks` and `hmac` providers.

Those providers have no code of their own for a sender's payload: the source's YAML says where
each canonical field sits (`fields`, dotted paths) and which provider event means which
canonical type (`event_types`). Everything here is about reading that mapping, and about
writing a sample payload that the same mapping reads back (for `relay trigger`).

The payment part of a dedupe key (`MappedProvider.payment_key`, used by `hmac` when the sender
gives no event id): `payment_id` + provider event + the value of every mapped field that
carries news when it changes (SPEC 4): `tx_hash`, `amount`, `amount_received` and
`confirmations`. So a second partial payment of one invoice (same event name, another
transaction or amount) is a new event, a new confirmation count is a new event, and a
redelivery (same values; only the sender's delivery id, attempt or flags differ, which are
not mapped) is the same event. Only mapped fields count: with none of them mapped the key is
one event per payment and provider event, so map them (or the sender's own event id) for a
sender that repeats an event name per transaction, as BTCPay's `InvoiceReceivedPayment` does.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from relay.config.types import SourceConfig, Strict
from relay.events import EVENT_TYPES, PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import Provider, dig, safe_time, scalar

# Mapped fields whose change is news (SPEC 4: a new transaction, confirmation or amount): in
# the payment part of the dedupe key.
NEWS_FIELDS = ("tx_hash", "amount", "amount_received", "confirmations")

# The canonical short names `relay trigger` accepts ("paid" for payment.paid, ...).
ALL_SAMPLE_EVENTS: tuple[str, ...] = tuple(t.removeprefix("payment.") for t in EVENT_TYPES)

# A provider event name no sane `event_types` maps: how a sample of payment.other is made.
UNLISTED_EVENT = "relay.sample.unlisted"

_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


def _path(value: str) -> str:
    if not _PATH.match(value):
        raise ValueError(f"not a dotted path: {value!r} (e.g. data.object.id)")
    return value


def _canonical(value: str) -> str:
    if value not in EVENT_TYPES:
        raise ValueError(
            f"{value!r} is not a canonical event type (one of {', '.join(EVENT_TYPES)})"
        )
    return value


DottedPath = Annotated[str, AfterValidator(_path)]
CanonicalType = Annotated[str, AfterValidator(_canonical)]


class Fields(Strict):
    """Where each canonical field sits in the payload (dotted paths; `a.0.b` indexes a list)."""

    payment_id: DottedPath | None = None
    event: DottedPath = "type"  # Standard Webhooks payloads carry their event in `type`
    reference: DottedPath | None = None
    amount: DottedPath | None = None
    amount_received: DottedPath | None = None  # what has arrived so far (SPEC 11)
    currency: DottedPath | None = None
    fiat_amount: DottedPath | None = None
    fiat_currency: DottedPath | None = None
    network: DottedPath | None = None
    tx_hash: DottedPath | None = None
    tx_url: DottedPath | None = None
    confirmations: DottedPath | None = None
    description: DottedPath | None = None
    occurred_at: DottedPath | None = "timestamp"


# Payment fields that `Fields` may point at, in the order a sample writes them.
_PAYMENT_FIELDS = (
    "payment_id",
    "reference",
    "amount",
    "amount_received",
    "currency",
    "fiat_amount",
    "fiat_currency",
    "network",
    "tx_hash",
    "tx_url",
    "confirmations",
    "description",
)

_SAMPLE_VALUES: dict[str, Any] = {
    "payment_id": "inv_7Hq2Lr9Xz",
    "reference": "order-1001",
    "amount": "0.00125",
    "amount_received": "0.00125",
    "currency": "BTC",
    "fiat_amount": "42.50",
    "fiat_currency": "USD",
    "network": "BTC",
    "tx_hash": "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b",
    "tx_url": "https://mempool.space/tx/4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b",
    "confirmations": 3,
    "description": "Sample order from relay trigger",
}


class MappedSourceConfig(SourceConfig):
    """Keys of a source whose payload mapping lives in YAML."""

    fields: Fields = Field(default_factory=Fields)
    event_types: dict[str, CanonicalType] = Field(default_factory=dict)


class MappedProvider(Provider):
    """A provider that reads its payload through `fields` and `event_types`."""

    config: MappedSourceConfig

    def __init__(self, name: str, config: MappedSourceConfig) -> None:
        super().__init__(name, config)
        # What `relay trigger` can send depends on this source's event_types: the canonical
        # types it maps to, plus `other` (an event it does not list).
        mapped = set(config.event_types.values()) | {"payment.other"}
        self.sample_events = tuple(  # type: ignore[misc]
            short for short in ALL_SAMPLE_EVENTS if f"payment.{short}" in mapped
        )

    def canonical_type(self, provider_event: str | None) -> str:
        """The configured canonical type; exact name first, then ignoring case; else other."""
        if provider_event is None:
            return "payment.other"
        types = self.config.event_types
        if provider_event in types:
            return types[provider_event]
        folded = provider_event.casefold()
        for name, canonical in types.items():
            if name.casefold() == folded:
                return canonical
        return "payment.other"

    def provider_event(self, payload: dict[str, Any]) -> str | None:
        value = scalar(dig(payload, self.config.fields.event))
        return None if value is None else str(value)

    def payment_key(self, payload: dict[str, Any]) -> str | None:
        """`pay:` + payment id + provider event (+ each mapped news field's value); None when
        the payload has neither a payment id nor an event (see the module docstring)."""
        fields = self.config.fields
        payment_id = scalar(dig(payload, fields.payment_id)) if fields.payment_id else None
        provider_event = self.provider_event(payload)
        if payment_id is None and provider_event is None:
            return None
        key = f"pay:{payment_id}:{provider_event}"
        for name in NEWS_FIELDS:  # appended only when mapped: other sources keep their ids
            path = getattr(fields, name)
            if path is not None:
                key += f":{name}={scalar(dig(payload, path))}"
        return key

    def mapped_event(
        self, request: InboundRequest, payload: dict[str, Any], dedupe_key: str
    ) -> PaymentEvent:
        fields = self.config.fields
        payment: dict[str, Any] = {}
        for name in _PAYMENT_FIELDS:
            path = getattr(fields, name)
            if path is not None:
                payment["id" if name == "payment_id" else name] = scalar(dig(payload, path))
        provider_event = self.provider_event(payload)
        occurred = dig(payload, fields.occurred_at) if fields.occurred_at else None
        return self.event(
            request,
            dedupe_key=dedupe_key,
            type=self.canonical_type(provider_event),
            provider_event=provider_event,
            occurred_at=safe_time(scalar(occurred)),
            payment=payment,
            data=payload,
        )

    def sample_payload(self, event: str, now: float) -> dict[str, Any]:
        """A payload that this source's own mapping reads as canonical event `event`."""
        payload: dict[str, Any] = {}
        fields = self.config.fields
        set_path(payload, fields.event, self._sample_provider_event(event))
        if fields.occurred_at:
            set_path(payload, fields.occurred_at, safe_time(now))
        for name in _PAYMENT_FIELDS:
            path = getattr(fields, name)
            if path is not None:
                set_path(payload, path, _SAMPLE_VALUES[name])
        return payload

    def _sample_provider_event(self, event: str) -> str:
        canonical = f"payment.{event}"
        if canonical not in EVENT_TYPES:
            raise ValueError(f"unknown event {event!r} (one of {', '.join(ALL_SAMPLE_EVENTS)})")
        if canonical == "payment.other":
            return UNLISTED_EVENT
        for name, mapped in self.config.event_types.items():
            if mapped == canonical:
                return name
        raise ValueError(
            f"source {self.name!r}: event_types maps no provider event to {canonical}, "
            "so no sample of it can be made"
        )


def set_path(payload: dict[str, Any], path: str, value: Any) -> None:
    """Write `value` at dotted `path`, creating objects; a path through a non-object is skipped."""
    node = payload
    *parents, last = path.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return  # two configured paths collide: the first one written wins
        node = child
    node.setdefault(last, value)
