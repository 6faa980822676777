"""Train a DiffRes (or baseline) classifier on an audio folder.

    python -m model.train --data ../shared/data/keywords --out runs/keywords --delta 0.5

Mel spectra are computed once per clip by the model's own frontend and cached; each step crops or
pads them to the clip length, applies SpecAugment, and trains compression + DiffRes + backbone.
Validation runs every clip at its full length, unpadded, as the exported model will see it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import soxr
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .classifier import AudioClassifier
from .config import FrontendConfig, ModelConfig, TrainConfig
from .data import Clip, crop_or_pad, load_audio, native_sample_rate, scan_audio_folder, split_clips


def spec_augment(mel: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero random time and mel-bin stripes of mel power [B, T, F]; returns it and the time-masked frames."""
    b, t, f = mel.shape
    frames = torch.arange(t)[None]
    masked = torch.zeros(b, t, dtype=torch.bool)
    for _ in range(cfg.time_masks):
        width = (torch.rand(b, 1, generator=gen) * cfg.time_mask_ratio * t).long()
        start = (torch.rand(b, 1, generator=gen) * (t - width + 1)).long()
        masked |= (frames >= start) & (frames < start + width)
    bins = torch.arange(f)[None]
    freq = torch.zeros(b, f, dtype=torch.bool)
    for _ in range(cfg.freq_masks):
        width = (torch.rand(b, 1, generator=gen) * (cfg.freq_mask_bins + 1)).long()
        start = (torch.rand(b, 1, generator=gen) * (f - width + 1)).long()
        freq |= (bins >= start) & (bins < start + width)
    keep = ~(masked[:, :, None] | freq[:, None, :])
    return mel * keep, masked


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of clips of similar length (sorted with +-10% jitter), in random order.

    Each row keeps its own t = T_b - floor(delta * T_b) whatever the batch, so this is only about
    compute: similar lengths waste little on padding.
    """
    order = np.argsort(lengths * rng.uniform(0.9, 1.1, len(lengths)))
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def training_batch(mels: list[list[torch.Tensor]], idx: np.ndarray, max_frames: int, cfg: TrainConfig,
                   rng: np.random.Generator, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mel power [B, T, F] (T: the longest clip, at most max_frames), real frames per row, SpecAugment time mask.

    Each clip comes from a random speed-perturbed copy (mels[copy][clip]), at a random gain.
    """
    chosen = [mels[c][j] for c, j in zip(rng.integers(len(mels), size=len(idx)), idx)]
    n_frames = min(max_frames, max(m.shape[0] for m in chosen))
    mel, lengths = crop_or_pad(chosen, n_frames, rng, random_crop=True)
    gain = 10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db, (len(idx), 1, 1)) / 10)
    mel, masked = spec_augment(mel * torch.from_numpy(gain).float(), cfg, gen)
    return mel, lengths, masked


@torch.no_grad()
def compute_mels(model: AudioClassifier, clips: list[Clip], desc: str, speed: float = 1.0) -> list[torch.Tensor]:
    """Mel power per clip; speed != 1 plays the clip faster or slower (tempo and pitch), for augmentation."""
    sr = model.cfg.frontend.sample_rate
    mels = []
    for c in tqdm(clips, desc=desc, leave=False):
        audio = load_audio(c.path, sr)
        if speed != 1.0:
            audio = soxr.resample(audio, sr * speed, sr).astype(np.float32)
        mels.append(model.mel(torch.from_numpy(audio)[None])[0])
    return mels


@torch.no_grad()
def evaluate(model: AudioClassifier, mels: list[torch.Tensor], labels: list[int], n_classes: int,
             batch_size: int = 32) -> dict:
    """Accuracy on full-length clips (each row as if alone: padding changes nothing), frames, activeness."""
    model.eval()
    correct = torch.zeros(n_classes)
    total = torch.zeros(n_classes)
    frames_in = frames_out = 0
    active = []
    order = np.argsort([m.shape[0] for m in mels])
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        chosen = [mels[i] for i in idx]
        mel, lengths = crop_or_pad(chosen, max(m.shape[0] for m in chosen), np.random.default_rng(0), False)
        logits, r = model.classify(model.compress(mel), lengths)
        y = torch.tensor([labels[i] for i in idx])
        correct.index_add_(0, y, (logits.argmax(1) == y).float())
        total.index_add_(0, y, torch.ones(len(idx)))
        frames_in += int(lengths.sum())
        frames_out += int(r.frames.sum())
        active.append(float(r.activeness) * len(idx))
    per_class = (correct / total.clamp_min(1)).tolist()
    return {
        "accuracy": float(correct.sum() / total.sum()),
        "per_class_accuracy": per_class,
        "mean_frames_in": frames_in / len(mels),
        "mean_frames_out": frames_out / len(mels),
        "activeness": float(np.sum(active) / len(mels)),
    }


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(tcfg: TrainConfig, mcfg: ModelConfig) -> dict:
    torch.manual_seed(tcfg.seed)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    rng = np.random.default_rng(tcfg.seed)
    gen = torch.Generator().manual_seed(tcfg.seed)
    out = Path(tcfg.out)
    out.mkdir(parents=True, exist_ok=True)

    clips, labels = scan_audio_folder(tcfg.data)
    train_clips, val_clips, held = split_clips(clips, tcfg.val_fraction, tcfg.seed, tcfg.holdout_speaker)
    mcfg.n_classes = len(labels)
    model = AudioClassifier(mcfg)
    speeds = tuple(tcfg.speed_perturb) or (1.0,)
    train_mels = [compute_mels(model, train_clips, f"mel (train, speed {f})", f) for f in speeds]
    val_mels = compute_mels(model, val_clips, "mel (val)")
    plain = train_mels[speeds.index(1.0)] if 1.0 in speeds else train_mels[0]
    lengths = np.array([m.shape[0] for m in plain])
    hop = model.mel.hop
    if tcfg.clip_seconds is None:
        tcfg.clip_seconds = math.ceil(np.percentile(lengths, 95) * hop / mcfg.frontend.sample_rate * 10) / 10
    clip_frames = int(tcfg.clip_seconds * mcfg.frontend.sample_rate) // hop + 1
    y_train = torch.tensor([c.label for c in train_clips])

    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_clips) / tcfg.batch_size)
    total_steps = steps_per_epoch * tcfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, tcfg.warmup_epochs * steps_per_epoch, total_steps))

    best: dict = {"accuracy": -1.0}
    history = []
    start = time.time()
    bar = tqdm(range(tcfg.epochs), desc=f"train {out.name}")
    for epoch in bar:
        model.train()
        losses = []
        for idx in length_batches(lengths, tcfg.batch_size, rng):
            mel, n_frames, masked = training_batch(train_mels, idx, clip_frames, tcfg, rng, gen)
            logits, r = model.classify(model.compress(mel), n_frames, masked)
            loss = F.cross_entropy(logits, y_train[idx]) + tcfg.guide_loss_weight * r.guide_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        val = evaluate(model, val_mels, [c.label for c in val_clips], len(labels))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_accuracy": val["accuracy"]})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{val['accuracy']:.3f}", best=f"{max(best['accuracy'], val['accuracy']):.3f}")
        if val["accuracy"] >= best["accuracy"]:  # ties: the later, more annealed model
            best = {**val, "epoch": epoch + 1}
            torch.save({
                "model_config": mcfg.to_dict(),
                "train_config": asdict(tcfg),
                "labels": labels,
                "state_dict": model.state_dict(),
                "val_clips": [c.path for c in val_clips],
                "epoch": epoch + 1,
            }, out / "best.pt")

    metrics = {
        "data": tcfg.data,
        "labels": labels,
        "resolution": mcfg.resolution,
        "delta": mcfg.delta,
        "compression": mcfg.frontend.compression,
        "sample_rate": mcfg.frontend.sample_rate,
        "hop_ms": mcfg.frontend.hop_ms,
        "clip_seconds": tcfg.clip_seconds,
        "split": f"speaker {held!r} held out" if held else f"stratified {tcfg.val_fraction:.0%} val, seed {tcfg.seed}",
        "n_train": len(train_clips),
        "n_val": len(val_clips),
        "val_accuracy": best["accuracy"],
        "per_class_accuracy": dict(zip(labels, best["per_class_accuracy"])),
        "best_epoch": best["epoch"],
        "mean_frames_in": best["mean_frames_in"],
        "mean_frames_out": best["mean_frames_out"],
        "activeness": best["activeness"],
        "epochs": tcfg.epochs,
        "seed": tcfg.seed,
        "wall_time_s": round(time.time() - start, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, ModelConfig]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="audio folder: DIR/<label>/*.wav|flac")
    p.add_argument("--out", required=True, help="run folder for best.pt and metrics.json")
    p.add_argument("--resolution", default="diffres", choices=["diffres", "full", "avgpool", "avgmaxpool", "changehop"])
    p.add_argument("--delta", type=float, default=0.5, help="share of frames removed")
    p.add_argument("--frontend", default="log", choices=["log", "loglearn"], help="log compression kind")
    p.add_argument("--sample-rate", type=int, default=None, help="default: the data's own rate")
    p.add_argument("--hop-ms", type=float, default=10.0)
    p.add_argument("--win-ms", type=float, default=25.0)
    p.add_argument("--n-mels", type=int, default=64)
    p.add_argument("--width", type=int, default=32, help="backbone base width")
    p.add_argument("--clip-norm", action="store_true", help="subtract each clip's mean log-mel per bin")
    for f in fields(TrainConfig):
        if f.name in ("data", "out"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, tuple):
            p.add_argument(flag, type=float, nargs="*", default=f.default)
            continue
        kind = {"clip_seconds": float, "holdout_speaker": str}.get(f.name, type(f.default))
        p.add_argument(flag, type=kind, default=f.default)
    a = p.parse_args(argv)
    if not 0.0 <= a.delta < 1.0:
        p.error("--delta must be in [0, 1)")
    tcfg = TrainConfig(**{f.name: getattr(a, f.name) for f in fields(TrainConfig)})
    tcfg.speed_perturb = tuple(tcfg.speed_perturb)
    sr = a.sample_rate or native_sample_rate(scan_audio_folder(a.data)[0])
    front = FrontendConfig(sample_rate=sr, win_ms=a.win_ms, hop_ms=a.hop_ms, n_mels=a.n_mels, compression=a.frontend)
    return tcfg, ModelConfig(frontend=front, resolution=a.resolution, delta=a.delta, backbone_width=a.width,
                                     clip_norm=a.clip_norm)


def main(argv: list[str] | None = None) -> None:
    metrics = train(*parse_args(argv))
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
