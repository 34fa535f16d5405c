"""XD-Violence (Wu et al., ECCV 2020) test set: 800 videos, 500 violent with frame intervals.

Layout (``research/vad_eval.md`` §1.4; the release reads ``XD-Violence-test/``)::

    <root>/annotations.txt          or <root>/XD-Violence-test/annotations.txt
    <root>/videos/<name>.mp4        or <root>/XD-Violence-test/videos/<name>.mp4

``annotations.txt`` has one whitespace-separated line per violent video, ``name s1 e1 [s2 e2 ...]``
(1 to 22 intervals in the official file; the name usually without extension). Every video in
``videos/`` is a test video; one without a line is normal. The labels are encoded in the name after
``_label_`` (``..._label_B2-G-0``): A normal, B1 fighting, B2 shooting, B4 riot, B5 abuse, B6 car
accident, G explosion, 0 = none; they go into ``meta`` only.

Ground-truth conventions: 0-based frame indices of the decoded frames (24 fps), ends **inclusive** —
the release (``dataset/video/XDViolence.py``) and LAVAD read them so, the RTFM/VadCLIP family
(``list/make_gt_xd.py``) as exclusive; ``end_inclusive=False`` gives the latter (≤ 1 frame per
interval). The primary metric is frame-level AP (the paper; the release computes AUC by mistake).
"""

from __future__ import annotations

import logging
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

# The label codes of the file names (XD-Violence README; also the release's dataset/video/XDViolence.py).
LABELS = {
    "A": "normal",
    "B1": "fighting",
    "B2": "shooting",
    "B4": "riot",
    "B5": "abuse",
    "B6": "car accident",
    "G": "explosion",
}


@dataclass(frozen=True)
class XdAnnotation:
    """One line of ``annotations.txt``: video name (no extension), inclusive intervals, 1-based line number."""

    name: str
    intervals: tuple[tuple[int, int], ...]
    line: int


def read_xd_annotations(path: Path) -> dict[str, XdAnnotation]:
    """Parse ``annotations.txt`` into ``{name: annotation}``.

    Raises:
        GroundTruthError: missing file; a line without frame numbers or with an odd count; a reversed or
            negative interval; a duplicated video.
    """
    expected = "lines 'name start1 end1 [start2 end2 ...]' (an even number of frame numbers)"
    annotations: dict[str, XdAnnotation] = {}
    for number, line in text_lines(path, expected=expected):
        where = f"{path}, line {number}"
        fields = line.split()
        numbers = fields[1:]
        if not numbers or len(numbers) % 2:
            raise GroundTruthError(
                f"{where}: {len(numbers)} frame numbers after the name; expected an even number (start/end pairs)."
            )
        name = strip_video_suffix(fields[0].replace("\\", "/").rsplit("/", 1)[-1])
        values = [parse_frame_number(v, where=where) for v in numbers]
        intervals = tuple(zip(values[0::2], values[1::2], strict=True))
        for start, end in intervals:
            if start < 0 or end < start:
                raise GroundTruthError(
                    f"{where}: interval [{start}, {end}] is invalid; expected 0 ≤ start ≤ end."
                )
        if name in annotations:
            raise GroundTruthError(
                f"{where}: '{name}' is annotated twice (first on line {annotations[name].line})."
            )
        annotations[name] = XdAnnotation(name=name, intervals=intervals, line=number)
    return annotations


def label_codes(name: str) -> list[str]:
    """The label codes of an XD-Violence file name (``..._label_B2-G-0`` → ``["B2", "G"]``); [] if none."""
    if "_label_" not in name:
        return []
    return [code for code in name.rsplit("_label_", 1)[1].split("-") if code and code != "0"]


def _video_meta(name: str, ann: XdAnnotation | None) -> dict:
    """What the file name and the annotation file say of a video (present or missing)."""
    codes = label_codes(name)
    return {
        "label_codes": codes,
        "labels": [LABELS.get(c, c) for c in codes] or ["normal"],
        "annotated": ann is not None,
        "intervals": [list(i) for i in ann.intervals] if ann else [],
    }


# The official test split (vad_eval.md §1.4): annotations.txt lists its 500 violent videos; its 300 normal
# ones (``_label_A``) are listed nowhere, so only their number can show that some are missing.
OFFICIAL_VIOLENT = 500
OFFICIAL_NORMAL = 300


class XDViolence(VadBenchmark):
    """XD-Violence test set (500 violent + 300 normal videos).

    Args:
        root: The folder holding ``annotations.txt`` and ``videos/``, or the folder holding ``XD-Violence-test/``.
        end_inclusive: Treat interval ends as inclusive (default) or exclusive (RTFM/VadCLIP reading).
        skip_missing: Skip annotated videos without a file, and normal videos missing from the official
            split (counted, as their names are listed nowhere), logged, instead of failing.
        workers: Threads for opening videos to count their frames (default: up to 8).
    """

    name = "xd_violence"
    intervals = {"standard": 32, "lavida_official": 128}
    has_pixel_gt = False
    primary_metric = "frame_ap"

    def __init__(
        self,
        root: str | Path,
        *,
        end_inclusive: bool = True,
        skip_missing: bool = False,
        workers: int | None = None,
    ) -> None:
        super().__init__(root)
        nested = self.root / "XD-Violence-test"
        self.test_dir = (
            nested if not (self.root / "annotations.txt").is_file() and nested.is_dir() else self.root
        )
        self.end_inclusive = end_inclusive
        self.skip_missing = skip_missing
        self.workers = workers

    @property
    def categories(self) -> list[str]:
        return categories_from_resource("xd_violence_categories.txt")

    def load_videos(self) -> list[TestVideo]:
        annotation_file = self.test_dir / "annotations.txt"
        annotations = read_xd_annotations(annotation_file)
        video_dir = self.test_dir / "videos"
        if not video_dir.is_dir():
            raise FileNotFoundError(
                f"XD-Violence: {video_dir} not found. Expected <root>/videos/*.mp4 and <root>/annotations.txt "
                "(or both inside <root>/XD-Violence-test/)."
            )
        files = {
            strip_video_suffix(p.name): p
            for p in sorted(video_dir.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(VIDEO_SUFFIXES)
        }
        missing = sorted(set(annotations) - set(files))
        if missing:
            listed = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            if not self.skip_missing:
                raise FileNotFoundError(
                    f"XD-Violence: {len(missing)} videos annotated in {annotation_file} are not in {video_dir}: "
                    f"{listed}. Copy them there, or pass skip_missing=True to evaluate the others "
                    "(lavida-eval: +benchmark.options.skip_missing=true)."
                )
            log.warning("XD-Violence: skipping %d annotated videos without a file: %s", len(missing), listed)
        self.missing = tuple(
            missing_video(name, video_dir / f"{name}.mp4", **_video_meta(name, annotations[name]))
            for name in missing
        ) + self._missing_normal_videos(files, annotations, annotation_file, video_dir)
        if not files:
            raise FileNotFoundError(f"XD-Violence: {video_dir} holds no video files.")

        names = sorted(files)
        probed = probe_videos([files[n] for n in names], workers=self.workers)
        shift = 0 if self.end_inclusive else 1

        def where_of(ann: XdAnnotation) -> str:
            return f"{annotation_file}, line {ann.line}"

        videos = []
        for name, (num_frames, fps) in zip(names, probed, strict=True):
            ann = annotations.get(name)
            codes = label_codes(name)
            unknown = [c for c in codes if c not in LABELS]
            if unknown:
                log.warning("XD-Violence %s: unknown label codes %s in the name.", name, unknown)
            violent_name = any(c != "A" for c in codes)
            if ann is None and violent_name:
                log.warning(
                    "XD-Violence %s: labelled violent (%s) but has no annotation line; scored as all normal.",
                    name,
                    codes,
                )
            if ann is not None and codes == ["A"]:
                log.warning(
                    "%s: '%s' is labelled normal (A) but has intervals; the intervals are used.",
                    where_of(ann),
                    name,
                )
            intervals = [] if ann is None else [(s, e - shift) for s, e in ann.intervals if e - shift >= s]
            where = where_of(ann) if ann else str(annotation_file)
            videos.append(
                TestVideo(
                    name=name,
                    path=files[name],
                    frame_labels=labels_from_intervals(num_frames, intervals, where=where),
                    fps=fps,
                    meta=_video_meta(name, ann),
                )
            )
        log.info(
            "XD-Violence: %d test videos (%d annotated), %d frames",
            len(videos),
            sum(v.meta["annotated"] for v in videos),
            sum(v.num_frames for v in videos),
        )
        return videos

    def _missing_normal_videos(
        self, files: dict[str, Path], annotations: dict, annotation_file: Path, video_dir: Path
    ) -> tuple[TestVideo, ...]:
        """Stand-ins for the official split's normal videos that are not in ``video_dir``.

        Only where ``annotation_file`` is the official one (its 500 violent videos): then the split has 300
        normal videos, and fewer normal files (``_label_A``, no annotation line) mean some are missing.
        Their names are unknown, so each is recorded under a placeholder name, to be counted as left out.

        Raises:
            FileNotFoundError: normal videos are missing and ``skip_missing`` is False.
        """
        if len(annotations) != OFFICIAL_VIOLENT:
            # Another list than the official one: its normal videos cannot be counted, nor the run compared.
            log.warning(
                "XD-Violence: %s lists %d violent test videos; the official test set has %d (%d violent + %d "
                "normal), so the numbers are not comparable with published ones.",
                annotation_file,
                len(annotations),
                OFFICIAL_VIOLENT + OFFICIAL_NORMAL,
                OFFICIAL_VIOLENT,
                OFFICIAL_NORMAL,
            )
            return ()
        found = sum(1 for name in files if name not in annotations and label_codes(name) == ["A"])
        absent = OFFICIAL_NORMAL - found
        if absent <= 0:
            return ()
        message = (
            f"XD-Violence: {video_dir} holds {found} normal test videos (names ending in _label_A), but the "
            f"official test split, whose {OFFICIAL_VIOLENT} violent videos {annotation_file} lists, has "
            f"{OFFICIAL_NORMAL}"
        )
        if not self.skip_missing:
            raise FileNotFoundError(
                f"{message}. Copy the {absent} missing ones there, or pass skip_missing=True to evaluate the "
                "others (lavida-eval: +benchmark.options.skip_missing=true)."
            )
        log.warning("%s; counting the %d missing ones as left out.", message, absent)
        return tuple(
            missing_video(
                f"<normal video {k + 1} of {absent} not found>",
                video_dir,
                **_video_meta("_label_A", None),
            )
            for k in range(absent)
        )
