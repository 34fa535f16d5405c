"""RBDC/TBDC: the reference toy case, hand-worked curves, edge inputs, and a loop oracle."""

from __future__ import annotations

import numpy as np
import pytest

from lavida.metrics import rbdc_tbdc, rbdc_tbdc_curves

BOX = [10, 10, 19, 19]  # inclusive: 10 x 10 pixels
FAR = [40, 40, 50, 50]  # no overlap with BOX


def track(track_id, frames, box=BOX):
    return np.array([[track_id, f, *box] for f in frames], dtype=float)


def test_reference_toy_case_perfect_detections():
    # The AED toy: one track over frames 0-4; a detection on it in every frame (score .5) plus a
    # bigger low-score box on frame 3, IoU 121 / 441 = .27 >= .1 with an already matched region:
    # neither TP nor FP. Every region is found with no FP: both curves are 1 from FPR 0 to 1.
    gt = {"01": np.array([[0, f, 10, 10, 20, 20] for f in range(5)])}
    det = {
        "01": np.array(
            [
                [0, 10, 10, 20, 20, 0.5],
                [1, 10, 10, 20, 20, 0.5],
                [2, 10, 10, 20, 20, 0.5],
                [3, 10, 10, 20, 20, 0.5],
                [3, 0, 0, 20, 20, 0.1],
                [4, 10, 10, 20, 20, 0.5],
            ]
        )
    }
    for ties in ("threshold", "sequential"):
        assert rbdc_tbdc(gt, det, 10, ties=ties) == (1.0, 1.0)
    assert rbdc_tbdc(gt, det, {"01": 5}) == (1.0, 1.0)


def hand_case():
    gt = {"a": track(0, range(4))}  # 4 regions, frames 0-3
    det = {
        "a": np.array(
            [
                [0, *BOX, 0.9],  # TP
                [1, *BOX, 0.7],  # TP
                [3, *FAR, 0.6],  # FP: overlaps no region
            ]
        ),
        "b": np.array([2, 0, 0, 5, 5, 0.8]),  # one-row (6,) input; FP: video b has no ground truth
    }
    return gt, det, {"a": 4, "b": 6}  # 10 frames in all


def test_hand_worked_false_positives():
    gt, det, frames = hand_case()
    # Sweep (FPR = FP / 10, RBDR = TP / 4):
    #   start (0, 0); .9 TP -> (0, .25); .8 FP -> (.1, .25); .7 TP -> (.1, .5); .6 FP -> (.2, .5);
    #   extended to (1, .5).
    # RBDC = .1 * .25 + .1 * .5 + .8 * .5 = .025 + .05 + .4 = .475.
    # alpha .1: the track needs 1 of 4 regions -> detected from .9 on -> TBDR 1 on all of [0, 1] -> 1.
    # alpha .5: needs 2 of 4 -> detected at .7 (FPR .1) -> TBDC = .9.
    curves = rbdc_tbdc_curves(gt, det, frames)
    np.testing.assert_allclose(curves.fpr, [0, 0, 0.1, 0.1, 0.2, 1])
    np.testing.assert_allclose(curves.rbdr, [0, 0.25, 0.25, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(curves.thresholds[:5], [np.inf, 0.9, 0.8, 0.7, 0.6])
    assert np.isnan(curves.thresholds[5])
    assert (curves.num_regions, curves.num_tracks, curves.num_frames, curves.num_detections) == (4, 1, 10, 4)
    assert rbdc_tbdc(gt, det, frames) == pytest.approx((0.475, 1.0), abs=1e-12)
    assert rbdc_tbdc(gt, det, frames, alpha=0.5) == pytest.approx((0.475, 0.9), abs=1e-12)
    # The int form of num_frames (the reference's --num-frames) gives the same numbers.
    assert rbdc_tbdc(gt, det, 10) == pytest.approx((0.475, 1.0), abs=1e-12)


def test_missed_track():
    # Tracks 0 and 7 (ids need not be consecutive), 2 regions each; only track 0 is ever detected.
    # RBDR reaches 2/4 with no FP -> .5 over [0, 1]; TBDR reaches 1/2 -> .5.
    gt = {"v": np.concatenate([track(0, [0, 1]), track(7, [0, 1], box=FAR)])}
    det = {"v": np.array([[0, *BOX, 0.9], [1, *BOX, 0.8]])}
    assert rbdc_tbdc(gt, det, {"v": 2}) == pytest.approx((0.5, 0.5), abs=1e-12)


def test_one_detection_matching_two_regions_counts_two_tps():
    # Two tracks whose boxes overlap in frame 0; one big detection has IoU >= .1 with both.
    # IoU with each: 100 / 400 = .25. One detection, 2 TPs: RBDR 1 at FPR 0 -> RBDC 1, TBDC 1.
    gt = {"v": np.array([[0, 0, 10, 10, 19, 19], [1, 0, 20, 10, 29, 19]])}
    det = {"v": np.array([0, 10, 0, 29, 19, 0.7])}
    assert rbdc_tbdc(gt, det, {"v": 1}) == (1.0, 1.0)


def test_duplicate_detection_of_matched_region_is_neither_tp_nor_fp():
    gt, det, frames = hand_case()
    dup = dict(det, a=np.vstack([det["a"], [0, 11, 11, 19, 19, 0.85]]))  # overlaps the matched frame-0 region
    assert rbdc_tbdc(gt, dup, frames) == pytest.approx((0.475, 1.0), abs=1e-12)
    # Had it been counted as a FP the area would drop: it would sit at FPR .1 before the second TP.
    shifted = dict(det, a=np.vstack([det["a"], [0, *FAR, 0.85]]))
    assert rbdc_tbdc(gt, shifted, frames)[0] < 0.475


def test_inclusive_iou_boundary():
    # Inclusive boxes: [0,0,0,0] is 1 pixel, [0,0,1,1] is 4 pixels; IoU = 1 / 4 exactly.
    gt = {"v": np.array([0, 0, 0, 0, 1, 1])}
    det = {"v": np.array([0, 0, 0, 0, 0, 0.5])}
    assert rbdc_tbdc(gt, det, 1, beta=0.25) == (1.0, 1.0)
    # Not matched: a FP at FPR 1 -> curves stay 0.
    assert rbdc_tbdc(gt, det, 1, beta=0.26) == (0.0, 0.0)


def test_fpr_beyond_one_is_cut():
    # 2 frames; 3 FPs (.9 .8 .7) before the only TP (.1): FPR .5, 1, 1.5, ... -> cut after FPR 1,
    # where RBDR is still 0. (The reference script fails here on a non-monotonic x.)
    gt = {"v": track(0, [0])}
    det = {"v": np.array([[1, *FAR, 0.9], [1, *FAR, 0.8], [1, *FAR, 0.7], [0, *BOX, 0.1]])}
    curves = rbdc_tbdc_curves(gt, det, {"v": 2})
    np.testing.assert_allclose(curves.fpr, [0, 0.5, 1])
    assert (curves.rbdc, curves.tbdc) == (0.0, 0.0)
    # The TP just reaching FPR 1 adds a vertical segment at x = 1: no area either.
    det2 = {"v": np.array([[1, *FAR, 0.9], [1, *FAR, 0.8], [0, *BOX, 0.7]])}
    curves2 = rbdc_tbdc_curves(gt, det2, {"v": 2})
    np.testing.assert_allclose(curves2.rbdr, [0, 0, 0, 1])
    assert curves2.rbdc == 0.0


def test_tied_scores_threshold_vs_sequential():
    # One region, 4 frames; a TP and a FP with the same score .5.
    # threshold: (0,0) -> (.25, 1) -> (1, 1): area .25 * .5 + .75 = .875.
    # sequential, TP first: (0,0) (0,1) (.25,1) (1,1) -> 1.0; FP first: (0,0) (.25,0) (.25,1) (1,1) -> .75.
    gt = {"v": track(0, [0])}
    tp_first = {"v": np.array([[0, *BOX, 0.5], [1, *FAR, 0.5]])}
    fp_first = {"v": tp_first["v"][::-1]}
    assert rbdc_tbdc(gt, tp_first, 4)[0] == pytest.approx(0.875)
    assert rbdc_tbdc(gt, fp_first, 4)[0] == pytest.approx(0.875)
    assert rbdc_tbdc(gt, tp_first, 4, ties="sequential")[0] == pytest.approx(1.0)
    assert rbdc_tbdc(gt, fp_first, 4, ties="sequential")[0] == pytest.approx(0.75)


def test_one_row_and_empty_inputs():
    one_gt = {"v": np.array([0, 3, *BOX])}  # a single-region track as a (6,) row
    assert rbdc_tbdc(one_gt, {"v": np.array([3, *BOX, 0.2])}, {"v": 4}) == (1.0, 1.0)
    # No detections at all (missing video, empty array, empty list): curves stay 0 -> (0, 0).
    for det in ({}, {"v": np.zeros((0, 6))}, {"v": []}):
        assert rbdc_tbdc(one_gt, det, {"v": 4}) == (0.0, 0.0)
    # A normal video with an empty track file is fine; its frames count in the FPR denominator.
    assert rbdc_tbdc(
        {**one_gt, "n": np.zeros((0, 6))}, {"n": np.array([0, *BOX, 0.9])}, {"v": 4, "n": 1}
    ) == (
        0.0,
        0.0,
    )  # the only detection is a FP at FPR 1/5 and no region is ever found
    with pytest.raises(ValueError, match="no region"):
        rbdc_tbdc({"v": np.zeros((0, 6))}, {}, {"v": 4})


@pytest.mark.parametrize(
    ("gt", "det", "frames", "message"),
    [
        (
            {"v": track(0, [0])},
            {"w": np.array([0, *BOX, 1.0])},
            {"v": 3},
            "'w' has tracks or detections but no entry",
        ),
        ({"v": track(0, [5])}, {}, {"v": 3}, "refers to frame 5 but num_frames"),
        ({"v": track(0, [0, 0])}, {}, {"v": 3}, "more than one region in frame 0"),
        ({"v": np.array([0, 0, 19, 10, 10, 19])}, {}, {"v": 3}, "x_min <= x_max"),
        (
            {"v": track(0, [0])},
            {"v": np.array([[0, *BOX, 0.9], [1, 10, 19, 19, 10, 0.8]])},  # y_max < y_min in row 1
            {"v": 3},
            r"^rbdc_tbdc: detections\['v'\] row 1 has box \[10.0, 19.0, 19.0, 10.0\]; expected x_min <= x_max",
        ),
        ({"v": np.array([0, 0.5, *BOX])}, {}, {"v": 3}, "whole numbers"),
        ({"v": np.zeros((2, 5))}, {}, {"v": 3}, r"shape \(N, 6\)"),
        ({"v": track(0, [0])}, {"v": np.array([0, *BOX, np.nan])}, {"v": 3}, r"NaN .*\(rows \[0\]\).*drop"),
        (
            {"v": track(0, [0, 1, 2])},
            {"v": np.array([[0, *BOX, 0.9], [1, *BOX, np.inf], [2, *BOX, 0.7]])},
            {"v": 3},
            r"NaN or infinite values \(rows \[1\]\)",  # the row that holds it, not the first
        ),
        ({"v": track(0, [-1])}, {}, {"v": 3}, "negative frame index -1; frame indices are 0-based"),
        ({"v": track(0, [0])}, {"v": np.array([-2, *BOX, 1.0])}, {"v": 3}, "negative frame index -2"),
        ({"v": track(0, [0])}, {}, {"v": 0}, "positive int"),
        ({"v": track(0, [0])}, {}, 0, "positive int total"),
    ],
)
def test_invalid_inputs_raise(gt, det, frames, message):
    with pytest.raises(ValueError, match=message):
        rbdc_tbdc(gt, det, frames)


@pytest.mark.parametrize("where", ["gt", "det"])
def test_frame_index_equal_to_frame_count_is_rejected(where):
    # Frame indices are 0-based: a 3-frame video has frames 0, 1, 2; index 3 is one past the end.
    gt = {"v": track(0, [3] if where == "gt" else [0])}
    det = {"v": np.array([3 if where == "det" else 0, *BOX, 1.0])}
    with pytest.raises(ValueError, match="refers to frame 3 but num_frames"):
        rbdc_tbdc(gt, det, {"v": 3})
    # The last valid index is accepted.
    assert rbdc_tbdc({"v": track(0, [2])}, {"v": np.array([2, *BOX, 1.0])}, {"v": 3}) == (1.0, 1.0)


def test_duplicate_region_error_names_the_duplicated_frame():
    # Track 4 has regions in frames 0, 1, 1, 2: the duplicate is frame 1 (not frame 0, its first row).
    gt = {"v": track(4, [0, 1, 1, 2])}
    with pytest.raises(ValueError, match="track 4 has more than one region in frame 1;"):
        rbdc_tbdc(gt, {}, {"v": 3})


def test_more_tracks_than_frames_are_not_duplicates():
    # Three tracks in a 2-frame video (track 0 in frames 0 and 1, tracks 1 and 2 in frame 0): every
    # (track, frame) pair is distinct, so no "more than one region" error. One exact detection of
    # track 2 (frame 0), no FP: RBDR = 1 / 4 and TBDR = 1 / 3 on all of [0, 1].
    gt = {
        "v": np.concatenate([track(0, [0, 1]), track(1, [0], box=FAR), track(2, [0], box=[60, 60, 69, 69])])
    }
    det = {"v": np.array([0, 60, 60, 69, 69, 0.9])}
    assert rbdc_tbdc(gt, det, {"v": 2}) == pytest.approx((0.25, 1 / 3), abs=1e-12)


def test_curves_default_alpha_and_beta_are_the_papers():
    # rbdc_tbdc_curves defaults to beta = alpha = .1 (Street Scene), like rbdc_tbdc. One track of 10
    # regions; one detection of frame 0 with IoU 10 / 100 = .1 exactly (a 1 x 10 strip inside BOX):
    # matched at beta .1, and 1 / 10 >= .1 marks the track detected. RBDR .1 and TBDR 1 from FPR 0.
    gt = {"v": track(0, range(10))}
    det = {"v": np.array([0, 10, 10, 10, 19, 0.5])}
    curves = rbdc_tbdc_curves(gt, det, 10)
    assert (curves.rbdc, curves.tbdc) == pytest.approx((0.1, 1.0), abs=1e-12)
    assert (curves.rbdc, curves.tbdc) == pytest.approx(rbdc_tbdc(gt, det, 10, beta=0.1, alpha=0.1), abs=1e-12)


def test_invalid_parameters():
    gt = {"v": track(0, [0])}
    with pytest.raises(ValueError, match="beta"):
        rbdc_tbdc(gt, {}, 1, beta=0.0)
    with pytest.raises(ValueError, match="alpha"):
        rbdc_tbdc(gt, {}, 1, alpha=1.5)
    with pytest.raises(ValueError, match="ties"):
        rbdc_tbdc(gt, {}, 1, ties="random")
    with pytest.raises(TypeError, match="mapping"):
        rbdc_tbdc([track(0, [0])], {}, 1)


# ------------------------------------------------------------------------------------- loop oracle
def loop_oracle(gt_tracks, detections, total_frames, beta=0.1, alpha=0.1):
    """Independent, literal re-statement of the reference procedure (one step per detection)."""
    regions = []  # (video, frame, box, track)
    track_len = {}
    for video, rows in gt_tracks.items():
        for tid, frame, *box in np.atleast_2d(rows):
            regions.append((video, int(frame), box, (video, int(tid))))
            track_len[(video, int(tid))] = track_len.get((video, int(tid)), 0) + 1
    dets = [
        (video, int(r[0]), list(r[1:5]), r[5])
        for video, rows in detections.items()
        for r in np.atleast_2d(rows)
    ]
    dets.sort(key=lambda d: d[3], reverse=True)
    found = [False] * len(regions)
    hits = dict.fromkeys(track_len, 0)
    fpr, rbdr, tbdr = [0.0], [0.0], [0.0]
    fp = tp = 0
    for video, frame, box, _ in dets:
        in_frame = [i for i, r in enumerate(regions) if r[0] == video and r[1] == frame]
        matched = []
        for i in in_frame:
            g = regions[i][2]
            iw = max(0, min(g[2], box[2]) - max(g[0], box[0]) + 1)
            ih = max(0, min(g[3], box[3]) - max(g[1], box[1]) + 1)
            inter = iw * ih
            union = (
                (g[2] - g[0] + 1) * (g[3] - g[1] + 1) + (box[2] - box[0] + 1) * (box[3] - box[1] + 1) - inter
            )
            if inter / union >= beta:
                matched.append(i)
        if not matched:
            fp += 1
        for i in matched:
            if not found[i]:
                found[i] = True
                tp += 1
                hits[regions[i][3]] += 1
        fpr.append(fp / total_frames)
        rbdr.append(tp / len(regions))
        tbdr.append(sum(hits[k] / track_len[k] >= alpha for k in track_len) / len(track_len))
    fpr, rbdr, tbdr = map(np.array, (fpr, rbdr, tbdr))
    keep = fpr <= 1
    fpr, rbdr, tbdr = fpr[keep], rbdr[keep], tbdr[keep]
    if fpr[-1] < 1:
        fpr, rbdr, tbdr = np.append(fpr, 1), np.append(rbdr, rbdr[-1]), np.append(tbdr, tbdr[-1])
    return np.trapezoid(rbdr, fpr), np.trapezoid(tbdr, fpr)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_oracle_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    gt, det, frames = {}, {}, {}
    for v in range(4):
        n = int(rng.integers(5, 15))
        frames[f"vid{v}"] = n
        rows = []
        for tid in range(int(rng.integers(0, 3))):  # some videos are normal (no track)
            start = int(rng.integers(0, n - 2))
            x, y = rng.integers(0, 60, 2)
            for f in range(start, min(n, start + int(rng.integers(1, 6)))):
                x, y = x + rng.integers(-2, 3), y + rng.integers(-2, 3)
                rows.append([tid, f, x, y, x + 15, y + 20])
        gt[f"vid{v}"] = np.array(rows, dtype=float).reshape(-1, 6)
        # Detections: jittered copies of some regions plus random clutter; distinct scores.
        d = [
            [r[1], r[2] + rng.integers(-6, 7), r[3] + rng.integers(-6, 7), r[4] + 5, r[5], 0]
            for r in rows
            if rng.random() < 0.7
        ]
        for _ in range(int(rng.integers(0, 8))):
            f, x, y = rng.integers(0, n), *rng.integers(0, 70, 2)
            d.append([f, x, y, x + rng.integers(3, 20), y + rng.integers(3, 20), 0])
        d = np.array(d, dtype=float).reshape(-1, 6)
        d[:, 5] = rng.random(len(d))
        det[f"vid{v}"] = d
    if sum(len(g) for g in gt.values()) == 0:
        pytest.skip("random scene without ground truth")
    total = sum(frames.values())
    for alpha in (0.1, 0.5):
        expected = loop_oracle(gt, det, total, alpha=alpha)
        assert rbdc_tbdc(gt, det, frames, alpha=alpha, ties="sequential") == pytest.approx(
            expected, abs=1e-12
        )
        # Scores are distinct, so the order-independent mode agrees exactly.
        assert rbdc_tbdc(gt, det, frames, alpha=alpha) == pytest.approx(expected, abs=1e-12)
