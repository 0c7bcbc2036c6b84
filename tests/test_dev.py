"""`relay dev` as a newcomer runs it: embedded Redis, ingress, worker; trigger; Ctrl-C."""

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
import pytest

from relay.cli.trigger import run_trigger
from relay.config.model import load_config
from relay.embedded import free_port
from relay.providers import build_sources
from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.slow
DEV_CONFIG = str(REPO / "config" / "relay.dev.yaml")


def dev_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RELAY_CONFIG")}
    env["PORT"] = str(port)
    return env


def logged_events(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_bytes().splitlines():
        if line.startswith(b"{") and b'"payment event"' in line:
            events.append(orjson.loads(line))
    return events


async def test_dev_trigger_every_provider_then_ctrl_c(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every sample of every dev source, sent with `relay trigger`, is delivered to the log sink;
    `relay status` counts them; Ctrl-C stops the processes and the embedded Redis."""
    port = free_port()
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "dev", "--config", DEV_CONFIG],
            cwd=tmp_path,
            env=dev_env(port),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        async def up() -> bool:
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(up, timeout=30, interval=0.2)
        assert (tmp_path / ".relay" / "redis.url").exists()
        os.environ["PORT"] = str(port)
        try:
            loaded = load_config(DEV_CONFIG)
            sources = build_sources(loaded)
        finally:
            del os.environ["PORT"]
        url = f"http://127.0.0.1:{port}"
        # Each source's first sample goes through the command line, in a process of its own as
        # a newcomer runs it (a Python start-up each: one per source, three at a time); every
        # other sample goes through the same `relay trigger` code (run_trigger) in this process.
        pairs = [(name, e) for name, provider in sources.items() for e in provider.sample_events]
        first = {name: provider.sample_events[0] for name, provider in sources.items()}
        in_process = [(name, e) for name, e in pairs if first[name] != e]
        processes, calls = asyncio.Semaphore(3), asyncio.Semaphore(6)

        async def by_command(name: str, event: str) -> None:
            async with processes:
                result = await asyncio.to_thread(
                    subprocess.run,
                    [
                        sys.executable,
                        "-m",
                        "relay.cli",
                        "trigger",
                        name,
                        event,
                        "--config",
                        DEV_CONFIG,
                        "--url",
                        url,
                    ],
                    cwd=tmp_path,
                    env=dev_env(port),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            assert result.returncode == 0, f"{name} {event}: {result.stdout}{result.stderr}"
            assert "-> 200" in result.stdout

        async def by_code(name: str, event: str) -> int:
            async with calls:
                return await run_trigger(loaded, name, event, url)

        codes = await asyncio.gather(
            *(by_command(name, event) for name, event in first.items()),
            *(by_code(name, event) for name, event in in_process),
        )
        assert codes[len(first) :] == [0] * len(in_process)  # 0: answered 200
        answered = capsys.readouterr().out.count(") -> 200 ")
        assert answered == len(in_process), f"{answered} of {len(in_process)} answered 200"
        sent = len(pairs)
        await wait_for(lambda: len(logged_events(log)) >= sent, timeout=30, interval=0.3)
        types = {
            (e["payment_event"]["source"], e["payment_event"]["type"])  # type: ignore[index]
            for e in logged_events(log)
        }
        for name in sources:
            assert any(source == name for source, _ in types), f"nothing delivered from {name}"
    finally:
        dev.send_signal(signal.SIGINT)
        began = time.monotonic()
        code = dev.wait(40)
    assert code == 0, log.read_text()[-3000:]
    assert time.monotonic() - began < 30
    assert not (tmp_path / ".relay" / "redis.url").exists()
    assert (tmp_path / ".relay" / "appendonlydir").exists() or list(
        (tmp_path / ".relay").glob("*.aof")
    )
