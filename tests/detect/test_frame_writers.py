"""FrameWriters: one video's per-frame files written as each frame becomes final (scores, masks, overlay),
and the stretch of a frame's pixel probabilities back to the frame (SAM2's order: logits, bilinear,
sigmoid). Checked on tiny frames without a model, against torch's bilinear on the logits in float64."""

import json

import av
import numpy as np
import torch

from lavida.data.video import open_video
from lavida.detect.frame_writers import FrameWriters, upsample_mask_logits_from_probabilities
from lavida.detect.intervals import Interval
from lavida.detect.outputs import read_masks
from lavida.detect.window import FrameResult

HEIGHT, WIDTH = 16, 24


def _result(index, *, score, mask):
    frame = np.full((HEIGHT, WIDTH, 3), 10 * index, dtype=np.uint8)
    return FrameResult(index=index, frame=frame, score=score, mask=mask, sampled_from=index)


def _reference(probabilities, size):
    """SAM2's order on the logits themselves, in float64: bilinear (align_corners=False), then sigmoid."""
    logits = torch.logit(torch.from_numpy(np.asarray(probabilities, dtype=np.float64)))
    stretched = torch.nn.functional.interpolate(
        logits[None, None], size=size, mode="bilinear", align_corners=False
    )
    return torch.sigmoid(stretched[0, 0]).numpy()


def _write(folder, *, overlay, save, results, fps=10.0, threshold=0.5):
    writers = FrameWriters(folder=folder, fps=fps, threshold=threshold, overlay=overlay, save=save)
    history = []
    for result in results:
        history.append(result.score)
        writers.write(result, history)
    writers.close()
    return writers


def _codec_and_rate(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, float(stream.average_rate)


def test_scores_and_masks_are_written_per_frame_at_the_frames_size(tmp_path):
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0.05, 0.95, (4, 6))
    results = [
        _result(0, score=0.2, mask=probabilities),
        _result(1, score=0.5, mask=np.full((4, 6), 0.5)),  # exactly at the threshold: in the mask
        _result(2, score=0.9, mask=None),  # no mask: an empty one of the frame's size
    ]
    _write(tmp_path, overlay=False, save="all", results=results)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["masks.jsonl", "scores.csv", "scores.jsonl"]
    records = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert records == [
        {"frame": 0, "time_s": 0.0, "score": 0.2, "anomalous": False},
        {"frame": 1, "time_s": 0.1, "score": 0.5, "anomalous": True},
        {"frame": 2, "time_s": 0.2, "score": 0.9, "anomalous": True},
    ]
    masks = read_masks(tmp_path / "masks.jsonl")
    np.testing.assert_array_equal(masks[0], _reference(probabilities, (HEIGHT, WIDTH)) >= 0.5)
    assert 0 < masks[0].sum() < HEIGHT * WIDTH
    np.testing.assert_array_equal(masks[1], np.ones((HEIGHT, WIDTH), dtype=bool))
    np.testing.assert_array_equal(masks[2], np.zeros((HEIGHT, WIDTH), dtype=bool))


def test_without_a_folder_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writers = _write(None, overlay=True, save="all", results=[_result(0, score=0.9, mask=None)])
    writers.finish([Interval(0, 0, 0, 0.9, 0.9)])
    assert list(tmp_path.iterdir()) == []


def test_save_all_writes_the_overlay_video_at_the_streams_rate(tmp_path):
    results = [_result(index, score=0.9, mask=None) for index in range(5)]
    writers = _write(tmp_path, overlay=True, save="all", results=results, fps=10.0)
    writers.finish([Interval(0, 4, 0, 0.9, 0.9)])
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "masks.jsonl",
        "overlay.mp4",
        "scores.csv",
        "scores.jsonl",
    ]
    assert len(open_video(tmp_path / "overlay.mp4")) == 5
    assert _codec_and_rate(tmp_path / "overlay.mp4")[1] == 10.0


def test_save_anomalous_cuts_segments_from_a_near_lossless_overlay_it_then_deletes(tmp_path):
    """The whole overlay goes to a temporary near-lossless MPEG-4 file (it is encoded twice), at the stream's
    rate; ``finish`` cuts segment k from interval k and deletes it."""
    results = [_result(index, score=0.9 if 2 <= index <= 4 else 0.1, mask=None) for index in range(8)]
    writers = _write(tmp_path, overlay=True, save="anomalous", results=results, fps=10.0)
    assert not (tmp_path / "overlay.mp4").exists()
    assert _codec_and_rate(tmp_path / FrameWriters.FULL_OVERLAY) == ("mpeg4", 10.0)
    assert FrameWriters.FULL_OVERLAY == ".overlay.full.mp4"  # hidden: not one of the documented outputs
    writers.finish([Interval(2, 4, 2, 0.9, 0.9), Interval(6, 6, 6, 0.1, 0.1)])
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "masks.jsonl",
        "scores.csv",
        "scores.jsonl",
        "segments",
    ]
    segments = tmp_path / "segments"
    assert sorted(path.name for path in segments.iterdir()) == ["segment_000.mp4", "segment_001.mp4"]
    assert (
        len(open_video(segments / "segment_000.mp4")) == 3
        and len(open_video(segments / "segment_001.mp4")) == 1
    )
    assert _codec_and_rate(segments / "segment_000.mp4")[1] == 10.0
    # Frame 2 of the video, whose pixels are 20 (the overlay's strip below it is dark grey).
    first = open_video(segments / "segment_000.mp4").get_frames(np.arange(1))[0, :HEIGHT]
    assert abs(float(first.mean()) - 20) < 3


def test_save_anomalous_without_a_frame_finishes_with_nothing_to_cut(tmp_path):
    writers = _write(tmp_path, overlay=True, save="anomalous", results=[])
    writers.finish([])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["masks.jsonl", "scores.csv", "scores.jsonl"]


def test_probabilities_of_0_and_1_come_back_as_the_strongest_logits_float64_keeps():
    """0 and 1 are clipped to float64's smallest normal number and 1 − 1e-16 (logits −708 and +36.7), not
    turned into ±inf (NaN where bilinear weighs them by 0); a float32 mask reads as the float64 one."""
    mask = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.25, 1.0, 1.0]])
    clipped = np.clip(mask, np.finfo(np.float64).tiny, 1 - 1e-16)
    expected = _reference(clipped, (6, 9))
    for given in (mask, mask.astype(np.float32)):
        stretched = upsample_mask_logits_from_probabilities(given, (6, 9))
        assert stretched.dtype == np.float64
        np.testing.assert_allclose(stretched, expected, rtol=1e-4, atol=0)  # logits pass through float32
