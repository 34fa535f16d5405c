"""UCF-Crime (Sultani et al., CVPR 2018) test set: 290 videos with temporal anomaly annotations.

Layout (the official archive; ``research/vad_eval.md`` §1.3)::

    <root>/Temporal_Anomaly_Annotation_for_Testing_Videos.txt
    <root>/Anomaly-Videos/<Class>/<name>.mp4          (or the archive's Anomaly-Videos-Part-1 .. -4)
    <root>/Testing_Normal_Videos_Anomaly/<name>.mp4

The annotation file has one whitespace-separated line per test video, ``name class s1 e1 s2 e2``
(e.g. ``Abuse028_x264.mp4  Abuse  165  240  -1  -1``): up to two anomalous intervals, ``-1 -1`` for an
absent one, class ``Normal`` for the 150 normal videos. Names with or without ``.mp4`` and with a
leading folder (``Arson/Arson022_x264.mp4``) are accepted; lines may carry more than two pairs. The
RTFM-style variant with the frame count before the class (``Arson/Arson022_x264.mp4 8640 Arson 3500
4000 -1 -1``, quoted in pipixin321/HolmesVAU#11) is read too, and its count is compared with the
decoder's. A file listing other than the official 290 videos (140 anomalous + 150 normal) is logged.

Ground-truth conventions: frame numbers are 0-based indices of the decoded frames and both ends are
**inclusive** (the release, LAVAD and EventVAD read them so; VadCLIP's ``make_gt_ucf.py`` uses an
exclusive end — at most one frame per interval differs); ``end_inclusive=False`` gives the latter.
The frame count is the decoder's (``lavida.data.video.open_video``). There is no pixel ground truth.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lavida.data.video import VIDEO_SUFFIXES
from lavida.eval.benchmark import (
    GroundTruthError,
    TestVideo,
    VadBenchmark,
    labels_from_intervals,
    missing_video,
)
from lavida.eval.benchmarks._common import (
    categories_from_resource,
    parse_frame_number,
    probe_videos,
    strip_video_suffix,
    text_lines,
)

log = logging.getLogger(__name__)

ANNOTATION_FILE = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
NORMAL_CLASS = "normal"
# The official test split (vad_eval.md §1.3): the annotation file lists 140 anomalous and 150 normal videos.
OFFICIAL_ANOMALOUS, OFFICIAL_NORMAL = 140, 150


@dataclass(frozen=True)
class UcfAnnotation:
    """One line of the temporal annotation file.

    Attributes:
        name: Video name without extension (``Abuse028_x264``).
        label: The class column (``Abuse``, ``Normal``, ...).
        intervals: ``[(start, end), ...]`` present intervals, inclusive, 0-based.
        line: 1-based line number in the file.
        frames: The video's frame count where the line gives one (the RTFM-style variant), else None.
    """

    name: str
    label: str
    intervals: tuple[tuple[int, int], ...]
    line: int
    frames: int | None = None


def read_ucf_annotations(path: Path) -> list[UcfAnnotation]:
    """Parse ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt``.

    Raises:
        GroundTruthError: missing file; a line without a class and an even number (≥ 2) of frame numbers
            (a frame count before the class excepted);
            a half-absent pair (one ``-1``); a reversed interval; a duplicated video.
    """
    expected = (
        "lines 'name class start1 end1 start2 end2' (-1 -1 for an absent interval), or "
        "'name frames class start1 end1 ...'"
    )
    seen: dict[str, int] = {}
    annotations = []
    for number, line in text_lines(path, expected=expected):
        where = f"{path}, line {number}"
        fields = line.split()
        frames = None
        if len(fields) > 2 and fields[1].isascii() and fields[1].isdigit() and not _is_number(fields[2]):
            # RTFM-style: the frame count sits between the name and the class (vad_eval.md §1.3).
            frames, fields = int(fields[1]), [fields[0], *fields[2:]]
        numbers = fields[2:]
        if len(fields) < 4 or len(numbers) % 2:
            raise GroundTruthError(f"{where}: '{line}' does not match {expected}.")
        name = strip_video_suffix(fields[0].replace("\\", "/").rsplit("/", 1)[-1])
        values = [parse_frame_number(v, where=where) for v in numbers]
        intervals = []
        for start, end in zip(values[0::2], values[1::2], strict=True):
            if start == -1 and end == -1:
                continue
            if start < 0 or end < 0:
                raise GroundTruthError(
                    f"{where}: interval [{start}, {end}] is half absent; use '-1 -1' for no interval."
                )
            if end < start:
                raise GroundTruthError(f"{where}: interval [{start}, {end}] ends before it starts.")
            intervals.append((start, end))
        if name in seen:
            raise GroundTruthError(f"{where}: '{name}' is annotated twice (first on line {seen[name]}).")
        seen[name] = number
        annotations.append(
            UcfAnnotation(name=name, label=fields[1], intervals=tuple(intervals), line=number, frames=frames)
        )
    if not annotations:
        raise GroundTruthError(f"{path}: the file holds no annotation; expected {expected}.")
    return annotations


def _is_number(token: str) -> bool:
    """Whether ``token`` reads as a number (a frame number or count, not a class name)."""
    try:
        float(token)
    except ValueError:
        return False
    return True


def index_videos(folders: Iterable[Path]) -> dict[str, list[Path]]:
    """``{name without extension: [paths]}`` of the video files directly inside ``folders``."""
    index: dict[str, list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if (
                entry.is_file()
                and not entry.name.startswith(".")
                and entry.name.lower().endswith(VIDEO_SUFFIXES)
            ):
                index.setdefault(strip_video_suffix(entry.name), []).append(Path(entry.path))
    return index


class UCFCrime(VadBenchmark):
    """UCF-Crime test set (140 anomalous + 150 normal videos).

    Args:
        root: The dataset folder (holding the annotation file and the video folders).
        annotation_file: The temporal annotation file, if it is not ``<root>/Temporal_Anomaly_...txt``.
        end_inclusive: Treat interval ends as inclusive (default) or exclusive (VadCLIP's reading).
        skip_missing: Skip annotated videos that are not found (logged) instead of failing.
        workers: Threads for opening videos to count their frames (default: up to 8).
    """

    name = "ucf_crime"
    intervals = {"standard": 32, "lavida_official": 128}
    has_pixel_gt = False
    primary_metric = "frame_auc_micro"

    def __init__(
        self,
        root: str | Path,
        *,
        annotation_file: str | Path | None = None,
        end_inclusive: bool = True,
        skip_missing: bool = False,
        workers: int | None = None,
    ) -> None:
        super().__init__(root)
        self.annotation_file = Path(annotation_file) if annotation_file else self._find_annotation_file()
        self.end_inclusive = end_inclusive
        self.skip_missing = skip_missing
        self.workers = workers

    @property
    def categories(self) -> list[str]:
        return categories_from_resource("ucf_crime_categories.txt")

    def _find_annotation_file(self) -> Path:
        """``<root>/Temporal_Anomaly_...txt``, matched case-insensitively (the archive spells it both ways)."""
        default = self.root / ANNOTATION_FILE
        if default.is_file():
            return default
        for entry in self.root.iterdir():
            if entry.is_file() and entry.name.lower() == ANNOTATION_FILE.lower():
                return entry
        return default  # reading it raises the error that names the expected file

    def video_folders(self) -> list[Path]:
        """Where videos are looked for: the root, ``Testing_Normal_Videos_Anomaly``, every
        ``Anomaly-Videos*`` folder (``Anomaly-Videos``, ``Anomaly-Videos-Part-1`` ...) and their class sub-folders."""
        folders = [self.root, self.root / "Testing_Normal_Videos_Anomaly"]
        for anomaly_dir in sorted(self.root.glob("Anomaly[-_]Videos*")):
            if anomaly_dir.is_dir():
                folders.append(anomaly_dir)
                folders.extend(sorted(p for p in anomaly_dir.iterdir() if p.is_dir()))
        return folders

    def load_videos(self) -> list[TestVideo]:
        annotations = read_ucf_annotations(self.annotation_file)
        normal = sum(ann.label.lower() == NORMAL_CLASS for ann in annotations)
        if (len(annotations) - normal, normal) != (OFFICIAL_ANOMALOUS, OFFICIAL_NORMAL):
            # Videos missing on disk are counted by name against this file; a shortened file cannot be.
            log.warning(
                "UCF-Crime: %s lists %d test videos (%d anomalous, %d normal); the official test set has "
                "%d (%d + %d), so the numbers are not comparable with published ones.",
                self.annotation_file,
                len(annotations),
                len(annotations) - normal,
                normal,
                OFFICIAL_ANOMALOUS + OFFICIAL_NORMAL,
                OFFICIAL_ANOMALOUS,
                OFFICIAL_NORMAL,
            )
        index = index_videos(self.video_folders())
        found: list[tuple[UcfAnnotation, Path]] = []
        missing = []
        for ann in annotations:
            paths = index.get(ann.name, [])
            if not paths:
                missing.append(ann)
                continue
            found.append((ann, self._choose(ann, paths)))
        if missing:
            listed = ", ".join(a.name for a in missing[:10]) + (" ..." if len(missing) > 10 else "")
            if not self.skip_missing:
                raise FileNotFoundError(
                    f"UCF-Crime: {len(missing)} of {len(annotations)} videos annotated in {self.annotation_file} "
                    f"were not found: {listed}. Expected them under {self.root}/Anomaly-Videos/<Class>/ (or "
                    f"Anomaly-Videos-Part-*/<Class>/) and {self.root}/Testing_Normal_Videos_Anomaly/; pass "
                    "skip_missing=True to evaluate the others (lavida-eval: +benchmark.options.skip_missing=true)."
                )
            log.warning(
                "UCF-Crime: skipping %d annotated videos that were not found: %s", len(missing), listed
            )
        self.missing = tuple(
            missing_video(ann.name, self._expected_path(ann), **self._annotation_meta(ann)) for ann in missing
        )

        probed = probe_videos([p for _, p in found], workers=self.workers)
        shift = 0 if self.end_inclusive else 1
        videos = []
        for (ann, path), (num_frames, fps) in zip(found, probed, strict=True):
            intervals = [(s, e - shift) for s, e in ann.intervals if e - shift >= s]
            where = f"{self.annotation_file}, line {ann.line}"
            if ann.frames is not None and ann.frames != num_frames:
                log.warning(
                    "%s: the line gives %d frames but the decoder reads %d from %s; the labels have the "
                    "decoder's length (the frames evaluation sees).",
                    where,
                    ann.frames,
                    num_frames,
                    path,
                )
            for start, end in intervals:
                if end >= num_frames:
                    log.warning(
                        "%s: interval [%d, %d] runs past the last frame %d.",
                        where,
                        start,
                        end,
                        num_frames - 1,
                    )
            if ann.label.lower() == NORMAL_CLASS and intervals:
                log.warning("%s: a 'Normal' video with anomalous intervals; the intervals are used.", where)
            if ann.label.lower() != NORMAL_CLASS and not ann.intervals:
                log.warning(
                    "%s: class '%s' but no interval; the video is scored as all normal.", where, ann.label
                )
            videos.append(
                TestVideo(
                    name=ann.name,
                    path=path,
                    frame_labels=labels_from_intervals(num_frames, intervals, where=where),
                    fps=fps,
                    meta=self._annotation_meta(ann),
                )
            )
        videos.sort(key=lambda v: v.name)
        log.info(
            "UCF-Crime: %d test videos (%d anomalous), %d frames",
            len(videos),
            sum(v.is_anomalous for v in videos),
            sum(v.num_frames for v in videos),
        )
        return videos

    @staticmethod
    def _annotation_meta(ann: UcfAnnotation) -> dict:
        """What the annotation file says of a video (present or missing)."""
        return {
            "class": ann.label,
            "intervals": [list(i) for i in ann.intervals],
            "annotated_frames": ann.frames,
        }

    def _expected_path(self, ann: UcfAnnotation) -> Path:
        """Where a video not found was expected (the official archive's layout)."""
        if ann.label.lower() == NORMAL_CLASS:
            return self.root / "Testing_Normal_Videos_Anomaly" / f"{ann.name}.mp4"
        return self.root / "Anomaly-Videos" / ann.label / f"{ann.name}.mp4"

    def _choose(self, ann: UcfAnnotation, paths: list[Path]) -> Path:
        """The copy in the expected folder when a name occurs more than once."""
        if len(paths) == 1:
            return paths[0]
        expected = "testing_normal_videos_anomaly" if ann.label.lower() == NORMAL_CLASS else ann.label.lower()
        preferred = [p for p in paths if p.parent.name.lower() == expected] or paths
        log.info("UCF-Crime: '%s' found %d times; using %s", ann.name, len(paths), preferred[0])
        return preferred[0]
