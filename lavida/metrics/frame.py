"""Frame-level ROC-AUC (micro / macro) and average precision over per-video score arrays.

Definitions follow the public evaluators (``research/vad_eval.md`` §1.1, §1.4, §8):

* micro AUC: ``sklearn.metrics.roc_auc_score`` on all frames of all videos concatenated
  (UBnormal ``scripts/compute_auc_score.py``, LAVIDA ``train/utils.py::VideoResultSummary``);
* macro AUC: the mean over videos of ``roc_auc_score([0] + labels + [1], [0] + scores + [1])``: the
  two sentinel frames make the AUC defined for all-normal and all-abnormal videos (UBnormal
  convention; lilygeorgescu/UBnormal#14, lilygeorgescu/AED-SSMTL#11);
* AP: ``average_precision_score`` on the concatenation (RTFM / XDVioDet / VadCLIP), or the
  trapezoidal area under the precision-recall curve, ``auc(recall, precision)`` (LAVAD, VERA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from lavida.metrics._validation import per_video_pairs

__all__ = ["frame_ap", "frame_auc"]


def frame_auc(
    scores: Sequence[ArrayLike],
    labels: Sequence[ArrayLike],
    average: Literal["micro", "macro"] = "micro",
) -> float:
    """Frame-level ROC-AUC over a test set.

    Args:
        scores: One ``(T_i,)`` array per video of frame anomaly probabilities in [0, 1].
        labels: One ``(T_i,)`` array per video of 0/1 (or bool) frame labels, aligned with ``scores``.
        average: ``"micro"``: one ROC-AUC over the concatenation of every video's frames (the primary
            number in every VAD paper). ``"macro"``: the mean over videos of the AUC of
            ``[0] + labels_i + [1]`` against ``[0] + scores_i + [1]`` (UBnormal's per-video AUC).

    Returns:
        The AUC in [0, 1]. Tied scores count one half per tied positive/negative pair (sklearn).

    Raises:
        TypeError: If ``scores``/``labels`` is not a sequence of arrays.
        ValueError: On a count or length mismatch, an empty video, a score outside [0, 1] or NaN,
            a label other than 0/1, an unknown ``average``, or (micro only) when every frame has the
            same label: the ROC curve needs both classes, so the AUC is undefined (sklearn would
            warn and return NaN; we raise so that NaN never reaches a results table). Macro AUC is
            always defined thanks to the sentinels.
    """
    if average not in ("micro", "macro"):
        raise ValueError(f"frame_auc: average must be 'micro' or 'macro', got {average!r}.")
    pairs = per_video_pairs(scores, labels, fn="frame_auc", ndim=1, shape_name="(T,)")
    if average == "micro":
        all_scores = np.concatenate([s for s, _ in pairs])
        all_labels = np.concatenate([y for _, y in pairs])
        _require_both_classes(all_labels, fn="frame_auc")
        return float(roc_auc_score(all_labels, all_scores))

    # Macro: the sentinel pair (score 0, label 0) and (score 1, label 1). Scores are probabilities, so
    # the sentinels sit at the extremes of the score range (LAVIDA adds them to raw logits instead, where
    # they land mid-range: research/vad_eval.md §4.1).
    per_video = []
    for s, y in pairs:
        s_pad = np.concatenate(([0.0], s.astype(np.float64), [1.0]))
        y_pad = np.concatenate(([False], y, [True]))
        per_video.append(roc_auc_score(y_pad, s_pad))
    return float(np.mean(per_video))


def frame_ap(
    scores: Sequence[ArrayLike],
    labels: Sequence[ArrayLike],
    method: Literal["sklearn", "trapezoid"] = "sklearn",
) -> float:
    """Frame-level average precision over the concatenation of all videos.

    Args:
        scores: One ``(T_i,)`` array per video of frame anomaly probabilities in [0, 1].
        labels: One ``(T_i,)`` array per video of 0/1 (or bool) frame labels.
        method: ``"sklearn"``: ``average_precision_score``, the step-wise sum
            ``sum_k (R_k - R_{k-1}) P_k`` (XD-Violence's usual "AP"). ``"trapezoid"``:
            ``auc(recall, precision)`` from ``precision_recall_curve``, linear interpolation between PR
            points, usually slightly higher (LAVAD / VERA / RTFM ``test_10crop.py``). Report which one.

    Returns:
        The AP in [0, 1].

    Raises:
        TypeError: If ``scores``/``labels`` is not a sequence of arrays.
        ValueError: On invalid inputs (as :func:`frame_auc`), an unknown ``method``, or when no frame
            is anomalous: recall is then 0/0 and AP is undefined.
    """
    if method not in ("sklearn", "trapezoid"):
        raise ValueError(f"frame_ap: method must be 'sklearn' or 'trapezoid', got {method!r}.")
    pairs = per_video_pairs(scores, labels, fn="frame_ap", ndim=1, shape_name="(T,)")
    all_scores = np.concatenate([s for s, _ in pairs])
    all_labels = np.concatenate([y for _, y in pairs])
    if not all_labels.any():
        raise ValueError(
            f"frame_ap: all {all_labels.size} frames are labelled normal (0); average precision needs at "
            "least one anomalous frame (recall is 0/0 otherwise)."
        )
    if method == "sklearn":
        return float(average_precision_score(all_labels, all_scores))
    precision, recall, _ = precision_recall_curve(all_labels, all_scores)
    return float(auc(recall, precision))


def _require_both_classes(labels: np.ndarray, *, fn: str) -> None:
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        kind = "anomalous (1)" if n_pos else "normal (0)"
        raise ValueError(
            f"{fn}: all {labels.size} frames are labelled {kind}; ROC-AUC needs both classes and is "
            "undefined. Evaluate on a set with normal and anomalous frames, or use average='macro', "
            "whose sentinels make each video's AUC defined."
        )
