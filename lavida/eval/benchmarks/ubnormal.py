"""UBnormal (Acsintoae et al., CVPR 2022) in its official layout: test or validation split.

Layout (lilygeorgescu/UBnormal; ``research/vad_eval.md`` §1.1)::

    <root>/Scene<N>/<video>.mp4
    <root>/Scene<N>/<video>_annotations/<video>_<%04d>_gt.png     one object-id map per frame, 0 = background
    <root>/Scene<N>/<video>_annotations/<video>_tracks.txt        abnormal videos: "obj_id,start,end" (inclusive)
    <root>/Scene<N>/<video>_annotations/<video>_new_tracks.txt    corrected tracks, for RBDC/TBDC only (see below)

``N`` is the third ``_``-separated token of the name (``abnormal_scene_12_scenario_3`` → ``Scene12``).
The split is the authors' name lists (``scripts/{abnormal,normal}_{test,validation}_video_names.txt``,
shipped in ``lavida/eval/resources/ubnormal``): 158 + 53 test videos, 38 + 26 validation videos.

Ground truth:

- frame count: the number of ``_gt.png`` maps (decoders disagree on UBnormal's mp4s: decord counts
  92,640 test frames, OpenCV 89,908 — ``research/vad_eval.md`` §1.1 pitfall); a video without maps
  (allowed for normal videos only) uses the decoder's count;
- frame labels: 1 inside any anomalous object's inclusive ``[start, end]``
  (``scripts/write_frame_level_ground_truth.py``);
- pixel labels: pixels whose id is an anomalous object's id, on frames inside that object's interval
  (the release's ``dataset/video/UBnormal.py``); read lazily from the maps;
- RBDC/TBDC tracks: computed **at load** from the maps with :func:`lavida.metrics.tracks_from_id_maps`
  (only the maps inside anomaly intervals are read, in a thread pool); ``with_tracks=False`` skips it.
  Only these read ``_new_tracks.txt`` where a video has one (``scripts/create_tracks_for_tbdc_rbdc.py``);
  the frame and pixel labels always come from ``_tracks.txt``, as in
  ``scripts/write_frame_level_ground_truth.py`` and the release's loader.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from lavida.data.video import pillow_read_errors
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
    resource,
    stack_masks,
    text_lines,
)
from lavida.metrics.tracks import BoxRule, tracks_from_id_maps

log = logging.getLogger(__name__)

Split = Literal["test", "validation"]

# (abnormal, normal) videos of the authors' split lists (scripts/*_video_names.txt, research/vad_eval.md §1.1).
OFFICIAL_SIZES = {"test": (158, 53), "validation": (38, 26)}

# UBnormal is rendered at 30 fps (maintainer, lilygeorgescu/UBnormal#20); used when no decoder is opened.
UBNORMAL_FPS = 30.0


def read_id_map(path: Path) -> np.ndarray:
    """One ``_gt.png`` object-id map as ``(H, W)`` integers (0 = background).

    The official maps are 8-bit greyscale and are read as stored. A colour map (the dataset has none)
    keeps its first channel. That is not what the release does: its loader reads the maps with
    ``cv2.IMREAD_GRAYSCALE``, which turns a colour map into luminance (its first-channel branch is never
    reached), so ids would differ on a colour map; on the official greyscale maps the two agree.

    The ids are the samples as stored, whatever the PNG's bit depth. PNG optimisers (optipng, oxipng,
    pngcrush) losslessly rewrite a map whose ids fit in 1, 2 or 4 bits at that depth, and Pillow decodes
    such a file as a bool array (1 bit) or scales its samples to 0..255 (id 3 at 4 bits reads as 51), so
    a re-compressed copy of the dataset would lose every anomalous id without a word. Those samples are
    mapped back here (the official maps are 8-bit, where nothing changes).

    Raises:
        GroundTruthError: the file cannot be read (any of Pillow's errors for a corrupt file,
            SyntaxError and DecompressionBombError included).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            # The raw mode of the first tile says how the samples are packed ("L;4" = 4-bit greyscale);
            # it is only known before the pixels are loaded.
            rawmode = image.tile[0][3] if image.tile else None
            array = np.asarray(image)
    except pillow_read_errors() as error:
        raise _unreadable_map(path, error) from error
    if array.dtype == bool:
        return array.astype(np.uint8)
    if isinstance(rawmode, str) and rawmode in _SCALED_GREY:
        # Pillow replicates the bits (v · 0x55 for 2 bits, v · 0x11 for 4), so the division is exact.
        return array // np.uint8(_SCALED_GREY[rawmode])
    return array[..., 0] if array.ndim == 3 else array


# Pillow's scale factor for greyscale PNG samples stored at fewer than 8 bits (1-bit maps decode as bool).
_SCALED_GREY = {"L;2": 0x55, "L;4": 0x11}


def id_map_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an object-id map, from its header only.

    Raises:
        GroundTruthError: the header cannot be read.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except pillow_read_errors() as error:
        raise _unreadable_map(path, error) from error
    return height, width


def _unreadable_map(path: Path, error: BaseException) -> GroundTruthError:
    return GroundTruthError(
        f"{path}: cannot read the object-id map ({type(error).__name__}: {error}); the file is corrupt "
        "or not an image: replace it with a good copy from the dataset."
    )


class IdMapMasks:
    """Pixel ground truth of one UBnormal video: anomalous objects' pixels inside their intervals.

    Args:
        files: The video's id maps, one per frame, in frame order.
        anomalies: ``(K, 3)`` rows ``(object_id, start, end)``, inclusive; empty for a normal video.
    """

    def __init__(self, files: Sequence[Path], anomalies: np.ndarray) -> None:
        self.files = list(files)
        self.anomalies = np.asarray(anomalies, dtype=np.int64).reshape(-1, 3)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        """``(n,)`` frame indices → ``(n, H, W)`` bool masks."""
        masks, files = [], []
        for frame in np.asarray(indices).reshape(-1).tolist():
            active = self.anomalies[(self.anomalies[:, 1] <= frame) & (frame <= self.anomalies[:, 2]), 0]
            if active.size == 0:
                masks.append(np.zeros(id_map_size(self.files[frame]), dtype=bool))
            else:
                masks.append(np.isin(read_id_map(self.files[frame]), active))
            files.append(self.files[frame])
        return stack_masks(masks, files, what="object-id map")


class BlankMasks:
    """All-normal pixel ground truth at the video's frame size (a normal video without id maps)."""

    def __init__(self, video: Path) -> None:
        self.video = video
        self._size: tuple[int, int] | None = None

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        if self._size is None:
            from lavida.data.video import open_video

            source = open_video(self.video)
            self._size = (source.height, source.width)
        return np.zeros((np.asarray(indices).size, *self._size), dtype=bool)


def is_abnormal_video(video: TestVideo) -> bool:
    """The release's test filter: only videos from the abnormal list (``only_anomaly_video=True``)."""
    return bool(video.meta.get("abnormal", False))


class UBnormal(VadBenchmark):
    """UBnormal test (default) or validation split.

    Args:
        root: The folder holding ``Scene1`` ... ``Scene29``.
        split: ``"test"`` (158 abnormal + 53 normal videos) or ``"validation"`` (38 + 26; T-VAD reports on it).
        split_lists: A folder with ``{abnormal,normal}_<split>_video_names.txt`` to use instead of the
            shipped official lists (e.g. ``<root>/scripts``).
        with_tracks: Compute the RBDC/TBDC ground-truth tracks at load (reads the maps inside anomaly intervals).
        track_box: How a track's box is taken from an id map: ``"union"`` (default) or the authors'
            ``"largest_component"`` (see :func:`lavida.metrics.object_boxes`).
        skip_missing: Skip listed videos whose ``.mp4`` is absent (logged) instead of failing.
        workers: Threads for reading maps and opening videos (default: up to 8).
    """

    name = "ubnormal"
    intervals = {"standard": 4, "lavida_official": 4}
    has_pixel_gt = True
    primary_metric = "frame_auc_micro"

    def __init__(
        self,
        root: str | Path,
        *,
        split: Split = "test",
        split_lists: str | Path | None = None,
        with_tracks: bool = True,
        track_box: BoxRule = "union",
        skip_missing: bool = False,
        workers: int | None = None,
    ) -> None:
        super().__init__(root)
        if split not in ("test", "validation"):
            raise ValueError(f"UBnormal: split must be 'test' or 'validation', got {split!r}.")
        if track_box not in get_args(BoxRule):
            # Checked here: the tracks are built only after every video's maps are listed.
            raise ValueError(
                f"UBnormal: track_box must be one of {', '.join(get_args(BoxRule))}, got {track_box!r} "
                "(e.g. +benchmark.options.track_box=largest_component)."
            )
        self.split = split
        self.split_lists = Path(split_lists) if split_lists is not None else resource("ubnormal")
        self.with_tracks = with_tracks
        self.track_box = track_box
        self.skip_missing = skip_missing
        self.workers = workers or min(8, os.cpu_count() or 1)

    @property
    def categories(self) -> list[str]:
        return categories_from_resource("ubnormal_categories.txt")

    def official_filter(self) -> Callable[[TestVideo], bool]:
        return is_abnormal_video

    def video_names(self) -> dict[str, bool]:
        """``{name: is_abnormal}`` of the split, from the two name lists.

        Raises:
            GroundTruthError: a list is missing, a name appears twice, or a name has no scene number.
        """
        names: dict[str, bool] = {}
        for kind in ("abnormal", "normal"):
            path = self.split_lists / f"{kind}_{self.split}_video_names.txt"
            for number, line in text_lines(path, expected="one UBnormal video name per line"):
                if line in names:
                    raise GroundTruthError(f"{path}, line {number}: '{line}' is listed twice in the split.")
                tokens = line.split("_")
                if len(tokens) < 3 or not tokens[2].isdigit():
                    raise GroundTruthError(
                        f"{path}, line {number}: '{line}' is not a UBnormal video name; expected "
                        "'<abnormal|normal>_scene_<N>_scenario_...'."
                    )
                names[line] = kind == "abnormal"
        # Other lists (an older copy, a subset) give numbers that cannot be compared with published ones,
        # which is easy to miss when the run itself succeeds: say so, as the other loaders do.
        abnormal = sum(names.values())
        official_abnormal, official_normal = OFFICIAL_SIZES[self.split]
        if (abnormal, len(names) - abnormal) != (official_abnormal, official_normal):
            log.warning(
                "UBnormal: the %s lists in %s name %d videos (%d abnormal, %d normal); the official %s split "
                "has %d (%d + %d).",
                self.split,
                self.split_lists,
                len(names),
                abnormal,
                len(names) - abnormal,
                self.split,
                official_abnormal + official_normal,
                official_abnormal,
                official_normal,
            )
        return names

    def load_videos(self) -> list[TestVideo]:
        entries = []
        missing = []
        for name, abnormal in sorted(self.video_names().items()):
            scene_dir = self.root / f"Scene{name.split('_')[2]}"
            video = scene_dir / f"{name}.mp4"
            if not video.is_file():
                missing.append(missing_video(name, video, **self._list_meta(name, abnormal)))
                continue
            entries.append((name, abnormal, video, scene_dir / f"{name}_annotations"))
        self._handle_missing(missing)

        # Frame counts: the id maps where present, else the decoder (opened in parallel).
        maps = {name: _id_map_files(ann_dir, name) for name, _, _, ann_dir in entries}
        unmapped = [video for name, _, video, _ in entries if not maps[name]]
        probed = dict(zip(unmapped, probe_videos(unmapped, workers=self.workers), strict=True))

        videos = []
        for name, abnormal, video, ann_dir in entries:
            files = maps[name]
            if abnormal and not files:
                raise GroundTruthError(
                    f"{ann_dir}: abnormal video '{name}' has no object-id maps; expected "
                    f"{ann_dir / (name + '_0000_gt.png')} and one map per frame."
                )
            num_frames, fps = (len(files), UBNORMAL_FPS) if files else probed[video]
            anomalies = track_anomalies = np.zeros((0, 3), dtype=np.int64)
            tracks_file = region_tracks_file = None
            if abnormal:
                tracks_file = _tracks_file(ann_dir, name)
                anomalies = _read_anomalies(tracks_file, num_frames)
                region_tracks_file = _corrected_tracks_file(tracks_file)
                track_anomalies = (
                    anomalies
                    if region_tracks_file is None
                    else _read_anomalies(region_tracks_file, num_frames)
                )
            labels = labels_from_intervals(
                num_frames, [(int(s), int(e)) for _, s, e in anomalies], where=str(tracks_file)
            )
            videos.append(
                TestVideo(
                    name=name,
                    path=video,
                    frame_labels=labels,
                    fps=fps,
                    pixel_masks=IdMapMasks(files, anomalies) if files else BlankMasks(video),
                    meta={
                        **self._list_meta(name, abnormal),
                        "anomalies": anomalies.tolist(),
                        "tracks_file": str(tracks_file) if tracks_file else None,
                        # RBDC/TBDC only: the corrected tracks where the video has them.
                        "track_anomalies": track_anomalies.tolist(),
                        "region_tracks_file": str(region_tracks_file or tracks_file) if tracks_file else None,
                        "frames_from": "id_maps" if files else "decoder",
                    },
                )
            )
        if self.with_tracks:
            tracks = self._tracks(
                [
                    (
                        maps[v.name],
                        np.asarray(v.meta["track_anomalies"]).reshape(-1, 3),
                        v.meta["region_tracks_file"] or v.name,
                    )
                    for v in videos
                ]
            )
            videos = [dataclasses.replace(v, tracks=t) for v, t in zip(videos, tracks, strict=True)]
        log.info(
            "UBnormal %s: %d videos (%d abnormal), %d frames",
            self.split,
            len(videos),
            sum(v.meta["abnormal"] for v in videos),
            sum(v.num_frames for v in videos),
        )
        return videos

    def _list_meta(self, name: str, abnormal: bool) -> dict:
        """What the split lists say of a video: the meta a video filter may read (present or missing)."""
        return {"scene": int(name.split("_")[2]), "abnormal": abnormal, "split": self.split}

    def _handle_missing(self, missing: list[TestVideo]) -> None:
        self.missing = tuple(missing)
        if not missing:
            return
        listed = ", ".join(str(v.path) for v in missing[:10]) + (" ..." if len(missing) > 10 else "")
        if not self.skip_missing:
            raise FileNotFoundError(
                f"UBnormal {self.split}: {len(missing)} listed videos are missing under {self.root}: {listed}. "
                "Extract every Scene<N> folder of the dataset there, or pass skip_missing=True to evaluate "
                "the others (lavida-eval: +benchmark.options.skip_missing=true)."
            )
        log.warning("UBnormal %s: skipping %d missing videos: %s", self.split, len(missing), listed)

    def _tracks(self, items: list[tuple[list[Path], np.ndarray, str]]) -> list[np.ndarray]:
        """RBDC/TBDC tracks, ``(R, 6)`` rows per video, from ``(id-map files, anomalies, source file)``."""

        def one(item: tuple[list[Path], np.ndarray, str]) -> np.ndarray:
            files, anomalies, where = item
            if anomalies.size == 0:
                return np.zeros((0, 6), dtype=np.int64)
            return tracks_from_id_maps(
                lambda f: read_id_map(files[f]), anomalies, box=self.track_box, where=where
            )

        with ThreadPoolExecutor(max_workers=self.workers) as pool:  # PNG decoding releases the GIL
            return list(pool.map(one, items))


def _id_map_files(ann_dir: Path, name: str) -> list[Path]:
    """``<name>_<%04d>_gt.png`` files of an annotation folder in frame order; [] if there is none.

    Raises:
        GroundTruthError: the numbers are not exactly 0 .. n-1 (a map is missing).
    """
    if not ann_dir.is_dir():
        return []
    pattern = re.compile(re.escape(name) + r"_(\d+)_gt\.png")
    found: dict[int, Path] = {}
    for path in ann_dir.iterdir():
        match = pattern.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    if found and sorted(found) != list(range(len(found))):
        absent = sorted(set(range(max(found) + 1)) - set(found))[:10]
        raise GroundTruthError(
            f"{ann_dir}: the id maps must be numbered 0 .. n-1 without gaps (one per frame); frames {absent} "
            f"have no {name}_<%04d>_gt.png map. Re-extract the annotations."
        )
    return [found[i] for i in range(len(found))]


def _tracks_file(ann_dir: Path, name: str) -> Path:
    """``<name>_tracks.txt``, the frame and pixel labels' source (annotation folder first, then the scene
    folder). Never ``_new_tracks.txt``: the official frame ground truth
    (``scripts/write_frame_level_ground_truth.py``) and the release's loader read ``_tracks.txt`` only."""
    for folder in (ann_dir, ann_dir.parent):
        candidate = folder / f"{name}_tracks.txt"
        if candidate.is_file():
            return candidate
    raise GroundTruthError(
        f"{ann_dir / (name + '_tracks.txt')}: the anomaly tracks of abnormal video '{name}' are missing; "
        "expected lines 'object_id,start_frame,end_frame' (inclusive frame numbers)."
    )


def _corrected_tracks_file(tracks_file: Path) -> Path | None:
    """The ``<name>_new_tracks.txt`` beside ``tracks_file``, or None: the official RBDC/TBDC track script
    (``scripts/create_tracks_for_tbdc_rbdc.py``) prefers it to ``_tracks.txt`` where it exists."""
    candidate = tracks_file.with_name(tracks_file.name.removesuffix("_tracks.txt") + "_new_tracks.txt")
    return candidate if candidate.is_file() else None


def _read_anomalies(path: Path, num_frames: int) -> np.ndarray:
    """``(K, 3)`` int64 rows ``(object_id, start, end)`` of a tracks file; ends clipped to the video.

    Raises:
        GroundTruthError: a line does not hold three whole numbers with id ≥ 1 and 0 ≤ start ≤ end.
    """
    rows = []
    expected = "lines 'object_id,start_frame,end_frame' (inclusive frame numbers)"
    for number, line in text_lines(path, expected=expected):
        fields = [f for f in re.split(r"[,\s]+", line) if f]
        where = f"{path}, line {number}"
        if len(fields) != 3:
            raise GroundTruthError(
                f"{where}: expected 3 fields 'object_id,start,end', got {len(fields)}: '{line}'."
            )
        obj, start, end = (parse_frame_number(f, where=where) for f in fields)
        if obj < 1 or start < 0 or end < start:
            raise GroundTruthError(
                f"{where}: '{line}' is invalid; expected object_id ≥ 1 and 0 ≤ start ≤ end (inclusive)."
            )
        if start >= num_frames:
            log.warning(
                "%s: interval [%d, %d] starts after the last frame (%d); ignored.",
                where,
                start,
                end,
                num_frames - 1,
            )
            continue
        if end >= num_frames:
            log.warning(
                "%s: interval [%d, %d] clipped to the last frame %d.", where, start, end, num_frames - 1
            )
            end = num_frames - 1
        rows.append((obj, start, end))
    if not rows:
        log.warning("%s: no anomaly interval; the abnormal video is scored as all normal.", path)
    return np.array(rows, dtype=np.int64).reshape(-1, 3)
