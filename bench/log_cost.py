"""Part 5: what the event log (SPEC 9) costs: the same runs with `log: {enabled: false}`.

- Redis bytes per event: N webhooks through the ingress and one `relay worker` to three sinks
  (http, discord, slack, one attempt each), until the stats hash counts every delivery;
  INFO memory `used_memory` after minus before, / N, log on minus log off (FLUSHALL between,
  alternating); with the log on, MEMORY USAGE of every `<prefix>:log:*` key by kind (event
  hash, index, payment list, lookup sets) and the sizes inside one event hash. Once more with
  a Discord-sized answer: Discord answers `?wait=true` with the whole message object, which
  the attempt record keeps up to 512 bytes of; the bench's fake sink server answers 30 bytes.
- Redis bytes per rejected request: N requests with a wrong HMAC signature (1 KB bodies),
  used_memory delta / N with rejected requests kept, and with `log.rejected_max_bytes: 0`.
- Retention: bytes per event x events per day x `log.retention` days.
- Speed: the e2e throughput run (pre-loaded backlog, 1 worker) and receipt->delivery latency
  at a fixed rate, log on and off alternating (on, off, on, off), in one run.
- Redis commands per event (INFO commandstats, ingress + worker, idle polling subtracted) and
  Redis round trips (socket writes of redis-py: a single command or a whole pipeline) of the
  worker per event and of the ingress per request, counted by a shim in those processes:

    python -m bench.log_cost counted FILE serve|worker --config ...   relay with a counter
    python -m bench.log_cost sinks --port N                           the fake sink server
                                                                       with switchable answers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    HMAC_HEADER,
    PREFIX,
    PY,
    RESULTS_DIR,
    CpuNoise,
    ivpay_request,
    log,
    redis_server,
    save_result,
    token,
    workspace,
)
from bench.e2e import (
    SINKS,
    Rig,
    latency_at,
    preload,
    sink_post,
    throughput,
    wait_workers_ready,
)
from relay.embedded import free_port

N = 2000  # events per memory run, rejected requests per run
N_SPEED = 2000  # events per throughput run
LATENCY_RATE = 100  # well inside one worker's capacity on this box, so contention shows less
LATENCY_SECONDS = 10
WARMUP_S = 2  # at the same rate, to each fresh worker, not counted
SPEED_PAIRS = 6  # on, off, on, off, ...: each adjacent (on, off) a pair
IDLE_S = 1.5  # how long the idle polling is measured (reported beside the per-event counts)
SETTLE_S = 3.0
REJECTED_BODY = 1024
AIM_BYTES = 2048
# What the event hash would cost if Redis kept it as a listpack (its event JSON is over the
# default 64-byte hash-max-listpack-value): a server setting, measured as a what-if only.
WHAT_IF = {"hash-max-listpack-value": "1024"}
AIM_SPEED_PCT = 10
AIM_ROUND_TRIPS = 2

TX_HASH = "0x4fd6f1e67f2b4abbff4216138d1aeebfd4a56d8f05d05f0ad43550bfbaf41bb1"


# --- requests -------------------------------------------------------------------------------


def unique_tx_request(seq: int, sent_ns: int | None = None) -> tuple[bytes, dict[str, str]]:
    """bench.common's IVPAY webhook with a transaction hash of its own (the stock one repeats
    one hash, which would make one lookup set of every event instead of one set each)."""
    body, headers = ivpay_request(seq, sent_ns)
    assert TX_HASH.encode() in body
    tx = "0x" + hashlib.sha256(body).hexdigest()
    return body.replace(TX_HASH.encode(), tx.encode()), headers


def bad_signature_request(seq: int) -> tuple[bytes, dict[str, str]]:
    """A webhook for the hmac source, REJECTED_BODY bytes of JSON, with a wrong signature."""
    pid = token(seq)
    payload: dict[str, Any] = {
        "id": f"evt{seq}",
        "type": "InvoiceSettled",
        "invoiceId": pid,
        "metadata": {"orderId": pid, "customer": f"customer-{seq}@example.com", "note": ""},
        "amount": "0.123456789012345678",
        "currency": "BTC",
    }
    size = len(json.dumps(payload, separators=(",", ":")))
    payload["metadata"]["note"] = "x" * max(0, REJECTED_BODY - size)
    body = json.dumps(payload, separators=(",", ":")).encode()
    wrong = "sha256=" + hashlib.sha256(body).hexdigest()  # a digest, not the HMAC
    return body, {"Content-Type": "application/json", HMAC_HEADER: wrong}


async def _post_all(url: str, n: int, seq_base: int, concurrency: int = 50) -> dict[str, int]:
    statuses: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def one(i: int) -> None:
            body, headers = bad_signature_request(seq_base + i)
            async with sem, s.post(url, data=body, headers=headers) as resp:
                await resp.read()
                statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return statuses


# --- counting Redis round trips inside a relay process --------------------------------------


def counted(counts_path: str, argv: list[str]) -> int:
    """Run `relay <argv>` in this process, counting redis-py's socket writes (one per single
    command, one per pipeline or MULTI/EXEC) into counts_path every 20 ms and at exit."""
    from redis.asyncio.connection import AbstractConnection

    from relay.cli import main as relay_main

    count = [0]
    original = AbstractConnection.send_packed_command

    async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        count[0] += 1
        await original(self, command, check_health)

    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    stop = threading.Event()

    def dump() -> None:
        tmp = f"{counts_path}.tmp"
        Path(tmp).write_text(json.dumps({"round_trips": count[0]}))
        os.replace(tmp, counts_path)

    def loop() -> None:
        while not stop.wait(0.02):
            dump()

    threading.Thread(target=loop, daemon=True).start()
    try:
        return relay_main(argv)
    finally:
        stop.set()
        dump()


class Counts:
    """The shim's files, one per process name, in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def prefix(self, name: str) -> list[str]:
        return [PY, "-m", "bench.log_cost", "counted", str(self.directory / f"{name}.json")]

    def round_trips(self, proc: Any) -> int:
        path = self.directory / f"{proc.name}.json"
        for _ in range(100):
            with contextlib.suppress(OSError, ValueError):
                return int(json.loads(path.read_text())["round_trips"])
            time.sleep(0.02)
        raise RuntimeError(f"no round trip count from {proc.name}")

    def settled(self, proc: Any) -> int:
        """The count once the shim's file has caught up (it is written every 20 ms)."""
        time.sleep(0.1)
        return self.round_trips(proc)


# --- the fake sink server, with Discord's real answer size switchable -----------------------

ANSWERS = {"discord": "bench"}
SINKS_CMD = [PY, "-m", "bench.log_cost", "sinks"]


def discord_message(request_body: bytes) -> bytes:
    """What Discord answers to `POST /webhooks/{id}/{token}?wait=true`: the message object,
    with the embeds posted (as rendered by Discord) and the webhook's author."""
    try:
        posted = json.loads(request_body)
    except ValueError:
        posted = {}
    snowflake = "1311111111111111111"
    embeds = [{"type": "rich", **embed} for embed in posted.get("embeds", [])]
    message = {
        "type": 0,
        "channel_id": "1300000000000000000",
        "content": posted.get("content", ""),
        "attachments": [],
        "embeds": embeds,
        "timestamp": "2026-11-22T22:13:43.123000+00:00",
        "edited_timestamp": None,
        "flags": 0,
        "components": [],
        "id": snowflake,
        "author": {
            "id": snowflake,
            "username": posted.get("username", "Bench Store"),
            "avatar": None,
            "discriminator": "0000",
            "public_flags": 0,
            "flags": 0,
            "bot": True,
            "global_name": None,
            "clan": None,
        },
        "mentions": [],
        "mention_roles": [],
        "pinned": False,
        "mention_everyone": False,
        "tts": False,
        "webhook_id": snowflake,
    }
    return json.dumps(message, separators=(",", ":")).encode()


def sinks_main(port: int) -> None:
    from aiohttp import web

    from bench import sinks_server

    async def deliver(request: web.Request) -> web.StreamResponse:
        response = await sinks_server.deliver(request)
        sink = request.match_info["sink"]
        if sink == "discord" and ANSWERS["discord"] == "message" and response.status == 200:
            body = discord_message(await request.read())
            return web.Response(body=body, content_type="application/json")
        return response

    async def answers(request: web.Request) -> web.Response:
        ANSWERS[request.match_info["sink"]] = request.match_info["kind"]
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=4 * 2**20)
    app.router.add_get("/stats", sinks_server.stats)
    app.router.add_get("/ids/{sink}", sinks_server.ids)
    app.router.add_post("/mode/{sink}/{mode}", sinks_server.mode)
    app.router.add_post("/answers/{sink}/{kind}", answers)
    app.router.add_post("/reset", sinks_server.reset)
    app.router.add_post("/{sink}", deliver)
    app.router.add_post("/{sink}/{rest:.*}", deliver)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- Redis figures --------------------------------------------------------------------------

LOG_KINDS = (
    ("event hash", f"{PREFIX}:log:evt:"),
    ("index (zset)", f"{PREFIX}:log:index"),
    ("payment list", f"{PREFIX}:log:pay:"),
    ("lookup sets", f"{PREFIX}:log:find:"),
)
IGNORED_COMMANDS = ("info", "config|resetstat")


def command_calls(r: Any) -> dict[str, int]:
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}
    return {k: v for k, v in calls.items() if k not in IGNORED_COMMANDS}


def wait_recorded(r: Any, total: int, timeout: float) -> tuple[int, int]:
    """Poll the stats hash (HGETALL) until it counts `total` deliveries; (count, polls)."""
    deadline = time.monotonic() + timeout
    polls = count = 0
    while time.monotonic() < deadline:
        stats = r.hgetall(f"{PREFIX}:stats")
        polls += 1
        count = sum(int(stats.get(f"dlv:{s}:delivered".encode(), 0)) for s in SINKS)
        if count >= total:
            break
        time.sleep(0.02)
    return count, polls


def drop_event_keys(r: Any) -> None:
    """Forget the warm-up's events (dedupe keys and the log), keep counters and health."""
    for pattern in (f"{PREFIX}:in:*", f"{PREFIX}:evt:*", f"{PREFIX}:dlv:*", f"{PREFIX}:log:*"):
        keys = list(r.scan_iter(pattern, count=1000))
        if keys:
            r.delete(*keys)


def memory_info(r: Any) -> dict[str, int]:
    """INFO memory once Redis has let go of idle clients' query buffers (its clientsCron frees
    them after 2 s idle: they swing by hundreds of KB with the ingress's pipelines), with the
    slow log emptied (a slow FLUSHALL or DEL of thousands of keys fills it with their args)."""
    r.slowlog_reset()  # its entries (up to 128, args kept) are in used_memory too
    time.sleep(SETTLE_S)
    info = r.info("memory")
    used = int(info["used_memory"])
    clients, aof = int(info.get("mem_clients_normal", 0)), int(info.get("mem_aof_buffer", 0))
    return {
        "used_memory": used,
        "used_memory_less_buffers": used - clients - aof,
        "used_memory_dataset": int(info["used_memory_dataset"]),
        "mem_clients_normal": clients,
        "mem_aof_buffer": aof,
        "keys": int(r.dbsize()),
        "stats": _memory_stats(r),
    }


def _memory_stats(r: Any) -> dict[str, Any]:
    """MEMORY STATS, flattened (`db.0` holds the keyspace's and the expiry table's overhead)."""
    out: dict[str, Any] = {}
    for key, value in r.memory_stats().items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if isinstance(value, dict):
            for k, v in value.items():
                out[f"{name}.{k.decode() if isinstance(k, bytes) else k}"] = v
        elif isinstance(value, (int, float)):
            out[name] = value
    return out


def log_breakdown(r: Any, n: int) -> dict[str, Any]:
    """MEMORY USAGE (all nested values) of every log key, summed by kind, / n events."""
    keys = list(r.scan_iter(f"{PREFIX}:log:*", count=1000))
    sizes: list[int] = []
    for start in range(0, len(keys), 500):
        with r.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 500]:
                pipe.memory_usage(key, samples=0)
            sizes += [int(x or 0) for x in pipe.execute()]
    kinds: dict[str, dict[str, Any]] = {}
    for name, prefix in LOG_KINDS:
        mine = [(k, s) for k, s in zip(keys, sizes, strict=True) if k.decode().startswith(prefix)]
        total = sum(s for _, s in mine)
        sample = mine[0][0] if mine else None
        kinds[name] = {
            "keys": len(mine),
            "bytes": total,
            "bytes_per_event": round(total / max(n, 1), 1),
            "bytes_per_key": round(total / max(len(mine), 1), 1),
            "encoding": encoding(r, sample) if sample else None,
            "ttl_s": r.ttl(sample) if sample else None,
        }
    lookups = [k for k in keys if k.decode().startswith(f"{PREFIX}:log:find:")]
    members = [int(x) for x in _pipelined(r, "scard", lookups)]
    kinds["lookup sets"]["members_max"] = max(members, default=0)
    kinds["lookup sets"]["sets_per_event"] = round(len(lookups) / max(n, 1), 2)
    total = sum(sizes)
    return {
        "keys": len(keys),
        "bytes": total,
        "bytes_per_event": round(total / max(n, 1), 1),
        "by_kind": kinds,
        "sample_hash": sample_hash(r),
    }


def encoding(r: Any, key: Any) -> str:
    value = r.object("encoding", key)
    return value.decode() if isinstance(value, bytes) else str(value)


def _pipelined(r: Any, command: str, keys: list[Any]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(keys), 500):
        with r.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 500]:
                getattr(pipe, command)(key)
            out += pipe.execute()
    return out


def sample_hash(r: Any) -> dict[str, Any]:
    """One event hash: its fields' value sizes, and what Redis keeps it as."""
    key = next(iter(r.scan_iter(f"{PREFIX}:log:evt:*", count=1000)), None)
    if key is None:
        return {}
    fields = {k.decode(): len(v) for k, v in r.hgetall(key).items()}
    return {
        "fields": len(fields),
        "value_bytes": dict(sorted(fields.items())),
        "value_bytes_total": sum(fields.values()),
        "field_name_bytes_total": sum(len(k) for k in fields),
        "memory_usage": r.memory_usage(key, samples=0),
        "encoding": encoding(r, key),
        "hash_max_listpack_value": int(
            r.config_get("hash-max-listpack-value").get("hash-max-listpack-value", 0)
        ),
    }


def event_bytes(
    rig: Rig,
    counts: Counts,
    mode: str,
    config: Path,
    n: int,
    seq_base: int,
    answers: str,
    redis_config: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One memory run: n events with the log `mode` (on/off), the Discord `answers` given;
    `redis_config` set on the Redis server for this run only (a what-if, not the default)."""
    r = rig.r
    saved = {k: r.config_get(k)[k] for k in redis_config or {}}
    for key, value in (redis_config or {}).items():
        r.config_set(key, value)
    try:
        return _event_bytes(rig, counts, mode, config, n, seq_base, answers, redis_config)
    finally:
        for key, value in saved.items():
            r.config_set(key, value)


def _event_bytes(
    rig: Rig,
    counts: Counts,
    mode: str,
    config: Path,
    n: int,
    seq_base: int,
    answers: str,
    redis_config: dict[str, str] | None,
) -> dict[str, Any]:
    r = rig.r
    rig.reset()
    sink_post(rig.sink_port, f"/answers/discord/{answers}")
    # Warm-up: every counter, health and latency key and the scripts exist in the baseline.
    warm = rig.workers(1, config=config)
    wait_workers_ready(r, 1, warm)
    preload(rig.base, 20, seq_base - 100_000, make=unique_tx_request)
    wait_recorded(r, 60, timeout=30)
    rig.stop(warm)
    drop_event_keys(r)
    before = memory_info(r)
    worker = rig.workers(1, config=config)
    wait_workers_ready(r, 1, worker)
    time.sleep(0.5)
    # What the worker and the ingress send while idle (arq's polls, heartbeats), to subtract.
    r.config_resetstat()
    rt_idle0, web_idle0, t_idle0 = (
        counts.round_trips(worker[0]),
        counts.round_trips(rig.web),
        time.monotonic(),
    )
    time.sleep(IDLE_S)
    idle_calls = command_calls(r)
    idle_s = time.monotonic() - t_idle0
    rt_idle = counts.round_trips(worker[0]) - rt_idle0
    web_idle = counts.round_trips(rig.web) - web_idle0
    r.config_resetstat()
    rt0, web0, t0 = counts.round_trips(worker[0]), counts.round_trips(rig.web), time.monotonic()
    with CpuNoise() as noise:
        ok = preload(rig.base, n, seq_base, make=unique_tx_request)
        recorded, polls = wait_recorded(r, 3 * ok, timeout=180)
    calls = command_calls(r)
    seconds = time.monotonic() - t0
    rt1, web1 = counts.settled(worker[0]), counts.round_trips(rig.web)
    window = (time.monotonic() - t0) / max(idle_s, 1e-6)  # the round trip count's window
    rig.stop(worker)
    after = memory_info(r)
    calls["hgetall"] = calls.get("hgetall", 0) - polls  # the bench's own polls
    per_event = {
        name: round(v / max(ok, 1), 3) for name, v in sorted(calls.items(), key=lambda kv: -kv[1])
    }
    per_event = {k: v for k, v in per_event.items() if v >= 0.005}
    worker_rt = (rt1 - rt0) / max(ok, 1)
    web_rt = (web1 - web0) / max(ok, 1)
    idle_per_event = {  # what idle polling alone would add over this run's length, per event
        "commands": round(sum(idle_calls.values()) * seconds / max(idle_s, 1e-6) / max(ok, 1), 3),
        "worker_round_trips": round(rt_idle * window / max(ok, 1), 3),
    }
    delta = after["used_memory"] - before["used_memory"]
    less = after["used_memory_less_buffers"] - before["used_memory_less_buffers"]
    result: dict[str, Any] = {
        "mode": mode,
        "discord_answers": answers,
        "what_if": redis_config,
        "events": ok,
        "complete": recorded >= 3 * ok,
        "seconds": round(seconds, 2),
        "before": before,
        "after": after,
        "bytes_per_event": round(delta / max(ok, 1), 1),
        "bytes_per_event_less_buffers": round(less / max(ok, 1), 1),
        "dataset_bytes_per_event": round(
            (after["used_memory_dataset"] - before["used_memory_dataset"]) / max(ok, 1), 1
        ),
        "keys_per_event": round((after["keys"] - before["keys"]) / max(ok, 1), 2),
        "commands_per_event": round(sum(per_event.values()), 2),
        "commands_per_event_by_name": per_event,
        "idle": {
            "seconds": round(idle_s, 2),
            "commands_per_s": round(sum(idle_calls.values()) / max(idle_s, 1e-6), 1),
            "worker_round_trips_per_s": round(rt_idle / max(idle_s, 1e-6), 1),
            "ingress_round_trips_per_s": round(web_idle / max(idle_s, 1e-6), 1),
            "per_event_over_this_run": idle_per_event,
        },
        "worker_round_trips_per_event": round(worker_rt, 3),
        "ingress_round_trips_per_request": round(web_rt, 3),
        "bench_polls_subtracted": polls,
        "other_cpus": noise.other_cpus,
    }
    if mode == "on":
        result["log"] = log_breakdown(r, ok)
    log(
        f"log cost: log {mode}, discord answers {answers}"
        + (f", what-if Redis config {redis_config}" if redis_config else "")
        + f": {ok} events, "
        f"{result['bytes_per_event']:.0f} bytes/event (used_memory {before['used_memory']:,} -> "
        f"{after['used_memory']:,}; less client buffers {result['bytes_per_event_less_buffers']:.0f}), "
        f"{result['keys_per_event']} keys/event, "
        f"{result['commands_per_event']} commands/event, worker {worker_rt:.2f} round trips/event, "
        f"ingress {web_rt:.2f}/request"
        + (
            f"; log keys {result['log']['bytes_per_event']:.0f} bytes/event by MEMORY USAGE"
            if mode == "on"
            else ""
        )
        + ("" if result["complete"] else f" INCOMPLETE ({recorded} of {3 * ok} deliveries)")
    )
    return result


def rejected_bytes(rig: Rig, counts: Counts, n: int, seq_base: int) -> dict[str, Any]:
    """`n` wrong-signature requests to an ingress that keeps them, and to one that does not."""
    r = rig.r
    rig.reset()
    no_keep_config = rig.variant("rejected-off", log={"rejected_max_bytes": 0})
    port = free_port()
    no_keep = rig.start_ingress(no_keep_config, port, "web-nokeep")
    urls = {"kept": f"{rig.base}/hooks/hmac", "not kept": f"http://127.0.0.1:{port}/hooks/hmac"}
    procs = {"kept": rig.web, "not kept": no_keep}
    for url in urls.values():  # fill the capped `rejections` list, make the counters
        asyncio.run(_post_all(url, 250, seq_base - 1000))
    r.delete(f"{PREFIX}:rej", f"{PREFIX}:rej:index")
    runs: dict[str, Any] = {}
    for i, (label, url) in enumerate(urls.items()):
        before = memory_info(r)
        r.config_resetstat()
        rt0 = counts.round_trips(procs[label])
        with CpuNoise() as noise:
            statuses = asyncio.run(_post_all(url, n, seq_base + i * n))
        calls = command_calls(r)
        rt1 = counts.settled(procs[label])
        after = memory_info(r)
        row: dict[str, Any] = {
            "requests": n,
            "statuses": statuses,
            "bytes_per_request": round((after["used_memory"] - before["used_memory"]) / n, 1),
            "bytes_per_request_less_buffers": round(
                (after["used_memory_less_buffers"] - before["used_memory_less_buffers"]) / n, 1
            ),
            "commands_per_request": round(sum(calls.values()) / n, 2),
            "commands_per_request_by_name": {
                k: round(v / n, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
            },
            "round_trips_per_request": round((rt1 - rt0) / n, 3),
            "other_cpus": noise.other_cpus,
        }
        if label == "kept":
            kept = r.hlen(f"{PREFIX}:rej") - 1  # less the `_bytes` field
            size = int(r.hget(f"{PREFIX}:rej", "_bytes") or 0)
            row.update(
                kept=kept,
                entry_bytes=round(size / max(kept, 1), 1),
                rej_memory_usage=r.memory_usage(f"{PREFIX}:rej", samples=0),
                rej_index_memory_usage=r.memory_usage(f"{PREFIX}:rej:index", samples=0),
                rej_encoding=encoding(r, f"{PREFIX}:rej"),
                rej_ttl_s=r.ttl(f"{PREFIX}:rej"),
            )
            row["rej_bytes_per_request"] = round(
                (row["rej_memory_usage"] + row["rej_index_memory_usage"]) / max(kept, 1), 1
            )
        runs[label] = row
        log(
            f"log cost: {n} rejected requests ({label}): {row['bytes_per_request']:.0f} bytes each, "
            f"{row['commands_per_request']} commands, {row['round_trips_per_request']} round trips "
            f"per request; statuses {statuses}"
            + (
                f"; MEMORY USAGE rej + rej:index {row['rej_bytes_per_request']:.0f} bytes per "
                f"kept request (msgpack entry {row['entry_bytes']:.0f} bytes)"
                if label == "kept"
                else ""
            )
        )
    rig.stop([no_keep])
    body = bad_signature_request(0)[0]
    return {
        "body_bytes": len(body),
        "runs": runs,
        "bytes_per_kept_request": round(
            runs["kept"]["bytes_per_request"] - runs["not kept"]["bytes_per_request"], 1
        ),
        "bytes_per_kept_request_less_buffers": round(
            runs["kept"]["bytes_per_request_less_buffers"]
            - runs["not kept"]["bytes_per_request_less_buffers"],
            1,
        ),
    }


def retention(per_event: float) -> list[dict[str, Any]]:
    rows = []
    for per_day, days in ((1000, 7), (100_000, 7), (100_000, 3), (100_000, 1)):
        total = per_event * per_day * days
        rows.append(
            {
                "events_per_day": per_day,
                "days": days,
                "events": per_day * days,
                "mib": total / 2**20,
            }
        )
    return rows


# --- speed ----------------------------------------------------------------------------------


def speed(tmp: Path, procs: Any, redis_url: str, n: int, seconds: float) -> dict[str, Any]:
    """Throughput and latency with the log on and off, alternating, one Rig (stock sinks)."""
    rig = Rig(tmp, procs, redis_url)
    configs = {
        "on": rig.variant("log-on", log={"enabled": True}),
        "off": rig.variant("log-off", log={"enabled": False}),
    }
    order = ("on", "off") * SPEED_PAIRS
    runs = []
    for i, mode in enumerate(order):
        row = throughput(
            rig,
            1,
            n,
            None,
            20_000_000 + i * 1_000_000,
            label=f" (log {mode})",
            config=configs[mode],
            make=unique_tx_request,
        )
        redis_cpu = (row.get("cpu_s_others") or {}).get("redis-server")
        if redis_cpu is not None:
            row["redis_cpu_ms_per_event"] = round(1000 * redis_cpu / max(row["events"], 1), 3)
        runs.append({"mode": mode, **row})
    latency = []
    for i, mode in enumerate(order):
        rig.reset()
        workers = rig.workers(1, config=configs[mode])
        wait_workers_ready(rig.r, 1, workers)
        # A fresh worker's first seconds (connections, script loads) are not the log's cost.
        latency_at(rig, LATENCY_RATE, WARMUP_S, 50_000_000 + i * 1_000_000)
        row = latency_at(rig, LATENCY_RATE, seconds, 60_000_000 + i * 1_000_000)
        rig.stop(workers)
        latency.append({"mode": mode, **row})
        log(f"log cost: latency run {i + 1} was log {mode}")
    rig.stop([rig.web, rig.sinks_proc])
    return {"order": list(order), "throughput": runs, "latency": latency}


def _median(values: list[float]) -> float | None:
    """The median of the runs: one run slowed down by another process moves it least."""
    import statistics

    return statistics.median(values) if values else None


QUIET_CPUS = 0.3  # a pair counts as quiet when other processes used less than this meanwhile


def _diff(on: float | None, off: float | None) -> float | None:
    return None if not (on and off) else round(100 * (on - off) / off, 1)


def _worst(row: dict[str, Any], q: str) -> float | None:
    values = [(row["sinks"][s].get("latency") or {}).get(q) for s in SINKS]
    present = [v for v in values if v is not None]
    return max(present) if present else None


def speed_summary(sp: dict[str, Any]) -> dict[str, Any]:
    """Per figure: the median of the on runs and of the off runs, and the on-vs-off difference
    of each adjacent pair (run 2k against 2k+1, seconds apart, so drift cancels) with their
    median, over all pairs and over the quiet pairs only."""
    out: dict[str, Any] = {}
    figures: list[tuple[str, str, Any]] = [
        (f, "throughput", lambda t, f=f: t[f])
        for f in (
            "events_per_s",
            "worker_cpu_ms_per_event",
            "redis_cpu_ms_per_event",
            "redis_commands_per_event",
        )
        if all(f in t for t in sp["throughput"])
    ] + [(q, "latency", lambda row, q=q: _worst(row, q)) for q in ("p50_ms", "p99_ms")]
    for figure, table, get in figures:
        rows = sp[table]
        on = _median([v for r in rows if r["mode"] == "on" and (v := get(r)) is not None])
        off = _median([v for r in rows if r["mode"] == "off" and (v := get(r)) is not None])
        pairs = []
        for a, b in zip(rows[0::2], rows[1::2], strict=False):
            r_on, r_off = (a, b) if a["mode"] == "on" else (b, a)
            noise = max(a.get("other_cpus") or 0.0, b.get("other_cpus") or 0.0)
            pairs.append({"diff_pct": _diff(get(r_on), get(r_off)), "other_cpus": noise})
        diffs = [p["diff_pct"] for p in pairs if p["diff_pct"] is not None]
        quiet = [
            p["diff_pct"]
            for p in pairs
            if p["diff_pct"] is not None and p["other_cpus"] < QUIET_CPUS
        ]
        out[figure] = {
            "on": on,
            "off": off,
            "diff_pct_of_medians": _diff(on, off),
            "pairs": pairs,
            "diff_pct": _median(diffs),
            "diff_pct_quiet_pairs": _median(quiet),
            "quiet_pairs": len(quiet),
        }
    return out


# --- the part -------------------------------------------------------------------------------


MEMORY_PLAN: tuple[tuple[str, str, dict[str, str] | None], ...] = (
    ("off", "bench", None),
    ("on", "bench", None),
    ("off", "bench", None),
    ("on", "bench", None),
    ("on", "message", None),
    ("on", "bench", WHAT_IF),
)


def _work_tree() -> str:
    """The commit measured, and whether relay/ or workers/ had uncommitted edits then."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(RESULTS_DIR.parent.parent), *args],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = [line[3:] for line in git("status", "--porcelain", "relay", "workers").splitlines()]
    if not dirty:
        return f"commit {commit}, relay/ and workers/ as committed"
    return f"commit {commit} with uncommitted edits in {', '.join(dirty)}"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(quick: bool = False, only: str | None = None) -> dict[str, Any]:
    """Everything; `only` "memory" (bytes, rejections, commands) or "speed" reruns that half
    and keeps the other half's figures from bench/results/log.json."""
    n = 500 if quick else N
    n_speed = 1000 if quick else N_SPEED
    seconds = 5 if quick else LATENCY_SECONDS
    result: dict[str, Any] = {}
    previous = RESULTS_DIR / "log.json"
    if only and previous.exists():
        result = json.loads(previous.read_text())
        result.pop("part", None)
        result.pop("finished_at", None)
    result["quick"] = quick
    result["work_tree"] = _work_tree()
    with workspace("log") as (tmp, procs), redis_server(tmp) as rserver:
        if only != "speed":
            result.update(n=n, load_before=_load())
            counts = Counts(tmp / "counts")
            rig = Rig(tmp, procs, rserver.url, sinks_cmd=SINKS_CMD, wrap=counts.prefix)
            # Redis 7's per-command latency histograms (~22 KB per command name, made on its
            # first call, freed only by CONFIG RESETSTAT) would add 0.1-0.7 MB to either side
            # of a delta: a fixed cost, not the log's.
            rig.r.config_set("latency-tracking", "no")
            rig.r.config_resetstat()  # and the histograms of the start-up's commands go
            result["notes"] = rig.notes
            configs = {
                "on": rig.variant("log-on", log={"enabled": True}),
                "off": rig.variant("log-off", log={"enabled": False}),
            }
            result["memory_runs"] = [
                event_bytes(rig, counts, mode, configs[mode], n, 1_000_000 * (i + 1), answers, cfg)
                for i, (mode, answers, cfg) in enumerate(MEMORY_PLAN)
            ]
            result["rejected"] = rejected_bytes(rig, counts, n, 9_000_000)
            rig.stop([rig.web, rig.sinks_proc])
            result["load_after_memory"] = _load()
        if only != "memory":
            result["load_before_speed"] = _load()
            result["speed"] = speed(tmp, procs, rserver.url, n_speed, seconds)
            result["speed_summary"] = speed_summary(result["speed"])
            result["load_after"] = _load()
    if "memory_runs" in result:
        summarize_memory(result)
    targets = result.setdefault("targets", {})
    targets.update(bytes_per_event=AIM_BYTES, speed_pct=AIM_SPEED_PCT, round_trips=AIM_ROUND_TRIPS)
    if "log_bytes_per_event" in result:
        targets["met_bytes"] = result["log_bytes_per_event"] < AIM_BYTES
        targets["met_bytes_discord_message"] = (
            result["log_bytes_per_event_discord_message"] < AIM_BYTES
        )
        targets["met_round_trips"] = result["round_trips"]["worker_extra"] <= AIM_ROUND_TRIPS
    if "speed_summary" in result:
        s = result["speed_summary"]
        slower = s["events_per_s"]["diff_pct"]  # negative: fewer events/s with the log
        later = s["p99_ms"]["diff_pct"]  # positive: a later p99 with the log
        targets["met_speed"] = (
            None
            if slower is None or later is None
            else slower >= -AIM_SPEED_PCT and later <= AIM_SPEED_PCT
        )
        log(
            f"log cost: events/s on {s['events_per_s']['on']:.0f} off "
            f"{s['events_per_s']['off']:.0f} ({_pct(s['events_per_s']['diff_pct'])}), worker CPU "
            f"ms/event {_pct(s['worker_cpu_ms_per_event']['diff_pct'])}, p99 on "
            f"{s['p99_ms']['on']:.1f} off {s['p99_ms']['off']:.1f} ms; load average "
            f"{result.get('load_before_speed')} -> {result.get('load_after')}"
        )
    save_result("log", result)
    return result


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:+.1f}%"


def summarize_memory(result: dict[str, Any]) -> None:
    """Means over the memory runs (what-if runs apart): bytes, commands, round trips."""
    plain = [r for r in result["memory_runs"] if not r["what_if"]]

    def mean_of(mode: str, answers: str, key: str) -> float:
        values = [r[key] for r in plain if r["mode"] == mode and r["discord_answers"] == answers]
        return sum(values) / len(values)

    # Primary: used_memory less what sits in client and AOF buffers (they swing by hundreds
    # of KB with the ingress's pipelines, whatever the log does); raw used_memory beside it.
    raw = {
        k: mean_of(mode, answers, "bytes_per_event")
        for k, mode, answers in (
            ("off", "off", "bench"),
            ("on", "on", "bench"),
            ("msg", "on", "message"),
        )
    }
    less = {
        k: mean_of(mode, answers, "bytes_per_event_less_buffers")
        for k, mode, answers in (
            ("off", "off", "bench"),
            ("on", "on", "bench"),
            ("msg", "on", "message"),
        )
    }
    per_event, per_event_msg = less["on"] - less["off"], less["msg"] - less["off"]
    result["log_bytes_per_event"] = round(per_event, 1)
    result["log_bytes_per_event_discord_message"] = round(per_event_msg, 1)
    result["log_bytes_per_event_raw_used_memory"] = round(raw["on"] - raw["off"], 1)
    result["log_bytes_per_event_discord_message_raw_used_memory"] = round(
        raw["msg"] - raw["off"], 1
    )
    tables = {
        mode: [
            (
                sum(
                    r["after"]["stats"].get(f"db.0.overhead.hashtable.{t}", 0)
                    for t in ("main", "expires")
                )
                - sum(
                    r["before"]["stats"].get(f"db.0.overhead.hashtable.{t}", 0)
                    for t in ("main", "expires")
                )
            )
            / max(r["events"], 1)
            for r in plain
            if r["mode"] == mode and r["discord_answers"] == "bench"
        ]
        for mode in ("on", "off")
    }
    result["log_hashtable_bytes_per_event"] = round(
        sum(tables["on"]) / len(tables["on"]) - sum(tables["off"]) / len(tables["off"]), 1
    )
    result["retention"] = retention(per_event)
    result["retention_discord_message"] = retention(per_event_msg)
    what_if = [r for r in result["memory_runs"] if r["what_if"]]
    if what_if:
        hash_kind = what_if[0]["log"]["by_kind"]["event hash"]
        result["what_if"] = {
            "redis_config": what_if[0]["what_if"],
            "log_bytes_per_event": round(
                what_if[0]["bytes_per_event_less_buffers"] - less["off"], 1
            ),
            "event_hash_bytes": hash_kind["bytes_per_key"],
            "encoding": hash_kind["encoding"],
        }
    by_mode: dict[str, dict[str, float]] = {}
    for mode in ("on", "off"):
        rows = [
            r["commands_per_event_by_name"]
            for r in plain
            if r["mode"] == mode and r["discord_answers"] == "bench"
        ]
        names = {k for row in rows for k in row}
        by_mode[mode] = {k: round(sum(row.get(k, 0) for row in rows) / len(rows), 2) for k in names}
    result["commands_by_name"] = {
        name: {
            "off": by_mode["off"].get(name, 0.0),
            "on": by_mode["on"].get(name, 0.0),
            "extra": round(by_mode["on"].get(name, 0.0) - by_mode["off"].get(name, 0.0), 2),
        }
        for name in sorted(
            set(by_mode["on"]) | set(by_mode["off"]), key=lambda k: -by_mode["on"].get(k, 0.0)
        )
    }
    rt = {
        f"{who}_{mode}": mean_of(mode, "bench", key)
        for mode in ("on", "off")
        for who, key in (
            ("worker", "worker_round_trips_per_event"),
            ("ingress", "ingress_round_trips_per_request"),
            ("commands", "commands_per_event"),
        )
    }
    result["round_trips"] = {
        "worker_on": round(rt["worker_on"], 2),
        "worker_off": round(rt["worker_off"], 2),
        "worker_extra": round(rt["worker_on"] - rt["worker_off"], 2),
        "ingress_on": round(rt["ingress_on"], 3),
        "ingress_off": round(rt["ingress_off"], 3),
        "commands_on": round(rt["commands_on"], 2),
        "commands_off": round(rt["commands_off"], 2),
        "commands_extra": round(rt["commands_on"] - rt["commands_off"], 2),
    }
    log(
        f"log cost: {per_event:.0f} bytes/event ({per_event_msg:.0f} with Discord-sized answers; "
        f"raw used_memory {raw['on'] - raw['off']:.0f} / {raw['msg'] - raw['off']:.0f}), "
        f"worker round trips/event on {rt['worker_on']:.2f} off {rt['worker_off']:.2f}, "
        f"commands/event on {rt['commands_on']:.1f} off {rt['commands_off']:.1f}; load average "
        f"{result.get('load_before')} -> {result.get('load_after_memory')}"
    )


def main(argv: list[str]) -> int:
    """`python -m bench.log_cost [--quick] [--only memory|speed]`, or one of the helper
    processes (`counted FILE relay-args...`, `sinks --port N`)."""
    if argv[:1] == ["counted"] and len(argv) >= 3:
        return counted(argv[1], argv[2:])
    if argv[:1] == ["sinks"] and argv[1:2] == ["--port"] and len(argv) == 3:
        sinks_main(int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.log_cost")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["memory", "speed"])
    args = parser.parse_args(argv)
    run(args.quick, args.only)
    from bench import report

    report.write(
        json.loads((RESULTS_DIR / "run.json").read_text())
        if (RESULTS_DIR / "run.json").exists()
        else None
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
