"""Build the arq Worker for the relay: the numbers here are arq's sharp edges, tuned.

- max_tries: arq counts SIGTERM cancels and SIGKILL recoveries as tries and drops the job
  after `max_tries` (default 5). Our jobs never retry by raising except for Redis trouble,
  so the budget only has to outlast restarts: make it effectively unlimited.
- job_timeout: a SIGKILLed worker's jobs stay locked job_timeout + 10 s. 25 s keeps recovery
  well under a minute; sink timeouts are validated to fit inside it.
- job_completion_wait: on SIGTERM stop taking jobs, let running ones finish for 20 s (Heroku
  SIGKILLs at 30 s), then cancel: cancelled jobs stay queued and run again.
- poll_delay / queue_read_limit: arq claims new jobs only at poll ticks; short ticks and a read
  limit above total concurrency avoid both latency and head-of-line starvation.
- keep_result=0: results would store every webhook body again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from arq import Worker
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import to_ms
from arq.worker import func
from redis.exceptions import RedisError

from relay.clock import CLOCK, LUA_NOW_MS
from relay.config.model import LoadedConfig
from relay.keys import HEARTBEAT_S, Keys
from relay.logs import get_logger
from relay.queue import DELIVER, PROCESS_INBOUND, deserialize, serialize
from relay.reconcile import RECONCILED_JOB
from relay.redact import redact_url
from relay.redis import arq_settings, connect, connect_worker
from relay.redis_memory import check_eviction_policy
from relay.script_batcher import ScriptBatcher
from workers.jobs import (
    deliver,
    heartbeat,
    process_inbound,
    reconciled,
    shutdown,
    startup,
    worker_id,
)
from workers.run_claimed import TRY_COUNT_TTL_S, Claimed, run_claimed

log = get_logger("relay.worker")

MAX_TRIES = 1_000_000
BEAT_ON_CHANGE_S = 0.2  # a changed running count is written this soon (else every 5 s)
JOB_DEADLINE_MARGIN_S = 2.0  # job functions stop this long before arq's job_timeout
SHUTDOWN_GRACE_S = 20
# Loop turns the jobs just claimed get before the poll loop's own Redis calls (heartbeat, the
# wait on the wake list): each job reaches its first round trip (the event claim) first, so the
# loop's calls overlap that wait instead of delaying it (~0.2 ms of latency at 100 events/s).
JOB_HEAD_START_TURNS = 3


# Claim the due jobs of one poll tick the way arq's start_jobs does (not locked by a worker,
# still queued, due), all in one round trip and by Redis's clock (relay.clock), instead of
# arq's ZRANGEBYSCORE by the host clock plus WATCH / EXISTS / ZSCORE / MULTI per job; and
# what arq's run_job reads first (the job, its try count incremented), so a job starts with no
# round trip of its own (workers/run_claimed.py).
# KEYS[1]: arq's queue. ARGV: how many to claim, how many due ids to look at, lock TTL (ms),
# arq's in-progress, job and retry key prefixes, the try count's TTL (s). The keys are built
# in the script (standalone Redis only). Returns {now_ms, id, score, job or false, try, ...}.
_CLAIM_DUE = (
    LUA_NOW_MS
    + """
local claimed = {now_ms}
local free = tonumber(ARGV[1])
if free <= 0 then return claimed end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
  local lock = ARGV[4] .. due[i]
  if redis.call('EXISTS', lock) == 0 then
    redis.call('PSETEX', lock, ARGV[3], '1')
    local tries = ARGV[6] .. due[i]
    claimed[#claimed + 1] = due[i]
    claimed[#claimed + 1] = due[i + 1]
    claimed[#claimed + 1] = redis.call('GET', ARGV[5] .. due[i])
    claimed[#claimed + 1] = redis.call('INCR', tries)
    redis.call('EXPIRE', tries, ARGV[7])
    if (#claimed - 1) / 4 >= free then break end
  end
end
return claimed
"""
)


# arq's finish_job as one script: the same writes as its MULTI (lock, retry count, job, abort
# and queue entries; a result only if kept; ZINCRBY for a deferred retry), in one command the
# client packs and parses once instead of six (a twentieth of a worker's CPU).
# KEYS: in-progress, retry, job, abort set, queue, result. ARGV: job id, keep the lock for
# (ms, '' to delete it), finish (1/0), result data ('' for none), result TTL (ms, '' for
# none), score increment ('' for none).
_FINISH_JOB = """
local gone = {}
if ARGV[2] == '' then gone[#gone + 1] = KEYS[1] else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] == '1' then
  if ARGV[4] ~= '' then
    if ARGV[5] == '' then redis.call('SET', KEYS[6], ARGV[4])
    else redis.call('SET', KEYS[6], ARGV[4], 'PX', ARGV[5]) end
  end
  gone[#gone + 1] = KEYS[2]
  gone[#gone + 1] = KEYS[3]
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
elseif ARGV[6] ~= '' then
  redis.call('ZINCRBY', KEYS[5], ARGV[6], ARGV[1])
end
if #gone > 0 then redis.call('DEL', unpack(gone)) end
return 1
"""


class RelayWorker(Worker):
    """arq's Worker with its claim and job start replaced: a poll tick reads and claims its
    due jobs in one script (`_CLAIM_DUE`) scored by Redis's clock, so a worker whose host clock
    is wrong still sees every due job, and claiming costs one round trip per tick instead of
    four per job plus one per job start; each job then runs in workers/run_claimed.py. The
    lock is arq's `arq:in-progress:<id>` key with arq's TTL and the try count arq's retry key,
    so stock arq workers could share the queue. Replaces `Worker._poll_iteration` and
    `run_job` (arq 0.26-0.28; burst mode, cron jobs and job aborts, which the relay does not
    use, are left out); tests/test_arq_contract.py pins the arq code this relies on."""

    # Wake on enqueue: arq's own loop sleeps `poll_delay` between ticks (it is built with 0
    # here); this loop waits that long at most, on the wake list (Keys.wake) that every store
    # of a job due now pushes to, so an idle worker starts a new job within a round trip.
    wake_key: str = ""
    tick_s: float = 0.05
    # Busy: the loop also wakes when this share of the slots has freed up, so a drained
    # backlog does not leave slots idle until the tick.
    refill_share: float = 0.1
    _slots_freed: asyncio.Event | None = None

    async def _poll_iteration(self) -> None:
        for job_id, job in list(self.tasks.items()):
            if job.done():
                del self.tasks[job_id]
                job.result()  # as arq does: an error in run_job ends the loop (run_worker)
        free = self.max_jobs - self.job_counter if self.allow_pick_jobs else 0
        claimed = await self._claim_due(free) if free > 0 else 0
        for _ in range(JOB_HEAD_START_TURNS if claimed else 0):
            await asyncio.sleep(0)
        await self.heart_beat()
        await self._wait_for_work(idle=free > 0 and claimed < free)
        # A cancel (SIGTERM, shutdown) that arrives while redis-py is inside a command can be
        # lost: the command returns normally and the task stays "cancelling" (measured with
        # redis-py 5.3 on Python 3.11: the loop then polls forever). Honour it here.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def record_health(self) -> None:
        """The relay's heartbeat (workers/jobs.py) in place of arq's health-check key, which
        nothing reads: one record per process, written every HEARTBEAT_S, and sooner (at most
        every BEAT_ON_CHANGE_S) when the number of running jobs changed, so `relay status`
        shows what runs now."""
        pipeline = self.ctx.get("pipeline")
        if pipeline is not None:  # at most once a second (relay.ledger.gate)
            await pipeline.log_gate.refresh(self.pool)
        now, running = time.monotonic(), len(self.tasks)
        since = now - getattr(self, "_last_beat", -HEARTBEAT_S)
        changed = running != getattr(self, "_last_running", None)
        if since < HEARTBEAT_S and not (changed and since >= BEAT_ON_CHANGE_S):
            return
        self._last_beat, self._last_running = now, running
        await heartbeat(self.ctx, self)

    async def _wait_for_work(self, *, idle: bool) -> None:
        """Until a wake token or the tick. Busy (no free slot, or a full batch claimed): only
        a short sleep, leaving the token to an idle worker."""
        if not idle:
            freed = self._slots_freed = self._slots_freed or asyncio.Event()
            freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick_s):
                    await freed.wait()
            return
        if not self.wake_key:
            await asyncio.sleep(self.tick_s)
            return
        # BLPOP takes a fractional timeout since Redis 6; redis-py's stub says int only.
        await self.pool.blpop([self.wake_key], timeout=self.tick_s)  # type: ignore[arg-type, misc]

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """The same writes as arq's finish_job, in one script (`_FINISH_JOB`)."""
        script = getattr(self, "_finish_script", None)
        if script is None:
            # Jobs that end in the same loop turn share one round trip.
            script = self._finish_script = ScriptBatcher(self.pool, _FINISH_JOB, max_in_flight=2)
        ttl = None if keep_result_forever else result_timeout_s
        await script(
            keys=[
                in_progress_key_prefix + job_id,
                retry_key_prefix + job_id,
                job_key_prefix + job_id,
                abort_jobs_ss,
                self.queue_name,
                result_key_prefix + job_id,
            ],
            args=[
                job_id,
                "" if keep_in_progress is None else to_ms(keep_in_progress),
                int(finish),
                result_data or "",
                "" if ttl is None else to_ms(ttl),
                incr_score or "",
            ],
        )

    def _job_ended(self, _task: asyncio.Task[Any]) -> None:
        freed = self._slots_freed
        free = self.max_jobs - self.job_counter
        if freed is not None and free >= max(1, self.max_jobs * self.refill_share):
            freed.set()

    async def _claim_due(self, free: int) -> int:
        script = getattr(self, "_claim_script", None)
        if script is None:
            script = self._claim_script = self.pool.register_script(_CLAIM_DUE)
        sent_at = time.time()
        reply = await script(
            keys=[self.queue_name],
            args=[
                free,
                self.queue_read_limit,
                int(self.in_progress_timeout_s * 1000),
                in_progress_key_prefix,
                job_key_prefix,
                retry_key_prefix,
                TRY_COUNT_TTL_S,
            ],
        )
        CLOCK.observe(int(reply[0]), sent_at, time.time())
        for i in range(1, len(reply), 4):
            job = Claimed(reply[i].decode(), int(float(reply[i + 1])), reply[i + 2], reply[i + 3])
            await self.sem.acquire()  # never blocks: at most `free` jobs were claimed
            self.job_counter += 1
            task = self.loop.create_task(run_claimed(self, job))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            task.add_done_callback(self._job_ended)
            self.tasks[job.job_id] = task
        return (len(reply) - 1) // 4


def build_worker(loaded: LoadedConfig, **overrides: Any) -> Worker:
    config = loaded.config
    keys = Keys(config.key_prefix)
    timeout = config.worker.job_timeout
    ident = worker_id()
    # The job functions' own deadline: arq deletes a job that outlives `job_timeout`, so each
    # job stops itself this much earlier and is rescheduled instead (workers/jobs.py).
    ctx = {"loaded": loaded, "worker_id": ident, "deadline_s": timeout - JOB_DEADLINE_MARGIN_S}
    options: dict[str, Any] = {
        "functions": [
            func(
                process_inbound,
                name=PROCESS_INBOUND,
                timeout=timeout,
                keep_result=0,
                max_tries=MAX_TRIES,
            ),
            func(deliver, name=DELIVER, timeout=timeout, keep_result=0, max_tries=MAX_TRIES),
            func(  # SPEC 11: an event relay.reconcile found
                reconciled, name=RECONCILED_JOB, timeout=timeout, keep_result=0, max_tries=MAX_TRIES
            ),
        ],
        "queue_name": keys.queue,
        "redis_settings": arq_settings(loaded.redis_url),
        # Our own pool: arq's passes no socket timeout, so a half-open connection would hang a
        # command (and the job waiting on it) until arq's timeout deletes the job.
        "redis_pool": connect_worker(loaded.redis_url),
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "max_jobs": config.worker.concurrency,
        "poll_delay": 0,  # RelayWorker waits instead, on the wake list (see wake_key)
        "queue_read_limit": max(1000, config.worker.concurrency * 5),
        "job_timeout": timeout,
        "keep_result": 0,
        "max_tries": MAX_TRIES,
        "job_completion_wait": SHUTDOWN_GRACE_S,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": ctx,
        "log_results": False,
    }
    tick_s = float(overrides.pop("poll_delay", config.worker.poll_delay))
    options.update(overrides)
    worker = RelayWorker(**options)
    worker.wake_key, worker.tick_s = keys.wake, tick_s
    worker.ctx["worker"] = worker
    return worker


async def _say_if_redis_is_away(url: str) -> None:
    """One log line at once when Redis does not answer at start (the client then retries for
    a while in silence, and the loop below for ever)."""
    probe = connect(url, timeout=1.0, retry=False)
    try:
        await probe.ping()
    except (RedisError, OSError):
        log.warning("waiting for Redis: it does not answer yet", redis=redact_url(url))
    finally:
        await probe.aclose()


async def run_worker(loaded: LoadedConfig) -> None:
    """Run a worker until SIGTERM/SIGINT, riding out Redis outages.

    Most Redis commands retry on their own (relay.redis), but arq's claim uses WATCH, which
    redis-py never retries, and arq lets that error end its poll loop: the process would exit.
    Instead, the worker is rebuilt after a backoff; jobs it had claimed run again (their
    in-progress keys expire), so nothing is lost.
    """
    await _say_if_redis_is_away(loaded.redis_url)
    # Once per process, not per rebuild: an evicting Redis would silently drop queued jobs.
    redis = connect_worker(loaded.redis_url)
    try:
        await check_eviction_policy(redis, loaded.config.allow_redis_eviction, log)
    finally:
        await redis.aclose()
    backoff = 1.0
    while True:
        worker = build_worker(loaded)  # inside the loop: arq binds its signal handlers to it
        try:
            await worker.async_run()
        except asyncio.CancelledError:  # SIGTERM / SIGINT: arq cancelled its main task
            return
        except (RedisError, OSError) as exc:
            log.warning(
                "redis unavailable: restarting the worker loop",
                error=repr(exc)[:200],
                retry_in_s=backoff,
            )
        else:
            return
        finally:
            try:
                await worker.close()
            except (RedisError, OSError, asyncio.CancelledError) as exc:
                log.warning("worker closed with errors", error=repr(exc)[:200])
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 15.0)
