"""The evaluation runner: outputs, resume without recomputation, scores-only mode, pixel metrics."""

import dataclasses
import json
import logging
import re

import numpy as np
import pytest
import torch
from conftest import evaluate_saved, legacy_nearest, save_ramp_scores
from eval.trees import VideosMadeByTheTest
from PIL import Image
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

from lavida.eval import runner
from lavida.eval.benchmark import GroundTruthError, TestVideo, VadBenchmark, missing_video
from lavida.eval.benchmarks import get_benchmark
from lavida.eval.result_cache import cached_result_path
from lavida.eval.runner import run_evaluation
from lavida.eval.settings import EvalSettings
from lavida.eval.video_result import PIXEL_AUC_OCTAVES, VideoResult, pixel_statistics
from lavida.metrics import PixelAUC


class TinyBenchmark(VadBenchmark):
    """Two frame-folder videos with frame and pixel ground truth, written by the test."""

    name = "tiny"
    anomaly_start = 5  # video a's first anomalous frame
    intervals = {"standard": 2, "lavida_official": 4}
    has_pixel_gt = True
    primary_metric = "pixel_auc"

    @property
    def categories(self):
        return ["red square", "fire"]

    def load_videos(self):
        videos = []
        for name, length, start in (("a", 13, self.anomaly_start), ("b", 9, None)):
            folder = self.root / name
            folder.mkdir(exist_ok=True)
            masks = np.zeros((length, 24, 32), bool)
            labels = np.zeros(length, np.uint8)
            for t in range(length):
                frame = np.full((24, 32, 3), 40, np.uint8)
                if start is not None and t >= start:
                    frame[4:12, 6:16] = (220, 20, 20)
                    masks[t, 4:12, 6:16] = True
                    labels[t] = 1
                Image.fromarray(frame).save(folder / f"{t:03d}.png")
            videos.append(
                TestVideo(
                    name=name, path=folder, frame_labels=labels, pixel_masks=lambda idx, m=masks: m[idx]
                )
            )
        return videos


@pytest.fixture
def benchmark(tmp_path):
    (tmp_path / "data").mkdir()
    return TinyBenchmark(tmp_path / "data")


@pytest.fixture
def predictor(tiny_model):
    from conftest import tiny_processor_for

    from lavida.inference import Predictor

    return Predictor(model=tiny_model, processor=tiny_processor_for(tiny_model), batch_size=2)


def test_model_run_writes_all_outputs_and_resumes(benchmark, predictor, tmp_path):
    out = tmp_path / "run"
    protocol = benchmark.protocol("standard")
    metrics = run_evaluation(benchmark=benchmark, protocol=protocol, output_dir=out, predictor=predictor)
    for name in ("metrics.json", "per_video.csv", "report.md", "predictions/a.npz", "predictions/b.npz"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    assert metrics["num_videos"] == 2 and metrics["num_frames"] == 13 + 9  # every frame scored
    assert metrics["num_anomalous_frames"] == 8
    # The frame metrics are those of the saved per-video scores against the benchmark's labels (sklearn;
    # the macro AUC pads each video with a normal 0 and an anomalous 1, as the paper's protocol does).
    results = [VideoResult.load(out / "predictions" / f"{video.name}.npz") for video in benchmark.videos()]
    for result, video in zip(results, benchmark.videos(), strict=True):
        np.testing.assert_array_equal(result.scored, np.arange(video.num_frames))
        np.testing.assert_array_equal(result.frame_labels, video.frame_labels)
    scores = np.concatenate([result.frame_scores for result in results])
    labels = np.concatenate([result.frame_labels for result in results])
    assert metrics["frame_auc_micro"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics["frame_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    macro = [roc_auc_score(np.r_[0, r.frame_labels, 1], np.r_[0.0, r.frame_scores, 1.0]) for r in results]
    assert metrics["frame_auc_macro"] == pytest.approx(np.mean(macro), abs=1e-12)
    for key in ("pixel_auc", "pixel_auc_per_frame"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "paper (%)" in (out / "report.md").read_text()

    # Resume: cached videos are not predicted again, and the metrics are identical.
    calls = []
    original = predictor.predict_video
    predictor.predict_video = lambda *a, **k: calls.append(a) or original(*a, **k)
    assert cached_result_path(out, "b") == out / "predictions" / "b.npz"
    assert cached_result_path(out, "scene 1/b") == out / "predictions" / "scene_1_b.npz"
    cached_result_path(out, "b").unlink()  # as if the run died after video a
    again = run_evaluation(benchmark=benchmark, protocol=protocol, output_dir=out, predictor=predictor)
    assert len(calls) == 1 and calls[0][0].name == "b"
    assert again == metrics


def test_changed_settings_refuse_to_mix_cached_results(benchmark, predictor, tmp_path):
    out = tmp_path / "run"
    protocol = benchmark.protocol("standard")
    run_evaluation(benchmark=benchmark, protocol=protocol, output_dir=out, predictor=predictor)
    with pytest.raises(ValueError, match="other settings"):
        run_evaluation(
            benchmark=benchmark, protocol=protocol, output_dir=out, predictor=predictor, categories=["dog"]
        )


def test_scores_only_mode_matches_sklearn(benchmark, tmp_path):
    """Saved predictions of another method: frame metrics equal sklearn, pixel AUC equals the pooled AUC."""
    rng = np.random.default_rng(0)
    predictions = tmp_path / "preds"
    predictions.mkdir()
    all_scores, all_labels, all_pixel_scores, all_pixel_labels = [], [], [], []
    for video in benchmark.videos():
        scores = rng.random(video.num_frames).astype(np.float32)
        pixel_scores = rng.random((video.num_frames, 12, 16)).astype(np.float32)  # any size: resized to GT
        np.savez(predictions / f"{video.name}.npz", frame_scores=scores, pixel_scores=pixel_scores)
        all_scores.append(scores)
        all_labels.append(video.frame_labels)
        from lavida.eval.video_result import resize_probabilities

        all_pixel_scores.append(resize_probabilities(pixel_scores.astype(np.float64), (24, 32)))
        all_pixel_labels.append(video.pixel_masks(np.arange(video.num_frames)))
    out = tmp_path / "scores_only"
    metrics = evaluate_saved(benchmark, predictions, out)
    scores, labels = np.concatenate(all_scores), np.concatenate(all_labels)
    assert metrics["frame_auc_micro"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert metrics["frame_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    pooled = roc_auc_score(
        np.concatenate([m.reshape(-1) for m in all_pixel_labels]),
        np.concatenate([s.reshape(-1) for s in all_pixel_scores]),
    )
    assert metrics["pixel_auc"] == pytest.approx(pooled, abs=1e-4)
    reference = PixelAUC(octaves=PIXEL_AUC_OCTAVES)
    for s, m in zip(all_pixel_scores, all_pixel_labels, strict=True):
        reference.update(s, m)
    assert metrics["pixel_auc"] == pytest.approx(reference.compute(), abs=1e-12)
    # Every row of the report's metrics table has the header's four cells (a '|' in a text splits one).
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("|")]
    assert any(row.startswith("| pixel_auc_error_bound |") for row in rows)
    assert {row.count("|") for row in rows} == {5}


def test_predictions_saved_again_are_not_served_from_the_cache(benchmark, tmp_path):
    """Scores-only results are cached like model results; predictions rewritten in the same folder must
    not come back as the old ones' metrics."""
    rng = np.random.default_rng(0)
    predictions = tmp_path / "preds"
    predictions.mkdir()

    def save_predictions():
        scores = {}
        for video in benchmark.videos():
            scores[video.name] = rng.random(video.num_frames).astype(np.float32)
            np.save(predictions / f"{video.name}.npy", scores[video.name])
        return scores

    def evaluate(**options):
        return evaluate_saved(benchmark, predictions, tmp_path / "out", **options)

    save_predictions()
    first = evaluate()
    assert evaluate() == first  # unchanged predictions: served from the cache
    scores = save_predictions()
    with pytest.raises(ValueError, match="other settings"):
        evaluate()
    second = evaluate(overwrite=True)
    videos = list(benchmark.videos())
    labels = np.concatenate([v.frame_labels for v in videos])
    expected = roc_auc_score(labels, np.concatenate([scores[v.name] for v in videos]))
    assert second["frame_auc_micro"] == pytest.approx(expected, abs=1e-9) != first["frame_auc_micro"]


def test_scores_only_errors_name_the_file(benchmark, tmp_path):
    predictions = tmp_path / "preds"
    predictions.mkdir()
    np.save(predictions / "a.npy", np.zeros(5, np.float32))  # video a has 13 frames
    np.save(predictions / "b.npy", np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="a.npy: 5 frame scores, but 'a' has 13 frames"):
        evaluate_saved(benchmark, predictions, tmp_path / "o")
    for bad, shown in ((np.nan, "nan"), (2.5, "2.5")):  # NaN, or logits saved instead of probabilities
        scores = np.full(13, 0.5, np.float32)
        scores[7] = bad
        np.save(predictions / "a.npy", scores)
        with pytest.raises(
            GroundTruthError, match=rf"a.npy: 1 frame score\(s\) .*\[0, 1\] \(frame 7: {shown}\)"
        ):
            evaluate_saved(benchmark, predictions, tmp_path / "o_bad")
    assert not (tmp_path / "o_bad" / "metrics.json").exists()
    # 13 scores in a (13, 1) array are one per frame; video b's 9 as a (3, 3) grid have no order to trust.
    np.save(predictions / "a.npy", np.full((13, 1), 0.5, np.float32))
    np.save(predictions / "b.npy", np.full((3, 3), 0.5, np.float32))
    with pytest.raises(
        GroundTruthError, match=r"b\.npy: frame scores of shape \(3, 3\); expected \(F,\) with F = 9"
    ):
        evaluate_saved(benchmark, predictions, tmp_path / "o_2d")
    (predictions / "b.npy").unlink()
    np.save(predictions / "a.npy", np.zeros(13, np.float32))
    with pytest.raises(
        FileNotFoundError,
        match=r"holds no predictions for 1 of the 2 videos evaluated:\n  b: expected b\.npz / b\.npy\n",
    ):
        evaluate_saved(benchmark, predictions, tmp_path / "o2")


@pytest.mark.parametrize("given", [(), ("predictions_dir", "predictor_factory")])
def test_exactly_one_source_of_scores_is_required(benchmark, tmp_path, given):
    """Neither the model nor saved predictions, or both: refused before any video is read or written."""
    sources = {
        "predictions_dir": tmp_path / "preds",
        "predictor_factory": lambda: pytest.fail("model loaded"),
    }
    with pytest.raises(
        ValueError, match=r"^Give exactly one of `predictor`, `predictor_factory` .* and `predictions_dir`"
    ):
        run_evaluation(
            benchmark=benchmark,
            protocol=benchmark.protocol("standard"),
            output_dir=tmp_path / "out",
            **{key: sources[key] for key in given},
        )
    assert not (tmp_path / "out").exists()


def test_a_benchmark_without_test_videos_is_refused_naming_it_and_the_protocol(tmp_path):
    bench = VideosMadeByTheTest(tmp_path)
    with pytest.raises(
        ValueError, match=r"^bench: no test videos selected under protocol 'lavida_official'\.$"
    ):
        run_evaluation(
            benchmark=bench,
            protocol=bench.protocol("lavida_official"),
            output_dir=tmp_path / "out",
            predictions_dir=tmp_path,
        )


def test_saved_pixel_scores_must_be_probability_maps(benchmark, tmp_path):
    """Logit maps would be clamped to [0, 1] by the bilinear resize and scored wrongly: refused, as are
    NaN and maps without a frame axis, naming the file and the first bad pixel."""
    predictions = tmp_path / "preds"
    predictions.mkdir()
    np.savez(predictions / "b.npz", frame_scores=np.zeros(9), pixel_scores=np.full((9, 24, 32), 0.5))
    maps = np.full((13, 24, 32), 0.5, np.float32)
    for bad, shown in ((np.nan, "nan"), (-3.0, "-3.0")):
        maps[6, 2, 9] = bad
        np.savez(predictions / "a.npz", frame_scores=np.zeros(13, np.float32), pixel_scores=maps)
        with pytest.raises(
            GroundTruthError, match=rf"a.npz: 1 pixel score\(s\) .*\(frame 6, pixel \(2, 9\): {shown}\)"
        ):
            evaluate_saved(benchmark, predictions, tmp_path / "o")
    np.savez(predictions / "a.npz", frame_scores=np.zeros(13, np.float32), pixel_scores=np.zeros((13, 24)))
    with pytest.raises(GroundTruthError, match=r"a.npz: 'pixel_scores' has shape \(13, 24\); expected"):
        evaluate_saved(benchmark, predictions, tmp_path / "o")
    assert not (tmp_path / "o" / "metrics.json").exists()
    maps[6, 2, 9] = 1.0  # the bounds themselves are probabilities
    np.savez(predictions / "a.npz", frame_scores=np.zeros(13, np.float32), pixel_scores=maps)
    assert "pixel_auc" in evaluate_saved(benchmark, predictions, tmp_path / "o")


def test_pixel_maps_for_some_videos_only_are_refused(benchmark, tmp_path, caplog):
    """The pixel metrics pool all videos, normal ones included: maps for a alone would score a subset
    (b's false alarms would vanish). Maps for every video, or for none (frame metrics only, said in the
    log and the report), are fine."""
    predictions = tmp_path / "preds"
    predictions.mkdir()
    np.savez(predictions / "a.npz", frame_scores=np.zeros(13), pixel_scores=np.full((13, 24, 32), 0.5))
    for without in ("npy", "npz"):
        for stale in predictions.glob("b.*"):
            stale.unlink()
        if without == "npy":
            np.save(predictions / "b.npy", np.zeros(9))
        else:
            np.savez(predictions / "b.npz", frame_scores=np.zeros(9))
        with pytest.raises(
            GroundTruthError, match=r"1 videos have saved pixel maps .* 1 with pixel .* do not: b\."
        ):
            evaluate_saved(benchmark, predictions, tmp_path / f"o_{without}")
        assert not (tmp_path / f"o_{without}" / "predictions").exists()  # refused before any work
    np.savez(predictions / "a.npz", frame_scores=np.zeros(13))
    with caplog.at_level(logging.WARNING, logger="lavida.eval.saved_predictions"):
        metrics = evaluate_saved(benchmark, predictions, tmp_path / "frames_only")
    assert "frame_auc_micro" in metrics and "pixel_auc" not in metrics
    assert f"{predictions}: no saved pixel maps" in caplog.text and "only the frame metrics" in caplog.text
    report = (tmp_path / "frames_only" / "report.md").read_text()
    assert "pixel metrics (and RBDC/TBDC where there are tracks): not computed" in report


def test_saved_scores_keep_float64_resolution(benchmark, tmp_path):
    """Scores that differ only beyond float32's resolution near 1 (logits above ~16.6) are ranked as
    saved, not tied."""
    predictions = tmp_path / "preds"
    predictions.mkdir()
    all_scores, all_labels = [], []
    for video in benchmark.videos():
        # Normal frames just below the anomalous ones, all within float32's last step below 1.0.
        scores = np.where(video.frame_labels == 1, 1 - 1e-9, 1 - 2e-9) - np.arange(video.num_frames) * 1e-12
        assert (scores.astype(np.float32) == 1.0).all()
        np.save(predictions / f"{video.name}.npy", scores)
        all_scores.append(scores)
        all_labels.append(video.frame_labels)
    metrics = evaluate_saved(benchmark, predictions, tmp_path / "out")
    expected = roc_auc_score(np.concatenate(all_labels), np.concatenate(all_scores))
    assert expected == 1.0 and metrics["frame_auc_micro"] == expected


def test_official_protocol_drops_tails(benchmark, tmp_path):
    """Interval 4 × 8 frames = 32-frame windows: both videos are shorter, nothing is scored."""
    predictions = tmp_path / "preds"
    predictions.mkdir()
    for video in benchmark.videos():
        np.save(predictions / f"{video.name}.npy", np.linspace(0, 1, video.num_frames, dtype=np.float32))
    metrics = run_evaluation(
        benchmark=benchmark,
        protocol=benchmark.protocol("lavida_official"),
        output_dir=tmp_path / "o",
        predictions_dir=predictions,
        settings=EvalSettings(),
    )
    assert metrics["num_frames"] == 0 and "frame_auc_micro" not in metrics
    assert "no scored frame" in (tmp_path / "o" / "report.md").read_text()


def test_ground_truth_read_differently_is_not_served_from_the_cache(benchmark, tmp_path):
    """Cached results hold their run's frame labels: other labels (another option, another copy of the
    data) must not reuse them."""

    class Shifted(TinyBenchmark):
        anomaly_start = 9

    predictions = tmp_path / "preds"
    predictions.mkdir()
    rng = np.random.default_rng(1)
    for video in benchmark.videos():
        np.save(predictions / f"{video.name}.npy", rng.random(video.num_frames).astype(np.float32))

    evaluate_saved(benchmark, predictions, tmp_path / "out")
    shifted = Shifted(benchmark.root)
    with pytest.raises(ValueError, match="other settings"):
        evaluate_saved(shifted, predictions, tmp_path / "out")
    metrics = evaluate_saved(shifted, predictions, tmp_path / "out", overwrite=True)
    videos = shifted.videos()
    labels = np.concatenate([v.frame_labels for v in videos])
    scores = np.concatenate([np.load(predictions / f"{v.name}.npy") for v in videos])
    assert metrics["num_anomalous_frames"] == 4
    assert metrics["frame_auc_micro"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


def test_regions_share_the_ground_truth_coordinates_at_any_pixel_size(tmp_path):
    """RBDC/TBDC compare predicted boxes with ground-truth track boxes: computing the pixel metrics at
    another size must not move the predicted boxes out of the tracks' coordinates."""
    from eval.trees import write_ubnormal_tree

    tree = write_ubnormal_tree(tmp_path / "ubnormal")
    bench = get_benchmark("ubnormal", tree.root, split_lists=tree.files["split_lists"])
    predictions = tmp_path / "preds"
    predictions.mkdir()
    for video in bench.videos():
        # Perfect regions: the tracks' own boxes (inclusive corners; the objects are rectangles).
        perfect = np.zeros(video.pixel_masks(np.arange(video.num_frames)).shape, np.float32)
        for _, frame, x0, y0, x1, y1 in video.tracks:
            perfect[frame, y0 : y1 + 1, x0 : x1 + 1] = 0.9
        np.savez(
            predictions / f"{video.name}.npz", frame_scores=perfect.max(axis=(1, 2)), pixel_scores=perfect
        )
    for size in (None, (16, 24), (45, 70)):
        out = tmp_path / f"out_{size}"
        metrics = evaluate_saved(bench, predictions, out, settings=EvalSettings(pixel_size=size))
        assert (metrics["rbdc"], metrics["tbdc"]) == (1.0, 1.0), size
        regions = VideoResult.load(cached_result_path(out, "abnormal_scene_1_scenario_1")).regions
        native = VideoResult.load(cached_result_path(tmp_path / "out_None", "abnormal_scene_1_scenario_1"))
        np.testing.assert_array_equal(regions, native.regions)


@pytest.mark.parametrize("name", ["result.npz", "result", "result.cache"])
def test_video_result_saves_to_any_file_name(tmp_path, name):
    """np.savez_compressed appends .npz to a path without it, so writing by name would miss the
    temporary file the atomic write renames; the file is written through a handle instead."""
    result = VideoResult("v", np.arange(3), np.array([0.1, 0.5, 0.9]), np.array([0, 1, 1], np.uint8))
    assert result.save(tmp_path / name) == tmp_path / name
    loaded = VideoResult.load(tmp_path / name)
    assert loaded.name == "v"
    np.testing.assert_array_equal(loaded.frame_scores, [0.1, 0.5, 0.9])
    np.testing.assert_array_equal(loaded.frame_labels, [0, 1, 1])
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left behind


def test_release_resize_follows_the_official_validation():
    """The release nearest-resizes the S×S predictions, and the ground truth stretched to S×S first, to
    158×238; the pooled pixel AUC then equals sklearn's on those arrays."""
    rng = np.random.default_rng(0)
    labels = np.zeros((3, 50, 75), bool)
    labels[:, 10:31, 20:47] = True
    labels[1] = False
    predictions = rng.random((3, 64, 64)).astype(np.float32)  # as if at SAM2's S×S input
    stats, _ = pixel_statistics(
        np.arange(3),
        predicted=lambda frames: predictions[frames],
        ground_truth=lambda frames: labels[frames],
        size=(158, 238),
        resize="release",
    )
    expected_labels = legacy_nearest(legacy_nearest(labels, (64, 64)), (158, 238))
    expected_scores = legacy_nearest(predictions, (158, 238))
    expected = roc_auc_score(expected_labels.reshape(-1), expected_scores.reshape(-1))
    assert stats.pixel_auc.compute() == pytest.approx(expected, abs=stats.pixel_auc.error_bound())
    bilinear, _ = pixel_statistics(
        np.arange(3),
        predicted=lambda frames: predictions[frames],
        ground_truth=lambda frames: labels[frames],
        size=(158, 238),
    )
    assert abs(bilinear.pixel_auc.compute() - expected) > 1e-3  # the two rules differ on this input


def test_official_protocol_scores_the_masks_at_sam2_input_size(benchmark, predictor, tmp_path, monkeypatch):
    """Under lavida_official the model's low-resolution mask logits are upsampled to SAM2's S×S input
    before the release's nearest resizing, as SAM2's post-processing does in the release."""

    class Windowed(TinyBenchmark):
        intervals = {"standard": 2, "lavida_official": 1}  # 8-frame windows: both videos are scored

    low_res, seen = [], []
    predict_video = predictor.predict_video

    def record(*args, **kwargs):
        prediction = predict_video(*args, **kwargs)
        low_res.append(prediction.mask_logits[:1].astype(np.float32))  # the first scored frame's logits
        return prediction

    def spy(scored, *, predicted, **options):
        seen.append((predicted(scored[:1]), options["resize"]))
        return pixel_statistics(scored, predicted=predicted, **options)

    monkeypatch.setattr(predictor, "predict_video", record)
    monkeypatch.setattr(runner, "pixel_statistics", spy)
    bench = Windowed(benchmark.root)
    metrics = run_evaluation(
        benchmark=bench,
        protocol=bench.protocol("lavida_official"),
        output_dir=tmp_path / "o",
        predictor=predictor,
    )
    side = predictor.model.mask_decoder.image_size
    assert [resize for _, resize in seen] == ["release"] * 2 and metrics["num_frames"] == 16
    for (maps, _), logits in zip(seen, low_res, strict=True):
        # Bilinear on the logits to S×S, then the sigmoid: written out with torch directly.
        upsampled = torch.nn.functional.interpolate(
            torch.from_numpy(logits)[:, None], size=(side, side), mode="bilinear", align_corners=False
        )[:, 0].numpy()
        np.testing.assert_allclose(maps, expit(upsampled), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("names", "shared"), [(("fight #1", "fight_1"), "fight_1"), (("Fight_1", "fight_1"), "fight_1")]
)
def test_videos_sharing_a_cache_file_name_are_refused(tmp_path, names, shared):
    """Also names that differ only in case: macOS and Windows keep one file for both."""

    class Clashing(TinyBenchmark):
        def load_videos(self):
            return [
                TestVideo(name=name, path=self.root, frame_labels=np.array([0, 1], np.uint8))
                for name in names
            ]

    bench = Clashing(tmp_path)
    with pytest.raises(
        ValueError, match=f"'{names[0]}' and '{names[1]}' share the cache file name '{shared}'"
    ):
        evaluate_saved(bench, tmp_path, tmp_path / "o")


@pytest.mark.parametrize("spelling", ["as named", "file-safe"])
def test_scores_only_reads_names_with_dots(tmp_path, spelling):
    """XD-Violence names hold dots; each video's predictions are ``<name>.npy`` with the whole name (two
    clips of one film must not both read a file cut at the first dot), named exactly after the video or
    with its '#' made file-safe."""

    class Dotted(TinyBenchmark):
        def load_videos(self):
            a, b = super().load_videos()
            return [
                dataclasses.replace(a, name="Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"),
                dataclasses.replace(b, name="Bad.Boys.1995__#01-15-02_01-15-40_label_A"),
            ]

    (tmp_path / "data").mkdir()
    bench = Dotted(tmp_path / "data")
    predictions = tmp_path / "preds"
    predictions.mkdir()
    rng = np.random.default_rng(1)
    scores = {}
    for video in bench.videos():
        scores[video.name] = rng.random(video.num_frames)
        file_name = video.name if spelling == "as named" else video.name.replace("#", "_")
        np.save(predictions / f"{file_name}.npy", scores[video.name])
    metrics = evaluate_saved(bench, predictions, tmp_path / "out")
    videos = list(bench.videos())
    expected = roc_auc_score(
        np.concatenate([v.frame_labels for v in videos]), np.concatenate([scores[v.name] for v in videos])
    )
    assert metrics["frame_auc_micro"] == pytest.approx(expected, abs=1e-12)
    (predictions / f"{file_name}.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"#01-15-02_01-15-40_label_A\.npz / .* or .*__01-15-02"):
        evaluate_saved(bench, predictions, tmp_path / "out2")


@pytest.mark.parametrize("kind", ["object array", "not numpy", "truncated npz"])
def test_malformed_prediction_files_are_named(benchmark, tmp_path, kind):
    predictions = tmp_path / "preds"
    predictions.mkdir()
    np.save(predictions / "a.npy", np.zeros(13))
    if kind == "object array":
        bad = predictions / "b.npy"
        np.save(bad, np.array([0.5, None], dtype=object), allow_pickle=True)
    elif kind == "not numpy":
        bad = predictions / "b.npy"
        bad.write_bytes(b"frame,score\n0,0.5\n")
    else:
        bad = predictions / "b.npz"
        np.savez(bad, frame_scores=np.zeros(9))
        bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(GroundTruthError, match=rf"{bad}: cannot read the saved predictions"):
        evaluate_saved(benchmark, predictions, tmp_path / "out")


def test_output_dir_inside_predictions_dir_resumes(benchmark, tmp_path):
    """The run's own files under predictions_dir (its output_dir there) do not change the predictions'
    fingerprint: an unchanged rerun is served from the cache instead of being refused."""
    predictions = save_ramp_scores(tmp_path / "preds", {v.name: v.num_frames for v in benchmark.videos()})
    first = evaluate_saved(benchmark, predictions, predictions / "eval")
    assert evaluate_saved(benchmark, predictions, predictions / "eval") == first
    # Predictions kept in <output_dir>/predictions, where the runner caches its own results: refused.
    inside = tmp_path / "run" / "predictions"
    inside.mkdir(parents=True)
    for saved in predictions.glob("*.npy"):
        (inside / saved.name).write_bytes(saved.read_bytes())
    with pytest.raises(ValueError, match="would overwrite the saved predictions"):
        evaluate_saved(benchmark, inside, tmp_path / "run")


def test_model_pixel_scores_keep_logit_order_beyond_float32(benchmark, predictor, tmp_path, monkeypatch):
    """Mask logits of 17 (normal frames) and 20 (anomalous frames) are both exactly 1.0 as float32
    probabilities; the pooled pixel AUC must still rank them, as the release's roc_auc_score on the logits
    does (here perfectly: 1.0, where tied scores would give 0.5)."""

    class Whole(TinyBenchmark):
        intervals = {"standard": 1, "lavida_official": 1}

        def load_videos(self):
            videos = super().load_videos()
            return [
                dataclasses.replace(
                    v,
                    pixel_masks=lambda idx, y=v.frame_labels: np.broadcast_to(
                        y[idx, None, None].astype(bool), (len(idx), 24, 32)
                    ).copy(),
                )
                for v in videos
            ]

    bench = Whole(benchmark.root)
    labels = {str(v.path): v.frame_labels for v in bench.videos()}
    predict_video = predictor.predict_video

    def confident(path, clips, *args, **kwargs):
        prediction = predict_video(path, clips, *args, **kwargs)
        frame_label = labels[str(path)][clips.reshape(-1)]
        logits = np.where(frame_label[:, None, None] == 1, 20.0, 17.0)
        prediction.mask_logits[:] = np.broadcast_to(logits, prediction.mask_logits.shape)
        return prediction

    monkeypatch.setattr(predictor, "predict_video", confident)
    assert np.float32(expit(np.float32(17.0))) == np.float32(expit(np.float32(20.0))) == 1.0
    metrics = run_evaluation(
        benchmark=bench, protocol=bench.protocol("standard"), output_dir=tmp_path / "o", predictor=predictor
    )
    assert metrics["pixel_auc"] == 1.0 and metrics["pixel_auc_error_bound"] == 0.0


def test_runs_that_are_not_the_whole_test_split_say_so(benchmark, tmp_path, capsys, monkeypatch):
    """The paper's numbers are on whole test splits: metrics.json and the report record the split and the
    videos left out (max_videos, or not found on disk), and lavida-tables refuses such runs by default."""
    from lavida.cli.tables import main as tables
    from lavida.eval.tables import OFFICIAL_TEST_VIDEOS

    predictions = tmp_path / "preds"
    predictions.mkdir()
    for video in benchmark.videos():
        np.save(predictions / f"{video.name}.npy", np.linspace(0, 1, video.num_frames, dtype=np.float32))
    whole = evaluate_saved(benchmark, predictions, tmp_path / "whole")
    assert whole["split"] == "test" and whole["videos_left_out"] == 0
    assert "- split: `test`\n" in (tmp_path / "whole" / "report.md").read_text()

    cut = evaluate_saved(benchmark, predictions, tmp_path / "cut", settings=EvalSettings(max_videos=1))
    assert cut["num_videos"] == 1 and cut["videos_left_out"] == 1
    assert "videos left out: 1" in (tmp_path / "cut" / "report.md").read_text()

    benchmark.split = "validation"  # as UBnormal's validation, with skip_missing and 3 videos not on disk
    benchmark.missing = tuple(missing_video(f"gone_{i}", benchmark.root / f"gone_{i}") for i in range(3))
    other = evaluate_saved(benchmark, predictions, tmp_path / "other")
    assert other["split"] == "validation" and other["videos_left_out"] == 3
    assert (
        "- split: `validation` (the paper reports the test split)"
        in (tmp_path / "other" / "report.md").read_text()
    )

    # The report's title says "tiny"; lavida-tables knows only the paper's benchmarks: pose as one, whose
    # official test split is this benchmark's 2 videos.
    monkeypatch.setitem(OFFICIAL_TEST_VIDEOS, "shanghaitech", {"standard": 2, "lavida_official": 2})
    for name in ("whole", "cut", "other"):
        report = tmp_path / name / "report.md"
        report.write_text(report.read_text().replace("# tiny —", "# shanghaitech —", 1))
    with pytest.raises(SystemExit, match="2"):
        tables([str(tmp_path / "cut")])
    assert re.search(
        r"(?s)cut \(1 of the official test split's 2 videos evaluated under the standard protocol, 1 left "
        r"out \(missing on disk, or beyond max_videos\)\).*--allow-partial",
        capsys.readouterr().err,
    )
    with pytest.raises(SystemExit, match="2"):
        tables([str(tmp_path / "other")])
    assert re.search(r"other \(the validation split and 3 test videos left out\)", capsys.readouterr().err)
    tables([str(tmp_path / "cut"), "--allow-partial", "--out", str(tmp_path / "t")])
    markdown = (tmp_path / "t" / "tables.md").read_text()
    assert f"| ours (standard protocol) | – | {100 * cut['frame_auc_micro']:.2f} † | – | – |" in markdown
    assert "† not the whole test split:" in markdown and "1 of the official test split's 2 videos" in markdown
    tables([str(tmp_path / "whole"), "--out", str(tmp_path / "t")])
    assert "†" not in (tmp_path / "t" / "tables.md").read_text()


def test_prediction_files_never_come_from_outside_the_folder(tmp_path):
    """The exact spelling of a name is a file name in the predictions folder, never a path out of it, and
    a name too long for the file system falls back to the file-safe one instead of failing."""
    from lavida.eval.saved_predictions import saved_prediction_paths

    predictions = tmp_path / "preds"
    predictions.mkdir()
    np.save(tmp_path / "secret#1.npy", np.zeros(3))  # beside the folder, reachable as ../secret#1
    assert saved_prediction_paths(predictions, "../secret#1")[1] == predictions / ".._secret_1.npy"
    np.save(predictions / "clip#1.npy", np.zeros(3))
    assert saved_prediction_paths(predictions, "clip#1")[1] == predictions / "clip#1.npy"
    long = "é" * 130  # 260 bytes: too long for a file name on most file systems
    assert saved_prediction_paths(predictions, long)[1] == predictions / "_.npy"


@pytest.mark.parametrize("workers", [0, 1])
def test_frames_the_model_cannot_take_name_the_video(predictor, tmp_path, workers):
    """A 2x600 frame (aspect ratio 300; Qwen2-VL takes at most 200) stops the run with the video named."""
    from lavida.eval.benchmark import plan_clips

    folder = tmp_path / "thin"
    folder.mkdir()
    for t in range(2):
        Image.fromarray(np.zeros((2, 600, 3), np.uint8)).save(folder / f"{t}.png")
    predictor.num_workers = workers
    plan = plan_clips(2, interval=1, clip_length=2, drop_tail=False)
    with pytest.raises(ValueError, match=r"thin: cannot encode clip 0 of its 2x600 \(HxW\) frames .*aspect"):
        predictor.predict_video(folder, plan.clips, ["fire"])


def test_the_console_summary_puts_the_headline_metric_first_beside_the_papers():
    """The run used to end with the whole of metrics.json as one JSON line."""
    from types import SimpleNamespace

    from lavida.eval.paper_results import PAPER_RESULTS
    from lavida.eval.report import summary_line

    metrics = {
        "frame_auc_micro": 0.954,
        "frame_ap": 0.5,
        "pixel_auc": 0.97125,
        "pixel_auc_error_bound": 2e-7,  # a bound on the metric's error, not a metric: left out
        "num_videos": 12,
        "num_frames": 2010,
        "primary_metric": "pixel_auc",
        "source": {"mode": "model"},  # not a metric: left out
    }
    key, paper = PAPER_RESULTS["ucsd_ped2"]
    assert key == "pixel_auc"
    line = summary_line(
        metrics, benchmark=SimpleNamespace(name="ucsd_ped2"), protocol="standard", output_dir="out/ped2"
    )
    assert line == (
        f"ucsd_ped2 (standard), 12 videos, 2,010 frames: pixel_auc 97.12 % (paper {paper:.2f}), "
        "frame_auc_micro 95.40 %, frame_ap 50.00 % (report.md, metrics.json in out/ped2)"
    )


def test_an_npz_beside_an_npy_of_one_video_is_read_with_a_warning(benchmark, tmp_path, caplog):
    """Both files of a video: the .npz is read (it may hold pixel scores) and the run says so, as one of the
    two is out of date; a stale .npz won without a word."""
    predictions = tmp_path / "preds"
    predictions.mkdir()
    for video in benchmark.videos():
        np.save(predictions / f"{video.name}.npy", np.linspace(0, 1, video.num_frames))
    np.savez(predictions / "a.npz", frame_scores=np.linspace(1, 0, 13))
    with caplog.at_level(logging.WARNING, logger="lavida.eval.saved_predictions"):
        evaluate_saved(benchmark, predictions, tmp_path / "o")
    both = (
        f"{predictions / 'a.npz'} and {predictions / 'a.npy'} both exist; reading the .npz (delete the file "
    )
    assert [m for m in caplog.messages if "both exist" in m] == [both + "that is out of date)."]
