"""ShanghaiTech Campus (Liu et al., CVPR 2018) test set in its common layout.

Layout (the one anomalib, ano_pred_cvpr2018 and the release read; ``research/vad_eval.md`` §1.2)::

    <root>/testing/frames/<video>/<000>.jpg ...     one folder of frames per test video (107)
    <root>/testing/test_frame_mask/<video>.npy      (F,) 0/1 per frame
    <root>/testing/test_pixel_mask/<video>.npy      (F, H, W) 0/1 per pixel

``root`` may also be the ``testing`` folder itself. Every test video must have a frame folder and a
pixel mask, and a frame mask unless ``frame_labels="pixel_mask"`` (the release reads no frame mask); a
mask without its frame folder is refused, and a set of other than the official 107 videos is logged.
The frame count is the number of frame files (natural order, hidden files ignored).

Frame labels come from ``test_frame_mask`` (the dataset's own frame annotation) by default; the release
derives them from ``any(test_pixel_mask)`` instead (``frame_labels="pixel_mask"``). With
``check_pixel_labels`` the two are compared at load, whichever is used (under ``pixel_mask`` where a frame
mask exists), and differences are logged: this reads every pixel mask once (40,791 frames of 480×856,
~16 GB as uint8), so it can be switched off.

Pixel metrics are off by default (``has_pixel_gt`` False: neither the paper nor the release reports them
on ShanghaiTech, and they cost a pass over 40,791 frames of 480×856); ``pixel_metrics=True`` turns them
on. ``TestVideo.pixel_masks`` is provided either way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from lavida.data.video import list_frame_files
from lavida.eval.benchmark import GroundTruthError, TestVideo, VadBenchmark
from lavida.eval.benchmarks._common import categories_from_resource, warn_if_labels_disagree

log = logging.getLogger(__name__)

_CHUNK = 64  # frames of a pixel mask reduced at a time: bounded memory on (F, 480, 856) masks

# The released test split (research/vad_eval.md §1.2): 107 videos, 40,791 frames.
OFFICIAL_TEST_VIDEOS = 107


def load_npy(path: Path, *, expected: str) -> np.ndarray:
    """A ``.npy`` file memory-mapped (pickles refused).

    Raises:
        GroundTruthError: the file is missing, empty, truncated, pickled, or not a ``.npy`` array at all
            (an ``.npz`` archive saved under the ``.npy`` name).
    """
    if not path.is_file():
        raise GroundTruthError(f"{path}: ground-truth file not found; expected {expected}.")
    try:
        # EOFError: numpy's answer to an empty file.
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise GroundTruthError(
            f"{path}: not a readable .npy array ({type(error).__name__}: {error}); expected {expected}."
        ) from error
    if not isinstance(loaded, np.ndarray):  # np.load opens a zip (.npz) archive whatever its name
        loaded.close()
        raise GroundTruthError(
            f"{path}: an .npz archive, not a .npy array; expected {expected}. Save the array with np.save."
        )
    return loaded


class NpyMasks:
    """Pixel ground truth of one video stored as an ``(F, H, W)`` ``.npy`` (read through a memory map)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        """``(n,)`` frame indices → ``(n, H, W)`` bool masks (value > 0)."""
        masks = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return np.asarray(masks[np.asarray(indices, dtype=np.int64).reshape(-1)]) > 0


def any_pixel(masks: np.ndarray) -> np.ndarray:
    """``(F, H, W)`` masks → ``(F,)`` bool, True where any pixel is > 0 (chunked over frames)."""
    out = np.zeros(masks.shape[0], dtype=bool)
    for start in range(0, masks.shape[0], _CHUNK):
        out[start : start + _CHUNK] = (np.asarray(masks[start : start + _CHUNK]) > 0).any(axis=(1, 2))
    return out


class ShanghaiTech(VadBenchmark):
    """ShanghaiTech Campus test set (107 videos).

    Args:
        root: The dataset folder holding ``testing/`` (or ``testing/`` itself).
        frame_labels: ``"frame_mask"`` (default: ``test_frame_mask/*.npy``) or ``"pixel_mask"``
            (``any`` over each frame of ``test_pixel_mask``, as the release).
        check_pixel_labels: Compare the frame labels with ``any(test_pixel_mask)`` and log differences.
        pixel_metrics: Let the evaluation compute pixel-level metrics too (sets ``has_pixel_gt``).
    """

    name = "shanghaitech"
    intervals = {"standard": 2, "lavida_official": 2}
    has_pixel_gt = False
    primary_metric = "frame_auc_micro"

    def __init__(
        self,
        root: str | Path,
        *,
        frame_labels: Literal["frame_mask", "pixel_mask"] = "frame_mask",
        check_pixel_labels: bool = True,
        pixel_metrics: bool = False,
    ) -> None:
        super().__init__(root)
        if frame_labels not in ("frame_mask", "pixel_mask"):
            raise ValueError(
                f"ShanghaiTech: frame_labels must be 'frame_mask' or 'pixel_mask', got {frame_labels!r}."
            )
        self.frame_labels = frame_labels
        self.check_pixel_labels = check_pixel_labels
        self.has_pixel_gt = pixel_metrics
        self.testing = self.root if (self.root / "frames").is_dir() else self.root / "testing"

    @property
    def categories(self) -> list[str]:
        return categories_from_resource("shanghaitech_categories.txt")

    def load_videos(self) -> list[TestVideo]:
        frames_dir = self.testing / "frames"
        frame_mask_dir = self.testing / "test_frame_mask"
        pixel_mask_dir = self.testing / "test_pixel_mask"
        if not frames_dir.is_dir():
            raise FileNotFoundError(
                f"ShanghaiTech: {frames_dir} not found. Expected <root>/testing/frames/<video>/*.jpg, "
                "<root>/testing/test_frame_mask/<video>.npy and <root>/testing/test_pixel_mask/<video>.npy."
            )
        names = sorted(p.name for p in frames_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        # Both mask folders list the test videos: the release reads frames + test_pixel_mask only, so a copy
        # made for it may have no test_frame_mask/ at all, and a missing frame folder must still be noticed.
        annotated = {
            p.stem
            for folder in (frame_mask_dir, pixel_mask_dir)
            if folder.is_dir()
            for p in folder.glob("*.npy")
            if not p.name.startswith(".")
        }
        without_frames = sorted(annotated - set(names))
        if without_frames:
            raise FileNotFoundError(
                f"ShanghaiTech: {len(without_frames)} annotated test videos have no frame folder in "
                f"{frames_dir}: {', '.join(without_frames[:10])}. Extract all test frames."
            )
        if not names:
            raise FileNotFoundError(f"ShanghaiTech: {frames_dir} holds no video folders.")
        if len(names) != OFFICIAL_TEST_VIDEOS:
            # No list of the 107 names ships with lavida, so a copy whose masks are as partial as its frames
            # can only be told by its size; its numbers are not comparable with published ones.
            log.warning(
                "ShanghaiTech: %s holds %d test videos; the official test set has %d (40,791 frames).",
                frames_dir,
                len(names),
                OFFICIAL_TEST_VIDEOS,
            )
        videos = [self._video(frames_dir / n, frame_mask_dir, pixel_mask_dir) for n in names]
        log.info(
            "ShanghaiTech: %d test videos (%d anomalous), %d frames",
            len(videos),
            sum(v.is_anomalous for v in videos),
            sum(v.num_frames for v in videos),
        )
        return videos

    def _video(self, folder: Path, frame_mask_dir: Path, pixel_mask_dir: Path) -> TestVideo:
        name = folder.name
        files = list_frame_files(folder)
        if not files:
            raise FileNotFoundError(f"ShanghaiTech: {folder} holds no frame images.")
        num_frames = len(files)

        pixel_path = pixel_mask_dir / f"{name}.npy"
        pixel = load_npy(pixel_path, expected=f"a ({num_frames}, H, W) 0/1 array, one mask per frame")
        if pixel.ndim != 3 or pixel.shape[0] != num_frames:
            hint = ""
            if pixel.ndim == 3 and pixel.shape[2] == num_frames:
                hint = " It looks like (H, W, F): save np.moveaxis(mask, -1, 0) instead."
            raise GroundTruthError(
                f"{pixel_path}: shape {pixel.shape}, expected ({num_frames}, H, W) — one mask per frame of "
                f"{folder} ({num_frames} frames).{hint}"
            )
        from PIL import Image

        with Image.open(files[0]) as image:  # header only
            width, height = image.size
        if pixel.shape[1:] != (height, width):
            log.warning(
                "%s: masks are %dx%d but the frames are %dx%d; pixel metrics will resize.",
                pixel_path,
                pixel.shape[1],
                pixel.shape[2],
                height,
                width,
            )

        pixel_labels = (
            any_pixel(pixel) if (self.check_pixel_labels or self.frame_labels == "pixel_mask") else None
        )
        frame_path = frame_mask_dir / f"{name}.npy"
        if self.frame_labels == "pixel_mask":
            labels = pixel_labels.astype(np.uint8)
            # The frame mask is only compared here, so it is optional (the release's layout lacks it).
            frame_mask = _read_frame_mask(frame_path, num_frames, folder) if frame_path.is_file() else None
        else:
            labels = frame_mask = _read_frame_mask(frame_path, num_frames, folder)
        if pixel_labels is not None and frame_mask is not None:
            warn_if_labels_disagree(
                frame_mask,
                pixel_labels,
                where=f"ShanghaiTech {name}",
                frame_source="test_frame_mask",
                pixel_source="any(test_pixel_mask)",
                used="pixel" if self.frame_labels == "pixel_mask" else "frame",
            )
        return TestVideo(
            name=name,
            path=folder,
            frame_labels=labels,
            fps=None,
            pixel_masks=NpyMasks(pixel_path),
            meta={"scene": int(name.split("_")[0]) if name.split("_")[0].isdigit() else None},
        )


def _read_frame_mask(path: Path, num_frames: int, folder: Path) -> np.ndarray:
    """``(F,)`` uint8 labels from ``test_frame_mask/<video>.npy``.

    Raises:
        GroundTruthError: missing file, not 1-D, wrong length or values other than 0/1.
    """
    mask = load_npy(path, expected=f"a 1-D 0/1 array of length {num_frames}")
    if mask.ndim != 1 or mask.shape[0] != num_frames:
        raise GroundTruthError(
            f"{path}: shape {mask.shape}, expected ({num_frames},) — one 0/1 label per frame of {folder}."
        )
    values = np.unique(np.asarray(mask))
    if not np.isin(values, (0, 1)).all():
        raise GroundTruthError(f"{path}: values {values[:10].tolist()}, expected only 0 and 1.")
    return np.asarray(mask).astype(np.uint8)
