"""Many concurrent calls of one Lua script sent in one round trip (ScriptBatcher)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import NoScriptError

from relay.redis import ReplicaAck


class ScriptBatcher:
    """Runs one Lua script for many concurrent callers in one round trip.

    Calls join one pipeline (`transaction=False`: each script is atomic on its own) sent by
    one task; each caller awaits its own script's answer, so a webhook is still answered only
    after its own store ran. Under load this is one socket write and read for dozens of calls
    instead of one each: redis-py's per-command cost, not Redis, bounds the ingress and half
    of a worker's Redis time (measured in docs/benchmarks.md). No library batches this way.

    Which calls join: every call made in the same event-loop turn; and, with `max_in_flight`,
    every call made while that many batches are on the wire, sent when one comes back. An
    idle batcher sends at once (no added latency); a busy one sends bigger batches. Worker
    jobs run out of step with each other, so only the second rule makes their batches grow
    (1.1 calls per batch without it, measured).
    """

    def __init__(
        self,
        redis: Any,
        source: str,
        replica: ReplicaAck | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self.redis = redis
        self.script = redis.register_script(source)
        self.replica = replica  # Sentinel: WAIT for a replica (relay.redis.ReplicaAck)
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[list[Any], list[Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._in_flight = 0

    def __call__(self, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, future))
        self._start()
        return future

    def _full(self) -> bool:
        return self.max_in_flight is not None and self._in_flight >= self.max_in_flight

    def _start(self) -> None:
        """A task that sends what is pending when it first runs (the next loop turn), so
        every call of this turn joins it; none while one is about to start or all are busy."""
        if self._scheduled or self._full() or not self._pending:
            return
        self._scheduled = True
        self._in_flight += 1
        task = asyncio.ensure_future(self._send_pending())
        task.add_done_callback(self._sent)
        _BACKGROUND.add(task)  # keep a reference: the loop holds tasks only weakly

    async def _send_pending(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        await self._run(batch)

    def _sent(self, task: asyncio.Task[None]) -> None:
        _BACKGROUND.discard(task)
        self._in_flight -= 1
        self._start()  # what queued up meanwhile

    async def _run(self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute(batch)
        except Exception as exc:  # noqa: BLE001 - every caller gets the error (-> 503)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller gave up (timeout): its script may still have run
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(
        self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]
    ) -> list[Any]:
        for _ in range(2):
            required = self.replica is not None and self.replica.required()
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys, args, _ in batch:
                    pipe.evalsha(self.script.sha, len(keys), *keys, *args)
                if self.replica is not None:
                    pipe.execute_command("WAIT", 1, self.replica.wait_ms(required))
                results: list[Any] = await pipe.execute(raise_on_error=False)
            if self.replica is not None:
                self.replica.check(results.pop(), required)  # else every caller gets a 503
            if not any(isinstance(r, NoScriptError) for r in results):
                return results
            await self.redis.script_load(self.script.script)  # a restarted Redis forgot it
        return results


_BACKGROUND: set[asyncio.Task[None]] = set()
