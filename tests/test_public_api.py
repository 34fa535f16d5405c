"""The public Python API as a researcher uses it: exports, the README's snippet, the documented shapes and
dtypes of every result, results that serialise, and misuse that fails with an error saying how to fix it.

Runs on the tiny random checkpoint of ``tests/conftest.py`` (``detect_checkpoint``).
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lavida.data.video import write_video

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = np.random.default_rng(0).integers(0, 256, (10, 48, 64, 3), dtype=np.uint8)
    return write_video(tmp_path_factory.mktemp("video") / "v.mp4", frames, fps=10)


def _frames(t=8, h=48, w=64):
    return np.random.default_rng(1).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# -- exports -----------------------------------------------------------------------------------------


def test_lavida_all_lists_exactly_the_public_names():
    """``lavida.__all__`` names what ``from lavida import ...`` offers, nothing private, and ``dir`` and
    ``import *`` see it, while ``import lavida`` itself stays cheap (no torch)."""
    import lavida
    import lavida.detect
    import lavida.metrics

    assert sorted(lavida.__all__) == ["Detection", "Detector"]
    for module in (lavida, lavida.detect, lavida.metrics):
        assert module.__all__ and not [name for name in module.__all__ if name.startswith("_")]
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
        assert set(module.__all__) <= set(dir(module)), module.__name__
    star = "from lavida import *; import lavida.detect as d; assert Detector is d.Detector and Detection is d.Detection"
    assert subprocess.run([sys.executable, "-c", star], env={**os.environ}).returncode == 0
    with pytest.raises(AttributeError, match="no attribute 'Detecter'"):
        lavida.Detecter  # noqa: B018
    code = "import sys, lavida; dir(lavida); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0


# -- the README ------------------------------------------------------------------------------------------


def test_readme_snippet_runs_as_written(detect_checkpoint, video, tmp_path, monkeypatch):
    """README step 5: ``from lavida import Detector; Detector.from_checkpoint(dir).detect("v.mp4", ["fire"])``
    returns frame scores and intervals, and writes files only with ``output_dir=``. The README must show
    exactly this call, which runs here as plain code."""
    snippet = 'from lavida import Detector; Detector.from_checkpoint(dir).detect("v.mp4", ["fire"])'
    assert f"`{snippet}`" in README.read_text(encoding="utf-8"), "README step 5 shows another Python snippet"
    (tmp_path / "v.mp4").write_bytes(Path(video).read_bytes())
    monkeypatch.chdir(tmp_path)
    from lavida import Detector

    result = Detector.from_checkpoint(str(detect_checkpoint)).detect("v.mp4", ["fire"])
    assert result.scores.shape == (10,) and isinstance(result.intervals, list)
    assert result.output_dir is None and sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    # The same scores as the video's detection through the module fixture's own Detector.
    expected = Detector.from_checkpoint(detect_checkpoint, device="cpu").detect(
        video, ["fire"], progress=False
    )
    np.testing.assert_array_equal(result.scores, expected.scores)


# -- documented shapes, dtypes and ranges -------------------------------------------------------------------


def test_detection_has_the_documented_types(detector, video):
    from lavida import Detection
    from lavida.detect.intervals import Interval

    result = detector.detect(video, ["fire"], progress=False)
    assert isinstance(result, Detection) and dataclasses.is_dataclass(result)
    assert result.name == "v" and result.categories == ["fire"] and result.output_dir is None
    assert isinstance(result.scores, np.ndarray) and result.scores.shape == (10,)
    assert result.scores.dtype == np.float64 and ((result.scores >= 0) & (result.scores <= 1)).all()
    assert isinstance(result.fps, float) and result.fps == 10.0
    assert result.intervals and all(isinstance(interval, Interval) for interval in result.intervals)
    for interval in result.intervals:
        assert [type(value) for value in dataclasses.astuple(interval)] == [int, int, int, float, float]
        assert 0 <= interval.start <= interval.peak_frame <= interval.end < 10
        assert interval.peak_score == result.scores[interval.peak_frame]
    assert json.loads(json.dumps([dataclasses.asdict(i) for i in result.intervals]))[0]["end"] == 9


def test_detection_to_dict_is_plain_json(detector, video, tmp_path):
    """``dataclasses.asdict`` keeps the (F,) array and the Path; ``to_dict`` gives what ``json.dumps``
    takes, with the interval records of summary.json (times from the fps)."""
    result = detector.detect(video, ["fire"], progress=False, output_dir=tmp_path)
    result.explanations[0] = "yes, a fire"
    data = json.loads(json.dumps(result.to_dict()))
    assert data["name"] == "v" and data["categories"] == ["fire"] and data["fps"] == 10.0
    assert data["scores"] == result.scores.tolist() and data["output_dir"] == str(tmp_path / "v")
    assert data["intervals"][0]["end_time"] == (result.intervals[0].end + 1) / 10
    assert data["intervals"][0]["explanation"] == "yes, a fire"
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert [{k: v for k, v in i.items() if k != "explanation"} for i in data["intervals"]] == summary[
        "intervals"
    ]


def test_predict_clip_and_stream_return_what_they_document(detector, video):
    scores, masks = detector.predict_clip(_frames(), ["fire"])
    assert scores.shape == (8,) and scores.dtype == np.float64
    assert masks.ndim == 3 and masks.shape[0] == 8 and masks.dtype == np.float64
    assert (0 <= scores).all() and (scores <= 1).all() and (0 <= masks).all() and (masks <= 1).all()
    results = list(detector.stream(video, ["fire"]))
    assert [r.index for r in results] == list(range(10))
    # Streamed scores are the whole-video detection's, frame by frame.
    detected = detector.detect(video, ["fire"], progress=False).scores
    np.testing.assert_allclose([r.score for r in results], detected, rtol=0, atol=1e-12)
    first = results[0]
    assert isinstance(first.score, float) and 0 <= first.score <= 1
    assert first.frame.shape == (48, 64, 3) and first.frame.dtype == np.uint8
    assert first.mask.shape == masks.shape[1:] and first.mask.dtype == np.float64
    assert isinstance(first.sampled_from, int)


def test_model_outputs_match_their_docstrings(detect_checkpoint):
    from conftest import make_samples, tiny_processor_for

    from lavida.models.checkpoint import load_checkpoint
    from lavida.models.config import LavidaConfig
    from lavida.models.outputs import LavidaOutput, LavidaPrediction

    model, config = load_checkpoint(detect_checkpoint)
    assert isinstance(config, LavidaConfig) and not model.training
    batch = tiny_processor_for(model)(list(make_samples()), train=False)
    n, b = batch.sam_pixel_values.shape[0], batch.input_ids.shape[0]  # 9 frames, 2 samples
    with torch.no_grad():
        output = model(batch)
    assert isinstance(output, LavidaOutput)
    m, h, w = output.mask_logits.shape[1:]
    assert output.mask_logits.shape == (n, 3, h, w) and h == w == batch.sam_pixel_values.shape[-1] // 4
    assert output.iou_pred.shape == (n, m) and output.object_logits.shape == (n,)
    assert output.seg_features.shape == (b, model.mllm.hidden_size) and output.lm_loss is None
    assert output.visual_tokens.shape == output.kept_tokens.shape == (b,)
    assert output.visual_tokens.dtype == output.kept_tokens.dtype == torch.int64
    assert (output.kept_tokens <= output.visual_tokens).all()
    prediction = LavidaPrediction.from_output(output)
    assert prediction.frame_scores.shape == (n,) and prediction.frame_scores.dtype == torch.float64
    assert prediction.mask_logits.shape == (n, h, w) and prediction.object_logits.shape == (n,)
    torch.testing.assert_close(prediction.frame_scores, torch.sigmoid(output.object_logits.double()))
    pixels = prediction.pixel_scores((40, 50))
    assert pixels.shape == (n, 40, 50) and pixels.dtype == torch.float64
    assert ((pixels >= 0) & (pixels <= 1)).all()


def test_predictor_outputs_match_their_docstrings(detector, video):
    from lavida.inference import ClipBatchPrediction, Predictor, VideoPrediction, upsample_mask_logits

    predictor = Predictor(model=detector.model, processor=detector.processor, batch_size=2)
    clips = np.arange(12).reshape(3, 4) % 10
    batches = list(predictor.iter_clips(video, clips, ["fire"]))
    assert [type(batch) for batch in batches] == [ClipBatchPrediction] * 2
    first = batches[0]
    assert first.clip_indices.tolist() == [0, 1] and first.clip_indices.dtype == np.int64
    assert first.frame_scores.shape == (2, 4) and first.frame_scores.dtype == np.float64
    h, w = first.mask_logits.shape[2:]
    assert first.mask_logits.shape == (2, 4, h, w) and first.mask_logits.dtype == np.float16
    whole = predictor.predict_video(video, clips, ["fire"])
    assert isinstance(whole, VideoPrediction)
    assert whole.frame_scores.shape == (12,) and whole.frame_scores.dtype == np.float64
    assert whole.mask_logits.shape == (12, h, w) and whole.mask_logits.dtype == np.float16
    # The values are the batches', flattened in plan order (clip c's frame t at c·4 + t).
    flat = np.concatenate([batch.frame_scores for batch in batches]).reshape(-1)
    np.testing.assert_array_equal(whole.frame_scores, flat)
    np.testing.assert_array_equal(whole.mask_logits[:8], first.mask_logits.reshape(8, h, w))
    assert predictor.predict_video(video, clips, ["fire"], keep_masks=False).mask_logits is None
    probabilities = upsample_mask_logits(whole.mask_logits, (48, 64))
    assert probabilities.shape == (12, 48, 64) and probabilities.dtype == np.float32
    assert upsample_mask_logits(whole.mask_logits, (48, 64), dtype=np.float64).dtype == np.float64


def test_metric_results_have_the_documented_types():
    from lavida import metrics

    rng = np.random.default_rng(0)
    scores = [rng.random(20), rng.random(7)]
    labels = [np.arange(20) % 3 == 0, np.zeros(7, bool)]
    for value in (metrics.frame_auc(scores, labels), metrics.frame_auc(scores, labels, average="macro")):
        assert type(value) is float and 0 <= value <= 1
    assert type(metrics.frame_ap(scores, labels, method="trapezoid")) is float
    maps, gt = rng.random((3, 8, 8)), rng.random((3, 8, 8)) > 0.5
    gt[2] = False
    pixel_auc = metrics.PixelAUC()
    pixel_auc.update(maps, gt)
    assert type(pixel_auc.compute()) is float and type(pixel_auc.error_bound()) is float
    assert type(metrics.per_frame_pixel_auc([maps], [gt])) is float
    criterion = metrics.pixel_criterion([maps], [gt])
    k = criterion.fpr.shape[0]
    assert criterion.tpr.shape == criterion.thresholds.shape == (k,) and type(criterion.auc) is float
    boxes = metrics.extract_regions(maps)
    assert boxes.ndim == 2 and boxes.shape[1] == 6 and boxes.dtype == np.float64
    ids = np.zeros((3, 6, 6), np.int64)
    ids[:, 1:3, 1:4] = 1
    tracks = metrics.tracks_from_id_maps(ids, [[1, 0, 2]])
    assert tracks.shape == (3, 6) and tracks.dtype == np.int64
    rbdc, tbdc = metrics.rbdc_tbdc({"v": tracks}, {"v": boxes}, {"v": 3})
    assert type(rbdc) is float and type(tbdc) is float
    curves = metrics.rbdc_tbdc_curves({"v": tracks}, {"v": boxes}, 3)
    assert json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(curves).items()})


# -- misuse: errors that name the argument and say how to fix it ---------------------------------------------


def test_a_string_of_categories_is_refused_not_spelt_out(detector, video):
    """``"fire"`` where ``["fire"]`` is meant was searched as the four categories 'f', 'i', 'r', 'e'."""
    from lavida.inference import Predictor

    with pytest.raises(TypeError, match=r"categories.*\['fire'\]"):
        detector.predict_clip(_frames(), "fire")
    predictor = Predictor(model=detector.model, processor=detector.processor)
    with pytest.raises(TypeError, match=r"categories.*\['fire'\]"):
        predictor.predict_video(video, np.arange(4)[None], "fire")
    with pytest.raises(TypeError, match=r"categories.*\['fire'\]"):
        detector.detect(video, "fire", progress=False)


def test_an_empty_category_list_is_named_as_such(detector, video):
    """The Predictor reported an empty category list as frames to crop to a usual aspect ratio."""
    from lavida.inference import Predictor

    predictor = Predictor(model=detector.model, processor=detector.processor)
    for call in (
        lambda: predictor.predict_video(video, np.arange(4)[None], []),
        lambda: detector.predict_clip(_frames(), []),
        lambda: detector.detect(video, [" "], progress=False),
    ):
        with pytest.raises(ValueError, match="category list is empty") as error:
            call()
        assert "aspect ratio" not in str(error.value)


@pytest.mark.parametrize(
    "frames, hint",
    [
        (_frames().astype(np.float32) / 255, r"\(frames \* 255\)\.round\(\)\.astype\(np\.uint8\)"),
        (_frames().astype(np.float64), r"frames\.round\(\)\.clip\(0, 255\)\.astype\(np\.uint8\)"),
        (_frames()[None], r"one clip.*frames\[0\]"),
        (_frames()[0], r"one frame.*frames\[None\]"),
        (_frames().transpose(0, 3, 1, 2), r"channels go last: frames\.transpose\(0, 2, 3, 1\)"),
        (_frames()[..., 0], r"\(T, H, W, 3\)"),
        (list(_frames()), r"np\.stack\(frames\)"),
        (_frames()[:0], r"at least one frame"),
    ],
    ids=["float01", "float255", "batch", "one_frame", "channels_first", "grey", "list", "empty"],
)
def test_frames_the_model_cannot_take_say_how_to_fix_them(detector, frames, hint):
    with pytest.raises((TypeError, ValueError), match=r"^frames must be a \(T, H, W, 3\) uint8") as error:
        detector.predict_clip(frames, ["fire"])
    assert re.search(hint, str(error.value)), str(error.value)
    with pytest.raises((TypeError, ValueError), match=hint):
        detector.explain(frames)


def test_torch_uint8_frames_are_taken_as_documented(detector):
    scores, _ = detector.predict_clip(torch.from_numpy(_frames()), ["fire"])
    np.testing.assert_allclose(scores, detector.predict_clip(_frames(), ["fire"])[0])


def test_a_frame_array_as_source_is_refused_with_a_hint(detector):
    """``detect(frames, ...)`` failed deep in pathlib with 'File name too long' and the array's repr."""
    for call in (
        lambda: detector.detect(_frames(), ["fire"], progress=False),
        lambda: detector.stream(_frames(), ["fire"]),
    ):
        with pytest.raises(
            TypeError, match=r"source must be a video file.*got numpy\.ndarray.*write_video"
        ) as error:
            call()
        assert len(str(error.value)) < 400


def test_stream_checks_its_arguments_when_called(detector, video, tmp_path):
    """Errors came only at the first ``next()``, far from the call that caused them."""
    with pytest.raises(TypeError, match="categories"):
        detector.stream(video, "fire")
    with pytest.raises(ValueError, match="category list is empty"):
        detector.stream(video, [])
    with pytest.raises(ValueError, match="max_frames"):
        detector.stream(video, ["fire"], max_frames=0)
    with pytest.raises(ValueError, match="fps"):
        detector.stream(video, ["fire"], fps=-1)
    assert next(detector.stream(video, ["fire"])).index == 0


def test_missing_inputs_name_the_path(detector, tmp_path):
    from lavida import Detector
    from lavida.data.video import VideoReadError
    from lavida.models.weights import WeightsNotFoundError

    with pytest.raises(VideoReadError, match=r"nope\.mp4: no such file or folder"):
        detector.detect(tmp_path / "nope.mp4", ["fire"], progress=False)
    with pytest.raises(VideoReadError, match=r"nope\.mp4: no such file or folder"):
        next(detector.stream(tmp_path / "nope.mp4", ["fire"]))
    with pytest.raises(WeightsNotFoundError, match="is not a LAVIDA checkpoint.*lavida_config.json"):
        Detector.from_checkpoint(tmp_path / "nope", device="cpu")
    with pytest.raises(TypeError, match="positional"):
        Detector(detector.model, detector.processor)


@pytest.mark.parametrize(
    "clips, hint",
    [(np.arange(8), r"got shape \(8,\).*\[None\]"), ([[0.5, 1.0]], "whole numbers"), ("0,1", "got str")],
)
def test_predictor_clips_must_be_a_2d_index_array(detector, video, clips, hint):
    from lavida.inference import Predictor

    predictor = Predictor(model=detector.model, processor=detector.processor)
    with pytest.raises(
        (TypeError, ValueError), match=r"^clips must be a \(C, T\) array of frame indices"
    ) as error:
        predictor.predict_video(video, clips, ["fire"])
    assert re.search(hint, str(error.value)), str(error.value)
    assert predictor.predict_video(video, [[0, 1, 2, 3]], ["fire"]).frame_scores.shape == (4,)


@pytest.mark.parametrize(
    "setting", [{"batch_size": 1.5}, {"batch_size": "2"}, {"num_workers": -1}, {"batch_size": True}]
)
def test_predictor_settings_are_whole_numbers(detector, setting):
    from lavida.inference import Predictor

    name = next(iter(setting))
    with pytest.raises(ValueError, match=rf"^{name} must be a whole number"):
        Predictor(model=detector.model, processor=detector.processor, **setting)
