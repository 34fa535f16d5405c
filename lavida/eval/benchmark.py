"""Test benchmarks: what a VAD test set provides, and how a protocol turns its videos into clips.

A benchmark (``lavida.eval.benchmarks.<name>``) lists :class:`TestVideo` s: where the frames are, the
frame-level ground truth, lazily the pixel-level ground truth, and for UBnormal the anomaly tracks.
A :class:`Protocol` says which videos are evaluated and how frames are sampled into 8-frame clips;
:func:`plan_clips` does the sampling and says which raw frame inherits which sampled frame's score.

Protocols (docs/evaluation.md):

- ``standard`` (default): every frame of every test video is scored. Frames 0, I, 2I, ... are
  sampled (I = the benchmark's interval), grouped 8 to a clip; the last clip is padded by repeating
  its last frame; raw frame f takes the score of sampled frame ⌊f/I⌋·I (sample-and-hold).
- ``lavida_official``: the authors' release — non-overlapping windows of 8·I raw frames, the
  incomplete tail of each video dropped (and videos shorter than one window skipped), the release's
  intervals, subsets and pixel resolution.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lavida.eval.video_result import PixelResize

ProtocolName = Literal["standard", "lavida_official"]


class GroundTruthError(ValueError):
    """A ground-truth file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class TestVideo:
    """One test video of a benchmark.

    Attributes:
        name: Identifier, unique within the benchmark (e.g. ``01_0014``, ``Abuse028_x264``).
        path: The video file or frame folder.
        frame_labels: (F,) uint8 in {0, 1}, one per frame; F is the number of frames scored.
        fps: Frames per second if known.
        pixel_masks: ``(indices) -> (n, H, W) bool`` pixel ground truth of frames ``indices``, or None.
        tracks: (R, 6) int64 rows ``(track_id, frame, x_min, y_min, x_max, y_max)`` (inclusive boxes) of
            anomalous regions, for RBDC/TBDC; None if the benchmark has none.
        meta: Free-form facts (scene, class, abnormal/normal, ...).
    """

    __test__ = False  # not a pytest test class despite its name

    name: str
    path: Path
    frame_labels: np.ndarray
    fps: float | None = None
    pixel_masks: Callable[[np.ndarray], np.ndarray] | None = None
    tracks: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frame_labels.shape[0])

    @property
    def is_anomalous(self) -> bool:
        return bool(self.frame_labels.any())


def missing_video(name: str, path: Path, **meta) -> TestVideo:
    """A listed test video not found on disk: no frames, only what its list says (``meta``).

    Loaders with ``skip_missing`` record these, with the ``meta`` keys their loaded videos have that a
    video filter may read (UBnormal: ``abnormal``), so that :meth:`VadBenchmark.missing_under` can tell
    whether a protocol would have evaluated the video.
    """
    return TestVideo(name=name, path=path, frame_labels=np.zeros(0, dtype=np.uint8), meta=meta)


@dataclass(frozen=True)
class Protocol:
    """How a benchmark is evaluated.

    Attributes:
        name: ``standard`` or ``lavida_official``.
        interval: Raw frames between two sampled frames (I).
        clip_length: Sampled frames per clip (T = 8, B.3).
        drop_tail: Drop frames that do not fill a whole 8·I window (official release) instead of padding.
        pixel_size: (H, W) at which pixel metrics are computed; None = the ground truth's own size.
        pixel_resize: How predictions and ground truth reach ``pixel_size``: ``bilinear`` (ours) or
            ``release`` (the official validation's nearest resizing; see ``PixelResize``).
        video_filter: Keeps a video if it returns True (e.g. UBnormal abnormal-only in the release). It
            must decide from ``name`` and ``meta`` alone: it is also asked about listed videos missing on
            disk (:func:`missing_video`, no frames), to count those the protocol leaves out.
    """

    name: ProtocolName
    interval: int
    clip_length: int = 8
    drop_tail: bool = False
    pixel_size: tuple[int, int] | None = None
    pixel_resize: PixelResize = "bilinear"
    video_filter: Callable[[TestVideo], bool] | None = None

    def __post_init__(self) -> None:
        if self.interval < 1 or self.clip_length < 1:
            raise ValueError(
                f"Protocol needs interval ≥ 1 and clip_length ≥ 1, got {self.interval}, {self.clip_length}."
            )


@dataclass(frozen=True)
class ClipPlan:
    """Which frames of a video go into which clip, and which raw frames get which score.

    Attributes:
        clips: (C, T) int64 frame indices to decode, clip by clip; padded positions repeat a real frame.
        valid: (C, T) bool, False on padded positions (their predictions are discarded).
        scored: (F',) int64 raw frame indices that receive a score (all frames, or all but a dropped tail).
        source: (F',) int64, for each scored frame the position in ``clips.reshape(-1)`` whose prediction
            it takes.
    """

    clips: np.ndarray
    valid: np.ndarray
    scored: np.ndarray
    source: np.ndarray

    @property
    def num_clips(self) -> int:
        return int(self.clips.shape[0])

    def expand(self, per_sampled: np.ndarray) -> np.ndarray:
        """Per-sampled-frame values (C·T, ...) → per-scored-frame values (F', ...) by sample-and-hold."""
        return per_sampled[self.source]


def plan_clips(num_frames: int, *, interval: int, clip_length: int = 8, drop_tail: bool = False) -> ClipPlan:
    """Sample a video into clips (see the module docstring for the two rules).

    Args:
        num_frames: Frames in the video (F).
        interval: Raw frames between sampled frames (I).
        clip_length: Sampled frames per clip (T).
        drop_tail: Official-release rule: only whole windows of T·I raw frames are used.
    """
    if num_frames < 0 or interval < 1 or clip_length < 1:
        raise ValueError(
            f"plan_clips: bad arguments num_frames={num_frames}, interval={interval}, clip_length={clip_length}."
        )
    window = interval * clip_length
    if drop_tail:
        windows = num_frames // window
        scored = np.arange(windows * window, dtype=np.int64)
        sampled = np.arange(0, windows * window, interval, dtype=np.int64)
    else:
        scored = np.arange(num_frames, dtype=np.int64)
        sampled = np.arange(0, num_frames, interval, dtype=np.int64)
    if sampled.size == 0:
        empty = np.zeros((0, clip_length), dtype=np.int64)
        return ClipPlan(empty, empty.astype(bool), scored, np.zeros(0, dtype=np.int64))
    num_clips = -(-sampled.size // clip_length)
    padded = np.full(num_clips * clip_length, sampled[-1], dtype=np.int64)
    padded[: sampled.size] = sampled
    valid = np.zeros(num_clips * clip_length, dtype=bool)
    valid[: sampled.size] = True
    source = scored // interval  # sampled frame k·I sits at flat position k
    return ClipPlan(
        padded.reshape(num_clips, clip_length), valid.reshape(num_clips, clip_length), scored, source
    )


class VadBenchmark(abc.ABC):
    """A test benchmark in its official on-disk layout.

    Subclasses set ``name``, ``categories`` (the test prompt, a data file under
    ``lavida/eval/resources``), ``intervals`` ({protocol: I}) and implement :meth:`load_videos`.
    """

    name: str
    intervals: dict[str, int]
    has_pixel_gt: bool = False
    primary_metric: str = "frame_auc_micro"
    # The split evaluated (the paper's tables are on "test"), and its listed videos that were not found on
    # disk and skipped (``skip_missing``, :func:`missing_video` records; set by ``load_videos``): reports
    # and ``lavida-tables`` say when a run is not the whole test set.
    split: str = "test"
    missing: tuple[TestVideo, ...] = ()

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.name}: the dataset root '{self.root}' does not exist. For lavida-eval, set "
                "LAVIDA_DATA_ROOT to the folder holding the test sets or give benchmark.root=DIR; "
                "docs/evaluation.md gives each benchmark's folder name and layout."
            )
        self._videos: list[TestVideo] | None = None

    @property
    @abc.abstractmethod
    def categories(self) -> list[str]:
        """The anomaly categories given to the model for every clip of this benchmark."""

    @abc.abstractmethod
    def load_videos(self) -> list[TestVideo]:
        """Index the test split from disk (sorted by name)."""

    def videos(self) -> list[TestVideo]:
        """All test videos, indexed once and cached."""
        if self._videos is None:
            self._videos = self.load_videos()
        return self._videos

    def protocol(self, name: ProtocolName = "standard") -> Protocol:
        """The evaluation protocol ``name`` for this benchmark."""
        if name == "standard":
            return Protocol(name="standard", interval=self.intervals["standard"])
        if name == "lavida_official":
            return Protocol(
                name="lavida_official",
                interval=self.intervals["lavida_official"],
                drop_tail=True,
                pixel_size=(158, 238),
                pixel_resize="release",
                video_filter=self.official_filter(),
            )
        raise ValueError(f"Unknown protocol '{name}'; expected 'standard' or 'lavida_official'.")

    def official_filter(self) -> Callable[[TestVideo], bool] | None:
        """Videos the official release evaluates (None = all); UBnormal overrides this."""
        return None

    def select(self, protocol: Protocol) -> list[TestVideo]:
        """The videos ``protocol`` evaluates (all, or those its ``video_filter`` keeps)."""
        return _kept(self.videos(), protocol)

    @property
    def missing_videos(self) -> int:
        """How many listed videos were not found on disk, under any protocol (see :meth:`missing_under`)."""
        return len(self.missing)

    def missing_under(self, protocol: Protocol) -> int:
        """How many missing videos ``protocol`` would have evaluated: the videos left out of its runs.

        A missing video that the protocol's ``video_filter`` drops anyway (a normal UBnormal video under
        ``lavida_official``) leaves nothing out.
        """
        self.videos()  # the loader records the missing videos
        return len(_kept(self.missing, protocol))


def _kept(videos: Sequence[TestVideo], protocol: Protocol) -> list[TestVideo]:
    """``videos`` that ``protocol``'s video filter keeps, in order."""
    return [v for v in videos if protocol.video_filter(v)] if protocol.video_filter else list(videos)


def read_category_list(path: str | Path) -> list[str]:
    """A text file with one category per line (blank lines and ``#`` comments ignored)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    categories = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not categories:
        raise GroundTruthError(f"{path}: the category list is empty.")
    return categories


def labels_from_intervals(num_frames: int, intervals: Sequence[tuple[int, int]], *, where: str) -> np.ndarray:
    """(F,) uint8 labels with ones on each inclusive [start, end] interval (clipped to the video).

    Raises:
        GroundTruthError: an interval is reversed (the message says ``where``).
    """
    labels = np.zeros(num_frames, dtype=np.uint8)
    for start, end in intervals:
        if end < start:
            raise GroundTruthError(f"{where}: interval [{start}, {end}] ends before it starts.")
        if end < 0 or start >= num_frames:
            continue  # wholly outside the video (a negative slice end would count from the end)
        labels[max(start, 0) : min(end, num_frames - 1) + 1] = 1
    return labels
