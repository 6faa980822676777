"""Frontend, classifier variants, padding invariance and the training entry point."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from diffres.train.classifier import AudioClassifier
from diffres.train.config import FrontendConfig, ModelConfig
from diffres.train.data import scan_audio_folder, split_clips
from diffres.train.dsp import mel_filterbank
from diffres.train.frontend import MelSpectrogram
from diffres.train.trainer import main as train_main


@pytest.mark.parametrize("sr,n", [(16000, 48000), (8000, 4321), (22050, 7777), (16000, 1)])
def test_folded_dft_frontend_matches_torch_stft(sr: int, n: int) -> None:
    """Frames cut by reshaping and the folded DFT give torch.stft's power: even and odd windows
    (22050 Hz: 551 samples, hop 220 not dividing it), and a waveform shorter than one hop."""
    cfg = FrontendConfig(sample_rate=sr)
    wave = torch.randn(2, n)
    mel = MelSpectrogram(cfg)(wave)
    win, hop = cfg.win_length, cfg.hop_length
    padded = torch.nn.functional.pad(wave, (win // 2, win - win // 2))
    spec = torch.stft(padded, win, hop, window=torch.hann_window(win), center=False, return_complex=True)
    ref = spec.abs().pow(2).transpose(1, 2) @ torch.from_numpy(mel_filterbank(sr, win, cfg.n_mels, cfg.fmin, cfg.f_max))
    assert mel.shape == (2, n // hop + 1, cfg.n_mels)
    torch.testing.assert_close(mel, ref, rtol=1e-3, atol=1e-4)


VARIANTS = ["diffres", "full", "avgpool", "avgmaxpool", "changehop"]


def random_model(resolution: str, compression: str = "log", **kwargs) -> AudioClassifier:
    """Untrained, with BatchNorm statistics and biases away from (0, 1, 0): padding would show."""
    torch.manual_seed(0)
    front = FrontendConfig(sample_rate=8000, n_mels=32, compression=compression)  # type: ignore[arg-type]
    m = AudioClassifier(ModelConfig(frontend=front, resolution=resolution, n_classes=3, backbone_width=8,
                                    **kwargs)).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.5)
            mod.running_var.uniform_(0.5, 2)
            mod.bias.data.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("resolution", VARIANTS)
def test_every_variant_classifies_any_length(resolution: str) -> None:
    m = random_model(resolution, delta=0.75)
    for n in (1, 700, 8000, 23456):
        logits, importance, f_in, f_out, logmel = m(torch.randn(2, n))
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()
        assert f_in.dtype == torch.int64 and int(f_in[0]) == n // 80 + 1
        assert 1 <= int(f_out[0]) <= int(f_in[0])
        assert logmel.shape == (2, importance.shape[1], 32)


@pytest.mark.parametrize("resolution,compression", [(r, "log") for r in VARIANTS] + [("diffres", "pcen")])
@torch.no_grad()
def test_each_row_of_a_padded_batch_gives_what_it_gives_alone(resolution: str, compression: str) -> None:
    """lengths makes padding invisible: logits, frames, importance and log-mel per row as if run alone."""
    m = random_model(resolution, compression, delta=0.5, clip_norm=resolution == "avgpool")
    lengths = [1, 1600, 2417, 8000 * 3 + 5, 700]
    wave = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wave[i, :n] = 0.1 * torch.randn(n)
    wave[4, 700:] = 5.0  # garbage in the padding must not matter either
    logits, importance, f_in, f_out, logmel = m(wave, torch.tensor(lengths))
    for i, n in enumerate(lengths):
        a_logits, a_imp, a_in, a_out, a_mel = m(wave[i: i + 1, :n])
        frames = a_imp.shape[1]
        torch.testing.assert_close(logits[i], a_logits[0], atol=1e-5, rtol=1e-5)
        assert (int(f_in[i]), int(f_out[i])) == (int(a_in[0]), int(a_out[0]))
        torch.testing.assert_close(importance[i, :frames], a_imp[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(logmel[i, :frames], a_mel[0], atol=1e-5, rtol=1e-5)
        assert (importance[i, frames:] == 0).all() and (logmel[i, frames:] == 0).all()


@torch.no_grad()
def test_pcen_is_causal_level_blind_and_leaves_the_logmel_output_a_log_mel() -> None:
    """pcen divides each bin by its running mean: frames after t never change frame t, a steady sound 20 dB
    louder looks nearly the same to the classifier (alpha 0.98, not 1), and the graph's logmel output is unchanged."""
    m, ref = random_model("diffres", "pcen"), random_model("diffres")
    t = torch.arange(16000) / 8000
    tone = (0.05 * torch.sin(2 * math.pi * 440 * t) + 0.01 * torch.randn(16000))[None]
    mel = m.mel(tone)
    quiet, loud, head = m.compress(mel), m.compress(100 * mel), m.compress(mel[:, :80])
    torch.testing.assert_close(head, quiet[:, :80])
    assert float((loud - quiet).abs()[:, 20:].max()) < 0.1 * float(quiet[:, 20:].abs().max())  # log: +4.6 everywhere
    torch.testing.assert_close(m(tone)[4], ref(tone)[4])


def write_tone_folder(root: Path, sr: int = 8000) -> None:
    """Two classes of short tones with noise, speakers in the file names."""
    rng = np.random.default_rng(0)
    for label, freq in (("low", 300.0), ("high", 2000.0)):
        (root / label).mkdir(parents=True)
        for spk in ("ann", "bob", "cid"):
            for i in range(4):
                n = int(sr * rng.uniform(0.3, 0.6))
                t = np.arange(n) / sr
                wave = 0.3 * np.sin(2 * math.pi * freq * t) + 0.02 * rng.standard_normal(n)
                sf.write(root / label / f"{label}_{spk}_{i}.wav", wave.astype(np.float32), sr, subtype="PCM_16")


def test_speaker_names_give_a_speaker_held_out_split(tmp_path: Path) -> None:
    write_tone_folder(tmp_path)
    clips, labels = scan_audio_folder(tmp_path)
    assert labels == ["high", "low"] and len(clips) == 24
    train, val, held = split_clips(clips, 0.15, seed=0, holdout_speaker="bob")
    assert held == "bob" and {c.speaker for c in val} == {"bob"} and "bob" not in {c.speaker for c in train}


def test_one_epoch_training_smoke_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tone_folder(data)
    out = tmp_path / "run"
    train_main(["--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                "--n-mels", "32", "--width", "8", "--seed", "3"])
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val_accuracy", "per_class_accuracy", "delta", "mean_frames_in", "mean_frames_out", "epochs",
                "wall_time_s"):
        assert key in metrics
    assert metrics["sample_rate"] == 8000 and metrics["epochs"] == 1
    assert metrics["mean_frames_out"] == pytest.approx(metrics["mean_frames_in"] / 2, abs=1)
    assert set(metrics["per_class_accuracy"]) == {"high", "low"}
    ckpt = torch.load(out / "best.pt", weights_only=False)
    assert ckpt["labels"] == ["high", "low"] and ckpt["model_config"]["frontend"]["n_mels"] == 32


def test_background_training_adds_a_background_label(tmp_path: Path) -> None:
    """--background: an extra `_background_` label from generated noise, the clips' quiet parts and the
    named folders (a speaker held out for validation); min_score calibrated; the exporter records both."""
    from diffres.contract import ModelInfo
    from diffres.train.background import BACKGROUND_LABEL
    from diffres.train.checkpoint import load_checkpoint
    from diffres.train.onnx_export import model_metadata

    data, bg = tmp_path / "data", tmp_path / "bg"
    write_tone_folder(data)
    rng = np.random.default_rng(1)
    (bg / "speech").mkdir(parents=True)
    for spk in ("dan", "eve", "fay"):
        for i in range(3):
            noise = (0.1 * rng.standard_normal(4000)).astype(np.float32)
            sf.write(bg / "speech" / f"x_{spk}_{i}.wav", noise, 8000, subtype="PCM_16")
    out = tmp_path / "run"
    train_main(["--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8", "--n-mels", "32",
                "--width", "8", "--speed-perturb", "1.0", "--negatives", str(bg)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["high", "low", BACKGROUND_LABEL]
    assert set(metrics["per_class_accuracy"]) == {"high", "low", BACKGROUND_LABEL}
    held = metrics["background"]["background_holdout_speaker"]
    assert held in ("dan", "eve", "fay") and metrics["background"]["examples"]["folder_val"] == 3
    assert metrics["background"]["examples"]["noise_train"] > 0
    assert 0.0 <= metrics["background_false_accept"] <= 1.0 and 0.3 <= metrics["min_score"] <= 0.95
    model, ckpt = load_checkpoint(out / "best.pt")
    info = ModelInfo.from_metadata("m", model_metadata(model, ckpt))
    assert info.background_label == BACKGROUND_LABEL and info.background_index == 2
    assert info.min_score == metrics["min_score"]


def test_quiet_parts_and_mixing() -> None:
    from diffres.train.background import mix_at_snr, quiet_parts

    loud, quiet = torch.full((50, 4), 1.0), torch.full((40, 4), 1e-5)
    mel = torch.cat([quiet, loud, quiet[:10], loud])
    parts = quiet_parts(mel, min_frames=20)
    assert [p.shape[0] for p in parts] == [40]  # the 10-frame gap is too short
    noise = torch.full((7, 4), 2.0)
    mixed = mix_at_snr(loud, noise, snr_db=10.0)
    assert mixed.shape == loud.shape
    torch.testing.assert_close((mixed - loud).mean(), loud.mean() / 10)


def test_one_source_mixes_as_before_and_more_sum_several_at_their_own_levels() -> None:
    """--mix-sources 1 (the default) draws what a single crop always drew, so seeded runs repeat; 3 gives one
    crop as it is, or two or three summed, each scaled to unit mean power at up to 6 dB down."""
    from diffres.train.background import random_crops
    from diffres.train.trainer import mixture

    pool = [torch.full((30, 4), float(i + 1)) for i in range(5)]
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    torch.testing.assert_close(mixture(pool, 20, 1, a), random_crops(pool, 1, 20, b)[0])
    assert a.random() == b.random()
    powers = {round(float(mixture(pool, 20, 3, np.random.default_rng(s)).mean()), 2) for s in range(40)}
    sums = powers - {1.0, 2.0, 3.0, 4.0, 5.0}  # a single crop comes as it is
    assert sums and all(0.5 <= p <= 3.0 for p in sums)


@pytest.mark.parametrize("taps", [1, 2, 7, 160])
def test_running_mean_is_the_depthwise_convolution_it_replaces(taps: int) -> None:
    """Shifted adds give the causal exponential kernel's convolution over the series continued at its first
    frame, for any number of taps and for series shorter than the kernel."""
    from diffres.train.frontend import running_mean

    decay = 0.975
    kernel = decay ** torch.arange(taps - 1, -1, -1, dtype=torch.float64)
    for frames in (1, 5, 300):
        x = torch.rand(2, 3, frames, dtype=torch.float64)
        padded = torch.nn.functional.pad(x, (taps - 1, 0), mode="replicate")
        ref = torch.nn.functional.conv1d(padded, (kernel / kernel.sum()).expand(3, 1, taps), groups=3)
        torch.testing.assert_close(running_mean(x, decay, taps), ref)
