"""relay.redis_pack: hiredis packs exactly the bytes redis-py would, on a real Redis too."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from relay.redis import connect
from relay.redis_pack import FastConnection

SAMPLES: list[tuple[object, ...]] = [
    ("SET", "k", "v"),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", b"x"),
    ("EVALSHA", b"abc", 2, 1.5, 0.1, 1e20, -3, 2**63, "é", b"\x00\xff\r\n"),
    ("ZADD", "q", 1733.123456789, "x"),
    ("SET", "k", memoryview(b"abc")),
    ("SET", "big", "x" * 100_000),
]


@pytest.mark.parametrize("args", SAMPLES)
def test_same_bytes_as_redis_py(args: tuple[object, ...]) -> None:
    ours = b"".join(FastConnection().pack_command(*args))
    theirs = b"".join(Connection().pack_command(*args))
    assert ours == theirs


@pytest.mark.parametrize("bad", [None, True, object()])
def test_what_redis_py_refuses_is_refused_the_same_way(bad: object) -> None:
    with pytest.raises(DataError):
        FastConnection().pack_command("SET", "k", bad)


async def test_clients_use_it_against_a_real_redis(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        assert client.connection_pool.connection_class is FastConnection
        await client.set("pack:k", "é" * 3)
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset("pack:h", mapping={"a": 1, "b": 2.5})
            pipe.hgetall("pack:h")
            _, got = await pipe.execute()
        assert got == {b"a": b"1", b"b": b"2.5"}
        assert await client.get("pack:k") == "é".encode() * 3
        assert (await client.config_get("maxmemory")).keys() == {"maxmemory"}
    finally:
        await client.delete("pack:k", "pack:h")
        await client.aclose()
