"""The OpenAPI 3.1 document of the operator API (`GET /api/openapi.json`, relay.ingress.api).

Written as Python rather than a static JSON or YAML file: the limits and enums it states
(the delivery states, the largest `limit`, the most ids per request, the version) are the
code's own constants, so the document cannot drift from what the API checks; a few helpers
keep it short; and mypy and ruff read it like the rest. It is built once, at first request.

Response schemas require every field the relay always writes and allow more, so a figure
added later is no breaking change; request bodies allow no unknown field (the API answers 400
for one), and tests/test_api.py runs schemathesis against the running API with this document.
"""

from __future__ import annotations

import functools

import orjson

from relay import __version__
from relay.ingress.openapi_schemas import (
    ANY_OBJ,
    INT,
    MAX_IDS,
    SCHEMAS,
    STATE,
    STR,
    Schema,
    array,
    obj,
    ref,
)
from relay.ledger.query import MAX_LIMIT

__all__ = ["MAX_IDS", "document", "document_bytes"]


# --- responses and parameters -----------------------------------------------------------------

ERRORS = {
    400: ("BadRequest", "a malformed query or body (`bad_request`)"),
    401: ("Unauthorized", "a missing or wrong bearer token (`unauthorized`)"),
    403: ("Forbidden", "no `admin.token` is configured: the API is off (`admin_token_not_set`)"),
    404: ("NotFound", "nothing under that id or name (`not_found`)"),
    413: ("TooLarge", "a body over `server.max_body_bytes` (`too_large`)"),
    415: ("UnsupportedMediaType", "a body that is not `application/json`"),
    503: ("Unavailable", "Redis is unreachable or slow (`unavailable`); try again later"),
}


def json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def responses() -> dict[str, Schema]:
    found: dict[str, Schema] = {}
    for status, (name, description) in ERRORS.items():
        response: Schema = {"description": description, "content": json_content(ref("Error"))}
        if status == 503:
            response["headers"] = {"Retry-After": {"schema": INT, "description": "seconds"}}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": STR}}
        found[name] = response
    return found


def query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def path(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": description,
    }


def limit(default: int) -> Schema:
    schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default}
    return query("limit", schema, f"at most this many (default {default})")


def operation(
    op_id: str,
    summary: str,
    ok: Schema,
    *,
    params: tuple[Schema, ...] = (),
    request: str | None = None,
    errors: tuple[int, ...] = (),
    description: str = "",
) -> Schema:
    """One operation: its 200 answer, and the errors every request may get (400, 401, 403,
    503), those of a body (413, 415) and the listed ones."""
    statuses = sorted({400, 401, 403, 503, *errors, *((413, 415) if request else ())})
    answers: dict[str, Schema] = {"200": {"description": "OK", "content": json_content(ok)}}
    for status in statuses:
        answers[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    op: Schema = {"operationId": op_id, "summary": summary, "responses": answers}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = list(params)
    if request:
        op["requestBody"] = {
            "required": request != "PauseRequest",
            "content": json_content(ref(request)),
        }
    return op


SINCE = "a duration back from now (2h) or an RFC 3339 time"
EVENT_FILTERS = (
    query("since", STR, f"accepted at or after: {SINCE}"),
    query("until", STR, f"accepted at or before: {SINCE}"),
    query("source", STR, "only this source's"),
    query("type", STR, "a glob of event types, e.g. payment.*"),
    query("sink", STR, "only events routed to this sink (with state: in that state there)"),
    query("state", STATE, "only events with a delivery in this state"),
)


def paths() -> dict[str, Schema]:
    return {**_log_paths(), **_sink_paths()}


def _log_paths() -> dict[str, Schema]:
    """The event log: status, events, payments, replay."""
    return {
        "/api/openapi.json": {
            "get": operation("openapi", "This document", obj({"openapi": STR, "paths": ANY_OBJ}))
        },
        "/api/status": {
            "get": operation("status", "The figures of `relay status --json`", ref("Status"))
        },
        "/api/events": {
            "get": operation(
                "listEvents",
                "Logged events, newest first (`relay events list`)",
                ref("EventList"),
                params=(*EVENT_FILTERS, limit(50)),
            )
        },
        "/api/events/{id}": {
            "get": operation(
                "showEvent",
                "One event with every sink's state and attempts (`relay events show`)",
                {"oneOf": [ref("EventRecord"), ref("InboundEvents")]},
                params=(path("id", "an event id (evt_…), or an inbound id (in_…)"),),
                errors=(404,),
                description="For an `in_` id: what that inbound request became.",
            )
        },
        "/api/payments/{query}": {
            "get": operation(
                "showPayment",
                "A payment's timeline (`relay payments show`)",
                ref("Payments"),
                params=(
                    path("query", "a payment id, merchant reference, tx hash, evt_ or in_ id"),
                    query("source", STR, "only this source's payments"),
                ),
                errors=(404,),
            )
        },
        "/api/replay": {
            "post": operation(
                "replay",
                "Deliver logged events again (`relay replay`)",
                ref("ReplayResult"),
                request="ReplayRequest",
                description=(
                    "By `ids`, or by filters, not both. Each delivery carries the original "
                    "event id. Asks nothing before many deliveries: use `dry_run` first."
                ),
            )
        },
    }


def _sink_paths() -> dict[str, Schema]:
    """Sinks, dead letters and rejected requests."""
    return {
        "/api/sinks": {"get": operation("listSinks", "Every sink (`relay sinks`)", ref("Sinks"))},
        "/api/sinks/{name}/pause": {
            "post": operation(
                "pauseSink",
                "Pause a sink (`relay sinks pause`)",
                ref("PauseState"),
                params=(path("name", "a sink in the config"),),
                request="PauseRequest",
                errors=(404,),
                description="Its deliveries wait, using up no attempt. The body is optional.",
            )
        },
        "/api/sinks/{name}/resume": {
            "post": operation(
                "resumeSink",
                "Resume a sink, releasing its held deliveries in order (`relay sinks resume`)",
                ref("ResumeResult"),
                params=(path("name", "a sink in the config, or one still paused"),),
                errors=(404,),
            )
        },
        "/api/dead-letters": {
            "get": operation(
                "listDeadLetters",
                "Dead letters, newest first",
                ref("DeadLetters"),
                params=(query("sink", STR, "only this sink's"), limit(50)),
            )
        },
        "/api/dead-letters/replay": {
            "post": operation(
                "replayDeadLetters",
                "Send dead letters through the normal path again",
                ref("DeadLetterReplayResult"),
                request="DeadLetterReplayRequest",
            )
        },
        "/api/rejections": {
            "get": operation(
                "listRejections",
                "Kept rejected requests, newest first (`relay rejections list`)",
                array(ref("Rejection")),
                params=(query("source", STR, "only this source's"), limit(50)),
            )
        },
        "/api/rejections/{id}": {
            "get": operation(
                "showRejection",
                "One rejected request with its headers and body (`relay rejections show`)",
                ref("RejectionDetail"),
                params=(path("id", "a rejected request id (rj_…)"),),
                errors=(404,),
            )
        },
        "/api/rejections/replay": {
            "post": operation(
                "replayRejections",
                "Verify rejected requests again; store those that pass (`relay rejections replay`)",
                array(ref("RejectionReplayed")),
                request="RejectionReplayRequest",
            )
        },
    }


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "payrelay operator API",
            "version": __version__,
            "description": (
                "What `relay events|payments|replay|sinks|dlq|rejections|status --json` "
                "answer, over HTTP. Every request needs `Authorization: Bearer <admin.token>`. "
                'Errors are JSON: `{"error": code, "detail": text}`.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the config's admin.token",
                }
            },
            "schemas": SCHEMAS,
            "responses": responses(),
        },
    }


@functools.cache
def document_bytes() -> bytes:
    return orjson.dumps(document())
