"""The `http` sink against a real local merchant endpoint: Standard Webhooks signing, headers,
no redirects, timeouts and the answer classification."""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.config.model import ConfigError, validate
from relay.sinks import SINKS
from relay.sinks.base import USER_AGENT, Delivered, Failed, RetryLater
from relay.sinks.http import HttpSink, HttpSinkConfig
from tests.sink_servers import Reply, SinkServer, payment_event

pytest_plugins = ["tests.sink_servers"]  # the sink_server and sink_client fixtures


def whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


SECRET = whsec()


def make_sink(url: str, **options: Any) -> HttpSink:
    config = HttpSinkConfig.model_validate(
        {"type": "http", "url": url, "secret": SECRET, **options}
    )
    return HttpSink("shop", config)


def config_errors(sink: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate({"sinks": {"shop": {"type": "http", **sink}}}, env={})
    return [f"{path}: {message}" for path, message in caught.value.errors]


def test_registered() -> None:
    """The registry maps `http` to the sink class."""
    assert SINKS["http"] is HttpSink


async def test_signature_verifies_with_standardwebhooks(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """The merchant can verify the delivery with the official standardwebhooks package."""
    event = payment_event()
    outcome = await make_sink(sink_server.url("/shop")).deliver(sink_client, event, 1)
    assert outcome == Delivered(200)
    (request,) = sink_server.requests("/shop")
    assert Webhook(SECRET).verify(request.body, request.headers) == event.body


async def test_body_is_the_stored_json_exactly(sink_server: SinkServer, sink_client: Any) -> None:
    """The POSTed body is the stored event's JSON bytes, byte for byte."""
    event = payment_event(payment={"amount": "0.123456789012345678"})
    await make_sink(sink_server.url("/shop")).deliver(sink_client, event, 1)
    (request,) = sink_server.requests("/shop")
    assert request.method == "POST" and request.body == event.json
    assert b'"amount":"0.123456789012345678"' in request.body


async def test_wrong_secret_does_not_verify(sink_server: SinkServer, sink_client: Any) -> None:
    """A receiver holding another secret rejects the delivery."""
    await make_sink(sink_server.url("/shop")).deliver(sink_client, payment_event(), 1)
    (request,) = sink_server.requests("/shop")
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec()).verify(request.body, request.headers)


async def test_webhook_id_is_stable_across_attempts(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """Every attempt carries the event id as webhook-id and its own fresh, verifiable timestamp."""
    sink, event = make_sink(sink_server.url("/shop")), payment_event()
    sink_server.script("/shop", [503])
    assert isinstance(await sink.deliver(sink_client, event, 1), RetryLater)
    assert await sink.deliver(sink_client, event, 2) == Delivered(200)
    first, second = sink_server.requests("/shop")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.id
    for request in (first, second):
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
        Webhook(SECRET).verify(request.body, request.headers)


async def test_signature_format(sink_server: SinkServer, sink_client: Any) -> None:
    """webhook-signature is `v1,` + base64 HMAC-SHA256 of "{id}.{timestamp}.{body}"."""
    import hashlib
    import hmac

    await make_sink(sink_server.url("/shop")).deliver(sink_client, payment_event(), 1)
    (request,) = sink_server.requests("/shop")
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
        + request.body
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"


async def test_every_secret_signs_during_rotation(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """With a list of secrets, one space-separated signature per secret; each one verifies."""
    old, new = whsec(), whsec()
    config = HttpSinkConfig.model_validate(
        {"type": "http", "url": sink_server.url("/shop"), "secret": [old, new]}
    )
    await HttpSink("shop", config).deliver(sink_client, payment_event(), 1)
    (request,) = sink_server.requests("/shop")
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(request.body, request.headers)


async def test_standard_headers_and_custom_headers(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """Content-Type, User-Agent and the sink's own headers are sent."""
    sink = make_sink(
        sink_server.url("/shop"), headers={"X-Shop": "relay", "Authorization": "Bearer t0k"}
    )
    await sink.deliver(sink_client, payment_event(), 1)
    (request,) = sink_server.requests("/shop")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("payrelay/")
    assert request.headers["x-shop"] == "relay" and request.headers["authorization"] == "Bearer t0k"


@pytest.mark.parametrize("name", ["webhook-signature", "Webhook-Id", "Content-Type", "User-Agent"])
def test_custom_headers_cannot_override_relay_headers(name: str) -> None:
    """A `headers` entry that would replace a signing or content header is a config error."""
    errors = config_errors(
        {"url": "https://shop.example.com/hook", "secret": SECRET, "headers": {name: "x"}}
    )
    assert errors == [
        f"sinks.shop.headers: header {name!r} is set by the relay and cannot be overridden"
    ]


def test_invalid_url_is_a_config_error() -> None:
    """A URL that is not http(s) is reported at its YAML path as "not a valid URL"."""
    assert config_errors({"url": "ftp://shop.example.com", "secret": SECRET}) == [
        "sinks.shop.url: not a valid URL"
    ]


def test_secret_must_be_a_whsec() -> None:
    """A secret that is not `whsec_` + base64 is a config error."""
    (error,) = config_errors({"url": "https://shop.example.com/hook", "secret": "hunter2hunter2"})
    assert error.startswith("sinks.shop.secret: not a Standard Webhooks secret")


def test_secret_is_required() -> None:
    """An http sink without a secret is a config error (every callback is signed)."""
    assert config_errors({"url": "https://shop.example.com/hook"}) == [
        "sinks.shop.secret: required key is missing"
    ]


async def test_redirect_is_not_followed(sink_server: SinkServer, sink_client: Any) -> None:
    """A 3xx is a permanent failure and its Location is never requested."""
    sink_server.script("/shop", [Reply.redirect(sink_server.url("/elsewhere"))])
    outcome = await make_sink(sink_server.url("/shop")).deliver(sink_client, payment_event(), 1)
    assert isinstance(outcome, Failed) and outcome.status == 302 and not outcome.sink_gone
    assert sink_server.requests("/elsewhere") == []


async def test_timeout_is_retried(sink_server: SinkServer, sink_client: Any) -> None:
    """An endpoint slower than the sink's timeout is a RetryLater, not a failure."""
    sink_server.script("/shop", [Reply.hang(10)])
    started = time.monotonic()
    outcome = await make_sink(sink_server.url("/shop"), timeout="300ms").deliver(
        sink_client, payment_event(), 1
    )
    assert isinstance(outcome, RetryLater) and outcome.reason.startswith("timeout")
    assert time.monotonic() - started < 3


async def test_connection_refused_is_retried(sink_client: Any) -> None:
    """An endpoint that is down (connection refused) is retried later."""
    server = SinkServer()
    await server.start()
    url = server.url("/shop")
    await server.stop()
    outcome = await make_sink(url).deliver(sink_client, payment_event(), 1)
    assert isinstance(outcome, RetryLater) and outcome.reason.startswith("network error")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(200), Delivered(200)),
        (Reply(201), Delivered(201)),
        (Reply(204, ""), Delivered(204)),
        (Reply(400, "bad"), Failed("HTTP 400", 400, "bad")),
        (Reply(401, "no"), Failed("HTTP 401", 401, "no")),
        (Reply(404, "gone"), Failed("HTTP 404", 404, "gone", sink_gone=True)),
        (Reply(410, "gone"), Failed("HTTP 410", 410, "gone", sink_gone=True)),
        (
            Reply(301, "", {"Location": "/x"}),
            Failed("HTTP 301: redirects are not followed", 301, ""),
        ),
        (Reply(408, "slow"), RetryLater("HTTP 408", 408, None, excerpt="slow")),
        (
            Reply(429, "wait", {"Retry-After": "7"}),
            RetryLater("rate limited (429)", 429, 7.0, rate_limited=True, excerpt="wait"),
        ),
        (Reply(500, "oops"), RetryLater("HTTP 500", 500, None, excerpt="oops")),
        (
            Reply(503, "busy", {"Retry-After": "120"}),
            RetryLater("HTTP 503", 503, 120.0, excerpt="busy"),
        ),
    ],
)
async def test_classification(
    sink_server: SinkServer, sink_client: Any, reply: Reply, expected: Any
) -> None:
    """Each merchant answer maps to its outcome (SPEC 6, Standard Webhooks 410)."""
    sink_server.script("/shop", [reply])
    assert (
        await make_sink(sink_server.url("/shop")).deliver(sink_client, payment_event(), 1)
        == expected
    )
