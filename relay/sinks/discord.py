"""`discord`: a message on a Discord channel webhook (SPEC 6).

`url` is the webhook URL Discord shows (`https://discord.com/api/webhooks/<id>/<token>`, or
`discordapp.com`). Any http(s) URL is accepted, so a test or a proxy can stand in for Discord;
the URL is a credential (its token posts to the channel) and is never logged.

The message: `content` is one line after Coinable's
(`[Acme Store]: New successful payment for 0.86 SOL for simple test product.`), or the sink's
own sandboxed Jinja2 `template` (see relay.sinks.render), plus, unless `details: false`, one
embed with the details (amount, reference, payment id, network, transaction linked to the
explorer, source, times, the event id in the footer, a colour per event type).

Provider text can never ping anyone: every message carries `allowed_mentions: {"parse": []}`,
provider text is markdown-escaped (no fake links, no `<@id>`), and `@everyone` / `@here` get a
zero-width space after the `@` even in template output. Every Discord length limit is met by
truncation, never by failing: content 2000, title 256, description 4096, 25 fields, field name
256 / value 1024, footer 2048, author 256, 6000 in the embed.

Answers: 2xx delivered (`?wait=true`, so Discord confirms the message was saved); 429 waits
`retry_after` (JSON, float seconds) or `Retry-After`, whichever is longer (a value that is not a
finite number >= 0 is ignored; at least 1 s), without using an attempt; 404 (unknown webhook:
Discord asks never to retry it) permanent, the sink flagged gone; 400/401/403 permanent; 5xx,
408, 425 retried; 3xx permanent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BeforeValidator, Field
from yarl import URL

from relay import __version__
from relay.config.types import SinkConfig
from relay.events import StoredEvent
from relay.keys import ALERT_TYPE
from relay.sinks import render
from relay.sinks.base import (
    USER_AGENT,
    Delivered,
    Failed,
    HttpURL,
    OutboundRequest,
    Outcome,
    PostSink,
    RetryLater,
    classify_http,
    excerpt,
    rate_limit_wait,
    retry_after_seconds,
    wait_seconds,
)

# Discord's limits (developers/resources/message.mdx, "Embed Limits"; execute webhook).
CONTENT_MAX = 2000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_MAX = 256
EMBEDS_TOTAL_MAX = 6000

SUPPRESS_NOTIFICATIONS = 1 << 12
INVALID_WEBHOOK_TOKEN = 50027
UNKNOWN_WEBHOOK = 10015

COLORS = {
    "payment.created": 0x5865F2,  # blurple
    "payment.pending": 0xFEE75C,  # yellow
    "payment.paid": 0x57F287,  # green
    "payment.completed": 0x2ECC71,  # darker green
    "payment.expired": 0x95A5A6,  # grey
    "payment.cancelled": 0x95A5A6,
    "payment.failed": 0xED4245,  # red
    "payment.review": 0xE67E22,  # orange
    "payment.other": 0x99AAB5,
}

_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

escape = render.discord_escape


def _snowflake(value: Any) -> Any:
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError("not a Discord thread id (digits)")
    return text


class DiscordSinkConfig(SinkConfig):
    type: Literal["discord"]
    url: HttpURL
    project: render.Project = "payrelay"
    username: str | None = Field(default=None, min_length=1, max_length=80)
    avatar_url: HttpURL | None = None
    template: Annotated[str | None, BeforeValidator(render.template_validator(escape))] = None
    thread_id: Annotated[str | None, BeforeValidator(_snowflake)] = None
    details: bool = True  # the embed with the payment's details
    silent: bool = False  # SUPPRESS_NOTIFICATIONS: no push/desktop notification


class DiscordSink(PostSink):
    kind = "discord"
    Config = DiscordSinkConfig
    config: DiscordSinkConfig

    user_agent = f"DiscordBot (payrelay, {__version__}) {USER_AGENT}"

    def __init__(self, name: str, config: DiscordSinkConfig) -> None:
        super().__init__(name, config)
        url = URL(config.url).update_query(wait="true")
        if config.thread_id:
            url = url.update_query(thread_id=config.thread_id)
        self.url = str(url)

    # --- the message ------------------------------------------------------------------------

    def content(self, body: dict[str, Any]) -> str:
        if self.config.template:
            text = render.render_template(self.config.template, body, self.config.project, escape)
        else:
            text = render.event_line(body, self.config.project, escape)
        return render.truncate(render.neutralise_mentions(text), CONTENT_MAX)

    def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        payment = body.get("payment") or {}
        title = render.title(body)
        amount = render.payment_amount(payment)
        if amount:
            title += f": {escape(amount)}"  # the currency is provider text, like the rest
        embed: dict[str, Any] = {
            "title": render.truncate(render.neutralise_mentions(title), TITLE_MAX),
            "color": COLORS.get(str(body.get("type")), COLORS["payment.other"]),
            "author": {"name": render.truncate(self.config.project, AUTHOR_MAX)},
        }
        link = render.tx_url(body)
        if link:
            embed["url"] = link
        description = render.one_line(payment.get("description"))
        if description:
            embed["description"] = render.truncate(
                render.neutralise_mentions(escape(description)), DESCRIPTION_MAX
            )
        fields = [
            {
                "name": render.truncate(name, FIELD_NAME_MAX),
                "value": _field_value(name, value),
                "inline": name not in _CODES,
            }
            for name, value in render.detail_fields(body)
        ]
        if fields:
            embed["fields"] = fields[:FIELDS_MAX]
        embed["footer"] = {"text": render.truncate(str(body.get("id") or ""), FOOTER_MAX)}
        moment = body.get("occurred_at") or body.get("received_at")
        if isinstance(moment, str) and _ISO.match(moment):
            embed["timestamp"] = moment
        return embed

    def payload(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self.content(body)
        embeds = [fit_embed(self.embed(body))] if self.config.details else []
        if not content and not embeds:  # a template that rendered nothing: never send empty
            content = render.truncate(
                render.neutralise_mentions(render.event_line(body, self.config.project, escape)),
                CONTENT_MAX,
            )
        payload: dict[str, Any] = {"allowed_mentions": {"parse": []}}
        if content:
            payload["content"] = content
        if embeds:
            payload["embeds"] = embeds
        if self.config.username:
            payload["username"] = self.config.username
        if self.config.avatar_url:
            payload["avatar_url"] = self.config.avatar_url
        if self.config.silent:
            payload["flags"] = SUPPRESS_NOTIFICATIONS
        return payload

    def render(self, event: StoredEvent, attempt: int) -> OutboundRequest:
        alert = event.type == ALERT_TYPE  # an operational alert (relay.alerts_send)
        payload = self.alert_payload(event.body) if alert else self.payload(event.body)
        return OutboundRequest(
            url=self.url,
            body=orjson.dumps(payload, default=str),
            headers={"Content-Type": "application/json", "User-Agent": self.user_agent},
        )

    def alert_payload(self, alert: dict[str, Any]) -> dict[str, Any]:
        """An alert (SPEC 12): a line with the rule, the subject and the figure, and an embed
        with the threshold, the last error and what to do. Every text is escaped and no one is
        pinged; the suggested commands are inline code."""
        state = "firing" if alert.get("state") == "firing" else "resolved"
        if alert.get("reminder") and state == "firing":
            state = "reminder"
        line = f"{_ALERT_MARKS[state]} · {alert.get('rule')} · {alert.get('subject')}: "
        line += f"{alert.get('figure')} (threshold {alert.get('threshold')})"
        fields = [
            ("Rule", str(alert.get("rule")), True),
            ("Subject", f"{alert.get('subject_kind')} {alert.get('subject')}", True),
            ("Threshold", str(alert.get("threshold")), True),
            ("Figure", str(alert.get("figure")), False),
        ]
        if alert.get("last_error"):
            fields.append((str(alert.get("error_label")), str(alert["last_error"]), False))
        commands = [f"`{c}`" for c in alert.get("commands") or [] if "`" not in c]
        description = escape(str(alert.get("action") or "")) + "".join(f"\n{c}" for c in commands)
        embed: dict[str, Any] = {
            "title": render.truncate(_safe(str(alert.get("summary"))), TITLE_MAX),
            "color": _ALERT_COLORS[state],
            "author": {"name": render.truncate(f"{self.config.project} · payrelay", AUTHOR_MAX)},
            "fields": [
                {"name": name, "value": render.truncate(_safe(value), FIELD_VALUE_MAX), "inline": i}
                for name, value, i in fields
            ],
            "footer": {"text": str(alert.get("id"))},
        }
        if description:
            embed["description"] = render.truncate(
                render.neutralise_mentions(description), DESCRIPTION_MAX
            )
        since = _unix(alert.get("since"))
        if since is not None:
            embed["fields"].insert(3, {"name": "Since", "value": f"<t:{since}:R>", "inline": True})
        if isinstance(alert.get("at"), str) and _ISO.match(alert["at"]):
            embed["timestamp"] = alert["at"]
        payload: dict[str, Any] = {
            "allowed_mentions": {"parse": []},
            "content": render.truncate(_safe(line), CONTENT_MAX),
            "embeds": [fit_embed(embed)],
        }
        if self.config.username:
            payload["username"] = self.config.username
        if self.config.avatar_url:
            payload["avatar_url"] = self.config.avatar_url
        return payload

    # --- the answer -------------------------------------------------------------------------

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        return classify_discord(status, headers, body)


_CODES = ("Payment ID", "Transaction", "Reference")
_ALERT_MARKS = {"firing": "🔴 ALERT", "reminder": "🔁 STILL FIRING", "resolved": "✅ RESOLVED"}
_ALERT_COLORS = {"firing": 0xED4245, "reminder": 0xE67E22, "resolved": 0x57F287}


def _safe(text: str) -> str:
    """Alert text shown literally: markdown escaped, mentions neutralised."""
    return render.neutralise_mentions(escape(text))


def _unix(moment: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(moment)).timestamp())
    except ValueError:
        return None


def _field_value(name: str, value: str) -> str:
    """Ids and hashes as inline code (shown and copied literally); other text escaped."""
    if name in _CODES and "`" not in value and render.utf16_len(value) <= FIELD_VALUE_MAX - 2:
        return f"`{value}`"
    return render.truncate(render.neutralise_mentions(escape(value)), FIELD_VALUE_MAX)


def classify_discord(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    text = excerpt(body)
    if 200 <= status < 300:
        return Delivered(status, text)
    answer = _json(body)
    if status == 429:
        waits = [
            retry_after_seconds(headers.get("Retry-After")),
            wait_seconds(answer.get("retry_after")),
        ]
        given = [w for w in waits if w is not None]
        notes = ["global"] if answer.get("global") is True else []
        if not headers.get("Via"):
            notes.append(
                "cloudflare"
            )  # discord.py: a 429 without Via is Cloudflare's, not the API's
        reason = "rate limited (429" + "".join(f", {note}" for note in notes) + ")"
        after = rate_limit_wait(max(given) if given else None)
        return RetryLater(reason, status, after, rate_limited=True, excerpt=text)
    if status == 404 or answer.get("code") == UNKNOWN_WEBHOOK:
        return Failed(f"HTTP {status}: unknown webhook", status, text, sink_gone=True)
    if answer.get("code") == INVALID_WEBHOOK_TOKEN:  # the token was regenerated: the URL is dead
        return Failed(f"HTTP {status}: invalid webhook token", status, text, sink_gone=True)
    if status in (400, 401, 403):
        message = answer.get("message")
        reason = f"HTTP {status}" + (f": {message}" if isinstance(message, str) else "")
        return Failed(reason, status, text)  # cut by Sink.deliver, after redaction
    return classify_http(status, headers, body)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# --- limits ---------------------------------------------------------------------------------


def _size(embed: dict[str, Any]) -> int:
    size = render.utf16_len(embed.get("title", "")) + render.utf16_len(embed.get("description", ""))
    size += render.utf16_len((embed.get("footer") or {}).get("text", ""))
    size += render.utf16_len((embed.get("author") or {}).get("name", ""))
    for item in embed.get("fields", []):
        size += render.utf16_len(item["name"]) + render.utf16_len(item["value"])
    return size


def fit_embed(embed: dict[str, Any], total: int = EMBEDS_TOTAL_MAX) -> dict[str, Any]:
    """Shrink the embed (already within its per-field limits) until it holds at most `total`
    characters: the description first, then fields from the last, then footer, author, title."""

    def excess() -> int:
        return _size(embed) - total

    over = excess()
    if over <= 0:
        return embed
    description = embed.get("description")
    if description:
        keep = render.utf16_len(description) - over
        if keep >= 40:
            embed["description"] = render.truncate(description, keep)
        else:
            embed.pop("description")
    while excess() > 0 and embed.get("fields"):
        embed["fields"].pop()
    if not embed.get("fields"):
        embed.pop("fields", None)
    if excess() <= 0:
        return embed
    for key, sub in (("footer", "text"), ("author", "name")):
        part = embed.get(key)
        if part and excess() > 0:
            part[sub] = render.truncate(part[sub], max(0, render.utf16_len(part[sub]) - excess()))
            if not part[sub]:
                embed.pop(key)
    if excess() > 0 and embed.get("title"):
        embed["title"] = render.truncate(
            embed["title"], max(1, render.utf16_len(embed["title"]) - excess())
        )
    return embed
