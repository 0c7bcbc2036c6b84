"""The paths the delivery guarantee rests on, each made to happen for real: real Redis (the
suite's, or one started and stopped here), real HTTP sinks (tests/sink_servers.py), the real
ingress and worker or the job functions called with a context built as the worker builds it.

- a `deliver` job acts only on a delivery it still owns (Pipeline.run_job), also when arq runs
  a finished job again after a crash;
- a request whose normalization raises is dead-lettered with its raw bytes; replaying an
  inbound dead letter runs it through the normal path again;
- the job functions turn a Redis error or their own deadline into arq's `Retry` (the job stays
  queued), directly and through a real worker;
- the dead-letter queue's cap drops the oldest entries;
- `Retry-After` as an HTTP date defers the retry to that date;
- a sink's `sources:` filter.
"""

from __future__ import annotations

import asyncio
import email.utils
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import structlog
from arq import Retry
from arq.constants import job_key_prefix

from relay.config.model import LoadedConfig
from relay.dlq import DeadLetter, DeadLetterQueue
from relay.embedded import EmbeddedRedis
from relay.events import StoredEvent
from relay.keys import Keys
from relay.providers import InboundRequest
from relay.queue import job_to_request, request_to_job
from relay.redis import connect, connect_worker
from tests.conftest import REPO, TEST_SECRETS, make_config, wait_for, worker_idle
from tests.sink_servers import Reply, SinkServer, payment_event
from workers.jobs import REDIS_RETRY_S, deliver, process_inbound, startup

KEY = TEST_SECRETS["IVPAY_API_KEY"]
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"schedule": ["50ms", "50ms", "50ms"], "jitter": 0.1}
KEYS = Keys()
IVPAY = {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}
# A JSON number the ingress's check reads (orjson: 0.0) but that no Decimal can hold, so the
# provider's exact-decimal parse raises decimal.InvalidOperation in the worker. Should the
# ingress start rejecting it (a 400 would be better), the tests using it fail at `post` and
# need another input that makes normalization raise.
UNPARSABLE_NUMBER = b"1e-99999999999999999999"


def config(server: SinkServer, **extra: Any) -> dict[str, Any]:
    return {
        "sources": {"ivpay": IVPAY},
        "sinks": {
            "shop": {"type": "http", "url": server.url("/shop"), "secret": WHSEC, "retry": FAST}
        },
        **extra,
    }


def paid(payment_id: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"payment_id": payment_id, "status": "PAID", "foreign_id": "o-1"})
    return body[:-1] + (b', "fee": ' + extra + b"}" if extra else b"}")


async def post(client: Any, body: bytes, source: str = "ivpay") -> str:
    response = await client.post(f"/hooks/{source}", data=body, headers={"X-API-KEY": KEY})
    assert response.status == 200, await response.text()
    return str((await response.json())["id"])


def retry_in_s(exc: pytest.ExceptionInfo[Retry]) -> float:
    return (exc.value.defer_score or 0) / 1000


# --- a job context as the worker builds it -------------------------------------------------------

JobCtx = Callable[..., Awaitable[dict[str, Any]]]


@pytest_asyncio.fixture
async def job_ctx() -> AsyncIterator[JobCtx]:
    """`await job_ctx(loaded, deadline_s=..., redis=...)` -> the arq ctx a worker's job sees:
    what workers/settings.py build_worker puts in it, the worker's own pool as `redis` (arq's
    `ctx["redis"]`), then workers/jobs.py startup. Add `job_id` per call, as arq does."""
    made: list[dict[str, Any]] = []

    async def make(
        loaded: LoadedConfig,
        deadline_s: float = 23.0,
        redis: Any = None,
    ) -> dict[str, Any]:
        ctx = {
            "loaded": loaded,
            "worker_id": "crash-paths",
            "deadline_s": deadline_s,
            "redis": redis or connect_worker(loaded.redis_url),
        }
        await startup(ctx)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:  # not workers.jobs.shutdown: its Redis calls would wait out a stopped Redis
        await ctx["session"].close()
        await ctx["redis"].aclose()


def job(ctx: dict[str, Any], job_id: str) -> dict[str, Any]:
    return {**ctx, "job_id": job_id, "job_try": 1}


def inbound(body: bytes, source: str = "ivpay") -> dict[str, Any]:
    """The `inbound` argument of a process_inbound job, as the ingress stores it."""
    request = InboundRequest(
        source=source,
        body=body,
        headers={"x-api-key": KEY},
        client_ip="127.0.0.1",
        received_at=time.time(),
    )
    return request_to_job(request, ())


# --- run_job's ownership check -------------------------------------------------------------------


async def fill_dlq(redis: Any, dlq: DeadLetterQueue, prefix: str, count: int) -> None:
    """`count` delivery dead letters `<prefix>-000`..., oldest first, in one transaction."""
    async with redis.pipeline(transaction=True) as pipe:
        for i in range(count):
            dlq.add(
                pipe,
                DeadLetter(
                    id=f"{prefix}-{i:03d}",
                    kind="delivery",
                    source="ivpay",
                    failed_at=1_000_000 + i,
                    reason="HTTP 410",
                    sink="shop",
                ),
            )
        await pipe.execute()


@pytest.mark.parametrize("state", ["ok", "dlq", "job:dlv_someone_else"])
async def test_deliver_job_acts_only_on_a_delivery_it_owns(
    state: str, job_ctx: JobCtx, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """A `deliver` job whose (event, sink) is already delivered, dead-lettered or owned by
    another job sends nothing and changes nothing; the owning job sends and records."""
    ctx = await job_ctx(config_factory(config(sink_server)))
    event = payment_event(dedupe_key=f"owner-{state}")
    await redis.hset(KEYS.deliveries(event.id), "shop", state)
    with structlog.testing.capture_logs() as logs:
        await deliver(job(ctx, "dlv_mine"), event.json, "shop", 2, 0, time.time())
    assert sink_server.requests("/shop") == []
    assert await redis.hget(KEYS.deliveries(event.id), "shop") == state.encode()
    assert [e["state"] for e in logs if e["event"] == "delivery already handled"] == [state]
    assert await redis.zcard("relay:queue") == 0 and await redis.zcard("relay:dlq:index") == 0

    await redis.hset(KEYS.deliveries(event.id), "shop", "job:dlv_mine")
    await deliver(job(ctx, "dlv_mine"), event.json, "shop", 2, 0, time.time())
    (request,) = sink_server.requests("/shop")
    assert request.headers["webhook-id"] == event.id and request.status == 200
    assert await redis.hget(KEYS.deliveries(event.id), "shop") == b"ok"


async def test_a_finished_retry_job_run_again_sends_nothing(
    ingress: Any, run_worker: Any, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """A crash between a retry job's delivery and arq's record of the job's end makes arq run
    the job again. That re-run finds the delivery marked done and sends nothing."""
    sink_server.script("/shop", [503])
    raw = config(sink_server)
    raw["sinks"]["shop"]["retry"] = {"schedule": ["1s"], "jitter": 0}
    client = await ingress(raw)
    await post(client, paid("p-rerun"))
    worker = await run_worker(config_factory(raw))
    event_id = (await sink_server.wait_for_requests(1, "/shop"))[0].headers["webhook-id"]

    async def retry_job() -> str | None:
        state = await redis.hget(KEYS.deliveries(event_id), "shop")
        return state.decode().removeprefix("job:") if state and state != b"ok" else None

    job_id = await wait_for(retry_job)
    blob = await redis.get(job_key_prefix + job_id)  # the retry job, before it runs
    assert blob is not None
    await wait_for(lambda: worker_idle(worker, redis))
    assert len(sink_server.requests("/shop")) == 2
    assert await redis.hget(KEYS.deliveries(event_id), "shop") == b"ok"

    with structlog.testing.capture_logs() as logs:
        # What arq sees after such a crash: the job still queued, due, its lock gone.
        await redis.set(job_key_prefix + job_id, blob, px=60_000)
        await redis.zadd("relay:queue", {job_id: int(time.time() * 1000)})
        await wait_for(lambda: worker_idle(worker, redis))
    assert [e["event"] for e in logs if e.get("sink") == "shop"] == ["delivery already handled"]
    assert len(sink_server.requests("/shop")) == 2
    assert await redis.hget("relay:stats", "dlv:shop:delivered") == b"1"


# --- normalization raised: a dead letter, and replaying inbound dead letters ---------------------


async def test_request_whose_normalization_raises_is_dead_lettered(
    ingress: Any, run_worker: Any, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """A correctly signed webhook the provider module raises on: answered 200, then kept as an
    inbound dead letter with its exact bytes (never dropped by arq, never retried forever);
    replaying it while the provider still raises dead-letters it again under the same id."""
    raw = config(sink_server)
    client = await ingress(raw)
    body = paid("p-choke", UNPARSABLE_NUMBER)
    inbound_id = await post(client, body)
    with structlog.testing.capture_logs() as logs:
        worker = await run_worker(config_factory(raw))
        await wait_for(lambda: worker_idle(worker, redis))
    dlq = DeadLetterQueue(redis, KEYS)
    (letter,) = await dlq.recent()
    assert (letter.id, letter.kind, letter.source) == (inbound_id, "inbound", "ivpay")
    assert letter.reason.startswith("normalize failed: Rejected: body is not valid JSON")
    assert letter.inbound is not None and letter.inbound["body"] == body
    assert job_to_request(letter.inbound).body == body
    assert await redis.hget("relay:stats", "in:ivpay:dead_lettered") == b"1"
    assert "normalize failed" in [e["event"] for e in logs]
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 0, 0)
    assert sink_server.requests() == []

    assert await dlq.replay([letter]) == 1
    await wait_for(lambda: worker_idle(worker, redis))
    (again,) = await dlq.recent()
    assert (again.id, again.kind, again.inbound) == (inbound_id, "inbound", letter.inbound)
    assert await redis.hget("relay:stats", "in:ivpay:dead_lettered") == b"2"


async def test_replayed_inbound_dead_letter_is_delivered_once(
    ingress: Any, run_worker: Any, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """A request stored while the worker's config lacked its source is dead-lettered; after the
    source is added, replaying it delivers it once, as the same inbound request (its event is
    claimed by the original inbound id, so a later carrier of the same event is a duplicate)."""
    raw = config(sink_server)
    client = await ingress(raw)
    inbound_id = await post(client, paid("p-replay"))
    without_source = await run_worker(config_factory({**raw, "sources": {}}))
    await wait_for(lambda: worker_idle(without_source, redis))
    await run_worker.stop(without_source)
    dlq = DeadLetterQueue(redis, KEYS)
    (letter,) = await dlq.recent()
    assert (letter.id, letter.kind, letter.reason) == (
        inbound_id,
        "inbound",
        "source 'ivpay' is not configured",
    )

    worker = await run_worker(config_factory(raw))
    assert await dlq.replay([letter]) == 1
    assert await dlq.size() == 0
    (request,) = await sink_server.wait_for_requests(1, "/shop")
    event_id = request.headers["webhook-id"]
    await wait_for(lambda: worker_idle(worker, redis))
    assert await redis.get(KEYS.event_claim(event_id)) == inbound_id.encode()
    assert await redis.hget(KEYS.deliveries(event_id), "shop") == b"ok"

    # The provider sends the same payment again (other bytes): the same event, not re-sent.
    await post(client, paid("p-replay", b"0"))
    await wait_for(lambda: redis.hget("relay:stats", "evt:ivpay:duplicate"))
    await wait_for(lambda: worker_idle(worker, redis))
    assert len(sink_server.requests("/shop")) == 1 and await dlq.size() == 0


# --- the job functions' Retry paths --------------------------------------------------------------


@pytest.mark.parametrize("why", ["redis error", "deadline"])
async def test_job_functions_ask_arq_to_retry_when_redis_is_gone(
    why: str, tmp_path: Path, job_ctx: JobCtx, sink_server: SinkServer
) -> None:
    """With Redis stopped, both job functions raise arq's `Retry` (the job stays queued and
    runs again REDIS_RETRY_S later) instead of an error that would make arq drop it: at once
    on a Redis error, or at the job's own deadline while the worker pool's retries go on."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    try:
        loaded = make_config(config(sink_server), server.url)
        if why == "redis error":  # a client without retries: the first command fails
            ctx = await job_ctx(loaded, redis=connect(server.url, retry=False))
        else:  # the worker's own pool: retries with backoff for ~13 s, the deadline is first
            ctx = await job_ctx(loaded, deadline_s=0.5)
        event = payment_event(dedupe_key="redis-gone")
        await ctx["redis"].hset(KEYS.deliveries(event.id), "shop", "job:dlv_gone")
    finally:
        server.stop()
    started = time.monotonic()
    with pytest.raises(Retry) as inbound_retry:
        await process_inbound(job(ctx, "in_gone"), inbound(paid("p-gone")))
    with pytest.raises(Retry) as deliver_retry:
        await deliver(job(ctx, "dlv_gone"), event.json, "shop", 1, 0, time.time())
    assert time.monotonic() - started < 5
    for retry in (inbound_retry, deliver_retry):
        assert abs(retry_in_s(retry) - REDIS_RETRY_S) < 0.5
    assert sink_server.requests() == []  # the delivery state could not be read: nothing sent


async def test_job_deadline_with_a_hung_sink_asks_arq_to_retry(
    job_ctx: JobCtx, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """A sink that hangs past the job's own deadline: the job stops itself with `Retry` before
    arq's job_timeout would delete it, records nothing, and its re-run delivers once."""
    ctx = await job_ctx(config_factory(config(sink_server)), deadline_s=0.5)
    sink_server.script("/shop", [Reply.hang(30), Reply.hang(30)])
    with pytest.raises(Retry) as retry:
        await process_inbound(job(ctx, "in_hung"), inbound(paid("p-hung")))
    assert abs(retry_in_s(retry) - REDIS_RETRY_S) < 0.5
    (hung,) = sink_server.requests("/shop")
    event_id = hung.headers["webhook-id"]
    assert await redis.hgetall(KEYS.deliveries(event_id)) == {}  # still the inbound job's
    assert await redis.zcard("relay:queue") == 0 and await redis.zcard("relay:dlq:index") == 0

    await redis.hset(KEYS.deliveries(event_id), "shop", "job:dlv_hung")
    event = StoredEvent(hung.body)  # the merchant body is the canonical event JSON
    assert event.id == event_id
    with pytest.raises(Retry):
        await deliver(job(ctx, "dlv_hung"), event.json, "shop", 2, 0, time.time())
    assert await redis.hget(KEYS.deliveries(event_id), "shop") == b"job:dlv_hung"

    await process_inbound(job(ctx, "in_hung"), inbound(paid("p-hung")))  # arq's re-run
    assert await redis.hget(KEYS.deliveries(event_id), "shop") == b"job:dlv_hung"  # not its own
    await deliver(job(ctx, "dlv_hung"), event.json, "shop", 2, 0, time.time())
    assert await redis.hget(KEYS.deliveries(event_id), "shop") == b"ok"
    assert [r.status for r in sink_server.requests("/shop")] == [None, None, 200]


async def test_deliver_job_with_an_unreadable_event_is_kept(
    job_ctx: JobCtx, config_factory: Any, sink_server: SinkServer
) -> None:
    """A bug in a deliver job (here: event bytes that are not JSON) is not an error arq would
    drop the job for: the job asks to run again a minute later."""
    ctx = await job_ctx(config_factory(config(sink_server)))
    with pytest.raises(Retry) as retry:
        await deliver(job(ctx, "dlv_garbled"), b"{not json", "shop", 1, 0, time.time())
    assert abs(retry_in_s(retry) - 60) < 1
    assert sink_server.requests() == []


async def test_worker_reruns_a_job_that_reached_its_deadline(
    ingress: Any, run_worker: Any, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """Through a real worker (job deadline 0.5 s): a hung sink makes the inbound job stop with
    `Retry`; arq keeps it queued and runs it REDIS_RETRY_S later; then it is delivered once."""
    sink_server.script("/shop", [Reply.hang(30)])
    raw = config(sink_server)
    client = await ingress(raw)
    await post(client, paid("p-deadline"))
    loaded = config_factory(raw)
    worker = await run_worker(
        loaded, ctx={"loaded": loaded, "worker_id": "deadline-test", "deadline_s": 0.5}
    )
    await sink_server.wait_for_requests(2, "/shop", timeout=10)
    await wait_for(lambda: worker_idle(worker, redis))
    hung, delivered = sink_server.requests("/shop")
    assert (hung.status, delivered.status) == (None, 200)
    assert delivered.at - hung.at >= 0.5 + REDIS_RETRY_S - 0.3
    assert (worker.jobs_retried, worker.jobs_failed) == (1, 0)
    assert await redis.hget("relay:stats", "dlv:shop:delivered") == b"1"
    assert await redis.zcard("relay:dlq:index") == 0


# --- the DLQ cap ---------------------------------------------------------------------------------


async def test_dead_letter_queue_cap_drops_the_oldest(
    ingress: Any, run_worker: Any, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """At `dlq.max_entries`, new dead letters (delivery and inbound) push out the oldest ones,
    from the index and the entries alike, with an error log."""
    cap = 100
    dlq = DeadLetterQueue(redis, KEYS, cap)
    await fill_dlq(redis, dlq, "old", cap)
    sink_server.script("/shop", [Reply.error(410), Reply.error(410)])
    # One job at a time: concurrent trims over-drop (test_concurrent_trims_keep_the_cap).
    raw = config(sink_server, dlq={"max_entries": cap}, worker={"concurrency": 1})
    client = await ingress(raw)
    await post(client, paid("p-cap-1"))
    await post(client, paid("p-cap-2"))
    choked = await post(client, paid("p-cap-3", UNPARSABLE_NUMBER))
    with structlog.testing.capture_logs() as logs:
        worker = await run_worker(config_factory(raw))
        await wait_for(lambda: worker_idle(worker, redis))
    assert await dlq.size() == cap and await redis.hlen(KEYS.dlq) == cap
    letters = await dlq.recent(limit=cap)
    kept = {letter.id for letter in letters}
    assert {"old-000", "old-001", "old-002"}.isdisjoint(kept)
    assert {f"old-{i:03d}" for i in range(3, cap)} <= kept and choked in kept
    assert sorted(letter.kind for letter in letters[:3]) == ["delivery", "delivery", "inbound"]
    full = [e for e in logs if e["event"] == "dead-letter queue full: oldest entries dropped"]
    assert sum(e["dropped"] for e in full) == 3 and {e["cap"] for e in full} == {cap}


# --- Retry-After as an HTTP date -----------------------------------------------------------------


async def test_retry_after_http_date_defers_the_retry_to_that_date(
    ingress: Any, run_worker: Any, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """A 503 with `Retry-After: <HTTP date>` (a schedule of 50 ms): the retry job is scheduled
    for that date and the next attempt arrives no sooner."""
    due = int(time.time()) + 3
    date = email.utils.formatdate(due, usegmt=True)
    sink_server.script("/shop", [Reply.error(503, headers={"Retry-After": date})])
    raw = config(sink_server)
    client = await ingress(raw)
    await post(client, paid("p-date"))
    worker = await run_worker(config_factory(raw))
    (first,) = await sink_server.wait_for_requests(1, "/shop")
    event_id = first.headers["webhook-id"]

    async def retry_job() -> str | None:
        state = await redis.hget(KEYS.deliveries(event_id), "shop")
        return state.decode().removeprefix("job:") if state and state != b"ok" else None

    job_id = await wait_for(retry_job)
    score_s = await redis.zscore("relay:queue", job_id) / 1000
    assert due - 0.1 <= score_s <= due + 0.5  # the date, not the 50 ms schedule
    await sink_server.wait_for_requests(2, "/shop", timeout=10)
    await wait_for(lambda: worker_idle(worker, redis))
    second = sink_server.requests("/shop")[1]
    assert second.at >= due - 0.05 and second.status == 200
    assert await redis.hget(KEYS.deliveries(event_id), "shop") == b"ok"


# --- a sink's sources: filter --------------------------------------------------------------------


async def test_sink_sources_filter(
    ingress: Any, run_worker: Any, config_factory: Any, redis: Any, sink_server: SinkServer
) -> None:
    """A sink with `sources: [eu]` gets only the events of source `eu`; a sink without the key
    gets every source's."""
    raw = {
        "sources": {"ivpay": IVPAY, "eu": IVPAY},
        "sinks": {
            "all": {"type": "http", "url": sink_server.url("/all"), "secret": WHSEC},
            "eu-only": {
                "type": "http",
                "url": sink_server.url("/eu"),
                "secret": WHSEC,
                "sources": ["eu"],
            },
        },
    }
    client = await ingress(raw)
    await post(client, paid("p-us"), "ivpay")
    await post(client, paid("p-eu"), "eu")
    worker = await run_worker(config_factory(raw))
    await sink_server.wait_for_requests(2, "/all")
    await wait_for(lambda: worker_idle(worker, redis))
    everything = sorted(r.json()["source"] for r in sink_server.requests("/all"))
    assert everything == ["eu", "ivpay"]
    assert [r.json()["source"] for r in sink_server.requests("/eu")] == ["eu"]
    stats = await redis.hgetall("relay:stats")
    assert stats[b"dlv:all:delivered"] == b"2" and stats[b"dlv:eu-only:delivered"] == b"1"


# --- bugs found while writing these tests, fixed since ----------------------------------------


async def test_number_no_decimal_holds_is_a_400_at_the_door(ingress: Any, redis: Any) -> None:
    client = await ingress({"sources": {"ivpay": IVPAY}})
    response = await client.post(
        "/hooks/ivpay", data=paid("p-inf", b"1e99999999999999999999"), headers={"X-API-KEY": KEY}
    )
    assert response.status == 400
    assert await response.json() == {"error": "malformed"}


NORMALIZE_HUGE_CONFIRMATIONS = textwrap.dedent("""
    import signal
    from relay.config.model import validate
    from relay.providers import InboundRequest
    from relay.providers.cryptoix import CryptoixProvider
    source = validate({"sources": {"c": {"provider": "cryptoix", "secret": "x"}}}).config.sources["c"]
    body = b'{"event": "payment_received", "data": {"confirmation_count": 1E+1000000}}'
    signal.alarm(2)  # default action: the process ends, even inside one long C call
    (event,) = CryptoixProvider("c", source).normalize(
        InboundRequest(source="c", body=body, headers={}))
    signal.alarm(0)
    assert event.payment.confirmations is None
""")


def test_huge_confirmation_count_cannot_stall_the_worker() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NORMALIZE_HUGE_CONFIRMATIONS],
        cwd=REPO,
        check=False,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"normalize did not finish within 2 s: {done.stderr[-500:]}"


async def test_concurrent_trims_keep_the_cap(redis: Any) -> None:
    cap, extra = 100, 20
    dlq = DeadLetterQueue(redis, KEYS, cap)
    await fill_dlq(redis, dlq, "d", cap + extra)
    await asyncio.gather(*(redis.ping() for _ in range(extra)))  # one connection per trim
    dropped = await asyncio.gather(*(dlq.trim() for _ in range(extra)))
    assert (await dlq.size(), sum(dropped)) == (cap, extra)
