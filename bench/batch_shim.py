"""`relay` with the proposed ingress change "auto-batch the stores", as a prototype, without
touching relay/: InboundStore's Lua script call is replaced by one that queues the call and
flushes everything queued in the same event-loop turn as one pipeline (transaction=False).
Each request still gets its own script's answer before it is answered.

    python -m bench.batch_shim serve ...   (the same arguments as `relay`)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from redis.exceptions import NoScriptError

import relay.queue as queue


class BatchedScript:
    def __init__(self, redis: Any, source: str):
        self.redis = redis
        self.script = redis.register_script(source)
        self.pending: list[tuple[list[Any], list[Any], asyncio.Future[Any]]] = []

    def __call__(self, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.pending:
            loop.call_soon(self._flush)
        self.pending.append((keys, args, future))
        return future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        asyncio.ensure_future(self._run(batch))

    async def _run(self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]) -> None:
        for attempt in range(2):  # once more after loading the script (NOSCRIPT)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for keys, args, _ in batch:
                        pipe.evalsha(self.script.sha, len(keys), *keys, *args)
                    results = await pipe.execute(raise_on_error=False)
            except BaseException as exc:  # noqa: BLE001 - every waiter gets the error
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else
                                             RuntimeError(repr(exc)))
                return
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await self.redis.script_load(self.script.script)
                continue
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            return


_original_init = queue.InboundStore.__init__


def _init(self: Any, redis: Any, keys: Any, dedupe_window_s: float) -> None:
    _original_init(self, redis, keys, dedupe_window_s)
    self._script = BatchedScript(redis, queue._STORE)


queue.InboundStore.__init__ = _init  # type: ignore[method-assign]

from relay.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
