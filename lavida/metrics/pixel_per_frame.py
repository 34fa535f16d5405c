"""TAO-style pixel AUROC: one ROC-AUC per anomalous frame, averaged over those frames.

This is the pixel metric of TAO (yu2hi13/TAO ``Benchmark_Metrics/pixel_level/pixle_level_evaluate.py``;
``research/vad_eval.md`` §2 item 4), the strongest baseline of LAVIDA's Ped2 table, and most likely the
definition behind that table's baseline numbers. It differs from the pooled pixel AUC
(:class:`lavida.metrics.PixelAUC`, LAVIDA's own number) in three ways:

1. each frame gets its own ROC-AUC over its own pixels, and the result is the plain mean of those
   per-frame AUCs over all frames of all videos (not a mean of per-video means);
2. frames without any anomalous pixel are skipped (their AUC is undefined);
3. a frame whose prediction is zero everywhere scores **0**, not the 0.5 its ROC curve gives (TAO
   returns 0 for ``pred_mask.sum() == 0``). ``empty_prediction="auc"`` uses the honest 0.5 instead.

TAO also divides each frame's map by its maximum first; that rescaling does not change an AUC.
Frames whose every pixel is anomalous have an undefined AUC too (TAO would crash on them); they are
skipped and counted in :attr:`PerFramePixelAUC.num_skipped_full`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from lavida.metrics._ranking import binary_auc
from lavida.metrics._validation import check_frame_maps, per_video_pairs

__all__ = ["PerFramePixelAUC", "per_frame_pixel_auc"]

logger = logging.getLogger(__name__)

EmptyPrediction = Literal["zero", "auc"]


class PerFramePixelAUC:
    """Streaming mean of per-frame pixel ROC-AUCs over anomalous frames (TAO definition).

    Memory is constant across frames: a running sum and counts. Each frame's AUC is exact (an integer
    pair count, equal to ``sklearn.metrics.roc_auc_score`` on that frame's pixels), computed one frame at
    a time, so the temporaries of :meth:`update` are about 9 to 25 bytes per pixel of *one* frame.

    Args:
        empty_prediction: Value of a frame whose scores are all exactly 0: ``"zero"`` (TAO, default, for
            comparison with the numbers TAO-style tables report) or ``"auc"`` (its true ROC-AUC, 0.5).
    """

    def __init__(self, *, empty_prediction: EmptyPrediction = "zero") -> None:
        if empty_prediction not in ("zero", "auc"):
            raise ValueError(
                f"PerFramePixelAUC: empty_prediction must be 'zero' or 'auc', got {empty_prediction!r}."
            )
        self.empty_prediction = empty_prediction
        self.reset()

    def reset(self) -> None:
        """Forget every frame seen so far."""
        self._sum = 0.0
        self.num_frames = 0  #: frames that contributed an AUC
        self.num_skipped_normal = 0  #: frames without anomalous pixels (skipped by definition)
        self.num_skipped_full = 0  #: frames whose every pixel is anomalous (AUC undefined, skipped)

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add frames.

        Args:
            scores: ``(T, H, W)`` (or one ``(H, W)`` frame) probabilities in [0, 1].
            labels: Same shape; bool or 0/1 pixel labels.

        Raises:
            ValueError: On a shape mismatch, a wrong number of dimensions, frames without pixels
                (``H * W == 0``), or invalid values. Nothing is added when an error is raised.
        """
        s, y = check_frame_maps(scores, labels, fn="PerFramePixelAUC.update")
        n_pos = np.count_nonzero(y, axis=1)
        self.num_skipped_normal += int((n_pos == 0).sum())
        full = n_pos == y.shape[1]
        self.num_skipped_full += int(full.sum())
        if full.any():
            logger.warning(
                "PerFramePixelAUC: %d frame(s) are anomalous at every pixel; their AUC is undefined and "
                "they are skipped.",
                int(full.sum()),
            )
        keep = np.flatnonzero((n_pos > 0) & ~full)
        for i in keep:
            # TAO: `if pred_mask.sum() == 0: return 0` (scores are non-negative, so max == 0): such a
            # frame counts in num_frames and adds 0 to the sum.
            if self.empty_prediction == "auc" or s[i].max() > 0:
                self._sum += binary_auc(s[i], y[i])
        self.num_frames += int(keep.size)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The running sum and counts as 0-d arrays (``np.savez``-able)."""
        return {
            "sum": np.asarray(self._sum, dtype=np.float64),
            "num_frames": np.asarray(self.num_frames, dtype=np.int64),
            "num_skipped_normal": np.asarray(self.num_skipped_normal, dtype=np.int64),
            "num_skipped_full": np.asarray(self.num_skipped_full, dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, ArrayLike]) -> None:
        """Replace the running sum and counts with those of ``state`` (from :meth:`state_dict`)."""
        missing = [
            k for k in ("sum", "num_frames", "num_skipped_normal", "num_skipped_full") if k not in state
        ]
        if missing:
            raise ValueError(f"PerFramePixelAUC.load_state_dict: missing keys {missing}.")
        self._sum = float(np.asarray(state["sum"]))
        self.num_frames = int(np.asarray(state["num_frames"]))
        self.num_skipped_normal = int(np.asarray(state["num_skipped_normal"]))
        self.num_skipped_full = int(np.asarray(state["num_skipped_full"]))

    def merge(self, other: PerFramePixelAUC) -> PerFramePixelAUC:
        """Add another instance's frames. Returns ``self``."""
        if not isinstance(other, PerFramePixelAUC) or other.empty_prediction != self.empty_prediction:
            raise ValueError(
                "PerFramePixelAUC.merge: expects a PerFramePixelAUC with the same empty_prediction."
            )
        self._sum += other._sum
        self.num_frames += other.num_frames
        self.num_skipped_normal += other.num_skipped_normal
        self.num_skipped_full += other.num_skipped_full
        return self

    def compute(self) -> float:
        """Mean per-frame AUC over every contributing frame.

        Raises:
            ValueError: If no frame had both anomalous and normal pixels.
        """
        if self.num_frames == 0:
            raise ValueError(
                "PerFramePixelAUC.compute: no frame with both anomalous and normal pixels was seen "
                f"({self.num_skipped_normal} normal frames, {self.num_skipped_full} fully anomalous); "
                "the metric is undefined."
            )
        return self._sum / self.num_frames


def per_frame_pixel_auc(
    scores: Sequence[ArrayLike],
    labels: Sequence[ArrayLike],
    *,
    empty_prediction: EmptyPrediction = "zero",
) -> float:
    """TAO-style pixel AUROC: the mean ROC-AUC of anomalous frames, each over its own pixels.

    Args:
        scores: One ``(T_i, H_i, W_i)`` array per video of pixel probabilities in [0, 1].
        labels: One array per video of the same shape; bool or 0/1 pixel labels.
        empty_prediction: ``"zero"`` (TAO): a frame predicted all-zero scores 0; ``"auc"``: 0.5.

    Returns:
        The mean over frames with at least one anomalous and one normal pixel.

    Raises:
        TypeError: If ``scores``/``labels`` is not a sequence of arrays.
        ValueError: On invalid inputs, or if no frame has both anomalous and normal pixels.
    """
    metric = PerFramePixelAUC(empty_prediction=empty_prediction)
    for s, y in per_video_pairs(scores, labels, fn="per_frame_pixel_auc", ndim=3, shape_name="(T, H, W)"):
        metric.update(s, y)
    return metric.compute()
