"""reports/RELIABILITY.md from one run's results: a summary table, then each scenario's figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tools.reliability.probe import ROOT

SKIP = {"case", "passed", "seconds"}


def _git() -> str:
    try:
        return subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()[:100]
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _figure(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    return text.replace("|", "\\|")


def write_report(report: dict[str, Any], path: Path) -> str:
    results = report["results"]
    lines = [
        "# Reliability report", "",
        f"`{report['command']}` on {report['started']}, {report['minutes']} min, commit `{_git()}`.",
        f"Every scenario ran its own `diffres serve` on 127.0.0.1 with default settings unless its row says "
        f"otherwise. RSS ceiling checked: {report['rss_ceiling_mb']:g} MB.", "",
        f"**{sum(1 for r in results if r.get('passed'))} of {len(results)} scenarios passed.**", "",
        "| scenario | result | seconds |", "|---|---|---|",
    ]
    lines += [f"| {r['case']} | {'pass' if r.get('passed') else '**FAIL**'} | {r.get('seconds', '')} |"
              for r in results]
    for r in results:
        lines += ["", f"## {r['case']}: {'pass' if r.get('passed') else 'FAIL'}", ""]
        lines += [f"- {key}: {_figure(value)}" for key, value in r.items() if key not in SKIP]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text
