"""Helpers for fault tests: `relay serve` / `relay worker` as real child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from relay.embedded import free_port
from tests.conftest import REPO, TEST_SECRETS

CLOCKSHIFT_DIR = Path(__file__).resolve().parent / "clockshift"


def clock_shift_env(shift_s: float, env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for a Python child whose wall clock (time.time,
    datetime.now, ...) runs `shift_s` seconds off; monotonic clocks are left alone. See
    tests/clockshift/sitecustomize.py for exactly what is shifted."""
    env = dict(os.environ if env is None else env)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(CLOCKSHIFT_DIR), *([path] if path else [])])
    env["RELAY_TEST_CLOCK_SHIFT_S"] = repr(float(shift_s))
    return env


def write_config(directory: Path, raw: dict[str, Any], name: str = "relay.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(raw))
    return path


class RelayProcess:
    """One `relay serve` or `relay worker` child, logging to a file. With `clock_shift_s`, its
    wall clock runs that many seconds off (clock_shift_env)."""

    def __init__(
        self,
        command: str,
        config: Path,
        log_dir: Path,
        redis_url: str,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        clock_shift_s: float | None = None,
    ) -> None:
        self.command = command
        self.config = config
        self.port = port or (free_port() if command == "serve" else None)
        self.log_path = log_dir / f"{command}-{time.monotonic_ns()}.log"
        self.env = {
            **os.environ,
            **TEST_SECRETS,
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        if clock_shift_s is not None:
            self.env = clock_shift_env(clock_shift_s, self.env)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RelayProcess:
        args = [sys.executable, "-m", "relay.cli", self.command, "--config", str(self.config)]
        if self.port:
            args += ["--port", str(self.port), "--host", "127.0.0.1"]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            args, cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        return self

    async def ready(self, timeout: float = 20.0) -> RelayProcess:
        """For serve: until /healthz answers. For worker: until its heartbeat line is logged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process and self.process.poll() is None, self.output()
            if self.command == "serve":
                try:
                    async with aiohttp.ClientSession() as session:
                        async with session.get(f"{self.url}/healthz") as response:
                            if response.status == 200:
                                return self
                except aiohttp.ClientError:
                    pass
            elif b"worker started" in self.log_path.read_bytes():
                return self
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.command} not ready in {timeout}s:\n{self.output()}")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self.log.close()
        return code

    def alive(self) -> bool:
        return bool(self.process and self.process.poll() is None)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
