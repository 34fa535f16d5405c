"""Sliding-window scoring of a frame stream with bounded memory.

Frames arrive one by one. Every ``interval``-th frame is *sampled*; ``clip_length`` consecutive
sampled frames form a clip, and a new clip starts every ``stride`` sampled frames (``stride <
clip_length`` overlaps clips). A sampled frame covered by several clips gets the mean (or max) of its
predictions; the raw frames after it, up to the next sampled frame, take its result (sample-and-hold,
as the paper scores UCF-Crime and XD-Violence, B.3). A frame's result is *final* once no later clip can
cover it, and is emitted then — so at most one window of raw frames is ever held, whatever the length
of the video or stream. At the end of the stream, sampled frames no full clip covered get one last
clip (the next one of the grid), padded by repeating its last frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lavida.number_checks import is_whole

Aggregation = Literal["mean", "max"]


@dataclass
class FrameResult:
    """The final result of one raw frame.

    Attributes:
        index: Frame index in the stream.
        frame: (H, W, 3) uint8, the frame itself (for overlays; dropped by the caller after use).
        score: Anomaly probability.
        mask: (h, w) pixel probabilities at the decoder's resolution (float64 from the Detector), or None.
        sampled_from: Index of the sampled frame whose prediction this frame holds.
    """

    index: int
    frame: np.ndarray
    score: float
    mask: np.ndarray | None
    sampled_from: int


@dataclass
class _Sampled:
    index: int
    frame: np.ndarray
    score_sum: float = 0.0
    score_max: float = 0.0
    mask_sum: np.ndarray | None = None
    mask_max: np.ndarray | None = None
    count: int = 0

    def add(self, score: float, mask: np.ndarray | None) -> None:
        self.score_sum += score
        self.score_max = max(self.score_max, score) if self.count else score
        if mask is not None:
            self.mask_sum = mask.copy() if self.mask_sum is None else self.mask_sum + mask
            self.mask_max = mask.copy() if self.mask_max is None else np.maximum(self.mask_max, mask)
        self.count += 1

    def result(self, aggregation: Aggregation) -> tuple[float, np.ndarray | None]:
        if aggregation == "max":
            return self.score_max, self.mask_max
        mask = None if self.mask_sum is None else self.mask_sum / self.count
        return self.score_sum / self.count, mask


# A clip predictor: (T, H, W, 3) uint8 frames → (T,) scores and (T, h, w) mask probabilities or None.
ClipFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


class SlidingWindow:
    """Scores a stream of frames clip by clip (see the module docstring).

    Args:
        predict: The clip predictor.
        clip_length: Sampled frames per clip (T = 8, B.3).
        interval: Raw frames between sampled frames.
        stride: Sampled frames between clip starts (≤ ``clip_length``; equal = no overlap).
        aggregation: How overlapping predictions of one sampled frame combine.
    """

    def __init__(
        self,
        predict: ClipFunction,
        *,
        clip_length: int = 8,
        interval: int = 1,
        stride: int | None = None,
        aggregation: Aggregation = "mean",
    ) -> None:
        check_window(clip_length=clip_length, interval=interval, stride=stride, aggregation=aggregation)
        stride = clip_length if stride is None else stride
        self.predict = predict
        self.clip_length = clip_length
        self.interval = interval
        self.stride = stride
        self.aggregation = aggregation
        self.max_buffered = 0  # the most raw frames held at once (memory is bounded by this)

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[FrameResult]:
        """Consume frames in order, yield every frame's final result in order."""
        # Sampled position p is raw frame p·I; raw frame r belongs to sampled position ⌊r / I⌋.
        sampled: dict[int, _Sampled] = {}  # sampled positions still held
        raw: deque[tuple[int, np.ndarray]] = deque()  # raw frames not yet emitted
        arrived = 0  # sampled positions seen
        next_clip = 0  # sampled position where the next clip starts
        for index, frame in enumerate(frames):
            raw.append((index, frame))
            if index % self.interval == 0:
                sampled[arrived] = _Sampled(index, frame)
                arrived += 1
            while arrived - next_clip >= self.clip_length:
                self._predict([sampled[p] for p in range(next_clip, next_clip + self.clip_length)])
                next_clip += self.stride
            self.max_buffered = max(self.max_buffered, len(raw))
            # Positions before `next_clip` are final: every clip that can cover them has run.
            yield from self._flush(raw, sampled, final=next_clip, upcoming=index + 1)
        # End of stream: if some sampled frames are not covered by a full clip, the next clip of the
        # grid (from `next_clip`) is run on what arrived, padded with its last frame. With overlapping
        # clips the last full clip may already cover every frame; then no padded clip is added.
        covered = next_clip - self.stride + self.clip_length if next_clip else 0
        if covered < arrived:
            pending = [sampled[p] for p in range(next_clip, arrived)]
            self._predict(pending + [pending[-1]] * (self.clip_length - len(pending)), valid=len(pending))
        yield from self._flush(raw, sampled, final=arrived, upcoming=None)

    def _flush(
        self, raw: deque, sampled: dict[int, _Sampled], *, final: int, upcoming: int | None
    ) -> Iterator[FrameResult]:
        """Emit raw frames whose sampled position is final, and forget sampled frames no longer needed.

        ``upcoming`` is the index of the next frame to arrive (None at the end of the stream): a sampled
        frame is kept while a raw frame it owns may still come.
        """
        while raw and raw[0][0] // self.interval < final:
            index, frame = raw.popleft()
            owner = sampled[index // self.interval]
            score, mask = owner.result(self.aggregation)
            yield FrameResult(index=index, frame=frame, score=score, mask=mask, sampled_from=owner.index)
        needed = raw[0][0] if raw else upcoming
        done = final if needed is None else needed // self.interval
        for position in [p for p in sampled if p < done]:
            del sampled[position]

    def _predict(self, clip: list[_Sampled], valid: int | None = None) -> None:
        scores, masks = self.predict(np.stack([s.frame for s in clip]))
        for position, item in enumerate(clip[: valid if valid is not None else len(clip)]):
            item.add(float(scores[position]), None if masks is None else masks[position])


def check_window(
    *,
    clip_length: int | None,
    interval: int,
    stride: int | None,
    aggregation: str,
    clip_length_nullable: bool = True,
) -> None:
    """The sliding window's settings; lavida-detect checks them before the model loads, as ``SlidingWindow`` does.

    ``clip_length_nullable``: whether null is a valid clip length where the caller checks it (lavida-detect:
    the checkpoint's; a :class:`~lavida.detect.detector.Detector` needs a number), so the message offers it.

    Raises:
        ValueError: naming the setting, the allowed values and an example.
    """
    if aggregation not in ("mean", "max"):
        raise ValueError(
            f"aggregation must be 'mean' or 'max' (how overlapping clips combine a frame's scores), got "
            f"{aggregation!r}; set aggregation=mean or aggregation=max."
        )
    for setting, value, nullable in (
        ("clip_length", clip_length, clip_length_nullable),
        ("interval", interval, False),
        ("stride", stride, True),
    ):
        if value is None and nullable:
            continue
        if not is_whole(value) or value < 1:
            null = " or null" if nullable else ""
            raise ValueError(f"{setting} must be a whole number of frames ≥ 1{null}, got {value!r}.")
    if clip_length is not None and stride is not None and stride > clip_length:
        raise ValueError(
            f"stride must be at most clip_length ({clip_length}): a stride of {stride} sampled frames "
            "would leave frames between clips unscored; set stride ≤ clip_length, or stride=null for "
            "clips that do not overlap."
        )
