"""Small ranking helpers: exact ROC-AUC from mid-ranks (batched) and the equal error rate."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata

__all__ = ["equal_error_rate", "rank_auc"]


def rank_auc(scores: NDArray[np.floating], labels: NDArray[np.bool_]) -> NDArray[np.float64]:
    """ROC-AUC of each row, computed exactly from mid-ranks (Mann-Whitney U).

    ``AUC = (sum of the positives' ranks - P (P + 1) / 2) / (P N)`` with tied scores given their
    average rank. This is the same number ``sklearn.metrics.roc_auc_score`` returns (sklearn's
    trapezoid over a ROC curve whose thresholds are the distinct scores counts a tied
    positive/negative pair as one half, exactly as mid-ranks do), but it is batched over rows.

    Args:
        scores: ``(..., N)`` scores.
        labels: ``(..., N)`` bool labels.

    Returns:
        ``(...)`` float64 AUCs; NaN for a row with no positive or no negative.
    """
    ranks = rankdata(scores, method="average", axis=-1)
    n_pos = labels.sum(axis=-1).astype(np.float64)
    n_neg = labels.shape[-1] - n_pos
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


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
        past the crossing (a score at which the operating point is closest from the lenient side).
    """
    fnr = 1.0 - tpr
    diff = fpr - fnr  # non-decreasing along the curve: fpr grows, fnr shrinks
    i = int(np.searchsorted(diff, 0.0, side="left"))
    if i >= len(diff):  # never crosses (degenerate curve): report the last point
        return float((fpr[-1] + fnr[-1]) / 2), float(thresholds[-1])
    if i == 0 or diff[i] == 0.0:
        return float(fpr[i]), float(thresholds[i])
    # Linear interpolation between point i-1 (diff < 0) and point i (diff > 0).
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    return float(eer), float(thresholds[i])
