"""Anomalous intervals from per-frame scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """Frames ``start``..``end`` (inclusive) scored at or above the threshold.

    Attributes:
        start, end: First and last frame (inclusive).
        peak_frame: Frame of the highest score inside.
        peak_score: That score.
        mean_score: Mean score over the interval.
    """

    start: int
    end: int
    peak_frame: int
    peak_score: float
    mean_score: float

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def to_dict(self, fps: float | None = None) -> dict:
        """The fields, plus ``start_time`` = start / fps and ``end_time`` = (end + 1) / fps in seconds with
        ``fps``: a constant frame rate is assumed (wrong on a variable-frame-rate video)."""
        data = asdict(self)
        if fps:
            data.update(start_time=self.start / fps, end_time=(self.end + 1) / fps)
        return data


def anomalous_intervals(
    scores: np.ndarray, *, threshold: float = 0.5, min_length: int = 1, merge_gap: int = 0
) -> list[Interval]:
    """Maximal runs of frames with ``score >= threshold``.

    Args:
        scores: (F,) per-frame anomaly probabilities.
        threshold: Decision threshold.
        min_length: Drop runs shorter than this many frames.
        merge_gap: Join runs separated by at most this many frames below the threshold.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    above = scores >= threshold
    runs = []
    start = None
    for index, flag in enumerate(above):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            runs.append([start, index - 1])
            start = None
    if start is not None:
        runs.append([start, len(scores) - 1])
    merged: list[list[int]] = []
    for run in runs:
        if merged and run[0] - merged[-1][1] - 1 <= merge_gap:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    intervals = []
    for start, end in merged:
        if end - start + 1 < min_length:
            continue
        window = scores[start : end + 1]
        peak = int(np.argmax(window))
        intervals.append(Interval(start, end, start + peak, float(window[peak]), float(window.mean())))
    return intervals
