"""Part 4: soak. Steady load through ingress, worker and three sinks, with faults:

- a sink (discord) answers 503 for a minute (from 15% of the run);
- Redis restarts (SIGTERM, append-only file flushed, 3 s down, started again on the same port
  and directory) at 60% of the run.

The load client (a separate process) re-sends each webhook byte-identically until it gets a
2xx, as a provider does, honouring Retry-After; only 2xx counts as accepted. At the end every
accepted webhook's event must have reached every sink: missing must be 0.

    python -m bench.soak --minutes 3 [--rate 50]

A process that dies is restarted like a dyno would be, and counted. Every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import urllib.request
from typing import Any

from bench.common import (
    HOST,
    PREFIX,
    PY,
    REPO,
    RssSampler,
    log,
    redis_server,
    save_result,
    start_ingress,
    workspace,
)
from bench.e2e import SINKS, Rig, delivered, sink_post, sink_stats, stats_hash

RETRY = {
    "schedule": [
        "1s",
        "2s",
        "5s",
        "10s",
        "10s",
        "10s",
        "10s",
        "10s",
        "10s",
        "10s",
        "10s",
        "10s",
        "30s",
    ],
    "jitter": 0.2,
}
DOWN_SINK = "discord"
REDIS_DOWN_S = 3.0


def sink_ids(port: int, sink: str) -> set[str]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/ids/{sink}", timeout=30) as resp:
        return set(json.loads(resp.read()))


def run(minutes: float = 3.0, rate: float = 50.0) -> dict[str, Any]:
    total_s = minutes * 60
    down_at, down_for = 0.15 * total_s, min(60.0, 0.4 * total_s)
    restart_at = max(0.6 * total_s, down_at + down_for + 10)
    drain_limit = 150.0
    timeline: list[tuple[float, str]] = []
    restarts: dict[str, int] = {"web": 0, "worker": 0}
    with (
        workspace("soak") as (tmp, procs),
        redis_server(tmp) as rserver,
        RssSampler(1.0) as sampler,
    ):
        # A short retry schedule (a sink's `retry:`), so a one-minute outage heals within the run.
        rig = Rig(tmp, procs, rserver.url, retry=RETRY)
        notes = rig.notes
        rig.reset()
        web, worker = rig.web, rig.workers(1)[0]
        sampler.watch("web", web.pid)
        sampler.watch("worker", worker.pid)
        accepted_path = tmp / "accepted.json"
        t0 = time.monotonic()
        load = subprocess.Popen(
            [
                PY,
                "-m",
                "bench.loadgen",
                "rate",
                "--url",
                rig.base,
                "--source",
                "ivpay",
                "--rate",
                str(rate),
                "-d",
                str(total_s),
                "--retry",
                "--retry-for",
                "120",
                "--accepted-out",
                str(accepted_path),
                "--repo",
                str(REPO),
                "--seq-base",
                "50000000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(REPO),
        )
        log(
            f"soak: {minutes:g} min at {rate:g} webhooks/s; {DOWN_SINK} sink down "
            f"{down_at:.0f}-{down_at + down_for:.0f}s, Redis restart at {restart_at:.0f}s"
        )
        phase = "up"
        redis_restarted = False
        next_report = 30.0
        rss_started = False
        r = rig.r
        while time.monotonic() - t0 < total_s + 130:  # bounded: the load client ends at total_s
            now = time.monotonic() - t0
            if phase == "up" and now >= down_at:
                sink_post(rig.sink_port, f"/mode/{DOWN_SINK}/down")
                timeline.append((round(now, 1), f"{DOWN_SINK} sink answers 503"))
                log(f"soak: t={now:.0f}s {DOWN_SINK} sink down (503)")
                phase = "down"
            elif phase == "down" and now >= down_at + down_for:
                sink_post(rig.sink_port, f"/mode/{DOWN_SINK}/ok")
                timeline.append((round(now, 1), f"{DOWN_SINK} sink back"))
                log(f"soak: t={now:.0f}s {DOWN_SINK} sink back")
                phase = "healed"
            if not redis_restarted and now >= restart_at:
                rserver.stop()
                timeline.append((round(now, 1), "redis-server stopped (SIGTERM)"))
                log(f"soak: t={now:.0f}s redis stopped")
                time.sleep(REDIS_DOWN_S)
                rserver.start()
                now = time.monotonic() - t0
                timeline.append((round(now, 1), "redis-server started (same port, same AOF)"))
                log(f"soak: t={now:.0f}s redis started again")
                redis_restarted = True
            for name in ("web", "worker"):
                proc = web if name == "web" else worker
                if not proc.alive():
                    restarts[name] += 1
                    timeline.append(
                        (round(now, 1), (f"{name} exited ({proc.popen.returncode}); restarted"))
                    )
                    log(
                        f"soak: {name} exited with {proc.popen.returncode}: restarting\n"
                        f"{proc.tail(5)}"
                    )
                    if name == "web":
                        web = start_ingress(procs, rig.config, rig.web_port)
                        sampler.watch("web", web.pid)
                    else:
                        worker = rig.workers(1)[0]
                        sampler.watch("worker", worker.pid)
            if not rss_started and now >= 10:
                sampler.reset_start()  # RSS "start": 10 s in, with the processes warm
                rss_started = True
            if now >= next_report:
                try:
                    counts = delivered(r)
                except Exception:  # noqa: BLE001 - Redis may be restarting
                    counts = {}
                log(f"soak: t={now:.0f}s delivered so far {counts}")
                next_report += 30
            if load.poll() is not None:
                break
            time.sleep(0.25)
        out, err = load.communicate(timeout=200)
        load_result = (
            json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-500:]}
        )
        accepted = set(json.loads(accepted_path.read_text())) if accepted_path.exists() else set()
        log(
            f"soak: load done: {len(accepted)} accepted (2xx), statuses {load_result.get('statuses')}, "
            f"retries {load_result.get('retries')}, gave up {load_result.get('gave_up')}"
        )
        # drain: until every accepted event reached every sink, bounded
        drain_start = time.monotonic()
        missing: dict[str, int] = {}
        while time.monotonic() - drain_start < drain_limit:
            seen = {s: sink_ids(rig.sink_port, s) for s in SINKS}
            missing = {s: len(accepted - seen[s]) for s in SINKS}
            if not any(missing.values()):
                break
            time.sleep(1)
        drain_s = time.monotonic() - drain_start
        sinks_now = sink_stats(rig.sink_port)
        seen = {s: sink_ids(rig.sink_port, s) for s in SINKS}
        stats = stats_hash(r)
        dlq = r.hlen(f"{PREFIX}:dlq")
        rss = sampler.result()
    result = {
        "minutes": minutes,
        "rate": rate,
        "timeline": timeline,
        "notes": notes,
        "load": load_result,
        "accepted_2xx": len(accepted),
        "delivered_distinct": {s: len(seen[s]) for s in SINKS},
        "missing": {s: len(accepted - seen[s]) for s in SINKS},
        "delivered_not_acknowledged": {s: len(seen[s] - accepted) for s in SINKS},
        "duplicates": {s: sinks_now.get(s, {}).get("duplicates", 0) for s in SINKS},
        "sink_refused_503": {s: sinks_now.get(s, {}).get("refused", 0) for s in SINKS},
        "drain_s": round(drain_s, 1),
        "dlq": dlq,
        "restarts": restarts,
        "relay_stats": {k: v for k, v in stats.items() if k.startswith(("dlv:", "in:", "evt:"))},
        "rss": rss,
        "retry_schedule": RETRY,
    }
    ok = not any(result["missing"].values())
    log(
        f"soak: accepted {len(accepted)}; delivered {result['delivered_distinct']}; MISSING "
        f"{result['missing']} ({'OK' if ok else 'FAIL'}); duplicates {result['duplicates']}; "
        f"dlq {dlq}; restarts {restarts}; drained in {drain_s:.0f}s"
    )
    log(
        "soak: RSS start -> end: "
        + ", ".join(
            f"{k} {v['start_mib']} -> {v['last_mib']} MiB (peak {v['peak_mib']})"
            for k, v in rss.items()
        )
    )
    save_result("soak", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks per second")
    args = parser.parse_args()
    run(args.minutes, args.rate)


if __name__ == "__main__":
    main()
