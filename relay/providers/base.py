"""What every provider module implements, and the helpers they share (HMAC, parsing, secrets).

A provider module holds one class: its `Config` (the YAML keys of a source of that kind), its
`verify` (runs in the ingress on the raw bytes; raises `Rejected`), its `normalize` (runs in
the worker on the stored request; returns canonical events) and its `sample` (a correctly
signed example request, for `relay trigger` and the tests).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import orjson

from relay.config.types import SourceConfig
from relay.events import PaymentEvent, loads, parse_iso, rfc3339
from relay.inbound import InboundRequest


class Rejected(Exception):
    """The ingress answers `status` with `{"error": error}`; `reason` is for the rejection log."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def bad_signature(reason: str) -> Rejected:
    return Rejected(401, "bad_signature", reason)


def bad_token(reason: str) -> Rejected:
    return Rejected(401, "bad_token", reason)


def stale_timestamp(reason: str) -> Rejected:
    return Rejected(401, "stale_timestamp", reason)


def malformed(reason: str) -> Rejected:
    return Rejected(400, "malformed", reason)


@dataclass(frozen=True)
class SampleRequest:
    """A signed example webhook: what `relay trigger` POSTs."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # appended to the URL path for token-authenticated sources


class Provider(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[SourceConfig]]
    # Header names (lower case) stored with the job because normalize reads them.
    keep_headers: ClassVar[tuple[str, ...]] = ()
    # Header names (lower case) that carry a credential (an API key, not a signature): never
    # kept with a rejected request (relay.rejected), so such a request cannot be verified again.
    secret_headers: ClassVar[tuple[str, ...]] = ()
    # Canonical types `sample()` can produce, for `relay trigger` (e.g. "paid", "completed").
    sample_events: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self.config = config

    def stored_answer(self, inbound_id: str, duplicate: bool) -> tuple[bytes, str] | None:
        """The body (and content type) of the 200 for a stored webhook, for providers that
        count a delivery as done only on their own answer; None: SPEC 3's JSON."""
        del inbound_id, duplicate
        return None

    @abstractmethod
    def verify(self, request: InboundRequest) -> None:
        """Raise `Rejected` unless the request is authentic and well formed."""

    @abstractmethod
    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        """The canonical events this (already verified) request carries; [] for e.g. a ping."""

    @abstractmethod
    def sample(self, event: str, now: float) -> SampleRequest:
        """A correctly signed example request for canonical event `event` (e.g. "paid")."""

    def event(self, request: InboundRequest, **fields: Any) -> PaymentEvent:
        """Build a canonical event for this source (fills source, provider and receipt time)."""
        return PaymentEvent.build(
            source=self.name, provider=self.kind, received_at=request.received_at, **fields
        )


# --- shared helpers -------------------------------------------------------------------------

_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def hmac_digest(secret: bytes | str, message: bytes, algorithm: str = "sha256") -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, _DIGESTS[algorithm]).digest()


def decode_signature(text: str, encoding: str) -> bytes | None:
    """Hex (either case) or base64 -> bytes; None when it is not valid in that encoding."""
    text = text.strip()
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def any_secret_matches(
    secrets: Iterable[bytes | str],
    message: bytes,
    candidates: Iterable[bytes],
    algorithm: str = "sha256",
) -> bool:
    """True when any secret's HMAC equals any candidate signature (constant-time compares)."""
    wanted = [c for c in candidates if c]
    found = False
    for secret in secrets:
        expected = hmac_digest(secret, message, algorithm)
        for candidate in wanted:
            # No early exit: every pair is compared so timing says nothing about which matched.
            found |= hmac.compare_digest(expected, candidate)
    return found


def token_matches(secrets: Iterable[str], given: str | None) -> bool:
    """Constant-time comparison of a static token (API key, URL token) against the secrets."""
    if not given:
        return False
    given_bytes = given.encode("utf-8", "surrogateescape")
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(secret.encode(), given_bytes)
    return found


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    r"""JSON may escape half a surrogate pair (`"\\ud800"`); no UTF-8 output can carry one, so it
    becomes U+FFFD (else the event id and the event JSON could not be written)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    return value


MAX_JSON_DEPTH = 200  # deeper than any payment payload; orjson cannot write past 254


def _too_deep(body: bytes) -> bool:
    """True when brackets nest deeper than MAX_JSON_DEPTH (only scanned when it could be)."""
    if body.count(b"{") + body.count(b"[") <= MAX_JSON_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif byte in (0x7D, 0x5D):
            depth -= 1
    return False


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The payload as a dict with exact decimals, or `Rejected(400, malformed)`."""
    if not body.strip():
        raise malformed("empty body")
    if _too_deep(body):
        raise malformed(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        parsed = loads(body)
        if b"\\u" in body or not body.isascii():  # only then can a lone surrogate be in it
            parsed = _without_lone_surrogates(parsed)
    except (ValueError, UnicodeDecodeError, RecursionError, ArithmeticError):
        # ArithmeticError: a number no Decimal can hold (decimal.InvalidOperation).
        raise malformed("body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise malformed("JSON body is not an object")
    return parsed


def check_json_object(body: bytes) -> None:
    """The ingress's cheap check: a JSON object, or `Rejected(400, malformed)`."""
    if not body.strip():
        raise malformed("empty body")
    if _too_deep(body):
        raise malformed(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parse_json_object(body)
        return
    if not isinstance(parsed, dict):
        raise malformed("JSON body is not an object")


def parse_form(body: bytes) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body -> dict, or `Rejected(400, malformed)`."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise malformed("body is not a valid form") from None
    if not pairs:
        raise malformed("empty form")
    return dict(pairs)


def dig(obj: Any, path: str) -> Any:
    """`a.b.c` (or `a.0.c`) in nested dicts/lists; None when any step is missing."""
    node = obj
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is None:
            return None
    return node


# --- helpers added for the provider modules ---------------------------------------------------


def header_bytes(value: str) -> bytes:
    """A header value as the bytes that were sent (signatures cover bytes, not text)."""
    try:
        # aiohttp decodes header bytes as UTF-8 with surrogateescape: this undoes it exactly.
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def same_text(expected: str, given: str | None) -> bool:
    """Constant-time equality of a configured identifier (client id, merchant id, public key)."""
    return token_matches([expected], given)


def parse_instant(text: str) -> float | None:
    """An ISO 8601 date-time (no zone means UTC) or Unix seconds -> Unix seconds; else None."""
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= 12:
        return float(text)
    try:
        moment = parse_iso(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def skew_text(sent_at: float, now: float) -> str:
    """How far a signed timestamp is from the receipt time, for a stale_timestamp reason:
    `600 s old` (sent 10 minutes before it arrived) or `30 s in the future` (a fast clock)."""
    seconds = int(now - sent_at)
    return f"{seconds} s old" if seconds >= 0 else f"{-seconds} s in the future"


def body_digest(body: bytes) -> str:
    """A digest of the raw body: the dedupe key of last resort (only byte-identical repeats)."""
    return hashlib.sha256(body).hexdigest()[:32]


def value_digest(value: Any) -> str:
    """A digest of a parsed JSON value that ignores key order and whitespace."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def safe_time(value: Any) -> str | None:
    """`rfc3339(value)`, or None for a value no calendar holds (bad input must not fail a job)."""
    try:
        return rfc3339(value)
    except (ValueError, OverflowError, OSError, TypeError, ArithmeticError):
        return None


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else {} (payload fields may have any shape)."""
    return value if isinstance(value, dict) else {}


def first(*values: Any) -> Any:
    """The first value that is neither None nor "" (providers spell one field several ways)."""
    for value in values:
        if value is not None and value != "":
            return value
    return None


def scalar(value: Any) -> Any:
    """`value` when it is a JSON scalar, else None (an id or a name is never an object or list)."""
    return None if isinstance(value, (dict, list)) else value
