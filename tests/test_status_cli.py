"""`relay status` as a user runs it: the console script in a subprocess, on the test Redis."""

# Fixtures imported from tests.test_monitor are parameters here: that is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from relay.embedded import free_port
from tests.conftest import TEST_SECRETS
from tests.test_monitor import Realistic, merchant, realistic  # noqa: F401 - fixtures

RELAY = str(Path(sys.executable).with_name("relay"))


async def relay(*args: str, redis_url: str, config: Path, interrupt_after: float | None = None,
                ) -> tuple[int, str, str]:
    env = {**os.environ, **TEST_SECRETS, "REDIS_URL": redis_url, "COLUMNS": "200",
           "NO_COLOR": "1", "RELAY_CONFIG": ""}
    process = await asyncio.create_subprocess_exec(
        RELAY, *args, "--config", str(config), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    if interrupt_after is not None:
        await asyncio.sleep(interrupt_after)
        process.send_signal(signal.SIGINT)  # what Ctrl-C does
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_config(realistic: Realistic, tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(realistic.raw))  # no redis_url: REDIS_URL selects Redis
    return path


async def test_status_json(realistic: Realistic, redis_url: str, tmp_path: Path) -> None:
    """--json prints the snapshot: queue, DLQ, per-sink and per-source figures, rejections."""
    code, out, err = await relay("status", "--json", redis_url=redis_url,
                                 config=write_config(realistic, tmp_path))
    assert code == 0, err
    data = json.loads(out)
    assert data["queue"] == {"waiting": 0, "scheduled": 3, "in_progress": 0,
                             "oldest_waiting_age_s": None}
    assert data["dlq_size"] == 2
    assert len(data["workers"]) == 1
    assert data["sinks"]["shop"]["delivered"] == 3
    assert data["sinks"]["shop"]["latency"]["count"] == 3
    assert data["sinks"]["ops"]["retrying_now"] == 3
    assert data["sinks"]["ops"]["last_status"] == 503
    assert data["sinks"]["legacy"]["failed"] == 2 and data["sinks"]["legacy"]["gone"] is True
    assert data["sources"]["ivpay"]["inbound"] == {"stored": 3, "duplicate": 1, "bad_signature": 1}
    assert [r["error"] for r in data["rejections"]] == ["unknown_source", "bad_signature"]


async def test_status_table(realistic: Realistic, redis_url: str, tmp_path: Path) -> None:
    """The table names every sink and source and flags the gone sink and the rejections."""
    code, out, err = await relay("status", redis_url=redis_url,
                                 config=write_config(realistic, tmp_path))
    assert code == 0, err
    for text in ("shop", "ops", "legacy", "ivpay", "GONE", "HTTP 503", "bad_signature",
                 "Recent rejections", "Workers (1 alive)"):
        assert text in out, text


async def test_status_watch_until_ctrl_c(realistic: Realistic, redis_url: str,
                                         tmp_path: Path) -> None:
    """--watch keeps refreshing until Ctrl-C, then exits 0."""
    code, out, err = await relay("status", "--watch", redis_url=redis_url,
                                 config=write_config(realistic, tmp_path), interrupt_after=3.0)
    assert code == 0, err
    assert "legacy" in out


async def test_redis_unreachable(tmp_path: Path, redis: Any) -> None:
    """No Redis: exit 1, a clear message, and the URL's password is not printed."""
    config = tmp_path / "relay.yaml"
    config.write_text("sources: {}\n")
    url = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"
    code, out, err = await relay("status", "--json", redis_url=url, config=config)
    assert code == 1
    assert "cannot reach Redis" in err
    assert "hunter2-password" not in err and "***" in err
    assert out == ""
