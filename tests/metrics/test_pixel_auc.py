"""PixelAUC against sklearn on random and adversarial pixels, plus merge / state / error behaviour."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lavida.metrics import PixelAUC

TOL = 1e-4


def assert_matches_sklearn(scores: np.ndarray, labels: np.ndarray, **kwargs) -> PixelAUC:
    metric = PixelAUC(**kwargs)
    metric.update(scores, labels)
    expected = roc_auc_score(labels.reshape(-1), scores.reshape(-1))
    value = metric.compute()
    bound = metric.error_bound()
    # The documented guarantee, and the contract's tolerance.
    assert abs(value - expected) <= bound + 1e-12
    assert abs(value - expected) <= TOL
    return metric


def test_hand_worked_with_exact_ends():
    # Scores [0, .25, .5, 1, 1], labels [0, 1, 0, 1, 0]: positives {.25, 1}, negatives {0, .5, 1}.
    #   .25 beats 0 (1), loses to .5 and 1 (0)      -> 1
    #   1   beats 0 and .5 (2), ties the negative 1 -> 2.5
    # AUC = 3.5 / (2 * 3) = 7/12; every value sits alone in its bin, so the error bound is 0.
    metric = PixelAUC()
    metric.update(np.array([0.0, 0.25, 0.5, 1.0, 1.0]), np.array([0, 1, 0, 1, 0]))
    assert metric.compute() == pytest.approx(7 / 12, abs=1e-15)
    assert metric.error_bound() == 0.0
    assert (metric.num_positive, metric.num_negative) == (2, 3)


def test_random_maps_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.random((6, 48, 64)) < 0.1
    scores = np.clip(rng.normal(0.35 + 0.25 * labels, 0.2), 0, 1)
    metric = assert_matches_sklearn(scores, labels)
    assert metric.error_bound() < 1e-5


@pytest.mark.parametrize(
    "case",
    ["rounded_ties", "saturated_ends", "tiny_scores", "near_one_float64", "float32_sigmoid", "imbalanced"],
)
def test_adversarial_inputs_match_sklearn(case):
    rng = np.random.default_rng(42)
    n = 200_000
    labels = rng.random(n) < 0.3
    if case == "rounded_ties":
        # Only 11 distinct values: ties everywhere, across both classes.
        scores = np.round(np.clip(rng.normal(0.5 + 0.1 * labels, 0.3), 0, 1), 1)
    elif case == "saturated_ends":
        # Most pixels exactly 0 or 1, in both classes; the rest uniform.
        scores = rng.random(n)
        scores[rng.random(n) < 0.4] = 0.0
        scores[rng.random(n) < 0.3] = 1.0
        scores[labels & (rng.random(n) < 0.5)] = 1.0
    elif case == "tiny_scores":
        # Distinct scores squeezed into (0, 1e-9]: a uniform 2**16-bin histogram would tie them all.
        scores = rng.random(n) * 1e-9 * (1 + 0.5 * labels)
    elif case == "near_one_float64":
        # Distinct scores within 1e-9 of 1 (float32 could not even tell them apart).
        scores = 1.0 - rng.random(n) * 1e-9 * (1 + 0.5 * ~labels)
    elif case == "float32_sigmoid":
        logits = rng.normal(-8 + 10 * labels, 6)
        scores = (1 / (1 + np.exp(-logits))).astype(np.float32)
    else:  # imbalanced: 10 anomalous pixels among 200k
        labels = np.zeros(n, dtype=bool)
        labels[rng.choice(n, 10, replace=False)] = True
        scores = np.clip(rng.normal(0.3 + 0.2 * labels, 0.15), 0, 1)
    assert_matches_sklearn(scores, labels)


def test_bins_are_monotone_and_width_independent():
    metric = PixelAUC()
    grid = np.sort(
        np.concatenate(
            (
                [0.0, 1.0, 0.5, np.nextafter(0.5, 1), np.nextafter(0.5, 0), 5e-324, 1e-300],
                np.random.default_rng(0).random(10_000),
                np.logspace(-40, -0.302, 2000),
                1 - np.logspace(-15, -0.302, 2000),  # float64 cannot hold 1 - d for d < 1.1e-16
            )
        )
    )
    idx = metric._bin_index(grid)
    assert (np.diff(idx) >= 0).all()
    assert idx[0] == 0 and idx[-1] == metric.num_bins - 1
    # Exact ends have bins of their own.
    assert (idx == 0).sum() == 1 and (idx == metric.num_bins - 1).sum() == 1
    # The same value gives the same bin whether it arrives as float32 or float64 (merge consistency).
    as32 = grid.astype(np.float32)
    assert np.array_equal(metric._bin_index(as32), metric._bin_index(as32.astype(np.float64)))


def test_merge_of_two_halves_equals_whole():
    rng = np.random.default_rng(5)
    labels = rng.random((4, 32, 32)) < 0.2
    scores = rng.random((4, 32, 32)) ** (1.5 - labels)
    whole = PixelAUC()
    whole.update(scores, labels)
    first, second = PixelAUC(), PixelAUC()
    first.update(scores[:2], labels[:2])
    second.update(scores[2:], labels[2:].astype(np.uint8))
    merged = first.merge(second)
    assert merged is first
    assert merged.compute() == whole.compute()
    assert np.array_equal(merged.state_dict()["bins"], whole.state_dict()["bins"])
    third = PixelAUC()
    third += second
    assert third.num_positive == second.num_positive
    with pytest.raises(ValueError, match="quantisers differ"):
        PixelAUC(mantissa_bits=10).merge(whole)
    with pytest.raises(TypeError, match="expected a PixelAUC"):
        whole.merge(0.5)


def test_state_dict_round_trip_through_npz_and_resume(tmp_path):
    rng = np.random.default_rng(6)
    chunks = [(rng.random((8, 8)), rng.random((8, 8)) < 0.3) for _ in range(4)]
    uninterrupted = PixelAUC()
    for s, y in chunks:
        uninterrupted.update(s, y)

    before = PixelAUC()
    for s, y in chunks[:2]:
        before.update(s, y)
    path = tmp_path / "pixel_auc.npz"
    np.savez(path, **before.state_dict())
    with np.load(path, allow_pickle=False) as state:  # plain arrays: no pickle needed
        resumed = PixelAUC()
        resumed.load_state_dict(dict(state))
    assert resumed.num_positive == before.num_positive
    for s, y in chunks[2:]:
        resumed.update(s, y)
    assert resumed.compute() == uninterrupted.compute()


def test_load_state_dict_rejects_bad_states():
    state = PixelAUC().state_dict()
    with pytest.raises(ValueError, match="missing keys"):
        PixelAUC().load_state_dict({"bins": state["bins"]})
    with pytest.raises(ValueError, match="same settings"):
        PixelAUC(octaves=20).load_state_dict(state)
    bad = dict(state, bins=np.array([-1]), negatives=np.array([1]), positives=np.array([0]))
    with pytest.raises(ValueError, match="distinct indices"):
        PixelAUC().load_state_dict(bad)
    with pytest.raises(ValueError, match=r"state version 99, expected 1\.$"):
        PixelAUC().load_state_dict(dict(state, version=np.array(99)))
    unequal = dict(state, bins=np.array([3, 4]), negatives=np.array([1]), positives=np.array([0]))
    with pytest.raises(ValueError, match=r"must have equal lengths, got \(2,\), \(1,\), \(1,\)\.$"):
        PixelAUC().load_state_dict(unequal)


def test_reset_and_undefined_auc():
    metric = PixelAUC()
    metric.update(np.array([0.2, 0.4]), np.array([False, False]))
    with pytest.raises(ValueError, match="0 anomalous and 2 normal pixels"):
        metric.compute()
    metric.update(np.array([0.3]), np.array([True]))
    # Positive 0.3 beats 0.2, loses to 0.4 -> 1/2.
    assert metric.compute() == 0.5
    metric.reset()
    assert metric.num_positive == metric.num_negative == 0


def test_invalid_update_raises_and_adds_nothing():
    metric = PixelAUC()
    with pytest.raises(ValueError, match="shape"):
        metric.update(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="sigmoid"):
        metric.update(np.array([0.1, -0.2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        metric.update(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        metric.update(np.array([0.1, 0.2]), np.array([0, 255]))
    assert metric.num_positive == metric.num_negative == 0
    with pytest.raises(ValueError, match="mantissa_bits"):
        PixelAUC(mantissa_bits=0)


def test_small_chunks_give_identical_counts():
    rng = np.random.default_rng(7)
    s, y = rng.random(10_001), rng.random(10_001) < 0.5
    a, b = PixelAUC(), PixelAUC(chunk_size=97)
    a.update(s, y)
    b.update(s, y)
    assert a.compute() == b.compute()


def test_coarse_quantiser_warns_and_bound_still_holds(caplog):
    rng = np.random.default_rng(8)
    labels = rng.random(50_000) < 0.5
    scores = 0.3 + 0.01 * rng.random(50_000) + 0.001 * labels  # all inside a few coarse bins
    metric = PixelAUC(mantissa_bits=2, octaves=4)
    metric.update(scores, labels)
    with caplog.at_level(logging.WARNING, logger="lavida.metrics.pixel"):
        value = metric.compute()
    assert "error bound" in caplog.text
    assert abs(value - roc_auc_score(labels, scores)) <= metric.error_bound()
    assert metric.error_bound() > 1e-2


def test_exactly_tied_scores_are_exact_ties_whatever_the_bound_says(caplog):
    """The warning's claim: pixels that share a score exactly are counted as ties, as sklearn does, so a
    near-constant model's AUC is exact although the bound (which cannot tell such ties apart) is large."""
    rng = np.random.default_rng(0)
    scores = np.where(rng.random((4, 32, 32)) < 0.5, 0.3, 0.7)
    labels = rng.random((4, 32, 32)) < 0.2 + 0.5 * (scores > 0.5)
    metric = PixelAUC()
    metric.update(scores, labels)
    assert metric.compute() == pytest.approx(roc_auc_score(labels.ravel(), scores.ravel()), abs=1e-12)
    assert metric.error_bound() > 0.1
    assert "share a score exactly" in caplog.text


def test_quantiser_settings_bounds_and_the_documented_size():
    """Class docstring: mantissa_bits in [1, 20], octaves in [1, 125], chunk_size >= 1; defaults (14, 40)
    give 1,277,958 bins, and the counts take 32 * (3 + (octaves - 1) * 2**mantissa_bits) bytes."""
    default = PixelAUC()
    assert (default.mantissa_bits, default.octaves) == (14, 40)
    assert default.num_bins == 1_277_958
    for mantissa_bits, octaves in ((14, 40), (1, 1), (3, 5), (20, 1), (1, 125)):
        metric = PixelAUC(mantissa_bits=mantissa_bits, octaves=octaves)
        assert metric.num_bins == 2 * (3 + (octaves - 1) * 2**mantissa_bits)
        assert metric._counts.nbytes == 32 * (3 + (octaves - 1) * 2**mantissa_bits)
    for bad in ({"mantissa_bits": 21}, {"octaves": 0}, {"octaves": 126}, {"chunk_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PixelAUC(**bad)
    # The smallest chunk, one pixel per step, is valid and counts the same.
    rng = np.random.default_rng(9)
    s, y = rng.random(257), rng.random(257) < 0.5
    a, b = PixelAUC(), PixelAUC(chunk_size=1)
    a.update(s, y)
    b.update(s, y)
    assert np.array_equal(a._counts, b._counts)


def test_warning_only_when_the_bound_exceeds_1e_4(caplog):
    """compute() warns when the bound *exceeds* 1e-4. One exactly tied positive/negative pair (0.3) and
    otherwise distinct, well-separated scores: the bound is 1 / (2 P N), 1e-4 exactly for P N = 5000
    (no warning) and 1.25e-4 for P N = 4000 (warning)."""
    for n_pos, warns in ((50, False), (40, True)):
        positives = np.r_[0.3, 0.6 + 0.001 * np.arange(n_pos - 1)]
        negatives = np.r_[0.3, 0.1 + 0.001 * np.arange(99)]
        metric = PixelAUC()
        metric.update(np.r_[positives, negatives], np.r_[np.ones(n_pos, bool), np.zeros(100, bool)])
        assert metric.error_bound() == 1 / (2 * n_pos * 100)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lavida.metrics.pixel"):
            metric.compute()
        assert ("error bound" in caplog.text) == warns


def test_state_with_the_exact_end_bins_round_trips_and_bad_bins_or_counts_are_refused():
    """Scores exactly 0 and 1 fill bins 0 and num_bins - 1, valid indices of a state. A state is refused
    when a bin is out of range or repeated (two counts for one bin), or any count is negative."""
    metric = PixelAUC(mantissa_bits=4, octaves=4)
    metric.update(np.array([0.0, 0.0, 0.4, 1.0, 1.0, 0.7]), np.array([0, 1, 0, 1, 0, 1]))
    state = metric.state_dict()
    assert state["bins"][0] == 0 and state["bins"][-1] == metric.num_bins - 1
    restored = PixelAUC(mantissa_bits=4, octaves=4)
    restored.load_state_dict(state)
    assert np.array_equal(restored._counts, metric._counts)
    # Distinct bins in another order (not as state_dict writes them) are a valid state too.
    reversed_state = {k: (v[::-1] if v.ndim else v) for k, v in state.items()}
    restored.load_state_dict(reversed_state)
    assert np.array_equal(restored._counts, metric._counts)

    def with_(bins, negatives, positives):
        return dict(state, bins=np.array(bins), negatives=np.array(negatives), positives=np.array(positives))

    for bad in (
        with_([metric.num_bins], [1], [0]),  # one past the last bin
        with_([5, 5], [1, 1], [0, 0]),  # a repeated bin
        with_([3, 5, 5], [1, 1, 1], [0, 0, 0]),
        with_([5, 3, 3], [1, 1, 1], [0, 0, 0]),
    ):
        with pytest.raises(ValueError, match="distinct indices"):
            restored.load_state_dict(bad)
    for negatives, positives in (([-1], [0]), ([0], [-1])):
        with pytest.raises(ValueError, match="non-negative"):
            restored.load_state_dict(with_([5], negatives, positives))
    assert np.array_equal(restored._counts, metric._counts)  # refused states leave the counts alone


def test_repr_names_the_settings_and_counts():
    metric = PixelAUC(mantissa_bits=3, octaves=5)
    metric.update(np.array([0.1, 0.9, 0.5]), np.array([0, 1, 0]))
    assert repr(metric) == "PixelAUC(mantissa_bits=3, octaves=5, positive=1, negative=2)"
