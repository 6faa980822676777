"""reports/EVENTS.md rendered from the event evaluation's JSON (so the tables cannot disagree with it)."""

from __future__ import annotations

from typing import Any


def _row(name: str, s: dict[str, Any]) -> str:
    fa = "-" if s.get("false_alarms_per_hour") is None else f"{s['false_alarms_per_hour']:.2f}"
    err = "-" if s["onset_abs_err_median_s"] is None else f"{s['onset_abs_err_median_s']:.2f} / {s['offset_abs_err_median_s']:.2f}"
    return (f"| {name} | {s['tp'] + s['fn']} | {s['tp']} | {s['fp']} | {s['fn']} | {s['precision']:.3f} | "
            f"{s['recall']:.3f} | **{s['f1']:.3f}** | {s['false_alarms']} in {s['background_s'] / 60:.0f} min | {fa} | {err} |")


def render(r: dict[str, Any], goal_f1: float, goal_fa: float) -> str:
    service = r["results"]["service"]
    overall = service["all"]
    met_f1, met_fa = overall["f1"] >= goal_f1, (overall["false_alarms_per_hour"] or 0.0) < goal_fa
    lines = [
        "# Event detection on long recordings", "",
        f"`{r['command']}` (wall time {r['wall_s']:.0f} s). Model `{r['model']}` {r['version']}, background label "
        f"`{r['background_label'] or '(none)'}`, default threshold min_score = {r['min_score']:g}.", "",
        f"Recordings: the model's {r['validation_clips']} validation keyword clips, each once per condition, trimmed to "
        f"their loud stretch (the reference event) and placed 1.5-6 s apart at random times in {r['keyword_audio_h']:.2f} h "
        f"of background, plus {r['background_audio_h']:.2f} h of background-only audio for false alarms. Backgrounds: "
        f"coloured noise, and speech of digits speaker `{r['speech_speaker']}` (held out of the model's background "
        f"training: `{r['speaker_held_out_in_training']}`); SNR = keyword RMS over the background's. A detection is "
        f"correct when its label matches and its onset is within {r['collar_s']:g} s of the reference onset.", "",
        f"**Goals: F1 >= {goal_f1:g}: {'met' if met_f1 else 'not met'} ({overall['f1']:.3f}); fewer than {goal_fa:g} "
        f"false alarms per hour: {'met' if met_fa else 'not met'} ({overall['false_alarms_per_hour']}).**", "",
        "## The service's events (default threshold; bounds from DiffRes importance, its log-mel energy when flat)", "",
        "| condition | keywords | TP | FP | FN | precision | recall | F1 | false alarms | per hour | median abs onset / offset error (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row(name, s) for name, s in service.items()], "",
        "## Onset and offset: does the importance curve help?", "",
        "Same windows, same threshold; only the event bounds differ: `window` keeps the merged windows' bounds, "
        "`importance` locates the salient stretch of the DiffRes importance curve inside them (or keeps the windows' "
        "bounds when the curve is flat), `energy` applies the same rule to the graph's log-mel energy (6 dB minimum "
        "contrast), `service` takes importance and falls back to energy. The reference bounds come from the clean "
        "clip's energy, which favours `energy`, most in quiet conditions.", "",
        "| method | F1 | median abs onset error (s) | median abs offset error (s) |", "|---|---|---|---|",
        *[f"| {m} | {res['all']['f1']:.3f} | {res['all']['onset_abs_err_median_s']} | {res['all']['offset_abs_err_median_s']} |"
          for m, res in r["results"].items()], "",
        "Per condition F1 (window / importance / energy / service): " + "; ".join(
            f"{c} " + " / ".join(f"{r['results'][m][c]['f1']:.3f}" for m in ("window", "importance", "energy", "service"))
            for c in service if c != "all") + ".", "",
        "## Threshold (min_score for every label)", "",
        "| min_score | precision | recall | F1 | false alarms per hour |", "|---|---|---|---|---|",
        *[f"| {t}{' (model default)' if float(t) == r['min_score'] else ''} | {s['precision']:.3f} | {s['recall']:.3f} | "
          f"{s['f1']:.3f} | {s['false_alarms_per_hour']} |" for t, s in r["threshold_sweep"].items()], "",
    ]
    if r.get("stream_latency"):
        lat = r["stream_latency"]
        lines += ["## Live streaming latency", "",
                  f"One {lat['seconds']:g} s recording ({lat['condition']}) streamed in real time in 100 ms chunks "
                  f"to `diffres serve` on 127.0.0.1; {lat['matched']} of {lat['reference']} keywords detected. "
                  "Seconds from the end of a keyword to the message (median [p25, p75], min-max):", ""]
        for key, name in (("keyword_end_to_event_s", "event (final bounds)"),
                          ("keyword_end_to_onset_s", "onset (first notice)")):
            s = lat.get(key)
            if s:
                lines.append(f"- {name}: {s['median']:.2f} s [{s['p25']:.2f}, {s['p75']:.2f}], "
                             f"{s['min']:.2f}-{s['max']:.2f} s (n = {s['n']})")
        lines.append("")
    return "\n".join(lines)
