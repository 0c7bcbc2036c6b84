"""arq's own no-op job rate, the baseline beside payrelay's worker.

    python -m bench.arq_noop --redis URL -n 5000

Enqueues N no-op jobs with `ArqRedis.enqueue_job` (50 at a time), then runs one arq Worker in
this process (burst mode: it stops when the queue is empty) with the settings payrelay's
worker uses (max_jobs 200, poll_delay 0.05, queue_read_limit 1000, keep_result 0, msgpack),
and prints one JSON line: enqueue rate and job rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import msgpack
from arq import Worker
from arq.connections import create_pool
from arq.worker import func

from relay.redis import arq_settings

QUEUE = "bench:noop"


async def noop(ctx: dict, i: int) -> None:  # type: ignore[type-arg]
    return None


def serialize(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def deserialize(blob: bytes) -> object:
    return msgpack.unpackb(blob, raw=False)


async def main(url: str, n: int, max_jobs: int, poll_delay: float) -> dict[str, float]:
    settings = arq_settings(url)
    pool = await create_pool(settings, job_serializer=serialize, default_queue_name=QUEUE)
    await pool.delete(QUEUE)
    started = time.perf_counter()
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with sem:
            await pool.enqueue_job("noop", i)

    await asyncio.gather(*(one(i) for i in range(n)))
    enqueue_s = time.perf_counter() - started
    worker = Worker(
        functions=[func(noop, name="noop", keep_result=0)],
        redis_settings=settings,
        queue_name=QUEUE,
        job_serializer=serialize,
        job_deserializer=deserialize,
        max_jobs=max_jobs,
        poll_delay=poll_delay,
        queue_read_limit=max(1000, max_jobs * 5),
        keep_result=0,
        burst=True,
        handle_signals=False,
        log_results=False,
    )
    started = time.perf_counter()
    await asyncio.wait_for(worker.async_run(), timeout=300)
    run_s = time.perf_counter() - started
    complete = worker.jobs_complete
    await worker.close()
    await pool.aclose()
    return {
        "jobs": n,
        "complete": complete,
        "enqueue_s": round(enqueue_s, 3),
        "enqueue_per_s": round(n / enqueue_s, 1),
        "run_s": round(run_s, 3),
        "jobs_per_s": round(complete / run_s, 1),
        "max_jobs": max_jobs,
        "poll_delay": poll_delay,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--max-jobs", type=int, default=200)
    parser.add_argument("--poll-delay", type=float, default=0.05)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.redis, args.n, args.max_jobs, args.poll_delay))))
