"""reports/EVENTS.md and reports/events_det.png, drawn from the event evaluation's JSON (so they cannot disagree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONDITION_TEXT = {
    "noise": "coloured noise (white, pink or brown)", "digits": "real speech of the digits speaker `{digits_speaker}`, "
    "held out of the model's training", "tts": "synthetic speech of held-out voices and languages (the synth "
    "folder's evaluation split)", "near-miss": "near-miss phrases of held-out phrasings (the same split)"}


def _pair(report: dict[str, Any], path: list[str], fmt: str = "{:.3f}") -> str:
    """The model's figure, with the baseline's beside it when there is one."""
    def get(key: str) -> Any:
        value: Any = report[key]
        for part in path:
            value = value[part]
        return value

    now = "-" if get("model") is None else fmt.format(get("model"))
    if "baseline" not in report:
        return now
    before = get("baseline")
    return f"{now} (was {'-' if before is None else fmt.format(before)})"


STRICT = {"false_alarms_per_hour"}  # goals stated as "fewer than"


def _goal(report: dict[str, Any], name: str, value: float | None, below: bool) -> str:
    goal = report["goals"][name]
    if value is None:
        return "no figure"
    strict = name in STRICT
    met = (value < goal if strict else value <= goal) if below else value >= goal
    sign = ("<" if strict else "<=") if below else ">="
    return f"{'met' if met else 'not met'} ({value:g}; goal {sign} {goal:g})"


def _row(name: str, s: dict[str, Any]) -> str:
    err = "-" if s["onset_abs_err_median_s"] is None else \
        f"{s['onset_abs_err_median_s']:.2f} / {s['offset_abs_err_median_s']:.2f}"
    return (f"| {name} | {s['tp'] + s['fn']} | {s['tp']} | {s['fp']} | {s['fn']} | {s['precision']:.3f} | "
            f"{s['recall']:.3f} | **{s['f1']:.3f}** | {err} |")


def _latency(report: dict[str, Any], key: str) -> float | None:
    found = report[key].get("stream_latency", {}).get("keyword_end_to_event_s")
    return None if not found else found["median"]


def render(r: dict[str, Any]) -> str:
    m = r["model"]
    head, service = m["headline"], m["results"]["service"]
    stream = m.get("stream_latency") or {}
    onset = (stream.get("keyword_end_to_onset_s") or {}).get("median")
    lines = [
        "# Event detection on long recordings", "",
        f"`{r['command']}` (wall time {r['wall_s']:.0f} s). Model `{m['model']}` {m['version']}: windows of "
        f"{m['window_s']:g} s every {m['window_hop_s']:g} s, a label must hold {m['event_windows']} window(s), "
        f"min_score {m['min_score']:g}, onsets searched at most {m['max_word_s']:g} s before "
        "an event's end." + (f" Baseline: `{r['baseline']['model']}` {r['baseline']['version']} "
                                            f"(windows of {r['baseline']['window_s']:g} s every "
                                            f"{r['baseline']['window_hop_s']:g} s, {r['baseline']['event_windows']} "
                                            f"window(s), min_score {r['baseline']['min_score']:g}, onset search "
                                            f"{r['baseline']['max_word_s']:g} s); its figures are "
                                            "the ones after \"was\"." if "baseline" in r else ""), "",
        f"Recordings: the model's validation keyword clips ({r['keywords']} per condition), trimmed to their loud "
        f"stretch (the reference event), placed 1.5-6 s apart in {r['keyword_audio_h']:.2f} h of audio over: "
        + "; ".join(f"`{k}`: {v.format(**r)}" for k, v in CONDITION_TEXT.items()) + ". `adjacent-*`: an utterance "
        "of that speech 0-1 s before and after each keyword, at its level. Keyword-free recordings of each source "
        f"({r['background_audio_h']:.2f} h in all) count false alarms. A detection is correct when its label matches "
        f"and its onset is within {r['collar_s']:g} s of the reference onset.", "",
        "## Goals", "",
        f"- F1 overall: {_goal(r, 'f1', head['f1'], False)}; in speech: {_goal(r, 'speech_f1', head['speech_f1'], False)}",
        f"- False alarms per hour of held-out speech (digits and synthetic voices): "
        f"{_goal(r, 'false_alarms_per_hour', head['false_alarms_per_hour'], True)}",
        f"- Median onset error with speech next to the keyword: "
        f"{_goal(r, 'adjacent_onset_s', head['adjacent_onset_s'], True)}",
        f"- Stream, final event after the keyword's end (median): "
        f"{_goal(r, 'stream_event_s', _latency(r, 'model'), True)}; onset notice: "
        f"{_goal(r, 'stream_onset_s', onset, True)}", "",
        "## Headline figures" + (" (before: the baseline)" if "baseline" in r else ""), "",
        "| figure | value |", "|---|---|",
        f"| F1 overall | {_pair(r, ['headline', 'f1'])} |",
        f"| F1 in speech | {_pair(r, ['headline', 'speech_f1'])} |",
        f"| false alarms per hour, held-out speech | {_pair(r, ['headline', 'false_alarms_per_hour'], '{:g}')} |",
        *[f"| false alarms per hour, {s} | {_pair(r, ['headline', 'false_alarms_per_hour_by_source', s], '{:g}')} |"
          for s in head["false_alarms_per_hour_by_source"]],
        f"| median onset / offset error with adjacent speech (s) | {_pair(r, ['headline', 'adjacent_onset_s'], '{:g}')}"
        f" / {_pair(r, ['headline', 'adjacent_offset_s'], '{:g}')} |",
        f"| stream: keyword end to final event, median (s) | "
        f"{_pair(r, ['stream_latency', 'keyword_end_to_event_s', 'median'], '{:.2f}') if stream else '-'} |",
        f"| stream: keyword end to onset notice, median (s) | "
        f"{_pair(r, ['stream_latency', 'keyword_end_to_onset_s', 'median'], '{:.2f}') if stream else '-'} |", "",
        "## Per condition (the service's events at the model's threshold)", "",
        "| condition | keywords | TP | FP | FN | precision | recall | F1 | median abs onset / offset error (s) |",
        "|---|---|---|---|---|---|---|---|---|",
        *[_row(name, s) for name, s in service.items() if not name.startswith("alone") and name != "all"],
        _row("all", service["all"]), "",
        "| keyword-free source | false alarms | audio (min) | per hour |", "|---|---|---|---|",
        *[f"| {name.removeprefix('alone: ')} | {s['false_alarms']} | {s['background_s'] / 60:.0f} | "
          f"{s['false_alarms_per_hour']} |" for name, s in service.items() if name.startswith("alone")], "",
        "## Onset and offset: which curve places an event", "",
        "Same windows, same threshold; only what locates the bounds differs (diffres/events.py): `window` uses "
        "neither curve (the end half a hop before the first supporting window's end, the onset at most max_word_s "
        "before it), `importance` the DiffRes importance curve alone, `energy` the log-mel energy alone, `service` "
        "importance with energy when importance is flat. The reference bounds come from the clean clip's energy.", "",
        "| method | F1 | median abs onset error (s) | median abs offset error (s) |", "|---|---|---|---|",
        *[f"| {name} | {res['all']['f1']:.3f} | {res['all']['onset_abs_err_median_s']} | "
          f"{res['all']['offset_abs_err_median_s']} |" for name, res in m["results"].items()], "",
        "## Threshold (min_score for every label): the DET curve's points", "",
        "![False alarms per hour against missed keywords](events_det.png)", "",
        "| min_score | F1 | F1 in speech | missed in speech | false alarms per hour, held-out speech |",
        "|---|---|---|---|---|",
        *[f"| {t}{' (model default)' if float(t) == m['min_score'] else ''} | {s['f1']:.3f} | {s['speech_f1']:.3f} | "
          f"{s['miss_rate']:.3f} | {s['false_alarms_per_hour']} |" for t, s in m["threshold_sweep"].items()], "",
    ]
    if stream:
        lines += ["## Live streaming latency", "",
                  f"One {stream['seconds']:g} s recording ({stream['condition']}) streamed in real time in 100 ms "
                  f"chunks to `diffres serve` on 127.0.0.1; {stream['matched']} of {stream['reference']} keywords "
                  "detected. Seconds from the end of a keyword to the message (median [p25, p75], min-max):", ""]
        for key, name in (("keyword_end_to_event_s", "event (final)"), ("keyword_end_to_onset_s", "onset (notice)")):
            s = stream.get(key)
            if s:
                lines.append(f"- {name}: {s['median']:.2f} s [{s['p25']:.2f}, {s['p75']:.2f}], "
                             f"{s['min']:.2f}-{s['max']:.2f} s (n = {s['n']})")
        lines.append("")
    return "\n".join(lines)


def det_picture(r: dict[str, Any], path: Path) -> None:
    """False alarms per hour of held-out speech (log) against the share of keywords missed in speech."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for key in ("model", "baseline"):
        if key not in r:
            continue
        sweep = r[key]["threshold_sweep"]
        points = sorted((max(s["false_alarms_per_hour"] or 0.0, 0.1), s["miss_rate"], t) for t, s in sweep.items())
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                label=f"{r[key]['model']} {r[key]['version']}" + (" (baseline)" if key == "baseline" else ""))
        default = sweep[f"{r[key]['min_score']:g}"]
        ax.annotate(f"min_score {r[key]['min_score']:g}", (max(default["false_alarms_per_hour"] or 0.0, 0.1),
                                                           default["miss_rate"]), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    ax.axvline(r["goals"]["false_alarms_per_hour"], color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour of held-out speech (0 drawn at 0.1)")
    ax.set_ylabel("keywords missed in speech")
    ax.set_title("Events: misses against false alarms, by min_score")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
