"""DiffRes (Liu et al., "Learning Temporal Resolution in Spectrogram for Audio Classification").

Everything is vectorised over the batch and written with integer size arithmetic, so the module
exports to ONNX with symbolic lengths: no python loop over items, no .item(), no data-dependent
branch. Frame warping merges each input frame into at most two output frames: O(T * F) time
and memory, never a dense T x t matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffres.train.requires import torch  # the `train` extra, or an error naming it
import torch.nn.functional as F
from torch import nn

from .config import delta_fraction, frames_out
from .dsp import sinusoidal_position_code

EPS = 1e-8
SILENT_POWER = 1e-5  # mean mel power below which a frame counts as empty for the guide loss

Rows = torch.Tensor | int  # a per-row count [B] (int64), or one count for every row


def valid_frames(n_frames: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] bool: True on each row's first n_frames[b] frames (rows are padded at the end)."""
    return torch.arange(size, device=n_frames.device)[None] < n_frames[:, None]


def _column(count: Rows, like: torch.Tensor) -> torch.Tensor:
    """A per-row count as a float64 [B, 1] column (or [1, 1] for one count): broadcasts against [B, T]."""
    if isinstance(count, torch.Tensor):
        return count.to(torch.float64)[:, None]
    return torch.full((1, 1), float(count), dtype=torch.float64, device=like.device)


@dataclass
class Resampled:
    """What a resolution module hands the backbone (and the training loss).

    Rows are padded at the end: row b holds frames[b] real output frames (the rest are zero and
    stay out of the backbone), and its score is 0 beyond its input frames.
    """

    features: torch.Tensor  # [B, C, t_max, F]
    score: torch.Tensor  # [B, T] normalised importance (row b sums to frames[b], each <= 1)
    frames: torch.Tensor  # [B] int64: output frames of each row, t_b = T_b - floor(delta * T_b)
    guide_loss: torch.Tensor  # scalar
    activeness: torch.Tensor  # scalar


def normalize_scores(score: torch.Tensor, t: Rows, valid: torch.Tensor | None = None,
                     eps: float = 1e-4) -> torch.Tensor:
    """Rescale scores in (0, 1) [B, T] to sum to t (per row) with none above 1, in float64.

    As the paper: scale to sum t; where the max exceeds 1 divide by it; refill the deficit into the
    frames strictly between eps and 1 - eps, in proportion to their room (1 - s). Beyond the
    reference code, a second refill over every frame below 1 closes any deficit left (when too few
    frames sit strictly inside), so the sum is exactly t for every input. Frames outside `valid`
    (a row's padding) score 0, so each row is normalised as if it were alone.
    """
    # Boolean masks in `where`, not products with float masks: the same values in fewer graph nodes.
    s = score.double()
    real = s == s  # NaN scores (inf/NaN audio) would become index -2^63 downstream and crash the graph
    s = torch.where(real if valid is None else real & valid, s, 0.0).clamp(0.0, 1.0)
    target = _column(t, s)
    s = s / s.sum(1, keepdim=True).clamp_min(EPS) * target
    s = s / s.amax(1, keepdim=True).clamp_min(1.0)

    def refill(s: torch.Tensor, room_mask: torch.Tensor) -> torch.Tensor:
        deficit = (target - s.sum(1, keepdim=True)).clamp_min(0.0)
        room = torch.where(room_mask, 1.0 - s, 0.0)
        alpha = (deficit / room.sum(1, keepdim=True).clamp_min(EPS)).clamp(max=1.0)
        return s + alpha * room

    s = refill(s, (s > eps) & (s < 1.0 - eps))  # padding scores 0 <= eps: never inside
    s = refill(s, s < 1.0 if valid is None else (s < 1.0) & valid)
    return s.clamp(0.0, 1.0)


@dataclass
class Warp:
    """Where each input frame lands on the warped axis [0, t).

    Frame i covers [c_{i-1}, c_i) with c the cumulative score; output frame k covers [k, k+1).
    As every score is <= 1 a frame overlaps at most cells k and k+1.
    """

    score: torch.Tensor  # [B, T] float64
    end: torch.Tensor  # [B, T] float64, c_i
    first: torch.Tensor  # [B, T] int64: the output frame where each frame starts
    first_overlap: torch.Tensor  # [B, T] its overlap with that output frame
    spill: torch.Tensor  # [B, T] the rest, which spills into the next output frame
    frame_at: torch.Tensor  # [B, t + 1] int64: index of the frame containing position k (T past the end)
    t: int  # output frames of the longest row (the tensor size)


def warp_weights(score: torch.Tensor, t: Rows, t_max: int | None = None) -> Warp:
    """Warp of scores [B, T] onto t output frames (per row; t_max, the largest, sizes the tensors).

    A padded row's trailing zero scores end where its last real frame ends: they add nothing.
    """
    t_max = t if t_max is None else t_max
    s = score.double()
    end = torch.cumsum(s, dim=1)  # float64: positions stay exact over 10^5 frames
    last = _column(t, s)
    first = torch.minimum(torch.floor(end - s), last - 1.0).clamp_min(0.0)
    spill = (end - (first + 1.0)).clamp_min(0.0)
    # frame_at[k] = number of frames ending at or before k (frame i holds [c_{i-1}, c_i), so a frame
    # ending exactly at k does not hold k: the one after it, which may spill into k, does), by
    # counting frame ends per cell: the only scatter here is on [B, T] scalars, so sums below need
    # no scatter over features.
    ends_in = _frames_per_cell(torch.minimum(torch.ceil(end), last).long(), t_max + 1, s.dtype)
    frame_at = torch.cumsum(ends_in, 1).long()
    return Warp(s, end, first.long(), s - spill, spill, frame_at, t_max)


def _frames_per_cell(cell: torch.Tensor, cells: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, cells]: how many frames have each cell index k (cell [B, T] int64, in [0, cells))."""
    zeros = torch.zeros_like(cell[:, :1], dtype=dtype).expand(-1, cells).contiguous()
    return zeros.scatter_add(1, cell, torch.ones_like(cell, dtype=dtype))


def _gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[b, index[b, k]] for values [B, N, F], index [B, K] in [0, N): whole rows of F values.

    One Gather on the flattened [B * N, F] rows, not a GatherElements whose index is expanded over F
    (that materialises a [B, K, F] int64 index and reads element by element: several times slower)."""
    b, n, f = values.shape
    flat = index + torch.arange(b, device=index.device)[:, None] * n
    return values.reshape(b * n, f).index_select(0, flat.reshape(-1)).reshape(b, -1, f)


def _frame_rows(values: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """values[b, frame[b, k]] for frame in [0, T]; frame T (past the end) reads zeros. No padded copy."""
    n = values.shape[1]
    rows = _gather_rows(values, frame.clamp(max=n - 1))
    return rows * (frame < n)[..., None].to(values.dtype)


def frame_rows(values: torch.Tensor, warp: Warp) -> torch.Tensor:
    """[B, t + 1, F]: values of the frame containing each warped position k = 0..t (zeros past the
    end). The sum and the max both read them: a caller merging several channels gathers once."""
    return _frame_rows(values, warp.frame_at)


def warp_sum(values: torch.Tensor, warp: Warp, rows: torch.Tensor | None = None) -> torch.Tensor:
    """out[b, k] = sum_i overlap(i, k) * values[b, i] for values [B, T, F] (rows: frame_rows(values, warp)).

    The warped signal g (values[i] on frame i's interval) has integral G; each output frame is
    G(k + 1) - G(k). G(k) = Q[j - 1] + (k - c[j - 1]) * values[j] for the frame j containing k,
    with Q the running sum of score * values in float64. Gathers only: onnxruntime's
    ScatterND races on repeated indices across threads, and element-wise scatters are slow.
    """
    running = torch.cumsum((values * warp.score.to(values.dtype)[..., None]).double(), 1)  # Q
    j = warp.frame_at
    before = (j - 1).clamp_min(0)
    has_before = (j > 0).double()
    q = _gather_rows(running, before) * has_before[..., None]
    start = warp.end.gather(1, before) * has_before  # c[j - 1], 0 for the first frame
    k = torch.arange(warp.t + 1, device=values.device, dtype=torch.float64)[None]
    rows = frame_rows(values, warp) if rows is None else rows
    integral = q + (k - start)[..., None] * rows.double()
    return (integral[:, 1:] - integral[:, :-1]).to(values.dtype)


def warp_average(values: torch.Tensor, warp: Warp, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Each output frame is a convex combination of the input frames it merges."""
    k = torch.arange(warp.t, device=values.device, dtype=torch.float64)[None]
    covered = (torch.minimum(k + 1.0, warp.end[:, -1:]) - k).clamp(0.0, 1.0)  # 1 but at the very end
    return warp_sum(values, warp, rows) / covered.to(values.dtype).clamp_min(EPS)[..., None]


def warp_max(values: torch.Tensor, warp: Warp, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Max over the frames merged into each output frame, each scaled by the share of it that falls
    there: a frame grazing a cell counts little, and the result stays continuous in the scores.
    Needs values >= 0 (linear-domain mel).

    At most one frame spills into k from k - 1, the frame containing position k: that part is a
    gather (rows: frame_rows(values, warp), when at hand). A frame that starts exactly at k spills
    nothing into it, and its whole value is among the frames starting in k (_max_per_cell).
    """
    n = values.shape[1]
    score = warp.score.clamp_min(EPS)
    own = values * (warp.first_overlap / score).to(values.dtype)[..., None]  # in the cell it starts in
    spill_share = (warp.spill / score).to(values.dtype).gather(1, warp.frame_at[:, :-1].clamp(max=n - 1))
    spilled = (frame_rows(values, warp) if rows is None else rows)[:, :-1] * spill_share[..., None]  # 0 past the end
    return _max_per_cell(own, warp.first, spilled)


def _max_per_cell(own: torch.Tensor, first: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """max(onto[b, k], own[b, i] for each frame i with first[b, i] = k) for own [B, T, F] >= 0, onto
    [B, t, F]: frames starting in a cell are a contiguous run.

    An element-wise scatter does it (a serial loop in onnxruntime, so no race), but it is the
    slowest op here, so it takes frames in pairs (2p, 2p + 1): the odd one, maxed with the even one
    when both start in the same cell. An even frame left out starts in an earlier cell than its
    partner, so it is the last of its run: each cell's last frame is gathered (which also covers a
    trailing unpaired frame). Half the scattered elements, the same values.
    """
    pairs = own.shape[1] // 2
    even, odd = own[:, 0:2 * pairs:2], own[:, 1:2 * pairs:2]
    first_even, first_odd = first[:, 0:2 * pairs:2], first[:, 1:2 * pairs:2]
    pair = torch.maximum(odd, even * (first_even == first_odd)[..., None].to(own.dtype))
    out = onto.scatter_reduce(1, first_odd[..., None].expand(-1, -1, own.shape[2]), pair, "amax")
    count = _frames_per_cell(first, onto.shape[1], onto.dtype)
    last = (torch.cumsum(count, 1) - 1.0).clamp_min(0.0).long()  # a cell's last frame (where it has one)
    return torch.maximum(out, _gather_rows(own, last) * (count > 0)[..., None].to(own.dtype))


def guide_loss(score: torch.Tensor, empty: torch.Tensor, delta: float) -> torch.Tensor:
    """Mean score on empty frames, for items whose empty frames score above half the average.

    The average normalised score is (1 - delta); the paper stops pushing once empty frames are
    below half of it. Vectorised: items without empty frames contribute nothing. `empty` must
    leave out padding (it is no audio, and scores 0 by construction).
    """
    empty = empty.to(score.dtype)
    n_empty = empty.sum(1)
    mean_empty = (score * empty).sum(1) / n_empty.clamp_min(1.0)
    active = ((n_empty > 0) & (mean_empty > (1.0 - delta) * 0.5)).to(score.dtype)
    return (mean_empty * active).sum() / active.sum().clamp_min(1.0)


def activeness(score: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Std over each row's real frames of the normalised scores, batch mean: 0 means uniform pooling."""
    w = valid.to(score.dtype)
    n = w.sum(1).clamp_min(1.0)
    mean = (score * w).sum(1) / n
    return (((score - mean[:, None]) ** 2 * w).sum(1) / n).sqrt().mean()


def empty_frames(x_log: torch.Tensor, valid: torch.Tensor, masked: torch.Tensor | None,
                 threshold: float = SILENT_POWER) -> torch.Tensor:
    """[B, T] bool: real frames with (almost) no energy or masked by SpecAugment; never padding."""
    empty = x_log.exp().mean(-1) < threshold
    empty = empty if masked is None else empty | masked
    return empty & valid


class ResidualConv1d(nn.Module):
    def __init__(self, channels: int, dilation: int, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=dilation * (kernel_size // 2),
                              dilation=dilation, bias=False)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.norm(self.conv(x)))


class ImportanceEstimator(nn.Module):
    """Residual dilated 1-D convs over time, mel bins as channels: works for any n_mels.

    Hidden states are zeroed on padded frames after every layer, so a dilated conv reads zeros
    there, exactly the zero padding it reads at the end of a row run alone.
    """

    def __init__(self, n_mels: int, channels: int = 64, blocks: int = 3):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv1d(n_mels, channels, 1), nn.BatchNorm1d(channels), nn.ReLU())
        self.blocks = nn.ModuleList([ResidualConv1d(channels, 2 ** i) for i in range(blocks)])
        self.out = nn.Conv1d(channels, 1, 1)

    def forward(self, x_log: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[B, T, F] log-mel, [B, T] valid frames -> [B, T] scores in (0, 1)."""
        # The first layer is per frame (1 x 1): masking its output (`channels` wide, 16 shipped)
        # rather than its input (every mel bin) is a smaller where, and padding (even inf/NaN)
        # still stays out of the real frames.
        h = torch.where(valid[:, None], self.inp(x_log.transpose(1, 2)), 0.0)
        keep = valid[:, None].to(x_log.dtype)
        for block in self.blocks:
            h = block(h) * keep
        return torch.sigmoid(self.out(h))[:, 0]


class DiffRes(nn.Module):
    """Log-mel [B, T, F] -> [B, 3, t, F]: [avg, max, resolution encoding]."""

    channels = 3

    def __init__(self, n_mels: int, delta: float, channels: int = 64, blocks: int = 3):
        super().__init__()
        self.delta = delta
        self.fraction = delta_fraction(delta)
        self.estimator = ImportanceEstimator(n_mels, channels, blocks)

    def forward(self, x_log: torch.Tensor, n_frames: torch.Tensor,
                masked: torch.Tensor | None = None) -> Resampled:
        """x_log [B, T, F] padded at the end; n_frames [B] int64 real frames per row; masked [B, T]
        bool, SpecAugment time masks. Row b keeps t_b = T_b - floor(delta * T_b) frames."""
        valid = valid_frames(n_frames, x_log.shape[1])
        t = frames_out(n_frames, self.fraction)
        t_max = frames_out(x_log.shape[1], self.fraction)
        score = normalize_scores(self.estimator(x_log, valid), t, valid)  # float64: exact on long inputs
        warp = warp_weights(score, t, t_max)
        # Merge in the linear domain (exp, merge, log) as the paper does; padding merges as zeros.
        keep = valid[..., None]
        x_lin = torch.where(keep, x_log.exp(), 0.0)  # where, not a product: exp may overflow in padding
        # The code is finite: a product masks it (a broadcast where takes about twice as long).
        pos = sinusoidal_position_code(x_log.shape[1], x_log.shape[2], x_log)[None] * keep.to(x_log.dtype)
        # One warp for the average and position channels, and one gather for it and the max: columns
        # are independent, so the same values as separate calls with one running sum and one gather.
        n_mels = x_log.shape[2]
        merged = torch.cat([x_lin, pos], -1)
        rows = frame_rows(merged, warp)
        average, position = warp_average(merged, warp, rows).split(n_mels, -1)
        features = torch.stack([
            torch.log(average.clamp_min(0.0) + EPS),
            torch.log(warp_max(x_lin, warp, rows[..., :n_mels]).clamp_min(0.0) + EPS),
            position,
        ], dim=1)
        score32 = score.to(x_log.dtype)
        return Resampled(
            features=features,
            score=score32,
            frames=t,
            guide_loss=guide_loss(score32, empty_frames(x_log, valid, masked), self.delta),
            activeness=activeness(score32, valid),
        )
