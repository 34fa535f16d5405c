"""frame_auc / frame_ap against slow loop oracles written from the definitions.

The oracles below never call sklearn: the AUC counts every positive/negative pair (a tie counts
one half, the Mann-Whitney convention sklearn's trapezoid reproduces), and both AP variants walk
the distinct thresholds from strict to lenient in plain Python. The sklearn comparisons in
``test_frame_metrics.py`` are therefore checked a second time against an independent computation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lavida.metrics import frame_ap, frame_auc


# ------------------------------------------------------------------------------------------ oracles
def slow_auc(scores, labels) -> float:
    """P(s+ > s-) + 1/2 P(s+ == s-), one Python loop per pair."""
    pos = [float(s) for s, y in zip(scores, labels, strict=True) if y]
    neg = [float(s) for s, y in zip(scores, labels, strict=True) if not y]
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


def slow_pr_points(scores, labels) -> list[tuple[float, float]]:
    """(recall, precision) at every distinct threshold, from the strictest (highest) down."""
    pairs = [(float(s), bool(y)) for s, y in zip(scores, labels, strict=True)]
    n_pos = sum(y for _, y in pairs)
    points = []
    for t in sorted({s for s, _ in pairs}, reverse=True):
        tp = sum(1 for s, y in pairs if s >= t and y)
        fp = sum(1 for s, y in pairs if s >= t and not y)
        points.append((tp / n_pos, tp / (tp + fp)))
    return points


def slow_step_ap(scores, labels) -> float:
    """sum_k (R_k - R_{k-1}) P_k over the distinct thresholds, with R_0 = 0."""
    ap, last_recall = 0.0, 0.0
    for recall, precision in slow_pr_points(scores, labels):
        ap += (recall - last_recall) * precision
        last_recall = recall
    return ap


def slow_trapezoid_ap(scores, labels) -> float:
    """Trapezoids between consecutive PR points, starting from (recall 0, precision 1)."""
    points = [(0.0, 1.0), *slow_pr_points(scores, labels)]
    area = 0.0
    for (r0, p0), (r1, p1) in zip(points, points[1:], strict=False):
        area += (r1 - r0) * (p0 + p1) / 2
    return area


def random_videos(seed: int, *, decimals: int | None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=7)
    labels = [rng.random(n) < rng.uniform(0.1, 0.6) for n in lengths]
    labels[0][:] = False  # an all-normal video
    labels[1][:] = True  # an all-anomalous video
    scores = [np.clip(rng.normal(0.4 + 0.2 * y, 0.25), 0, 1) for y in labels]
    if decimals is not None:  # tie-heavy: few distinct values, ties across classes and videos
        scores = [np.round(s, decimals) for s in scores]
    scores[2][:] = 0.5  # a video whose scores are all equal
    return [s.astype(dtype) for s in scores], labels


# -------------------------------------------------------------------------------------- hand-worked
def test_hand_worked_tie_heavy_ap_and_auc():
    # Scores [.8, .8, .8, .3, .3], labels [1, 0, 1, 1, 0]: two distinct thresholds.
    #   t = .8: TP 2, FP 1 -> R = 2/3, P = 2/3;   t = .3: TP 3, FP 2 -> R = 1, P = 3/5.
    # Step AP  = 2/3 * 2/3 + 1/3 * 3/5 = 4/9 + 1/5 = 29/45.
    # Trapezoid from (0, 1): 2/3 * (1 + 2/3) / 2 + 1/3 * (2/3 + 3/5) / 2 = 5/9 + 19/90 = 69/90 = 23/30.
    # AUC: positives {.8, .8, .3}, negatives {.8, .3}:
    #   .8 vs .8 -> 1/2, .8 vs .3 -> 1 (twice, one per positive .8) -> 2 * 1.5 = 3;
    #   .3 vs .8 -> 0, .3 vs .3 -> 1/2;   total 3.5 / 6 = 7/12.
    scores, labels = [np.array([0.8, 0.8, 0.8, 0.3, 0.3])], [np.array([1, 0, 1, 1, 0])]
    assert frame_ap(scores, labels) == pytest.approx(29 / 45, abs=1e-12)
    assert frame_ap(scores, labels, method="trapezoid") == pytest.approx(23 / 30, abs=1e-12)
    assert frame_auc(scores, labels) == pytest.approx(7 / 12, abs=1e-12)
    assert slow_step_ap(scores[0], labels[0]) == pytest.approx(29 / 45, abs=1e-12)
    assert slow_trapezoid_ap(scores[0], labels[0]) == pytest.approx(23 / 30, abs=1e-12)


def test_all_equal_scores_give_one_half_and_precision_of_the_prior():
    # One threshold: every frame fires, so the ROC is the diagonal (AUC 1/2), and the single PR point
    # is (R = 1, P = prevalence = 2/5): step AP 2/5, trapezoid from (0, 1): (1 + 2/5) / 2 = 7/10.
    scores, labels = [np.full(3, 0.7), np.full(2, 0.7)], [np.array([1, 0, 0]), np.array([1, 0])]
    assert frame_auc(scores, labels) == 0.5
    assert frame_ap(scores, labels) == pytest.approx(2 / 5, abs=1e-12)
    assert frame_ap(scores, labels, method="trapezoid") == pytest.approx(7 / 10, abs=1e-12)


# -------------------------------------------------------------------------------------- vs oracles
@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_micro_macro_and_ap_match_slow_oracles(decimals, dtype):
    scores, labels = random_videos(11 + (decimals or 5), decimals=decimals, dtype=dtype)
    cat_s = np.concatenate(scores).astype(np.float64)
    cat_y = np.concatenate(labels)
    assert frame_auc(scores, labels) == pytest.approx(slow_auc(cat_s, cat_y), abs=1e-12)
    macro = np.mean(
        [
            slow_auc(np.r_[0.0, s.astype(np.float64), 1.0], np.r_[False, y, True])
            for s, y in zip(scores, labels, strict=True)
        ]
    )
    assert frame_auc(scores, labels, average="macro") == pytest.approx(macro, abs=1e-12)
    assert frame_ap(scores, labels) == pytest.approx(slow_step_ap(cat_s, cat_y), abs=1e-12)
    assert frame_ap(scores, labels, method="trapezoid") == pytest.approx(
        slow_trapezoid_ap(cat_s, cat_y), abs=1e-12
    )


def test_official_micro_sentinels_shift_the_auc_by_at_most_their_weight():
    """docs/fidelity.md: our micro AUC has no sentinels; LAVIDA's release pads [0]/[1] onto raw logits.

    With U the positive-over-negative pair count, the padded AUC is (U + e) / ((P + 1)(N + 1)), where
    e in [0, P + N + 1] counts the pairs that involve a sentinel. Subtracting U / (P N) gives
    (P + N + 1) / ((P + 1)(N + 1)) * (e / (P + N + 1) - AUC), and both terms in the bracket lie in
    [0, 1], so the two numbers differ by at most (P + N + 1) / ((P + 1)(N + 1)) wherever the
    sentinels land (mid-range for logits). The sigmoid keeps the order, so the unpadded AUC on
    probabilities is the unpadded AUC on logits.
    """
    rng = np.random.default_rng(3)
    labels = [rng.random(n) < 0.3 for n in (20, 35, 9)]
    logits = [rng.normal(-1 + 2 * y, 2.0) for y in labels]
    probabilities = [1 / (1 + np.exp(-x)) for x in logits]
    cat_x, cat_y = np.concatenate(logits), np.concatenate(labels)
    official = slow_auc(np.r_[0.0, cat_x, 1.0], np.r_[False, cat_y, True])  # train/utils.py padding
    ours = frame_auc(probabilities, labels)
    p, n = int(cat_y.sum()), int((~cat_y).sum())
    assert ours == pytest.approx(slow_auc(cat_x, cat_y), abs=1e-12)
    assert abs(official - ours) <= (p + n + 1) / ((p + 1) * (n + 1)) + 1e-12
    assert official != ours  # the sentinels do move it, by less than 1/P + 1/N


# -------------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, -1e-9, 1 + 1e-9])
def test_non_finite_or_out_of_range_scores_raise_for_every_function(bad):
    scores, labels = [np.array([0.2, bad, 0.7])], [np.array([0, 1, 1])]
    for call in (
        lambda: frame_auc(scores, labels),
        lambda: frame_auc(scores, labels, average="macro"),
        lambda: frame_ap(scores, labels),
        lambda: frame_ap(scores, labels, method="trapezoid"),
    ):
        with pytest.raises(ValueError, match=r"scores\[0\]"):
            call()


def test_integer_scores_and_label_dtypes_give_the_same_numbers():
    scores = [np.array([0, 1, 1, 0, 1], dtype=np.uint8)]
    expected = frame_auc([scores[0].astype(np.float64)], [np.array([0, 1, 0, 0, 1])])
    # Binary scores: positives {1, 1}, negatives {0, 1, 0}: each positive beats two and ties one -> 5/6.
    assert expected == pytest.approx(5 / 6, abs=1e-12)
    for labels in (
        np.array([0, 1, 0, 0, 1], dtype=np.uint8),
        np.array([False, True, False, False, True]),
        np.array([0.0, 1.0, 0.0, 0.0, 1.0], dtype=np.float32),
    ):
        assert frame_auc(scores, [labels]) == expected
        assert frame_ap(scores, [labels]) == frame_ap([scores[0].astype(float)], [labels.astype(bool)])


def test_single_class_sets():
    one_video = [np.array([0.1, 0.9])]
    with pytest.raises(ValueError, match="labelled anomalous"):
        frame_auc(one_video, [np.array([1, 1])])
    # All anomalous: every precision is 1, so AP is 1 under both conventions (defined, unlike AUC).
    assert frame_ap(one_video, [np.array([1, 1])]) == 1.0
    assert frame_ap(one_video, [np.array([1, 1])], method="trapezoid") == 1.0
    assert frame_auc(one_video, [np.array([0, 0])], average="macro") == 1.0  # sentinels only
    assert not math.isnan(frame_auc(one_video, [np.array([1, 1])], average="macro"))


def test_one_videos_flat_scores_are_told_how_to_go_in():
    """frame_auc([0.1, 0.9], [0, 1]) reads each number as a video; the error said only 'got shape ()'."""
    with pytest.raises(
        ValueError, match=r"got shape \(\); one video's scores go in as \[np\.asarray\(scores\)\]"
    ):
        frame_auc([0.1, 0.9], [0, 1])
    assert frame_auc([np.asarray([0.1, 0.9])], [np.asarray([0, 1])]) == 1.0
