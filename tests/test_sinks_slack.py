"""The `slack` sink against a local server that checks bodies against Slack's limits: the
message, escaping of provider text, templates, and the answer classification."""

from __future__ import annotations

import re
from typing import Any

import pytest

from relay.config.model import ConfigError, validate
from relay.sinks import SINKS
from relay.sinks.base import Delivered, Failed, RetryLater
from relay.sinks.slack import SlackSink, SlackSinkConfig
from tests.sink_servers import Reply, SinkServer, payment_event, slack_violations

pytest_plugins = ["tests.sink_servers"]  # the sink_server and sink_client fixtures

LINE = "[Acme Store]: New successful payment for 0.86 SOL for simple test product."


def make_sink(url: str, **options: Any) -> SlackSink:
    options.setdefault("project", "Acme Store")
    return SlackSink(
        "sales", SlackSinkConfig.model_validate({"type": "slack", "url": url, **options})
    )


def config_errors(sink: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate({"sinks": {"sales": {"type": "slack", **sink}}}, env={})
    return [f"{path}: {message}" for path, message in caught.value.errors]


async def send(
    server: SinkServer, session: Any, event: Any = None, **options: Any
) -> tuple[Any, Any]:
    """Deliver once; return the outcome and the one request the server received."""
    url = server.slack_url()
    outcome = await make_sink(url, **options).deliver(session, event or payment_event(), 1)
    (request,) = server.requests(url)
    return outcome, request


def all_text(payload: dict[str, Any]) -> str:
    """Every piece of text in the payload, joined."""
    parts = [payload["text"]]
    for block in payload.get("blocks", []):
        parts += [block.get("text", {}).get("text", "")]
        parts += [f["text"] for f in block.get("fields", [])]
        parts += [e["text"] for e in block.get("elements", [])]
    return "\n".join(parts)


def test_registered() -> None:
    """The registry maps `slack` to the sink class."""
    assert SINKS["slack"] is SlackSink


async def test_text_and_blocks(sink_server: SinkServer, sink_client: Any) -> None:
    """The message carries the line as text and a section, the details as fields, and is accepted."""
    outcome, request = await send(sink_server, sink_client)
    payload = request.json()
    assert outcome == Delivered(200) and request.violations == []
    assert payload["text"] == LINE and payload["blocks"][0]["text"] == {
        "type": "mrkdwn",
        "text": LINE,
    }
    fields = [f["text"] for f in payload["blocks"][1]["fields"]]
    assert "*Amount*\n0.86 SOL" in fields and "*Reference*\norder-1001" in fields
    assert request.headers["content-type"].startswith("application/json")


async def test_transaction_links_to_the_explorer(sink_server: SinkServer, sink_client: Any) -> None:
    """The transaction field is a Slack link to the explorer URL."""
    _, request = await send(sink_server, sink_client)
    fields = [f["text"] for f in request.json()["blocks"][1]["fields"]]
    assert "*Transaction*\n<https://explorer.solana.com/tx/5VfYmGz3hK9|5VfYmGz3hK9>" in fields


async def test_provider_text_is_escaped(sink_server: SinkServer, sink_client: Any) -> None:
    """`&`, `<`, `>` in provider text are sent as entities, so no mention or link can be injected."""
    description = "<!channel> Tom & Jerry <https://evil.example|your bank> <@U024BE7LH> @here"
    _, request = await send(
        sink_server,
        sink_client,
        payment_event(payment={"description": description, "tx_url": None}),
    )
    payload = request.json()
    assert payload["text"] == (
        "[Acme Store]: New successful payment for 0.86 SOL for &lt;!channel&gt; Tom &amp; Jerry "
        "&lt;https://evil.example|your bank&gt; &lt;@U024BE7LH&gt; @\u200bhere."
    )
    assert "<" not in all_text(payload) and ">" not in all_text(payload)


async def test_project_name_is_escaped(sink_server: SinkServer, sink_client: Any) -> None:
    """Even the configured project name is escaped (`A&B` is valid Slack text)."""
    _, request = await send(sink_server, sink_client, project="A&B <Shop>")
    assert request.json()["text"].startswith("[A&amp;B &lt;Shop&gt;]: ")


async def test_huge_payload_fits_slack_limits(sink_server: SinkServer, sink_client: Any) -> None:
    """A 50,000-character description (of `&`, which escaping lengthens) is cut within every limit."""
    huge = "&" * 50_000
    event = payment_event(
        payment={"description": huge, "reference": huge, "id": huge, "tx_hash": huge}
    )
    outcome, request = await send(sink_server, sink_client, event)
    payload = request.json()
    assert (
        outcome == Delivered(200) and request.violations == [] and slack_violations(payload) == []
    )
    assert len(payload["text"]) <= 40_000
    for text in all_text(payload).split("\n"):
        assert not re.search(r"&[a-z]{0,3}…", text), "a cut left half an entity"


async def test_review_says_what_was_received(sink_server: SinkServer, sink_client: Any) -> None:
    """A review for an underpayment says `underpaid: received X of Y` (issue 11) in the text,
    the section and the context; the currency in it is escaped; Received is a field."""
    event = payment_event(
        "payment.review",
        payment={"amount_received": "0.5", "review_reason": "underpaid", "currency": "SOL<!here>"},
    )
    outcome, request = await send(sink_server, sink_client, event)
    payload = request.json()
    assert outcome == Delivered(200) and slack_violations(payload) == []
    assert payload["text"] == (
        "[Acme Store]: Payment needs review (underpaid: received 0.5 of 0.86 SOL&lt;!here&gt;) "
        "for simple test product."
    )
    assert payload["blocks"][0]["text"]["text"] == payload["text"]
    fields = [f["text"] for f in payload["blocks"][1]["fields"]]
    assert "*Received*\n0.5 SOL&lt;!here&gt;" in fields
    assert payload["blocks"][-1]["elements"][0]["text"].startswith(
        "Payment needs review (underpaid) · "
    )


async def test_details_can_be_turned_off(sink_server: SinkServer, sink_client: Any) -> None:
    """With `details: false` only the text is sent."""
    _, request = await send(sink_server, sink_client, details=False)
    assert "blocks" not in request.json() and request.json()["text"] == LINE


async def test_template_escapes_values_but_keeps_its_own_markup(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """Template expressions are escaped; the template's literal Slack markup is kept."""
    event = payment_event(payment={"description": "<!here> & co"})
    _, request = await send(
        sink_server,
        sink_client,
        event,
        template="*{{ payment.amount }}* <{{ payment.tx_url }}|tx> {{ payment.description }}",
    )
    assert (
        request.json()["text"]
        == "*0.86* <https://explorer.solana.com/tx/5VfYmGz3hK9|tx> &lt;!here&gt; &amp; co"
    )


def test_template_reaching_internals_is_a_config_error() -> None:
    """A template touching `__class__.__mro__` is refused by the sandbox at config load."""
    (error,) = config_errors(
        {"url": "https://hooks.slack.com/services/T/B/x", "template": "{{ ''.__class__.__mro__ }}"}
    )
    assert error.startswith(
        "sinks.sales.template: template not allowed: access to attribute '__class__'"
    )


def test_invalid_url_is_a_config_error() -> None:
    """A webhook URL that is not http(s) is "not a valid URL"."""
    assert config_errors({"url": "hooks.slack.com/services/T/B/x"}) == [
        "sinks.sales.url: not a valid URL"
    ]


async def test_rate_limit_waits_retry_after(sink_server: SinkServer, sink_client: Any) -> None:
    """A 429 waits Retry-After seconds, marked as a rate limit rather than a failure."""
    sink_server.script(sink_server.slack_url(), [Reply.rate_limited(30)])
    outcome, _ = await send(sink_server, sink_client)
    assert outcome == RetryLater(
        "rate limited (429)", 429, 30.0, rate_limited=True, excerpt="rate_limited"
    )


async def test_timeout_is_retried(sink_server: SinkServer, sink_client: Any) -> None:
    """A Slack slower than the sink's timeout is retried later."""
    sink_server.script(sink_server.slack_url(), [Reply.hang(10)])
    outcome, _ = await send(sink_server, sink_client, timeout="300ms")
    assert isinstance(outcome, RetryLater) and outcome.reason.startswith("timeout")


@pytest.mark.parametrize(
    ("reply", "kind", "gone"),
    [
        (Reply(200, "ok"), Delivered, False),
        (Reply(400, "invalid_payload"), Failed, False),
        (Reply(403, "action_prohibited"), Failed, False),
        (Reply(404, "channel_not_found"), Failed, True),
        (Reply(410, "channel_is_archived"), Failed, True),
        (Reply(302, "", {"Location": "https://slack.com/"}), Failed, False),
        (Reply(500, "rollup_error"), RetryLater, False),
        (Reply(503, "busy", {"Retry-After": "5"}), RetryLater, False),
    ],
)
async def test_classification(
    sink_server: SinkServer, sink_client: Any, reply: Reply, kind: type, gone: bool
) -> None:
    """Each Slack answer maps to its outcome; a missing or archived channel flags the sink gone."""
    sink_server.script(sink_server.slack_url(), [reply])
    outcome, _ = await send(sink_server, sink_client)
    assert isinstance(outcome, kind) and outcome.status == reply.status
    assert getattr(outcome, "sink_gone", False) is gone
