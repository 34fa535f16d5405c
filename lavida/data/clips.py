"""Which frames of a record form a training clip.

A video clip is T (B.3: 8) frames taken as a window with a stride: positions start, start + s, …,
start + (T − 1)·s. The stride s is drawn per clip from a small set, so the model sees several temporal
scales (the paper tests with intervals 1 to 32, B.3; the release trains on 8 consecutive sampled
frames). The paper is silent on how training clips are sampled; our rules (docs/fidelity.md):

- **Stride.** Drawn uniformly from ``strides``. When the window would not fit, the largest stride that
  fits is used instead.
- **Short videos.** A video with fewer than T frames yields all its frames, then its last frame
  repeated up to T (positions stay non-decreasing).
- **Target visibility.** With the target's annotated frames known (``SegTarget.frames``), the start is
  drawn uniformly among the windows that contain at least one of them, so anomalous clips rarely miss
  their anomaly. If the drawn stride has no such window, another stride is drawn, at most ``tries``
  times in all; then any window is taken.
- **Images.** One frame (T = 1).

All functions are pure: randomness only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


def fitting_stride(num_frames: int, length: int, stride: int) -> int:
    """``stride`` if a window of ``length`` frames at that stride fits in the video, else the largest that fits (≥ 1)."""
    if length <= 1 or (length - 1) * stride + 1 <= num_frames:
        return stride
    return max(1, (num_frames - 1) // (length - 1))


def window(num_frames: int, start: int, *, length: int, stride: int) -> np.ndarray:
    """(length,) int64 positions start, start + stride, …; frames past the end repeat the last frame."""
    positions = start + stride * np.arange(length, dtype=np.int64)
    return np.minimum(positions, num_frames - 1)


def sample_clip(
    num_frames: int,
    *,
    length: int = 8,
    strides: Sequence[int] = (1, 2, 4),
    visible: Sequence[int] = (),
    rng: np.random.Generator,
    tries: int = 3,
) -> np.ndarray:
    """Positions of one training clip of a video.

    Args:
        num_frames: Frames in the video (``len(record.frames)``).
        length: Clip length T.
        strides: Candidate strides, one drawn uniformly per clip.
        visible: Positions where the target is annotated as visible (empty: unknown, no preference).
        rng: The random generator.
        tries: Strides tried at most while looking for a window that shows the target (≥ 1).

    Returns:
        (length,) int64 non-decreasing positions in [0, num_frames).

    Raises:
        ValueError: ``num_frames`` or ``length`` < 1, an empty or non-positive stride set, ``tries`` < 1.
    """
    if num_frames < 1:
        raise ValueError(f"A video needs at least one frame, got num_frames={num_frames}.")
    if length < 1:
        raise ValueError(f"The clip length must be at least 1, got {length}.")
    if not strides or min(strides) < 1:
        raise ValueError(f"strides must be a non-empty set of positive integers, got {list(strides)}.")
    if tries < 1:
        raise ValueError(f"tries must be at least 1, got {tries}.")
    visible_array = np.asarray(sorted({int(v) for v in visible if 0 <= int(v) < num_frames}), dtype=np.int64)
    stride = 1
    for _ in range(tries if visible_array.size else 1):
        stride = fitting_stride(num_frames, length, int(strides[int(rng.integers(len(strides)))]))
        starts = np.arange(max(num_frames - (length - 1) * stride, 1), dtype=np.int64)  # (S,)
        if not visible_array.size:
            return window(num_frames, int(rng.choice(starts)), length=length, stride=stride)
        # (S, T) positions of every window at this stride; keep windows that show the target.
        positions = np.minimum(starts[:, None] + stride * np.arange(length), num_frames - 1)
        showing = starts[np.isin(positions, visible_array).any(axis=1)]
        if showing.size:
            return window(num_frames, int(rng.choice(showing)), length=length, stride=stride)
    log.debug(
        "No %d-frame window of a %d-frame video shows the target; taking any window.", length, num_frames
    )
    start = int(rng.integers(max(num_frames - (length - 1) * stride, 1)))
    return window(num_frames, start, length=length, stride=stride)


def clip_positions(
    num_frames: int,
    *,
    is_video: bool,
    length: int = 8,
    strides: Sequence[int] = (1, 2, 4),
    visible: Sequence[int] = (),
    rng: np.random.Generator,
    tries: int = 3,
) -> np.ndarray:
    """Positions of one training clip: :func:`sample_clip` for a video, ``[0]`` (T = 1) for an image."""
    if not is_video:
        return np.zeros(1, dtype=np.int64)
    return sample_clip(num_frames, length=length, strides=strides, visible=visible, rng=rng, tries=tries)
