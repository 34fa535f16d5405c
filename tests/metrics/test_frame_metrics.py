"""frame_auc / frame_ap against hand-worked cases, an independent pair count, and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from lavida.metrics import frame_ap, frame_auc


def pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Independent oracle: P(s+ > s-) + 0.5 P(s+ == s-) over all positive/negative pairs."""
    pos = scores[labels.astype(bool)][:, None]
    neg = scores[~labels.astype(bool)][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


# --------------------------------------------------------------------------------------------- micro
def test_micro_auc_hand_worked_with_tie():
    # Video A: scores [0.1, 0.4, 0.4], labels [0, 0, 1]; video B: scores [0.8, 0.2], labels [1, 0].
    # Pooled negatives {0.1, 0.4, 0.2}, positives {0.4, 0.8}.
    # 0.4 beats 0.1 (1), ties 0.4 (1/2), beats 0.2 (1)  -> 2.5
    # 0.8 beats all three                               -> 3
    # AUC = 5.5 / (2 * 3) = 11/12
    scores = [np.array([0.1, 0.4, 0.4]), np.array([0.8, 0.2])]
    labels = [np.array([0, 0, 1]), np.array([1, 0])]
    assert frame_auc(scores, labels) == pytest.approx(11 / 12, abs=1e-12)
    assert frame_auc(scores, labels, average="micro") == pytest.approx(11 / 12, abs=1e-12)


def test_micro_auc_matches_pair_count_and_sklearn_on_random_videos():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 200, size=12)
    labels = [rng.random(n) < 0.3 for n in lengths]
    # Rounded scores: plenty of ties across classes.
    scores = [np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1), 2) for y in labels]
    value = frame_auc(scores, labels)
    cat_s, cat_y = np.concatenate(scores), np.concatenate(labels)
    assert value == pytest.approx(pairwise_auc(cat_s, cat_y), abs=1e-12)
    assert value == pytest.approx(roc_auc_score(cat_y, cat_s), abs=1e-12)
    assert 0.6 < value < 0.9  # a real signal, not a degenerate 0.5 or 1


def test_micro_auc_accepts_bool_int_float_labels_and_lists():
    s = [[0.2, 0.9, 0.5]]
    expected = 1.0  # positive 0.9 beats both negatives
    for y in ([[0, 1, 0]], [[False, True, False]], [np.array([0.0, 1.0, 0.0])]):
        assert frame_auc(s, y) == expected


# --------------------------------------------------------------------------------------------- macro
def test_macro_auc_hand_worked_with_sentinels():
    # Video A (all normal): padded scores [0, .2, .6, 1], labels [0, 0, 0, 1]: the sentinel positive 1
    #   beats the three negatives -> AUC 1.
    # Video B: padded scores [0, .7, .3, 1], labels [0, 0, 1, 1]: positives {.3, 1}, negatives {0, .7}:
    #   .3 beats 0 (1) loses to .7 (0); 1 beats both (2) -> 3/4.
    # Macro = (1 + 0.75) / 2 = 0.875.
    scores = [np.array([0.2, 0.6]), np.array([0.7, 0.3])]
    labels = [np.array([0, 0]), np.array([0, 1])]
    assert frame_auc(scores, labels, average="macro") == pytest.approx(0.875, abs=1e-12)


def test_macro_auc_matches_per_video_sklearn_with_padding():
    rng = np.random.default_rng(2)
    scores, labels, expected = [], [], []
    for n in (3, 17, 40, 1):
        y = rng.random(n) < 0.5
        s = rng.random(n)
        scores.append(s)
        labels.append(y)
        expected.append(roc_auc_score(np.r_[0, y, 1], np.r_[0.0, s, 1.0]))
    assert frame_auc(scores, labels, average="macro") == pytest.approx(np.mean(expected), abs=1e-12)


def test_macro_defined_for_all_abnormal_video_where_micro_is_not():
    scores, labels = [np.array([0.3, 0.9])], [np.array([1, 1])]
    # Padded: positives {.3, .9, 1}, negative {0}: all beat it -> 1.0.
    assert frame_auc(scores, labels, average="macro") == 1.0
    with pytest.raises(ValueError, match="all 2 frames are labelled anomalous"):
        frame_auc(scores, labels, average="micro")


# ------------------------------------------------------------------------------------------------ AP
def test_ap_hand_worked_both_methods():
    # Scores [.9, .8, .7, .6], labels [1, 0, 1, 0]. Thresholds high to low:
    #   .9: P=1,   R=.5;  .8: P=.5, R=.5;  .7: P=2/3, R=1;  .6: P=.5, R=1.
    # sklearn AP = sum (R_k - R_{k-1}) P_k = .5 * 1 + 0 + .5 * 2/3 = 5/6.
    # Trapezoid over the PR points sorted by recall, (0,1) (.5,1) (.5,.5) (1,2/3) (1,.5):
    #   .5 * (1 + 1) / 2 + 0 + .5 * (.5 + 2/3) / 2 + 0 = 12/24 + 7/24 = 19/24.
    scores, labels = [np.array([0.9, 0.8, 0.7, 0.6])], [np.array([1, 0, 1, 0])]
    assert frame_ap(scores, labels) == pytest.approx(5 / 6, abs=1e-12)
    assert frame_ap(scores, labels, method="trapezoid") == pytest.approx(19 / 24, abs=1e-12)


def test_ap_matches_sklearn_on_concatenation():
    rng = np.random.default_rng(3)
    labels = [rng.random(n) < 0.2 for n in (50, 80, 9)]
    scores = [rng.random(y.size) * 0.7 + 0.3 * y for y in labels]
    expected = average_precision_score(np.concatenate(labels), np.concatenate(scores))
    assert frame_ap(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_ap_without_positive_raises():
    with pytest.raises(ValueError, match="at least one anomalous frame"):
        frame_ap([np.array([0.1, 0.2])], [np.array([0, 0])])


# -------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("scores", "labels", "error", "message"),
    [
        ([np.zeros(3)], [np.zeros(4)], ValueError, r"video 0: scores\[0\] has shape \(3,\) but labels\[0\]"),
        ([np.zeros(3), np.zeros(2)], [np.zeros(3)], ValueError, "2 score arrays but 1 label arrays"),
        ([np.array([0.5, 1.5])], [np.array([0, 1])], ValueError, "probabilities in \\[0, 1\\].*sigmoid"),
        ([np.array([0.5, np.nan])], [np.array([0, 1])], ValueError, "NaN"),
        ([np.array([0.5, 0.2])], [np.array([0, 2])], ValueError, "only 0 and 1"),
        ([np.zeros((2, 2))], [np.zeros((2, 2))], ValueError, r"shape \(T,\)"),
        ([np.zeros(0)], [np.zeros(0)], ValueError, "video 0 is empty"),
        ([], [], ValueError, "no videos"),
        (np.zeros(3), np.zeros(3), TypeError, "wrap a single video"),
    ],
)
def test_invalid_inputs_raise_with_clear_message(scores, labels, error, message):
    with pytest.raises(error, match=message):
        frame_auc(scores, labels)


def test_micro_all_normal_raises_and_unknown_options_raise():
    with pytest.raises(ValueError, match="labelled normal"):
        frame_auc([np.array([0.1, 0.2])], [np.array([0, 0])])
    with pytest.raises(ValueError, match="'micro' or 'macro'"):
        frame_auc([np.array([0.1, 0.2])], [np.array([0, 1])], average="weighted")
    with pytest.raises(ValueError, match="'sklearn' or 'trapezoid'"):
        frame_ap([np.array([0.1, 0.2])], [np.array([0, 1])], method="interp")
