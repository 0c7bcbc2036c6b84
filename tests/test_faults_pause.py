"""A paused sink across SIGKILLed workers (SPEC 9): held, never lost, no attempt used up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from relay import pause
from relay.config.model import validate
from relay.keys import Keys
from relay.ledger import query
from tests.conftest import wait_for
from tests.processes import RelayProcess, write_config
from tests.test_faults import SINKS, expected_ids, post_all, received, relay_config

pytestmark = pytest.mark.slow
KEYS = Keys()
COUNT = 300


async def test_pause_holds_across_worker_kills_and_resume_releases_everything(
    tmp_path: Path, redis_url: str, redis: Any, sink_server: Any
) -> None:
    raw = relay_config(redis_url, sink_server, concurrency=30)
    config = write_config(tmp_path, raw)
    await pause.pause(redis, KEYS, "a")
    web = RelayProcess("serve", config, tmp_path, redis_url).start()
    await web.ready()
    worker = RelayProcess("worker", config, tmp_path, redis_url).start()
    await worker.ready()
    accepted: list[str] = []
    load = asyncio.create_task(post_all(web.url, COUNT, accepted))
    for threshold in (100, 350):  # requests the other two sinks accepted, out of 600
        await wait_for(lambda t=threshold: len(sink_server.requests()) >= t, timeout=60)
        worker.kill()  # SIGKILL while holding: its jobs run again job_timeout + 10 s later
        worker = RelayProcess("worker", config, tmp_path, redis_url).start()
    await load
    assert len(accepted) == COUNT
    want = expected_ids(COUNT)
    try:
        await wait_for(
            lambda: all(set(received(sink_server, s)) >= want for s in ("b", "c")),
            timeout=90,
            interval=0.5,
        )
        await wait_for(_all_held(redis), timeout=90, interval=0.5)  # none sent to "a"
        assert received(sink_server, "a") == {}
        loaded = validate(raw, env={"IVPAY_API_KEY": "x"})
        assert await pause.resume(redis, KEYS, loaded.config, "a") == COUNT
        await wait_for(lambda: set(received(sink_server, "a")) >= want, timeout=60, interval=0.5)
    finally:
        worker.stop()
        web.stop()
    missing = sum(len(want - set(received(sink_server, s))) for s in SINKS)
    assert missing == 0
    numbers = set()
    for event_id in want:
        record = await query.show(redis, KEYS, event_id)
        assert record is not None
        [a] = [d for d in record["deliveries"] if d["sink"] == "a"]
        numbers |= {attempt["number"] for attempt in a["attempts"]}
    assert numbers == {1}  # the pause used up no attempt
    print(f"\npaused across 2 SIGKILLs: {COUNT} held, released {COUNT}, missing={missing}")


def _all_held(redis: Any) -> Any:
    async def check() -> bool:
        return int(await redis.zcard(KEYS.held("a"))) == COUNT

    return check
