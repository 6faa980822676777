"""DiffRes audio classification: serve, classify, models, train, calibrate, export (`diffres`, `python -m diffres`).

    diffres serve [--host H] [--port P] [--models DIR] [--workers N]
    diffres classify FILE... [--model NAME|PATH] [--url URL] [--json] [--min-score X]
    diffres models [--url URL] [--json]
    diffres train --data DIR --out RUN ...      (the `train` extra)
    diffres calibrate RUN [--event-false-alarms-per-hour F ...]   (the `train` extra)
    diffres export --checkpoint RUN/best.pt --out NAME.onnx

`classify` runs in this process (the Python API) unless `--url` names a service (the client); both
print the same labels and events. Exit status: 0 ok, 1 a file, model or service failed (bad
input, unknown model, unreachable service, missing extra), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from diffres import __version__

OK, FAILED, USAGE = 0, 1, 2
LONG_FILE_S = 30.0  # files at least this long get a progress bar of their own

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def parser() -> argparse.ArgumentParser:
    from diffres.train.options import CALIBRATE_HELP, add_calibrate_arguments, add_export_arguments, add_train_arguments

    p = argparse.ArgumentParser(prog="diffres", description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 ok, 1 a file, model or service failed, 2 usage error.")
    p.add_argument("--version", action="version", version=f"diffres {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the service (REST, OIP v2, stream, demo page) in the foreground",
                       description="Run the service in the foreground; every other setting comes from DIFFRES_* "
                                   "environment variables (docs: configuration).")
    s.add_argument("--host", help="bind address (DIFFRES_HOST; default 127.0.0.1)")
    s.add_argument("--port", type=int, help="bind port (DIFFRES_PORT; default 8000)")
    s.add_argument("--models", type=Path, help="folder of *.onnx models (DIFFRES_MODEL_DIR; default: the shipped ones)")
    s.add_argument("--default-model", help="model used when a request names none (DIFFRES_DEFAULT_MODEL)")
    s.add_argument("--workers", type=int, help="server processes sharing the port, the CPUs split between them "
                                               "(DIFFRES_WORKERS; default 1: docs/performance.md)")
    s.set_defaults(run=serve)

    c = sub.add_parser("classify", help="classify audio files and print their labels and events",
                       description="Classify audio files in this process, or with --url on a running service. "
                                   "Prints a table per file, or with --json each file's REST JSON on one line.")
    c.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help="audio files (WAV, FLAC, MP3, OGG, M4A, WebM...)")
    c.add_argument("--model", help="a shipped model's name or an .onnx path (with --url: a model of the service); "
                                   "default: keywords (with --url: the service's default)")
    c.add_argument("--url", help="classify on this service (e.g. http://127.0.0.1:8000) instead of in-process")
    c.add_argument("--api-key", help="the service's API key (with --url)")
    c.add_argument("--json", action="store_true", help="print each file's REST JSON, one object per line")
    c.add_argument("--top-k", type=int, default=5, help="labels per answer, best first (default 5)")
    c.add_argument("--min-score", type=float, help="event threshold (default: the model's min_score)")
    c.add_argument("--thresholds", default="", help="per-label event thresholds, label:score,label:score")
    c.add_argument("--threads", type=int, default=0, help="onnxruntime threads in-process (default: all CPUs)")
    c.set_defaults(run=classify)

    m = sub.add_parser("models", help="list the models (shipped, or a service's with --url)")
    m.add_argument("--url", help="list a running service's models")
    m.add_argument("--api-key", help="the service's API key (with --url)")
    m.add_argument("--json", action="store_true", help="print the /v1/models JSON")
    m.set_defaults(run=models)

    t = sub.add_parser("train", help="train a model on an audio folder (the `train` extra)",
                       description="Train a DiffRes (or baseline) classifier on DIR/<label>/*.wav|flac "
                                   "(needs the `train` extra).")
    add_train_arguments(t)
    t.set_defaults(run=train)

    k = sub.add_parser("calibrate", help="choose a trained run's event rule again (the `train` extra)",
                       description=CALIBRATE_HELP)
    add_calibrate_arguments(k)
    k.set_defaults(run=calibrate)

    e = sub.add_parser("export", help="export a checkpoint to ONNX and check parity (the `train` extra)",
                       description="Export a training checkpoint to ONNX, check parity with PyTorch, write "
                                   "NAME.export.json (needs the `train` extra).")
    add_export_arguments(e)
    e.set_defaults(run=export)
    return p


def serve(a: argparse.Namespace) -> int:
    from diffres.server.app import serve as run_server
    from diffres.server.config import Settings

    given = {"host": a.host, "port": a.port, "model_dir": a.models, "default_model": a.default_model,
             "workers": a.workers}
    run_server(Settings(**{k: v for k, v in given.items() if v is not None}))
    return OK


def _thresholds(text: str) -> dict[str, float]:
    from diffres.events import parse_thresholds

    return parse_thresholds(text)


def classify(a: argparse.Namespace) -> int:
    """Each file in turn; a failed file is reported and the others still run (exit 1 if any failed)."""
    from diffres.errors import DiffresError

    options = {"top_k": a.top_k, "min_score": a.min_score, "thresholds": _thresholds(a.thresholds)}
    classify_one, threshold = _classifier(a, options)
    failed = 0
    with _progress(len(a.files)) as bar:
        files = bar.add_task("files", total=len(a.files)) if len(a.files) > 1 else None
        for path in a.files:
            try:
                result = classify_one(path, _file_progress(bar, path))
            except (DiffresError, OSError, ValueError) as exc:
                failed += 1
                _report_failure(path, exc, a.json)
            else:
                _print_result(path, result, a.json, threshold)
            if files is not None:
                bar.advance(files)
    return FAILED if failed else OK


def _classifier(a: argparse.Namespace, options: dict[str, Any]) -> tuple[Callable[..., Any], float | None]:
    """How to classify one file (in-process or remote), and the event threshold to mention."""
    if a.url:
        from diffres.client import Client

        client = Client(a.url, api_key=a.api_key)
        return (lambda path, progress: client.classify(path, model=a.model, **options)), a.min_score
    from diffres.api import DEFAULT_MODEL, Classifier

    clf = Classifier.load(a.model or DEFAULT_MODEL, threads=a.threads)
    threshold = a.min_score if a.min_score is not None else clf.info.min_score
    return (lambda path, progress: clf.classify(path, progress=progress, **options)), threshold


def _progress(files: int) -> Progress:
    """A progress display on stderr (only drawn in a terminal)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def _file_progress(bar: Progress, path: Path) -> Callable[[float, float | None], None]:
    """A bar of its own for a long file, added when its decoding shows it is long."""
    task: list[Any] = []

    def update(done_s: float, total_s: float | None) -> None:
        if not task and (total_s or done_s) >= LONG_FILE_S:
            task.append(bar.add_task(path.name, total=total_s))
        if task:
            bar.update(task[0], completed=done_s)
    return update


def _report_failure(path: Path, exc: Exception, as_json: bool) -> None:
    code = getattr(exc, "code", type(exc).__name__)
    message = getattr(exc, "message", str(exc))
    if as_json:
        print(json.dumps({"file": str(path), "error": {"code": code, "message": message}}), flush=True)
    err.print(f"[red]{path}: {message}[/red] ({code})")


def _print_result(path: Path, result: Any, as_json: bool, threshold: float | None) -> None:
    if as_json:
        print(json.dumps(result.to_json()), flush=True)
        return
    out.print(f"[bold]{path}[/bold]  {result.model} {result.model_version}  {result.duration_s:.2f} s  "
              f"{result.format}")
    if result.events:
        table = Table("label", "start (s)", "end (s)", "score", box=None, padding=(0, 2))
        for e in result.events:
            table.add_row(e.label, f"{e.start_s:.2f}", f"{e.end_s:.2f}", f"{e.score:.3f}")
        out.print(table)
    else:
        where = f" (min_score {threshold:g})" if threshold is not None else ""
        out.print(f"  nothing detected above the threshold{where}")
    scores = ", ".join(f"{p.label} {p.score:.3f}" for p in result.predictions)
    out.print(f"  best window score per label: {scores}")
    for warning in result.warnings or []:
        out.print(f"  [yellow]warning: {warning}[/yellow]")


def models(a: argparse.Namespace) -> int:
    if a.url:
        from diffres.client import Client

        with Client(a.url, api_key=a.api_key) as client:
            listed = client.models()
    else:
        from diffres.api import DEFAULT_MODEL, Classifier, available_models
        from diffres.schemas import ModelList

        described = [Classifier.load(name, threads=1).describe() for name in available_models()]
        for d in described:
            d.default = d.name == DEFAULT_MODEL
        listed = ModelList(models=described, default_model=DEFAULT_MODEL)
    if a.json:
        print(listed.model_dump_json())
        return OK
    table = Table("name", "labels", "rate", "delta", "min_score", "version", box=None, padding=(0, 2))
    for d in listed.models:
        name = f"{d.name} (default)" if d.default else d.name
        table.add_row(name, ", ".join(d.labels), f"{d.sample_rate} Hz", f"{d.delta:g}", f"{d.min_score:g}", d.version)
    out.print(table)
    return OK


def train(a: argparse.Namespace) -> int:
    from diffres.train.options import configs
    from diffres.train.trainer import train as run_training

    metrics = run_training(*configs(a), command="diffres " + shlex.join(a.argv))
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return OK


def calibrate(a: argparse.Namespace) -> int:
    from diffres.train.recalibrate import calibrate_command

    return calibrate_command(a, "diffres " + shlex.join(a.argv))


def export(a: argparse.Namespace) -> int:
    from diffres.train.export import export as run_export

    return run_export(a)


def main(argv: Sequence[str] | None = None) -> int:
    line = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(line)
    args.argv = line  # the command line, recorded by train and calibrate
    try:
        return args.run(args)
    except ModuleNotFoundError as exc:  # an optional extra that is not installed (the message names it)
        err.print(f"[red]{exc}[/red]")
        return FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`diffres models --json | head`): nothing left to say
        sys.stderr.close()
        return OK
    except Exception as exc:
        message = failure(exc)
        if message is None:
            raise
        err.print(f"[red]{message}[/red]")
        return FAILED


def failure(exc: Exception) -> str | None:
    """What to tell a person about an expected failure (bad input, settings, model, network); None: a bug."""
    import httpx
    from pydantic import ValidationError

    from diffres.errors import DiffresError

    if isinstance(exc, DiffresError):
        return f"{exc.message} ({exc.code})"
    if isinstance(exc, FileNotFoundError):  # a run, checkpoint or folder named on the command line
        return f"no such file or folder: {exc.filename}"
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach the service: {exc}"
    if isinstance(exc, ValidationError):  # a DIFFRES_* setting the service cannot take
        problems = "; ".join(f"DIFFRES_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        return f"invalid settings: {problems}"
    return None


if __name__ == "__main__":
    sys.exit(main())
