"""Any sender that signs the raw body with an HMAC in one header: configured in YAML, no code.

Covers e.g. BTCPay Server (`BTCPay-Sig: sha256=<hex>`, HMAC-SHA256) and Coinbase Commerce
(`X-CC-Webhook-Signature: <hex>`, HMAC-SHA256): choose `algorithm`, `signature_header`,
`signature_prefix` and `encoding`; map the payload with `fields` and `event_types`.

Dedupe key: the value at `fields.event_id` when configured and present: a sender's own event
id, the same on every redelivery and new for every event (Coinbase's `event.id`; BTCPay's
`originalDeliveryId`, which BTCPay sets to the first delivery's id and keeps on every
redelivery, automatic or manual, while `deliveryId` changes: WebhookSender.cs). Otherwise
`payment_id` + provider event + every mapped news field (`tx_hash`, `amount`,
`amount_received`, `confirmations`; relay.providers.mapping): a second partial payment of one
invoice carries another transaction or amount, so it is a new event, and a redelivery carries
the same values, so it is the same one. Otherwise (neither a payment id nor an event found) a
digest of the body, so only byte-identical repeats collapse.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field

from relay.config.types import HeaderName, Secrets
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import (
    SampleRequest,
    any_secret_matches,
    bad_signature,
    body_digest,
    check_json_object,
    decode_signature,
    dig,
    hmac_digest,
    parse_json_object,
    scalar,
)
from relay.providers.mapping import (
    ALL_SAMPLE_EVENTS,
    DottedPath,
    Fields,
    MappedProvider,
    MappedSourceConfig,
    set_path,
)


class HmacFields(Fields):
    event_id: DottedPath | None = None  # the sender's own event id: the best dedupe key


class HmacConfig(MappedSourceConfig):
    provider: Literal["hmac"]
    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    secret: Secrets
    signature_header: HeaderName
    signature_prefix: str = ""  # e.g. "sha256=" (BTCPay, GitHub style); matched ignoring case
    encoding: Literal["hex", "base64"] = "hex"
    fields: HmacFields = Field(default_factory=HmacFields)


class HmacProvider(MappedProvider):
    kind = "hmac"
    Config = HmacConfig
    sample_events: ClassVar[tuple[str, ...]] = (
        ALL_SAMPLE_EVENTS  # per source: see MappedProvider.__init__
    )
    config: HmacConfig

    def verify(self, request: InboundRequest) -> None:
        config = self.config
        given = request.header(config.signature_header)
        if not given:
            raise bad_signature(f"{config.signature_header} header missing")
        given = given.strip()
        prefix = config.signature_prefix
        if prefix:
            if given[: len(prefix)].lower() != prefix.lower():
                raise bad_signature(f"{config.signature_header} does not start with the prefix")
            given = given[len(prefix) :]
        candidate = decode_signature(given, config.encoding)
        if not candidate or not any_secret_matches(
            config.secret, request.body, [candidate], config.algorithm
        ):
            raise bad_signature(f"{config.signature_header} matches no configured secret")
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        payload = parse_json_object(request.body)
        return [self.mapped_event(request, payload, self._dedupe_key(request, payload))]

    def _dedupe_key(self, request: InboundRequest, payload: dict[str, Any]) -> str:
        fields = self.config.fields
        if fields.event_id:
            event_id = scalar(dig(payload, fields.event_id))
            if event_id is not None and event_id != "":
                return f"id:{event_id}"
        return self.payment_key(payload) or f"body:{body_digest(request.body)}"

    def sample(self, event: str, now: float) -> SampleRequest:
        payload = self.sample_payload(event, now)
        if self.config.fields.event_id:
            set_path(payload, self.config.fields.event_id, f"evt_relay_sample_{event}_{int(now)}")
        body = orjson.dumps(payload)
        digest = hmac_digest(self.config.secret[0], body, self.config.algorithm)
        encoded = (
            digest.hex() if self.config.encoding == "hex" else base64.b64encode(digest).decode()
        )
        return SampleRequest(
            body=body,
            headers={
                "Content-Type": "application/json",
                self.config.signature_header: self.config.signature_prefix + encoded,
            },
        )
