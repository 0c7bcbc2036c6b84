"""`relay serve`'s server loop and its SIGTERM drain (SPEC 2: requests in flight finish).

Why not `web.run_app`: on shutdown aiohttp (3.14.5: web_runner.py `BaseRunner.cleanup`) calls
`Server.pre_shutdown()`, i.e. `RequestHandler.close()` on every connection, then
`RequestHandler.shutdown()`, which sets `_force_close`; and `RequestHandler.data_received()`
(web_protocol.py) returns at once while `_close` or `_force_close` is set. So the rest of a
body still arriving is thrown away: its handler waits for bytes that never come until
`shutdown_timeout`, is cancelled, and the connection closes with no answer (issue 8, item 6).

So on SIGTERM this loop, before handing over to aiohttp's own cleanup:

1. stops listening: new connections are refused from the first moment;
2. closes idle keep-alive connections, and gives every answer sent from now on
   `Connection: close`;
3. leaves every connection with a request in progress alone (bytes keep flowing into its
   body) until its answer is written;
4. at `body_deadline_s` answers a request whose body is still arriving 503 + Retry-After
   (it was not stored: the provider retries), so a client trickling forever cannot hold
   shutdown; requests that have their body are waited for until `drain_s`, which leaves
   room for a Redis round trip (server.redis_timeout) and the exit inside Heroku's 30 s.

The drain reads a few private attributes of aiohttp's RequestHandler (`_waiter`, `_messages`,
`_current_request`, `_lingering_time`; web_protocol.py of 3.14.5). Where one is missing the
connection counts as busy, so a changed aiohttp only makes the drain wait until `drain_s`.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import orjson
from aiohttp import web

from relay.logs import get_logger

log = get_logger("relay.ingress")

DRAIN_S = 25.0  # SIGTERM -> done draining; Heroku sends SIGKILL at 30 s
BODY_DEADLINE_S = 20.0  # a body still arriving then is answered 503
CLEANUP_TIMEOUT_S = 1.0  # aiohttp's own shutdown, for whatever outlived the drain
POLL_S = 0.05
KEEPALIVE_TIMEOUT_S = 75.0  # what web.run_app used
RETRY_AFTER_S = "5"  # as the ingress's other 503s (relay/ingress/app.py)


def run(app: web.Application, host: str, port: int, *, answer_s: float = 2.0) -> None:
    """Serve until SIGTERM or SIGINT, then drain (see the module docstring) and return.
    `answer_s`: how long a handler may still take once it has its body (the Redis timeout);
    the body deadline comes that much (and a second) before the end of the drain."""
    body_deadline_s = max(0.0, min(BODY_DEADLINE_S, DRAIN_S - answer_s - 1.0))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)  # a second signal changes nothing
        await serve(app, host, port, stop=stop, body_deadline_s=body_deadline_s)

    asyncio.run(main())


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    stop: asyncio.Event,
    drain_s: float = DRAIN_S,
    body_deadline_s: float = BODY_DEADLINE_S,
) -> None:
    """Serve `app` until `stop` is set, then drain; return when the app is cleaned up. The
    deadlines count from `stop`."""
    draining = False

    async def close_after_answer(request: web.BaseRequest, response: web.StreamResponse) -> None:
        if draining:
            # This hook runs after _prepare_headers and before _write_headers
            # (web_response.py StreamResponse._start): force_close() alone makes the
            # connection close after this answer, the header tells the client.
            response.force_close()
            response.headers["Connection"] = "close"

    app.on_response_prepare.append(close_after_answer)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        shutdown_timeout=CLEANUP_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        await stop.wait()
        began = asyncio.get_running_loop().time()
        draining = True
        await site.stop()  # closes the listening socket: new connections are refused
        if runner.server is None:  # set by setup(); an if, not an assert (python -O drops those)
            raise RuntimeError("aiohttp's AppRunner has no server after setup()")
        await _drain(runner.server, began, body_deadline_s, drain_s)
    finally:
        await runner.cleanup()  # the rest as aiohttp does it; app cleanup closes Redis


def _idle(conn: Any) -> bool:
    """Parked waiting for the next request, with none queued (a half-received header counts:
    those requests were never received)."""
    waiter = getattr(conn, "_waiter", None)
    return waiter is not None and not waiter.done() and not getattr(conn, "_messages", True)


def _busy(conn: Any) -> bool:
    if conn.transport is None:  # closed; its handler may still be storing for a vanished client
        return bool(getattr(conn, "_request_in_progress", True))
    return not _idle(conn)


def _unavailable() -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(
        text=orjson.dumps({"error": "unavailable"}).decode(),
        content_type="application/json",
        headers={"Retry-After": RETRY_AFTER_S},
    )


async def _drain(server: Any, began: float, body_deadline_s: float, drain_s: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)  # as BaseRunner.cleanup: let data already read reach its handler
    in_flight = sum(_busy(conn) for conn in server.connections)
    log.info("shutdown: draining", requests=in_flight)
    cut_short = 0
    while True:
        busy = []
        for conn in server.connections:
            if _busy(conn):
                busy.append(conn)
            elif conn.transport is not None:
                conn.force_close()
        elapsed = loop.time() - began
        if not busy or elapsed >= drain_s:
            break
        if elapsed >= body_deadline_s:
            for conn in busy:
                request = getattr(conn, "_current_request", None)
                if request is None or request.content.is_eof() or request.content.exception():
                    continue
                # The handler's next read raises it; aiohttp answers an HTTPException as the
                # response (web_protocol.py _handle_request). No lingering read afterwards:
                # it would hit the same exception and be logged as unhandled.
                conn._lingering_time = 0.0  # noqa: SLF001 - see the module docstring
                request.content.set_exception(_unavailable())
                cut_short += 1
        await asyncio.sleep(POLL_S)
    log.info(
        "shutdown: drained",
        seconds=round(loop.time() - began, 2),
        requests=in_flight,
        body_too_slow=cut_short,
        left=len(busy),
    )
