"""Ground-truth tracks from UBnormal-style object-id maps."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lavida.metrics import object_boxes, rbdc_tbdc, tracks_from_id_maps


def id_video() -> np.ndarray:
    """Three 12x12 frames: object 5 split in two pieces by an occluder, object 7 in frame 1 only."""
    maps = np.zeros((3, 12, 12), dtype=np.uint8)
    maps[:, 1:3, 1:3] = 5  # piece 1: rows 1-2, cols 1-2 (2x2 box, area 4)
    maps[:, 6:9, 6] = 5  # piece 2: rows 6-8, col 6 (1x3 box, area 3)
    maps[1, 4, 4] = 7
    return maps


def test_union_and_largest_component_boxes():
    frame = id_video()[0]
    # Union: all of object 5's pixels: x 1..6, y 1..8 (inclusive). Object 9 absent -> None.
    assert object_boxes(frame, [5, 9]) == {5: (1, 1, 6, 8), 9: None}
    # Largest component by bounding-box area: piece 1 (4 > 3).
    assert object_boxes(frame, [5], box="largest_component") == {5: (1, 1, 2, 2)}


def test_tracks_are_renumbered_by_object_id_and_sorted():
    # Anomalies listed out of id order: track ids follow the id order (7 after 5), rows sorted by track.
    rows = tracks_from_id_maps(id_video(), [[7, 1, 1], [5, 0, 2]])
    np.testing.assert_array_equal(
        rows,
        [
            [0, 0, 1, 1, 6, 8],
            [0, 1, 1, 1, 6, 8],
            [0, 2, 1, 1, 6, 8],
            [1, 1, 4, 4, 4, 4],
        ],
    )
    assert rows.dtype == np.int64


def test_reference_compatible_options():
    # Largest contour and exclusive x + w, y + h, as UBnormal's create_tracks_for_tbdc_rbdc.py writes.
    rows = tracks_from_id_maps(id_video(), np.array([5, 0, 1]), box="largest_component", exclusive_max=True)
    np.testing.assert_array_equal(rows, [[0, 0, 1, 1, 3, 3], [0, 1, 1, 1, 3, 3]])


def test_lazy_reader_fetches_each_frame_once():
    maps = id_video()
    calls = []

    def read(frame: int) -> np.ndarray:
        calls.append(frame)
        return maps[frame]

    tracks_from_id_maps(read, [[5, 0, 2], [7, 1, 1]])
    assert calls == [0, 1, 2]


def test_missing_object_is_skipped_or_raises(caplog):
    maps = id_video()
    with caplog.at_level(logging.WARNING, logger="lavida.metrics.tracks"):
        rows = tracks_from_id_maps(maps, [[7, 0, 2]])  # object 7 only exists in frame 1
    np.testing.assert_array_equal(rows, [[0, 1, 4, 4, 4, 4]])
    assert "2 (track, frame) pairs" in caplog.text
    with pytest.raises(ValueError, match="object 7 has no pixel in frame 0"):
        tracks_from_id_maps(maps, [[7, 0, 2]], missing="raise")


def test_empty_and_invalid_anomalies():
    assert tracks_from_id_maps(id_video(), np.zeros((0, 3))).shape == (0, 6)
    with pytest.raises(ValueError, match="0 <= start <= end"):
        tracks_from_id_maps(id_video(), [[5, 2, 1]])
    with pytest.raises(ValueError, match=r"shape \(K, 3\)"):
        tracks_from_id_maps(id_video(), [[5, 2]])
    with pytest.raises(ValueError, match="2-D integer"):
        object_boxes(np.zeros((4, 4, 3), dtype=np.uint8), [1])
    with pytest.raises(ValueError, match="positive"):
        object_boxes(np.zeros((4, 4), dtype=np.uint8), [0])


def test_a_misspelt_option_is_refused_with_the_valid_values():
    """Both options are plain strings: a misspelt one would otherwise pick the other rule silently."""
    with pytest.raises(
        ValueError, match=r"^object_boxes: box must be 'union' or 'largest_component', got 'largest'\.$"
    ):
        object_boxes(id_video()[0], [5], box="largest")
    with pytest.raises(
        ValueError, match=r"^tracks_from_id_maps: missing must be 'skip' or 'raise', got 'error'\.$"
    ):
        tracks_from_id_maps(id_video(), [[5, 0, 2]], missing="error")


def test_no_object_ids_give_an_empty_mapping():
    assert object_boxes(id_video()[0], []) == {}
    assert object_boxes(id_video()[0], [], box="largest_component") == {}


def test_empty_anomaly_list_in_any_shape():
    # An empty {video}_tracks.txt reads as shape (0,) (np.loadtxt) or (0, 3): no track either way.
    for empty in ([], np.zeros(0), np.zeros((0, 3))):
        rows = tracks_from_id_maps(id_video(), empty)
        assert rows.shape == (0, 6)
        assert rows.dtype == np.int64


def test_exactly_three_anomalies():
    # A (3, 3) array is three anomaly rows, not one (3,) row. Ids sorted: 5 (frame 0), 5 (frame 2),
    # 7 (frame 1) -> tracks 0, 1, 2; boxes from id_video(): 5 -> (1, 1, 6, 8), 7 -> (4, 4, 4, 4).
    rows = tracks_from_id_maps(id_video(), [[7, 1, 1], [5, 0, 0], [5, 2, 2]])
    np.testing.assert_array_equal(rows, [[0, 0, 1, 1, 6, 8], [1, 2, 1, 1, 6, 8], [2, 1, 4, 4, 4, 4]])


@pytest.mark.parametrize(
    "bad", [[[5, 0.5, 2]], [[5, 0, 2.5]], [[5.5, 0, 2]], [[5, 0, np.inf]], [[5, np.nan, 2]]]
)
def test_non_whole_or_non_finite_anomaly_rows_raise(bad):
    # A fractional frame or id must not be truncated silently (2.5 -> 2), nor inf cast to an integer.
    with pytest.raises(ValueError, match="whole numbers"):
        tracks_from_id_maps(id_video(), bad)


@pytest.mark.parametrize("bad", [[0, 0, 1], [-3, 0, 1], [5, -1, 1], [5, 2, 1]])
def test_invalid_anomaly_rows_raise(bad):
    # id 0 is background (and negative ids meaningless); a negative start would index the maps from the
    # end (maps[-1] is the last frame); start > end is an empty interval.
    with pytest.raises(ValueError, match=r"anomaly row .* is invalid; expected object_id >= 1"):
        tracks_from_id_maps(id_video(), [bad])


def test_object_id_1_is_the_first_valid_one():
    # 0 is the background of UBnormal's id maps, so 1 is the lowest object id and must be accepted.
    maps = np.zeros((2, 6, 6), dtype=np.uint8)
    maps[:, 2:4, 1:5] = 1
    np.testing.assert_array_equal(
        tracks_from_id_maps(maps, [[1, 0, 1]]), [[0, 0, 1, 2, 4, 3], [0, 1, 1, 2, 4, 3]]
    )


def test_skip_warning_counts_the_skipped_frames(caplog):
    # Object 7 only exists in frame 1 of id_video(); interval [0, 2] -> frames 0 and 2 are skipped: 2 pairs,
    # "2 of its 3 frames". Object 5 (track 0, every frame present) is not mentioned.
    with caplog.at_level(logging.WARNING, logger="lavida.metrics.tracks"):
        tracks_from_id_maps(id_video(), [[5, 0, 2], [7, 0, 2]])
    assert "tracks_from_id_maps: 2 (track, frame) pairs had no pixel" in caplog.text
    assert "object 7 [0, 2] (track 1) in 2 of its 3 frames" in caplog.text
    assert "object 5" not in caplog.text
    with pytest.raises(
        ValueError, match=r"object 7 has no pixel in frame 0, inside its anomaly interval \[0, 2\]"
    ):
        tracks_from_id_maps(id_video(), [[5, 0, 2], [7, 0, 2]], missing="raise")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lavida.metrics.tracks"):
        tracks_from_id_maps(id_video(), [[7, 1, 2]])  # an interval that starts later: frame 2 of 2
    assert "object 7 [1, 2] (track 0) in 1 of its 2 frames" in caplog.text


def test_tracks_feed_rbdc_directly():
    rows = tracks_from_id_maps(id_video(), [[5, 0, 2], [7, 1, 1]])
    perfect = np.column_stack((rows[:, 1:], np.full(len(rows), 0.9)))
    assert rbdc_tbdc({"v": rows}, {"v": perfect}, {"v": 3}) == (1.0, 1.0)
