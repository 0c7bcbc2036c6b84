"""The operator's questions and commands (SPEC 9, 10), each as one function that returns the
final JSON: `relay <command> --json` prints it and `/api/` answers it, so the two are the
same for the same question. Arguments arrive as the user typed them (`since="2h"`); a bad
one raises `BadQuery` (the CLI exits 2, the API answers 400). Unknown ids raise `NotFound`
(exit 1, 404).

Rejected requests have their own module (relay.rejected), which follows the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from relay import pause, replay
from relay.config.model import RelayConfig
from relay.config.types import parse_duration
from relay.dlq import DeadLetter, DeadLetterQueue
from relay.events import loads, rfc3339
from relay.keys import Keys
from relay.ledger import query
from relay.ledger.query import BadQuery
from relay.monitor import take_snapshot

__all__ = ["BadQuery", "NotFound"]

MAX_PAUSE_S = 365 * 86400  # longer than a year is not "for a while": pause until resumed


class NotFound(LookupError):
    """Nothing is logged under that id (the message says what was looked for)."""


async def redis_now(redis: Any) -> float:
    seconds, micros = await redis.time()
    return int(seconds) + int(micros) / 1e6


async def event_filter(
    redis: Any,
    *,
    since: str | None = None,
    until: str | None = None,
    source: str | None = None,
    type: str | None = None,
    sink: str | None = None,
    state: str | None = None,
    limit: int | None = None,
) -> query.EventFilter:
    now = await redis_now(redis) if since or until else 0.0
    return query.EventFilter(
        since=_when(since, now) if since else None,
        until=_when(until, now) if until else None,
        source=source or None,
        type=type or None,
        sink=sink or None,
        state=state or None,
        limit=50 if limit is None else limit,
    )


def _when(text: str, now: float) -> float:
    moment = query.parse_when(text, now)
    if not math.isfinite(moment):  # a duration of 400 digits: no float, no Redis score holds it
        raise BadQuery(f"not a time: {text[:40]!r}… (too long ago)")
    return moment


# --- events and payments ----------------------------------------------------------------------


async def events_list(redis: Any, config: RelayConfig, flt: query.EventFilter) -> dict[str, Any]:
    events = await query.list_events(redis, Keys(config.key_prefix), flt)
    return {"events": events, "count": len(events), "limit": flt.limit}


async def event_show(redis: Any, config: RelayConfig, ident: str) -> dict[str, Any]:
    found = await query.show(redis, Keys(config.key_prefix), ident)
    if found is None:
        raise NotFound(f"no logged event or inbound request with id {ident!r}")
    return found


async def payments_show(
    redis: Any, config: RelayConfig, text: str, source: str | None = None
) -> dict[str, Any]:
    payments = await query.find_payments(redis, Keys(config.key_prefix), text, source)
    if not payments:
        raise NotFound(f"no logged payment matches {text!r}")
    return {"query": text, "payments": payments}


# --- replay -----------------------------------------------------------------------------------


async def replay_plan(
    redis: Any,
    config: RelayConfig,
    *,
    ids: list[str] | None = None,
    flt: query.EventFilter | None = None,
    sinks: list[str] | None = None,
) -> replay.Plan:
    if not ids and flt is None:
        raise BadQuery("give event ids, or filters such as --since 2h")
    return await replay.plan(redis, config, ids=ids, flt=flt, sinks=sinks)


async def replay_run(
    redis: Any,
    config: RelayConfig,
    plan: replay.Plan,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    queued = 0 if dry_run else await replay.run(redis, config, plan.deliveries, progress)
    return plan.to_json(dry_run=dry_run, queued=queued)


# --- sinks ------------------------------------------------------------------------------------


def _sink_state(sink: Any) -> str:
    if sink.paused:
        return "paused"
    if sink.gone:
        return "gone"
    return "active"


async def sinks_list(redis: Any, config: RelayConfig) -> dict[str, Any]:
    """`relay sinks`: every sink with its state (`active`, `paused`, `gone`) and counts."""
    snapshot = await take_snapshot(redis, config)
    return {
        "sinks": [
            {
                "name": s.name,
                "type": config.sinks[s.name].type if s.name in config.sinks else None,
                "configured": s.configured,
                "state": _sink_state(s),
                "paused_until": rfc3339(s.paused_until) if s.paused_until else None,
                "held": s.held,
                "delivered": s.delivered,
                "retrying": s.retrying_now,
                "failed": s.failed,
                "last_ok_at": rfc3339(s.last_ok_at) if s.last_ok_at else None,
                "last_error": s.last_error,
                "last_error_at": rfc3339(s.last_error_at) if s.last_error_at else None,
            }
            for s in snapshot.sinks
        ]
    }


def _known_sink(config: RelayConfig, name: str) -> None:
    if name not in config.sinks:
        known = ", ".join(sorted(config.sinks)) or "none"
        raise NotFound(f"no sink {name!r} in the config (sinks: {known})")


def _pause_json(state: pause.PauseState) -> dict[str, Any]:
    return {
        "sink": state.sink,
        "state": "paused" if state.paused else "active",
        "paused_until": rfc3339(state.until) if state.until else None,
        "held": state.held,
    }


async def sink_pause(
    redis: Any, config: RelayConfig, name: str, for_: str | None = None
) -> dict[str, Any]:
    _known_sink(config, name)
    seconds = None
    if for_:
        try:
            seconds = parse_duration(for_)
        except (ValueError, TypeError) as exc:
            raise BadQuery(str(exc)) from None
        if seconds <= 0:
            raise BadQuery("--for must be longer than 0")
        if seconds > MAX_PAUSE_S:
            raise BadQuery("--for must be at most 365d (or pause until resumed)")
    return _pause_json(await pause.pause(redis, Keys(config.key_prefix), name, seconds))


async def sink_resume(redis: Any, config: RelayConfig, name: str) -> dict[str, Any]:
    keys = Keys(config.key_prefix)
    if name not in config.sinks and not (await pause.state(redis, keys, name)).paused:
        _known_sink(config, name)
    released = await pause.resume(redis, keys, config, name)
    return {**_pause_json(await pause.state(redis, keys, name)), "released": released}


# --- dead letters and status ------------------------------------------------------------------


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    event = loads(letter.event) if letter.event else None
    payment = (event or {}).get("payment") or {}
    return {
        "id": letter.id,
        "kind": letter.kind,
        "source": letter.source,
        "sink": letter.sink,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "payment_id": payment.get("id"),
        "reference": payment.get("reference"),
        "attempts": letter.attempts,
        "last_status": letter.last_status,
        "reason": letter.reason,
        "excerpt": letter.excerpt,
        "failed_at": rfc3339(letter.failed_at),
        "event": event,
    }


def _dlq(redis: Any, config: RelayConfig) -> DeadLetterQueue:
    return DeadLetterQueue(redis, Keys(config.key_prefix), config.dlq.max_entries)


async def dead_letters(
    redis: Any, config: RelayConfig, *, sink: str | None = None, limit: int = 100
) -> dict[str, Any]:
    if not 1 <= limit <= query.MAX_LIMIT:
        raise BadQuery(f"limit must be between 1 and {query.MAX_LIMIT}")
    dlq = _dlq(redis, config)
    letters = await dlq.recent(limit=limit, sink=sink)
    return {"dead_letters": [letter_json(x) for x in letters], "total": await dlq.size()}


async def dead_letters_replay(
    redis: Any,
    config: RelayConfig,
    *,
    ids: list[str] | None = None,
    sink: str | None = None,
    everything: bool = False,
) -> dict[str, Any]:
    if not (ids or sink or everything):
        raise BadQuery("give dead-letter ids, a sink, or all")
    dlq = _dlq(redis, config)
    letters = await dlq.select(ids, sink, everything)
    missing = sorted(set(ids or []) - {x.id for x in letters})
    replayed = await dlq.replay(letters)
    return {"replayed": replayed, "ids": [x.id for x in letters], "not_found": missing}


async def status(redis: Any, config: RelayConfig) -> dict[str, Any]:
    """The figures of `relay status --json`."""
    return (await take_snapshot(redis, config)).to_dict()
