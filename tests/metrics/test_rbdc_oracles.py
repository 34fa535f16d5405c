"""RBDC/TBDC against slow, literal re-statements of its definition.

Ramachandra & Jones, "Street Scene", WACV 2020, §4: a ground-truth region is detected when a detected
region of its frame has IoU >= beta with it; a detected region is a false positive when its IoU with
every ground-truth region of its frame is below beta; FPR = false positives / test frames; a track is
detected when at least alpha of its regions are; the ROC is traced by moving the threshold on the
region scores, and RBDC / TBDC are the areas under it for FPR in [0, 1].

The oracles below share no code with :mod:`lavida.metrics.rbdc_tbdc`: IoU is counted over pixel sets,
the curve is rebuilt from scratch at every distinct threshold, and the area is integrated segment by
segment.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from lavida.metrics import rbdc_tbdc, rbdc_tbdc_curves

BOX = [10, 10, 19, 19]  # inclusive: 10 x 10 = 100 pixels
B2 = [30, 30, 39, 39]  # 100 pixels, disjoint from BOX
BIG = [10, 10, 39, 39]  # 900 pixels, covers BOX and B2: IoU 100 / 900 = .111 with each
FAR = [40, 40, 50, 50]  # overlaps neither BOX nor B2


# ------------------------------------------------------------------------------------------ oracles
def pixels(box):
    """The set of pixels an inclusive integer box covers."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return {(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)}


def pixel_iou(a, b):
    pa, pb = pixels(a), pixels(b)
    return len(pa & pb) / len(pa | pb)


def area_up_to_one(xs, ys):
    """Area under the polyline through (xs, ys) for x in [0, 1].

    A segment that crosses x = 1 is read at x = 1 on its straight line; a curve that ends before x = 1
    is continued flat (no detection left to lower the threshold to).
    """
    area = 0.0
    for i in range(len(xs) - 1):
        x0, y0, x1, y1 = xs[i], ys[i], xs[i + 1], ys[i + 1]
        if x0 >= 1:
            return area
        if x1 > 1:
            y_at_one = y0 + (y1 - y0) * (1 - x0) / (x1 - x0)
            return area + (1 - x0) * (y0 + y_at_one) / 2
        area += (x1 - x0) * (y0 + y1) / 2
    return area + (1 - xs[-1]) * ys[-1]


def oracle_points(gt_tracks, detections, total_frames, beta=0.1, alpha=0.1):
    """(FPR, RBDR, TBDR) lists: (0, 0, 0), then one point per distinct score, highest first, each
    recomputed from all detections scoring >= it."""
    regions = []  # (video, frame, box, track key)
    for video, rows in gt_tracks.items():
        for tid, frame, *box in np.asarray(rows, dtype=float).reshape(-1, 6):
            regions.append((video, int(frame), box, (video, int(tid))))
    dets = [
        (video, int(r[0]), r[1:5], float(r[5]))
        for video, rows in detections.items()
        for r in np.asarray(rows, dtype=float).reshape(-1, 6)
    ]
    track_len = {}
    for region in regions:
        track_len[region[3]] = track_len.get(region[3], 0) + 1
    fpr, rbdr, tbdr = [0.0], [0.0], [0.0]
    for theta in sorted({d[3] for d in dets}, reverse=True):
        detected = set()
        false_positives = 0
        for video, frame, box, score in dets:
            if score < theta:
                continue
            hits = [
                i
                for i, (r_video, r_frame, r_box, _) in enumerate(regions)
                if (r_video, r_frame) == (video, frame) and pixel_iou(r_box, box) >= beta
            ]
            detected.update(hits)
            false_positives += not hits
        per_track = dict.fromkeys(track_len, 0)
        for i in detected:
            per_track[regions[i][3]] += 1
        fpr.append(false_positives / total_frames)
        rbdr.append(len(detected) / len(regions))
        tbdr.append(sum(per_track[k] / track_len[k] >= alpha for k in track_len) / len(track_len))
    return fpr, rbdr, tbdr


def threshold_oracle(gt_tracks, detections, total_frames, beta=0.1, alpha=0.1):
    fpr, rbdr, tbdr = oracle_points(gt_tracks, detections, total_frames, beta=beta, alpha=alpha)
    return area_up_to_one(fpr, rbdr), area_up_to_one(fpr, tbdr)


def random_scene(seed, *, levels):
    """A few short videos (some normal), jittered detections of the ground truth and clutter.

    Scores are drawn from ``levels`` distinct values, so large tie groups are common, and videos are
    short, so the false positives of one tie group often carry FPR past 1.
    """
    rng = np.random.default_rng(seed)
    gt, det, frames = {}, {}, {}
    for v in range(3):
        n = int(rng.integers(2, 6))
        name = f"v{v}"
        frames[name] = n
        rows = []
        for tid in range(int(rng.integers(0, 3))):
            start = int(rng.integers(0, n))
            x, y = (int(c) for c in rng.integers(0, 30, 2))
            for f in range(start, min(n, start + int(rng.integers(1, 4)))):
                rows.append([tid, f, x, y, x + int(rng.integers(4, 9)), y + int(rng.integers(4, 9))])
        gt[name] = np.array(rows, dtype=float).reshape(-1, 6)
        d = []
        for r in rows:
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 detections per region
                dx, dy = (int(c) for c in rng.integers(-3, 4, 2))
                d.append([r[1], r[2] + dx, r[3] + dy, r[4] + dx, r[5] + dy, 0])
        for _ in range(int(rng.integers(0, 10))):
            f = int(rng.integers(0, n))
            x, y = (int(c) for c in rng.integers(0, 40, 2))
            d.append([f, x, y, x + int(rng.integers(1, 8)), y + int(rng.integers(1, 8)), 0])
        d = np.array(d, dtype=float).reshape(-1, 6)
        d[:, 5] = rng.integers(0, levels, len(d)) / levels
        det[name] = d
    return gt, det, frames


# --------------------------------------------------------------------------------- hand-worked cases
def test_hand_worked_tie_group_straddling_fpr_one():
    # 2 frames, one region (frame 0). A binary detector: every detection scores .5; one hits the region,
    # three are false positives in frame 1.
    # Thresholds: above .5 nothing, (0, 0); at .5 everything, FPR 3 / 2 = 1.5, RBDR 1: point (1.5, 1).
    # The straight line from (0, 0) to (1.5, 1) is at y = 1 / 1.5 = 2/3 at FPR 1, so
    # RBDC = 1/2 * 1 * 2/3 = 1/3; the track (1 of 1 region) follows the same line: TBDC = 1/3.
    # Before the fix the whole tie group was dropped for crossing FPR 1 and both came out 0.0, while
    # two false positives instead of three gave .75 (see below): one more FP in a normal frame erased
    # the detection entirely.
    gt = {"v": np.array([[0, 0, *BOX]])}
    det = {"v": np.array([[0, *BOX, 0.5], [1, *FAR, 0.5], [1, *FAR, 0.5], [1, *FAR, 0.5]])}
    assert rbdc_tbdc(gt, det, 2) == pytest.approx((1 / 3, 1 / 3), abs=1e-12)
    curves = rbdc_tbdc_curves(gt, det, 2)
    np.testing.assert_allclose(curves.fpr, [0, 1])
    np.testing.assert_allclose(curves.rbdr, [0, 2 / 3])
    assert np.isnan(curves.thresholds[-1])
    # Two FPs: point (1, 1) lies on FPR 1 exactly: area 1/2 * 1 * 1 = .5; then nothing left: flat.
    two = {"v": det["v"][:3]}
    assert rbdc_tbdc(gt, two, 2) == pytest.approx((0.5, 0.5), abs=1e-12)
    # The reference's per-detection steps never move x and y together, so ties="sequential" is unchanged:
    # TP first -> (0, 1) then FPs -> area 1; TP last -> it lands at FPR 1.5 > 1 -> area 0.
    assert rbdc_tbdc(gt, det, 2, ties="sequential") == (1.0, 1.0)
    assert rbdc_tbdc(gt, {"v": det["v"][::-1]}, 2, ties="sequential") == (0.0, 0.0)


def hand_scene():
    """Abnormal video "a" (4 frames) and normal video "n" (6 frames): 10 frames in all.

    Ground truth: track 0 = BOX in frames 0-3 (4 regions), track 1 = B2 in frame 2: 5 regions, 2 tracks.
    """
    gt = {
        "a": np.array([[0, f, *BOX] for f in range(4)] + [[1, 2, *B2]]),
        "n": np.zeros((0, 6)),
    }
    clutter = [[f, *FAR, 0.3] for f in (0, 0, 1, 1, 2, 2, 3, 3, 4, 5)]  # 10 FPs in the normal video
    det = {
        "a": np.array(
            [
                [0, *BOX, 0.9],  # TP (track 0, frame 0)
                [0, 11, 11, 19, 19, 0.9],  # IoU 81/100 with the same region: neither TP nor FP
                [2, *BIG, 0.7],  # IoU 100/900 >= .1 with BOX and with B2: two TPs from one box
                [3, *FAR, 0.7],  # FP in a frame with ground truth
                [1, *BOX, 0.3],  # TP (track 0, frame 1)
            ]
        ),
        "n": np.array([[0, *FAR, 0.8], *clutter]),  # FP at .8, then 10 FPs at .3
    }
    return gt, det, {"a": 4, "n": 6}


def test_hand_worked_scene():
    gt, det, frames = hand_scene()
    # Distinct thresholds (FPR = FP / 10, RBDR = TP / 5; TBDR = tracks with >= alpha of their regions / 2):
    #   .9: TP 1 (the duplicate adds nothing), FP 0   -> (0, .2); track 0 has 1/4 >= .1 -> TBDR .5
    #   .8: FP 1                                      -> (.1, .2); TBDR .5
    #   .7: TP 3 (BIG finds two), FP 2                -> (.2, .6); both tracks -> TBDR 1
    #   .3: TP 4, FP 12                               -> (1.2, .8); TBDR 1
    # Cut at FPR 1 on the last segment: y = .6 + (.8 - .6) * (1 - .2) / (1.2 - .2) = .76.
    # RBDC = .1 * .2 + .1 * (.2 + .6) / 2 + .8 * (.6 + .76) / 2 = .02 + .04 + .544 = .604.
    # TBDC = .1 * .5 + .1 * (.5 + 1) / 2 + .8 * 1 = .05 + .075 + .8 = .925.
    # alpha .5: track 0 needs 2/4 (frames 0 and 2 by .7), track 1 needs 1/1 (at .7): TBDR 0, 0, 1, 1
    #   -> TBDC = .1 * (0 + 1) / 2 + .8 * 1 = .85.
    assert rbdc_tbdc(gt, det, frames) == pytest.approx((0.604, 0.925), abs=1e-12)
    assert rbdc_tbdc(gt, det, frames, alpha=0.5) == pytest.approx((0.604, 0.85), abs=1e-12)
    curves = rbdc_tbdc_curves(gt, det, frames)
    np.testing.assert_allclose(curves.fpr, [0, 0, 0.1, 0.2, 1])
    np.testing.assert_allclose(curves.rbdr, [0, 0.2, 0.2, 0.6, 0.76])
    np.testing.assert_allclose(curves.tbdr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(curves.thresholds[:4], [np.inf, 0.9, 0.8, 0.7])
    assert np.isnan(curves.thresholds[4])
    assert (curves.num_regions, curves.num_tracks, curves.num_frames, curves.num_detections) == (5, 2, 10, 16)
    # The int total (the reference's --num-frames) gives the same; so does the oracle.
    assert rbdc_tbdc(gt, det, 10) == pytest.approx((0.604, 0.925), abs=1e-12)
    assert threshold_oracle(gt, det, 10) == pytest.approx((0.604, 0.925), abs=1e-12)


def test_hand_worked_scene_sequential():
    gt, det, frames = hand_scene()
    # Per detection in input order (the reference): .9 TP (0, .2); .9 duplicate, no step; .8 FP (.1, .2);
    # .7 BIG (.1, .6); .7 FP (.2, .6); .3: the TP of video "a" comes before the clutter of "n" (mapping
    # order), so (.2, .8), then FPs to x = 1 (8 of them) and beyond.
    # RBDC = .1 * .2 + .1 * .6 + .8 * .8 = .72; TBDR is .5 from the first TP and 1 from BIG:
    # TBDC = .1 * .5 + .9 * 1 = .95.
    assert rbdc_tbdc(gt, det, frames, ties="sequential") == pytest.approx((0.72, 0.95), abs=1e-12)
    # Videos in the other order: the 10 FPs of .3 come first, the TP at FPR 1.2 is cut:
    # RBDC = .1 * .2 + .1 * .6 + .8 * .6 = .56.
    flipped = {"n": det["n"], "a": det["a"]}
    assert rbdc_tbdc(gt, flipped, frames, ties="sequential")[0] == pytest.approx(0.56, abs=1e-12)
    # ties="threshold" (default) sits between the two orders and ignores the input order.
    assert rbdc_tbdc(gt, flipped, frames) == pytest.approx((0.604, 0.925), abs=1e-12)


def test_iou_exactly_beta_matches():
    # GT 10 x 10 = 100 px; detection 1 x 10 inside it: IoU = 10 / 100 = .1 exactly (float: 10 / 100).
    gt = {"v": np.array([[0, 0, *BOX]])}
    thin = {"v": np.array([[0, 10, 10, 10, 19, 0.5]])}
    assert rbdc_tbdc(gt, thin, 1) == (1.0, 1.0)
    # 9 px: IoU .09 < .1 -> a FP at FPR 1, nothing detected.
    thinner = {"v": np.array([[0, 10, 10, 10, 18, 0.5]])}
    assert rbdc_tbdc(gt, thinner, 1) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("length", "found", "detected"),
    [(10, 1, True), (11, 1, False), (11, 2, True), (30, 2, False), (30, 3, True)],
)
def test_alpha_boundary(length, found, detected):
    # A track of `length` regions, `found` of them detected without FP: RBDR = found / length on all of
    # [0, 1], TBDR 1 iff found / length >= .1 (3 / 30 and .1 * 30 are both exactly .1 and 3 in floats;
    # see test_alpha_fraction_where_the_float_product_misleads for products that round off an integer).
    gt = {"v": np.array([[0, f, *BOX] for f in range(length)])}
    det = {"v": np.array([[f, *BOX, 1.0 - f / 100] for f in range(found)])}
    assert rbdc_tbdc(gt, det, length) == pytest.approx((found / length, float(detected)), abs=1e-12)


@pytest.mark.parametrize(
    ("length", "alpha", "found", "detected"),
    [
        # .28 * 25 = 7.000000000000001 in floats (ceil 8), yet 7 / 25 == .28: 7 regions are enough.
        (25, 0.28, 7, True),
        (25, 0.28, 6, False),
        # alpha one ulp above 1/3 (0.33333333333333337): alpha * 3 rounds to 1.0 exactly (ceil 1), yet
        # 1 / 3 < alpha: one region of three is not enough, two are.
        (3, float(np.nextafter(1 / 3, 1)), 1, False),
        (3, float(np.nextafter(1 / 3, 1)), 2, True),
        # Same one ulp above 2/3: alpha * 3 rounds to 2.0 (ceil 2), yet 2 / 3 < alpha: all three needed.
        (3, float(np.nextafter(2 / 3, 1)), 2, False),
        (3, float(np.nextafter(2 / 3, 1)), 3, True),
    ],
)
def test_alpha_fraction_where_the_float_product_misleads(length, alpha, found, detected):
    # The reference counts a track when `hits / len >= alpha` (float division); ceil(alpha * len) is off
    # by one either way when the float product rounds across an integer. One track of `length` frames,
    # `found` of them detected without FP: RBDR = found / length on [0, 1], TBDR 1 iff detected.
    assert (found / length >= alpha) == detected  # the definition itself, as the reference evaluates it
    gt = {"v": np.array([[0, f, *BOX] for f in range(length)])}
    det = {"v": np.array([[f, *BOX, 1.0 - f / 100] for f in range(found)])}
    assert rbdc_tbdc(gt, det, length, alpha=alpha) == pytest.approx(
        (found / length, float(detected)), abs=1e-12
    )


def test_ground_truth_region_counted_once_whatever_its_detections():
    # Five detections of the one region at five thresholds: RBDR 1 from the first on, never above it,
    # and none of the later ones is a FP: both criteria 1.
    gt = {"v": np.array([[0, 0, *BOX]])}
    det = {"v": np.array([[0, 10 + i, 10, 19, 19, 0.9 - i / 10] for i in range(5)])}
    curves = rbdc_tbdc_curves(gt, det, 4)
    assert curves.rbdr.max() == 1.0
    assert curves.fpr.max() == 1.0  # only the flat extension reaches FPR 1
    assert (curves.rbdc, curves.tbdc) == (1.0, 1.0)


def test_beta_and_alpha_are_keyword_only():
    # rbdc_tbdc(gt, det, n, .5) silently meant beta = .5; the two thresholds are easy to swap.
    gt = {"v": np.array([[0, 0, *BOX]])}
    with pytest.raises(TypeError, match="positional argument"):
        rbdc_tbdc(gt, {}, 1, 0.1)  # type: ignore[misc]


# ----------------------------------------------------------------------------- oracle comparisons
@pytest.mark.parametrize("seed", range(40))
def test_threshold_mode_matches_loop_oracle_with_ties(seed):
    gt, det, frames = random_scene(seed, levels=4)
    if sum(len(g) for g in gt.values()) == 0:  # a scene without ground truth: RBDR is undefined
        with pytest.raises(ValueError, match="no region"):
            rbdc_tbdc(gt, det, frames)
        return
    total = sum(frames.values())
    for alpha, beta in ((0.1, 0.1), (0.5, 0.3)):
        expected = threshold_oracle(gt, det, total, beta=beta, alpha=alpha)
        assert rbdc_tbdc(gt, det, frames, beta=beta, alpha=alpha) == pytest.approx(expected, abs=1e-12)


def test_oracle_scenes_exercise_the_fpr_cut_inside_a_tie_group():
    # The comparison above only tests the cut if some scenes have a tie group whose segment crosses
    # FPR 1 while RBDR rises on it (x_i < 1 < x_{i+1}, y_i < y_{i+1}); count them on the oracle's points.
    crossing = 0
    for seed in range(40):
        gt, det, frames = random_scene(seed, levels=4)
        if sum(len(g) for g in gt.values()) == 0:
            continue
        fpr, rbdr, _ = oracle_points(gt, det, sum(frames.values()))
        crossing += any(fpr[i] < 1 < fpr[i + 1] and rbdr[i] < rbdr[i + 1] for i in range(len(fpr) - 1))
    assert crossing >= 3


@pytest.mark.parametrize("seed", range(5))
def test_threshold_mode_ignores_row_and_video_order(seed):
    gt, det, frames = random_scene(seed + 100, levels=3)
    if sum(len(g) for g in gt.values()) == 0:  # a scene without ground truth: RBDR is undefined
        with pytest.raises(ValueError, match="no region"):
            rbdc_tbdc(gt, det, frames)
        return
    rng = np.random.default_rng(seed)
    expected = rbdc_tbdc(gt, det, frames)
    for _ in range(5):
        names = list(det)
        rng.shuffle(names)
        shuffled = {v: det[v][rng.permutation(len(det[v]))] for v in names}
        assert rbdc_tbdc(gt, shuffled, frames) == pytest.approx(expected, abs=1e-12)


def test_scores_only_matter_through_their_order():
    gt, det, frames = random_scene(7, levels=5)
    moved = {v: np.column_stack((d[:, :5], 3 * d[:, 5] - 7)) for v, d in det.items()}
    assert rbdc_tbdc(gt, moved, frames) == pytest.approx(rbdc_tbdc(gt, det, frames), abs=1e-12)


def test_curve_points_match_sklearn_roc_on_one_to_one_scene():
    # When every detection hits at most one region and no region is hit twice, a detection is either a
    # TP (label 1) or a FP (label 0), and the RBDC curve is sklearn's ROC rescaled: RBDR = TPR * TPs /
    # regions, FPR = sklearn's FPR * FPs / frames. sklearn also keeps one point per distinct score.
    rng = np.random.default_rng(3)
    n_frames, gt_rows, det_rows, labels = 40, [], [], []
    for f in range(n_frames):
        if f % 2 == 0:  # a region in every even frame, one track per 5 regions
            gt_rows.append([f // 10, f, *BOX])
            if rng.random() < 0.7:
                det_rows.append([f, *BOX, 0])
                labels.append(1)
        for _ in range(int(rng.integers(0, 2))):
            det_rows.append([f, *FAR, 0])
            labels.append(0)
    det_rows = np.array(det_rows, dtype=float)
    det_rows[:, 5] = rng.integers(0, 6, len(det_rows)) / 5  # ties
    labels = np.array(labels)
    sk_fpr, sk_tpr, sk_thr = roc_curve(labels, det_rows[:, 5], drop_intermediate=False)
    fpr = sk_fpr * (labels == 0).sum() / n_frames
    rbdr = sk_tpr * labels.sum() / len(gt_rows)
    assert fpr[-1] < 1  # the whole curve lies in [0, 1]: the points can be compared one to one
    curves = rbdc_tbdc_curves({"v": np.array(gt_rows)}, {"v": det_rows}, n_frames)
    np.testing.assert_allclose(curves.fpr[:-1], fpr, atol=1e-12)
    np.testing.assert_allclose(curves.rbdr[:-1], rbdr, atol=1e-12)
    np.testing.assert_allclose(curves.thresholds[:-1], sk_thr)
    assert curves.rbdc == pytest.approx(area_up_to_one(fpr, rbdr), abs=1e-12)


def test_no_detection_and_normal_videos_only_add_frames():
    gt = {"a": np.array([[0, 0, *BOX], [0, 1, *BOX]])}
    det = {"a": np.array([[0, *BOX, 0.9], [1, *FAR, 0.8]])}
    # 2 frames: .9 TP -> (0, .5); .8 FP -> (.5, .5); flat to 1: RBDC .5, TBDC 1.
    assert rbdc_tbdc(gt, det, {"a": 2}) == pytest.approx((0.5, 1.0), abs=1e-12)
    # 8 more frames from a normal video without detections: the FP is at FPR .1 instead; same areas
    # (the curve is flat after the TP); only the FP's position moved.
    more = rbdc_tbdc_curves(gt, det, {"a": 2, "n": 8})
    np.testing.assert_allclose(more.fpr, [0, 0, 0.1, 1])
    assert (more.rbdc, more.tbdc) == pytest.approx((0.5, 1.0), abs=1e-12)


def test_sequential_mode_equals_threshold_mode_without_ties():
    for seed in range(10):
        gt, det, frames = random_scene(seed + 200, levels=10**9)  # distinct scores (almost surely)
        scores = np.concatenate([d[:, 5] for d in det.values()])
        if sum(len(g) for g in gt.values()) == 0 or len(set(scores)) != scores.size:
            continue
        total = sum(frames.values())
        expected = threshold_oracle(gt, det, total)
        for ties in ("threshold", "sequential"):
            assert rbdc_tbdc(gt, det, frames, ties=ties) == pytest.approx(expected, abs=1e-12)


def test_area_oracle_itself():
    # Sanity of the oracle's integrator on hand-drawn polylines.
    assert area_up_to_one([0, 1], [1, 1]) == 1.0
    assert area_up_to_one([0, 0.5], [0, 1]) == pytest.approx(0.25 + 0.5)
    assert area_up_to_one([0, 2], [0, 1]) == pytest.approx(0.25)
    assert area_up_to_one([0, 0, 1, 1, 3], [0, 0.5, 0.5, 0.7, 0.9]) == pytest.approx(0.5)
    assert pixel_iou(BOX, BIG) == pytest.approx(100 / 900)
    assert pixels([0, 0, 1, 0]) == {(0, 0), (1, 0)}  # inclusive: 2 x 1 pixels
