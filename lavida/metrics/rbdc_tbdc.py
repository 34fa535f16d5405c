"""Region- and track-based detection criteria, RBDC and TBDC (Ramachandra & Jones, WACV 2020).

Semantics of the de-facto reference, lilygeorgescu/AED ``evaluation/compute_tbdc_rbdc.py`` (also
shipped by yu2hi13/TAO), as described in ``research/vad_eval.md`` §3. Nothing of it is vendored (its
licence is CC BY-NC-ND); this is an independent, vectorised implementation of the same procedure:

1. Ground truth: anomalous regions (boxes), each belonging to a track (one anomalous event of one
   object). Detections: boxes with an anomaly score.
2. Detections from all videos are visited in decreasing score order; each visit is one threshold.
   A detection in a frame without ground truth is a false positive (FP). Otherwise it is matched to
   *every* ground-truth region of its frame with box IoU >= ``beta``; each region matched for the
   first time adds one true positive and one hit to its track. A detection that overlaps only
   regions matched before counts as neither TP nor FP; one that overlaps none is a FP.
3. RBDR = TP / #regions; FPR = FP / #frames (false positives **per frame**, normal videos included);
   TBDR = fraction of tracks with at least ``alpha`` of their regions matched.
4. Both curves start at (0, 0) and end at FPR = 1: a segment crossing FPR = 1 is read there on its
   straight line, and a curve whose detections run out before FPR = 1 is extended horizontally to it.
   RBDC and TBDC are the trapezoidal areas, in [0, 1].

IoU uses inclusive pixel boxes: a box ``(x_min, y_min, x_max, y_max)`` covers
``(x_max - x_min + 1) * (y_max - y_min + 1)`` pixels (the reference's "+1" convention).

Where we differ from the reference, on purpose:

* **Tied scores** (``ties="threshold"``, default): the reference takes one curve step per detection in
  its file-listing order, so with tied scores its result depends on ``os.listdir`` order. We put one
  curve point per *distinct* score, joined by a straight line (as sklearn's ROC does). Counts at each
  distinct score do not depend on the order inside a tie: a region is matched once any detection at or
  above the threshold overlaps it, and whether a detection is a FP does not depend on the others.
  Without ties the two agree exactly. ``ties="sequential"`` reproduces the per-detection steps in the
  given order (videos in mapping order, rows in row order, stable sort).
* **FPR beyond 1**: the reference appends the point (1, last value of the *whole* curve) after points
  with FPR > 1, which makes ``sklearn.metrics.auc`` fail on a non-monotonic x; we end the curve at
  FPR = 1 on the segment that crosses it. Its per-detection segments are horizontal there, so this is
  the value of the reference whenever it does not fail; a tie group (``ties="threshold"``) can rise
  across FPR = 1 and is read on its straight line, as ``sklearn.metrics.roc_auc_score(max_fpr=...)``
  reads its ROC.
* **Input robustness**: one-row and empty inputs work (``np.loadtxt`` breaks the reference on both);
  a track with two regions in one frame is an error (the reference silently keeps the last one).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lavida.metrics._validation import check_unit_interval
from lavida.number_checks import is_whole

__all__ = ["RegionTrackCurves", "rbdc_tbdc", "rbdc_tbdc_curves"]

_FN = "rbdc_tbdc"
Ties = Literal["threshold", "sequential"]


@dataclass(frozen=True, kw_only=True)
class RegionTrackCurves:
    """RBDR/TBDR against false positives per frame, as integrated for RBDC/TBDC.

    Attributes:
        fpr: ``(K,)`` false positives per frame, non-decreasing from 0 to 1.
        rbdr: ``(K,)`` region-based detection rate.
        tbdr: ``(K,)`` track-based detection rate.
        thresholds: ``(K,)`` score threshold of each point: ``inf`` for the starting point (0, 0) and
            NaN for the end point added at FPR = 1 when no threshold gives exactly FPR = 1 (read on
            the segment that crosses FPR = 1, or the horizontal extension).
        rbdc: Area under ``rbdr`` against ``fpr``.
        tbdc: Area under ``tbdr`` against ``fpr``.
        num_regions: Ground-truth regions (RBDR denominator).
        num_tracks: Ground-truth tracks (TBDR denominator).
        num_frames: Total frames (FPR denominator).
        num_detections: Detections swept.
    """

    fpr: NDArray[np.float64]
    rbdr: NDArray[np.float64]
    tbdr: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    rbdc: float
    tbdc: float
    num_regions: int
    num_tracks: int
    num_frames: int
    num_detections: int


def rbdc_tbdc(
    gt_tracks: Mapping[Hashable, ArrayLike],
    detections: Mapping[Hashable, ArrayLike],
    num_frames: Mapping[Hashable, int] | int,
    *,
    beta: float = 0.1,
    alpha: float = 0.1,
    ties: Ties = "threshold",
) -> tuple[float, float]:
    """RBDC and TBDC of box detections against ground-truth tracks.

    Args:
        gt_tracks: ``{video: (R, 6) rows (track_id, frame, x_min, y_min, x_max, y_max)}``. Track ids
            are per video (any integers); a track has at most one region per frame. Boxes are
            inclusive pixel coordinates. A one-row ``(6,)`` array and an empty array are accepted.
        detections: ``{video: (D, 6) rows (frame, x_min, y_min, x_max, y_max, score)}``; ``score`` any
            finite number, higher = more anomalous. Frame indices must use the same base (0 or 1) as
            ``gt_tracks``. Videos may be missing (no detections) or absent from ``gt_tracks`` (every
            detection there is a false positive).
        num_frames: ``{video: frame count}`` for every test video, normal ones included: their sum is
            the FPR denominator, and frame indices are checked against them. An ``int`` gives the total
            directly (the reference's ``--num-frames``) and skips the per-video checks.
        beta: IoU a detection needs with a ground-truth region to match it, in (0, 1] (paper: 0.1).
        alpha: Fraction of a track's regions that must be matched for the track to count as detected,
            in (0, 1] (paper: 0.1).
        ties: ``"threshold"``: one curve point per distinct score (order-independent, default).
            ``"sequential"``: one point per detection in input order, as the reference script.

    Returns:
        ``(rbdc, tbdc)``, each in [0, 1]. With no detections at all both are 0.0 (the curves stay at
        0 from FPR 0 to 1).

    Raises:
        ValueError: If there is no ground-truth region (RBDR is undefined), on malformed rows
            (wrong width, non-integer frame or track id, negative frame, inverted box, non-finite
            value, duplicate region of a track in one frame), on a video missing from ``num_frames``
            or a frame index outside ``[0, num_frames[video])``, or on ``alpha``/``beta`` outside (0, 1].
    """
    curves = rbdc_tbdc_curves(gt_tracks, detections, num_frames, beta=beta, alpha=alpha, ties=ties)
    return curves.rbdc, curves.tbdc


def rbdc_tbdc_curves(
    gt_tracks: Mapping[Hashable, ArrayLike],
    detections: Mapping[Hashable, ArrayLike],
    num_frames: Mapping[Hashable, int] | int,
    *,
    beta: float = 0.1,
    alpha: float = 0.1,
    ties: Ties = "threshold",
) -> RegionTrackCurves:
    """The curves behind :func:`rbdc_tbdc` (same arguments), e.g. for plotting."""
    beta = check_unit_interval(beta, fn=_FN, name="beta")
    alpha = check_unit_interval(alpha, fn=_FN, name="alpha")
    if ties not in ("threshold", "sequential"):
        raise ValueError(f"{_FN}: ties must be 'threshold' or 'sequential', got {ties!r}.")
    for name, value in (("gt_tracks", gt_tracks), ("detections", detections)):
        if not isinstance(value, Mapping):
            raise TypeError(f"{_FN}: {name} must be a mapping {{video: rows}}, got {type(value).__name__}.")

    videos: dict[Hashable, int] = {}
    gt = _parse_tracks(gt_tracks, videos)
    det = _parse_detections(detections, videos)
    total_frames = _check_frames(num_frames, gt, det, videos)
    n_regions, n_dets = gt.frame.size, det.frame.size
    if n_regions == 0:
        raise ValueError(
            f"{_FN}: gt_tracks holds no region; RBDR (detected regions / regions) is undefined. Pass at "
            "least one ground-truth track."
        )

    # ---- match every detection against the ground-truth regions of its (video, frame)
    stride = int(max(gt.frame.max(initial=0), det.frame.max(initial=0))) + 1
    gt_key = gt.video * stride + gt.frame
    det_key = det.video * stride + det.frame
    gt_order = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[gt_order]
    lo = np.searchsorted(gt_key_sorted, det_key, side="left")
    hi = np.searchsorted(gt_key_sorted, det_key, side="right")
    per_det = hi - lo
    pair_det = np.repeat(np.arange(n_dets), per_det)
    within = np.arange(pair_det.size) - np.repeat(np.cumsum(per_det) - per_det, per_det)
    pair_gt = gt_order[np.repeat(lo, per_det) + within]
    match = _box_iou(gt.box[pair_gt], det.box[pair_det]) >= beta
    pair_det, pair_gt = pair_det[match], pair_gt[match]

    # ---- sweep in decreasing score order (stable, like Python's list.sort(reverse=True))
    order = np.argsort(-det.score, kind="stable")
    rank = np.empty(n_dets, dtype=np.int64)
    rank[order] = np.arange(n_dets)
    # A region becomes a TP at the first (best-ranked) detection that matches it.
    first_hit = np.full(n_regions, n_dets, dtype=np.int64)  # n_dets = never matched
    np.minimum.at(first_hit, pair_gt, rank[pair_det])
    tp_at = np.bincount(first_hit[first_hit < n_dets], minlength=n_dets)
    fp_at = np.ones(n_dets, dtype=np.int64)
    fp_at[rank[pair_det]] = 0  # a detection matching any region is never a FP
    track_at = _track_detection_ranks(gt.track, first_hit, gt.num_tracks, alpha)

    cum_tp = np.cumsum(tp_at)
    cum_fp = np.cumsum(fp_at)
    cum_tracks = np.cumsum(np.bincount(track_at[track_at < n_dets], minlength=n_dets))
    sorted_scores = det.score[order]
    if ties == "threshold":
        # Keep the last detection of every run of equal scores.
        keep = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True)) if n_dets else []
    else:
        keep = np.arange(n_dets)
    fp = np.concatenate(([0], cum_fp[keep])).astype(np.float64)
    tp = np.concatenate(([0], cum_tp[keep])).astype(np.float64)
    tr = np.concatenate(([0], cum_tracks[keep])).astype(np.float64)
    thr = np.concatenate(([np.inf], sorted_scores[keep])).astype(np.float64)

    fpr = fp / total_frames
    rbdr = tp / n_regions
    tbdr = tr / gt.num_tracks
    fpr, rbdr, tbdr, thr = _clip_at_one_false_positive_per_frame(fpr, rbdr, tbdr, thr)
    return RegionTrackCurves(
        fpr=fpr,
        rbdr=rbdr,
        tbdr=tbdr,
        thresholds=thr,
        rbdc=float(np.trapezoid(rbdr, fpr)),
        tbdc=float(np.trapezoid(tbdr, fpr)),
        num_regions=n_regions,
        num_tracks=gt.num_tracks,
        num_frames=total_frames,
        num_detections=n_dets,
    )


# ---------------------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class _Rows:
    video: NDArray[np.int64]  # (N,) index into the video list
    frame: NDArray[np.int64]  # (N,)
    box: NDArray[np.float64]  # (N, 4) x_min, y_min, x_max, y_max (inclusive)
    score: NDArray[np.float64]  # (N,) detections only
    track: NDArray[np.int64]  # (N,) global track index, ground truth only
    num_tracks: int


def _as_rows(value: ArrayLike, *, what: str, columns: str) -> NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 6))
    if arr.ndim == 1 and arr.shape[0] == 6:  # one row, as np.loadtxt returns it
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise ValueError(f"{_FN}: {what} must have shape (N, 6) with rows {columns}, got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(
            f"{_FN}: {what} contains NaN or infinite values (rows {rows[:5].tolist()}); boxes and frame "
            "indices must be finite, and a detection's score a finite number (drop or rescore those rows)."
        )
    return arr


def _integer_column(col: NDArray[np.float64], *, what: str, name: str) -> NDArray[np.int64]:
    if (col != np.round(col)).any():
        bad = col[col != np.round(col)][0]
        raise ValueError(f"{_FN}: {what}: {name} must be whole numbers, got {bad!r}.")
    return col.astype(np.int64)


def _check_boxes(box: NDArray[np.float64], *, what: str) -> None:
    bad = (box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{_FN}: {what} row {i} has box {box[i].tolist()}; expected x_min <= x_max and y_min <= y_max "
            "(inclusive pixel coordinates)."
        )


def _video_index(videos: dict[Hashable, int], video: Hashable) -> int:
    return videos.setdefault(video, len(videos))


def _parse_tracks(gt_tracks: Mapping[Hashable, ArrayLike], videos: dict[Hashable, int]) -> _Rows:
    cols = "(track_id, frame, x_min, y_min, x_max, y_max)"
    vid, track, frame, box = [], [], [], []
    num_tracks = 0
    for video, value in gt_tracks.items():
        what = f"gt_tracks[{video!r}]"
        rows = _as_rows(value, what=what, columns=cols)
        if rows.shape[0] == 0:
            continue
        ids = _integer_column(rows[:, 0], what=what, name="track ids")
        frames = _integer_column(rows[:, 1], what=what, name="frame indices")
        if (frames < 0).any():
            raise ValueError(
                f"{_FN}: {what} has a negative frame index {int(frames.min())}; frame indices are 0-based "
                "positions in the video."
            )
        _check_boxes(rows[:, 2:6], what=what)
        # Global track index: tracks are (video, track_id); ids need not be consecutive.
        unique_ids, local = np.unique(ids, return_inverse=True)
        pair = local.astype(np.int64) * (int(frames.max()) + 1) + frames
        if np.unique(pair).size != pair.size:
            _, first, counts = np.unique(pair, return_index=True, return_counts=True)
            i = int(first[counts > 1][0])
            raise ValueError(
                f"{_FN}: {what}: track {int(ids[i])} has more than one region in frame {int(frames[i])}; "
                "a track has one region per frame (merge the boxes or split the track)."
            )
        idx = _video_index(videos, video)
        vid.append(np.full(rows.shape[0], idx, dtype=np.int64))
        track.append(local.astype(np.int64) + num_tracks)
        frame.append(frames)
        box.append(rows[:, 2:6])
        num_tracks += unique_ids.size
    return _stack(vid, frame, box, [], track, num_tracks)


def _parse_detections(detections: Mapping[Hashable, ArrayLike], videos: dict[Hashable, int]) -> _Rows:
    cols = "(frame, x_min, y_min, x_max, y_max, score)"
    vid, frame, box, score = [], [], [], []
    for video, value in detections.items():
        what = f"detections[{video!r}]"
        rows = _as_rows(value, what=what, columns=cols)
        if rows.shape[0] == 0:
            continue
        frames = _integer_column(rows[:, 0], what=what, name="frame indices")
        if (frames < 0).any():
            raise ValueError(
                f"{_FN}: {what} has a negative frame index {int(frames.min())}; frame indices are 0-based "
                "positions in the video."
            )
        _check_boxes(rows[:, 1:5], what=what)
        vid.append(np.full(rows.shape[0], _video_index(videos, video), dtype=np.int64))
        frame.append(frames)
        box.append(rows[:, 1:5])
        score.append(rows[:, 5])
    return _stack(vid, frame, box, score, [], 0)


def _stack(vid: list, frame: list, box: list, score: list, track: list, num_tracks: int) -> _Rows:
    def cat(parts: list, empty: NDArray) -> NDArray:
        return np.concatenate(parts) if parts else empty

    return _Rows(
        video=cat(vid, np.zeros(0, dtype=np.int64)),
        frame=cat(frame, np.zeros(0, dtype=np.int64)),
        box=cat(box, np.zeros((0, 4))),
        score=cat(score, np.zeros(0)),
        track=cat(track, np.zeros(0, dtype=np.int64)),
        num_tracks=num_tracks,
    )


def _check_frames(
    num_frames: Mapping[Hashable, int] | int, gt: _Rows, det: _Rows, videos: dict[Hashable, int]
) -> int:
    """Validate ``num_frames`` against the rows and return the total frame count (FPR denominator)."""
    if not isinstance(num_frames, Mapping):
        if not is_whole(num_frames) or num_frames <= 0:
            raise ValueError(
                f"{_FN}: num_frames must be a mapping {{video: frame count}} or a positive int total, "
                f"got {num_frames!r}."
            )
        return int(num_frames)
    for video, n in num_frames.items():
        if not is_whole(n) or n <= 0:
            raise ValueError(f"{_FN}: num_frames[{video!r}] must be a positive int, got {n!r}.")
    counts = np.zeros(len(videos), dtype=np.int64)
    for video, idx in videos.items():
        if video not in num_frames:
            raise ValueError(
                f"{_FN}: video {video!r} has tracks or detections but no entry in num_frames; give the frame "
                "count of every test video (normal videos too: they add to the FPR denominator)."
            )
        counts[idx] = num_frames[video]
    for rows, what in ((gt, "gt_tracks"), (det, "detections")):
        outside = rows.frame >= counts[rows.video]
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            video = next(v for v, k in videos.items() if k == rows.video[i])
            raise ValueError(
                f"{_FN}: {what}[{video!r}] refers to frame {int(rows.frame[i])} but num_frames[{video!r}] = "
                f"{int(counts[rows.video[i]])}; frame indices must be 0-based and below the frame count."
            )
    return int(sum(int(n) for n in num_frames.values()))


def _box_iou(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise IoU of inclusive pixel boxes ``(N, 4)`` and ``(N, 4)``: areas count ``max - min + 1``."""
    ix = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1)
    iy = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    # Same operation order as the reference, so a pair exactly at IoU = beta decides the same way.
    return inter / (area_a + area_b - inter)


def _clip_at_one_false_positive_per_frame(
    fpr: NDArray[np.float64], rbdr: NDArray[np.float64], tbdr: NDArray[np.float64], thr: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The curves ``(K,)`` restricted to FPR in [0, 1] and ending exactly at FPR = 1.

    Street Scene §4 summarises each curve by its area for false positive rates from 0 to 1. FPR is
    non-decreasing, so the points with FPR <= 1 are a prefix. When the next point lies beyond 1, the
    end point is read at FPR = 1 on the straight segment joining the two: with ``ties="sequential"``
    that segment is horizontal (a step adds a false positive or a true positive, never both), but a
    tie group taken at once (``ties="threshold"``) can add both and its segment is diagonal.
    Continuing flat from the last point with FPR <= 1 instead would drop every true positive of a
    group whose false positives carry FPR past 1 (a binary detector with more than one false positive
    per frame would score 0). When the detections run out before FPR 1, the curve is continued flat
    (the reference's extension: no lower threshold finds more). The added end point has threshold NaN.
    """
    stop = int(np.searchsorted(fpr, 1.0, side="right"))  # >= 1: the first point is (0, 0)
    if fpr[stop - 1] == 1.0:
        return fpr[:stop], rbdr[:stop], tbdr[:stop], thr[:stop]
    if stop < fpr.size:
        w = (1.0 - fpr[stop - 1]) / (fpr[stop] - fpr[stop - 1])
        end_rbdr = rbdr[stop - 1] + w * (rbdr[stop] - rbdr[stop - 1])
        end_tbdr = tbdr[stop - 1] + w * (tbdr[stop] - tbdr[stop - 1])
    else:
        end_rbdr, end_tbdr = rbdr[-1], tbdr[-1]
    return (
        np.append(fpr[:stop], 1.0),
        np.append(rbdr[:stop], end_rbdr),
        np.append(tbdr[:stop], end_tbdr),
        np.append(thr[:stop], np.nan),
    )


def _track_detection_ranks(
    track: NDArray[np.int64], first_hit: NDArray[np.int64], num_tracks: int, alpha: float
) -> NDArray[np.int64]:
    """Rank of the detection at which each track reaches ``alpha`` of its regions matched: ``first_hit``'s
    "never" value (the detection count) if it never does, since its unmatched regions hold it and sort last."""
    length = np.bincount(track, minlength=num_tracks)
    # Smallest m with m / length >= alpha, evaluated in float like the reference (`x / len >= alpha`).
    need = np.ceil(alpha * length).astype(np.int64)
    need = np.where((need - 1) / length >= alpha, need - 1, need)
    need = np.where(need / length < alpha, need + 1, need)
    need = np.maximum(need, 1)
    order = np.lexsort((first_hit, track))  # regions by track, then by the rank they were first matched
    start = np.cumsum(length) - length
    return first_hit[order][start + need - 1]
