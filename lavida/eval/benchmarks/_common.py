"""Small pieces the benchmark loaders share: resource files, text-file lines, frame counting, mask files.

Nothing here knows a dataset; each loader (``ubnormal.py``, ``shanghaitech.py``, ...) composes them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from lavida.data.video import VIDEO_SUFFIXES, open_video, pillow_read_errors
from lavida.eval.benchmark import GroundTruthError, read_category_list

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def resource(name: str) -> Path:
    """Path of a data file shipped in ``lavida/eval/resources``."""
    return RESOURCES / name


def categories_from_resource(filename: str) -> list[str]:
    """The category list ``lavida/eval/resources/<filename>`` (one per line, ``#`` comments)."""
    return read_category_list(resource(filename))


def strip_video_suffix(name: str) -> str:
    """``Abuse028_x264.mp4`` → ``Abuse028_x264``; anything else is returned unchanged.

    Only a known video extension is removed: XD-Violence names contain dots
    (``Bad.Boys.1995__#01-11-55_01-12-40_label_G-0-0``), so ``Path(name).stem`` would cut them.
    """
    lower = name.lower()
    for suffix in VIDEO_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def text_lines(path: Path, *, expected: str) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines of a text file as ``(1-based line number, stripped line)``.

    Args:
        path: The file.
        expected: What the file should hold, for the error message (e.g. ``"lines 'name class s1 e1 s2 e2'"``).

    Raises:
        GroundTruthError: the file does not exist or is not UTF-8 text.
    """
    if not path.is_file():
        raise GroundTruthError(f"{path}: ground-truth file not found; expected a text file with {expected}.")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark from Windows editors
    except UnicodeDecodeError as error:
        raise GroundTruthError(f"{path}: not a UTF-8 text file ({error}); expected {expected}.") from error
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((number, stripped))
    return lines


def parse_frame_number(token: str, *, where: str) -> int:
    """A frame index written as an integer (``12``) or a whole float (``12.0``, numpy ``savetxt`` style).

    Raises:
        GroundTruthError: ``token`` is not a whole number (message starts with ``where``).
    """
    try:
        value = float(token)
    except ValueError:
        raise GroundTruthError(f"{where}: '{token}' is not a frame number.") from None
    if not np.isfinite(value) or value != round(value):
        raise GroundTruthError(f"{where}: '{token}' is not a whole frame number.")
    return int(value)


def probe_videos(paths: Sequence[Path], *, workers: int | None = None) -> list[tuple[int, float | None]]:
    """``(num_frames, fps)`` of each video file, opened with the same reader evaluation uses.

    The frame count comes from :func:`lavida.data.video.open_video` (decord, PyAV as fallback), so
    the labels have exactly as many entries as the reader can return frames. Videos are opened in a
    thread pool: decord releases the GIL while it indexes a file.
    """
    if not paths:
        return []
    workers = workers or min(8, os.cpu_count() or 1)

    def probe(path: Path) -> tuple[int, float | None]:
        source = open_video(path)
        return source.num_frames, source.fps

    if workers == 1 or len(paths) == 1:
        return [probe(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(probe, paths))


def read_mask_image(path: Path) -> np.ndarray:
    """A mask image as ``(H, W)`` bool: True where the value is > 0 (any colour channel for colour images;
    an alpha band is ignored, as it is opaque everywhere in a saved mask).

    Raises:
        GroundTruthError: the file cannot be read as an image (any of Pillow's errors for a corrupt file,
            SyntaxError and DecompressionBombError included).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "PA"):
                image = image.convert(image.mode[:-1])  # drop alpha (and keep palette indices)
            array = np.asarray(image)
    except pillow_read_errors() as error:
        raise GroundTruthError(
            f"{path}: cannot read the mask image ({type(error).__name__}: {error}); the file is corrupt or "
            "not an image: replace it with a good copy from the dataset."
        ) from error
    return array.any(axis=2) if array.ndim == 3 else array > 0


class MaskFiles:
    """Pixel ground truth stored as one mask image per frame (``pixel_masks`` of a :class:`TestVideo`).

    A top-level class rather than a closure, so a :class:`TestVideo` can be sent to worker processes.

    Args:
        files: One mask image per frame, in frame order.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        """``(n,)`` frame indices → ``(n, H, W)`` bool masks."""
        chosen = [self.files[int(i)] for i in np.asarray(indices).reshape(-1)]
        return stack_masks([read_mask_image(path) for path in chosen], chosen, what="mask image")


def stack_masks(masks: Sequence[np.ndarray], files: Sequence[Path], *, what: str) -> np.ndarray:
    """``(n, H, W)`` stack of one video's per-frame masks, read from ``files`` (same order).

    Raises:
        GroundTruthError: the masks differ in size; the message names the first odd file and the size
            of the first one (``np.stack`` alone raises a ValueError that names no file).
    """
    if not masks:
        return np.zeros((0, 0, 0), dtype=bool)
    for mask, path in zip(masks, files, strict=True):
        if mask.shape != masks[0].shape:
            raise GroundTruthError(
                f"{path.parent}: {path.name} is {mask.shape[0]}x{mask.shape[1]} (HxW) but {files[0].name} is "
                f"{masks[0].shape[0]}x{masks[0].shape[1]}; every {what} of a video has the frame size. "
                "Replace the odd file with a good copy from the dataset."
            )
    return np.stack(masks)


def warn_if_labels_disagree(
    frame_labels: np.ndarray,
    pixel_labels: np.ndarray,
    *,
    where: str,
    frame_source: str,
    pixel_source: str,
    used: Literal["frame", "pixel"] = "frame",
) -> int:
    """Log a warning when frame labels and any-pixel labels differ; returns the number of differing frames.

    ``used`` says which of the two the benchmark scores with (its option ``frame_labels``); that source
    is named first. Both directions are compared whichever is used (docs/evaluation.md, "Frame labels").
    """
    frame_labels = np.asarray(frame_labels, dtype=bool)
    pixel_labels = np.asarray(pixel_labels, dtype=bool)
    only_frame = int((frame_labels & ~pixel_labels).sum())
    only_pixel = int((~frame_labels & pixel_labels).sum())
    if only_frame or only_pixel:
        first, second = (frame_source, pixel_source) if used == "frame" else (pixel_source, frame_source)
        log.warning(
            "%s: %s and %s disagree on %d of %d frames (%d anomalous in %s without an anomalous pixel, %d "
            "with anomalous pixels but normal in %s); the frame labels come from %s.",
            where,
            first,
            second,
            only_frame + only_pixel,
            frame_labels.size,
            only_frame,
            frame_source,
            only_pixel,
            frame_source,
            first,
        )
    return only_frame + only_pixel
