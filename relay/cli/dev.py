"""`relay dev`: serve + worker in one go, on an embedded Redis when none is configured.

The two processes are the same `relay serve` and `relay worker` that production runs, as child
processes, so what works here works on Heroku. Ctrl-C stops all of it (children first, then Redis).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from relay.cli.common import DEV_CONFIG, STATE_DIR, URL_FILE, Subcommands, add_command

if TYPE_CHECKING:
    from relay.embedded import EmbeddedRedis


def add_parser(sub: Subcommands) -> None:
    parser = add_command(
        sub, "dev", run, "serve + worker on an embedded Redis (when REDIS_URL is unset)"
    )
    parser.add_argument("--config", help="default: $RELAY_CONFIG, else config/relay.dev.yaml")


def run(args: argparse.Namespace) -> int:
    return run_dev(args.config)


def dev_config_path(explicit: str | None) -> str:
    return explicit or os.environ.get("RELAY_CONFIG") or DEV_CONFIG


def run_dev(config: str | None) -> int:
    from relay.config.model import ConfigError, load_config
    from relay.embedded import EmbeddedRedis

    path = dev_config_path(config)
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"{exc.path}: invalid configuration", file=sys.stderr)
        for where, message in exc.errors:
            print(f"  {where}: {message}", file=sys.stderr)
        return 2
    env = dict(os.environ, RELAY_CONFIG=path)
    redis: EmbeddedRedis | None = None
    if not loaded.redis_url:
        redis = EmbeddedRedis(STATE_DIR, port=_dev_port()).start()
        env["REDIS_URL"] = redis.url
        URL_FILE.write_text(redis.url)
        print(
            f"relay dev: embedded Redis at {redis.url} (data and append-only file in {STATE_DIR}/)",
            flush=True,
        )
    port = os.environ.get("PORT") or "8000"
    print(
        f"relay dev: ingress on http://127.0.0.1:{port}  (status page: /status, "
        f"try `relay trigger ivpay paid` in another terminal; Ctrl-C stops)",
        flush=True,
    )
    cli = [sys.executable, "-m", "relay.cli"]
    children = [
        subprocess.Popen([*cli, "serve", "--config", path, "--port", port], env=env),
        subprocess.Popen([*cli, "worker", "--config", path], env=env),
    ]
    code = 0
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.3)
        code = next(child.returncode for child in children if child.poll() is not None) or 1
        print("relay dev: a process exited; stopping the others", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nrelay dev: stopping", flush=True)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis is not None:
            redis.stop()
            URL_FILE.unlink(missing_ok=True)
    return code


def _dev_port() -> int | None:
    # A fixed port when free, so a restarted `relay dev` finds the same data; else any port.
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 6399))
        except OSError:
            return None
    return 6399
