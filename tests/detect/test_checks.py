"""The detector's setting checks (lavida.detect.checks), called directly at the edges of what they accept.

The detector and lavida-detect tests reach these checks with values far outside the accepted ranges; these
pin the boundaries themselves (a threshold of exactly 0 or 1, one frame, a gap of 0) and the whole message
each refusal prints, without loading a model.
"""

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lavida.detect.checks import (
    check_fps,
    check_intervals,
    check_max_frames,
    check_name,
    check_output_dir,
    check_output_options,
    check_output_place,
    check_source,
    check_threshold,
    distinct_categories,
)

_FRAMES_HINT = (
    "; to detect in frames held in memory, write them to a file first "
    "(lavida.data.video.write_video(path, frames, fps=...)), or score (T, H, W, 3) uint8 clips "
    "with Detector.predict_clip"
)


@pytest.mark.parametrize("source", ["clip.mp4", "rtsp://cam/live", "device:0", os.path.join("a", "b")])
def test_sources_named_by_a_string_or_path_are_accepted(source, tmp_path):
    """A str or any os.PathLike names a source; neither is opened here (the path need not exist)."""
    assert check_source(source) is None
    assert check_source(tmp_path / source) is None


@pytest.mark.parametrize(
    ("source", "kind", "hint"),
    [
        (np.zeros((2, 4, 4, 3), np.uint8), "numpy.ndarray", _FRAMES_HINT),
        (torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "torch.Tensor", _FRAMES_HINT),
        (0, "int", "; a capture device is named 'device:0' or '/dev/video0'"),
        (3, "int", "; a capture device is named 'device:3' or '/dev/video3'"),
        (b"clip.mp4", "bytes", ""),
    ],
)
def test_other_sources_are_refused_with_the_hint_for_their_kind(source, kind, hint):
    """Frames in memory point to write_video/predict_clip, an int to the two device spellings, and
    anything else gets the bare refusal (the message is the f-string of check_source, written out)."""
    expected = (
        f"source must be a video file, frame folder, URL or device (a str or a Path), got {kind}{hint}."
    )
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        check_source(source)


@pytest.mark.parametrize("threshold", [0, 0.0, 0.5, 1, 1.0, np.float32(0.25)])
def test_thresholds_in_the_closed_unit_interval_are_accepted(threshold):
    """Frame scores are probabilities in [0, 1], both ends included: threshold 0 flags every frame
    and 1 only frames scored exactly 1 (score >= threshold)."""
    assert check_threshold(threshold) is None


@pytest.mark.parametrize("threshold", [-1e-9, 1.0000001, float("nan"), float("inf"), "0.5", True, None])
def test_thresholds_outside_the_unit_interval_or_not_numbers_are_refused(threshold):
    expected = (
        f"threshold must be a number in [0, 1], got {threshold!r}: frame scores are probabilities; "
        "set e.g. threshold=0.5."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        check_threshold(threshold)


@pytest.mark.parametrize("fps", [None, 1e-3, 0.5, 25, 29.97, np.float64(7.5)])
def test_unknown_or_positive_finite_frame_rates_are_accepted(fps):
    """Any rate above 0 is a rate (0.5 fps: a frame every two seconds, a time-lapse)."""
    assert check_fps(fps) is None


@pytest.mark.parametrize("fps", [0, 0.0, -25, float("inf"), float("nan"), "25", True])
def test_zero_negative_infinite_or_non_numeric_frame_rates_are_refused(fps):
    expected = (
        f"fps must be a positive number of frames per second or null, got {fps!r}; it is the frame "
        "rate of frame folders, e.g. fps=25."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        check_fps(fps)


@pytest.mark.parametrize("max_frames", [None, 1, 2, np.int64(3000)])
def test_max_frames_of_one_or_more_or_none_are_accepted(max_frames):
    """One frame is the least a run can read; None reads every frame."""
    assert check_max_frames(max_frames) is None


@pytest.mark.parametrize("max_frames", [0, -1, 1.0, 1.5, "3", True])
def test_max_frames_below_one_or_not_whole_are_refused(max_frames):
    expected = (
        f"max_frames must be a whole number of frames ≥ 1 or null (every frame), got {max_frames!r}; "
        "e.g. max_frames=3000."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        check_max_frames(max_frames)


@pytest.mark.parametrize("name", ["street", "cam1.part1", ".hidden", "a..b", "..x"])
def test_plain_folder_names_are_accepted(name):
    """Dots are fine inside a name, or leading it; only a name of dots alone is . or .. (or worse)."""
    assert check_name(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "...", "a/b", "/abs", "b/", 3, None])
def test_paths_dot_names_and_non_strings_are_refused_as_names(name):
    expected = (
        f"name must be one folder name inside output_dir, without path separators and not . or .., "
        f"got {name!r}; e.g. name='street'."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        check_name(name)


def test_repeated_categories_are_dropped_in_the_order_first_named_with_one_warning(caplog):
    """'Fire', 'fire ' and 'FIRE' are the sampler's one key 'fire' (whitespace collapsed, case folded):
    kept once, as first spelled; 'smoke  cloud' and 'Smoke cloud' collapse to 'smoke cloud'. Cleaning
    strips each name, so ' fire ' is reported as 'fire'."""
    categories = ["Fire", "smoke  cloud", " fire ", "fight", "FIRE", "Smoke cloud"]
    with caplog.at_level(logging.WARNING, logger="lavida.detect.checks"):
        kept = distinct_categories(categories)
    assert kept == ["Fire", "smoke  cloud", "fight"]
    assert [record.getMessage() for record in caplog.records] == [
        "Categories named more than once are searched once: dropping 'fire', 'FIRE', 'Smoke cloud'; "
        "searching 'Fire', 'smoke  cloud', 'fight'."
    ]


def test_distinct_categories_warn_about_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="lavida.detect.checks"):
        assert distinct_categories(["fire", "smoke"]) == ["fire", "smoke"]
    assert caplog.records == []


@pytest.mark.parametrize(("min_interval", "merge_gap"), [(1, 0), (2, 0), (1, 1), (np.int32(5), np.int64(3))])
def test_intervals_of_one_frame_and_gaps_of_zero_are_accepted(min_interval, merge_gap):
    """detect.yaml's defaults are min_interval: 1 and merge_gap: 0, the least each accepts."""
    assert check_intervals(min_interval=min_interval, merge_gap=merge_gap) is None


@pytest.mark.parametrize(
    ("min_interval", "merge_gap", "expected"),
    [
        (0, 0, "min_interval must be a whole number of frames ≥ 1, got 0."),
        (1.0, 0, "min_interval must be a whole number of frames ≥ 1, got 1.0."),
        (True, 0, "min_interval must be a whole number of frames ≥ 1, got True."),
        (1, -1, "merge_gap must be a whole number of frames ≥ 0, got -1."),
        (1, 0.5, "merge_gap must be a whole number of frames ≥ 0, got 0.5."),
        (0, -1, "min_interval must be a whole number of frames ≥ 1, got 0."),  # the first named
    ],
)
def test_bad_interval_settings_are_refused_naming_the_setting(min_interval, merge_gap, expected):
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        check_intervals(min_interval=min_interval, merge_gap=merge_gap)


@pytest.mark.parametrize(("overlay", "save"), [(True, "all"), (False, "all"), (True, "anomalous")])
def test_output_options_that_can_be_written_are_accepted(overlay, save):
    assert check_output_options(overlay=overlay, save=save) is None


def test_unknown_save_modes_and_segments_without_an_overlay_are_refused():
    with pytest.raises(ValueError, match=r"^save must be 'all' or 'anomalous', got 'segments'\.$"):
        check_output_options(overlay=True, save="segments")
    expected = (
        "save=anomalous writes the overlay video of each anomalous interval (segments/segment_000.mp4, "
        "...), but overlay is off: set overlay=true, or save=all for scores and masks without videos."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        check_output_options(overlay=False, save="anomalous")


# -- output folders that would replace, hold or sit inside their input -----------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "where"),
    [
        ("inp/cam1", "inp/cam1", "is"),  # a frame folder written to itself (output_dir=inp)
        ("data/street/street.mp4", "data/street", "holds"),  # a video in a folder of its own name
        ("inp/cam1", "inp/cam1/cam1", "lies inside"),  # output_dir inside the frame folder
    ],
)
def test_an_output_folder_on_its_input_is_refused(tmp_path, monkeypatch, source, target, where):
    monkeypatch.chdir(tmp_path)
    message = (
        f"The outputs of {source} would go to {target}, which {where} the input itself; that folder is "
        "replaced whole when the video is done. Choose an output_dir away from the inputs, one that neither "
        "holds them nor lies inside them (e.g. outputs/detect)."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_output_place(source, Path(target))


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("inp/cam1", "out/cam1"),
        ("inp/cam1", "inp/cam10"),  # a sibling whose name starts alike is another folder
        ("data/street.mp4", "data/street"),  # beside the video, not its folder
        ("rtsp://camera/stream", "rtsp:/camera/stream"),  # a live source is no path
    ],
)
def test_an_output_folder_beside_or_away_from_its_input_passes(tmp_path, monkeypatch, source, target):
    monkeypatch.chdir(tmp_path)
    assert check_output_place(source, Path(target)) is None


def test_an_output_dir_in_the_input_folder_is_refused(tmp_path):
    (tmp_path / "inp").mkdir()
    (tmp_path / "inp" / "a.mp4").write_bytes(b"")
    for output_dir, which in ((tmp_path / "inp", "the"), (tmp_path / "inp" / "out", "inside the")):
        message = (
            f"output_dir={output_dir} is {which} input folder {tmp_path / 'inp'}: a later run on it would read "
            f"the output folders as videos. Choose an output_dir outside {tmp_path / 'inp'}."
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            check_output_dir(tmp_path / "inp", output_dir)
    assert check_output_dir(tmp_path / "inp", tmp_path / "inp2") is None  # a name that starts alike
    assert check_output_dir(tmp_path / "inp" / "a.mp4", tmp_path / "inp") is None  # input a file
