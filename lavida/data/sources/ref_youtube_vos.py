"""Refer-YouTube-VOS as a training source: one target per referring expression.

Layout (train_datasets.md §2.6; ReferFormer docs/data.md)::

    <root>/meta_expressions/train/meta_expressions.json
        {"videos": {vid: {"expressions": {"0": {"exp": "a person riding a bike", "obj_id": "1"}, ...},
                          "frames": ["00000", "00005", ...]}}}
    <root>/train/meta.json, train/JPEGImages/<vid>/*.jpg, train/Annotations/<vid>/*.png

The ``train/`` tree is the YouTube-VOS 2019 train tree (same videos, same files). Keep one copy: point
``root`` at the folder with ``meta_expressions/`` and ``ytvos_root`` at the YouTube-VOS folder; record
paths are then relative to ``ytvos_root`` (``self.root``), the folder the frames are in, and the
default manifest location (``manifest_path()``) is under it too (``refvos_train.jsonl``, next to
``vos_train.jsonl``). This source makes no index-time artefacts; ``index(artifacts=...)`` is accepted for
the common signature.

One record per video (its frames = the ``frames`` list of meta_expressions.json), one target per
expression: the pixels of its object (``index_png`` with ``[obj_id]``; ``obj_id`` may be written as a
string or an int), visible on the frames ``meta.json`` lists for that object. Texts are normalised
(``lavida.data.sources.text``); ``present`` holds every expression of the video once. An expression
whose object ``meta.json`` does not know has no mask anywhere and is left out (the count is logged).
Unlike YouTube-VOS, objects of the category "others" are fine targets here: the expression names them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lavida.data.sources.base import DatasetFormatError, SegRecord, SegTarget
from lavida.data.sources.text import normalize_text
from lavida.data.sources.youtube_vos import (
    VideoErrors,
    VideoSegmentationSource,
    check_video_frames,
    frame_positions,
    log_dropped,
    parse_object_id,
    read_videos,
)

__all__ = ["RefYouTubeVOSSource"]

_EXPRESSIONS_EXPECTED = (
    '{"videos": {<video id>: {"expressions": {<id>: {"exp": str, "obj_id": str|int}}, "frames": [frame ids]}}} '
    "(Ref-YouTube-VOS meta_expressions/<split>/meta_expressions.json)"
)
_META_EXPECTED = (
    '{"videos": {<video id>: {"objects": {<object id>: {"category": str, "frames": [frame ids]}}}}} '
    "(the YouTube-VOS 2019 train/meta.json that Ref-YouTube-VOS ships too)"
)


class RefYouTubeVOSSource(VideoSegmentationSource):
    """Refer-YouTube-VOS train: one record per video, one target per expression.

    Args:
        root: The Ref-YouTube-VOS folder, holding ``meta_expressions/`` (and ``train/``, unless
            ``ytvos_root`` is given).
        split: ``"train"`` (valid/test have no public masks).
        ytvos_root: A separate YouTube-VOS 2019 folder holding ``train/{meta.json,JPEGImages,
            Annotations}``; ``self.root`` becomes this folder and record paths are relative to it.

    Raises:
        DatasetFormatError: ``root`` or ``ytvos_root`` does not exist.
        ValueError: ``split`` is not supported.
    """

    name = "refvos"

    def __init__(
        self, root: str | Path, *, split: str = "train", ytvos_root: str | Path | None = None
    ) -> None:
        expressions_root = Path(root).expanduser()
        if not expressions_root.is_dir():
            raise DatasetFormatError(
                f"{self.name}: dataset root '{expressions_root}' does not exist. See data/README.md for what to download."
            )
        if ytvos_root is not None and not Path(ytvos_root).expanduser().is_dir():
            # Checked here, not by the base class, whose message would call it the dataset root.
            raise DatasetFormatError(
                f"{self.name}: ytvos_root '{Path(ytvos_root).expanduser()}' does not exist; expected the "
                "YouTube-VOS 2019 folder holding train/{meta.json,JPEGImages,Annotations}. Fix ytvos_root=, "
                f"or leave it out to read train/ under root ('{expressions_root}')."
            )
        super().__init__(ytvos_root if ytvos_root is not None else expressions_root, split=split)
        self.expressions_root = expressions_root
        self.expressions_path = expressions_root / "meta_expressions" / split / "meta_expressions.json"

    def _index(self, artifacts: Path, errors: VideoErrors) -> Iterator[SegRecord]:
        videos = read_videos(self.expressions_path, expected=_EXPRESSIONS_EXPECTED)
        meta_path = self.root / self.split / "meta.json"
        objects_by_video = read_videos(meta_path, expected=_META_EXPECTED)
        dropped = never_annotated = without_targets = 0
        for video, entry in videos.items():
            try:
                record, unknown_objects, unannotated = self._video_record(
                    video, entry, objects_by_video.get(video), meta_path
                )
            except DatasetFormatError as error:
                errors.handle(video, error)
                continue
            dropped += unknown_objects
            never_annotated += unannotated
            if not record.targets:
                without_targets += 1
                continue
            yield record
        log_dropped(
            self.name, dropped, f"expressions refer to an object that {meta_path} does not list; left out"
        )
        log_dropped(
            self.name,
            never_annotated,
            f"expressions refer to an object with an empty frame list in {meta_path}; left out",
        )
        log_dropped(self.name, without_targets, "videos have no usable expression and are left out")
        errors.report(len(videos))

    def _video_record(
        self,
        video: str,
        entry: dict[str, Any],
        meta_entry: dict[str, Any] | None,
        meta_path: Path,
    ) -> tuple[SegRecord, int, int]:
        """The video's record, and how many expressions were left out for naming an object that meta.json
        does not list, or lists on no frame."""
        path = self.expressions_path
        expressions, frames = entry.get("expressions"), entry.get("frames")
        if not isinstance(expressions, dict) or not isinstance(frames, list) or not frames:
            raise DatasetFormatError(
                f'{path}: video {video} needs an "expressions" mapping and a non-empty "frames" list.'
            )
        objects = meta_entry.get("objects") if meta_entry is not None else None
        if not isinstance(objects, dict):
            raise DatasetFormatError(f"{meta_path}: video {video} (listed in {path}) has no objects entry.")
        split_dir = self.root / self.split
        stems, size = check_video_frames(
            split_dir / "JPEGImages" / video, split_dir / "Annotations" / video, frames
        )
        positions = {stem: i for i, stem in enumerate(stems)}
        # Visible frames per object id, from meta.json (its keys are the ids as strings).
        visible = {
            parse_object_id(key, path=meta_path, video=video): value.get("frames")
            if isinstance(value, dict)
            else None
            for key, value in objects.items()
        }
        relative = split_dir.relative_to(self.root).as_posix()
        paths = [f"{relative}/Annotations/{video}/{stem}.png" for stem in stems]
        targets, unknown_objects, never_annotated = [], 0, 0
        for expression_id, expression in expressions.items():
            if not isinstance(expression, dict) or not isinstance(expression.get("exp"), str):
                raise DatasetFormatError(
                    f'{path}: video {video}, expression {expression_id}: no "exp" string.'
                )
            object_id = parse_object_id(expression.get("obj_id"), path=path, video=video)
            text = normalize_text(expression["exp"])
            if not text:
                continue
            if object_id not in visible:
                unknown_objects += 1
                continue
            frames_on = frame_positions(visible[object_id], positions, path=meta_path, video=video)
            if not frames_on:
                # Annotated on no frame: an empty mask everywhere, and an empty SegTarget.frames would
                # read as "visible everywhere" (as in YouTube-VOS, MeViS and Ref-DAVIS: left out).
                never_annotated += 1
                continue
            targets.append(
                SegTarget(
                    text=text,
                    mask={"kind": "index_png", "paths": paths, "values": [object_id]},
                    frames=tuple(frames_on),
                )
            )
        frame_paths = (f"{relative}/JPEGImages/{video}/{stem}.jpg" for stem in stems)
        return self._record(video, frame_paths, targets, size), unknown_objects, never_annotated
