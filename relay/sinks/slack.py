"""`slack`: a message through a Slack incoming webhook (SPEC 6).

`url` is the webhook URL Slack gives (`https://hooks.slack.com/services/T.../B.../...`); any
http(s) URL is accepted so a test or proxy can stand in. The URL is a credential.

The message: `text` is the one-line summary (`[Acme Store]: New successful payment for 0.86
SOL for simple test product.`), or the sink's own sandboxed Jinja2 `template` (see
relay.sinks.render); unless `details: false`, `blocks` repeat it in a section and add the
details as section fields and a context line (event id, source). Slack treats `&`, `<` and `>`
as control characters: in every piece of provider text they are sent as `&amp;`, `&lt;`,
`&gt;`, which also defuses `<!channel>`, `<@U123>` and `<https://evil|bank>` link spoofing;
`@channel`/`@here`/`@everyone` get a zero-width space after the `@`. Link unfurling is off.
Limits are met by truncation: text 40,000, section text 3,000, 10 fields of 2,000, 50 blocks.

Answers: 2xx delivered; 429 waits `Retry-After` without using an attempt; 400 (a payload Slack
rejects) and 403 (posting prohibited, invalid token) permanent; 404 (channel or webhook not
found) and 410 (channel archived) permanent with the sink flagged gone; 5xx, 408, 425 retried;
3xx permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BeforeValidator

from relay.config.types import SinkConfig
from relay.events import StoredEvent
from relay.keys import ALERT_TYPE
from relay.sinks import render
from relay.sinks.base import (
    USER_AGENT,
    Failed,
    HttpURL,
    OutboundRequest,
    Outcome,
    PostSink,
    classify_http,
    excerpt,
)

# Slack's limits (incoming webhooks, Block Kit).
TEXT_MAX = 40_000
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
CONTEXT_TEXT_MAX = 3000
BLOCKS_MAX = 50

escape = render.slack_escape


class SlackSinkConfig(SinkConfig):
    type: Literal["slack"]
    url: HttpURL
    project: render.Project = "payrelay"
    template: Annotated[str | None, BeforeValidator(render.template_validator(escape))] = None
    details: bool = True  # blocks with the payment's details


def _cut(text: str, limit: int) -> str:
    return render.truncate(text, limit, entities=True)


class SlackSink(PostSink):
    kind = "slack"
    Config = SlackSinkConfig
    config: SlackSinkConfig

    def text(self, body: dict[str, Any]) -> str:
        text = ""
        if self.config.template:
            text = render.render_template(self.config.template, body, self.config.project, escape)
        if not text.strip():
            text = render.event_line(body, self.config.project, escape)
        return render.neutralise_mentions(text)

    def blocks(self, body: dict[str, Any], text: str) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_TEXT_MAX)}}
        ]
        link = render.tx_url(body)
        fields = []
        for name, value in render.detail_fields(body):
            shown = escape(value)
            if name == "Transaction" and link:
                label = _cut(shown, 100)
                shown = f"<{escape(link).replace('|', '%7C')}|{label}>"
            head = f"*{name}*\n"
            fields.append(
                {
                    "type": "mrkdwn",
                    "text": head
                    + _cut(render.neutralise_mentions(shown), FIELD_TEXT_MAX - len(head)),
                }
            )
        if fields:
            blocks.append({"type": "section", "fields": fields[:SECTION_FIELDS_MAX]})
        context = f"{render.title(body)} · `{body.get('id', '')}` · {escape(render.one_line(body.get('source')))}"
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _cut(render.neutralise_mentions(context), CONTEXT_TEXT_MAX),
                    }
                ],
            }
        )
        return blocks[:BLOCKS_MAX]

    def payload(self, body: dict[str, Any]) -> dict[str, Any]:
        text = self.text(body)
        payload: dict[str, Any] = {"text": _cut(text, TEXT_MAX)}
        if self.config.details:
            payload["blocks"] = self.blocks(body, text)
        payload["unfurl_links"] = False
        payload["unfurl_media"] = False
        return payload

    def render(self, event: StoredEvent, attempt: int) -> OutboundRequest:
        alert = event.type == ALERT_TYPE  # an operational alert (relay.alerts_send)
        payload = alert_payload(event.body) if alert else self.payload(event.body)
        return OutboundRequest(
            url=self.config.url,
            body=orjson.dumps(payload, default=str),
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT},
        )

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        return classify_slack(status, headers, body)


_ALERT_MARKS = {"firing": ":red_circle: ALERT", "resolved": ":white_check_mark: RESOLVED"}


def _text(value: Any, limit: int = SECTION_TEXT_MAX) -> str:
    return _cut(render.neutralise_mentions(escape(str(value or ""))), limit)


def alert_payload(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert (SPEC 12): `text` with the rule, the subject and the figure; blocks with the
    summary, the threshold, the last error and what to do. Every text is escaped."""
    firing = alert.get("state") == "firing"
    mark = ":repeat: STILL FIRING" if firing and alert.get("reminder") else None
    mark = mark or _ALERT_MARKS["firing" if firing else "resolved"]
    line = f"{alert.get('rule')} · {alert.get('subject')}: {alert.get('figure')}"
    line += f" (threshold {alert.get('threshold')})"
    fields = [
        ("Rule", alert.get("rule")),
        ("Subject", f"{alert.get('subject_kind')} {alert.get('subject')}"),
        ("Threshold", alert.get("threshold")),
        ("Since", alert.get("since")),
    ]
    if alert.get("last_error"):
        fields.append((str(alert.get("error_label")), alert["last_error"]))
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"{mark} *{_text(alert.get('summary'), 1000)}*\n{_text(alert.get('figure'))}",
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n" + _text(value, FIELD_TEXT_MAX - 40)}
                for name, value in fields
            ],
        },
    ]
    commands = [f"`{_text(c, 200)}`" for c in alert.get("commands") or [] if "`" not in c]
    if alert.get("action") or commands:
        todo = "\n".join([_text(alert.get("action"), 2000), *commands]).strip()
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": todo}})
    context = {"type": "mrkdwn", "text": f"payrelay · `{_text(alert.get('id'), 100)}`"}
    blocks.append({"type": "context", "elements": [context]})
    return {
        "text": _cut(f"{mark} " + render.neutralise_mentions(escape(line)), TEXT_MAX),
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }


def classify_slack(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    text = excerpt(body)
    if status in (400, 403, 404, 410):
        reason = f"HTTP {status}" + (f": {text.strip()[:100]}" if text.strip() else "")
        return Failed(reason, status, text, sink_gone=status in (404, 410))
    return classify_http(status, headers, body)
