"""Mahadevan 40 % pixel criterion: hand-worked ROC/AUC/EER and a brute-force threshold sweep."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lavida.metrics import PixelCriterion, pixel_criterion


def hand_frames() -> tuple[np.ndarray, np.ndarray]:
    """Four 2x5 frames: two anomalous, two normal."""
    scores = np.zeros((4, 2, 5))
    labels = np.zeros((4, 2, 5), dtype=bool)
    # Frame A: 5 anomalous pixels scored .9 .6 .3 .2 .1; k = ceil(0.4 * 5) = 2 -> critical score .6.
    # Its background fires at .95 too: the criterion never penalises that (known flaw).
    labels[0, 0] = True
    scores[0, 0] = [0.9, 0.6, 0.3, 0.2, 0.1]
    scores[0, 1] = 0.95
    # Frame B: 3 anomalous pixels .7 .5 .4; k = ceil(0.4 * 3) = ceil(1.2) = 2 -> critical .5.
    labels[1, 0, :3] = True
    scores[1, 0, :3] = [0.7, 0.5, 0.4]
    # Frame C: normal, max .55 -> a FP for t <= .55.   Frame D: normal, max .3.
    scores[2, 1, 4] = 0.55
    scores[3, 0, 0] = 0.3
    return scores, labels


def test_hand_worked_40_percent_rule():
    scores, labels = hand_frames()
    result = pixel_criterion([scores], [labels])
    # Sweep from strict to lenient:
    #   t in (.6, inf):  nothing             -> (FPR, TPR) = (0, 0)
    #   t in (.55, .6]:  A is a TP           -> (0, .5)
    #   t in (.5, .55]:  C fires (FP)        -> (.5, .5)
    #   t in (.3, .5]:   B is a TP           -> (.5, 1)
    #   t <= .3:         D fires             -> (1, 1)
    # AUC = .5 * .5 (FPR 0 -> .5 at TPR .5) + .5 * 1 (FPR .5 -> 1 at TPR 1) = .75.
    np.testing.assert_allclose(result.fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(result.tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(result.thresholds[1:], [0.6, 0.55, 0.5, 0.3])
    assert result.auc == pytest.approx(0.75, abs=1e-12)
    # FNR = 1 - TPR: (0,1) (0,.5) (.5,.5) ... FPR = FNR exactly at the point (.5, .5), threshold .55.
    assert result.eer == pytest.approx(0.5, abs=1e-12)
    assert result.eer_threshold == pytest.approx(0.55)
    assert (result.num_anomalous_frames, result.num_normal_frames) == (2, 2)


def test_lower_coverage_changes_critical_scores():
    scores, labels = hand_frames()
    # min_coverage .2: k = ceil(.2 * 5) = 1 for A (critical .9), ceil(.2 * 3) = 1 for B (critical .7).
    # Both anomalous frames are TPs before any normal frame fires -> a perfect ROC, AUC 1, EER 0.
    result = pixel_criterion([scores], [labels], min_coverage=0.2)
    assert result.auc == 1.0
    assert result.eer == 0.0


@pytest.mark.parametrize("coverage", [0.4, np.float32(0.4)])
def test_coverage_is_compared_exactly(coverage):
    # 5 anomalous pixels at 40 %: exactly 2 must fire (0.4 * 5 = 2.0000000000000004 in floating point
    # would wrongly ask for 3, and so would a float32 0.4 = 0.4000000059604645 taken at face value).
    # Pixels .9 .8 fire at t = .8 -> TP there.
    scores = np.array([[[0.9, 0.8, 0.1, 0.1, 0.1, 0.0]], [[0.0, 0.0, 0.0, 0.0, 0.0, 0.85]]])
    labels = np.array([[[1, 1, 1, 1, 1, 0]], [[0, 0, 0, 0, 0, 0]]])
    metric = PixelCriterion(min_coverage=coverage)
    metric.update(scores, labels)
    result = metric.compute()
    np.testing.assert_allclose(result.thresholds[1:], [0.85, 0.8])
    np.testing.assert_allclose(result.tpr, [0, 0, 1])


def test_coverage_with_many_digits_on_large_frames():
    """min_coverage 1/3 given as a float: k = ceil(c * n) must be 1000 of 3,000 anomalous pixels, and its
    integer arithmetic must not overflow int64 (with c = 3333333333333333/10**16 it once picked another
    pixel's score, 0.28 instead of 0.667)."""
    n = 3000
    scores = np.zeros((2, 1, n + 1))
    labels = np.zeros((2, 1, n + 1), dtype=bool)
    labels[0, 0, :n] = True
    scores[0, 0, :n] = np.arange(1, n + 1) / n  # 1/3000 ... 1
    metric = PixelCriterion(min_coverage=1 / 3)
    metric.update(scores, labels)
    k = 1000  # ceil(3000 / 3)
    assert metric.state_dict()["critical"][0] == pytest.approx(scores[0, 0, n - k])


def brute_force_roc(scores, labels, thresholds, coverage=0.4):
    """Independent oracle: apply the rule literally at every threshold."""
    fired = scores[None] >= thresholds[:, None, None, None]  # (K, T, H, W)
    n_gt = labels.sum(axis=(1, 2))
    hit = (fired & labels[None]).sum(axis=(2, 3))
    anomalous = n_gt > 0
    tp = (hit >= coverage * n_gt - 1e-9)[:, anomalous].mean(axis=1)
    fp = fired.any(axis=(2, 3))[:, ~anomalous].mean(axis=1)
    return fp, tp


def test_matches_brute_force_sweep_on_random_maps():
    rng = np.random.default_rng(0)
    labels = np.zeros((30, 10, 10), dtype=bool)
    for t in range(0, 30, 2):  # every other frame has a random anomalous rectangle
        y0, x0 = rng.integers(0, 6, 2)
        labels[t, y0 : y0 + rng.integers(1, 5), x0 : x0 + rng.integers(1, 5)] = True
    scores = np.round(np.clip(rng.normal(0.15 + 0.35 * labels, 0.12), 0, 1), 2)
    thresholds = np.linspace(1.01, -0.01, 103)  # the py-ssvad-metrics grid
    fp, tp = brute_force_roc(scores, labels, thresholds)
    grid = pixel_criterion([scores[:15], scores[15:]], [labels[:15], labels[15:]], thresholds=thresholds)
    np.testing.assert_allclose(grid.fpr, fp)
    np.testing.assert_allclose(grid.tpr, tp)
    assert grid.auc == pytest.approx(np.trapezoid(tp, fp), abs=1e-12)
    # Scores are multiples of .01; a grid offset by half a step has exactly one of them between two
    # neighbouring thresholds, so it visits every ROC point of the exact sweep and gives the same area.
    # (On the py-ssvad grid a threshold that rounds to just above a multiple of .01 can merge two steps.)
    exact = pixel_criterion([scores], [labels])
    half = pixel_criterion([scores], [labels], thresholds=np.arange(-1, 102) / 100 + 0.005)
    assert exact.auc == pytest.approx(half.auc, abs=1e-12)
    assert exact.auc == pytest.approx(grid.auc, abs=0.01)
    assert 0.5 < exact.auc < 1.0


def test_undefined_and_invalid():
    with pytest.raises(ValueError, match="0 anomalous and 2 normal frames"):
        pixel_criterion([np.zeros((2, 3, 3))], [np.zeros((2, 3, 3))])
    with pytest.raises(ValueError, match="min_coverage"):
        PixelCriterion(min_coverage=0.0)
    with pytest.raises(ValueError, match="shape"):
        PixelCriterion().update(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))


def test_eer_interpolated_on_a_tied_segment():
    # One anomalous pixel per anomalous frame (k = ceil(.4) = 1), so critical scores are:
    # anomalous .9 and .5, normal .5 and .1 (each frame is 1x2, the second pixel 0).
    # ROC: (0,0) -> (0,.5) at .9 -> (.5,1) at .5 (a tie: one TP and one FP together) -> (1,1) at .1.
    # AUC = .5 * (.5 + 1) / 2 + .5 * 1 = .875.
    # FNR = 1 - TPR falls from .5 to 0 while FPR rises from 0 to .5 on the tied segment:
    # FPR = .5 w, FNR = .5 - .5 w, equal at w = .5 -> EER = .25 (not a ROC vertex).
    scores = np.array([[[0.9, 0.0]], [[0.5, 0.0]], [[0.5, 0.0]], [[0.1, 0.0]]])
    labels = np.array([[[1, 0]], [[1, 0]], [[0, 0]], [[0, 0]]])
    result = pixel_criterion([scores], [labels])
    assert result.auc == pytest.approx(0.875, abs=1e-12)
    assert result.eer == pytest.approx(0.25, abs=1e-12)
    assert result.eer_threshold == pytest.approx(0.5)


def test_state_round_trip_and_merge_equal_the_whole():
    from lavida.metrics import PixelCriterion

    rng = np.random.default_rng(3)
    scores = rng.random((12, 6, 7))
    labels = np.zeros((12, 6, 7), bool)
    labels[::3, 1:4, 2:5] = True
    whole = PixelCriterion()
    whole.update(scores, labels)
    first, second = PixelCriterion(), PixelCriterion()
    first.update(scores[:5], labels[:5])
    second.update(scores[5:], labels[5:])
    restored = PixelCriterion()
    restored.load_state_dict({k: v.copy() for k, v in first.state_dict().items()})
    restored.merge(second)
    assert restored.compute().auc == whole.compute().auc
    assert restored.compute().eer == whole.compute().eer


def test_merge_returns_self_and_refuses_another_coverage():
    """merge() returns ``self``; frames judged under 40 % and under 20 % cannot share one ROC."""
    scores, labels = hand_frames()
    first, second = PixelCriterion(), PixelCriterion()
    first.update(scores[:2], labels[:2])
    second.update(scores[2:], labels[2:])
    assert first.merge(second) is first
    assert first.compute().auc == pytest.approx(0.75, abs=1e-12)  # the hand-worked whole
    with pytest.raises(ValueError, match="same min_coverage"):
        PixelCriterion(min_coverage=0.2).merge(second)
    with pytest.raises(ValueError, match="same min_coverage"):
        PixelCriterion().merge(object())


def test_empty_state_round_trips():
    """A fresh accumulator holds no frame: its state is two empty arrays of equal length, and loading it
    (e.g. a shard that saw nothing) then adding frames gives the frames' own result."""
    state = PixelCriterion().state_dict()
    assert state["critical"].shape == state["anomalous"].shape == (0,)
    scores, labels = hand_frames()
    restored = PixelCriterion()
    restored.load_state_dict(state)
    restored.update(scores, labels)
    assert restored.compute().auc == pytest.approx(0.75, abs=1e-12)


def test_load_state_dict_refuses_a_state_missing_a_key_or_with_unequal_arrays():
    state = PixelCriterion().state_dict()
    with pytest.raises(ValueError, match=r"^PixelCriterion.load_state_dict: missing keys \['anomalous'\]\.$"):
        PixelCriterion().load_state_dict({"critical": state["critical"]})
    unequal = {"critical": np.array([0.2, 0.4]), "anomalous": np.array([True])}
    with pytest.raises(ValueError, match=r"'critical' \(2,\) and 'anomalous' \(1,\) differ in length\.$"):
        PixelCriterion().load_state_dict(unequal)


def test_coverage_bounds_and_full_coverage():
    """min_coverage lies in (0, 1]. At 1 every anomalous pixel must fire, so the critical score is the
    lowest anomalous-pixel score: .1 for frame A and .4 for frame B of the hand-worked frames."""
    for bad in (1.5, 1.0 + 1e-9, -0.1):
        with pytest.raises(ValueError, match="min_coverage"):
            PixelCriterion(min_coverage=bad)
    scores, labels = hand_frames()
    metric = PixelCriterion(min_coverage=1.0)
    metric.update(scores, labels)
    np.testing.assert_allclose(metric.state_dict()["critical"], [0.1, 0.4, 0.55, 0.3])


def test_small_coverage_needs_one_pixel_of_a_thousand():
    # min_coverage 0.001 of 1,000 anomalous pixels: ceil(1) = 1 pixel, so the critical score is the
    # largest anomalous-pixel score.
    scores = np.zeros((1, 1, 1001))
    labels = np.zeros((1, 1, 1001), dtype=bool)
    labels[0, 0, :1000] = True
    scores[0, 0, :1000] = np.linspace(0.0, 0.9, 1000)
    metric = PixelCriterion(min_coverage=0.001)
    metric.update(scores, labels)
    assert metric.state_dict()["critical"][0] == pytest.approx(0.9)


@pytest.mark.parametrize("shape", [(3, 0, 4), (3, 4, 0), (0, 0), (2, 3, 4, 5), (5,)])
def test_maps_without_pixels_or_with_the_wrong_rank_are_refused(shape):
    metric = PixelCriterion()
    with pytest.raises(ValueError, match=r"non-empty \(T, H, W\)"):
        metric.update(np.zeros(shape), np.zeros(shape, dtype=bool))
    assert metric.state_dict()["critical"].size == 0


def test_one_pixel_frames_and_a_single_threshold_are_valid():
    # Four 1x1 frames: anomalous .8 and .4, normal .6 and .2. At the single threshold .5: TPR 1/2,
    # FPR 1/2, one ROC point.
    scores = np.array([0.8, 0.4, 0.6, 0.2]).reshape(4, 1, 1)
    labels = np.array([1, 1, 0, 0], dtype=bool).reshape(4, 1, 1)
    result = pixel_criterion([scores], [labels], thresholds=[0.5])
    np.testing.assert_allclose(result.fpr, [0.5])
    np.testing.assert_allclose(result.tpr, [0.5])
    assert result.thresholds.tolist() == [0.5]


@pytest.mark.parametrize("thresholds", [[], [0.5, np.nan], [np.inf, 0.5], [0.5, -np.inf]])
def test_empty_or_non_finite_threshold_grids_are_refused(thresholds):
    scores, labels = hand_frames()
    with pytest.raises(ValueError, match="non-empty array of finite numbers"):
        pixel_criterion([scores], [labels], thresholds=thresholds)


def test_result_is_immutable():
    scores, labels = hand_frames()
    result = pixel_criterion([scores], [labels])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.auc = 1.0
