"""Inputs of lavida-detect: which videos a path names, and the output folder each one gets."""

import logging

import numpy as np
from PIL import Image

from lavida.data.video import write_video
from lavida.detect.stream import expand_inputs, open_stream, output_names


def _frame_folder(folder, n=3):
    folder.mkdir(parents=True)
    for t in range(n):
        Image.fromarray(np.full((16, 16, 3), 40 * t, np.uint8)).save(folder / f"{t}.jpg")


def test_clashing_names_stay_distinct_and_frame_folders_keep_their_dots(tmp_path):
    _frame_folder(tmp_path / "cam1.part1")
    _frame_folder(tmp_path / "cam1.part2")
    for name in ("a.mp4", "a.avi", "b.mp4"):
        write_video(tmp_path / name, np.zeros((3, 16, 16, 3), np.uint8))
    inputs = expand_inputs(tmp_path)
    assert [path.rsplit("/", 1)[-1] for path in inputs] == [
        "a.avi",
        "a.mp4",
        "b.mp4",
        "cam1.part1",
        "cam1.part2",
    ]
    assert output_names(inputs) == ["a_avi", "a_mp4", "b", "cam1.part1", "cam1.part2"]
    assert open_stream(tmp_path / "cam1.part1").name == "cam1.part1"
    # Without a clash a file is named by its stem, as before.
    assert output_names([str(tmp_path / "a.mp4")]) == ["a"] and open_stream(tmp_path / "a.mp4").name == "a"
    # A folder and a file of one name: the file keeps its suffix; a name left taken gets _2.
    _frame_folder(tmp_path / "more" / "b")
    assert output_names([str(tmp_path / "b.mp4"), str(tmp_path / "more" / "b")]) == ["b_mp4", "b"]
    assert output_names(["rtsp://cam/live", "rtsp://cam/live"]) == ["cam_live", "cam_live_2"]


def test_a_folder_of_videos_ignores_images_beside_them(tmp_path, caplog):
    for name in ("cam1.mp4", "cam2.mp4"):
        write_video(tmp_path / name, np.zeros((5, 16, 16, 3), np.uint8))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "thumbnail.jpg")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "poster.png")
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        inputs = expand_inputs(tmp_path)
    assert [path.rsplit("/", 1)[-1] for path in inputs] == ["cam1.mp4", "cam2.mp4"]
    assert "ignoring 2 image file(s)" in caplog.text
    # Images alone are still one frame-folder video.
    _frame_folder(tmp_path / "frames")
    assert expand_inputs(tmp_path / "frames") == [str(tmp_path / "frames")]
