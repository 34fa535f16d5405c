"""The pixel metrics against slow re-implementations written from their definitions.

* PixelAUC: an independent quantiser (``math.frexp`` per score) and a pair-by-pair count give the
  exact value the histogram must return, and the exact bound; sklearn then checks the bound is true.
* PerFramePixelAUC: a pair-by-pair AUC per frame.
* PixelCriterion: the 40 % rule applied literally, one threshold and one frame at a time.
Plus edge cases (-0.0, empty frames, integer and bool dtypes) and memory ceilings for large frames.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from conftest import slow_auc_eer
from metrics.memory import peak_bytes
from sklearn.metrics import roc_auc_score

from lavida.metrics import PerFramePixelAUC, PixelAUC, PixelCriterion, per_frame_pixel_auc, pixel_criterion
from lavida.metrics._ranking import binary_auc


def pair_auc(pos_keys, neg_keys) -> float:
    """Mann-Whitney count over all pairs: 1 if the positive ranks higher, 1/2 on a tie."""
    pos = np.asarray(pos_keys, dtype=np.float64)[:, None]
    neg = np.asarray(neg_keys, dtype=np.float64)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


# ============================================================================================ PixelAUC
def bin_key(x: float, mantissa_bits: int, octaves: int) -> float:
    """The bin of ``x`` written independently from the class docstring's description.

    d = min(x, 1 - x); exact 0 and 1 get bins of their own, d < 2**-octaves a tail bin per side, and
    otherwise d = m 2**e (m in [1/2, 1)) falls into the bin that keeps the top ``mantissa_bits`` bits of
    m. The key is the lower edge of that bin in d, mirrored for the upper side so that it grows with x.
    """
    upper = x > 0.5
    d = 1.0 - x if upper else abs(x)  # abs: -0.0 is 0
    if d == 0.0:
        edge = -1.0
    elif d < 2.0**-octaves:
        edge = 0.0
    else:
        m, e = math.frexp(d)
        prefix = math.floor((2 * m - 1) * 2**mantissa_bits)
        edge = 2.0 ** (e - 1) * (1 + prefix / 2**mantissa_bits)
    return 2.0 - edge if upper else edge


def histogram_oracle(scores, labels, mantissa_bits, octaves) -> tuple[float, float]:
    """(AUC with same-bin pairs counted 1/2, sum of same-bin pairs over 2 P N outside the 0/1 bins)."""
    keys = np.array([bin_key(float(x), mantissa_bits, octaves) for x in scores])
    pos, neg = keys[labels][:, None], keys[~labels][None, :]
    same = pos == neg
    inexact = same & (pos != -1.0) & (pos != 3.0)  # -1: x == 0, 3: x == 1 (single values)
    return pair_auc(keys[labels], keys[~labels]), float(inexact.mean() / 2)


def adversarial_scores(rng, n):
    """Scores that stress the quantiser: ties, exact 0 and 1, -0.0, the 0.5 edge, tails on both sides."""
    pool = np.concatenate(
        (
            [0.0, -0.0, 1.0, 0.5, np.nextafter(0.5, 0), np.nextafter(0.5, 1), 5e-324, 1 - 2**-53],
            rng.random(6),
            rng.random(4) * 1e-14,
            1 - rng.random(4) * 1e-14,
            0.3 + rng.random(4) * 1e-3,
        )
    )
    return (
        rng.choice(pool, n)
        if rng.random() < 0.5
        else np.where(rng.random(n) < 0.5, rng.random(n), rng.choice(pool, n))
    )


@pytest.mark.parametrize("seed", range(12))
def test_histogram_auc_and_bound_equal_the_independent_oracle_and_the_bound_holds(seed):
    rng = np.random.default_rng(seed)
    mantissa_bits, octaves = int(rng.integers(1, 6)), int(rng.integers(1, 8))
    n = int(rng.integers(20, 300))
    scores = adversarial_scores(rng, n)
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]
    if seed % 3 == 0:
        scores = scores.astype(np.float32)
    metric = PixelAUC(mantissa_bits=mantissa_bits, octaves=octaves)
    metric.update(scores, labels)
    value, bound = metric.compute(), metric.error_bound()
    expected_value, expected_bound = histogram_oracle(scores, labels, mantissa_bits, octaves)
    assert value == pytest.approx(expected_value, abs=1e-12)
    assert bound == pytest.approx(expected_bound, abs=1e-12)
    # The guarantee: sklearn's exact AUC lies within the bound.
    assert abs(value - roc_auc_score(labels, scores)) <= bound + 1e-12


def test_bound_is_attained_when_every_positive_beats_every_negative_inside_one_bin():
    # mantissa_bits 1: the bins of d in [1/4, 1/2) are [1/4, 3/8) and [3/8, 1/2). Positives at .30 and
    # negatives at .26 share the first: sklearn's AUC is 1 (every positive is higher), the histogram
    # counts each pair 1/2 -> 0.5, and the bound is P N / (2 P N) = 0.5: attained exactly.
    metric = PixelAUC(mantissa_bits=1, octaves=4)
    scores = np.r_[np.full(3, 0.30), np.full(5, 0.26)]
    labels = np.r_[np.ones(3, bool), np.zeros(5, bool)]
    metric.update(scores, labels)
    assert roc_auc_score(labels, scores) == 1.0
    assert metric.compute() == 0.5
    assert metric.error_bound() == 0.5


@pytest.mark.parametrize(
    ("scores", "labels", "auc", "bound"),
    [
        # Perfect separation, reversed separation: 1 and 0 with no shared bin.
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0, 0.0),
        ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.0, 0.0),
        # All equal mid-range: the AUC is 1/2, and so is the bound (one bin holds every pair).
        ([0.3] * 5, [1, 0, 1, 0, 0], 0.5, 0.5),
        # All exactly 0 or all exactly 1: a single value per bin, so the 1/2 is exact (bound 0).
        ([0.0] * 4, [1, 0, 0, 1], 0.5, 0.0),
        ([1.0] * 4, [1, 0, 0, 1], 0.5, 0.0),
    ],
)
def test_known_exact_answers(scores, labels, auc, bound, caplog):
    metric = PixelAUC()
    metric.update(np.array(scores), np.array(labels))
    with caplog.at_level(logging.WARNING, logger="lavida.metrics.pixel"):
        assert metric.compute() == auc
    assert metric.error_bound() == bound
    assert ("error bound" in caplog.text) == (bound > 1e-4)


def test_per_video_accumulators_with_normal_only_and_anomalous_only_videos_merge_to_the_pool():
    rng = np.random.default_rng(1)
    videos = []
    for kind in ("normal", "mixed", "anomalous", "normal", "mixed"):
        s = np.round(rng.random((3, 9, 11)), 2)  # ties across videos
        y = {"normal": np.zeros, "anomalous": np.ones}.get(
            kind, lambda shape, dtype: rng.random(shape) < 0.2
        )(s.shape, dtype=bool)
        videos.append((s, y))
    total = PixelAUC()
    for s, y in videos:
        one = PixelAUC()
        one.update(s, y)
        if not (y.any() and not y.all()):
            with pytest.raises(ValueError, match="undefined"):
                one.compute()
        total.merge(one)
    all_s = np.concatenate([s.ravel() for s, _ in videos])
    all_y = np.concatenate([y.ravel() for _, y in videos])
    assert abs(total.compute() - roc_auc_score(all_y, all_s)) <= total.error_bound() + 1e-12
    # Scores are multiples of .01, far coarser than the bins: no two distinct values share a bin.
    assert total.compute() == pytest.approx(roc_auc_score(all_y, all_s), abs=1e-12)


def test_negative_zero_is_zero_at_every_quantiser_setting():
    """-0.0 passes validation (it is >= 0). Its float64 bit pattern has the sign bit set; at
    mantissa_bits=20 the shifted pattern minus the exponent offset overflowed int32, so update()
    raised a broadcasting error, after adding the chunks before it."""
    scores = np.array([-0.0, 0.2, 0.5, 0.9])
    labels = np.array([1, 0, 1, 0])
    for mantissa_bits in (1, 14, 19, 20):
        metric = PixelAUC(mantissa_bits=mantissa_bits, octaves=10)
        metric.update(scores, labels)
        # Positives {0, .5}: 0 beats nothing; .5 beats .2 -> 1 of 4 pairs.
        assert metric.compute() == 0.25 == roc_auc_score(labels, scores)
        assert metric.error_bound() == 0.0
        np.testing.assert_array_equal(metric._bin_index(scores[:1]), metric._bin_index(np.zeros(1)))


def test_integer_scores_are_not_widened_to_float64():
    """A binary uint8 prediction holds exact 0/1 values: float32 represents them exactly, so checking and
    binning them must not allocate a float64 copy (8 bytes per pixel) of the whole update."""
    n = 1 << 20
    scores = np.zeros(n, dtype=np.uint8)
    scores[::3] = 1
    labels = np.zeros(n, dtype=bool)
    labels[::5] = True
    metric = PixelAUC(mantissa_bits=4, octaves=4, chunk_size=1 << 14)  # small bins and chunks
    peak = peak_bytes(lambda: metric.update(scores, labels))
    assert peak < 6 * n, f"{peak / n:.1f} bytes per pixel"
    assert metric.compute() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


# ===================================================================================== per-frame AUC
def test_per_frame_auc_matches_pair_loop_on_tie_heavy_frames():
    rng = np.random.default_rng(2)
    scores, labels, expected = [], [], []
    for t in (4, 1, 6):
        y = rng.random((t, 7, 9)) < rng.uniform(0.05, 0.6)
        s = np.round(np.clip(rng.normal(0.3 + 0.2 * y, 0.2), 0, 1), 1).astype(np.float32)
        s[0, :3] = 0.0  # zeros mixed in, but the frame is not all-zero
        if t > 1:
            y[1] = False  # a normal frame: skipped
        scores.append(s)
        labels.append(y)
        for i in range(t):
            if y[i].any() and not y[i].all():
                frame_auc = pair_auc(s[i][y[i]], s[i][~y[i]])
                expected.append(0.0 if s[i].max() == 0 else frame_auc)
    assert per_frame_pixel_auc(scores, labels) == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("share", [0.02, 0.5, 0.98])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8])
def test_exact_frame_auc_matches_pair_loop_whichever_class_is_larger(share, dtype):
    # binary_auc sorts the larger class and searches the smaller: both branches, with ties.
    rng = np.random.default_rng(int(share * 100))
    labels = rng.random(400) < share
    labels[:2] = [True, False]
    scores = np.round(rng.random(400), 1) if dtype != np.uint8 else (rng.random(400) < 0.5)
    scores = scores.astype(dtype)
    assert binary_auc(scores, labels) == pytest.approx(pair_auc(scores[labels], scores[~labels]), abs=1e-12)
    assert np.isnan(binary_auc(scores, np.zeros(400, dtype=bool)))


def test_per_frame_rejects_frames_without_pixels():
    """A (T, 0, W) map has no pixel: the class counted each such frame both as normal and as fully
    anomalous (0 anomalous pixels == 0 pixels), with a misleading warning."""
    metric = PerFramePixelAUC()
    with pytest.raises(ValueError, match="non-empty"):
        metric.update(np.zeros((3, 0, 4)), np.zeros((3, 0, 4), dtype=bool))
    assert (metric.num_frames, metric.num_skipped_normal, metric.num_skipped_full) == (0, 0, 0)


def test_per_frame_memory_is_bounded_by_one_frame_not_the_batch():
    """Mid-rank AUCs of 16 frames at once used ~50 bytes per pixel of the batch (float64 ranks, argsort
    indices, the gathered copy): 7x a float64 input, 860 MB for 16 frames at 720p."""
    rng = np.random.default_rng(3)
    scores = rng.random((16, 128, 160))
    labels = np.zeros(scores.shape, dtype=bool)
    labels[:, 20:90, 30:100] = True
    metric = PerFramePixelAUC()
    peak = peak_bytes(lambda: metric.update(scores, labels))
    assert peak < 0.25 * scores.nbytes, f"peak {peak / scores.nbytes:.2f}x the input"
    expected = np.mean([roc_auc_score(labels[i].ravel(), scores[i].ravel()) for i in range(16)])
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


# ========================================================================================= criterion
def slow_criterion(frames_s, frames_y, num=2, den=5):
    """The criterion at every distinct pixel score (plus +inf), one frame at a time, in integers.

    An anomalous frame is a TP when den * (fired anomalous pixels) >= num * (anomalous pixels), i.e. at
    least num/den of them fire (40 % = 2/5, no floating point); a normal frame is a FP when any pixel
    fires. Returns (fpr, tpr, thresholds) from strict to lenient, consecutive repeats removed.
    """
    thresholds = [math.inf, *sorted({float(v) for s in frames_s for v in s.ravel()}, reverse=True)]
    anomalous = [bool(y.any()) for y in frames_y]
    n_anom, n_norm = sum(anomalous), len(anomalous) - sum(anomalous)
    points = []
    for t in thresholds:
        tp = fp = 0
        for s, y, is_anom in zip(frames_s, frames_y, anomalous, strict=True):
            if is_anom:
                fired = sum(1 for v, g in zip(s.ravel(), y.ravel(), strict=True) if g and v >= t)
                tp += den * fired >= num * int(y.sum())
            else:
                fp += any(v >= t for v in s.ravel())
        point = (fp / n_norm, tp / n_anom)
        if not points or points[-1][:2] != point:
            points.append((*point, t))
    fpr, tpr, thr = (np.array(c) for c in zip(*points, strict=True))
    return fpr, tpr, thr


def test_criterion_hand_worked_with_ties_and_interpolated_eer():
    # Five 1x5 frames; the criterion at t, with k = ceil(0.4 n) of n anomalous pixels required:
    #   A anomalous, GT pixels 0-2 (n 3, k 2), scores .8 .6 .2 (+ background .9, never penalised)
    #       -> TP iff t <= .6
    #   B anomalous, every pixel (n 5, k 2), scores .7 .4 .4 .3 .1 -> 2nd largest .4: TP iff t <= .4
    #       (at t = .45 only .7 fires: 1 of 5 = 20 % < 40 %)
    #   C anomalous, GT pixel 0 only (n 1, k 1), score .3 (background 1.0) -> TP iff t <= .3
    #   D normal, max .5 -> FP iff t <= .5;   E normal, max .4 -> FP iff t <= .4 (ties with B)
    # ROC (FPR, TPR): t > .6 (0, 0); t = .6 (0, 1/3); t = .5 (1/2, 1/3); t = .4 (1, 2/3); t = .3 (1, 1).
    # AUC = 1/2 * 1/3 + 1/2 * (1/3 + 2/3) / 2 = 1/6 + 1/4 = 5/12.
    # FPR - FNR at the points: -1, -2/3, 1/2 - 2/3 = -1/6, 1 - 1/3 = 2/3: it crosses 0 between
    # (1/2, 1/3) and (1, 2/3) at w = (1/6) / (1/6 + 2/3) = 1/5: EER = 1/2 + 1/5 * 1/2 = 3/5
    # (there TPR = 1/3 + 1/5 * 1/3 = 2/5, FNR = 3/5: equal). Threshold of the point past it: .4.
    scores = np.array(
        [
            [[0.8, 0.6, 0.2, 0.9, 0.0]],
            [[0.7, 0.4, 0.4, 0.3, 0.1]],
            [[0.3, 1.0, 1.0, 1.0, 1.0]],
            [[0.5, 0.0, 0.0, 0.0, 0.0]],
            [[0.4, 0.2, 0.0, 0.0, 0.0]],
        ]
    )
    labels = np.zeros(scores.shape, dtype=np.uint8)
    labels[0, 0, :3] = 1
    labels[1] = 1
    labels[2, 0, 0] = 1
    result = pixel_criterion([scores], [labels])
    np.testing.assert_allclose(result.fpr, [0, 0, 0.5, 1, 1], atol=1e-15)
    np.testing.assert_allclose(result.tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1], atol=1e-15)
    np.testing.assert_allclose(result.thresholds[1:], [0.6, 0.5, 0.4, 0.3])
    assert result.auc == pytest.approx(5 / 12, abs=1e-12)
    assert result.eer == pytest.approx(3 / 5, abs=1e-12)
    assert result.eer_threshold == 0.4
    fpr, tpr, thr = slow_criterion(list(scores), list(labels))
    np.testing.assert_allclose(fpr, result.fpr, atol=1e-15)
    np.testing.assert_allclose(tpr, result.tpr, atol=1e-15)
    assert slow_auc_eer(fpr, tpr) == pytest.approx((5 / 12, 3 / 5), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_criterion_exact_and_grid_sweeps_match_the_slow_loop(seed):
    rng = np.random.default_rng(seed)
    t, h, w = 14, 6, 7
    labels = np.zeros((t, h, w), dtype=bool)
    for i in rng.choice(t, 7, replace=False):
        y0, x0 = rng.integers(0, 4, 2)
        labels[i, y0 : y0 + rng.integers(1, 4), x0 : x0 + rng.integers(1, 5)] = True
    scores = np.round(np.clip(rng.normal(0.2 + 0.3 * labels, 0.15), 0, 1), 2)
    if seed % 2:
        scores = scores.astype(np.float32)
    frames_s, frames_y = list(scores), list(labels)
    fpr, tpr, thr = slow_criterion(frames_s, frames_y)
    result = pixel_criterion([scores[:5], scores[5:]], [labels[:5], labels[5:]])
    np.testing.assert_allclose(result.fpr, fpr, atol=1e-15)
    np.testing.assert_allclose(result.tpr, tpr, atol=1e-15)
    np.testing.assert_array_equal(result.thresholds, thr)
    area, eer = slow_auc_eer(fpr, tpr)
    assert result.auc == pytest.approx(area, abs=1e-12)
    assert result.eer == pytest.approx(eer, abs=1e-12)

    # The py-ssvad-metrics grid: the same rule at each grid threshold.
    grid = np.linspace(1.01, -0.01, 103)
    on_grid = pixel_criterion([scores], [labels], thresholds=grid)
    anomalous = labels.any(axis=(1, 2))
    for j, g in enumerate(grid):
        fired = scores >= g
        tp = sum(
            5 * int((fired[i] & labels[i]).sum()) >= 2 * int(labels[i].sum())
            for i in np.flatnonzero(anomalous)
        )
        fp = sum(bool(fired[i].any()) for i in np.flatnonzero(~anomalous))
        assert (on_grid.tpr[j], on_grid.fpr[j]) == (tp / anomalous.sum(), fp / (~anomalous).sum())


def test_criterion_accepts_uint8_bool_and_float_masks_alike():
    rng = np.random.default_rng(5)
    scores = rng.random((6, 5, 5))
    labels = np.zeros((6, 5, 5), dtype=bool)
    labels[::2, 1:3, 1:4] = True
    reference = pixel_criterion([scores], [labels])
    for mask in (labels.astype(np.uint8), labels.astype(np.float32), labels.astype(np.int64)):
        assert pixel_criterion([scores], [mask]).auc == reference.auc
    # A binary uint8 prediction is a valid (degenerate) score map.
    binary = pixel_criterion([(scores > 0.5).astype(np.uint8)], [labels])
    assert np.array_equal(binary.thresholds[1:], [1.0, 0.0])
    with pytest.raises(ValueError, match="labels > 0"):
        pixel_criterion([scores], [labels.astype(np.uint8) * 255])  # a 0/255 .bmp mask


def test_criterion_memory_is_bounded_by_one_frame_on_large_anomalous_regions():
    """The vectorised k-th-largest search sorted every anomalous pixel of the update at once (two int64
    coordinates, a float64 copy, lexsort keys and order): ~40 bytes per anomalous pixel, 5.7x a float64
    input where the anomaly covers most of each frame (UCF-style whole-frame masks)."""
    rng = np.random.default_rng(6)
    scores = rng.random((16, 128, 160))
    labels = np.zeros(scores.shape, dtype=bool)
    labels[:, 5:125, 5:155] = True
    metric = PixelCriterion()
    peak = peak_bytes(lambda: metric.update(scores, labels))
    assert peak < 0.25 * scores.nbytes, f"peak {peak / scores.nbytes:.2f}x the input"
    n = int(labels[0].sum())
    k = -(-2 * n // 5)
    expected = [np.sort(scores[i][labels[i]])[::-1][k - 1] for i in range(16)]
    np.testing.assert_array_equal(metric.state_dict()["critical"], expected)
