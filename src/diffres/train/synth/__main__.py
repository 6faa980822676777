"""python -m diffres.train.synth: build (or reuse) a cached folder of synthetic speech."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .build import SynthConfig, generate, keywords_from
from .nearmiss import near_misses, split_phrases
from .texts import TextBank, system_texts
from .voices import ENGINES, inventory, voice_split

DEFAULTS = SynthConfig(out="")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m diffres.train.synth",
        description="Offline synthetic speech for keyword training: negatives (other speech in many voices and "
                    "languages), near misses and synthetic positives per keyword, in simulated rooms and noise, "
                    "with held-out voices / languages for evaluation. Re-running with the same arguments reuses "
                    "the files; the same seed gives the same samples.")
    p.add_argument("--out", help="output folder (OUT/train, OUT/eval, OUT/manifest.json)")
    p.add_argument("--hours", type=float, default=DEFAULTS.hours, help="hours of training negatives")
    p.add_argument("--eval-hours", type=float, default=DEFAULTS.eval_hours, help="hours of evaluation negatives")
    p.add_argument("--keywords", nargs="*", default=[], help="keyword labels (smart_mirror is spoken 'smart mirror')")
    p.add_argument("--keywords-from", metavar="DIR", help="take keyword labels from DIR/<label>/ (skips _background_)")
    p.add_argument("--near-misses", type=int, default=DEFAULTS.near_misses, help="training near-miss clips per keyword")
    p.add_argument("--eval-near-misses", type=int, default=DEFAULTS.eval_near_misses)
    p.add_argument("--positives", type=int, default=DEFAULTS.positives, help="training synthetic positives per keyword")
    p.add_argument("--eval-positives", type=int, default=DEFAULTS.eval_positives)
    p.add_argument("--near-miss-phrases", type=int, default=DEFAULTS.near_miss_phrases,
                   help="distinct near-miss phrases per keyword (a quarter held out for eval)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--split-seed", type=int, default=DEFAULTS.split_seed,
                   help="which voices, languages and phrases are held out; keep it fixed")
    p.add_argument("--sample-rate", type=int, default=DEFAULTS.sample_rate)
    p.add_argument("--no-rooms", action="store_true", help="no simulated rooms (noise still applies)")
    p.add_argument("--room-share", type=float, default=DEFAULTS.room_share, help="share of clips in a room")
    p.add_argument("--room-pool", type=int, default=DEFAULTS.room_pool,
                   help="distinct random rooms per split (each simulated once per worker); 0: a new room per clip")
    p.add_argument("--noise-share", type=float, default=DEFAULTS.noise_share)
    p.add_argument("--snr-db", type=float, nargs=2, default=list(DEFAULTS.snr_db), metavar=("LOW", "HIGH"))
    p.add_argument("--english-share", type=float, default=DEFAULTS.english_share)
    p.add_argument("--run-share", type=float, default=DEFAULTS.run_share,
                   help="share of negatives that are 6-10 s runs of continuous speech")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--texts", help="a text bank (texts.json from an earlier OUT) instead of this machine's texts")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--list-voices", action="store_true", help="print the engines, voices and held-out split, and exit")
    p.add_argument("--show-near-misses", action="store_true", help="print each keyword's near misses, and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    keywords = list(args.keywords) + (keywords_from(args.keywords_from) if args.keywords_from else [])
    keywords = list(dict.fromkeys(keywords))
    if args.list_voices:
        inv = inventory(tuple(args.engines))
        print(json.dumps({**inv.describe(), "split": voice_split(inv, args.split_seed).describe()}, indent=1))
        return 0
    if args.show_near_misses:
        bank = TextBank.load(args.texts) if args.texts else system_texts()
        shown = {}
        for k in keywords:
            train, held = split_phrases(near_misses(k, bank.words, args.near_miss_phrases, args.seed), k, args.split_seed)
            shown[k] = {"train": train, "eval": held}
        print(json.dumps(shown, indent=1, ensure_ascii=False))
        return 0
    if not args.out:
        print("--out is required", file=sys.stderr)
        return 2
    cfg = SynthConfig(
        out=args.out, hours=args.hours, eval_hours=args.eval_hours, keywords=tuple(keywords),
        near_misses=args.near_misses, eval_near_misses=args.eval_near_misses, positives=args.positives,
        eval_positives=args.eval_positives, near_miss_phrases=args.near_miss_phrases, seed=args.seed,
        split_seed=args.split_seed, sample_rate=args.sample_rate, rooms=not args.no_rooms,
        room_share=args.room_share, room_pool=args.room_pool, noise_share=args.noise_share, snr_db=tuple(args.snr_db),
        english_share=args.english_share, run_share=args.run_share, engines=tuple(args.engines),
        texts=args.texts, workers=args.workers, quiet=args.quiet)
    generate(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
