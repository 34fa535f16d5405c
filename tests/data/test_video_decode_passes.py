"""PyAV-read videos: clips read in plan order decode each frame once, and frame counts come from decoding
(packets are not frames: not-coded VOPs, recordings cut mid-GOP). Decoded frames are counted by wrapping
``av.open``: every decode in ``lavida.data.video`` goes through ``container.decode``.
"""

import av
import numpy as np
import pytest
from conftest import decode_sequentially, sweeping_frames

from lavida.data.video import DecordVideo, PyAVVideo, VideoReadError, open_video, write_video

N = 40


def _write(path, n=N, **kwargs):
    return write_video(path, sweeping_frames(n), fps=10, gop_size=12, **kwargs)


class _CountingContainer:
    def __init__(self, container, counts):
        self._container, self._counts = container, counts

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._container.close()

    def decode(self, *args, **kwargs):
        for frame in self._container.decode(*args, **kwargs):
            self._counts["decoded"] += 1
            yield frame


@pytest.fixture
def counts(monkeypatch):
    """Files opened and frames decoded through ``av.open`` from here on. Every test writes its own files,
    so nothing is counted already."""
    counts = {"opened": 0, "decoded": 0}
    real_open = av.open

    def counting_open(*args, **kwargs):
        counts["opened"] += 1
        return _CountingContainer(real_open(*args, **kwargs), counts)

    monkeypatch.setattr(av, "open", counting_open)
    return counts


def _read_clips(source, interval=2, clip_length=4):
    """Every clip in plan order, as lavida.eval's runner reads a video (ascending, non-overlapping)."""
    sampled = np.arange(0, len(source), interval)
    clips = np.array_split(sampled, -(-sampled.size // clip_length))
    return sampled, np.concatenate([source.get_frames(clip) for clip in clips])


def test_reading_every_frame_in_clip_order_decodes_each_frame_once(tmp_path, counts):
    path = _write(tmp_path / "v.avi", codec="mpeg4", max_b_frames=2)
    source = PyAVVideo(path)
    counts["decoded"] = 0
    _, frames = _read_clips(source, interval=1)
    assert counts["decoded"] == N
    np.testing.assert_array_equal(frames, decode_sequentially(path))


_NOT_CODED_VOP = bytes([0x00, 0x00, 0x01, 0xB6, 0x50, 0x9F])


def _packets(path):
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def test_an_avi_with_not_coded_vops_has_more_packets_than_frames(tmp_path):
    source = _write(tmp_path / "plain.avi", n=20, codec="mpeg4", max_b_frames=0)
    packets = _packets(source)
    packets[5:5] = [_NOT_CODED_VOP]
    packets[10:10] = [_NOT_CODED_VOP, _NOT_CODED_VOP]
    path = tmp_path / "dropped_frames.avi"
    with av.open(str(source)) as container, av.open(str(path), "w") as output:
        stream = output.add_stream_from_template(container.streams.video[0])
        for index, data in enumerate(packets):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, index, index, stream.time_base
            packet.is_keyframe = index == 0
            output.mux(packet)
    assert len(_packets(path)) == 23
    reference = decode_sequentially(path)
    assert len(reference) == 20  # the decoder puts out no frame for a not-coded VOP
    video = open_video(path)  # PyAV, although it has no B-frames
    assert isinstance(video, PyAVVideo) and len(video) == 20
    np.testing.assert_array_equal(video.get_frames(np.arange(20)), reference)
    # decord counts the 3 placeholders as frames and returns frames 6-19 early (by 1 or 3 places).
    with pytest.raises(
        VideoReadError, match=r"dropped_frames\.avi: not read with decord: its mpeg4 stream may hold"
    ):
        DecordVideo(path)


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
def test_a_recording_cut_mid_gop_has_more_packets_than_frames(tmp_path, codec):
    """A .ts that starts after its first keyframe (a camera's or a broadcast's cut): the decoder drops
    the frames it cannot build before the next keyframe (H.264) or before a closed reference (MPEG-2)."""
    whole = _write(tmp_path / "whole.ts", n=60, codec=codec, max_b_frames=2)
    path = tmp_path / "cut.ts"
    path.write_bytes(whole.read_bytes()[188 * 20 :])  # 20 transport-stream packets later
    reference = decode_sequentially(path)
    assert len(reference) < len(_packets(path))
    video = open_video(path)
    assert len(video) == len(reference)
    np.testing.assert_array_equal(video.get_frames(np.arange(len(reference))), reference)
