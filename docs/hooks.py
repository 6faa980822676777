"""mkdocs hooks: the parts of the site generated from the code and its reports at build time.

A page asks for a generated block with an HTML comment on a line of its own:

- `<!-- settings -->`: every `DIFFRES_*` setting, from `diffres.server.config.Settings.model_fields`
  (name, variable, type and bounds, default, description).
- `<!-- models -->`, `<!-- models-per-class -->`, `<!-- models-parity -->`: the shipped models' figures,
  from `src/diffres/models/NAME.export.json` (its `metadata`, `training` and `parity` entries); the
  commands that reproduce them are the Makefile's, included with pymdownx.snippets.
- `<!-- train-options -->`, `<!-- calibrate-options -->`, `<!-- export-options -->`: the options of
  `diffres train`, `diffres calibrate` and `diffres export`, from the parsers the CLI uses
  (`diffres.train.options`, torch-free).

Figures are never typed into a page: they come from here, or from the generated reports that the
benchmark pages include. The images those reports show are added to the site from `reports/`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
MARKER = re.compile(r"^<!-- ([a-z-]+) -->[ \t]*$", re.MULTILINE)
# Images shown by generated reports: (path in the site, file in the repository).
REPORT_IMAGES = {
    "reports/diffres_clips.png": ROOT / "reports" / "compare" / "diffres_clips.png",
    "reports/diffres_keywords.png": ROOT / "reports" / "diffres_keywords.png",
    "reports/events_det.png": ROOT / "reports" / "events_det.png",
}
KiB = 1024
MiB = 1024 * KiB


def on_config(config: Any) -> Any:
    """The package from this checkout, also when mkdocs runs outside the project's virtualenv."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the report images (they live beside the reports, outside docs/)."""
    from mkdocs.structure.files import File

    for uri, path in REPORT_IMAGES.items():
        if not path.is_file():
            raise FileNotFoundError(f"report image missing: {path}")
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        generator = GENERATORS.get(match.group(1))
        return generator() if generator else match.group(0)

    return MARKER.sub(replace, markdown)


# ----------------------------------------------------------------------------- settings


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped, and outside `code` the characters
    Markdown would read as emphasis or HTML (`*.onnx`, `<label>`) escaped too."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        text = re.sub(r"([\\*_])", r"\\\1", parts[i])
        parts[i] = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + (" (optional)" if len(inner) < len(args) else "")
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is list:
        item = _type_name(args[0]) if args else "str"
        return f"comma-separated list of {item}"
    names = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path",
             "SecretStr": "secret string"}
    return names.get(getattr(annotation, "__name__", str(annotation)), getattr(annotation, "__name__", str(annotation)))


def _bounds(field: Any) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = []
    for item in field.metadata:
        for attr, sign in words.items():
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(parts)


def _size(value: int) -> str:
    for unit, name in ((MiB, "MiB"), (KiB, "KiB")):
        if value >= unit and value % unit == 0:
            return f"`{value}` ({value // unit} {name})"
    return f"`{value}`"


def _default(name: str, field: Any) -> str:
    from diffres.models import MODELS_DIR

    value = field.get_default(call_default_factory=True)
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return "the shipped models (`diffres/models/` in the package)" if value == MODELS_DIR else f"`{value}`"
    if isinstance(value, list):
        return "(empty)" if not value else "`" + ",".join(map(str, value)) + "`"
    if isinstance(value, int) and name.endswith("_bytes"):
        return _size(value)
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def settings_table() -> str:
    from diffres.server.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description: the configuration page needs one")
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        rows.append(f"| `{prefix}{name.upper()}` | {_cell(kind)}{', ' + _cell(bounds) if bounds else ''} "
                    f"| {_default(name, field)} | {_cell(field.description)} |")
    return "\n".join(rows) + f"\n\n_{len(Settings.model_fields)} settings, generated from " \
                             "`diffres.server.config.Settings` when this site was built._\n"


# ----------------------------------------------------------------------------- shipped models


def _reports() -> dict[str, dict[str, Any]]:
    from diffres.api import DEFAULT_MODEL
    from diffres.models import MODELS_DIR, available_models

    reports = {}
    for name in sorted(available_models(), key=lambda n: n != DEFAULT_MODEL):  # the default model first
        path = MODELS_DIR / f"{name}.export.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: every shipped model needs its export report")
        reports[name] = {**json.loads(path.read_text()), "name": name}
    return reports


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def models_table() -> str:
    """The shipped models side by side: what the graph's metadata says, then the training run's figures."""
    reports = _reports()
    names = list(reports)

    def row(title: str, value: Any) -> str:
        return f"| {title} | " + " | ".join(_cell(value(reports[n])) for n in names) + " |"

    def meta(key: str, fmt: Any = str) -> Any:
        return lambda r: "—" if r.get("metadata", {}).get(key) in (None, "") else fmt(r["metadata"][key])

    def training(key: str, fmt: Any = str) -> Any:
        return lambda r: "—" if (r.get("training") or {}).get(key) is None else fmt(r["training"][key])

    def both(*keys: str) -> Any:
        return lambda r: all((r.get("training") or {}).get(k) is not None for k in keys)

    def background(r: dict[str, Any]) -> dict[str, Any]:
        return (r.get("training") or {}).get("background") or {}

    def target_accuracy(r: dict[str, Any]) -> str:
        t = r.get("training") or {}
        return _pct(t.get("target_accuracy", t.get("val_accuracy")))

    lines = ["| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [
        row("file", lambda r: f"`{r['name']}.onnx`" + (f", {r['size_bytes'] / 1e6:.1f} MB" if "size_bytes" in r else "")),
        row("version", meta("version", lambda v: f"`{v}`")),
        row("labels", meta("labels", lambda v: ", ".join(f"`{x}`" for x in json.loads(v)))),
        row("sample rate", meta("sample_rate", lambda v: f"{v} Hz")),
        row("resolution, delta", lambda r: f"{meta('resolution')(r)}, {meta('delta')(r)}"),
        row("clip length (the service's window)", meta("clip_seconds", lambda v: f"{float(v):g} s")),
        row("hop between windows of long audio", meta("window_hop_s", lambda v: f"{float(v):g} s")),
        row("background label", lambda r: f"`{r['metadata']['background_label']}`"
            if r.get("metadata", {}).get("background_label") else "none"),
        row("default event threshold `min_score`", meta("min_score", lambda v: f"{float(v):g}")),
        row("consecutive windows an event needs", meta("event_windows")),
        row("onset searched at most this far before an event's end",
            meta("max_word_s", lambda v: f"{float(v):g} s")),
        row("frames per validation clip: in → to the backbone (mean)",
            lambda r: f"{r['training']['mean_frames_in']:.1f} → {r['training']['mean_frames_out']:.1f}"
            if both("mean_frames_in", "mean_frames_out")(r) else "—"),
        row("training data", training("data", lambda v: f"`{v}`")),
        row("validation split", training("split")),
        row("clips: training / validation", lambda r: f"{r['training']['n_train']} / {r['training']['n_val']}"
            if both("n_train", "n_val")(r) else "—"),
        row("accuracy on the validation clips of the target labels", target_accuracy),
        row("accuracy on every validation example (background ones included)", training("val_accuracy", _pct)),
        row("balanced accuracy over all labels", training("balanced_accuracy", _pct)),
        row("background examples taken for a target label (argmax)", training("background_false_accept", _pct)),
        row("background folders", lambda r: ", ".join(f"`{f}`" for f in background(r).get("folders", [])) or "—"),
        row("background speaker held out", lambda r: background(r).get("background_holdout_speaker") or "—"),
        row("activeness of the importance (0: flat)", training("activeness", lambda v: f"{v:.3f}")),
        row("epochs (best)", lambda r: f"{r['training']['epochs']} (best: {r['training']['best_epoch']})"
            if both("epochs", "best_epoch")(r) else "—"),
        row("seed", training("seed")),
        row("parameters", training("parameters", lambda v: f"{v:,}")),
        row("training time", training("wall_time_s", lambda v: f"{v / 60:.0f} min")),
    ]
    return "\n".join(lines) + "\n"


def per_class_table() -> str:
    reports = _reports()
    out = []
    for name, report in reports.items():
        training = report.get("training") or {}
        per_class = training.get("per_class_accuracy") or {}
        if not per_class:
            continue
        out.append(f"**`{name}`** ({training.get('split', 'validation split')}):\n")
        out.append("| " + " | ".join(f"`{label}`" for label in per_class) + " |")
        out.append("|---" * len(per_class) + "|")
        out.append("| " + " | ".join(_pct(v) for v in per_class.values()) + " |\n")
    return "\n".join(out)


def parity_table() -> str:
    reports = _reports()
    lines = ["| model | rows | lengths (s) | batch | largest logit difference | frames_out as the contract says "
             "| passed |", "|---|---|---|---|---|---|---|"]
    kinds = {"full": "every row full length", "mixed": "rows of different lengths in one padded batch"}
    for name, report in reports.items():
        for kind, title in kinds.items():
            rows = [p for p in report["parity"] if p["kind"] == kind]
            if not rows:
                continue
            lengths = sorted({p["seconds"] for p in rows})
            batches = sorted({p["batch"] for p in rows})
            worst = max(p["max_logit_diff"] for p in rows)
            exact = all(p["frames_out"] == p["expected_frames_out"] for p in rows)
            lines.append(f"| `{name}` | {title} | {', '.join(f'{s:g}' for s in lengths)} | "
                         f"{', '.join(map(str, batches))} | {worst:.1e} | {'yes' if exact else '**no**'} | "
                         f"{'yes' if report.get('parity_passed') else '**no**'} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command lines


def _options_table(parser: argparse.ArgumentParser) -> str:
    lines = ["| option | default | what |", "|---|---|---|"]
    for action in parser._actions:  # noqa: SLF001 - argparse has no public list of its options
        if isinstance(action, argparse._HelpAction) or not action.option_strings:  # noqa: SLF001
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            usage = f"`{flag}`"
        else:
            metavar = action.metavar or (" ".join(action.choices) if action.choices else action.dest.upper())
            if action.choices and not action.metavar:
                metavar = "{" + ",".join(action.choices) + "}"
            many = " ..." if action.nargs in ("*", "+") else ""
            usage = f"`{flag} {metavar}{many}`"
        if action.required:
            default = "required"
        elif action.nargs == 0:
            default = "off"
        elif action.default in (None, (), []):
            default = "(none)"
        elif isinstance(action.default, (tuple, list)):
            default = "`" + " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in action.default) + "`"
        elif isinstance(action.default, float):
            default = f"`{action.default:g}`"
        else:
            default = f"`{action.default}`"
        lines.append(f"| {usage} | {default} | {_cell(action.help or OPTION_NOTES.get(action.dest, ''))} |")
    return "\n".join(lines) + "\n"


# What an option does, for the options whose parser gives no help text (the parser's own wins).
OPTION_NOTES = {
    "resolution": "how the backbone's input is shortened: DiffRes, none (full), AvgPool or AvgMaxPool to the "
                  "same frame count, or a longer hop (changehop)",
    "hop_ms": "hop between log-mel frames, ms",
    "win_ms": "analysis window, ms",
    "n_mels": "mel bands",
    "epochs": "training epochs",
    "batch_size": "clips per training step",
    "lr": "peak learning rate (AdamW, warm-up then cosine decay)",
    "weight_decay": "AdamW weight decay",
    "warmup_epochs": "epochs of linear learning-rate warm-up",
    "seed": "seed of the split, the initialisation and the augmentation",
    "val_fraction": "share of each label kept for validation (stratified split)",
    "clip_seconds": "training crop length; default: the 95th percentile of the training clips' lengths",
    "holdout_speaker": "speaker kept for validation when every file is named {label}_{speaker}_{index}; "
                       "default: chosen by the seed",
    "guide_loss_weight": "weight of the DiffRes guide loss next to the cross entropy",
    "time_masks": "SpecAugment time masks per clip",
    "time_mask_ratio": "widest time mask, as a share of the clip",
    "freq_masks": "SpecAugment frequency masks per clip",
    "freq_mask_bins": "widest frequency mask, mel bands",
    "speed_perturb": "speed factors of the resampled copies of each training clip",
    "gain_db": "random gain, uniform within plus or minus this many dB",
    "threads": "torch threads; 0: torch's default",
    "background_holdout_speaker": "speaker of the background folders kept for validation; default: chosen by "
                                  "the seed",
    "background_share": "background examples per epoch, in units of an average label's clips",
    "mix_probability": "share of training clips mixed with background material",
    "mix_snr_db": "SNR range of that mixing, dB",
}


def train_options() -> str:
    from diffres.train.options import train_parser

    return _options_table(train_parser())


def calibrate_options() -> str:
    """Every option left out keeps the run's own: said once per row, in the default column."""
    from diffres.train.options import calibrate_parser

    own = " (default: the run's own)"
    return _options_table(calibrate_parser()).replace(own, "").replace("| (none) |", "| the run's own |")


def export_options() -> str:
    from diffres.train.options import export_parser

    return _options_table(export_parser())


# ----------------------------------------------------------------------------- errors


def errors_table() -> str:
    """Every error class of diffres.errors: its code, HTTP status, class and docstring."""
    import inspect

    from diffres import errors

    def walk(cls: type) -> list[type]:
        return [cls] + [s for sub in cls.__subclasses__() for s in walk(sub)]

    lines = ["| code | status | class | meaning |", "|---|---|---|---|"]
    for cls in walk(errors.DiffresError):
        if cls.__module__ != errors.__name__:
            continue
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0]
        bases = ", ".join(b.__name__ for b in cls.__bases__ if b is not Exception)
        kind = f"`{cls.__name__}`" + (f" ({_cell(bases)})" if bases else "")
        lines.append(f"| `{cls.code}` | {cls.status} | {kind} | {_cell(doc)} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- metrics


def metrics_table() -> str:
    """Every series family of the service's /metrics, from a fresh `diffres.server.metrics.Metrics`."""
    from diffres.server.metrics import Metrics

    metrics = Metrics()
    labels = {getattr(m, "_name"): getattr(m, "_labelnames", ()) for m in vars(metrics).values()
              if getattr(m, "_name", None)}
    lines = ["| metric | type | labels | what |", "|---|---|---|---|"]
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        names = ", ".join(f"`{label}`" for label in labels.get(family.name, ()))
        lines.append(f"| `{name}` | {family.type} | {names} | {_cell(family.documentation)} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the model contract


def contract_metadata() -> str:
    """The contract version and the metadata keys every exported model carries (diffres.contract)."""
    from diffres import contract

    keys = ", ".join(f"`{k}`" for k in contract.METADATA_KEYS)
    return (f"Contract version `{contract.CONTRACT_VERSION}`. Metadata every model carries: {keys}. A runtime "
            "refuses a model that lacks any of them, or that has another contract version, instead of "
            "inventing defaults; re-export such a model with `diffres export`.\n")


GENERATORS = {
    "contract": contract_metadata,
    "metrics": metrics_table,
    "errors": errors_table,
    "settings": settings_table,
    "models": models_table,
    "models-per-class": per_class_table,
    "models-parity": parity_table,
    "train-options": train_options,
    "calibrate-options": calibrate_options,
    "export-options": export_options,
}
