"""A real local HTTP server that plays a merchant endpoint, a Discord webhook and a Slack
webhook.

For sink unit tests and end-to-end worker tests. This module is a pytest plugin (registered in
tests/conftest.py), so its fixtures `sink_server` and `sink_client` are there for every test
without an import; import only the helpers:

    from tests.sink_servers import Reply, SinkServer

    async def test_x(sink_server: SinkServer, sink_client: SinkClient) -> None:
        url = sink_server.discord_url()                 # or .slack_url(), .url("/shop")
        sink_server.script(url, [Reply.discord_rate_limited(0.5), 500])  # then the defaults
        ...
        (request,) = sink_server.requests(url)
        request.json(), request.headers["webhook-id"], request.query["wait"]

Behaviour by path (the query string is ignored for matching):

- `/api/webhooks/<id>/<token>` (`discord_url()`): checks the body like Discord does (JSON,
  Content-Type, non-empty message, every length limit) and answers 400 `{"code": 50035, ...}`
  when it breaks one, else 200 with a message object when `?wait=true`, else 204.
- `/services/T../B../<secret>` (`slack_url()`): checks the body against Slack's limits and
  answers 400 `invalid_blocks` / `invalid_payload` / `no_text`, else 200 `ok`.
- anything else (`url(path)`): a merchant endpoint: 200 `ok`.

`script(path_or_url, [...])` queues replies (a `Reply`, or a bare status code) that are used one
per request, in order, before the default above applies again. Every request is recorded
(`Recorded`: method, path, query, lower-cased headers, raw body, `violations` of the
platform's rules for Discord/Slack paths, and the status it was answered with), whatever
the answer, including requests that were scripted to hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

import pytest_asyncio
from aiohttp import web

from relay.events import PaymentEvent, StoredEvent
from relay.sinks.client import SinkClient

DISCORD_PREFIX = "/api/webhooks/"
SLACK_PREFIX = "/services/"
DISCORD_TOKEN = "T0k3n-" + "a1B2c3D4e5" * 6  # 66 chars, like a real webhook token


# --- scripted replies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, body (bytes, text, or JSON-able), headers, delay first."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (released early when the server stops)

    @classmethod
    def ok(cls, status: int = 200, body: Any = "ok") -> Reply:
        return cls(status, body)

    @classmethod
    def error(
        cls, status: int, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return cls(status, body if body is not None else f"error {status}", dict(headers or {}))

    @classmethod
    def redirect(cls, location: str = "https://elsewhere.example/hook", status: int = 302) -> Reply:
        return cls(status, "", {"Location": location})

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Reply:
        """Answer 200 only after `seconds`: longer than the sink's timeout."""
        return cls(200, "too late", {}, seconds)

    @classmethod
    def rate_limited(cls, retry_after: float | str = 1) -> Reply:
        """A plain 429 with `Retry-After` (Slack, a merchant)."""
        return cls(429, "rate_limited", {"Retry-After": str(retry_after)})

    @classmethod
    def discord_rate_limited(
        cls, retry_after: float = 0.5, *, is_global: bool = False, header: str | None = None
    ) -> Reply:
        """Discord's 429: JSON `retry_after` (float seconds), `Retry-After` header, `Via`."""
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        headers = {
            "Retry-After": header if header is not None else str(max(1, round(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(retry_after),
            "X-RateLimit-Scope": "global" if is_global else "user",
            "Via": "1.1 google",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        return cls(429, body, headers)

    @classmethod
    def discord_error(cls, status: int, code: int, message: str) -> Reply:
        return cls(status, {"code": code, "message": message})


def _reply(item: Reply | int) -> Reply:
    return item if isinstance(item, Reply) else Reply(int(item), "" if item == 204 else None)


# --- recorded requests ----------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.time() on arrival
    violations: list[str] = field(default_factory=list)  # Discord/Slack rules the body breaks
    status: int | None = None  # what the server answered (None while still hanging)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


# --- platform rules -------------------------------------------------------------------------


def _length(value: Any) -> int:
    return len(value.strip()) if isinstance(value, str) else 0


def _url_ok(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not re.search(r"\s", value)


def discord_violations(payload: Any) -> list[str]:
    """Every rule of Discord's execute-webhook body that `payload` breaks (empty: accepted)."""
    if not isinstance(payload, dict):
        return ["body is not a JSON object"]
    problems: list[str] = []
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        problems.append("content is not a string")
    elif _length(content) > 2000:
        problems.append(f"content is {_length(content)} > 2000 characters")
    embeds = payload.get("embeds") or []
    if not isinstance(embeds, list):
        return [*problems, "embeds is not a list"]
    if len(embeds) > 10:
        problems.append(f"{len(embeds)} > 10 embeds")
    if not _length(content) and not embeds:
        problems.append("Cannot send an empty message (50006)")
    total = 0
    for i, embed in enumerate(embeds):
        where = f"embeds[{i}]"
        for key, limit in (("title", 256), ("description", 4096)):
            size = _length(embed.get(key))
            total += size
            if size > limit:
                problems.append(f"{where}.{key} is {size} > {limit}")
        for key in ("url",):
            if key in embed and not _url_ok(embed[key]):
                problems.append(f"{where}.{key} is not a valid URL")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            problems.append(f"{where} has {len(fields)} > 25 fields")
        for j, item in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                size = _length(item.get(key))
                total += size
                if size == 0:
                    problems.append(f"{where}.fields[{j}].{key} is empty")
                if size > limit:
                    problems.append(f"{where}.fields[{j}].{key} is {size} > {limit}")
        for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
            size = _length((embed.get(key) or {}).get(sub))
            total += size
            if size > limit:
                problems.append(f"{where}.{key}.{sub} is {size} > {limit}")
        stamp = str(embed.get("timestamp", ""))
        if "timestamp" in embed and not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", stamp):
            problems.append(f"{where}.timestamp is not ISO 8601")
        color = embed.get("color")
        if "color" in embed and not (isinstance(color, int) and 0 <= color <= 0xFFFFFF):
            problems.append(f"{where}.color is not a 24-bit integer")
    if total > 6000:
        problems.append(f"embeds hold {total} > 6000 characters in total")
    username = payload.get("username")
    if username is not None and not 1 <= _length(username) <= 80:
        problems.append("username must be 1 to 80 characters")
    if "avatar_url" in payload and not _url_ok(payload["avatar_url"]):
        problems.append("avatar_url is not a valid URL")
    mentions = payload.get("allowed_mentions")
    explicit = mentions is not None and ("users" in mentions or "roles" in mentions)
    if mentions is not None and "parse" in mentions and explicit:
        problems.append("allowed_mentions: parse is exclusive with users/roles")
    return problems


def discord_pings(payload: Mapping[str, Any]) -> list[str]:
    """The mentions in `content` that Discord would turn into pings under `allowed_mentions`
    (omitted: webhooks parse users only). Embeds never ping."""
    content = payload.get("content") or ""
    mentions = payload.get("allowed_mentions")
    parse = ["users"] if mentions is None else list(mentions.get("parse") or [])
    found: list[str] = []
    if "everyone" in parse:
        found += re.findall(r"(?<!\\)@(?:everyone|here)\b", content)
    if "users" in parse or (mentions or {}).get("users"):
        found += re.findall(r"(?<!\\)<@!?\d+>", content)
    if "roles" in parse or (mentions or {}).get("roles"):
        found += re.findall(r"(?<!\\)<@&\d+>", content)
    return found


def slack_violations(payload: Any) -> list[str]:
    """Every Slack incoming-webhook limit `payload` breaks (empty: accepted)."""
    if not isinstance(payload, dict):
        return ["invalid_payload: body is not a JSON object"]
    problems: list[str] = []
    text = payload.get("text")
    blocks = payload.get("blocks")
    if not (isinstance(text, str) and text.strip()) and not blocks:
        problems.append("no_text")
    if isinstance(text, str) and len(text) > 40000:
        problems.append(f"text is {len(text)} > 40000 characters")
    if blocks is not None:
        if not isinstance(blocks, list):
            return [*problems, "invalid_blocks: blocks is not a list"]
        if len(blocks) > 50:
            problems.append(f"invalid_blocks: {len(blocks)} > 50 blocks")
        for i, block in enumerate(blocks):
            kind = block.get("type")
            where = f"blocks[{i}] ({kind})"
            if kind == "section":
                obj = block.get("text")
                if obj is not None and not 1 <= len(obj.get("text", "")) <= 3000:
                    problems.append(f"invalid_blocks: {where}.text must be 1 to 3000 characters")
                fields = block.get("fields") or []
                if len(fields) > 10:
                    problems.append(f"invalid_blocks: {where} has {len(fields)} > 10 fields")
                for j, item in enumerate(fields):
                    if not 1 <= len(item.get("text", "")) <= 2000:
                        problems.append(f"invalid_blocks: {where}.fields[{j}] must be 1 to 2000")
                if obj is None and not fields:
                    problems.append(f"invalid_blocks: {where} has neither text nor fields")
            elif kind == "context":
                elements = block.get("elements") or []
                if not 1 <= len(elements) <= 10:
                    problems.append(f"invalid_blocks: {where} must hold 1 to 10 elements")
                for j, item in enumerate(elements):
                    if len(item.get("text", "")) > 3000:
                        problems.append(f"invalid_blocks: {where}.elements[{j}] > 3000")
            elif kind == "header":
                if not 1 <= len((block.get("text") or {}).get("text", "")) <= 150:
                    problems.append(f"invalid_blocks: {where}.text must be 1 to 150 characters")
            elif kind not in ("divider", "image", "actions", "rich_text", "markdown"):
                problems.append(f"invalid_blocks: {where}: unknown block type")
    return problems


# --- the server -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _path_of(path_or_url: str) -> str:
    return urlsplit(path_or_url).path if "://" in path_or_url else path_or_url.split("?", 1)[0]


class SinkServer:
    """The fake endpoint. `async with SinkServer() as server:` or the `sink_server` fixture."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._requests: list[Recorded] = []
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # lifecycle

    async def start(self) -> Self:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        self.port = _free_port()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # addresses

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/hook") -> str:
        """The absolute URL of `path` on this server (a merchant endpoint unless the path is a
        Discord or Slack one)."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def discord_url(
        self, webhook_id: int | str = 123456789012345678, token: str = DISCORD_TOKEN
    ) -> str:
        """A Discord-shaped webhook URL (`/api/webhooks/<id>/<token>`)."""
        return self.url(f"{DISCORD_PREFIX}{webhook_id}/{token}")

    def slack_url(self, channel: str = "B00000000") -> str:
        """A Slack-shaped incoming-webhook URL (`/services/T.../B.../<secret>`)."""
        return self.url(f"{SLACK_PREFIX}T00000000/{channel}/XXXXXXXXXXXXXXXXXXXXXXXX")

    # scripting and inspection

    def script(self, path_or_url: str, replies: Iterable[Reply | int]) -> None:
        """Queue replies for `path_or_url`, used one per request in order, then the default."""
        self._scripts[_path_of(path_or_url)].extend(_reply(r) for r in replies)

    def pending(self, path_or_url: str) -> int:
        """How many scripted replies for this path are still unused."""
        return len(self._scripts[_path_of(path_or_url)])

    def requests(self, path_or_url: str | None = None) -> list[Recorded]:
        """Requests received so far, oldest first (all paths, or one path)."""
        if path_or_url is None:
            return list(self._requests)
        path = _path_of(path_or_url)
        return [r for r in self._requests if r.path == path]

    async def wait_for_requests(
        self, count: int, path_or_url: str | None = None, timeout: float = 10.0
    ) -> list[Recorded]:
        """Wait until at least `count` requests arrived (for end-to-end tests)."""

        async def enough() -> list[Recorded]:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests(path_or_url)) >= count)
            return self.requests(path_or_url)

        try:
            return await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            got = len(self.requests(path_or_url))
            raise AssertionError(f"{got} of {count} requests within {timeout}s") from None

    def reset(self) -> None:
        """Forget recorded requests and unused scripts."""
        self._requests.clear()
        self._scripts.clear()

    # handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()  # before the body is read: when the request reached the server
        body = await request.read()
        record = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            at=arrived,
        )
        flavour = (
            "discord"
            if request.path.startswith(DISCORD_PREFIX)
            else "slack"
            if request.path.startswith(SLACK_PREFIX)
            else "merchant"
        )
        payload: Any = None
        if flavour != "merchant":
            try:
                payload = json.loads(body)
            except ValueError:
                record.violations.append("invalid JSON body")
            else:
                check = discord_violations if flavour == "discord" else slack_violations
                record.violations.extend(check(payload))
            if not record.headers.get("content-type", "").startswith("application/json"):
                record.violations.append("Content-Type is not application/json")
        self._requests.append(record)
        async with self._arrived:
            self._arrived.notify_all()

        queue = self._scripts.get(request.path)
        reply = queue.popleft() if queue else self._default(flavour, record, payload)
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay)
        record.status = reply.status
        return self._response(reply)

    def _default(self, flavour: str, record: Recorded, payload: Any) -> Reply:
        if flavour == "discord":
            if record.violations:
                errors = [{"code": "BASE_TYPE_INVALID", "message": v} for v in record.violations]
                return Reply(
                    400,
                    {"code": 50035, "message": "Invalid Form Body", "errors": {"_errors": errors}},
                )
            if record.query.get("wait", "").lower() in ("true", "1"):
                return Reply(
                    200,
                    {
                        "id": str(1_000_000_000_000_000 + len(self._requests)),
                        "type": 0,
                        "content": payload.get("content", ""),
                        "embeds": payload.get("embeds", []),
                        "webhook_id": record.path.split("/")[3],
                    },
                )
            return Reply(204, "")
        if flavour == "slack":
            if record.violations:
                first = record.violations[0]
                text = (
                    "no_text"
                    if first == "no_text"
                    else (
                        "invalid_blocks"
                        if first.startswith("invalid_blocks")
                        else "invalid_payload"
                    )
                )
                return Reply(400, text)
            return Reply(200, "ok")
        return Reply(200, "ok")

    @staticmethod
    def _response(reply: Reply) -> web.Response:
        headers = dict(reply.headers)
        body = reply.body
        if isinstance(body, (dict, list)):
            headers.setdefault("Content-Type", "application/json")
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            data = body.encode()
        elif body is None:
            data = f"HTTP {reply.status}".encode() if reply.status != 204 else b""
        else:
            data = body
        if reply.status in (204, 304):
            data = b""
            headers.pop("Content-Type", None)
        return web.Response(status=reply.status, body=data, headers=headers)


# --- events -------------------------------------------------------------------------------


def payment_event(
    type: str = "payment.completed",
    *,
    source: str = "coinable",
    dedupe_key: str = "key-1",
    payment: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> StoredEvent:
    """A canonical event built with `PaymentEvent.build`, as the worker carries it.

    Defaults to Coinable's example: 0.86 SOL for "simple test product"; `payment` entries
    replace the defaults (None clears one)."""
    fields: dict[str, Any] = {
        "id": "cs_7f3a9c",
        "reference": "order-1001",
        "amount": "0.86",
        "currency": "SOL",
        "network": "SOL",
        "description": "simple test product",
        "tx_hash": "5VfYmGz3hK9",
        "tx_url": "https://explorer.solana.com/tx/5VfYmGz3hK9",
    }
    fields.update(payment or {})
    options: dict[str, Any] = {
        "provider": source,
        "provider_event": "checkout.session.completed",
        "received_at": 1_726_248_786.123,
        "occurred_at": "2024-09-13T17:33:05Z",
        "data": {"type": "checkout.session.completed"},
    }
    options.update(overrides)
    event = PaymentEvent.build(
        source=source, dedupe_key=dedupe_key, type=type, payment=fields, **options
    )
    return StoredEvent(event.to_json())


# --- fixtures (this module is registered as a plugin by tests/conftest.py) -------------------


@pytest_asyncio.fixture
async def sink_server() -> AsyncIterator[SinkServer]:
    """A fresh fake merchant/Discord/Slack endpoint on 127.0.0.1 for this test."""
    async with SinkServer() as server:
        yield server


@pytest_asyncio.fixture
async def sink_client() -> AsyncIterator[SinkClient]:
    """The sinks' real HTTP client (relay.sinks.client), as the worker uses."""
    async with SinkClient() as client:
        yield client


__all__ = [
    "Recorded",
    "Reply",
    "SinkServer",
    "discord_pings",
    "discord_violations",
    "payment_event",
    "slack_violations",
]
