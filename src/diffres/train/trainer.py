"""Train a DiffRes (or baseline) classifier on an audio folder.

    diffres train --data ../shared/data/keywords --out runs/keywords --delta 0.5

Mel spectra are computed once per clip (and per speed and room version) by the model's own frontend
and cached; each step takes windows of them (examples.py: the whole word for a keyword, parts of
words and background material for the background label), mixes in background at random SNRs,
applies SpecAugment, and trains compression + DiffRes + backbone. Validation runs every clip at its
full length, unpadded, as the exported model will see it; the best epoch by (balanced) accuracy is
kept. Then, as asked: rounds of hard-negative mining (mining.py), and the choice of min_score and of
the event rule on validation data (calibrate.py). Deterministic for a seed and a thread count.
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soxr
from diffres.train.requires import torch  # the `train` extra, or an error naming it
import torch.nn.functional as F
from tqdm import tqdm

from diffres.train import calibrate, mining
from diffres.train.synth.acoustics import RirBank

from .background import (BACKGROUND_LABEL, MIN_QUIET_S, NOISE_CLIPS, Background, NegativeFiles, generated_noise,
                         joined_runs, mix_at_snr, negative_files, quiet_parts, random_crops, tiled)
from .classifier import AudioClassifier
from .config import ModelConfig, TrainConfig
from .data import Clip, crop_or_pad, load_audio, scan_audio_folder, split_clips
from .diffres import SILENT_POWER
from .examples import Clips, partial_window, positive_window, with_context
from .frontend import PCENCompression
from diffres.contract import MAX_WORD_S, ModelInfo

from .onnx_export import model_info

ROOM_BANK = 64  # simulated rooms the reverberated versions are drawn from
LONG_WINDOWS = 3  # a long keyword window is up to this many windows: clips up to 3 windows run whole


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


def mixture(pool: list[torch.Tensor], frames: int, most: int, rng: np.random.Generator) -> torch.Tensor:
    """One background crop, or (most > 1) 1 to `most` crops at random levels within 6 dB, summed: babble."""
    count = 1 if most <= 1 else int(rng.integers(1, most + 1))
    crops = random_crops(pool, count, frames, rng)
    if count == 1:
        return crops[0]
    total = torch.zeros(frames, crops[0].shape[1])
    for crop in crops:
        source = tiled(crop, frames)
        total += source / source.mean().clamp_min(1e-12) * 10 ** (rng.uniform(-6, 0) / 10)
    return total


def training_batch(chosen: list[torch.Tensor], cfg: TrainConfig, rng: np.random.Generator, gen: torch.Generator,
                   mix_pool: list[torch.Tensor] | None = None, mask_silent: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mel power [B, T, F] of the examples' windows (T: the longest), real frames per row, SpecAugment time mask.

    Each window at a random gain and (with a background pool) mixed with background material at a
    random SNR. The frames that were empty before mixing are returned as masked too: the guide loss
    must still push them down (the noise added there is not the target sound), or mixing starves it
    and the estimator goes flat. `mask_silent` returns them without mixing too: for a compression (pcen)
    whose output no longer shows which frames were empty.
    """
    n_frames = max(m.shape[0] for m in chosen)
    silent = [(m.mean(1, keepdim=True) < SILENT_POWER).float() for m in chosen]  # [T_i, 1], before mixing
    if mix_pool:
        lo, hi = cfg.mix_snr_db
        chosen = [mix_at_snr(m, mixture(mix_pool, m.shape[0], cfg.mix_sources, rng), rng.uniform(lo, hi))
                  if rng.random() < cfg.mix_probability else m for m in chosen]
    mel, lengths = crop_or_pad(chosen, n_frames, rng, random_crop=False)
    was_silent, _ = crop_or_pad(silent, n_frames, rng, random_crop=False)
    gain = 10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db, (len(chosen), 1, 1)) / 10)
    mel, masked = spec_augment(mel * torch.from_numpy(gain).float(), cfg, gen)
    if mix_pool or mask_silent:
        masked = masked | (was_silent[..., 0] > 0.5)
    return mel, lengths, masked


@torch.no_grad()
def compute_mels(model: AudioClassifier, clips: list[Clip] | list[str], desc: str, speed: float = 1.0,
                 rooms: RirBank | None = None, rng: np.random.Generator | None = None) -> list[torch.Tensor]:
    """Mel power per clip (or file path); speed != 1 plays it faster or slower (tempo and pitch); with `rooms`,
    each clip is heard in one of them (drawn with `rng`)."""
    sr = model.cfg.frontend.sample_rate
    mels = []
    for c in tqdm(clips, desc=desc, leave=False):
        audio = load_audio(c if isinstance(c, str) else c.path, sr)
        if speed != 1.0:
            audio = soxr.resample(audio, sr * speed, sr).astype(np.float32)
        if rooms is not None and rng is not None:
            audio = rooms.reverberate(audio, rng)
        mels.append(model.mel(torch.from_numpy(audio)[None])[0])
    return mels


def clip_versions(model: AudioClassifier, clips: list[Clip], tcfg: TrainConfig) -> list[list[torch.Tensor]]:
    """Every training clip at each speed, then in `rooms` simulated rooms (each at a random speed)."""
    speeds = tuple(tcfg.speed_perturb) or (1.0,)
    versions = [compute_mels(model, clips, f"mel (train, speed {f})", f) for f in speeds]
    if tcfg.rooms:
        bank = RirBank(ROOM_BANK, model.cfg.frontend.sample_rate, seed=tcfg.seed)
        rng = np.random.default_rng(tcfg.seed + 30_000)
        for r in range(tcfg.rooms):
            versions.append(compute_mels(model, clips, f"mel (train, room {r + 1})", float(rng.choice(speeds)),
                                         bank, rng))
    return versions


@torch.no_grad()
def build_background(model: AudioClassifier, tcfg: TrainConfig, train_mels: list[torch.Tensor],
                     val_mels: list[torch.Tensor], clip_frames: int) -> tuple[Background, NegativeFiles]:
    """Generated silence and noise, the clips' quiet parts, the clips backwards and the negatives folders, as
    mel power (background.py says why each); and the negatives' files."""
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
    val_sounds, files = backwards[1], negative_files(list(tcfg.negatives), tcfg.seed, tcfg.background_holdout_speaker)
    if tcfg.negatives:
        bg.holdout_speaker = files.holdout_speaker
        bg.sounds += compute_mels(model, files.train, "mel (negatives)")
        val_sounds = val_sounds + compute_mels(model, files.val, "mel (negatives val)")
        bg.counts.update(folder_train=len(files.train), folder_val=len(files.val))
    # Validation: held-out material in windows up to twice the clip length, and runs of it joined.
    rng = np.random.default_rng(tcfg.seed + 20_000)
    runs = joined_runs(val_sounds, len(val_sounds) // 4, clip_frames, rng)
    windows = [m[start:start + 2 * clip_frames] for m in val_sounds
               for start in [int(rng.integers(0, max(1, m.shape[0] - 2 * clip_frames + 1)))]]
    bg.val = noise[1] + quiet[1] + windows + runs
    bg.counts.update(sounds_val=len(val_sounds), joined_val=len(runs))
    return bg, files


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
        "min_score": calibrate.choose_min_score(probs, y_all, background),
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


def seed_everything(seed: int, threads: int) -> tuple[np.random.Generator, torch.Generator]:
    """Every source of randomness from the seed, deterministic kernels, a fixed thread count: the same
    command gives the same model."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(threads)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


class Run:
    """One training run's model, data and progress, shared by the epochs and the mining rounds."""

    def __init__(self, tcfg: TrainConfig, mcfg: ModelConfig, labels: list[str], background: int | None,
                 clips: Clips, y_train: list[int], bg: Background, val: tuple[list[torch.Tensor], list[int]],
                 clip_frames: int, frames_per_s: float, val_paths: list[str]) -> None:
        self.tcfg, self.mcfg, self.labels, self.background = tcfg, mcfg, labels, background
        self.model = AudioClassifier(mcfg)
        self.clips, self.y_train, self.bg = clips, y_train, bg
        self.val_mels, self.y_val = val
        self.clip_frames, self.frames_per_s, self.val_paths = clip_frames, frames_per_s, val_paths
        self.rng, self.gen = np.random.default_rng(tcfg.seed), torch.Generator().manual_seed(tcfg.seed)
        # Background examples per epoch, in units of an average target label's clips.
        self.n_bg = round(tcfg.background_share * len(y_train) / (len(labels) - 1)) if background is not None else 0
        self.best: dict = {}
        self.history: list[dict] = []

    def examples(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One epoch's windows and labels: every clip's word once, parts of words and background material."""
        t, rng, frames = self.tcfg, self.rng, self.clip_frames
        mels, ys = [], []
        for i, y in enumerate(self.y_train):
            mel, span = self.clips.pick(i, rng)
            if self.bg.sounds and rng.random() < t.context_probability:
                mel, span = with_context(mel, span, self.bg.sounds, self.frames_per_s, rng)
            length = int(rng.integers(frames, LONG_WINDOWS * frames + 1)) if rng.random() < t.long_window_probability \
                else frames
            mels.append(positive_window(mel, span, length, rng))
            ys.append(y)
        if self.background is not None:
            for i in rng.integers(len(self.y_train), size=round(t.partial_share * len(self.y_train))):
                part = partial_window(*self.clips.pick(int(i), rng), frames, rng)
                if part is not None:
                    mels.append(part)
                    ys.append(self.background)
            crops = self.bg.examples(self.n_bg, frames, rng)
            mels += crops
            ys += [self.background] * len(crops)
        return mels, torch.tensor(ys)

    def fit(self, epochs: int, lr: float, warmup_epochs: int, stage: str) -> None:
        """`epochs` epochs from the model as it is; the best epoch of this stage is saved as best.pt."""
        t = self.tcfg
        opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=t.weight_decay)
        pcen = isinstance(self.model.compress, PCENCompression)
        steps_per_epoch = math.ceil((len(self.y_train) * (1 + t.partial_share) + self.n_bg) / t.batch_size)
        total = steps_per_epoch * epochs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup_epochs * steps_per_epoch, total))
        self.best = {}
        bar = tqdm(range(epochs), desc=f"{stage} {Path(t.out).name}")
        for epoch in bar:
            self.model.train()
            mels, ys = self.examples()
            losses = []
            for idx in length_batches(np.array([m.shape[0] for m in mels]), t.batch_size, self.rng):
                mel, n_frames, masked = training_batch([mels[i] for i in idx], t, self.rng, self.gen,
                                                       self.bg.pool or None, pcen)
                logits, r = self.model.classify(self.model.compress(mel), n_frames, masked)
                loss = F.cross_entropy(logits, ys[idx]) + t.guide_loss_weight * r.guide_loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                if pcen:
                    self.model.compress.project()
                sched.step()
                losses.append(loss.item())
            val = evaluate(self.model, self.val_mels, self.y_val, len(self.labels), self.background)
            self.history.append({"stage": stage, "epoch": epoch + 1, "loss": float(np.mean(losses)),
                                 "val_accuracy": val["accuracy"], "activeness": val["activeness"]})
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{val['accuracy']:.3f}")
            # With a background label the validation set is mostly background: judge by balanced accuracy.
            val["selection"] = val.get("balanced_accuracy", val["accuracy"])
            if val["selection"] >= self.best.get("selection", -1.0):  # ties: the later, more annealed model
                self.best = {**val, "epoch": epoch + 1, "stage": stage}
                self.save()

    def save(self, **extra: object) -> None:
        torch.save({"model_config": self.mcfg.to_dict(), "train_config": asdict(self.tcfg), "labels": self.labels,
                    "background_label": BACKGROUND_LABEL if self.background is not None else "",
                    "min_score": self.best["min_score"], "state_dict": self.model.state_dict(),
                    "val_clips": self.val_paths, "epoch": self.best["epoch"], **extra}, Path(self.tcfg.out) / "best.pt")

    def load_best(self) -> None:
        self.model.load_state_dict(torch.load(Path(self.tcfg.out) / "best.pt", weights_only=False)["state_dict"])

    def info(self, window_hop_s: float | None = None) -> ModelInfo:
        """The contract metadata the model would be exported with now."""
        return model_info(self.model, self.labels, self.tcfg.clip_seconds, name=Path(self.tcfg.out).name,
                          background_label=BACKGROUND_LABEL if self.background is not None else "",
                          min_score=self.best["min_score"], window_hop_s=window_hop_s)


def synthetic_positives(tcfg: TrainConfig, labels: list[str]) -> list[Clip]:
    """The synth folder's synthetic keyword clips (its training split) as training clips of their labels."""
    if not tcfg.synthetic_positives:
        return []
    from diffres.train.synth import synth_files

    return [Clip(str(f), i, None) for i, label in enumerate(labels)
            for f in synth_files(tcfg.synthetic_positives, "train", "positive", label)]


def train(tcfg: TrainConfig, mcfg: ModelConfig, command: str | None = None) -> dict:
    """Train, mine, calibrate; writes best.pt and metrics.json (with `command`, the line that ran it)."""
    seed_everything(tcfg.seed, tcfg.threads)
    out = Path(tcfg.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    clips, labels = scan_audio_folder(tcfg.data)
    train_clips, val_clips, held = split_clips(clips, tcfg.val_fraction, tcfg.seed, tcfg.holdout_speaker)
    synthetic = synthetic_positives(tcfg, labels)
    background = len(labels) if tcfg.with_background else None  # the extra label goes last
    labels = labels + [BACKGROUND_LABEL] if background is not None else labels
    mcfg.n_classes = len(labels)
    frontend = AudioClassifier(mcfg)  # computes the cached mel spectra; the run's model starts from the seed
    versions = clip_versions(frontend, train_clips + synthetic, tcfg)
    val_mels = compute_mels(frontend, val_clips, "mel (val)")
    speeds = tuple(tcfg.speed_perturb) or (1.0,)
    plain = versions[speeds.index(1.0)] if 1.0 in speeds else versions[0]
    hop, sr = frontend.mel.hop, mcfg.frontend.sample_rate
    if tcfg.clip_seconds is None:
        lengths = np.array([m.shape[0] for m in plain])
        tcfg.clip_seconds = math.ceil(np.percentile(lengths, 95) * hop / sr * 10) / 10
    clip_frames = int(tcfg.clip_seconds * sr) // hop + 1
    bg, negatives = (build_background(frontend, tcfg, plain[:len(train_clips)], val_mels, clip_frames)
                     if background is not None else (Background(), NegativeFiles()))
    torch.manual_seed(tcfg.seed)
    run = Run(tcfg, mcfg, labels, background, Clips.of(versions, sr / hop), [c.label for c in train_clips + synthetic],
              bg, (val_mels + bg.val, [c.label for c in val_clips] + [background] * len(bg.val)), clip_frames,
              sr / hop, [c.path for c in val_clips])
    run.fit(tcfg.epochs, tcfg.lr, tcfg.warmup_epochs, "train")
    mined = mine_rounds(run, negatives.train)
    run.load_best()
    rule, choice = choose_rule(run, val_clips, negatives)
    run.best["min_score"] = rule.min_score
    run.save(window_hop_s=rule.window_hop_s, event_windows=rule.event_windows, max_word_s=rule.max_word_s)
    metrics = report(run, held, len(train_clips), len(synthetic), len(val_clips), negatives, mined, choice)
    metrics["wall_time_s"] = round(time.time() - start, 1)
    if command:
        metrics["command"] = command
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def mine_rounds(run: Run, negatives: list[str]) -> list[dict]:
    """Rounds of hard-negative mining (mining.py), each followed by `mine_epochs` epochs trained on with them."""
    t, rounds = run.tcfg, []
    if run.background is None or not negatives:
        return rounds
    for r in range(t.mine_rounds):
        run.load_best()
        hop = min(t.event_hops) if t.event_hops else None
        hard, stats = mining.mine(run.model, run.info(hop), negatives, t.mine_hours, t.mine_probability, t.seed + r)
        run.bg.hard += hard
        rounds.append({"round": r + 1, **stats, "hard_total": len(run.bg.hard)})
        run.fit(t.mine_epochs, t.lr * 0.3, 0, f"mine {r + 1}")
    return rounds


def choose_rule(run: Run, val_clips: list[Clip], negatives: NegativeFiles) -> tuple[calibrate.EventRule, dict]:
    """The event rule chosen on validation recordings (calibrate.py), or half-window hops and one window."""
    if run.background is not None:
        clips = [(c.path, run.labels[c.label]) for c in val_clips]
        chosen = calibrate.rule_for_run(run.model, run.info(), run.tcfg, clips, negatives)
        if chosen is not None:
            return chosen
    return calibrate.EventRule(run.tcfg.clip_seconds / 2, 1, run.best["min_score"]), {}


def report(run: Run, held: str | None, n_train: int, n_synthetic: int, n_val: int, negatives: NegativeFiles,
           mined: list[dict], choice: dict) -> dict:
    """What metrics.json records of the run."""
    t, m, best = run.tcfg, run.mcfg, run.best
    return {
        "data": t.data, "labels": run.labels, "resolution": m.resolution, "delta": m.delta,
        "compression": m.frontend.compression, "sample_rate": m.frontend.sample_rate, "hop_ms": m.frontend.hop_ms,
        "clip_seconds": t.clip_seconds,
        "split": f"speaker {held!r} held out" if held else f"stratified {t.val_fraction:.0%} val, seed {t.seed}",
        "n_train": n_train, "n_synthetic_positives": n_synthetic, "n_val": n_val, "val_accuracy": best["accuracy"],
        **{k: best[k] for k in ("balanced_accuracy", "target_accuracy", "background_false_accept") if k in best},
        "min_score": best["min_score"],
        "event_rule": choice or {"chosen": {"window_hop_s": t.clip_seconds / 2, "event_windows": 1,
                                            "min_score": best["min_score"], "max_word_s": MAX_WORD_S}},
        "background": {"label": BACKGROUND_LABEL, "folders": list(t.negatives), "examples": run.bg.counts,
                       "background_holdout_speaker": negatives.holdout_speaker, "examples_per_epoch": run.n_bg,
                       "mix_probability": t.mix_probability, "mix_snr_db": list(t.mix_snr_db),
                       "mix_sources": t.mix_sources, "mining": mined}
        if run.background is not None else None,
        "val_clips": run.val_paths, "per_class_accuracy": dict(zip(run.labels, best["per_class_accuracy"])),
        "best_epoch": best["epoch"], "best_stage": best["stage"], "mean_frames_in": best["mean_frames_in"],
        "mean_frames_out": best["mean_frames_out"], "activeness": best["activeness"], "epochs": t.epochs,
        "seed": t.seed, "threads": t.threads, "parameters": sum(p.numel() for p in run.model.parameters()),
        "history": run.history,
    }


def main(argv: list[str] | None = None) -> int:
    """`diffres train ...` (`python -m diffres.train.trainer`): train, then print the metrics."""
    from diffres.train.options import configs, train_parser

    args = sys.argv[1:] if argv is None else argv
    metrics = train(*configs(train_parser().parse_args(args)), command=shlex.join(["diffres", "train", *args]))
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
