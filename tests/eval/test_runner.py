"""The evaluation runner: outputs, resume without recomputation, scores-only mode, pixel metrics."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from lavida.eval.benchmark import TestVideo, VadBenchmark
from lavida.eval.runner import EvalSettings, cached_result_path, run_evaluation
from lavida.metrics import PixelAUC


class TinyBenchmark(VadBenchmark):
    """Two frame-folder videos with frame and pixel ground truth, written by the test."""

    name = "tiny"
    intervals = {"standard": 2, "lavida_official": 4}
    has_pixel_gt = True
    primary_metric = "pixel_auc"

    @property
    def categories(self):
        return ["red square", "fire"]

    def load_videos(self):
        videos = []
        for name, length, start in (("a", 13, 5), ("b", 9, None)):
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
    for key in ("frame_auc_micro", "frame_auc_macro", "frame_ap", "pixel_auc", "pixel_auc_per_frame"):
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

        all_pixel_scores.append(resize_probabilities(pixel_scores, (24, 32)))
        all_pixel_labels.append(video.pixel_masks(np.arange(video.num_frames)))
    out = tmp_path / "scores_only"
    metrics = run_evaluation(
        benchmark=benchmark,
        protocol=benchmark.protocol("standard"),
        output_dir=out,
        predictions_dir=predictions,
    )
    scores, labels = np.concatenate(all_scores), np.concatenate(all_labels)
    assert metrics["frame_auc_micro"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert metrics["frame_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    pooled = roc_auc_score(
        np.concatenate([m.reshape(-1) for m in all_pixel_labels]),
        np.concatenate([s.reshape(-1) for s in all_pixel_scores]),
    )
    assert metrics["pixel_auc"] == pytest.approx(pooled, abs=1e-4)
    reference = PixelAUC()
    for s, m in zip(all_pixel_scores, all_pixel_labels, strict=True):
        reference.update(s, m)
    assert metrics["pixel_auc"] == pytest.approx(reference.compute(), abs=1e-12)


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
        return run_evaluation(
            benchmark=benchmark,
            protocol=benchmark.protocol("standard"),
            output_dir=tmp_path / "out",
            predictions_dir=predictions,
            **options,
        )

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
        run_evaluation(
            benchmark=benchmark,
            protocol=benchmark.protocol("standard"),
            output_dir=tmp_path / "o",
            predictions_dir=predictions,
        )
    (predictions / "b.npy").unlink()
    np.save(predictions / "a.npy", np.zeros(13, np.float32))
    with pytest.raises(FileNotFoundError, match="'b'"):
        run_evaluation(
            benchmark=benchmark,
            protocol=benchmark.protocol("standard"),
            output_dir=tmp_path / "o2",
            predictions_dir=predictions,
        )


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
