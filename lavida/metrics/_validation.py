"""Input checks shared by the metrics: one place for the wording of every error message.

Every check raises ``ValueError`` (``TypeError`` for a wrong container type) with a message of the form
``"<function>: <what> <where>: expected <expected>, got <received>."`` so that a failing evaluation
names the offending video or frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "check_frame_maps",
    "check_labels",
    "check_scores",
    "check_unit_interval",
    "per_video_pairs",
]


def check_scores(scores: ArrayLike, *, fn: str, where: str) -> NDArray[np.floating]:
    """Return ``scores`` as a float array after checking that every value is finite and in [0, 1].

    Args:
        scores: Scores of any shape.
        fn: Name of the calling public function, used in the message.
        where: Which input this is, e.g. ``"scores[3]"``.

    Returns:
        The scores, same shape. float32 and float64 arrays are returned as they are (no copy);
        integer and float16 arrays become float32, which holds their valid values (0, 1, and every
        float16) exactly at half the memory of float64; any other float type becomes float64.

    Raises:
        ValueError: If the dtype is not numeric, or a value is NaN, infinite or outside [0, 1].
    """
    arr = np.asarray(scores)
    if arr.dtype == np.bool_:
        raise ValueError(
            f"{fn}: {where} has dtype bool; expected real-valued scores in [0, 1]. A binary prediction "
            "is a valid score map: pass it as numbers, e.g. mask.astype(np.float32)."
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{fn}: {where} must hold real numbers in [0, 1], got dtype {arr.dtype}.")
    if arr.size:
        # Checked before any conversion, so that an invalid input is never copied.
        lo, hi = arr.min(), arr.max()
        # NaN makes both comparisons false, so it lands here too.
        if not (lo >= 0 and hi <= 1):
            if np.isnan(lo) or np.isnan(hi):
                raise ValueError(f"{fn}: {where} contains NaN; expected probabilities in [0, 1].")
            raise ValueError(
                f"{fn}: {where} must be probabilities in [0, 1], got values in [{lo:.6g}, {hi:.6g}]; "
                "apply a sigmoid to logits first."
            )
    if arr.dtype == np.float32 or arr.dtype == np.float64:
        return arr
    # A (T, H, W) uint8 mask widened to float64 would take 8 bytes per pixel; float32 is exact for it.
    exact_in_float32 = arr.dtype.kind in "iu" or (arr.dtype.kind == "f" and arr.dtype.itemsize <= 4)
    return arr.astype(np.float32 if exact_in_float32 else np.float64)


def check_labels(labels: ArrayLike, *, fn: str, where: str) -> NDArray[np.bool_]:
    """Return ``labels`` as a bool array after checking that every value is 0 or 1.

    Args:
        labels: Labels of any shape; bool, or integers/floats equal to 0 or 1.
        fn: Name of the calling public function, used in the message.
        where: Which input this is, e.g. ``"labels[3]"``.

    Returns:
        A bool array of the same shape (a view when the input already is bool).

    Raises:
        ValueError: If a value is neither 0 nor 1.
    """
    arr = np.asarray(labels)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{fn}: {where} must be bool or 0/1 numbers, got dtype {arr.dtype}.")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        first = arr[bad].flat[0]
        raise ValueError(
            f"{fn}: {where} must contain only 0 and 1 (or bool), got the value {first!r} "
            f"({int(bad.sum())} entries are neither 0 nor 1); binarise masks stored as 0/255 images "
            "with labels > 0."
        )
    return arr != 0


def check_frame_maps(
    scores: ArrayLike, labels: ArrayLike, *, fn: str
) -> tuple[NDArray[np.floating], NDArray[np.bool_]]:
    """Check per-frame pixel maps and return them flattened per frame.

    Args:
        scores: ``(T, H, W)`` (or one ``(H, W)`` frame) probabilities in [0, 1].
        labels: Same shape; bool or 0/1 pixel labels.
        fn: Name of the calling public function, used in the message.

    Returns:
        ``(T, H * W)`` scores (as :func:`check_scores` returns them) and ``(T, H * W)`` bool labels.

    Raises:
        ValueError: On a shape mismatch, a wrong number of dimensions, frames without pixels (a frame of
            0 pixels has 0 anomalous pixels out of 0 and would count as both normal and fully anomalous),
            or invalid values.
    """
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.shape != y.shape:
        raise ValueError(f"{fn}: scores have shape {s.shape} but labels have shape {y.shape}.")
    if s.ndim == 2:
        s, y = s[None], y[None]
    if s.ndim != 3 or s.shape[1] * s.shape[2] == 0:
        raise ValueError(f"{fn}: expected non-empty (T, H, W) or (H, W) maps, got shape {s.shape}.")
    s = check_scores(s, fn=fn, where="scores").reshape(s.shape[0], -1)
    y = check_labels(y, fn=fn, where="labels").reshape(y.shape[0], -1)
    return s, y


def check_unit_interval(value: float, *, fn: str, name: str) -> float:
    """Check a scalar parameter such as ``alpha`` or ``beta`` lies in (0, 1]."""
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{fn}: {name} must lie in (0, 1], got {value!r}.")
    return value


def per_video_pairs(
    scores: Sequence[ArrayLike],
    labels: Sequence[ArrayLike],
    *,
    fn: str,
    ndim: int,
    shape_name: str,
) -> list[tuple[NDArray[np.floating], NDArray[np.bool_]]]:
    """Validate per-video score/label sequences and return them as checked array pairs.

    Args:
        scores: One array per video.
        labels: One array per video, same count and shapes as ``scores``.
        fn: Name of the calling public function, used in messages.
        ndim: Required number of dimensions of every per-video array (1 for frame scores, 3 for maps).
        shape_name: Human-readable shape, e.g. ``"(T,)"`` or ``"(T, H, W)"``.

    Returns:
        A list of ``(scores_i, labels_i)`` pairs, float scores in [0, 1] and bool labels.

    Raises:
        TypeError: If ``scores`` or ``labels`` is a bare array or a string instead of a sequence.
        ValueError: On a count, shape or value mismatch, naming the video index.
    """
    for name, seq in (("scores", scores), ("labels", labels)):
        if isinstance(seq, (np.ndarray, str, bytes)) or not isinstance(seq, Sequence):
            raise TypeError(
                f"{fn}: {name} must be a sequence (e.g. a list) with one {shape_name} array per video, "
                f"got {type(seq).__name__}"
                + (f" of shape {seq.shape}" if isinstance(seq, np.ndarray) else "")
                + "; wrap a single video as [array]."
            )
    if len(scores) != len(labels):
        raise ValueError(
            f"{fn}: got {len(scores)} score arrays but {len(labels)} label arrays; "
            "expected one of each per video, in the same order."
        )
    if len(scores) == 0:
        raise ValueError(f"{fn}: got no videos; expected at least one {shape_name} array.")
    pairs = []
    for i, (s, y) in enumerate(zip(scores, labels, strict=True)):
        s_arr = np.asarray(s)
        y_arr = np.asarray(y)
        if s_arr.ndim != ndim:
            # A flat list of numbers is one video's scores, not a list of videos.
            hint = "; one video's scores go in as [np.asarray(scores)]" if s_arr.ndim == 0 else ""
            raise ValueError(
                f"{fn}: scores[{i}] must have shape {shape_name}, got shape {s_arr.shape}{hint}."
            )
        if s_arr.shape != y_arr.shape:
            raise ValueError(
                f"{fn}: video {i}: scores[{i}] has shape {s_arr.shape} but labels[{i}] has shape "
                f"{y_arr.shape}; expected one label per score."
            )
        if s_arr.size == 0:
            raise ValueError(f"{fn}: video {i} is empty (shape {s_arr.shape}); expected at least one frame.")
        pairs.append(
            (
                check_scores(s_arr, fn=fn, where=f"scores[{i}]"),
                check_labels(y_arr, fn=fn, where=f"labels[{i}]"),
            )
        )
    return pairs
