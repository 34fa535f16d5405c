"""Clip sampling: strides, short videos, preference for windows where the target is visible."""

from collections import Counter
from functools import partial

import numpy as np
import pytest
from scipy.stats import binomtest, chisquare

from lavida.data.clips import clip_positions, fitting_stride, sample_clip


def _stride(positions: np.ndarray) -> int:
    steps = set(np.diff(positions).tolist())
    assert len(steps) == 1, positions
    return steps.pop()


def test_fixed_stride_window_inside_the_video():
    rng = np.random.default_rng(0)
    for _ in range(200):
        positions = sample_clip(100, length=8, strides=(3,), rng=rng)
        assert positions.shape == (8,) and positions.dtype == np.int64
        assert _stride(positions) == 3 and positions[0] >= 0 and positions[-1] < 100


def test_stride_drawn_uniformly_from_the_set():
    rng = np.random.default_rng(1)
    strides = Counter(_stride(sample_clip(200, strides=(1, 2, 4), rng=rng)) for _ in range(3000))
    assert set(strides) == {1, 2, 4}
    assert chisquare(list(strides.values())).pvalue > 1e-3


def test_start_is_uniform_without_a_target():
    rng = np.random.default_rng(2)
    starts = Counter(int(sample_clip(12, length=8, strides=(1,), rng=rng)[0]) for _ in range(2500))
    assert set(starts) == set(range(5))
    assert chisquare(list(starts.values())).pvalue > 1e-3


def test_a_stride_that_does_not_fit_shrinks_to_the_largest_that_does():
    assert fitting_stride(20, 8, 4) == 2 and fitting_stride(29, 8, 4) == 4 and fitting_stride(5, 8, 4) == 1
    positions = sample_clip(20, length=8, strides=(4,), rng=np.random.default_rng(3))
    assert _stride(positions) == 2 and positions[-1] < 20


@pytest.mark.parametrize(
    "num_frames,expected", [(5, [0, 1, 2, 3, 4, 4, 4, 4]), (1, [0] * 8), (8, list(range(8)))]
)
def test_short_videos_repeat_the_last_frame(num_frames, expected):
    for seed in range(5):
        positions = sample_clip(num_frames, strides=(1, 2, 4), visible=[0], rng=np.random.default_rng(seed))
        assert positions.tolist() == expected


def test_windows_show_the_target_when_they_can():
    rng = np.random.default_rng(4)
    for _ in range(300):
        positions = sample_clip(200, strides=(1, 2, 4), visible=[150, 151], rng=rng)
        assert {150, 151} & set(positions.tolist())


def test_target_windows_are_drawn_uniformly():
    """Stride 1, 20 frames, target on frame 10: the 8 windows starting at 3..10 are equally likely."""
    rng = np.random.default_rng(5)
    starts = Counter(int(sample_clip(20, strides=(1,), visible=[10], rng=rng)[0]) for _ in range(4000))
    assert set(starts) == set(range(3, 11))
    assert chisquare(list(starts.values())).pvalue > 1e-3


def test_unreachable_target_falls_back_after_bounded_tries():
    """Stride 4 over 30 frames only reaches frames ≡ 0 or 1 (mod 4); frame 2 is never shown."""
    rng = np.random.default_rng(6)
    for _ in range(50):
        positions = sample_clip(30, strides=(4,), visible=[2], rng=rng, tries=3)
        assert _stride(positions) == 4 and 2 not in positions.tolist()
    # With stride 1 in the set, retries find a window with the target most of the time.
    found = sum(
        2 in sample_clip(30, strides=(1, 4), visible=[2], rng=rng, tries=5).tolist() for _ in range(400)
    )
    assert found > 0.9 * 400


def test_images_are_one_frame_and_visible_positions_are_sanitised():
    rng = np.random.default_rng(7)
    assert clip_positions(1, is_video=False, rng=rng).tolist() == [0]
    positions = clip_positions(40, is_video=True, strides=(1,), visible=[-3, 99, 39], rng=rng)
    assert 39 in positions.tolist()


def test_invalid_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least one frame"):
        sample_clip(0, rng=rng)
    with pytest.raises(ValueError, match=r"clip length must be at least 1, got 0"):
        sample_clip(10, length=0, rng=rng)
    with pytest.raises(ValueError, match="strides"):
        sample_clip(10, strides=(), rng=rng)
    with pytest.raises(ValueError, match="strides"):
        sample_clip(10, strides=(0, 1), rng=rng)
    with pytest.raises(ValueError, match="tries"):
        sample_clip(10, tries=0, rng=rng)


@pytest.mark.parametrize(
    "num_frames,length,stride,expected",
    [
        # 7 gaps of 4 span 29 frames > 28: the largest stride that fits is (28 - 1) // 7 = 3.
        (28, 8, 4, 3),
        # 7 gaps of 4 span 29 frames > 22: (22 - 1) // 7 = 3 (not 2: the video is 21 frames long after frame 0).
        (22, 8, 4, 3),
        # 7 gaps of 13 span 92 frames ≤ 100: the stride fits and is kept, not widened to 99 // 7 = 14.
        (100, 8, 13, 13),
        # A 2-frame clip at stride 10 spans 11 frames > 5: the widest 2-frame window is (5 - 1) // 1 = 4.
        (5, 2, 10, 4),
    ],
)
def test_fitting_stride_is_the_largest_that_fits(num_frames, length, stride, expected):
    """A window of ``length`` frames at stride s spans (length − 1)·s + 1 frames; the stride is kept when
    that fits and otherwise shrinks to the largest fitting one, including for 2-frame clips."""
    assert fitting_stride(num_frames, length, stride) == expected


def test_one_frame_clips_start_anywhere_and_find_the_target():
    """T = 1 (a clip-length ablation's limit): every frame is a window of its own."""
    rng = np.random.default_rng(8)
    starts = Counter(sample_clip(10, length=1, strides=(1,), rng=rng).tolist()[0] for _ in range(1000))
    assert set(starts) == set(range(10))
    assert chisquare(list(starts.values())).pvalue > 1e-3
    # The only window that shows frame 7 is [7].
    assert all(sample_clip(10, length=1, visible=[7], rng=rng).tolist() == [7] for _ in range(20))


@pytest.mark.parametrize("num_frames,expected", [(5, [0, 1, 2, 3, 4, 4, 4, 4]), (8, list(range(8)))])
def test_short_videos_without_a_target_start_at_frame_zero(num_frames, expected):
    """Only one window exists when T ≥ num_frames, with or without a target; it starts at frame 0."""
    for seed in range(10):
        positions = sample_clip(num_frames, strides=(1, 2, 4), rng=np.random.default_rng(seed))
        assert positions.tolist() == expected


@pytest.mark.parametrize("visible,start", [([0], 0), ([19], 12)])
def test_targets_on_the_first_and_last_frame_are_shown(visible, start):
    """20 frames, stride 1, T = 8: frame 0 is only in the window starting at 0, frame 19 only in the one
    starting at 19 − 7 = 12."""
    rng = np.random.default_rng(9)
    for _ in range(30):
        assert sample_clip(20, strides=(1,), visible=visible, rng=rng).tolist() == list(
            range(start, start + 8)
        )


def test_fallback_windows_are_any_window_at_the_drawn_stride():
    """Stride 4 never shows frame 2 (windows hold frames ≡ start mod 4). Over 30 frames the fallback starts
    are 0 and 1 (30 − 7·4 = 2 starts), both drawn; over 29 frames the only window starts at 0."""
    rng = np.random.default_rng(10)
    starts = Counter(int(sample_clip(30, strides=(4,), visible=[2], rng=rng)[0]) for _ in range(200))
    assert set(starts) == {0, 1}
    for _ in range(20):
        assert sample_clip(29, strides=(4,), visible=[2], rng=rng).tolist() == list(range(0, 29, 4))


def _misses(sample, draws: int) -> int:
    """How many of ``draws`` 15-frame clips (T = 8) from ``sample(num_frames, visible)`` miss a target on frame 1.

    Stride 2 fits exactly (7·2 + 1 = 15) and stride 4 shrinks to (15 − 1) // 7 = 2: their one window
    starts at 0 and holds only even frames. Only stride 1 (windows starting at 0..7) can show frame 1,
    so a clip misses it exactly when every try draws a stride other than 1.
    """
    return sum(1 not in sample(15, [1]).tolist() for _ in range(draws))


def test_a_single_try_is_allowed():
    """tries=1 (no retry): the miss rate is P(stride 2 drawn from {1, 2}) = 1/2."""
    rng = np.random.default_rng(11)
    misses = _misses(
        lambda n, visible: sample_clip(n, strides=(1, 2), visible=visible, rng=rng, tries=1), 1000
    )
    assert binomtest(misses, 1000, 1 / 2).pvalue > 1e-3


def test_defaults_are_the_documented_clip_sampling():
    """docs/fidelity.md, clip sampling: 8 frames (supplement B.3), stride drawn from {1, 2, 4}, 3 tries to
    show the target; clip_positions passes the same defaults on."""
    rng = np.random.default_rng(12)
    for sample in (sample_clip, partial(clip_positions, is_video=True)):
        steps = {_stride(sample(200, rng=rng)) for _ in range(150)}
        assert steps == {1, 2, 4}
        assert sample(200, rng=rng).shape == (8,)
        # Three tries with P(stride ≠ 1) = 2/3 each: frame 1 is missed with P = (2/3)^3 = 8/27.
        misses = _misses(lambda n, visible, sample=sample: sample(n, visible=visible, rng=rng), 1500)
        assert binomtest(misses, 1500, 8 / 27).pvalue > 1e-3
