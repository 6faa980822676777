"""What DiffRes hands the classifier, recomputed from the graph's outputs for display (numpy, no torch).

The graph outputs the log-mel and the importance: per input frame, each at most 1, summing to t,
the frames the backbone sees. Input frame i covers [c_{i-1}, c_i) of the output axis (c is the
cumulative importance); output frame k covers [k, k+1). Output frame k is therefore the
overlap-weighted mean of the input frames it merges, taken on mel power and logged again: the
first feature channel of the model's warp (train/diffres.py, warp_average; a test holds the two
together). The backbone also gets a max-merged channel and a position code, not shown here.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8  # the model's floor under the log


def _cumulative(importance: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores (float64), c with c[0] = 0 and c[i + 1] = end of frame i, and t = round(sum)."""
    scores = np.asarray(importance, dtype=np.float64)
    ends = np.concatenate([[0.0], np.cumsum(scores)])
    return scores, ends, int(round(ends[-1]))


def _containing(ends: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """Index of the input frame whose interval holds each output-axis position (the last one at the end)."""
    return np.clip(np.searchsorted(ends, positions, side="right") - 1, 0, n - 1)


def boundaries(importance: np.ndarray) -> np.ndarray:
    """Where output frames 0..t start on the input-frame axis (fractional frames), plus where the last ends."""
    scores, ends, t = _cumulative(importance)
    k = np.arange(t + 1, dtype=np.float64)
    i = _containing(ends, k, len(scores))
    return np.clip(i + (k - ends[i]) / np.maximum(scores[i], EPS), 0.0, float(len(scores)))


def merged_logmel(logmel: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """[t, n_mels]: each output frame the overlap-weighted mean of its input frames' power, logged."""
    scores, ends, t = _cumulative(importance)
    power = np.exp(np.asarray(logmel, dtype=np.float64))
    # G(y) = integral of the warped signal up to output position y; output frame k = G(k + 1) - G(k).
    running = np.concatenate([np.zeros((1, power.shape[1])), np.cumsum(power * scores[:, None], axis=0)])
    k = np.arange(t + 1, dtype=np.float64)
    i = _containing(ends, k, len(scores))
    integral = running[i] + (k - ends[i])[:, None] * power[i]
    covered = np.clip(np.minimum(k[:-1] + 1.0, ends[-1]) - k[:-1], 0.0, 1.0)  # 1, but at the very end
    return np.log(np.maximum(integral[1:] - integral[:-1], 0.0) / np.maximum(covered, EPS)[:, None] + EPS)
