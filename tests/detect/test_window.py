"""Sliding-window scoring: every frame once, in order, with the right aggregate, in bounded memory."""

import numpy as np
import pytest

from lavida.detect.window import SlidingWindow


def frames(n):
    return [np.full((2, 3, 3), i % 256, np.uint8) for i in range(n)]


def recording_predictor(log):
    """Score of a frame in a clip = its index / 100 + clip number (so overlaps are distinguishable)."""

    def predict(clip):
        number = len(log)
        log.append(clip[:, 0, 0, 0].astype(int).tolist())
        return clip[:, 0, 0, 0] / 100.0 + number, None

    return predict


@pytest.mark.parametrize(
    "length,clip,interval,stride", [(21, 8, 1, 8), (21, 4, 2, 2), (5, 8, 1, 8), (40, 8, 3, 5), (1, 8, 1, 8)]
)
def test_every_frame_once_in_order(length, clip, interval, stride):
    window = SlidingWindow(recording_predictor([]), clip_length=clip, interval=interval, stride=stride)
    results = list(window.run(frames(length)))
    assert [r.index for r in results] == list(range(length))
    for result in results:  # sample-and-hold: a frame holds the sampled frame at or before it
        assert result.sampled_from == result.index // interval * interval


def test_overlapping_clips_average_hand_worked():
    log = []
    window = SlidingWindow(recording_predictor(log), clip_length=4, interval=2, stride=2)
    results = list(window.run(frames(13)))
    # Sampled frames 0,2,...,12 (positions 0..6). Clips: positions [0-3] (#0), [2-5] (#1),
    # then the tail [4, 5, 6] padded with 6 (#2).
    assert log == [[0, 2, 4, 6], [4, 6, 8, 10], [8, 10, 12, 12]]
    score = {r.index: r.score for r in results}
    assert score[0] == pytest.approx(0.00)  # only clip 0
    assert score[4] == pytest.approx((0.04 + 0 + 0.04 + 1) / 2)  # clips 0 and 1
    assert score[9] == pytest.approx((0.08 + 1 + 0.08 + 2) / 2)  # frame 9 holds frame 8: clips 1 and 2
    assert score[12] == pytest.approx(0.12 + 2)  # tail clip only
    max_window = SlidingWindow(
        recording_predictor([]), clip_length=4, interval=2, stride=2, aggregation="max"
    )
    assert {r.index: r.score for r in max_window.run(frames(13))}[4] == pytest.approx(0.04 + 1)


@pytest.mark.parametrize(
    "length,clips",
    [
        (4, [[0, 1, 2, 3]]),  # one full clip covers everything: no padded tail
        (10, [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]),
        (11, [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9], [8, 9, 10, 10]]),  # 10 uncovered
        (3, [[0, 1, 2, 2]]),  # shorter than a clip
    ],
)
def test_overlapping_clips_add_a_tail_only_for_uncovered_frames(length, clips):
    log = []
    results = list(SlidingWindow(recording_predictor(log), clip_length=4, stride=2).run(frames(length)))
    assert log == clips
    assert [r.index for r in results] == list(range(length))


def test_memory_is_bounded_by_one_window():
    window = SlidingWindow(lambda c: (np.zeros(len(c)), None), clip_length=8, interval=2, stride=8)
    count = sum(1 for _ in window.run(frames(2000)))
    assert count == 2000
    assert window.max_buffered <= 8 * 2 + 1


def test_bad_settings():
    with pytest.raises(ValueError, match="stride"):
        SlidingWindow(lambda c: c, clip_length=4, stride=5)
    with pytest.raises(ValueError, match="aggregation"):
        SlidingWindow(lambda c: c, aggregation="median")
