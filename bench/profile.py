"""Where a `relay worker` spends its CPU: py-spy samples one worker while it drains N
pre-loaded events to three sinks; stacks are grouped into the parts of the worker path.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import PY, log

# (label, substrings of a frame "function (path:line)"); first match from the leaf upward
# decides a sample's *self* bucket; a sample counts *inclusive* for every label on its stack.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("structlog / logging", ("structlog/", "relay/logs.py", "logging/__init__")),
    ("sink HTTP client (relay.sinks.client, httptools)", ("relay/sinks/client.py", "httptools")),
    ("aiohttp (provider API checks, alerts)", ("aiohttp/",)),
    (
        "sink render + sign",
        (
            "relay/sinks/render.py",
            "render (relay/sinks",
            "sign (relay/sinks",
            "standardwebhooks",
            "jinja2/",
        ),
    ),
    ("redis-py (commands, parse)", ("redis/", "hiredis")),
    (
        "worker loop (arq, RelayWorker: poll, claim, run/finish job)",
        ("arq/", "workers/settings.py", "workers/run_claimed.py"),
    ),
    ("normalize (provider)", ("relay/providers/",)),
    ("event JSON / msgpack", ("relay/events.py", "msgpack", "orjson")),
    (
        "relay delivery pipeline (own code)",
        ("relay/delivery.py", "workers/jobs.py", "relay/routing.py", "relay/sinks/"),
    ),
]

INCLUSIVE: list[tuple[str, tuple[str, ...]]] = [
    ("run_claimed + finish_job (workers/run_claimed.py)", ("run_claimed (workers", "finish_job (")),
    ("process_inbound job (normalize+claim+fan-out)", ("process_inbound (workers",)),
    ("Pipeline.send -> sink.deliver", ("deliver (relay/sinks",)),
    ("Pipeline.record (delivered marks: one script call)", ("record (relay/delivery",)),
    ("Pipeline.handle_event claim script", ("handle_event (relay/delivery",)),
    ("structlog calls", ("structlog/",)),
    ("sink render (message building)", ("render (relay/sinks",)),
]


INGRESS_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("structlog / logging", ("structlog/", "relay/logs.py", "logging/__init__")),
    ("redis-py (Lua EVALSHA, parse)", ("redis/", "hiredis")),
    ("provider verify (signature, JSON check)", ("relay/providers/", "hmac.py", "orjson")),
    ("payrelay store (msgpack job, id hash)", ("relay/queue.py", "msgpack", "hashlib")),
    ("payrelay handler (relay/ingress)", ("relay/ingress/",)),
    ("aiohttp server (HTTP parse, request, response)", ("aiohttp/", "multidict", "yarl")),
]

INGRESS_INCLUSIVE: list[tuple[str, tuple[str, ...]]] = [
    ("receive_webhook (the whole handler)", ("receive_webhook (relay",)),
    ("InboundStore.store (one EVALSHA)", ("store (relay/queue",)),
    ("provider.verify", ("verify (relay/providers",)),
    ("read_body", ("read_body (relay",)),
    ("json_response", ("json_response (aiohttp",)),
    ("asyncio.timeout", ("timeout (asyncio/timeouts", "Timeout.__aenter__", "Timeout.__aexit__")),
]


def analyse(
    raw: Path,
    categories: list[tuple[str, tuple[str, ...]]] | None = None,
    inclusive: list[tuple[str, tuple[str, ...]]] | None = None,
) -> dict[str, Any]:
    categories = categories or CATEGORIES
    inclusive = inclusive or INCLUSIVE
    self_buckets: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = stack.split(";")
        total += count
        if frames:
            leaf[frames[-1].strip()] += count
        # A leaf in asyncio's own code (socket write, scheduling) is charged to the nearest
        # caller outside asyncio: a transport.write under redis-py is Redis I/O.
        bucket = "other (C, idle, interpreter)"
        for frame in reversed(frames):
            if "(asyncio/" in frame or "(selectors.py" in frame or "(uvloop/" in frame:
                bucket = "event loop (asyncio + uvloop: scheduling, epoll)"
                continue
            hit = next((label for label, keys in categories if any(k in frame for k in keys)), None)
            if hit:
                bucket = hit
                break
        self_buckets[bucket] += count
        for label, keys in inclusive:
            if any(any(k in f for k in keys) for f in frames):
                incl[label] += count

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in c.most_common()] if total else []

    return {
        "samples": total,
        "by_part_self_pct": share(self_buckets),
        "inclusive_pct": share(incl),
        "top_leaf_frames_pct": share(leaf)[:15],
    }


def profile_worker(rig: Any, n: int, seq_base: int, seconds: float = 6.0) -> dict[str, Any]:
    from bench.e2e import preload, wait_delivered, wait_workers_ready

    if pyspy() is None:
        log("profile: py-spy not installed (pip install py-spy): skipped")
        return {"skipped": "py-spy not installed"}
    rig.reset()
    ok = preload(rig.base, n, seq_base)
    workers = rig.workers(1)
    wait_workers_ready(rig.r, 1, workers)
    raw = rig.tmp / "worker.pyspy.txt"
    err = record(workers[0].pid, seconds, raw)
    wait_delivered(rig.r, 3 * ok, timeout=120)
    rig.stop(workers)
    if not raw.exists():
        log(f"profile: py-spy failed: {err[-300:]}")
        return {"skipped": f"py-spy failed: {err[-300:]}"}
    result = analyse(raw)
    out = Path(__file__).resolve().parent / "results" / "worker.pyspy.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(raw, out)
    log(
        "profile (one worker, self time): "
        + ", ".join(f"{k} {v}%" for k, v in result["by_part_self_pct"][:8])
    )
    log("profile (inclusive): " + ", ".join(f"{k} {v}%" for k, v in result["inclusive_pct"]))
    return result


def pyspy() -> str | None:
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    return spy if Path(spy).exists() else None


def record(pid: int, seconds: float, out: Path) -> str:
    """py-spy record --nonblocking into `out` (raw collapsed stacks); returns stderr."""
    spy = pyspy()
    if spy is None:
        return "py-spy not installed"
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    from bench.common import cpus_client, pin

    pin(proc.pid, cpus_client())
    _, err = proc.communicate(timeout=seconds + 60)
    return err
