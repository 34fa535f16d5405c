"""lavida-detect as a user runs it on their own videos: windowing against a slow reference, frame alignment
of scores, masks and intervals, output folder names, and the settings and categories it is given."""

import json
import logging
import os
import re
import socket
from pathlib import Path

import matplotlib.axes
import numpy as np
import pytest
import torch
from detect.cli_config import cli_config as detect_config
from PIL import Image

from lavida import Detector
from lavida.cli.detect import run
from lavida.data.video import VideoReadError, write_video
from lavida.detect.frame_writers import upsample_mask_logits_from_probabilities
from lavida.detect.intervals import anomalous_intervals
from lavida.detect.outputs import read_masks, write_summary
from lavida.detect.stream import output_names, stream_name
from lavida.detect.window import SlidingWindow
from lavida.models import checkpoint as checkpoint_module


@pytest.fixture(scope="module")
def checkpoint(detect_checkpoint):
    return detect_checkpoint


def cli_config(inputs, categories, checkpoint, output_dir, **values):
    """lavida-detect's config without overlays (these tests read scores, masks and intervals)."""
    return detect_config(inputs, categories, checkpoint, output_dir, **{"overlay": False, **values})


def random_frames(n, h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# -- the sliding window against a slow, obvious re-implementation ------------------------------------------


def _clip_prediction(values, clip_number):
    """What the fake predictor gives the frames ``values`` in clip ``clip_number`` (distinct per clip)."""
    return (np.asarray(values, dtype=np.float64) * 7 + 13 * clip_number) % 17 / 17


def _reference(length, clip_length, interval, stride, aggregation):
    """The documented rule, spelt out: clips of sampled positions 0, stride, 2·stride, ... while full; if
    any sampled frame is then uncovered, the next clip of the grid, padded with its last frame; each
    sampled frame aggregates the predictions of the clips that cover it (padding copies excluded); every
    raw frame holds the sampled frame at or before it."""
    sampled = list(range(0, length, interval))
    starts = list(range(0, len(sampled) - clip_length + 1, stride))
    covered = {p for start in starts for p in range(start, start + clip_length)}
    clips = [(start, clip_length) for start in starts]
    if any(p not in covered for p in range(len(sampled))):
        tail = starts[-1] + stride if starts else 0
        clips.append((tail, len(sampled) - tail))
    predictions = {p: [] for p in range(len(sampled))}
    inputs = []
    for number, (start, valid) in enumerate(clips):
        frames = [sampled[p] for p in range(start, start + valid)]
        frames += [frames[-1]] * (clip_length - valid)
        inputs.append(frames)
        for offset, value in enumerate(_clip_prediction(frames, number)[:valid]):
            predictions[start + offset].append(value)
    combine = np.mean if aggregation == "mean" else np.max
    return inputs, [float(combine(predictions[r // interval])) for r in range(length)]


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_window_matches_a_slow_reference(aggregation):
    """Every length from one frame to past several clips (multiples of the clip length or not), every
    stride and several intervals: the same clips, in order, and the same per-frame scores and masks."""
    for length in [*range(1, 30), 64, 65]:
        for clip_length in (1, 2, 3, 4, 8):
            for interval in (1, 2, 3, 5):
                for stride in range(1, clip_length + 1):
                    seen = []

                    def predict(clip, seen=seen):
                        values = clip[:, 0, 0, 0].astype(int)
                        seen.append(values.tolist())
                        scores = _clip_prediction(values, len(seen) - 1)
                        return scores, np.repeat(scores[:, None, None], 2, axis=1).repeat(3, axis=2)

                    window = SlidingWindow(
                        predict,
                        clip_length=clip_length,
                        interval=interval,
                        stride=stride,
                        aggregation=aggregation,
                    )
                    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(length)]
                    results = list(window.run(frames))
                    clips, expected = _reference(length, clip_length, interval, stride, aggregation)
                    case = (length, clip_length, interval, stride)
                    assert seen == clips, case
                    assert [r.index for r in results] == list(range(length)), case
                    assert [r.score for r in results] == pytest.approx(expected), case
                    for result in results:  # masks aggregate exactly as scores do
                        assert result.mask.shape == (2, 3)
                        np.testing.assert_allclose(result.mask, result.score, rtol=1e-6, err_msg=str(case))


# -- offline and streaming agree; frame alignment ----------------------------------------------------------


def test_stream_agrees_with_detect_frame_by_frame(detector, tmp_path, monkeypatch):
    """Detector.stream and Detector.detect score the same frames alike, with overlapping clips, sampling
    and a last partial window; the written masks are stream()'s masks stretched back to the frame."""

    monkeypatch.setattr(detector, "stride", 3)
    monkeypatch.setattr(detector, "interval", 2)
    video = write_video(tmp_path / "v.mp4", random_frames(19), fps=10)
    streamed = list(detector.stream(video, ["red square"]))
    result = detector.detect(
        video, ["red square"], output_dir=tmp_path / "out", overlay=False, progress=False
    )
    assert [r.index for r in streamed] == list(range(19))
    np.testing.assert_allclose([r.score for r in streamed], result.scores, rtol=0, atol=1e-12)
    masks = read_masks(result.output_dir / "masks.jsonl")
    assert sorted(masks) == list(range(19))
    for frame in streamed:
        expected = upsample_mask_logits_from_probabilities(frame.mask, (48, 64)) >= detector.threshold
        np.testing.assert_array_equal(masks[frame.index], expected)


def test_mask_borders_come_from_the_decoders_own_logits(detector):
    """The written mask is SAM2's: the decoder's logits stretched bilinearly, then thresholded. Strong
    logits (+25 inside, −50 outside) must come back whole from the probabilities the stream carries; a
    clip at 1e-6 capped them at ±13.8 (and one at 1e-16 at ±36.8) and moved the borders."""

    rng = np.random.default_rng(0)
    logits = np.full((16, 16), -50.0) + rng.normal(0, 2, (16, 16))  # a confident background
    logits[4:12, 5:11] = 25.0 + rng.normal(0, 2, (8, 6))
    # The reference: SAM2's order on the logits themselves, in float64 (no probabilities in between).
    stretched = torch.nn.functional.interpolate(
        torch.from_numpy(logits)[None, None], size=(128, 96), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    probabilities = torch.sigmoid(torch.from_numpy(logits)).numpy()  # float64, as predict_clip returns
    for threshold in (0.5, 0.9, 0.1):
        expected = stretched >= np.log(threshold / (1 - threshold))
        got = upsample_mask_logits_from_probabilities(probabilities, (128, 96)) >= threshold
        assert 1000 < expected.sum() < expected.size - 1000  # a border to move
        np.testing.assert_array_equal(got, expected, err_msg=f"threshold {threshold}")
    # predict_clip's probabilities are float64: a float32 sigmoid is exactly 1.0 above ~16.6.
    _, masks = detector.predict_clip(random_frames(2), ["red square"])
    assert masks.dtype == np.float64


def test_masks_are_stretched_back_to_the_frame_bilinearly(detector, tmp_path, monkeypatch):
    """SAM2 sees each frame stretched to a square; its mask is stretched back to H×W (not cropped, not
    letterboxed), bilinearly on the logits: a top-left quadrant stays the top-left quadrant."""
    low = np.full((8, 8), 0.1, np.float32)
    low[:4, :4] = 0.9

    def predict_clip(frames, categories):
        return np.full(len(frames), 0.9), np.repeat(low[None], len(frames), axis=0)

    monkeypatch.setattr(detector, "predict_clip", predict_clip)
    video = write_video(tmp_path / "wide.mp4", random_frames(3, h=48, w=96), fps=10)
    result = detector.detect(video, ["x"], output_dir=tmp_path / "out", overlay=False, progress=False)
    quadrant = np.zeros((48, 96), bool)
    quadrant[:24, :48] = True
    for mask in read_masks(result.output_dir / "masks.jsonl").values():
        assert mask.shape == (48, 96) and not (mask & ~quadrant).any()
        # Its edges land exactly at half height and half width (bilinear only rounds its inner corner).
        assert (mask[:16] == quadrant[:16]).all() and (mask[:, :36] == quadrant[:, :36]).all()


@pytest.mark.parametrize("length", [1, 5, 8, 13])
def test_short_and_partial_videos_score_every_frame_and_time_their_intervals(detector, tmp_path, length):
    """One frame, fewer frames than a clip, exactly a clip, and a clip and a part: every frame is scored
    once, and an interval that reaches the last frame ends at (last + 1) / fps seconds."""
    detector_threshold = detector.threshold
    detector.threshold = 0.0  # every frame anomalous: one interval over the whole video
    try:
        video = write_video(tmp_path / f"v{length}.mp4", random_frames(length), fps=4)
        result = detector.detect(video, ["x"], output_dir=tmp_path / "out", overlay=False, progress=False)
    finally:
        detector.threshold = detector_threshold
    assert result.scores.shape == (length,)
    summary = json.loads((result.output_dir / "summary.json").read_text())
    (interval,) = summary["intervals"]
    assert (interval["start"], interval["end"]) == (0, length - 1)
    assert interval["start_time"] == 0 and interval["end_time"] == pytest.approx(length / 4)
    lines = (result.output_dir / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["time_s"] for line in lines] == pytest.approx([i / 4 for i in range(length)])


# -- defects ------------------------------------------------------------------------------------------------


def test_dot_names_never_make_the_output_folder_itself_or_its_parent(detector, tmp_path, monkeypatch):
    """A file ``..mp4`` has the stem ``.``, and the folder ``..`` the name ``..``: <output_dir>/<name> was
    then output_dir itself (replaced whole: every other result in it deleted) or its parent (refused by
    the system only after the whole video was scored)."""

    monkeypatch.setattr(detector, "predict_clip", lambda frames, c: (np.full(len(frames), 0.9), None))
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier").mkdir()
    (out / "earlier" / "summary.json").write_text("{}")
    video = write_video(tmp_path / "..mp4", random_frames(3), fps=3)
    result = detector.detect(video, ["x"], output_dir=out, overlay=False, progress=False)
    assert result.output_dir.parent == out and (result.output_dir / "summary.json").is_file()
    assert (out / "earlier" / "summary.json").is_file()  # the earlier result survives

    frames = tmp_path / "cam" / "sub"
    frames.mkdir(parents=True)
    for t in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * t, np.uint8)).save(tmp_path / "cam" / f"{t}.png")
    monkeypatch.chdir(frames)
    assert stream_name("..") == "cam" and stream_name(f"{frames}/..") == "cam"
    assert output_names(["..", str(video)]) == ["cam", result.name]
    result = detector.detect("..", ["x"], output_dir=out, overlay=False, progress=False)
    assert result.output_dir == out / "cam" and result.scores.shape == (3,)
    for name in ("..", ".", "a/b", ""):
        with pytest.raises(ValueError, match="name must be"):
            detector.detect(video, ["x"], output_dir=out, name=name, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["cam", "earlier", "video"]


def test_outputs_never_replace_their_input(detector, checkpoint, tmp_path, monkeypatch):
    """Each video's output folder is replaced whole when it is done. With output_dir the input folder, a
    frame folder's outputs went to the frame folder itself and its frames were deleted; a video kept in a
    folder of its own name lost that folder. Both are refused before the model loads or anything is
    written, and the inputs stay as they were."""

    inputs = tmp_path / "inp"
    (inputs / "cam1").mkdir(parents=True)
    for t in range(3):
        Image.fromarray(random_frames(1, seed=t)[0]).save(inputs / "cam1" / f"{t}.png")
    video = write_video(tmp_path / "data" / "street" / "street.mp4", random_frames(3), fps=3)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    monkeypatch.setattr(Detector, "from_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=r"output_dir=.* is the input folder"):
        run(cli_config(inputs, "fire", checkpoint, inputs))
    with pytest.raises(ValueError, match=r"which is the input itself"):
        run(cli_config(inputs / "cam1", "fire", checkpoint, inputs))
    with pytest.raises(ValueError, match=r"which holds the input itself"):
        run(cli_config(video, "fire", checkpoint, tmp_path / "data"))
    with pytest.raises(ValueError, match=r"which is the input itself"):
        detector.detect(inputs / "cam1", ["fire"], output_dir=inputs, overlay=False, progress=False)
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before


def test_max_frames_is_checked_before_anything_runs(detector, checkpoint, tmp_path, monkeypatch):
    """max_frames=0 or -5 made every video "no frames" (skipped, then "No input could be processed"), and
    1.5 a TypeError: it is refused up front, naming the setting."""

    video = write_video(tmp_path / "a.mp4", random_frames(4), fps=4)
    for bad in (0, -5):
        with pytest.raises(ValueError, match=r"max_frames must be a whole number of frames ≥ 1 or null"):
            detector.detect(video, ["x"], max_frames=bad, progress=False)
        with pytest.raises(ValueError, match=r"max_frames must be"):
            next(detector.stream(video, ["x"], max_frames=bad))
    monkeypatch.setattr(Detector, "from_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match=rf"max_frames must be a whole number .*got {bad!r}"):
            run(cli_config(video, "fire", checkpoint, tmp_path / "out", max_frames=bad))
    assert not (tmp_path / "out").exists()


def test_duplicate_categories_are_searched_once(detector, checkpoint, tmp_path, caplog, monkeypatch):
    """A category named twice (or in another case) was encoded twice, weighing it double in the
    projector's cross-attention and the prompt, and changed the scores; it is now dropped with a warning."""

    video = write_video(tmp_path / "a.mp4", random_frames(8), fps=8)
    once = detector.detect(video, ["fire", "red square"], progress=False)
    with caplog.at_level(logging.WARNING, logger="lavida.detect.checks"):
        twice = detector.detect(video, ["fire", "red square", "Fire", " fire "], progress=False)
    assert twice.categories == ["fire", "red square"]
    np.testing.assert_array_equal(twice.scores, once.scores)
    assert "'Fire'" in caplog.text and "named more than once" in caplog.text
    streamed = [r.score for r in detector.stream(video, ["fire", "red square", "fire"])]
    np.testing.assert_array_equal(streamed, once.scores)

    index = run(cli_config(video, "fire, red square, FIRE", checkpoint, tmp_path / "out"))
    assert index["categories"] == ["fire", "red square"]
    summary = json.loads((tmp_path / "out" / "a" / "summary.json").read_text())
    assert summary["categories"] == ["fire", "red square"]
    calls = []
    monkeypatch.setattr(type(detector), "detect", lambda *a, **k: calls.append(1))
    run(cli_config(video, "fire, red square", checkpoint, tmp_path / "out"))
    assert calls == []  # the same search: reused


def test_score_plot_shades_exactly_the_interval_frames(tmp_path, monkeypatch):
    """Scores are drawn at x = frame; an interval's shading spanned [start, end + 1], taking in the next,
    non-anomalous frame's point. It spans [start − ½, end + ½]: the interval's points and no other."""

    spans = []
    original = matplotlib.axes.Axes.axvspan
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "axvspan",
        lambda self, lo, hi, **k: spans.append((lo, hi)) or original(self, lo, hi, **k),
    )
    scores = np.array([0.1, 0.9, 0.9, 0.1, 0.1, 0.8, 0.2])
    intervals = anomalous_intervals(scores, threshold=0.5)
    write_summary(
        tmp_path,
        video="v",
        scores=scores,
        intervals=intervals,
        categories=["x"],
        fps=None,
        settings={"threshold": 0.5},
    )
    assert spans == [(0.5, 2.5), (4.5, 5.5)]
    for lo, hi in spans:
        inside = [frame for frame in range(scores.size) if lo < frame < hi]
        assert all(scores[inside] >= 0.5)


def test_detector_refuses_bad_window_settings_when_built(detector):
    """Detector(clip_length=None) failed only at the first clip with a TypeError, and a stride over the
    clip length only once a video was opened; both are refused by the constructor, naming the setting."""

    for settings, named in (
        ({"clip_length": None}, "clip_length"),
        ({"clip_length": 4, "stride": 5}, "stride"),
        ({"interval": 0}, "interval"),
        ({"aggregation": "median"}, "aggregation"),
    ):
        with pytest.raises(ValueError, match=rf"^{named} "):
            Detector(model=detector.model, processor=detector.processor, **settings)
    # A Detector needs a number: its refusal of 0 does not offer null, which it would refuse next.
    with pytest.raises(ValueError, match=r"^clip_length must be a whole number of frames ≥ 1, got 0\.$"):
        Detector(model=detector.model, processor=detector.processor, clip_length=0)


def test_a_frame_folders_rate_is_a_float_whatever_type_it_was_given_as(detector, tmp_path):
    """Detection.fps is declared a float: a frame folder's rate given as a numpy float (or an int) is
    stored as one, so that json.dumps(dataclasses.asdict(...)) of the scalar fields works."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(random_frames(3)):
        Image.fromarray(frame).save(folder / f"{t}.png")
    for given in (np.float32(10), 10):
        result = detector.detect(folder, ["x"], fps=given, progress=False)
        assert type(result.fps) is float and result.fps == 10.0
        json.dumps(result.fps)


def test_read_masks_on_another_file_names_it_and_what_it_reads(detector, tmp_path):
    video = write_video(tmp_path / "a.mp4", random_frames(3), fps=3)
    result = detector.detect(video, ["x"], output_dir=tmp_path / "out", overlay=False, progress=False)
    assert len(read_masks(result.output_dir / "masks.jsonl")) == 3
    for other in ("scores.jsonl", "scores.png"):  # a text file and a binary one of the same folder
        with pytest.raises(ValueError, match=rf"{other}, line 1: not a mask record .*reads the masks.jsonl"):
            read_masks(result.output_dir / other)
    cut = tmp_path / "masks.jsonl"  # a partial copy: the last line cut short
    cut.write_bytes((result.output_dir / "masks.jsonl").read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"masks.jsonl, line 3: an incomplete last line \(a partial copy"):
        read_masks(cut)


def test_summary_records_the_settings_its_intervals_depend_on(detector, tmp_path, monkeypatch):
    """summary.json lists its intervals; min_interval and merge_gap decide them, so it records them."""
    monkeypatch.setattr(detector, "min_interval", 2)
    monkeypatch.setattr(detector, "merge_gap", 3)
    video = write_video(tmp_path / "a.mp4", random_frames(4), fps=4)
    result = detector.detect(video, ["x"], output_dir=tmp_path / "out", overlay=False, progress=False)
    settings = json.loads((result.output_dir / "summary.json").read_text())["settings"]
    assert settings["min_interval"] == 2 and settings["merge_gap"] == 3


def test_names_are_plain_folder_names(tmp_path):

    assert stream_name(tmp_path / "..mp4") == "video"
    assert stream_name(tmp_path / "...avi") == "video"
    assert stream_name("http://./") == "stream"
    assert stream_name(os.sep) == "video"
    assert stream_name(tmp_path / "street.mp4") == "street"


# -- checked and found right ---------------------------------------------------------------------------------


def test_a_run_killed_midway_resumes_without_serving_partial_files(checkpoint, tmp_path, monkeypatch):
    """Killed while video b is half written: a is kept and reused, b is redone from scratch; the staging
    folder a killed process left (its PID no longer runs) is removed and never listed."""

    inputs = tmp_path / "videos"
    inputs.mkdir()
    write_video(inputs / "a.mp4", random_frames(8), fps=8)
    write_video(inputs / "b.mp4", random_frames(12, seed=1), fps=8)
    out = tmp_path / "out"
    original = Detector.predict_clip
    seen = []

    def killed_in_b(self, frames, categories):
        seen.append(1)
        if len(seen) == 2:  # b's first clip: its first 8 frames are being written
            raise KeyboardInterrupt
        return original(self, frames, categories)

    monkeypatch.setattr(Detector, "predict_clip", killed_in_b)
    with pytest.raises(KeyboardInterrupt):
        run(cli_config(inputs, "fire", checkpoint, out))
    assert sorted(p.name for p in out.iterdir()) == ["a", "index.json"]
    assert [Path(e["input"]).name for e in json.loads((out / "index.json").read_text())["videos"]] == [
        "a.mp4"
    ]
    # What a SIGKILL leaves: a staging folder of a process that no longer runs, with partial files.
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()) or "host"  # as lavida.atomic names it
    stale = out / f".b.{host}.999999999.dead.tmp"
    stale.mkdir()
    (stale / "scores.jsonl").write_text('{"frame": 0}\n')
    monkeypatch.setattr(Detector, "predict_clip", original)
    computed = []
    detect = Detector.detect
    monkeypatch.setattr(
        Detector, "detect", lambda self, s, *a, **k: computed.append(Path(s).name) or detect(self, s, *a, **k)
    )
    index = run(cli_config(inputs, "fire", checkpoint, out))
    assert computed == ["b.mp4"] and [e["frames"] for e in index["videos"]] == [8, 12]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "index.json"]
    assert len((out / "b" / "scores.jsonl").read_text().splitlines()) == 12


def test_bad_inputs_name_the_file(detector, tmp_path):

    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoReadError, match=f"{missing}: no such file"):
        detector.detect(missing, ["fire"], progress=False)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoReadError, match=f"{text}: unreadable video.*supported codec"):
        detector.detect(text, ["fire"], progress=False)
    with pytest.raises(ValueError, match="category list is empty"):
        detector.detect(write_video(tmp_path / "a.mp4", random_frames(2)), ["", "  "], progress=False)
    with pytest.raises(TypeError, match="not one string"):
        detector.detect(tmp_path / "a.mp4", "fire", progress=False)


def test_summary_md_does_not_give_the_last_frame_the_end_time(tmp_path):
    """Frames 10..19 at 10 fps: frame 19 is shown at 1.90 s and the interval ends at 2.00 s (end_time);
    summary.md wrote "19 (2.00s)", as if that were frame 19's time."""

    scores = np.r_[np.zeros(10), np.ones(10), np.zeros(5)]
    intervals = anomalous_intervals(scores, threshold=0.5)
    summary = write_summary(
        tmp_path,
        video="v",
        scores=scores,
        intervals=intervals,
        categories=["x"],
        fps=10.0,
        settings={"threshold": 0.5},
    )
    assert summary["intervals"][0]["end_time"] == pytest.approx(2.0)
    assert "| 0 | 10 (1.00s) | 19 (ends at 2.00s) |" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_detector_passes_its_window_settings_through(detector, tmp_path, monkeypatch, aggregation):
    """Detector.detect, with overlapping clips, sampling and a last partial window, gives each frame what
    the slow reference gives it (frames read losslessly from a frame folder)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(23):
        Image.fromarray(np.full((16, 16, 3), t, np.uint8)).save(folder / f"{t:03d}.png")
    seen = []

    def predict_clip(frames, categories):
        seen.append(frames[:, 0, 0, 0].astype(int).tolist())
        return _clip_prediction(frames[:, 0, 0, 0], len(seen) - 1), None

    monkeypatch.setattr(detector, "predict_clip", predict_clip)
    for name, value in (("clip_length", 4), ("stride", 3), ("interval", 2), ("aggregation", aggregation)):
        monkeypatch.setattr(detector, name, value)
    result = detector.detect(folder, ["x"], progress=False)
    clips, expected = _reference(23, 4, 2, 3, aggregation)
    assert seen == clips
    np.testing.assert_allclose(result.scores, expected)


def test_from_checkpoint_refuses_a_bad_window_before_loading_and_offers_null(detect_checkpoint, monkeypatch):
    """from_checkpoint takes clip_length=None (the checkpoint's): its refusal of 0 says so, before minutes
    of loading the paper's model."""

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the window settings were checked")

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", no_load)
    with pytest.raises(
        ValueError, match=r"^clip_length must be a whole number of frames ≥ 1 or null, got 0\."
    ):
        Detector.from_checkpoint(detect_checkpoint, device="cpu", clip_length=0)
