"""What the chat sinks (Discord, Slack) share: the one-line text of an event, amounts, escaping
hooks, length limits, and operator templates rendered in a Jinja2 sandbox.

Text that reaches a chat message comes from two places: the operator (the config: `project`,
the literal parts of a `template`) and the provider (descriptions, references, ids, hashes:
anything in the event). Provider text is passed through the sink's `escape` function before it
is placed in a message, so it can never become markup, a link or a mention.

Templates (`template:` on a Discord or Slack sink) are Jinja2 source, rendered in an
`ImmutableSandboxedEnvironment` with the canonical event as `event` (the whole JSON object) and
`payment` (`event.payment`), plus `line` (the default line, already escaped) and `project`.
Every `{{ expression }}` is escaped for the sink (the literal template text is the operator's
own markup and is left alone; `{{ line }}` is inserted as it is, being escaped already);
`None` renders as the empty string and a missing key as nothing.
Reaching for internals (`event.__class__.__mro__`, `payment.items.__globals__`, ...) raises
`jinja2.exceptions.SecurityError`: a template that does so on the sample event is a config
error; one that still fails at delivery time makes that delivery `Failed` (dead-lettered with
the reason, replayable once the template is fixed) rather than sending something half-rendered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from typing import Annotated, Any

import jinja2
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import AfterValidator, Field

from relay.redact import redact
from relay.sinks.base import RenderError, is_http_url

Escape = Callable[[str], str]

ELLIPSIS = "…"

# The phrase of each event type in the default line.
PHRASES = {
    "payment.created": "New payment created",
    "payment.pending": "Payment pending",
    "payment.paid": "New successful payment",
    "payment.completed": "New successful payment",
    "payment.expired": "Payment expired",
    "payment.cancelled": "Payment cancelled",
    "payment.failed": "Payment failed",
    "payment.review": "Payment needs review",
    "payment.other": "Payment update",
}

# A short title per event type (Discord embed title, Slack header line).
TITLES = {
    "payment.created": "Payment created",
    "payment.pending": "Payment pending",
    "payment.paid": "Payment received",
    "payment.completed": "Payment completed",
    "payment.expired": "Payment expired",
    "payment.cancelled": "Payment cancelled",
    "payment.failed": "Payment failed",
    "payment.review": "Payment needs review",
    "payment.other": "Payment update",
}


# Review reasons (SPEC 11) a message names; `other` says nothing more than the type does.
_AMOUNT_REASONS = ("underpaid", "overpaid", "late")
_REASON_TITLES = {
    "underpaid": "underpaid",
    "overpaid": "overpaid",
    "late": "late",
    "compliance": "compliance check",
}


class Escaped(str):
    """Text already escaped for the sink (`line` in a template): inserted as it is."""

    __slots__ = ()


# --- plain text helpers ---------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: never less than the code-point count, so a limit checked
    this way holds whichever of the two a platform counts."""
    # surrogatepass: a lone surrogate counts as the one unit it is.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


_PARTIAL_ENTITY = re.compile(r"&[#A-Za-z0-9]{0,8}$")


def truncate(text: str, limit: int, *, ellipsis: str = ELLIPSIS, entities: bool = False) -> str:
    """`text` stripped and cut to at most `limit` (UTF-16 units), ending in `ellipsis` when cut.

    With `entities`, a cut never leaves half an HTML entity (`&am`) behind (Slack escaping)."""
    text = text.strip()
    if 2 * len(text) <= limit or utf16_len(text) <= limit:  # a char is at most 2 units
        return text
    if limit <= 0:
        return ""
    if utf16_len(ellipsis) >= limit:
        ellipsis = ""
    budget = limit - utf16_len(ellipsis)
    if len(text) == utf16_len(text):  # all in the BMP: one char, one unit
        cut = text[:budget]
    else:
        used, end = 0, 0
        for end, ch in enumerate(text):  # noqa: B007 - `end` is the cut point after the loop
            size = 2 if ord(ch) > 0xFFFF else 1
            if used + size > budget:
                break
            used += size
        cut = text[:end]
    if entities:
        cut = _PARTIAL_ENTITY.sub("", cut)
    return cut.rstrip() + ellipsis


_SPACE = re.compile(r"\s+")


def one_line(value: Any) -> str:
    """A value as a single line of text (None -> empty)."""
    if value is None:
        return ""
    text = str(value)
    if text.isprintable() and "  " not in text:  # most values: no run of spaces to fold
        return text.strip()
    return _SPACE.sub(" ", text).strip()


def _project(value: str) -> str:
    return one_line(value) or "payrelay"


Project = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_project)]
"""A chat sink's `project:` key: the operator's name the event line starts with, one line."""


_MENTION = re.compile(r"@(?=(?:everyone|here|channel)\b)", re.IGNORECASE)


def neutralise_mentions(text: str) -> str:
    """`@everyone` / `@here` / `@channel` -> `@\u200beveryone`...: shown the same, pings no one."""
    return _MENTION.sub("@\u200b", text)


def slack_escape(text: str) -> str:
    """Slack's three control characters (and only those) as entities; `&` first."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_DISCORD_MARKDOWN = re.compile(r"([\\*_~`|>#<\[\]()])")


def discord_escape(text: str) -> str:
    """Backslash Discord markdown, link and mention syntax so provider text shows literally."""
    return _DISCORD_MARKDOWN.sub(r"\\\1", text)


# --- the event as text ----------------------------------------------------------------------


def format_amount(amount: Any, currency: Any) -> str:
    """`0.86 SOL`; the digits exactly as the event holds them; empty when there is no amount."""
    amount, currency = one_line(amount), one_line(currency)
    if not amount:
        return ""
    return f"{amount} {currency}" if currency else amount


def payment_amount(payment: Mapping[str, Any]) -> str:
    """The crypto amount, else what has arrived (an event that carries only that), else the
    fiat amount, as text (empty when none is known)."""
    currency = payment.get("currency")
    return (
        format_amount(payment.get("amount"), currency)
        or format_amount(payment.get("amount_received"), currency)
        or format_amount(payment.get("fiat_amount"), payment.get("fiat_currency"))
    )


def review_reason(body: Mapping[str, Any]) -> str | None:
    """The review reason a message names (underpaid, overpaid, late, compliance), else None."""
    reason = (body.get("payment") or {}).get("review_reason")
    if body.get("type") != "payment.review" or reason not in _REASON_TITLES:
        return None
    return str(reason)


def review_note(body: Mapping[str, Any]) -> tuple[str, bool]:
    """What a review event's line says about why (not escaped): `underpaid: received 0.5 of
    0.86 SOL` (or `overpaid: ...`, `late: ...`), `compliance check`; and whether it already
    states the amount. ("", False) for other events."""
    reason = review_reason(body)
    if reason is None:
        return "", False
    payment = body.get("payment") or {}
    received, amount = one_line(payment.get("amount_received")), one_line(payment.get("amount"))
    if reason not in _AMOUNT_REASONS or not received:
        return _REASON_TITLES[reason], False
    if amount:
        return (
            f"{reason}: received {received} of {format_amount(amount, payment.get('currency'))}",
            True,
        )
    return f"{reason}: received {format_amount(received, payment.get('currency'))}", True


def event_line(body: Mapping[str, Any], project: str, escape: Escape) -> str:
    """The one-line summary, after Coinable's Discord line:

    `[Acme Store]: New successful payment for 0.86 SOL for simple test product.`

    Without an amount or a description it degrades to what is known (the order reference, else
    the payment id): `[Acme Store]: Payment expired for order 123456.` A review says why (SPEC
    11's review_reason): `[Acme Store]: Payment needs review (underpaid: received 0.5 of 0.86
    SOL) for order 123456.`
    """
    payment = body.get("payment") or {}
    kind = str(body.get("type") or "payment.other")
    phrase = PHRASES.get(kind, PHRASES["payment.other"])
    if kind not in PHRASES or kind == "payment.other":
        provider_event = one_line(body.get("provider_event"))
        if provider_event:
            phrase += f" ({escape(provider_event)})"
    text = phrase
    note, states_amount = review_note(body)
    if note:
        text += f" ({escape(note)})"  # underpaid: received 0.5 of 0.86 SOL
    amount = payment_amount(payment)
    if amount and not states_amount:
        text += f" for {escape(amount)}"
    description = one_line(payment.get("description"))
    reference = one_line(payment.get("reference"))
    payment_id = one_line(payment.get("id"))
    if description:
        text += f" for {escape(description.rstrip('.'))}"
    elif reference:
        text += f" for order {escape(reference)}"
    elif payment_id and not amount:
        text += f" for payment {escape(payment_id)}"
    return f"[{escape(one_line(project))}]: {text}."


def title(body: Mapping[str, Any]) -> str:
    """`Payment completed`; a review names its reason: `Payment needs review (underpaid)`."""
    text = TITLES.get(str(body.get("type")), TITLES["payment.other"])
    reason = review_reason(body)
    return f"{text} ({_REASON_TITLES[reason]})" if reason else text


def detail_fields(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, raw value) pairs worth showing, in order; empty values left out. Not escaped."""
    payment = body.get("payment") or {}
    fiat = format_amount(payment.get("fiat_amount"), payment.get("fiat_currency"))
    crypto = format_amount(payment.get("amount"), payment.get("currency"))
    received = format_amount(payment.get("amount_received"), payment.get("currency"))
    source = one_line(body.get("source"))
    provider = one_line(body.get("provider"))
    pairs = [
        ("Amount", crypto),
        ("Received", received if received != crypto else ""),  # what has arrived, when not all
        ("Fiat amount", fiat if crypto else ""),
        ("Reference", one_line(payment.get("reference"))),
        ("Payment ID", one_line(payment.get("id"))),
        ("Network", one_line(payment.get("network"))),
        ("Confirmations", one_line(payment.get("confirmations"))),
        ("Transaction", one_line(payment.get("tx_hash"))),
        ("Source", source if provider in ("", source) else f"{source} ({provider})"),
        ("Provider event", one_line(body.get("provider_event"))),
        ("Occurred at", one_line(body.get("occurred_at"))),
    ]
    if not crypto and fiat:
        pairs[0] = ("Amount", fiat)
    return [(name, value) for name, value in pairs if value]


def tx_url(body: Mapping[str, Any]) -> str | None:
    """The payment's explorer link when it is a plain http(s) URL, else None."""
    url = (body.get("payment") or {}).get("tx_url")
    return url if isinstance(url, str) and is_http_url(url) and len(url) <= 2048 else None


# --- operator templates ---------------------------------------------------------------------


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, made strict about internals: an unsafe attribute raises at once (the stock
    sandbox returns an Undefined that only raises when used further, so `{{ x.__class__ }}`
    would quietly print nothing)."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )


@cache
def _environment(escape: Escape) -> _Environment:
    def finalize(value: Any) -> Any:
        if value is None or isinstance(value, jinja2.Undefined):
            return ""
        if isinstance(value, Escaped):
            return value
        return escape(str(value))

    return _Environment(
        autoescape=False,
        undefined=jinja2.ChainableUndefined,  # event.data.a.b renders empty when absent
        finalize=finalize,
        keep_trailing_newline=False,
    )


@lru_cache(maxsize=256)
def compile_template(source: str, escape: Escape) -> jinja2.Template:
    """The compiled template; `ValueError` (a config error) when it does not compile or when it
    fails on a sample event because it reaches for something the sandbox forbids."""
    env = _environment(escape)
    try:
        template = env.from_string(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template does not compile: {exc.message} (line {exc.lineno})") from None
    try:
        template.render(template_context(SAMPLE_EVENT, "payrelay", escape))
    except SecurityError as exc:
        raise ValueError(f"template not allowed: {exc}") from None
    except Exception:  # noqa: BLE001, S110 - data-dependent errors are judged on real events
        pass
    return template


def template_context(body: Mapping[str, Any], project: str, escape: Escape) -> dict[str, Any]:
    return {
        "event": body,
        "payment": body.get("payment") or {},
        "project": project,
        "line": Escaped(event_line(body, project, escape)),
    }


def render_template(source: str, body: Mapping[str, Any], project: str, escape: Escape) -> str:
    """An operator template rendered for one event; `RenderError` when it fails."""
    try:
        template = compile_template(source, escape)
        return template.render(template_context(body, project, escape))
    except Exception as exc:  # noqa: BLE001 - whatever a template does wrong fails the delivery
        # The message may quote event data (a URL with a token): redact before it is stored.
        raise RenderError(redact(f"{type(exc).__name__}: {exc}")[:300]) from None


def template_validator(escape: Escape) -> Callable[[Any], Any]:
    """A pydantic validator for a `template:` key: compiles it (and tries it) at config load."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("a template must be a string")  # noqa: TRY004 - pydantic wants ValueError
        if not value.strip():
            return None
        compile_template(value, escape)
        return value

    return check


SAMPLE_EVENT: dict[str, Any] = {
    "id": "evt_sampleeventsampleeventsa",
    "type": "payment.completed",
    "source": "sample",
    "provider": "sample",
    "provider_event": "completed",
    "occurred_at": "2024-09-13T17:33:05Z",
    "received_at": "2024-09-13T17:33:06.123Z",
    "payment": {
        "id": "6b577835afbefe60335b6e5cd04410a9",
        "reference": "123456",
        "status": "completed",
        "amount": "0.86",
        "currency": "SOL",
        "fiat_amount": "120.40",
        "fiat_currency": "USD",
        "network": "SOL",
        "tx_hash": "5tx",
        "tx_url": "https://explorer.solana.com/tx/5tx",
        "confirmations": 32,
        "description": "simple test product",
    },
    "data": {"status": "completed"},
}
