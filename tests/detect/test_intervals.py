import dataclasses

import numpy as np
import pytest

from lavida.detect.intervals import Interval, anomalous_intervals


def test_runs_merging_and_minimum_length():
    scores = np.array([0.1, 0.6, 0.7, 0.2, 0.9, 0.1, 0.1, 0.1, 0.8, 0.5])
    runs = anomalous_intervals(scores, threshold=0.5)
    assert [(i.start, i.end) for i in runs] == [(1, 2), (4, 4), (8, 9)]
    assert runs[0].peak_frame == 2 and runs[0].peak_score == 0.7 and runs[0].mean_score == pytest.approx(0.65)
    merged = anomalous_intervals(scores, threshold=0.5, merge_gap=1)
    assert [(i.start, i.end) for i in merged] == [(1, 4), (8, 9)]
    assert [(i.start, i.end) for i in anomalous_intervals(scores, threshold=0.5, min_length=2)] == [
        (1, 2),
        (8, 9),
    ]
    assert anomalous_intervals(np.zeros(5), threshold=0.5) == []
    assert anomalous_intervals(np.ones(3), threshold=0.5)[0].to_dict(fps=2.0)["end_time"] == 1.5


def test_default_threshold_is_one_half_inclusive():
    # Frames 1 (exactly 0.5) and 2 (0.7) reach 0.5; 0.49 and 0.2 do not.
    assert [(i.start, i.end) for i in anomalous_intervals(np.array([0.49, 0.5, 0.7, 0.2]))] == [(1, 2)]


def test_length_counts_both_ends():
    # Frames 2, 3, 4 (end inclusive): 3 frames; a single frame: 1.
    scores = np.array([0.0, 0.0, 0.9, 0.8, 0.7, 0.0, 0.6])
    assert [i.length for i in anomalous_intervals(scores, threshold=0.5)] == [3, 1]
    assert Interval(10, 10, 10, 1.0, 1.0).length == 1


def test_times_of_an_interval_not_at_the_start():
    # Frames 3..5 at 4 fps: frame 3 starts at 3/4 = 0.75 s, frame 5 ends at (5 + 1)/4 = 1.5 s.
    (interval,) = anomalous_intervals(np.array([0, 0, 0, 0.9, 0.9, 0.9, 0]), threshold=0.5)
    data = interval.to_dict(fps=4.0)
    assert data["start_time"] == pytest.approx(0.75) and data["end_time"] == pytest.approx(1.5)
    assert "start_time" not in interval.to_dict()


def test_merge_gap_is_measured_from_the_next_run_start():
    # Runs [0, 0] and [2, 3] are one frame apart (frame 1): merge_gap=1 joins them into [0, 3], whose
    # peak is frame 0 (0.9) and whose mean takes in the gap frame: (0.9 + 0.1 + 0.6 + 0.7) / 4 = 0.575.
    scores = np.array([0.9, 0.1, 0.6, 0.7])
    (merged,) = anomalous_intervals(scores, threshold=0.5, merge_gap=1)
    assert (merged.start, merged.end, merged.peak_frame) == (0, 3, 0)
    assert merged.peak_score == 0.9 and merged.mean_score == pytest.approx(0.575)
    assert [(i.start, i.end) for i in anomalous_intervals(scores, threshold=0.5)] == [(0, 0), (2, 3)]


def test_intervals_are_immutable():
    (interval,) = anomalous_intervals(np.ones(3), threshold=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        interval.start = 1
