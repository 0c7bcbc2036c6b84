"""`relay serve`: the ingress web server."""

from __future__ import annotations

import argparse
import os
import sys

from relay.cli.common import (
    CONFIG_HELP,
    EXIT_UNSAFE_REDIS,
    Subcommands,
    add_command,
    fast_event_loop,
    load,
    need_redis,
)


def add_parser(sub: Subcommands) -> None:
    parser = add_command(sub, "serve", run, "run the ingress web server")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - SPEC 2: the ingress listens publicly
    parser.add_argument("--port", type=int, help="default: $PORT, else 8000")


def run(args: argparse.Namespace) -> int:
    from relay import logs
    from relay.ingress import runner
    from relay.ingress.app import create_app
    from relay.redis_memory import EvictingRedis

    loaded = load(args.config)
    need_redis(loaded)
    logs.configure(loaded.secrets, os.environ.get("LOG_LEVEL", "INFO"), process="web")
    fast_event_loop()
    port = args.port or int(os.environ.get("PORT") or 8000)
    logs.get_logger("relay.ingress").info(
        "ingress listening", host=args.host, port=port, sources=sorted(loaded.config.sources)
    )
    try:
        # Not web.run_app: its shutdown discards the rest of a body still arriving, so those
        # requests got no answer; runner.run drains them, all inside Heroku's 30 s.
        runner.run(create_app(loaded), args.host, port, answer_s=loaded.config.server.redis_timeout)
    except EvictingRedis as exc:  # a deployment problem, not a bug: no traceback
        print(f"relay serve: refusing to start: {exc}", file=sys.stderr)
        return EXIT_UNSAFE_REDIS
    return 0
