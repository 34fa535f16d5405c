"""MeViS as a training source: motion expressions, possibly about several objects, with RLE masks.

Layout (train_datasets.md §2.7; henghuiding/MeViS README)::

    <root>/train/meta_expressions.json
        {"videos": {vid: {"expressions": {"0": {"exp": "4 lizards moving around", "obj_id": [0, 1, 2, 3],
                                                 "anno_id": [2, 3, 4, 5]}, ...},
                          "vid_id": 0, "frames": ["00000", "00001", ...]}}}
    <root>/train/mask_dict.json     {"<anno_id>": [COCO RLE {"size": [h, w], "counts": str} or null per frame]}
    <root>/train/JPEGImages/<vid>/00000.jpg

``valid_u`` has the same layout (50 videos with public masks, a held-out check); ``valid`` has no masks.

One record per video (its frames = the ``frames`` list), one target per expression. An expression may
refer to several objects: its mask is the *union* of its ``anno_id`` masks (the official LAVIDA code sums
them and then tests ``== 1``, which drops the overlap — lavida_official.md §8; we never sum).

**Sharding.** ``mask_dict.json`` is one GB-scale file; every reference loader ``json.load`` s it in every
dataloader worker. At index time we split it into one small JSON per video,
``<artifacts>/mevis_masks/<split>/<vid>.json``, so training only ever opens the shard of the video it
samples. A shard maps a key to a per-frame list whose entries are a list of RLEs (their union; one per
annotation id of the key, null where that one is absent) or null (target absent). The key is the
expression's set of annotation ids (``"12"``, ``"12+13"``) rather than the expression id: MeViS has
several expressions per object, so keying by annotation set stores each object's masks once per video
instead of once per expression. The target's spec is ``{"kind": "rle", "file": <shard>, "key": <key>,
"anno_ids": [...]}``. The RLEs are copied verbatim, not decoded (:func:`_check_masks` says why), so a
mask that fails to decode at training is reported against ``mask_dict.json`` (:meth:`MeViSSource.load_masks`).

**Memory.** ``mask_dict.json`` is read in chunks (:func:`iter_json_object`): one entry is decoded at a
time and kept only until every annotation of its video has been read, then the video's shard is
written and its masks are freed. Peak memory is therefore one read chunk (8 Mi characters by default,
grown while a single entry is larger) plus the decoded masks of videos whose annotations are still
incomplete. MeViS numbers annotations video by video, so that is about one video's masks; a file with
the annotations of all videos interleaved would hold up to all of them at once (as ``json.load`` does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from lavida.atomic import write_json
from lavida.data.sources.base import DatasetFormatError, SegRecord, SegTarget
from lavida.data.sources.masks import RLEDecodeError
from lavida.data.sources.text import normalize_text
from lavida.data.sources.youtube_vos import (
    VideoErrors,
    VideoSegmentationSource,
    artifact_reference,
    check_video_frames,
    log_dropped,
    parse_object_id,
    read_videos,
)

__all__ = ["MeViSSource", "iter_json_object"]

SHARD_DIRNAME = "mevis_masks"
DEFAULT_CHUNK_CHARS = 1 << 23

_EXPRESSIONS_EXPECTED = (
    '{"videos": {<video id>: {"expressions": {<id>: {"exp": str, "obj_id": [int], "anno_id": [int]}}, '
    '"frames": [frame ids]}}} (MeViS <split>/meta_expressions.json)'
)
_MASKS_EXPECTED = '{"<anno_id>": [COCO RLE or null, one per frame]} (MeViS <split>/mask_dict.json)'


# -- streaming reader for the big mask file ------------------------------------------------------

_SPACE = re.compile(r"[ \t\n\r]*")


class _ChunkedText:
    """A text file read in chunks; ``text[pos:]`` is what has been read and not yet consumed."""

    def __init__(self, handle: IO[str], path: Path, chunk_chars: int) -> None:
        self.handle, self.path, self.chunk_chars = handle, path, chunk_chars
        self.text, self.pos, self.offset, self.eof = "", 0, 0, False
        self.decoder = json.JSONDecoder()

    def more(self) -> bool:
        """Read another chunk, dropping the consumed text; False at the end of the file."""
        if self.eof:
            return False
        # At least as much as is pending, so an entry larger than a chunk needs O(log n) retries, not O(n).
        chunk = self.handle.read(max(self.chunk_chars, len(self.text) - self.pos))
        if not chunk:
            self.eof = True
            return False
        self.offset += self.pos
        self.text, self.pos = self.text[self.pos :] + chunk, 0
        return True

    def peek(self) -> str:
        """Skip whitespace; the next character, or "" at the end of the file."""
        while True:
            self.pos = _SPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos : self.pos + 1]

    def expect(self, characters: str) -> str:
        """Consume one of ``characters`` (after whitespace) and return it."""
        found = self.peek()
        if not found or found not in characters:
            raise self.error(f"expected one of {characters!r}, found {found or 'the end of the file'!r}")
        self.pos += 1
        return found

    def value(self) -> Any:
        """Decode the JSON value at the cursor, reading on until it is complete."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as error:
                if self.more():  # most likely cut off by the chunk boundary
                    continue
                raise self.error(error.msg, at=error.pos) from error
            # A number may continue in the next chunk: one ending exactly at the chunk boundary, or one
            # cut inside its fraction or exponent ("0." or "1e" decode as 0 and 1, stopping before the cut).
            cut = end == len(self.text) or (isinstance(value, int | float) and self.text[end] in ".eE+-")
            if cut and self.more():
                continue
            self.pos = end
            return value

    def error(self, message: str, *, at: int | None = None) -> DatasetFormatError:
        where = self.offset + (self.pos if at is None else at)
        return DatasetFormatError(
            f"{self.path}: not valid JSON near character {where} ({message}); expected {_MASKS_EXPECTED}. "
            "Re-extract the file from the download."
        )


def iter_json_object(
    path: str | Path, *, chunk_chars: int = DEFAULT_CHUNK_CHARS
) -> Iterator[tuple[str, Any]]:
    """Yield the (key, value) pairs of a file holding one JSON object, without loading all of it.

    Memory is one chunk plus the value being decoded (the chunk grows while a single value is larger).

    Args:
        path: The file (UTF-8 JSON whose top level is an object).
        chunk_chars: Characters read at a time.

    Raises:
        DatasetFormatError: the file is missing or is not one JSON object; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found; expected {_MASKS_EXPECTED}.")
    try:
        with path.open(encoding="utf-8") as handle:
            reader = _ChunkedText(handle, path, chunk_chars)
            reader.expect("{")
            if reader.peek() == "}":
                reader.pos += 1
            else:
                while True:
                    key = reader.value()
                    if not isinstance(key, str):
                        raise reader.error(f"an object key must be a string, got {key!r}")
                    reader.expect(":")
                    yield key, reader.value()
                    if reader.expect(",}") == "}":
                        break
            if reader.peek():
                raise reader.error("unexpected data after the top-level object")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetFormatError(f"{path}: cannot read the file ({error}).") from error


# -- the source ---------------------------------------------------------------------------------


@dataclass
class _Video:
    """A video whose annotations are being collected from mask_dict.json."""

    name: str
    stems: list[str]
    size: tuple[int, int]
    expressions: list[tuple[str, tuple[str, ...]]]  # (text, annotation ids as mask_dict keys)
    missing: set[str]
    masks: dict[str, Any] = field(default_factory=dict)


class MeViSSource(VideoSegmentationSource):
    """MeViS: one record per video, one target per expression (union of its objects), RLE shards.

    Args:
        root: The MeViS folder holding ``<split>/{meta_expressions.json,mask_dict.json,JPEGImages}``.
        split: ``"train"`` or ``"valid_u"`` (``valid`` has no masks).
        chunk_chars: Characters of ``mask_dict.json`` read at a time while sharding.
    """

    name = "mevis"
    splits = ("train", "valid_u")

    def __init__(
        self, root: str | Path, *, split: str = "train", chunk_chars: int = DEFAULT_CHUNK_CHARS
    ) -> None:
        super().__init__(root, split=split)
        self.chunk_chars = chunk_chars

    def _index(self, artifacts: Path, errors: VideoErrors) -> Iterator[SegRecord]:
        split_dir = self.root / self.split
        meta_path, mask_path = split_dir / "meta_expressions.json", split_dir / "mask_dict.json"
        videos = read_videos(meta_path, expected=_EXPRESSIONS_EXPECTED)
        if not mask_path.is_file():
            raise DatasetFormatError(f"{mask_path}: file not found; expected {_MASKS_EXPECTED}.")
        shard_dir = artifacts / SHARD_DIRNAME / self.split
        records: dict[str, SegRecord] = {}
        pending: dict[str, _Video] = {}
        waiting: dict[str, list[str]] = {}  # annotation id -> videos that still need it
        dropped = never_visible = 0
        for name, entry in videos.items():
            try:
                video, empty = self._prepare(name, entry, split_dir, meta_path)
            except DatasetFormatError as error:
                errors.handle(name, error)
                continue
            dropped += empty
            if not video.missing:
                records[name], unseen = self._finish(video, mask_path, shard_dir)
                never_visible += unseen
                continue
            pending[name] = video
            for annotation in video.missing:
                waiting.setdefault(annotation, []).append(name)
        # One pass over the big file; a video's shard is written as soon as its last annotation is read.
        for annotation, per_frame in iter_json_object(mask_path, chunk_chars=self.chunk_chars):
            for name in waiting.pop(annotation, ()):
                video = pending.get(name)
                if video is None:  # already dropped
                    continue
                video.masks[annotation] = per_frame
                video.missing.discard(annotation)
                if video.missing:
                    continue
                del pending[name]
                try:
                    records[name], unseen = self._finish(video, mask_path, shard_dir)
                except DatasetFormatError as error:
                    errors.handle(name, error)
                else:
                    never_visible += unseen
        for name, video in pending.items():
            missing = sorted(video.missing, key=lambda key: (len(key), key))
            errors.handle(
                name,
                DatasetFormatError(
                    f"{mask_path}: no entry for annotation id(s) {', '.join(missing[:5])} of video {name} "
                    f"(used by its expressions in {meta_path}); the two files do not belong together."
                ),
            )
        without_targets = 0
        for name in videos:
            record = records.get(name)
            if record is None:
                continue
            if not record.targets:
                without_targets += 1
                continue
            yield record
        log_dropped(self.name, dropped, "expressions have an empty text or no annotation id and are left out")
        log_dropped(
            self.name,
            never_visible,
            "expressions have no mask on any frame (null or empty everywhere) and are left out",
        )
        log_dropped(self.name, without_targets, "videos have no usable expression and are left out")
        errors.report(len(videos))

    def load_masks(self, record: SegRecord, target: SegTarget, positions: Sequence[int]) -> np.ndarray:
        """The target's masks (see the base class); a mask that does not decode names mask_dict.json.

        The shard is a verbatim copy of mask_dict.json's RLEs, so an RLE that fails here is corrupt in the
        dataset. The generic message blames the shard and says to re-run lavida-prepare, which would only
        copy the same mask again.
        """
        try:
            return super().load_masks(record, target, positions)
        except RLEDecodeError as error:
            ids = error.key.split("+")
            # A shard written before frames kept a null per absent annotation may hold fewer parts than
            # ids; its failing part is then one of them.
            if error.part is not None and error.parts == len(ids):
                ids = [ids[error.part]]
            annotation = f"annotation {ids[0]}" if len(ids) == 1 else f"one of annotations {', '.join(ids)}"
            mask_path = self.root / self.split / "mask_dict.json"
            raise DatasetFormatError(
                f"{mask_path}: {annotation} (video {record.key}), frame {error.position}: not a valid COCO "
                f"RLE ({error.reason}). lavida-prepare copied it unchanged into {error.file}, so the "
                "dataset's file is corrupt: download or extract mask_dict.json again, then re-run "
                "lavida-prepare mevis."
            ) from error

    def _prepare(
        self, name: str, entry: dict[str, Any], split_dir: Path, meta_path: Path
    ) -> tuple[_Video, int]:
        """Check the video's frames and expressions; return it and the count of expressions left out."""
        expressions, frames = entry.get("expressions"), entry.get("frames")
        if not isinstance(expressions, dict) or not isinstance(frames, list) or not frames:
            raise DatasetFormatError(
                f'{meta_path}: video {name} needs an "expressions" mapping and a non-empty "frames" list.'
            )
        stems, size = check_video_frames(split_dir / "JPEGImages" / name, None, frames)
        kept, dropped = [], 0
        for expression_id, expression in expressions.items():
            if not isinstance(expression, dict) or not isinstance(expression.get("exp"), str):
                raise DatasetFormatError(
                    f'{meta_path}: video {name}, expression {expression_id}: no "exp" string.'
                )
            anno_ids = expression.get("anno_id")
            if not isinstance(anno_ids, list):
                raise DatasetFormatError(
                    f'{meta_path}: video {name}, expression {expression_id}: "anno_id" must be a list of ids.'
                )
            ids = sorted({parse_object_id(value, path=meta_path, video=name) for value in anno_ids})
            text = normalize_text(expression["exp"])
            if not text or not ids:
                dropped += 1
                continue
            kept.append((text, tuple(str(value) for value in ids)))
        missing = {annotation for _, anno_ids in kept for annotation in anno_ids}
        return _Video(name=name, stems=stems, size=size, expressions=kept, missing=missing), dropped

    def _finish(self, video: _Video, mask_path: Path, shard_dir: Path) -> tuple[SegRecord, int]:
        """Check the video's masks, write its shard, and build its record; also return how many of its
        expressions were left out for having no mask on any frame.

        Such an expression describes nothing visible in the clip: as a target it would be an anomalous
        sample (y_f = 1) with an empty mask on every frame, and its empty visibility would read as
        "visible everywhere" (``SegTarget.frames``). Ref-DAVIS and refer leave such targets out too.
        """
        length = len(video.stems)
        for annotation, per_frame in video.masks.items():
            _check_masks(
                per_frame,
                length,
                video.size,
                where=f"{mask_path}: annotation {annotation} (video {video.name})",
            )
        # Visibility per annotation once (one batched area call each), then per key as their union.
        present = {annotation: _visible_positions(per_frame) for annotation, per_frame in video.masks.items()}
        shard: dict[str, list[list[dict[str, Any]] | None]] = {}
        visible: dict[str, tuple[int, ...]] = {}
        for _, anno_ids in video.expressions:
            key = "+".join(anno_ids)
            if key in visible:
                continue
            visible[key] = tuple(sorted(set().union(*(present[a] for a in anno_ids))))
            if visible[key]:
                # A frame's list holds one entry per annotation id, in the key's order, null where that
                # one is absent: a mask that fails to decode at training is then traced to its annotation.
                shard[key] = [
                    [video.masks[a][position] for a in anno_ids]
                    if any(video.masks[a][position] is not None for a in anno_ids)
                    else None
                    for position in range(length)
                ]
        shard_path = shard_dir / f"{video.name}.json"
        targets, never_visible = [], 0
        if shard:
            write_json(shard_path, shard, separators=(",", ":"))  # atomic: a reader never sees half a shard
            reference = artifact_reference(shard_path, self.root)
            for text, anno_ids in video.expressions:
                key = "+".join(anno_ids)
                if key not in shard:
                    never_visible += 1
                    continue
                spec = {
                    "kind": "rle",
                    "file": reference,
                    "key": key,
                    "anno_ids": [int(a) for a in anno_ids],
                }
                targets.append(SegTarget(text=text, mask=spec, frames=visible[key]))
        else:
            never_visible = len(video.expressions)
        frames = (f"{self.split}/JPEGImages/{video.name}/{stem}.jpg" for stem in video.stems)
        return self._record(video.name, frames, targets, video.size), never_visible


# The characters of a compressed COCO RLE: pycocotools writes each 6-bit group as chr(48 + value).
_RLE_COUNTS = re.compile(r"[0-o]*")


def _check_masks(per_frame: Any, length: int, size: tuple[int, int], *, where: str) -> None:
    """Raise unless ``per_frame`` is a list of ``length`` RLEs (of ``size``) or nulls.

    An RLE is checked for its shape, its size and the characters of its counts, not decoded: decoding
    is what finds counts that overrun the frame, but it fills the whole frame, ~0.5 ms for a 720×1280
    mask with pycocotools 2.0.11 on one core (~1.3 ms at 1080p). MeViS has ~443k masks (~28k annotation
    lists × tens of frames, up to ~2M entries), so decoding them would add 4 to 19 minutes to
    lavida-prepare, against seconds for the character check (~1.4 µs a mask). A mask that only decoding
    would refuse is refused when training loads it, naming mask_dict.json and the annotation
    (:meth:`MeViSSource.load_masks`).
    """
    if not isinstance(per_frame, list) or len(per_frame) != length:
        got = f"{len(per_frame)} entries" if isinstance(per_frame, list) else type(per_frame).__name__
        raise DatasetFormatError(
            f"{where}: expected a list of {length} masks (one per frame, null if absent), got {got}."
        )
    for position, rle in enumerate(per_frame):
        if rle is None:
            continue
        # The size is checked as a list before it is compared: list() of a number or null raised a bare
        # TypeError that named neither mask_dict.json nor the annotation.
        if (
            not isinstance(rle, dict)
            or not isinstance(rle.get("counts"), (str, list))
            or not isinstance(rle.get("size"), list)
        ):
            raise DatasetFormatError(
                f'{where}: frame {position} is neither null nor a COCO RLE {{"size": [H, W], "counts"}}.'
            )
        if rle["size"] != [size[0], size[1]]:
            raise DatasetFormatError(
                f"{where}: frame {position} has a {rle['size']} mask but the video's frames are {list(size)}."
            )
        if isinstance(rle["counts"], str) and not _RLE_COUNTS.fullmatch(rle["counts"]):
            raise DatasetFormatError(
                f"{where}: frame {position} is not a COCO RLE: its counts hold characters no encoder writes "
                "(only '0' to 'o'). The file is corrupt: download or extract it again, then re-run "
                "lavida-prepare mevis."
            )


def _visible_positions(per_frame: list[dict[str, Any] | None]) -> set[int]:
    """Positions whose RLE covers at least one pixel (computed on the RLEs, without decoding them)."""
    from pycocotools import mask as coco_mask

    positions, encoded = [], []
    for position, rle in enumerate(per_frame):
        if rle is None:
            continue
        counts = rle["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            height, width = rle["size"]
            encoded.append(coco_mask.frPyObjects(rle, int(height), int(width)))
        else:
            encoded.append({"size": list(rle["size"]), "counts": counts.encode("ascii")})
        positions.append(position)
    if not encoded:
        return set()
    areas = coco_mask.area(encoded)
    return {position for position, area in zip(positions, areas, strict=True) if area > 0}
