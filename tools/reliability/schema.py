"""Schemathesis against the service's own OpenAPI document, every check (`--checks all`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tools.reliability.probe import ROOT, Service

CONFIG = Path(__file__).with_name("schemathesis.toml")


def server_errors(url: str) -> int:
    """5xx answers the server counted (its own metric, so nothing a client-side check could miss)."""
    total = 0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("diffres_http_requests_total{") and 'status="5' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def schemathesis(s: Service, work: Path, examples: int, seed: int = 1, timeout_s: int = 1800) -> dict[str, Any]:
    """One schemathesis run (all phases, `examples` per operation); counts from its JSON report, and the
    5xx the server itself counted during the run (start-up 503s of the readiness poll excluded)."""
    five_xx_before = server_errors(s.url)
    report_dir = work / "schemathesis"
    report_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", s.url + "/openapi.json",
           "--checks", "all", "-n", str(examples), "--seed", str(seed), "--report", "json",
           "--report-json-path", str(report_dir / "report.json"), "--request-timeout", "60",
           "--continue-on-failure", "--suppress-health-check", "all", "--generation-database", "none"]
    with (work / "schemathesis-cli.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
    report = json.loads((report_dir / "report.json").read_text())
    cases = report["test_cases"]
    failures = [f"{', '.join(f.get('operations', [])) or '?'}: {f.get('title') or f.get('name') or f}"[:300]
                for f in report.get("failures", [])]
    five_xx = server_errors(s.url) - five_xx_before
    passed = proc.returncode == 0 and cases["with_failures"] == 0 and not report.get("errors") and five_xx == 0
    return {"passed": passed, "cases": cases["generated"], "cases_with_failures": cases["with_failures"],
            "unique_failures": cases["unique_failures"], "errors": len(report.get("errors", [])),
            "server_5xx": five_xx, "examples_per_operation": examples, "seed": seed,
            "operations": report["operations"]["tested"], "failures": failures[:10],
            "warnings": {k: v for k, v in report.get("warnings", {}).items() if v},
            "version": report["schemathesis_version"]}
