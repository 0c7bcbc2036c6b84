"""Run one job the poll script claimed, in place of arq's `Worker.run_job`.

arq's run_job opens with a MULTI of its own (GET the job, INCR and EXPIRE its try count): a
round trip per job between the claim and the work, a sixth of a job's latency at 100 events/s
(measured: 0.5-0.9 ms of 4-5 ms). RelayWorker's claim script does those three writes itself
and returns each job's data and try count, and this runs the job as run_job does for the
relay's jobs, with arq's own parts: `deserialize_job_raw`, the function table, `Retry` and
`finish_job` (RelayWorker's script). Left out, as the relay uses none of them: cron jobs,
aborts, kept results, on_job_start / on_job_end / after_job_end hooks and per-job log lines.
tests/test_arq_contract.py pins the arq code this mirrors.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from arq import Retry
from arq.constants import retry_key_prefix
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms

from relay.logs import get_logger

log = get_logger("relay.worker")

TRY_COUNT_TTL_S = 88400  # arq's own TTL for `arq:retry:<id>`


@dataclass(frozen=True)
class Claimed:
    """A job as the claim script returns it: its try count is already incremented."""

    job_id: str
    score: int
    blob: bytes | None  # None: the job's key expired before it ran
    job_try: int


async def run_claimed(worker: Any, job: Claimed) -> None:
    """Run `job` on `worker` (an arq Worker) and record the outcome with `finish_job`, as
    arq's run_job does: Retry -> stays queued (score moved by its defer); a cancel (SIGTERM)
    -> stays queued, run again; done, or failed for good -> removed."""
    job_id, job_try = job.job_id, job.job_try
    if job.blob is None:
        log.warning("job expired before it ran", job_id=job_id)
        await _drop(worker, job_id)
        return
    try:
        name, args, kwargs, enqueue_try, enqueue_ms = deserialize_job_raw(
            job.blob, deserializer=worker.job_deserializer
        )
    except SerializationError:
        log.exception("job could not be read", job_id=job_id)
        await _drop(worker, job_id)
        return
    function = worker.functions.get(name)
    if function is None:
        log.warning("job names no known function", job_id=job_id, function=name)
        await _drop(worker, job_id)
        return
    if enqueue_try and enqueue_try > job_try:  # as arq: a job enqueued with a try count
        job_try = enqueue_try
        await worker.pool.setex(retry_key_prefix + job_id, TRY_COUNT_TTL_S, str(job_try))
    max_tries = worker.max_tries if function.max_tries is None else function.max_tries
    if job_try > max_tries:
        log.warning("job dropped: too many tries", job_id=job_id, tries=max_tries)
        await _drop(worker, job_id)
        return
    ctx = {
        **worker.ctx,
        "job_id": job_id,
        "job_try": job_try,
        "enqueue_time": ms_to_datetime(enqueue_ms),
        "score": job.score,
    }
    timeout_s = worker.job_timeout_s if function.timeout_s is None else function.timeout_s
    finish, incr_score = True, None
    try:
        async with asyncio.timeout(timeout_s):
            await function.coroutine(ctx, *args, **kwargs)
    except Retry as exc:  # stays queued; arq's arithmetic, which relay.clock corrects for
        finish, incr_score = False, exc.defer_score
        if exc.defer_score:
            incr_score = exc.defer_score + (timestamp_ms() - job.score)
        worker.jobs_retried += 1
    except asyncio.CancelledError:  # SIGTERM after the grace: run again by whoever is next
        finish = False
        worker.jobs_retried += 1
    except Exception:  # a job function raised past its own handlers: dropped, as in arq
        log.exception("job failed", job_id=job_id, function=name)
        worker.jobs_failed += 1
    else:
        worker.jobs_complete += 1
    await asyncio.shield(worker.finish_job(job_id, finish, None, None, False, incr_score, None))


async def _drop(worker: Any, job_id: str) -> None:
    worker.jobs_failed += 1
    await asyncio.shield(worker.finish_job(job_id, True, None, None, False, None, None))
