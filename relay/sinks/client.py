"""The sinks' HTTP client: one POST, its status, headers and the first bytes of its answer,
on kept-alive HTTP/1.1 connections; httptools (llhttp, the parser uvicorn uses) parses.

Why not aiohttp's client, which the rest of the relay uses: a worker sends three POSTs per
event, and `ClientSession.post` cost 120-270 us of CPU per request (cookie jar, tracing,
redirects, proxies, two timers per request; measured in docs/benchmarks.md), the largest part
of a worker's CPU. A sink needs none of that: no redirects (never followed), no cookies, no
proxy, no decompression (no Accept-Encoding is sent), and only an excerpt of the answer. What
is left is short: a connection pool per origin, the request bytes, and a parser callback
object. No maintained asyncio client is leaner (aiosonic measured 250 us per request).

Semantics a sink relies on:
- `timeout` covers connecting, sending and the answer's head and excerpt; on a timeout or any
  error the connection is closed, never reused.
- A connection is reused only after a complete answer that allows keep-alive, and not after
  IDLE_S idle (servers close idle connections after 5-75 s; racing that close would fail a
  delivery). A reused connection that fails before any byte of an answer arrived (the server
  closed it as we sent) is retried once on a new one: the server did not answer, so at most a
  duplicate results, which Standard Webhooks receivers drop by `webhook-id`.
- The body is read up to `read_limit` bytes; an answer longer than that ends the connection.
- Errors are `ClientError`, whose text starts with the URL as given (the sink redacts it).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ssl
import time
from collections.abc import Iterator, Mapping
from typing import Any, Self, cast

import httptools
import yarl

IDLE_S = 4.0  # an idle connection older than this is closed, not reused (see above)
MAX_IDLE_PER_ORIGIN = 256
MAX_ORIGINS_CACHED = 1024
USER_AGENT = "payrelay"


class ClientError(Exception):
    """The request failed below HTTP: no connection, reset, closed early, not HTTP."""


class InvalidRequest(ClientError):
    """The request itself cannot be sent (a bad URL or header): retrying cannot help."""


class Headers(Mapping[str, str]):
    """An answer's headers, looked up without regard to case; repeated ones joined by ', '."""

    def __init__(self, items: dict[str, str] | None = None) -> None:
        self._items = {k.lower(): v for k, v in (items or {}).items()}

    def add(self, name: str, value: str) -> None:
        name = name.lower()
        old = self._items.get(name)
        self._items[name] = value if old is None else f"{old}, {value}"

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._items.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    headers: Headers
    body: bytes  # at most the read_limit asked for


@dataclasses.dataclass(frozen=True)
class _Origin:
    key: tuple[str, str, int]
    host: str  # as connected to (IDNA-encoded; an IPv6 address without brackets)
    port: int
    tls: bool
    head: bytes  # "POST <target> HTTP/1.1\r\nHost: ...\r\n"


def _origin(url: str) -> _Origin:
    try:
        parsed = yarl.URL(url)
        host, port = parsed.raw_host, parsed.port
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"not a URL: {url}") from exc
    if parsed.scheme not in ("http", "https") or not host or port is None:
        raise InvalidRequest(f"not an http(s) URL: {url}")
    target = parsed.raw_path_qs or "/"
    host_header = f"[{host}]" if ":" in host else host
    if not parsed.is_default_port():
        host_header += f":{port}"
    # yarl's raw (percent-encoded) path and host hold no space or line break.
    head = f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\n"
    return _Origin((parsed.scheme, host, port), host, port, parsed.scheme == "https", head.encode())


def _request_head(origin: _Origin, headers: Mapping[str, str], length: int) -> bytes:
    lines = [origin.head]
    agent = False
    for name, value in headers.items():
        if not name or any(c in name for c in "\r\n: \t") or "\r" in value or "\n" in value:
            raise InvalidRequest(f"a header that cannot be sent: {name!r}")
        lowered = name.lower()
        if lowered in ("content-length", "host", "transfer-encoding", "connection"):
            continue  # ours to set
        agent = agent or lowered == "user-agent"
        lines.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    if not agent:
        lines.append(f"User-Agent: {USER_AGENT}\r\n".encode())
    lines.append(f"Content-Length: {length}\r\n\r\n".encode())
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One connection: sends a request, parses its answer (httptools callbacks below)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Response] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset(0)

    def _reset(self, read_limit: int) -> None:
        self._limit = read_limit
        self._headers = Headers()
        self._body: list[bytes] = []
        self._size = 0
        self._head_done = False
        self._got_bytes = False
        self._complete = False
        self.reusable = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ClientError(f"not an HTTP answer ({exc})"))
            return
        if not self._complete and self._head_done and self._size >= self._limit:
            self._finish(reusable=False)  # the excerpt is all we read of a long answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head_done and not self._complete:
            self._finish(reusable=False)  # an answer without a length ends at close
        elif self._waiter is not None and not self._waiter.done():
            what = f": {exc}" if exc else ""
            self._fail(ClientError(f"connection closed before an answer{what}"))

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, chunk: bytes) -> None:
        if self._size < self._limit:
            self._body.append(chunk[: self._limit - self._size])
        self._size += len(chunk)

    def on_message_complete(self) -> None:
        self._complete = True
        self._finish(reusable=self._parser.should_keep_alive())

    # --- used by SinkClient

    def send(self, head: bytes, body: bytes, read_limit: int) -> asyncio.Future[Response]:
        self._reset(read_limit)
        if self.closed or self.transport_closing():
            raise ClientError("connection closed before an answer")
        assert self.transport is not None  # noqa: S101 - transport_closing() checked it
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines((head, body))
        return self._waiter

    def transport_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def failed_silently(self) -> bool:
        """True when the last request failed before any byte of an answer arrived."""
        return not self._got_bytes

    def _finish(self, reusable: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (1xx): the real one follows
            self._head_done = False
            self._headers = Headers()
            self._complete = False
            return
        self.reusable = reusable and not self.closed
        waiter.set_result(Response(status, self._headers, b"".join(self._body)[: self._limit]))

    def _fail(self, exc: ClientError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class SinkClient:
    """POSTs for sinks, on a pool of kept-alive connections per origin. Close it when done."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], collections.deque[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,
        read_limit: int = 512,
    ) -> Response:
        """POST `body` to `url`: the answer (its body cut at `read_limit`). ClientError below
        HTTP, InvalidRequest for a request that cannot be sent, TimeoutError after `timeout`."""
        origin = self._origins.get(url)
        if origin is None:
            origin = _origin(url)
            if len(self._origins) >= MAX_ORIGINS_CACHED:
                self._origins.clear()
            self._origins[url] = origin
        head = _request_head(origin, headers, len(body))
        try:
            return await self._post(origin, head, body, timeout, read_limit)
        except ClientError as exc:
            raise ClientError(f"{url}: {exc}") from exc  # the sink redacts the URL

    async def _post(
        self, origin: _Origin, head: bytes, body: bytes, timeout: float, read_limit: int
    ) -> Response:
        async with asyncio.timeout(timeout):
            connection = self._take(origin)
            if connection is not None:
                try:
                    return await self._exchange(origin, connection, head, body, read_limit)
                except ClientError:
                    if not connection.failed_silently():
                        raise
                    # the server closed the idle connection as we sent: once more, on a new one
            connection = await self._connect(origin)
            return await self._exchange(origin, connection, head, body, read_limit)

    async def _exchange(
        self, origin: _Origin, connection: _Connection, head: bytes, body: bytes, limit: int
    ) -> Response:
        try:
            response = await connection.send(head, body, limit)
        except BaseException:
            connection.close()  # a timeout or cancel mid-answer: the connection is out of step
            raise
        if connection.reusable:
            self._give_back(origin, connection)
        else:
            connection.close()
        return response

    def _take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin.key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            usable = not connection.closed and not connection.transport_closing()
            if usable and now - connection.idle_since < IDLE_S:
                return connection
            connection.close()
        return None

    def _give_back(self, origin: _Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin.key, collections.deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection,
                origin.host,
                origin.port,
                ssl=self._ssl if origin.tls else None,
                server_hostname=origin.host if origin.tls else None,
            )
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ClientError(f"cannot connect ({reason})") from exc
        return connection

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
