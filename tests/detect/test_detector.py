"""lavida-detect and the Detector API on generated videos with the tiny checkpoint."""

import csv
import functools
import http.server
import json
import logging
import re
import shutil
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import moving_square, other_weights, write_broken_png
from detect.cli_config import cli_config
from PIL import Image

import lavida.cli.detect as detect_cli
import lavida.detect.detector as detector_module
from lavida.data.video import VideoReadError, open_video, write_video
from lavida.detect.explanations import ExplanationFrames
from lavida.detect.interrupt import HeldInterrupt
from lavida.detect.outputs import read_masks
from lavida.detect.stream import FrameStream


@pytest.fixture(scope="module")
def checkpoint(detect_checkpoint):
    return detect_checkpoint


def _runs(flags) -> list[tuple[int, int]]:
    """Maximal runs of True as inclusive (start, end) pairs, written out independently of the library."""
    edges = np.diff(np.r_[0, np.asarray(flags, dtype=int), 0])
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True)
    )


def test_outputs_exist_parse_and_match_frames(detector, tmp_path):
    video = write_video(tmp_path / "clip.mp4", moving_square(21), fps=10)  # 21: not a multiple of 8
    result = detector.detect(video, ["red square", "fire"], output_dir=tmp_path / "out", progress=False)
    folder = tmp_path / "out" / "clip"
    assert result.scores.shape == (21,) and result.output_dir == folder
    rows = list(csv.DictReader((folder / "scores.csv").open()))
    assert [int(r["frame"]) for r in rows] == list(range(21))
    assert np.allclose([float(r["score"]) for r in rows], result.scores, atol=1e-6)
    lines = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(21)) and lines[3]["time_s"] == pytest.approx(0.3)
    masks = read_masks(folder / "masks.jsonl")
    assert sorted(masks) == list(range(21)) and masks[0].shape == (48, 64)
    overlay = open_video(folder / "overlay.mp4")
    assert len(overlay) == 21 and overlay.width == 64
    assert _codec(folder / "overlay.mp4") == "h264"  # plays in browsers and notebooks (mpeg4 does not)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["frames"] == 21 and summary["categories"] == ["red square", "fire"]
    assert [i["start"] for i in summary["intervals"]] == [i.start for i in result.intervals]
    assert json.loads((folder / "scores.json").read_text())["scores"] == pytest.approx(
        result.scores.tolist(), abs=1e-6
    )
    for name in ("scores.png", "summary.md"):
        assert (folder / name).stat().st_size > 0
    # Intervals are exactly the maximal runs of frames at or above the threshold (min_interval 1, merge_gap 0).
    assert [(i.start, i.end) for i in result.intervals] == _runs(result.scores >= 0.5)


def test_overlapping_windows_and_intervals_on_a_frame_folder(detector, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(moving_square(19)):
        Image.fromarray(frame).save(folder / f"{t}.jpg")
    detector.stride, detector.interval = 4, 2
    try:
        result = detector.detect(folder, ["red square"], progress=False)
    finally:
        detector.stride, detector.interval = None, 1
    assert result.scores.shape == (19,)
    # Sample-and-hold with interval 2: frame 2k+1 has the score of frame 2k.
    assert np.allclose(result.scores[1::2], result.scores[0:-1:2])
    # The intervals are the maximal runs of held scores at or above the threshold.
    assert [(i.start, i.end) for i in result.intervals] == _runs(result.scores >= 0.5)


def test_save_only_anomalous_segments(detector, tmp_path):
    video = write_video(tmp_path / "v.mp4", moving_square(16), fps=8)
    detector.threshold = 0.0  # every frame anomalous: one segment
    try:
        detector.detect(video, ["red square"], output_dir=tmp_path / "out", save="anomalous", progress=False)
    finally:
        detector.threshold = 0.5
    folder = tmp_path / "out" / "v"
    assert not (folder / "overlay.mp4").exists()
    assert len(open_video(folder / "segments" / "segment_000.mp4")) == 16
    assert _codec(folder / "segments" / "segment_000.mp4") == "h264"
    # The segments are cut from the overlay: without it there would be nothing to save.
    with pytest.raises(ValueError, match="save=anomalous writes the overlay video .* set overlay=true"):
        detector.detect(video, ["red square"], output_dir=tmp_path / "o2", save="anomalous", overlay=False)
    assert not (tmp_path / "o2").exists()


def test_explanations_are_written_beside_intervals(detector, tmp_path):
    video = write_video(tmp_path / "v.mp4", moving_square(8), fps=8)
    detector.threshold = 0.0
    try:
        result = detector.detect(
            video, ["red square"], output_dir=tmp_path / "out", explain=True, progress=False
        )
    finally:
        detector.threshold = 0.5
    assert len(result.intervals) == 1 and isinstance(result.explanations[0], str)
    summary = json.loads((tmp_path / "out" / "v" / "summary.json").read_text())
    assert summary["intervals"][0]["explanation"] == result.explanations[0]
    # Deterministic: the same frames give the same answer, and the interval's answer is the one its
    # frames (all 8 here) give.
    frames = open_video(video).get_frames(np.arange(8))
    assert detector.explain(frames) == detector.explain(frames) == result.explanations[0]


def test_streaming_memory_stays_flat(detector, tmp_path):
    """Peak Python-side memory (numpy buffers) does not grow with the video's length."""
    short = write_video(tmp_path / "short.mp4", moving_square(40), fps=10)
    long = write_video(tmp_path / "long.mp4", moving_square(240), fps=10)
    peaks = []
    for path, frames in ((short, 40), (long, 240)):
        tracemalloc.start()
        count = sum(1 for _ in detector.stream(path, ["red square"]))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == frames, path
    assert peaks[1] < 1.5 * peaks[0] + 2_000_000, peaks


def test_bad_inputs(detector, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        detector.detect(broken, ["fire"], progress=False)
    with pytest.raises(ValueError, match="empty"):
        detector.detect(write_video(tmp_path / "ok.mp4", moving_square(4)), [" "], progress=False)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((18, 16, 3), np.uint8)).save(mixed / "1.png")
    with pytest.raises(VideoReadError, match="different sizes"):
        detector.detect(mixed, ["fire"], progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no frames|holds no"):
        detector.detect(tmp_path / "empty", ["fire"], progress=False)


def test_cli_folder_run_continues_past_bad_files(checkpoint, tmp_path):
    from lavida.cli.detect import run

    inputs = tmp_path / "videos"
    inputs.mkdir()
    write_video(inputs / "a_good.mp4", moving_square(9), fps=9)
    (inputs / "b_broken.mp4").write_bytes(b"not a video")
    write_video(inputs / "c_good.mp4", moving_square(5), fps=5)
    cfg = cli_config(inputs, "fire, red square", checkpoint, tmp_path / "out")
    index = run(cfg)
    status = {entry["input"].rsplit("/", 1)[-1]: entry["status"] for entry in index["videos"]}
    assert status == {"a_good.mp4": "done", "b_broken.mp4": "skipped", "c_good.mp4": "done"}
    assert json.loads((tmp_path / "out" / "index.json").read_text())["categories"] == ["fire", "red square"]
    assert (tmp_path / "out" / "c_good" / "scores.csv").is_file()


def test_cli_run_where_no_input_can_be_read_lists_why_and_exits(checkpoint, tmp_path, caplog):
    """Every input skipped is a failed run (its exit says so), yet index.json (in an output_dir made with
    its parents) and the log give the reasons."""
    inputs = tmp_path / "videos"
    inputs.mkdir()
    (inputs / "broken.mp4").write_bytes(b"not a video")
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "runs" / "out")
    with caplog.at_level(logging.INFO, logger="lavida.cli.detect"):
        with pytest.raises(SystemExit, match="No input could be processed; see .*index.json for the reasons"):
            detect_cli.run(cfg)
    [entry] = json.loads((tmp_path / "runs" / "out" / "index.json").read_text())["videos"]
    assert (Path(entry["input"]).name, entry["status"]) == ("broken.mp4", "skipped") and entry["reason"]
    assert f"Skipping {entry['input']}: {entry['reason']}" in caplog.text
    assert "Processed 0 of 1 input(s)" in caplog.text


def test_http_stream_is_read_frame_by_frame(detector, tmp_path):
    """A URL goes through PyAV's network reader (the live-stream path), not through the file reader."""
    from lavida.detect.stream import is_live, open_stream

    write_video(tmp_path / "live.mp4", moving_square(12), fps=12)
    with _Server(tmp_path) as base_url:
        url = f"{base_url}/live.mp4"
        assert is_live(url)
        stream = open_stream(url)
        assert stream.num_frames is None  # live: length unknown
        scores = [result.score for result in detector.stream(url, ["red square"], max_frames=10)]
        assert len(scores) == 10


def test_overlay_keeps_a_fractional_frame_rate(detector, tmp_path):
    """A 7.5 fps source gives a 7.5 fps overlay (not 8), so overlay frames stay at the scores' times."""
    source = write_video(tmp_path / "slow.mp4", moving_square(15), fps=7.5)
    assert open_video(source).fps == pytest.approx(7.5)  # (tests/data/test_video.py checks write_video)
    result = detector.detect(source, ["red square"], output_dir=tmp_path / "out", progress=False)
    overlay = open_video(result.output_dir / "overlay.mp4")
    assert overlay.fps == pytest.approx(7.5) and len(overlay) == 15


def _index_frames(n):
    """(n, 32, 32, 3) frames showing their own index in binary: bit b is band b (6 rows) black or white.

    Coarse enough to survive two lossy encodings (the overlay, then its segments)."""
    frames = np.zeros((n, 32, 32, 3), np.uint8)
    for t in range(n):
        for bit in range(5):
            frames[t, 6 * bit : 6 * bit + 6] = 255 * ((t >> bit) & 1)
    return frames


def _read_index(frames):
    """(n, H, W, 3) frames of :func:`_index_frames` (H may include the overlay strip) → (n,) indices."""
    bands = np.stack([frames[:, 6 * bit + 1 : 6 * bit + 5].mean(axis=(1, 2, 3)) for bit in range(5)], axis=1)
    return ((bands > 128) * (1 << np.arange(5))).sum(axis=1)


def _index_encoded_detector(detector, monkeypatch, scores):
    """Score frame t with ``scores[t]``, t read back from the frame itself (:func:`_index_frames`)."""

    def predict_clip(frames, categories):
        index = np.clip(_read_index(frames), 0, len(scores) - 1)
        return scores[index].astype(np.float32), np.full((len(frames), 8, 8), 0.1, np.float32)

    monkeypatch.setattr(detector, "predict_clip", predict_clip)


def test_segments_are_the_reported_intervals(detector, tmp_path, monkeypatch):
    """segment_k holds exactly the frames of interval k, after min_interval and merge_gap."""
    scores = np.zeros(24)
    scores[[2]] = 0.9  # one frame: dropped by min_interval=3
    scores[6:9] = scores[10:13] = 0.9  # merged across the gap at 9
    scores[16:20] = 0.9
    _index_encoded_detector(detector, monkeypatch, scores)
    monkeypatch.setattr(detector, "min_interval", 3)
    monkeypatch.setattr(detector, "merge_gap", 2)
    video = write_video(tmp_path / "vid.mp4", _index_frames(24), fps=10)
    result = detector.detect(video, ["x"], output_dir=tmp_path / "out", save="anomalous", progress=False)
    assert [(i.start, i.end) for i in result.intervals] == [(6, 12), (16, 19)]
    segments = sorted((result.output_dir / "segments").iterdir())
    assert [path.name for path in segments] == ["segment_000.mp4", "segment_001.mp4"]
    for path, interval in zip(segments, result.intervals, strict=True):
        segment = open_video(path)
        got = _read_index(segment.get_frames(np.arange(len(segment))))
        assert got.tolist() == list(range(interval.start, interval.end + 1))
    assert sorted(p.name for p in result.output_dir.iterdir() if p.name.startswith(".")) == []


def test_rerun_replaces_the_whole_output_folder(detector, tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.mp4", moving_square(8), fps=8)
    monkeypatch.setattr(detector, "threshold", 0.0)
    detector.detect(video, ["red square"], output_dir=tmp_path / "out", save="anomalous", progress=False)
    folder = tmp_path / "out" / "v"
    assert (folder / "segments" / "segment_000.mp4").is_file()
    detector.detect(video, ["red square"], output_dir=tmp_path / "out", progress=False)
    assert (folder / "overlay.mp4").is_file() and not (folder / "segments").exists()
    detector.detect(video, ["red square"], output_dir=tmp_path / "out", overlay=False, progress=False)
    assert not (folder / "overlay.mp4").exists() and (folder / "summary.json").is_file()
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    # A run that fails midway leaves the earlier folder as it was, and no staging folder.
    def broken(frames, categories):
        raise RuntimeError("killed")

    monkeypatch.setattr(detector, "predict_clip", broken)
    with pytest.raises(RuntimeError, match="killed"):
        detector.detect(video, ["red square"], output_dir=tmp_path / "out", progress=False)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["v"]


def test_cli_gives_clashing_inputs_their_own_folders(checkpoint, tmp_path):
    from lavida.cli.detect import run

    inputs = tmp_path / "videos"
    inputs.mkdir()
    write_video(inputs / "a.mp4", moving_square(3), fps=3)
    write_video(inputs / "a.avi", moving_square(5), fps=5)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    index = run(cfg)
    outputs = {entry["input"].rsplit("/", 1)[-1]: entry["output"] for entry in index["videos"]}
    assert outputs == {"a.avi": str(tmp_path / "out" / "a_avi"), "a.mp4": str(tmp_path / "out" / "a_mp4")}
    for name, frames in (("a_avi", 5), ("a_mp4", 3)):
        assert json.loads((tmp_path / "out" / name / "summary.json").read_text())["frames"] == frames


def test_clip_length_defaults_to_the_checkpoints(checkpoint, tmp_path):
    """A model trained on 4-frame clips (supplement Tab. 7) detects with 4-frame clips unless told."""
    import shutil

    from lavida import Detector

    four = shutil.copytree(checkpoint, tmp_path / "four")
    meta = json.loads((four / "meta.json").read_text())
    (four / "meta.json").write_text(json.dumps({**meta, "clip_length": 4}))
    assert Detector.from_checkpoint(four, device="cpu").clip_length == 4
    assert Detector.from_checkpoint(four, device="cpu", clip_length=8).clip_length == 8
    assert Detector.from_checkpoint(checkpoint, device="cpu").clip_length == 8  # no record: B.3's 8


def test_cli_rerun_reuses_finished_videos_and_redoes_changed_ones(checkpoint, tmp_path, monkeypatch):
    """A killed or extended folder run does not redo finished videos; a changed input, setting or
    resume=false does."""
    import os

    from lavida.cli.detect import run

    inputs = _one_video_folder(tmp_path, frames=4)
    write_video(inputs / "b.mp4", moving_square(6), fps=6)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    computed = _recording_detect(monkeypatch)

    first = run(cfg)
    assert computed == ["a.mp4", "b.mp4"]
    (tmp_path / "out" / "b" / "run.json").unlink()  # as if killed before b's folder was complete
    computed.clear()
    second = run(cfg)
    assert computed == ["b.mp4"] and second == first  # a reused, with the same index entry

    computed.clear()
    write_video(inputs / "a.mp4", moving_square(5), fps=5)  # the input changed
    os.utime(inputs / "a.mp4", ns=(1, 1))
    assert [e["frames"] for e in run(cfg)["videos"]] == [5, 6] and computed == ["a.mp4"]
    computed.clear()
    cfg.threshold = 0.7  # another setting
    run(cfg)
    assert computed == ["a.mp4", "b.mp4"]
    computed.clear()
    cfg.resume = False
    run(cfg)
    assert computed == ["a.mp4", "b.mp4"]


def _recording_detect(monkeypatch):
    """Record the name of every input that Detector.detect computes (instead of reusing)."""
    from lavida.detect.detector import Detector

    computed = []
    original = Detector.detect
    monkeypatch.setattr(
        Detector,
        "detect",
        lambda self, source, *a, **k: computed.append(Path(source).name) or original(self, source, *a, **k),
    )
    return computed


def _one_video_folder(tmp_path, *, frames: int):
    """``tmp_path/videos`` holding ``a.mp4``: a moving square of ``frames`` frames at ``frames`` fps."""
    inputs = tmp_path / "videos"
    inputs.mkdir()
    write_video(inputs / "a.mp4", moving_square(frames), fps=frames)
    return inputs


def test_cli_rerun_redoes_videos_made_with_other_checkpoint_overrides(checkpoint, tmp_path, monkeypatch):
    """checkpoint_overrides change the model (here its test-time pixel budget), so its outputs too."""
    from lavida.cli.detect import run

    inputs = _one_video_folder(tmp_path, frames=8)
    computed = _recording_detect(monkeypatch)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    run(cfg)
    assert computed == ["a.mp4"]
    cfg.checkpoint_overrides = {"inputs": {"test_video_budget": [3136, 6272]}}
    computed.clear()
    run(cfg)
    assert computed == ["a.mp4"]
    computed.clear()
    run(cfg)  # the same overrides again: reused
    assert computed == []


def test_cli_rerun_reusing_every_video_lists_only_its_own_inputs(checkpoint, tmp_path, monkeypatch):
    """index.json lists this run's inputs even when every one is reused: a video taken out of the folder
    since the last run is no longer listed."""
    inputs = _one_video_folder(tmp_path, frames=2)
    write_video(inputs / "b.mp4", moving_square(2), fps=2)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    detect_cli.run(cfg)
    (inputs / "b.mp4").unlink()
    computed = _recording_detect(monkeypatch)
    index = detect_cli.run(cfg)
    assert computed == []  # a was reused
    written = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [Path(entry["input"]).name for entry in written["videos"]] == ["a.mp4"]
    assert written == index


@pytest.mark.parametrize(
    ("settings", "key", "expected"),
    [
        ({"dtype": "bfloat16"}, "dtype", "torch.bfloat16"),
        ({"dtype": "float32", "checkpoint_overrides": {"dtype": "bfloat16"}}, "dtype", "torch.bfloat16"),
        ({"clip_length": 4}, "clip_length", 4),
    ],
)
def test_cli_loads_the_model_as_asked_and_records_it(checkpoint, tmp_path, settings, key, expected):
    """dtype (checkpoint_overrides.dtype wins over it) and clip_length reach the loaded model, and run.json
    (what a rerun compares, before any load) records the same values."""
    video = write_video(tmp_path / "a.mp4", moving_square(4), fps=4)
    detect_cli.run(cli_config(video, "fire", checkpoint, tmp_path / "out", overlay=False, **settings))
    assert json.loads((tmp_path / "out" / "a" / "run.json").read_text())[key] == expected


def test_cli_detects_each_video_with_the_settings_given(checkpoint, tmp_path):
    """Every scoring and output setting of detect.yaml reaches the detector (summary.json records the
    scoring ones as it used them), none left at the Detector's defaults."""
    video = write_video(tmp_path / "a.mp4", moving_square(4), fps=4)
    scoring = {
        "threshold": 0.3,
        "interval": 2,
        "stride": 4,
        "aggregation": "max",
        "min_interval": 2,
        "merge_gap": 1,
    }
    detect_cli.run(
        cli_config(video, "fire", checkpoint, tmp_path / "out", overlay=False, max_frames=3, **scoring)
    )
    folder = tmp_path / "out" / "a"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settings"] == {**scoring, "clip_length": 8} and summary["frames"] == 3
    assert not (folder / "overlay.mp4").exists()


def test_cli_cuts_the_anomalous_segments_when_asked(checkpoint, tmp_path):
    video = write_video(tmp_path / "a.mp4", moving_square(2), fps=2)
    detect_cli.run(cli_config(video, "fire", checkpoint, tmp_path / "out", save="anomalous", threshold=0.0))
    segments = tmp_path / "out" / "a" / "segments"
    assert [path.name for path in segments.iterdir()] == ["segment_000.mp4"]  # every frame is over 0.0


def test_cli_resolves_interpolations_in_checkpoint_overrides(checkpoint, tmp_path, monkeypatch):
    """``+checkpoint_overrides.dtype='${oc.env:DTYPE}'``: the model and run.json get the value, so a rerun
    after the variable changed does not reuse outputs made otherwise."""
    video = write_video(tmp_path / "a.mp4", moving_square(2), fps=2)
    cfg = cli_config(video, "fire", checkpoint, tmp_path / "out", overlay=False)
    cfg.checkpoint_overrides = {"dtype": "${oc.env:LAVIDA_TEST_DTYPE}"}
    monkeypatch.setenv("LAVIDA_TEST_DTYPE", "bfloat16")
    detect_cli.run(cfg)
    made = json.loads((tmp_path / "out" / "a" / "run.json").read_text())
    assert (made["checkpoint_overrides"], made["dtype"]) == ({"dtype": "bfloat16"}, "torch.bfloat16")


def test_cli_never_reuses_a_live_stream(checkpoint, tmp_path, monkeypatch):
    """A live stream changes with every read: a rerun redoes it although its folder was finished."""
    write_video(tmp_path / "live.mp4", moving_square(3), fps=3)
    computed = _recording_detect(monkeypatch)
    with _Server(tmp_path) as base_url:
        cfg = cli_config(
            f"{base_url}/live.mp4", "fire", checkpoint, tmp_path / "out", overlay=False, max_frames=2
        )
        detect_cli.run(cfg)
        detect_cli.run(cfg)
    assert computed == ["live.mp4", "live.mp4"]
    [marker] = (tmp_path / "out").glob("*/run.json")
    assert json.loads(marker.read_text())["input"] is None


def test_cli_redoes_videos_when_overridden_base_weights_changed_under_the_same_path(
    checkpoint, tiny_pretrained, tmp_path, monkeypatch
):
    """The run key fingerprints the base weights that checkpoint_overrides point to (those loaded), not the
    checkpoint's own: other weights written at the overridden path are not served the old outputs."""
    inputs = _one_video_folder(tmp_path, frames=2)
    clip = tmp_path / "clip" / "open_clip_model.safetensors"
    clip.parent.mkdir()
    shutil.copy(tiny_pretrained.text_encoder.pretrained, clip)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False, base_model_check="warn")
    cfg.checkpoint_overrides = {"text_encoder": {"pretrained": str(clip)}}
    computed = _recording_detect(monkeypatch)
    detect_cli.run(cfg)
    clip.unlink()
    other_weights(tiny_pretrained.text_encoder.pretrained, clip)
    detect_cli.run(cfg)
    assert computed == ["a.mp4", "a.mp4"]


def test_cli_refuses_other_base_weights_unless_base_model_check_is_warn(
    checkpoint, tiny_pretrained, tmp_path
):
    from conftest import other_weights

    from lavida.cli.detect import run
    from lavida.models.base_fingerprint import BaseModelMismatchError

    inputs = _one_video_folder(tmp_path, frames=4)
    other = other_weights(tiny_pretrained.text_encoder.pretrained, tmp_path / "clip.safetensors")
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    cfg.checkpoint_overrides = {"text_encoder": {"pretrained": str(other)}}
    with pytest.raises(BaseModelMismatchError, match=f"text_encoder at {other}"):
        run(cfg)
    assert not (tmp_path / "out" / "a").exists()
    cfg.base_model_check = "warn"
    run(cfg)
    assert (tmp_path / "out" / "a" / "scores.csv").is_file()


def test_cli_says_why_it_redoes_a_finished_video(checkpoint, tmp_path, monkeypatch, caplog):
    from lavida.cli.detect import run

    inputs = _one_video_folder(tmp_path, frames=4)
    computed = _recording_detect(monkeypatch)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    run(cfg)
    folder = tmp_path / "out" / "a"
    cfg.threshold = 0.3

    def lose_the_input_path():
        made = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**made, "input": {**made["input"], "path": None}}))

    reasons = {
        "its outputs were made otherwise (settings.threshold was 0.5, now 0.3)": lambda: None,
        f"{folder / 'run.json'} is unreadable or not a record of settings": lambda: (
            folder / "run.json"
        ).write_text("[1]"),
        # A damaged record whose input path is not text: compared as it is (only text is made absolute).
        f"its outputs were made otherwise (input.path was None, now {str(inputs / 'a.mp4')!r})": (
            lose_the_input_path
        ),
        "its summary.json is missing or unreadable": lambda: (folder / "summary.json").unlink(),
    }
    for reason, damage in reasons.items():
        damage()
        computed.clear()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lavida.cli.detect"):
            run(cfg)
        assert computed == ["a.mp4"] and f"Redoing {inputs / 'a.mp4'}: {reason}" in caplog.text, reason


def test_cli_says_it_reuses_a_finished_video_and_gives_no_reason_to_redo_it(
    checkpoint, tmp_path, monkeypatch, caplog
):
    inputs = _one_video_folder(tmp_path, frames=2)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    detect_cli.run(cfg)
    computed = _recording_detect(monkeypatch)
    with caplog.at_level(logging.INFO, logger="lavida.cli.detect"):
        detect_cli.run(cfg)
    assert computed == []
    assert f"Reusing {inputs / 'a.mp4'}: its outputs were made with the same checkpoint" in caplog.text
    assert "Redoing" not in caplog.text


def test_cli_reuses_a_video_whose_run_json_holds_the_input_path_as_typed(checkpoint, tmp_path, monkeypatch):
    """A run.json written before input paths were made absolute holds the path as typed (``videos/a.mp4``):
    a rerun takes it from its own current folder, so it reuses the video from the folder it was typed in,
    and redoes it from another one (where ``videos/a.mp4`` is another file)."""
    inputs = _one_video_folder(tmp_path, frames=2)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    detect_cli.run(cfg)
    marker = tmp_path / "out" / "a" / "run.json"
    made = json.loads(marker.read_text())
    assert made["input"]["path"] == str(inputs / "a.mp4")
    marker.write_text(json.dumps({**made, "input": {**made["input"], "path": "videos/a.mp4"}}))
    computed = _recording_detect(monkeypatch)
    monkeypatch.chdir(tmp_path)
    detect_cli.run(cfg)
    assert computed == []
    monkeypatch.chdir(inputs)
    detect_cli.run(cfg)
    assert computed == ["a.mp4"]


def test_cli_folder_run_skips_a_frame_folder_with_a_corrupt_frame(checkpoint, tmp_path):
    from lavida.cli.detect import run

    inputs = tmp_path / "videos"
    inputs.mkdir()
    write_video(inputs / "a_good.mp4", moving_square(5), fps=5)
    frames = inputs / "b_frames"
    frames.mkdir()
    for t, frame in enumerate(moving_square(4)):
        Image.fromarray(frame).save(frames / f"{t}.png")
    write_broken_png(frames / "2.png", shape=(48, 64, 3))
    write_video(inputs / "c_good.mp4", moving_square(5), fps=5)
    index = run(cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False))
    status = {entry["input"].rsplit("/", 1)[-1]: entry for entry in index["videos"]}
    assert [entry["status"] for entry in status.values()] == ["done", "skipped", "done"]
    assert f"{frames / '2.png'}: cannot read the image" in status["b_frames"]["reason"]
    assert (tmp_path / "out" / "c_good" / "summary.json").is_file()


def test_cli_index_entry_is_the_same_fresh_and_reused_with_explanations(checkpoint, tmp_path, monkeypatch):
    from lavida.cli.detect import run

    inputs = _one_video_folder(tmp_path, frames=8)
    computed = _recording_detect(monkeypatch)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False, explain=True, threshold=0.0)
    first = run(cfg)
    second = run(cfg)
    assert computed == ["a.mp4"]  # the second run reused it
    intervals = first["videos"][0]["intervals"]
    assert len(intervals) == 1 and isinstance(intervals[0]["explanation"], str)
    assert second == first
    summary = json.loads((tmp_path / "out" / "a" / "summary.json").read_text())
    assert summary["intervals"] == intervals


def test_a_frame_folders_rate_gives_times_and_the_overlays_rate(checkpoint, tmp_path, monkeypatch):
    """Frame folders store no frame rate: lavida-detect's fps gives it (times, overlay); bad ones are refused."""
    from lavida import Detector
    from lavida.cli.detect import run

    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(moving_square(10)):
        Image.fromarray(frame).save(folder / f"{t:03d}.png")
    index = run(cli_config(folder, "fire", checkpoint, tmp_path / "out", fps=5))
    out = tmp_path / "out" / "frames"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fps"] == 5 and index["videos"][0]["intervals"]  # the tiny model flags frames
    for interval in summary["intervals"]:
        assert interval["start_time"] == pytest.approx(interval["start"] / 5)
        assert interval["end_time"] == pytest.approx((interval["end"] + 1) / 5)
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert lines[3]["time_s"] == pytest.approx(0.6)
    assert open_video(out / "overlay.mp4").fps == pytest.approx(5)  # not the 25 used without a rate

    computed = _recording_detect(monkeypatch)
    run(cli_config(folder, "fire", checkpoint, tmp_path / "out", fps=5))
    assert computed == []  # the same rate: reused
    run(cli_config(folder, "fire", checkpoint, tmp_path / "out", fps=10))
    assert computed == ["frames"]  # another rate changes the times: redone
    assert open_video(out / "overlay.mp4").fps == pytest.approx(10)

    # A video file keeps its own rate, so fps does not change its outputs; and a run.json written before
    # fps was a setting (none recorded) matches fps=null.
    video = write_video(tmp_path / "clip.mp4", moving_square(6), fps=6)
    run(cli_config(video, "fire", checkpoint, tmp_path / "files"))
    marker = tmp_path / "files" / "clip" / "run.json"
    made = json.loads(marker.read_text())
    del made["settings"]["fps"]
    marker.write_text(json.dumps(made))
    computed.clear()
    run(cli_config(video, "fire", checkpoint, tmp_path / "files"))
    run(cli_config(video, "fire", checkpoint, tmp_path / "files", fps=12))
    assert computed == []

    monkeypatch.setattr(Detector, "from_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    for bad in (0, -25, float("nan"), float("inf"), "25", True):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            run(cli_config(folder, "fire", checkpoint, tmp_path / "bad", fps=bad))


def test_threshold_outside_0_1_is_refused(detector, checkpoint, tmp_path, monkeypatch):
    from lavida import Detector
    from lavida.cli.detect import run
    from lavida.detect.outputs import overlay_frame

    for bad in (1.5, -0.1, float("nan"), "0.5", True):  # a string or bool would fail only at the first frame
        with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]"):
            Detector(model=detector.model, processor=detector.processor, threshold=bad)
    for setting, bad in (("merge_gap", -1), ("min_interval", 0), ("merge_gap", 1.5)):
        with pytest.raises(ValueError, match=rf"{setting} must be a whole number of frames"):
            Detector(model=detector.model, processor=detector.processor, **{setting: bad})
    # lavida-detect refuses it before loading the model.
    monkeypatch.setattr(Detector, "from_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    video = write_video(tmp_path / "a.mp4", moving_square(4), fps=4)
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\], got 1.5"):
        run(cli_config(video, "fire", checkpoint, tmp_path / "out", threshold=1.5))
    # The overlay's threshold line stays inside its strip whatever it is given.
    for threshold, row in ((3.0, 0), (1.5, 0), (-0.5, 23)):
        strip = overlay_frame(np.zeros((48, 64, 3), np.uint8), None, [0.2], threshold)[48:]
        assert np.where((strip == (200, 60, 60)).all(axis=2).any(axis=1))[0].tolist() == [row]


def test_frames_the_model_cannot_take_are_reported_with_the_source(detector, tmp_path):
    """Qwen2-VL refuses frames with an aspect ratio over 200; the error must say which video."""
    folder = tmp_path / "needle"
    folder.mkdir()
    for t in range(3):
        Image.fromarray(np.full((1000, 4, 3), 100, np.uint8)).save(folder / f"{t}.png")
    expected = (
        re.escape(f"{folder}: cannot score its 1000x4 (HxW) frames (")
        + ".*"  # the processor's own message
        + re.escape("); crop or pad them to an aspect ratio of at most 200.")
        + "$"
    )
    with pytest.raises(ValueError, match=expected):
        detector.detect(folder, ["fire"], output_dir=tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match=expected):
        list(detector.stream(folder, ["fire"]))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("size", "hint"), [((2, 450), True), ((3, 600), False)])
def test_the_crop_hint_only_for_frames_past_qwen2_vls_aspect_ratio(
    detector, tmp_path, monkeypatch, size, hint
):
    """Any refusal names the video; the crop hint is added only where the long side is more than 200 times
    the short one (2x450: 225, hinted; 3x600: exactly 200, which Qwen2-VL's smart_resize takes)."""

    def refuse(clip, categories):
        raise ValueError("refused")

    monkeypatch.setattr(detector, "predict_clip", refuse)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(folder / "0.png")
    suffix = "; crop or pad them to an aspect ratio of at most 200" if hint else ""
    message = f"{folder}: cannot score its {size[0]}x{size[1]} (HxW) frames (refused){suffix}."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        list(detector.stream(folder, ["fire"]))


class _Server:
    """Serve a folder over HTTP on a free local port (a stand-in for a network camera)."""

    def __init__(self, folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _assert_complete_folder(folder, frames):
    assert json.loads((folder / "summary.json").read_text())["frames"] == frames
    assert len((folder / "scores.jsonl").read_text().splitlines()) == frames
    assert len(list(csv.DictReader((folder / "scores.csv").open()))) == frames
    assert sorted(read_masks(folder / "masks.jsonl")) == list(range(frames))
    assert len(open_video(folder / "overlay.mp4")) == frames


def _detect_not_aborted(detector, source, output_dir):
    try:
        return detector.detect(source, ["red square"], output_dir=output_dir, progress=False)
    except KeyboardInterrupt:  # not raised on: it would stop the whole test session
        pytest.fail("Ctrl-C aborted the live run and discarded its outputs")


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for the test: a process started in the background by a shell without
    job control (as CI may start pytest) inherits SIGINT ignored, and Python then installs none."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_ends_a_live_stream_and_keeps_its_outputs(detector, tmp_path, monkeypatch, default_sigint):
    """A live stream without max_frames only ends when stopped: Ctrl-C finishes its folder normally."""
    import signal

    import lavida.detect.frame_writers as frame_writers

    write_video(tmp_path / "live.mp4", moving_square(40), fps=10)
    original = detector.predict_clip
    calls = []

    def stopped_on_third_clip(frames, categories):
        calls.append(len(frames))
        if len(calls) == 3:
            raise KeyboardInterrupt  # while scoring frames 16..23
        return original(frames, categories)

    monkeypatch.setattr(detector, "predict_clip", stopped_on_third_clip)
    out = tmp_path / "out"
    with _Server(tmp_path) as base:
        result = _detect_not_aborted(detector, f"{base}/live.mp4", out)
        assert result.scores.shape == (16,)
        _assert_complete_folder(result.output_dir, 16)
        assert [path.name for path in out.iterdir()] == [result.name]  # no staging folder left

        # Ctrl-C while a frame's files are written (SIGINT, as the terminal sends it): that frame is
        # finished first, so every file holds the same frames.
        monkeypatch.setattr(detector, "predict_clip", original)
        overlay = frame_writers.overlay_frame

        def interrupted_overlay(frame, mask, history, threshold):
            if len(history) == 12:
                signal.raise_signal(signal.SIGINT)
            return overlay(frame, mask, history, threshold)

        monkeypatch.setattr(frame_writers, "overlay_frame", interrupted_overlay)
        result = _detect_not_aborted(detector, f"{base}/live.mp4", out)
        assert result.scores.shape == (12,)
        _assert_complete_folder(result.output_dir, 12)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(frame_writers, "overlay_frame", overlay)

    # A file is not live: Ctrl-C aborts it and leaves its earlier folder as it was.
    video = tmp_path / "live.mp4"
    first = detector.detect(video, ["red square"], output_dir=out, progress=False)
    before = {path.name: path.read_bytes() for path in first.output_dir.iterdir()}
    calls.clear()
    monkeypatch.setattr(detector, "predict_clip", stopped_on_third_clip)
    with pytest.raises(KeyboardInterrupt):
        detector.detect(video, ["red square"], output_dir=out, progress=False)
    assert {path.name: path.read_bytes() for path in first.output_dir.iterdir()} == before


def test_explanations_are_keyed_by_the_reported_intervals(detector, tmp_path, monkeypatch):
    """Runs are merged across merge_gap and dropped under min_interval as the intervals are; each
    reported interval is explained from its own anomalous frames."""
    scores = np.zeros(32)
    scores[1] = 0.9  # alone: dropped by min_interval=3
    scores[[5, 6, 7, 9, 10]] = 0.9  # merged across the gap at 8: interval 0
    scores[14] = 0.9  # dropped
    scores[18:22] = 0.9  # interval 1
    scores[[25, 27]] = 0.9  # merged: interval 2 (three frames long)
    scores[31] = 0.9  # the last frame: dropped at the end of the stream
    _index_encoded_detector(detector, monkeypatch, scores)
    monkeypatch.setattr(detector, "min_interval", 3)
    monkeypatch.setattr(detector, "merge_gap", 2)
    monkeypatch.setattr(detector, "explain", lambda frames, **_: ",".join(map(str, _read_index(frames))))
    video = write_video(tmp_path / "vid.mp4", _index_frames(32), fps=10)
    result = detector.detect(video, ["x"], explain=True, progress=False)
    assert [(i.start, i.end) for i in result.intervals] == [(5, 10), (18, 21), (25, 27)]
    assert result.explanations == {0: "5,6,7,9,10", 1: "18,19,20,21", 2: "25,27"}


def test_explanation_frames_stay_bounded_on_flickering_scores(detector, monkeypatch):
    """Frames kept for explanations do not grow with the video, however often the score flickers
    (short runs that min_interval drops included)."""
    import lavida.detect.detector as module
    from lavida.detect.stream import FrameStream

    length = 3000

    def frames():
        for index in range(length):
            frame = np.zeros((64, 64, 3), np.uint8)  # 12 KB
            frame[0, 0, :2] = (index % 256, index // 256)
            yield frame

    def flicker(clip, categories):  # 3 frames above the threshold, 3 below, ...
        index = clip[:, 0, 0, 0].astype(int) + 256 * clip[:, 0, 0, 1].astype(int)
        return np.where((index // 3) % 2 == 0, 0.9, 0.1), None

    monkeypatch.setattr(module, "open_stream", lambda *a, **k: FrameStream("flicker", frames(), 25.0, length))
    monkeypatch.setattr(detector, "predict_clip", flicker)
    sizes = []
    monkeypatch.setattr(detector, "explain", lambda frames, **_: sizes.append(len(frames)) or "yes")
    # (merge_gap, min_interval) → the frames each reported interval is explained from: 500 runs of 3
    # frames; one merged run of 1,497 (thinned to 8); none (every run shorter than min_interval).
    for merge_gap, min_interval, explained in ((0, 2, [3] * 500), (3, 1, [8]), (0, 4, [])):
        monkeypatch.setattr(detector, "merge_gap", merge_gap)
        monkeypatch.setattr(detector, "min_interval", min_interval)
        sizes.clear()
        tracemalloc.start()
        result = detector.detect("flicker", ["x"], explain=True, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        count = len(explained)
        assert len(result.intervals) == count and sorted(result.explanations) == list(range(count))
        assert sizes == explained
        # Holding the 1,500 anomalous frames would take 18 MB; a bounded set takes well under 1 MB.
        assert peak < 2_000_000, (merge_gap, min_interval, peak)

    # Directly: one open run at a time, at most 2 × 8 + 1 of its frames.
    keeper = ExplanationFrames(lambda frames: "yes", merge_gap=3, min_length=1, per_run=8)
    held = []
    for index in range(length):
        keeper.add(index, np.zeros((2, 2, 3), np.uint8), anomalous=(index // 3) % 2 == 0)
        held.append(keeper.held)
    assert max(held) <= 17 and keeper.finish() == {0: "yes"}


@pytest.mark.parametrize("where", ["before the hold", "after the hold", "during the explanation"])
def test_ctrl_c_between_frames_ends_a_live_stream(detector, tmp_path, monkeypatch, where, default_sigint):
    """Ctrl-C outside a frame's held writing (just before the hold is set up, just after it is lifted, or
    while the MLLM explains an interval) ends the live stream with every written frame complete."""
    import signal

    import lavida.detect.detector as module
    from lavida.detect.stream import FrameStream

    def endless():
        while True:
            yield np.zeros((16, 16, 3), np.uint8)

    monkeypatch.setattr(module, "open_stream", lambda *a, **k: FrameStream("cam", endless(), 10.0, None))
    monkeypatch.setattr(module, "is_live", lambda source: True)
    monkeypatch.setattr(detector, "clip_length", 1)
    scored = []

    def predict(clip, categories):  # frames 0, 1 anomalous, 2 not, 3, 4 anomalous, ...
        scored.append(1)
        return np.array([0.1 if len(scored) % 3 == 0 else 0.9]), None

    monkeypatch.setattr(detector, "predict_clip", predict)
    hold = HeldInterrupt
    enter, leave = hold.__enter__, hold.__exit__
    if where == "before the hold":

        def enter_interrupted(self):
            if len(scored) == 10:
                raise KeyboardInterrupt  # frame 9 scored, its handler not yet installed
            return enter(self)

        monkeypatch.setattr(hold, "__enter__", enter_interrupted)
    elif where == "after the hold":

        def leave_interrupted(self, *exc):
            leave(self, *exc)  # the default handler is back: Ctrl-C raises again
            if len(scored) == 10:
                raise KeyboardInterrupt  # frame 9 fully written

        monkeypatch.setattr(hold, "__exit__", leave_interrupted)
    else:

        def explain(frames, **_):
            raise KeyboardInterrupt  # while the MLLM answers for frames 0..1, once frame 2 is written

        monkeypatch.setattr(detector, "explain", explain)
    try:
        result = detector.detect(
            "rtsp://camera/live",
            ["x"],
            output_dir=tmp_path / "out",
            overlay=False,
            explain=True,
            progress=False,
        )
    except KeyboardInterrupt:  # not raised on: it would stop the whole test session
        pytest.fail("Ctrl-C aborted the live run and discarded its outputs")
    frames = {"before the hold": 9, "after the hold": 10, "during the explanation": 3}[where]
    assert result.scores.shape == (frames,)
    folder = result.output_dir
    assert json.loads((folder / "summary.json").read_text())["frames"] == frames
    assert len((folder / "scores.jsonl").read_text().splitlines()) == frames
    assert sorted(read_masks(folder / "masks.jsonl")) == list(range(frames))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if where == "during the explanation":  # interval 0's answer was stopped; nothing else is misnumbered
        assert result.explanations == {}


def test_ctrl_c_before_a_live_streams_first_score_leaves_nothing_and_says_so(
    detector, tmp_path, monkeypatch, default_sigint
):
    """Stopped before its first frame was scored, a live run has nothing to write: it says so, naming the
    source, and leaves no output folder (nor a staging folder) behind."""

    def endless():
        while True:
            yield np.zeros((16, 16, 3), np.uint8)

    def stopped(clip, categories):
        raise KeyboardInterrupt

    monkeypatch.setattr(
        detector_module, "open_stream", lambda *a, **k: FrameStream("cam", endless(), 10.0, None)
    )
    monkeypatch.setattr(detector_module, "is_live", lambda source: True)
    monkeypatch.setattr(detector, "clip_length", 1)
    monkeypatch.setattr(detector, "predict_clip", stopped)
    out = tmp_path / "out"
    with pytest.raises(
        ValueError,
        match=r"^rtsp://camera/live: stopped \(Ctrl-C\) before its first frame was scored; nothing was written\.$",
    ):
        detector.detect("rtsp://camera/live", ["x"], output_dir=out, overlay=False, progress=False)
    assert not out.exists() or list(out.iterdir()) == []


def _codec(path) -> str:
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


def test_without_libx264_overlays_fall_back_to_mpeg4_with_a_warning(tmp_path, monkeypatch, caplog):
    import av

    from lavida.detect.outputs import VideoWriter

    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    writer = VideoWriter(tmp_path / "o.mp4", fps=5)
    for frame in moving_square(3):
        writer.write(frame)
    writer.close()
    assert _codec(tmp_path / "o.mp4") == "mpeg4" and len(open_video(tmp_path / "o.mp4")) == 3
    assert "no libx264 encoder" in caplog.text


def test_mpeg4_overlays_are_written_at_quantiser_2(tmp_path):
    """The MPEG-4 fallback is meant to be near-lossless: on detailed frames its error is that of a file
    written with the quantiser pinned at 2 (qmin = qmax = 2), not the ~5× larger error of the encoder's
    default bitrate, which the old {"qscale": "2"} (no mpeg4 option) silently left in place."""
    from conftest import grey_noise_frames, mean_decode_error

    from lavida.data.video import write_video
    from lavida.detect.outputs import VideoWriter

    frames = grey_noise_frames()
    writer = VideoWriter(tmp_path / "o.mp4", fps=5, codec="mpeg4")
    for frame in frames:
        writer.write(frame)
    writer.close()
    pinned = write_video(tmp_path / "q2.mp4", frames, fps=5, options={"qmin": "2", "qmax": "2"})
    default_rate = write_video(tmp_path / "rate.mp4", frames, fps=5, options={})
    error = mean_decode_error(tmp_path / "o.mp4", frames)
    assert error == pytest.approx(mean_decode_error(pinned, frames), abs=0.05)
    assert error < mean_decode_error(default_rate, frames) / 3


def test_cli_redoes_videos_when_the_base_weights_changed_under_the_same_paths(
    tiny_pretrained, tmp_path, monkeypatch, caplog
):
    """A finished video is reused only on the same base weights (their fingerprints are in its run key):
    after the CLIP file at the checkpoint's path is replaced, a rerun does not serve the old outputs; a
    misspelt base_model_check is refused before any input, although nothing would load."""
    from conftest import checkpoint_on_its_own_clip, other_weights

    from lavida.cli.detect import run
    from lavida.models.base_fingerprint import BaseModelMismatchError

    checkpoint, clip = checkpoint_on_its_own_clip(tiny_pretrained, tmp_path)
    inputs = _one_video_folder(tmp_path, frames=4)
    computed = _recording_detect(monkeypatch)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    run(cfg)
    assert computed == ["a.mp4"]
    cfg.base_model_check = "warm"
    with pytest.raises(ValueError, match="base_model_check must be 'strict' or 'warn', got 'warm'"):
        run(cfg)
    cfg.base_model_check = "strict"
    clip.unlink()
    other_weights(tiny_pretrained.text_encoder.pretrained, clip)
    computed.clear()
    with pytest.raises(BaseModelMismatchError, match=f"text_encoder at {clip}"):
        run(cfg)  # not reused: loaded, and refused
    cfg.base_model_check = "warn"
    with caplog.at_level(logging.INFO, logger="lavida.cli.detect"):
        run(cfg)
    assert computed == ["a.mp4"]  # redone on the new weights, saying why
    assert (
        f"Redoing {inputs / 'a.mp4'}: its outputs were made otherwise (base_models.text_encoder was '"
        in caplog.text
    )
