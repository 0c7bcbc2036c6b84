"""The open /status page (no `admin.token`: read-only, as before the console) in a real
headless Chromium: figures rendered, script running, nothing injected; and a screenshot of it
from a realistic state (written under the test's tmp_path, never into the repository: copy it
to docs/status.png by hand to update the README's). With a token, /status is the console:
tests/test_console.py.

Needs Chromium: /usr/bin/chromium or `chromium` on PATH (Debian/Ubuntu: `apt-get install
chromium`). Without it these tests are skipped; the suite installs nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import Realistic

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_TIMEOUT_S = 60
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
]


def find_chromium() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary, or a skip saying how to get one (nothing is installed here)."""
    found = find_chromium()
    if found is None:
        pytest.skip(
            f"Chromium not found ({CHROMIUM} or `chromium` on PATH): install it to run "
            "the status-page browser tests, e.g. `apt-get install chromium`"
        )
    return found


@pytest.fixture
def profile(tmp_path: Path) -> str:
    """A throwaway profile directory, so runs never share state (or a lock)."""
    return str(tmp_path / "chromium-profile")


async def run_chromium(binary: str, profile: str, *args: str) -> str:
    """Run headless Chromium to completion while this loop keeps serving the relay."""
    process = await asyncio.create_subprocess_exec(
        binary,
        *FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CHROMIUM_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def figure(dom: str, key: str, scope: str = "") -> str:
    """The text of the first `data-k="<key>"` element (after `scope`, e.g. a sink's card)."""
    start = dom.index(scope) if scope else 0
    match = re.search(rf'data-k="{key}"[^>]*>([^<]*)<', dom[start:])
    assert match, f"no figure {key!r} after {scope!r}"
    return match.group(1).strip()


async def test_page_renders_figures_in_chromium(
    chromium: str, profile: str, realistic: Realistic
) -> None:
    """The open page, on a phone-sized window, shows the figures and says to set admin.token
    for the console; its script runs: it refreshes the figures from the relay."""
    client = realistic.client
    # The request carries attacker-chosen text in the URL path; the page must show it as text.
    hostile = "<img src=x onerror=alert(1)>"
    assert (await client.post(f"/hooks/{hostile}", data=b"{}")).status == 404

    url = str(client.make_url("/status"))
    started = time.monotonic()
    # Virtual time: the page's 5 s refresh timer fires at once, and Chromium waits for it.
    dom = await run_chromium(
        chromium, profile, "--virtual-time-budget=12000", "--window-size=390,844", "--dump-dom", url
    )
    elapsed = time.monotonic() - started
    print(f"chromium --dump-dom took {elapsed:.2f}s")

    assert 'data-live="1"' in dom, "the page's script did not run"
    assert re.search(r'data-refreshes="[1-9]', dom), "the page never refreshed itself"
    assert figure(dom, "scheduled") == "3"
    assert figure(dom, "dlq") == "2"
    assert figure(dom, "workers") == "1"
    assert figure(dom, "waiting") == "0"
    assert figure(dom, "delivered", 'data-sink="shop"') == "3"
    assert figure(dom, "retrying", 'data-sink="ops"') == "3"
    assert figure(dom, "failed", 'data-sink="legacy"') == "2"
    assert "gone (404/410)" in dom
    assert "HTTP 503" in dom
    assert figure(dom, "stored", 'data-source="ivpay"') == "3"
    assert "bad_signature" in dom and "ivpey" in dom
    # Escaped, never markup: no element was injected by the request's path.
    assert "<img src=" not in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom
    assert 'id="no-token"' in dom and "set <code>admin.token</code>" in dom


async def test_screenshot(
    chromium: str, profile: str, realistic: Realistic, tmp_path: Path
) -> None:
    """A 1200x900 screenshot of the page with deliveries, a retrying sink, a gone sink with
    dead letters and rejections, written to tmp_path (its path is printed)."""
    target = tmp_path / "status.png"
    await run_chromium(
        chromium,
        profile,
        "--window-size=1200,900",
        f"--screenshot={target}",
        "--virtual-time-budget=2000",
        str(realistic.client.make_url("/status")),
    )
    png = target.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1200  # IHDR width
    assert int.from_bytes(png[20:24], "big") == 900  # IHDR height
    print(f"status page screenshot: {target}")
