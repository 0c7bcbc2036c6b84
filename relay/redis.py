"""Redis connections from `REDIS_URL`, including Heroku's `rediss://` with self-signed certs
and Redis Sentinel (`redis+sentinel://h1:26379,h2:26379,h3:26379/mymaster`).

arq's `RedisSettings.from_dsn` ignores URL options such as `ssl_cert_reqs` and keeps
`required`, which fails on Heroku Key-Value Store's self-signed certificate: we set it here.
For Sentinel, arq passes neither timeouts nor retries (python-arq/arq#235), so every client,
the worker's included, is built here with the same settings as for a plain URL, on redis-py's
`Sentinel.master_for`: after a failover its pool asks the Sentinels for the new primary, and
the retries below ride out the switch (redis-py docs, "Redis Sentinel").

Redis Cluster is not supported: arq's keys carry no hash tags, so a job, its lock and the
queue would land on different shards. Past one Redis, run separate relays (each its own Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.redis_pack import use_hiredis_packing


def _retry() -> Retry:
    # Ride out a Redis restart or a network blip (~13 s of backoff) instead of crashing. A
    # worker's job does not depend on this budget: it has its own deadline (workers/jobs.py).
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=10)


WORKER_SOCKET_TIMEOUT_S = 5.0  # a half-open connection fails a command after this, never hangs


def arq_settings(url: str) -> RedisSettings:
    """Arq's settings for `url`: TLS without cert checks for rediss://, retries on blips. (The
    worker hands arq its own pool (`connect_worker`); these only fill arq's settings field.)"""
    if url.startswith(SENTINEL_SCHEME):
        parsed = parse_sentinel_url(url)
        return RedisSettings(host=parsed.hosts, sentinel=True, sentinel_master=parsed.service)
    settings = RedisSettings.from_dsn(url)
    return dataclasses.replace(
        settings,
        ssl_cert_reqs="none",
        conn_timeout=5,
        conn_retries=30,
        conn_retry_delay=1,
        retry_on_timeout=True,
        retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
        retry=_retry(),
    )


def connect_worker(url: str) -> ArqRedis:
    """The worker's pool (handed to arq): socket timeouts, so a partition ends each command in
    `WORKER_SOCKET_TIMEOUT_S` and the client's retries take over."""
    return connect(url, timeout=WORKER_SOCKET_TIMEOUT_S)


def connect(url: str, *, timeout: float = 5.0, retry: bool = True, **extra: Any) -> ArqRedis:
    """A redis.asyncio client (an `ArqRedis`, so it can also enqueue arq jobs)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "health_check_interval": 30,
        **extra,
    }
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "none"
    if retry:
        options.update(retry=_retry(), retry_on_error=[RedisConnectionError, RedisTimeoutError])
    if url.startswith(SENTINEL_SCHEME):
        client = _sentinel_client(parse_sentinel_url(url), options)
    else:
        client = ArqRedis.from_url(url, **options)
    use_hiredis_packing(client)  # relay.redis_pack: a tenth of a worker's CPU
    return client


SENTINEL_SCHEME = "redis+sentinel://"


@dataclasses.dataclass(frozen=True)
class SentinelURL:
    hosts: list[tuple[str, int]]
    service: str
    db: int = 0
    password: str | None = None  # of the Redis servers (and of the Sentinels, unless given)
    username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def parse_sentinel_url(url: str) -> SentinelURL:
    """`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?ssl=true]
    [&sentinel_password=...]`. ValueError with what is wrong."""
    rest = url.removeprefix(SENTINEL_SCHEME)
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    auth, at, hosts_text = netloc.rpartition("@")
    username, _, password = auth.partition(":") if at else ("", "", "")
    hosts: list[tuple[str, int]] = []
    for item in hosts_text.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"not host:port in a Sentinel URL: {item.strip()!r}")
        hosts.append((host.strip("[]"), int(port)))
    service, _, db = path.partition("/")
    if not service:
        raise ValueError("a Sentinel URL names its service: redis+sentinel://h:26379/mymaster")
    params = dict(parse_qsl(query))
    return SentinelURL(
        hosts=hosts,
        service=unquote(service),
        db=int(db) if db.isdigit() else 0,
        password=unquote(password) or None,
        username=unquote(username) or None,
        sentinel_password=params.get("sentinel_password"),
        ssl=params.get("ssl", "").lower() in ("1", "true", "yes"),
    )


MASTER_RECHECK_S = 0.2  # how stale a pool's idea of the primary may get (one Sentinel query)
SENTINELS_ASKED_S = 1.0  # a Sentinel slower than this is left out of that check
_UNSETTLED = {"s_down", "o_down", "failover_in_progress"}  # a primary's flags in a failover


def _flags(state: dict[str, Any]) -> set[str]:
    flags = state.get("flags", "")
    return set(flags.split(",")) if isinstance(flags, str) else set(flags)


class FollowingPool(SentinelConnectionPool):
    """A Sentinel pool that stops using the old primary as soon as the Sentinels name a new one.

    redis-py asks the Sentinels only when it opens a connection, and drops a pooled one only on
    a ReadOnlyError. After `SENTINEL FAILOVER` the old primary stays a writable primary until
    the Sentinels convert it (~10 s, measured with Redis 7.0): every open connection kept
    writing there, and Redis discarded all of it when the old primary resynced as a replica
    (webhooks answered 200, then lost; a worker claiming and finishing jobs nobody else saw).
    Here the primary's address is re-read at most every MASTER_RECHECK_S, and a connection
    taken from the pool that points elsewhere is reconnected first."""

    _checked_at = 0.0
    _recheck: asyncio.Task[None] | None = None
    # What every Sentinel that answered said at the last check: the primary's address, and
    # whether none saw it down or failing over (None: no answer yet). See `settled`.
    _agreement: tuple[Any, bool] | None = None

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        now = time.monotonic()
        if (
            self.master_address is not None
            and now - self._checked_at >= MASTER_RECHECK_S
            and (self._recheck is None or self._recheck.done())
        ):
            self._checked_at = now
            # In the background: a Sentinel slow to answer must not delay this command.
            self._recheck = asyncio.ensure_future(self._read_primary())
        connection = await super().get_connection(command_name, *keys, **options)
        if connection.is_connected and (connection.host, connection.port) != self.master_address:
            try:  # an in-use connection to the old primary when the switch was seen
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection

    async def _read_primary(self) -> None:
        # On a change this drops the idle connections. No Sentinel answers: keep the primary we
        # know (its commands say if it is gone).
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await self.get_master_address()  # type: ignore[no-untyped-call]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SENTINELS_ASKED_S):
                await self._ask_every_sentinel()

    async def _ask_every_sentinel(self) -> None:
        sentinels = self.sentinel_manager.sentinels
        answers = await asyncio.gather(
            *(s.sentinel_master(self.service_name) for s in sentinels), return_exceptions=True
        )
        states = [a for a in answers if isinstance(a, dict)]
        if not states:
            return  # none answered: what we knew stands
        addresses = {(state.get("ip"), state.get("port")) for state in states}
        calm = not any(_UNSETTLED & _flags(state) for state in states)
        address = addresses.pop() if len(addresses) == 1 else None
        self._agreement = (address, calm)

    def settled(self) -> bool:
        """Every Sentinel that answered names our primary, and none sees it down or failing
        over. During a failover they disagree for a second or two (the others learn the new
        primary from the leader's hello messages), and meanwhile either primary may be the
        one Redis discards (relay.redis.ReplicaAck)."""
        if self._agreement is None:
            return True  # not asked yet (the first moments of a process)
        address, calm = self._agreement
        return calm and address == self.master_address

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if inuse_connections and self._recheck is not None:  # closing (Redis.aclose)
            self._recheck.cancel()
        await super().disconnect(inuse_connections)


class NotReplicated(RedisConnectionError):
    """A write no replica acknowledged, on a primary that had one: it may be on a primary
    being replaced (the ingress answers 503; the provider's retry finds the new one)."""


REPLICA_WAIT_MS = 250  # how long a store waits for a replica that was there
REPLICA_PROBE_MS = 10  # ... and for one that was not (answers whether one is back)
REPLICA_GRACE_S = 5.0  # a replica acked this recently on this primary: its ack is required


class ReplicaAck:
    """Whether a write must be acknowledged by a replica (`WAIT 1 ms`, sent in the write's
    own pipeline: no extra round trip) before the ingress answers 2xx. Sentinel only.

    During `SENTINEL FAILOVER` the replica is promoted ~0.5-1 s before the Sentinels name it:
    meanwhile clients still write to the old primary, and Redis drops those writes when it
    converts it to a replica (measured: ~1 s of 200-answered webhooks lost). Such a write is
    acked by no replica (the promoted one left), so it is answered 503 instead of 200 and the
    provider's retry lands on the new primary.

    Required while a replica acked on this same primary in the last REPLICA_GRACE_S, and
    whenever the Sentinels are not settled on this primary (`FollowingPool.settled`: they
    disagree, or see it down or failing over). The second rule covers what the grace misses:
    an old primary still taking writes after the grace ran out (the Sentinels convert it only
    when they next look, seconds later), and a new primary judged down before its replica
    synced (a second failover on a loaded machine). A primary that lost its replica for good
    while the Sentinels agree on it stores without (as it would without Sentinel)."""

    def __init__(self, client: Any) -> None:
        self.pool = client.connection_pool
        self._acked_at = -REPLICA_GRACE_S
        self._acked_on: Any = None

    def wait_ms(self, required: bool) -> int:
        return REPLICA_WAIT_MS if required else REPLICA_PROBE_MS

    def required(self) -> bool:
        recent = time.monotonic() - self._acked_at < REPLICA_GRACE_S
        return (recent and self._acked_on == self.pool.master_address) or not self.pool.settled()

    def check(self, replicas: Any, required: bool) -> None:
        """After a write's `WAIT`: NotReplicated if a required ack did not come."""
        if isinstance(replicas, int) and replicas >= 1:
            self._acked_at, self._acked_on = time.monotonic(), self.pool.master_address
        elif required:
            raise NotReplicated("no replica acknowledged the write")


def replica_ack(client: Any) -> ReplicaAck | None:
    return ReplicaAck(client) if isinstance(client.connection_pool, FollowingPool) else None


def _sentinel_client(parsed: SentinelURL, options: dict[str, Any]) -> ArqRedis:
    if parsed.ssl:
        options = {**options, "ssl": True, "ssl_cert_reqs": "none"}
    sentinel_options: dict[str, Any] = {
        key: options[key]
        for key in ("socket_connect_timeout", "socket_timeout", "ssl", "ssl_cert_reqs")
        if key in options
    }
    password = parsed.sentinel_password or parsed.password
    if password:
        sentinel_options["password"] = password
    sentinel = Sentinel(parsed.hosts, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: ArqRedis = sentinel.master_for(
        parsed.service,
        redis_class=ArqRedis,
        connection_pool_class=FollowingPool,
        db=parsed.db,
        password=parsed.password,
        username=parsed.username,
        **options,
    )
    return client
