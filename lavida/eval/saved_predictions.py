"""Scores-only evaluation: another method's saved per-video predictions, read and checked.

``<name>.npy`` holds (F,) frame scores; ``<name>.npz`` holds ``frame_scores`` (F,) and optionally
``pixel_scores`` (F, H, W); all probabilities in [0, 1]. A folder is checked whole before any video is
scored, so that a missing file or a partial set of pixel maps stops the run at once, naming them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lavida.eval.benchmark import ClipPlan, GroundTruthError, Protocol, TestVideo, VadBenchmark
from lavida.eval.settings import EvalSettings
from lavida.eval.video_result import VideoResult, pixel_statistics
from lavida.file_names import safe_file_name

log = logging.getLogger(__name__)


# A change to what this computes must bump lavida.eval.result_cache._RESULT_FORMAT (cached results).
def result_from_saved(
    video: TestVideo,
    plan: ClipPlan,
    directory: Path,
    benchmark: VadBenchmark,
    settings: EvalSettings,
    protocol: Protocol,
    pixel_size: tuple[int, int] | None,
) -> VideoResult:
    """One video's result from its saved predictions in ``directory``, as the runner computes a model's.

    The (F,) frame scores are taken at ``plan.scored``; (F, H, W) pixel scores, where saved and the
    benchmark has pixel ground truth, give the pixel statistics at ``pixel_size``.

    Raises:
        FileNotFoundError: no file for the video.
        GroundTruthError: a file that cannot be read, of another frame count or shape, or scores outside
            [0, 1] (logits, NaN).
    """
    npz, npy = saved_prediction_paths(directory, video.name)
    pixel_scores = None
    if npz.is_file():
        with _reading(npz, _NPZ_LAYOUT):
            with np.load(npz, allow_pickle=False) as data:
                if "frame_scores" not in data.files:
                    raise GroundTruthError(f"{npz}: expected an array 'frame_scores'; found {data.files}.")
                frame_scores = data["frame_scores"]
                pixel_scores = data["pixel_scores"] if "pixel_scores" in data.files else None
    elif npy.is_file():
        with _reading(npy, "an .npy array of (F,) frame scores"):
            frame_scores = np.load(npy, allow_pickle=False)
    else:
        raise FileNotFoundError(
            f"No predictions for video '{video.name}': expected {_expected_files(video.name)} in {directory}."
        )
    source = npz if npz.is_file() else npy
    if npz.is_file() and npy.is_file():
        log.warning("%s and %s both exist; reading the .npz (delete the file that is out of date).", npz, npy)
    frame_scores = np.asarray(frame_scores, dtype=np.float64)
    if any(size != 1 for size in sorted(frame_scores.shape)[:-1]):
        # A (2, F/2) or (F/8, 8) array flattened would be scored in an order nobody chose.
        raise GroundTruthError(
            f"{source}: frame scores of shape {frame_scores.shape}; expected (F,) with F = {video.num_frames}, "
            "one score per frame."
        )
    frame_scores = frame_scores.reshape(-1)
    if frame_scores.size != video.num_frames:
        raise GroundTruthError(
            f"{source}: {frame_scores.size} frame scores, but '{video.name}' has "
            f"{video.num_frames} frames; give one score per frame."
        )
    _check_probabilities(frame_scores, source=source, what="frame score")
    labels = video.frame_labels[plan.scored]
    pixels = regions = None
    if pixel_scores is not None and video.pixel_masks is not None and benchmark.has_pixel_gt:
        if pixel_scores.ndim != 3 or pixel_scores.shape[0] != video.num_frames:
            raise GroundTruthError(
                f"{npz}: 'pixel_scores' has shape {pixel_scores.shape}; expected (F, H, W) with "
                f"F = {video.num_frames} frames."
            )
        # Bilinear resizing clamps to [0, 1] and RBDC thresholds at probability levels, so logits
        # would be scored wrongly without a word: refuse them.
        _check_probabilities(pixel_scores, source=npz, what="pixel score")
        pixels, regions = pixel_statistics(
            plan.scored,
            predicted=lambda frames: pixel_scores[frames],
            ground_truth=video.pixel_masks,
            size=pixel_size,
            resize=protocol.pixel_resize,
            region_thresholds=settings.region_thresholds if video.tracks is not None else None,
            chunk=settings.pixel_chunk,
        )
    return VideoResult(video.name, plan.scored, frame_scores[plan.scored], labels, pixels, regions)


# What a predictions folder holds (README, scores-only mode).
SAVED_PREDICTIONS = (
    "<video>.npy (frame scores) or <video>.npz (frame_scores, and pixel_scores) per test video"
)


def check_saved_predictions(videos: Sequence[TestVideo], directory: str | Path) -> None:
    """Refuse a predictions folder that lacks some of ``videos``, naming them all at once, before any is
    scored (reading them one by one would stop at the first, after minutes of work on a large set).

    Raises:
        FileNotFoundError: naming the videos without a file, and the file names expected.
    """
    missing = [
        video.name
        for video in videos
        # os.path.isfile: False, not an error, for a name the file system refuses (as
        # result_from_saved reads it)
        if not any(os.path.isfile(path) for path in saved_prediction_paths(directory, video.name))
    ]
    if not missing:
        return
    shown = [f"  {name}: expected {_expected_files(name)}" for name in missing[:10]]
    shown += [f"  and {len(missing) - 10} more"] if len(missing) > 10 else []
    raise FileNotFoundError(
        f"predictions={directory} holds no predictions for {len(missing)} of the {len(videos)} videos "
        f"evaluated:\n" + "\n".join(shown) + f"\nThe folder holds {SAVED_PREDICTIONS}, named as the video or "
        "with the characters outside A-Za-z0-9._- replaced by _."
    )


def _expected_files(video_name: str) -> str:
    """The file names a video's saved predictions may have: ``a.npz / a.npy``, both spellings if they differ."""
    names = dict.fromkeys([video_name, safe_file_name(video_name)])
    return " or ".join(f"{name}.npz / {name}.npy" for name in names)


def check_saved_pixel_maps(videos: Sequence[TestVideo], directory: Path, *, benchmark: VadBenchmark) -> None:
    """Saved pixel maps must cover every video with pixel ground truth, or none of them.

    The pixel metrics pool every pixel of every test video (normal ones included) and RBDC/TBDC count
    false positives over all test frames, so maps for only some videos would score a subset without a
    word: a normal video's false alarms would simply vanish. A method without pixel maps (none saved)
    gets frame metrics only, with a warning (the benchmark's headline metric may be a pixel one).
    """
    with_maps, without = [], []
    for video in videos:
        if video.pixel_masks is None:
            continue
        npz, _ = saved_prediction_paths(directory, video.name)
        has_maps = False
        if npz.is_file():
            with _reading(npz, _NPZ_LAYOUT):
                with np.load(npz, allow_pickle=False) as data:  # reads the archive's index only
                    has_maps = "pixel_scores" in data.files
        (with_maps if has_maps else without).append(video.name)
    if with_maps and without:
        shown = ", ".join(without[:10]) + (f" and {len(without) - 10} more" if len(without) > 10 else "")
        raise GroundTruthError(
            f"{directory}: {len(with_maps)} videos have saved pixel maps ('pixel_scores' in <name>.npz) but "
            f"{len(without)} with pixel ground truth do not: {shown}. The pixel metrics and RBDC/TBDC pool all "
            "test videos, normal ones included; save 'pixel_scores' (F, H, W) for every video, or for none "
            "to get frame metrics only."
        )
    if without and not with_maps:
        primary = benchmark.primary_metric
        log.warning(
            "%s: no saved pixel maps ('pixel_scores' (F, H, W) in <name>.npz); %s has pixel ground truth, but "
            "only the frame metrics are computed%s.",
            directory,
            benchmark.name,
            f", not its headline metric {primary}" if primary.startswith("pixel") else "",
        )


def _check_probabilities(scores: np.ndarray, *, source: Path, what: str) -> None:
    """Saved scores must be probabilities in [0, 1]: logits or NaN are refused, naming the file."""
    outside = ~((scores >= 0) & (scores <= 1))  # also catches NaN
    if outside.any():
        first = np.unravel_index(int(np.flatnonzero(outside)[0]), scores.shape)
        where = (
            f"frame {first[0]}"
            if scores.ndim == 1
            else f"frame {first[0]}, pixel {tuple(map(int, first[1:]))}"
        )
        raise GroundTruthError(
            f"{source}: {int(outside.sum())} {what}(s) are not probabilities in [0, 1] ({where}: "
            f"{scores[first]}); save sigmoid(logits), not logits, and no NaN."
        )


def saved_prediction_paths(directory: str | Path, video_name: str) -> tuple[Path, Path]:
    """The files scores-only mode reads for one video: ``(<name>.npz, <name>.npy)`` in ``directory``.

    ``<name>`` is the video's name as it is where such files exist, else the name with every run of
    characters outside ``A-Za-z0-9._-`` replaced by ``_`` (``safe_file_name``, how the runner names its
    caches: ``lavida.eval.result_cache.cached_result_path``): XD-Violence names hold ``#`` and ``=``, and either spelling of
    ``Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6`` is found. The suffix is appended to the whole
    name, never substituted: ``Path.with_suffix`` would cut the name at its first dot.
    """
    directory = Path(directory)
    base = safe_file_name(video_name)
    # The exact spelling only as a plain file name in ``directory``, never a path out of it ("../x").
    if video_name != base and "/" not in video_name and "\\" not in video_name:
        exact = directory / f"{video_name}.npz", directory / f"{video_name}.npy"
        if any(file_exists(path) for path in exact):
            return exact
    return directory / f"{base}.npz", directory / f"{base}.npy"


def file_exists(path: Path) -> bool:
    """``path.is_file()``, False for a name the file system refuses (too long, say)."""
    try:
        return path.is_file()
    except OSError:
        return False


_NPZ_LAYOUT = "an .npz archive with an array 'frame_scores' (F,) and optionally 'pixel_scores'"


@contextlib.contextmanager
def _reading(path: Path, expected: str) -> Iterator[None]:
    """Re-raise numpy's errors on a malformed prediction file as a GroundTruthError naming it."""
    try:
        yield
    except GroundTruthError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise GroundTruthError(
            f"{path}: cannot read the saved predictions ({type(error).__name__}: {error}); expected "
            f"{expected}, saved with numpy without pickling (np.save / np.savez, numeric dtype)."
        ) from error
