"""A TCP proxy for fault tests: put it between a client (this process or a child) and a server
(Redis or anything), then partition, heal, cut and restore the path for real.

    proxy = await TcpProxy.for_url(redis_url).start()      # in the test's event loop
    url = proxy.proxied_url(redis_url)                      # give this to the relay child
    proxy.freeze()   # half-open partition: every socket stays open, no byte passes either way
    proxy.thaw()     # forwarding resumes; bytes sent while frozen are dropped (see below)
    proxy.cut()      # every connection closed, new ones refused (ECONNREFUSED)
    proxy.restore()  # listening again on the same port
    proxy.close()

or `with TcpProxy.for_url(redis_url).start_in_thread() as proxy:` to run it on its own event
loop in a daemon thread: use that when the test blocks its own loop (`RelayProcess.wait()`,
`time.sleep`, sync redis-py), which would otherwise stall the proxy too. freeze/thaw/cut/restore
are synchronous, callable from any thread, and in effect when they return.

While frozen the proxy keeps reading both sides and discards what it reads, so
- bytes sent during a freeze are dropped, never delivered after `thaw()`. A partition that heals
  inside TCP's retransmission window would deliver them late instead; a flow a middlebox
  forgot stays dead for good. Dropping means a client that kept waiting on a reply sent into the
  freeze waits forever (as behind a dead flow), while a client that gave up on the connection
  (redis-py disconnects on a socket timeout) works again on a new one, as after a heal;
- a sender never blocks on a full TCP window, as it would behind a real partition once its
  socket buffers fill (irrelevant for Redis-sized commands over a test's seconds);
- a close (EOF) from either side is held until `thaw()`: a partition carries no FIN either;
- a connection accepted while frozen is connected upstream at once but forwards nothing until
  `thaw()`, with what it sent before that dropped.
If the upstream refuses, a client connection is accepted and closed at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")
CHUNK = 65536


class TcpProxy:
    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port  # the bound port once started
        self.frozen = False
        self.is_cut = False
        self.accepted = 0  # connections accepted, all time
        self.bytes_forwarded = 0
        self.bytes_dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None  # the listening socket, once bound
        self._changed: asyncio.Event | None = None  # set and replaced on every state change
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def for_url(cls, url: str, **kwargs: Any) -> TcpProxy:
        parts = urlsplit(url)
        assert parts.hostname and parts.port, url
        return cls(parts.hostname, parts.port, **kwargs)

    def proxied_url(self, url: str) -> str:
        """`url` (credentials, database, query kept) pointed at the proxy instead."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def connections(self) -> int:
        """Proxied connections open now (each has two sockets)."""
        return len(self._writers) // 2

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> Self:
        """Serve on the running loop (the caller's)."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        await self._serve(self._bind())
        return self

    def start_in_thread(self) -> Self:
        """Serve on a new event loop in a daemon thread: immune to the test blocking its own."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=main, name="tcp-proxy", daemon=True)
        self._thread.start()
        ready.result(10)
        return self

    def close(self) -> None:
        """Close everything; in thread mode also stop the thread. Idempotent."""
        if self._loop is None or self._closed:
            return
        self._call(self._close_now)
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def aclose(self) -> None:
        """close(), then wait for this loop's connection tasks to end."""
        self.close()
        if self._thread is None and self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        return self if self._loop is not None else self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults -----------------------------------------------------------------------------

    def freeze(self) -> None:
        """Half-open partition: nothing forwarded either way, nothing closed."""
        self._call(self._set_frozen, True)

    def thaw(self) -> None:
        """Forward again. What was sent while frozen stays dropped; held closes go through."""
        self._call(self._set_frozen, False)

    def cut(self) -> None:
        """Close every connection (FIN both ways) and refuse new ones until restore()."""
        self._call(self._cut_now)

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._call(self._restore_now)

    # -- internals (all on the proxy's loop) ------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the proxy's loop and return its result, from whichever thread."""
        assert self._loop is not None, "not started"
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return fn(*args)
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(10)

    def _state_changed(self) -> None:
        assert self._changed is not None
        self._changed.set()  # wakes pumps holding a close
        self._changed = asyncio.Event()

    def _set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        self._state_changed()

    def _bind(self) -> socket.socket:
        # Listening before restore() returns (it is synchronous): a connection that arrives
        # before the server task runs waits in the backlog.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind over TIME_WAIT
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        try:
            server = await asyncio.start_server(self._accept, sock=sock)
        except OSError:  # cut again before this ran: the socket is closed already
            return
        if self._sock is sock:
            self._server = server
        else:
            server.close()

    def _restore_now(self) -> None:
        if self._closed or not self.is_cut:
            return
        self.is_cut = False
        self._spawn(self._serve(self._bind()))

    def _cut_now(self) -> None:
        self.is_cut = True
        self._stop_listening()
        for writer in list(self._writers):
            writer.close()
        self._state_changed()

    def _close_now(self) -> None:
        self._closed = True
        self._cut_now()

    def _stop_listening(self) -> None:
        # Closing the listening socket at once: ECONNREFUSED from here on.
        server, self._server = self._server, None
        sock, self._sock = self._sock, None
        if server is not None:
            server.close()
        elif sock is not None:
            sock.close()

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.accepted += 1
        self._writers.add(client_w)
        try:
            if self.is_cut or self._closed:
                return
            try:
                upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            self._writers.add(upstream_w)
            try:
                if self.is_cut or self._closed:  # cut while connecting
                    return
                await asyncio.gather(
                    self._pump(client_r, upstream_w), self._pump(upstream_r, client_w)
                )
            finally:
                self._writers.discard(upstream_w)
                upstream_w.close()
        finally:
            self._writers.discard(client_w)
            client_w.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await source.read(CHUNK)
                if not data:
                    break
                if self.frozen:
                    self.bytes_dropped += len(data)
                    continue
                sink.write(data)
                self.bytes_forwarded += len(data)
                await sink.drain()
        # EOF or error from `source`: pass the close on (after a freeze: no FIN crosses one).
        while self.frozen and not (self.is_cut or self._closed):
            assert self._changed is not None
            await self._changed.wait()
        sink.close()
