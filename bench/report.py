"""Writes docs/benchmarks.md and docs/benchmarks.png from bench/results/*.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import REPO, load_results, machine

DOC = REPO / "docs" / "benchmarks.md"
PNG = REPO / "docs" / "benchmarks.png"
SINKS = ("http", "discord", "slack")


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _ok(flag: bool | None) -> str:
    return "–" if flag is None else ("**met**" if flag else "**missed**")


def chart(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ing = results.get("ingress")
    ax = axes[0][0]
    if ing:
        rows = ing["rows"]
        labels = [r["label"].replace("payrelay ingress, ", "payrelay\n").replace(
            "aiohttp + arq ", "aiohttp +\n").replace(", byte-identical repeat", "\nrepeat").replace(
            ", on uvloop (proposed)", "\nuvloop (proposed)").replace(
            ", batched stores (proposed, prototype)", "\nbatched (proposed)")
            for r in rows]
        bars = ax.bar(range(len(rows)), [r["rps"] for r in rows],
                      color=["#999", "#d98c3f"] + ["#3f7fd9"] * (len(rows) - 2))
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_title(f"Ingress req/s (wrk, {ing['connections']} conns, best of "
                     f"{ing.get('rounds', 1)})\npayrelay/enqueue_job = {ing['ratio']} by req/s, "
                     f"{ing.get('ratio_cpu')} by CPU per request (target 1.5)", fontsize=9)
        ax.set_ylabel("requests/s")
    e2e = results.get("e2e")
    ax = axes[0][1]
    if e2e:
        tp = e2e["throughput"]
        vals = [(f"payrelay\n{t['workers']} worker{'s' if t['workers'] > 1 else ''}",
                 t["events_per_s"]) for t in tp]
        if e2e.get("throughput_log_warning"):
            vals.append(("payrelay 1 worker\nLOG_LEVEL=WARNING",
                         e2e["throughput_log_warning"]["events_per_s"]))
        if e2e.get("throughput_uvloop"):
            vals.append(("payrelay 1 worker\non uvloop (proposed)",
                         e2e["throughput_uvloop"]["events_per_s"]))
        if e2e.get("arq_noop"):
            vals.append(("arq no-op\njobs/s", e2e["arq_noop"]["jobs_per_s"]))
        bars = ax.bar(range(len(vals)), [v for _, v in vals],
                      color=(["#3f7fd9", "#3f7fd9", "#7fb3e6", "#7fb3e6"][: len(vals) - 1]
                             + ["#d98c3f"]))
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(vals)), [k for k, _ in vals], fontsize=8)
        ax.axhline(1000, color="red", ls="--", lw=1, label="target 1000 events/s per worker")
        ax.legend(fontsize=8)
        ax.set_title("End to end: events/s, 3 sinks each (pre-loaded backlog)", fontsize=10)
        ax = axes[1][0]
        rates = [row["rate"] for row in e2e["latency"]]
        for sink, color in zip(SINKS, ("#3f7fd9", "#7f5fbf", "#3fa06f"), strict=True):
            p50 = [row["sinks"][sink].get("latency", {}).get("p50_ms") for row in e2e["latency"]]
            p99 = [row["sinks"][sink].get("latency", {}).get("p99_ms") for row in e2e["latency"]]
            ax.plot(rates, p50, "o-", color=color, label=f"{sink} p50")
            ax.plot(rates, p99, "s--", color=color, label=f"{sink} p99")
        ax.axhline(100, color="red", ls=":", lw=1, label="target p99 100 ms @ 200/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(rates, [str(r) for r in rates])
        ax.set_xlabel("offered events/s (1 worker)")
        ax.set_ylabel("receipt -> delivery, ms")
        ax.set_title("Latency at fixed offered rates", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
    mem = results.get("memory")
    ax = axes[1][1]
    if mem:
        vals = [("Redis bytes per\nin-flight event", mem["bytes_per_inflight_event"]),
                ("Redis bytes per\ndedupe entry", mem["bytes_per_dedupe_entry"])]
        bars = ax.bar(range(2), [v for _, v in vals], color=["#d98c3f", "#3fa06f"])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(2), [k for k, _ in vals], fontsize=8)
        ax.set_ylabel("bytes")
        rss = mem.get("rss", {})
        ax.set_title("Memory (RSS peak: " + ", ".join(
            f"{k} {v['peak_mib']:.0f} MiB" for k, v in rss.items()) + ")", fontsize=9)
    fig.suptitle("payrelay benchmarks", fontsize=12)
    fig.tight_layout()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PNG, dpi=100)
    plt.close(fig)


def render(results: dict[str, Any], run_info: dict[str, Any] | None = None) -> str:
    m = (run_info or {}).get("machine") or machine()
    out: list[str] = []
    w = out.append
    w("# payrelay benchmarks\n")
    w("Generated by `.venv/bin/python -m bench` (bench/); do not edit by hand. "
      "Figures are from one run on the machine below; every process, Redis included, ran on "
      "it, over 127.0.0.1.\n")
    w("![charts](benchmarks.png)\n")
    w("## How to rerun\n")
    w("```sh\n.venv/bin/pip install -e '.[bench]'   # matplotlib; py-spy for the profile\n"
      ".venv/bin/python -m bench                # everything, < 10 min; writes this file\n"
      ".venv/bin/python -m bench ingress        # one part: ingress | e2e | memory | soak | report\n"
      ".venv/bin/python -m bench.soak --minutes 3\n```\n")
    w("Each part starts its own `redis-server` (append-only file on, `appendfsync everysec`, as "
      "in production) on a free port, its own `relay serve` / `relay worker` processes and a fake "
      "sink server (bench/sinks_server.py), and stops them afterwards. wrk is installed with "
      "apt-get when missing and running as root; otherwise an aiohttp load client stands in.\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    for key in ("date", "cpu", "cpus", "memory_gib", "kernel", "python", "aiohttp", "arq",
                "redis_py", "redis_server", "wrk", "git"):
        w(f"| {key} | {m.get(key)} |")
    if run_info:
        w(f"| run time | {run_info.get('seconds', 0):.0f} s ({', '.join(run_info.get('parts', []))}) |")
    w("")
    w("With 2 CPUs, the load client, Redis, the fake sinks and the relay's processes share two "
      "cores: absolute numbers are lower than on a production host, ratios are what to read.\n")

    # --- targets summary
    ing, e2e, mem, soak = (results.get(k) for k in ("ingress", "e2e", "memory", "soak"))
    w("## Targets\n")
    w("| target | measured | |\n|---|---|---|")
    if ing:
        w(f"| ingress req/s payrelay / enqueue_job >= 1.5 | {ing['ratio']} (ivpay)"
          + (f", {ing['ratio_hmac']} (hmac)" if ing.get("ratio_hmac") else "")
          + f" | {_ok(ing['ratio'] is not None and ing['ratio'] >= 1.5)} |")
        if ing.get("ratio_cpu"):
            w(f"| same, by server CPU per request | {ing['ratio_cpu']} (ivpay)"
              + (f", {ing['ratio_cpu_hmac']} (hmac)" if ing.get("ratio_cpu_hmac") else "")
              + f" | {_ok(ing['ratio_cpu'] >= 1.5)} |")
    if e2e:
        tp1 = e2e["throughput"][0]
        w(f"| >= 1000 events/s per worker process, 3 sinks | {_f(tp1['events_per_s'])} events/s "
          f"(1 worker) | {_ok(tp1['events_per_s'] >= 1000)} |")
        r200 = next((r for r in e2e["latency"] if r["rate"] == 200), None)
        if r200:
            p99 = max((r200["sinks"][s].get("latency", {}).get("p99_ms") or 0) for s in SINKS)
            w(f"| p99 receipt->delivery < 100 ms at 200 events/s | {_f(p99, 1)} ms (worst sink) | "
              f"{_ok(p99 < 100)} |")
    if soak:
        miss = sum(soak["missing"].values())
        w(f"| soak: missing = 0 | {miss} | {_ok(miss == 0)} |")
    w("")

    if ing:
        w("## 1. Ingress requests/second\n")
        w(f"Same requests (an IVPAY `PAID` webhook, ~{_body_len()} bytes, each body distinct), "
          f"same client: {ing['client']}, 1 thread, {ing['connections']} connections, "
          f"{ing['seconds']} s after a 2 s warm-up; the server alone on CPU 0, client and Redis "
          "on the other CPU. Servers: a bare aiohttp handler returning 200; the same server "
          "calling arq's `ArqRedis.enqueue_job` per request (job id from the body, msgpack, no "
          "signature check); `relay serve` (one process) with the signature check.\n")
        w(f"Each server was measured {ing.get('rounds', 1)} times, interleaved; the table shows "
          "the best run (noise on a shared machine only slows a run down) and every run's req/s.\n")
        w("Because the box may be shared (the last column: CPUs' worth of work done meanwhile "
          "by processes the benchmark did not start), the server's own CPU time per request is "
          "reported too: contention inflates it least, and 1/that is the req/s one fully used "
          "core would serve.\n")
        w("| server | req/s | every run | server CPU-us/request (median) | req/s per core | p50 ms | p90 ms | p99 ms | max ms | non-2xx | errors | stored | duplicate answers | other CPUs busy per run |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in ing["rows"]:
            w(f"| {r['label']} | {_f(r['rps'])} | {', '.join(_f(x) for x in r.get('rounds_rps', []))} | "
              f"{_f(r.get('cpu_us_per_request_median'))} | {_f(r.get('rps_per_core_median'))} | {_f(r['p50_ms'], 2)} | {_f(r.get('p90_ms'), 2)} | "
              f"{_f(r['p99_ms'], 2)} | {_f(r.get('max_ms'), 1)} | {r['non_2xx']} | {r['errors']} | "
              f"{_f(r.get('stored'))} | {_f(r.get('duplicate_answers'))} | "
              f"{', '.join(_f(x, 2) for x in r.get('rounds_other_cpus', []))} |")
        w("")
        w(f"**payrelay / enqueue_job = {ing['ratio']}** by best req/s, "
          f"**{ing.get('ratio_cpu')}** by CPU per request (target >= 1.5; req/s ratio per round "
          f"{ing.get('ratio_per_round')})"
          + (f"; with HMAC verification {ing['ratio_hmac']}" if ing.get("ratio_hmac") else "")
          + ".\n")
        for note in ing.get("notes", []):
            w(f"- {note}")
        w("")

    if e2e:
        w("## 2. End to end\n")
        w(f"Webhooks through `relay serve` into Redis, `relay worker` processes (default "
          f"settings: concurrency 200, poll_delay 0.05 s, LOG_LEVEL=INFO to a file) delivering "
          f"each event to three sinks (http, discord, slack) on a local fake sink server "
          f"(aiohttp, answers 2xx at once).\n")
        for note in e2e.get("notes", []):
            w(f"- {note}")
        w("### Throughput (pre-loaded backlog)\n")
        w(f"{e2e['n_events']} events pre-loaded through the ingress with no worker running; then "
          "the workers start; timed from their start-up (heartbeat written) until the stats hash "
          "counts every delivery.\n")
        w("| workers | events | seconds | events/s | per worker | deliveries/s | worker CPU ms/event | events/s per busy worker core | worker busy | Redis commands per event | log level | other CPUs busy |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = list(e2e["throughput"])
        if e2e.get("throughput_log_warning"):
            rows.append(e2e["throughput_log_warning"])
        if e2e.get("throughput_uvloop"):
            rows.append(e2e["throughput_uvloop"])
        for t in rows:
            w(f"| {t['workers']} | {t['events']} | {t['seconds']} | **{_f(t['events_per_s'])}** | "
              f"{_f(t['events_per_s_per_worker'])} | {_f(t['deliveries_per_s'])} | "
              f"{_f(t.get('worker_cpu_ms_per_event'), 2)} | {_f(t.get('events_per_worker_cpu_s'))} | "
              f"{_f(100 * t['worker_cpu_util'] if 'worker_cpu_util' in t else None)}% | "
              f"{t.get('redis_commands_per_event', '–')} | {t['log_level']}"
              f"{' (uvloop, proposed)' if t.get('uvloop') else ''} | {_f(t.get('other_cpus'), 2)} |")
        w("")
        if e2e.get("arq_noop"):
            a = e2e["arq_noop"]
            w(f"**arq's own no-op job rate**, same worker settings (max_jobs {a['max_jobs']}, "
              f"poll_delay {a['poll_delay']}, queue_read_limit 1000, keep_result 0, msgpack), one "
              f"worker, {a['jobs']} jobs: **{_f(a['jobs_per_s'])} jobs/s** ({a['run_s']} s); "
              f"`enqueue_job` with 50 concurrent: {_f(a['enqueue_per_s'])}/s. One payrelay event "
              f"is 1 inbound job plus 3 HTTP deliveries.\n")
        t1 = e2e["throughput"][0]
        if t1.get("redis_commands_per_event_by_name"):
            w("Redis commands per event (1 worker, `INFO commandstats`, commands inside Lua "
              "scripts and MULTI counted): " + ", ".join(
                  f"{k} {v}" for k, v in t1["redis_commands_per_event_by_name"].items()) + ".\n")
        w("### Latency at fixed offered rates (1 worker)\n")
        w("An open-loop load client process sends fresh webhooks at the rate for "
          f"{e2e['rate_seconds']} s. The fake sink server computes each delivery's latency: "
          "arrival minus the event's `received_at` (http sink: the canonical event JSON, ms "
          "resolution), or minus the client's send time carried in the payment id (discord, "
          "slack: the rendered message repeats it).\n")
        w("| offered/s | achieved/s | accepted | sink | n | p50 ms | p90 ms | p99 ms | max ms | ingress answer p50/p99 ms | backlog drained after load |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in e2e["latency"]:
            load = row["load"]
            for sink in SINKS:
                lat = row["sinks"][sink].get("latency", {})
                w(f"| {row['rate']} | {load['achieved_rate']} | {load['accepted']} | {sink} | "
                  f"{lat.get('n')} | {_f(lat.get('p50_ms'), 1)} | {_f(lat.get('p90_ms'), 1)} | "
                  f"{_f(lat.get('p99_ms'), 1)} | {_f(lat.get('max_ms'), 1)} | "
                  f"{_f(load.get('answer_p50_ms'), 1)} / {_f(load.get('answer_p99_ms'), 1)} | "
                  f"{row['drain_after_load_s']} s |")
        w("")

    if mem or e2e:
        w("## 3. Memory\n")
    if mem:
        w(f"{mem['n']} IVPAY webhooks (~{mem['body_bytes']} byte bodies), Redis allocator "
          f"{mem['allocator']}.\n")
        w("| what | bytes |\n|---|---|")
        w(f"| Redis per in-flight event (queued, unprocessed inbound job: arq job key + queue "
          f"entry + byte-identical marker) | **{_f(mem['bytes_per_inflight_event'])}** |")
        w(f"| MEMORY USAGE of one `arq:job:*` key | {_f(mem['arq_job_key_bytes'])} |")
        w(f"| Redis per dedupe entry after delivery (`in:*` + `evt:*` + `dlv:*`, kept for the "
          f"dedupe window) | **{_f(mem['bytes_per_dedupe_entry'])}** |")
        for name, size in mem["dedupe_key_bytes"].items():
            w(f"| MEMORY USAGE of one `{name}:*` key (TTL {mem['dedupe_ttl_s'].get(name)} s) | "
              f"{_f(size)} |")
        w("")
        w(f"Keys left after delivery: {mem['dedupe_keys']}; queue left: {mem['queue_left']}. "
          f"used_memory: {mem['used_memory_base']:,} empty -> {mem['used_memory_queued']:,} "
          f"queued -> {mem['used_memory_after']:,} delivered.\n")
        per_m = mem["bytes_per_dedupe_entry"] * 1_000_000 / 2**20
        w(f"So a million events inside the 72 h dedupe window hold ~{per_m:,.0f} MiB of Redis; "
          f"a backlog of a million undelivered webhooks ~"
          f"{mem['bytes_per_inflight_event'] * 1_000_000 / 2**20:,.0f} MiB.\n")
    rss_rows: list[tuple[str, str, dict[str, Any]]] = []
    if e2e:
        rss_rows += [("e2e", k, v) for k, v in e2e.get("rss", {}).items()]
    if mem:
        rss_rows += [("memory", k, v) for k, v in mem.get("rss", {}).items()]
    if soak:
        rss_rows += [("soak", k, v) for k, v in soak.get("rss", {}).items()]
    if rss_rows:
        w("Process RSS (sampled every 0.2 s; soak every 1 s):\n")
        w("| run | process | start MiB | peak MiB | end MiB |\n|---|---|---|---|---|")
        for run, name, v in rss_rows:
            w(f"| {run} | {name} | {v['start_mib']} | {v['peak_mib']} | {v['last_mib']} |")
        w("")

    if soak:
        w("## 4. Soak\n")
        w(f"`python -m bench.soak --minutes {soak['minutes']:g}`: {soak['rate']:g} webhooks/s "
          "through ingress, one worker and three sinks. The load client re-sends each webhook "
          "byte-identically until answered 2xx (Retry-After honoured), as a provider does. "
          f"Sinks use a short retry schedule ({', '.join(soak['retry_schedule']['schedule'])}) so "
          "a one-minute outage heals within the run.\n")
        w("| time s | event |\n|---|---|")
        for at, what in soak["timeline"]:
            w(f"| {at} | {what} |")
        w("")
        load = soak["load"]
        w("| figure | value |\n|---|---|")
        w(f"| requests answered 2xx (accepted) | {soak['accepted_2xx']:,} |")
        w(f"| ingress answers by status | {load.get('statuses')} |")
        w(f"| client retries / connection errors / gave up | {load.get('retries')} / "
          f"{load.get('errors')} / {load.get('gave_up')} |")
        for sink in SINKS:
            w(f"| {sink}: delivered (distinct events) / missing / duplicates / 503s | "
              f"{soak['delivered_distinct'][sink]:,} / **{soak['missing'][sink]}** / "
              f"{soak['duplicates'][sink]} / {soak['sink_refused_503'][sink]} |")
        w(f"| delivered but not acknowledged to the client (stored, answer lost) | "
          f"{soak['delivered_not_acknowledged']} |")
        w(f"| dead letters | {soak['dlq']} |")
        w(f"| process restarts | {soak['restarts']} |")
        w(f"| time to drain after the load ended | {soak['drain_s']} s |")
        for name, v in soak.get("rss", {}).items():
            w(f"| RSS {name} start -> end (peak) | {v['start_mib']} -> {v['last_mib']} MiB "
              f"({v['peak_mib']}) |")
        w("")

    if ing and ing.get("profile") and "by_part_self_pct" in ing["profile"]:
        p = ing["profile"]
        w("## Profile: where the ingress's CPU goes\n")
        w(f"py-spy (`record --nonblocking --rate 250`, {p['samples']} samples) on `relay serve` "
          "(ivpay) under the same wrk load, in a separate pass after the measured one. Self time "
          "by part (a leaf in asyncio's own code is charged to its nearest caller outside "
          "asyncio):\n")
        w("| part | self % |\n|---|---|")
        for k, v in p["by_part_self_pct"]:
            w(f"| {k} | {v} |")
        w("")
        w("Inclusive (stack contains):\n")
        w("| frame | % of samples |\n|---|---|")
        for k, v in p["inclusive_pct"]:
            w(f"| {k} | {v} |")
        w("")
        w("Top leaf frames: " + "; ".join(f"`{k}` {v}%" for k, v in p["top_leaf_frames_pct"][:10])
          + ".\n")
    if e2e and e2e.get("profile") and "by_part_self_pct" in e2e["profile"]:
        p = e2e["profile"]
        w("## Profile: where a worker's CPU goes\n")
        w(f"py-spy (`record --nonblocking --rate 250`, {p['samples']} samples) on one `relay "
          "worker` draining a pre-loaded backlog to three sinks. Self time by part (a leaf in "
          "asyncio's own code, e.g. a socket write, is charged to its nearest caller outside "
          "asyncio):\n")
        w("| part | self % |\n|---|---|")
        for k, v in p["by_part_self_pct"]:
            w(f"| {k} | {v} |")
        w("")
        w("Inclusive (stack contains):\n")
        w("| frame | % of samples |\n|---|---|")
        for k, v in p["inclusive_pct"]:
            w(f"| {k} | {v} |")
        w("")
        w("Top leaf frames: " + "; ".join(f"`{k}` {v}%" for k, v in p["top_leaf_frames_pct"][:10])
          + ".\n")
    w(findings(results))
    return "\n".join(out) + "\n"


def _body_len() -> int:
    from bench.common import ivpay_request

    return len(ivpay_request(0)[0])


def write(run_info: dict[str, Any] | None = None) -> Path:
    results = load_results()
    DOC.parent.mkdir(parents=True, exist_ok=True)
    try:
        chart(results)
    except ImportError:
        print("matplotlib missing: pip install -e '.[bench]'; no chart written")
    DOC.write_text(render(results, run_info))
    return DOC


if __name__ == "__main__":
    print(write())


def _pct_of(pairs: list[list[Any]] | None, label_start: str) -> float | None:
    for label, value in pairs or []:
        if label.startswith(label_start):
            return value
    return None


def findings(results: dict[str, Any]) -> str:
    """The analysis: why targets are missed and what to change (figures from this run)."""
    ing, e2e = results.get("ingress"), results.get("e2e")
    out: list[str] = ["## Findings and proposed changes\n"]
    w = out.append
    if e2e:
        t1, t2 = e2e["throughput"][0], e2e["throughput"][1]
        tw = e2e.get("throughput_log_warning") or {}
        prof = e2e.get("profile") or {}
        parts = prof.get("by_part_self_pct")
        ms1 = t1.get("worker_cpu_ms_per_event")
        w("### Worker: events/s per process\n")
        if ms1:
            w(f"- One `relay worker` delivered **{_f(t1['events_per_s'])} events/s** to three sinks "
              f"while busy {_f(100 * t1['worker_cpu_util'])}% of one core: it is **CPU-bound at "
              f"{ms1:.2f} ms of CPU per event** (1 inbound arq job, 3 HTTP POSTs, "
              f"{t1.get('redis_commands_per_event')} Redis commands), i.e. at most "
              f"~{_f(t1['events_per_worker_cpu_s'])} events/s per fully used core. 1000 events/s "
              f"per process needs <= 1.00 ms per event: {max(0.0, 100 * (1 - 1.0 / ms1)):.0f}% "
              "less CPU per event.")
        if t2.get("worker_cpu_ms_per_event") and ms1:
            unwatch = (t2.get("redis_commands_per_event_by_name") or {}).get("unwatch", 0)
            w(f"- Two workers: {_f(t2['events_per_s'])} events/s in total; each event cost "
              f"{t2['worker_cpu_ms_per_event']:.2f} ms of worker CPU instead of {ms1:.2f}. Part of "
              f"that is arq's claim race: every worker reads the queue from its head, so both try "
              f"to claim the same jobs (WATCH/EXISTS/ZSCORE twice per event, {unwatch} failed "
              "claims (UNWATCH) per event). The rest is the 2-core box: Redis, the fake sinks and "
              "two workers share two CPUs, so the workers were busy only "
              f"{_f(100 * t2['worker_cpu_util'])}% of the time.")
        if tw.get("worker_cpu_ms_per_event") and ms1:
            gain = 100 * (1 - tw["worker_cpu_ms_per_event"] / ms1)
            w(f"- Logging: with LOG_LEVEL=WARNING the same run cost "
              f"{tw['worker_cpu_ms_per_event']:.2f} ms/event ({gain:.0f}% less): the per-delivery "
              "`delivered` INFO line (3 JSON lines per event through structlog + redaction) "
              "is a measurable share.")
        if parts:
            w("- py-spy, self time by part: " + ", ".join(f"{k} {v}%" for k, v in parts[:7])
              + ". redis-py's asyncio client (pool checkout under an asyncio.Lock, command "
              "packing, Retry wrapper, response parsing) is the largest single part, ahead of "
              "the HTTP client; the relay's own code is small.")
        w("")
        w("Proposed changes, largest expected gain first (none made here; relay/ and workers/ "
          "belong to others):\n")
        w("1. **Fewer Redis commands per delivery** in `Pipeline._record_one`: on success it "
          "sends HINCRBY stats, HSET state, HINCRBY bucket + HINCRBYFLOAT sum + HINCRBY count "
          "(histogram) and HSET `sink:<name>` last_ok_at/gone, for every sink of every event. "
          "Drop the histogram's `count` (the sum of the buckets), write `last_ok_at` at most "
          "once a second per sink per process (remember the last write in memory), and do the "
          "rest in one small Lua script per event (one EVALSHA instead of MULTI + ~20 queued "
          "commands): 6 fewer commands per event and far less client-side packing.")
        tu = e2e.get("throughput_uvloop") or {}
        measured = ""
        if tu.get("worker_cpu_ms_per_event") and ms1:
            measured = (f" Measured here (bench/uvloop_shim.py runs `relay worker` unchanged on "
                        f"uvloop): {tu['worker_cpu_ms_per_event']:.2f} ms/event instead of "
                        f"{ms1:.2f} ({100 * (1 - tu['worker_cpu_ms_per_event'] / ms1):.0f}% less), "
                        f"{_f(tu['events_per_s'])} events/s.")
        w("2. **uvloop** for both processes (`uvloop.run(run())` in `cmd_worker`, "
          "`web.run_app(..., loop=uvloop.new_event_loop())` in `cmd_serve`, an optional "
          "dependency): asyncio's own loop and transports are a large share of self time in "
          "both profiles." + measured)
        w("3. **Log a delivery at DEBUG, or one INFO line per event** (all sinks' outcomes) "
          "instead of one per sink; keep failures and retries at WARNING/ERROR. Measured above "
          "as the LOG_LEVEL=WARNING row.")
        w("4. **arq's claim**: 4 of the ~8 round trips per event are arq's `start_jobs` "
          "(WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC). A `Worker` subclass that shuffles the "
          "ids read at each poll (`random.shuffle(job_ids)` before `super().start_jobs`) stops "
          "two workers fighting over the same head-of-queue jobs; replacing the claim with one "
          "Lua script (SET in-progress NX + the same checks) would take it to 1 round trip, at "
          "the price of overriding arq internals (pin arq's version).")
        w("5. Smaller: `rfc3339()` (datetime objects for every timestamp) and "
          "`dataclasses.asdict` in `PaymentEvent.to_dict` (a recursive deep copy) each show "
          "~2% of samples; build the event dict directly and format times with `time.strftime` "
          "+ milliseconds.")
        w("")
    if ing:
        rows = {(r["kind"], r["source"], r["distinct"]): r for r in ing["rows"]}
        bare, enq = rows.get(("bare", "ivpay", True)), rows.get(("enqueue", "ivpay", True))
        rel = rows.get(("relay", "ivpay", True))
        dup = rows.get(("relay", "ivpay", False))
        if bare and enq and rel and rel.get("cpu_us_per_request_median"):
            b, e, r = (x["cpu_us_per_request_median"] for x in (bare, enq, rel))
            w("### Ingress: payrelay / enqueue_job\n")
            w(f"- CPU per request (median of rounds): bare aiohttp {b:.0f} us, aiohttp + "
              f"`enqueue_job` {e:.0f} us, payrelay {r:.0f} us"
              + (f", payrelay answering a repeat (`duplicate`) {dup['cpu_us_per_request_median']:.0f} us"
                 if dup and dup.get("cpu_us_per_request_median") else "")
              + f". Ratio by CPU {e / r:.2f}; by req/s {ing['ratio']} (target 1.5).")
            need = e / 1.5
            w(f"- arq's three round trips cost ~{e - b:.0f} us above a bare handler; payrelay's "
              f"one Lua round trip plus verification and its handler cost ~{r - b:.0f} us. A "
              "repeat (no write, same one round trip) costs about the same as a new webhook, so "
              "the cost is not Redis's work but the per-call overhead of redis-py's asyncio "
              f"client and the handler around it. To reach 1.5x payrelay must get to "
              f"~{need:.0f} us per request, {r - need:.0f} us less.")
            ip = (ing.get("profile") or {}).get("by_part_self_pct")
            if ip:
                w("- py-spy on `relay serve`, self time: " + ", ".join(
                    f"{k} {v}%" for k, v in ip) + ". (py-spy sees coroutine stacks in pieces, "
                    "so inclusive shares of `receive_webhook` are understated.)")
            w("")
            w("Proposed changes:\n")
            w("1. **Auto-batch the stores**: `InboundStore.store` puts its EVALSHA on an "
              "in-process queue; one task flushes whatever is queued as one pipeline "
              "(`transaction=False`) per event-loop turn and resolves each request's future. At "
              "50 concurrent requests that is one socket write and one read for many webhooks "
              "instead of one each, and one pool checkout instead of many: most of redis-py's "
              "share above. Nothing changes for durability: each request is still answered after "
              "its own script ran.")
            bt = rows.get(("relay-batch", "ivpay", True))
            if bt and bt.get("cpu_us_per_request_median"):
                u = bt["cpu_us_per_request_median"]
                w(f"   Measured here with a prototype (bench/batch_shim.py swaps InboundStore's "
                  f"script call for a batching one, relay/ untouched): {u:.0f} us per request "
                  f"instead of {r:.0f}, ratio to enqueue_job {e / u:.2f} by CPU, "
                  f"{_f(bt['rps'])} req/s (best run; stored {_f(bt.get('stored'))}, non-2xx "
                  f"{bt['non_2xx']}).")
            w("2. **Drop `asyncio.timeout()` around the store** (`Timeout.__aenter__`/`reschedule` "
              "and `wait_for` are ~4-5% of samples): the client already has "
              "`socket_timeout = server.redis_timeout`; or keep one timeout per batch when "
              "batching.")
            w("3. **Call EVALSHA directly** with the script's precomputed SHA (fall back to "
              "SCRIPT LOAD on NOSCRIPT) instead of redis-py's `AsyncScript.__call__` wrapper.")
            uv = rows.get(("relay-uvloop", "ivpay", True))
            measured = ""
            if uv and uv.get("cpu_us_per_request_median"):
                u = uv["cpu_us_per_request_median"]
                measured = (f" Measured here (bench/uvloop_shim.py): {u:.0f} us per request "
                            f"instead of {r:.0f}, ratio to enqueue_job (on asyncio) {e / u:.2f}; "
                            f"{_f(uv['rps'])} req/s.")
            w("4. **uvloop** (as for the worker) and, for capacity, more web processes: the "
              "ingress is stateless, one process per core." + measured)
            w("")
    return "\n".join(out) + "\n"
