"""Sliding-window scoring: every frame once, in order, with the right aggregate, in bounded memory."""

import weakref

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


def test_default_window_is_the_papers_eight_frame_clips_without_overlap():
    # B.3: T = 8 sampled frames per clip, every frame sampled, stride = clip length. 16 frames are then
    # exactly two full clips, 0-7 and 8-15, and no padded tail.
    log = []
    results = list(SlidingWindow(recording_predictor(log)).run(frames(16)))
    assert log == [list(range(8)), list(range(8, 16))]
    assert [r.index for r in results] == list(range(16))


def test_an_empty_stream_scores_nothing_and_holds_nothing():
    log = []
    window = SlidingWindow(recording_predictor(log), clip_length=4, stride=2)
    assert list(window.run([])) == []
    assert log == []
    assert window.max_buffered == 0


def test_padding_copies_of_the_tail_clip_do_not_count_as_predictions():
    """The tail clip repeats its last frame only to fill the clip; that frame's result is its own
    prediction, not also those the model gives the copies (which differ: the model sees time)."""

    def by_position(clip):  # score = position in the clip / 10; mask = the same value
        scores = np.arange(len(clip)) / 10.0
        return scores, np.repeat(scores[:, None, None], 2, axis=1).repeat(2, axis=2)

    for aggregation in ("mean", "max"):
        window = SlidingWindow(by_position, clip_length=4, stride=4, aggregation=aggregation)
        # 6 frames: clip [0, 1, 2, 3], then the tail [4, 5, 5, 5]. Frame 5 is at position 1 of the
        # tail: 0.1. Counting the copies (positions 2 and 3) would give mean 0.2 or max 0.3.
        results = list(window.run(frames(6)))
        assert [r.score for r in results] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.0, 0.1])
        np.testing.assert_allclose(results[5].mask, 0.1)


def test_a_frame_is_emitted_as_soon_as_no_later_clip_can_cover_it():
    consumed = []

    def stream(n):
        for i, frame in enumerate(frames(n)):
            consumed.append(i)
            yield frame

    window = SlidingWindow(recording_predictor([]), clip_length=4, interval=2, stride=2)
    emitted_after = {r.index: len(consumed) for r in window.run(stream(13))}
    # Sampled position p is raw frame 2p. Clip [0-3] runs when position 3 (raw 6) arrives: 7 frames read;
    # the next clip starts at position 2, so positions 0-1 (raw 0-3) are final. Clip [2-5] runs at
    # position 5 (raw 10, 11 read): positions 2-3 (raw 4-7) are final. Positions 4-6 wait for the end.
    assert emitted_after == {r: 7 if r < 4 else 11 if r < 8 else 13 for r in range(13)}


@pytest.mark.parametrize(
    "clip,interval,stride", [(1, 1, 1), (4, 1, 4), (4, 2, 2), (8, 2, 8), (8, 3, 5), (3, 5, 1)]
)
def test_frames_alive_never_exceed_one_window(clip, interval, stride):
    """Memory, counted as frames still alive (held raw or sampled frames, not only the raw queue), stays
    within one window of clip × interval raw frames while the caller keeps only the current result."""
    refs = []

    def make(i):  # no local reference survives in the generator
        frame = np.full((2, 2, 3), i % 256, np.uint8)
        refs.append(weakref.ref(frame))
        return frame

    window = SlidingWindow(
        lambda c: (np.zeros(len(c)), None), clip_length=clip, interval=interval, stride=stride
    )
    peak = 0
    for result in window.run(make(i) for i in range(60)):
        del result
        peak = max(peak, sum(ref() is not None for ref in refs))
    assert peak <= clip * interval
    assert window.max_buffered <= clip * interval


def test_interval_cannot_be_null():
    with pytest.raises(ValueError, match="interval"):
        SlidingWindow(lambda c: c, clip_length=4, interval=None)
