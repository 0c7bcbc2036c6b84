"""The two baselines of the ingress benchmark, each run as its own process:

    python -m bench.servers bare --port N                 a bare aiohttp handler returning 200
    python -m bench.servers enqueue --port N --redis URL  the same server calling arq's
                                                          ArqRedis.enqueue_job per request

The enqueue server stores what payrelay stores (the raw body and headers, msgpack) under a job
id derived from the body, so a byte-identical repeat is recognised as payrelay's is
(arq answers None for an existing job id). It does no signature check.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import msgpack
from aiohttp import web


async def bare(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200, text="ok")


def build_enqueue_app(redis_url: str) -> web.Application:
    from arq.connections import create_pool

    from bench.common import PREFIX
    from relay.redis import arq_settings

    app = web.Application()
    pool_key = web.AppKey("pool", object)

    def serialize(obj: object) -> bytes:
        return msgpack.packb(obj, use_bin_type=True)

    async def ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[pool_key] = await create_pool(
            arq_settings(redis_url), job_serializer=serialize, default_queue_name=f"{PREFIX}:queue"
        )
        yield
        await app[pool_key].aclose()  # type: ignore[attr-defined]

    async def enqueue(request: web.Request) -> web.Response:
        body = await request.read()
        job_id = "in_" + hashlib.sha256(b"ivpay\x00" + body).hexdigest()[:26]
        inbound = {
            "source": request.match_info["source"],
            "body": body,
            "headers": {"content-type": request.headers.get("Content-Type", "")},
            "client_ip": request.remote,
            "received_at": time.time(),
        }
        job = await app[pool_key].enqueue_job(  # type: ignore[attr-defined]
            "process_inbound", inbound=inbound, _job_id=job_id
        )
        if job is None:
            return web.json_response({"ok": True, "id": job_id, "duplicate": True})
        return web.json_response({"ok": True, "id": job_id})

    app.cleanup_ctx.append(ctx)
    app.router.add_post("/hooks/{source}", enqueue)
    app.router.add_get("/healthz", lambda r: _ok())
    return app


async def _ok() -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["bare", "enqueue"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis")
    args = parser.parse_args()
    if args.kind == "bare":
        app = web.Application()
        app.router.add_post("/hooks/{source}", bare)
        app.router.add_get("/healthz", lambda r: _ok())
    else:
        app = build_enqueue_app(args.redis)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
