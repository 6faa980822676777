"""`python -m tools.doc_examples [--check] [PAGE ...]`: rerun the docs' examples and write their real outputs.

Two kinds of example in docs/*.md:
- a ```console block of `$ ` commands, each followed by what it printed; `diffres`, `curl` and
  `python` commands run against two real `diffres serve` processes on 127.0.0.1 (shown as port
  8000, gRPC as 8001), both with the admin key `s3cret-admin`: a plain one, and one with API keys
  (`s3cret`) and CORS for https://app.example.com, used by blocks that mention the key. Commands that start servers, build images or need a cluster are left
  as they are;
- a ```python block followed by a ```text block with what it printed.
An output holding a `...` line is elided by hand: it keeps its lines before and after the `...` and
takes the rest from the run. `--check` fails when an output differs (timings aside) instead of
writing it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tools.loadtest.server import Server

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SHOWN = "http://127.0.0.1:8000"
SHOWN_GRPC = "127.0.0.1:8001"  # the plain server's OIP gRPC port, as the docs show it
ADMIN_ENV = {"DIFFRES_ADMIN_KEYS": "s3cret-admin"}  # both servers: the repository examples load and unload
KEYED_ENV = {**ADMIN_ENV, "DIFFRES_API_KEYS": "s3cret", "DIFFRES_CORS_ORIGINS": "https://app.example.com"}
LEFT_ALONE = ("make ", "docker ", "kubectl ", "helm ", "ray ", "python -m tools", "DIFFRES_", "diffres serve")
# Pages whose examples run against a server set up on the page itself (repository.md: a versioned model
# repository built step by step), not the two servers here: their outputs are left as they are.
PAGES_LEFT_ALONE = ("repository.md",)
CONSOLE = re.compile(r"(```console\n)(.*?)(```)", re.S)
SAVED = re.compile(r"saved as\s+`([\w.]+\.py)`(?:(?!```).)*?```python\n(.*?)```", re.S)
PYTHON = re.compile(r"(```python\n)((?:(?!```).)*?)(```\n\n```text\n)(.*?)(```)", re.S)
NOISE = re.compile(r'("?(?:decode|inference|total|duration_ms|request_id|x-request-id|date|timing_ms)"?[:=]\s*)'
                   r'[^,}\s]+', re.I)


def commands(body: str) -> list[tuple[str, list[str]]]:
    """A console block as (command, its output lines); a command may continue over `\\` lines."""
    lines = body.rstrip("\n").split("\n")
    items, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise ValueError(f"console block line without a command before it: {lines[i]!r}")
        command = [lines[i][2:]]
        while command[-1].endswith("\\"):
            i += 1
            command.append(lines[i])
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        items.append(("\n".join(command), output))
    return items


def keep_elided(expected: list[str], got: list[str]) -> list[str]:
    """The run's lines, with a hand-elided `...` kept where the written output has it."""
    if "..." not in expected:
        return got
    k = expected.index("...")
    tail = len(expected) - k - 1
    return got[:k] + ["..."] + (got[len(got) - tail:] if tail else [])


def shell(command: str, url: str, scripts: dict[str, Path]) -> list[str]:
    """One command, run as a shell would from the repository root; a page's saved scripts by their path."""
    for name, path in scripts.items():
        command = command.replace(f"python {name}", f"python {path}")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    run = subprocess.run(["sh", "-c", f"( {command.replace(SHOWN, url)} ) 2>&1"], cwd=ROOT, capture_output=True,
                         text=True, env=env, timeout=300)
    return [line.rstrip() for line in run.stdout.rstrip("\n").split("\n")]


def saved_scripts(text: str, into: Path, url: str) -> dict[str, Path]:
    """The page's python blocks it says to save as a file (`saved as `NAME.py``), written into `into`."""
    scripts = {}
    for name, code in SAVED.findall(text):
        path = into / name
        path.write_text(code.replace(SHOWN.split("//", 1)[1], url.split("//", 1)[1]))
        scripts[name] = path
    return scripts


def console(body: str, url: Callable[[str], str], scripts: dict[str, Path]) -> str:
    out = []
    for command, expected in commands(body):
        if command.startswith(LEFT_ALONE):
            out.append((command, expected))
            continue
        out.append((command, keep_elided(expected, shell(command, url(body), scripts))))
    return "".join(f"$ {c}\n" + "".join(f"{line}\n" for line in o) for c, o in out)


def python(code: str, expected: str, server: Server) -> str:
    """Run a python block against `server` (shown as SHOWN, without its scheme as Triton's clients take it,
    and SHOWN_GRPC for gRPC)."""
    code = code.replace(SHOWN, server.url).replace(SHOWN.split("//", 1)[1], server.url.split("//", 1)[1])
    code = code.replace(SHOWN_GRPC, server.grpc_target or SHOWN_GRPC)
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    if run.returncode:
        raise RuntimeError(f"an example failed:\n{code}\n{run.stderr[-2000:]}")
    got = [line.rstrip() for line in run.stdout.rstrip("\n").split("\n")]
    return "\n".join(keep_elided(expected.rstrip("\n").split("\n"), got)) + "\n"


def render(text: str, plain: Server, keyed: Server, scripts_dir: Path) -> str:
    def url(body: str) -> str:
        return keyed.url if "s3cret" in body or "app.example.com" in body else plain.url

    scripts = saved_scripts(text, scripts_dir, plain.url)
    text = CONSOLE.sub(lambda m: m.group(1) + console(m.group(2), url, scripts) + m.group(3), text)
    return PYTHON.sub(lambda m: m.group(1) + m.group(2) + m.group(3) + python(m.group(2), m.group(4), plain)
                      + m.group(5), text)


def warm_up(server: Server) -> None:
    """Both shipped models answer once, so pages that show the service's counters show some."""
    for model, clip in (("keywords", "alexa.flac"), ("digits", "three.wav")):
        body = (ROOT / "examples" / clip).read_bytes()
        request = urllib.request.Request(f"{server.url}/v1/classify?model={model}", data=body,
                                         headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.doc_examples", description=__doc__.splitlines()[0])
    p.add_argument("pages", nargs="*", help="pages under docs/ (default: all)")
    p.add_argument("--check", action="store_true", help="fail if an output is not what the code prints")
    a = p.parse_args(argv)
    pages = [DOCS / name for name in a.pages] or [p for p in sorted(DOCS.glob("*.md")) if p.name not in PAGES_LEFT_ALONE]
    stale = []
    with tempfile.TemporaryDirectory() as tmp, Server(ADMIN_ENV, Path(tmp) / "plain.log", grpc=True) as plain, \
            Server(KEYED_ENV, Path(tmp) / "keyed.log") as keyed:
        warm_up(plain)
        for page in pages:
            text = page.read_text()
            new = render(text, plain, keyed, Path(tmp))
            if NOISE.sub(r"\1_", new) != NOISE.sub(r"\1_", text):
                stale.append(page.name)
                if not a.check:
                    page.write_text(new)
    verb = "out of date" if a.check else "rewritten"
    print(f"{len(stale)} page(s) {verb}: {', '.join(stale) or 'none'}")
    return 1 if a.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
