"""The per-frame files of one video (``lavida.detect.outputs``), written as each frame becomes final, and the
resize of a frame's pixel probabilities to the frame that its mask is thresholded at."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lavida.detect.intervals import Interval
from lavida.detect.outputs import MaskWriter, ScoreWriter, VideoWriter, cut_segments, overlay_frame
from lavida.detect.window import FrameResult
from lavida.inference import upsample_mask_logits


class FrameWriters:
    """The per-frame writers of one video (none without a folder)."""

    # save="anomalous" cuts segment k from interval k, and min_interval and merge_gap settle the
    # intervals only once every score is known. Holding overlay frames until then would grow with the
    # video, so the whole overlay goes to this temporary file (near-lossless, as it is encoded twice),
    # which ``finish`` cuts into segments with one sequential decode and then deletes.
    FULL_OVERLAY = ".overlay.full.mp4"

    def __init__(
        self, *, folder: Path | None, fps: float | None, threshold: float, overlay: bool, save: str
    ) -> None:
        self.folder, self.fps, self.threshold, self.save = folder, fps, threshold, save
        self.scores = ScoreWriter(folder, fps=fps, threshold=threshold) if folder else None
        self.masks = MaskWriter(folder) if folder else None
        self.overlay = None
        if folder is not None and overlay:
            if save == "all":
                self.overlay = VideoWriter(folder / "overlay.mp4", fps=fps)
            else:
                self.overlay = VideoWriter(folder / self.FULL_OVERLAY, fps=fps, codec="mpeg4")

    def write(self, result: FrameResult, history: list[float]) -> None:
        """One final frame: its score, its mask (pixel probabilities ≥ the threshold, at the frame's size)
        and its overlay frame, whose score curve shows ``history``, the scores of every frame so far."""
        if self.folder is None:
            return
        height, width = result.frame.shape[:2]
        mask = np.zeros((height, width), dtype=bool)
        if result.mask is not None:
            mask = upsample_mask_logits_from_probabilities(result.mask, (height, width)) >= self.threshold
        self.scores.write(result.index, result.score)
        self.masks.write(result.index, mask)
        if self.overlay is not None:
            self.overlay.write(overlay_frame(result.frame, mask, history, self.threshold))

    def close(self) -> None:
        """Flush and close every file (also after an error: what was written stays readable)."""
        for writer in (self.scores, self.masks, self.overlay):
            if writer is not None:
                writer.close()

    def finish(self, intervals: list[Interval]) -> None:
        """After :meth:`close`: with save="anomalous", cut ``segments/segment_<k>.mp4`` for each interval."""
        if self.overlay is None or self.save != "anomalous":
            return
        if self.overlay.path.exists():
            cut_segments(self.overlay.path, intervals, self.folder / "segments", fps=self.fps)
        self.overlay.path.unlink(missing_ok=True)


# Bounds of a float64 probability turned back into a logit: down to float64's smallest normal number
# (logit −708) and up to 1 − 1e-16 (+36.7; a float64 sigmoid of anything above is 1.0 exactly).
_PROBABILITY_RANGE = (float(np.finfo(np.float64).tiny), 1 - 1e-16)


def upsample_mask_logits_from_probabilities(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) probabilities → (H, W) float64 probabilities: back to logits, bilinear, sigmoid (SAM2's order).

    The border of a thresholded mask lies where the interpolated logits cross the threshold's logit, so
    the logits must come back whole: the detector's float64 probabilities keep them from −708 to +36.7.
    (A clip at 1e-6 used to cap them at ±13.8 and moved the borders of masks with stronger logits.) A
    logit above +36.7 comes back as +36.7, which moves a border next to it by less than a decoder pixel.
    """
    probabilities = np.clip(np.asarray(mask, dtype=np.float64), *_PROBABILITY_RANGE)
    logits = np.log(probabilities) - np.log1p(-probabilities)
    return upsample_mask_logits(logits[None], size, dtype=np.float64)[0]
