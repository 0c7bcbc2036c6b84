"""The arq job functions and the worker's lifetime hooks. Thin: the work is in relay.delivery.

arq drops a job for good when it raises anything but `Retry`, so each job function turns every
failure into a dead letter (the data is kept) or, for Redis trouble, into `Retry` (run again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from typing import Any

import aiohttp
import orjson
from arq import Retry
from redis.exceptions import RedisError

from relay.alerts_send import Evaluator
from relay.attempt import Attempt
from relay.clock import CLOCK
from relay.config.model import LoadedConfig
from relay.delivery import Pipeline
from relay.events import StoredEvent
from relay.keys import WORKER_TTL_S, Keys
from relay.logs import get_logger
from relay.pause import resume_expired
from relay.providers import build_sources
from relay.queue import job_to_request
from relay.reconcile import Reconciler, event_from_json
from relay.sinks import SINKS
from relay.sinks.client import SinkClient

log = get_logger("relay.worker")

REDIS_RETRY_S = 2  # a job that met a Redis error, or its own deadline, runs again this soon


def _again(seconds: float = REDIS_RETRY_S) -> Retry:
    """Arq's `Retry`, which keeps the job queued; arq adds `defer` to the host clock, so the
    delay is corrected to land `seconds` after Redis's now (relay.clock)."""
    return Retry(defer=CLOCK.host_defer(seconds))


async def process_inbound(
    ctx: dict[str, Any], inbound: dict[str, Any], inbound_id: str | None = None
) -> None:
    # A replayed dead letter runs under a new job id but is still the same inbound request.
    inbound_id = inbound_id or ctx["job_id"]
    pipeline: Pipeline = ctx["pipeline"]
    request = job_to_request(inbound)
    deadline = asyncio.timeout(ctx["deadline_s"])
    try:
        async with deadline:
            await pipeline.process_inbound(inbound_id, request, ctx["sources"].get(request.source))
    except (RedisError, OSError) as exc:  # OSError includes our own deadline's TimeoutError
        # arq deletes a job that outlives job_timeout or raises; this job owns a 2xx-answered
        # webhook, so it stops itself first and asks arq to run it again (nothing recorded as
        # done is redone: the delivery states say what is left).
        log.warning("job stopped, will run again", inbound_id=inbound_id, error=_why(exc, deadline))
        raise _again() from exc
    except Exception as exc:  # a bug must not make arq drop the request
        log.exception("inbound job failed", inbound_id=inbound_id)
        try:
            async with asyncio.timeout(ctx["deadline_s"]):
                await pipeline.dead_inbound(inbound_id, request, f"internal error: {exc!r}"[:300])
        except Exception:  # noqa: BLE001 - Redis trouble: keep the job, run it again
            raise _again() from exc


async def deliver(
    ctx: dict[str, Any],
    event: bytes,
    sink: str,
    attempt: int,
    waits: int,
    received_at: float,
    replay: int = 0,
) -> None:
    pipeline: Pipeline = ctx["pipeline"]
    deadline = asyncio.timeout(ctx["deadline_s"])
    try:
        async with deadline:
            await pipeline.run_job(
                ctx["job_id"],
                Attempt(StoredEvent(event), sink, attempt, waits, received_at, replay),
            )
    except (RedisError, OSError) as exc:  # OSError includes our own deadline's TimeoutError
        # As in process_inbound: stop before arq's job_timeout would delete the job.
        log.warning("job stopped, will run again", sink=sink, error=_why(exc, deadline))
        raise _again() from exc
    except Exception as exc:  # a bug must not make arq drop the delivery
        log.exception("deliver job failed", sink=sink, attempt=attempt)
        raise _again(60) from exc


async def reconciled(ctx: dict[str, Any], event: bytes, seen_seq: int, received_at: float) -> None:
    """A stage found by reconciliation (relay.reconcile): the normal path, with the job id as
    its inbound id; the claim drops it when the payment moved on since it was found."""
    pipeline: Pipeline = ctx["pipeline"]
    deadline = asyncio.timeout(ctx["deadline_s"])
    try:
        async with deadline:
            await pipeline.handle_event(
                event_from_json(event), ctx["job_id"], received_at, seen_seq
            )
    except (RedisError, OSError) as exc:
        log.warning("job stopped, will run again", job_id=ctx["job_id"], error=_why(exc, deadline))
        raise _again() from exc
    except Exception:  # a bug: dropped; the scheduler finds the stage again at its next check
        log.exception("reconciled job failed", job_id=ctx["job_id"])


def _why(exc: BaseException, deadline: asyncio.Timeout) -> str:
    if deadline.expired():
        return "job deadline reached (Redis slow or unreachable)"
    return f"{type(exc).__name__}: {exc}"[:200]  # the log's last processor redacts URLs


def worker_id() -> str:
    # Heroku names dynos (worker.1); elsewhere host and pid tell processes apart.
    return os.environ.get("DYNO") or f"{socket.gethostname()}:{os.getpid()}"


async def heartbeat(ctx: dict[str, Any], worker: Any) -> None:
    """One beat of the per-process health record `relay status` reads (what the worker is
    doing, by Redis's clock); RelayWorker writes it every HEARTBEAT_S from arq's poll loop, so
    a worker whose loop is stuck stops beating."""
    keys: Keys = ctx["keys"]
    now = CLOCK.now()
    info = {
        "id": ctx["worker_id"],
        "pid": os.getpid(),
        "started_at": ctx["started_at"],
        "at": now,
        "running": sum(not t.done() for t in worker.tasks.values()),
        "complete": worker.jobs_complete,
        "retried": worker.jobs_retried,
        "failed": worker.jobs_failed,
    }
    # No except: a Redis error here is the poll loop's, as a failed claim is (run_worker).
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.set(keys.worker(ctx["worker_id"]), orjson.dumps(info), ex=WORKER_TTL_S)
        pipe.zadd(keys.workers, {ctx["worker_id"]: now})
        pipe.zremrangebyscore(keys.workers, "-inf", now - WORKER_TTL_S)
        await pipe.execute()
    # A `relay sinks pause --for` that has run out is resumed by whichever worker beats first
    # (resuming twice is harmless: the release re-scores the same held jobs).
    await resume_expired(ctx["redis"], keys, ctx["loaded"].config)


async def startup(ctx: dict[str, Any]) -> None:
    loaded: LoadedConfig = ctx["loaded"]
    config = loaded.config
    sinks = {name: SINKS[cfg.type](name, cfg) for name, cfg in config.sinks.items()}
    connector = aiohttp.TCPConnector(
        limit=max(100, config.worker.concurrency * 2), ttl_dns_cache=300
    )
    session = aiohttp.ClientSession(connector=connector, headers={"Connection": "keep-alive"})
    ctx["session"] = session  # provider API checks (relay.reconcile)
    ctx["sink_client"] = client = SinkClient()  # sink POSTs (relay.sinks.client)
    ctx["sources"] = build_sources(loaded)
    ctx["keys"] = Keys(config.key_prefix)
    ctx["pipeline"] = Pipeline(ctx["redis"], config, sinks, client)
    # Before the first claim: a worker started on a nearly full Redis must not log its first
    # batch of events into the headroom it needs to drain (relay.ledger.gate).
    await ctx["pipeline"].log_gate.refresh(ctx["redis"])
    await CLOCK.sync(ctx["redis"])  # before the first heartbeat; every poll tick refreshes it
    ctx["started_at"] = CLOCK.now()
    owner = f"{ctx['worker_id']}:{secrets.token_hex(4)}"  # unique even within one process
    reconciler = Reconciler(ctx["redis"], config, session, owner)
    if reconciler.settings:  # SPEC 11: only when some source has `reconcile:`
        ctx["reconciler"] = reconciler
        ctx["reconcile_task"] = asyncio.create_task(reconciler.run())
    # SPEC 12: one worker at a time evaluates the alert rules (a lease), in a task of its own.
    ctx["alerts"] = Evaluator(ctx["redis"], loaded, sinks, client, ctx["worker_id"]).start()
    log.info(
        "worker started",
        worker_id=ctx["worker_id"],
        sinks=sorted(sinks),
        sources=sorted(ctx["sources"]),
        concurrency=config.worker.concurrency,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    if "alerts" in ctx:
        await ctx["alerts"].stop()  # hands the alert lease on at once
    if "reconcile_task" in ctx:
        ctx["reconcile_task"].cancel()
        await asyncio.gather(ctx["reconcile_task"], return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):  # else the lease expires on its own
            await ctx["reconciler"].release()  # another worker takes over at its next tick
    try:
        keys: Keys = ctx["keys"]
        await ctx["redis"].delete(keys.worker(ctx["worker_id"]))
        await ctx["redis"].zrem(keys.workers, ctx["worker_id"])
    except (RedisError, OSError, KeyError):
        pass
    if "session" in ctx:
        await ctx["session"].close()
    if "sink_client" in ctx:
        await ctx["sink_client"].close()
    log.info("worker stopped", worker_id=ctx.get("worker_id"))
