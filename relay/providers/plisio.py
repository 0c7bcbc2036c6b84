"""Plisio (plisio.net): invoice callbacks signed by `verify_hash`, a field of the body itself.

Authentication: `verify_hash` = hex HMAC-SHA1, keyed with the shop's **Secret key** (API
settings), over the rest of the payload serialized the way Plisio's own code does it. Plisio
posts a form by default and JSON when the callback URL carries `?json=true`; each is hashed
differently:

- form (`application/x-www-form-urlencoded`), as every Plisio PHP plugin checks it
  (Plisio/woocommerce-plugin `verifyCallbackData`, and the same function in Plisio's OpenCart,
  Shopware, osCommerce and Zen Cart plugins): drop `verify_hash`, sort by key (`ksort`), HTML-
  decode `tx_urls` (`html_entity_decode`), then PHP `serialize()` of that array of strings
  (`a:N:{s:LEN:"key";s:LEN:"value";...}`, LEN in bytes).
- JSON, as Plisio's published JavaScript checks it: `JSON.stringify` of the parsed object
  without `verify_hash`, either in the order received (the Node.js example of the
  create-an-invoice documentation, plisio.net/documentation/endpoints/create-an-invoice) or with
  the keys sorted and every value made a string (Plisio/nodejs-api-client
  `src/utils/ResponseValidator.ts`, whose test vector is tests/data/plisio/). Plisio's Python
  SDK (Plisio/plisio-python `validate_callback`) hashes Python's `json.dumps` instead, which
  differs only by escaping non-ASCII; all three forms are accepted (each needs the key).

Re-serialization is unavoidable here (Plisio signs a serialized form, not the bytes it sends);
nothing else is read before the hash matches. A body without a `verify_hash` (one that is
neither a form nor a JSON object has none) is `401 bad_signature`: SPEC 3 checks the signature
before the format.

Statuses (`status`): new -> created; pending, pending internal -> pending; completed ->
completed (Plisio credits the shop's balance then); mismatch -> review (over/under payment,
`review_reason` from `amount` received against `invoice_total_sum`); expired -> expired (an
underpaid invoice also ends as expired: `amount_received` shows what came); error -> failed;
cancelled, cancelled duplicate -> cancelled; anything else -> other.

Fields: `txn_id` (Plisio's invoice id), `order_number` (reference), `invoice_total_sum` (amount
due, crypto), `amount` (received), `currency`/`psys_cid`, `source_amount`/`source_currency`
(fiat), `confirmations`, `tx_id`, `tx_urls`.

Dedupe key: `txn_id` + status + received `amount` + `pending_amount` + confirmations + `tx_id`.
A redelivery carries the same fields (one event); a second partial payment changes the amount
received and the remaining `pending_amount` (a new event). Without `txn_id`, a body digest.

Status API: `GET https://api.plisio.net/api/v1/operations/{txn_id}?api_key=...` ("Transaction
details", Plisio/plisio-python `get_operation`).
"""

from __future__ import annotations

import contextlib
import html
import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

from relay.config.types import Secrets, SourceConfig
from relay.events import PaymentEvent, dumps
from relay.inbound import InboundRequest
from relay.providers.base import (
    Provider,
    Rejected,
    SampleRequest,
    any_secret_matches,
    bad_signature,
    body_digest,
    decode_signature,
    first,
    hmac_digest,
    parse_form,
    parse_json_object,
    scalar,
)

_STATUSES = {
    "new": "payment.created",
    "pending": "payment.pending",
    "pending internal": "payment.pending",
    "completed": "payment.completed",
    "mismatch": "payment.review",
    "expired": "payment.expired",
    "error": "payment.failed",
    "cancelled": "payment.cancelled",
    "cancelled duplicate": "payment.cancelled",
}

# Canonical short name -> the Plisio status a sample carries.
_SAMPLES = {
    "created": "new",
    "pending": "pending",
    "completed": "completed",
    "review": "mismatch",
    "expired": "expired",
    "failed": "error",
    "cancelled": "cancelled",
}


class PlisioConfig(SourceConfig):
    provider: Literal["plisio"]
    secret_key: Secrets  # API settings -> Secret key (also the API key)


# --- the serializations Plisio's code hashes ----------------------------------------------------


def php_serialize(fields: dict[str, str]) -> bytes:
    """PHP `serialize()` of an array of strings, keys in `ksort` order (byte lengths)."""
    parts = [f"a:{len(fields)}:{{".encode()]
    for key in sorted(fields):
        for text in (key, fields[key]):
            raw = text.encode("utf-8", "surrogateescape")
            parts.append(b's:%d:"%s";' % (len(raw), raw))
    parts.append(b"}")
    return b"".join(parts)


def form_message(form: dict[str, str]) -> bytes:
    """What the PHP plugins hash for a form callback (`verify_hash` already removed)."""
    fields = dict(form)
    if "tx_urls" in fields:
        fields["tx_urls"] = html.unescape(fields["tx_urls"])
    return php_serialize(fields)


def js_number(value: Decimal | int) -> str:
    """A number as JavaScript's `String(number)` writes the double it parses to."""
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return "null"
    if not math.isfinite(number):
        return "null"  # JSON.stringify(Infinity)
    if number == 0:
        return "0"
    exact = Decimal(repr(number))  # repr: the shortest digits that round-trip, as JS picks
    sign, digits_tuple, exponent = exact.normalize().as_tuple()
    digits = "".join(map(str, digits_tuple))
    point = len(digits) + int(exponent)  # the decimal point sits after `point` digits
    if len(digits) <= point <= 21:
        text = digits + "0" * (point - len(digits))
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text = f"{mantissa}e{'+' if point - 1 >= 0 else '-'}{abs(point - 1)}"
    return ("-" if sign else "") + text


def _js_keys(obj: dict[str, Any]) -> list[str]:
    """JavaScript's own-key order: array-index keys ascending first, then insertion order."""
    index = [k for k in obj if k.isdigit() and str(int(k)) == k and int(k) < 2**32 - 1]
    return sorted(index, key=int) + [k for k in obj if k not in index]


def js_stringify(value: Any) -> str:
    """`JSON.stringify(value)` of a value parsed from JSON (exact decimals as JS doubles)."""
    if isinstance(value, dict):
        items = (
            f"{json.dumps(k, ensure_ascii=False)}:{js_stringify(value[k])}" for k in _js_keys(value)
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(js_stringify(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (Decimal, int)):
        return js_number(value)
    return json.dumps(str(value), ensure_ascii=False)


def js_string(value: Any) -> str:
    """`value + ""` in JavaScript (what the Node SDK makes of each value)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (Decimal, int)):
        return js_number(value)
    if isinstance(value, list):
        return ",".join("" if v is None else js_string(v) for v in value)
    return "[object Object]"


def _py_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _py_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_py_floats(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value


def json_messages(payload: dict[str, Any]) -> list[bytes]:
    """What Plisio's published code hashes for a JSON callback (`verify_hash` removed)."""
    ordered = {k: v for k, v in payload.items() if k != "verify_hash"}
    as_strings = {k: js_string(ordered[k]) for k in sorted(ordered)}
    texts = [js_stringify(ordered), js_stringify(as_strings)]
    with contextlib.suppress(OverflowError, ValueError):
        texts.append(json.dumps(_py_floats(ordered), separators=(",", ":")))
    return [t.encode("utf-8", "surrogatepass") for t in dict.fromkeys(texts)]


def is_json(body: bytes) -> bool:
    return body.lstrip()[:1] == b"{"


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def review_reason(received: Any, due: Any, pending: Any) -> str:
    """Underpaid or overpaid, from the amounts of a `mismatch` callback; other when unknown."""
    got, want, left = _decimal(received), _decimal(due), _decimal(pending)
    if left is not None and left > 0:
        return "underpaid"
    if got is None or want is None:
        return "other"
    if got > want:
        return "overpaid"
    return "underpaid" if got < want else "other"


def _last(value: Any) -> Any:
    """The last element of a list (or of a JSON list in a string), else the scalar itself."""
    if isinstance(value, str):
        value = html.unescape(value)  # form callbacks send tx_urls HTML-escaped
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, list):
        return scalar(value[-1]) if value else None
    return scalar(value)


class PlisioProvider(Provider):
    kind = "plisio"
    Config = PlisioConfig
    sample_events: ClassVar[tuple[str, ...]] = tuple(_SAMPLES)
    config: PlisioConfig

    def verify(self, request: InboundRequest) -> None:
        try:
            payload, messages = self._parse(request.body)
        except Rejected as unreadable:  # no verify_hash can be found: SPEC 3 says 401 first
            raise bad_signature(f"verify_hash missing ({unreadable.reason})") from None
        given = payload.get("verify_hash")
        if not isinstance(given, str) or not given:
            raise bad_signature("verify_hash missing")
        candidate = decode_signature(given, "hex")
        matched = False
        for message in messages:
            matched |= candidate is not None and any_secret_matches(
                self.config.secret_key, message, [candidate], "sha1"
            )
        if not matched:
            raise bad_signature("verify_hash matches no configured secret_key")

    def _parse(self, body: bytes) -> tuple[dict[str, Any], list[bytes]]:
        if is_json(body):
            payload = parse_json_object(body)
            return payload, json_messages(payload)
        form = parse_form(body)
        return form, [form_message({k: v for k, v in form.items() if k != "verify_hash"})]

    def normalize(self, request: InboundRequest) -> list[PaymentEvent]:
        body = request.body
        payload: dict[str, Any] = parse_json_object(body) if is_json(body) else parse_form(body)
        status = scalar(payload.get("status"))
        name = None if status is None else str(status)
        kind = _STATUSES.get((name or "").strip().casefold(), "payment.other")
        get = {k: scalar(v) for k, v in payload.items()}
        txn_id, tx_id = get.get("txn_id"), _last(payload.get("tx_id"))
        received, pending = get.get("amount"), get.get("pending_amount")
        due = first(get.get("invoice_total_sum"), get.get("invoice_sum"))
        if txn_id is not None and txn_id != "":
            key = f"txn:{txn_id}:{name}:{received}:{pending}:{get.get('confirmations')}:{tx_id}"
        else:
            key = f"body:{body_digest(body)}"
        payment = {
            "id": txn_id,
            "reference": get.get("order_number"),
            "amount": due,
            "amount_received": received,
            "currency": first(get.get("currency"), get.get("psys_cid")),
            "fiat_amount": get.get("source_amount"),
            "fiat_currency": get.get("source_currency"),
            "tx_hash": tx_id,
            "tx_url": _last(payload.get("tx_urls")),
            "confirmations": get.get("confirmations"),
            "description": first(get.get("order_name"), get.get("comment")),
        }
        if kind == "payment.review":
            payment["review_reason"] = review_reason(received, due, pending)
        return [
            self.event(
                request,
                dedupe_key=key,
                type=kind,
                provider_event=name,
                payment=payment,
                data=payload,
            )
        ]

    def sample(self, event: str, now: float) -> SampleRequest:
        status = _SAMPLES[event]
        paid = {"new": "0", "mismatch": "0.00094000", "expired": "0.00020000"}.get(
            status, "0.00047000"
        )
        fields = {
            "txn_id": "65f1c0de9b1e2a0011223344",
            "ipn_type": "invoice",
            "merchant": "Relay sample shop",
            "merchant_id": "5d09fcd84f1e66138d706ed8",
            "amount": paid,
            "pending_amount": "0.00027000" if status == "expired" else "0",
            "invoice_sum": "0.00046000",
            "invoice_commission": "0.00001000",
            "invoice_total_sum": "0.00047000",
            "currency": "BTC",
            "psys_cid": "BTC",
            "source_amount": "30.00",
            "source_currency": "USD",
            "source_rate": "63829.78",
            "order_number": "order-1001",
            "order_name": "Sample order",
            "confirmations": "0" if status == "new" else "2",
            "status": status,
            "comment": "relay trigger sample",
            "expire_utc": str(int(now) + 3600),
        }
        if status != "new":
            fields["tx_id"] = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
        secret = self.config.secret_key[0]
        if status == "completed":  # one sample in the `?json=true` form, as the docs' Node code
            digest = hmac_digest(secret, js_stringify(fields).encode(), "sha1").hex()
            body = dumps({**fields, "verify_hash": digest})
            return SampleRequest(body=body, headers={"Content-Type": "application/json"})
        digest = hmac_digest(secret, form_message(fields), "sha1").hex()
        body = urlencode({**fields, "verify_hash": digest}).encode()
        return SampleRequest(
            body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
