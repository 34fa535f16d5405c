"""binary_auc and equal_error_rate (lavida.metrics._ranking) on hand-worked cases and their edges.

binary_auc is compared with sklearn and a pair count elsewhere (test_pixel_oracles.py); here: one-item
classes, and the memory promise of its docstring. equal_error_rate is otherwise reached only through
PixelCriterion's exact sweep, whose curve runs from (0, 0) to (1, 1): here are the crossings on its
first segment and the grid curves that never reach the crossing.
"""

from __future__ import annotations

import numpy as np
import pytest
from metrics.memory import peak_bytes
from sklearn.metrics import roc_auc_score, roc_curve

from lavida.metrics import pixel_criterion
from lavida.metrics._ranking import binary_auc, equal_error_rate


# ------------------------------------------------------------------------------------------ binary_auc
def test_binary_auc_with_a_single_positive_or_a_single_negative():
    # Scores .2 .6 .9 .6 .1. Positive = the first .6 only; negatives {.2, .9, .6, .1}:
    #   beats .2 and .1 (2), ties .6 (1/2), loses to .9 -> 2.5 / 4 = 5/8.
    # Negative = the first .6 only; positives {.2, .9, .6, .1}: .9 beats it (1), .6 ties (1/2) -> 3/8.
    scores = np.array([0.2, 0.6, 0.9, 0.6, 0.1])
    one = np.array([False, True, False, False, False])
    assert binary_auc(scores, one) == pytest.approx(5 / 8, abs=1e-12)
    assert binary_auc(scores, ~one) == pytest.approx(3 / 8, abs=1e-12)
    assert binary_auc(scores, one) == pytest.approx(roc_auc_score(one, scores), abs=1e-12)
    assert binary_auc(scores, ~one) == pytest.approx(roc_auc_score(~one, scores), abs=1e-12)


@pytest.mark.parametrize("minority", ["positive", "negative"])
def test_binary_auc_temporaries_scale_with_the_smaller_class(minority):
    """Docstring: one copy of the scores plus int64 search results for the *smaller* class only.

    With 1 % of one class, searching the larger class instead would add ~8 bytes per pixel (2.1x the
    input in all); the promise is the copies (1x), the ``~labels`` mask (1/8 x) and a little more.
    """
    rng = np.random.default_rng(0)
    scores = rng.random(1_000_000)
    labels = np.zeros(scores.size, dtype=bool)
    labels[rng.choice(scores.size, scores.size // 100, replace=False)] = True
    if minority == "negative":
        labels = ~labels
    result = []
    peak = peak_bytes(lambda: result.append(binary_auc(scores, labels)))
    assert peak < 1.4 * scores.nbytes, f"peak {peak / scores.nbytes:.2f}x the input"
    assert result[0] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


# ------------------------------------------------------------------------------------ equal_error_rate
def test_eer_of_a_constant_classifier_is_one_half():
    # All scores tied: the ROC is the single segment (0, 0) -> (1, 1), where FPR = w and FNR = 1 - w
    # meet at w = 1/2. The crossing lies on the first segment, so it must be interpolated, not read
    # off the point (1, 1) past it.
    fpr, tpr, thr = roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], drop_intermediate=False)
    assert equal_error_rate(fpr, tpr, thr) == (pytest.approx(0.5, abs=1e-12), 0.5)


def test_eer_interpolated_on_the_first_segment():
    # Segment (0, 0) -> (1/2, 1): FPR = w / 2, FNR = 1 - w, equal at w = 2/3 -> EER 1/3. The
    # threshold is that of the point past the crossing, (1/2, 1).
    fpr, tpr, thr = np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0]), np.array([np.inf, 0.7, 0.2])
    eer, threshold = equal_error_rate(fpr, tpr, thr)
    assert eer == pytest.approx(1 / 3, abs=1e-12)
    assert threshold == 0.7


def test_eer_interpolated_on_the_last_segment_into_the_corner():
    # Segment (.2, .5) -> (1, 1): FPR = .2 + .8 w, FNR = .5 - .5 w, equal at w = 3/13 -> EER 5/13. The
    # point past the crossing is the corner, where FPR - FNR = 1: read off there, the EER would be 1/2.
    fpr, tpr, thr = np.array([0.0, 0.2, 1.0]), np.array([0.0, 0.5, 1.0]), np.array([np.inf, 0.5, 0.1])
    eer, threshold = equal_error_rate(fpr, tpr, thr)
    assert eer == pytest.approx(5 / 13, abs=1e-12)
    assert threshold == 0.1


def test_eer_of_a_curve_that_stops_before_the_crossing_is_read_at_its_last_point():
    # A threshold grid that stops early: FPR - FNR is -1, -.6, -.5, -.1, never >= 0. The crossing is
    # not on the curve; the EER is taken at the last (nearest) point, the mean of its FPR .3 and
    # FNR 1 - .6 = .4: .35, at that point's threshold .6.
    fpr = np.array([0.0, 0.1, 0.15, 0.3])
    tpr = np.array([0.0, 0.3, 0.35, 0.6])
    thr = np.array([0.9, 0.8, 0.7, 0.6])
    eer, threshold = equal_error_rate(fpr, tpr, thr)
    assert eer == pytest.approx(0.35, abs=1e-12)
    assert threshold == 0.6


def test_criterion_eer_on_grids_that_miss_the_crossing_is_still_a_rate():
    """A grid that does not cover [0, 1] (PixelCriterion.compute asks for a margin, but accepts any)
    misses the crossing on either side; both ends are read alike, at the grid threshold nearest it."""
    scores = np.array([[[0.9, 0.0]], [[0.6, 0.0]], [[0.5, 0.0]], [[0.3, 0.0]]])
    labels = np.array([[[1, 0]], [[1, 0]], [[0, 0]], [[0, 0]]])
    # Above every score: nothing fires, every point is (0, 0), FNR 1 -> mean of 0 and 1 at the last
    # (most lenient) grid threshold.
    none_fire = pixel_criterion([scores], [labels], thresholds=[0.99, 0.95])
    assert none_fire.eer == pytest.approx(0.5, abs=1e-12)
    assert none_fire.eer_threshold == 0.95
    # Below every score: everything fires, every point is (1, 1), FNR 0, already past the crossing at
    # the first (strictest) grid threshold: read there the same way, the mean of 1 and 0.
    all_fire = pixel_criterion([scores], [labels], thresholds=[0.2, 0.1])
    assert all_fire.eer == pytest.approx(0.5, abs=1e-12)
    assert all_fire.eer_threshold == 0.2
