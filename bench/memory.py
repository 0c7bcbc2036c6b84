"""Part 3: memory.

- Redis bytes per in-flight event: INFO memory `used_memory` before and after N webhooks are
  accepted by the ingress with no worker running (queued, unprocessed inbound jobs), / N;
- Redis bytes per dedupe entry: after a worker has delivered all N to three sinks and the queue
  is empty, what is left (`<prefix>:in:*`, `<prefix>:evt:*`, `<prefix>:dlv:*`) over the
  baseline, / N; with MEMORY USAGE of one key of each kind;
- peak RSS of the web and worker processes during the run.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import PREFIX, RssSampler, log, redis_server, save_result, workspace
from bench.e2e import Rig, preload, wait_delivered, wait_workers_ready

N = 5000


def used_memory(r: Any) -> int:
    time.sleep(0.3)
    return int(r.info("memory")["used_memory"])


def count_keys(r: Any, pattern: str) -> int:
    return sum(1 for _ in r.scan_iter(pattern, count=1000))


def sample_usage(r: Any, pattern: str) -> int | None:
    for key in r.scan_iter(pattern, count=1000):
        return r.memory_usage(key, samples=0)
    return None


def run(quick: bool = False) -> dict[str, Any]:
    n = 2000 if quick else N
    with workspace("memory") as (tmp, procs), redis_server(tmp) as rserver, RssSampler() as sampler:
        rig = Rig(tmp, procs, rserver.url)
        sampler.watch("web (ingress)", rig.web.pid)
        r = rig.r
        rig.reset()
        # Warm the ingress and every counter/health key once, so the baseline holds them.
        preload(rig.base, 20, 90_000_000)
        workers = rig.workers(1)
        sampler.watch("worker", workers[0].pid)
        wait_workers_ready(r, 1, workers)
        wait_delivered(r, 60, timeout=30)
        rig.stop(workers)
        for pattern in (f"{PREFIX}:in:*", f"{PREFIX}:evt:*", f"{PREFIX}:dlv:*"):
            keys = list(r.scan_iter(pattern, count=1000))
            if keys:
                r.delete(*keys)
        base = used_memory(r)
        ok = preload(rig.base, n, 91_000_000)
        queued = used_memory(r)
        inflight_keys = {
            "queue entries": r.zcard(f"{PREFIX}:queue"),
            "arq:job:* keys": count_keys(r, "arq:job:*"),
            "in:* keys": count_keys(r, f"{PREFIX}:in:*"),
        }
        job_usage = sample_usage(r, "arq:job:*")
        per_inflight = (queued - base) / ok
        log(
            f"memory: {ok} queued inbound jobs: {per_inflight:.0f} bytes per in-flight event "
            f"(used_memory {base} -> {queued}; one arq:job key {job_usage} bytes)"
        )
        workers = rig.workers(1)
        sampler.watch("worker", workers[0].pid)
        wait_workers_ready(r, 1, workers)
        wait_delivered(r, 60 + 3 * ok, timeout=120)
        time.sleep(0.5)
        queue_left = r.zcard(f"{PREFIX}:queue")
        rig.stop(workers)
        after = used_memory(r)
        keys = {name: count_keys(r, f"{PREFIX}:{name}:*") for name in ("in", "evt", "dlv")}
        usage = {name: sample_usage(r, f"{PREFIX}:{name}:*") for name in ("in", "evt", "dlv")}
        per_entry = (after - base) / ok
        ttls = {
            name: r.ttl(next(iter(r.scan_iter(f"{PREFIX}:{name}:*", count=1000)), "none"))
            for name in ("in", "evt", "dlv")
        }
        log(
            f"memory: after delivery: {per_entry:.0f} bytes per dedupe entry "
            f"(keys left {keys}, MEMORY USAGE one each {usage}, TTL s {ttls}, queue left "
            f"{queue_left})"
        )
        rss = sampler.result()
        log("memory: peak RSS " + ", ".join(f"{k} {v['peak_mib']} MiB" for k, v in rss.items()))
        info = r.info("memory")
    result = {
        "n": ok,
        "used_memory_base": base,
        "used_memory_queued": queued,
        "used_memory_after": after,
        "bytes_per_inflight_event": round(per_inflight),
        "inflight_keys": inflight_keys,
        "arq_job_key_bytes": job_usage,
        "bytes_per_dedupe_entry": round(per_entry),
        "dedupe_keys": keys,
        "dedupe_key_bytes": usage,
        "dedupe_ttl_s": ttls,
        "queue_left": queue_left,
        "rss": rss,
        "allocator": info.get("mem_allocator"),
        "body_bytes": len(__import__("bench.common").common.ivpay_request(0)[0]),
    }
    save_result("memory", result)
    return result


if __name__ == "__main__":
    run()
