"""Which clips and speakers a shipped model never trained on, from its export report (NAME.export.json).

The recordings themselves are built by diffres.train.scenes.
"""

from __future__ import annotations

import json
from pathlib import Path


def validation_clips(export_json: Path, data: Path) -> list[tuple[str, str]]:
    """(path, label) of the model's validation clips: as recorded at export, else re-derived like training."""
    training = json.loads(export_json.read_text()).get("training", {}) if export_json.is_file() else {}
    if training.get("val_clips"):
        return [(p, Path(p).parent.name) for p in training["val_clips"]]
    from diffres.train.data import (  # torch: only for the fallback
        scan_audio_folder,
        split_clips,
    )

    clips, labels = scan_audio_folder(data)
    _, val, _ = split_clips(clips, 0.15, 0, None)
    return [(c.path, labels[c.label]) for c in val]


def holdout_speaker(export_json: Path) -> str | None:
    """The digits speaker the model's background training held out (None when it used no folders)."""
    training = json.loads(export_json.read_text()).get("training", {}) if export_json.is_file() else {}
    background = training.get("background") or {}
    return background.get("background_holdout_speaker") or training.get("background_holdout_speaker")
