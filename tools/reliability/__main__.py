"""`python -m tools.reliability` (= `make reliability`): every scenario once, then reports/RELIABILITY.md.

    python -m tools.reliability                 # full: 10-minute soak with 32 clients, ~1000+ schemathesis cases
    python -m tools.reliability --short         # CI: a one-minute soak, a few hundred schemathesis cases
    python -m tools.reliability --only soak --soak-minutes 3 --soak-clients 16

Bounded: every scenario has its own server on 127.0.0.1, a fixed count or duration of traffic,
and stops its server on every exit path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tools.reliability import corpus, hostile, lifecycle, schema, traffic
from tools.reliability.probe import ROOT, Service
from tools.reliability.report import write_report

RSS_CEILING_MB = 1024.0  # the documented ceiling with default settings (docs: REST API, limits)
SCENARIOS = ("schemathesis", "corpus", "hostile", "soak", "overload", "lifecycle")
MAX_SOAK_MINUTES, MAX_CLIENTS = 60, 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.reliability", description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="the CI version: a 1-minute soak, fewer cases")
    p.add_argument("--soak-minutes", type=float, help="soak length (default 10; --short: 1)")
    p.add_argument("--soak-clients", type=int, default=32, help="soak clients, the load test's traffic mix (default 32)")
    p.add_argument("--examples", type=int, help="schemathesis examples per operation (default 100; --short: 20)")
    p.add_argument("--overload-seconds", type=int, help="overload length (default 60; --short: 20)")
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    p.add_argument("--work", type=Path, default=ROOT / "reports" / "tmp" / "reliability")
    args = p.parse_args(argv)
    args.soak_minutes = args.soak_minutes or (1.0 if args.short else 10.0)
    args.examples = args.examples or (20 if args.short else 100)
    args.overload_seconds = args.overload_seconds or (20 if args.short else 60)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}")
    if not 0 < args.soak_minutes <= MAX_SOAK_MINUTES or not 1 <= args.soak_clients <= MAX_CLIENTS // 4:
        p.error(f"soak minutes must be in (0, {MAX_SOAK_MINUTES}] and clients in [1, {MAX_CLIENTS // 4}]")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    if "schemathesis" in args.only:
        def run_schema() -> dict[str, Any]:
            with Service(work, "schemathesis") as s:
                return schema.schemathesis(s, work, args.examples)
        results.append(hostile.run_case("schemathesis --checks all", run_schema))
    if "corpus" in args.only:
        def run_corpus() -> dict[str, Any]:
            with Service(work, "corpus") as s:
                return corpus.corpus(s)
        results.append(hostile.run_case("bad-input corpus", run_corpus))
    if "hostile" in args.only:
        results += hostile.run_all(work, args.short, RSS_CEILING_MB)
    if "soak" in args.only:
        results.append(hostile.run_case(f"soak ({args.soak_minutes:g} min, {args.soak_clients} clients)", lambda:
                                        traffic.soak(work, args.soak_minutes, args.soak_clients, RSS_CEILING_MB)))
    if "overload" in args.only:
        clients = 4 * args.soak_clients
        results.append(hostile.run_case(f"overload (4x: {clients} clients)",
                                        lambda: traffic.overload(work, clients, args.overload_seconds)))
    if "lifecycle" in args.only:
        results.append(hostile.run_case("SIGTERM with requests in flight", lambda: lifecycle.sigterm_in_flight(work)))
        results.append(hostile.run_case("kill -9 and restart", lambda: lifecycle.kill9_restart(work)))
        results.append(hostile.run_case("corrupt model beside a good one", lambda: lifecycle.corrupt_model(work)))
    return {"short": args.short, "rss_ceiling_mb": RSS_CEILING_MB, "soak_minutes": args.soak_minutes,
            "soak_clients": args.soak_clients, "examples": args.examples, "results": results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    report = run(args)
    report["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
    report["minutes"] = round((time.time() - started) / 60, 1)
    report["command"] = "python -m tools.reliability " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "reliability-short" if args.short else "reliability"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
    md = write_report(report, args.out / ("RELIABILITY-short.md" if args.short else "RELIABILITY.md"))
    print(md)
    failed = [r["case"] for r in report["results"] if not r.get("passed")]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
