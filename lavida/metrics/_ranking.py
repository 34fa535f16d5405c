"""Small ranking helpers: the exact ROC-AUC of one set of scores, and the equal error rate."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["binary_auc", "equal_error_rate"]


def binary_auc(scores: NDArray[np.floating], labels: NDArray[np.bool_]) -> float:
    """ROC-AUC of one set of scores, exact: the Mann-Whitney count of positive/negative pairs.

    ``AUC = (#pairs with the positive higher + 1/2 #tied pairs) / (P N)``, the number
    ``sklearn.metrics.roc_auc_score`` returns (its trapezoid through a block of tied scores counts each
    tied pair one half). The larger class is sorted once and each score of the smaller class is placed
    with two binary searches (strictly below / up to it), so the counts are integers and the memory is
    one copy of the scores plus two int64 per score of the smaller class, whatever the tie structure:
    a per-frame mid-rank computation needs float64 ranks and int64 sort indices for every pixel.

    Args:
        scores: ``(N,)`` scores.
        labels: ``(N,)`` bool labels.

    Returns:
        The AUC as a float; NaN when there is no positive or no negative.
    """
    pos, neg = scores[labels], scores[~labels]
    n_pos, n_neg = pos.size, neg.size
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    if n_pos <= n_neg:
        neg.sort()
        # Twice the positive's wins: 2 per negative strictly below, 1 per tie = below + up-to.
        twice_wins = int(np.searchsorted(neg, pos, side="left").sum()) + int(
            np.searchsorted(neg, pos, side="right").sum()
        )
    else:
        pos.sort()
        # Per negative: 2 per positive strictly above (n_pos - up-to), 1 per tie (up-to - below).
        twice_wins = (
            2 * n_pos * n_neg
            - int(np.searchsorted(pos, neg, side="left").sum())
            - int(np.searchsorted(pos, neg, side="right").sum())
        )
    return twice_wins / (2 * n_pos * n_neg)


def equal_error_rate(
    fpr: NDArray[np.floating], tpr: NDArray[np.floating], thresholds: NDArray[np.floating]
) -> tuple[float, float]:
    """Equal error rate of a ROC curve: the FPR where FPR = FNR = 1 - TPR.

    The ROC points are joined by straight lines (as for the trapezoidal AUC) and the crossing of
    ``fpr`` with ``1 - tpr`` is interpolated on the segment where ``fpr - (1 - tpr)`` changes sign.

    Args:
        fpr: ``(K,)`` false positive rates, non-decreasing, from the strictest threshold on.
        tpr: ``(K,)`` true positive rates.
        thresholds: ``(K,)`` the threshold of each point.

    Returns:
        ``(eer, threshold)``: the interpolated EER, and the threshold of the first ROC point at or
        past the crossing (a score at which the operating point is closest from the lenient side). A
        curve that never crosses gives the mean of FPR and FNR at its end nearest the crossing.
    """
    fnr = 1.0 - tpr
    diff = fpr - fnr  # non-decreasing along the curve: fpr grows, fnr shrinks
    i = int(np.searchsorted(diff, 0.0, side="left"))
    # A curve that misses the crossing (a threshold grid that stops short of it, or starts past it) is
    # read at its end nearest the crossing, both ends alike: the mean of FPR and FNR there.
    if i >= len(diff):
        return float((fpr[-1] + fnr[-1]) / 2), float(thresholds[-1])
    if i == 0 or diff[i] == 0.0:  # on a point of the curve (FPR = FNR there), or past it from the start
        return float((fpr[i] + fnr[i]) / 2), float(thresholds[i])
    # Linear interpolation between point i-1 (diff < 0) and point i (diff > 0).
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    return float(eer), float(thresholds[i])
