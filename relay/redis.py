"""Redis connections from `REDIS_URL`, including Heroku's `rediss://` with self-signed certs.

arq's `RedisSettings.from_dsn` ignores URL options such as `ssl_cert_reqs` and keeps
`required`, which fails on Heroku Key-Value Store's self-signed certificate: we set it here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def _retry() -> Retry:
    # Ride out a Redis restart or a network blip (~13 s of backoff) instead of crashing. A
    # worker's job does not depend on this budget: it has its own deadline (workers/jobs.py).
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=10)


WORKER_SOCKET_TIMEOUT_S = 5.0  # a half-open connection fails a command after this, never hangs


def arq_settings(url: str) -> RedisSettings:
    """Arq's settings for `url`: TLS without cert checks for rediss://, retries on blips."""
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
    client: ArqRedis = ArqRedis.from_url(url, **options)
    return client
