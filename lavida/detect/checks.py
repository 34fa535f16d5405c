"""Checks of the detector's settings and inputs, shared by :class:`~lavida.detect.detector.Detector` and
``lavida-detect``: each ``check_*`` raises before a model loads or a video opens, naming the setting and
what it accepts; ``distinct_categories`` drops repeated categories with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lavida.data.exposure import normalize_text as comparison_key
from lavida.data.prompts import clean_categories
from lavida.detect.stream import is_live
from lavida.number_checks import is_real, is_whole

log = logging.getLogger(__name__)


def check_source(source: object) -> None:
    """A video file, frame folder, URL or device, as a ``str`` or a path.

    Raises:
        TypeError: anything else, e.g. an array of frames (which ``Path()`` would have turned into a file
            name thousands of characters long).
    """
    if isinstance(source, (str, os.PathLike)):
        return
    kind = f"{type(source).__module__}.{type(source).__qualname__}".removeprefix("builtins.")
    hint = ""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        hint = (
            "; to detect in frames held in memory, write them to a file first "
            "(lavida.data.video.write_video(path, frames, fps=...)), or score (T, H, W, 3) uint8 clips "
            "with Detector.predict_clip"
        )
    elif isinstance(source, int):
        hint = f"; a capture device is named 'device:{source}' or '/dev/video{source}'"
    raise TypeError(
        f"source must be a video file, frame folder, URL or device (a str or a Path), got {kind}{hint}."
    )


def check_threshold(threshold: float) -> None:
    """``threshold`` is compared with frame scores, which are probabilities: it must lie in [0, 1].

    Raises:
        ValueError: naming the setting.
    """
    number = is_real(threshold)
    if not number or not 0.0 <= float(threshold) <= 1.0:  # NaN fails too
        raise ValueError(
            f"threshold must be a number in [0, 1], got {threshold!r}: frame scores are probabilities; "
            "set e.g. threshold=0.5."
        )


def check_fps(fps: float | None) -> None:
    """A frame folder's frame rate: None (unknown) or a positive number of frames per second.

    Raises:
        ValueError: naming the setting.
    """
    if fps is None:
        return
    number = is_real(fps)
    if not number or not 0.0 < float(fps) < float("inf"):  # NaN fails too
        raise ValueError(
            f"fps must be a positive number of frames per second or null, got {fps!r}; it is the frame "
            "rate of frame folders, e.g. fps=25."
        )


def check_max_frames(max_frames: int | None) -> None:
    """None (every frame; a live stream until Ctrl-C) or a whole number of frames ≥ 1.

    Raises:
        ValueError: naming the setting (0 or a negative number would read no frame of any video).
    """
    if max_frames is None:
        return
    if not is_whole(max_frames) or max_frames < 1:
        raise ValueError(
            f"max_frames must be a whole number of frames ≥ 1 or null (every frame), got {max_frames!r}; "
            "e.g. max_frames=3000."
        )


def check_name(name: str) -> None:
    """An output folder's name: one plain folder name inside ``output_dir``.

    Raises:
        ValueError: a path (``a/b``), or ``.``/``..``, which name ``output_dir`` itself (its whole contents
            would be replaced by this video's folder) or its parent.
    """
    separators = {"/", os.sep, os.altsep} - {None}
    if not isinstance(name, str) or not name.strip(".") or any(sep in name for sep in separators):
        raise ValueError(
            f"name must be one folder name inside output_dir, without path separators and not . or .., "
            f"got {name!r}; e.g. name='street'."
        )


def distinct_categories(categories: Sequence[str]) -> list[str]:
    """:func:`~lavida.data.prompts.clean_categories`, then each category once, in the order first named.

    Names that differ only in case or spacing (``fire``, ``Fire``, ``fire  ``) are one category; a warning
    names the ones dropped. The Anomaly Exposure Sampler shows the model distinct categories only (Eq.
    1–2), and a repeated one would weigh twice in the prompt and in the projector's attention over the
    category features (Eq. 7), changing the scores of a search that is meant to be the same.

    Raises:
        TypeError: one string instead of a list of them.
        ValueError: no category is left.
    """
    kept, seen, dropped = [], set(), []
    for category in clean_categories(categories):
        key = comparison_key(category)  # the sampler's: whitespace collapsed, case folded
        if key in seen:
            dropped.append(category)
        else:
            seen.add(key)
            kept.append(category)
    if dropped:
        log.warning(
            "Categories named more than once are searched once: dropping %s; searching %s.",
            ", ".join(repr(category) for category in dropped),
            ", ".join(repr(category) for category in kept),
        )
    return kept


def check_intervals(*, min_interval: int, merge_gap: int) -> None:
    """``min_interval`` ≥ 1 and ``merge_gap`` ≥ 0 frames, whole numbers.

    Raises:
        ValueError: naming the setting.
    """
    for setting, value, least in (("min_interval", min_interval, 1), ("merge_gap", merge_gap, 0)):
        if not is_whole(value) or value < least:
            raise ValueError(f"{setting} must be a whole number of frames ≥ {least}, got {value!r}.")


def check_output_options(*, overlay: bool, save: str) -> None:
    """``save`` is ``all`` or ``anomalous``; ``anomalous`` cuts the overlay video, so it needs ``overlay``.

    Raises:
        ValueError: naming the setting to change.
    """
    if save not in ("all", "anomalous"):
        raise ValueError(f"save must be 'all' or 'anomalous', got {save!r}.")
    if save == "anomalous" and not overlay:
        raise ValueError(
            "save=anomalous writes the overlay video of each anomalous interval (segments/segment_000.mp4, "
            "...), but overlay is off: set overlay=true, or save=all for scores and masks without videos."
        )


def check_output_place(source: str | Path, target: Path) -> None:
    """A video's output folder ``target`` must neither be, hold, nor lie inside its input ``source``.

    The folder is replaced whole when the video is done, so a frame folder written to itself, or a video
    whose own folder is the target, would be deleted; outputs inside a frame folder would be read as frames
    by the next run. Live sources are not paths and pass.

    Raises:
        ValueError: naming both paths and how to choose ``output_dir``.
    """
    if is_live(str(source)):
        return
    src, dst = Path(source).resolve(), Path(target).resolve()
    if dst == src or dst in src.parents or src in dst.parents:
        where = "is" if dst == src else "holds" if dst in src.parents else "lies inside"
        raise ValueError(
            f"The outputs of {source} would go to {target}, which {where} the input itself; that folder is "
            "replaced whole when the video is done. Choose an output_dir away from the inputs, one that "
            "neither holds them nor lies inside them (e.g. outputs/detect)."
        )


def check_output_dir(input_path: str | Path, output_dir: str | Path) -> None:
    """``lavida-detect``'s ``output_dir`` must not be, or lie inside, its ``input`` folder.

    A later run with the same ``input`` would read the output folders (frames of overlays and plots) as
    frame folders to process.

    Raises:
        ValueError: naming both folders.
    """
    folder = Path(input_path)
    if not folder.is_dir():
        return
    src, dst = folder.resolve(), Path(output_dir).resolve()
    if dst == src or src in dst.parents:
        raise ValueError(
            f"output_dir={output_dir} is {'the' if dst == src else 'inside the'} input folder {input_path}: "
            f"a later run on it would read the output folders as videos. Choose an output_dir outside "
            f"{input_path}."
        )
