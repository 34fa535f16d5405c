"""Scores-only mode's checks on a predictions folder (lavida.eval.saved_predictions), called directly.

The runner's end-to-end scores-only tests are in test_runner.py; these pin the lists of videos a refusal
names, the warning about missing pixel maps, the [0, 1] bound and reading without unpickling.
"""

import logging
from pathlib import Path

import numpy as np
import pytest
from eval.trees import VideosMadeByTheTest

from lavida.eval.benchmark import GroundTruthError, TestVideo, plan_clips
from lavida.eval.saved_predictions import (
    check_saved_pixel_maps,
    check_saved_predictions,
    result_from_saved,
)
from lavida.eval.settings import EvalSettings


def video(name: str, frames: int = 3, *, pixel_gt: bool = False) -> TestVideo:
    """A test video of ``frames`` normal frames, with all-normal 4×4 pixel ground truth if ``pixel_gt``."""
    masks = (lambda idx: np.zeros((len(idx), 4, 4), bool)) if pixel_gt else None
    return TestVideo(name=name, path=Path(name), frame_labels=np.zeros(frames, np.uint8), pixel_masks=masks)


def read(directory, name: str, frames: int):
    """``result_from_saved`` for a frame-only video ``name`` of ``frames`` frames, every frame scored."""
    bench = VideosMadeByTheTest(directory)
    return result_from_saved(
        video(name, frames),
        plan_clips(frames, interval=1),
        directory,
        bench,
        EvalSettings(),
        bench.protocol("standard"),
        None,
    )


@pytest.mark.parametrize(("count", "tail"), [(10, []), (11, ["  and 1 more"])])
def test_missing_predictions_are_listed_up_to_ten(tmp_path, count, tail):
    """Ten videos without a file are all named, one per line; from eleven on, the first ten and a count
    of the rest (11 - 10 = 1)."""
    names = [f"v{k:02d}" for k in range(count)]
    with pytest.raises(FileNotFoundError) as error:
        check_saved_predictions([video(name) for name in names], tmp_path)
    lines = str(error.value).split("\n")
    assert (
        lines[0]
        == f"predictions={tmp_path} holds no predictions for {count} of the {count} videos evaluated:"
    )
    expected = [f"  v{k:02d}: expected v{k:02d}.npz / v{k:02d}.npy" for k in range(10)] + tail
    assert lines[1:-1] == expected


@pytest.mark.parametrize(("count", "tail"), [(10, ""), (11, " and 1 more")])
def test_videos_without_pixel_maps_are_listed_up_to_ten(tmp_path, count, tail):
    """One video with saved maps and ``count`` with pixel ground truth but no maps: the first ten are named,
    then a count of the rest (11 - 10 = 1)."""
    np.savez(tmp_path / "a.npz", frame_scores=np.zeros(3), pixel_scores=np.zeros((3, 4, 4)))
    without = [f"w{k:02d}" for k in range(count)]
    videos = [video(name, pixel_gt=True) for name in ["a", *without]]
    with pytest.raises(GroundTruthError) as error:
        check_saved_pixel_maps(videos, tmp_path, benchmark=VideosMadeByTheTest(tmp_path))
    shown = ", ".join(without[:10])
    assert "1 videos have saved pixel maps" in str(error.value)
    assert f"but {count} with pixel ground truth do not: {shown}{tail}. The pixel metrics" in str(error.value)


def test_no_pixel_map_warning_without_pixel_ground_truth(tmp_path, caplog):
    """Videos without pixel ground truth (a frame-only benchmark) need no pixel maps: nothing is logged,
    where a warning would claim the benchmark has pixel ground truth."""
    with caplog.at_level(logging.WARNING, logger="lavida.eval.saved_predictions"):
        check_saved_pixel_maps([video("a"), video("b")], tmp_path, benchmark=VideosMadeByTheTest(tmp_path))
    assert caplog.text == ""


def test_a_frame_score_just_above_one_is_refused(tmp_path):
    """1.5 is no probability (scores are in [0, 1]): refused, naming the file and the frame, as logits are."""
    np.save(tmp_path / "a.npy", np.array([0.2, 1.5, 0.4]))
    with pytest.raises(GroundTruthError, match=r"a\.npy: 1 frame score\(s\) .*\[0, 1\] \(frame 1: 1\.5\)"):
        read(tmp_path, "a", 3)


def test_an_npz_of_pickled_object_arrays_is_refused(tmp_path):
    """Prediction files are read without unpickling: an ``.npz`` whose frame scores are an object array
    (valid numbers, but stored as pickled Python objects) is refused, naming the file."""
    np.savez(tmp_path / "a.npz", frame_scores=np.array([0.2, 0.5, 0.4], dtype=object))
    with pytest.raises(GroundTruthError, match=r"a\.npz: cannot read the saved predictions \(ValueError"):
        read(tmp_path, "a", 3)


def test_an_npz_without_frame_scores_names_the_arrays_it_holds(tmp_path):
    """Another method's archive under its own array name: the error names the file, the array expected and
    the ones found, and is not rewritten as a file numpy cannot read."""
    np.savez(tmp_path / "a.npz", scores=np.array([0.2, 0.5, 0.4]))
    with pytest.raises(GroundTruthError) as error:
        read(tmp_path, "a", 3)
    assert str(error.value) == f"{tmp_path / 'a.npz'}: expected an array 'frame_scores'; found ['scores']."


def test_a_video_without_a_prediction_file_names_the_files_expected(tmp_path):
    """The runner checks the whole folder first; read on its own (a file removed meanwhile), the video's
    missing file is still named with both spellings of its name."""
    with pytest.raises(FileNotFoundError) as error:
        read(tmp_path, "clip:1", 3)
    assert str(error.value) == (
        f"No predictions for video 'clip:1': expected clip:1.npz / clip:1.npy or clip_1.npz / clip_1.npy in "
        f"{tmp_path}."
    )
