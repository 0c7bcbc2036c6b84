# ruff: noqa: INP001, T201
"""Screenshots of the operator console for the README: the overview and a payment's timeline,
on a desktop and on a phone, written to docs/console-*.png.

    .venv/bin/python scripts/console_screenshots.py [--out docs]

It starts everything it shows on this machine: a throwaway redis-server (the one `relay dev`
uses), the ingress, a worker and a local merchant endpoint, sends a few signed webhooks (one
sink refuses paid events, one is down), then signs in to the console in Debian's Chromium
(`apt-get install chromium`; Playwright launches it by `executable_path`). Nothing leaves
loopback. The test suite never runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from relay.config.model import LoadedConfig, validate  # noqa: E402
from relay.embedded import EmbeddedRedis, free_port  # noqa: E402
from relay.ingress.app import create_app  # noqa: E402
from relay.redis import connect  # noqa: E402
from workers.settings import build_worker  # noqa: E402

TOKEN = "screenshot-admin-token"  # noqa: S105 - a throwaway relay on loopback
SECRET = "screenshot-psp-secret"  # noqa: S105
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TYPES = ("created", "pending", "paid", "expired")
PAYMENT = "pay_7Hq2Kx9"  # the timeline shown
SHOTS = (  # name, viewport, device scale, what to open
    ("console-overview", (1280, 900), 1, "#overview"),
    ("console-payment", (1280, 900), 1, f"#payment/{PAYMENT}"),
    ("console-overview-phone", (390, 844), 2, "#overview"),
    ("console-payment-phone", (390, 844), 2, f"#payment/{PAYMENT}"),
)


def config(redis_url: str, merchant: str) -> LoadedConfig:
    raw = {
        "redis_url": redis_url,
        "admin": {"token": TOKEN},
        "sources": {
            "acme-psp": {
                "provider": "hmac",
                "secret": SECRET,
                "signature_header": "X-Signature",
                "fields": {
                    "payment_id": "id",
                    "event": "type",
                    "reference": "order",
                    "amount": "amount",
                    "currency": "currency",
                    "tx_hash": "tx",
                    "event_id": "delivery",
                },
                "event_types": {t: f"payment.{t}" for t in TYPES},
            }
        },
        "sinks": {
            "shop": {"type": "http", "url": f"{merchant}/shop", "secret": WHSEC},
            "erp": {
                "type": "http",
                "url": f"{merchant}/erp",
                "secret": WHSEC,
                "events": ["payment.paid"],
            },
            "analytics": {
                "type": "http",
                "url": f"{merchant}/analytics",
                "secret": WHSEC,
                "retry": {"schedule": ["30m"], "jitter": 0},
            },
        },
    }
    return validate(raw, "<screenshots>", env={})


async def merchant() -> web.AppRunner:
    """/shop answers 200, /erp refuses the first paid event (400), /analytics is down (503)."""
    refused: list[int] = []

    async def shop(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def erp(request: web.Request) -> web.Response:
        await request.read()
        if not refused:
            refused.append(1)
            return web.json_response({"error": "unknown order", "order": "A-1042"}, status=400)
        return web.Response(text="ok")

    async def analytics(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=503, text="upstream maintenance")

    app = web.Application()
    app.router.add_post("/shop", shop)
    app.router.add_post("/erp", erp)
    app.router.add_post("/analytics", analytics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner


async def send(base: str, session: Any, payment: str, kind: str, **fields: str) -> None:
    body = orjson.dumps(
        {"id": payment, "type": kind, "delivery": f"{payment}-{kind}", "currency": "USDT", **fields}
    )
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with session.post(
        f"{base}/hooks/acme-psp", data=body, headers={"X-Signature": signature}
    ) as response:
        if response.status != 200:
            raise SystemExit(f"webhook refused: {await response.text()}")


async def seed(base: str, redis: Any) -> None:
    import aiohttp

    tx = "0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad43550bfbaf41bb1"
    async with aiohttp.ClientSession() as session:
        await send(base, session, PAYMENT, "created", order="A-1042", amount="149.90")
        await asyncio.sleep(0.5)
        await send(base, session, PAYMENT, "paid", order="A-1042", amount="149.90", tx=tx)
        await asyncio.sleep(0.5)
        await send(base, session, PAYMENT, "pending", order="A-1042", amount="149.90")
        for n, kind in enumerate(("paid", "created", "expired")):
            await send(base, session, f"pay_{n}x", kind, order=f"A-10{50 + n}", amount="20.00")
        await session.post(
            f"{base}/hooks/acme-psp", data=b'{"id":"x"}', headers={"X-Signature": "0"}
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = await redis.hgetall("relay:stats")
        if stats.get(b"dlv:erp:failed") == b"1" and stats.get(b"dlv:shop:delivered") == b"6":
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the relay did not settle within 20 s")


async def shoot(base: str, out: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        for name, (width, height), scale, where in SHOTS:
            context = await browser.new_context(
                viewport={"width": width, "height": height},
                device_scale_factor=scale,
                color_scheme="light",
            )
            page = await context.new_page()
            await page.goto(f"{base}/status")
            await page.get_by_label("Admin token").fill(TOKEN)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_selector("body[data-live='1']")
            await page.goto(f"{base}/status{where}")
            ready = "article.payment" if "payment" in where else "article.sink"
            await page.locator(ready).first.wait_for()
            # The desktop pages whole; a phone's first screen, as it is seen.
            await page.screenshot(path=str(out / f"{name}.png"), full_page=width > 400)
            print(f"wrote {out / name}.png")
            await context.close()
        await browser.close()


async def main(out: Path, chromium: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = EmbeddedRedis(Path(tmp), appendonly=False).start()
        runner = await merchant()
        merchant_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", merchant_port).start()
        loaded = config(redis_server.url, f"http://127.0.0.1:{merchant_port}")
        ingress = web.AppRunner(create_app(loaded), access_log=None)
        await ingress.setup()
        port = free_port()
        await web.TCPSite(ingress, "127.0.0.1", port).start()
        worker = build_worker(loaded, handle_signals=False, poll_delay=0.01)
        task = asyncio.create_task(worker.async_run())
        redis = connect(redis_server.url)
        try:
            base = f"http://127.0.0.1:{port}"
            await seed(base, redis)
            await shoot(base, out, chromium)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await worker.close()
            await redis.aclose()
            await ingress.cleanup()
            await runner.cleanup()
            redis_server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    out = parser.parse_args().out
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        raise SystemExit("Chromium not found: apt-get install chromium")
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(out, chromium))
