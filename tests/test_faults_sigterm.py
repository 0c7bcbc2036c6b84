"""SIGTERM to `relay serve` while request bodies are still arriving (issue 8 item 6, SPEC 2):
every request whose headers were received is answered, body included, before the process
exits, inside Heroku's 30 s; new connections are refused at once."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config.model import LoadedConfig
from tests.conftest import TEST_SECRETS
from tests.processes import RelayProcess, write_config

KEY = TEST_SECRETS["IVPAY_API_KEY"]
CLIENTS = 5
TRICKLE_S = 8.0
PIECES = 16


def relay_config(redis_url: str | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {},
    }
    if redis_url:
        raw["redis_url"] = redis_url
    return raw


def body(i: int) -> bytes:
    return orjson.dumps(
        {"payment_id": f"sigterm-{i}", "status": "PAID", "foreign_id": str(i), "padding": "x" * 200}
    )


def head(port: int, length: int) -> bytes:
    return (
        f"POST /hooks/ivpay HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"X-API-KEY: {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (what aiohttp sends for these answers)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed with no answer")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    payload = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, payload


async def trickle(
    port: int, data: bytes, seconds: float, sent_headers: asyncio.Event, results: list[Any]
) -> None:
    """Headers at once, then the body in PIECES pieces over `seconds`; the answer is read
    meanwhile (the server may answer before the body is complete)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send_body() -> None:
        step = -(-len(data) // PIECES)
        for offset in range(0, len(data), step):
            await asyncio.sleep(seconds / PIECES)
            writer.write(data[offset : offset + step])
            await writer.drain()

    writer.write(head(port, len(data)))
    await writer.drain()
    sent_headers.set()
    sender = asyncio.create_task(send_body())
    try:
        results.append(await asyncio.wait_for(read_answer(reader), seconds + 30))
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        results.append(exc)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


@pytest.mark.slow
async def test_sigterm_answers_requests_whose_body_is_still_arriving(
    tmp_path: Path, redis_url: str, redis: Any
) -> None:
    config = write_config(tmp_path, relay_config(redis_url))
    web = RelayProcess("serve", config, tmp_path, redis_url).start()
    try:
        await web.ready()
        assert web.port
        started = [asyncio.Event() for _ in range(CLIENTS)]
        results: list[Any] = []
        clients = [
            asyncio.create_task(trickle(web.port, body(i), TRICKLE_S, started[i], results))
            for i in range(CLIENTS)
        ]
        await asyncio.gather(*(event.wait() for event in started))
        # And an idle keep-alive connection (one request answered): closed at SIGTERM.
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", web.port)
        idle_w.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n\r\n".encode())
        assert (await asyncio.wait_for(read_answer(idle_r), 5))[0] == 200
        await asyncio.sleep(1.0)

        web.signal(signal.SIGTERM)
        began = time.monotonic()
        assert await asyncio.wait_for(idle_r.read(), 2) == b"", "idle connection left open"
        idle_closed = time.monotonic() - began
        idle_w.close()
        await asyncio.sleep(0.2)
        assert await refused(web.port), "a new connection was accepted after SIGTERM"

        await asyncio.wait_for(asyncio.gather(*clients), 40)
        while web.alive() and time.monotonic() - began < 35:
            await asyncio.sleep(0.1)
        exited_after = time.monotonic() - began
        assert not web.alive(), f"still running {exited_after:.1f}s after SIGTERM"
        code = web.wait(1)
    finally:
        web.stop()

    answered = [r for r in results if isinstance(r, tuple) and r[0] == 200]
    print(
        f"\nSIGTERM with {CLIENTS} bodies arriving over {TRICKLE_S:.0f}s: "
        f"{len(answered)} of {CLIENTS} answered 200, exit {code} after {exited_after:.1f}s; "
        f"idle keep-alive connection closed after {idle_closed:.2f}s"
    )
    assert len(answered) == CLIENTS, results
    for _status, headers, payload in answered:
        assert headers.get("connection", "").lower() == "close"  # the client knows not to reuse
        job_id = orjson.loads(payload)["id"]
        assert await redis.exists(f"arq:job:{job_id}"), job_id
    assert code == 0
    assert exited_after < 30


async def test_body_still_arriving_at_the_deadline_gets_503(
    config_factory: Any, redis: Any
) -> None:
    """A client trickling past the drain deadline cannot hold shutdown: it is answered 503 +
    Retry-After (its webhook was not stored, so the provider must retry), and serving ends."""
    from relay.embedded import free_port
    from relay.ingress.app import create_app
    from relay.ingress.runner import serve

    loaded: LoadedConfig = config_factory(relay_config())
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(
        serve(create_app(loaded), "127.0.0.1", port, stop=stop, body_deadline_s=1.0, drain_s=2.0)
    )
    for _ in range(100):
        if not await refused(port):
            break
        await asyncio.sleep(0.05)
    started = asyncio.Event()
    results: list[Any] = []
    client = asyncio.create_task(trickle(port, body(99), 30.0, started, results))
    await started.wait()
    await asyncio.sleep(0.2)
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(server, 10)
    took = time.monotonic() - began
    client.cancel()
    await asyncio.gather(client, return_exceptions=True)
    assert results, "no answer"
    status, headers, payload = results[0]
    assert status == 503
    assert headers["retry-after"] == "5" and headers["connection"] == "close"
    assert orjson.loads(payload) == {"error": "unavailable"}
    assert 1.0 <= took < 3.0
    assert not await redis.keys("arq:job:*")
