"""`http`: a merchant's own endpoint, signed per Standard Webhooks (SPEC 6).

The body is the canonical event's JSON bytes exactly as stored (`StoredEvent.json`), so what
is signed is byte for byte what is sent. Headers:

- `webhook-id`: the event id, the same on every attempt (the receiver's idempotency key);
- `webhook-timestamp`: Unix seconds of this attempt;
- `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one entry per
  configured secret, space-separated (list two secrets while a merchant rotates keys);
- `Content-Type: application/json`, `User-Agent: payrelay/<version>`, then the sink's
  `headers` (which may not set any of the above: that is a config error).

Answers: 2xx delivered; 3xx permanent (redirects are not followed: fix the URL); 408, 425,
429 and 5xx retried (never sooner than `Retry-After`; a 429 waits without using an attempt);
404 and 410 permanent with the endpoint flagged as gone; any other 4xx permanent.

An operational alert (SPEC 12, relay.alerts_send) named in `alerts.to` is sent the same way:
its JSON (`"type": "relay.alert"`) is the body, signed alike, `webhook-id` the alert's id (the
same on every retry of it).

A secret is `whsec_` + base64 of 24 to 64 random bytes, e.g.
`python -c "import base64,os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator
from standardwebhooks.webhooks import Webhook

from relay import clock
from relay.config.types import (
    WHSEC_PREFIX,
    Duration,
    Secrets,
    SinkConfig,
    is_header_name,
    whsec_key,
)
from relay.events import StoredEvent
from relay.sinks.base import (
    USER_AGENT,
    HttpURL,
    OutboundRequest,
    Outcome,
    PostSink,
    classify_http,
)

RESERVED_HEADERS = {"content-type", "content-length", "host", "transfer-encoding", "user-agent"}


def _whsec(secrets: list[str]) -> list[str]:
    for secret in secrets:
        if not secret.startswith(WHSEC_PREFIX):
            raise ValueError("not a Standard Webhooks secret: it must start with whsec_")
        try:
            raw = whsec_key(secret)
        except ValueError:
            raise ValueError(
                "not a Standard Webhooks secret: whsec_ must be followed by base64"
            ) from None
        if len(raw) < 24:
            raise ValueError(
                f"secret too short: {len(raw)} bytes after whsec_, Standard Webhooks asks 24 to 64"
            )
    return secrets


WebhookSecrets = Annotated[Secrets, AfterValidator(_whsec)]


class HttpSinkConfig(SinkConfig):
    type: Literal["http"]
    url: HttpURL
    secret: WebhookSecrets  # one whsec_... or a list: every one signs (key rotation)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 15.0  # Standard Webhooks recommends 15-30 s

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            lowered = name.lower()
            if not is_header_name(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if lowered in RESERVED_HEADERS or lowered.startswith("webhook-"):
                raise ValueError(f"header {name!r} is set by the relay and cannot be overridden")
            if any(ch in text for ch in "\r\n\0"):
                raise ValueError(f"header {name!r}: a value cannot contain line breaks")
        return value


class HttpSink(PostSink):
    kind = "http"
    Config = HttpSinkConfig
    config: HttpSinkConfig

    def __init__(self, name: str, config: HttpSinkConfig) -> None:
        super().__init__(name, config)
        self._signers = [Webhook(secret) for secret in config.secret]

    def credentials(self) -> set[str]:
        """The URL's parts and the custom header values (`Authorization: Bearer ...`), and
        their last word: an answer echoing the request must not show them."""
        values = set(self.config.headers.values())
        return super().credentials() | values | {v.split()[-1] for v in values if v.split()}

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value: `v1,<sig>` per secret, space-separated."""
        moment = datetime.fromtimestamp(timestamp, UTC)
        data = body.decode("utf-8")
        return " ".join(signer.sign(msg_id, moment, data) for signer in self._signers)

    def render(self, event: StoredEvent, attempt: int) -> OutboundRequest:
        timestamp = int(clock.now())  # Redis's time: receivers check it against theirs
        headers: dict[str, str] = {
            name: value
            for name, value in self.config.headers.items()
            if name.lower() not in RESERVED_HEADERS and not name.lower().startswith("webhook-")
        }
        headers.update(
            {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "webhook-id": event.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": self.sign(event.id, timestamp, event.json),
            }
        )
        return OutboundRequest(url=self.config.url, body=event.json, headers=headers)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        return classify_http(status, headers, body)


__all__ = ["HttpSink", "HttpSinkConfig"]
