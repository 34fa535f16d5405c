"""Clip sampling: strides, short videos, preference for windows where the target is visible."""

from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

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
    with pytest.raises(ValueError, match="strides"):
        sample_clip(10, strides=(), rng=rng)
    with pytest.raises(ValueError, match="strides"):
        sample_clip(10, strides=(0, 1), rng=rng)
    with pytest.raises(ValueError, match="tries"):
        sample_clip(10, tries=0, rng=rng)
