"""Train a DiffRes (or baseline) classifier on an audio folder.

    diffres train --data ../shared/data/keywords --out runs/keywords --delta 0.5

Mel spectra are computed once per clip by the model's own frontend and cached; each step crops or
pads them to the clip length, applies SpecAugment, and trains compression + DiffRes + backbone.
Validation runs every clip at its full length, unpadded, as the exported model will see it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soxr
from diffres.train.requires import torch  # the `train` extra, or an error naming it
import torch.nn.functional as F
from tqdm import tqdm

from .classifier import AudioClassifier
from .config import FrontendConfig, ModelConfig, TrainConfig
from .background import (BACKGROUND_LABEL, MIN_QUIET_S, NOISE_CLIPS, Background, background_files,
                         generated_noise, joined_runs, mix_at_snr, quiet_parts, random_crops)
from .data import Clip, crop_or_pad, load_audio, native_sample_rate, scan_audio_folder, split_clips
from .diffres import SILENT_POWER


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
                   rng: np.random.Generator, gen: torch.Generator, mix_pool: list[torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mel power [B, T, F] (T: the longest clip, at most max_frames), real frames per row, SpecAugment time mask.

    Each clip comes from a random speed-perturbed copy (mels[copy][clip]), at a random gain, and
    (with a background pool) mixed with background material at a random SNR. The frames that were
    empty before mixing are returned as masked too: the guide loss must still push them down (the
    noise added there is not the target sound), or mixing starves it and the estimator goes flat.
    """
    chosen = [mels[c][j] for c, j in zip(rng.integers(len(mels), size=len(idx)), idx)]
    n_frames = min(max_frames, max(m.shape[0] for m in chosen))
    silent = [(m.mean(1, keepdim=True) < SILENT_POWER).float() for m in chosen]  # [T_i, 1], before mixing
    if mix_pool:
        lo, hi = cfg.mix_snr_db
        chosen = [mix_at_snr(m, random_crops(mix_pool, 1, m.shape[0], rng)[0], rng.uniform(lo, hi))
                  if rng.random() < cfg.mix_probability else m for m in chosen]
    # Crop the clip and its silence flags together (the same random offset).
    state = rng.bit_generator.state
    mel, lengths = crop_or_pad(chosen, n_frames, rng, random_crop=True)
    rng.bit_generator.state = state
    was_silent, _ = crop_or_pad(silent, n_frames, rng, random_crop=True)
    gain = 10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db, (len(idx), 1, 1)) / 10)
    mel, masked = spec_augment(mel * torch.from_numpy(gain).float(), cfg, gen)
    if mix_pool:
        masked = masked | (was_silent[..., 0] > 0.5)
    return mel, lengths, masked


@torch.no_grad()
def compute_mels(model: AudioClassifier, clips: list[Clip] | list[str], desc: str, speed: float = 1.0
                 ) -> list[torch.Tensor]:
    """Mel power per clip (or file path); speed != 1 plays it faster or slower (tempo and pitch)."""
    sr = model.cfg.frontend.sample_rate
    mels = []
    for c in tqdm(clips, desc=desc, leave=False):
        audio = load_audio(c if isinstance(c, str) else c.path, sr)
        if speed != 1.0:
            audio = soxr.resample(audio, sr * speed, sr).astype(np.float32)
        mels.append(model.mel(torch.from_numpy(audio)[None])[0])
    return mels


@torch.no_grad()
def build_background(model: AudioClassifier, tcfg: TrainConfig, train_mels: list[torch.Tensor],
                     val_mels: list[torch.Tensor], clip_frames: int) -> Background:
    """Generated silence and noise, the clips' quiet parts, the clips backwards and the background
    folders, as mel power (train/background.py says why each)."""
    sr, hop = model.cfg.frontend.sample_rate, model.mel.hop
    n_samples = (clip_frames - 1) * hop
    noise = [[model.mel(torch.from_numpy(x)[None])[0] for x in generated_noise(n, n_samples, seed)]
             for n, seed in ((NOISE_CLIPS, tcfg.seed), (NOISE_CLIPS // 4, tcfg.seed + 10_000))]
    min_quiet = round(MIN_QUIET_S * sr / hop)
    quiet = [[p for m in mels for p in quiet_parts(m, min_quiet)] for mels in (train_mels, val_mels)]
    backwards = [[m.flip(0) for m in mels] for mels in (train_mels, val_mels)]
    bg = Background(ambient=noise[0] + quiet[0], sounds=backwards[0],
                    counts={"noise_train": len(noise[0]), "noise_val": len(noise[1]),
                            "quiet_train": len(quiet[0]), "quiet_val": len(quiet[1]),
                            "backwards_train": len(backwards[0])})
    val_sounds = backwards[1]
    if tcfg.background:
        train_files, val_files, bg.holdout_speaker = background_files(
            list(tcfg.background), tcfg.seed, tcfg.background_holdout_speaker)
        bg.sounds += compute_mels(model, train_files, "mel (background)")
        val_sounds = val_sounds + compute_mels(model, val_files, "mel (background val)")
        bg.counts.update(folder_train=len(train_files), folder_val=len(val_files))
    # Validation: held-out material as it is, plus runs of it joined as long windows see it.
    rng = np.random.default_rng(tcfg.seed + 20_000)
    runs = joined_runs(val_sounds, len(val_sounds) // 4, clip_frames, rng)
    bg.val = noise[1] + quiet[1] + val_sounds + runs
    bg.counts.update(sounds_val=len(val_sounds), joined_val=len(runs))
    return bg


def choose_min_score(probs: torch.Tensor, y: torch.Tensor, background: int | None) -> float:
    """Default event threshold: the lowest whose background false-accept rate on validation is <= 1%.

    An event is a window whose best non-background label scores at least the threshold. Without a
    background label (or background validation data) there is nothing to calibrate against: 0.5.
    """
    if background is None or not (y == background).any():
        return 0.5
    keyword = probs.clone()
    keyword[:, background] = -1.0
    score, label = keyword.max(1)
    is_bg = y == background
    for threshold in np.arange(0.3, 0.96, 0.05):
        false_accept = (score[is_bg] >= threshold).float().mean().item()
        if false_accept <= 0.01:
            return round(float(threshold), 2)
    return 0.95


@torch.no_grad()
def evaluate(model: AudioClassifier, mels: list[torch.Tensor], labels: list[int], n_classes: int,
             background: int | None = None, batch_size: int = 32) -> dict:
    """Accuracy on full-length clips (each row as if alone: padding changes nothing), frames, activeness;
    with a background label, also the target-only accuracy, the background false-accept rate and min_score."""
    model.eval()
    correct = torch.zeros(n_classes)
    total = torch.zeros(n_classes)
    probs = torch.zeros(len(mels), n_classes)
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
        probs[torch.from_numpy(idx)] = logits.softmax(1)
        total.index_add_(0, y, torch.ones(len(idx)))
        frames_in += int(lengths.sum())
        frames_out += int(r.frames.sum())
        active.append(float(r.activeness) * len(idx))
    per_class = (correct / total.clamp_min(1)).tolist()
    targets = [i for i in range(n_classes) if i != background]
    y_all = torch.tensor(labels)
    extra = {}
    if background is not None:
        is_bg = y_all == background
        extra = {"balanced_accuracy": float(np.mean(per_class)),
                 "target_accuracy": float(correct[targets].sum() / total[targets].sum().clamp_min(1)),
                 "background_false_accept": float((probs[is_bg].argmax(1) != background).float().mean())
                 if is_bg.any() else 0.0}
    return {
        **extra,
        "min_score": choose_min_score(probs, y_all, background),
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
    background = len(labels) if tcfg.with_background else None  # the extra label goes last
    labels = labels + [BACKGROUND_LABEL] if background is not None else labels
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
    bg = build_background(model, tcfg, plain, val_mels, clip_frames) if background is not None else Background()
    # Background examples per epoch, in units of an average target label's clips.
    n_bg = round(tcfg.background_share * len(train_clips) / (len(labels) - 1)) if background is not None else 0
    val_mels, y_val = val_mels + bg.val, [c.label for c in val_clips] + [background] * len(bg.val)

    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    steps_per_epoch = math.ceil((len(train_clips) + n_bg) / tcfg.batch_size)
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
        crops = bg.examples(n_bg, clip_frames, rng) if n_bg else []
        epoch_mels = [copy + crops for copy in train_mels]
        y_epoch = torch.cat([y_train, torch.full((len(crops),), len(labels) - 1, dtype=torch.int64)])
        epoch_lengths = np.concatenate([lengths, [c.shape[0] for c in crops]]).astype(int)
        for idx in length_batches(epoch_lengths, tcfg.batch_size, rng):
            mel, n_frames, masked = training_batch(epoch_mels, idx, clip_frames, tcfg, rng, gen, bg.pool or None)
            logits, r = model.classify(model.compress(mel), n_frames, masked)
            loss = F.cross_entropy(logits, y_epoch[idx]) + tcfg.guide_loss_weight * r.guide_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        val = evaluate(model, val_mels, y_val, len(labels), background)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_accuracy": val["accuracy"],
                        "activeness": val["activeness"]})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{val['accuracy']:.3f}")
        # With a background label the validation set is mostly background: judge by balanced accuracy.
        val["selection"] = val.get("balanced_accuracy", val["accuracy"])
        if val["selection"] >= best.get("selection", -1.0):  # ties: the later, more annealed model
            best = {**val, "epoch": epoch + 1}
            torch.save({
                "model_config": mcfg.to_dict(),
                "train_config": asdict(tcfg),
                "labels": labels,
                "background_label": BACKGROUND_LABEL if background is not None else "",
                "min_score": val["min_score"],
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
        **{k: best[k] for k in ("balanced_accuracy", "target_accuracy", "background_false_accept") if k in best},
        "min_score": best["min_score"],
        "background": {"label": BACKGROUND_LABEL, "folders": list(tcfg.background), "examples": bg.counts,
                       "background_holdout_speaker": bg.holdout_speaker, "examples_per_epoch": n_bg,
                       "mix_probability": tcfg.mix_probability, "mix_snr_db": list(tcfg.mix_snr_db)}
        if background is not None else None,
        "val_clips": [c.path for c in val_clips],
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


def main(argv: list[str] | None = None) -> int:
    """`diffres train ...` (`python -m diffres.train.trainer`): train, then print the metrics."""
    from diffres.train.options import configs, train_parser

    metrics = train(*configs(train_parser().parse_args(argv)))
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
