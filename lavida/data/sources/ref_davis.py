"""Refer-DAVIS-17 as a training source, and a converter from the raw release to the YTVOS-style layout.

Raw release (train_datasets.md §2.8): ``DAVIS-2017-Unsupervised-trainval-480p.zip`` (+ the semantics zip
for ``davis_semantics.json``) and Khoreva et al.'s ``davis_text_annotations.zip``, extracted side by side::

    <raw>/DAVIS/JPEGImages/480p/<vid>/00000.jpg               every frame
    <raw>/DAVIS/Annotations_unsupervised/480p/<vid>/00000.png palette PNG, value = object id (every frame)
    <raw>/DAVIS/ImageSets/2017/{train,val}.txt                60 / 30 video names
    <raw>/DAVIS/davis_semantics.json                          {vid: {"1": category}} (optional)
    <raw>/davis_text_annotations/Davis17_annot{1,1_full_video,2,2_full_video}.txt
                                                              lines: <vid> <obj_id> "<expression>"

Converted layout (ReferFormer tools/data/convert_davis_to_ytvos.py; what the LAVIDA and VideoLISA
loaders read)::

    <out>/{train,valid}/JPEGImages/<vid>/*.jpg, {train,valid}/Annotations/<vid>/*.png, {train,valid}/meta.json
    <out>/meta_expressions/{train,valid}/meta_expressions.json
        {"videos": {vid: {"expressions": {"0": {"exp": str, "obj_id": "1"}, ...}, "frames": ["00000", ...]}}}

The expressions of a video are numbered 0, 1, ... object by object (ascending id), each object's in the
order annot1 (first frame), annot1 full video, annot2, annot2 full video — 4 per object, as ReferFormer
writes them. Object ids are those of the *unsupervised* annotation set (research notes §2.8).

:class:`RefDAVISSource` reads either layout: a root with ``meta_expressions/<split>/`` is read as
converted; a root with ``DAVIS/`` as raw, whose expressions are parsed as the converter does (and the
resulting meta_expressions.json written to ``<artifacts>/ref_davis/`` for inspection) while records
point at the raw frame and annotation folders, so no copy is needed. :func:`convert_davis` writes the
converted layout for tools that need it (copying, symlinking or hard-linking, never moving the raw files).

One record per video, one target per expression (``index_png`` with ``[obj_id]``). DAVIS annotates
every frame and its meta.json lists no frames per object, so indexing reads each annotation once to
find where each object is visible.

Where we differ from ReferFormer's script, on purpose: each text line is decoded as UTF-8 and, if that
fails, as latin-1 (it decodes whole annot2 files as latin-1); objects are ordered by numeric id (it
sorts id strings, so "10" < "2"); expressions are grouped by (video, object) rather than zipped across
the four files, so one missing line cannot shift the others onto the wrong object; a split video
without any expression is left out with a warning (it raises KeyError).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lavida.atomic import write_json
from lavida.data.sources.base import DatasetFormatError, SegRecord, SegTarget
from lavida.data.sources.masks import read_index_png
from lavida.data.sources.text import normalize_text
from lavida.data.sources.youtube_vos import (
    VideoErrors,
    VideoSegmentationSource,
    check_video_frames,
    list_stems,
    log_dropped,
    parse_object_id,
    read_json,
    read_videos,
)

__all__ = [
    "TEXT_ANNOTATION_FILES",
    "RefDAVISSource",
    "convert_davis",
    "raw_meta_expressions",
    "read_text_annotations",
]

logger = logging.getLogger(__name__)

# In ReferFormer's per-object order: annotator 1 (first frame, full video), annotator 2 (same).
TEXT_ANNOTATION_FILES = (
    "Davis17_annot1.txt",
    "Davis17_annot1_full_video.txt",
    "Davis17_annot2.txt",
    "Davis17_annot2_full_video.txt",
)
# Video names misspelt in the text annotations (fixed the same way in ReferFormer's converter).
VIDEO_NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
# Our split names (the converted layout's folder names) -> DAVIS ImageSets files.
RAW_SPLIT_FILES = {"train": "train.txt", "valid": "val.txt"}
RAW_IMAGES = "DAVIS/JPEGImages/480p"
RAW_ANNOTATIONS = "DAVIS/Annotations_unsupervised/480p"
TEXT_DIRNAME = "davis_text_annotations"
LINK_MODES = ("copy", "symlink", "hardlink")

_EXPRESSIONS_EXPECTED = (
    '{"videos": {<video id>: {"expressions": {<id>: {"exp": str, "obj_id": str|int}}, "frames": [frame ids]}}} '
    "(Ref-DAVIS meta_expressions/<split>/meta_expressions.json)"
)
_LINE_EXPECTED = "'<video> <object id> \"<expression>\"'"


# -- the raw release --------------------------------------------------------------------------------


def read_text_annotations(text_dir: str | Path) -> dict[str, dict[int, list[str]]]:
    """Parse the four Refer-DAVIS-17 text files: video → object id → expressions in file order.

    Video names are corrected (:data:`VIDEO_NAME_FIXES`); quotes are removed and whitespace collapsed,
    the text is otherwise verbatim (normalisation happens when records are built).

    Raises:
        DatasetFormatError: a file is missing or a line is malformed; the message names file and line.
    """
    text_dir = Path(text_dir)
    videos: dict[str, dict[int, list[str]]] = {}
    for filename in TEXT_ANNOTATION_FILES:
        path = text_dir / filename
        if not path.is_file():
            raise DatasetFormatError(
                f"{path}: file not found; expected the four Refer-DAVIS-17 text files "
                f"({', '.join(TEXT_ANNOTATION_FILES)}) from davis_text_annotations.zip, lines {_LINE_EXPECTED}."
            )
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DatasetFormatError(f"{path}: cannot read the file ({error}).") from error
        for number, raw in enumerate(data.splitlines(), start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:  # the annot2 files are latin-1 (research notes §2.8)
                line = raw.decode("latin-1")
            fields = line.lstrip("\ufeff").split(maxsplit=2)
            if not fields:
                continue
            if len(fields) < 3:
                raise DatasetFormatError(
                    f"{path}, line {number}: expected {_LINE_EXPECTED}, got {line.strip()!r}."
                )
            video, object_id, text = fields
            if not object_id.isdigit():
                raise DatasetFormatError(f"{path}, line {number}: object id {object_id!r} is not an integer.")
            text = " ".join(text.split())
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1].strip()
            video = VIDEO_NAME_FIXES.get(video, video)
            videos.setdefault(video, {}).setdefault(int(object_id), []).append(text)
    return videos


def read_raw_split(raw_root: str | Path, split: str) -> list[str]:
    """The video names of ``split`` ("train" or "valid") from ``DAVIS/ImageSets/2017``.

    Raises:
        DatasetFormatError: the split file is missing.
        ValueError: unknown split.
    """
    if split not in RAW_SPLIT_FILES:
        raise ValueError(f"refdavis: split {split!r} is not one of {list(RAW_SPLIT_FILES)}.")
    path = Path(raw_root) / "DAVIS" / "ImageSets" / "2017" / RAW_SPLIT_FILES[split]
    if not path.is_file():
        raise DatasetFormatError(
            f"{path}: file not found; expected the DAVIS-2017 split list (one video name per line) from "
            "DAVIS-2017-Unsupervised-trainval-480p.zip."
        )
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def raw_meta_expressions(raw_root: str | Path, split: str) -> dict[str, Any]:
    """The converted ``meta_expressions.json`` content of one split, built from the raw release.

    Frames are the names of the video's JPEGs *and* annotation PNGs, sorted (empty when both folders are
    missing: the caller reports it). DAVIS has both files for every frame, so a frame that lacks either
    is listed and then refused by :func:`check_video_frames`, as in the other video sources; listing
    only the JPEGs dropped a frame whose JPEG was missing, leaving a gap in time and its annotation unread.
    """
    raw_root = Path(raw_root)
    texts = read_text_annotations(raw_root / TEXT_DIRNAME)
    videos: dict[str, Any] = {}
    without_text = []
    for video in read_raw_split(raw_root, split):
        objects = texts.get(video)
        if not objects:
            without_text.append(video)
            continue
        expressions: dict[str, dict[str, str]] = {}
        for object_id in sorted(objects):
            for text in objects[object_id]:
                expressions[str(len(expressions))] = {"exp": text, "obj_id": str(object_id)}
        frames = sorted(
            {
                stem
                for folder, suffix in ((RAW_IMAGES, ".jpg"), (RAW_ANNOTATIONS, ".png"))
                if (raw_root / folder / video).is_dir()
                for stem in list_stems(raw_root / folder / video, suffix)
            }
        )
        videos[video] = {"expressions": expressions, "frames": frames}
    if without_text:
        logger.warning(
            "refdavis: %d %s videos have no line in %s and are left out (first: %s).",
            len(without_text),
            split,
            raw_root / TEXT_DIRNAME,
            without_text[0],
        )
    return {"videos": videos}


def convert_davis(raw_root: str | Path, out_root: str | Path, *, link: str = "copy") -> dict[str, int]:
    """Write the raw Refer-DAVIS-17 release in ReferFormer's YTVOS-style layout (see the module docstring).

    The raw files are never moved. ``meta.json`` (objects → category) is written when
    ``DAVIS/davis_semantics.json`` exists; the sources here do not need it.

    Args:
        raw_root: The folder holding ``DAVIS/`` and ``davis_text_annotations/``.
        out_root: Where to write the converted tree (may be ``raw_root``).
        link: ``"copy"`` the frame and annotation folders, ``"symlink"`` them (one link per video
            folder), or ``"hardlink"`` every file (same file system only).

    Returns:
        Videos written per split, e.g. ``{"train": 60, "valid": 30}``.

    Raises:
        DatasetFormatError: a raw file or folder is missing or malformed.
        FileExistsError: ``link="symlink"`` and a video's output folder exists as a real folder.
        ValueError: unknown ``link`` mode.
    """
    if link not in LINK_MODES:
        raise ValueError(f"convert_davis: link must be one of {list(LINK_MODES)}, got {link!r}.")
    raw_root, out_root = Path(raw_root).expanduser(), Path(out_root).expanduser()
    if not (raw_root / "DAVIS").is_dir():
        raise DatasetFormatError(
            f"{raw_root / 'DAVIS'}: folder not found; point raw_root at the folder where "
            "DAVIS-2017-Unsupervised-trainval-480p.zip and davis_text_annotations.zip were extracted."
        )
    semantics_path = raw_root / "DAVIS" / "davis_semantics.json"
    semantics = (
        read_json(semantics_path, expected="{video: {object id: category}}")
        if semantics_path.is_file()
        else None
    )
    if semantics is None:
        logger.warning("refdavis: %s not found; the converted tree gets no meta.json.", semantics_path)
    written = {}
    for split in RAW_SPLIT_FILES:
        meta = raw_meta_expressions(raw_root, split)
        for video in meta["videos"]:
            for raw_folder, out_folder in ((RAW_IMAGES, "JPEGImages"), (RAW_ANNOTATIONS, "Annotations")):
                source = raw_root / raw_folder / video
                if not source.is_dir():
                    raise DatasetFormatError(
                        f"{source}: folder not found; video {video} is in the {split} split list."
                    )
                _place(source, out_root / split / out_folder / video, link)
        _write_json(out_root / "meta_expressions" / split / "meta_expressions.json", meta)
        if isinstance(semantics, dict):
            objects = {
                video: {
                    "objects": {
                        key: {"category": semantics[video][key]} for key in _numeric_keys(semantics[video])
                    }
                }
                for video in read_raw_split(raw_root, split)
                if isinstance(semantics.get(video), dict)
            }
            _write_json(out_root / split / "meta.json", {"videos": objects})
        written[split] = len(meta["videos"])
        logger.info("refdavis: converted %d %s videos into %s (%s).", written[split], split, out_root, link)
    return written


def _numeric_keys(mapping: dict[str, Any]) -> list[str]:
    return sorted(mapping, key=lambda key: (len(key), key))


def _place(source: Path, destination: Path, link: str) -> None:
    """Copy, symlink or hard-link the folder ``source`` to ``destination`` (replacing earlier output)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if link == "symlink":
        if destination.is_symlink():
            destination.unlink()
        elif destination.exists():
            raise FileExistsError(
                f"{destination}: exists and is not a symlink; remove it or convert with link='copy'."
            )
        destination.symlink_to(source.resolve(), target_is_directory=True)
        return
    if destination.is_symlink():  # left by an earlier symlink conversion
        destination.unlink()
    shutil.copytree(
        source,
        destination,
        dirs_exist_ok=True,
        copy_function=_hardlink if link == "hardlink" else shutil.copy2,
    )


def _hardlink(source: str, destination: str) -> None:
    if os.path.lexists(destination):
        os.unlink(destination)
    os.link(source, destination)


def _write_json(path: Path, data: Any) -> None:
    write_json(path, data, ensure_ascii=False, indent=1)


# -- the source -------------------------------------------------------------------------------------


class RefDAVISSource(VideoSegmentationSource):
    """Refer-DAVIS-17: one record per video, one target per expression (4 per object).

    Args:
        root: The converted folder (holding ``meta_expressions/`` and ``<split>/``) or the raw folder
            (holding ``DAVIS/`` and ``davis_text_annotations/``); see the module docstring.
        split: ``"train"`` or ``"valid"`` (DAVIS val masks are public; keep it out of training if
            you evaluate on it).
    """

    name = "refdavis"
    splits = ("train", "valid")

    def _index(self, artifacts: Path, errors: VideoErrors) -> Iterator[SegRecord]:
        converted = self.root / "meta_expressions" / self.split / "meta_expressions.json"
        if converted.is_file():
            meta_path = converted
            videos = read_videos(converted, expected=_EXPRESSIONS_EXPECTED)
            images, masks = f"{self.split}/JPEGImages", f"{self.split}/Annotations"
        elif (self.root / "DAVIS").is_dir():
            meta = raw_meta_expressions(self.root, self.split)
            meta_path = artifacts / "ref_davis" / "meta_expressions" / self.split / "meta_expressions.json"
            _write_json(meta_path, meta)
            videos = meta["videos"]
            images, masks = RAW_IMAGES, RAW_ANNOTATIONS
        else:
            raise DatasetFormatError(
                f"{converted}: file not found, and {self.root / 'DAVIS'} does not exist either. Point root at a "
                "converted Ref-DAVIS folder (meta_expressions/<split>/meta_expressions.json, <split>/JPEGImages, "
                "<split>/Annotations) or at the raw one (DAVIS/ and davis_text_annotations/)."
            )
        unknown_objects = without_targets = 0
        for video, entry in videos.items():
            try:
                record, unknown = self._video_record(video, entry, meta_path, images, masks)
            except DatasetFormatError as error:
                errors.handle(video, error)
                continue
            unknown_objects += unknown
            if not record.targets:
                without_targets += 1
                continue
            yield record
        log_dropped(
            self.name,
            unknown_objects,
            "expressions refer to an object absent from every annotation; left out",
        )
        log_dropped(self.name, without_targets, "videos have no usable expression and are left out")
        errors.report(len(videos))

    def _video_record(
        self, video: str, entry: dict[str, Any], meta_path: Path, images: str, masks: str
    ) -> tuple[SegRecord, int]:
        """The video's record and how many expressions were left out for naming an absent object."""
        expressions, frames = entry.get("expressions"), entry.get("frames", [])
        if not isinstance(expressions, dict) or not isinstance(frames, list):
            raise DatasetFormatError(
                f'{meta_path}: video {video} needs an "expressions" mapping and a "frames" list.'
            )
        # An empty frame list (raw layout, missing folder) falls back to the folders, which then report it.
        stems, size = check_video_frames(
            self.root / images / video, self.root / masks / video, frames or None
        )
        paths = [f"{masks}/{video}/{stem}.png" for stem in stems]
        visible: dict[int, list[int]] = {}
        for position, path in enumerate(paths):
            label = read_index_png(self.root / path)
            if label.shape != size:
                raise DatasetFormatError(
                    f"{self.root / path}: annotation is {label.shape}, the video's frames are {size}."
                )
            for value in np.unique(label):
                if value:
                    visible.setdefault(int(value), []).append(position)
        targets, unknown = [], 0
        for expression_id, expression in expressions.items():
            if not isinstance(expression, dict) or not isinstance(expression.get("exp"), str):
                raise DatasetFormatError(
                    f'{meta_path}: video {video}, expression {expression_id}: no "exp" string.'
                )
            object_id = parse_object_id(expression.get("obj_id"), path=meta_path, video=video)
            text = normalize_text(expression["exp"])
            if not text:
                continue
            if object_id not in visible:
                unknown += 1
                continue
            mask = {"kind": "index_png", "paths": paths, "values": [object_id]}
            targets.append(SegTarget(text=text, mask=mask, frames=tuple(visible[object_id])))
        frame_paths = (f"{images}/{video}/{stem}.jpg" for stem in stems)
        return self._record(video, frame_paths, targets, size), unknown
