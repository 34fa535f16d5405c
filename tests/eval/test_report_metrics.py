"""compute_metrics and write_reports (lavida.eval.report) on hand-made per-video results, without a runner.

The runner tests (test_runner.py, test_runner_oracles.py) reach it through whole runs, which always hand
it pixel statistics merged beforehand; these pin what it computes and notes by itself.
"""

from pathlib import Path

import numpy as np
import pytest
from eval.trees import VideosMadeByTheTest
from sklearn.metrics import roc_auc_score

from lavida.eval.benchmark import TestVideo
from lavida.eval.report import compute_metrics, write_reports
from lavida.eval.video_result import VideoResult, pixel_statistics


def make_videos(*names: str, tracks: np.ndarray | None = None) -> list[TestVideo]:
    return [TestVideo(name=n, path=Path(n), frame_labels=np.zeros(4, np.uint8), tracks=tracks) for n in names]


# Video a: 4 frames, labels 0 0 1 1, scores 0.1 0.4 0.35 0.8. Of the 2 × 2 (positive, negative) pairs,
# 0.35 > 0.1, 0.35 < 0.4, 0.8 > 0.1, 0.8 > 0.4: frame AUC 3/4.
A = VideoResult("a", np.arange(4), np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], np.uint8))


def test_videos_without_a_scored_frame_are_counted_in_the_notes(tmp_path):
    """A video shorter than one window has no scored frame: it is left out of the frame metrics and the
    notes say how many such videos there were (1 here), and say nothing when there are none."""
    empty = VideoResult("b", np.arange(0), np.zeros(0), np.zeros(0, np.uint8))
    bench = VideosMadeByTheTest(tmp_path, pixel_gt=False)
    metrics, notes = compute_metrics([A, empty], videos=make_videos("a", "b"), benchmark=bench)
    assert metrics["frame_auc_micro"] == pytest.approx(0.75, abs=1e-12)
    assert (metrics["num_videos"], metrics["num_frames"], metrics["num_anomalous_frames"]) == (2, 4, 2)
    assert notes == ["1 video(s) had no scored frame under this protocol (shorter than one window)."]
    metrics, notes = compute_metrics([A], videos=make_videos("a"), benchmark=bench)
    assert notes == []


def test_pixel_statistics_of_the_results_are_merged(tmp_path):
    """Called without ``pixels``, compute_metrics pools the results' own pixel statistics, the normal
    video's pixels included. Hand-worked: positives 0.9 and 0.45; of the 10 negatives, 0.6 and 0.5 lie
    above 0.45, so the AUC is (10 + 8) / 20 = 0.9 (0.9167 = 11/12 if video b's pixels were dropped)."""
    maps_a = np.array([[[0.9, 0.1], [0.2, 0.3]], [[0.6, 0.4], [0.05, 0.45]]])
    gt_a = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 1]]], bool)
    maps_b = np.array([[[0.5, 0.15], [0.25, 0.35]]])
    gt_b = np.zeros((1, 2, 2), bool)
    results = []
    for name, maps, gt in (("a", maps_a, gt_a), ("b", maps_b, gt_b)):
        scored = np.arange(len(maps))
        pixels, _ = pixel_statistics(
            scored, predicted=lambda f, m=maps: m[f], ground_truth=lambda f, g=gt: g[f]
        )
        labels = gt.any(axis=(1, 2)).astype(np.uint8)
        results.append(VideoResult(name, scored, np.full(len(maps), 0.5), labels, pixels=pixels))
    bench = VideosMadeByTheTest(tmp_path, pixel_gt=True)
    metrics, notes = compute_metrics(results, videos=make_videos("a", "b"), benchmark=bench)
    pooled = roc_auc_score(
        np.concatenate([gt_a.ravel(), gt_b.ravel()]), np.concatenate([maps_a.ravel(), maps_b.ravel()])
    )
    assert pooled == pytest.approx(0.9, abs=1e-12)
    assert abs(metrics["pixel_auc"] - 0.9) <= metrics["pixel_auc_error_bound"] + 1e-12
    assert not [note for note in notes if note.startswith("pixel metrics")]


def test_a_frame_only_benchmark_gets_no_note_on_pixel_metrics(tmp_path):
    """Without pixel ground truth no pixel metric is expected: the notes stay empty (the note is for
    pixel benchmarks scored from frame scores alone)."""
    _, notes = compute_metrics(
        [A], videos=make_videos("a"), benchmark=VideosMadeByTheTest(tmp_path, pixel_gt=False)
    )
    assert notes == []


def test_a_video_with_tracks_but_no_regions_is_left_out_of_rbdc(tmp_path):
    """Frame scores alone on a benchmark with anomaly tracks (UBnormal, scores-only without pixel maps):
    the result has no regions, so RBDC/TBDC are not computed, while the frame metrics are."""
    track = np.array([[1, 2, 0, 0, 3, 3], [1, 3, 0, 0, 3, 3]])
    bench = VideosMadeByTheTest(tmp_path, pixel_gt=False)
    metrics, _ = compute_metrics([A], videos=make_videos("a", tracks=track), benchmark=bench)
    assert "rbdc" not in metrics and "tbdc" not in metrics
    assert metrics["frame_auc_micro"] == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize(("frames", "last"), [(1, 0), (2, 1)])
def test_tracks_on_the_last_scored_frame_are_kept(tmp_path, frames, last):
    """A track on the last scored frame (of a 1- or 2-frame video), found by a region with the same box:
    one track, detected on its only frame with IoU 1 and no false region, so RBDC = TBDC = 1."""
    track = np.array([[1, last, 2, 2, 6, 6]])
    regions = np.array([[last, 2, 2, 6, 6, 0.9]])
    video = TestVideo(name="v", path=Path("v"), frame_labels=np.ones(frames, np.uint8), tracks=track)
    result = VideoResult(
        "v", np.arange(frames), np.full(frames, 0.5), np.ones(frames, np.uint8), regions=regions
    )
    metrics, notes = compute_metrics(
        [result], videos=[video], benchmark=VideosMadeByTheTest(tmp_path, pixel_gt=True)
    )
    assert (metrics["rbdc"], metrics["tbdc"]) == (1.0, 1.0), notes


def test_rbdc_that_cannot_be_computed_is_noted_and_the_other_metrics_kept(tmp_path):
    """A track whose box is reversed (x_min 6 > x_max 2): RBDC/TBDC refuse it, and the report says why
    in its notes instead of losing the frame metrics of the whole run."""
    track = np.array([[1, 0, 6, 2, 2, 6]])
    regions = np.array([[0, 2, 2, 6, 6, 0.9]])
    video = TestVideo(name="v", path=Path("v"), frame_labels=np.ones(4, np.uint8), tracks=track)
    result = VideoResult("v", A.scored, A.frame_scores, A.frame_labels, regions=regions)
    metrics, notes = compute_metrics(
        [result], videos=[video], benchmark=VideosMadeByTheTest(tmp_path, pixel_gt=False)
    )
    assert "rbdc" not in metrics and "tbdc" not in metrics
    assert metrics["frame_auc_micro"] == pytest.approx(0.75, abs=1e-12)
    assert notes == [
        "rbdc/tbdc: not computed — rbdc_tbdc: gt_tracks['v'] row 0 has box [6.0, 2.0, 2.0, 6.0]; expected "
        "x_min <= x_max and y_min <= y_max (inclusive pixel coordinates)."
    ]


def test_a_video_whose_frame_auc_fails_gets_an_empty_cell_and_the_others_theirs(tmp_path):
    """NaN scores in one video: compute_metrics notes why the frame metrics are missing, and per_video.csv
    still gets written, the failing video's frame_auc left empty."""
    nan = VideoResult("z", np.arange(3), np.array([0.2, np.nan, 0.4]), np.array([0, 0, 1], np.uint8))
    bench = VideosMadeByTheTest(tmp_path, pixel_gt=False)
    metrics, notes = compute_metrics([A, nan], videos=make_videos("a", "z"), benchmark=bench)
    assert "frame_auc_micro" not in metrics and "contains NaN" in notes[0]
    info = {"protocol": "standard", "interval": 1}
    write_reports(
        tmp_path / "out", metrics=metrics, notes=notes, results=[A, nan], info=info, benchmark=bench
    )
    rows = (tmp_path / "out" / "per_video.csv").read_text().splitlines()
    assert rows[1] == "a,4,2,0.412500,0.800000,0.750000"
    assert rows[2].startswith("z,3,1,") and rows[2].endswith(",")


def test_per_video_csv_has_a_frame_auc_for_videos_with_both_classes(tmp_path):
    """per_video.csv, written into a folder that does not exist yet. Hand-worked: a (above) has AUC 0.75;
    c has one anomalous frame, scored 0.4 against 0.2 (above) and 0.6 (below): AUC 0.5; n has no anomalous
    frame, so its AUC is undefined and left empty. Means: 1.65 / 4 = 0.4125, 1.2 / 3 = 0.4, 0.8 / 2 = 0.4."""
    c = VideoResult("c", np.arange(3), np.array([0.2, 0.6, 0.4]), np.array([0, 0, 1], np.uint8))
    n = VideoResult("n", np.arange(2), np.array([0.3, 0.5]), np.array([0, 0], np.uint8))
    bench = VideosMadeByTheTest(tmp_path, pixel_gt=False)
    metrics, notes = compute_metrics([A, c, n], videos=make_videos("a", "c", "n"), benchmark=bench)
    out = tmp_path / "runs" / "bench_standard"
    info = {"protocol": "standard", "interval": 1, "checkpoint": None, "categories": ["smoke"]}
    write_reports(out, metrics=metrics, notes=notes, results=[A, c, n], info=info, benchmark=bench)
    assert (out / "per_video.csv").read_text().splitlines() == [
        "video,frames,anomalous_frames,mean_score,max_score,frame_auc",
        "a,4,2,0.412500,0.800000,0.750000",
        "c,3,1,0.400000,0.600000,0.500000",
        "n,2,0,0.400000,0.500000,",
    ]
    # report.md: the settings given (a None checkpoint is left out), the categories (not the benchmark's
    # "fire"), no "videos left out" line (metrics.json's key is absent), then the metrics in %. Pooled
    # micro AUC of the 9 frames: positives 0.35, 0.8, 0.4 against the 6 negatives 0.1 0.4 0.2 0.6 0.3 0.5
    # win 3, 6 and 3 + a tie (0.4 = 0.4, one half): 12.5 / 18 = 69.44 %.
    report = (out / "report.md").read_text().splitlines()
    assert report[:8] == [
        "# bench — standard protocol",
        "",
        "- interval: `1`",
        "- categories (1): smoke",
        "- categories given for this run, not the benchmark's prompt list",
        "- split: `test`",
        "- videos: 3, frames scored: 9, anomalous: 3",
        "",
    ]
    micro = "| frame_auc_micro **(primary)** | 69.44 |  | frame ROC-AUC over all frames pooled (micro) |"
    assert micro in report
