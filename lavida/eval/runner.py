"""Evaluate a model (or another method's saved predictions) on a VAD benchmark.

For each test video the runner plans clips (``plan_clips``), predicts them in batches, spreads each
sampled frame's score over its interval, computes the video's pixel statistics against the ground
truth, and caches the :class:`VideoResult` on disk as soon as the video is done. A rerun with the
same output directory skips every cached video computed from the same run-wide settings and the same
inputs of that video (its labels, tracks and prediction files), so an interrupted evaluation resumes
where it stopped, and so does a full run after a ``max_videos`` smoke run or one with a video added
(``lavida.eval.result_cache``). Given a ``predictor_factory``, the model is loaded only when a video is
left to predict: a rerun that finds every result cached (to recompute the metrics, say) does not load it.
A rerun that computes anything first removes the previous ``metrics.json``, ``report.md``,
``per_video.csv`` and ``.hydra/`` record, so a rerun killed midway leaves no metrics of other results
behind. With several processes (``accelerate launch``), every rank checks every cached result, the
videos left to compute are split round-robin across ranks, and rank 0 computes the metrics once every
rank is done; a rank with no video to compute never loads the model.

Scores-only mode (``predictions_dir``): the same metrics from saved per-video predictions of any
method — ``<name>.npy`` with (F,) frame scores, or ``<name>.npz`` with ``frame_scores`` (F,) and
optionally ``pixel_scores`` (F, H, W), probabilities in [0, 1] (``lavida.eval.saved_predictions``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.special import expit
from tqdm import tqdm

from lavida.data.video import open_video
from lavida.eval.benchmark import ClipPlan, Protocol, TestVideo, VadBenchmark, plan_clips
from lavida.eval.report import compute_metrics, summary_line, write_reports
from lavida.eval.result_cache import (
    CACHE_DIR,
    cache_is_current,
    cached_result_path,
    check_cache_names,
    load_cached,
    normalised_facts,
    run_facts,
    video_facts,
)
from lavida.eval.saved_predictions import (
    check_saved_pixel_maps,
    check_saved_predictions,
    result_from_saved,
)
from lavida.eval.settings import EvalSettings
from lavida.eval.video_result import PixelStatistics, VideoResult, pixel_statistics
from lavida.inference import Predictor, upsample_mask_logits
from lavida.run_outputs import RECORD_DIR, remove_previous_outputs

log = logging.getLogger(__name__)


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
    check_cache_names(videos)
    if predictions_dir is not None and Path(predictions_dir).resolve() == (output_dir / CACHE_DIR).resolve():
        raise ValueError(
            f"predictions_dir {predictions_dir} is where this run caches its own per-video results "
            f"(<output_dir>/predictions), which would overwrite the saved predictions; evaluate into "
            "another output_dir."
        )
    if predictions_dir is not None:
        check_saved_predictions(videos, predictions_dir)
    if predictions_dir is not None and benchmark.has_pixel_gt:
        check_saved_pixel_maps(videos, Path(predictions_dir), benchmark=benchmark)
    pixel_size = settings.pixel_size or protocol.pixel_size
    facts_of_run = run_facts(benchmark, protocol, categories, settings, pixel_size, run_info, predictions_dir)

    state = PartialState()
    # Every rank decides for every video (reading only the caches' fingerprints) before any computes: a
    # refusal then stops all ranks with the run directory as it was, and a rerun that computes anything
    # first removes the previous run's metrics. The videos left to compute are split round-robin.
    todo: list[tuple[TestVideo, str, str]] = []
    fingerprints: dict[str, str] = {}  # video name -> what its cached result must have been computed from
    for video in videos:
        facts = normalised_facts({"run": facts_of_run, "video": video_facts(video, predictions_dir)})
        fingerprint = fingerprints[video.name] = hashlib.sha256(facts.encode()).hexdigest()[:16]
        cache = cached_result_path(output_dir, video.name)
        if not (cache.is_file() and cache_is_current(cache, fingerprint, facts, overwrite=overwrite)):
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
            result = result_from_saved(
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
        cache = cached_result_path(output_dir, video.name)
        result = load_cached(cache)
        if result.fingerprint != fingerprints[video.name]:
            # Nothing locks output_dir: a second run into it (overwrite=true, or other settings) may have
            # replaced results since this one decided. Its metrics would mix the two runs' predictions.
            raise ValueError(
                f"{cache}: this cached result was computed with other settings than this run's, after the "
                f"run checked it: another run wrote into {output_dir} at the same time. Run again (or give "
                "each run its own output_dir)."
            )
        if result.pixels is not None and result.scored.size:
            pixels = result.pixels if pixels is None else pixels.merge(result.pixels)
        result.pixels = None
        results.append(result)
    metrics, notes = compute_metrics(results, videos=videos, benchmark=benchmark, pixels=pixels)
    # The paper's tables are on whole test splits: say when this run is not one (lavida-tables checks).
    metrics.update(split=benchmark.split, videos_left_out=left_out)
    # Which benchmark and protocol, as report.md's title says: metrics.json read alone names its run.
    metrics.update(benchmark=benchmark.name, protocol=protocol.name, interval=protocol.interval)
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


# A change to what this computes must bump lavida.eval.result_cache._RESULT_FORMAT (cached results).
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


# Files describing a finished run, metrics.json first (lavida-tables reads it as the run's result), and
# the record of the command that made them (written when lavida-eval finishes, lavida/cli/record.py).
_RUN_OUTPUTS = ("metrics.json", "report.md", "per_video.csv")
_RUN_FOLDERS = (RECORD_DIR,)
