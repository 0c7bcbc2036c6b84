"""The operator console (`/status` with `admin.token` set, SPEC 10) in a real Chromium driven
by Playwright, against a real Redis, a real ingress on loopback, a real worker and real local
sinks (tests/sink_servers.py): sign-in and the cookie's flags, search by payment id and by
reference, pause and resume (checked with `relay sinks --json`), replay of a dead letter,
cross-site posts refused, the keyboard, and the phone layout.

Needs Debian's Chromium (`apt-get install chromium`): Playwright's own browser download
cannot work here, so it is launched by `executable_path`. Without it (or without the
playwright package of the dev extra) these browser tests are skipped, saying why; the
session checks that need no browser run all the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay import operator
from relay.ingress import auth
from tests.conftest import ADMIN_TOKEN, REPO, TEST_SECRETS, Client, wait_for
from tests.sink_servers import Reply, SinkServer

CHROMIUM = "/usr/bin/chromium"
SECRET = "console-test-secret-0001"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EXCERPT = "<img src=x onerror=alert(1)> no such order"
TYPES = ("created", "pending", "paid", "expired")


def find_chromium() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless Debian Chromium for the session, or a skip saying how to get one."""
    found = find_chromium()
    if found is None:
        pytest.skip(
            f"Chromium not found ({CHROMIUM} or `chromium` on PATH): install it to run the "
            "console's browser tests, e.g. `apt-get install chromium`"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=found,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield chromium
        await chromium.close()


# --- the relay: a PSP signing with an HMAC, a good sink and one that refuses paid events ------


def console_config(server: SinkServer, token: str = ADMIN_TOKEN) -> dict[str, Any]:
    return {
        "admin": {"token": token},
        "sources": {
            "psp": {
                "provider": "hmac",
                "secret": SECRET,
                "signature_header": "X-Sig",
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
            "shop": {"type": "http", "url": server.url("/shop"), "secret": WHSEC},
            "books": {
                "type": "http",
                "url": server.url("/books"),
                "secret": WHSEC,
                "events": ["payment.paid"],
            },
        },
    }


async def send(client: Client, payment: str, kind: str, **extra: str) -> None:
    body = orjson.dumps(
        {
            "id": payment,
            "type": kind,
            "order": f"order-{payment}",
            "amount": "0.000010",
            "currency": "BTC",
            "delivery": f"{payment}-{kind}",
            **extra,
        }
    )
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = await client.post("/hooks/psp", data=body, headers={"X-Sig": signature})
    assert response.status == 200, await response.text()


@dataclass
class Relay:
    client: Client
    raw: dict[str, Any]
    loaded: Any
    sinks: SinkServer
    redis: Any
    redis_url: str

    def url(self, path: str = "/status") -> str:
        return str(self.client.make_url(path))


async def seed(client: Client, sinks: SinkServer, redis: Any) -> None:
    """Payments p1 (created, then paid), p2 (paid, then a stale pending), p3 (created); the
    books sink refuses each paid event with 400 (two dead letters); a bad signature."""
    sinks.script("/books", [Reply.error(400, EXCERPT)] * 2)
    await send(client, "p1", "created")
    await wait_for(lambda: len(sinks.requests("/shop")) == 1)
    await send(client, "p1", "paid", tx="0xfeedbeef")
    await send(client, "p2", "paid")
    await wait_for(lambda: len(sinks.requests("/shop")) == 3)
    await send(client, "p2", "pending")
    await send(client, "p3", "created")
    forged = await client.post("/hooks/psp", data=b'{"id":"p9"}', headers={"X-Sig": "00"})
    assert forged.status == 401

    async def settled() -> bool:
        stats = await redis.hgetall("relay:stats")
        return (
            stats.get(b"dlv:shop:delivered") == b"5"
            and stats.get(b"dlv:books:failed") == b"2"
            and await redis.zcard("relay:queue") == 0
        )

    await wait_for(settled, timeout=15)


@pytest_asyncio.fixture
async def relay(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    redis: Any,
    redis_url: str,
) -> Relay:
    raw = console_config(sink_server)
    client = await ingress(raw)
    loaded = config_factory(raw)
    await run_worker(loaded)
    await seed(client, sink_server, redis)
    return Relay(client, raw, loaded, sink_server, redis, redis_url)


@pytest_asyncio.fixture
async def page(browser: Any, relay: Relay) -> AsyncIterator[Any]:
    """A fresh browser context (no cookie) with a page signed in to the console."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    await sign_in(tab, relay)
    yield tab
    await context.close()
    assert errors == [], "the console's script failed"


async def sign_in(tab: Any, relay: Relay, token: str = ADMIN_TOKEN) -> None:
    await tab.goto(relay.url())
    await tab.get_by_label("Admin token").fill(token)
    await tab.get_by_role("button", name="Sign in").click()
    await tab.wait_for_selector("body[data-live='1']")


async def relay_sinks_json(relay: Relay, tmp_path: Path) -> dict[str, str]:
    """`relay sinks --json` in a subprocess: {sink: state}."""
    config = tmp_path / "relay.yaml"
    config.write_text(yaml.safe_dump(relay.raw))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay.cli",
        "sinks",
        "--json",
        "--config",
        str(config),
        cwd=REPO,
        env={**os.environ, **TEST_SECRETS, "REDIS_URL": relay.redis_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return {s["name"]: s["state"] for s in orjson.loads(out)["sinks"]}


async def held_jobs(relay: Relay) -> int:
    found = await operator.sinks_list(relay.redis, relay.loaded.config)
    return sum(s["held"] for s in found["sinks"])


async def sink_states(relay: Relay) -> dict[str, str]:
    found = await operator.sinks_list(relay.redis, relay.loaded.config)
    return {s["name"]: s["state"] for s in found["sinks"]}


async def no_sideways_scroll(tab: Any) -> None:
    widths = await tab.evaluate(
        "[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert max(widths[:2]) <= widths[2], widths


# --- sign-in ----------------------------------------------------------------------------------


async def test_sign_in_refuses_a_wrong_token_and_sets_a_strict_httponly_cookie(
    browser: Any, relay: Relay
) -> None:
    context = await browser.new_context()
    tab = await context.new_page()
    first = await tab.goto(relay.url())
    assert first.status == 401  # not signed in: the form
    await tab.get_by_label("Admin token").fill("not-the-token")
    async with tab.expect_response(relay.url("/status/sign-in")) as answer:
        await tab.get_by_role("button", name="Sign in").click()
    assert (await answer.value).status == 401
    assert "Wrong token" in await tab.get_by_role("alert").inner_text()
    assert await context.cookies() == []

    await sign_in(tab, relay)
    assert tab.url == relay.url()  # no token in the address
    [cookie] = await context.cookies()
    assert cookie["name"] == auth.SESSION_COOKIE
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http here; Secure over HTTPS (tested below)
    assert cookie["path"] == "/"
    assert abs(cookie["expires"] - (time.time() + auth.SESSION_TTL_S)) < 120
    assert ADMIN_TOKEN not in cookie["value"]
    assert await tab.evaluate("document.cookie") == ""  # no script can read it

    await tab.get_by_role("button", name="Sign out").click()
    await tab.get_by_label("Admin token").wait_for()
    assert await context.cookies() == []
    await context.close()


async def test_an_old_token_link_signs_in_and_drops_the_token(browser: Any, relay: Relay) -> None:
    context = await browser.new_context()
    tab = await context.new_page()
    wrong = await tab.goto(relay.url() + "?token=wrong")
    assert wrong.status == 401
    assert "not the admin token" in await tab.get_by_role("alert").inner_text()
    await tab.goto(relay.url() + f"?token={ADMIN_TOKEN}")
    await tab.wait_for_selector("body[data-live='1']")
    assert tab.url == relay.url()
    assert [c["name"] for c in await context.cookies()] == [auth.SESSION_COOKIE]
    await context.close()


# --- search: the timeline ---------------------------------------------------------------------


async def test_search_by_payment_id_shows_the_timeline_with_attempts(
    page: Any, relay: Relay
) -> None:
    await page.get_by_label("Search").fill("p1")
    await page.get_by_label("Search").press("Enter")
    payment = page.locator("article.payment[data-payment='p1']")
    await payment.wait_for()
    assert page.url.endswith("#payment/p1")
    events = payment.locator("li.event")
    assert await events.count() == 2
    first, paid = events.nth(0), events.nth(1)
    assert "#1" in await first.locator(".seq").inner_text()
    assert "payment.created" in await first.inner_text()
    assert "#2" in await paid.locator(".seq").inner_text()
    text = await paid.inner_text()
    assert "payment.paid" in text and "0.000010 BTC" in text and "0xfeedbeef" in text
    shop = paid.locator("section.delivery[data-sink='shop']")
    assert "delivered" in await shop.inner_text()
    assert "HTTP 200" in await shop.locator("li.attempt").inner_text()
    assert " ms" in await shop.locator("li.attempt").inner_text()
    books = paid.locator("section.delivery[data-sink='books']")
    assert await books.get_attribute("data-state") == "failed"
    assert "HTTP 400" in await books.inner_text()
    # The sink's answer is shown as text: no element was made of it.
    assert await books.locator("pre.answer").inner_text() == EXCERPT
    assert await page.locator("#payment img").count() == 0

    # "Replay" on the failed delivery sends it again: the sink now answers 200.
    before = len(relay.sinks.requests("/books"))
    await books.get_by_role("button", name="Replay").click()
    await page.get_by_text("Replay queued: 1 delivery to books").wait_for()
    delivered = await relay.sinks.wait_for_requests(before + 1, "/books")
    assert delivered[-1].status == 200


async def test_search_by_reference_shows_the_stale_event(page: Any) -> None:
    await page.get_by_label("Search").fill("order-p2")
    await page.get_by_role("button", name="Find").click()
    payment = page.locator("article.payment[data-payment='p2']")
    await payment.wait_for()
    events = payment.locator("li.event")
    assert await events.count() == 2
    stale = events.nth(1)
    assert "payment.pending" in await stale.inner_text()
    assert await stale.locator(".pill.stale").inner_text() == "stale"
    assert "Status now" in await payment.inner_text() and "paid" in await payment.inner_text()
    assert await events.nth(0).locator(".pill.stale").count() == 0

    await page.get_by_label("Search").fill("nothing-like-it")
    await page.get_by_label("Search").press("Enter")
    await page.get_by_text("Nothing found for “nothing-like-it”").wait_for()


# --- pause, resume, replay ------------------------------------------------------------------


async def test_pause_and_resume_a_sink(page: Any, relay: Relay, tmp_path: Path) -> None:
    shop = page.locator("article.sink[data-sink='shop']")
    await shop.get_by_role("button", name="Pause").click()
    await page.locator("article.sink[data-sink='shop'][data-state='paused']").wait_for()
    assert "paused" in await shop.locator(".pill").inner_text()
    assert (await relay_sinks_json(relay, tmp_path))["shop"] == "paused"

    await send(relay.client, "p4", "created")  # held while paused

    await wait_for(lambda: held_jobs(relay))
    await page.reload()  # else shown at the next refresh (every 5 s)
    assert await shop.locator("[data-k='held']").inner_text() == "1"
    await shop.get_by_role("button", name="Resume").click()
    await page.locator("article.sink[data-sink='shop'][data-state='active']").wait_for()
    assert await sink_states(relay) == {"shop": "active", "books": "active"}
    assert (await relay_sinks_json(relay, tmp_path))["shop"] == "active"
    await relay.sinks.wait_for_requests(6, "/shop")  # the held delivery went out


async def test_replay_a_dead_letter_reaches_the_sink(page: Any, relay: Relay) -> None:
    await page.get_by_role("link", name="Dead letters").click()
    letters = page.locator("li.letter")
    await letters.first.wait_for()
    assert await letters.count() == 2
    assert await page.locator("#dead-letters pre").first.inner_text() == EXCERPT
    before = len(relay.sinks.requests("/books"))
    await letters.first.get_by_role("button", name="Replay").click()
    await page.get_by_text("Replayed 1 dead letter(s) to books.").wait_for()
    received = await relay.sinks.wait_for_requests(before + 1, "/books")
    assert received[-1].status == 200
    assert received[-1].json()["type"] == "payment.paid"

    async def one_left() -> bool:
        return await page.locator("li.letter").count() == 1

    await wait_for(one_left, timeout=5)

    # Every dead letter of one sink at once (after a confirmation).
    async def confirm(dialog: Any) -> None:
        await dialog.accept()

    page.once("dialog", confirm)
    await page.locator("#dead-letters-form select[name='sink']").select_option("books")
    await page.locator("#dead-letters-form").get_by_role("button", name="Show").click()
    await page.get_by_role("button", name="Replay all of books").click()
    await page.get_by_text("No dead letter for books.").wait_for()
    await relay.sinks.wait_for_requests(before + 2, "/books")


async def test_lists_events_filtered_and_rejections_replayed(page: Any) -> None:
    await page.get_by_role("link", name="Events").click()
    form = page.locator("#events-form")
    await form.locator("select[name='sink']").select_option("books")
    await form.locator("select[name='state']").select_option("failed")
    await form.get_by_role("button", name="Show").click()
    await page.get_by_text("2 event(s), newest first.").wait_for()
    assert await page.locator("#events li.item").count() == 2
    assert "payment.paid" in await page.locator("#events").inner_text()

    await page.get_by_role("link", name="Rejections").click()
    rejection = page.locator("li.rejection").first
    await rejection.wait_for()
    assert "bad_signature" in await rejection.inner_text()
    await rejection.get_by_role("button", name="Show raw request").click()
    await rejection.locator("pre.raw-body").wait_for()
    assert await rejection.locator("pre.raw-body").inner_text() == '{"id":"p9"}'
    await rejection.get_by_role("button", name="Replay").click()
    await rejection.get_by_text("Still rejected: 401").wait_for()


# --- cross-site requests --------------------------------------------------------------------

ATTACK = """<!doctype html><title>win a prize</title>
<form method="post" action="{target}"><input type="hidden" name="for" value="1h">
<button>Claim</button></form>"""


@pytest_asyncio.fixture
async def attacker(relay: Relay) -> AsyncIterator[TestServer]:
    """A page on another origin (same host, another port) that posts a form to the relay."""
    target = relay.url("/api/sinks/shop/pause")

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=ATTACK.format(target=target), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", handler)
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


async def test_a_cross_site_form_post_does_not_pause_a_sink(
    page: Any, relay: Relay, attacker: TestServer
) -> None:
    for host in ("127.0.0.1", "localhost"):  # same site, another origin; another site
        evil = str(attacker.make_url("/")).replace("127.0.0.1", host)
        await page.goto(evil)
        async with page.expect_response(relay.url("/api/sinks/shop/pause")) as answer:
            await page.get_by_role("button", name="Claim").click()
        response = await answer.value
        # Same site: the cookie went, its Origin did not match. Another site: no cookie.
        expected = (403, "cross_site_request") if host == "127.0.0.1" else (401, "unauthorized")
        assert (response.status, (await response.json())["error"]) == expected
    assert (await sink_states(relay))["shop"] == "active"


async def test_cookie_posts_need_the_relays_own_origin(relay: Relay) -> None:
    cookie = {"Cookie": f"{auth.SESSION_COOKIE}={auth.new_session(ADMIN_TOKEN)}"}
    client = relay.client
    own = f"http://{relay.client.server.host}:{relay.client.server.port}"
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}):
        response = await client.post("/api/sinks/shop/pause", headers={**cookie, **headers})
        assert response.status == 403, headers
        assert (await response.json())["error"] == "cross_site_request"
    assert (await sink_states(relay))["shop"] == "active"
    referer = {"Referer": f"{own}/status"}
    assert (await client.post("/api/sinks/shop/pause", headers={**cookie, **referer})).status == 200
    response = await client.post("/api/sinks/shop/resume", headers={**cookie, "Origin": own})
    assert response.status == 200
    assert (await client.get("/api/sinks", headers=cookie)).status == 200  # a read needs none
    # A bearer token is no ambient credential: no Origin needed.
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await client.post("/api/sinks/shop/resume", headers=bearer)).status == 200
    # The sign-in form itself is refused from another origin.
    forged = await client.post(
        "/status/sign-in", data={"token": ADMIN_TOKEN}, headers={"Origin": "http://evil.example"}
    )
    assert forged.status == 403 and "Set-Cookie" not in forged.headers


# --- the session, without a browser -------------------------------------------------------------


async def test_a_tampered_expired_or_rotated_session_is_refused(
    ingress: Any, sink_server: SinkServer, redis: Any
) -> None:
    client = await ingress(console_config(sink_server))
    good = auth.new_session(ADMIN_TOKEN)
    version, expires, mac = good.split(".")
    later = f"{version}.{int(expires) + 3600}.{mac}"
    past = auth.new_session(ADMIN_TOKEN, now=time.time() - auth.SESSION_TTL_S - 1)
    rotated = auth.new_session("the-previous-token")
    tampered = good[:-1] + ("1" if good.endswith("0") else "0")  # never `good` itself
    for value in (later, past, rotated, tampered, "", "v1..", "garbage"):
        response = await client.get("/api/status", headers={"Cookie": f"relay_session={value}"})
        assert response.status == 401, value
    response = await client.get("/api/status", headers={"Cookie": f"relay_session={good}"})
    assert response.status == 200
    # Over HTTPS (a trusted proxy says so) the cookie is Secure.
    https = await ingress({**console_config(sink_server), "server": {"trusted_proxy_hops": 1}})
    signed = await https.post(
        "/status/sign-in",
        data={"token": ADMIN_TOKEN},
        headers={"X-Forwarded-Proto": "https", "Origin": f"http://{https.host}:{https.port}"},
        allow_redirects=False,
    )
    assert signed.status == 303
    set_cookie = signed.headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert f"Max-Age={auth.SESSION_TTL_S}" in set_cookie


async def test_without_admin_token_the_page_says_to_set_it(
    browser: Any, ingress: Any, sink_server: SinkServer, redis: Any
) -> None:
    client = await ingress(console_config(sink_server, token=""))
    context = await browser.new_context()
    tab = await context.new_page()
    await tab.goto(str(client.make_url("/status")))
    banner = await tab.locator("#no-token").inner_text()
    assert "admin.token" in banner and "console" in banner
    assert (await client.post("/status/sign-in", data={"token": "x"})).status == 403
    await context.close()


# --- keyboard and phone ---------------------------------------------------------------------


async def test_keyboard_reaches_search_and_replay(page: Any) -> None:
    for _ in range(6):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "search":
            break
    assert await page.evaluate("document.activeElement.id") == "search"
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    await page.keyboard.type("order-p1")
    await page.keyboard.press("Enter")
    replay = page.locator("section.delivery[data-sink='books']").get_by_role(
        "button", name="Replay"
    )
    await replay.wait_for()
    await replay.focus()
    await page.keyboard.press("Enter")
    await page.get_by_text("Replay queued").wait_for()


async def test_phone_layout_never_scrolls_sideways(browser: Any, relay: Relay) -> None:
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    tab = await context.new_page()
    await tab.goto(relay.url())
    await no_sideways_scroll(tab)  # the sign-in form
    await sign_in(tab, relay)
    await no_sideways_scroll(tab)
    await tab.goto(relay.url() + "#payment/p1")
    await tab.locator("article.payment").wait_for()
    await no_sideways_scroll(tab)
    for view, ready in (
        ("Events", "#events li.item"),
        ("Dead letters", "li.letter"),
        ("Rejections", "li.rejection"),
    ):
        await tab.get_by_role("link", name=view).click()
        await tab.locator(ready).first.wait_for()
        await no_sideways_scroll(tab)
    await tab.get_by_role("button", name="Show raw request").first.click()
    await tab.locator("pre.raw-body").wait_for()
    await no_sideways_scroll(tab)
    await context.close()
