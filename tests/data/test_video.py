"""Frame sources: video files (decord / PyAV) and frame folders behave alike."""

import numpy as np
import pytest
from PIL import Image

from lavida.data.video import (
    FrameFolder,
    PyAVVideo,
    VideoReadError,
    list_frame_files,
    open_video,
    write_video,
)


def _frames(n=12, h=48, w=64):
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, :, :, 0] = 20 * i  # frame index readable from the red channel
        frames[i, 8:24, 16:40, 1] = 200
    return frames


def test_video_file_batched_random_access(tmp_path):
    frames = _frames()
    video = open_video(write_video(tmp_path / "v.mp4", frames, fps=10))
    assert (len(video), video.height, video.width) == (12, 48, 64)
    assert video.fps == pytest.approx(10)
    got = video.get_frames([7, 0, 7, 11])
    assert got.shape == (4, 48, 64, 3) and got.dtype == np.uint8
    np.testing.assert_allclose(got[:, 30, 50, 0].astype(float), [140, 0, 140, 220], atol=6)
    with pytest.raises(IndexError, match=r"\[0, 12\)"):
        video.get_frames([12])


def test_pyav_fallback_matches_decord(tmp_path):
    path = write_video(tmp_path / "v.mp4", _frames())
    a, b = open_video(path), PyAVVideo(path)
    assert len(a) == len(b)
    np.testing.assert_allclose(a.get_frames([3, 5]).astype(float), b.get_frames([3, 5]).astype(float), atol=3)


def test_frame_folder_natural_order_and_filters(tmp_path):
    frames = _frames(n=11)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")  # 0.png ... 10.png: not zero-padded
    (tmp_path / "._3.png").write_bytes(b"macOS resource fork")
    (tmp_path / ".DS_Store").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_frame_files(tmp_path)][:3] == ["0.png", "1.png", "2.png"]
    source = open_video(tmp_path)
    assert isinstance(source, FrameFolder) and len(source) == 11
    np.testing.assert_array_equal(source.get_frames([10, 2]), frames[[10, 2]])


def test_greyscale_frames_become_rgb(tmp_path):
    Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L").save(tmp_path / "000.tif")
    frames = FrameFolder(tmp_path).get_frames([0])
    assert frames.shape == (1, 8, 8, 3) and int(frames.max()) == 77


def test_unreadable_inputs(tmp_path):
    with pytest.raises(VideoReadError, match="no such file"):
        open_video(tmp_path / "missing.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        open_video(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="holds no frames"):
        open_video(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(mixed / "1.png")
    with pytest.raises(VideoReadError, match="different sizes"):
        open_video(mixed).get_frames([0, 1])
