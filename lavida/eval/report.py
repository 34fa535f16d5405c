"""From per-video results to the benchmark's metrics and the files a run leaves behind.

Files written into the run directory:

- ``metrics.json`` — flat keys (``frame_auc_micro``, ``frame_auc_macro``, ``frame_ap``,
  ``frame_ap_trapezoid``, ``pixel_auc`` (and its ``pixel_auc_error_bound``), ``pixel_auc_per_frame``,
  ``pixel_criterion_auc``,
  ``pixel_criterion_eer``, ``rbdc``, ``tbdc``, counts) with values as fractions in [0, 1], plus
  ``primary_metric`` naming the benchmark's headline metric, ``split`` and ``videos_left_out`` (videos
  of the split not evaluated: not found on disk, or beyond ``max_videos``), ``clip_length`` (T, sampled
  frames per clip), ``source`` (what produced the numbers: ``mode`` ``model`` or ``scores-only``, the
  ``checkpoint`` (resolved) and its ``checkpoint_sha256`` when the caller gave them, the resolved
  ``predictions`` folder, the ``categories`` prompted and whether they are the benchmark's,
  ``default_categories``; unknown values are null) and, on benchmarks with pixel ground truth,
  ``pixel_size`` and ``pixel_resize``. A metric that is undefined for the data (e.g. AP without
  anomalous frames) is left out and explained in the report.
- ``per_video.csv`` — frames, anomalous frames, mean/max score and frame AUC per video.
- ``report.md`` — the run's settings, the metrics beside the paper's number, and the notes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lavida.atomic import atomic_path, write_text
from lavida.eval.benchmark import TestVideo, VadBenchmark
from lavida.eval.paper_results import PAPER_RESULTS
from lavida.eval.video_result import PixelStatistics, VideoResult
from lavida.metrics import frame_ap, frame_auc, rbdc_tbdc

METRIC_DESCRIPTIONS = {
    "frame_auc_micro": "frame ROC-AUC over all frames pooled (micro)",
    "frame_auc_macro": "mean per-video frame ROC-AUC with [0]/[1] sentinels (macro, UBnormal convention)",
    "frame_ap": "frame average precision (sklearn)",
    "frame_ap_trapezoid": "frame PR-AUC by the trapezoid rule (LAVAD/VERA convention)",
    "pixel_auc": "pooled pixel ROC-AUC over every pixel of every frame (LAVIDA's pixel metric)",
    "pixel_auc_error_bound": "bound on the gap between pixel_auc and sklearn's roc_auc_score, from the "
    "histogram (same-bin pairs)",
    "pixel_auc_per_frame": "mean per-frame pixel ROC-AUC over anomalous frames (TAO)",
    "pixel_criterion_auc": "AUC of the 40% pixel-level criterion (Mahadevan et al.)",
    "pixel_criterion_eer": "EER of the 40% pixel-level criterion",
    "rbdc": "region-based detection criterion (Ramachandra & Jones, IoU 0.1)",
    "tbdc": "track-based detection criterion (alpha 0.1)",
}


def compute_metrics(
    results: Sequence[VideoResult],
    *,
    videos: Sequence[TestVideo],
    benchmark: VadBenchmark,
    pixels: PixelStatistics | None = None,
) -> tuple[dict, list[str]]:
    """All metrics the results support, and notes on those that could not be computed.

    Args:
        results: One per video.
        videos: The benchmark's videos (tracks for RBDC/TBDC).
        benchmark: The benchmark (its primary metric).
        pixels: The pixel statistics of every scored video, already merged by a caller that loads
            results one at a time (so that per-video histograms are not all held at once); None merges
            those of ``results``.
    """
    metrics: dict = {}
    notes: list[str] = []
    scored = [r for r in results if r.scored.size]
    scores = [r.frame_scores for r in scored]
    labels = [r.frame_labels for r in scored]
    skipped = len(results) - len(scored)
    if skipped:
        notes.append(f"{skipped} video(s) had no scored frame under this protocol (shorter than one window).")

    def attempt(key: str, compute) -> None:
        try:
            metrics[key] = float(compute())
        except ValueError as error:
            notes.append(f"{key}: not computed — {error}")

    if scored:
        attempt("frame_auc_micro", lambda: frame_auc(scores, labels, average="micro"))
        attempt("frame_auc_macro", lambda: frame_auc(scores, labels, average="macro"))
        attempt("frame_ap", lambda: frame_ap(scores, labels, method="sklearn"))
        attempt("frame_ap_trapezoid", lambda: frame_ap(scores, labels, method="trapezoid"))

    if pixels is None:
        with_pixels = [r.pixels for r in scored if r.pixels is not None]
        if with_pixels:
            pixels = PixelStatistics()
            for stats in with_pixels:
                pixels.merge(stats)
    if pixels is not None:
        attempt("pixel_auc", pixels.pixel_auc.compute)
        if "pixel_auc" in metrics:
            # PixelAUC's own guarantee: |pixel_auc - sklearn's roc_auc_score on the same scores| ≤ this.
            metrics["pixel_auc_error_bound"] = float(pixels.pixel_auc.error_bound())
        attempt("pixel_auc_per_frame", pixels.per_frame.compute)
        try:
            criterion = pixels.criterion.compute()
            metrics["pixel_criterion_auc"] = float(criterion.auc)
            metrics["pixel_criterion_eer"] = float(criterion.eer)
        except ValueError as error:
            notes.append(f"pixel_criterion: not computed — {error}")

    if pixels is None and benchmark.has_pixel_gt and scored:
        notes.append(
            "pixel metrics (and RBDC/TBDC where there are tracks): not computed — no video has pixel scores "
            "(saved predictions without 'pixel_scores')."
        )

    by_name = {v.name: v for v in videos}
    tracked = [r for r in scored if r.regions is not None and by_name[r.name].tracks is not None]
    if tracked:
        # Each video as the frames it was scored on, numbered 0..F'-1: the FPR denominator is the frames
        # scored (research/vad_eval.md §8.3, all test frames evaluated), and tracks of frames the protocol
        # did not score (the official dropped tail) are not regions a detector could have found.
        gt_tracks = {r.name: _on_scored_frames(by_name[r.name].tracks, r.scored, 1) for r in tracked}
        detections = {r.name: _on_scored_frames(r.regions, r.scored, 0) for r in tracked}
        frames = {r.name: int(r.scored.size) for r in tracked}
        try:
            metrics["rbdc"], metrics["tbdc"] = (float(x) for x in rbdc_tbdc(gt_tracks, detections, frames))
        except ValueError as error:
            notes.append(f"rbdc/tbdc: not computed — {error}")

    metrics["num_videos"] = len(results)
    metrics["num_frames"] = int(sum(r.scored.size for r in results))
    metrics["num_anomalous_frames"] = int(sum(int(r.frame_labels.sum()) for r in results))
    metrics["primary_metric"] = benchmark.primary_metric
    return metrics, notes


def _on_scored_frames(rows: np.ndarray, scored: np.ndarray, column: int) -> np.ndarray:
    """``rows`` (N, 6) whose raw frame index (in ``column``) was scored, that index replaced by its position
    in ``scored``: RBDC/TBDC then see the video as its ``scored.size`` frames, whatever raw frames those are
    (0..F'-1 under both protocols, where nothing is renumbered and only the dropped tail's rows go)."""
    rows = np.asarray(rows).reshape(-1, 6)
    if scored.size == 0:
        return rows[:0]
    frames = rows[:, column].astype(np.int64)
    order = np.argsort(scored, kind="stable")
    position = order[np.minimum(np.searchsorted(scored, frames, sorter=order), scored.size - 1)]
    kept = scored[position] == frames
    out = rows[kept].copy()
    out[:, column] = position[kept]
    return out


def write_reports(
    output_dir: Path,
    *,
    metrics: dict,
    notes: list[str],
    results: Sequence[VideoResult],
    info: dict,
    benchmark: VadBenchmark,
) -> None:
    """Write per_video.csv, report.md and, last, metrics.json (each atomically).

    lavida-tables takes a ``metrics.json`` as a finished run and reads ``report.md`` beside it, so the
    previous ``metrics.json`` goes first and the new one comes last: a run killed in between leaves none,
    never one beside another run's report.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").unlink(missing_ok=True)

    rows = []
    for result in results:
        row = {
            "video": result.name,
            "frames": int(result.scored.size),
            "anomalous_frames": int(result.frame_labels.sum()),
            "mean_score": f"{float(result.frame_scores.mean()):.6f}" if result.scored.size else "",
            "max_score": f"{float(result.frame_scores.max()):.6f}" if result.scored.size else "",
            "frame_auc": "",
        }
        positives = int(result.frame_labels.sum())
        if 0 < positives < result.scored.size:
            try:
                row["frame_auc"] = f"{frame_auc([result.frame_scores], [result.frame_labels]):.6f}"
            except ValueError:  # e.g. NaN scores: compute_metrics has put the reason in the notes
                pass
        rows.append(row)
    with (
        atomic_path(output_dir / "per_video.csv") as temporary,
        temporary.open("w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    write_text(output_dir / "report.md", _markdown(metrics, notes, info, benchmark))
    write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")


# The run's settings listed at the top of report.md, when given.
_REPORTED_SETTINGS = (
    "mode",
    "checkpoint",
    "checkpoint_sha256",
    "interval",
    "clip_length",
    "drop_tail",
    "pixel_size",
    "pixel_resize",
)


def _markdown(metrics: dict, notes: list[str], info: dict, benchmark: VadBenchmark) -> str:
    paper_key, paper_value = PAPER_RESULTS.get(benchmark.name, (None, None))
    lines = [f"# {benchmark.name} — {info.get('protocol')} protocol", ""]
    for key in _REPORTED_SETTINGS:
        if key in info and info[key] is not None:
            lines.append(f"- {key}: `{info[key]}`")
    categories = info.get("categories", [])
    lines.append(f"- categories ({len(categories)}): {', '.join(categories)}")
    if list(categories) != list(benchmark.categories):
        lines.append("- categories given for this run, not the benchmark's prompt list")
    split, left_out = metrics.get("split", "test"), metrics.get("videos_left_out", 0)
    lines.append(f"- split: `{split}`" + ("" if split == "test" else " (the paper reports the test split)"))
    if left_out:
        lines.append(
            f"- videos left out: {left_out} (not found on disk, or beyond max_videos); not comparable with "
            "the paper's numbers, which use every test video"
        )
    lines += [
        f"- videos: {metrics['num_videos']}, frames scored: {metrics['num_frames']}, "
        f"anomalous: {metrics['num_anomalous_frames']}",
        "",
        "| metric | value (%) | paper (%) | definition |",
        "|---|---:|---:|---|",
    ]
    for key, description in METRIC_DESCRIPTIONS.items():
        if key in metrics:
            paper = f"{paper_value:.2f}" if key == paper_key else ""
            marker = " **(primary)**" if key == metrics["primary_metric"] else ""
            lines.append(f"| {key}{marker} | {100 * metrics[key]:.2f} | {paper} | {description} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def summary_line(metrics: dict, *, benchmark: VadBenchmark, protocol: str, output_dir: str | Path) -> str:
    """The run's result in one line for the console, headline metric first, as report.md gives them (%):

    ``ucsd_ped2 (standard), 12 videos, 2,010 frames: pixel_auc 97.12 % (paper 87.68), frame_auc_micro
    95.40 %, ... (report.md, metrics.json in outputs/eval/ucsd_ped2_standard)``

    The whole of metrics.json on one line was unreadable; it stays in the file, with the bounds on the
    metrics' numerical error, which report.md lists and this line leaves out.
    """
    paper_key, paper_value = PAPER_RESULTS.get(benchmark.name, (None, None))
    primary = metrics.get("primary_metric")
    keys = [key for key in METRIC_DESCRIPTIONS if key in metrics and not key.endswith("_error_bound")]
    keys.sort(key=lambda key: key != primary)  # stable: the others keep report.md's order
    shown = []
    for key in keys:
        text = f"{key} {100 * metrics[key]:.2f} %"
        if key == paper_key and paper_value is not None:
            text += f" (paper {paper_value:.2f})"
        shown.append(text)
    head = (
        f"{benchmark.name} ({protocol}), {metrics['num_videos']:,} videos, {metrics['num_frames']:,} frames"
    )
    body = ", ".join(shown) if shown else "no metric defined (see report.md)"
    return f"{head}: {body} (report.md, metrics.json in {output_dir})"
