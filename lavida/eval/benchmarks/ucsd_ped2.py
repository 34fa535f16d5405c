"""UCSD Ped2 (Mahadevan et al., CVPR 2010; UCSD_Anomaly_Dataset.v1p2) test set: 12 clips with pixel masks.

Layout (``research/vad_eval.md`` §1.5)::

    <root>/UCSDped2/Test/Test001/001.tif ...        greyscale frames, 240×360
    <root>/UCSDped2/Test/Test001_gt/001.bmp ...     one binary mask per frame (anomalous where > 0)
    <root>/UCSDped2/Test/UCSDped2.m                 frame GT: "TestVideoFile{end+1}.gt_frame = [61:180];"

``root`` may be the folder holding ``UCSDped2/`` (or the archive's ``UCSD_Anomaly_Dataset.v1p2/``) or
``UCSDped2/`` itself. The macOS ``._*`` and ``.DS_Store`` files of the archive are ignored; any other
image in a ``TestNNN`` folder is refused (evaluation would read it as a frame).

``UCSDped2.m`` lists one MATLAB vector per test clip, in clip order: 1-based, inclusive ranges
(``[61:180]``), several ranges (``[1:10, 50:60]``), single frames and ``a:step:b`` are understood.
Its n-th line belongs to folder ``TestNNN`` = n: the folders must be exactly ``Test001`` ..
``TestN`` (a partial copy is refused, naming the missing clips). Frame labels come from it by default;
the release uses ``any`` of each pixel mask instead (``frame_labels="pixel"``, under which the ``.m`` may
be absent, with a warning). The two are compared at load whichever is used, and differences are logged.
The primary metric is the pooled pixel ROC-AUC.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import numpy as np

from lavida.data.video import list_frame_files
from lavida.eval.benchmark import GroundTruthError, TestVideo, VadBenchmark, labels_from_intervals
from lavida.eval.benchmarks._common import (
    MaskFiles,
    categories_from_resource,
    text_lines,
    warn_if_labels_disagree,
)

log = logging.getLogger(__name__)

# The official test set (research/vad_eval.md §1.5): 12 clips, 2,010 frames.
OFFICIAL_TEST_CLIPS = 12

FRAME_SUFFIXES = (".tif", ".tiff")
MASK_SUFFIXES = (".bmp", ".png", ".tif", ".tiff")

_GT_LINE = re.compile(r"TestVideoFile\s*\{\s*(end\s*\+\s*1|\d+)\s*\}\s*\.\s*gt_frame\s*=\s*\[(.*)\]\s*;?")
_ELEMENT = re.compile(r"(\d+)(?::(\d+))?(?::(\d+))?")


def parse_matlab_ranges(body: str, *, where: str) -> list[tuple[int, int]]:
    """A MATLAB vector of 1-based frame numbers → 0-based inclusive ``(start, end)`` intervals.

    ``"61:180"`` → ``[(60, 179)]``; ``"1:10, 50:60"`` → ``[(0, 9), (49, 59)]``; ``"5 7"`` → ``[(4, 4), (6, 6)]``;
    ``"1:2:7"`` (start:step:stop) → single frames 1, 3, 5, 7; ``""`` → ``[]``.

    Raises:
        GroundTruthError: an element is not ``a``, ``a:b`` or ``a:s:b`` with positive integers.
    """
    body = re.sub(r"\s*:\s*", ":", body.strip())
    intervals: list[tuple[int, int]] = []
    for token in (t for t in re.split(r"[,\s;]+", body) if t):
        match = _ELEMENT.fullmatch(token)
        if not match:
            raise GroundTruthError(f"{where}: '{token}' is not a MATLAB range 'a:b' of frame numbers.")
        first, second, third = (int(g) if g is not None else None for g in match.groups())
        if first < 1:
            raise GroundTruthError(f"{where}: '{token}': MATLAB frame numbers start at 1.")
        if third is not None:  # a:step:b
            if second == 0:
                raise GroundTruthError(f"{where}: '{token}' has a zero step.")
            intervals.extend((f - 1, f - 1) for f in range(first, third + 1, second))
            continue
        last = second if second is not None else first
        if last >= first:  # MATLAB's a:b is empty when b < a
            intervals.append((first - 1, last - 1))
    return intervals


def read_ucsd_frame_gt(path: Path) -> list[list[tuple[int, int]]]:
    """Per-clip 0-based inclusive anomalous intervals from ``UCSDped{1,2}.m``, in clip order.

    Raises:
        GroundTruthError: missing file, a ``gt_frame`` line that cannot be parsed, or no such line.
    """
    expected = "lines 'TestVideoFile{end+1}.gt_frame = [start:end];' (1-based, inclusive)"
    clips: dict[int, list[tuple[int, int]]] = {}
    for number, line in text_lines(path, expected=expected):
        code = line.split("%", 1)[0]  # MATLAB comment
        if "gt_frame" not in code:
            continue
        where = f"{path}, line {number}"
        match = _GT_LINE.search(code)
        if not match:
            raise GroundTruthError(f"{where}: '{line}' does not match {expected}.")
        # MATLAB's `end` of a cell array is its length, i.e. the largest index assigned so far (a cell
        # array grows to its largest index): `{2}, {end+1}, {1}` are clips 2, 3, 1.
        index = (
            max(clips, default=0) + 1 if match.group(1).replace(" ", "") == "end+1" else int(match.group(1))
        )
        if index in clips:
            raise GroundTruthError(f"{where}: clip {index} is given twice.")
        clips[index] = parse_matlab_ranges(match.group(2), where=where)
    if not clips:
        raise GroundTruthError(f"{path}: no gt_frame line found; expected {expected}.")
    if sorted(clips) != list(range(1, len(clips) + 1)):
        raise GroundTruthError(f"{path}: clips {sorted(clips)} are not numbered 1 .. {len(clips)}.")
    return [clips[i] for i in range(1, len(clips) + 1)]


def _clip_number(clip: Path) -> int:
    """``Test007`` → 7."""
    return int(clip.name[4:])


def _check_clip_numbers(clips: list[Path], frame_gt: list[list[tuple[int, int]]], matlab: Path) -> None:
    """The clip folders must be ``Test001`` .. ``TestN`` for the N ``gt_frame`` lines of ``matlab``.

    The n-th line belongs to folder n (the dataset numbers both in the same order). A missing folder (a
    partial copy) or one without a line would otherwise pair clips with another clip's line, or drop a
    clip from the test set, without a word.

    Raises:
        GroundTruthError: folders missing or without a line; the message names them.
    """
    numbers = {_clip_number(c): c for c in clips}
    expected = set(range(1, len(frame_gt) + 1))
    missing = sorted(expected - set(numbers))
    extra = sorted(set(numbers) - expected)
    if not missing and not extra:
        return
    problems = []
    if missing:
        problems.append(
            "missing: " + ", ".join(f"Test{n:03d}" for n in missing) + " (copy them from the dataset)"
        )
    if extra:
        problems.append(", ".join(numbers[n].name for n in extra) + " has no gt_frame line")
    raise GroundTruthError(
        f"{matlab}: {len(frame_gt)} gt_frame lines for {len(clips)} test clips in {matlab.parent}; the n-th "
        f"line belongs to folder TestNNN = n, so every folder Test001 .. Test{len(frame_gt):03d} is needed "
        f"and no other. {'; '.join(problems)}."
    )


def _refuse_other_images(clip: Path, images: list[Path], frames: list[Path]) -> None:
    """Refuse a clip folder whose ``images`` (all of them) are not exactly its ``.tif`` ``frames``.

    Evaluation decodes the clip with :func:`lavida.data.video.open_video`, which reads every image file
    of the folder (any of ``IMAGE_SUFFIXES``): a stray ``000_preview.png`` would be decoded as frame 0
    and shift every frame against the labels counted from the ``.tif`` files, silently.

    Raises:
        GroundTruthError: the folder holds other image files; the message names them.
    """
    if images != frames:
        others = sorted({p.name for p in images} - {p.name for p in frames})
        raise GroundTruthError(
            f"{clip}: holds image files that are not .tif frames: {', '.join(others[:10])}"
            f"{' ...' if len(others) > 10 else ''}. Evaluation reads every image of the folder as a "
            "frame, so they would shift the frames against the labels; remove them (or move them "
            "out of the folder)."
        )


class UCSDPed2(VadBenchmark):
    """UCSD Ped2 test set (12 clips, frame and pixel ground truth).

    Args:
        root: The folder holding ``UCSDped2/``, or ``UCSDped2/`` itself.
        frame_labels: ``"matlab"`` (default: ``UCSDped2.m``) or ``"pixel"`` (any pixel of the mask, as the release).
    """

    name = "ucsd_ped2"
    intervals = {"standard": 1, "lavida_official": 1}
    has_pixel_gt = True
    primary_metric = "pixel_auc"

    def __init__(self, root: str | Path, *, frame_labels: Literal["matlab", "pixel"] = "matlab") -> None:
        super().__init__(root)
        if frame_labels not in ("matlab", "pixel"):
            raise ValueError(f"UCSD Ped2: frame_labels must be 'matlab' or 'pixel', got {frame_labels!r}.")
        self.frame_labels = frame_labels
        self.test_dir = self._find_test_dir()

    @property
    def categories(self) -> list[str]:
        return categories_from_resource("ucsd_ped2_categories.txt")

    def _find_test_dir(self) -> Path:
        for base in (self.root / "UCSDped2", self.root / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped2", self.root):
            if (base / "Test").is_dir():
                if base == self.root and (
                    base.name.lower() == "ucsdped1" or (base / "Test" / "UCSDped1.m").is_file()
                ):
                    # Ped1 has the same layout but masks for a few clips only: read as Ped2, it would fail on
                    # the first clip without a mask, an error that does not say the folder is the wrong set.
                    raise FileNotFoundError(
                        f"UCSD Ped2: {self.root} is UCSD Ped1 (its Test/ belongs to UCSDped1); the paper's Tab. 2 "
                        "evaluates Ped2. Give the folder that holds UCSDped2/, or UCSDped2/ itself."
                    )
                return base / "Test"
        raise FileNotFoundError(
            f"UCSD Ped2: no UCSDped2/Test folder under {self.root}. Give the folder that holds UCSDped2/ "
            "(or UCSDped2/ itself); expected UCSDped2/Test/TestNNN/*.tif, UCSDped2/Test/TestNNN_gt/*.bmp and "
            "UCSDped2/Test/UCSDped2.m."
        )

    def _matlab_file(self) -> Path:
        default = self.test_dir / "UCSDped2.m"
        if default.is_file():
            return default
        others = sorted(p for p in self.test_dir.glob("*.m") if not p.name.startswith("."))
        return others[0] if len(others) == 1 else default  # reading the default raises the named error

    def load_videos(self) -> list[TestVideo]:
        from PIL import Image

        clips = sorted(
            (p for p in self.test_dir.iterdir() if p.is_dir() and re.fullmatch(r"Test\d+", p.name)),
            key=_clip_number,
        )
        if not clips:
            raise FileNotFoundError(f"UCSD Ped2: {self.test_dir} holds no TestNNN folders.")
        matlab = self._matlab_file()
        # The .m is read under both frame-label options: it is the only list of the test clips (a partial
        # copy is refused) and its labels are compared with the masks' either way. Only the release's
        # option (frame_labels="pixel") can do without it.
        if matlab.is_file() or self.frame_labels == "matlab":
            frame_gt = read_ucsd_frame_gt(matlab)
            _check_clip_numbers(clips, frame_gt, matlab)
        else:
            frame_gt = None
            log.warning(
                "UCSD Ped2: %s not found; the clip folders cannot be checked against its list and the frame "
                "labels (any pixel of each mask) are compared with nothing.",
                matlab,
            )
        if len(clips) != OFFICIAL_TEST_CLIPS:
            log.warning(
                "UCSD Ped2: %s holds %d test clips; the official test set has %d (2,010 frames).",
                self.test_dir,
                len(clips),
                OFFICIAL_TEST_CLIPS,
            )
        videos = []
        for clip in clips:
            images = list_frame_files(clip)  # what evaluation's open_video decodes, in its order
            frames = [p for p in images if p.suffix.lower() in FRAME_SUFFIXES]
            if not frames:
                raise FileNotFoundError(f"UCSD Ped2: {clip} holds no .tif frames.")
            _refuse_other_images(clip, images, frames)
            gt_dir = clip.with_name(clip.name + "_gt")
            if not gt_dir.is_dir():
                raise GroundTruthError(
                    f"{gt_dir}: pixel ground truth not found; expected one .bmp mask per frame of {clip}."
                )
            masks = MaskFiles(list_frame_files(gt_dir, MASK_SUFFIXES))
            if len(masks.files) != len(frames):
                raise GroundTruthError(
                    f"{gt_dir}: {len(masks.files)} masks for {len(frames)} frames in {clip}; expected one mask per frame."
                )
            pixel = masks(np.arange(len(frames)))
            pixel_labels = pixel.any(axis=(1, 2))
            with Image.open(frames[0]) as image:  # header only
                frame_size = image.size[::-1]
            if pixel.shape[1:] != frame_size:
                log.warning(
                    "%s: masks are %s but the frames are %s; pixel metrics will resize.",
                    gt_dir,
                    pixel.shape[1:],
                    frame_size,
                )
            matlab_labels = None
            if frame_gt is not None:
                number = _clip_number(clip)  # the n-th gt_frame line belongs to TestNNN = n
                where = f"{matlab}, clip {number}"
                matlab_labels = labels_from_intervals(len(frames), frame_gt[number - 1], where=where)
                if any(end >= len(frames) for _, end in frame_gt[number - 1]):
                    log.warning("%s: a range runs past the clip's %d frames; clipped.", where, len(frames))
                warn_if_labels_disagree(
                    matlab_labels,
                    pixel_labels,
                    where=f"UCSD Ped2 {clip.name}",
                    frame_source=matlab.name,
                    pixel_source="any(pixel mask)",
                    used="frame" if self.frame_labels == "matlab" else "pixel",
                )
            labels = matlab_labels if self.frame_labels == "matlab" else pixel_labels.astype(np.uint8)
            videos.append(
                TestVideo(
                    name=clip.name,
                    path=clip,
                    frame_labels=labels,
                    pixel_masks=masks,
                    meta={"gt_dir": str(gt_dir)},
                )
            )
        log.info(
            "UCSD Ped2: %d test clips (%d anomalous), %d frames",
            len(videos),
            sum(v.is_anomalous for v in videos),
            sum(v.num_frames for v in videos),
        )
        return videos
