"""What every sink module implements: render an event, send it, classify the answer.

A sink never raises for a failed delivery: it returns `Delivered`, `RetryLater` or `Failed`, and
the worker turns that into a mark, a scheduled retry or a dead letter.
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import BeforeValidator

from relay import __version__
from relay.config.types import SinkConfig
from relay.events import StoredEvent

EXCERPT_BYTES = 2048
USER_AGENT = f"payrelay/{__version__}"


@dataclass(frozen=True)
class Delivered:
    status: int | None = None


@dataclass(frozen=True)
class RetryLater:
    """Try again: on the sink's schedule, and never sooner than `after` seconds."""

    reason: str
    status: int | None = None
    after: float | None = None
    rate_limited: bool = False  # a 429: wait as asked without using up an attempt
    excerpt: str = ""


@dataclass(frozen=True)
class Failed:
    """Permanent: this delivery goes to the dead-letter queue."""

    reason: str
    status: int | None = None
    excerpt: str = ""
    sink_gone: bool = False  # 404/410: the endpoint itself is gone; flagged in `relay status`


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

    def __init__(self, name: str, config: SinkConfig):
        self.name = name
        self.config = config

    @abstractmethod
    def render(self, event: StoredEvent, attempt: int) -> OutboundRequest:
        """The HTTP request that delivers `event` (attempt counts from 1)."""

    @abstractmethod
    def classify(self, status: int, headers: aiohttp.typedefs.LooseHeaders, body: bytes) -> Outcome:
        """What an HTTP answer means for this sink."""

    async def deliver(
        self, session: aiohttp.ClientSession, event: StoredEvent, attempt: int
    ) -> Outcome:
        """Render, POST (no redirects, the sink's timeout) and classify. Never raises."""
        try:
            request = self.render(event, attempt)
        except RenderError as exc:  # a template bug: retrying cannot help; replay after a fix
            return Failed(f"template error: {exc}")
        try:
            async with session.post(
                request.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as response:
                body = await response.content.read(EXCERPT_BYTES)
                return self.classify(response.status, response.headers, body)
        except TimeoutError:
            return RetryLater(reason=f"timeout after {self.config.timeout:g}s")
        except aiohttp.ClientError as exc:
            return RetryLater(reason=f"network error: {type(exc).__name__}: {exc}"[:300])


# --- shared helpers -------------------------------------------------------------------------


def excerpt(body: bytes) -> str:
    return body[:EXCERPT_BYTES].decode("utf-8", "replace")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_http(status: int, headers: aiohttp.typedefs.LooseHeaders, body: bytes) -> Outcome:
    """SPEC 6: 2xx delivered; network, 408, 425, 429, 5xx retry; other statuses permanent."""
    text = excerpt(body)
    if 200 <= status < 300:
        return Delivered(status)
    after = retry_after_seconds(headers.get("Retry-After"))  # type: ignore[union-attr]
    if status == 429:
        return RetryLater("rate limited (429)", status, after, rate_limited=True, excerpt=text)
    if status in (408, 425) or status >= 500:
        return RetryLater(f"HTTP {status}", status, after, excerpt=text)
    if 300 <= status < 400:
        return Failed(f"HTTP {status}: redirects are not followed", status, text)
    return Failed(f"HTTP {status}", status, text, sink_gone=status in (404, 410))


def is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host, no whitespace or control characters."""
    if not isinstance(value, str) or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
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
