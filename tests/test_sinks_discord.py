"""The `discord` sink against a local server that checks bodies as Discord does: the message,
mentions, every length limit, templates in the sandbox, and the answer classification."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config.model import ConfigError, validate
from relay.sinks import SINKS
from relay.sinks.base import Delivered, Failed, RetryLater
from relay.sinks.discord import DiscordSink, DiscordSinkConfig
from tests.sink_servers import Reply, SinkServer, discord_pings, discord_violations, payment_event

pytest_plugins = ["tests.sink_servers"]  # the sink_server and sink_client fixtures


def make_sink(url: str, **options: Any) -> DiscordSink:
    options.setdefault("project", "Acme Store")
    return DiscordSink(
        "ops", DiscordSinkConfig.model_validate({"type": "discord", "url": url, **options})
    )


def config_errors(sink: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate({"sinks": {"ops": {"type": "discord", **sink}}}, env={})
    return [f"{path}: {message}" for path, message in caught.value.errors]


async def send(
    server: SinkServer, session: Any, event: Any = None, **options: Any
) -> tuple[Any, Any]:
    """Deliver once; return the outcome and the one request the server received."""
    url = options.pop("url", None) or server.discord_url()
    outcome = await make_sink(url, **options).deliver(session, event or payment_event(), 1)
    (request,) = server.requests(url)
    return outcome, request


def test_registered() -> None:
    """The registry maps `discord` to the sink class."""
    assert SINKS["discord"] is DiscordSink


async def test_posts_with_wait_true(sink_server: SinkServer, sink_client: Any) -> None:
    """The webhook is executed with ?wait=true so Discord confirms the message was saved."""
    outcome, request = await send(sink_server, sink_client)
    assert outcome == Delivered(200)
    assert request.query == {"wait": "true"} and request.violations == []
    assert request.headers["content-type"] == "application/json"


async def test_existing_query_and_thread_id_are_kept(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """Query parameters already in the URL survive, and `thread_id` posts into a thread."""
    url = sink_server.discord_url() + "?with_components=true"
    _, request = await send(sink_server, sink_client, url=url, thread_id=998877665544332211)
    assert request.query == {
        "with_components": "true",
        "wait": "true",
        "thread_id": "998877665544332211",
    }


async def test_allowed_mentions_parse_nothing(sink_server: SinkServer, sink_client: Any) -> None:
    """Every message says allowed_mentions {"parse": []}."""
    _, request = await send(sink_server, sink_client)
    assert request.json()["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize("kind", ["payment.completed", "payment.paid"])
async def test_coinable_line(sink_server: SinkServer, sink_client: Any, kind: str) -> None:
    """A successful payment reads like Coinable's line."""
    _, request = await send(sink_server, sink_client, payment_event(kind))
    assert (
        request.json()["content"]
        == "[Acme Store]: New successful payment for 0.86 SOL for simple test product."
    )


async def test_line_without_amount_or_description(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """Missing amount and description degrade to the order reference."""
    event = payment_event("payment.paid", payment={"amount": None, "description": None})
    _, request = await send(sink_server, sink_client, event)
    assert request.json()["content"] == "[Acme Store]: New successful payment for order order-1001."


async def test_line_of_other_types(sink_server: SinkServer, sink_client: Any) -> None:
    """Other event types get a similar short line."""
    event = payment_event("payment.expired", payment={"description": None})
    _, request = await send(sink_server, sink_client, event)
    assert (
        request.json()["content"]
        == "[Acme Store]: Payment expired for 0.86 SOL for order order-1001."
    )


def review_event(reason: str, **payment: Any) -> Any:
    return payment_event(
        "payment.review", payment={"amount_received": "0.5", "review_reason": reason, **payment}
    )


@pytest.mark.parametrize("reason", ["underpaid", "overpaid", "late"])
async def test_review_line_says_what_was_received(
    sink_server: SinkServer, sink_client: Any, reason: str
) -> None:
    """A review for an amount mismatch says `underpaid: received X of Y` (issue 11), and the
    embed names the reason and shows what was received."""
    _, request = await send(sink_server, sink_client, review_event(reason))
    payload = request.json()
    assert payload["content"] == (
        f"[Acme Store]: Payment needs review ({reason}: received 0.5 of 0.86 SOL) "
        "for simple test product."
    )
    (embed,) = payload["embeds"]
    assert embed["title"] == f"Payment needs review ({reason}): 0.86 SOL"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert (fields["Amount"], fields["Received"]) == ("0.86 SOL", "0.5 SOL")
    assert request.violations == []


async def test_review_line_without_an_amount_or_with_compliance(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """Only what arrived is known: `received X`; a compliance check says so; `other` adds
    nothing to the plain review line."""
    cases = {
        "underpaid": ({"amount": None}, "(underpaid: received 0.5 SOL) for simple test product."),
        "compliance": ({}, "(compliance check) for 0.86 SOL for simple test product."),
        "other": ({}, "for 0.86 SOL for simple test product."),
    }
    for number, (reason, (payment, tail)) in enumerate(cases.items()):
        url = sink_server.discord_url(webhook_id=100 + number)
        _, request = await send(sink_server, sink_client, review_event(reason, **payment), url=url)
        assert request.json()["content"] == f"[Acme Store]: Payment needs review {tail}", reason


async def test_review_note_is_escaped_and_fits(sink_server: SinkServer, sink_client: Any) -> None:
    """The currency inside the note is provider text (escaped, pings no one); huge amounts in
    it are still cut within Discord's limits."""
    event = review_event("underpaid", currency="SOL <@123456789012345678> @everyone")
    _, request = await send(sink_server, sink_client, event)
    content = request.json()["content"]
    assert "\\<@123456789012345678\\>" in content and "@\u200beveryone" in content
    assert discord_pings(request.json()) == []
    huge = review_event("overpaid", amount="1." + "9" * 3000, amount_received="2." + "1" * 3000)
    url = sink_server.discord_url(webhook_id=200)
    outcome, request = await send(sink_server, sink_client, huge, url=url)
    assert outcome == Delivered(200) and request.violations == []
    assert discord_violations(request.json()) == []


async def test_embed_holds_the_details(sink_server: SinkServer, sink_client: Any) -> None:
    """The embed links the transaction and shows amount, ids, source, time and the event id."""
    event = payment_event()
    _, request = await send(sink_server, sink_client, event)
    (embed,) = request.json()["embeds"]
    assert embed["title"] == "Payment completed: 0.86 SOL"
    assert embed["url"] == "https://explorer.solana.com/tx/5VfYmGz3hK9"
    assert embed["footer"] == {"text": event.id}
    assert embed["timestamp"] == "2024-09-13T17:33:05Z" and embed["color"] == 0x2ECC71
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Amount"] == "0.86 SOL" and fields["Payment ID"] == "`cs_7f3a9c`"
    assert fields["Transaction"] == "`5VfYmGz3hK9`" and fields["Source"] == "coinable"


async def test_hostile_payload_fits_every_limit_and_pings_no_one(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """`@everyone` and a 5000-character description are delivered within Discord's limits, pinging no one."""
    description = "@everyone @here <@123456789012345678> <@&876543210987654321> " + "x" * 5000
    event = payment_event(payment={"description": description})
    outcome, request = await send(sink_server, sink_client, event)
    payload = request.json()
    assert outcome == Delivered(200) and request.violations == []
    assert len(payload["content"]) <= 2000 and payload["content"].endswith("…")
    assert discord_pings(payload) == []
    assert (
        discord_pings(
            {
                "content": payload["content"],
                "allowed_mentions": {"parse": ["everyone", "users", "roles"]},
            }
        )
        == []
    )
    assert (
        "@\u200beveryone" in payload["content"]
        and "\\<@123456789012345678\\>" in payload["content"]
    )


async def test_every_field_oversized_still_fits(sink_server: SinkServer, sink_client: Any) -> None:
    """With every provider field far over its limit the message is still accepted."""
    huge = "W" * 7000
    event = payment_event(
        payment={
            "description": huge,
            "reference": huge,
            "id": huge,
            "tx_hash": huge,
            "network": huge,
            "amount": "1." + "9" * 3000,
            "currency": huge,
            "fiat_amount": "2",
            "fiat_currency": huge,
        },
        provider_event=huge,
    )
    outcome, request = await send(sink_server, sink_client, event, project="P" * 256)
    assert outcome == Delivered(200) and request.violations == []
    assert discord_violations(request.json()) == []


async def test_markdown_and_links_in_provider_text_are_escaped(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """A description cannot smuggle markdown or a masked link into the message."""
    event = payment_event(payment={"description": "**free** [claim](https://evil.example)"})
    _, request = await send(sink_server, sink_client, event)
    assert request.json()["content"] == (
        "[Acme Store]: New successful payment for 0.86 SOL for \\*\\*free\\*\\* \\[claim\\]\\(https://evil.example\\)."
    )


async def test_username_avatar_and_silent(sink_server: SinkServer, sink_client: Any) -> None:
    """username, avatar_url and silent (SUPPRESS_NOTIFICATIONS) are passed to Discord."""
    _, request = await send(
        sink_server,
        sink_client,
        username="Payments",
        avatar_url="https://cdn.example/a.png",
        silent=True,
    )
    payload = request.json()
    assert (payload["username"], payload["avatar_url"], payload["flags"]) == (
        "Payments",
        "https://cdn.example/a.png",
        4096,
    )


async def test_template_renders_the_event(sink_server: SinkServer, sink_client: Any) -> None:
    """A sink template sees `event`, `payment`, `project` and `line`."""
    template = "{{ project }}: {{ payment.amount }} {{ payment.currency }} via {{ event.source }} ({{ event.data.type }}) {{ payment.nothing.deeper }}| {{ line }}"
    _, request = await send(sink_server, sink_client, template=template)
    assert request.json()["content"] == (
        "Acme Store: 0.86 SOL via coinable (checkout.session.completed) | "
        "[Acme Store]: New successful payment for 0.86 SOL for simple test product."
    )


async def test_template_values_are_escaped_and_cannot_ping(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """Provider values in template output are escaped; @everyone even in the template is neutralised."""
    event = payment_event(payment={"description": "[x](https://evil.example) @here"})
    _, request = await send(
        sink_server, sink_client, event, template="@everyone {{ payment.description }}"
    )
    payload = request.json()
    assert payload["content"] == "@\u200beveryone \\[x\\]\\(https://evil.example\\) @\u200bhere"
    assert discord_pings({**payload, "allowed_mentions": {"parse": ["everyone"]}}) == []


def test_template_reaching_internals_is_a_config_error() -> None:
    """A template touching `__class__.__mro__` is refused by the sandbox at config load."""
    (error,) = config_errors(
        {"url": "https://discord.com/api/webhooks/1/t", "template": "{{ event.__class__.__mro__ }}"}
    )
    assert error.startswith(
        "sinks.ops.template: template not allowed: access to attribute '__class__'"
    )


async def test_template_unsafe_only_on_real_data_fails_the_delivery(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """A sandbox violation that the sample event did not trigger fails the delivery and sends nothing."""
    template = "{% if event.source == 'coinable' %}{{ payment.__class__.__mro__ }}{% endif %}"
    sink = make_sink(sink_server.discord_url(), template=template)
    outcome = await sink.deliver(sink_client, payment_event(), 1)
    assert isinstance(outcome, Failed) and outcome.reason.startswith(
        "template error: SecurityError"
    )
    assert sink_server.requests() == []


def test_template_syntax_error_is_a_config_error() -> None:
    """A template that does not compile is reported at config load."""
    (error,) = config_errors(
        {"url": "https://discord.com/api/webhooks/1/t", "template": "{{ payment.amount "}
    )
    assert error.startswith("sinks.ops.template: template does not compile:")


def test_invalid_url_is_a_config_error() -> None:
    """A webhook URL that is not http(s) is "not a valid URL"."""
    assert config_errors({"url": "discord.com/api/webhooks/1/t"}) == [
        "sinks.ops.url: not a valid URL"
    ]


async def test_rate_limit_waits_the_longer_of_body_and_header(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """A 429 waits the larger of JSON retry_after and Retry-After, without counting as a failure."""
    url = sink_server.discord_url()
    sink_server.script(
        url,
        [Reply.discord_rate_limited(2.5, header="1"), Reply.discord_rate_limited(0.5, header="3")],
    )
    sink = make_sink(url)
    first = await sink.deliver(sink_client, payment_event(), 1)
    second = await sink.deliver(sink_client, payment_event(), 1)
    assert (
        isinstance(first, RetryLater)
        and first.rate_limited
        and first.after == 2.5
        and first.status == 429
    )
    assert isinstance(second, RetryLater) and second.rate_limited and second.after == 3.0


async def test_timeout_is_retried(sink_server: SinkServer, sink_client: Any) -> None:
    """A Discord slower than the sink's timeout is retried later."""
    url = sink_server.discord_url()
    sink_server.script(url, [Reply.hang(10)])
    outcome = await make_sink(url, timeout="300ms").deliver(sink_client, payment_event(), 1)
    assert isinstance(outcome, RetryLater) and outcome.reason.startswith("timeout")


@pytest.mark.parametrize(
    ("reply", "kind", "gone"),
    [
        (Reply(200, {"id": "1"}), Delivered, False),
        (Reply(204, ""), Delivered, False),
        (Reply.discord_error(404, 10015, "Unknown Webhook"), Failed, True),
        (Reply.discord_error(401, 50027, "Invalid Webhook Token"), Failed, True),
        (Reply.discord_error(403, 50013, "Missing Permissions"), Failed, False),
        (Reply.discord_error(400, 50035, "Invalid Form Body"), Failed, False),
        (Reply(302, "", {"Location": "https://discord.com/"}), Failed, False),
        (Reply.discord_rate_limited(0.5), RetryLater, False),
        (Reply(500, "oops"), RetryLater, False),
        (Reply.discord_error(502, 0, "No gateway available"), RetryLater, False),
    ],
)
async def test_classification(
    sink_server: SinkServer, sink_client: Any, reply: Reply, kind: type, gone: bool
) -> None:
    """Each Discord answer maps to its outcome; an unknown webhook or a dead token flags the sink
    gone."""
    url = sink_server.discord_url()
    sink_server.script(url, [reply])
    outcome = await make_sink(url).deliver(sink_client, payment_event(), 1)
    assert isinstance(outcome, kind) and outcome.status == reply.status
    assert getattr(outcome, "sink_gone", False) is gone
    assert getattr(outcome, "rate_limited", False) is (reply.status == 429)
