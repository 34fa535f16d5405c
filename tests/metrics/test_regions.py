"""extract_regions on synthetic maps with known blobs."""

from __future__ import annotations

import numpy as np
import pytest

from lavida.metrics import extract_regions, rbdc_tbdc


def two_blobs() -> np.ndarray:
    m = np.full((20, 30), 0.1)
    m[2:5, 3:8] = 0.9  # blob 1: rows 2-4, cols 3-7 (15 pixels) ...
    m[3, 5] = 0.95  # ... with a peak at (y=3, x=5)
    m[10:15, 20:23] = 0.6  # blob 2: rows 10-14, cols 20-22 (15 pixels), flat
    return m


def test_two_blobs_boxes_and_scores():
    rows = extract_regions(two_blobs())
    # Rows (frame, x_min, y_min, x_max, y_max, score); inclusive bounds; raster order of first pixel.
    np.testing.assert_allclose(rows, [[0, 3, 2, 7, 4, 0.95], [0, 20, 10, 22, 14, 0.6]])
    mean = extract_regions(two_blobs(), score="mean")
    # Blob 1 mean: (14 * .9 + .95) / 15.
    np.testing.assert_allclose(mean[:, 5], [(14 * 0.9 + 0.95) / 15, 0.6])


def test_threshold_is_inclusive_and_several_levels_nest():
    # At .6 blob 2 (exactly .6) is kept (>=); at .92 only blob 1's peak pixel remains.
    rows = extract_regions(two_blobs(), thresholds=[0.6, 0.92], score="threshold")
    np.testing.assert_allclose(rows, [[0, 3, 2, 7, 4, 0.6], [0, 20, 10, 22, 14, 0.6], [0, 5, 3, 5, 3, 0.92]])
    assert extract_regions(two_blobs(), thresholds=0.61).shape == (1, 6)
    assert extract_regions(two_blobs(), thresholds=0.99).shape == (0, 6)


def test_connectivity_and_min_area():
    m = np.zeros((5, 5))
    m[0, 0] = m[1, 1] = 0.8  # diagonal neighbours
    m[4, 4] = 0.7
    eight = extract_regions(m)
    np.testing.assert_allclose(eight, [[0, 0, 0, 1, 1, 0.8], [0, 4, 4, 4, 4, 0.7]])
    assert extract_regions(m, connectivity=4).shape == (3, 6)
    np.testing.assert_allclose(extract_regions(m, min_area=2), [[0, 0, 0, 1, 1, 0.8]])


@pytest.mark.parametrize("batch", [0, -1])
def test_a_batch_below_one_frame_is_refused(batch):
    """Not silently empty (0) or short of the last frame (-1)."""
    with pytest.raises(ValueError, match="frames_per_batch must be >= 1"):
        extract_regions(np.stack([two_blobs()] * 3), frames_per_batch=batch)


def test_frames_are_separate_and_indexed():
    video = np.stack([two_blobs(), np.zeros((20, 30)), two_blobs()])
    # The same blob in frames 0 and 2 must not connect through time; frame ids come from `frames`.
    for batch in (1, 2, 32):
        rows = extract_regions(video, frames=[10, 11, 12], frames_per_batch=batch)
        np.testing.assert_allclose(rows[:, 0], [10, 10, 12, 12])
        np.testing.assert_allclose(rows[2:, 1:], extract_regions(two_blobs())[:, 1:])


def test_regions_of_ground_truth_masks_score_perfect_rbdc():
    # Ground-truth boxes taken from the same blobs: detections are exact -> RBDC = TBDC = 1.
    video = np.stack([two_blobs(), two_blobs()])
    det = extract_regions(video)
    gt = np.array([[0, 0, 3, 2, 7, 4], [0, 1, 3, 2, 7, 4], [1, 0, 20, 10, 22, 14], [1, 1, 20, 10, 22, 14]])
    assert rbdc_tbdc({"v": gt}, {"v": det}, {"v": 2}) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": "median"}, "score must be"),
        ({"connectivity": 6}, "connectivity"),
        ({"min_area": 0}, "min_area"),
        ({"thresholds": []}, "thresholds"),
        ({"frames": [0, 1]}, "one index per map"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_regions(two_blobs(), **kwargs)


def test_invalid_maps():
    with pytest.raises(ValueError, match="shape"):
        extract_regions(np.zeros(5))
    with pytest.raises(ValueError, match="sigmoid"):
        extract_regions(np.full((3, 3), 2.0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_region_maxima_equal_a_slow_per_component_search(dtype):
    """Each region's 'max' score is the largest value of its own pixels, exactly: checked against scipy's
    labelling and a per-component loop, on smooth random maps with hundreds of components per frame."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    maps = ndimage.uniform_filter(rng.random((5, 60, 90)), size=(1, 5, 5))
    maps = ((maps - maps.min()) / (maps.max() - maps.min())).astype(dtype)
    rows = extract_regions(maps, thresholds=[0.5, 0.7], score="max", frames_per_batch=2)
    expected = []
    for level in (0.5, 0.7):
        for frame in range(5):
            labels, count = ndimage.label(maps[frame] >= level, structure=np.ones((3, 3)))
            for k in range(1, count + 1):
                ys, xs = np.nonzero(labels == k)
                top = float(maps[frame][labels == k].max())
                expected.append((frame, xs.min(), ys.min(), xs.max(), ys.max(), top))
    assert len(expected) > 100
    np.testing.assert_array_equal(rows, np.array(expected, dtype=np.float64))
