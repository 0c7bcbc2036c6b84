"""The arq code the relay's worker relies on, pinned: an arq upgrade that changes any of it
fails here, so the upgrade gets a review of workers/settings.py and workers/jobs.py first.

What depends on what:
- `RelayWorker._poll_iteration` replaces arq's; it reuses `run_job` (claims the job it is
  given, runs it under `wait_for`, hands the outcome to `finish_job`), arq's semaphore and
  counter (`_release_sem_dec_counter_on_complete`), `heart_beat`, and `main`'s loop calling
  `_poll_iteration` every `poll_delay`.
- The job functions raise `Retry(defer=...)` and rely on `run_job` turning it into
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
}


def _digest(name: str) -> str:
    target = Retry if name == "Retry" else getattr(Worker, name.removeprefix("Worker."))
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
