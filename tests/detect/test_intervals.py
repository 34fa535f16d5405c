import numpy as np
import pytest

from lavida.detect.intervals import anomalous_intervals


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
