"""Evaluate a model (or another method's saved predictions) on a VAD benchmark.

For each test video the runner plans clips (``plan_clips``), predicts them in batches, spreads each
sampled frame's score over its interval, computes the video's pixel statistics against the ground
truth, and caches the :class:`VideoResult` on disk as soon as the video is done. A rerun with the
same output directory skips every cached video computed from the same run-wide settings and the same
inputs of that video (its labels, tracks and prediction files), so an interrupted evaluation resumes
where it stopped, and so does a full run after a ``max_videos`` smoke run or one with a video added.
Given a ``predictor_factory``, the model is loaded only when a video is left to predict: a rerun that
finds every result cached (to recompute the metrics, say) does not load it.
A rerun that computes anything first removes the previous ``metrics.json``, ``report.md``,
``per_video.csv`` and ``.hydra/`` record, so a rerun killed midway leaves no metrics of other results
behind. With several processes (``accelerate launch``), every rank checks every cached result, the
videos left to compute are split round-robin across ranks, and rank 0 computes the metrics once every
rank is done; a rank with no video to compute never loads the model.

Scores-only mode (``predictions_dir``): the same metrics from saved per-video predictions of any
method — ``<name>.npy`` with (F,) frame scores, or ``<name>.npz`` with ``frame_scores`` (F,) and
optionally ``pixel_scores`` (F, H, W), probabilities in [0, 1].
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit
from tqdm import tqdm

from lavida.data.video import open_video
from lavida.eval.benchmark import ClipPlan, GroundTruthError, Protocol, TestVideo, VadBenchmark, plan_clips
from lavida.eval.report import compute_metrics, summary_line, write_reports
from lavida.eval.video_result import PixelStatistics, VideoResult, pixel_statistics
from lavida.file_names import safe_file_name
from lavida.file_state import file_state
from lavida.inference import Predictor, upsample_mask_logits
from lavida.number_checks import is_whole
from lavida.run_outputs import RECORD_DIR, remove_previous_outputs
from lavida.settings_diff import changed_settings

log = logging.getLogger(__name__)


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


def run_evaluation(
    *,
    benchmark: VadBenchmark,
    protocol: Protocol,
    output_dir: str | Path,
    predictor: Predictor | None = None,
    predictor_factory: Callable[[], Predictor] | None = None,
    predictions_dir: str | Path | None = None,
    categories: Sequence[str] | None = None,
    settings: EvalSettings = EvalSettings(),
    run_info: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Evaluate and write ``metrics.json``, ``per_video.csv`` and ``report.md`` into ``output_dir``.

    Args:
        benchmark: The test set.
        protocol: ``benchmark.protocol("standard" | "lavida_official")``.
        output_dir: Run directory; per-video results are cached under ``predictions/``.
        predictor: Runs the model; exactly one of ``predictor``, ``predictor_factory`` and
            ``predictions_dir`` must be given.
        predictor_factory: Loads the model, called (once) only if this process has a video to predict
            that is not cached; ``run_info`` must then describe the model without loading it.
        predictions_dir: Scores-only mode: saved predictions of any method.
        categories: Prompt categories; default the benchmark's list.
        settings: See :class:`EvalSettings`.
        run_info: Extra facts recorded in the report and the cache fingerprint (checkpoint, model).
        overwrite: Recompute cached results made with different settings, or unreadable ones, instead of
            refusing to mix them.

    Returns:
        The metrics (on rank 0; other ranks get an empty dict).
    """
    from accelerate import PartialState

    if sum(given is not None for given in (predictor, predictor_factory, predictions_dir)) != 1:
        raise ValueError(
            "Give exactly one of `predictor`, `predictor_factory` (run the model) and `predictions_dir` "
            "(scores only)."
        )
    output_dir = Path(output_dir)
    categories = list(categories or benchmark.categories)
    videos = benchmark.select(protocol)
    left_out = benchmark.missing_under(protocol)  # missing on disk, among the videos the protocol evaluates
    if settings.max_videos is not None:
        left_out += max(0, len(videos) - settings.max_videos)
        videos = videos[: settings.max_videos]
    if not videos:
        raise ValueError(f"{benchmark.name}: no test videos selected under protocol '{protocol.name}'.")
    _check_cache_names(videos)
    if (
        predictions_dir is not None
        and Path(predictions_dir).resolve() == (output_dir / "predictions").resolve()
    ):
        raise ValueError(
            f"predictions_dir {predictions_dir} is where this run caches its own per-video results "
            f"(<output_dir>/predictions), which would overwrite the saved predictions; evaluate into "
            "another output_dir."
        )
    if predictions_dir is not None:
        _check_saved_predictions(videos, predictions_dir)
    if predictions_dir is not None and benchmark.has_pixel_gt:
        _check_saved_pixel_maps(videos, Path(predictions_dir), benchmark=benchmark)
    pixel_size = settings.pixel_size or protocol.pixel_size
    run_facts = _run_facts(benchmark, protocol, categories, settings, pixel_size, run_info, predictions_dir)

    state = PartialState()
    # Every rank decides for every video (reading only the caches' fingerprints) before any computes: a
    # refusal then stops all ranks with the run directory as it was, and a rerun that computes anything
    # first removes the previous run's metrics. The videos left to compute are split round-robin.
    todo: list[tuple[TestVideo, str, str]] = []
    for video in videos:
        facts = _normalised({"run": run_facts, "video": _video_facts(video, predictions_dir)})
        fingerprint = hashlib.sha256(facts.encode()).hexdigest()[:16]
        cache = cached_result_path(output_dir, video.name)
        if not (cache.is_file() and _cache_is_current(cache, fingerprint, facts, overwrite=overwrite)):
            todo.append((video, fingerprint, facts))
    mine = todo[state.process_index :: state.num_processes]
    if predictor_factory is not None and mine:
        # Only with a video to predict: a rerun that finds every result cached skips the load (minutes and
        # ~17 GB for the paper's model). Before the barrier: a model that fails to load stops the run with
        # the previous outputs in place. Loading takes no collective step, so ranks may differ here.
        log.info(
            "%d of %d videos are not cached (%d on this process); loading the model.",
            len(todo),
            len(videos),
            len(mine),
        )
        predictor = predictor_factory()
    elif predictor_factory is not None and not todo:
        log.info("All %d videos are cached; the model is not loaded.", len(videos))
    state.wait_for_everyone()  # all ranks have decided before any cache is rewritten
    if todo and state.is_main_process:
        # Before computing anything: a rerun killed midway must not leave metrics (or the .hydra/ record)
        # that describe other results than its cache now holds.
        remove_previous_outputs(output_dir, files=_RUN_OUTPUTS, folders=_RUN_FOLDERS)
    progress = tqdm(
        mine,
        desc=f"{benchmark.name} ({protocol.name})",
        unit="video",
        disable=not state.is_local_main_process,
    )
    for video, fingerprint, facts in progress:
        plan = plan_clips(
            video.num_frames,
            interval=protocol.interval,
            clip_length=protocol.clip_length,
            drop_tail=protocol.drop_tail,
        )
        if predictions_dir is None:
            result = _predict(video, plan, predictor, categories, benchmark, settings, protocol, pixel_size)
        else:
            result = _from_saved(
                video, plan, Path(predictions_dir), benchmark, settings, protocol, pixel_size
            )
        result.fingerprint, result.facts = fingerprint, facts
        result.save(cached_result_path(output_dir, video.name))
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}

    # One cached result at a time: its pixel statistics (a dense histogram of ~1.9M bins, ~30 MB once
    # loaded) are merged into one running total and dropped, so memory does not grow with the videos.
    results: list[VideoResult] = []
    pixels: PixelStatistics | None = None
    for video in videos:
        result = _load_cached(cached_result_path(output_dir, video.name))
        if result.pixels is not None and result.scored.size:
            pixels = result.pixels if pixels is None else pixels.merge(result.pixels)
        result.pixels = None
        results.append(result)
    metrics, notes = compute_metrics(results, videos=videos, benchmark=benchmark, pixels=pixels)
    # The paper's tables are on whole test splits: say when this run is not one (lavida-tables checks).
    metrics.update(split=benchmark.split, videos_left_out=left_out)
    # The clip length T changes every score (supplement Tab. 7 ablates it), so the outputs record it.
    metrics["clip_length"] = protocol.clip_length
    # What produced these numbers: lavida-tables puts only one model's runs in one row.
    metrics["source"] = _source(
        benchmark, categories, run_info, predictions_dir, clip_length=protocol.clip_length
    )
    info = {
        "benchmark": benchmark.name,
        "protocol": protocol.name,
        "interval": protocol.interval,
        "clip_length": protocol.clip_length,
        "drop_tail": protocol.drop_tail,
        "categories": categories,
        "mode": "model" if predictions_dir is None else f"scores-only ({predictions_dir})",
        **(run_info or {}),
    }
    if benchmark.has_pixel_gt:  # meaningless without pixel ground truth
        metrics.update(
            pixel_size=list(pixel_size) if pixel_size else None, pixel_resize=protocol.pixel_resize
        )
        info.update(pixel_size=pixel_size, pixel_resize=protocol.pixel_resize)
    write_reports(output_dir, metrics=metrics, notes=notes, results=results, info=info, benchmark=benchmark)
    log.info("%s", summary_line(metrics, benchmark=benchmark, protocol=protocol.name, output_dir=output_dir))
    return metrics


def _predict(
    video: TestVideo,
    plan: ClipPlan,
    predictor: Predictor,
    categories: list[str],
    benchmark: VadBenchmark,
    settings: EvalSettings,
    protocol: Protocol,
    pixel_size: tuple[int, int] | None,
) -> VideoResult:
    labels = video.frame_labels[plan.scored]
    if plan.num_clips == 0:  # official protocol: shorter than one window, nothing scored
        return VideoResult(video.name, plan.scored, np.zeros(0, np.float64), labels)
    source = open_video(video.path, fps=video.fps)
    clips = plan.clips
    if clips.max() >= len(source):
        # The annotation has more frames than the decoder finds (UBnormal, vad_eval.md §1.1): the missing
        # trailing frames reuse the last decodable frame rather than being dropped from the metric.
        log.warning(
            "%s: ground truth has %d frames but the video decodes %d; the last %d reuse the final frame.",
            video.name,
            video.num_frames,
            len(source),
            video.num_frames - len(source),
        )
        clips = np.minimum(clips, len(source) - 1)
    elif len(source) > video.num_frames:
        # The decoder finds more frames than the ground truth has (UBnormal: decord counts more frames than
        # OpenCV on some videos, vad_eval.md §9): the extra ones are not scored, and if they are inserted
        # mid-video rather than appended, labels and frames drift apart from there on.
        log.warning(
            "%s: the video decodes %d frames but its ground truth has %d; the last %d are not scored (if "
            "the decoder inserts frames mid-video, labels and frames are misaligned after them).",
            video.name,
            len(source),
            video.num_frames,
            len(source) - video.num_frames,
        )
    keep_masks = benchmark.has_pixel_gt and video.pixel_masks is not None
    prediction = predictor.predict_video(
        video.path,
        clips,
        categories,
        source=source,  # workers read copies of a PyAV video instead of counting its frames again (for_worker)
        keep_masks=keep_masks,
    )
    scores = plan.expand(prediction.frame_scores)  # sample-and-hold over each interval
    pixels = regions = None
    if keep_masks:
        logits = prediction.mask_logits
        # The release scores the S×S logits SAM2 upsamples bilinearly from its S/4 × S/4 output.
        side = predictor.model.mask_decoder.image_size if protocol.pixel_resize == "release" else None

        def predicted(frames: np.ndarray) -> np.ndarray:
            held = logits[plan.source[frames]]  # scored frames are 0..F'-1
            # Probabilities in float64: a float32 sigmoid is exactly 1.0 for every logit above ~16.6,
            # and the release ranks pixels by their logits (docs/evaluation.md).
            if side is not None:
                return upsample_mask_logits(held, (side, side), dtype=np.float64)
            return expit(held.astype(np.float64))

        pixels, regions = pixel_statistics(
            plan.scored,
            predicted=predicted,
            ground_truth=video.pixel_masks,
            size=pixel_size,
            resize=protocol.pixel_resize,
            region_thresholds=settings.region_thresholds if video.tracks is not None else None,
            chunk=settings.pixel_chunk,
            # Sample-and-hold: frames holding one sampled prediction are upsampled once (1/I of the work).
            holds=plan.source,
        )
    return VideoResult(video.name, plan.scored, scores.astype(np.float64), labels, pixels, regions)


def _from_saved(
    video: TestVideo,
    plan: ClipPlan,
    directory: Path,
    benchmark: VadBenchmark,
    settings: EvalSettings,
    protocol: Protocol,
    pixel_size: tuple[int, int] | None,
) -> VideoResult:
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
    frame_scores = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
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


def _check_saved_predictions(videos: Sequence[TestVideo], directory: str | Path) -> None:
    """Refuse a predictions folder that lacks some of ``videos``, naming them all at once, before any is
    scored (reading them one by one would stop at the first, after minutes of work on a large set).

    Raises:
        FileNotFoundError: naming the videos without a file, and the file names expected.
    """
    missing = [
        video.name
        for video in videos
        # os.path.isfile: False, not an error, for a name the file system refuses (as _from_saved reads it)
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


def _check_saved_pixel_maps(videos: Sequence[TestVideo], directory: Path, *, benchmark: VadBenchmark) -> None:
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
    characters outside ``A-Za-z0-9._-`` replaced by ``_`` (``safe_file_name``, how this runner names its
    own caches): XD-Violence names hold ``#`` and ``=``, and either spelling of
    ``Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6`` is found. The suffix is appended to the whole
    name, never substituted: ``Path.with_suffix`` would cut the name at its first dot.
    """
    directory = Path(directory)
    base = safe_file_name(video_name)
    # The exact spelling only as a plain file name in ``directory``, never a path out of it ("../x").
    if video_name != base and "/" not in video_name and "\\" not in video_name:
        exact = directory / f"{video_name}.npz", directory / f"{video_name}.npy"
        if any(_is_file(path) for path in exact):
            return exact
    return directory / f"{base}.npz", directory / f"{base}.npy"


def _is_file(path: Path) -> bool:
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


def cached_result_path(output_dir: str | Path, video_name: str) -> Path:
    """Where :func:`run_evaluation` caches one video's :class:`VideoResult` in its ``output_dir``."""
    return Path(output_dir) / "predictions" / f"{safe_file_name(video_name)}.npz"


def _check_cache_names(videos: Sequence[TestVideo]) -> None:
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
# the computation changes: 2: float64 frame scores (1 stored float32, which ties every logit above
# ~16.6); 3: float64 pixel probabilities and PixelAUC(octaves=60) (2 tied pixel logits above ~16.6);
# 4: per-video fingerprints with their facts stored beside them.
_RESULT_FORMAT = 4


def _run_facts(
    benchmark: VadBenchmark,
    protocol: Protocol,
    categories: list[str],
    settings: EvalSettings,
    pixel_size: tuple[int, int] | None,
    run_info: dict | None,
    predictions_dir: str | Path | None,
) -> dict:
    """The run-wide settings every cached result must share (one video's own inputs: ``_video_facts``).

    Paths whose content is fingerprinted elsewhere are left out, so that the same run spelled with a
    relative or an absolute path, or a moved prediction folder, reuses its results: the checkpoint path
    when its digest is given (``checkpoint_sha256``), and the prediction folder (each video's files
    are in ``_video_facts``). The dataset root stays (resolved) on benchmarks with pixel ground truth:
    the masks themselves are not hashed, and another copy of the data may hold other masks.
    """
    run = dict(run_info or {})
    if "checkpoint_sha256" in run:
        run.pop("checkpoint", None)
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


# The model settings of ``run_info`` (as lavida-eval passes them) that change the numbers of one checkpoint.
_MODEL_SETTINGS = ("checkpoint_overrides", "dtype", "gate_masks", "base_models")


def _source(
    benchmark: VadBenchmark,
    categories: list[str],
    run_info: dict | None,
    predictions_dir: str | Path | None,
    *,
    clip_length: int,
) -> dict:
    """What produced a run's numbers, recorded in ``metrics.json`` for lavida-tables.

    The checkpoint's path (resolved) and digest are those the caller gave in ``run_info`` for the cache
    fingerprint (nothing is hashed here); None where unknown or not applicable. ``default_categories``
    says whether ``categories`` are the benchmark's own prompt list. A model run also records its clip
    length and the settings of ``run_info`` that change one checkpoint's numbers (``_MODEL_SETTINGS``);
    saved predictions were made with settings lavida-eval does not know.
    """
    run = run_info or {}
    checkpoint = run.get("checkpoint")
    model = predictions_dir is None
    return {
        "mode": "model" if model else "scores-only",
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint is not None else None,
        "checkpoint_sha256": run.get("checkpoint_sha256"),
        "predictions": str(Path(predictions_dir).resolve()) if predictions_dir is not None else None,
        "categories": list(categories),
        "default_categories": list(categories) == list(benchmark.categories),
        "clip_length": clip_length if model else None,
        "settings": {key: run[key] for key in _MODEL_SETTINGS if key in run} if model else {},
    }


def _video_facts(video: TestVideo, predictions_dir: str | Path | None) -> dict:
    """One video's own inputs: a digest of its frame labels and tracks (a cached result holds the labels
    of the run that made it, so ground truth read with other options must not be served from it) and,
    in scores-only mode, the state (name, size, time: ``file_state``) of its prediction files, without
    their folder (predictions saved again must not be served from the old ones' results; a moved folder
    may be)."""
    digest = hashlib.sha256(np.ascontiguousarray(video.frame_labels, dtype=np.uint8).tobytes())
    if video.tracks is not None:
        digest.update(b"\0tracks\0" + np.ascontiguousarray(video.tracks, dtype=np.int64).tobytes())
    facts: dict = {
        "ground_truth": {"frames": int(video.num_frames), "labels_and_tracks": digest.hexdigest()[:16]}
    }
    if predictions_dir is not None:
        facts["prediction_files"] = [
            file_state(path)["files"]
            for path in saved_prediction_paths(predictions_dir, video.name)
            if _is_file(path)
        ]
    return facts


def _normalised(facts: dict) -> str:
    """Facts as canonical JSON (tuples become lists), the form that is hashed, stored and compared."""
    return json.dumps(json.loads(json.dumps(facts, default=str)), sort_keys=True)


_VIDEO_FACT_NAMES = {
    "ground_truth": "this video's ground truth (frame count, labels or tracks) is not the one the cached "
    "result was computed with",
    "prediction_files": "this video's prediction files were written again (name, size or time differ)",
}


# What reading a damaged or partial cached result (.npz) raises.
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def _cache_is_current(cache: Path, fingerprint: str, facts: str, *, overwrite: bool) -> bool:
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


def _load_cached(cache: Path) -> VideoResult:
    """Load a cached result, naming the file if it cannot be read."""
    try:
        return VideoResult.load(cache)
    except _UNREADABLE as error:
        raise ValueError(
            f"{cache}: cannot read this cached result ({type(error).__name__}: {error}); delete it or "
            "pass overwrite=true to recompute it."
        ) from error


# Files describing a finished run, metrics.json first (lavida-tables reads it as the run's result), and
# the record of the command that made them (written when lavida-eval finishes, lavida/cli/record.py).
_RUN_OUTPUTS = ("metrics.json", "report.md", "per_video.csv")
_RUN_FOLDERS = (RECORD_DIR,)
