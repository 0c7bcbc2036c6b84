"""`relay status` as a user runs it: the console script in a subprocess, on the test Redis."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import signal
import struct
import sys
import termios
from pathlib import Path
from typing import Any

import yaml

from relay.embedded import free_port
from tests.conftest import TEST_SECRETS, Realistic, wait_for

RELAY = str(Path(sys.executable).with_name("relay"))


def relay_env(redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **TEST_SECRETS,
        "REDIS_URL": redis_url,
        # The size of the test's terminal (200 x 200): as a terminal sets them, and not what
        # this process may have inherited (pytest-xdist's workers have LINES=24 COLUMNS=80).
        "COLUMNS": "200",
        "LINES": "200",
        "NO_COLOR": "1",
        "RELAY_CONFIG": "",
    }


async def relay(*args: str, redis_url: str, config: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        RELAY,
        *args,
        "--config",
        str(config),
        env=relay_env(redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def ctrl_c(process: asyncio.subprocess.Process) -> int:
    """Ctrl-C (SIGINT), then the exit code (killed after 10 s: the test fails)."""
    process.send_signal(signal.SIGINT)
    try:
        return await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("relay status --watch did not stop on Ctrl-C") from None


async def typo(realistic: Realistic) -> None:
    """A rejection that exists only from now on: a POST to a source that is not configured."""
    assert (await realistic.client.post("/hooks/watched-typo", data=b"{}")).status == 404


def write_config(realistic: Realistic, tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(realistic.raw))  # no redis_url: REDIS_URL selects Redis
    return path


async def test_status_json(realistic: Realistic, redis_url: str, tmp_path: Path) -> None:
    """--json prints the snapshot: queue, DLQ, per-sink and per-source figures, rejections."""
    code, out, err = await relay(
        "status", "--json", redis_url=redis_url, config=write_config(realistic, tmp_path)
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["queue"] == {
        "waiting": 0,
        "scheduled": 3,
        "in_progress": 0,
        "oldest_waiting_age_s": None,
        "held": 0,
    }
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
    code, out, err = await relay(
        "status", redis_url=redis_url, config=write_config(realistic, tmp_path)
    )
    assert code == 0, err
    for text in (
        "shop",
        "ops",
        "legacy",
        "ivpay",
        "GONE",
        "HTTP 503",
        "bad_signature",
        "Recent rejections",
        "Workers (1 alive)",
    ):
        assert text in out, text


async def test_status_watch_json_refreshes(
    realistic: Realistic, redis_url: str, tmp_path: Path
) -> None:
    """--watch --json prints a snapshot per refresh: a rejection made after the first one is in
    a later one (so the loop reads Redis again, not the first snapshot); Ctrl-C exits 0."""
    process = await asyncio.create_subprocess_exec(
        RELAY,
        "status",
        "--watch",
        "--json",
        "--config",
        str(write_config(realistic, tmp_path)),
        env=relay_env(redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 15))
        assert [r["source"] for r in first["rejections"]] == ["ivpey", "ivpay"]
        await typo(realistic)
        later = json.loads(await asyncio.wait_for(process.stdout.readline(), 15))
        assert later["rejections"][0]["source"] == "watched-typo"
        assert later["dlq_size"] == first["dlq_size"] == 2
    finally:
        code = await ctrl_c(process)
    assert code == 0


async def test_status_watch_table_refreshes_until_ctrl_c(
    realistic: Realistic, redis_url: str, tmp_path: Path
) -> None:
    """--watch on a terminal (a pty): the table is drawn, drawn again with a rejection made after
    it was first drawn, and Ctrl-C exits 0."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 200, 200, 0, 0))
    process = await asyncio.create_subprocess_exec(
        RELAY,
        "status",
        "--watch",
        "--config",
        str(write_config(realistic, tmp_path)),
        env=relay_env(redis_url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=slave,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(slave)
    screen = bytearray()

    def read() -> None:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            chunk = b""
        if chunk:
            screen.extend(chunk)
        else:
            loop.remove_reader(master)

    loop = asyncio.get_running_loop()
    loop.add_reader(master, read)
    try:
        await wait_for(lambda: b"Recent rejections" in screen, timeout=15)
        assert b"watched-typo" not in screen
        await typo(realistic)
        await wait_for(lambda: b"watched-typo" in screen, timeout=15)
    finally:
        code = await ctrl_c(process)
        loop.remove_reader(master)
        os.close(master)
    assert code == 0


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


async def test_status_check_exit_codes(
    realistic: Realistic, redis_url: str, tmp_path: Path
) -> None:
    """SPEC 8: --check exits 1 with a gone sink and new dead letters, 2 with no Redis."""
    config = write_config(realistic, tmp_path)
    code, out, err = await relay("status", "--check", redis_url=redis_url, config=config)
    assert code == 1, (out, err)
    assert "degraded: sink legacy is gone" in out
    assert "degraded: 2 new dead letter(s) in the last hour" in out
    dead = f"redis://127.0.0.1:{free_port()}/0"
    code, out, _ = await relay("status", "--check", redis_url=dead, config=config)
    assert code == 2 and out.startswith("unhealthy: cannot reach Redis"), out


async def test_status_fits_80_columns_and_a_closed_pipe_is_quiet(
    realistic: Realistic, redis_url: str, tmp_path: Path
) -> None:
    """At 80 columns no header or name is cut; `--watch --json | head -1` ends cleanly."""
    config = write_config(realistic, tmp_path)
    env = {**relay_env(redis_url), "COLUMNS": "80"}
    process = await asyncio.create_subprocess_exec(
        RELAY, "status", "--config", str(config), env=env, stdout=asyncio.subprocess.PIPE
    )
    out = (await asyncio.wait_for(process.communicate(), 30))[0].decode()
    assert process.returncode == 0
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    for name in ("shop", "ops", "legacy", "ivpay", "delivered", "retrying"):
        assert name in out, name
    shell = await asyncio.create_subprocess_shell(
        f"'{RELAY}' status --watch --json --config '{config}' | head -1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    first, err = await asyncio.wait_for(shell.communicate(), 30)
    assert json.loads(first)["dlq_size"] == 2
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
