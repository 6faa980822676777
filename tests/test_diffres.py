"""DiffRes maths: frame counts, score normalisation, warp weights, masking, guide loss."""

import math
from fractions import Fraction

import pytest
import torch

from diffres.train.config import delta_fraction, frames_out
from diffres.train.diffres import (
    EPS,
    DiffRes,
    guide_loss,
    normalize_scores,
    valid_frames,
    warp_average,
    warp_max,
    warp_sum,
    warp_weights,
)
from diffres.train.dsp import sinusoidal_position_code


def dense_overlaps(score: torch.Tensor, t: int) -> torch.Tensor:
    """Reference [B, T, t] overlap of frame i's interval with output frame k (tests only)."""
    end = torch.cumsum(score.double(), 1)
    start = end - score.double()
    k = torch.arange(t, dtype=torch.float64)
    return (torch.minimum(end[..., None], k + 1) - torch.maximum(start[..., None], k)).clamp_min(0)


@pytest.mark.parametrize("delta", [0.25, 0.5, 0.75, 0.3, 0.9, 0.0])
def test_frames_out_is_integer_formula(delta: float) -> None:
    frac = delta_fraction(delta)
    for n in list(range(1, 400)) + [60001, 360001]:
        assert frames_out(n, frac) == n - int(Fraction(n) * frac)  # exact floor(delta * T)
        assert 1 <= frames_out(n, frac) <= n


def raw_scores(kind: str, b: int = 4, n: int = 301) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    if kind == "uniform":
        return torch.full((b, n), 0.5)
    if kind == "peaky":  # a few frames dominate: forces the max > 1 branch and the refill
        s = torch.full((b, n), 1e-3)
        s[:, ::50] = 0.999
        return s
    if kind == "tiny":  # nearly all frames below eps: the paper's refill alone cannot reach t
        s = torch.full((b, n), 1e-7)
        s[:, :3] = 0.9
        return s
    return torch.rand(b, n, generator=gen) ** 4


@pytest.mark.parametrize("kind", ["random", "uniform", "peaky", "tiny"])
@pytest.mark.parametrize("t", [1, 76, 151, 226, 301])
def test_normalised_scores_in_unit_interval_and_sum_to_t(kind: str, t: int) -> None:
    s = normalize_scores(raw_scores(kind), t)
    assert s.min() >= 0 and s.max() <= 1
    torch.testing.assert_close(s.sum(1), torch.full((s.shape[0],), float(t), dtype=s.dtype), atol=1e-6, rtol=0)


def test_normalisation_is_per_item() -> None:
    """Vectorised over the batch: each item normalised as if alone."""
    raw = raw_scores("random")
    batch = normalize_scores(raw, 100)
    for i in range(raw.shape[0]):
        torch.testing.assert_close(batch[i], normalize_scores(raw[i: i + 1], 100)[0])


@pytest.mark.parametrize("kind", ["random", "peaky", "tiny"])
def test_warp_weights_conserve_scores_and_fill_output_frames(kind: str) -> None:
    t = 120
    s = normalize_scores(raw_scores(kind), t)
    warp = warp_weights(s, t)
    # a frame's overlap with the output frame it starts in is at most its score, the rest spills
    assert (warp.first_overlap <= s + 1e-12).all() and (warp.first_overlap >= 0).all()
    assert (warp.first >= 0).all() and (warp.first < t).all()
    dense = dense_overlaps(s, t)
    torch.testing.assert_close(dense.sum(2), s)  # each frame's weights sum to its score
    assert ((dense > 1e-12).sum(2) <= 2).all()  # over at most two output frames
    # and every output frame's weights sum to 1
    torch.testing.assert_close(dense.sum(1), torch.ones(s.shape[0], t, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["random", "uniform", "peaky", "tiny"])
@pytest.mark.parametrize("n", [300, 301, 2, 1])  # warp_max pairs frames: even and odd lengths
def test_warp_average_and_max_match_dense_reference(kind: str, n: int) -> None:
    t = max(1, (90 * n) // 301)
    kept = torch.tensor([max(1, n // 2), n, n, n])  # row 0 padded: its last frames score 0
    t_rows = torch.minimum(kept, torch.tensor(t))
    s = normalize_scores(raw_scores(kind, n=n), t_rows, valid_frames(kept, n))
    x = torch.rand(s.shape[0], s.shape[1], 7) * 100
    dense = dense_overlaps(s, t).float()
    warp = warp_weights(s, t_rows, t)
    torch.testing.assert_close(warp_sum(x, warp), torch.einsum("btk,btf->bkf", dense, x), rtol=1e-5, atol=1e-4)
    avg = warp_average(x, warp)
    # convex combination: inside the range of the merged frames
    assert (avg <= x.amax(1, keepdim=True) + 1e-3).all() and (avg >= x.amin(1, keepdim=True) - 1e-3).all()
    share = dense / s.float().clamp_min(1e-8)[..., None]
    torch.testing.assert_close(warp_max(x, warp), (x[:, :, None] * share[..., None]).amax(1))


def test_warp_max_keeps_a_frame_whose_start_rounds_below_its_cell() -> None:
    """Frame 0 ends exactly on 1; frame 1's start, computed as end - score, rounds just below 1. Frame
    1 still lies wholly in output frame 1, and its value must reach it."""
    s = torch.tensor([[1.0, 0.585034013605442, 0.414965986394558]], dtype=torch.float64)
    assert (s.cumsum(1) - s)[0, 1] < 1.0 and s.sum() == 2.0
    x = torch.tensor([[[1.0], [5.0], [2.0]]])
    assert warp_max(x, warp_weights(s, 2))[0, :, 0].tolist() == pytest.approx([1.0, 5.0])


def full_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)


def test_diffres_output_shape_and_channels() -> None:
    for n_mels in (40, 23):  # any n_mels, not just the reference code's 40/64/128
        m = DiffRes(n_mels=n_mels, delta=0.75).eval()
        x = torch.randn(3, 173, n_mels)
        r = m(x, full_rows(x))
        assert r.features.shape == (3, 3, frames_out(173, Fraction(3, 4)), n_mels)
        assert torch.isfinite(r.features).all()
        assert r.frames.tolist() == [r.features.shape[2]] * 3
        torch.testing.assert_close(r.score.sum(1), torch.full((3,), float(r.features.shape[2])), atol=1e-4, rtol=0)


def test_position_code_matches_direct_sin_cos() -> None:
    """The angle-addition code equals sin / cos of every frame's own angle, past the 64-frame table too."""
    for n, dim in ((1, 64), (65, 64), (300, 33), (40_000, 64)):
        i = torch.arange(n, dtype=torch.float64)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
        direct = torch.stack([torch.sin(i * freq), torch.cos(i * freq)], -1).flatten(1)[:, :dim].float()
        torch.testing.assert_close(sinusoidal_position_code(n, dim, torch.zeros(1)), direct, atol=1e-6, rtol=0)


def test_diffres_channels_are_the_separate_warps() -> None:
    """DiffRes warps average and position code in one call and shares the max's gather: each channel
    must still be exactly what its own warp gives."""
    torch.manual_seed(0)
    m = DiffRes(n_mels=16, delta=0.75).eval()
    x = torch.randn(2, 130, 16)
    n = torch.tensor([130, 77])
    r = m(x, n)
    valid = valid_frames(n, 130)
    warp = warp_weights(normalize_scores(m.estimator(x, valid), r.frames, valid), r.frames, r.features.shape[2])
    x_lin = torch.where(valid[..., None], x.exp(), 0.0)
    pos = torch.where(valid[..., None], sinusoidal_position_code(130, 16, x)[None], 0.0)
    separate = [torch.log(warp_average(x_lin, warp) + EPS), torch.log(warp_max(x_lin, warp) + EPS),
                warp_average(pos, warp)]
    for channel, expected in enumerate(separate):
        torch.testing.assert_close(r.features[:, channel], expected, atol=1e-6, rtol=1e-6)


def test_each_padded_row_is_normalised_to_its_own_t() -> None:
    """Row b keeps t_b = T_b - floor(delta * T_b) of its own frames; padding scores exactly 0."""
    torch.manual_seed(0)
    m = DiffRes(n_mels=16, delta=0.5).eval()
    x = torch.randn(3, 200, 16)
    n_frames = torch.tensor([200, 121, 7])
    r = m(x, n_frames)
    expected = [frames_out(n, Fraction(1, 2)) for n in (200, 121, 7)]
    assert r.frames.tolist() == expected and r.features.shape[2] == expected[0]
    torch.testing.assert_close(r.score.sum(1), torch.tensor(expected, dtype=r.score.dtype), atol=1e-4, rtol=0)
    assert (r.score[~valid_frames(n_frames, 200)] == 0).all()
    for b, n in enumerate(n_frames.tolist()):  # and what it keeps is what the row alone keeps
        alone = m(x[b: b + 1, :n], torch.tensor([n]))
        # 1e-4: the estimator's convs round differently batched and alone (~1e-7 in a score), and the
        # max channel divides by the score, which magnifies that for a frame grazing a cell (seen: 5e-5)
        torch.testing.assert_close(r.features[b, :, : expected[b]], alone.features[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(r.score[b, :n], alone.score[0], atol=1e-6, rtol=1e-6)


def test_padding_content_never_reaches_a_row() -> None:
    """Whatever sits in the padding (even huge values) changes nothing in the row's real output."""
    m = DiffRes(n_mels=16, delta=0.5).eval()
    x = torch.randn(1, 150, 16)
    noisy = x.clone()
    noisy[:, 90:] = 1e3 * torch.randn(1, 60, 16)
    n = torch.tensor([90])
    a, b = m(x, n), m(noisy, n)
    t = int(a.frames[0])
    torch.testing.assert_close(a.features[:, :, :t], b.features[:, :, :t])
    torch.testing.assert_close(a.score, b.score)


def test_guide_loss_counts_only_empty_frames() -> None:
    s = torch.full((2, 10), 0.5)
    empty = torch.zeros(2, 10, dtype=torch.bool)
    assert guide_loss(s, empty, 0.5) == 0  # nothing empty, nothing to push
    empty[0, :4] = True
    assert guide_loss(s, empty, 0.5) == pytest.approx(0.5)  # mean score of item 0's empty frames
    s[0, :4] = 0.1  # below half the mean score (1 - delta) / 2 = 0.25: satisfied, no more push
    assert guide_loss(s, empty, 0.5) == 0


def test_guide_loss_pushes_masked_frame_scores_down() -> None:
    torch.manual_seed(0)
    m = DiffRes(n_mels=16, delta=0.5)
    x = torch.randn(8, 100, 16)
    masked = torch.zeros(8, 100, dtype=torch.bool)
    masked[:, 30:60] = True
    x[masked] = torch.log(torch.tensor(1e-6))  # SpecAugment-masked frames look like silence
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    n = full_rows(x)
    before = m(x, n, masked=masked).score[masked].mean().item()
    for _ in range(30):
        r = m(x, n, masked=masked)
        opt.zero_grad()
        r.guide_loss.backward()
        opt.step()
    after = m.eval()(x, n, masked=masked).score[masked].mean().item()
    assert after < 0.5 * before
