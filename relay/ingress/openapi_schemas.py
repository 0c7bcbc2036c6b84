"""The component schemas of the operator API's OpenAPI 3.1 document (relay.ingress.openapi),
with the few helpers that keep them short.

Response schemas require every field the relay always writes and allow more, so a figure
added later is no breaking change; request bodies allow no unknown field (the API answers 400
for one). Limits and enums are the code's own constants.
"""

from __future__ import annotations

from typing import Any

from relay.keys import LOG_STATES

MAX_IDS = 1000  # ids in one request body

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
NSTR: Schema = {"type": ["string", "null"]}
INT: Schema = {"type": "integer"}
NINT: Schema = {"type": ["integer", "null"]}
NUM: Schema = {"type": "number"}
NNUM: Schema = {"type": ["number", "null"]}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
NTIME: Schema = {"type": ["string", "null"], "format": "date-time"}
ANY_OBJ: Schema = {"type": "object"}
STATE: Schema = {"type": "string", "enum": list(LOG_STATES)}
STRINGS: Schema = {"type": "array", "items": STR}
COUNTS: Schema = {"type": "object", "additionalProperties": INT}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Schema], *optional: str) -> Schema:
    """An object that has every property but the `optional` ones (and may have more)."""
    return {
        "type": "object",
        "required": [p for p in props if p not in optional],
        "properties": props,
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def ids(what: str) -> Schema:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "minItems": 1,
        "maxItems": MAX_IDS,
        "description": what,
    }


def body(props: dict[str, Schema], *required: str) -> Schema:
    """A request body: a JSON object with only these fields (a null string or boolean is as
    absent; a list is never null)."""
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


# --- component schemas ------------------------------------------------------------------------

ATTEMPT = obj(
    {
        "replay": {**INT, "description": "0: the first delivery; n: the n-th replay"},
        "number": INT,
        "at": NTIME,
        "outcome": STR,
        "status": {**NINT, "description": "the sink's HTTP status"},
        "duration_ms": NNUM,
        "answer": {**NSTR, "description": "the first 512 bytes of the answer"},
        "next_attempt_at": NTIME,
        "waits": INT,
    },
    "waits",
)

AMOUNT: Schema = {"type": ["string", "number", "null"]}
PAYMENT_FIELDS = {
    "id": NSTR,
    "reference": NSTR,
    "status": NSTR,
    "amount": AMOUNT,
    "amount_received": AMOUNT,
    "currency": NSTR,
    "tx_hash": NSTR,
}
# SPEC 11's payment order: the event's number within its payment, and whether it came after a
# later status (stale). Optional: a record logged before these existed has neither.
ORDER = {
    "sequence": {**NINT, "description": "the event's number within its payment"},
    "stale": {**BOOL, "description": "it arrived after a later status of its payment"},
}

EVENT_RECORD = obj(
    {
        "id": STR,
        "type": STR,
        "source": STR,
        "inbound_id": NSTR,
        "accepted_at": NTIME,
        **ORDER,
        "payment": obj(PAYMENT_FIELDS, "amount_received"),
        "deliveries": array(
            obj(
                {
                    "sink": STR,
                    "state": STATE,
                    "attempts": array(ref("Attempt")),
                    "rate_limit_wait": {"anyOf": [ref("Attempt"), {"type": "null"}]},
                }
            )
        ),
        "event": {**ANY_OBJ, "description": "the canonical event exactly as sent to sinks"},
    },
    *ORDER,
)

INBOUND_EVENTS = {
    **obj({"inbound_id": STR, "events": array(ref("EventRecord"))}),
    "additionalProperties": False,
}

EVENT_SUMMARY = obj(
    {
        "id": STR,
        "type": STR,
        "source": STR,
        "accepted_at": NTIME,
        **ORDER,
        "payment_id": NSTR,
        "reference": NSTR,
        "amount": AMOUNT,
        "currency": NSTR,
        "deliveries": {"type": "object", "additionalProperties": STATE},
    },
    *ORDER,
)

SINK_INFO = obj(
    {
        "name": STR,
        "type": NSTR,
        "configured": BOOL,
        "state": {"type": "string", "enum": ["active", "paused", "gone"]},
        "paused_until": NTIME,
        "held": INT,
        "delivered": INT,
        "retrying": INT,
        "failed": INT,
        "last_ok_at": NTIME,
        "last_error": NSTR,
        "last_error_at": NTIME,
    }
)

PAUSE_STATE = obj(
    {
        "sink": STR,
        "state": {"type": "string", "enum": ["active", "paused"]},
        "paused_until": NTIME,
        "held": INT,
    }
)

DEAD_LETTER = obj(
    {
        "id": STR,
        "kind": {"type": "string", "enum": ["delivery", "inbound"]},
        "source": NSTR,
        "sink": NSTR,
        "event_id": NSTR,
        "event_type": NSTR,
        "payment_id": NSTR,
        "reference": NSTR,
        "attempts": INT,
        "last_status": NINT,
        "reason": NSTR,
        "excerpt": NSTR,
        "failed_at": NTIME,
        "event": {"type": ["object", "null"]},
    }
)

REJECTION = obj(
    {
        "id": STR,
        "source": STR,
        "received_at": NTIME,
        "status": INT,
        "error": STR,
        "reason": STR,
        "client_ip": NSTR,
        "method": STR,
        "path": STR,
        "body_bytes": INT,
        "body_kept": BOOL,
    }
)

REJECTION_DETAIL = {
    "allOf": [
        ref("Rejection"),
        obj(
            {
                "headers": {
                    "type": "object",
                    "additionalProperties": STR,
                    "description": "as received, signatures shortened; secret headers not kept",
                },
                "dropped_headers": STRINGS,
                "body": {**NSTR, "description": "the body as text (null: not kept, or binary)"},
                "body_base64": {**STR, "description": "a body that is not UTF-8"},
            },
            "body_base64",
        ),
    ]
}

REJECTION_REPLAYED = obj(
    {
        "id": STR,
        "result": {
            "type": "string",
            "enum": ["stored", "duplicate", "still_rejected", "cannot_verify", "not_found"],
        },
        "source": STR,
        "inbound_id": STR,
        "status": INT,
        "error": STR,
        "reason": STR,
    },
    "source",
    "inbound_id",
    "status",
    "error",
    "reason",
)

LATENCY = obj(
    {
        "buckets": COUNTS,
        "sum": NUM,
        "count": INT,
        "p50": {"type": ["number", "string", "null"]},
        "p95": {"type": ["number", "string", "null"]},
    }
)

STATUS = obj(
    {
        "taken_at": NUM,
        "prefix": STR,
        "queue": obj(
            {
                "waiting": INT,
                "scheduled": INT,
                "in_progress": INT,
                "held": INT,
                "oldest_waiting_age_s": NNUM,
            }
        ),
        "dlq_size": INT,
        "workers": array(
            obj(
                {
                    "id": STR,
                    "running": INT,
                    "started_at": NNUM,
                    "at": NNUM,
                    "complete": INT,
                    "retried": INT,
                    "failed": INT,
                }
            )
        ),
        "sources": {
            "type": "object",
            "additionalProperties": obj(
                {"configured": BOOL, "inbound": COUNTS, "events": COUNTS, "duplicates": INT}
            ),
        },
        "sinks": {
            "type": "object",
            "additionalProperties": obj(
                {
                    "configured": BOOL,
                    "delivered": INT,
                    "retry": INT,
                    "rate_limited": INT,
                    "failed": INT,
                    "retrying_now": INT,
                    "last_ok_at": NNUM,
                    "last_error": NSTR,
                    "last_error_at": NNUM,
                    "last_status": NINT,
                    "gone": BOOL,
                    "paused": BOOL,
                    "paused_until": NNUM,
                    "held": INT,
                    "healthy": BOOL,
                    "latency": LATENCY,
                }
            ),
        },
        "rejections": array(
            obj(
                {
                    "at": NUM,
                    "source": STR,
                    "status": INT,
                    "error": STR,
                    "reason": STR,
                    "client_ip": NSTR,
                }
            )
        ),
        "retry_scan_truncated": BOOL,
        "redis": obj(
            {
                "shed_memory_ratio": NUM,
                "shed_at_bytes": NINT,
                "allow_redis_eviction": BOOL,
                "shedding": BOOL,
                "unavailable": INT,
            }
        ),
        "degraded": BOOL,
        "degraded_reasons": STRINGS,
        "warnings": STRINGS,
    }
)

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": STR, "detail": STR}, "detail"),
    "Attempt": ATTEMPT,
    "EventRecord": EVENT_RECORD,
    "InboundEvents": INBOUND_EVENTS,
    "EventSummary": EVENT_SUMMARY,
    "EventList": obj({"events": array(ref("EventSummary")), "count": INT, "limit": INT}),
    "PaymentTimeline": obj(
        {
            "source": STR,
            "payment_id": NSTR,
            "reference": NSTR,
            "status": NSTR,
            "events": array(ref("EventRecord")),
        }
    ),
    "Payments": obj({"query": STR, "payments": array(ref("PaymentTimeline"))}),
    "ReplayRequest": body(
        {
            "ids": ids("event ids (evt_…) or inbound ids (in_…); or give filters instead"),
            "since": {**NSTR, "description": "a duration back from now (2h) or RFC 3339"},
            "until": {**NSTR, "description": "a duration back from now (2h) or RFC 3339"},
            "source": NSTR,
            "type": {**NSTR, "description": "a glob, e.g. payment.*"},
            "state": {"type": ["string", "null"], "enum": [*LOG_STATES, None]},
            "sinks": ids("deliver to these sinks (else to the sinks routing picks now)"),
            "dry_run": {"type": ["boolean", "null"], "description": "answer the plan only"},
        }
    ),
    "ReplayResult": obj(
        {
            "dry_run": BOOL,
            "events": INT,
            "deliveries": array(
                obj(
                    {
                        "event_id": STR,
                        "sink": STR,
                        "replay": INT,
                        "state": STR,
                        "type": NSTR,
                        "source": NSTR,
                    }
                )
            ),
            "queued": INT,
            "not_found": STRINGS,
        }
    ),
    "SinkInfo": SINK_INFO,
    "Sinks": obj({"sinks": array(ref("SinkInfo"))}),
    "PauseRequest": body(
        {"for": {**NSTR, "description": "pause for this long (e.g. 2h); else until resumed"}}
    ),
    "PauseState": PAUSE_STATE,
    "ResumeResult": {
        "allOf": [ref("PauseState"), obj({"released": INT})],
    },
    "DeadLetter": DEAD_LETTER,
    "DeadLetters": obj({"dead_letters": array(ref("DeadLetter")), "total": INT}),
    "DeadLetterReplayRequest": {
        **body(
            {
                "ids": ids("dead-letter ids"),
                "sink": {"type": ["string", "null"], "minLength": 1},
                "all": {"type": ["boolean", "null"]},
            }
        ),
        "description": 'exactly one of {"ids": [...]}, {"sink": NAME} or {"all": true}',
    },
    "DeadLetterReplayResult": obj({"replayed": INT, "ids": STRINGS, "not_found": STRINGS}),
    "Rejection": REJECTION,
    "RejectionDetail": REJECTION_DETAIL,
    "RejectionReplayRequest": body({"ids": ids("rejected request ids (rj_…)")}, "ids"),
    "RejectionReplayed": REJECTION_REPLAYED,
    "Status": STATUS,
}
