"""`relay worker`: normalize, dedupe, route, deliver, retry (arq)."""

from __future__ import annotations

import argparse
import asyncio
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
    parser = add_command(
        sub, "worker", run, "run a worker: normalize, dedupe, route, deliver, retry"
    )
    parser.add_argument("--config", help=CONFIG_HELP)


def run(args: argparse.Namespace) -> int:
    import logging

    from relay import logs
    from relay.redis_memory import EvictingRedis
    from workers.settings import run_worker

    loaded = load(args.config)
    need_redis(loaded)
    logs.configure(loaded.secrets, os.environ.get("LOG_LEVEL", "INFO"), process="worker")
    logging.getLogger("arq").setLevel(os.environ.get("ARQ_LOG_LEVEL", "WARNING"))

    fast_event_loop()
    try:
        asyncio.run(run_worker(loaded))
    except EvictingRedis as exc:  # a deployment problem, not a bug: no traceback
        print(f"relay worker: refusing to start: {exc}", file=sys.stderr)
        return EXIT_UNSAFE_REDIS
    return 0
