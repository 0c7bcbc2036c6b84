"""No sink URL, token or query secret in a stored reason, an excerpt, status output, a page, a
metric or a log line, however the URL is spelled (relay.redact); admin auth never answers 500;
the Discord embed title escapes provider text.

Broken sinks are a real TCP server (`BrokenServer`) that answers garbage bytes, echoes the
request line as its status line, or answers 404 with the request echoed as the body."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import structlog

from relay import logs
from relay.redact import DROPPED, REDACTED, known, redact, url_secrets
from relay.sinks.base import Failed, RetryLater
from relay.sinks.client import ClientError
from relay.sinks.discord import DiscordSink, DiscordSinkConfig
from relay.sinks.http import HttpSink, HttpSinkConfig
from relay.sinks.slack import SlackSink, SlackSinkConfig
from tests.conftest import REPO, TEST_SECRETS, wait_for
from tests.processes import RelayProcess, write_config
from tests.sink_servers import SinkServer, payment_event

pytest_plugins = ["tests.sink_servers"]  # the sink_server and sink_client fixtures

WHSEC = TEST_SECRETS["PARTNER_WHSEC"]
GARBAGE = b"\x00\xff\x13garbage, not HTTP at all\r\n\r\n"


# --- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("url='http://127.0.0.1:4/hook?token=s3cret'", "url='http://127.0.0.1:4/…'"),
        ("HTTP://HOST/hook?token=s3cret", "HTTP://HOST/…"),
        ("hTTpS://Discord.com/api/webhooks/123/tok-en", "hTTpS://Discord.com/…"),
        ("https://discord.com/api/webhooks/123/tok-en?wait=true", "https://discord.com/…"),
        ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com/…"),
        ("redis://:pa55word@redis.example:6379/0", "redis://redis.example:6379/…"),
        ("http://user:pw@host", "http://host/…"),
        ("http://user:s3cret/@host/x", "http://…"),  # not a plain host: nothing kept
        ("http://host:s3cret", "http://…"),
        ('url="http://h/x?token=ab\'cd"', 'url="http://h/…"'),  # a quote inside the secret
        ("(see https://[::1]:8080/a/b).", "(see https://[::1]:8080/…)."),
        ("https://example.com/", "https://example.com/"),
        ("https://example.com", "https://example.com"),
        ("POST /hook?token=s3cret&x=1 HTTP/1.1", "POST /hook?token=…&x=… HTTP/1.1"),
        ("&amp;token=s3cret", "&amp;token=…"),
        ("no url here: a=b, ratio 3:1", "no url here: a=b, ratio 3:1"),
    ],
)
def test_structural_rule(text: str, expected: str) -> None:
    """Any scheme in any case keeps only scheme://host[:port]; query values go anywhere."""
    assert redact(text) == expected
    assert redact(redact(text)) == expected  # stable: redacting twice changes nothing


def test_known_url_parts_without_a_scheme() -> None:
    """A sink's own path echoed without a scheme (a request line) is redacted too."""
    secrets = known(url_secrets("HTTP://u:passw0rd@h/api/webhooks/123/tok-en%21?wait=true"))
    echoed = "b'POST /api/webhooks/123/tok-en%21?wait=true HTTP/1.1' and tok-en! and passw0rd"
    shown = redact(echoed, secrets)
    assert "tok-en" not in shown and "passw0rd" not in shown
    assert shown == f"b'POST {REDACTED}?wait={DROPPED} HTTP/1.1' and {REDACTED} and {REDACTED}"


# --- broken sinks, for real -----------------------------------------------------------------


class BrokenServer:
    """A TCP server that reads one HTTP request and answers, by path: `/echo...` a 404 whose
    body is the request head; `/mirror...` the request line as its status line; else garbage."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.heads: list[bytes] = []

    async def start(self) -> BrokenServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            self.heads.append(head)
            writer.write(self._answer(head))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _answer(head: bytes) -> bytes:
        path = head.split(b" ", 2)[1]
        if path.startswith(b"/echo"):
            return (
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(head)
            ) + head
        if path.startswith(b"/mirror"):
            return head
        return GARBAGE


@pytest_asyncio.fixture
async def broken() -> AsyncIterator[BrokenServer]:
    server = await BrokenServer().start()
    yield server
    await server.stop()


def http_sink(url: str, **options: Any) -> HttpSink:
    return HttpSink(
        "shop",
        HttpSinkConfig.model_validate({"type": "http", "url": url, "secret": WHSEC, **options}),
    )


def discord_sink(url: str) -> DiscordSink:
    return DiscordSink("ops", DiscordSinkConfig.model_validate({"type": "discord", "url": url}))


def slack_sink(url: str) -> SlackSink:
    return SlackSink("sales", SlackSinkConfig.model_validate({"type": "slack", "url": url}))


def shown(outcome: Any) -> str:
    """Everything an outcome would store or show."""
    return f"{outcome.reason}\n{getattr(outcome, 'excerpt', '')}"


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """The buffer `configure_logs` sends the log to; the logging setup is restored after."""
    root = logging.getLogger()
    saved = (structlog.get_config(), root.handlers[:], root.level)
    yield io.StringIO()
    structlog.configure(**saved[0])
    root.handlers[:] = saved[1]
    root.setLevel(saved[2])


def configure_logs(buffer: io.StringIO, secrets: set[str]) -> None:
    """relay.logs.configure as `relay worker` runs it, writing to `buffer` instead of stdout;
    loggers are not cached, so none keeps this setup past the test."""
    with contextlib.redirect_stdout(buffer):
        logs.configure(secrets, "INFO", process="worker")
    structlog.configure(cache_logger_on_first_use=False)


async def test_garbage_answer_reason_hides_http_sink_url(
    broken: BrokenServer, sink_client: Any, captured_log: io.StringIO
) -> None:
    """`HTTP://HOST/...?token=s3cret` answered with garbage: the reason keeps only the host,
    and neither the reason nor the client's raw error text logged reaches the log with the token.
    """
    url = f"HTTP://127.0.0.1:{broken.port}/hook/pathSECRET?token=s3cret-q"
    configure_logs(captured_log, {url})  # as relay.cli does: the URL as configured
    outcome = await http_sink(url).deliver(sink_client, payment_event(), 1)
    assert isinstance(outcome, RetryLater) and broken.heads
    assert outcome.reason.lower().startswith("network error: http://127.0.0.1:")
    assert "not an HTTP answer" in outcome.reason
    assert f"http://127.0.0.1:{broken.port}/{DROPPED}" in outcome.reason.lower()
    try:  # what the client says, unredacted: the text that must not reach a log
        await sink_client.post(url, b"{}", {}, 5.0)
    except ClientError as exc:
        raw = str(exc)
    assert "s3cret-q" in raw and "pathSECRET" in raw
    log = logs.get_logger("relay.test")
    log.warning("delivery will be retried", reason=outcome.reason, raw=raw)
    log.error("boom", exc_info=RuntimeError(raw))  # a traceback quoting it
    logging.getLogger("aiohttp.client").error("stdlib: %s", raw)
    lines = captured_log.getvalue()
    assert lines.count("\n") >= 3 and "delivery will be retried" in lines and "stdlib" in lines
    for secret in ("s3cret-q", "pathSECRET", "/hook"):
        assert secret not in shown(outcome) and secret not in lines, secret


async def test_garbage_answer_hides_discord_and_slack_tokens(
    broken: BrokenServer, sink_client: Any
) -> None:
    """A Discord-shaped (`/api/webhooks/123/tok-en`) and a Slack-shaped webhook URL answered
    with garbage: no token in the reason."""
    base = f"http://127.0.0.1:{broken.port}"
    for sink in (
        discord_sink(f"{base}/api/webhooks/123/tok-en-SECRET"),
        slack_sink(f"{base}/services/T000/B000/slackSECRET"),
    ):
        outcome = await sink.deliver(sink_client, payment_event(), 1)
        assert isinstance(outcome, RetryLater) and outcome.reason.startswith("network error")
        assert "SECRET" not in shown(outcome) and "webhooks" not in shown(outcome)
        assert f"{base}/{DROPPED}" in outcome.reason


async def test_request_line_echoed_as_status_line(broken: BrokenServer, sink_client: Any) -> None:
    """A server that sends the request line back (path and query, no scheme) as its status
    line: the reason says it is not HTTP and shows neither the token nor the query secret."""
    base = f"http://127.0.0.1:{broken.port}"
    for sink in (
        discord_sink(f"{base}/mirror/api/webhooks/123/tok-en-SECRET"),
        http_sink(f"{base}/mirror/shopSECRET?token=s3cret-q"),
    ):
        outcome = await sink.deliver(sink_client, payment_event(), 1)
        assert isinstance(outcome, RetryLater) and "not an HTTP answer" in outcome.reason
        assert "SECRET" not in shown(outcome) and "s3cret" not in shown(outcome)


async def test_excerpt_of_an_answer_echoing_the_request(
    broken: BrokenServer, sink_client: Any
) -> None:
    """A 404 whose body echoes the request (path, query, custom Authorization header): the
    excerpt keeps the rest and none of those."""
    url = f"HTTP://127.0.0.1:{broken.port}/echo/pathSECRET?token=s3cret-q"
    sink = http_sink(url, headers={"Authorization": "Bearer bearerSECRET-1b2c"})
    outcome = await sink.deliver(sink_client, payment_event(), 1)
    assert isinstance(outcome, Failed) and outcome.status == 404 and outcome.sink_gone
    assert "webhook-id: evt_" in outcome.excerpt.lower()  # the echo is in the excerpt
    assert "SECRET" not in shown(outcome) and "s3cret" not in shown(outcome)


def test_template_error_reason_is_redacted() -> None:
    """A template error quoting event data with a URL stores no token either."""
    sink = DiscordSink(
        "ops",
        DiscordSinkConfig.model_validate(
            {
                "type": "discord",
                "url": "https://discord.com/api/webhooks/1/tok-en",
                "template": "{{ 'x'.encode(payment.tx_url) }}",
            }
        ),
    )  # LookupError: unknown encoding: <url>
    with pytest.raises(Exception) as caught:  # RenderError, checked below
        sink.render(payment_event(payment={"tx_url": "https://x.example/tx?key=s3cret"}), 1)
    assert type(caught.value).__name__ == "RenderError" and "s3cret" not in str(caught.value)


# --- end to end: stored, shown, logged ------------------------------------------------------


def cli(config: Path, redis_url: str, command: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", command, "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
        env={**os.environ, **TEST_SECRETS, "REDIS_URL": redis_url},
    )
    assert done.returncode in (0, 1), done.stderr  # status exits 1 when degraded
    return done.stdout + done.stderr


async def redis_dump(redis: Any) -> str:
    """Every value in the test database, as text."""
    parts = []
    async for key in redis.scan_iter():
        kind = await redis.type(key)
        if kind in (b"string", "string"):
            parts.append(repr(await redis.get(key)))
        elif kind in (b"hash", "hash"):
            parts.append(repr(await redis.hgetall(key)))
        elif kind in (b"list", "list"):
            parts.append(repr(await redis.lrange(key, 0, -1)))
        elif kind in (b"zset", "zset"):
            parts.append(repr(await redis.zrange(key, 0, -1)))
        elif kind in (b"set", "set"):
            parts.append(repr(await redis.smembers(key)))
    return "\n".join(parts)


@pytest.mark.slow
async def test_no_sink_secret_stored_shown_or_logged(
    tmp_path: Path, redis: Any, redis_url: str, broken: BrokenServer
) -> None:
    """Real `relay serve` and `relay worker`, sinks whose URLs carry secrets (one spelled
    `HTTP://`), all answering broken HTTP until they are dead-lettered: no secret in Redis,
    `relay status`, `relay dlq list`, /status, /status.json, /metrics or either log."""
    base = f"127.0.0.1:{broken.port}"
    fast = {"schedule": ["100ms"], "jitter": 0}
    admin = "admin-SECRET-token-9f8e"
    raw = {
        "redis_url": redis_url,
        "admin": {"token": admin},
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {
            "shop": {
                "type": "http",
                "url": f"HTTP://{base}/hook/shopSECRET?token=s3cret-q",
                "secret": WHSEC,
                "retry": fast,
                "headers": {"Authorization": "Bearer bearerSECRET-1b2c"},
            },
            "echo": {
                "type": "http",
                "url": f"http://{base}/echo/echoSECRET?token=s3cret-e",
                "secret": WHSEC,
                "headers": {"X-Api-Key": "headerSECRET-77"},
            },
            "ops": {
                "type": "discord",
                "url": f"http://{base}/api/webhooks/123/tok-en-SECRET",
                "retry": fast,
            },
            "sales": {
                "type": "slack",
                "url": f"hTTp://{base}/services/T0/B0/slackSECRET",
                "retry": fast,
            },
        },
    }
    config = write_config(tmp_path, raw)
    web = RelayProcess("serve", config, tmp_path, redis_url).start()
    worker = RelayProcess("worker", config, tmp_path, redis_url).start()
    try:
        await web.ready()
        await worker.ready()
        body = orjson.dumps({"payment_id": "p-1", "status": "PAID", "foreign_id": "o-1"})
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{web.url}/hooks/ivpay",
                data=body,
                headers={"X-API-KEY": TEST_SECRETS["IVPAY_API_KEY"]},
            ) as r:
                assert r.status == 200
            await wait_for(lambda: dead_letters(redis, 4), timeout=30)
            pages = []
            auth = {"Authorization": f"Bearer {admin}"}
            for path in ("/status", "/status?partial=1", "/status.json", "/metrics"):
                async with session.get(web.url + path, headers=auth) as response:
                    assert response.status == 200, path
                    pages.append(await response.text())
    finally:
        worker.stop()
        web.stop()
    stored = await redis_dump(redis)
    status = cli(config, redis_url, "status", "--json") + cli(config, redis_url, "status")
    letters = cli(config, redis_url, "dlq", "list", "--json") + cli(
        config, redis_url, "dlq", "list"
    )
    logged = web.log_path.read_text() + worker.log_path.read_text()
    # The failures were recorded, with their redacted reasons and excerpts.
    assert f"http://{base}/{DROPPED}" in status and "network error" in letters
    assert "webhook-id" in json.dumps(letters).lower() and "delivery dead-lettered" in logged
    for where, text in {
        "redis": stored,
        "status": status,
        "dlq": letters,
        "log": logged,
        "pages": "\n".join(pages),
    }.items():
        found = [
            s for s in ("SECRET", "s3cret", "/hook/", "/api/webhooks", "/services/") if s in text
        ]
        assert not found, f"{where}: {found}"


async def dead_letters(redis: Any, expected: int) -> bool:
    return bool(await redis.zcard("relay:dlq:index") >= expected)


# --- admin auth -----------------------------------------------------------------------------


async def raw_get(port: int, target: bytes, headers: bytes = b"") -> int:
    """The status of a GET sent as raw bytes (aiohttp's client refuses non-UTF-8 headers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET "
            + target
            + b" HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n"
            + headers
            + b"\r\n"
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(line.split(b" ")[1])


@pytest.mark.parametrize("path", [b"/metrics", b"/status", b"/status.json"])
async def test_non_utf8_or_non_ascii_tokens_are_a_plain_401(ingress: Any, path: bytes) -> None:
    r"""A bearer token with bytes \\xff\\xfe, a non-ASCII one, or such a `?token=`: 401, as for
    any wrong token, never a 500; the right token still works."""
    token = "admin-test-token-0001"
    client = await ingress({"admin": {"token": token}, "sinks": {"console": {"type": "log"}}})
    port = client.port
    assert await raw_get(port, path, b"Authorization: Bearer \xff\xfe\r\n") == 401
    assert (
        await raw_get(port, path, b"Authorization: Bearer " + token.encode() + b"\xff\r\n") == 401
    )
    assert await raw_get(port, path, "Authorization: Bearer tökén\r\n".encode()) == 401
    assert await raw_get(port, path, b"Authorization: \xff\xfe " + token.encode() + b"\r\n") == 401
    assert await raw_get(port, path + b"?token=%FF%FE") == 401
    assert await raw_get(port, path + b"?token=%ED%A0%80") == 401  # an encoded lone surrogate
    assert await raw_get(port, path, b"Authorization: Bearer " + token.encode() + b"\r\n") == 200


# --- the Discord embed title ----------------------------------------------------------------


async def test_discord_title_escapes_the_currency(
    sink_server: SinkServer, sink_client: Any
) -> None:
    """The provider's currency text in the embed title is markdown-escaped like the rest."""
    url = sink_server.discord_url()
    event = payment_event(payment={"amount": "1", "currency": "**SOL** [x](https://evil.example)"})
    await discord_sink(url).deliver(sink_client, event, 1)
    (request,) = sink_server.requests(url)
    (embed,) = request.json()["embeds"]
    assert embed["title"] == r"Payment completed: 1 \*\*SOL\*\* \[x\]\(https://evil.example\)"
