"""The comparison command: trains, summarises, draws, and resumes without retraining."""

import json
from pathlib import Path

from model.compare import main as compare_main
from tests.test_model import write_tone_folder


def test_compare_runs_summarises_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "tones"
    write_tone_folder(data)
    out, ckpts = tmp_path / "report", tmp_path / "ckpts"
    args = ["--data", str(data), "--out", str(out), "--checkpoints", str(ckpts), "--seeds", "0",
            "--variants", "full", "diffres-0.5", "--epochs", "1"]
    compare_main(args)
    run = out / "runs" / "tones" / "diffres-0.5" / "seed0.json"
    first = run.stat().st_mtime_ns
    summary = json.loads((out / "results.json").read_text())
    rows = summary["datasets"]["tones"]
    assert set(rows) == {"full", "diffres-0.5"}
    assert rows["diffres-0.5"]["frames_out"] < rows["full"]["frames_out"]
    assert rows["full"]["throughput_clips_s"] > 0
    text = (out / "RESULTS.md").read_text()
    assert "diffres-0.5" in text and "vs full resolution" in text and "Not run yet" in text
    assert (out / "diffres_clips.png").stat().st_size > 10_000
    compare_main(args)  # resumes: nothing left to train
    assert run.stat().st_mtime_ns == first
