"""The operator's JSON API under `/api/` (SPEC 10), described by relay.ingress.openapi at
`GET /api/openapi.json`.

Each endpoint parses its query or body, calls the relay.operator (or relay.rejected) function
that `relay <command> --json` calls, and answers exactly what it returns, written with
`relay.events.dumps` (event data keeps its exact decimals). So the CLI and the API give the
same JSON for the same question.

The routes are a sub-application, so that one middleware (`_guard`) stands in front of every
`/api/` request, unknown paths and wrong methods included:

- `admin.token` unset: 403 `admin_token_not_set`; a missing or wrong bearer token: 401
  `unauthorized` (no `?token=`: a URL ends up in logs and histories). `openapi.json` too: SPEC
  10 says every `/api/` request, and the document lists what an operator can do.
- every error is JSON `{"error": code, "detail": text}`: 400 `bad_request` (a malformed query
  or body: bad JSON, a wrong type, an unknown field or parameter, a bad time or state, a limit
  out of range), 404 `not_found`, 405, 413 `too_large`, 415 `unsupported_media_type`, 503
  `unavailable` (Redis unreachable or slow, with `Retry-After`); 500 `internal_error` only for
  a bug, which is logged with its traceback.
- state-changing endpoints are POST, with a JSON object body (`Content-Type:
  application/json`; an empty body where every field is optional).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import ClientPayloadError, web
from redis.exceptions import RedisError

from relay import operator, rejected
from relay.events import dumps
from relay.ingress import openapi
from relay.ingress.auth import api_access
from relay.ingress.state import CONFIG, REDIS
from relay.keys import LOG_STATES, Keys
from relay.ledger.query import MAX_LIMIT
from relay.logs import get_logger

log = get_logger("relay.api")

API_TIMEOUT_S = 30.0  # a replay of thousands of events takes a while; a sick Redis must not hang
RETRY_AFTER_S = "5"
MAX_IDS = openapi.MAX_IDS
FILTERS = ("since", "until", "source", "type", "state")  # a replay's event filters
_STATUS_ERRORS = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """An answer other than 200, raised from anywhere in a handler."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def bad_request(detail: str) -> Problem:
    return Problem(400, "bad_request", detail)


def add_routes(app: web.Application) -> None:
    api = web.Application(middlewares=[_guard])
    get = functools.partial(api.router.add_get, allow_head=False)
    post = api.router.add_post
    get("/openapi.json", openapi_document)
    get("/status", status)
    get("/events", events_list)
    get("/events/{id:[^/]+}", event_show)
    get("/payments/{query:.+}", payments_show)  # a reference may hold a / (sent as %2F)
    post("/replay", replay)
    get("/sinks", sinks_list)
    post("/sinks/{name:[^/]+}/pause", sink_pause)
    post("/sinks/{name:[^/]+}/resume", sink_resume)
    get("/dead-letters", dead_letters)
    post("/dead-letters/replay", dead_letters_replay)
    get("/rejections", rejections_list)
    get("/rejections/{id:(?!replay$)[^/]+}", rejection_show)  # not POST /replay's path
    post("/rejections/replay", rejections_replay)
    app.add_subapp("/api/", api)


# --- the guard: auth, and every error as JSON -------------------------------------------------


def error_response(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": error, "detail": detail},
        status=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.config_dict[CONFIG].config
    expected = config.admin.token
    if not expected:
        return error_response(403, "admin_token_not_set", "set admin.token to use the API")
    # A bearer token, or the console's session cookie (relay.ingress.auth: CSRF checked).
    access = api_access(request, expected, config.server.trusted_proxy_hops)
    if access == "unauthorized":
        return error_response(
            401,
            "unauthorized",
            "send Authorization: Bearer <admin.token>",
            {"WWW-Authenticate": 'Bearer realm="payrelay"'},
        )
    if access == "cross_site":
        detail = "a request signed in by the console's cookie must come from its own origin"
        return error_response(403, "cross_site_request", detail)
    try:
        async with asyncio.timeout(API_TIMEOUT_S):
            response = await handler(request)
    except Problem as problem:
        response = error_response(problem.status, problem.error, problem.detail)
    except operator.BadQuery as exc:
        response = error_response(400, "bad_request", str(exc))
    except operator.NotFound as exc:
        response = error_response(404, "not_found", str(exc))
    except web.HTTPException as exc:  # no route (404), wrong method (405), body too large (413)
        response = _http_error(exc)
    except (RedisError, OSError, TimeoutError) as exc:
        log.error(  # noqa: TRY400 - an outage, not a bug: no traceback per request
            "api: redis unavailable", path=request.path, error=type(exc).__name__
        )
        response = error_response(
            503, "unavailable", "Redis is unreachable or slow", {"Retry-After": RETRY_AFTER_S}
        )
    except Exception:
        log.exception("api request failed", method=request.method, path=request.path)
        response = error_response(500, "internal_error", "a bug in the relay: see its log")
    response.headers["Cache-Control"] = "no-store"
    if request.method == "POST":  # the state-changing requests are logged (never a body)
        log.info("api request", method="POST", path=request.path, status=response.status)
    return response


def _http_error(exc: web.HTTPException) -> web.Response:
    error = _STATUS_ERRORS.get(exc.status, exc.reason.lower().replace(" ", "_"))
    detail = {
        404: "no such API endpoint (see /api/openapi.json)",
        413: "the request body is too large",
    }.get(exc.status, exc.reason)
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(exc.status, error, detail, headers)


# --- parsing queries and bodies ---------------------------------------------------------------


def _text(value: str, name: str) -> str:
    try:
        value.encode("utf-8")  # Redis takes UTF-8: a lone surrogate is refused here, not there
    except UnicodeEncodeError:
        raise bad_request(f"{name}: not valid UTF-8") from None
    return value


def query_params(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string as {name: value}; 400 for an unknown or repeated parameter."""
    found: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise bad_request(f"unknown query parameter {name!r} (allowed: {known})")
        if name in found:
            raise bad_request(f"query parameter {name!r} given twice")
        found[name] = _text(value, name)
    return found


def parse_limit(params: Mapping[str, str], default: int) -> int:
    text = params.get("limit")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_LIMIT)):
        raise bad_request(f"limit must be an integer between 1 and {MAX_LIMIT}")
    limit = int(text)
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit must be an integer between 1 and {MAX_LIMIT}")
    return limit


def check_state(state: str | None) -> None:
    """An empty state too is refused (relay.operator would read it as no filter)."""
    if state is not None and state not in LOG_STATES:
        raise bad_request(f"unknown state {state!r} (one of {', '.join(LOG_STATES)})")


def _id_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IDS:
        raise bad_request(f"{name} must be a list of 1 to {MAX_IDS} strings")
    if not all(isinstance(v, str) and v for v in value):
        raise bad_request(f"{name} must hold non-empty strings")
    return [_text(v, name) for v in value]


def _checked(key: str, value: Any, kind: str) -> Any:
    if kind == "ids":
        return _id_list(value, key)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise bad_request(f"{key} must be true or false")
        return value
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    if kind == "name" and not value:
        raise bad_request(f"{key} must not be empty")
    return _text(value, key)


async def json_body(request: web.Request, fields: Mapping[str, str]) -> dict[str, Any]:
    """The body as a JSON object whose keys are among `fields` (name -> "string", "name": a
    non-empty string, "boolean", "ids": a list of non-empty strings); a null string or boolean
    is as absent. An empty body is `{}`: the caller says when a field is required."""
    try:
        raw = await request.read()
    except ClientPayloadError:
        raise bad_request("the body was not received in full") from None
    if not raw.strip():
        return {}
    if "Content-Type" in request.headers and request.content_type != "application/json":
        raise Problem(415, "unsupported_media_type", "send Content-Type: application/json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    parsed: dict[str, Any] = {}
    for key, value in body.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise bad_request(f"unknown field {key!r} (allowed: {known})")
        if value is not None or fields[key] == "ids":  # a list is never null
            parsed[key] = _checked(key, value, fields[key])
    return parsed


def answer(result: Any) -> web.Response:
    return web.Response(body=dumps(result), content_type="application/json")


def _redis(request: web.Request) -> Any:
    return request.config_dict[REDIS]


def _loaded(request: web.Request) -> Any:
    return request.config_dict[CONFIG]


def _keys(request: web.Request) -> Keys:
    return Keys(_loaded(request).config.key_prefix)


# --- the endpoints ----------------------------------------------------------------------------


async def openapi_document(request: web.Request) -> web.Response:
    query_params(request, ())
    return web.Response(body=openapi.document_bytes(), content_type="application/json")


async def status(request: web.Request) -> web.Response:
    query_params(request, ())
    return answer(await operator.status(_redis(request), _loaded(request).config))


async def events_list(request: web.Request) -> web.Response:
    params = query_params(request, ("since", "until", "source", "type", "sink", "state", "limit"))
    limit = parse_limit(params, 50)
    check_state(params.get("state"))
    redis = _redis(request)
    flt = await operator.event_filter(
        redis,
        since=params.get("since"),
        until=params.get("until"),
        source=params.get("source"),
        type=params.get("type"),
        sink=params.get("sink"),
        state=params.get("state"),
        limit=limit,
    )
    return answer(await operator.events_list(redis, _loaded(request).config, flt))


async def event_show(request: web.Request) -> web.Response:
    query_params(request, ())
    ident = _text(request.match_info["id"], "id")
    return answer(await operator.event_show(_redis(request), _loaded(request).config, ident))


async def payments_show(request: web.Request) -> web.Response:
    params = query_params(request, ("source",))
    text = _text(request.match_info["query"], "query")
    config = _loaded(request).config
    return answer(await operator.payments_show(_redis(request), config, text, params.get("source")))


async def replay(request: web.Request) -> web.Response:
    """By `ids`, or by filters (`since`, `until`, `source`, `type`, `state`); to `sinks`, else
    to the sinks routing picks now. `dry_run` answers the plan and sends nothing. No question
    asked before many deliveries (the CLI asks): a dry run first is the API's way."""
    query_params(request, ())
    fields = {"ids": "ids", **dict.fromkeys(FILTERS, "string"), "sinks": "ids"}
    body = await json_body(request, {**fields, "dry_run": "boolean"})
    check_state(body.get("state"))
    filters = {k: body[k] for k in FILTERS if body.get(k)}  # "" is no filter, as in the CLI
    ids = body.get("ids")
    if ids and filters:
        raise bad_request("give ids or filters, not both")
    redis = _redis(request)
    config = _loaded(request).config
    flt = None
    if filters:
        flt = await operator.event_filter(
            redis,
            since=filters.get("since"),
            until=filters.get("until"),
            source=filters.get("source"),
            type=filters.get("type"),
            state=filters.get("state"),
        )
    plan = await operator.replay_plan(redis, config, ids=ids, flt=flt, sinks=body.get("sinks"))
    return answer(
        await operator.replay_run(redis, config, plan, dry_run=body.get("dry_run", False))
    )


async def sinks_list(request: web.Request) -> web.Response:
    query_params(request, ())
    return answer(await operator.sinks_list(_redis(request), _loaded(request).config))


async def sink_pause(request: web.Request) -> web.Response:
    query_params(request, ())
    body = await json_body(request, {"for": "string"})
    name = _text(request.match_info["name"], "name")
    config = _loaded(request).config
    return answer(await operator.sink_pause(_redis(request), config, name, body.get("for")))


async def sink_resume(request: web.Request) -> web.Response:
    query_params(request, ())
    await json_body(request, {})
    name = _text(request.match_info["name"], "name")
    return answer(await operator.sink_resume(_redis(request), _loaded(request).config, name))


async def dead_letters(request: web.Request) -> web.Response:
    params = query_params(request, ("sink", "limit"))
    limit = parse_limit(params, 50)  # as `relay dlq list`
    config = _loaded(request).config
    sink = params.get("sink") or None
    return answer(await operator.dead_letters(_redis(request), config, sink=sink, limit=limit))


async def dead_letters_replay(request: web.Request) -> web.Response:
    """Exactly one of `{"ids": [...]}`, `{"sink": NAME}`, `{"all": true}`."""
    query_params(request, ())
    body = await json_body(request, {"ids": "ids", "sink": "name", "all": "boolean"})
    if len(body) != 1 or body.get("all") is False:
        raise bad_request('give one of {"ids": [...]}, {"sink": NAME} or {"all": true}')
    result = await operator.dead_letters_replay(
        _redis(request),
        _loaded(request).config,
        ids=body.get("ids"),
        sink=body.get("sink"),
        everything=body.get("all", False),
    )
    return answer(result)


async def rejections_list(request: web.Request) -> web.Response:
    params = query_params(request, ("source", "limit"))
    limit = parse_limit(params, 50)
    source = params.get("source") or None
    found = await rejected.list_rejected(
        _redis(request), _keys(request), limit=limit, source=source
    )
    return answer(found)


async def rejection_show(request: web.Request) -> web.Response:
    query_params(request, ())
    ident = _text(request.match_info["id"], "id")
    found = await rejected.get_rejected(_redis(request), _keys(request), ident)
    if found is None:
        raise Problem(404, "not_found", f"no rejected request kept with id {ident!r}")
    return answer(found)


async def rejections_replay(request: web.Request) -> web.Response:
    query_params(request, ())
    body = await json_body(request, {"ids": "ids"})
    if "ids" not in body:
        raise bad_request('give {"ids": [...]}')
    return answer(await rejected.replay_rejected(_redis(request), _loaded(request), body["ids"]))
