"""Frame sources: video files (decord / PyAV) and frame folders behave alike."""

import logging
import re
from fractions import Fraction

import av
import decord
import numpy as np
import pytest
from conftest import grey_noise_frames, mean_decode_error, write_bomb_bmp, write_broken_png
from decord._ffi.base import DECORDError
from PIL import Image

from lavida.data.video import (
    MPEG4_NEAR_LOSSLESS,
    VIDEO_SUFFIXES,
    DecordVideo,
    FrameFolder,
    PyAVVideo,
    VideoReadError,
    list_frame_files,
    open_video,
    read_image,
    unreadable_video_error,
    video_rate,
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


@pytest.mark.parametrize(
    ("names", "listed"),
    [
        (["0000.jpg", "0000.png", "0001.jpg"], "0000.jpg, 0000.png"),  # a conversion left half done
        (["0.png", "1.png", "01.png", "2.png"], "01.png, 1.png"),  # re-numbered with padding
    ],
)
def test_a_frame_saved_in_two_files_is_refused(tmp_path, names, listed):
    """Both files were kept: the video grew by a frame, and '1.png' and '01.png' (equal sort keys) came in
    the order the file system lists them."""
    for name in names:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(VideoReadError, match=rf"1 frame\(s\) exist in more than one file \({listed}\)"):
        list_frame_files(tmp_path)


def test_greyscale_frames_become_rgb(tmp_path):
    Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L").save(tmp_path / "000.tif")
    frames = FrameFolder(tmp_path).get_frames([0])
    assert frames.shape == (1, 8, 8, 3) and frames.dtype == np.uint8 and (frames == 77).all()


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


def test_corrupt_images_raise_video_read_error_naming_the_file(tmp_path):
    """Pillow's SyntaxError and DecompressionBombError are not OSErrors; unwrapped they would abort a
    whole lavida-detect folder run without naming the frame."""
    for path in (write_broken_png(tmp_path / "0007.png"), write_bomb_bmp(tmp_path / "0008.bmp")):
        with pytest.raises(VideoReadError, match=re.escape(f"{path}: cannot read the image")) as error:
            read_image(path)
        assert isinstance(error.value.__cause__, (SyntaxError, Image.DecompressionBombError))


def test_mixed_size_error_names_the_first_odd_file(tmp_path):
    for i in range(4):
        Image.fromarray(np.zeros((9 if i >= 2 else 8, 8, 3), np.uint8)).save(tmp_path / f"f{i}.png")
    with pytest.raises(VideoReadError, match=r"different sizes: f2\.png is 9x8 .*f0\.png, is 8x8"):
        open_video(tmp_path).get_frames([0, 1, 2, 3])


def test_two_files_for_one_frame_are_refused(tmp_path):
    """0000.jpg beside 0000.png would interleave and double the video."""
    for i in range(3):
        for suffix in ("jpg", "png"):
            Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)).save(tmp_path / f"{i:04d}.{suffix}")
    with pytest.raises(VideoReadError, match=r"0000\.jpg, 0000\.png; 0001\.jpg, 0001\.png") as error:
        open_video(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_big_endian_16_bit_frames_are_not_saturated(tmp_path):
    """16-bit value v becomes round(v / 257): 65535 → 255."""
    values = np.array([[0, 1000], [32896, 65535]], dtype=">u2")
    Image.frombuffer("I;16B", (2, 2), values.tobytes(), "raw", "I;16B", 0, 1).save(tmp_path / "b.tif")
    with Image.open(tmp_path / "b.tif") as image:
        assert image.mode == "I;16B"
    frame = read_image(tmp_path / "b.tif")
    assert frame.shape == (2, 2, 3)
    np.testing.assert_array_equal(frame[..., 0], [[0, 4], [128, 255]])


def test_16_bit_frames_share_one_scale(tmp_path):
    """The same 16-bit value is the same brightness in every frame, whatever each frame's maximum."""
    dim = np.full((4, 4), 1000, np.uint16)
    bright = dim.copy()
    bright[0, 0] = 60000
    Image.fromarray(dim).save(tmp_path / "0.png")
    Image.fromarray(bright).save(tmp_path / "1.png")
    frames = FrameFolder(tmp_path).get_frames([0, 1])
    assert frames[0, 2, 2, 0] == frames[1, 2, 2, 0] == 4


def test_float_frames_are_read_as_0_to_1(tmp_path):
    """Float images scale [0, 1] to 0..255; values outside are clipped."""
    values = np.array([[0.0, 0.5], [1.0, 1.5], [-0.5, 0.25]], np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    frame = read_image(tmp_path / "f.tif")
    assert frame.shape == (3, 2, 3)
    np.testing.assert_array_equal(frame[..., 0], [[0, 128], [255, 255], [0, 64]])


def test_write_video_keeps_a_fractional_frame_rate(tmp_path):
    video = open_video(write_video(tmp_path / "v.mp4", _frames(n=12), fps=7.5))
    assert video.fps == pytest.approx(7.5) and len(video) == 12
    assert video_rate(30000 / 1001) == Fraction(30000, 1001)
    # video_rate's docstring: 7.5 → 15/2, 25 → 25, a literal 29.97 → 2997/100; rates below 1 are rates too.
    assert [video_rate(fps) for fps in (7.5, 25, 29.97, 0.5)] == [
        Fraction(15, 2),
        Fraction(25),
        Fraction(2997, 100),
        Fraction(1, 2),
    ]
    # Denominators stop at NTSC's 1001: 1003/1002 becomes the nearest such fraction, 1002/1001.
    assert video_rate(1003 / 1002) == Fraction(1002, 1001)
    with pytest.raises(ValueError, match="positive"):
        video_rate(0)


class _FirstFrameFails:
    """decord's VideoReader for a file it opens but whose first frame it cannot decode (a corrupt
    keyframe): indexing raises decord's DECORDError, which is neither an OSError nor a ValueError."""

    real = None  # decord.VideoReader, set before it is patched

    def __init__(self, path, **kwargs):
        self._reader = self.real(path, **kwargs)

    def __len__(self):
        return len(self._reader)

    def get_avg_fps(self):
        return self._reader.get_avg_fps()

    def __getitem__(self, index):
        from decord._ffi.base import DECORDError

        raise DECORDError("threaded_decoder.cc:218: Check failed: avcodec_send_packet")

    def seek(self, position):
        raise AssertionError("seek must not be reached after the first frame failed")


def test_a_first_frame_decord_cannot_decode_falls_back_to_pyav(tmp_path, monkeypatch):
    """Unwrapped, decord's raw DECORDError escaped open_video: no file named, no PyAV fallback, and
    lavida-detect's folder run aborted."""

    frames = _frames()
    path = write_video(tmp_path / "v.mkv", frames, codec="libx264")  # H.264 in Matroska: decord reads it
    expected = PyAVVideo(path).get_frames(np.arange(len(frames)))
    monkeypatch.setattr(_FirstFrameFails, "real", decord.VideoReader)
    monkeypatch.setattr(decord, "VideoReader", _FirstFrameFails)
    with pytest.raises(VideoReadError, match=re.escape(f"{path}: decord cannot decode the first frame")):
        DecordVideo(path)
    video = open_video(path)  # the file itself is fine: PyAV reads it
    assert isinstance(video, PyAVVideo)
    np.testing.assert_array_equal(video.get_frames(np.arange(len(frames))), expected)


@pytest.mark.parametrize("suffix", [".ts", ".mts", ".m2ts", ".3gp"])
def test_transport_stream_and_3gp_files_are_videos(tmp_path, suffix):
    assert suffix in VIDEO_SUFFIXES
    # lavida.eval strips the first suffix a name ends with: ".m2ts" must come before ".ts".
    for i, earlier in enumerate(VIDEO_SUFFIXES):
        assert not any(later.endswith(earlier) for later in VIDEO_SUFFIXES[i + 1 :]), earlier
    frames = _frames()
    path = tmp_path / f"v{suffix}"
    write_video(tmp_path / f"tmp{'.ts' if 'ts' in suffix else suffix}", frames).rename(path)
    video = open_video(path)
    assert len(video) == len(frames)
    np.testing.assert_allclose(video.get_frames([0, 11])[:, 30, 50, 0].astype(float), [0, 220], atol=6)


def test_decord_refusing_a_file_is_logged_once(tmp_path, caplog):
    """An evaluation opens a video several times (its frame count for the labels, its clip plan, each
    dataloader worker): why decord does not read it was logged at INFO each time."""
    path = write_video(tmp_path / "v.avi", _frames(), codec="mpeg4")
    with caplog.at_level(logging.DEBUG, logger="lavida.data.video"):
        for spelling in (path, str(path), tmp_path / "." / "v.avi"):
            assert isinstance(open_video(spelling), PyAVVideo)
    refusals = [record for record in caplog.records if "trying PyAV" in record.getMessage()]
    assert [record.levelno for record in refusals] == [logging.INFO, logging.DEBUG, logging.DEBUG]
    assert all("mpeg4 stream may hold not-coded frames" in record.getMessage() for record in refusals)


def _folder(path, n=3, h=8, w=6):
    """``n`` frames of h×w, frame i filled with 10·i, saved as 0000.png, 0001.png, ..."""
    path.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((h, w, 3), 10 * i, np.uint8)).save(path / f"{i:04d}.png")
    return path


def test_an_empty_request_gives_an_empty_batch(tmp_path):
    """No indices (a clip plan with nothing left) is (0, H, W, 3) uint8, stackable with real batches."""
    source = FrameFolder(_folder(tmp_path / "f"))
    got = source.get_frames([])
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.zeros((0, 8, 6, 3), np.uint8))


def test_repr_names_the_path_length_and_size(tmp_path):
    """Log lines and error reports show a source by its repr: path, frame count and H×W."""
    folder = _folder(tmp_path / "f")
    assert repr(FrameFolder(folder)) == f"FrameFolder({str(folder)!r}, frames=3, size=8x6)"


def test_a_worker_copy_of_a_folder_reads_the_frames_listed_at_open(tmp_path):
    """A frame added after opening does not shift a worker's frame count away from the main process's."""
    folder = _folder(tmp_path / "f")
    source = FrameFolder(folder)
    Image.fromarray(np.full((8, 6, 3), 99, np.uint8)).save(folder / "0003.png")
    worker = source.for_worker()
    assert worker is not source and len(worker) == 3
    np.testing.assert_array_equal(worker.get_frames([2, 0])[:, 0, 0, 0], [20, 0])


@pytest.mark.parametrize(
    ("duplicated", "listed"),
    [
        (
            5,
            r"\(0000\.jpg, 0000\.png; 0001\.jpg, 0001\.png; 0002\.jpg, 0002\.png; 0003\.jpg, 0003\.png; "
            r"0004\.jpg, 0004\.png\); keep",
        ),
        (
            6,
            r"\(0000\.jpg, 0000\.png; 0001\.jpg, 0001\.png; 0002\.jpg, 0002\.png; 0003\.jpg, 0003\.png; "
            r"0004\.jpg, 0004\.png and 1 more\); keep",
        ),
    ],
)
def test_many_doubled_frames_list_the_first_five(tmp_path, duplicated, listed):
    """The message lists at most five doubled frames and counts the rest (6 − 5 = 1 more)."""
    for i in range(duplicated):
        for suffix in ("jpg", "png"):
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"{i:04d}.{suffix}")
    with pytest.raises(
        VideoReadError, match=rf"{duplicated} frame\(s\) exist in more than one file {listed}"
    ):
        list_frame_files(tmp_path)


def test_both_readers_report_rate_and_frame_times(tmp_path):
    """An H.264 mp4 written at 10 fps: frame i is shown at i / 10 s, by decord's index and PyAV's decode
    alike (lavida-detect checks decord's times against frame / fps to warn about variable rates)."""
    path = write_video(tmp_path / "v.mp4", _frames(), fps=10, codec="libx264")
    for video in (DecordVideo(path), PyAVVideo(path)):
        assert video.fps == pytest.approx(10)
        np.testing.assert_allclose(video.frame_times(), np.arange(12) / 10, atol=1e-6)


def test_decord_reads_a_one_frame_video(tmp_path):
    """A single-frame clip (a snapshot saved as a video) is a video of length 1, not an error."""
    video = DecordVideo(write_video(tmp_path / "one.mp4", _frames(n=1), codec="libx264"))
    assert len(video) == 1
    # _frames: the green box (200) covers rows 8..23, columns 16..39 of frame 0 (red 0).
    np.testing.assert_allclose(video.get_frames([0])[0, 16, 30].astype(float), [0, 200, 0], atol=8)


def test_an_unreadable_video_gives_both_decoders_reasons(tmp_path):
    """Each decoder's own reason (the error's cause where there is one), not the wrapper's or nothing."""
    decord_error = VideoReadError("v.mp4: decord cannot open the video")
    decord_error.__cause__ = RuntimeError("moov atom not found")  # as `raise ... from error` sets it
    error = unreadable_video_error(tmp_path / "v.mp4", decord_error, VideoReadError("no video stream"))
    assert str(error) == (
        f"{tmp_path / 'v.mp4'}: unreadable video. decord: moov atom not found; PyAV: no video stream. "
        "Is it a video file with a supported codec?"
    )


def test_write_video_creates_folders_and_defaults_to_25_fps(tmp_path):
    """Overlays go to output folders that may not exist yet; without fps the file plays at 25 fps."""
    path = write_video(tmp_path / "a" / "b" / "v.avi", _frames())
    video = open_video(path)
    assert video.fps == pytest.approx(25) and len(video) == 12


def test_write_video_passes_encoder_options_on(tmp_path):
    """options={"g": "1"} (a keyframe every frame) reaches the encoder: all 12 packets are keyframes,
    where the encoder's own GOP of 12 gives one."""
    keyframes = []
    for name, options in (("default.avi", None), ("intra.avi", {"g": "1"})):
        with av.open(str(write_video(tmp_path / name, _frames(), options=options))) as container:
            packets = [p for p in container.demux(container.streams.video[0]) if p.size]
            keyframes.append(sum(p.is_keyframe for p in packets))
    assert keyframes == [1, 12]


def test_default_mpeg4_files_are_near_lossless(tmp_path):
    """write_video's mpeg4 default is meant to be near-lossless: quantiser 2, as ffmpeg's ``-q:v 2``. Its
    ``{"qscale": "2"}`` is no mpeg4 encoder option, so libavcodec ignored it and the default bitrate's
    quantiser left about 5× the error on detailed frames (mean |error| 7.6 against 1.5 here)."""
    frames = grey_noise_frames()
    at_q2 = mean_decode_error(
        write_video(tmp_path / "q2.avi", frames, options={"qmin": "2", "qmax": "2"}), frames
    )
    assert mean_decode_error(write_video(tmp_path / "default.avi", frames), frames) <= at_q2 + 0.1


def test_the_near_lossless_options_cannot_be_changed_in_place():
    """MPEG4_NEAR_LOSSLESS is shared by write_video and lavida-detect's MPEG-4 fallback; an in-place edit by
    one caller would silently change the other's quality, so the module constant is read-only."""
    with pytest.raises(TypeError):
        MPEG4_NEAR_LOSSLESS["qmax"] = "31"  # type: ignore[index]
    assert dict(MPEG4_NEAR_LOSSLESS) == {"qmin": "2", "qmax": "2"}


def test_a_frame_folder_must_be_a_folder(tmp_path):
    path = write_video(tmp_path / "v.avi", _frames())
    with pytest.raises(VideoReadError, match=re.escape(f"{path}: expected a folder of frames")):
        FrameFolder(path)


def test_an_image_given_as_a_video_asks_for_its_folder(tmp_path):
    path = tmp_path / "0001.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with pytest.raises(VideoReadError, match=re.escape(f"{path}: this is an image; give the folder")):
        open_video(path)


def _write_with_audio(path, frames=(), codec="mpeg4"):
    """A file with one audio stream and, unless ``codec`` is None, a video stream holding ``frames``."""
    with av.open(str(path), "w") as container:
        video = None
        if codec is not None:
            video = container.add_stream(codec, rate=10)
            video.height, video.width, video.pix_fmt = 16, 16, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        for packet in [*audio.encode(samples), *audio.encode()]:
            container.mux(packet)
        if video is not None:
            for frame in frames:
                container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(video.encode())
    return path


@pytest.mark.parametrize(
    ("codec", "reason"), [(None, "the file has no video stream"), ("mpeg4", "the video has no frames")]
)
def test_a_file_without_video_frames_is_unreadable_naming_the_reason(tmp_path, codec, reason):
    """A sound-only file, and one whose video stream holds no frame: both decoders refuse it, and PyAV says
    why."""
    path = _write_with_audio(tmp_path / "sound.mkv", codec=codec)
    with pytest.raises(VideoReadError, match=re.escape(f"{path}: {reason}.")):
        PyAVVideo(path)
    # Each reason once, without the path the reader's own error starts with or its full stop.
    expected = (
        rf"^{re.escape(f'{path}: unreadable video. decord: ')}.*; {re.escape(f'PyAV: {reason}. Is it')}"
    )
    with pytest.raises(VideoReadError, match=expected) as error:
        open_video(path)
    assert str(error.value).count(str(path)) == 1


class _NoFrames(decord.VideoReader):
    """decord's VideoReader for a file it opens but counts no frames in."""

    def __len__(self):
        return 0


def test_a_video_decord_counts_no_frames_in_is_refused(tmp_path, monkeypatch):
    """Refused with VideoReadError (not a failed read later), so that open_video falls back to PyAV."""
    path = write_video(tmp_path / "v.mkv", _frames(), codec="libx264")
    monkeypatch.setattr(decord, "VideoReader", _NoFrames)
    with pytest.raises(VideoReadError, match=re.escape(f"{path}: the video has no frames")):
        DecordVideo(path)
    video = open_video(path)
    assert isinstance(video, PyAVVideo) and len(video) == 12


class _Failing:
    """An open decord VideoReader whose ``names`` calls fail with decord's own DECORDError."""

    def __init__(self, reader, *names):
        self._reader, self._names = reader, names

    def __getattr__(self, name):
        if name in self._names:
            raise DECORDError(f"{name}: Check failed: avcodec_receive_frame")
        return getattr(self._reader, name)


def test_decord_failures_after_opening_name_the_file(tmp_path):
    """A failed read names the file and the first frames asked for; frame times decord cannot give are
    None (lavida-detect then skips its variable-rate check), not an error."""
    path = write_video(tmp_path / "v.mp4", _frames(), codec="libx264")
    video = DecordVideo(path)
    video._reader = _Failing(video._reader, "get_batch", "get_frame_timestamp")
    assert video.frame_times() is None
    with pytest.raises(VideoReadError, match=re.escape(f"{path}: decoding frames [1, 3]... failed")) as error:
        video.get_frames([3, 1])
    assert isinstance(error.value.__cause__, DECORDError)


def test_a_pyav_video_deleted_after_opening_names_the_file(tmp_path):
    path = write_video(tmp_path / "v.avi", _frames())
    video = PyAVVideo(path)
    path.unlink()
    with pytest.raises(VideoReadError, match=re.escape(f"{path}: PyAV cannot reopen the video")):
        video.get_frames([0])
    assert video._container is None  # closed, so that a later read tries again


def test_a_pyav_video_shortened_after_opening_names_the_file_and_the_counts(tmp_path):
    """The frame count comes from the decode at open; a file rewritten shorter since then runs out."""
    path = write_video(tmp_path / "v.avi", _frames())
    video = PyAVVideo(path)
    write_video(path, _frames(n=4))
    with pytest.raises(
        VideoReadError,
        match=re.escape(
            f"{path}: frame 10 asked for, but this time the decoder stopped after 4 of the 12 frames"
        ),
    ):
        video.get_frames([10])
    np.testing.assert_allclose(video.get_frames([1])[0, 30, 50, 0], 20, atol=6)  # starts again


class _DecodeFails:
    """A PyAV container whose decode gives ``good`` frames, then fails as a corrupt packet does."""

    def __init__(self, container, good):
        self._container, self._good = container, good

    def __getattr__(self, name):
        return getattr(self._container, name)

    def decode(self, *args, **kwargs):
        for i, frame in enumerate(self._container.decode(*args, **kwargs)):
            if i == self._good:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield frame


def test_a_pyav_decoding_failure_names_the_file_and_where_it_stopped(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.avi", _frames())
    video = PyAVVideo(path)
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: _DecodeFails(real_open(*args, **kwargs), 5))
    with pytest.raises(
        VideoReadError,
        match=re.escape(f"{path}: decoding failed after 5 frame(s) ([Errno 1094995529] Invalid data"),
    ):
        video.get_frames([2, 8])
    assert video._container is None
