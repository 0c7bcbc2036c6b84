"""The arq code the relay's worker relies on, pinned: an arq upgrade that changes any of it
fails here, so the upgrade gets a review of workers/settings.py and workers/jobs.py first.

What depends on what:
- `RelayWorker._poll_iteration` replaces arq's; it uses arq's semaphore and counter
  (`_release_sem_dec_counter_on_complete`), `heart_beat`, and `main`'s loop calling
  `_poll_iteration` every `poll_delay`.
- workers/run_claimed.py replaces `run_job` for the jobs the claim script hands over (with
  their data and incremented try count): it mirrors run_job's outcomes, compared below on a
  real Redis against arq's own run_job (done, Retry, Retry with a defer, a raise, an unknown
  function, an expired job, too many tries), and uses `deserialize_job_raw`.
- The job functions raise `Retry(defer=...)` and rely on it turning into
  `ZINCRBY queue (host now + defer - score)` in `finish_job` (relay.clock corrects the defer).
- `RelayWorker.finish_job` replaces arq's MULTI with one script of the same writes: the
  test below runs both on a real Redis and compares what each leaves.
- `run_worker` relies on `close()` gathering running tasks before closing the pool.

When this fails: read the new arq code of the function named, check each point above, then
update the digest.
"""

from __future__ import annotations

import hashlib
import inspect

import arq
import pytest
from arq import Retry
from arq.jobs import deserialize_job_raw
from arq.worker import Worker, func

PINNED = {
    "Worker.main": "45ca1591c9717466",
    "Worker._poll_iteration": "f8d39d823a0a59f2",
    "Worker.run_job": "589a19059ff84ee7",
    "Worker.finish_job": "903f09c92830d3fd",
    "Worker._release_sem_dec_counter_on_complete": "0ed101482e942c33",
    "Worker.heart_beat": "2e9959bea66dc551",
    "Worker.close": "5bcc9cb356680829",
    "Retry": "d0bab8b0018e9431",
    "deserialize_job_raw": "f330dfaff8e2160f",
}


def _digest(name: str) -> str:
    targets = {"Retry": Retry, "deserialize_job_raw": deserialize_job_raw}
    target = targets.get(name) or getattr(Worker, name.removeprefix("Worker."))
    return hashlib.sha256(inspect.getsource(target).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_arq_code_the_worker_relies_on_is_unchanged(name: str) -> None:
    assert _digest(name) == PINNED[name], (
        f"arq {arq.VERSION} changed {name}: review workers/settings.py (RelayWorker) and "
        f"workers/jobs.py against it (see this module's docstring), then update the digest"
    )


FINISH_CASES = [
    # Arguments after the job id: finish, result data, result TTL s, keep forever, score
    # increment, keep the lock s.
    (True, None, None, False, None, None),  # the relay's case: done, no result kept
    (True, b"result", 60.0, False, None, None),
    (True, b"result", None, True, None, None),
    (False, None, None, False, 1500, None),  # Retry(defer=...): the score moves on
    (False, None, None, False, None, 2.5),  # keep the lock a while
]


@pytest.mark.parametrize("case", FINISH_CASES)
async def test_finish_job_script_writes_what_arq_writes(redis_url: str, case: tuple) -> None:
    """RelayWorker.finish_job (one script) leaves Redis exactly as arq's MULTI does."""
    from arq.constants import (
        abort_jobs_ss,
        in_progress_key_prefix,
        job_key_prefix,
        result_key_prefix,
        retry_key_prefix,
    )

    from relay.redis import connect
    from workers.settings import RelayWorker

    redis = connect(redis_url)
    queue = "contract:queue"

    async def after(finish_job: object) -> dict[str, object]:
        await redis.flushdb()
        await redis.psetex(in_progress_key_prefix + "j1", 60_000, "1")
        await redis.set(retry_key_prefix + "j1", 1)
        await redis.set(job_key_prefix + "j1", b"job")
        await redis.zadd(queue, {"j1": 1000})
        await redis.zadd(abort_jobs_ss, {"j1": 1})
        await finish_job("j1", *case)  # type: ignore[operator]
        state: dict[str, object] = {}
        for key in await redis.keys("*"):
            kind = (await redis.type(key)).decode()
            value = (
                await redis.zrange(key, 0, -1, withscores=True)
                if kind == "zset"
                else await redis.get(key)
            )
            ttl = await redis.pttl(key)
            state[key.decode()] = (value, ttl > 0, round(ttl, -3) if ttl > 0 else ttl)
        return state

    async def noop(ctx: dict[str, object]) -> None:
        return None

    worker = RelayWorker(
        functions=[func(noop, name="noop")],
        redis_pool=redis,
        queue_name=queue,
        handle_signals=False,
    )
    try:
        ours = await after(worker.finish_job)
        theirs = await after(lambda *a: Worker.finish_job(worker, *a))
        assert ours == theirs
        assert (result_key_prefix + "j1" in ours) == bool(case[1])
    finally:
        await redis.flushdb()
        await redis.aclose()


async def _explode(ctx: dict[str, object]) -> None:
    raise ValueError("boom")


async def _retry_now(ctx: dict[str, object]) -> None:
    raise Retry


async def _retry_later(ctx: dict[str, object]) -> None:
    raise Retry(defer=30)


async def _done(ctx: dict[str, object]) -> None:
    return None


# (function enqueued, try count before the run, whether the job key exists)
RUN_CASES = [
    ("done", 0, True),
    ("retry_now", 0, True),
    ("retry_later", 0, True),
    ("explode", 0, True),
    ("missing", 0, True),  # a function the worker does not know
    ("done", 0, False),  # the job's key expired before it ran
    ("done", 3, True),  # the 4th try with max_tries 3
]


@pytest.mark.parametrize("case", RUN_CASES)
async def test_run_claimed_leaves_what_run_job_leaves(redis_url: str, case: tuple) -> None:
    """workers/run_claimed.py and arq's run_job, each given the same claimed job, leave the
    same keys (the job, its try count, its lock, its queue entry and score) and counters."""
    from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
    from arq.jobs import serialize_job

    from relay.queue import deserialize, serialize
    from relay.redis import connect
    from workers.run_claimed import Claimed, run_claimed
    from workers.settings import RelayWorker

    function, tries_before, exists = case
    redis = connect(redis_url)
    queue = "contract:run"
    score = 1_000_000

    async def after(run: object) -> tuple[dict[str, object], tuple[int, int, int]]:
        await redis.flushdb()
        worker = RelayWorker(
            functions=[
                func(f, name=name)
                for name, f in (
                    ("done", _done),
                    ("retry_now", _retry_now),
                    ("retry_later", _retry_later),
                    ("explode", _explode),
                )
            ],
            redis_pool=redis,
            queue_name=queue,
            handle_signals=False,
            job_serializer=serialize,
            job_deserializer=deserialize,
            keep_result=0,
            max_tries=3,
        )
        blob = serialize_job(function, (), {}, None, score, serializer=serialize)
        if exists:
            await redis.set(job_key_prefix + "j1", blob)
        if tries_before:
            await redis.set(retry_key_prefix + "j1", tries_before)
        await redis.zadd(queue, {"j1": score})
        await redis.psetex(in_progress_key_prefix + "j1", 60_000, "1")
        await run(worker)  # type: ignore[operator]
        state: dict[str, object] = {}
        for key in sorted(await redis.keys("*")):
            kind = (await redis.type(key)).decode()
            if kind == "zset":
                entries = await redis.zrange(key, 0, -1, withscores=True)
                # A deferred retry's score counts from the host clock at the time: rounded.
                value: object = [(m, round(s, -4)) for m, s in entries]
            else:
                value = await redis.get(key)
            state[key.decode()] = (value, await redis.pttl(key) > 0)
        counts = (worker.jobs_complete, worker.jobs_retried, worker.jobs_failed)
        return state, counts

    async def theirs(worker: RelayWorker) -> None:
        await Worker.run_job(worker, "j1", score)

    async def ours(worker: RelayWorker) -> None:
        # What the claim script hands over: the job (or nothing) and its try count plus one.
        blob = await redis.get(job_key_prefix + "j1")
        job_try = await redis.incr(retry_key_prefix + "j1")
        await redis.expire(retry_key_prefix + "j1", 88400)
        await run_claimed(worker, Claimed("j1", score, blob, job_try))

    try:
        assert await after(ours) == await after(theirs)
    finally:
        await redis.flushdb()
        await redis.aclose()
