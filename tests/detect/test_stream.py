"""Inputs of lavida-detect: which videos a path names, and the output folder each one gets."""

import logging
import re
from fractions import Fraction

import numpy as np
import pytest
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


def _frames(n=12, h=48, w=64):
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t, :, :, 0] = 6 * t  # frame index readable from the red channel
    return frames


def _fail_decord(monkeypatch):
    """decord refuses every file (as it refuses AV1): the stream must fall back to PyAV."""
    import decord

    def refuse(path, **kwargs):
        raise RuntimeError(f"cannot open {path}")

    monkeypatch.setattr(decord, "VideoReader", refuse)


def test_files_decord_cannot_open_are_streamed_sequentially(tmp_path, monkeypatch):
    """The fallback PyAVVideo decodes the whole stream into memory; a streamed file must not."""
    from lavida.data import video as video_module

    path = write_video(tmp_path / "v.mkv", _frames(40), fps=10)
    expected = video_module.PyAVVideo(path).get_frames(np.arange(40))
    _fail_decord(monkeypatch)

    def whole_stream(*args, **kwargs):
        raise AssertionError("open_stream decoded the whole video into memory (PyAVVideo)")

    monkeypatch.setattr(video_module.PyAVVideo, "__init__", whole_stream)
    stream = open_stream(path, batch=4)
    assert stream.fps == 10 and stream.name == "v"
    np.testing.assert_array_equal(np.stack(list(stream.frames)), expected)
    short = open_stream(path, max_frames=7)
    assert short.num_frames in (7, None)
    np.testing.assert_array_equal(np.stack(list(short.frames)), expected[:7])


def test_a_file_neither_decoder_reads_is_refused_when_opened(tmp_path, monkeypatch):
    from lavida.data.video import VideoReadError

    broken = tmp_path / "broken.mkv"
    broken.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 200)
    _fail_decord(monkeypatch)
    with pytest.raises(VideoReadError, match=re.escape(f"{broken}: unreadable video. decord:")):
        open_stream(broken)


def _vfr_video(path, pts_ms, rate):
    """An mkv whose frames are shown at ``pts_ms`` (milliseconds), stating the frame rate ``rate``."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(_frames(len(pts_ms))[t], format="rgb24")
            frame.pts, frame.time_base = int(pts), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("reader", ["decord", "pyav"])
def test_a_variable_frame_rate_is_warned_about(tmp_path, monkeypatch, caplog, reader):
    """Times are frame / average fps: on a variable-rate file they are wrong, so the user is told."""
    if reader == "pyav":
        _fail_decord(monkeypatch)
    steady = _vfr_video(tmp_path / "steady.mkv", np.arange(30) * 100, rate=10)  # 10 fps throughout
    # 25 fps for 0.6 s, a 1.4 s gap, then 5 fps: frame 29 is shown at 4.8 s, not at 29 / 25 = 1.16 s.
    jumpy = _vfr_video(tmp_path / "jumpy.mkv", np.r_[np.arange(15) * 40, 2000 + np.arange(15) * 200], rate=25)
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert sum(1 for _ in open_stream(steady).frames) == 30
    assert "variable frame rate" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert sum(1 for _ in open_stream(jumpy).frames) == 30
    assert f"{tmp_path / 'jumpy.mkv'}: variable frame rate" in caplog.text
    assert caplog.text.count("variable frame rate") == 1


def test_images_beside_frame_folders_are_refused(tmp_path):
    """A stray preview.jpg made the folder one 1-frame video and dropped its frame folders unseen."""
    from lavida.data.video import VideoReadError

    _frame_folder(tmp_path / "cam1")
    _frame_folder(tmp_path / "cam2")
    assert expand_inputs(tmp_path) == [str(tmp_path / "cam1"), str(tmp_path / "cam2")]
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "preview.jpg")
    with pytest.raises(VideoReadError, match=r"preview\.jpg.*cam1, cam2") as error:
        expand_inputs(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_files_of_unknown_suffixes_are_named_in_a_warning(tmp_path, caplog):
    frames = _frames(4)
    write_video(tmp_path / "a.mp4", frames)
    write_video(tmp_path / "tmp.ts", frames).rename(tmp_path / "b.m2ts")
    write_video(tmp_path / "c.ts", frames)
    write_video(tmp_path / "d.3gp", frames)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "e.ogv").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        inputs = expand_inputs(tmp_path)
    assert [path.rsplit("/", 1)[-1] for path in inputs] == ["a.mp4", "b.m2ts", "c.ts", "d.3gp"]
    assert "ignoring 2 file(s) that are neither videos nor images: e.ogv, notes.txt" in caplog.text
