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
        labels = [
            r["label"]
            .replace("payrelay ingress, ", "payrelay\n")
            .replace("aiohttp + arq ", "aiohttp +\n")
            .replace(", byte-identical repeat", "\nrepeat")
            for r in rows
        ]
        bars = ax.bar(
            range(len(rows)),
            [r["rps"] for r in rows],
            color=["#999", "#d98c3f"] + ["#3f7fd9"] * (len(rows) - 2),
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_title(
            f"Ingress req/s (wrk, {ing['connections']} conns, best of "
            f"{ing.get('rounds', 1)})\npayrelay/enqueue_job = {ing['ratio']} by req/s, "
            f"{ing.get('ratio_cpu')} by CPU per request (target 1.5)",
            fontsize=9,
        )
        ax.set_ylabel("requests/s")
    e2e = results.get("e2e")
    ax = axes[0][1]
    if e2e:
        tp = e2e["throughput"]
        vals = [
            (f"payrelay\n{t['workers']} worker{'s' if t['workers'] > 1 else ''}", t["events_per_s"])
            for t in tp
        ]
        if e2e.get("throughput_log_warning"):
            vals.append(
                (
                    "payrelay 1 worker\nLOG_LEVEL=WARNING",
                    e2e["throughput_log_warning"]["events_per_s"],
                )
            )
        ba = e2e.get("before_after")
        if ba:
            vals.append((f"before\n{ba['before_commit'][:7]}", ba["before_events_per_s"]))
            vals.append((f"after\n{ba['after_commit'][:7]}", ba["after_events_per_s"]))
        if e2e.get("arq_noop"):
            vals.append(("arq no-op\njobs/s", e2e["arq_noop"]["jobs_per_s"]))
        colors = ["#3f7fd9"] * len(vals)
        for i, (label, _) in enumerate(vals):
            if label.startswith("before"):
                colors[i] = "#999"
            elif label.startswith("after"):
                colors[i] = "#3fa06f"
            elif label.startswith("arq"):
                colors[i] = "#d98c3f"
        bars = ax.bar(range(len(vals)), [v for _, v in vals], color=colors)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(vals)), [k for k, _ in vals], fontsize=7)
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
        floor = e2e.get("floor_latency") or []
        if floor:
            ax.plot(
                [r["rate"] for r in floor],
                [r["sinks"]["http"].get("latency", {}).get("p50_ms") for r in floor],
                "o-",
                color="#999",
                label="floor (LPUSH/BRPOP) http p50",
            )
            ax.plot(
                [r["rate"] for r in floor],
                [r["sinks"]["http"].get("latency", {}).get("p99_ms") for r in floor],
                "s--",
                color="#999",
                label="floor http p99",
            )
        ax.axhline(25, color="red", ls=":", lw=1, label="target p99 25 ms @ 100, 200/s")
        ax.axhline(5, color="red", ls="-.", lw=1, label="target p50 5 ms")
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
        vals = [
            ("Redis bytes per\nin-flight event", mem["bytes_per_inflight_event"]),
            ("Redis bytes per\ndedupe entry", mem["bytes_per_dedupe_entry"]),
        ]
        bars = ax.bar(range(2), [v for _, v in vals], color=["#d98c3f", "#3fa06f"])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(2), [k for k, _ in vals], fontsize=8)
        ax.set_ylabel("bytes")
        rss = mem.get("rss", {})
        ax.set_title(
            "Memory (RSS peak: "
            + ", ".join(f"{k} {v['peak_mib']:.0f} MiB" for k, v in rss.items())
            + ")",
            fontsize=9,
        )
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
    w(
        "Generated by `.venv/bin/python -m bench` (bench/); do not edit by hand. "
        "Figures are from one run on the machine below; every process, Redis included, ran on "
        "it, over 127.0.0.1.\n"
    )
    w("![charts](benchmarks.png)\n")
    w("## How to rerun\n")
    w(
        "```sh\n.venv/bin/pip install -e '.[bench]'   # matplotlib; py-spy for the profile\n"
        ".venv/bin/python -m bench                # everything, < 10 min; writes this file\n"
        ".venv/bin/python -m bench ingress        # one part: ingress | e2e | memory | soak | log | report\n"
        "PYTHONPATH=. .venv/bin/python -m bench e2e          # issue 16's figures, < ~5 min, then the report\n"
        "PYTHONPATH=. .venv/bin/python -m bench e2e --quick  # the same in ~2 min, for trying\n"
        ".venv/bin/python -m bench.soak --minutes 3\n```\n"
    )
    w(
        "Each part starts its own `redis-server` (append-only file on, `appendfsync everysec`, as "
        "in production) on a free port, its own `relay serve` / `relay worker` processes and a fake "
        "sink server (bench/sinks_server.py), and stops them afterwards. wrk is installed with "
        "apt-get when missing and running as root; otherwise an aiohttp load client stands in.\n"
    )
    w("## Machine\n")
    w("| | |\n|---|---|")
    for key in (
        "date",
        "cpu",
        "cpus",
        "memory_gib",
        "kernel",
        "python",
        "aiohttp",
        "arq",
        "redis_py",
        "redis_server",
        "wrk",
        "event_loop",
        "git",
    ):
        w(f"| {key} | {m.get(key)} |")
    if run_info:
        w(
            f"| run time | {run_info.get('seconds', 0):.0f} s ({', '.join(run_info.get('parts', []))}) |"
        )
    w("")
    w(
        "With 2 CPUs, the load client, Redis, the fake sinks and the relay's processes share two "
        "cores: absolute numbers are lower than on a production host, ratios are what to read.\n"
    )

    # --- targets summary
    ing, e2e, mem, soak = (results.get(k) for k in ("ingress", "e2e", "memory", "soak"))
    w("## Targets\n")
    w("| target | measured | |\n|---|---|---|")
    if ing:
        w(
            f"| ingress req/s payrelay / enqueue_job >= 1.5 | {ing['ratio']} (ivpay)"
            + (f", {ing['ratio_hmac']} (hmac)" if ing.get("ratio_hmac") else "")
            + f" | {_ok(ing['ratio'] is not None and ing['ratio'] >= 1.5)} |"
        )
        if ing.get("ratio_cpu"):
            w(
                f"| same, by server CPU per request | {ing['ratio_cpu']} (ivpay)"
                + (f", {ing['ratio_cpu_hmac']} (hmac)" if ing.get("ratio_cpu_hmac") else "")
                + f" | {_ok(ing['ratio_cpu'] >= 1.5)} |"
            )
    if e2e:
        tp1 = e2e["throughput"][0]
        per_core = (
            f"; ~{_f(tp1['events_per_worker_cpu_s'])} per fully busy core"
            if tp1.get("events_per_worker_cpu_s")
            else ""
        )
        w(
            f"| >= 1000 events/s per worker process, 3 sinks | {_f(tp1['events_per_s'])} events/s "
            f"(1 worker{per_core}) | {_ok(tp1['events_per_s'] >= 1000)} |"
        )
        r200 = next((r for r in e2e["latency"] if r["rate"] == 200), None)
        if r200:
            p99 = max((r200["sinks"][s].get("latency", {}).get("p99_ms") or 0) for s in SINKS)
            w(
                f"| p99 receipt->delivery < 100 ms at 200 events/s | {_f(p99, 1)} ms (worst sink) | "
                f"{_ok(p99 < 100)} |"
            )
    if e2e:
        _issue16_targets(w, e2e)
    if soak:
        miss = sum(soak["missing"].values())
        w(f"| soak: missing = 0 | {miss} | {_ok(miss == 0)} |")
    w("")

    if ing:
        w("## 1. Ingress requests/second\n")
        w(
            f"Same requests (an IVPAY `PAID` webhook, ~{_body_len()} bytes, each body distinct), "
            f"same client: {ing['client']}, 1 thread, {ing['connections']} connections, "
            f"{ing['seconds']} s after a 2 s warm-up; the server alone on CPU 0, client and Redis "
            "on the other CPU. Servers: a bare aiohttp handler returning 200; the same server "
            "calling arq's `ArqRedis.enqueue_job` per request (job id from the body, msgpack, no "
            "signature check); `relay serve` (one process) with the signature check. The two "
            "baselines run on asyncio's own event loop; `relay serve` runs on "
            f"{_loop(run_info)} (`relay.cli.common.fast_event_loop`: uvloop when installed).\n"
        )
        w(
            f"Each server was measured {ing.get('rounds', 1)} times, interleaved; the table shows "
            "the best run (noise on a shared machine only slows a run down) and every run's req/s.\n"
        )
        w(
            "Because the box may be shared (the last column: CPUs' worth of work done meanwhile "
            "by processes the benchmark did not start), the server's own CPU time per request is "
            "reported too: contention inflates it least, and 1/that is the req/s one fully used "
            "core would serve.\n"
        )
        w(
            "| server | req/s | every run | server CPU-us/request (median) | req/s per core | p50 ms | p90 ms | p99 ms | max ms | non-2xx | errors | stored | duplicate answers | other CPUs busy per run |"
        )
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in ing["rows"]:
            w(
                f"| {r['label']} | {_f(r['rps'])} | {', '.join(_f(x) for x in r.get('rounds_rps', []))} | "
                f"{_f(r.get('cpu_us_per_request_median'))} | {_f(r.get('rps_per_core_median'))} | {_f(r['p50_ms'], 2)} | {_f(r.get('p90_ms'), 2)} | "
                f"{_f(r['p99_ms'], 2)} | {_f(r.get('max_ms'), 1)} | {r['non_2xx']} | {r['errors']} | "
                f"{_f(r.get('stored'))} | {_f(r.get('duplicate_answers'))} | "
                f"{', '.join(_f(x, 2) for x in r.get('rounds_other_cpus', []))} |"
            )
        w("")
        w(
            f"**payrelay / enqueue_job = {ing['ratio']}** by best req/s, "
            f"**{ing.get('ratio_cpu')}** by CPU per request (target >= 1.5; req/s ratio per round "
            f"{ing.get('ratio_per_round')})"
            + (f"; with HMAC verification {ing['ratio_hmac']}" if ing.get("ratio_hmac") else "")
            + ".\n"
        )
        for note in ing.get("notes", []):
            w(f"- {note}")
        w("")

    if e2e:
        w("## 2. End to end\n")
        w(
            f"This part's figures: finished {e2e.get('finished_at')}"
            + (f", git {e2e['git']}" if e2e.get("git") else "")
            + " (`python -m bench e2e`, which may postdate the machine table's full run).\n"
        )
        if e2e.get("quick"):
            w(
                "**These are `--quick` figures** (fewer events, shorter rates, one before/after "
                "round): for trying the benchmark, not for quoting.\n"
            )
        w(
            f"Webhooks through `relay serve` into Redis, `relay worker` processes (default "
            f"settings: concurrency 200, poll_delay 0.05 s, LOG_LEVEL=INFO to a file, on "
            f"{_loop(run_info)}) delivering "
            f"each event to three sinks (http, discord, slack) on a local fake sink server "
            f"(aiohttp, answers 2xx at once).\n"
        )
        for note in e2e.get("notes", []):
            w(f"- {note}")
        w("### Throughput (pre-loaded backlog)\n")
        w(
            f"{e2e['n_events']} events pre-loaded through the ingress with no worker running"
            + (
                f" ({e2e['n_events_later_runs']} in the runs after the first, sized from its rate)"
                if e2e.get("n_events_later_runs", e2e["n_events"]) != e2e["n_events"]
                else ""
            )
            + "; then the workers start; timed from their start-up (heartbeat written) until the "
            "stats hash counts every delivery.\n"
        )
        w(
            "| workers | events | seconds | events/s | per worker | deliveries/s | worker CPU ms/event | events/s per busy worker core | worker busy | Redis commands per event | log level | other CPUs busy |"
        )
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = list(e2e["throughput"])
        if e2e.get("throughput_log_warning"):
            rows.append(e2e["throughput_log_warning"])
        for t in rows:
            w(
                f"| {t['workers']} | {t['events']} | {t['seconds']} | **{_f(t['events_per_s'])}** | "
                f"{_f(t['events_per_s_per_worker'])} | {_f(t['deliveries_per_s'])} | "
                f"{_f(t.get('worker_cpu_ms_per_event'), 2)} | {_f(t.get('events_per_worker_cpu_s'))} | "
                f"{_f(100 * t['worker_cpu_util'] if 'worker_cpu_util' in t else None)}% | "
                f"{t.get('redis_commands_per_event', '–')} | {t['log_level']} | "
                f"{_f(t.get('other_cpus'), 2)} |"
            )
        w("")
        if e2e.get("arq_noop"):
            a = e2e["arq_noop"]
            w(
                f"**arq's own no-op job rate**, same worker settings (max_jobs {a['max_jobs']}, "
                f"poll_delay {a['poll_delay']}, queue_read_limit 1000, keep_result 0, msgpack), one "
                f"worker, {a['jobs']} jobs: **{_f(a['jobs_per_s'])} jobs/s** ({a['run_s']} s); "
                f"`enqueue_job` with 50 concurrent: {_f(a['enqueue_per_s'])}/s. One payrelay event "
                f"is 1 inbound job plus 3 HTTP deliveries.\n"
            )
        t1 = e2e["throughput"][0]
        if t1.get("redis_commands_per_event_by_name"):
            w(
                "Redis commands per event (1 worker, `INFO commandstats`, commands inside Lua "
                "scripts and MULTI counted): "
                + ", ".join(f"{k} {v}" for k, v in t1["redis_commands_per_event_by_name"].items())
                + ".\n"
            )
        w("### Latency at fixed offered rates (1 worker)\n")
        w(
            "An open-loop load client process sends fresh webhooks at the rate for "
            f"{e2e['rate_seconds']} s (the 500/s and 1000/s rows, overload demonstrations, for "
            "less: at most "
            f"{e2e.get('overload_rate_seconds', e2e['rate_seconds'])} s, and only as long as one "
            "worker drains in ~12 s at the throughput measured above). The fake sink server "
            "computes each delivery's latency: "
            "arrival minus the event's `received_at` (http sink: the canonical event JSON, ms "
            "resolution), or minus the client's send time carried in the payment id (discord, "
            "slack: the rendered message repeats it).\n"
        )
        w(
            "| offered/s | seconds | achieved/s | accepted | sink | n | p50 ms | p90 ms | p99 ms | max ms | ingress answer p50/p99 ms | backlog drained after load |"
        )
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for row in e2e["latency"]:
            load = row["load"]
            for sink in SINKS:
                lat = row["sinks"][sink].get("latency", {})
                w(
                    f"| {row['rate']} | {row.get('seconds', '–')} | {load['achieved_rate']} | "
                    f"{load['accepted']} | {sink} | "
                    f"{lat.get('n')} | {_f(lat.get('p50_ms'), 1)} | {_f(lat.get('p90_ms'), 1)} | "
                    f"{_f(lat.get('p99_ms'), 1)} | {_f(lat.get('max_ms'), 1)} | "
                    f"{_f(load.get('answer_p50_ms'), 1)} / {_f(load.get('answer_p99_ms'), 1)} | "
                    f"{row['drain_after_load_s']} s |"
                )
        w("")
        _floor_section(w, e2e)
        _before_after_section(w, e2e)
        _redis_cpu_section(w, e2e)

    if mem or e2e:
        w("## 3. Memory\n")
    if mem:
        w(
            f"{mem['n']} IVPAY webhooks (~{mem['body_bytes']} byte bodies), Redis allocator "
            f"{mem['allocator']}.\n"
        )
        w("| what | bytes |\n|---|---|")
        w(
            f"| Redis per in-flight event (queued, unprocessed inbound job: arq job key + queue "
            f"entry + byte-identical marker) | **{_f(mem['bytes_per_inflight_event'])}** |"
        )
        w(f"| MEMORY USAGE of one `arq:job:*` key | {_f(mem['arq_job_key_bytes'])} |")
        w(
            f"| Redis per dedupe entry after delivery (`in:*` + `evt:*` + `dlv:*`, kept for the "
            f"dedupe window) | **{_f(mem['bytes_per_dedupe_entry'])}** |"
        )
        for name, size in mem["dedupe_key_bytes"].items():
            w(
                f"| MEMORY USAGE of one `{name}:*` key (TTL {mem['dedupe_ttl_s'].get(name)} s) | "
                f"{_f(size)} |"
            )
        w("")
        w(
            f"Keys left after delivery: {mem['dedupe_keys']}; queue left: {mem['queue_left']}. "
            f"used_memory: {mem['used_memory_base']:,} empty -> {mem['used_memory_queued']:,} "
            f"queued -> {mem['used_memory_after']:,} delivered.\n"
        )
        per_m = mem["bytes_per_dedupe_entry"] * 1_000_000 / 2**20
        w(
            f"So a million events inside the 72 h dedupe window hold ~{per_m:,.0f} MiB of Redis; "
            f"a backlog of a million undelivered webhooks ~"
            f"{mem['bytes_per_inflight_event'] * 1_000_000 / 2**20:,.0f} MiB.\n"
        )
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
        w(
            f"`python -m bench.soak --minutes {soak['minutes']:g}`: {soak['rate']:g} webhooks/s "
            "through ingress, one worker and three sinks. The load client re-sends each webhook "
            "byte-identically until answered 2xx (Retry-After honoured), as a provider does. "
            f"Sinks use a short retry schedule ({', '.join(soak['retry_schedule']['schedule'])}) so "
            "a one-minute outage heals within the run.\n"
        )
        w("| time s | event |\n|---|---|")
        for at, what in soak["timeline"]:
            w(f"| {at} | {what} |")
        w("")
        load = soak["load"]
        w("| figure | value |\n|---|---|")
        w(f"| requests answered 2xx (accepted) | {soak['accepted_2xx']:,} |")
        w(f"| ingress answers by status | {load.get('statuses')} |")
        w(
            f"| client retries / connection errors / gave up | {load.get('retries')} / "
            f"{load.get('errors')} / {load.get('gave_up')} |"
        )
        for sink in SINKS:
            w(
                f"| {sink}: delivered (distinct events) / missing / duplicates / 503s | "
                f"{soak['delivered_distinct'][sink]:,} / **{soak['missing'][sink]}** / "
                f"{soak['duplicates'][sink]} / {soak['sink_refused_503'][sink]} |"
            )
        w(
            f"| delivered but not acknowledged to the client (stored, answer lost) | "
            f"{soak['delivered_not_acknowledged']} |"
        )
        w(f"| dead letters | {soak['dlq']} |")
        w(f"| process restarts | {soak['restarts']} |")
        w(f"| time to drain after the load ended | {soak['drain_s']} s |")
        for name, v in soak.get("rss", {}).items():
            w(
                f"| RSS {name} start -> end (peak) | {v['start_mib']} -> {v['last_mib']} MiB "
                f"({v['peak_mib']}) |"
            )
        w("")

    if results.get("log"):
        _log_section(w, results["log"], m)

    if ing and ing.get("profile") and "by_part_self_pct" in ing["profile"]:
        p = ing["profile"]
        w("## Profile: where the ingress's CPU goes\n")
        w(
            f"py-spy (`record --nonblocking --rate 250`, {p['samples']} samples) on `relay serve` "
            "(ivpay) under the same wrk load, in a separate pass after the measured one. Self time "
            "by part (a leaf in asyncio's own code is charged to its nearest caller outside "
            "asyncio):\n"
        )
        _profile_tables(w, p)
    if e2e and e2e.get("profile") and "by_part_self_pct" in e2e["profile"]:
        p = e2e["profile"]
        w("## Profile: where a worker's CPU goes\n")
        w(
            f"py-spy (`record --nonblocking --rate 250`, {p['samples']} samples) on one `relay "
            "worker` draining a pre-loaded backlog to three sinks. Self time by part (a leaf in "
            "asyncio's own code, e.g. a socket write, is charged to its nearest caller outside "
            "asyncio):\n"
        )
        _profile_tables(w, p)
    w(findings(results))
    return "\n".join(out) + "\n"


def _worst(row: dict[str, Any] | None, key: str) -> float | None:
    if not row:
        return None
    vals = [row["sinks"].get(s, {}).get("latency", {}).get(key) for s in SINKS]
    return None if any(v is None for v in vals) else max(vals)


def _issue16_targets(w: Any, e2e: dict[str, Any]) -> None:
    """Issue 16's rows of the targets table: latency against the floor, after/before, Redis."""
    t = e2e.get("targets", {})
    p50_t, p99_t = t.get("p50_ms", 5.0), t.get("p99_ms", 25.0)
    floor = {r["rate"]: r for r in e2e.get("floor_latency", [])}
    for vf in e2e.get("versus_floor", []):
        rate = vf["rate"]
        row = next((r for r in e2e["latency"] if r["rate"] == rate), None)
        p50, p99 = _worst(row, "p50_ms"), _worst(row, "p99_ms")
        f50, f99 = _worst(floor.get(rate), "p50_ms"), _worst(floor.get(rate), "p99_ms")
        w(
            f"| p50 < {p50_t:g} ms and p99 < {p99_t:g} ms receipt->delivery at {rate} events/s, "
            f"1 worker, 3 sinks | p50 {_f(p50, 1)} / p99 {_f(p99, 1)} ms (worst sink); floor "
            f"(LPUSH/BRPOP) {_f(f50, 1)} / {_f(f99, 1)} ms; payrelay/floor "
            f"{_ratio(p50, f50)} / {_ratio(p99, f99)} | {_ok(vf['met'])} |"
        )
    ba = e2e.get("before_after")
    if ba:
        w(
            f"| one worker's throughput (pre-loaded backlog) >= {ba['target']:g} x before "
            f"({ba['before_commit']}) | {_f(ba['after_events_per_s'])} / "
            f"{_f(ba['before_events_per_s'])} events/s = **{ba['ratio']}** (by worker CPU per "
            f"event {ba['ratio_cpu']}) | {_ok(ba['met'])} |"
        )
    sat = (e2e["throughput"][0] or {}).get("redis_saturation")
    if sat:
        w(
            f"| Redis CPU per event; events/s at which one Redis core saturates | "
            f"{_f(sat['redis_us_per_event'], 1)} µs ({_basis(sat)}); ~{_f(sat['events_per_s'])} "
            "events/s | reported |"
        )


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.1f}"


def _basis(sat: dict[str, Any]) -> str:
    return "main thread" if sat.get("basis") == "main_thread_us" else "all threads"


def _floor_section(w: Any, e2e: dict[str, Any]) -> None:
    floor = e2e.get("floor_latency")
    if not floor:
        return
    w("### The floor: one LPUSH, one BRPOP (bench/floor.py)\n")
    w(
        "The least a Redis-backed relay can do, run in the same run after the rows above (the "
        "relay's worker stopped meanwhile): an aiohttp server that answers 200 after one `LPUSH` "
        "of the receipt time and the body; one consumer process on `BRPOP` that POSTs each item "
        "to the same three fake sinks concurrently (no signature check, dedupe, claim, retry, "
        "rendering or log). Same load client, same rates and durations, same latency method "
        "(http: from the receipt time written at the ingress, ms resolution; discord, slack: from "
        "the client's send time).\n"
    )
    w(
        "| offered/s | sink | floor p50 ms | floor p99 ms | payrelay p50 ms | payrelay p99 ms | "
        "payrelay/floor p50 | payrelay/floor p99 | target p50 < 5, p99 < 25 ms |"
    )
    w("|---|---|---|---|---|---|---|---|---|")
    for vf in e2e.get("versus_floor", []):
        for sink, v in vf["sinks"].items():
            w(
                f"| {vf['rate']} | {sink} | {_f(v['floor_p50_ms'], 2)} | {_f(v['floor_p99_ms'], 2)} "
                f"| {_f(v['relay_p50_ms'], 2)} | {_f(v['relay_p99_ms'], 2)} | "
                f"{_f(v['ratio_p50'], 1)} | {_f(v['ratio_p99'], 1)} | {_ok(v['met'])} |"
            )
    w("")
    w(
        "Floor load: "
        + "; ".join(
            f"{r['rate']}/s: {r['load']['accepted']} accepted, achieved {r['load']['achieved_rate']}/s, "
            f"ingress answer p50/p99 {_f(r['load'].get('answer_p50_ms'), 1)} / "
            f"{_f(r['load'].get('answer_p99_ms'), 1)} ms, other CPUs busy {_f(r.get('other_cpus'), 2)}"
            for r in floor
        )
        + ".\n"
    )


def _before_after_section(w: Any, e2e: dict[str, Any]) -> None:
    ba = e2e.get("before_after")
    if not ba:
        return
    w("### Before and after, in this run\n")
    w(
        f"One `relay worker` on a pre-loaded backlog of {ba['events']} events (stored by this "
        "tree's ingress; the job format is the same), three sinks, default settings. *Before*: "
        f"commit {ba['before_commit']} (bench/e2e.py `BEFORE_COMMIT`: the tip of main when the work "
        "on issue 16 began), run from a git worktree (its worker imported "
        f"`{ba['before_relay_file']}`). *After*: this tree, {ba['after_commit']} (imported "
        f"`{ba['after_relay_file']}`). {ba['rounds']} run(s) each, interleaved (before, after, "
        "then after, before, ...), so that noise from other work on the box falls on both.\n"
    )
    w(
        "| run | round | events/s | worker CPU ms/event | Redis µs/event (worker, main thread) "
        "| other CPUs busy |"
    )
    w("|---|---|---|---|---|---|")
    for which in ("before", "after"):
        for i, r in enumerate(ba[which]):
            w(
                f"| {which} | {i + 1} | {_f(r['events_per_s'])} | "
                f"{_f(r['worker_cpu_ms_per_event'], 2)} | "
                f"{_f((r.get('redis_cpu_worker') or {}).get('main_thread_us'), 1)} | "
                f"{_f(r.get('other_cpus'), 2)} |"
            )
    w("")
    w(
        f"**after / before = {ba['ratio']}** by the median events/s "
        f"({_f(ba['after_events_per_s'])} / {_f(ba['before_events_per_s'])}; per round "
        f"{ba['ratio_per_round']}), **{ba['ratio_cpu']}** by the median worker CPU per event "
        f"({ba['before_cpu_ms_per_event']:.2f} -> {ba['after_cpu_ms_per_event']:.2f} ms); "
        f"target {ba['target']:g}: {_ok(ba['met'])}.\n"
    )


def _redis_cpu_section(w: Any, e2e: dict[str, Any]) -> None:
    rows = [r for r in [*e2e["throughput"], e2e.get("throughput_log_warning")] if r]
    if not rows or not rows[0].get("redis_cpu_worker"):
        return
    w("### Redis CPU per event, and where one Redis core saturates\n")
    w(
        "From `INFO cpu` deltas (`used_cpu_sys` + `used_cpu_user`: every thread; the `_main_thread` "
        "fields: the one thread that runs commands, which is what saturates) over the ingress's "
        "pre-load (its store script per webhook) and over the workers' drain, divided by the "
        "events; `INFO commandstats` usec beside it (command execution only, no parsing or socket "
        "I/O; a Lua script's inner commands are counted in its EVALSHA and again under their own "
        "names). The bench's own polling (one HGETALL per 20 ms) is included and is < 1 µs per "
        "event. Saturation = 10^6 / (ingress + worker main-thread µs per event).\n"
    )
    w(
        "| run | ingress store µs/event (main / all threads) | worker drain µs/event (main / all) "
        "| commandstats: scripts / all commands µs | one Redis core saturates at |"
    )
    w("|---|---|---|---|---|")
    for t in rows:
        ri, rw, sat = t["redis_cpu_ingress"], t["redis_cpu_worker"], t["redis_saturation"]
        label = f"{t['workers']} worker{'s' if t['workers'] > 1 else ''}, {t['log_level']}"
        w(
            f"| {label} | {_f(ri['main_thread_us'], 1)} / {_f(ri['total_us'], 1)} | "
            f"{_f(rw['main_thread_us'], 1)} / {_f(rw['total_us'], 1)} | "
            f"{_f(rw['scripts_us'], 1)} / {_f(rw['commands_us_sum'], 1)} | "
            f"**~{_f(sat['events_per_s'])} events/s** |"
        )
    w("")
    by_name = rows[0]["redis_cpu_worker"].get("commands_us_by_name") or {}
    if by_name:
        w(
            "Worker drain, commandstats µs per event by command (1 worker): "
            + ", ".join(f"{k} {v}" for k, v in by_name.items())
            + ".\n"
        )


def _loop(run_info: dict[str, Any] | None) -> str:
    m = (run_info or {}).get("machine") or {}
    if m.get("event_loop"):
        return m["event_loop"]
    from bench.common import event_loop

    return event_loop()


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
    """What is true now (figures from this run), what changed (figures from earlier complete
    runs in this session, labelled as such), and what remains as proposals."""
    ing, e2e, soak = results.get("ingress"), results.get("e2e"), results.get("soak")
    out: list[str] = ["## Findings\n"]
    w = out.append
    t1 = t2 = tw = None
    if e2e:
        t1, t2 = e2e["throughput"][0], e2e["throughput"][1]
        tw = e2e.get("throughput_log_warning")
    rel = None
    enq = bare = None
    if ing:
        rows = {(r["kind"], r["source"], r["distinct"]): r for r in ing["rows"]}
        bare, enq = rows.get(("bare", "ivpay", True)), rows.get(("enqueue", "ivpay", True))
        rel = rows.get(("relay", "ivpay", True))

    w("### Targets in this run\n")
    if ing and ing.get("ratio") is not None:
        target = ing.get("target_ratio", 1.5)
        w(
            f"- Ingress: payrelay / `enqueue_job` = **{ing['ratio']}** by req/s, "
            f"{ing.get('ratio_cpu')} by server CPU per request"
            + (
                f" (HMAC-signed: {ing['ratio_hmac']} / {ing.get('ratio_cpu_hmac')})"
                if ing.get("ratio_hmac")
                else ""
            )
            + f"; target {target}: {_ok(ing['ratio'] >= target)}."
        )
        if bare and enq and rel and rel.get("cpu_us_per_request_median"):
            w(
                f"  CPU per request (median of rounds): bare aiohttp "
                f"{bare['cpu_us_per_request_median']:.0f} us, aiohttp + `enqueue_job` "
                f"{enq['cpu_us_per_request_median']:.0f} us, payrelay "
                f"{rel['cpu_us_per_request_median']:.0f} us."
            )
    if t1:
        met = t1["events_per_s"] >= 1000
        w(
            f"- Worker: one `relay worker` process delivered **{_f(t1['events_per_s'])} events/s** "
            f"to three sinks; target 1000: {_ok(met)}. It was busy "
            f"{_f(100 * t1['worker_cpu_util'])}% of one core at "
            f"{t1['worker_cpu_ms_per_event']:.2f} ms of CPU per event, i.e. "
            f"~{_f(t1['events_per_worker_cpu_s'])} events/s per fully busy core. Two workers: "
            f"{_f(t2['events_per_s'])} events/s in total."
        )
        r200 = next((r for r in e2e["latency"] if r["rate"] == 200), None)
        if r200:
            p99 = max((r200["sinks"][s].get("latency", {}).get("p99_ms") or 0) for s in SINKS)
            w(
                f"- Latency: p99 receipt -> delivery at 200 events/s {p99:.1f} ms (worst sink); "
                f"target < 100 ms: {_ok(p99 < 100)}."
            )
    if soak:
        miss = sum(soak["missing"].values())
        dups = sum(soak["duplicates"].values())
        w(
            f"- Soak: {miss} missing, {dups} duplicate deliveries over {soak['minutes']:g} min "
            f"with the outages in the timeline above: {_ok(miss == 0)}."
        )
    w("")

    w("### What changed since the earlier runs\n")
    w(
        "The *earlier* figures are from complete runs of this suite earlier in this session, "
        "before the changes named landed (docs/benchmarks.md at commits 4f730a0, b6197e9, "
        "4fae17b, 559bf9b). They are history, not remeasured in this run.\n"
    )
    if rel:
        w(
            f"- **Batched stores** (relay/queue.py `ScriptBatcher`, used by `InboundStore`): the "
            "store scripts of concurrent webhooks go to Redis as one pipeline per event-loop turn; "
            "each webhook is still answered after its own script ran. Earlier in this session: "
            "payrelay (ivpay) 5,274-5,748 req/s at 178-202 CPU-us per request, ratio to "
            "`enqueue_job` 1.12-1.20 by req/s (1.10-1.19 by CPU). This run: "
            f"{_f(rel['rps'])} req/s at {_f(rel.get('cpu_us_per_request_median'))} CPU-us per "
            f"request, ratio {ing['ratio']} ({ing.get('ratio_cpu')} by CPU)."
        )
    loop = _loop(results.get("run"))
    w(
        f"- **uvloop** for `relay serve` and `relay worker` (`relay.cli.common.fast_event_loop`; "
        f"this run: {loop}). Measured alone earlier in this session (run 4, through a shim, "
        "before the other changes): worker 1.17 instead of 1.31 ms of CPU per event, ingress "
        "158 instead of 178 us per request."
    )
    if t1:
        w(
            "- **Worker writes**: the delivered marks, counters and latency histogram of an event "
            "in one Lua call (relay/delivery.py `_DELIVERED`), one log line per delivered event, "
            "the latency count derived from the buckets, workers registered in a sorted set. "
            "Earlier in this session, before these changes and uvloop landed: one worker did 447 "
            "events/s in the first run, then 717-728 events/s at 1.31 ms of CPU and 41 Redis "
            "commands per event in the two runs before them. This run, with both: "
            f"{_f(t1['events_per_s'])} events/s at "
            f"{t1['worker_cpu_ms_per_event']:.2f} ms and {t1.get('redis_commands_per_event')} "
            "Redis commands per event."
        )
    w(
        "- **Issue 16, the worker's CPU and latency** (measured against 375ce74 in this run: "
        "*Before and after* above): the sinks post through relay/sinks/client.py, a lean "
        "HTTP/1.1 client on kept-alive connections whose answers httptools parses (63-78 us of "
        "CPU per request against aiohttp's 130-190 us in a side-by-side loop on this machine); "
        "the claim script also reads each job and increments its try count, so a job starts "
        "with no round trip of its own (workers/run_claimed.py in place of arq's `run_job`, "
        "compared with it in tests/test_arq_contract.py); the worker's event claims, delivered "
        "marks and job finishes share round trips across concurrent jobs "
        "(relay/script_batcher.py, 20-36 calls per round trip while draining a backlog); a busy "
        "poll loop wakes when a tenth of its slots freed instead of at the next tick; a delivery "
        "to a healthy sink at its in-flight cap waits in its job for a slot instead of being "
        "rescheduled."
    )
    w(
        "- **Batched claims** (workers/settings.py `RelayWorker.start_jobs`): the jobs read at "
        "a poll tick are claimed together, one small script each in one pipeline, instead of "
        "arq's four sequential round trips per job (WATCH; EXISTS; ZSCORE; MULTI/PSETEX/EXEC). "
        "Measured alone, in an e2e-only run just before this one: 842 -> 1,029 events/s for one "
        "worker (1.04 -> 0.96 ms of CPU per event)."
    )
    w("")

    if ing and ing.get("ratio") is not None and ing["ratio"] < ing.get("target_ratio", 1.5):
        w("### Ingress\n")
        w(
            "- The ingress target is missed in this run; see the profile above for where its CPU "
            "goes. No change is proposed here without a measurement behind it.\n"
        )

    if t1 and t1["events_per_s"] < 1000:
        w("### What remains for the worker (proposals, not made)\n")
        by_name = t1.get("redis_commands_per_event_by_name") or {}
        multi = (
            f"; the {by_name['multi']} MULTI per event in the command counts above are "
            "the failure records' transactions and other writes"
            if by_name.get("multi")
            else ""
        )
        w(
            "- **Round trips per event**: the claim (batched per tick, job data included), the "
            "event claim, the delivered marks and the finish (each batched across concurrent "
            f"jobs){multi}. Two of them, the tick's claim and the event claim, are on every "
            "event's path to its sinks; folding the event claim into the tick's would need the "
            "normalized event, which only exists after the job's data is read."
        )
        if t2 and (t2.get("redis_commands_per_event_by_name") or {}).get("unwatch"):
            unwatch = t2["redis_commands_per_event_by_name"]["unwatch"]
            w(
                f"- **Two workers race for the same jobs**: both read the queue from its head; "
                f"{unwatch} failed claims (UNWATCH) per event, "
                f"{t2['worker_cpu_ms_per_event']:.2f} ms of worker CPU per event instead of "
                f"{t1['worker_cpu_ms_per_event']:.2f}. Shuffling the ids read at each poll (a "
                "`Worker.start_jobs` override again) would spread them."
            )
        if tw and tw.get("worker_cpu_ms_per_event"):
            gain = 100 * (1 - tw["worker_cpu_ms_per_event"] / t1["worker_cpu_ms_per_event"])
            w(
                f"- **Logging at WARNING** (no `delivered` INFO line): "
                f"{tw['worker_cpu_ms_per_event']:.2f} ms of CPU per event instead of "
                f"{t1['worker_cpu_ms_per_event']:.2f} ("
                + (f"{gain:.0f}% less" if gain >= 0.5 else f"no saving measured: {gain:+.0f}%")
                + f"), {_f(tw['events_per_s'])} events/s."
            )
        others = t1.get("cpu_s_others") or {}
        if others and t1.get("seconds"):
            share = sum(others.values()) / t1["seconds"]
            w(
                "- **Shared cores**: during the 1-worker run Redis used "
                f"{_f(others.get('redis-server'), 1)} CPU-s and the fake sink server "
                f"{_f(others.get('fake sink server'), 1)} CPU-s in {t1['seconds']} s, "
                f"{share:.2f} of this box's {_cpus(results)} cores, beside the worker. "
                f"With a core to itself the worker would do ~{_f(t1['events_per_worker_cpu_s'])} "
                "events/s (its CPU per event); the target needs <= 1.00 ms per event, "
                f"{max(0.0, 100 * (1 - 1.0 / t1['worker_cpu_ms_per_event'])):.0f}% less than now."
            )
        parts = (e2e.get("profile") or {}).get("by_part_self_pct")
        if parts:
            w(
                "- py-spy on one worker, self time: "
                + ", ".join(f"{k} {v}%" for k, v in parts[:6])
                + "."
            )
        w("")
    return "\n".join(out) + "\n"


def _cpus(results: dict[str, Any]) -> Any:
    from bench.common import NCPU

    return ((results.get("run") or {}).get("machine") or {}).get("cpus") or NCPU


def _profile_tables(w: Any, p: dict[str, Any]) -> None:
    """The self-time, inclusive and leaf-frame tables of one py-spy profile."""
    w("| part | self % |\n|---|---|")
    for k, v in p["by_part_self_pct"]:
        w(f"| {k} | {v} |")
    w("")
    w("Inclusive (stack contains):\n")
    w("| frame | % of samples |\n|---|---|")
    for k, v in p["inclusive_pct"]:
        w(f"| {k} | {v} |")
    w("")
    w(
        "Top leaf frames: "
        + "; ".join(f"`{k}` {v}%" for k, v in p["top_leaf_frames_pct"][:10])
        + ".\n"
    )


# --- 5. The event log (bench/log_cost.py, bench/results/log.json) --------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def _mib(value: float) -> str:
    return f"{value / 1024:,.2f} GiB" if value >= 1024 else f"{value:,.1f} MiB"


def _plain_on(lc: dict[str, Any]) -> dict[str, Any] | None:
    """The first log-on memory run with the bench's answers (not a what-if)."""
    return next(
        (
            r
            for r in lc.get("memory_runs", [])
            if r["mode"] == "on" and r["discord_answers"] == "bench" and not r.get("what_if")
        ),
        None,
    )


def _log_section(w: Any, lc: dict[str, Any], m: dict[str, Any]) -> None:
    w("## 5. The event log\n")
    w(
        f"`python -m bench log` (bench/log_cost.py{', --quick' if lc.get('quick') else ''}): "
        "the same runs with the event log on (the default) and with `log: {enabled: false}`, "
        f"in one Redis ({m.get('redis_server', '?').split(' sha=')[0]}), FLUSHALL between runs, "
        "log off and on alternating. A run: the IVPAY `PAID` webhook of section 1 (its "
        "transaction hash made unique per event: the stock one repeats one hash, which would "
        "put every event into a single lookup set) through `relay serve` and one `relay worker` "
        "to three sinks (http, discord, slack), one attempt each, until the stats hash counts "
        "every delivery. Code measured: "
        f"{lc.get('work_tree') or m.get('git')}.\n"
    )
    w(
        "Machine load average (1, 5, 15 min): "
        f"{lc.get('load_before')} before the memory runs, {lc.get('load_after_memory')} after "
        f"them; {lc.get('load_before_speed')} before the speed runs, {lc.get('load_after')} "
        "after them. Each run also gives the CPUs' worth of work done meanwhile by processes "
        "the benchmark did not start (other test suites on this shared box).\n"
    )
    for note in lc.get("notes", []):
        w(f"- {note}")
    if lc.get("memory_runs"):
        _log_bytes(w, lc)
    if lc.get("rejected"):
        _log_rejected(w, lc["rejected"])
    if lc.get("retention"):
        _log_retention(w, lc)
    if lc.get("speed") and lc.get("speed_summary"):
        _log_speed(w, lc)
    if lc.get("round_trips"):
        _log_trips(w, lc)
    if _plain_on(lc):
        _log_findings(w, lc)


def _log_bytes(w: Any, lc: dict[str, Any]) -> None:
    per_event = lc["log_bytes_per_event"]
    aim = lc["targets"]["bytes_per_event"]
    w("### Redis bytes per event\n")
    w(
        f"{lc['n']} events per run. `used_memory` (INFO memory) after the run minus before, / "
        "events, both read 3 s after the last command with the slow log emptied; the figure "
        "used below leaves out what sits in client and AOF buffers (`mem_clients_normal`, "
        "`mem_aof_buffer`: the ingress's connections' query buffers swing by hundreds of KB "
        "whatever the log does). Redis's per-command latency histograms (`latency-tracking`, "
        "~22 KB per command name on its first call, freed only by CONFIG RESETSTAT) are off for "
        "these runs: they added up to 0.7 MB to one side of a delta. The baseline already "
        "holds the counters, health and latency keys and the scripts (a 20-event warm-up "
        "whose events are deleted).\n"
    )
    w(
        "| run | log | Discord answers | events | used_memory / event | less client + AOF "
        "buffers | keys / event | other CPUs busy |"
    )
    w("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(lc["memory_runs"]):
        answers = "message object" if r["discord_answers"] == "message" else "bench's 30 bytes"
        mode = r["mode"]
        if r.get("what_if"):
            mode += " (what-if: " + ", ".join(f"`{k} {v}`" for k, v in r["what_if"].items()) + ")"
        w(
            f"| {i + 1} | {mode} | {answers} | {r['events']} | {_f(r['bytes_per_event'])} | "
            f"{_f(r['bytes_per_event_less_buffers'])} | {r['keys_per_event']} | "
            f"{_f(r.get('other_cpus'), 2)} |"
        )
    w("")
    w(
        f"**The log costs {_f(per_event)} bytes of Redis per event** (log on minus log off, "
        f"means of the runs above, less buffers; raw used_memory "
        f"{_f(lc.get('log_bytes_per_event_raw_used_memory'))}), "
        f"**{_f(lc['log_bytes_per_event_discord_message'])}** when Discord answers with the "
        f"message object it really returns to `?wait=true`. Aim: under {_f(aim)} bytes: "
        f"{_ok(lc['targets'].get('met_bytes'))} (with Discord-sized answers: "
        f"{_ok(lc['targets'].get('met_bytes_discord_message'))}).\n"
    )
    on = _plain_on(lc)
    if not on or not on.get("log"):
        return
    lg = on["log"]
    w(
        f"Where it goes: MEMORY USAGE (every nested value sampled) of each `<prefix>:log:*` key "
        f"after run {lc['memory_runs'].index(on) + 1}, / {on['events']} events:\n"
    )
    w("| key | keys per event | bytes per key | bytes per event | share | encoding | TTL s |")
    w("|---|---|---|---|---|---|---|")
    for name, k in lg["by_kind"].items():
        w(
            f"| {name} | {k['keys'] / max(on['events'], 1):.2f} | {_f(k['bytes_per_key'])} | "
            f"{_f(k['bytes_per_event'])} | {100 * k['bytes_per_event'] / max(per_event, 1):.0f}% "
            f"| {k['encoding']} | {k['ttl_s']} |"
        )
    rest = per_event - lg["bytes_per_event"]
    w(
        "| not in MEMORY USAGE: each key's entry in the expiry table, hash-table buckets "
        f"(the difference) | | | {_f(rest)} | {100 * rest / max(per_event, 1):.0f}% | | |"
    )
    w(f"| **total** | | | **{_f(per_event)}** | 100% | | |")
    w("")
    if lc.get("log_hashtable_bytes_per_event") is not None:
        w(
            "MEMORY STATS for the same runs: the keyspace's and the expiry table's hash tables "
            f"(buckets and entries) grew by {_f(lc['log_hashtable_bytes_per_event'])} bytes per "
            "event more with the log on (the keyspace's entry of each key is in MEMORY USAGE "
            "too; the expiry table's is not).\n"
        )
    samples: dict[str, dict[str, Any]] = {}
    for r in lc["memory_runs"]:
        if r.get("log", {}).get("sample_hash") and not r.get("what_if"):
            samples.setdefault(r["discord_answers"], r["log"]["sample_hash"])
    if samples:
        cols = list(samples)
        label = {"bench": "bench's answers", "message": "Discord message object"}
        fields = sorted({f for h in samples.values() for f in h["value_bytes"]})
        w("One event hash, bytes of each field's value:\n")
        w("| field | " + " | ".join(label.get(c, c) for c in cols) + " |")
        w("|---|" + "---|" * len(cols))
        for f in fields:
            w(
                f"| `{f}` | "
                + " | ".join(str(samples[c]["value_bytes"].get(f, "–")) for c in cols)
                + " |"
            )
        w(
            "| values / field names / MEMORY USAGE of the hash | "
            + " | ".join(
                f"{samples[c]['value_bytes_total']} / {samples[c]['field_name_bytes_total']} / "
                f"**{samples[c]['memory_usage']}**"
                for c in cols
            )
            + " |"
        )
        w("")
        first = next(iter(samples.values()))
        w(
            "`e` is the event JSON (the normalized payment and the provider's payload `data`); "
            "`a:<sink>:<round>:<n>` an attempt record with the answer's first bytes (at most "
            "512). The fake sink server answers http with an empty body, slack with `ok`, "
            'discord with `{"id": "1", "channel_id": "1"}` (30 bytes); a real Discord webhook '
            "with `?wait=true` answers the whole message object, embeds included, of which the "
            "record keeps 512 bytes (the second column: bench/log_cost.py's sink server "
            "answering what Discord does). The hash is a "
            f"`{first['encoding']}`: Redis keeps a hash as a compact listpack only while every "
            f"value is at most `hash-max-listpack-value` ({first['hash_max_listpack_value']}) "
            "bytes, and the event JSON is over it.\n"
        )
    wi = lc.get("what_if")
    if wi:
        cfg = ", ".join(f"`{k} {v}`" for k, v in wi["redis_config"].items())
        w(
            f"What-if (a Redis server setting, not the default; the last run above): with {cfg} "
            f"the event hash is a `{wi['encoding']}` of {_f(wi['event_hash_bytes'])} bytes and "
            f"the log costs {_f(wi['log_bytes_per_event'])} bytes per event.\n"
        )


def _log_rejected(w: Any, rj: dict[str, Any]) -> None:
    kept = rj["runs"]["kept"]
    w("### Bytes per rejected request\n")
    w(
        f"{kept['requests']} requests to the hmac source with a wrong signature "
        f"({rj['body_bytes']}-byte JSON bodies; every one answered 401), first to the ingress "
        "with the default `log` settings (rejected requests kept), then to a second ingress "
        "with `log.rejected_max_bytes: 0` (nothing kept; the capped `rejections` list and the "
        "counters are written either way, and the list was full before).\n"
    )
    w(
        "| ingress | used_memory / request | less client + AOF buffers | Redis commands / request "
        "| round trips / request | other CPUs busy |"
    )
    w("|---|---|---|---|---|---|")
    for label, r in rj["runs"].items():
        w(
            f"| {label} | {_f(r['bytes_per_request'])} | "
            f"{_f(r.get('bytes_per_request_less_buffers'))} | {r['commands_per_request']} | "
            f"{r['round_trips_per_request']} | {_f(r.get('other_cpus'), 2)} |"
        )
    w("")
    w(
        "**A kept rejected request costs "
        f"{_f(rj.get('bytes_per_kept_request_less_buffers'))} bytes** (kept minus not kept, "
        f"less buffers; raw used_memory {_f(rj['bytes_per_kept_request'])}). MEMORY USAGE of "
        f"`<prefix>:rej` ({kept['rej_encoding']}, {kept['kept']} entries, TTL "
        f"{kept['rej_ttl_s']} s) and `<prefix>:rej:index`: {_f(kept['rej_memory_usage'])} + "
        f"{_f(kept['rej_index_memory_usage'])} bytes, {_f(kept['rej_bytes_per_request'])} per "
        f"request, for a msgpack entry of {_f(kept['entry_bytes'])} bytes (body, headers but "
        "the secret ones, the answer given). `log.rejected_max_bytes` counts the entries' "
        f"bytes: the default 16 MiB holds ~{16 * 2**20 / kept['entry_bytes']:,.0f} such "
        f"requests, ~{16 * kept['rej_bytes_per_request'] / kept['entry_bytes']:,.1f} MiB of "
        "Redis.\n"
    )


def _log_retention(w: Any, lc: dict[str, Any]) -> None:
    w("### What `log.retention` costs\n")
    w(
        "The log's bytes per event above times the events kept (every log key expires "
        "`log.retention` after its event was accepted; the dedupe keys of section 3, 72 h, and "
        "the payment state come on top, log on or off):\n"
    )
    w(
        "| events/day | retention | events kept | Redis (bench's answers) | Redis (Discord-sized "
        "answers) |"
    )
    w("|---|---|---|---|---|")
    for a, b in zip(lc["retention"], lc["retention_discord_message"], strict=True):
        w(
            f"| {a['events_per_day']:,} | {a['days']} d | {a['events']:,} | {_mib(a['mib'])} | "
            f"{_mib(b['mib'])} |"
        )
    w("")


def _log_rates(sp: dict[str, Any]) -> str:
    return "/".join(f"{r:g}" for r in sorted({row["rate"] for row in sp["latency"]})) or "–"


def _log_speed(w: Any, lc: dict[str, Any]) -> None:
    sp, ss = lc["speed"], lc["speed_summary"]
    rate = _log_rates(sp)
    w("### Speed, log on and off\n")
    w(
        f"Section 2's runs, in the order {', '.join(sp['order'])}: "
        f"{sp['throughput'][0]['events']} events pre-loaded, one worker started, timed until "
        f"every delivery is counted; then {rate} events/s for {sp['latency'][0]['seconds']} s "
        "(the load client's stock payload) to a fresh worker, with the receipt-to-delivery "
        "latency the fake sink server measures. Worker CPU per event is the steadier figure "
        "on a shared box. The absolute figures are not comparable with section 2's (another "
        "day, another commit): compare log on with log off within these tables.\n"
    )
    w(
        "| run | log | events/s | worker CPU ms/event | redis-server CPU ms/event | Redis "
        "commands per event (worker) | other CPUs busy |"
    )
    w("|---|---|---|---|---|---|---|")
    for i, t in enumerate(sp["throughput"]):
        w(
            f"| {i + 1} | {t['mode']} | {_f(t['events_per_s'])} | "
            f"{_f(t['worker_cpu_ms_per_event'], 2)} | {_f(t.get('redis_cpu_ms_per_event'), 3)} | "
            f"{t['redis_commands_per_event']} | {_f(t.get('other_cpus'), 2)} |"
        )
    w("")
    w("| run | log | sink | n | p50 ms | p90 ms | p99 ms | max ms | other CPUs busy |")
    w("|---|---|---|---|---|---|---|---|---|")
    for i, row in enumerate(sp["latency"]):
        for sink in SINKS:
            lat = row["sinks"][sink].get("latency", {})
            w(
                f"| {i + 1} | {row['mode']} | {sink} | {lat.get('n')} | "
                f"{_f(lat.get('p50_ms'), 1)} | {_f(lat.get('p90_ms'), 1)} | "
                f"{_f(lat.get('p99_ms'), 1)} | {_f(lat.get('max_ms'), 1)} | "
                f"{_f(row.get('other_cpus'), 2)} |"
            )
    w("")
    w(
        "| figure | log on (median of runs) | log off (median) | on vs off, median of the "
        "pairs | each pair (other CPUs busy) | quiet pairs only |"
    )
    w("|---|---|---|---|---|---|")
    for key, label, digits in (
        ("events_per_s", "events/s, 1 worker", 0),
        ("worker_cpu_ms_per_event", "worker CPU ms per event", 3),
        ("redis_cpu_ms_per_event", "redis-server CPU ms per event", 3),
        ("redis_commands_per_event", "Redis commands per event (worker)", 1),
        ("p50_ms", f"p50 ms at {rate}/s (worst sink)", 1),
        ("p99_ms", f"p99 ms at {rate}/s (worst sink)", 1),
    ):
        v = ss.get(key)
        if not v:
            continue
        pairs = ", ".join(f"{_pct(p['diff_pct'])} ({p['other_cpus']:.2f})" for p in v["pairs"])
        quiet = (
            f"{_pct(v['diff_pct_quiet_pairs'])} ({v['quiet_pairs']})"
            if v.get("quiet_pairs")
            else "none quiet"
        )
        w(
            f"| {label} | {_f(v['on'], digits)} | {_f(v['off'], digits)} | "
            f"**{_pct(v['diff_pct'])}** | {pairs} | {quiet} |"
        )
    w("")
    w(
        "A pair is runs 2k-1 and 2k, seconds apart; its difference is on against off; quiet: "
        "both runs with other processes below 0.3 CPUs. "
        f"Aim: within {lc['targets']['speed_pct']}% (events/s no more than that lower, p99 no "
        f"more than that higher, medians of the pairs): {_ok(lc['targets'].get('met_speed'))}.\n"
    )
    spread = {
        key: [p["diff_pct"] for p in ss[key]["pairs"] if p["diff_pct"] is not None]
        for key in ("events_per_s", "p99_ms")
        if ss.get(key)
    }
    if any(v and max(v) - min(v) > 2 * lc["targets"]["speed_pct"] for v in spread.values()):
        w(
            "Read that verdict with the spread of the pairs: "
            + ", ".join(
                f"{name} {min(v):+.0f}% to {max(v):+.0f}%"
                for name, v in (
                    ("events/s", spread.get("events_per_s")),
                    ("p99", spread.get("p99_ms")),
                )
                if v
            )
            + " between runs seconds apart, log on or off, wider than the aim: this box does "
            "not resolve a 10% difference in speed. The CPU per event is steadier: the "
            f"worker's {_pct(ss['worker_cpu_ms_per_event']['diff_pct'])}, redis-server's "
            + (
                f"{_pct(ss['redis_cpu_ms_per_event']['diff_pct'])} "
                f"({_f(ss['redis_cpu_ms_per_event']['off'], 3)} -> "
                f"{_f(ss['redis_cpu_ms_per_event']['on'], 3)} ms), where the log's commands run."
                if ss.get("redis_cpu_ms_per_event")
                else "not measured."
            )
            + "\n"
        )


def _log_trips(w: Any, lc: dict[str, Any]) -> None:
    rt = lc["round_trips"]
    w("### Redis commands and round trips per event\n")
    w(
        "From the memory runs (log on: runs with the bench's answers; off: the off runs): "
        "`INFO commandstats` calls from just before the first webhook until every delivery "
        "was counted, ingress and worker together, / events. Commands inside Lua scripts and "
        "MULTI count as well as the EVALSHA / EXEC that carried them; the benchmark's own "
        "polling is taken out; the idle polling (arq's queue poll every 0.05 s, health "
        "pings) is left in (for scale below). Round trips are counted inside the processes "
        "(bench/log_cost.py `counted`: redis-py's `send_packed_command`, once per single "
        "command and once per pipeline or MULTI/EXEC), the worker's per event and the "
        "ingress's per webhook.\n"
    )
    w("| command | log off | log on | extra per event |\n|---|---|---|---|")
    for name, v in lc["commands_by_name"].items():
        if max(v["on"], v["off"]) >= 0.01:
            w(f"| {name} | {v['off']} | {v['on']} | {v['extra']:+} |")
    w(
        f"| **all commands** | **{rt['commands_off']}** | **{rt['commands_on']}** | "
        f"**{rt['commands_extra']:+}** |"
    )
    w(
        f"| **worker round trips per event** | **{rt['worker_off']}** | **{rt['worker_on']}** | "
        f"**{rt['worker_extra']:+}** |"
    )
    w(
        "| ingress round trips per webhook (stores batched per event-loop turn, 50 concurrent "
        f"clients) | {rt['ingress_off']} | {rt['ingress_on']} | "
        f"{rt['ingress_on'] - rt['ingress_off']:+.3f} |"
    )
    w("")
    on = _plain_on(lc)
    idle = (on or {}).get("idle")
    if idle:
        w(
            f"Idle, for scale: {idle['commands_per_s']} commands/s (ingress + worker), the "
            f"worker {idle['worker_round_trips_per_s']} round trips/s, the ingress "
            f"{idle['ingress_round_trips_per_s']}/s: over a run's length "
            f"{idle['per_event_over_this_run']['commands']} commands and "
            f"{idle['per_event_over_this_run']['worker_round_trips']} worker round trips per "
            "event.\n"
        )
    w(
        f"Aim: at most {lc['targets']['round_trips']} more round trips per event: "
        f"{_ok(lc['targets'].get('met_round_trips'))} ({rt['worker_extra']:+} measured: the log "
        "is written inside the claim script, the delivered script and the failure MULTI the "
        "worker sends anyway; the extra commands run inside them, in Redis).\n"
    )


def _attempt_sizes(h: dict[str, Any]) -> str:
    sizes = sorted(v for k, v in h["value_bytes"].items() if k.startswith("a:"))
    return f"{sizes[0]}-{sizes[-1]}" if sizes else "?"


def _log_findings(w: Any, lc: dict[str, Any]) -> None:
    """What dominates the log's bytes, and what would cut it (proposals, not made)."""
    on = _plain_on(lc)
    if not on or not on.get("log"):
        return
    per_event = lc["log_bytes_per_event"]
    kinds = on["log"]["by_kind"]
    h = on["log"]["sample_hash"]
    event_hash, look, pay = kinds["event hash"], kinds["lookup sets"], kinds["payment list"]
    w("### What dominates, and what would cut it (proposals, not made)\n")
    overhead = h["memory_usage"] - h["value_bytes_total"] - h["field_name_bytes_total"]
    w(
        f"- **The event hash**: {_f(event_hash['bytes_per_event'])} of {_f(per_event)} bytes "
        f"per event ({100 * event_hash['bytes_per_event'] / max(per_event, 1):.0f}%). Its event "
        f"JSON alone is {h['value_bytes'].get('e')} bytes for a {_body_len()}-byte webhook: it "
        "carries the provider's payload (`data`) beside the normalized payment, which repeats "
        "it (id and reference, tx_hash and tx_url) and many nulls. And since that value is "
        f"over `hash-max-listpack-value` the hash is a `{h['encoding']}`: ~{overhead} bytes of "
        f"per-field overhead for {h['fields']} fields."
        + (
            f" As a listpack (the what-if run) the log costs "
            f"{_f(lc['what_if']['log_bytes_per_event'])} bytes per event."
            if lc.get("what_if")
            else ""
        )
        + " Moving the event JSON to its own string key is not enough by itself: the attempt "
        f"records are {_attempt_sizes(h)} bytes with the bench's short answers (Discord's "
        "30-byte answer already makes 84), also over 64. What would cut it: the event stored "
        "without `data` and nulls; attempt records and excerpts kept under 64 bytes in the "
        "hash (the full excerpt elsewhere) together with the event JSON under its own key; or "
        "a raised `hash-max-listpack-value` on the server (an operator's choice, the what-if)."
    )
    w(
        f"- **The lookup sets**: {_f(look['bytes_per_event'])} bytes per event "
        f"({100 * look['bytes_per_event'] / max(per_event, 1):.0f}%), {look['sets_per_event']} "
        f"sets of one member each, {_f(look['bytes_per_key'])} bytes apiece: this Redis keeps "
        f"even a one-member set of strings as a `{look['encoding']}` (small sets become "
        "listpacks from Redis 7.2 on). The payment id's set holds the same event ids as the "
        "payment list; dropping it (a lookup by payment id reads `log:pay:<source>:<id>` for "
        "each configured source) saves one key per payment, and a plain string `find:<value> "
        "-> event id`, made a set only when a second event names the value, would keep the "
        "common single-event case in about half."
    )
    w(
        f"- **The payment list** ({_f(pay['bytes_per_event'])} bytes per event, a "
        f"`{pay['encoding']}` of one element) and the **index** "
        f"({_f(kinds['index (zset)']['bytes_per_event'])}) are smaller; and every key with a "
        "TTL costs an entry in Redis's expiry table that MEMORY USAGE leaves out (the 'not in "
        "MEMORY USAGE' row): fewer keys per event cut that as well."
    )
    w("")
