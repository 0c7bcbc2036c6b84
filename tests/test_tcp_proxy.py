"""Self-test of tests/tcp_proxy.py against a real Redis: forward, freeze, thaw, cut, restore,
in the test's loop, for a child process, and on its own thread while the test blocks."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.tcp_proxy import TcpProxy

TIMEOUT_S = 0.5


def client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_forward_freeze_thaw(redis_url: str) -> None:
    async with TcpProxy.for_url(redis_url) as proxy:
        r = client(proxy.proxied_url(redis_url))
        try:
            assert await r.set("proxy:k", "v")
            assert await r.get("proxy:k") == b"v"
            assert proxy.connections == 1

            proxy.freeze()
            began = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await r.get("proxy:k")
            waited = time.monotonic() - began
            assert TIMEOUT_S * 0.9 <= waited < TIMEOUT_S + 1.0
            assert proxy.bytes_dropped > 0
            # New connections are accepted while frozen, and get nowhere either.
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"PING\r\n")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(100), 0.3)
            writer.close()

            proxy.thaw()
            assert await r.get("proxy:k") == b"v"  # redis-py reconnected after its timeout
            await r.delete("proxy:k")
        finally:
            await r.aclose()


async def test_freeze_closes_nothing_and_drops_what_was_sent(redis_url: str) -> None:
    async with TcpProxy.for_url(redis_url) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"PING\r\n")
        assert await asyncio.wait_for(reader.readline(), 2) == b"+PONG\r\n"
        proxy.freeze()
        writer.write(b"ECHO sent-while-frozen\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)
        assert not reader.at_eof() and proxy.connections == 1  # half-open: nothing closed
        proxy.thaw()
        writer.write(b"ECHO after-thaw\r\n")
        assert await asyncio.wait_for(reader.readline(), 2) == b"$10\r\n"
        assert await reader.readline() == b"after-thaw\r\n"  # the frozen command never arrived

        # A close during a freeze does not cross it: Redis keeps its side until the thaw.
        proxy.freeze()
        writer.close()
        await asyncio.sleep(0.3)
        assert proxy.connections == 1
        proxy.thaw()
        for _ in range(50):
            if proxy.connections == 0:
                break
            await asyncio.sleep(0.02)
        assert proxy.connections == 0


async def test_cut_and_restore(redis_url: str) -> None:
    async with TcpProxy.for_url(redis_url) as proxy:
        r = client(proxy.proxied_url(redis_url))
        try:
            assert await r.ping()
            proxy.cut()
            assert await refused(proxy.port)
            with pytest.raises(RedisConnectionError):
                await r.ping()
            assert proxy.connections == 0
            proxy.restore()
            assert await r.ping()
        finally:
            await r.aclose()


CHILD = """
import sys, time, redis
r = redis.Redis.from_url(sys.argv[1], socket_timeout=0.3, socket_connect_timeout=0.3)
while True:
    try:
        r.ping()
        print("ok", flush=True)
    except redis.exceptions.TimeoutError:
        print("timeout", flush=True)
    except redis.exceptions.ConnectionError:
        print("error", flush=True)
    time.sleep(0.05)
"""


async def test_child_process_client_through_proxy_in_this_loop(redis_url: str) -> None:
    async with TcpProxy.for_url(redis_url) as proxy:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            proxy.proxied_url(redis_url),
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        stdout = child.stdout

        async def expect(word: str) -> None:
            async def until() -> None:
                while (await stdout.readline()).strip() != word.encode():
                    pass

            await asyncio.wait_for(until(), 5)

        try:
            await expect("ok")
            proxy.freeze()
            await expect("timeout")
            proxy.thaw()
            await expect("ok")
            proxy.cut()
            await expect("error")
            proxy.restore()
            await expect("ok")
        finally:
            child.kill()
            await child.wait()


def test_in_thread_while_the_test_blocks(redis_url: str) -> None:
    with TcpProxy.for_url(redis_url).start_in_thread() as proxy:
        r = sync_redis.Redis.from_url(
            proxy.proxied_url(redis_url), socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        try:
            assert r.ping()  # a blocking client on this thread: the proxy's loop is elsewhere
            time.sleep(0.2)
            proxy.freeze()
            with pytest.raises(RedisTimeoutError):
                r.ping()
            proxy.thaw()
            assert r.ping()
            proxy.cut()
            with pytest.raises(RedisConnectionError):
                r.ping()
            proxy.restore()
            assert r.ping()
        finally:
            r.close()
    assert not (proxy._thread and proxy._thread.is_alive())


async def test_in_thread_from_a_coroutine(redis_url: str) -> None:
    """Controlled from the test's loop, served from the proxy's: freeze() is in effect when it
    returns."""
    proxy: Any = TcpProxy.for_url(redis_url).start_in_thread()
    r = client(proxy.proxied_url(redis_url))
    try:
        assert await r.ping()
        proxy.freeze()
        with pytest.raises(RedisTimeoutError):
            await r.ping()
        proxy.thaw()
        assert await r.ping()
    finally:
        await r.aclose()
        proxy.close()
