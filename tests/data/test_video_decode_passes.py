"""PyAV-read videos: clips read in plan order decode each frame once, dataloader workers do not decode a
video again to count its frames, and frame counts come from decoding (packets are not frames: not-coded
VOPs, recordings cut mid-GOP). Decoded frames are counted by wrapping ``av.open``: every decode in
``lavida.data.video`` goes through ``container.decode``.
"""

import copy
import gc
import multiprocessing
import os

import av
import numpy as np
import pytest
from conftest import decode_sequentially, sweeping_frames
from torch.utils.data import DataLoader

import lavida.inference as inference
from lavida.data.video import DecordVideo, PyAVVideo, VideoReadError, open_video, write_video
from lavida.inference import ClipCollator, ClipDataset

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


class _FramesOnly:
    """Stands in for the processor of a ClipDataset: a clip's frames are all that reaches the model."""

    def encode(self, sample, train):
        return sample.frames

    def collate(self, samples):
        return np.stack(samples)


def _must_not_read(indices):
    raise AssertionError("a dataloader worker read the main process's reader")


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_worker_reads_its_own_copy_of_a_pyav_video_without_counting_its_frames_again(
    tmp_path, counts, monkeypatch, start
):
    """Opening a PyAV video decodes it whole to count its frames. ClipDataset dropped the opened source on
    its way to a spawned worker, which opened (and decoded) the video again; a forked worker kept it and
    read it with the main process's open decoder. Both now read a copy: one pass from the first frame."""
    path = _write(tmp_path / "v.avi", codec="mpeg4", max_b_frames=2)
    source = open_video(path)
    assert isinstance(source, PyAVVideo)
    source.get_frames([5])  # the main process's decoder is open now
    clips = np.arange(0, N, 2).reshape(-1, 4)
    dataset = ClipDataset(path=path, clips=clips, categories=["fire"], processor=_FramesOnly(), source=source)
    # A forked worker holds the dataset as it was; a spawned one a copy made through __getstate__ (deepcopy
    # goes through it as pickling does, and the project unpickles nothing).
    worker = dataset if start == "fork" else copy.deepcopy(dataset)
    monkeypatch.setattr(source, "_read", _must_not_read)
    monkeypatch.setattr(inference, "get_worker_info", lambda: object())  # as inside a dataloader worker
    counts.update(opened=0, decoded=0)
    frames = np.stack([worker[i][1] for i in range(len(worker))])
    assert counts == {"opened": 1, "decoded": int(clips.max()) + 1}  # no counting decode
    np.testing.assert_array_equal(frames, decode_sequentially(path)[clips])


def test_a_worker_opens_a_decord_video_itself(tmp_path, monkeypatch):
    """A decord reader neither pickles nor may be shared with a forked worker (one file offset for all)."""
    path = write_video(tmp_path / "v.mp4", sweeping_frames(N), fps=10, codec="libx264", max_b_frames=0)
    source = open_video(path)
    assert isinstance(source, DecordVideo)
    clips = np.arange(N).reshape(-1, 8)
    dataset = ClipDataset(path=path, clips=clips, categories=["fire"], processor=_FramesOnly(), source=source)
    expected = np.stack([dataset[i][1] for i in range(len(dataset))])  # the main process: its reader
    spawned = copy.deepcopy(dataset)  # through __getstate__, as pickling
    monkeypatch.setattr(source, "_read", _must_not_read)
    monkeypatch.setattr(inference, "get_worker_info", lambda: object())
    for worker in (dataset, spawned):  # a forked worker holds the dataset as it was
        np.testing.assert_array_equal(np.stack([worker[i][1] for i in range(len(worker))]), expected)
        assert isinstance(worker._worker_source, DecordVideo) and worker._worker_source is not source


def _collect_garbage(worker_id):
    gc.collect()


def _loader_frames(dataset, **options):
    """The clips' frames through a DataLoader, batched as lavida.inference.Predictor batches them."""
    loader = DataLoader(dataset, batch_size=2, collate_fn=ClipCollator(processor=_FramesOnly()), **options)
    return np.concatenate([batch for _, batch in loader])


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_forked_workers_read_a_pyav_video_as_the_main_process_does(tmp_path, monkeypatch):
    """Two forked dataloader workers, as lavida.inference.Predictor runs them: each decodes the video once
    from the start, none counts its frames again, and they give the frames of num_workers=0.

    Two ways a worker hung (the loader's timeout turns that into a failure): it read (or closed) the main
    process's reader, whose open decoder's threads stayed in the parent; and a reader read and dropped in
    the main process kept its decoder, in a reference cycle, until a garbage collection, which a worker
    forked meanwhile then ran without those threads.
    """
    path = _write(tmp_path / "v.avi", n=60, codec="mpeg4", max_b_frames=2)
    calls = tmp_path / "calls.txt"
    for name in ("__init__", "_restart"):
        original = getattr(PyAVVideo, name)

        def logged(self, *args, _name=name, _original=original, **kwargs):
            # One short append per call: the processes do not interleave.
            with open(calls, "a", encoding="utf-8") as file:
                file.write(f"{_name} {os.getpid()}\n")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(PyAVVideo, name, logged)
    clips = np.arange(0, 60, 2).reshape(-1, 3)
    gc.collect()  # no garbage of other tests in the workers; from here on, only what this test drops
    gc.disable()
    try:
        PyAVVideo(path).get_frames([3])  # read and dropped
        source = open_video(path)
        source.get_frames([5])  # an open decoder in the main process
        dataset = ClipDataset(
            path=path, clips=clips, categories=["fire"], processor=_FramesOnly(), source=source
        )
        parallel = _loader_frames(
            dataset,
            num_workers=2,
            multiprocessing_context="fork",
            worker_init_fn=_collect_garbage,
            timeout=30,
        )
    finally:
        gc.enable()
    serial = _loader_frames(dataset, num_workers=0)
    np.testing.assert_array_equal(parallel, serial)
    np.testing.assert_array_equal(serial, decode_sequentially(path)[clips])
    made = [line.split() for line in calls.read_text().splitlines()]
    main = str(os.getpid())
    assert [pid for name, pid in made if name == "__init__"] == [main, main]  # the dropped reader, source
    workers = [pid for name, pid in made if name == "_restart" and pid != main]
    assert len(workers) == len(set(workers)) == 2  # each worker decodes once, from the first frame
