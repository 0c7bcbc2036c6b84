"""Value types shared by every config model: durations, secrets, the source and sink bases."""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """`500ms`, `5s`, `10m`, `2h`, `3d` (or a bare number of seconds) -> seconds. Raises
    ValueError for anything else, a wrong type too: pydantic reports only that as a config error."""
    if isinstance(value, bool):
        raise ValueError("not a duration (use e.g. 500ms, 5s, 10m, 2h, 3d)")  # noqa: TRY004
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 5s, 10m, 2h, 3d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("not a duration (use e.g. 500ms, 5s, 10m, 2h, 3d)")  # noqa: TRY004
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _secret_list(value: Any) -> Any:
    # One secret or a list of them: a list lets a merchant rotate without downtime.
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        value = [v for v in value if not (isinstance(v, str) and v == "")]
        if not value:
            raise ValueError("a secret is required (it is empty: is its environment variable set?)")
    return value


Secrets = Annotated[list[str], BeforeValidator(_secret_list)]
"""One or more secrets; any of them verifies (rotation)."""


WHSEC_PREFIX = "whsec_"


def whsec_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, `whsec_<base64>` (the prefix optional, as in
    the SDKs; unpadded base64 accepted: some senders print it so). ValueError if not base64."""
    text = secret.removeprefix(WHSEC_PREFIX)
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)  # binascii.Error is a ValueError


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name (a token)


def is_header_name(name: str) -> bool:
    return bool(_HEADER_NAME.fullmatch(name))


def _header_name(value: str) -> str:
    name = value.strip()
    if not is_header_name(name):
        raise ValueError(f"not an HTTP header name: {value!r}")
    return name


HeaderName = Annotated[str, AfterValidator(_header_name)]
"""A config value naming an HTTP header (RFC 9110 token; surrounding spaces dropped)."""


def _network(value: Any) -> Any:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or network: {value!r}") from None


IPNetwork = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, values are checked strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Strict):
    """Keys every source accepts, whatever its provider."""

    provider: str
    allowed_ips: list[IPNetwork] = Field(default_factory=list)


class RetryConfig(Strict):
    schedule: list[Duration] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
    )
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)


class RateLimit(Strict):
    """`5/2s`: at most `count` sends per `per` seconds, across every worker process."""

    count: int = Field(ge=1)
    per: float = Field(gt=0)


def _rate_limit(value: Any) -> Any:
    if isinstance(value, str):
        count, sep, per = value.partition("/")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"not a rate limit: {value!r} (use e.g. 5/2s or 30/1m)")
        per = per.strip()
        if per and per[0].isalpha():
            per = "1" + per  # "30/m" reads as 30 per 1m
        return {"count": int(count), "per": parse_duration(per)}
    return value


RateLimitValue = Annotated[RateLimit, BeforeValidator(_rate_limit)]


def _duration_or_off(value: Any) -> float | None:
    """A duration, or None for `off` / false / 0 (the feature is switched off)."""
    if value is None or value is False or (isinstance(value, str) and value.strip() == "off"):
        return None
    seconds = parse_duration(value)
    return seconds or None


DurationOrOff = Annotated[float | None, BeforeValidator(_duration_or_off)]


class SinkConfig(Strict):
    """Keys every sink accepts, whatever its type."""

    type: str
    events: list[str] = Field(default_factory=lambda: ["payment.*"])
    sources: list[str] | None = None
    retry: RetryConfig | None = None
    rate_limit: RateLimitValue | None = None
    timeout: Duration = 10.0
    # Requests in flight to this sink per worker process; past it a delivery fails fast and
    # is retried on schedule, so a hung sink cannot take every slot. None: half of
    # worker.concurrency.
    max_in_flight: int | None = Field(default=None, ge=1)
    # A stale event (SPEC 11): `deliver` it with `"stale": true`, or `drop` it (logged as
    # `dropped`). None: deliver for http (the receiver sees the flag), drop for the others.
    stale: Literal["deliver", "drop"] | None = None
    # SPEC 12: this long of failures with no success pauses the sink (relay.alerts; held, not
    # lost; resume is manual). None (`off` or 0): never paused automatically.
    pause_after: DurationOrOff = 5 * 86400.0

    def drops_stale(self) -> bool:
        return self.stale == "drop" or (self.stale is None and self.type != "http")


def _api_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value.strip().rstrip("/")


ApiUrl = Annotated[str, AfterValidator(_api_url)]


class ReconcileConfig(Strict):
    """A source's `reconcile:` (SPEC 11, relay.reconcile): ask the provider's status API about
    payments whose webhooks stopped coming. Each provider module subclasses it with the API's
    credentials and its documented base URL; a source without it is never asked about."""

    api_url: ApiUrl  # the providers with a documented base URL default it
    after: Duration = Field(default=1800.0, gt=0)  # quiet this long at a non-final status
    give_up: Duration = Field(default=172_800.0, gt=0, le=30 * 86400.0)
    backoff: Duration = Field(default=300.0, gt=0)  # between checks, doubling each time
    max_backoff: Duration = Field(default=3600.0, gt=0)
    # No provider documents a rate limit for its status API: ours, shared by every process.
    rate_limit: RateLimitValue = RateLimit(count=2, per=1.0)
    timeout: Duration = Field(default=10.0, gt=0, le=60.0)

    @model_validator(mode="after")
    def _order(self) -> ReconcileConfig:
        if self.give_up <= self.after:
            raise ValueError("give_up must be longer than after")
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff must not be shorter than backoff")
        return self
