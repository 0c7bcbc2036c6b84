"""Any sender following Standard Webhooks 1.0: `webhook-id`, `-timestamp`, `-signature` headers.

The signature is HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{raw body}`, keyed with the
base64-decoded part of the `whsec_...` secret; `webhook-signature` is a space-separated list of
`v1,<base64>` entries (several during a sender's own key rotation). The payload is mapped by
the source's `fields` and `event_types` (see `relay.providers.mapping`).

Dedupe key: the `webhook-id` header. The spec makes it the idempotency key: it is the same on
every retry of a message and different for every new message.
"""

from __future__ import annotations

import base64
import time
from typing import ClassVar, Literal

import orjson
from pydantic import Field, field_validator

from relay.config.types import Duration, Secrets, whsec_key
from relay.events import PaymentEvent
from relay.inbound import InboundRequest
from relay.providers.base import (
    SampleRequest,
    any_secret_matches,
    bad_signature,
    body_digest,
    check_json_object,
    decode_signature,
    header_bytes,
    hmac_digest,
    parse_json_object,
    skew_text,
    stale_timestamp,
)
from relay.providers.mapping import ALL_SAMPLE_EVENTS, MappedProvider, MappedSourceConfig


def secret_key(secret: str) -> bytes:
    """The HMAC key of a source's `whsec_<base64>` secret (surrounding spaces ignored)."""
    return whsec_key(secret.strip())


class StandardWebhooksConfig(MappedSourceConfig):
    provider: Literal["standard_webhooks"]
    secret: Secrets
    timestamp_tolerance: Duration = Field(default=300.0, gt=0)

    @field_validator("secret")
    @classmethod
    def _secrets_decode(cls, value: list[str]) -> list[str]:
        for index, secret in enumerate(value):
            try:
                key = secret_key(secret)
            except ValueError:  # binascii.Error included
                key = b""
            if not key:
                # Never echo the secret itself into an error message.
                raise ValueError(f"secret #{index + 1} is not whsec_ followed by base64")
        return value


class StandardWebhooksProvider(MappedProvider):
    kind = "standard_webhooks"
    Config = StandardWebhooksConfig
    keep_headers: ClassVar[tuple[str, ...]] = ("webhook-id", "webhook-timestamp")
    sample_events: ClassVar[tuple[str, ...]] = (
        ALL_SAMPLE_EVENTS  # per source: see MappedProvider.__init__
    )
    config: StandardWebhooksConfig

    def __init__(self, name: str, config: StandardWebhooksConfig) -> None:
        super().__init__(name, config)
        self._keys = [secret_key(secret) for secret in config.secret]

    def verify(self, request: InboundRequest) -> None:
        msg_id = request.header("webhook-id")
        stamp = request.header("webhook-timestamp")
        signatures = request.header("webhook-signature")
        if not msg_id or not stamp or not signatures:
            raise bad_signature("webhook-id, webhook-timestamp or webhook-signature header missing")
        try:
            sent_at = int(stamp.strip())
        except ValueError:
            raise bad_signature("webhook-timestamp is not Unix seconds") from None
        signed = header_bytes(msg_id) + b"." + header_bytes(stamp) + b"." + request.body
        # Only symmetric `v1` entries; `v1a` (ed25519) and unknown versions are ignored.
        candidates = [
            decode_signature(entry[3:], "base64")
            for entry in signatures.split()
            if entry.startswith("v1,")
        ]
        if not any_secret_matches(self._keys, signed, [c for c in candidates if c]):
            raise bad_signature("no v1 signature in webhook-signature matches a configured secret")
        # Checked after the signature, so `stale_timestamp` always means "authentic but old":
        # a clock or queueing problem to look at, never a forgery.
        now = request.received_at or time.time()
        if abs(now - sent_at) > self.config.timestamp_tolerance:
            raise stale_timestamp(f"webhook-timestamp {sent_at} is {skew_text(sent_at, now)}")
        check_json_object(request.body)

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        payload = parse_json_object(request.body)
        msg_id = request.header("webhook-id")
        if msg_id:  # non-UTF-8 header bytes arrive surrogate-escaped: keep them distinct, writable
            msg_id = header_bytes(msg_id).decode("utf-8", "backslashreplace")
        key = f"msg:{msg_id}" if msg_id else f"body:{body_digest(request.body)}"
        return [self.mapped_event(request, payload, key)]

    def sample(self, event: str, now: float) -> SampleRequest:
        body = orjson.dumps(self.sample_payload(event, now))
        msg_id = f"msg_relay_sample_{event}_{int(now)}"
        stamp = str(int(now))
        signed = f"{msg_id}.{stamp}.".encode() + body
        signature = base64.b64encode(hmac_digest(self._keys[0], signed)).decode()
        return SampleRequest(
            body=body,
            headers={
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": stamp,
                "webhook-signature": f"v1,{signature}",
            },
        )
