"""Inputs of lavida-detect: which videos a path names, and the output folder each one gets."""

import logging
import re
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import grey_ramp, grey_ramp_indices, write_grey_ramp
from PIL import Image

from lavida.data.video import DecordVideo, PyAVVideo, VideoReadError, open_video, write_video
from lavida.detect import stream as stream_module
from lavida.detect.stream import expand_inputs, is_live, open_stream, output_names, stream_name


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


def _vfr_video(path, pts_ms, rate, codec="mpeg4"):
    """An mkv whose frames are shown at ``pts_ms`` (milliseconds), stating the frame rate ``rate``
    (decord reads it only with ``codec="libx264"``: it refuses mpeg4 streams)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
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


def _codec_read_by(reader, monkeypatch):
    """The codec whose mkv files ``reader`` opens: decord reads H.264 but refuses mpeg4, which PyAV then
    reads; for "pyav" decord is made to refuse every file."""
    if reader == "pyav":
        _fail_decord(monkeypatch)
        return "mpeg4"
    return "libx264"


@pytest.mark.parametrize(("reader", "kind"), [("decord", DecordVideo), ("pyav", PyAVVideo)])
def test_a_variable_frame_rate_is_warned_about(tmp_path, monkeypatch, caplog, reader, kind):
    """Times are frame / average fps: on a variable-rate file they are wrong, so the user is told."""
    codec = _codec_read_by(reader, monkeypatch)
    steady = _vfr_video(
        tmp_path / "steady.mkv", np.arange(30) * 100, rate=10, codec=codec
    )  # 10 fps throughout
    assert isinstance(open_video(steady), kind)
    # 25 fps for 0.6 s, a 1.4 s gap, then 5 fps: frame 29 is shown at 4.8 s, not at 29 / 25 = 1.16 s.
    jumpy = _vfr_video(
        tmp_path / "jumpy.mkv", np.r_[np.arange(15) * 40, 2000 + np.arange(15) * 200], rate=25, codec=codec
    )
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


# -- the rules, on small inputs -------------------------------------------------------------------------------
# The tests below pin which sources are live, the names they get, which frames a limit keeps, and the exact
# refusals and warnings; a stand-in for PyAV's av.open plays a live source that would need a network or a
# camera.


# -- live sources and names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "live"),
    [
        ("rtsp://cam/live", True),
        ("HTTPS://host/a.m3u8", True),  # the scheme's case does not matter
        ("udp://0.0.0.0:5000", True),
        ("/dev/video0", True),
        ("device:2", True),
        ("clip.mp4", False),
        ("ftp://host/clip.mp4", False),  # not a scheme PyAV streams here: a (missing) path
        ("videos/dev/video0", False),
        ("my device:0", False),
    ],
)
def test_live_sources_are_stream_urls_and_capture_devices(source, live):
    assert is_live(source) is live


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("rtsp://cam/live", "cam_live"),  # the scheme dropped, '/' made '_'
        ("http://host:8080/a/b.mp4", "host_8080_a_b.mp4"),
        ("device:0", "device_0"),  # no '://': the whole text
        ("/dev/video1", "dev_video1"),  # leading '_' stripped
        ("rtsp://./", "stream"),  # dots alone: the fallback for a stream
        ("http://h/p?u=rtsp://c", "h_p_u_rtsp_c"),  # only the first '://' ends the scheme
    ],
)
def test_live_sources_are_named_by_their_address(source, name):
    assert stream_name(source) == name


def test_files_are_named_by_their_stem_and_folders_by_their_name(tmp_path):
    """A file 'x' without a suffix keeps its name; '.mp4' alone is a hidden file's name, not a suffix."""
    (tmp_path / "x").write_bytes(b"")
    assert stream_name(tmp_path / "x") == "x"
    assert stream_name(tmp_path / ".mp4") == ".mp4"
    _frame_folder(tmp_path / "cam.v2")
    assert stream_name(tmp_path / "cam.v2") == "cam.v2"


def test_output_names_give_clashing_files_their_suffix_and_number_the_rest(tmp_path):
    """a.mp4 / A.avi clash ignoring case: both keep their suffix. Two URLs of one name, or one file
    given twice, have no suffix to keep: the later ones are numbered _2, _3 in input order."""
    a_mp4, a_avi = write_grey_ramp(tmp_path / "a.mp4", 1), write_grey_ramp(tmp_path / "A.avi", 1)
    b = write_grey_ramp(tmp_path / "b.mp4", 1)
    assert output_names([a_mp4, a_avi, b]) == ["a_mp4", "A_avi", "b"]
    assert output_names([b, b, b]) == ["b_mp4", "b_mp4_2", "b_mp4_3"]
    assert output_names(["rtsp://h/x", "rtsp://h/x", "http://h/x"]) == ["h_x", "h_x_2", "h_x_3"]
    assert output_names([str(a_mp4)]) == ["a"]
    assert output_names([]) == []


# -- opening files and frame folders -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 32])
def test_a_video_file_yields_every_frame_in_order_whatever_the_batch(tmp_path, batch):
    video = write_grey_ramp(tmp_path / "v.mp4", 5, fps=10)
    stream = open_stream(video, batch=batch)
    assert (stream.name, stream.fps, stream.num_frames) == ("v", 10.0, 5)
    assert grey_ramp_indices(stream.frames) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("max_frames", "expected"), [(3, [0, 1, 2]), (5, [0, 1, 2, 3, 4]), (9, [0, 1, 2, 3, 4])]
)
def test_max_frames_keeps_the_first_frames_of_a_file(tmp_path, max_frames, expected):
    stream = open_stream(write_grey_ramp(tmp_path / "v.mp4", 5), batch=2, max_frames=max_frames)
    assert stream.num_frames == len(expected)
    assert grey_ramp_indices(stream.frames) == expected


def test_a_frame_folder_takes_the_rate_it_is_given_as_a_float(tmp_path):
    folder = tmp_path / "frames"
    _frame_folder(folder)
    stream = open_stream(folder, fps=np.int64(4), max_frames=2)
    assert (stream.name, stream.fps, type(stream.fps), stream.num_frames) == ("frames", 4.0, float, 2)
    assert [int(frame.mean()) for frame in stream.frames] == [0, 40]
    assert open_stream(folder).fps is None


@pytest.mark.parametrize(("max_frames", "expected"), [(None, [0, 1, 2, 3]), (1, [0]), (3, [0, 1, 2])])
def test_files_read_by_pyav_keep_the_first_max_frames(tmp_path, monkeypatch, max_frames, expected):
    """An mp4 states its 4 frames: the stream's length is that count, cut to max_frames."""
    video = write_grey_ramp(tmp_path / "v.mp4", 4, fps=8)
    _fail_decord(monkeypatch)
    stream = open_stream(video, max_frames=max_frames)
    assert (stream.name, stream.fps, stream.num_frames) == ("v", 8.0, len(expected))
    assert grey_ramp_indices(stream.frames) == expected


def test_a_steady_file_read_by_pyav_is_not_warned_about(tmp_path, monkeypatch, caplog):
    """Frames exactly 1 / fps apart: no warning, whichever decoder reads the file."""
    video = write_grey_ramp(tmp_path / "v.mkv", 12, fps=6)
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert len(list(open_stream(video).frames)) == 12
        _fail_decord(monkeypatch)
        assert len(list(open_stream(video).frames)) == 12
    assert caplog.records == []


# -- live sources, with a stand-in for av.open ------------------------------------------------------------------------


class _Refused(Exception):
    pass


@pytest.fixture
def av_open_calls(monkeypatch):
    """Each call of av.open as (args, kwargs); the call then fails as a missing camera or host would."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise _Refused("no such stream")

    monkeypatch.setattr(av, "open", refuse)
    return calls


@pytest.mark.parametrize(
    ("source", "args", "kwargs"),
    [
        ("device:3", ("/dev/video3",), {"format": "v4l2"}),
        ("device:0:1", ("/dev/video0:1",), {"format": "v4l2"}),  # everything after the first ':'
        ("/dev/video1", ("/dev/video1",), {"format": "v4l2"}),
        ("rtsp://cam/live", ("rtsp://cam/live",), {"options": {"rtsp_transport": "tcp"}, "timeout": 10.0}),
        ("RTSPS://cam/live", ("RTSPS://cam/live",), {"options": {"rtsp_transport": "tcp"}, "timeout": 10.0}),
        ("http://host/a.mp4", ("http://host/a.mp4",), {"options": {}, "timeout": 10.0}),
    ],
)
def test_live_sources_are_opened_by_pyav_as_their_kind_needs(av_open_calls, source, args, kwargs):
    """A device through video4linux; RTSP over TCP (UDP drops packets behind firewalls); network
    streams time out after 10 s instead of hanging."""
    with pytest.raises(
        VideoReadError, match=f"^{re.escape(f'{source}: cannot open the stream (no such stream).')}$"
    ):
        open_stream(source)
    assert av_open_calls == [(args, kwargs)]


class _FakeFrame:
    """Frame ``value``, shown at ``value`` seconds: far from value / 5 fps, a variable rate for a file."""

    def __init__(self, value):
        self.value, self.time = value, float(value)

    def to_ndarray(self, format):
        return np.full((2, 2, 3), self.value, np.uint8)


class _FakeContainer:
    """A stream of frames 0, 1, 2, ... at 5 fps, ``frames`` of them (never ending with None), or one
    without a video track."""

    def __init__(self, video=True, frames=None):
        stream = type("Stream", (), {"average_rate": 5, "frames": 0})()
        self.streams = type("Streams", (), {"video": [stream] if video else []})
        self.frames, self.closed = frames, False

    def decode(self, stream):
        value = 0
        while self.frames is None or value < self.frames:
            yield _FakeFrame(value)
            value += 1

    def close(self):
        self.closed = True


def test_a_live_stream_runs_until_max_frames_and_closes(monkeypatch, caplog):
    """A live stream's frame times are not checked against its rate (only files' are: the times in
    lavida-detect's outputs assume a constant rate, which a live source does not promise)."""
    containers = []
    monkeypatch.setattr(av, "open", lambda *a, **k: containers.append(_FakeContainer()) or containers[-1])
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        stream = open_stream("rtsp://cam/live", max_frames=3)
        assert (stream.name, stream.fps, stream.num_frames) == ("cam_live", 5.0, None)
        assert [int(frame[0, 0, 0]) for frame in stream.frames] == [0, 1, 2]
    assert containers[0].closed and caplog.records == []


class _CountingContainer(_FakeContainer):
    """A _FakeContainer that counts the frames its decoder produced."""

    def __init__(self):
        super().__init__()
        self.decoded = 0

    def decode(self, stream):
        for frame in super().decode(stream):
            self.decoded += 1
            yield frame


def test_a_live_stream_stops_at_max_frames_without_decoding_another(monkeypatch):
    """The max_frames-th frame ends the stream: a further frame, which a live source may send only after a
    while (up to the 10 s timeout) or never, is not waited for."""
    container = _CountingContainer()
    monkeypatch.setattr(av, "open", lambda *a, **k: container)
    assert len(list(open_stream("rtsp://cam/live", max_frames=3).frames)) == 3
    assert container.decoded == 3 and container.closed


def test_a_live_stream_without_video_is_refused_and_closed(monkeypatch):
    container = _FakeContainer(video=False)
    monkeypatch.setattr(av, "open", lambda *a, **k: container)
    with pytest.raises(VideoReadError, match=r"^device:0: the stream has no video track\.$"):
        open_stream("device:0")
    assert container.closed


# -- folders of inputs ---------------------------------------------------------------------------------------------


def test_expand_inputs_of_a_file_a_url_and_a_missing_path(tmp_path):
    video = write_grey_ramp(tmp_path / "v.mp4", 1)
    assert expand_inputs(video) == [str(video)]
    assert expand_inputs("rtsp://cam/live") == ["rtsp://cam/live"]
    missing = tmp_path / "missing"
    with pytest.raises(
        VideoReadError, match=f"^{re.escape(f'{missing}: no such file, folder, URL or device.')}$"
    ):
        expand_inputs(missing)


def test_a_folder_lists_videos_and_frame_folders_in_name_order_skipping_hidden_ones(tmp_path):
    """Hidden entries (.cache/, .x.mp4) are skipped; a subfolder without images (notes/) is no video."""
    write_grey_ramp(tmp_path / "b.mp4", 1)
    write_grey_ramp(tmp_path / ".x.mp4", 1)
    _frame_folder(tmp_path / "a")
    _frame_folder(tmp_path / ".cache")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    (tmp_path / "hidden_frames").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "hidden_frames" / ".0.jpg")
    assert expand_inputs(tmp_path) == [str(tmp_path / "a"), str(tmp_path / "b.mp4")]


def test_subfolders_without_frames_are_named_in_a_warning(tmp_path, caplog):
    """A folder of videos with videos one level down: those are not searched, and the warning says so
    instead of leaving them out unseen."""
    write_grey_ramp(tmp_path / "x.mp4", 1)
    write_grey_ramp(tmp_path / "more" / "y.mp4", 1)
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert expand_inputs(tmp_path) == [str(tmp_path / "x.mp4")]
    assert caplog.messages == [
        f"{tmp_path}: ignoring 1 subfolder(s) that hold no frames: more (subfolders are not searched for "
        "videos; give such a folder as input of its own)."
    ]


def test_a_folder_with_nothing_to_read_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    expected = f"{tmp_path}: the folder holds no video files, frames or frame folders."
    with pytest.raises(VideoReadError, match=f"^{re.escape(expected)}$"):
        expand_inputs(tmp_path)


def test_warnings_name_at_most_five_files_then_count_the_rest(tmp_path, caplog):
    """Seven unknown files: the first five by name, then 'and 2 more'; five of them: all five named."""
    write_grey_ramp(tmp_path / "v.mp4", 1)
    for k in range(7):
        (tmp_path / f"n{k}.txt").write_text("x")
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert expand_inputs(tmp_path) == [str(tmp_path / "v.mp4")]
    suffixes = ", ".join(stream_module.VIDEO_SUFFIXES)
    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path}: ignoring 7 file(s) that are neither videos nor images: n0.txt, n1.txt, n2.txt, n3.txt, "
        f"n4.txt and 2 more (video files end in {suffixes})."
    ]
    caplog.clear()
    for k in (5, 6):
        (tmp_path / f"n{k}.txt").unlink()
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        expand_inputs(tmp_path)
    assert (
        caplog.records[0]
        .getMessage()
        .endswith(
            f"neither videos nor images: n0.txt, n1.txt, n2.txt, n3.txt, n4.txt (video files end in {suffixes})."
        )
    )


def test_images_beside_videos_are_counted_in_the_warning(tmp_path, caplog):
    write_grey_ramp(tmp_path / "v.mp4", 1)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "poster.png")
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert expand_inputs(tmp_path) == [str(tmp_path / "v.mp4")]
    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path}: ignoring 1 image file(s) beside its 1 video file(s); to process frames, put them in a "
        "subfolder of their own."
    ]


def test_a_file_pyav_opens_without_video_or_frames_is_refused(tmp_path, monkeypatch):
    """Refused when opened, not midway through its outputs; the container is closed either way."""
    path = tmp_path / "v.mkv"
    path.write_bytes(b"x")
    _fail_decord(monkeypatch)
    for container, problem in (
        (_FakeContainer(video=False), "the file has no video stream"),
        (_FakeContainer(frames=0), "the video has no frames"),
    ):
        monkeypatch.setattr(av, "open", lambda *a, container=container, **k: container)
        with pytest.raises(VideoReadError, match=f"^{re.escape(f'{path}: {problem}.')}$"):
            open_stream(path)
        assert container.closed
    # max_frames=1 does not defer the check to the first frame read.
    monkeypatch.setattr(av, "open", lambda *a, **k: _FakeContainer(frames=0))
    with pytest.raises(VideoReadError, match=f"^{re.escape(f'{path}: the video has no frames.')}$"):
        open_stream(path, max_frames=1)


class _CorruptContainer(_FakeContainer):
    """Frames 0 .. ``good`` - 1, then the error FFmpeg gives for a corrupt packet."""

    def __init__(self, good):
        super().__init__()
        self.good = good

    def decode(self, stream):
        for value in range(self.good):
            yield _FakeFrame(value)
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")


def test_a_file_whose_first_frame_pyav_cannot_decode_is_refused_with_both_reasons(tmp_path, monkeypatch):
    """PyAV opens the container but cannot decode a frame: refused when opened, as a file neither decoder
    reads, with decord's reason and PyAV's, and the container closed."""
    path = tmp_path / "v.mkv"
    path.write_bytes(b"x")
    _fail_decord(monkeypatch)
    container = _CorruptContainer(good=0)
    monkeypatch.setattr(av, "open", lambda *a, **k: container)
    with pytest.raises(VideoReadError) as error:
        open_stream(path)
    assert str(error.value) == (
        f"{path}: unreadable video. decord: cannot open {path}; PyAV: [Errno 1094995529] Invalid data found "
        "when processing input. Is it a video file with a supported codec?"
    )
    assert container.closed


def test_a_file_that_fails_to_decode_midway_names_the_frames_read(tmp_path, monkeypatch):
    """The frames before the corrupt packet are streamed; the error then says how far decoding got."""
    path = tmp_path / "v.mkv"
    path.write_bytes(b"x")
    _fail_decord(monkeypatch)
    container = _CorruptContainer(good=2)
    monkeypatch.setattr(av, "open", lambda *a, **k: container)
    stream = open_stream(path)
    frames = []
    with pytest.raises(VideoReadError) as error:
        frames.extend(int(frame[0, 0, 0]) for frame in stream.frames)
    assert frames == [0, 1]
    assert str(error.value) == (
        f"{path}: decoding failed after 2 frame(s) ([Errno 1094995529] Invalid data found when processing "
        "input)."
    )
    assert container.closed


def test_a_file_whose_frame_times_decord_cannot_give_is_read_without_the_rate_check(tmp_path, monkeypatch):
    video = write_video(
        tmp_path / "v.mp4", grey_ramp(3, h=48, w=64), fps=10, codec="libx264"
    )  # decord reads it
    assert isinstance(open_video(video), DecordVideo)  # (decord refuses H.264 as small as 16 x 16)
    monkeypatch.setattr(DecordVideo, "frame_times", lambda self: None)
    assert grey_ramp_indices(open_stream(video).frames) == [0, 1, 2]


def test_files_decord_reads_are_checked_for_a_variable_rate(tmp_path, caplog):
    """H.264 in mkv at a stated 10 fps, read by decord, whose index times frames from 0. 'steady': 100 ms
    apart, no warning. 'late': frames 5.. come 150 ms late, each 1.5 frames off (0.15 s), over the
    one-frame tolerance (0.1 s) and under two: warned, naming whichever of them float rounding makes
    worst. 'drifting': 150 ms apart from frame 5 on, so the last, frame 11, is worst: shown at
    0.4 + 0.25 + 6 * 0.15 = 1.55 s, where 11 / 10 = 1.10 s."""
    first = np.arange(5) * 100
    steady = _vfr_video(tmp_path / "steady.mkv", np.arange(12) * 100, rate=10, codec="libx264")
    late = _vfr_video(tmp_path / "late.mkv", np.r_[first, 650 + np.arange(7) * 100], rate=10, codec="libx264")
    drifting = _vfr_video(
        tmp_path / "drift.mkv", np.r_[first, 650 + np.arange(7) * 150], rate=10, codec="libx264"
    )
    advice = (
        "use frame numbers, or re-encode the video at a constant rate (ffmpeg -i IN -fps_mode cfr OUT.mp4)."
    )
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert isinstance(open_video(steady), DecordVideo)
        assert len(list(open_stream(steady).frames)) == 12
        assert caplog.records == []
        assert len(list(open_stream(late).frames)) == 12
        (record,) = caplog.records
        assert re.fullmatch(
            rf"{re.escape(str(late))}: variable frame rate \(or a wrong rate in the file\): frame (\d+) is shown "
            r"at (\d\.\d\d) s, but lavida-detect's times \(time_s, start_time, end_time\) are frame / average "
            rf"fps = \1 / 10 = (\d\.\d\d) s; {re.escape(advice)}",
            record.getMessage(),
        )
        caplog.clear()
        assert len(list(open_stream(drifting).frames)) == 12
    assert [record.getMessage() for record in caplog.records] == [
        f"{drifting}: variable frame rate (or a wrong rate in the file): frame 11 is shown at 1.55 s, but "
        f"lavida-detect's times (time_s, start_time, end_time) are frame / average fps = 11 / 10 = 1.10 s; {advice}"
    ]


@pytest.mark.parametrize(
    ("offsets", "warned"),
    [
        ([0.0, 0.0, 0.0, 0.0], None),  # steady from a late start: nothing to say
        ([0.0, 0.0, 0.25, 0.25], None),  # exactly one frame off: within the tolerance
        ([0.0, 0.0, 0.5, 0.5], "frame 2 is shown at 1.00 s, but"),  # two frames off
    ],
)
def test_decord_times_that_start_late_are_measured_from_the_first_frame(
    tmp_path, monkeypatch, caplog, offsets, warned
):
    """A stated 4 fps (frame times exact in binary). Decord's index starts at 0 for the files written here;
    an index starting at 3 s must be read from its first frame, and only more than a frame off is warned
    about, naming the frame and its time after the first."""
    video = _vfr_video(tmp_path / "v.mkv", np.arange(4) * 250, rate=4, codec="libx264")
    times = 3.0 + np.arange(4) / 4 + np.asarray(offsets)
    monkeypatch.setattr(DecordVideo, "frame_times", lambda self: times.copy())
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert len(list(open_stream(video).frames)) == 4
    messages = [record.getMessage() for record in caplog.records]
    if warned is None:
        assert messages == []
    else:
        (message,) = messages
        assert message.startswith(f"{video}: variable frame rate (or a wrong rate in the file): {warned}")
        assert "frame / average fps = 2 / 4 = 0.50 s" in message


def test_pyav_frames_exactly_one_frame_off_are_not_warned_about(tmp_path, monkeypatch, caplog):
    """The tolerance is one frame, inclusive: at a stated 4 fps (times exact in binary), frame 2 shown at
    0.75 s instead of 0.50 s is within it; at 1.00 s it is not."""
    codec = _codec_read_by("pyav", monkeypatch)
    within = _vfr_video(tmp_path / "within.mkv", [0, 250, 750, 1000], rate=4, codec=codec)
    beyond = _vfr_video(tmp_path / "beyond.mkv", [0, 250, 1000, 1250], rate=4, codec=codec)
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert len(list(open_stream(within).frames)) == 4
        assert caplog.records == []
        assert len(list(open_stream(beyond).frames)) == 4
    (record,) = caplog.records
    assert "frame 2 is shown at 1.00 s" in record.getMessage()


def test_frames_a_frame_late_are_warned_about_from_a_late_start(tmp_path, monkeypatch, caplog):
    """PyAV gives the stream's own times, which may start late (decord's index times frames from 0;
    test_files_decord_reads_are_checked_for_a_variable_rate). 10 fps from 1 s on: steady is not warned
    about. In 'late', frames 5.. come 150 ms late: frame 5 at 0.65 s after the first, 1.5 frames off
    5 / 10 = 0.5 s, over the one-frame tolerance (0.1 s) and under two: PyAV names the first frame off."""
    codec = _codec_read_by("pyav", monkeypatch)
    steady = _vfr_video(tmp_path / "steady.mkv", 1000 + np.arange(12) * 100, rate=10, codec=codec)
    assert isinstance(open_video(steady), PyAVVideo)
    late = _vfr_video(
        tmp_path / "late.mkv",
        1000 + np.r_[np.arange(5) * 100, 650 + np.arange(7) * 100],
        rate=10,
        codec=codec,
    )
    with caplog.at_level(logging.WARNING, logger="lavida.detect.stream"):
        assert len(list(open_stream(steady).frames)) == 12
        assert caplog.records == []
        assert len(list(open_stream(late).frames)) == 12
    assert [record.getMessage() for record in caplog.records] == [
        f"{late}: variable frame rate (or a wrong rate in the file): frame 5 is shown at 0.65 s, but "
        "lavida-detect's times (time_s, start_time, end_time) are frame / average fps = 5 / 10 = 0.50 s; use "
        "frame numbers, or re-encode the video at a constant rate (ffmpeg -i IN -fps_mode cfr OUT.mp4)."
    ]
