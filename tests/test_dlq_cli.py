"""`relay dlq list | replay | purge` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from relay.config.model import validate
from relay.dlq import DeadLetter, DeadLetterQueue
from relay.events import PaymentEvent
from relay.keys import Keys
from tests.conftest import REPO
from tests.processes import write_config


def relay(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay.cli", "dlq", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=60,
                          check=False)


async def seed(redis: Any, count: int, sink: str) -> list[str]:
    dlq = DeadLetterQueue(redis, Keys())
    ids = []
    async with redis.pipeline(transaction=True) as pipe:
        for i in range(count):
            event = PaymentEvent.build(source="ivpay", provider="ivpay", dedupe_key=f"{sink}{i}",
                                       type="payment.paid", provider_event="PAID",
                                       received_at=time.time())
            letter = DeadLetter(id=f"{event.id}:{sink}", kind="delivery", source="ivpay",
                                failed_at=time.time() + i, reason="HTTP 404", attempts=1,
                                sink=sink, event_id=event.id, event_type=event.type,
                                last_status=404, excerpt="gone", event=event.to_json())
            dlq.add(pipe, letter)
            ids.append(letter.id)
        await pipe.execute()
    return ids


async def test_list_replay_purge(tmp_path: Path, redis: Any, redis_url: str) -> None:
    """List shows entries; replay by id and by sink queues deliveries; purge --all empties it."""
    raw = {"redis_url": redis_url,
           "sinks": {"a": {"type": "log"}, "b": {"type": "log"}}}
    validate(raw)
    config = write_config(tmp_path, raw)
    a_ids = await seed(redis, 3, "a")
    await seed(redis, 2, "b")

    listed = relay(config, "list")
    assert listed.returncode == 0, listed.stderr
    assert "5 dead letter(s)" in listed.stdout and a_ids[0] in listed.stdout
    as_json = relay(config, "list", "--json", "--sink", "b")
    assert as_json.returncode == 0 and as_json.stdout.count('"sink": "b"') == 2

    one = relay(config, "replay", a_ids[0])
    assert one.returncode == 0 and "replayed 1" in one.stdout
    assert await redis.zcard("relay:queue") == 1
    by_sink = relay(config, "replay", "--sink", "a")
    assert "replayed 2" in by_sink.stdout
    assert await redis.zcard("relay:queue") == 3

    nothing = relay(config, "purge")
    assert nothing.returncode == 2 and "give IDs" in nothing.stderr
    unknown = relay(config, "replay", "evt_nope:a")
    assert unknown.returncode == 1 and "no dead letter with id evt_nope:a" in unknown.stderr
    purged = relay(config, "purge", "--all")
    assert "purged 2" in purged.stdout
    assert relay(config, "list").stdout.strip() == "dead-letter queue is empty"
