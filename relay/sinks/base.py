"""What every sink module implements: deliver an event; for those that POST it (`PostSink`),
render the request, send it, classify the answer.

A sink never raises for a failed delivery: it returns `Delivered`, `RetryLater` or `Failed`, and
the worker turns that into a mark, a scheduled retry or a dead letter. The reason and excerpt
of what `deliver` returns never hold the sink's URL or a secret (relay.redact): they are stored
as `last_error` and in dead letters, and shown by `relay status`, `relay dlq` and `/status`.

Waits a sink asks for (`Retry-After`, Discord's `retry_after`) count only when sane: negative,
NaN, infinite, overflowing or garbage values are absent (None), and a 429 waits at least
`MIN_RATE_LIMIT_WAIT_S` whatever it said. The ceiling is the retry schedule's, in
relay.delivery.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BeforeValidator

from relay import __version__
from relay.config.types import SinkConfig
from relay.events import StoredEvent
from relay.redact import known, redact, url_secrets
from relay.sinks.client import ClientError, InvalidRequest, SinkClient

EXCERPT_BYTES = 2048
REASON_CHARS = 300
MIN_RATE_LIMIT_WAIT_S = 1.0  # a 429 saying 0 (or a past date) must not become a request storm
USER_AGENT = f"payrelay/{__version__}"


@dataclass(frozen=True)
class Delivered:
    status: int | None = None
    # What the answer said and how long it took are kept in the event log; they are not part
    # of what an outcome means, so equality ignores them.
    excerpt: str = field(default="", compare=False)
    duration_ms: int | None = field(default=None, compare=False)  # set by the worker


@dataclass(frozen=True)
class RetryLater:
    """Try again: on the sink's schedule, and never sooner than `after` seconds."""

    reason: str
    status: int | None = None
    after: float | None = None
    rate_limited: bool = False  # a 429: wait as asked without using up an attempt
    excerpt: str = ""
    duration_ms: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Failed:
    """Permanent: this delivery goes to the dead-letter queue."""

    reason: str
    status: int | None = None
    excerpt: str = ""
    sink_gone: bool = False  # 404/410: the endpoint itself is gone; flagged in `relay status`
    duration_ms: int | None = field(default=None, compare=False)


Outcome = Delivered | RetryLater | Failed


class RenderError(Exception):
    """An operator template failed while rendering an event: the delivery is `Failed`."""


@dataclass(frozen=True)
class OutboundRequest:
    url: str
    body: bytes
    headers: dict[str, str]


class Sink(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[SinkConfig]]

    def __init__(self, name: str, config: SinkConfig) -> None:
        self.name = name
        self.config = config
        self.secrets = known(self.credentials())

    def credentials(self) -> set[str]:
        """Strings of the config that must never show in a reason or excerpt, even without a
        scheme around them (an answer echoing the request line): the parts of the sink's URL."""
        url = getattr(self.config, "url", None)
        return url_secrets(url) if isinstance(url, str) else set()

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def redacted(self, outcome: Outcome) -> Outcome:
        """`outcome` with no URL or secret in its reason or excerpt (cut after redacting, so a
        cut never leaves a secret's head unrecognised)."""
        if isinstance(outcome, Delivered):
            return outcome
        reason = self.redact(outcome.reason)[:REASON_CHARS]
        return replace(outcome, reason=reason, excerpt=self.redact(outcome.excerpt))

    @abstractmethod
    async def deliver(self, client: SinkClient, event: StoredEvent, attempt: int) -> Outcome:
        """Deliver `event` (attempt counts from 1). Never raises for a failed delivery; the
        outcome's reason and excerpt are redacted."""


class PostSink(Sink):
    """A sink that delivers with one HTTP POST: `render` the request, send it, `classify` the
    answer (http, discord, slack)."""

    @abstractmethod
    def render(self, event: StoredEvent, attempt: int) -> OutboundRequest:
        """The HTTP request that delivers `event` (attempt counts from 1)."""

    @abstractmethod
    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        """What an HTTP answer means for this sink."""

    async def deliver(self, client: SinkClient, event: StoredEvent, attempt: int) -> Outcome:
        """Render, POST (no redirects, the sink's timeout) and classify. Never raises; the
        outcome's reason and excerpt are redacted."""
        return self.redacted(await self._attempt(client, event, attempt))

    async def _attempt(self, client: SinkClient, event: StoredEvent, attempt: int) -> Outcome:
        try:
            request = self.render(event, attempt)
        except RenderError as exc:  # a template bug: retrying cannot help; replay after a fix
            return Failed(f"template error: {exc}")
        try:
            response = await client.post(
                request.url, request.body, request.headers, self.config.timeout, EXCERPT_BYTES
            )
        except TimeoutError:
            return RetryLater(reason=f"timeout after {self.config.timeout:g}s")
        except InvalidRequest as exc:  # a URL or header that cannot be sent: fix, then replay
            return Failed(f"invalid request: {exc}")
        except ClientError as exc:
            # The text may quote the full URL (with its token): `deliver` redacts it.
            return RetryLater(reason=f"network error: {exc}")
        return self.classify(response.status, response.headers, response.body)


# --- shared helpers -------------------------------------------------------------------------


def excerpt(body: bytes) -> str:
    """The start of an answer as text, URLs and query values redacted (it may echo them)."""
    return redact(body[:EXCERPT_BYTES].decode("utf-8", "replace"))


_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # RFC 9110 delta-seconds; a fraction tolerated


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (a date already past is 0).
    None when absent or not sane: negative, NaN, infinite, overflowing or garbage."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return wait_seconds(float(value))  # 400 digits parse as inf: absent
    return _http_date_wait(value, time.time() if now is None else now)


def _http_date_wait(value: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return wait_seconds(max(0.0, when - now))


def wait_seconds(value: Any) -> float | None:
    """A wait given as a number (Discord's JSON `retry_after`): the seconds when finite and not
    negative, else None. Booleans and strings are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def rate_limit_wait(after: float | None) -> float | None:
    """The wait of a 429: at least MIN_RATE_LIMIT_WAIT_S when the sink gave one; None (the
    caller's default) when it did not."""
    return None if after is None else max(MIN_RATE_LIMIT_WAIT_S, after)


def classify_http(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """SPEC 6: 2xx delivered; network, 408, 425, 429, 5xx retry; other statuses permanent."""
    text = excerpt(body)
    if 200 <= status < 300:
        return Delivered(status, text)
    after = retry_after_seconds(headers.get("Retry-After"))
    if status == 429:
        return RetryLater(
            "rate limited (429)", status, rate_limit_wait(after), rate_limited=True, excerpt=text
        )
    if status in (408, 425) or status >= 500:
        return RetryLater(f"HTTP {status}", status, after, excerpt=text)
    if 300 <= status < 400:
        return Failed(f"HTTP {status}: redirects are not followed", status, text)
    return Failed(f"HTTP {status}", status, text, sink_gone=status in (404, 410))


# Whitespace (\s is str.isspace here) and control characters.
_NOT_IN_URL = re.compile(r"[\s\x00-\x1f\x7f]")


def is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host, no whitespace or control characters."""
    if not isinstance(value, str) or _NOT_IN_URL.search(value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _http_url(value: Any) -> Any:
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not is_http_url(text):
        raise ValueError("not a valid URL")
    return text


HttpURL = Annotated[str, BeforeValidator(_http_url)]
"""A config value holding an absolute http:// or https:// URL ("not a valid URL" otherwise)."""
