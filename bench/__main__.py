"""`python -m bench [PART ...] [--quick] [--soak-minutes M]`

Parts: ingress, e2e, memory, soak, log (what the event log costs) (default: all of them, then
the report). Each part saves its figures to bench/results/<part>.json; the report
(docs/benchmarks.md, docs/benchmarks.png) is rewritten from whatever results exist after every
run, so one part can be rerun alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench.common import RESULTS_DIR, log, machine

PARTS = ("ingress", "e2e", "memory", "soak", "log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)}, report (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, for trying it out")
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=None,
        help="soak length in the full run (default 3, --quick 1.5)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts if p not in (*PARTS, "report")]
    if unknown:
        parser.error(f"unknown part(s) {unknown}: choose from {', '.join(PARTS)}, report")
    parts = [p for p in (args.parts or PARTS) if p != "report"]
    started = time.monotonic()
    m = machine()
    log(
        f"machine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, aiohttp {m['aiohttp']}, "
        f"arq {m['arq']}, {m['redis_server']}, {m['wrk']}, git {m['git']}"
    )
    failures: list[str] = []
    timings: dict[str, float] = {}
    for part in parts:
        t0 = time.monotonic()
        log(f"=== {part} ===")
        try:
            if part == "ingress":
                from bench import ingress

                ingress.run(args.quick, profile=not args.no_profile)
            elif part == "e2e":
                from bench import e2e

                e2e.run(args.quick, profile=not args.no_profile)
            elif part == "memory":
                from bench import memory

                memory.run(args.quick)
            elif part == "log":
                from bench import log_cost

                log_cost.run(args.quick)
            elif part == "soak":
                from bench import soak

                minutes = args.soak_minutes or (1.5 if args.quick else 3.0)
                soak.run(minutes)
        except Exception as exc:  # noqa: BLE001 - report what failed, go on with the rest
            import traceback

            traceback.print_exc()
            failures.append(f"{part}: {type(exc).__name__}: {exc}")
            log(f"{part} FAILED: {exc}")
        timings[part] = round(time.monotonic() - t0, 1)
        log(f"{part} took {timings[part]:.0f}s")
    from bench import report

    seconds = time.monotonic() - started
    info = {
        "seconds": seconds,
        "parts": [f"{k} {v:.0f}s" for k, v in timings.items()],
        "machine": m,
    }
    if set(parts) != set(PARTS):
        info = None  # a partial run: the run time line would describe only some parts
    else:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "run.json").write_text(json.dumps(info))
    if info is None and (RESULTS_DIR / "run.json").exists():
        info = json.loads((RESULTS_DIR / "run.json").read_text())
        if parts:  # a part was rerun alone: its figures are newer than the full run's
            rerun = f"then rerun alone: {', '.join(parts)}"
            kept = [p for p in info.get("parts", []) if not p.startswith(rerun)]
            when = f"{m['date']}, git {m['git']}, {seconds:.0f} s"
            info["parts"] = [*kept, f"{rerun} ({when})"]
            (RESULTS_DIR / "run.json").write_text(json.dumps(info))
    path = report.write(info)
    log(f"wrote {path} and {report.PNG} in {seconds:.0f}s total")
    for failure in failures:
        log(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
