"""The Mahadevan et al. pixel-level criterion (the "40 % rule") and its ROC curve, AUC and EER.

Mahadevan, Li, Bhalodia & Vasconcelos, "Anomaly detection in crowded scenes", CVPR 2010 (and Li et
al., TPAMI 2014), as summarised in ``research/vad_eval.md`` §2 item 1 and implemented in
qlue-dev/py-ssvad-metrics (``_utils.py::trad_pix_calc``): at a threshold ``t`` a pixel fires when its
score is ``>= t``;

* an anomalous frame (at least one ground-truth anomalous pixel) is a **true positive** when at least
  ``min_coverage`` (40 %) of its anomalous pixels fire;
* a normal frame (no anomalous pixel) is a **false positive** when any pixel fires;
* TPR = TP / #anomalous frames, FPR = FP / #normal frames; sweeping ``t`` gives a ROC curve.

Known flaw of the criterion: firing pixels in the wrong place of an anomalous frame are never
penalised. Use RBDC/TBDC (:mod:`lavida.metrics.rbdc_tbdc`) for localisation.

Exact sweep. For each frame one *critical score* decides its status at every threshold: an anomalous
frame with ``n`` anomalous pixels is a TP at ``t`` exactly when its ``k``-th largest anomalous-pixel
score is ``>= t`` with ``k = ceil(min_coverage * n)``; a normal frame is a FP exactly when its maximum
score is ``>= t``. The criterion's ROC curve is therefore the ordinary ROC curve of the critical
scores against the frame labels, over every distinct threshold (no threshold grid needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import roc_curve

from lavida.metrics._ranking import equal_error_rate
from lavida.metrics._validation import check_frame_maps, per_video_pairs

__all__ = ["PixelCriterion", "PixelCriterionResult", "pixel_criterion"]


@dataclass(frozen=True)
class PixelCriterionResult:
    """ROC curve of the pixel-level criterion.

    Attributes:
        fpr: ``(K,)`` fraction of normal frames with any pixel ``>= threshold``, non-decreasing.
        tpr: ``(K,)`` fraction of anomalous frames with ``>= min_coverage`` of their anomalous pixels
            ``>= threshold``.
        thresholds: ``(K,)`` decreasing thresholds (the first is ``inf`` for the exact sweep).
        auc: Trapezoidal area under ``tpr`` against ``fpr``.
        eer: Equal error rate, the interpolated point where ``fpr == 1 - tpr`` (RD = 1 - EER).
        eer_threshold: Threshold of the first ROC point at or past the equal-error crossing.
        num_anomalous_frames: Frames with at least one anomalous pixel.
        num_normal_frames: Frames without anomalous pixels.
    """

    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    auc: float
    eer: float
    eer_threshold: float
    num_anomalous_frames: int
    num_normal_frames: int


class PixelCriterion:
    """Streaming accumulator for the Mahadevan pixel-level criterion.

    Keeps one critical score per frame (8 bytes + 1 bool per frame), so any number of videos fit.
    :meth:`update` works one frame at a time: its temporaries are at most about 9 bytes per pixel of one
    frame (a copy of its anomalous-pixel scores, partially sorted in place, and a bool mask).

    Args:
        min_coverage: Fraction of an anomalous frame's ground-truth pixels that must fire, in (0, 1].
            Compared exactly (``Fraction``): ``0.4`` of 5 pixels needs 2 pixels, of 6 needs 3.
    """

    def __init__(self, *, min_coverage: float = 0.4) -> None:
        if not 0.0 < float(min_coverage) <= 1.0:
            raise ValueError(f"PixelCriterion: min_coverage must lie in (0, 1], got {min_coverage!r}.")
        self.min_coverage = float(min_coverage)
        # Exact rational so that ceil(0.4 * 5) is 2, not 3 through 0.4 * 5 = 2.0000000000000004; the
        # nearest fraction with a denominator up to 10**6, so that a float32 0.4 (0.4000000059604645) is
        # 2/5 too, and 1/3 given as a float is 1/3.
        self._coverage = Fraction(self.min_coverage).limit_denominator(10**6)
        self.reset()

    def reset(self) -> None:
        """Forget every frame seen so far."""
        self._critical: list[NDArray[np.float64]] = []
        self._anomalous: list[NDArray[np.bool_]] = []

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add frames.

        Args:
            scores: ``(T, H, W)`` (or one ``(H, W)`` frame) pixel probabilities in [0, 1].
            labels: Same shape; bool or 0/1 ground-truth pixel labels.

        Raises:
            ValueError: On a shape mismatch, a wrong number of dimensions, or invalid values.
        """
        s, y = check_frame_maps(scores, labels, fn="PixelCriterion.update")
        n_gt = np.count_nonzero(y, axis=1)
        anomalous = n_gt > 0
        critical = s.max(axis=1).astype(np.float64)  # normal frames: FP iff max >= t
        # k = ceil(min_coverage * n) in exact integer arithmetic: ceil(a / b) = -((-a) // b), with
        # Python's unbounded ints (1/3 is 3333333333333333/10**16: num * n overflows int64).
        num, den = self._coverage.numerator, self._coverage.denominator
        for i in np.flatnonzero(anomalous):
            # The k-th largest anomalous-pixel score is the (n - k)-th smallest: one partial sort of this
            # frame's anomalous pixels, so the temporaries are those of one frame (sorting the anomalous
            # pixels of every frame at once took ~40 bytes each, 5.7x a float64 input on large regions).
            n = int(n_gt[i])
            k = -((-num * n) // den)
            gt_scores = s[i][y[i]]  # a copy, partitioned in place; 1 <= k <= n
            gt_scores.partition(n - k)
            critical[i] = gt_scores[n - k]
        self._critical.append(critical)
        self._anomalous.append(anomalous)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Per-frame critical scores and anomalous flags as plain arrays (``np.savez``-able)."""
        critical = np.concatenate(self._critical) if self._critical else np.zeros(0)
        anomalous = np.concatenate(self._anomalous) if self._anomalous else np.zeros(0, dtype=bool)
        return {"critical": critical.astype(np.float64), "anomalous": anomalous.astype(bool)}

    def load_state_dict(self, state: dict[str, ArrayLike]) -> None:
        """Replace the accumulated frames with those of ``state`` (from :meth:`state_dict`).

        Raises:
            ValueError: If a key is missing or the two arrays differ in length.
        """
        missing = [key for key in ("critical", "anomalous") if key not in state]
        if missing:
            raise ValueError(f"PixelCriterion.load_state_dict: missing keys {missing}.")
        critical = np.asarray(state["critical"], dtype=np.float64).reshape(-1)
        anomalous = np.asarray(state["anomalous"], dtype=bool).reshape(-1)
        if critical.shape != anomalous.shape:
            raise ValueError(
                f"PixelCriterion.load_state_dict: 'critical' {critical.shape} and 'anomalous' "
                f"{anomalous.shape} differ in length."
            )
        self._critical, self._anomalous = [critical], [anomalous]

    def merge(self, other: PixelCriterion) -> PixelCriterion:
        """Add another instance's frames (sharded or per-video evaluation). Returns ``self``."""
        if not isinstance(other, PixelCriterion) or other.min_coverage != self.min_coverage:
            raise ValueError("PixelCriterion.merge: expects a PixelCriterion with the same min_coverage.")
        self._critical.extend(other._critical)
        self._anomalous.extend(other._anomalous)
        return self

    def compute(self, *, thresholds: ArrayLike | None = None) -> PixelCriterionResult:
        """ROC curve, AUC and EER of every frame added so far.

        Args:
            thresholds: ``None`` (default) for the exact sweep over every distinct critical score. An
                array of thresholds evaluates only those (e.g. ``np.linspace(1.01, -0.01, 103)``, the
                grid of py-ssvad-metrics); the curve is then the points at those thresholds, sorted from
                strict to lenient, and the AUC its trapezoid (cover [0, 1] with a margin so that the
                curve runs from (0, 0) to (1, 1)).

        Raises:
            ValueError: If no anomalous or no normal frame has been seen (the ROC is undefined).
        """
        critical = np.concatenate(self._critical) if self._critical else np.zeros(0)
        anomalous = np.concatenate(self._anomalous) if self._anomalous else np.zeros(0, dtype=bool)
        n_anom = int(anomalous.sum())
        n_norm = int(anomalous.size - n_anom)
        if n_anom == 0 or n_norm == 0:
            raise ValueError(
                f"PixelCriterion.compute: seen {n_anom} anomalous and {n_norm} normal frames; the criterion's "
                "ROC needs at least one of each."
            )
        if thresholds is None:
            fpr, tpr, thr = roc_curve(anomalous, critical, drop_intermediate=False)
        else:
            thr = np.sort(np.asarray(thresholds, dtype=np.float64).reshape(-1))[::-1]
            if thr.size == 0 or not np.isfinite(thr).all():
                raise ValueError(
                    "PixelCriterion.compute: thresholds must be a non-empty array of finite numbers."
                )
            # #frames with critical >= t, via searchsorted on the sorted critical scores of each class.
            anom_sorted = np.sort(critical[anomalous])
            norm_sorted = np.sort(critical[~anomalous])
            tpr = (n_anom - np.searchsorted(anom_sorted, thr, side="left")) / n_anom
            fpr = (n_norm - np.searchsorted(norm_sorted, thr, side="left")) / n_norm
        area = float(np.trapezoid(tpr, fpr))
        eer, eer_thr = equal_error_rate(fpr, tpr, thr)
        return PixelCriterionResult(
            fpr=np.asarray(fpr, dtype=np.float64),
            tpr=np.asarray(tpr, dtype=np.float64),
            thresholds=np.asarray(thr, dtype=np.float64),
            auc=area,
            eer=eer,
            eer_threshold=eer_thr,
            num_anomalous_frames=n_anom,
            num_normal_frames=n_norm,
        )


def pixel_criterion(
    scores: Sequence[ArrayLike],
    labels: Sequence[ArrayLike],
    *,
    min_coverage: float = 0.4,
    thresholds: ArrayLike | None = None,
) -> PixelCriterionResult:
    """Mahadevan pixel-level criterion over a test set: ROC curve, AUC and EER.

    Args:
        scores: One ``(T_i, H_i, W_i)`` array per video of pixel probabilities in [0, 1].
        labels: One array per video of the same shape; bool or 0/1 ground-truth pixel labels.
        min_coverage: Fraction of a frame's anomalous pixels that must fire for a true positive (0.4).
        thresholds: ``None`` for the exact sweep, or explicit thresholds (see :meth:`PixelCriterion.compute`).

    Returns:
        A :class:`PixelCriterionResult`.

    Raises:
        TypeError: If ``scores``/``labels`` is not a sequence of arrays.
        ValueError: On invalid inputs, or if there is no anomalous or no normal frame.
    """
    metric = PixelCriterion(min_coverage=min_coverage)
    for s, y in per_video_pairs(scores, labels, fn="pixel_criterion", ndim=3, shape_name="(T, H, W)"):
        metric.update(s, y)
    return metric.compute(thresholds=thresholds)
