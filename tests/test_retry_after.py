"""Waits asked by sinks are sane: `Retry-After` (delta seconds or HTTP date) and Discord's JSON
`retry_after` count only when finite and not negative (else they are absent: None), parsing
never raises, and a 429 waits at least MIN_RATE_LIMIT_WAIT_S. The ceiling is relay.delivery's.

Answers come from the real local sink server; the parsing functions are also checked alone."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay.sinks.base import (
    MIN_RATE_LIMIT_WAIT_S,
    RetryLater,
    retry_after_seconds,
    wait_seconds,
)
from relay.sinks.discord import DiscordSink, DiscordSinkConfig
from relay.sinks.http import HttpSink, HttpSinkConfig
from relay.sinks.slack import SlackSink, SlackSinkConfig
from tests.conftest import TEST_SECRETS
from tests.sink_servers import Reply, SinkServer, payment_event

pytest_plugins = ["tests.sink_servers"]  # the sink_server and sink_client fixtures

NOW = 1_726_248_786.0


def http_date(offset_s: float, now: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return email.utils.format_datetime(moment + timedelta(seconds=offset_s), usegmt=True)


def test_floor_is_one_second() -> None:
    assert MIN_RATE_LIMIT_WAIT_S == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("2.5", 2.5),
        ("0", 0.0),  # valid: "now" (a 429 still waits the floor)
        ("-5", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-inf", None),
        ("Infinity", None),
        ("1e400", None),
        ("1e3", None),  # not delta-seconds
        ("9" * 400, None),  # digits beyond any float: infinite, absent
        ("1_000", None),  # Python's float() would take it; HTTP does not
        ("+5", None),
        ("garbage", None),
        ("", None),
        (None, None),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),  # a year no datetime holds
        ("Wed, 32 Oct 2024 07:28:00 GMT", None),
        (http_date(-3600, NOW), 0.0),  # a date already past: come back now
        (http_date(90, NOW), 90.0),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """Delta seconds and HTTP dates parse; everything else is absent, never an exception."""
    assert retry_after_seconds(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.5, 2.5),
        (3, 3.0),
        (0, 0.0),
        (-1, None),
        (-0.5, None),
        (float("nan"), None),
        (float("inf"), None),
        (10**400, None),  # an int beyond any float
        (True, None),
        (False, None),
        ("5", None),
        ("nan", None),
        (None, None),
        ([1], None),
    ],
)
def test_json_wait_seconds(value: Any, expected: float | None) -> None:
    """A JSON wait counts only as a finite number >= 0; booleans and strings are absent."""
    assert wait_seconds(value) == expected


# --- through real answers -------------------------------------------------------------------


def http_sink(url: str) -> HttpSink:
    return HttpSink(
        "shop",
        HttpSinkConfig.model_validate(
            {"type": "http", "url": url, "secret": TEST_SECRETS["PARTNER_WHSEC"]}
        ),
    )


def slack_sink(url: str) -> SlackSink:
    return SlackSink("sales", SlackSinkConfig.model_validate({"type": "slack", "url": url}))


def discord_sink(url: str) -> DiscordSink:
    return DiscordSink("ops", DiscordSinkConfig.model_validate({"type": "discord", "url": url}))


HEADER_CASES = [
    ("7", 7.0),
    ("0", 1.0),  # the floor
    ("0.2", 1.0),
    ("-5", None),  # absent: delivery's default wait applies
    ("nan", None),
    ("inf", None),
    ("1e400", None),
    ("garbage", None),
    ("past", 1.0),
    ("future", 120.0),
]


def header_value(value: str) -> str:
    return {"past": http_date(-3600), "future": http_date(120)}.get(value, value)


def assert_wait(outcome: Any, expected: float | None) -> None:
    assert isinstance(outcome, RetryLater) and outcome.rate_limited and outcome.status == 429
    if expected is None or expected < 100:
        assert outcome.after == expected
    else:  # an HTTP date: whole seconds, and the clock moved on a little since
        assert outcome.after is not None and expected - 2 <= outcome.after <= expected


@pytest.mark.parametrize(("value", "expected"), HEADER_CASES)
async def test_http_sink_429(
    sink_server: SinkServer, sink_client: Any, value: str, expected: float | None
) -> None:
    """A merchant's 429 with each Retry-After: a sane wait, at least 1 s, or absent."""
    url = sink_server.url("/shop")
    sink_server.script(url, [Reply(429, "slow down", {"Retry-After": header_value(value)})])
    assert_wait(await http_sink(url).deliver(sink_client, payment_event(), 1), expected)


@pytest.mark.parametrize(("value", "expected"), HEADER_CASES)
async def test_slack_sink_429(
    sink_server: SinkServer, sink_client: Any, value: str, expected: float | None
) -> None:
    """Slack's 429 (Retry-After only) is read the same way."""
    url = sink_server.slack_url()
    sink_server.script(url, [Reply.rate_limited(header_value(value))])
    assert_wait(await slack_sink(url).deliver(sink_client, payment_event(), 1), expected)


@pytest.mark.parametrize(
    ("value", "expected"), [("0", 0.0), ("inf", None), ("-5", None), ("30", 30.0)]
)
async def test_5xx_retry_after_has_no_floor(
    sink_server: SinkServer, sink_client: Any, value: str, expected: float | None
) -> None:
    """A 503's Retry-After is only a lower bound for the schedule: no floor, same sanity."""
    url = sink_server.url("/shop")
    sink_server.script(url, [Reply(503, "busy", {"Retry-After": value})])
    outcome = await http_sink(url).deliver(sink_client, payment_event(), 1)
    assert isinstance(outcome, RetryLater) and not outcome.rate_limited
    assert outcome.after == expected


def discord_429(retry_after: str, header: str | None = None) -> Reply:
    """Discord's 429 with `retry_after` as raw JSON text (so 1e400 and NaN reach the parser)."""
    body = (
        f'{{"message": "You are being rate limited.", "retry_after": {retry_after}, '
        '"global": false}'
    )
    headers = {"Via": "1.1 google"}
    if header is not None:
        headers["Retry-After"] = header
    return Reply(429, body.encode(), headers)


@pytest.mark.parametrize(
    ("retry_after", "header", "expected"),
    [
        ("2.5", None, 2.5),
        ("0", None, 1.0),  # the floor
        ("0.3", None, 1.0),
        ("-1", None, None),
        ('"nan"', None, None),
        ("NaN", None, None),  # not JSON: the body is unreadable, the wait absent
        ("1e400", None, None),
        ("true", None, None),
        ('"5"', None, None),
        ("null", None, None),
        ("-1", "3", 3.0),  # the header still counts
        ('"nan"', "4", 4.0),
        ("1e400", "2", 2.0),
        ("2.5", "inf", 2.5),
        ("2.5", "garbage", 2.5),
        ("0", "0", 1.0),
        ("0.5", "3", 3.0),  # the longer of the two
    ],
)
async def test_discord_429(
    sink_server: SinkServer,
    sink_client: Any,
    retry_after: str,
    header: str | None,
    expected: float | None,
) -> None:
    """Discord's JSON retry_after and Retry-After: each counts only when sane; the longer wins;
    never less than 1 s."""
    url = sink_server.discord_url()
    sink_server.script(url, [discord_429(retry_after, header)])
    outcome = await discord_sink(url).deliver(sink_client, payment_event(), 1)
    assert_wait(outcome, expected)
    assert outcome.reason == "rate limited (429)"
