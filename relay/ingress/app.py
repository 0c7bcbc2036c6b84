"""The ingress aiohttp app: the routes and the answers table of SPEC 3."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientPayloadError, web
from redis.exceptions import RedisError

from relay import clock
from relay.alerts_send import Evaluator
from relay.config.model import LoadedConfig
from relay.inbound import InboundRequest
from relay.ingress import admin, api
from relay.ingress.guard import RejectionLog, TooLarge, client_ip, ip_allowed, read_body
from relay.ingress.shedding import IngressGuard, is_out_of_memory
from relay.ingress.state import CONFIG, GUARD, REDIS, REJECTIONS, SOURCES, STORE
from relay.keys import Keys
from relay.logs import get_logger
from relay.providers import Provider, Rejected, build_sources
from relay.queue import InboundStore, Stored
from relay.redis import connect
from relay.redis_memory import EvictingRedis
from relay.rejected import Keeper, RejectedRequest
from relay.sinks import SINKS
from relay.sinks.client import SinkClient

log = get_logger("relay.ingress")

RETRY_AFTER_S = "5"


def _error(
    status: int, error: str, headers: dict[str, str] | None = None, detail: str | None = None
) -> web.Response:
    body = {"error": error} if detail is None else {"error": error, "detail": detail}
    return web.json_response(body, status=status, headers=headers)


def _unavailable(app: web.Application, source: str) -> web.Response:
    app[GUARD].unavailable(source)  # counted in memory; the monitor adds it to Redis
    return _error(503, "unavailable", {"Retry-After": RETRY_AFTER_S})


def _as_received(
    request: web.Request, source: str, body: bytes | None, address: str, at: float = 0.0
) -> RejectedRequest:
    """A rejected request as received, for relay.rejected to keep (minus its secrets)."""
    return RejectedRequest(
        source=source,
        method=request.method,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        client_ip=address,
        received_at=at or clock.now(),
        has_token="token" in request.match_info,
    )


async def _body_if_any(request: web.Request, limit: int) -> bytes | None:
    """The body of a request to an unknown source, kept so a source added later can replay it."""
    try:
        return await read_body(request, limit)
    except (ClientPayloadError, TooLarge):
        return None


async def receive_webhook(request: web.Request) -> web.Response:
    app = request.app
    loaded = app[CONFIG]
    server = loaded.config.server
    source = request.match_info["source"]
    provider: Provider | None = app[SOURCES].get(source)
    address = client_ip(request, server.trusted_proxy_hops)
    rejections = app[REJECTIONS]

    if provider is None:
        kept = _as_received(
            request, source, await _body_if_any(request, server.max_body_bytes), address
        )
        await rejections.record(
            source, False, 404, "unknown_source", "no such source", address, kept
        )
        return _error(404, "unknown_source")
    try:
        body = await read_body(request, server.max_body_bytes)
    except ClientPayloadError:
        reason = "incomplete request body"
        kept = _as_received(request, source, None, address)
        await rejections.record(source, True, 400, "malformed", reason, address, kept)
        return _error(400, "malformed")
    except TooLarge:
        reason = f"body over {server.max_body_bytes} bytes"
        kept = _as_received(request, source, None, address)  # no byte of it is kept
        await rejections.record(source, True, 413, "too_large", reason, address, kept)
        return _error(413, "too_large")
    if not ip_allowed(address, provider.config.allowed_ips):
        reason = f"{address} not allowed"
        kept = _as_received(request, source, body, address)
        await rejections.record(source, True, 403, "ip_not_allowed", reason, address, kept)
        return _error(403, "ip_not_allowed")

    inbound = InboundRequest(
        source=source,
        body=body,
        headers={k.lower(): v for k, v in request.headers.items()},
        client_ip=address,
        received_at=clock.now(),  # Redis's time (relay.clock), not this host's
        token=request.match_info.get("token"),
    )
    try:
        provider.verify(inbound)
    except Rejected as rejected:
        kept = _as_received(request, source, body, address, inbound.received_at)
        await rejections.record(
            source, True, rejected.status, rejected.error, rejected.reason, address, kept
        )
        return _error(rejected.status, rejected.error)

    guard = app[GUARD]
    if guard.verdict() is not None:  # in memory: no Redis round trip (the monitor logs why)
        return _unavailable(app, source)
    try:
        async with asyncio.timeout(server.redis_timeout):
            stored = await app[STORE].store(inbound, provider.keep_headers)
    except (RedisError, OSError, TimeoutError) as exc:
        if is_out_of_memory(exc):
            guard.out_of_memory()  # shed until the next reading instead of trying each one
        log.error(  # noqa: TRY400 - an outage, not a bug: no traceback per webhook
            "redis unavailable: webhook not stored", source=source, error=type(exc).__name__
        )
        return _unavailable(app, source)
    except Exception:  # never a 500: the provider retries, and we see the bug
        log.exception("webhook not stored", source=source)
        return _unavailable(app, source)
    if not stored.duplicate:
        guard.stored(len(body))
    return _stored_answer(provider, stored)


def _stored_answer(provider: Provider, stored: Stored) -> web.Response:
    """SPEC 3's 200, or the provider's own where it needs one (Binance Pay's returnCode,
    OxaPay's `ok`): else it counts the delivery as failed and retries."""
    own = provider.stored_answer(stored.id, stored.duplicate)
    if own is not None:
        body, content_type = own
        return web.Response(body=body, content_type=content_type)
    answer: dict[str, object] = {"ok": True, "id": stored.id}
    if stored.duplicate:
        answer["duplicate"] = True
    return web.json_response(answer)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """503 while Redis does not answer or the ingress sheds (the error says why). An evicting
    policy the config allows stays ready (the operator chose it) with a `warning`."""
    try:
        async with asyncio.timeout(2):
            await request.app[REDIS].ping()  # type: ignore[attr-defined]
    except (RedisError, OSError, TimeoutError):
        return _error(503, "redis_unavailable")
    guard = request.app[GUARD]
    shed = guard.verdict()
    if shed is not None:
        return _error(503, shed.code, {"Retry-After": RETRY_AFTER_S}, shed.detail)
    warning = guard.warning()
    return web.json_response({"ok": True, "warning": warning} if warning else {"ok": True})


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    loaded = app[CONFIG]
    # No client-side retries here: a webhook waiting on Redis should get its 503 in time.
    redis = connect(loaded.redis_url, timeout=loaded.config.server.redis_timeout, retry=False)
    keys = Keys(loaded.config.key_prefix)
    app[REDIS] = redis
    app[STORE] = InboundStore(redis, keys, loaded.config.dedupe.window)
    app[REJECTIONS] = RejectionLog(redis, keys, Keeper(redis, keys, loaded.config.log))
    guard = app[GUARD] = IngressGuard(redis, keys, loaded.config, log)
    try:
        await _check_redis_at_start(guard, loaded.config.allow_redis_eviction)
    except EvictingRedis:
        await redis.aclose()
        raise
    monitor = asyncio.create_task(guard.run())
    alerts = _start_alerts(redis, loaded)
    yield
    if alerts is not None:
        await alerts.stop()
    monitor.cancel()
    await asyncio.gather(monitor, return_exceptions=True)
    await guard.flush()  # the last 503s counted (no-op when Redis is away)
    await redis.aclose()


def _start_alerts(redis: Any, loaded: LoadedConfig) -> StandbyAlerts | None:
    """SPEC 12 `no_worker` from a web dyno: its evaluator stands by and takes the alert lease
    only once every worker that beat has gone silent (relay.alerts_send)."""
    if loaded.config.alerts.no_worker is None:
        return None
    client = SinkClient()
    sinks = {name: SINKS[cfg.type](name, cfg) for name, cfg in loaded.config.sinks.items()}
    owner = f"web:{os.getpid()}"
    evaluator = Evaluator(redis, loaded, sinks, client, owner, standby=True).start()
    return StandbyAlerts(evaluator, client)


@dataclass
class StandbyAlerts:
    evaluator: Evaluator
    client: SinkClient

    async def stop(self) -> None:
        await self.evaluator.stop()
        await self.client.close()


async def _check_redis_at_start(guard: IngressGuard, allow_eviction: bool) -> None:
    """The first memory reading; refuse to start on an evicting policy unless allowed."""
    state = await guard.refresh()
    if state is None:
        log.warning(
            "cannot read Redis maxmemory-policy (Redis unreachable): checked once it "
            "answers (the ingress sheds if it evicts)"
        )
    elif state.evicting and not allow_eviction:
        raise EvictingRedis(str(state.policy))


async def expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue` is honoured; any other Expect value is ignored (aiohttp would
    answer 417, which no provider expects)."""
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def create_app(loaded: LoadedConfig) -> web.Application:
    # auto_decompress off: signatures are checked on the bytes as sent, and a bad gzip body
    # cannot fail inside aiohttp before our handler runs.
    app = web.Application(
        client_max_size=loaded.config.server.max_body_bytes, handler_args={"auto_decompress": False}
    )
    app[CONFIG] = loaded
    app[SOURCES] = build_sources(loaded)
    app.cleanup_ctx.append(_redis_ctx)
    # [^/]+ rather than aiohttp's default [^{}/]+: any name or token reaches our handler.
    app.router.add_post("/hooks/{source:[^/]+}", receive_webhook, expect_handler=expect_continue)
    app.router.add_post(
        "/hooks/{source:[^/]+}/{token:[^/]+}", receive_webhook, expect_handler=expect_continue
    )
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    admin.add_routes(app)
    api.add_routes(app)  # /api/: the operator's JSON API
    return app
