"""The canonical payment event (SPEC 4): its types, deterministic ids, exact decimals, JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

import orjson

from relay.payments import REVIEW_REASONS

EVENT_TYPES = (
    "payment.created",
    "payment.pending",
    "payment.paid",
    "payment.completed",
    "payment.expired",
    "payment.cancelled",
    "payment.failed",
    "payment.review",
    "payment.other",
)


def event_id(source: str, dedupe_key: str) -> str:
    """`evt_` + lowercase base32 of a hash of (source, dedupe key): a re-delivery keeps its id."""
    digest = hashlib.sha256(f"{source}\x00{dedupe_key}".encode()).digest()
    return "evt_" + base64.b32encode(digest).decode().lower().rstrip("=")[:26]


def _small_int(value: Any) -> int | None:
    """`int(value)` for counts, None past 19 digits: int() of `Decimal("1E+1000000")` would
    build the whole number first (seconds of CPU the job deadline cannot interrupt)."""
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() >= 19:
        return None
    if isinstance(value, str) and len(value.strip()) > 40:
        return None
    return int(value)


_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def exact_decimal(value: Any) -> str | None:
    """The decimal digits a provider sent, as a plain decimal string; never through a float.

    Payloads are parsed with `loads()` below, so JSON numbers arrive as `Decimal` holding the
    sent digits. A float reaching here means someone parsed with a lossy parser: refuse it.
    Text (a form field, a JSON string) is treated as a JSON number would be (SPEC 4): a plain
    decimal is kept as sent, an exponent form becomes plain (`"1.0E-5"` -> `0.000010`).
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        raise TypeError("amount parsed as a binary float: parse payloads with relay.events.loads")
    if isinstance(value, Decimal):
        return _plain(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if _PLAIN_DECIMAL.fullmatch(text):
            return text  # the digits as sent: "0.10" stays "0.10"
        # Anything else that is a number (`1.0E-5` as Java writes a double, `.5`, `+2`) is
        # written plain with the value and precision sent, as a JSON number would be.
        try:
            number = Decimal(text)
        except InvalidOperation:
            return None
        return _plain(number) if number.is_finite() else None  # NaN, Infinity: no amount
    return None


def _plain(value: Decimal) -> str:
    # Decimal('1E+2') must read 100, but keep the digits as sent otherwise ("0.10" stays "0.10").
    # A huge exponent stays in exponent form: 1E+999999999 written out would be a gigabyte.
    text = str(value)
    if ("E" in text or "e" in text) and value.is_finite() and abs(value.adjusted()) <= 60:
        return format(value, "f")
    return text


def rfc3339(moment: datetime | float | str | None) -> str | None:
    """RFC 3339 UTC with `Z` (milliseconds only when there are any)."""
    if moment is None or moment == "":
        return None
    if isinstance(moment, (int, float, Decimal)) and not isinstance(moment, bool):
        seconds = float(moment)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000.0
        moment = datetime.fromtimestamp(seconds, UTC)
    elif isinstance(moment, str):
        text = moment.strip()
        if text.isdigit():
            return rfc3339(int(text))
        try:
            moment = parse_iso(text)
        except ValueError:
            return None
    if not isinstance(moment, datetime):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # providers that omit the zone mean UTC
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 date-time as Python 3.11's `datetime.fromisoformat` reads it (`Z`, a space
    for `T`, .NET's 7 fractional digits or more), and a lowercase `z`; naive when no zone is
    given. ValueError for anything else."""
    if text.endswith("z"):
        text = text[:-1] + "Z"
    return datetime.fromisoformat(text)


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return orjson.Fragment(_plain(obj).encode())  # exact digits, still a JSON number
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any, *, indent: bool = False) -> bytes:
    """JSON with every Decimal's exact digits (as a JSON number); `indent` for people."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_INDENT_2 if indent else 0)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _int(text: str) -> int | Decimal:
    value = int(text)
    # orjson writes 64-bit integers only; a larger one goes out as an exact Decimal fragment.
    return value if -(2**63) <= value < 2**64 else Decimal(text)


def loads(raw: bytes | str) -> Any:
    """Parse strict JSON keeping every number's exact digits (floats become Decimal)."""
    return json.loads(raw, parse_float=Decimal, parse_int=_int, parse_constant=_no_constant)


@dataclass(frozen=True)
class Payment:
    id: str | None = None
    reference: str | None = None
    status: str = "other"
    # 1, 2, 3, ... in the order the relay accepted this payment's events (SPEC 11); set by
    # the worker when it accepts the event, None before (and for an event with no payment id).
    sequence: int | None = None
    amount: str | None = None
    amount_received: str | None = None  # what has arrived, where the provider says
    currency: str | None = None
    fiat_amount: str | None = None
    fiat_currency: str | None = None
    network: str | None = None
    tx_hash: str | None = None
    tx_url: str | None = None
    confirmations: int | None = None
    description: str | None = None
    review_reason: str | None = None  # payment.review: underpaid, overpaid, late, compliance, other


@dataclass(frozen=True)
class PaymentEvent:
    id: str
    type: str
    source: str
    provider: str
    provider_event: str | None
    occurred_at: str | None
    received_at: str
    payment: Payment
    data: Any = field(default=None)
    # The payment already had an event of a later stage (SPEC 11); set by the worker.
    stale: bool = False
    reconciled: bool = False  # found by asking the provider's API, not by a webhook

    @classmethod
    def build(
        cls,
        *,
        source: str,
        provider: str,
        dedupe_key: str,
        type: str,
        provider_event: str | None,
        received_at: float,
        occurred_at: Any = None,
        payment: dict[str, Any] | None = None,
        data: Any = None,
    ) -> PaymentEvent:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        fields = dict(payment or {})
        for money in ("amount", "fiat_amount", "amount_received"):
            fields[money] = exact_decimal(fields.get(money))
        # Only a payment.review says why it needs a person (SPEC 11); one that does not know
        # says `other`.
        if type == "payment.review":
            reason = str(fields.get("review_reason") or "other")
            fields["review_reason"] = reason if reason in REVIEW_REASONS else "other"
        else:
            fields["review_reason"] = None
        for text in ("id", "reference", "currency", "fiat_currency", "network", "tx_hash"):
            if fields.get(text) is not None:
                fields[text] = str(fields[text])
        if fields.get("confirmations") is not None:
            try:
                count = _small_int(fields["confirmations"])
            except (TypeError, ValueError, OverflowError, ArithmeticError):
                count = None
            # A count no chain reaches is noise; it must also fit JSON writers' 64 bits.
            fields["confirmations"] = count if count is not None and 0 <= count < 2**63 else None
        return cls(
            id=event_id(source, dedupe_key),
            type=type,
            source=source,
            provider=provider,
            provider_event=None if provider_event is None else str(provider_event),
            occurred_at=rfc3339(occurred_at),
            received_at=rfc3339(received_at) or "",
            payment=Payment(status=type.removeprefix("payment."), **fields),
            data=data,
        )

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: that deep-copies `data` (the provider's whole
        # payload) and was a tenth of a worker's CPU. Nothing mutates the event's data.
        body = {name: getattr(self, name) for name in _EVENT_FIELDS}
        body["payment"] = {name: getattr(self.payment, name) for name in _PAYMENT_FIELDS}
        return body

    def to_json(self) -> bytes:
        return dumps(self.to_dict())


_EVENT_FIELDS = tuple(f.name for f in fields(PaymentEvent))
_PAYMENT_FIELDS = tuple(f.name for f in fields(Payment))


@dataclass(frozen=True)
class StoredEvent:
    """An event as the worker carries it between jobs: its exact JSON bytes."""

    json: bytes

    @classmethod
    def of_body(cls, body: dict[str, Any]) -> StoredEvent:
        """From an event's `to_dict()` (which the caller must not change afterwards)."""
        stored = cls(dumps(body))
        stored.__dict__["body"] = body  # already parsed: sinks need not parse the JSON again
        return stored

    @cached_property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = loads(self.json)
        return body

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def type(self) -> str:
        return str(self.body["type"])

    @property
    def source(self) -> str:
        return str(self.body["source"])

    @property
    def received_at(self) -> str:
        return str(self.body["received_at"])
