"""ExplanationFrames (supplement D.1.4: the MLLM explains each detected interval): which frames each
reported interval is explained from, when, and how few are held.

Checked against :func:`lavida.detect.intervals.anomalous_intervals`, which the reported intervals come
from, on frames that carry their own index.
"""

import numpy as np
import pytest

from lavida.detect.explanations import ExplanationFrames
from lavida.detect.intervals import anomalous_intervals


def _frame(index):
    return np.full((1, 1, 3), index, dtype=np.int64)


def _indices(frames):
    return ",".join(str(index) for index in frames[:, 0, 0, 0])


def _keeper(**settings):
    return ExplanationFrames(_indices, **settings)


@pytest.mark.parametrize(("merge_gap", "min_length"), [(0, 1), (1, 1), (2, 3), (3, 2), (0, 4)])
def test_each_reported_interval_is_explained_from_its_own_anomalous_frames(merge_gap, min_length):
    rng = np.random.default_rng(merge_gap * 10 + min_length)
    for _ in range(20):
        anomalous = rng.random(60) < 0.4
        keeper = _keeper(merge_gap=merge_gap, min_length=min_length, per_run=100)
        for index, flag in enumerate(anomalous):
            keeper.add(index, _frame(index), anomalous=bool(flag))
        intervals = anomalous_intervals(anomalous.astype(float), min_length=min_length, merge_gap=merge_gap)
        expected = {
            number: _indices(np.stack([_frame(i) for i in range(it.start, it.end + 1) if anomalous[i]]))
            for number, it in enumerate(intervals)
        }
        assert keeper.finish() == expected


def test_an_interval_is_explained_once_merge_gap_plus_one_frames_are_below_and_not_before():
    keeper = _keeper(merge_gap=2, min_length=1)
    for index, flag in enumerate([True, True, False, False]):
        keeper.add(index, _frame(index), anomalous=flag)
    assert keeper.explanations == {} and keeper.held == 2  # frames 2, 3 below: a run at 4 would still join
    keeper.add(4, _frame(4), anomalous=True)  # joins across the gap of 2
    for index in (5, 6, 7):
        keeper.add(index, _frame(index), anomalous=False)
    assert keeper.explanations == {0: "0,1,4"} and keeper.held == 0  # final at the third frame below


def test_a_long_run_is_thinned_to_every_other_frame_and_sampled_evenly():
    """per_run=2, ten anomalous frames in a row, worked by hand: 0-4 kept, the fifth makes 2·2+1, so every
    other one stays (0, 2, 4) and every 2nd later frame is taken (6, 8 → 0, 2, 4, 6, 8 → 0, 4, 8, every
    4th). Two frames evenly spread over those three: the first and last."""
    keeper = _keeper(merge_gap=0, min_length=1, per_run=2)
    held = []
    for index in range(10):
        keeper.add(index, _frame(index), anomalous=True)
        held.append(keeper.held)
    assert held == [1, 2, 3, 4, 3, 3, 4, 4, 3, 3]
    assert keeper.finish() == {0: "0,8"}


def test_an_interval_whose_explanation_was_interrupted_keeps_its_number():
    """Ctrl-C during an explanation leaves that interval without an answer, never the later ones renumbered."""
    answers = iter([KeyboardInterrupt, "second"])

    def explain(frames):
        answer = next(answers)
        if answer is KeyboardInterrupt:
            raise KeyboardInterrupt
        return answer

    keeper = ExplanationFrames(explain, merge_gap=0, min_length=1)
    keeper.add(0, _frame(0), anomalous=True)
    with pytest.raises(KeyboardInterrupt):
        keeper.add(1, _frame(1), anomalous=False)  # interval 0 is final: explained, interrupted
    keeper.add(2, _frame(2), anomalous=True)
    keeper.add(3, _frame(3), anomalous=False)
    assert keeper.finish() == {1: "second"}
