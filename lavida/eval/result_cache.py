"""The evaluation runner's per-video result cache: where results lie and when one may be reused.

A cached :class:`~lavida.eval.video_result.VideoResult` stores a fingerprint of the *facts* it was computed
from: the run-wide settings (``run_facts``) and the video's own inputs (``video_facts``). A rerun reuses it
only when both are the same, and otherwise refuses, naming what changed, or with ``overwrite`` recomputes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lavida.eval.benchmark import Protocol, TestVideo, VadBenchmark
from lavida.eval.saved_predictions import file_exists, saved_prediction_paths
from lavida.eval.settings import EvalSettings
from lavida.eval.video_result import VideoResult
from lavida.file_names import safe_file_name
from lavida.file_state import file_state
from lavida.settings_diff import changed_settings

log = logging.getLogger(__name__)


# The folder of a run's per-video results, in its output_dir.
CACHE_DIR = "predictions"


def cached_result_path(output_dir: str | Path, video_name: str) -> Path:
    """Where :func:`~lavida.eval.runner.run_evaluation` caches one video's :class:`VideoResult` in its
    ``output_dir``."""
    return Path(output_dir) / CACHE_DIR / f"{safe_file_name(video_name)}.npz"


def check_cache_names(videos: Sequence[TestVideo]) -> None:
    """Two videos whose names map to one cache file would overwrite each other's results."""
    seen: dict[str, str] = {}
    for video in videos:
        other = seen.setdefault(safe_file_name(video.name).casefold(), video.name)
        if other != video.name:
            raise ValueError(
                f"Videos '{other}' and '{video.name}' share the cache file name '{safe_file_name(video.name)}'; "
                "rename one of them (characters outside A-Z, a-z, 0-9, '.', '_', '-' become '_', and case "
                "is ignored, as on macOS and Windows)."
            )


# What a cached result depends on besides its video's own inputs. Bumped when the cached layout or
# the computation changes (lavida.eval.runner._predict, lavida.eval.saved_predictions.result_from_saved,
# lavida.eval.video_result.pixel_statistics): 2: float64 frame scores (1 stored float32, which ties every
# logit above ~16.6); 3: float64 pixel probabilities and PixelAUC(octaves=60) (2 tied pixel logits above
# ~16.6); 4: per-video fingerprints with their facts stored beside them.
_RESULT_FORMAT = 4


def run_facts(
    benchmark: VadBenchmark,
    protocol: Protocol,
    categories: list[str],
    settings: EvalSettings,
    pixel_size: tuple[int, int] | None,
    run_info: dict | None,
    predictions_dir: str | Path | None,
) -> dict:
    """The run-wide settings every cached result must share (one video's own inputs: ``video_facts``).

    Paths whose content is fingerprinted elsewhere are left out, so that the same run spelled with a
    relative or an absolute path, or a moved prediction folder, reuses its results: the checkpoint path
    when its digest is given (``checkpoint_sha256``), and the prediction folder (each video's files
    are in ``video_facts``). The dataset root stays (resolved) on benchmarks with pixel ground truth:
    the masks themselves are not hashed, and another copy of the data may hold other masks.
    """
    run = dict(run_info or {})
    if "checkpoint_sha256" in run:
        run.pop("checkpoint", None)
    if "base_models" in run and "checkpoint_overrides" in run:
        run["checkpoint_overrides"] = without_weight_paths(run["checkpoint_overrides"])
    return {
        "benchmark": benchmark.name,
        "dataset_root": str(benchmark.root.resolve()) if benchmark.has_pixel_gt else None,
        "protocol": {k: v for k, v in asdict(protocol).items() if k != "video_filter"},
        "categories": categories,
        "region_thresholds": settings.region_thresholds,
        "pixel_size": pixel_size,
        "mode": "model" if predictions_dir is None else "scores-only",
        "run": run,
        "result_format": _RESULT_FORMAT,
    }


def without_weight_paths(overrides: Mapping) -> dict:
    """``checkpoint_overrides`` without the ``<part>.pretrained`` base-weight paths (parts left empty are
    dropped), for comparing runs that record the base weights' fingerprints (``base_models``): the same
    weights named by another path, as for a checkpoint trained on another machine, then agree."""
    kept = {}
    for part, values in overrides.items():
        if isinstance(values, Mapping):
            values = {key: value for key, value in values.items() if key != "pretrained"}
            if not values:
                continue
        kept[part] = values
    return kept


def video_facts(video: TestVideo, predictions_dir: str | Path | None) -> dict:
    """One video's own inputs: a digest of its frame labels and tracks (a cached result holds the labels
    of the run that made it, so ground truth read with other options must not be served from it) and the
    state (names, sizes, times: ``file_state``), without their folder, of what was scored: in model mode
    the video file or frame folder (another copy of the data, re-encoded or rescaled, must not be served
    the old frames' results), in scores-only mode its prediction files (predictions saved again must not
    be served from the old ones' results; a moved folder may be)."""
    digest = hashlib.sha256(np.ascontiguousarray(video.frame_labels, dtype=np.uint8).tobytes())
    if video.tracks is not None:
        digest.update(b"\0tracks\0" + np.ascontiguousarray(video.tracks, dtype=np.int64).tobytes())
    facts: dict = {
        "ground_truth": {"frames": int(video.num_frames), "labels_and_tracks": digest.hexdigest()[:16]}
    }
    if predictions_dir is None:
        facts["video_files"] = file_state(video.path)["files"]
    else:
        facts["prediction_files"] = [
            file_state(path)["files"]
            for path in saved_prediction_paths(predictions_dir, video.name)
            if file_exists(path)
        ]
    return facts


def normalised_facts(facts: dict) -> str:
    """Facts as canonical JSON (tuples become lists), the form that is hashed, stored and compared."""
    return json.dumps(json.loads(json.dumps(facts, default=str)), sort_keys=True)


_VIDEO_FACT_NAMES = {
    "ground_truth": "this video's ground truth (frame count, labels or tracks) is not the one the cached "
    "result was computed with",
    "prediction_files": "this video's prediction files were written again (name, size or time differ)",
    "video_files": "this video's file or frames are not the ones the cached result was computed from (names, "
    "sizes or times differ: another copy of the data, or the files were written again)",
}


# What reading a damaged or partial cached result (.npz) raises.
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def cache_is_current(cache: Path, fingerprint: str, facts: str, *, overwrite: bool) -> bool:
    """Whether the cached result ``cache`` was computed from exactly these ``facts``.

    A result computed otherwise, or an unreadable file, is refused (the error says what differs), or
    with ``overwrite`` recomputed.
    """
    try:
        stored_fingerprint, stored_facts = VideoResult.read_fingerprint(cache)
    except _UNREADABLE as error:
        if overwrite:
            log.warning("%s: unreadable cached result (%s); recomputing it (overwrite).", cache, error)
            return False
        raise ValueError(
            f"{cache}: cannot read this cached result ({type(error).__name__}: {error}), e.g. a partial "
            "copy or a full disk; delete it or pass overwrite=true to recompute it."
        ) from error
    if stored_fingerprint == fingerprint:
        if overwrite:  # a result damaged past its fingerprint is read whole only here, so that it is redone
            try:
                VideoResult.load(cache)
            except _UNREADABLE as error:
                log.warning("%s: unreadable cached result (%s); recomputing it (overwrite).", cache, error)
                return False
        return True
    if overwrite:
        return False
    raise ValueError(
        f"{cache} was computed with other settings: {_differences(stored_facts, facts)}. Pass "
        "overwrite=true to recompute the cached results, or use a fresh output_dir to keep them."
    )


def _differences(stored: str, current: str) -> str:
    """What differs between a cached result's facts and this run's, in words (old → new values)."""
    if not stored:
        return "it was written by an earlier version of lavida, which did not record its settings"
    old, new = json.loads(stored), json.loads(current)
    changes = []
    # Nested settings by their dotted key (run.base_models.mllm), so that the one that changed is named
    # (one that a cache written by an older lavida lacks shows as absent).
    changes += changed_settings(old.get("run", {}), new["run"])
    for key in sorted(set(old.get("video", {})) | set(new["video"])):
        if old.get("video", {}).get(key) != new["video"].get(key):
            changes.append(_VIDEO_FACT_NAMES.get(key, key))
    return "; ".join(changes) or "unknown (the facts agree but the fingerprints do not)"


def load_cached(cache: Path) -> VideoResult:
    """Load a cached result, naming the file if it cannot be read."""
    try:
        return VideoResult.load(cache)
    except _UNREADABLE as error:
        raise ValueError(
            f"{cache}: cannot read this cached result ({type(error).__name__}: {error}); delete it or "
            "pass overwrite=true to recompute it."
        ) from error
