"""`relay dlq list | replay | purge` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from arq.constants import job_key_prefix

from relay.config.model import validate
from relay.dlq import DeadLetter, DeadLetterQueue
from relay.events import PaymentEvent
from relay.keys import Keys
from relay.providers import InboundRequest
from relay.queue import PROCESS_INBOUND, deserialize, request_to_job
from tests.conftest import REPO
from tests.processes import write_config


def relay(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "dlq", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,  # no terminal: a purge without --yes refuses
    )


async def seed(redis: Any, count: int, sink: str) -> list[str]:
    dlq = DeadLetterQueue(redis, Keys())
    ids = []
    async with redis.pipeline(transaction=True) as pipe:
        for i in range(count):
            event = PaymentEvent.build(
                source="ivpay",
                provider="ivpay",
                dedupe_key=f"{sink}{i}",
                type="payment.paid",
                provider_event="PAID",
                received_at=time.time(),
            )
            letter = DeadLetter(
                id=f"{event.id}:{sink}",
                kind="delivery",
                source="ivpay",
                failed_at=time.time() + i,
                reason="HTTP 404",
                attempts=1,
                sink=sink,
                event_id=event.id,
                event_type=event.type,
                last_status=404,
                excerpt="gone",
                event=event.to_json(),
            )
            dlq.add(pipe, letter)
            ids.append(letter.id)
        await pipe.execute()
    return ids


async def test_list_replay_purge(tmp_path: Path, redis: Any, redis_url: str) -> None:
    """List shows entries; replay by id and by sink queues deliveries; purge --all empties it."""
    raw = {"redis_url": redis_url, "sinks": {"a": {"type": "log"}, "b": {"type": "log"}}}
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
    assert unknown.stdout == ""  # no "replayed 0 ...: they are queued" beside it
    refused = relay(config, "purge", "--all")
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    dry = relay(config, "purge", "--all", "--dry-run", "--config", str(config))
    assert dry.returncode == 0 and "would purge 2 dead letter(s); nothing changed" in dry.stdout
    dry = relay(config, "replay", "--all", "--dry-run")
    assert dry.returncode == 0 and "would replay" in dry.stdout
    listed = json.loads(relay(config, "list", "--json").stdout)["dead_letters"]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", x["failed_at"])
        for x in listed
    )
    purged = relay(config, "purge", "--all", "--yes")
    assert "purged 2" in purged.stdout
    assert relay(config, "list").stdout.strip() == "dead-letter queue is empty"


async def test_inbound_dead_letter_list_and_replay(
    tmp_path: Path, redis: Any, redis_url: str
) -> None:
    """A raw request that could not be normalized is listed as such (target "normalize", kind
    "inbound"); replaying it queues the raw request again under its original inbound id."""
    config = write_config(tmp_path, {"redis_url": redis_url, "sinks": {"a": {"type": "log"}}})
    body = b'{"payment_id": "p1", "status": "PAID"}'
    request = InboundRequest(
        source="ivpay", body=body, headers={}, client_ip="203.0.113.9", received_at=time.time()
    )
    letter = DeadLetter(
        id="in_deadbeef",
        kind="inbound",
        source="ivpay",
        failed_at=time.time(),
        reason="normalize failed: ValueError: x",
        received_at=time.time(),
        inbound=request_to_job(request, ()),
    )
    async with redis.pipeline(transaction=True) as pipe:
        DeadLetterQueue(redis, Keys()).add(pipe, letter)
        await pipe.execute()

    listed = relay(config, "list")
    assert listed.returncode == 0, listed.stderr
    assert "in_deadbeef" in listed.stdout and "normalize" in listed.stdout
    (entry,) = json.loads(relay(config, "list", "--json").stdout)["dead_letters"]
    assert (entry["kind"], entry["source"], entry["sink"]) == ("inbound", "ivpay", None)

    replayed = relay(config, "replay", "in_deadbeef")
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout
    (job_id,) = [member.decode() for member in await redis.zrange("relay:queue", 0, -1)]
    assert job_id.startswith("in_deadbeef_replay_")
    job = deserialize(await redis.get(job_key_prefix + job_id))
    assert job["f"] == PROCESS_INBOUND
    assert job["k"]["inbound_id"] == "in_deadbeef" and job["k"]["inbound"]["body"] == body
    assert relay(config, "list").stdout.strip() == "dead-letter queue is empty"
