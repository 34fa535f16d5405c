"""Clip planning for the two protocols, against hand-worked cases."""

import numpy as np
import pytest

from lavida.eval.benchmark import labels_from_intervals, plan_clips


def test_standard_scores_every_frame_and_pads_the_tail():
    plan = plan_clips(21, interval=2, clip_length=8)
    # Sampled frames 0, 2, ..., 20 (11 of them): one full clip and one padded with frame 20.
    np.testing.assert_array_equal(plan.clips[0], [0, 2, 4, 6, 8, 10, 12, 14])
    np.testing.assert_array_equal(plan.clips[1], [16, 18, 20, 20, 20, 20, 20, 20])
    np.testing.assert_array_equal(plan.valid[1], [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(plan.scored, np.arange(21))
    # Frame f holds the score of sampled frame f // 2: frames 19 and 20 take flat positions 9 and 10.
    assert plan.source[19] == 9 and plan.source[20] == 10
    per_sampled = np.arange(16) * 10.0
    np.testing.assert_array_equal(plan.expand(per_sampled)[[0, 1, 2, 20]], [0, 0, 10, 100])


def test_short_video_gets_one_padded_clip():
    plan = plan_clips(5, interval=4, clip_length=8)
    np.testing.assert_array_equal(plan.clips, [[0, 4, 4, 4, 4, 4, 4, 4]])
    assert plan.scored.size == 5 and plan.valid.sum() == 2


def test_official_protocol_drops_tails_and_short_videos():
    plan = plan_clips(40, interval=2, clip_length=8, drop_tail=True)
    assert plan.num_clips == 2 and plan.scored.size == 32  # frames 32..39 are never scored
    assert plan.valid.all()
    empty = plan_clips(15, interval=2, clip_length=8, drop_tail=True)
    assert empty.num_clips == 0 and empty.scored.size == 0


def test_interval_one_maps_frames_to_themselves():
    plan = plan_clips(10, interval=1)
    np.testing.assert_array_equal(plan.source, np.arange(10))


def test_labels_from_inclusive_intervals():
    labels = labels_from_intervals(10, [(2, 4), (8, 20)], where="x")
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 1, 0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="x: interval \\[5, 3\\]"):
        labels_from_intervals(10, [(5, 3)], where="x")


def test_intervals_outside_the_video_mark_nothing():
    """(-5, -3) lies before frame 0: a slice ending at -2 would have marked frames 0..7."""
    for outside in ([(-5, -3)], [(-3, -2)], [(12, 15)], [(10, 10)]):
        assert not labels_from_intervals(10, outside, where="x").any(), outside
    np.testing.assert_array_equal(labels_from_intervals(10, [(-2, 1)], where="x"), [1, 1] + [0] * 8)


def test_default_clip_length_is_the_papers_eight():
    # B.3: T = 8. 16 frames at interval 1 are exactly two full clips, 0-7 and 8-15.
    plan = plan_clips(16, interval=1)
    np.testing.assert_array_equal(plan.clips, [list(range(8)), list(range(8, 16))])
    assert plan.valid.all()


@pytest.mark.parametrize(
    "num_frames,interval,clip_length", [(-1, 1, 8), (10, 0, 8), (10, 1, 0), (-1, 0, 8), (10, 0, 0)]
)
def test_each_bad_argument_is_refused_alone(num_frames, interval, clip_length):
    with pytest.raises(ValueError, match="plan_clips"):
        plan_clips(num_frames, interval=interval, clip_length=clip_length)
