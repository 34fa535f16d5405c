"""Which frames the MLLM explains each detected interval from (supplement D.1.4), in bounded memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _OpenRun:
    start: int
    end: int
    frames: list[np.ndarray] = field(default_factory=list)  # every ``step``-th anomalous frame
    step: int = 1
    count: int = 0  # anomalous frames in the run


class ExplanationFrames:
    """Explains each reported interval as soon as it is final, holding frames of the open one only.

    Runs of anomalous frames are merged as :func:`~lavida.detect.intervals.anomalous_intervals` merges
    them (at most ``merge_gap`` frames apart). A merged run is final once the ``merge_gap + 1`` frames
    after it are all below the threshold (no later run can join it), or at the end of the stream; it is
    then dropped (shorter than ``min_length``) or explained at once and only the answer kept, under its
    number among the reported intervals. A run is final before the next one starts, so one is open at a
    time, holding an evenly spread sample of at most ``2 · per_run + 1`` of its anomalous frames:
    memory does not grow with the video, however often the score crosses the threshold.

    Args:
        explain: (T, H, W, 3) uint8 frames, T ≤ ``per_run`` → the MLLM's answer.
        merge_gap: As ``anomalous_intervals``'s.
        min_length: As ``anomalous_intervals``'s.
        per_run: Frames shown to ``explain`` per interval (at most).
    """

    def __init__(
        self, explain: Callable[[np.ndarray], str], *, merge_gap: int, min_length: int, per_run: int = 8
    ) -> None:
        self.explain = explain
        self.merge_gap, self.min_length, self.per_run = merge_gap, min_length, per_run
        self.explanations: dict[int, str] = {}  # reported interval number → answer
        self._reported = 0
        self._run: _OpenRun | None = None

    @property
    def held(self) -> int:
        """Frames held now."""
        return 0 if self._run is None else len(self._run.frames)

    def add(self, index: int, frame: np.ndarray, *, anomalous: bool) -> None:
        """The next frame (``index`` counts up from 0) and whether its score reaches the threshold."""
        run = self._run
        if run is not None:
            below = index - run.end - (1 if anomalous else 0)  # frames below the threshold since the run
            if below > self.merge_gap:
                self._close()
        if not anomalous:
            return
        if self._run is None:
            self._run = _OpenRun(start=index, end=index)
        run = self._run
        run.end = index
        if run.count % run.step == 0:
            # A copy: the frame may be a view of a whole decoded batch, which it would keep alive.
            run.frames.append(np.array(frame, copy=True))
        run.count += 1
        if len(run.frames) > 2 * self.per_run:  # keep every other one
            run.frames = run.frames[::2]
            run.step *= 2

    def finish(self) -> dict[int, str]:
        """At the end of the stream: settle the open run; returns interval number → answer."""
        if self._run is not None:
            self._close()
        return self.explanations

    def _close(self) -> None:
        run, self._run = self._run, None
        if run.end - run.start + 1 < self.min_length:
            return
        picks = np.linspace(0, len(run.frames) - 1, min(self.per_run, len(run.frames))).round().astype(int)
        # The number is taken first: an explanation stopped by Ctrl-C leaves its interval without an
        # answer, never the later ones under the wrong number.
        number, self._reported = self._reported, self._reported + 1
        self.explanations[number] = self.explain(np.stack([run.frames[i] for i in picks]))
