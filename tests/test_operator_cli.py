"""`relay events | payments | replay | sinks` as an operator runs them (SPEC 9): the console
script in a subprocess, on the real test Redis, over events a real ingress stored and a real
worker delivered to local sinks.

`--json` must print exactly what relay.operator answers for the same question (the API gives
the same), and text must fit 80 columns without cutting any id.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay import operator
from relay.config.model import LoadedConfig
from relay.events import dumps, loads
from relay.keys import Keys
from relay.ledger import query
from tests.conftest import REPO, TEST_SECRETS, wait_for
from tests.sink_servers import SinkServer

RELAY = str(Path(sys.executable).with_name("relay"))
KEY = TEST_SECRETS["IVPAY_API_KEY"]
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"schedule": ["50ms", "50ms", "50ms"], "jitter": 0.1}
KEYS = Keys()
TX = "0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad43550bfbaf41bb1"
LONG_PAYMENT = "pay-" + "7f3a9c0e5b2d4f61" * 4  # 68 characters: ids are never cut
WIDTH = 80


@dataclass
class Ran:
    code: int
    out: str
    err: str


# Each command runs in a process of its own, as `relay ...` does, but forked from one that has
# already imported the relay (a fresh interpreter takes a second or more to import the config
# models and their sinks on a busy machine; a fork, a few ms). One job per line on stdin: argv,
# env, cwd, where stdin comes from and where stdout and stderr go; the answer: the exit code.
_FORK_SERVER = """
import json, os, sys
import redis.asyncio, rich.progress, structlog
import relay.cli, relay.config.model, relay.operator, relay.redis, relay.replay

def run(job):
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    os.dup2(os.open(job["stdin"], os.O_RDWR), 0)
    for fd, path in ((1, job["out"]), (2, job["err"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdin = open(0, closefd=False)
    try:
        code = relay.cli.main(job["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        run(json.loads(line))
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class Forks:
    """The fork server: `run(...)` runs one `relay` command line in a new process."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.lock = threading.Lock()
        self.count = 0
        self.server = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, stdin: str) -> Ran:
        assert self.server.stdin is not None and self.server.stdout is not None
        with self.lock:
            self.count += 1
            out, err = self.scratch / f"{self.count}.out", self.scratch / f"{self.count}.err"
            job = {"argv": argv, "env": env, "cwd": str(cwd), "stdin": stdin}
            self.server.stdin.write(json.dumps({**job, "out": str(out), "err": str(err)}) + "\n")
            self.server.stdin.flush()
            code = int(self.server.stdout.readline())
        return Ran(code, out.read_text(), err.read_text())

    def close(self) -> None:
        assert self.server.stdin is not None
        self.server.stdin.close()
        self.server.wait(10)


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forks]:
    server = Forks(tmp_path_factory.mktemp("relay-runs"))
    yield server
    server.close()


@dataclass
class Setup:
    """A config file the commands read, and the same config loaded in the test."""

    path: Path
    loaded: LoadedConfig
    redis_url: str
    forks: Forks

    async def relay(
        self, *args: str, stdin: str = os.devnull, redis_url: str = "", secrets: bool = True
    ) -> Ran:
        """`relay ARGS --config PATH` in a process of its own (an arg `@config` puts --config
        there instead); `stdin` a path (a terminal's, to answer a question); without `secrets`,
        none of the config's `${VAR}`s is set (an operator's laptop)."""
        where = list(args).index("@config") if "@config" in args else len(args)
        argv = [*args[:where], "--config", str(self.path), *args[where + 1 :]]
        env = {
            **{k: v for k, v in os.environ.items() if k not in TEST_SECRETS},
            **(TEST_SECRETS if secrets else {}),
            "REDIS_URL": redis_url or self.redis_url,
            "RELAY_CONFIG": "",
            "NO_COLOR": "1",
            "COLUMNS": str(WIDTH),
        }
        return await asyncio.to_thread(self.forks.run, argv, env, self.path.parent, stdin)

    async def many(self, *commands: tuple[str, ...]) -> list[Ran]:
        return [await self.relay(*command) for command in commands]

    async def console_script(self, *args: str, redis_url: str) -> Ran:
        """The installed `relay` script itself, in a fresh interpreter."""
        process = await asyncio.create_subprocess_exec(
            RELAY,
            *args,
            "--config",
            str(self.path),
            env={**os.environ, **TEST_SECRETS, "REDIS_URL": redis_url, "RELAY_CONFIG": ""},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode is not None
        return Ran(process.returncode, out.decode(), err.decode())


def raw_config(server: SinkServer, **shop: Any) -> dict[str, Any]:
    return {
        "sources": {"ivpay": {"provider": "ivpay", "api_key": "${IVPAY_API_KEY}"}},
        "sinks": {
            "shop": {
                "type": "http",
                "url": server.url("/shop"),
                "secret": WHSEC,
                "retry": FAST,
                **shop,
            },
            "ops": {"type": "slack", "url": server.slack_url(), "retry": FAST},
        },
    }


def setup(
    tmp_path: Path, raw: dict[str, Any], config_factory: Any, redis_url: str, forks: Forks
) -> Setup:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # no redis_url: REDIS_URL selects Redis
    return Setup(path, config_factory(raw), redis_url, forks)


def body(payment_id: str, status: str = "PAID", order: str = "order-77") -> bytes:
    # A number no float holds, in the raw payload the event keeps as `data`.
    return (
        f'{{"payment_id": "{payment_id}", "status": "{status}", "foreign_id": "{order}", '
        f'"network": "ETH", "tx_url": "https://etherscan.io/tx/{TX}", '
        f'"paid_amount": 0.100000000000000000001}}'
    ).encode()


async def post(client: Any, payload: bytes) -> str:
    response = await client.post("/hooks/ivpay", data=payload, headers={"X-API-KEY": KEY})
    assert response.status == 200, await response.text()
    return str((await response.json())["id"])


async def event_of(redis: Any, inbound_id: str) -> str:
    shown = await wait_for(lambda: query.show(redis, KEYS, inbound_id))
    return str(shown["events"][0]["id"])


async def settled(redis: Any, event_id: str, **states: str) -> None:
    async def ready() -> bool:
        record = await query.show(redis, KEYS, event_id)
        found = {d["sink"]: d["state"] for d in record["deliveries"]} if record else {}
        return all(found.get(sink) == state for sink, state in states.items())

    await wait_for(ready)


def accepted(server: SinkServer, path: str) -> list[str]:
    return [r.headers["webhook-id"] for r in server.requests(path) if r.status == 200]


def as_json(value: Any) -> str:
    return dumps(value, indent=True).decode() + "\n"


def fits(ran: Ran, *ids: str) -> None:
    """Exit 0, every line within 80 columns, and each id whole on one line."""
    assert ran.code == 0, ran.err
    too_long = [line for line in ran.out.splitlines() if len(line) > WIDTH]
    assert too_long == [], too_long
    for ident in ids:
        assert ident in ran.out, (ident, ran.out)


async def test_events_and_payments_text_and_json(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    redis: Any,
    tmp_path: Path,
    redis_url: str,
    forks: Forks,
) -> None:
    """A payment seen twice (pending, then paid after one 503): list, show by evt_ and in_ id,
    the payment's timeline by reference; JSON equal to relay.operator's answers."""
    s = setup(tmp_path, raw_config(sink_server), config_factory, redis_url, forks)
    sink_server.script("/shop", [503, 200, 200])
    client = await ingress(raw_config(sink_server))
    await run_worker(s.loaded)
    pending_in = await post(client, body(LONG_PAYMENT, "PENDING"))
    pending = await event_of(redis, pending_in)
    await settled(redis, pending, shop="delivered", ops="delivered")
    paid_in = await post(client, body(LONG_PAYMENT, "PAID"))
    paid = await event_of(redis, paid_in)
    await settled(redis, paid, shop="delivered", ops="delivered")

    listed, listed_json, before, shown, shown_json, inbound = await s.many(
        ("events", "list"),
        ("events", "list", "--json"),
        ("events", "@config", "list", "--source", "ivpay"),
        ("events", "show", pending),
        ("events", "show", pending, "--json"),
        ("events", "show", paid_in),
    )
    timeline, timeline_json, by_tx, elsewhere = await s.many(
        ("payments", "show", "order-77"),
        ("payments", "@config", "show", "order-77", "--json"),
        ("payments", "show", TX),
        ("payments", "show", LONG_PAYMENT, "--source", "elsewhere"),
    )
    flt = await operator.event_filter(redis)
    assert listed_json.out == as_json(await operator.events_list(redis, s.loaded.config, flt))
    assert shown_json.out == as_json(await operator.event_show(redis, s.loaded.config, pending))
    expected = await operator.payments_show(redis, s.loaded.config, "order-77")
    assert timeline_json.out == as_json(expected)
    assert "0.100000000000000000001" in shown_json.out  # every digit kept

    fits(listed, paid, pending, LONG_PAYMENT, "order-77")
    assert listed.out.index(paid) < listed.out.index(pending)  # newest first
    assert "2 events" in listed.out and "shop delivered" in listed.out
    assert before.out == listed.out
    fits(shown, pending, pending_in, LONG_PAYMENT, TX)
    assert "retry  HTTP 503" in shown.out and "delivered  HTTP 200" in shown.out
    fits(inbound, paid_in, paid)
    fits(timeline, LONG_PAYMENT, pending, paid, TX, "order-77")
    assert timeline.out.index(pending) < timeline.out.index(paid)  # in the order accepted
    assert by_tx.out == timeline.out  # found by its transaction hash too
    assert elsewhere.code == 1 and "no logged payment matches" in elsewhere.err
    assert timeline.out.count("retry  HTTP 503") == 1
    assert timeline.out.count("delivered  HTTP 200") == 4


async def test_bad_input_unknown_ids_and_no_redis(
    config_factory: Any,
    sink_server: SinkServer,
    redis: Any,
    tmp_path: Path,
    redis_url: str,
    forks: Forks,
) -> None:
    """Bad input exits 2 with a message saying what is wrong; an unknown id exits 1."""
    s = setup(tmp_path, raw_config(sink_server), config_factory, redis_url, forks)
    unknown = "evt_" + "a" * 26
    results = await s.many(
        ("events", "list", "--since", "yesterday"),
        ("events", "list", "--state", "lost"),
        ("replay", "--since", "2h", "--sink", "nowhere"),
        ("replay",),
        ("replay", unknown, "--since", "2h"),
        ("sinks", "pause", "shop", "--for", "a while"),
        ("events", "show", unknown),
        ("payments", "show", "order-nothing"),
        ("replay", unknown),
        ("sinks", "pause", "nowhere"),
        ("events", "list"),
    )
    expected = [
        (2, "not a time: 'yesterday' (use a duration back from now, e.g. 2h, or RFC 3339)"),
        (2, "unknown state 'lost'"),
        (2, "unknown sink 'nowhere'"),
        (2, "give event ids, or filters such as --since 2h"),
        (2, "give event ids or filters"),
        (2, "not a duration: 'a while'"),
        (1, f"no logged event or inbound request with id {unknown!r}"),
        (1, "no logged payment matches 'order-nothing'"),
        (1, f"no logged event or inbound request with id {unknown}"),
        (1, "no sink 'nowhere' in the config (sinks: ops, shop)"),
    ]
    for ran, (code, message) in zip(results, expected, strict=False):
        assert (ran.code, ran.out) == (code, ""), ran
        assert message in ran.err, (message, ran.err)
    assert (results[-1].code, results[-1].out) == (0, "no logged event matches\n")
    laptop = await s.relay("sinks", "pause", "shop", secrets=False)  # SPEC 8: no secret needed
    assert laptop.code == 0 and "shop paused" in laptop.out, laptop.err
    down = await s.console_script("sinks", redis_url="redis://127.0.0.1:1")
    assert down.code == 2 and "cannot reach Redis at redis://127.0.0.1:1" in down.err


async def test_replay_plan_ask_and_send(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    redis: Any,
    tmp_path: Path,
    redis_url: str,
    forks: Forks,
) -> None:
    """12 events, one failed at the shop: --dry-run sends nothing; more than 10 without --yes
    refuses with no terminal and asks on one; --state failed and --yes deliver again with the
    original webhook-id."""
    s = setup(tmp_path, raw_config(sink_server), config_factory, redis_url, forks)
    sink_server.script("/shop", [500, 500, 500, 500])
    client = await ingress(raw_config(sink_server))
    await run_worker(s.loaded)
    failed = await event_of(redis, await post(client, body("pay-f", order="order-f")))
    await settled(redis, failed, shop="failed")
    ids = [
        await event_of(redis, await post(client, body(f"pay-{i}", order=f"o-{i}")))
        for i in range(11)
    ]
    for event_id in ids:
        await settled(redis, event_id, shop="delivered", ops="delivered")
    ids.append(failed)
    assert accepted(sink_server, "/shop") == ids[:-1]

    dry, dry_json, refused = await s.many(
        ("replay", "--since", "1h", "--sink", "shop", "--dry-run"),
        ("replay", "--since", "1h", "--sink", "shop", "--dry-run", "--json"),
        ("replay", "--since", "1h", "--sink", "shop"),
    )
    flt = await operator.event_filter(redis, since="1h")
    plan = await operator.replay_plan(redis, s.loaded.config, flt=flt, sinks=["shop"])
    assert dry_json.out == as_json(
        await operator.replay_run(redis, s.loaded.config, plan, dry_run=True)
    )
    fits(dry, *ids)
    assert "would replay 12 deliveries of 12 events (nothing sent)" in dry.out
    assert "was failed" in dry.out
    assert refused.code == 2 and refused.out == ""
    assert "12 deliveries of 12 events" in refused.err and "pass --yes" in refused.err

    declined = await _on_a_terminal(s, b"n\n", "replay", "--since", "1h", "--sink", "shop")
    assert declined.code == 1 and "Replay 12 deliveries of 12 events? [y/N]" in declined.err
    await asyncio.sleep(0.2)
    assert await redis.zcard(KEYS.queue) == 0
    assert accepted(sink_server, "/shop") == ids[:-1]  # nothing sent by any of them

    again = await s.relay("replay", "--since", "1h", "--state", "failed", "--sink", "shop")
    fits(again, "queued 1 delivery of 1 event", "shop 1")
    await wait_for(lambda: accepted(sink_server, "/shop") == ids)  # the original event id
    await settled(redis, failed, shop="delivered")

    everything = await s.relay("replay", "--since", "1h", "--sink", "shop", "--yes", "--json")
    assert everything.code == 0, everything.err
    assert loads(everything.out)["queued"] == len(ids)  # stdout is the JSON alone: no log line
    await wait_for(lambda: len(accepted(sink_server, "/shop")) == 2 * len(ids))
    assert sorted(accepted(sink_server, "/shop")[len(ids) :]) == sorted(ids)
    assert len(sink_server.requests(sink_server.slack_url())) == len(ids)  # ops: untouched


async def _on_a_terminal(s: Setup, typed: bytes, *args: str) -> Ran:
    """The command with a terminal (a pty) on stdin, `typed` already waiting on it."""
    master, slave = pty.openpty()
    try:
        os.write(master, typed)
        return await s.relay(*args, stdin=os.ttyname(slave))
    finally:
        os.close(slave)
        os.close(master)


async def test_sinks_pause_and_resume_round_trip(
    ingress: Any,
    run_worker: Any,
    config_factory: Any,
    sink_server: SinkServer,
    redis: Any,
    tmp_path: Path,
    redis_url: str,
    forks: Forks,
) -> None:
    """Pause shows in `relay sinks` with what it holds; resume sends it; JSON is the operator's."""
    s = setup(tmp_path, raw_config(sink_server), config_factory, redis_url, forks)
    client = await ingress(raw_config(sink_server))
    await run_worker(s.loaded)
    paused, paused_json = await s.many(
        ("sinks", "pause", "shop", "--for", "2h"), ("sinks", "pause", "ops", "--json")
    )
    fits(paused, "shop paused  until 20")
    assert '"state": "paused"' in paused_json.out and '"paused_until": null' in paused_json.out
    held = await event_of(redis, await post(client, body("pay-held")))
    await settled(redis, held, shop="paused", ops="paused")

    listed, listed_json, held_events = await s.many(
        ("sinks",), ("sinks", "--json"), ("events", "list", "--state", "paused")
    )
    assert listed_json.out == as_json(await operator.sinks_list(redis, s.loaded.config))
    fits(listed, "paused until 20", "then resumes by itself", "paused until resumed")
    fits(held_events, held, "shop paused")

    resumed, resumed_json = await s.many(
        ("sinks", "resume", "shop"), ("sinks", "@config", "resume", "ops", "--json")
    )
    fits(resumed, "shop resumed  1 held delivery released, in the order received")
    assert '"released": 1' in resumed_json.out and '"state": "active"' in resumed_json.out
    await wait_for(lambda: accepted(sink_server, "/shop") == [held])
    await settled(redis, held, shop="delivered", ops="delivered")
    after = await s.relay("sinks")
    fits(after, "shop  http     active", "ops   slack    active")
    assert "paused" not in after.out
