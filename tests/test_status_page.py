"""The /status page in a real headless Chromium: figures rendered, script running, nothing
injected; and the README's screenshot (docs/status.png) from a realistic state.

Chromium is Debian's `chromium` package. When it is missing and we are root with apt-get,
the session installs it once (a fresh CI box needs nothing done by hand); otherwise the tests
are skipped with the reason.
"""

# Fixtures imported from tests.test_monitor are parameters here: that is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_monitor import (  # noqa: F401 - fixtures
    ADMIN_TOKEN,
    Realistic,
    merchant,
    realistic,
    realistic_with_token,
)

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "status.png"
CHROMIUM_TIMEOUT_S = 60
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary, installed with apt-get when missing and we may; else a skip."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    apt = shutil.which("apt-get")
    if not apt or os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} missing and cannot install it (needs root and apt-get): "
                    "apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900,
                              check=False)
        if done.returncode != 0:
            pytest.skip(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


@pytest.fixture
def profile() -> Iterator[str]:
    """A throwaway profile directory, so runs never share state (or a lock)."""
    with tempfile.TemporaryDirectory(prefix="relay-chromium-") as path:
        yield path


async def run_chromium(binary: str, profile: str, *args: str) -> str:
    """Run headless Chromium to completion while this loop keeps serving the relay."""
    process = await asyncio.create_subprocess_exec(
        binary, *FLAGS, f"--user-data-dir={profile}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
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


async def test_page_renders_figures_in_chromium(chromium: str, profile: str,
                                                realistic_with_token: Realistic) -> None:
    """The page, opened with ?token= as on a phone, shows the figures, and its script runs:
    it refreshes the figures from the relay and keeps the token for its own requests."""
    client = realistic_with_token.client
    # The request carries attacker-chosen text in the URL path; the page must show it as text.
    hostile = "<img src=x onerror=alert(1)>"
    assert (await client.post(f"/hooks/{hostile}", data=b"{}")).status == 404

    url = str(client.make_url("/status").with_query(token=ADMIN_TOKEN))
    started = time.monotonic()
    # Virtual time: the page's 5 s refresh timer fires at once, and Chromium waits for it.
    dom = await run_chromium(chromium, profile, "--virtual-time-budget=12000",
                             "--window-size=390,844", "--dump-dom", url)
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
    # The script keeps ?token= on its own links, so refreshes stay authorized.
    assert f'href="status.json?token={ADMIN_TOKEN}"' in dom


async def test_screenshot_for_readme(chromium: str, profile: str, realistic: Realistic,
                                     tmp_path: Path) -> None:
    """A 1200x900 screenshot of the page with deliveries, a retrying sink, a gone sink with
    dead letters and rejections. It is written to docs/status.png when that file is missing
    or RELAY_UPDATE_SCREENSHOT=1 (so a normal run leaves the committed picture alone)."""
    update = not SCREENSHOT.exists() or os.environ.get("RELAY_UPDATE_SCREENSHOT") == "1"
    target = tmp_path / "status.png"
    await run_chromium(chromium, profile, "--window-size=1200,900", f"--screenshot={target}",
                       "--virtual-time-budget=2000", str(realistic.client.make_url("/status")))
    png = target.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1200  # IHDR width
    if update:
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(target, SCREENSHOT)
