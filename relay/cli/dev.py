"""`relay dev`: serve + worker in one go, on an embedded Redis when none is configured.

The two processes are the same `relay serve` and `relay worker` that production runs, as child
processes, so what works here works on Heroku. Ctrl-C stops all of it (children first, then Redis).
One `relay dev` per `.relay/` directory: a second one refuses at once (the lock file holds the
first one's pid) and touches nothing of the first's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from relay.cli.common import (
    DEV_CONFIG,
    INGRESS_FILE,
    LOCK_FILE,
    STATE_DIR,
    URL_FILE,
    Subcommands,
    add_command,
)

if TYPE_CHECKING:
    from relay.config.model import LoadedConfig
    from relay.embedded import EmbeddedRedis

DEV_HOST = "127.0.0.1"  # the dev config's secrets are published: not on the network by default


def add_parser(sub: Subcommands) -> None:
    parser = add_command(
        sub, "dev", run, "serve + worker on an embedded Redis (when REDIS_URL is unset)"
    )
    parser.add_argument("--config", help="default: $RELAY_CONFIG, else config/relay.dev.yaml")
    parser.add_argument("--port", type=int, help="ingress port (default: $PORT, else 8000)")
    parser.add_argument("--host", default=DEV_HOST, help=f"ingress address (default {DEV_HOST})")


def run(args: argparse.Namespace) -> int:
    return run_dev(args.config, port=args.port, host=args.host)


def dev_config_path(explicit: str | None) -> str:
    return explicit or os.environ.get("RELAY_CONFIG") or DEV_CONFIG


def run_dev(config: str | None, port: int | None = None, host: str = DEV_HOST) -> int:
    from relay.config.model import ConfigError, load_config

    path = dev_config_path(config)
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"{exc.path}: invalid configuration", file=sys.stderr)
        for where, message in exc.errors:
            print(f"  {where}: {message}", file=sys.stderr)
        return 2
    if not _take_lock():
        return 2
    try:
        return _run_locked(loaded, path, str(port or os.environ.get("PORT") or 8000), host)
    finally:
        LOCK_FILE.unlink(missing_ok=True)


def _run_locked(loaded: LoadedConfig, path: str, port: str, host: str) -> int:
    from relay.embedded import EmbeddedRedis

    env = dict(os.environ, RELAY_CONFIG=path, PORT=port)
    if sys.stdout.isatty():
        env.setdefault("LOG_FORMAT", "console")  # people read this terminal; JSON elsewhere
    redis: EmbeddedRedis | None = None
    if not loaded.redis_url:
        redis = EmbeddedRedis(STATE_DIR, port=_dev_port()).start()
        env["REDIS_URL"] = redis.url
        URL_FILE.write_text(redis.url)
        print(
            f"relay dev: embedded Redis at {redis.url} (data and append-only file in {STATE_DIR}/)",
            flush=True,
        )
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - the any-address
    INGRESS_FILE.write_text(f"http://{reach}:{port}")
    print(
        f"relay dev: ingress on http://{host}:{port}  (status page: /status, "
        f"try `{_trigger_hint(loaded)}` in another terminal; Ctrl-C stops)",
        flush=True,
    )
    cli = [sys.executable, "-m", "relay.cli"]
    children = [
        subprocess.Popen(
            [*cli, "serve", "--config", path, "--host", host, "--port", port], env=env
        ),
        subprocess.Popen([*cli, "worker", "--config", path], env=env),
    ]
    try:
        return _supervise(children)
    finally:
        INGRESS_FILE.unlink(missing_ok=True)
        if redis is not None:
            redis.stop()
            URL_FILE.unlink(missing_ok=True)


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
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
    return code


def _take_lock() -> bool:
    """Write our pid to the lock file, unless a live `relay dev` holds it (then say so)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(LOCK_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _lock_holder()
            if other is not None:
                print(
                    f"relay dev: already running in this directory (pid {other}, lock "
                    f"{LOCK_FILE}); stop it first, or run this one from another directory "
                    "(its .relay/ holds the first one's Redis data)",
                    file=sys.stderr,
                )
                return False
            LOCK_FILE.unlink(missing_ok=True)  # a stale lock: that relay dev is gone
            continue
        with os.fdopen(fd, "w") as lock:
            lock.write(str(os.getpid()))
        return True
    return False


def _lock_holder() -> int | None:
    """The pid in the lock file if that process is alive, else None."""
    try:
        pid = int(LOCK_FILE.read_text().strip())
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's
    except (OSError, ValueError):
        return None
    return pid


def _trigger_hint(loaded: LoadedConfig) -> str:
    """A `relay trigger` the config really has: the first source with a `paid` sample."""
    from relay.providers import PROVIDERS

    fallback = ""
    for name, source in loaded.config.sources.items():
        events = PROVIDERS[source.provider].sample_events
        if "paid" in events:
            return f"relay trigger {name} paid"
        if events and not fallback:
            fallback = f"relay trigger {name} {events[0]}"
    return fallback or "relay trigger SOURCE EVENT"


def _dev_port() -> int | None:
    # A fixed port when free, so a restarted `relay dev` finds the same data; else any port.
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 6399))
        except OSError:
            return None
    return 6399
