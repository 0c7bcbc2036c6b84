"""Reading the event log (SPEC 9): the one reader behind `relay events|payments`, `/api/` and
the console, so all three print the same JSON for the same question.

Records hold the event exactly as sent (amounts and `data` numbers keep their digits: write
them with `relay.events.dumps`). Times are RFC 3339 UTC.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson

from relay.config.types import parse_duration
from relay.events import loads, parse_iso, rfc3339
from relay.keys import (
    LOG_AT,
    LOG_EVENT,
    LOG_INBOUND,
    LOG_SEQUENCE,
    LOG_SOURCE,
    LOG_STALE,
    LOG_STATES,
    LOG_TYPE,
    Keys,
    parse_log_field,
)

PAGE = 200  # log entries read per round trip while scanning
MAX_LIMIT = 10_000
_EVENT_ID = re.compile(r"evt_[a-z2-7]{26}")


class BadQuery(ValueError):
    """A filter that cannot be understood: the CLI exits 2, the API answers 400."""


@dataclass(frozen=True)
class EventFilter:
    since: float | None = None  # Unix seconds
    until: float | None = None
    source: str | None = None
    type: str | None = None  # a glob: payment.*
    sink: str | None = None
    state: str | None = None  # one of LOG_STATES
    limit: int = 50

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in LOG_STATES:
            raise BadQuery(f"unknown state {self.state!r} (one of {', '.join(LOG_STATES)})")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise BadQuery("since is after until")

    def matches(self, record: dict[str, Any]) -> bool:
        if self.source and record["source"] != self.source:
            return False
        if self.type and not fnmatch.fnmatchcase(record["type"], self.type):
            return False
        states: dict[str, str] = record["deliveries"]
        if self.sink:
            if self.sink not in states:
                return False
            states = {self.sink: states[self.sink]}
        return self.state is None or self.state in states.values()


def parse_when(text: str, now: float) -> float:
    """`2h` (that long before `now`) or an RFC 3339 time -> Unix seconds; BadQuery otherwise."""
    text = text.strip()
    try:
        return now - parse_duration(text)
    except (ValueError, TypeError):
        pass
    try:
        moment = parse_iso(text)
    except ValueError:
        raise BadQuery(
            f"not a time: {text!r} (use a duration back from now, e.g. 2h, or RFC 3339)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# --- one event ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _time(ms: Any) -> str | None:
    return None if ms is None else rfc3339(int(ms) / 1000)


def _attempt(replay: int, raw: bytes) -> dict[str, Any]:
    number, at_ms, outcome, status, duration_ms, next_ms, answer, waits = orjson.loads(raw)
    entry = {
        "replay": replay,
        "number": number,
        "at": _time(at_ms),
        "outcome": outcome,
        "status": status,
        "duration_ms": duration_ms,
        "answer": answer,
        "next_attempt_at": _time(next_ms),
    }
    if outcome == "rate_limited":
        entry["waits"] = waits
    return entry


def _deliveries(fields: dict[str, bytes]) -> list[dict[str, Any]]:
    sinks: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        parsed = parse_log_field(name)
        if parsed is None:
            continue
        entry = sinks.setdefault(
            parsed.sink,
            {"sink": parsed.sink, "state": "pending", "attempts": [], "rate_limit_wait": None},
        )
        if parsed.kind == "st":
            entry["state"] = _text(value)
        elif parsed.kind == "a":
            entry["attempts"].append(_attempt(parsed.replay, value))
        else:
            wait = _attempt(parsed.replay, value)
            current = entry["rate_limit_wait"]
            if current is None or (current["replay"], current["at"]) < (wait["replay"], wait["at"]):
                entry["rate_limit_wait"] = wait
    for entry in sinks.values():
        entry["attempts"].sort(key=lambda a: (a["replay"], a["number"]))
    return [sinks[name] for name in sorted(sinks)]


def event_record(event_id: str, raw: dict[Any, Any]) -> dict[str, Any] | None:
    """The public JSON of one logged event (None when its log entry is gone or partial)."""
    fields = {_text(k): v for k, v in raw.items()}
    if LOG_EVENT not in fields:
        return None
    event = loads(fields[LOG_EVENT])
    payment = event.get("payment") or {}
    if LOG_SEQUENCE in fields:  # numbered when accepted, after the JSON was logged
        payment["sequence"] = int(fields[LOG_SEQUENCE])
        event["stale"] = fields.get(LOG_STALE) == b"1"
    return {
        "id": event_id,
        "type": _text(fields.get(LOG_TYPE, event.get("type", ""))),
        "source": _text(fields.get(LOG_SOURCE, event.get("source", ""))),
        "inbound_id": _text(fields.get(LOG_INBOUND, b"")) or None,
        "accepted_at": _time(fields.get(LOG_AT)),
        "sequence": payment.get("sequence"),
        "stale": bool(event.get("stale")),
        "payment": {
            key: payment.get(key)
            for key in (
                "id",
                "reference",
                "status",
                "amount",
                "amount_received",
                "currency",
                "tx_hash",
            )
        },
        "deliveries": _deliveries(fields),
        "event": event,
    }


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """One line of `relay events list`: the event without its body and attempts."""
    payment = record["payment"]
    return {
        "id": record["id"],
        "type": record["type"],
        "source": record["source"],
        "accepted_at": record["accepted_at"],
        "sequence": record["sequence"],
        "stale": record["stale"],
        "payment_id": payment["id"],
        "reference": payment["reference"],
        "amount": payment["amount"],
        "currency": payment["currency"],
        "deliveries": {d["sink"]: d["state"] for d in record["deliveries"]},
    }


async def get_events(redis: Any, keys: Keys, event_ids: list[str]) -> list[dict[str, Any]]:
    """The records of these events, in this order, skipping any no longer logged."""
    if not event_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hgetall(keys.log_event(event_id))
        hashes = await pipe.execute()
    records = (event_record(i, h) for i, h in zip(event_ids, hashes, strict=True) if h)
    return [r for r in records if r is not None]


async def show(redis: Any, keys: Keys, ident: str) -> dict[str, Any] | None:
    """`relay events show ID`: an `evt_` id's record, or for an `in_` id what that inbound
    request became ({"inbound_id", "events"}). None when nothing is logged under it."""
    ident = ident.strip()
    if ident.startswith("in_"):
        ids = sorted(_text(m) for m in await redis.smembers(keys.log_find(ident)))
        events = await get_events(redis, keys, ids)
        return {"inbound_id": ident, "events": events} if events else None
    if not _EVENT_ID.fullmatch(ident):
        return None
    found = await get_events(redis, keys, [ident])
    return found[0] if found else None


# --- many events ----------------------------------------------------------------------------


async def scan(redis: Any, keys: Keys, flt: EventFilter) -> AsyncIterator[dict[str, Any]]:
    """Every logged event matching `flt`, newest first (no limit: callers stop)."""
    high = "+inf" if flt.until is None else int(flt.until * 1000)
    low = "-inf" if flt.since is None else int(flt.since * 1000)
    offset = 0
    while True:
        ids = [
            _text(i)
            for i in await redis.zrevrangebyscore(keys.log_index, high, low, start=offset, num=PAGE)
        ]
        if not ids:
            return
        offset += len(ids)
        for record in await get_events(redis, keys, ids):
            if flt.matches(summary(record)):
                yield record


async def list_events(redis: Any, keys: Keys, flt: EventFilter) -> list[dict[str, Any]]:
    """`relay events list`: summaries, newest first, at most `flt.limit`."""
    found: list[dict[str, Any]] = []
    async for record in scan(redis, keys, flt):
        found.append(summary(record))
        if len(found) >= flt.limit:
            break
    return found


# --- payments -------------------------------------------------------------------------------


async def find_payments(
    redis: Any, keys: Keys, query: str, source: str | None = None
) -> list[dict[str, Any]]:
    """`relay payments show QUERY`: the timeline of every payment that QUERY names (a payment
    id, merchant reference, transaction hash, or an `evt_` / `in_` id), oldest event first."""
    query = query.strip()
    if not query:
        raise BadQuery("empty query")
    ids = {_text(m) for m in await redis.smembers(keys.log_find(query))}
    if _EVENT_ID.fullmatch(query):
        ids.add(query)
    payments: dict[tuple[str, str | None], list[str]] = {}
    for record in await get_events(redis, keys, sorted(ids)):
        if source and record["source"] != source:
            continue
        payments.setdefault((record["source"], record["payment"]["id"]), []).append(record["id"])
    timelines = [
        await _timeline(redis, keys, src, pid, found) for (src, pid), found in payments.items()
    ]
    return sorted(timelines, key=lambda t: (t["source"], t["payment_id"] or ""))


async def _timeline(
    redis: Any, keys: Keys, source: str, payment_id: str | None, found: list[str]
) -> dict[str, Any]:
    ordered = found
    if payment_id:
        listed = [_text(i) for i in await redis.lrange(keys.log_payment(source, payment_id), 0, -1)]
        ordered = list(dict.fromkeys(listed)) or found
    events = await get_events(redis, keys, ordered)
    current = [e for e in events if not e["stale"]]  # a stale status never moves it back
    latest = current[-1] if current else None
    return {
        "source": source,
        "payment_id": payment_id,
        "reference": next(
            (e["payment"]["reference"] for e in events if e["payment"]["reference"]), None
        ),
        "status": latest["payment"]["status"] if latest else None,
        "events": events,
    }
