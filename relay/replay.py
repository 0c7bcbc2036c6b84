"""Delivering logged events again (SPEC 9 `relay replay`): to the named sinks, else to the
sinks routing picks now. Also how a sink added later is backfilled.

Each delivery carries the original event (same `webhook-id`), so a receiver drops what it has.
Its attempts count from 1 in a new replay round, and the log keeps the earlier rounds. A
replayed delivery takes over the (event, sink) state, so a retry of it still queued stops
itself (relay.delivery's owner rule), and its dead letter, if any, is removed: it is no longer
dead. `plan` is read only (and is what `--dry-run` prints); `run` writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay import clock
from relay.attempt import state_ttl_s
from relay.config.model import RelayConfig
from relay.dlq import delivery_letter_id
from relay.events import dumps
from relay.keys import Keys, delivery_job_id, log_state_field
from relay.ledger import query
from relay.ledger.record import WRITE
from relay.logs import get_logger
from relay.queue import DELIVER, add_job
from relay.routing import route

log = get_logger("relay.replay")

BATCH = 100  # deliveries queued per MULTI


@dataclass(frozen=True)
class Planned:
    event_id: str
    sink: str
    replay: int  # the round this replay starts (1 for the first replay)
    state: str  # the delivery's logged state before the replay ("none": never routed there)
    event: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "sink": self.sink,
            "replay": self.replay,
            "state": self.state,
            "type": self.event.get("type"),
            "source": self.event.get("source"),
        }


@dataclass(frozen=True)
class Plan:
    deliveries: list[Planned]
    not_found: list[str]

    def to_json(self, *, dry_run: bool, queued: int = 0) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "events": len({p.event_id for p in self.deliveries}),
            "deliveries": [p.to_json() for p in self.deliveries],
            "queued": queued,
            "not_found": self.not_found,
        }


async def plan(
    redis: Any,
    config: RelayConfig,
    *,
    ids: list[str] | None = None,
    flt: query.EventFilter | None = None,
    sinks: list[str] | None = None,
) -> Plan:
    """What a replay would send: by ids (`evt_` or `in_`), else every event `flt` matches
    (its `limit` ignored, its `sink` filter choosing events, not targets). With no sinks named
    and a state filter, only the deliveries in that state are sent again."""
    keys = Keys(config.key_prefix)
    for name in sinks or []:
        if name not in config.sinks:
            raise query.BadQuery(f"unknown sink {name!r} (not in the config)")
    records, not_found = await _select(redis, keys, ids, flt)
    planned: list[Planned] = []
    sink_configs = dict(config.sinks)
    for record in records:
        states = {d["sink"]: d for d in record["deliveries"]}
        targets = sinks or route(sink_configs, record["type"], record["source"])
        if not sinks and flt is not None and flt.state:
            # `--state failed` with no sink named: resend where it failed, not to the sinks
            # that already have it (Discord and Slack cannot drop a duplicate).
            targets = [s for s in targets if s in states and states[s]["state"] == flt.state]
        for sink in targets:
            delivery = states.get(sink)
            rounds = [a["replay"] for a in delivery["attempts"]] if delivery else []
            planned.append(
                Planned(
                    event_id=record["id"],
                    sink=sink,
                    replay=max([0, *rounds]) + 1,
                    state=delivery["state"] if delivery else "none",
                    event=record["event"],
                )
            )
    return Plan(planned, not_found)


async def _select(
    redis: Any, keys: Keys, ids: list[str] | None, flt: query.EventFilter | None
) -> tuple[list[dict[str, Any]], list[str]]:
    if ids:
        records: list[dict[str, Any]] = []
        missing: list[str] = []
        for ident in ids:
            found = await query.show(redis, keys, ident)
            if found is None:
                missing.append(ident)
            else:
                records.extend(found.get("events", [found]))
        return list({r["id"]: r for r in records}.values()), missing
    if flt is None:
        raise query.BadQuery("name event ids or give a filter (--since, --source, ...)")
    return [record async for record in query.scan(redis, keys, flt)], []


async def run(
    redis: Any,
    config: RelayConfig,
    planned: list[Planned],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Queue every planned delivery; returns how many were queued. `progress` is called with
    the running count after each batch."""
    keys = Keys(config.key_prefix)
    ttl = state_ttl_s(config)
    queued = 0
    for start in range(0, len(planned), BATCH):
        batch = planned[start : start + BATCH]
        now = clock.now()
        async with redis.pipeline(transaction=True) as pipe:
            for item in batch:
                _queue(pipe, keys, item, now, ttl)
            await pipe.execute()
        queued += len(batch)
        for item in batch:
            log.info("delivery replayed", event_id=item.event_id, sink=item.sink, round=item.replay)
        if progress is not None:
            progress(queued)
    return queued


def _queue(pipe: Any, keys: Keys, item: Planned, now: float, ttl: int) -> None:
    job_id = delivery_job_id(item.event_id, item.sink, 1, f"p{item.replay}")
    kwargs = {
        "event": dumps(item.event),
        "sink": item.sink,
        "attempt": 1,
        "waits": 0,
        # Latency is measured from the replay, not from a receipt days ago.
        "received_at": now,
        "replay": item.replay,
    }
    add_job(pipe, keys, job_id, DELIVER, kwargs)
    pipe.hset(keys.deliveries(item.event_id), item.sink, f"job:{job_id}")
    pipe.expire(keys.deliveries(item.event_id), ttl)
    letter = delivery_letter_id(item.event_id, item.sink)
    pipe.hdel(keys.dlq, letter)
    pipe.zrem(keys.dlq_index, letter)
    pipe.eval(WRITE, 1, keys.log_event(item.event_id), log_state_field(item.sink), "pending")
