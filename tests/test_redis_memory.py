"""Redis's maxmemory-policy and memory (issue 8, items 2 and 3), on a dedicated real Redis.

The suite's shared Redis is left alone: these tests `CONFIG SET` maxmemory and the policy on
a redis-server of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from relay.embedded import EmbeddedRedis
from relay.ingress.app import create_app
from relay.monitor import take_snapshot
from relay.redis import connect
from relay.redis_memory import (
    EvictingRedis,
    MemoryState,
    check_eviction_policy,
    memory_message,
    parse_info,
    read_memory,
    shed_at_bytes,
)
from tests.conftest import TEST_SECRETS, make_config, wait_for
from tests.processes import RelayProcess, write_config

KEY = TEST_SECRETS["IVPAY_API_KEY"]
IVPAY = {"sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}}}
HOOK_HEADERS = {"X-API-KEY": KEY}
MIB = 1024 * 1024


def body(i: int, padding: int = 0) -> bytes:
    return orjson.dumps(
        {"payment_id": f"mem-{i}", "status": "PAID", "foreign_id": str(i), "note": "x" * padding}
    )


class Log:
    """Records what check_eviction_policy logs, as structlog's bound logger is called."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))

    def levels(self) -> list[str]:
        return [level for level, _, _ in self.lines]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-memory"), appendonly=False).start()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def mem_redis(own_redis: EmbeddedRedis) -> AsyncIterator[Any]:
    """A client on the dedicated Redis, flushed, back to noeviction and no maxmemory after."""
    client = connect(own_redis.url)
    await client.flushdb()
    yield client
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", 0)
    await client.flushdb()
    await client.aclose()


@pytest_asyncio.fixture
async def start_ingress(own_redis: EmbeddedRedis) -> AsyncIterator[Any]:
    clients: list[TestClient] = []

    async def start(raw: dict[str, Any]) -> TestClient:
        client = TestClient(TestServer(create_app(make_config({**IVPAY, **raw}, own_redis.url))))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def limit_memory(redis: Any, headroom_bytes: int) -> int:
    """Set maxmemory to what is used now plus `headroom_bytes`; return it."""
    used = (await read_memory(redis)).used_bytes
    assert used is not None
    limit = used + headroom_bytes
    await redis.config_set("maxmemory", limit)
    return limit


# --- reading and judging ------------------------------------------------------------------


def test_parse_info_subtracts_what_redis_does_not_count() -> None:
    state = parse_info(
        {
            "used_memory": 10_000,
            "mem_not_counted_for_evict": 1_000,
            "maxmemory": 20_000,
            "maxmemory_policy": "allkeys-lru",
        }
    )
    assert state == MemoryState(used_bytes=9_000, max_bytes=20_000, policy="allkeys-lru")
    assert state.evicting and state.fraction == 0.45
    assert parse_info({}) == MemoryState()  # nothing said: unknown, not "noeviction"


def test_shed_threshold() -> None:
    """Ratio of maxmemory, at least 4 MiB free, never below half."""
    assert shed_at_bytes(100 * MIB, 0.9) == 90 * MIB
    assert shed_at_bytes(20 * MIB, 0.9) == 16 * MIB
    assert shed_at_bytes(6 * MIB, 0.9) == 3 * MIB


def test_memory_message() -> None:
    state = MemoryState(used_bytes=90 * MIB - 1, max_bytes=100 * MIB, policy="noeviction")
    assert memory_message(state, 0.9) is None
    assert "90.0 MiB" in str(memory_message(MemoryState(90 * MIB, 100 * MIB, "noeviction"), 0.9))
    # What this process stored since the reading counts from a quarter into the headroom.
    assert memory_message(state, 0.9, extra_bytes=int(2.5 * MIB)) is None
    assert "holding back" in str(memory_message(state, 0.9, extra_bytes=int(2.5 * MIB) + 1))
    assert memory_message(MemoryState(10**9, 0, "noeviction"), 0.9) is None  # no maxmemory


async def test_read_memory_from_real_redis(mem_redis: Any) -> None:
    await mem_redis.config_set("maxmemory", 64 * 1024 * 1024)
    state = await read_memory(mem_redis)
    assert state.policy == "noeviction" and state.max_bytes == 64 * 1024 * 1024
    assert state.used_bytes and 0 < state.used_bytes < state.max_bytes


async def test_check_refuses_an_evicting_policy(mem_redis: Any) -> None:
    """allkeys-lru: EvictingRedis naming the policy and both fixes; allowed: a loud log."""
    await mem_redis.config_set("maxmemory-policy", "allkeys-lru")
    log = Log()
    with pytest.raises(EvictingRedis) as refused:
        await check_eviction_policy(mem_redis, allow=False, log=log)
    message = str(refused.value)
    assert refused.value.policy == "allkeys-lru"
    for text in (
        "'allkeys-lru'",
        "heroku redis:maxmemory --policy noeviction",
        "CONFIG SET maxmemory-policy noeviction",
        "redis.conf",
        "allow_redis_eviction",
    ):
        assert text in message, text
    await check_eviction_policy(mem_redis, allow=True, log=log)
    assert log.levels() == ["error"]
    await mem_redis.config_set("maxmemory-policy", "volatile-ttl")  # every relay key has a TTL
    with pytest.raises(EvictingRedis):
        await check_eviction_policy(mem_redis, allow=False, log=log)


async def test_check_passes_noeviction_and_warns_when_unreadable(
    mem_redis: Any, own_redis: EmbeddedRedis
) -> None:
    """noeviction: silent. INFO refused (an ACL user without it) or Redis down: a warning."""
    log = Log()
    await check_eviction_policy(mem_redis, allow=False, log=log)
    assert log.lines == []
    await mem_redis.execute_command("ACL", "SETUSER", "noinfo", "on", ">pw", "~*", "+@all", "-info")
    limited = connect(f"redis://noinfo:pw@127.0.0.1:{own_redis.port}/0")
    try:
        assert (await read_memory(limited)).policy is None
        await check_eviction_policy(limited, allow=False, log=log)
    finally:
        await limited.aclose()
        await mem_redis.execute_command("ACL", "DELUSER", "noinfo")
    down = connect("redis://127.0.0.1:1/0", retry=False, timeout=0.5)
    await check_eviction_policy(down, allow=False, log=log, timeout=2)
    await down.aclose()
    assert log.levels() == ["warning", "warning"]


# --- the ingress on an evicting Redis -----------------------------------------------------


async def test_ingress_refuses_to_start_on_allkeys_lru(mem_redis: Any, start_ingress: Any) -> None:
    await mem_redis.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(EvictingRedis, match="allkeys-lru"):
        await start_ingress({})


@pytest.mark.parametrize(
    ("command", "policy"), [("serve", "allkeys-lru"), ("worker", "volatile-lru")]
)
async def test_relay_exits_with_a_message(
    mem_redis: Any, own_redis: EmbeddedRedis, tmp_path: Path, command: str, policy: str
) -> None:
    """`relay serve` / `relay worker` on an evicting policy: exit 3 before taking any webhook
    or job, the policy and the fix on stderr, no traceback."""
    await mem_redis.config_set("maxmemory-policy", policy)
    config = write_config(tmp_path, IVPAY)
    process = RelayProcess(command, config, tmp_path, own_redis.url).start()
    code = await asyncio.to_thread(process.wait, 20)
    output = process.output()
    assert code == 3, output
    assert f"relay {command}: refusing to start" in output and f"'{policy}'" in output
    assert "heroku redis:maxmemory --policy noeviction" in output
    assert "Traceback" not in output and "worker started" not in output


async def test_allowed_eviction_runs_ready_with_a_warning(
    mem_redis: Any, start_ingress: Any
) -> None:
    """Allowed by config: it starts and stores, /readyz stays 200 (the operator chose this)
    with a `warning`, and status and metrics say degraded and why."""
    await mem_redis.config_set("maxmemory-policy", "allkeys-lru")
    client = await start_ingress({"allow_redis_eviction": True})
    assert (await client.post("/hooks/ivpay", data=body(1), headers=HOOK_HEADERS)).status == 200
    ready = await client.get("/readyz")
    answer = await ready.json()
    assert ready.status == 200 and answer["ok"] is True and "allkeys-lru" in answer["warning"]

    config = make_config({**IVPAY, "allow_redis_eviction": True}, "redis://unused")
    snapshot = await take_snapshot(mem_redis, config.config)
    assert snapshot.shedding is None
    (reason,) = snapshot.degraded_reasons
    assert "allkeys-lru" in reason and "heroku redis:maxmemory" in reason
    data = orjson.loads(snapshot.to_json())
    assert data["degraded"] is True and data["redis"]["policy"] == "allkeys-lru"

    found = metric_samples(await (await client.get("/metrics")).text())
    assert found[("relay_redis_eviction_safe", ())] == 0
    assert found[("relay_redis_maxmemory_policy", (("policy", "allkeys-lru"),))] == 1
    assert found[("relay_ingress_shedding", ())] == 0


async def test_policy_turning_evicting_at_runtime_sheds(mem_redis: Any, start_ingress: Any) -> None:
    """Started on noeviction, then someone sets allkeys-lru: the ingress stops storing (503)
    within about a second and /readyz names why; back to noeviction, it accepts again."""
    client = await start_ingress({})
    assert (await client.post("/hooks/ivpay", data=body(1), headers=HOOK_HEADERS)).status == 200
    await mem_redis.config_set("maxmemory-policy", "allkeys-lru")

    assert await wait_for(lambda: readyz_error(client), timeout=5) == "redis_evicts"
    shed = await client.post("/hooks/ivpay", data=body(2), headers=HOOK_HEADERS)
    assert shed.status == 503 and shed.headers["Retry-After"] == "5"
    await mem_redis.config_set("maxmemory-policy", "noeviction")
    await wait_for(lambda: readyz_ok(client), timeout=5)
    assert (await client.post("/hooks/ivpay", data=body(2), headers=HOOK_HEADERS)).status == 200


async def readyz_error(client: TestClient) -> str | None:
    response = await client.get("/readyz")
    return None if response.status == 200 else (await response.json())["error"]


async def readyz_ok(client: TestClient) -> bool:
    return (await client.get("/readyz")).status == 200


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# --- shedding near maxmemory --------------------------------------------------------------


async def test_sheds_near_maxmemory_without_a_round_trip_per_webhook(
    mem_redis: Any, start_ingress: Any
) -> None:
    """Noeviction with little room: the ingress answers 503 + Retry-After before Redis is full
    (the workers' headroom stays free), /readyz is 503 naming why, the 503s are counted in
    Redis, status and metrics; while shedding a webhook costs no Redis command."""
    limit = await limit_memory(mem_redis, 6 * MIB)  # sheds 4 MiB below: 2 MiB to fill
    client = await start_ingress({})
    answered: dict[int, int] = {}
    i = 0
    while True:  # until Redis itself reads over 90% (503s before that: the burst guard)
        response = await client.post("/hooks/ivpay", data=body(i, 2000), headers=HOOK_HEADERS)
        answered[response.status] = answered.get(response.status, 0) + 1
        i += 1
        assert i < 5000, answered
        if response.status == 503:
            assert response.headers["Retry-After"] == "5"
            if memory_message(await read_memory(mem_redis), 0.9):  # what Redis reads
                break
            await asyncio.sleep(0.05)
    assert set(answered) == {200, 503}, answered
    state = await read_memory(mem_redis)
    assert state.used_bytes is not None and state.used_bytes < limit  # never full
    await asyncio.sleep(1.5)  # the ingress's own next reading
    ready = await client.get("/readyz")
    assert ready.status == 503
    error = await ready.json()
    assert error["error"] == "redis_memory_high" and "maxmemory" in error["detail"]

    before = await command_calls(mem_redis)  # not CONFIG RESETSTAT: it frees memory itself
    for j in range(300):
        response = await client.post("/hooks/ivpay", data=body(10_000 + j), headers=HOOK_HEADERS)
        assert response.status == 503
    after = await command_calls(mem_redis)
    # The monitor's INFO and flush, a few per second, and ours; none of them per webhook.
    assert sum(after.values()) - sum(before.values()) < 60, (before, after)

    unavailable = answered[503] + 300
    await wait_for(
        lambda: _stat_equals(mem_redis, "relay:stats", "in:ivpay:unavailable", unavailable),
        timeout=5,
    )
    config = make_config(IVPAY, "redis://unused").config
    snapshot = await take_snapshot(mem_redis, config)
    assert snapshot.shedding is not None and snapshot.unavailable == unavailable
    assert any("shedding" in reason for reason in snapshot.degraded_reasons)
    found = metric_samples(await (await client.get("/metrics")).text())
    assert (
        found[("relay_inbound_total", (("outcome", "unavailable"), ("source", "ivpay")))]
        == unavailable
    )
    assert found[("relay_ingress_shedding", ())] == 1
    assert found[("relay_redis_memory_max_bytes", ())] == limit


async def command_calls(redis: Any) -> dict[str, int]:
    return {name: v["calls"] for name, v in (await redis.info("commandstats")).items()}


async def _stat_equals(redis: Any, key: str, field: str, value: int) -> bool:
    raw = await redis.hget(key, field)
    return raw is not None and int(raw) == value


async def test_a_refused_write_sheds_until_the_next_reading(mem_redis: Any) -> None:
    """Redis's own OOM refusal (a real one) makes the guard shed at once; its next reading
    gives the reason."""
    from relay.ingress.shedding import IngressGuard, is_out_of_memory
    from relay.keys import Keys

    guard = IngressGuard(mem_redis, Keys(), make_config(IVPAY).config, Log())
    await guard.refresh()
    assert guard.verdict() is None
    await mem_redis.config_set("maxmemory", 1)
    with pytest.raises(Exception) as refused:
        await mem_redis.set("one-more", "x")
    assert is_out_of_memory(refused.value)
    guard.out_of_memory()
    assert guard.verdict().code == "redis_out_of_memory"  # type: ignore[union-attr]
    await guard.refresh()
    assert guard.verdict().code == "redis_memory_high"  # type: ignore[union-attr]


async def test_unreachable_redis_503s_are_counted_once_it_answers(
    tmp_path: Path, start_ingress: Any
) -> None:
    """Redis down: 503 + Retry-After, counted in the process; added to the stats hash when
    Redis is back (a dedicated server, killed and restarted on the same port)."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    raw = {**IVPAY, "redis_url": server.url, "server": {"redis_timeout": "500ms"}}
    client = TestClient(TestServer(create_app(make_config(raw))))
    await client.start_server()
    try:
        server.kill()
        for i in range(7):
            response = await client.post("/hooks/ivpay", data=body(i), headers=HOOK_HEADERS)
            assert response.status == 503 and response.headers["Retry-After"] == "5"
        assert (await client.get("/readyz")).status == 503
        await asyncio.sleep(1.5)  # the monitor tries and fails: nothing is lost meanwhile
        server = EmbeddedRedis(tmp_path / "redis", port=server.port, appendonly=False).start()
        redis = connect(server.url)
        try:
            await wait_for(
                lambda: _stat_equals(redis, "relay:stats", "in:ivpay:unavailable", 7), timeout=10
            )
        finally:
            await redis.aclose()
    finally:
        await client.close()
        server.stop()


def test_shed_ratio_is_validated() -> None:
    from relay.config.model import ConfigError

    for bad in (0.2, 1.0, "lots"):
        with pytest.raises(ConfigError) as error:
            make_config({"server": {"shed_memory_ratio": bad}})
        assert error.value.errors[0][0] == "server.shed_memory_ratio"
    assert (
        make_config({"server": {"shed_memory_ratio": 0.8}}).config.server.shed_memory_ratio == 0.8
    )
    assert make_config({}).config.allow_redis_eviction is False


def test_the_log_pauses_below_the_shed_line_on_small_and_large_redis() -> None:
    from relay.ledger.gate import pause_at_bytes

    mib = 1024 * 1024
    # A small Redis: the shed line keeps 4 MiB free (7 MiB of 11), the log stops 1.1 MiB below.
    assert shed_at_bytes(11 * mib, 0.9) == 7 * mib
    assert pause_at_bytes(11 * mib, 0.9) == 7 * mib - int(1.1 * mib)
    # A large one: 90% sheds, 80% pauses the log.
    assert pause_at_bytes(1000 * mib, 0.9) == 800 * mib
