"""Alerts and auto-pause (SPEC 12): each rule fires once, clears once, never repeats within
`repeat`, survives a restart, goes to every `alerts.to` sink but the one it is about; two
workers never both send one; a paused sink holds its deliveries and resume sends them.

The rules read the same Redis figures the worker and the ingress write (set here directly,
or through the real ingress and worker); alerts go over HTTP to the local Discord-like,
Slack-like and merchant servers (tests/sink_servers.py). Rounds are driven with an explicit
`now` where a rule needs time to pass, so no test waits out a threshold.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import structlog
from rich.console import Console
from standardwebhooks.webhooks import Webhook

from relay import pause
from relay.alerts_send import Evaluator
from relay.config.alerts import RULES
from relay.config.model import ConfigError, validate
from relay.ingress.admin import page_context, render_metrics
from relay.keys import Keys, alert_lease, alert_outbox, delivery_stat, reconcile_stat
from relay.monitor import take_snapshot
from relay.sinks import SINKS
from relay.status import render
from tests.conftest import IVPAY_KEY, MONITOR_WHSEC, ivpay_body, wait_for
from tests.sink_servers import Reply, SinkServer, discord_pings

KEYS = Keys()
ALERT_ID = re.compile(r"alr_[a-z2-7]+")
TARGETS = ("ops", "chat", "hook")


def raw_config(server: SinkServer, rules: dict[str, Any], **alerts: Any) -> dict[str, Any]:
    """Every rule off but `rules`; alerts to Discord (`ops`), Slack (`chat`), http (`hook`)."""
    section: dict[str, Any] = dict.fromkeys(RULES, False)
    section.update(rules)
    section.update({"to": list(TARGETS), "repeat": "1m", "interval": "50ms", **alerts})
    only_alerts = {"events": ["payment.review"]}  # no payment these tests send
    return {
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {
            "shop": {"type": "http", "url": server.url("/shop"), "secret": MONITOR_WHSEC},
            "ops": {"type": "discord", "url": server.discord_url(), **only_alerts},
            "chat": {"type": "slack", "url": server.slack_url(), **only_alerts},
            "hook": {
                "type": "http",
                "url": server.url("/alerts"),
                "secret": MONITOR_WHSEC,
                **only_alerts,
            },
        },
        "alerts": section,
    }


def received(server: SinkServer) -> dict[str, list[str]]:
    """Per target, the ids of the alerts it accepted (Discord's footer, Slack's context)."""
    found: dict[str, list[str]] = {}
    for name, url in (
        ("ops", server.discord_url()),
        ("chat", server.slack_url()),
        ("hook", server.url("/alerts")),
        ("shop", server.url("/shop")),
    ):
        accepted = [r for r in server.requests(url) if r.status and r.status < 300]
        ids = [m for r in accepted for m in ALERT_ID.findall(r.text)[:1]]
        found[name] = ids
    return found


def hook_alerts(server: SinkServer) -> list[dict[str, Any]]:
    return [r.json() for r in server.requests(server.url("/alerts"))]


class Harness:
    """Evaluators on the test Redis, as a worker runs them, one round at a time."""

    def __init__(self, redis: Any, loaded: Any, session: Any) -> None:
        self.redis, self.loaded, self.session = redis, loaded, session
        self.sinks = {n: SINKS[c.type](n, c) for n, c in loaded.config.sinks.items()}
        self.evaluator = self.new()

    def new(self) -> Evaluator:
        return Evaluator(self.redis, self.loaded, self.sinks, self.session, "test")

    async def round(self, now: float | None = None) -> list[dict[str, Any]]:
        assert await self.evaluator.lease.hold()
        return await self.evaluator.round(now)

    async def restart(self) -> None:
        await self.evaluator.stop()
        self.evaluator = self.new()


async def redis_now(redis: Any) -> float:
    seconds, micros = await redis.time()
    return int(seconds) + int(micros) / 1e6


async def failing(redis: Any, sink: str, at: float, *, retry: bool = True) -> None:
    """What the worker writes for a failed attempt, and the retry it schedules."""
    await redis.hset(
        KEYS.sink_health(sink),
        mapping={"last_error": "HTTP 503", "last_error_at": at, "last_status": 503},
    )
    if retry:
        await redis.zadd(KEYS.queue, {f"dlv_evt_aaaaaaaa_{sink}_2_0": (at + 3600) * 1000})


# --- each rule: fires once, no repeat, survives a restart, clears once ---------------------


@dataclass
class Ctx:
    redis: Any
    t0: float
    client: Any = None  # the ingress, for bad_signatures
    harness: Harness | None = None


Step = Callable[[Ctx], Awaitable[None]]


async def _nothing(ctx: Ctx) -> None:
    return None


async def _sink_down(ctx: Ctx) -> None:
    await failing(ctx.redis, "shop", ctx.t0)


async def _sink_ok(ctx: Ctx) -> None:
    await ctx.redis.hset(KEYS.sink_health("shop"), "last_ok_at", ctx.t0 + 100)


async def _gone(ctx: Ctx) -> None:
    await ctx.redis.hset(
        KEYS.sink_health("shop"),
        mapping={"gone": 1, "last_status": 410, "last_error": "HTTP 410", "last_error_at": ctx.t0},
    )


async def _not_gone(ctx: Ctx) -> None:
    await ctx.redis.hset(KEYS.sink_health("shop"), mapping={"gone": 0, "last_ok_at": ctx.t0 + 99})


async def _dead_letters(ctx: Ctx) -> None:
    await ctx.redis.hincrby(KEYS.stats, delivery_stat("shop", "failed"), 1)
    assert ctx.harness is not None
    assert await ctx.harness.round(ctx.t0 + 0.5) == []  # 1 new: under the threshold of 2
    await ctx.redis.hincrby(KEYS.stats, delivery_stat("shop", "failed"), 1)


async def _bad_keys(ctx: Ctx) -> None:
    for n in range(3):  # through the real ingress: a wrong API key is a bad signature
        answer = await ctx.client.post(
            "/hooks/ivpay", data=ivpay_body(f"p{n}"), headers={"X-API-KEY": "wrong-key"}
        )
        assert answer.status == 401


async def _old_job(ctx: Ctx) -> None:
    await ctx.redis.zadd(KEYS.queue, {"in_waiting": (ctx.t0 - 30) * 1000})


async def _no_job(ctx: Ctx) -> None:
    await ctx.redis.zrem(KEYS.queue, "in_waiting")


async def _worker_beats(ctx: Ctx) -> None:
    at = ctx.t0 + 100
    await ctx.redis.set(KEYS.worker("w1"), orjson.dumps({"id": "w1", "at": at}), ex=60)
    await ctx.redis.zadd(KEYS.workers, {"w1": at})


async def _reconciled(ctx: Ctx) -> None:
    await ctx.redis.hincrby(KEYS.stats, reconcile_stat("ivpay", "recovered"), 1)


async def _nearly_full(ctx: Ctx) -> None:
    used = int((await ctx.redis.info("memory"))["used_memory"])
    await ctx.redis.config_set("maxmemory", int(used / 0.6))


async def _no_limit(ctx: Ctx) -> None:
    await ctx.redis.config_set("maxmemory", 0)


async def _evicting(ctx: Ctx) -> None:
    await ctx.redis.config_set("maxmemory-policy", "allkeys-lru")


async def _noeviction(ctx: Ctx) -> None:
    await ctx.redis.config_set("maxmemory-policy", "noeviction")


async def _resume(ctx: Ctx) -> None:
    assert ctx.harness is not None
    assert (await pause.state(ctx.redis, KEYS, "shop")).paused  # auto-paused
    assert await pause.resume(ctx.redis, KEYS, ctx.harness.loaded.config, "shop") == 0


@dataclass
class Case:
    rule: str
    subject: str
    rules: dict[str, Any]
    start: Step
    stop: Step
    fire_at: float = 1.0  # seconds after t0 (fake) when it fires
    clear_at: float = 200.0  # seconds after t0 when it has cleared
    figure: str = ""  # part of the figure the message shows
    shop: dict[str, Any] | None = None  # overrides of sink `shop`
    ivpay: dict[str, Any] | None = None  # overrides of source `ivpay`


CASES = [
    Case("sink_failing", "shop", {"sink_failing": "10s"}, _sink_down, _sink_ok, 11, 101,
         "no successful delivery for 11s"),
    Case("sink_gone", "shop", {"sink_gone": True}, _gone, _not_gone, figure="HTTP 410"),
    Case("dead_letters", "dlq", {"dead_letters": 2}, _dead_letters, _nothing, 1, 62, "shop 2"),
    Case("bad_signatures", "ivpay", {"bad_signatures": "3/1m"}, _bad_keys, _nothing, 1, 80,
         "3 rejected in the last 1m"),
    Case("oldest_waiting", "queue", {"oldest_waiting": "20s"}, _old_job, _no_job, 1, 20,
         "the oldest has waited"),
    Case("no_worker", "workers", {"no_worker": "10s"}, _nothing, _worker_beats, 11, 100,
         "no worker heartbeat for 11s"),
    Case("reconciled", "ivpay", {"reconciled": True}, _reconciled, _nothing, 1, 62, "1 payment",
         ivpay={"reconcile": {"api_url": "http://127.0.0.1:9/ivpay"}}),
    Case("redis_memory", "memory", {"redis_memory": "50%"}, _nearly_full, _no_limit,
         figure="of maxmemory"),
    Case("redis_memory", "policy", {"redis_memory": "80%"}, _evicting, _noeviction,
         figure="maxmemory-policy allkeys-lru"),
    # Resumed at t0+21: a new run of failures would need 10 s more to pause it again.
    Case("auto_pause", "shop", {}, _sink_down, _resume, 11, 23, "no successful delivery",
         shop={"pause_after": "10s"}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}-{c.subject}" for c in CASES])
async def test_each_rule_fires_once_clears_once_and_survives_a_restart(
    case: Case, redis: Any, config_factory: Any, sink_server: SinkServer, sink_client: Any,
    ingress: Any,
) -> None:  # fmt: skip
    """Fires once when the condition holds, not again within `repeat` nor after a restart,
    once when it clears, then never again; the same alert reaches Discord, Slack and http."""
    raw = raw_config(sink_server, case.rules)
    raw["sinks"]["shop"].update(case.shop or {})
    raw["sources"]["ivpay"].update(case.ivpay or {})
    loaded = config_factory(raw)
    harness = Harness(redis, loaded, sink_client)
    ctx = Ctx(redis, await redis_now(redis), await ingress(raw), harness)
    try:
        assert await harness.round(ctx.t0) == []  # baselines: nothing yet
        await case.start(ctx)
        if case.fire_at > 1:
            assert await harness.round(ctx.t0 + 1) == []  # not for long enough yet
        [fired] = await harness.round(ctx.t0 + case.fire_at)
        assert (fired["rule"], fired["subject"], fired["state"]) == (
            case.rule,
            case.subject,
            "firing",
        )
        assert case.figure in fired["figure"], fired
        assert await harness.round(ctx.t0 + case.fire_at + 5) == []  # within repeat
        await harness.restart()
        assert await harness.round(ctx.t0 + case.fire_at + 10) == []  # a deploy re-sends nothing
        await case.stop(ctx)
        [cleared] = await harness.round(ctx.t0 + case.clear_at)
        assert (cleared["rule"], cleared["subject"], cleared["state"]) == (
            case.rule, case.subject, "resolved",
        )  # fmt: skip
        assert await harness.round(ctx.t0 + case.clear_at + 1) == []
    finally:
        await _no_limit(ctx)
        await _noeviction(ctx)
        await harness.evaluator.stop()
    sent = received(sink_server)
    assert sent["hook"] == [fired["id"], cleared["id"]]
    assert sent["ops"] == sent["chat"] == sent["hook"]  # Discord, Slack and http alike
    assert sent["shop"] == []  # not in alerts.to: never an alert
    assert [r.violations for r in sink_server.requests() if r.violations] == []


# --- who receives an alert ---------------------------------------------------------------


async def test_the_sink_an_alert_is_about_never_receives_it(
    redis: Any, config_factory: Any, sink_server: SinkServer, sink_client: Any
) -> None:
    """Discord (`ops`) failing: its alert goes to the other `to:` sinks, never to `ops`; with
    `ops` the only one, it is logged, and the log says why it was not sent."""
    raw = raw_config(sink_server, {"sink_failing": "5s"})
    harness = Harness(redis, config_factory(raw), sink_client)
    t0 = await redis_now(redis)
    await failing(redis, "ops", t0)
    await harness.round(t0)
    [alert] = await harness.round(t0 + 6)
    assert (alert["rule"], alert["subject"]) == ("sink_failing", "ops")
    sent = received(sink_server)
    assert sent["ops"] == [] and sent["chat"] == sent["hook"] == [alert["id"]]

    await harness.evaluator.stop()
    await redis.flushdb()
    sink_server.reset()
    raw["alerts"]["to"] = ["ops"]
    harness = Harness(redis, config_factory(raw), sink_client)
    await failing(redis, "ops", t0)
    await harness.round(t0)
    with structlog.testing.capture_logs() as logs:
        [alert] = await harness.round(t0 + 6)
    assert sink_server.requests() == []
    [line] = [e for e in logs if e.get("alert_id") == alert["id"]]
    assert line["event"] == "alert logged only: its only alert sink is the sink it is about"
    assert line["not_sent_to"] == ["ops"] and line["log_level"] == "warning"
    await harness.evaluator.stop()


async def test_an_alert_that_cannot_be_sent_is_retried_not_lost(
    redis: Any, config_factory: Any, sink_server: SinkServer, sink_client: Any
) -> None:
    """Discord answers 500 twice: the alert stays in the outbox, is retried with backoff and
    sent once; the other sinks got it at once."""
    raw = raw_config(sink_server, {"sink_gone": True})
    harness = Harness(redis, config_factory(raw), sink_client)
    sink_server.script(sink_server.discord_url(), [500, Reply.error(503)])
    await _gone(Ctx(redis, await redis_now(redis)))
    with structlog.testing.capture_logs() as logs:
        [alert] = await harness.round()
        for _ in range(40):
            await asyncio.sleep(0.05)
            await harness.round()
    assert received(sink_server)["ops"] == [alert["id"]]  # the third try went through
    assert len(sink_server.requests(sink_server.discord_url())) == 3
    assert received(sink_server)["hook"] == [alert["id"]]
    assert await redis.hlen(alert_outbox(KEYS)) == 0
    retries = [e for e in logs if e["event"] == "alert not sent, will retry"]
    assert [e["tries"] for e in retries] == [1, 2] and retries[0]["sink"] == "ops"
    await harness.evaluator.stop()


# --- one evaluator at a time ---------------------------------------------------------------


async def test_two_workers_never_both_send_an_alert_and_the_lease_passes_on(
    redis: Any, config_factory: Any, sink_server: SinkServer, run_worker: Any
) -> None:
    """Two real workers evaluate every 50 ms: one alert, from the lease holder. The holder
    dies (its evaluator stops without a word): the other takes the lease over, does not fire
    again, and sends the one resolved message."""
    loaded = config_factory(raw_config(sink_server, {"sink_gone": True}))
    await _gone(Ctx(redis, await redis_now(redis)))
    first, second = await run_worker(loaded), await run_worker(loaded)
    await sink_server.wait_for_requests(1, sink_server.url("/alerts"))
    await asyncio.sleep(1.0)  # 20 rounds each
    assert [a["state"] for a in hook_alerts(sink_server)] == ["firing"]
    assert len(sink_server.requests()) == 3  # one per target
    holder = (await redis.get(alert_lease(KEYS))).decode()
    dead, alive = (first, second) if holder == first.ctx["alerts"].owner else (second, first)
    assert holder == dead.ctx["alerts"].owner
    dead.ctx["alerts"].task.cancel()  # dies: the lease is left to expire

    async def taken_over() -> bool:
        return await redis.get(alert_lease(KEYS)) == alive.ctx["alerts"].owner.encode()

    await wait_for(taken_over, timeout=5)
    await asyncio.sleep(0.5)
    assert [a["state"] for a in hook_alerts(sink_server)] == ["firing"]  # no re-fire
    await _not_gone(Ctx(redis, await redis_now(redis)))
    await sink_server.wait_for_requests(2, sink_server.url("/alerts"))
    await asyncio.sleep(0.5)
    assert [a["state"] for a in hook_alerts(sink_server)] == ["firing", "resolved"]
    assert len(sink_server.requests()) == 6


# --- auto-pause, end to end ---------------------------------------------------------------


async def test_auto_pause_holds_every_delivery_and_resume_sends_them(
    redis: Any, config_factory: Any, sink_server: SinkServer, ingress: Any, run_worker: Any
) -> None:
    """`shop` answers 503: after pause_after (1 s) of failures it is paused and an alert says
    so (never to `shop`); webhooks keep coming and are held; resume sends every one."""
    raw = raw_config(sink_server, {}, to=["ops", "hook"])
    raw["sinks"]["shop"].update(
        {"pause_after": "1s", "retry": {"schedule": ["100ms"] * 100, "jitter": 0}}
    )
    sink_server.script(sink_server.url("/shop"), [503] * 10_000)
    client = await ingress(raw)
    worker = await run_worker(config_factory(raw))
    headers = {"X-API-KEY": IVPAY_KEY}

    async def post(payment: str) -> None:
        answer = await client.post("/hooks/ivpay", data=ivpay_body(payment), headers=headers)
        assert answer.status == 200

    for n in range(3):
        await post(f"pay-{n}")

    async def paused() -> bool:
        return (await pause.state(redis, KEYS, "shop")).paused

    await wait_for(paused, timeout=10)
    await sink_server.wait_for_requests(1, sink_server.url("/alerts"))
    [alert] = hook_alerts(sink_server)
    assert (alert["rule"], alert["subject"], alert["state"]) == ("auto_pause", "shop", "firing")
    assert "relay sinks resume shop" in alert["commands"]
    for n in range(3, 5):
        await post(f"pay-{n}")  # while paused: held

    async def all_held() -> bool:
        return (await pause.state(redis, KEYS, "shop")).held == 5

    await wait_for(all_held, timeout=10)
    attempts = len(sink_server.requests(sink_server.url("/shop")))
    await asyncio.sleep(0.3)
    assert len(sink_server.requests(sink_server.url("/shop"))) == attempts  # none tried
    sink_server._scripts.clear()  # the endpoint is fixed
    assert await pause.resume(redis, KEYS, worker.ctx["loaded"].config, "shop") == 5

    def delivered() -> set[str]:
        shop = sink_server.requests(sink_server.url("/shop"))
        return {r.json()["payment"]["id"] for r in shop if r.status == 200}

    await wait_for(lambda: len(delivered()) == 5, timeout=10)
    assert delivered() == {f"pay-{n}" for n in range(5)}  # nothing lost
    await sink_server.wait_for_requests(2, sink_server.url("/alerts"))
    assert [a["state"] for a in hook_alerts(sink_server)] == ["firing", "resolved"]
    shop_bodies = [r.json() for r in sink_server.requests(sink_server.url("/shop"))]
    assert all(body["type"].startswith("payment.") for body in shop_bodies)  # no alert
    assert received(sink_server)["ops"] == [a["id"] for a in hook_alerts(sink_server)]


# --- what a message says -------------------------------------------------------------------


async def test_messages_name_rule_subject_figure_and_what_to_do(
    redis: Any, config_factory: Any, sink_server: SinkServer, sink_client: Any, ingress: Any
) -> None:
    """bad_signatures: Discord (an embed, pinging no one), Slack (escaped text and blocks)
    and http (the alert's JSON, signed per Standard Webhooks) name the rule, the source, the
    count and the threshold, the reason given, and say to check the secret of the source."""
    raw = raw_config(sink_server, {"bad_signatures": "2/10m"})
    harness = Harness(redis, config_factory(raw), sink_client)
    client = await ingress(raw)
    for _ in range(2):
        await client.post("/hooks/ivpay", data=b"{}", headers={"X-API-KEY": "<@everyone>"})
    [alert] = await harness.round()
    await harness.evaluator.stop()

    [hook] = sink_server.requests(sink_server.url("/alerts"))
    Webhook(MONITOR_WHSEC).verify(hook.body, hook.headers)  # raises when not signed right
    assert hook.headers["webhook-id"] == alert["id"] and alert["type"] == "relay.alert"
    assert alert["threshold"] == "2/10m" and alert["figure"] == "2 rejected in the last 10m"
    assert alert["last_error"] == "X-API-KEY missing or not the configured API key"
    assert "Check the secret of source ivpay" in alert["action"]

    [discord] = sink_server.requests(sink_server.discord_url())
    payload = discord.json()
    assert payload["allowed_mentions"] == {"parse": []} and discord_pings(payload) == []
    assert payload["content"].startswith("🔴 ALERT · bad\\_signatures · ivpay: 2 rejected")
    [embed] = payload["embeds"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Threshold"] == "2/10m" and fields["Subject"] == "source ivpay"
    assert fields["Last reason"].startswith("X-API-KEY missing")
    assert "Check the secret of source ivpay" in embed["description"]
    assert "`relay rejections list --source ivpay`" in embed["description"]

    [slack] = sink_server.requests(sink_server.slack_url())
    text = slack.json()["text"]
    assert text.startswith(":red_circle: ALERT bad_signatures · ivpay: 2 rejected in the last 10m")
    blocks = orjson.dumps(slack.json()["blocks"]).decode()
    assert "Check the secret of source ivpay" in blocks and "<@" not in blocks


async def test_the_last_error_is_redacted_and_escaped(
    redis: Any, config_factory: Any, sink_server: SinkServer, sink_client: Any
) -> None:
    """A last error holding a sink URL with its token shows only the host; its markup cannot
    ping anyone on Discord or Slack, nor format the message."""
    raw = raw_config(sink_server, {"sink_failing": "5s"})
    raw["sinks"]["spare"] = {
        "type": "http",
        "url": sink_server.url("/spare"),
        "secret": MONITOR_WHSEC,
    }
    harness = Harness(redis, config_factory(raw), sink_client)
    t0 = await redis_now(redis)
    await failing(redis, "spare", t0)
    secret_url = sink_server.discord_url()
    error = f"network error: {secret_url} down <!channel> @everyone **now**"
    await redis.hset(KEYS.sink_health("spare"), "last_error", error)
    await harness.round(t0)
    [alert] = await harness.round(t0 + 6)
    await harness.evaluator.stop()
    assert "T0k3n" not in orjson.dumps([r.text for r in sink_server.requests()]).decode()
    assert f"network error: {sink_server.base_url}/… down" in alert["last_error"]
    [discord] = sink_server.requests(sink_server.discord_url())
    assert discord_pings(discord.json()) == []
    [embed] = discord.json()["embeds"]
    shown = {f["name"]: f["value"] for f in embed["fields"]}["Last error"]
    assert "\\*\\*now\\*\\*" in shown and "@\u200beveryone" in shown
    [slack] = sink_server.requests(sink_server.slack_url())
    assert "<!channel>" not in slack.text and "&lt;!channel&gt;" in slack.text


# --- where a firing alert shows --------------------------------------------------------------


async def test_firing_alerts_show_in_status_page_and_metrics(
    redis: Any, config_factory: Any, sink_server: SinkServer, sink_client: Any
) -> None:
    """`relay status`, /status and `relay_alerts_firing{rule,subject}` read it from the
    snapshot: 1 while firing, 0 once cleared."""
    loaded = config_factory(raw_config(sink_server, {"sink_gone": True}, to=[]))
    harness = Harness(redis, loaded, sink_client)
    t0 = await redis_now(redis)
    await _gone(Ctx(redis, t0))
    await harness.round(t0)
    snapshot = await take_snapshot(redis, loaded.config)
    [firing] = snapshot.firing
    assert (firing.rule, firing.subject) == ("sink_gone", "shop")
    assert firing.summary == "Sink shop is gone: its endpoint answered HTTP 410 (threshold 404/410)"
    assert snapshot.to_dict()["alerts"][0]["rule"] == "sink_gone"
    metrics = render_metrics(snapshot).decode()
    assert 'relay_alerts_firing{rule="sink_gone",subject="shop"} 1.0' in metrics
    console = Console(record=True, width=160)
    console.print(render(snapshot))
    text = console.export_text()
    assert "Alerts firing" in text and "Sink shop is gone" in text
    from relay.ingress.admin import _environment

    page = _environment().get_template("status_body.html").render(page_context(snapshot, None))
    assert 'data-rule="sink_gone" data-subject="shop"' in page

    await _not_gone(Ctx(redis, t0))
    await harness.round(t0 + 1)
    await harness.evaluator.stop()
    snapshot = await take_snapshot(redis, loaded.config)
    assert snapshot.firing == []
    assert (
        'relay_alerts_firing{rule="sink_gone",subject="shop"} 0.0'
        in render_metrics(snapshot).decode()
    )
    assert sink_server.requests() == []  # alerts.to is empty: logged only


# --- configuration -----------------------------------------------------------------------------


def test_alerts_config_defaults_and_off() -> None:
    """Every rule on with SPEC 12's thresholds; `off` (YAML false) switches one off; a sink
    pauses after 5d by default, never with 0 or off."""
    config = validate({"sinks": {"a": {"type": "log"}, "b": {"type": "log", "pause_after": 0}}})
    alerts = config.config.alerts
    assert (alerts.sink_failing, alerts.sink_gone, alerts.dead_letters) == (900.0, True, 1)
    assert (alerts.bad_signatures.count, alerts.bad_signatures.per) == (5, 600.0)  # type: ignore[union-attr]
    assert (alerts.oldest_waiting, alerts.no_worker, alerts.reconciled) == (300.0, 60.0, True)
    assert (alerts.redis_memory, alerts.repeat) == (0.8, 3600.0)
    assert config.config.sinks["a"].pause_after == 5 * 86400.0
    assert config.config.sinks["b"].pause_after is None
    off = validate({"alerts": {"sink_failing": "off", "redis_memory": False, "sink_gone": "off"}})
    assert off.config.alerts.sink_failing is None and off.config.alerts.redis_memory is None
    assert off.config.alerts.sink_gone is False
    on = validate({"alerts": {"no_worker": True, "bad_signatures": "10/5m", "redis_memory": 90}})
    assert on.config.alerts.no_worker == 60.0 and on.config.alerts.redis_memory == 0.9


def test_check_config_reports_alert_errors_with_their_paths() -> None:
    """An unknown rule, a threshold of the wrong shape, a `to:` naming no sink or a log sink."""
    with pytest.raises(ConfigError) as shapes:
        validate(
            {
                "alerts": {
                    "sink_failng": "1m",
                    "sink_failing": "soon",
                    "dead_letters": "many",
                    "bad_signatures": "5 per minute",
                    "redis_memory": "180%",
                }
            }
        )
    errors = dict(shapes.value.errors)
    assert errors["alerts.sink_failng"].startswith("unknown rule (rules: sink_failing, sink_gone")
    assert errors["alerts.sink_failing"].startswith("not a duration: 'soon'")
    assert errors["alerts.dead_letters"].startswith("not a count: 'many'")
    assert errors["alerts.bad_signatures"].startswith("not a count per duration")
    assert errors["alerts.redis_memory"].startswith("not a percentage")
    with pytest.raises(ConfigError) as targets:
        validate({"sinks": {"audit": {"type": "log"}}, "alerts": {"to": ["audit", "nope"]}})
    assert dict(targets.value.errors) == {
        "alerts.to[0]": "sink 'audit' is a log sink: alerts go to discord, slack or http",
        "alerts.to[1]": "unknown sink 'nope'",
    }
    with pytest.raises(ConfigError) as pause_after:
        validate({"sinks": {"audit": {"type": "log", "pause_after": "a while"}}})
    assert list(dict(pause_after.value.errors)) == ["sinks.audit.pause_after"]


async def test_a_web_dyno_alerts_no_worker_when_every_worker_is_gone(
    redis: Any, ingress: Any, sink_server: SinkServer
) -> None:
    """Every worker crashed (their ids left with old beats): nobody is left to evaluate, so the
    web dyno's standby evaluator takes the lease and sends `no_worker` (SPEC 12)."""
    raw = raw_config(sink_server, {"no_worker": "1s"})
    seconds, _ = await redis.time()
    await redis.zadd("relay:workers", {"worker.1": int(seconds) - 30})  # SIGKILLed long ago
    await ingress(raw)

    async def told() -> bool:
        sent = sink_server.requests(sink_server.discord_url())
        return any("No worker is running" in r.text for r in sent)

    await wait_for(told, timeout=10)


async def test_a_web_dyno_stands_by_while_a_worker_beats(
    redis: Any, ingress: Any, sink_server: SinkServer
) -> None:
    """With a live worker the web dyno never takes the alert lease (the workers evaluate)."""
    raw = raw_config(sink_server, {"no_worker": "1s"})
    seconds, _ = await redis.time()
    await redis.zadd("relay:workers", {"worker.1": int(seconds) + 60})  # beating
    await ingress(raw)
    await asyncio.sleep(0.5)
    assert await redis.get("relay:alerts:lease") is None
    assert sink_server.requests(sink_server.discord_url()) == []
