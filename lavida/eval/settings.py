"""The knobs of an evaluation run that do not come from the benchmark or its protocol."""

from __future__ import annotations

from dataclasses import dataclass

from lavida.number_checks import is_whole


@dataclass(frozen=True)
class EvalSettings:
    """Knobs of an evaluation run.

    Attributes:
        region_thresholds: Levels at which predicted maps become scored regions for RBDC/TBDC (only on
            benchmarks with anomaly tracks); 0.5 as T-VAD's unified implementation.
        pixel_size: Compute pixel metrics at this (H, W); None = the protocol's (official: 158×238) or the
            ground truth's own size.
        pixel_chunk: Frames per step of the pixel metrics (bounds memory).
        max_videos: Evaluate only the first N videos (smoke tests); None = all.
    """

    region_thresholds: tuple[float, ...] = (0.5,)
    pixel_size: tuple[int, int] | None = None
    pixel_chunk: int = 16
    max_videos: int | None = None

    def __post_init__(self) -> None:
        # Counts below one do not fail on their own: a negative pixel_chunk is an empty range (no pixel
        # statistics at all) and max_videos=-1 a slice that drops the last video.
        # Named as lavida-eval's keys, which pass here unchanged.
        if not (is_whole(self.pixel_chunk) and self.pixel_chunk >= 1):
            raise ValueError(
                f"pixel_chunk must be a whole number ≥ 1 (frames per step of the pixel metrics), got "
                f"{self.pixel_chunk!r}. Set e.g. pixel_chunk=16."
            )
        if self.max_videos is not None and not (is_whole(self.max_videos) and self.max_videos >= 1):
            raise ValueError(
                f"max_videos must be a whole number ≥ 1 or null (None: every video), got {self.max_videos!r}. "
                "Set e.g. max_videos=2."
            )
