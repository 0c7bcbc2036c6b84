"""Issue 15, as a newcomer meets it: `relay dev` on its own port and host, a second `relay dev`
in the same checkout, `relay trigger` finding the dev relay, the human log format."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from relay.embedded import free_port
from tests.conftest import REPO, wait_for

DEV_CONFIG = str(REPO / "config" / "relay.dev.yaml")


def env_without_port() -> dict[str, str]:
    drop = ("REDIS_URL", "RELAY_CONFIG", "PORT", "LOG_FORMAT")
    return {k: v for k, v in os.environ.items() if k not in drop}


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=cwd,
        env=env_without_port(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_dev_port_host_lock_and_trigger(tmp_path: Path) -> None:
    """`relay dev --port N` listens on 127.0.0.1:N and says so; a second `relay dev` here refuses
    at once and leaves the first running and findable; `relay trigger` finds the port itself."""
    port = free_port()
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "dev", "--config", DEV_CONFIG, "--port", str(port)],
            cwd=tmp_path,
            env=env_without_port(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_for(lambda: ready(port), timeout=40, interval=0.2)
        banner = log.read_text()
        assert f"ingress on http://127.0.0.1:{port} " in banner
        assert "try `relay trigger ivpay paid`" in banner
        began = time.monotonic()
        second = await asyncio.to_thread(
            cli, "dev", "--config", DEV_CONFIG, "--port", str(free_port()), cwd=tmp_path
        )
        assert second.returncode == 2 and "already running in this directory" in second.stderr
        assert f"pid {dev.pid}" in second.stderr and time.monotonic() - began < 15
        assert (tmp_path / ".relay" / "redis.url").exists() and await ready(port)
        sent = await asyncio.to_thread(
            cli, "trigger", "ivpay", "paid", "--config", DEV_CONFIG, cwd=tmp_path
        )
        assert sent.returncode == 0, sent.stderr
        assert (
            f"POST http://127.0.0.1:{port}/hooks/ivpay" in sent.stdout and "-> 200" in sent.stdout
        )
        status = await asyncio.to_thread(
            cli, "status", "--check", "--config", DEV_CONFIG, cwd=tmp_path
        )
        assert status.returncode in (0, 1) and "cannot reach" not in status.stdout, status
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(40)
    assert code == 0, log.read_text()[-3000:]
    for name in ("dev.pid", "redis.url", "ingress.url"):
        assert not (tmp_path / ".relay" / name).exists(), name


def test_console_log_format_is_for_people_and_json_stays_the_default() -> None:
    """LOG_FORMAT=console: human lines, still redacted; unset: one JSON object per line."""
    script = (
        "from relay import logs; logs.configure(['sekrit-value-1'], process='web');"
        "logs.get_logger().info('ingress listening', port=8000, token='sekrit-value-1')"
    )
    for log_format in ("console", None):
        env = env_without_port()
        if log_format:
            env["LOG_FORMAT"] = log_format
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            cwd=REPO,
        ).stdout
        assert "sekrit-value-1" not in out
        if log_format:
            assert not out.startswith("{") and "ingress listening" in out and "port=8000" in out
        else:
            assert orjson.loads(out)["event"] == "ingress listening"


def test_shell_completion_completes_commands_actions_and_options(tmp_path: Path) -> None:
    """`relay completion bash` drives bash's completion from the parser; zsh loads the same."""
    script = cli("completion", "bash", cwd=REPO)
    assert script.returncode == 0, script.stderr
    (tmp_path / "relay.bash").write_text(script.stdout)
    probe = (
        f"source {tmp_path / 'relay.bash'}\n"
        'ask() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _relay; echo "${COMPREPLY[*]}"; }\n'
        "ask relay st; ask relay dlq pu; ask relay status --config x --ch; ask relay dev --po\n"
    )
    answers = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()
    assert answers == ["status", "purge", "--check", "--port"]
    zsh = cli("completion", "zsh", cwd=REPO).stdout
    assert zsh.startswith("#compdef relay") and "bashcompinit" in zsh and "_relay_words" in zsh


def test_a_worker_says_at_once_that_it_waits_for_redis() -> None:
    """Redis down at start: the first line says so (the client's retries are silent)."""
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "IVPAY_API_KEY": "x",
        "RELAY_CONFIG": "",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "worker", "--config", "config/relay.dev.yaml"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
    finally:
        process.kill()
        process.wait(timeout=10)
    assert "waiting for Redis" in first, first
