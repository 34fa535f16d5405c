"""YouTube-VOS 2019 (VOS track) as a training source, and what the four video sources share.

Layout (train_datasets.md §2.5; the official ``train.zip``)::

    <root>/train/meta.json                     {"videos": {vid: {"objects": {"1": {"category": "person",
                                                                                   "frames": ["00000", ...]}}}}}
    <root>/train/JPEGImages/<vid>/00000.jpg    every 5th frame of the 30-fps video (~6 fps)
    <root>/train/Annotations/<vid>/00000.png   palette PNG: pixel value = object id, 0 = background

One record per video. Its frames are the *annotated* frames (those with an annotation PNG), so a
``train_all_frames`` JPEG folder works too: the extra, unannotated JPEGs are ignored. One target per
category: the union of that category's objects (an ``index_png`` spec with their ids), visible where
``meta.json`` lists any of them. The category text has "_" replaced by " " ("tennis_racket" → "tennis
racket") and is normalised like every other description (``lavida.data.sources.text``).

"others" is YouTube-VOS's catch-all for objects outside the 65 named categories. It describes nothing,
so it is neither a target nor listed in ``present``: ``present`` only serves to keep a visible thing out
of the irrelevant categories, and "others" can never be drawn as one, because no record has it as a
target. (What such an object actually is stays unknown, so a pool text naming it can still be drawn as
irrelevant for the video; no annotation can prevent that.) An object whose ``frames`` list in
meta.json is empty is annotated nowhere and is not a target either (its empty visibility would read
as "visible everywhere"). A video left with no target is left out; the counts are logged.

The module also holds what the YTVOS-style sources (Ref-YouTube-VOS, MeViS, Ref-DAVIS) share: the
:class:`VideoSegmentationSource` base with the common ``index(*, artifacts, skip_errors)`` signature
and ``load_masks``, and small checked readers for JSON files and frame folders.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lavida.data.sources.base import DatasetFormatError, SegmentationSource, SegRecord, SegTarget
from lavida.data.sources.masks import image_size, merge_by_text
from lavida.data.sources.text import normalize_text

__all__ = [
    "ARTIFACTS_DIRNAME",
    "VideoErrors",
    "VideoSegmentationSource",
    "YouTubeVOSSource",
    "artifact_reference",
    "check_video_frames",
    "list_stems",
    "read_json",
    "read_videos",
]

logger = logging.getLogger(__name__)

# Where index-time artefacts go by default (next to the manifests, see SegmentationSource.manifest_path).
ARTIFACTS_DIRNAME = ".lavida"

# YouTube-VOS's catch-all category (research notes §2.5): not a description of anything.
OTHERS_CATEGORY = "others"


# -- helpers shared by the video sources -----------------------------------------------------------


def read_json(path: Path, *, expected: str, fix: str = "Re-extract it from the download.") -> Any:
    """Parse a (metadata-sized) JSON file.

    Args:
        path: The file.
        expected: What the file should hold, for the error message.
        fix: How to get a good file, for the error message (a downloaded dataset's by default).

    Raises:
        DatasetFormatError: the file is missing, unreadable or not JSON; the message names it.
    """
    if not path.is_file():
        raise DatasetFormatError(
            f"{path}: file not found; expected {expected}. Check the dataset root and split."
        )
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetFormatError(
            f"{path}: not a readable JSON file ({error}); expected {expected}. {fix}"
        ) from error


def read_videos(path: Path, *, expected: str) -> dict[str, dict[str, Any]]:
    """The ``{"videos": {vid: {...}}}`` mapping of a YTVOS-style metadata file (meta.json, meta_expressions.json).

    Raises:
        DatasetFormatError: the file is missing, not JSON, or has no ``videos`` mapping of mappings.
    """
    data = read_json(path, expected=expected)
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict) or not all(isinstance(entry, dict) for entry in videos.values()):
        raise DatasetFormatError(
            f'{path}: expected {expected}, but there is no "videos" mapping of video entries.'
        )
    return videos


def list_stems(folder: Path, suffix: str) -> list[str]:
    """Sorted stems of the files in ``folder`` ending in ``suffix`` (frame names sort temporally: %05d).

    Raises:
        DatasetFormatError: ``folder`` does not exist.
    """
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: folder not found; expected one '*{suffix}' file per frame.")
    return sorted(entry.name[: -len(suffix)] for entry in folder.iterdir() if entry.name.endswith(suffix))


def check_video_frames(
    image_dir: Path, mask_dir: Path | None, stems: Sequence[str] | None
) -> tuple[list[str], tuple[int, int]]:
    """Check one video's frame folders; return its frame stems and frame size (H, W).

    Args:
        image_dir: The folder of ``<stem>.jpg`` frames.
        mask_dir: The folder of ``<stem>.png`` annotations, or None (masks stored elsewhere).
        stems: The frames the metadata lists, in temporal order; None = every annotation PNG (or
            every JPEG when ``mask_dir`` is None), sorted.

    Returns:
        The stems and the size of the first frame (its annotation's size when there is one).

    Raises:
        DatasetFormatError: a listed frame has no JPEG or no annotation, the video has no frames, or
            the first frame's image and annotation differ in size; the message names the folder/file.
    """
    jpegs = list_stems(image_dir, ".jpg")
    pngs = list_stems(mask_dir, ".png") if mask_dir is not None else None
    if stems is None:
        stems = pngs if pngs is not None else jpegs
    stems = list(stems)
    if not stems:
        raise DatasetFormatError(f"{mask_dir or image_dir}: the video has no frames.")
    for folder, have, suffix in ((image_dir, jpegs, ".jpg"), (mask_dir, pngs, ".png")):
        if folder is None or have is None:
            continue
        available = set(have)
        missing = [stem for stem in stems if stem not in available]
        if missing:
            raise DatasetFormatError(
                f"{folder}: {len(missing)} of the video's {len(stems)} frames have no '*{suffix}' file "
                f"(first: {missing[0]}{suffix}); re-extract the video or run with skip_errors=True to skip it."
            )
    size = image_size(image_dir / f"{stems[0]}.jpg")
    if mask_dir is not None:
        mask_size = image_size(mask_dir / f"{stems[0]}.png")
        if mask_size != size:
            raise DatasetFormatError(
                f"{mask_dir / f'{stems[0]}.png'}: annotation is {mask_size[0]}x{mask_size[1]} but its frame is "
                f"{size[0]}x{size[1]}; frames and annotations must have the same size."
            )
    return stems, size


def frame_positions(frames: Any, positions: dict[str, int], *, path: Path, video: str) -> list[int]:
    """Positions (into the record's frames) of the frame ids ``frames`` listed in the metadata ``path``.

    Raises:
        DatasetFormatError: ``frames`` is not a list of frame ids or names a frame that has no annotation.
    """
    if not isinstance(frames, list):
        raise DatasetFormatError(
            f"{path}: video {video}: expected a list of frame ids, got {type(frames).__name__}."
        )
    unknown = [frame for frame in frames if frame not in positions]
    if unknown:
        raise DatasetFormatError(
            f"{path}: video {video} lists frame {unknown[0]!r}, which has no annotation PNG/JPEG "
            f"({len(unknown)} such frames); the metadata does not match the frame folders."
        )
    return sorted({positions[frame] for frame in frames})


def parse_object_id(value: Any, *, path: Path, video: str) -> int:
    """An object id (palette value) written as int or string ("1").

    Raises:
        DatasetFormatError: not a non-negative integer.
    """
    try:
        object_id = int(value)
    except (TypeError, ValueError):
        object_id = -1
    if object_id < 0 or isinstance(value, bool):
        raise DatasetFormatError(f"{path}: video {video}: object id {value!r} is not a non-negative integer.")
    return object_id


def artifact_reference(path: Path, root: Path) -> str:
    """How a record refers to an artefact file: relative to ``root`` when inside it, else absolute.

    Records only hold relative paths when artefacts live under the dataset root (the default), which
    keeps manifests valid when the dataset is moved; ``load_mask_spec`` resolves ``root / reference``,
    which leaves an absolute reference unchanged.
    """
    path = path.resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


class VideoErrors:
    """Per-video format errors met while indexing: raised, or (``skip_errors``) logged and counted.

    Args:
        source: The source's name, for the log.
        skip_errors: Skip a broken video instead of raising.
    """

    def __init__(self, source: str, *, skip_errors: bool) -> None:
        self.source = source
        self.skip_errors = skip_errors
        self.skipped: list[str] = []

    def handle(self, video: str, error: DatasetFormatError) -> None:
        """Re-raise ``error`` unless skipping; otherwise log it and count the video as skipped."""
        if not self.skip_errors:
            raise error
        self.skipped.append(video)
        logger.warning("%s: skipping video %s: %s", self.source, video, error)

    def report(self, total: int) -> None:
        """Log how many of ``total`` videos were skipped (nothing when none were)."""
        if self.skipped:
            logger.warning(
                "%s: skipped %d of %d videos with format errors (first: %s); their records are not in the manifest.",
                self.source,
                len(self.skipped),
                total,
                self.skipped[0],
            )


class VideoSegmentationSource(SegmentationSource):
    """Base of the video sources: common ``index`` signature, split check, and mask loading.

    Subclasses set ``name`` and ``splits`` and implement :meth:`_index`. Masks are loaded from the
    target's spec (``index_png`` or ``rle``, :func:`lavida.data.sources.masks.load_mask_spec`) at the
    record's ``meta["size"]``.

    Args:
        root: The dataset root; record paths are relative to it.
        split: One of the class's ``splits`` (only splits with full mask annotations are usable).

    Raises:
        DatasetFormatError: ``root`` does not exist.
        ValueError: ``split`` is not supported.
    """

    splits: tuple[str, ...] = ("train",)

    def __init__(self, root: str | Path, *, split: str = "train") -> None:
        if split not in self.splits:
            raise ValueError(
                f"{self.name}: split {split!r} is not supported; expected one of {list(self.splits)} "
                "(the other splits have no full mask annotations)."
            )
        super().__init__(root, split=split)

    def index(self, *, artifacts: str | Path | None = None, skip_errors: bool = False) -> Iterator[SegRecord]:
        """Walk the official layout and yield one record per usable video.

        Args:
            artifacts: Folder for files made at index time (MeViS mask shards, the Ref-DAVIS
                expression file built from the raw layout); default ``<root>/.lavida/``. Records refer
                to them relative to the root when they are inside it, by absolute path otherwise, so
                keep the folder for as long as the manifest is used.
            skip_errors: Log and skip a video with missing or malformed files instead of raising; the
                number skipped is logged at the end. Errors in dataset-wide files always raise.

        Raises:
            DatasetFormatError: a file is missing or malformed; the message names it.
        """
        folder = Path(artifacts).expanduser() if artifacts is not None else self.root / ARTIFACTS_DIRNAME
        return self._index(folder, VideoErrors(self.name, skip_errors=skip_errors))

    @abc.abstractmethod
    def _index(self, artifacts: Path, errors: VideoErrors) -> Iterator[SegRecord]:
        """Yield the records; pass per-video DatasetFormatErrors to ``errors.handle``."""

    def _record(
        self, video: str, frames: Iterable[str], targets: Sequence[SegTarget], size: tuple[int, int]
    ) -> SegRecord:
        """A record of ``video`` with one target per text (:func:`merge_by_text`), in first-seen order."""
        targets = merge_by_text(targets)
        return SegRecord(
            source=self.name,
            key=video,
            group=f"{self.name}/{video}",
            frames=tuple(frames),
            targets=tuple(targets),
            present=tuple(dict.fromkeys(target.text for target in targets)),
            is_video=True,
            meta={"size": [size[0], size[1]]},
        )


def log_dropped(source: str, count: int, reason: str) -> None:
    """Log how many targets or videos were left out, and why (nothing when none were)."""
    if count:
        logger.info("%s: %d %s.", source, count, reason)


# -- YouTube-VOS ---------------------------------------------------------------------------------

_META_EXPECTED = (
    '{"videos": {<video id>: {"objects": {<object id>: {"category": str, "frames": [frame ids]}}}}} '
    "(YouTube-VOS 2019 train/meta.json)"
)


class YouTubeVOSSource(VideoSegmentationSource):
    """YouTube-VOS 2019 train: one record per video, one target per named category.

    Args:
        root: The folder holding ``train/{meta.json,JPEGImages,Annotations}`` (the extracted
            ``train.zip``; the same tree serves Ref-YouTube-VOS).
        split: ``"train"`` (the valid split has first-frame masks only).
    """

    name = "vos"

    def _index(self, artifacts: Path, errors: VideoErrors) -> Iterator[SegRecord]:
        split_dir = self.root / self.split
        meta_path = split_dir / "meta.json"
        videos = read_videos(meta_path, expected=_META_EXPECTED)
        without_targets = never_annotated = 0
        for video, entry in videos.items():
            try:
                record, unannotated = self._video_record(video, entry, split_dir, meta_path)
            except DatasetFormatError as error:
                errors.handle(video, error)
                continue
            never_annotated += unannotated
            if not record.targets:
                without_targets += 1
                continue
            yield record
        log_dropped(self.name, never_annotated, f"objects have an empty frame list in {meta_path}; left out")
        log_dropped(
            self.name,
            without_targets,
            "videos have only 'others' objects or objects on no frame (no target) and are left out",
        )
        errors.report(len(videos))

    def _video_record(
        self, video: str, entry: dict[str, Any], split_dir: Path, meta_path: Path
    ) -> tuple[SegRecord, int]:
        """The video's record and how many of its named objects were left out for being on no frame."""
        objects = entry.get("objects")
        if not isinstance(objects, dict):
            raise DatasetFormatError(f'{meta_path}: video {video} has no "objects" mapping.')
        mask_dir = split_dir / "Annotations" / video
        stems, size = check_video_frames(split_dir / "JPEGImages" / video, mask_dir, None)
        positions = {stem: i for i, stem in enumerate(stems)}
        # text -> (object ids, visible positions); objects in id order so the target order is stable.
        by_text: dict[str, tuple[list[int], set[int]]] = {}
        never_annotated = 0
        for key in sorted(objects, key=lambda k: parse_object_id(k, path=meta_path, video=video)):
            entry_object = objects[key]
            category = entry_object.get("category") if isinstance(entry_object, dict) else None
            if not isinstance(category, str):
                raise DatasetFormatError(f"{meta_path}: video {video}, object {key}: no category string.")
            visible = frame_positions(entry_object.get("frames"), positions, path=meta_path, video=video)
            if category.strip().lower() == OTHERS_CATEGORY:
                continue
            text = normalize_text(category.replace("_", " "))
            if not text:
                continue
            if not visible:
                # meta.json lists the frames an object is annotated on; with none, its mask is empty on
                # every frame. As a target it would make anomalous samples with nothing to segment, and
                # its empty visibility would read as "visible everywhere" (SegTarget.frames).
                never_annotated += 1
                continue
            ids, frames = by_text.setdefault(text, ([], set()))
            ids.append(parse_object_id(key, path=meta_path, video=video))
            frames.update(visible)
        relative = split_dir.relative_to(self.root).as_posix()
        paths = [f"{relative}/Annotations/{video}/{stem}.png" for stem in stems]
        targets = [
            SegTarget(
                text=text,
                mask={"kind": "index_png", "paths": paths, "values": sorted(ids)},
                frames=tuple(sorted(frames)),
            )
            for text, (ids, frames) in by_text.items()
        ]
        frame_paths = (f"{relative}/JPEGImages/{video}/{stem}.jpg" for stem in stems)
        return self._record(video, frame_paths, targets, size), never_annotated
