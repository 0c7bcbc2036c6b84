"""Redis Sentinel: a real primary, a replica and three Sentinels, all started here on free
ports; the relay's client follows a forced failover. (A failover under a full relay load is
not yet proven: see issue 16's note.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio

from relay.embedded import free_port, redis_server_binary
from relay.redis import connect, parse_sentinel_url
from tests.conftest import wait_for

pytestmark = pytest.mark.slow
SERVICE = "mymaster"


class Cluster:
    """One primary, one replica, three Sentinels (quorum 2), each a redis-server process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.primary, self.replica = free_port(), free_port()
        self.sentinels = [free_port() for _ in range(3)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def _run(self, *args: str) -> None:
        self.processes.append(
            subprocess.Popen(
                [redis_server_binary(), *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.directory,
            )
        )

    def start(self) -> Cluster:
        common = ("--save", "", "--appendonly", "no", "--bind", "127.0.0.1")
        self._run("--port", str(self.primary), *common)
        self._run(
            "--port", str(self.replica), *common, "--replicaof", "127.0.0.1", str(self.primary)
        )
        for port in self.sentinels:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
            )
            self._run(str(conf), "--sentinel")
        return self

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path).start()
    yield running
    running.stop()


async def _primary_port(sentinel_port: int) -> int:
    client = redis.asyncio.Redis(port=sentinel_port, socket_timeout=2)
    try:
        _host, port = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)
    finally:
        await client.aclose()


async def _ready(cluster: Cluster) -> bool:
    """The replica is in sync and every Sentinel knows it (so a failover can promote it)."""
    try:
        for port in cluster.sentinels:
            client = redis.asyncio.Redis(port=port, socket_timeout=2)
            try:
                replicas = await client.execute_command("SENTINEL", "REPLICAS", SERVICE)
            finally:
                await client.aclose()
            if not replicas:
                return False
    except (OSError, redis.RedisError):
        return False
    return True


def test_a_sentinel_url_is_parsed() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2?ssl=true")
    assert parsed.hosts == [("h1", 26379), ("h2", 26380)]
    assert (parsed.service, parsed.db, parsed.password, parsed.ssl) == ("mymaster", 2, "pw", True)
    with pytest.raises(ValueError, match="service"):
        parse_sentinel_url("redis+sentinel://h1:26379")
    with pytest.raises(ValueError, match="host:port"):
        parse_sentinel_url("redis+sentinel://h1/mymaster")


async def test_the_relay_client_follows_a_failover(cluster: Cluster) -> None:
    """The client every process uses (relay.redis.connect) finds the new primary through the
    Sentinels after a forced failover and keeps writing, with no restart."""
    await wait_for(lambda: _ready(cluster), timeout=30, interval=0.5)
    client = connect(cluster.url)
    try:
        script = client.register_script("redis.call('SET', KEYS[1], ARGV[1]) return 1")
        assert await script(keys=["relay:probe"], args=["before"]) == 1
        before = await _primary_port(cluster.sentinels[0])
        sentinel = redis.asyncio.Redis(port=cluster.sentinels[0], socket_timeout=5)
        await sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
        await sentinel.aclose()

        async def switched() -> bool:
            return await _primary_port(cluster.sentinels[0]) != before

        await wait_for(switched, timeout=30, interval=0.2)

        async def writes() -> bool:
            try:
                return bool(await script(keys=["relay:probe"], args=["after"]))
            except redis.RedisError:
                return False

        await wait_for(writes, timeout=30, interval=0.5)
        assert await client.get("relay:probe") == b"after"
        assert (await client.info("replication"))["role"] == "master"
    finally:
        await client.aclose()
