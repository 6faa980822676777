"""`python -m tools.readme_examples [--check]`: run README.md's examples and write their real outputs into it.

Each example sits between `<!-- BEGIN example:NAME -->` and `<!-- END example:NAME -->`: a code
block with the command (or Python), then a `text` block with what it printed. The curl example runs
against a real `diffres serve` on 127.0.0.1 (shown as port 8000). The same server's answer for
examples/alexa.flac is the OpenAPI document's example (src/diffres/server/openapi_example.json).
`--check` (the test suite's use) fails when an output differs from what the code prints now;
timings are the only values exempt.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tools.loadtest.server import Server

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OPENAPI_EXAMPLE = ROOT / "src" / "diffres" / "server" / "openapi_example.json"
BLOCK = re.compile(r"(<!-- BEGIN example:(\w+) -->\n)(.*?)(<!-- END example:\2 -->)", re.S)
FENCE = re.compile(r"```(\w+)\n(.*?)```\n", re.S)
TIMING = re.compile(r'("(?:decode|inference|total)": )[0-9.]+')


def run(args: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(args, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "120", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def curl_output(command: str, server: Server) -> str:
    """The curl line as README shows it, run against `server`; the JSON pretty-printed as the line says."""
    line = command.strip().removeprefix("$ ").replace("http://127.0.0.1:8000", server.url)
    shown, _, pipe = line.partition(" | ")
    raw = run(["sh", "-c", shown])
    return json.dumps(json.loads(raw), indent=4) + "\n" if pipe else raw


def outputs(blocks: dict[str, str], server: Server) -> dict[str, str]:
    """What each example prints now."""
    makers: dict[str, Callable[[str], str]] = {
        "curl": lambda code: curl_output(code, server),
        "python": lambda code: run([sys.executable, "-"], stdin=code),
        "cli": lambda code: run([sys.executable, "-m", "diffres", *code.strip().removeprefix("$ ").split()[1:]]),
    }
    printed = {name: makers[name](code) for name, code in blocks.items()}
    return {name: "".join(line.rstrip() + "\n" for line in text.splitlines()) for name, text in printed.items()}


def commands(text: str) -> dict[str, str]:
    """Each example's command (its first code block)."""
    return {m.group(2): FENCE.search(m.group(3)).group(2) for m in BLOCK.finditer(text)}  # type: ignore[union-attr]


def render(text: str, printed: dict[str, str]) -> str:
    def block(m: re.Match[str]) -> str:
        first = FENCE.search(m.group(3))
        assert first is not None
        return f"{m.group(1)}{first.group(0)}```text\n{printed[m.group(2)]}```\n{m.group(4)}"
    return BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.readme_examples", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if README.md's outputs are not what the code prints")
    a = p.parse_args(argv)
    text = README.read_text()
    with tempfile.TemporaryDirectory() as tmp, Server({}, Path(tmp) / "server.log") as server:
        new = render(text, outputs(commands(text), server))
        example = json.dumps(json.loads(run(["curl", "-s", "-F", "file=@examples/alexa.flac",
                                             f"{server.url}/v1/classify?top_k=2"])), indent=2) + "\n"
    if a.check:
        current = [(TIMING.sub(r"\1_", new), TIMING.sub(r"\1_", text)),
                   (TIMING.sub(r"\1_", example), TIMING.sub(r"\1_", OPENAPI_EXAMPLE.read_text()))]
        if any(now != written for now, written in current):
            print("README.md's example outputs or the OpenAPI example are out of date: "
                  "run `python -m tools.readme_examples`")
            return 1
        print("README.md's example outputs and the OpenAPI example are current")
        return 0
    README.write_text(new)
    OPENAPI_EXAMPLE.write_text(example)
    print(f"wrote {len(commands(text))} example outputs into {README.relative_to(ROOT)} and the OpenAPI example "
          f"into {OPENAPI_EXAMPLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
