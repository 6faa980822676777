"""The comparison command: trains, summarises, draws, and resumes without retraining."""

import json
from pathlib import Path

from tests.test_model import write_tone_folder
from tools.compare.__main__ import main as compare_main
from tools.compare.__main__ import paired


def test_compare_runs_summarises_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "tones"
    write_tone_folder(data)
    out, ckpts = tmp_path / "report", tmp_path / "ckpts"
    bench = tmp_path / "bench.json"  # the speed table quotes the benchmark's report, never its own timing
    bench.write_text(json.dumps({"environment": {"date": "2026-01-01"}, "throughput": {"8": {
        "full": {"clips_per_s": {"median": 400.0}},
        "diffres-0.5": {"clips_per_s": {"median": 560.0}, "speedup_vs_full": {"median": 1.4}}}}}))
    args = ["--data", str(data), "--out", str(out), "--checkpoints", str(ckpts), "--seeds", "0",
            "--variants", "full", "diffres-0.5", "--epochs", "1", "--bench-report", str(bench)]
    compare_main(args)
    run = out / "runs" / "tones" / "diffres-0.5" / "seed0.json"
    first = run.stat().st_mtime_ns
    summary = json.loads((out / "results.json").read_text())
    rows = summary["datasets"]["tones"]
    assert set(rows) == {"full", "diffres-0.5"}
    assert rows["diffres-0.5"]["frames_out"] < rows["full"]["frames_out"]
    assert summary["speed"]["rows"]["diffres-0.5"] == {"clips_s": 560.0, "speedup_vs_full": 1.4}
    text = (out / "RESULTS.md").read_text()
    assert "diffres-0.5" in text and "vs full resolution" in text and "Not run yet" in text
    assert "| diffres-0.5 | 560 | 1.40x |" in text
    assert (out / "diffres_clips.png").stat().st_size > 10_000
    compare_main(args)  # resumes: nothing left to train
    assert run.stat().st_mtime_ns == first


def test_paired_verdict_uses_shared_seeds_only() -> None:
    # seed 2 exists only for the variant: it must not enter the comparison
    result, mean, std, ahead, n = paired({0: 0.80, 1: 0.90, 2: 0.10}, {0: 0.70, 1: 0.85})
    assert (result, ahead, n) == ("wins", 2, 2)
    assert abs(mean - 0.075) < 1e-9 and abs(std - 0.025) < 1e-9
    assert paired({0: 0.70, 1: 0.85}, {0: 0.80, 1: 0.90})[0] == "loses"
    assert paired({0: 0.803}, {0: 0.80})[0] == "ties"  # under 0.5 points
    assert paired({0: 0.90, 1: 0.70}, {0: 0.70, 1: 0.80})[0] == "ties"  # +20 and -10: within the std
