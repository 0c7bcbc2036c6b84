"""Self-test of the clock-shift harness (tests/clockshift/, processes.clock_shift_env): a child's
wall clock moves by the shift, its monotonic clocks do not."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.processes import RelayProcess, clock_shift_env, write_config

PROBE = """
import asyncio, datetime, json, pickle, time
import uvloop
utc = datetime.timezone.utc
print(json.dumps({
    "time": time.time(),
    "time_ns": time.time_ns() / 1e9,
    "clock_realtime": time.clock_gettime(time.CLOCK_REALTIME),
    "now": datetime.datetime.now().timestamp(),
    "now_utc": datetime.datetime.now(utc).timestamp(),
    "utcnow": datetime.datetime.utcnow().replace(tzinfo=utc).timestamp(),
    "today": datetime.datetime.today().timestamp(),
    "gmtime": time.mktime(time.localtime()),
    "date_today": datetime.date.today().toordinal(),
    "monotonic": time.monotonic(),
    "asyncio_loop": asyncio.new_event_loop().time(),
    "uvloop_loop": uvloop.new_event_loop().time(),
    "plain": type(datetime.datetime.now()) is datetime.datetime,
    "pickled": pickle.dumps(datetime.datetime(2020, 1, 2, 3, 4, 5)).hex(),
}))
"""
WALL = ("time", "time_ns", "clock_realtime", "now", "now_utc", "utcnow", "today")
MONOTONIC = ("monotonic", "asyncio_loop", "uvloop_loop")


def probe(env: dict[str, str]) -> tuple[dict[str, Any], tuple[float, float], tuple[float, float]]:
    """The child's readings, and this process's wall and monotonic time around the child."""
    wall0, mono0 = time.time(), time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, check=True, timeout=30
    )
    wall1, mono1 = time.time(), time.monotonic()
    assert not out.stderr, out.stderr  # no warning (e.g. a C extension's datetime size check)
    return json.loads(out.stdout), (wall0, wall1), (mono0, mono1)


@pytest.mark.parametrize("shift", [-600.0, 3600.5])
def test_wall_clock_shifted_monotonic_not(shift: float) -> None:
    seen, (wall0, wall1), (mono0, mono1) = probe(clock_shift_env(shift))
    for name in WALL:
        assert wall0 + shift - 0.01 <= seen[name] <= wall1 + shift + 0.01, name
    assert wall0 + shift - 1.01 <= seen["gmtime"] <= wall1 + shift + 0.01  # whole seconds
    low = datetime.fromtimestamp(wall0 + shift).date().toordinal()
    high = datetime.fromtimestamp(wall1 + shift).date().toordinal()
    assert low <= seen["date_today"] <= high
    # CLOCK_MONOTONIC is one clock for the whole host: the child's reads fall inside ours.
    for name in MONOTONIC:
        assert mono0 - 0.01 <= seen[name] <= mono1 + 0.01, name  # uvloop: whole ms
    # Every datetime stays a plain datetime: exact type checks, pickles elsewhere.
    assert seen["plain"] is True
    loaded = pickle.loads(bytes.fromhex(str(seen["pickled"])))
    assert type(loaded) is datetime and loaded == datetime(2020, 1, 2, 3, 4, 5)


def test_no_shift_without_the_variable() -> None:
    env = clock_shift_env(0)
    del env["RELAY_TEST_CLOCK_SHIFT_S"]
    seen, (wall0, wall1), _ = probe(env)
    for name in WALL:
        assert wall0 - 0.01 <= seen[name] <= wall1 + 0.01, name


def test_a_bad_shift_fails_the_child_loudly() -> None:
    env = clock_shift_env(0)
    env["RELAY_TEST_CLOCK_SHIFT_S"] = "ten minutes"
    done = subprocess.run(
        [sys.executable, "-c", "print('ran')"],
        env=env,
        check=False,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode != 0 and b"ran" not in done.stdout
    assert b"RELAY_TEST_CLOCK_SHIFT_S" in done.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_relay_process_runs_with_a_shifted_clock(
    command: str, tmp_path: Path, redis_url: str
) -> None:
    """RelayProcess(clock_shift_s=...): the relay's own log timestamps (structlog, from
    datetime.now) come from the shifted clock."""
    shift = -3600.0
    config = write_config(
        tmp_path,
        {
            "redis_url": redis_url,
            "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
            "sinks": {},
        },
    )
    began = time.time()
    child = RelayProcess(command, config, tmp_path, redis_url, clock_shift_s=shift).start()
    try:
        await child.ready()
    finally:
        child.stop()
    ended = time.time()
    first = json.loads(child.log_path.read_text().splitlines()[0])
    logged = datetime.fromisoformat(first["timestamp"]).timestamp()
    assert began + shift - 0.01 <= logged <= ended + shift + 0.01, first
