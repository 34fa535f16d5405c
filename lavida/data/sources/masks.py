"""Mask encodings shared by the sources: index PNGs and COCO run-length encodings.

Two mask specs cover all eleven training datasets (research notes §5.1):

- ``{"kind": "index_png", "paths": [png per frame, or None], "values": [v, ...]}`` — the target is
  the set of pixels whose raw value is in ``values`` (ADE20K class k is stored as k, Cityscapes
  labelIds, Mapillary label indices, YouTube-VOS / DAVIS object ids). Palette PNGs are read as
  palette indices, never converted to RGB.
- ``{"kind": "rle", "file": "<json file>", "key": "<id>"}`` — the file maps ``key`` to a list with one
  entry per frame: an RLE dict, a list of RLE dicts and Nones (their union), or None (absent). ``key``
  may be a list of keys: the union of their masks (one text describing several objects,
  :func:`merge_by_text`). refCOCO-family polygons are converted to RLE once at indexing time; MeViS's
  one big ``mask_dict.json`` is split into one file per video so a worker never loads all of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from lavida.data.exposure import normalize_text as comparison_key
from lavida.data.sources.base import DatasetFormatError, SegTarget
from lavida.data.video import pillow_read_errors


def read_index_png(path: str | Path) -> np.ndarray:
    """A label PNG as an (H, W) integer array of raw pixel values (palette indices for mode 'P').

    Raises:
        DatasetFormatError: the file is missing, corrupt or not a single-channel image (named).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in _LABEL_MODES:
                return np.asarray(image).astype(np.int64)
    except pillow_read_errors() as error:
        raise DatasetFormatError(
            f"{path}: cannot read the label image ({type(error).__name__}: {error}); replace it with a "
            "good copy from the dataset's archive."
        ) from error
    # Raised outside the try: the file reads fine, it is the wrong file (a colour visualisation), so
    # "replace it with a good copy" would be the wrong advice.
    raise DatasetFormatError(
        f"{path}: expected a single-channel label PNG (mode P/L/I) whose pixel values are class or object "
        f"ids, got mode {mode}: this looks like a colour-coded visualisation. Use the datasets' label files, "
        "e.g. ADEChallengeData2016/annotations/*.png (not the full ADE20K release's *_seg.png), Cityscapes "
        "*_gtFine_labelIds.png (not *_color.png), Mapillary's palette labels/*.png."
    )


_LABEL_MODES = ("P", "L", "I", "I;16", "1")  # PIL modes with one value per pixel


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, from its header only.

    Raises:
        DatasetFormatError: the file is missing, corrupt or not an image (named).
    """
    from PIL import Image

    try:
        with Image.open(path) as handle:
            width, height = handle.size
    except pillow_read_errors() as error:
        raise DatasetFormatError(
            f"{path}: cannot read the image ({type(error).__name__}: {error}); replace it with a good copy "
            "from the dataset's archive."
        ) from error
    return int(height), int(width)


def check_image_size(image: str | Path, size: tuple[int, ...]) -> None:
    """Raise unless ``image`` opens and is (H, W) = ``size`` (its annotation's size); reads the header only."""
    height, width = image_size(image)
    if (height, width) != (int(size[0]), int(size[1])):
        raise DatasetFormatError(
            f"{image}: image is {height}x{width} but its annotation is {size[0]}x{size[1]}; "
            "image and annotation must have the same size."
        )


def mask_from_values(label: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """(H, W) bool: pixels whose value is one of ``values``."""
    return np.isin(label, np.asarray(values, dtype=label.dtype))


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool → COCO compressed RLE with ``counts`` as str (JSON-serialisable)."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any] | Sequence[dict[str, Any]] | None, size: tuple[int, int]) -> np.ndarray:
    """One RLE, a list of RLEs (their union), or None (empty) → (H, W) bool.

    Accepts compressed (``counts`` str) and uncompressed (``counts`` list of ints) RLEs.
    """
    from pycocotools import mask as coco_mask

    height, width = size
    if rle is None:
        return np.zeros((height, width), dtype=bool)
    parts = [rle] if isinstance(rle, dict) else list(rle)
    result = np.zeros((height, width), dtype=bool)
    for part in parts:
        if part is None:
            continue
        counts = part["counts"]
        if isinstance(counts, list):  # uncompressed → compressed
            part = coco_mask.frPyObjects(part, int(part["size"][0]), int(part["size"][1]))
        elif isinstance(counts, str):
            part = {"size": part["size"], "counts": counts.encode("ascii")}
        decoded = coco_mask.decode(part).astype(bool)
        if decoded.shape != (height, width):
            raise DatasetFormatError(f"RLE of size {decoded.shape} does not fit a {height}×{width} frame.")
        result |= decoded
    return result


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict[str, Any]:
    """COCO polygons ([x1, y1, x2, y2, ...] lists) → one compressed RLE of their union."""
    from pycocotools import mask as coco_mask

    # Fewer than three points is no area; frPyObjects would fail on an empty list (IndexError).
    kept = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not kept:
        return encode_rle(np.zeros((height, width), dtype=bool))
    merged = coco_mask.merge(coco_mask.frPyObjects(kept, height, width))
    return {"size": [height, width], "counts": merged["counts"].decode("ascii")}


def _read_rle_file(path: str) -> dict[str, Any]:
    """The parsed RLE file, cached by its path *and* its on-disk identity.

    ``lavida-prepare`` rewrites shard files in place (refer shards reuse the names 00000.json, ...;
    MeViS shards are named after the video), so a cache keyed by the path alone would keep serving the
    masks of the previous indexing to any process that indexes and then loads (a notebook, the demo).
    A rewritten file has a new inode (atomic replace) and modification time, hence a new key.
    """
    try:
        stat = os.stat(path)
    except OSError as error:
        raise DatasetFormatError(
            f"{path}: cannot read the RLE file ({error}); re-run lavida-prepare for this dataset "
            "(and keep its artifacts folder for as long as the manifest is used)."
        ) from error
    return _parse_rle_file(path, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _parse_rle_file(path: str, inode: int, size: int, mtime_ns: int) -> dict[str, Any]:
    """Parse one RLE file; the unused arguments only key the cache (see :func:`_read_rle_file`)."""
    del inode, size, mtime_ns
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetFormatError(
            f"{path}: cannot read the RLE file ({error}); re-run lavida-prepare for this dataset."
        ) from error


class RLEDecodeError(DatasetFormatError):
    """An entry of an RLE mask file does not decode.

    The message blames the file, which lavida-prepare wrote; a source whose RLEs are copied unchanged from
    the dataset (MeViS) catches this and names the dataset's file instead, from the attributes. They are
    keyword arguments with defaults, so that ``RLEDecodeError(message)`` (how pickling and torch's
    DataLoader re-raise an error from a worker) still works.

    Attributes:
        file: The RLE file.
        key: The entry.
        position: The frame.
        part: Which RLE of the frame's list failed (None: the frame holds one RLE, not a list).
        parts: How many RLEs the frame's list holds (1 for a single RLE).
        reason: What was wrong with it (the decoder's message).
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | None = None,
        key: str = "",
        position: int = 0,
        part: int | None = None,
        parts: int = 1,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.file, self.key, self.position, self.part, self.parts = file, key, position, part, parts
        self.reason = reason


def load_mask_spec(
    spec: dict[str, Any], positions: Sequence[int], *, root: str | Path, size: tuple[int, int]
) -> np.ndarray:
    """Masks of frames ``positions`` for an ``index_png`` or ``rle`` spec: (n, H, W) bool.

    Args:
        spec: The target's mask spec (see the module docstring); paths are relative to ``root``.
        positions: Frame positions within the record.
        root: The source's root folder.
        size: (H, W) of the frames, used for frames without an annotation.

    Raises:
        DatasetFormatError: unknown kind, missing file, or a position without an entry.
    """
    root = Path(root)
    kind = spec.get("kind")
    masks = np.zeros((len(positions), *size), dtype=bool)
    if kind == "index_png":
        paths = spec["paths"]
        for row, position in enumerate(positions):
            if position >= len(paths):
                raise DatasetFormatError(
                    f"index_png spec has {len(paths)} frames; position {position} requested."
                )
            if paths[position] is not None:
                label = read_index_png(root / paths[position])
                masks[row] = _fit(mask_from_values(label, spec["values"]), size, root / paths[position])
        return masks
    if kind == "rle":
        table = _read_rle_file(str(root / spec["file"]))
        keys = [spec["key"]] if isinstance(spec["key"], str) else spec["key"]
        for key in keys:
            if key not in table:
                raise DatasetFormatError(
                    f"{root / spec['file']}: no entry '{key}'; the manifest and its mask files come from "
                    "different runs of lavida-prepare. Re-run lavida-prepare for this dataset."
                )
            per_frame = table[key]
            for row, position in enumerate(positions):
                if position >= len(per_frame):
                    raise DatasetFormatError(f"{root / spec['file']}: '{key}' has no frame {position}.")
                entry = per_frame[position]
                parts = entry if isinstance(entry, list) else [entry]
                for part, rle in enumerate(parts):  # one by one, so that the error can say which
                    try:
                        masks[row] |= decode_rle(rle, size)
                    except (DatasetFormatError, KeyError, TypeError, ValueError) as error:
                        raise RLEDecodeError(
                            f"{root / spec['file']}: entry '{key}', frame {position}: {error}; expected a "
                            "COCO RLE {'size': [H, W], 'counts': ...} (or null). Re-run lavida-prepare for "
                            "this dataset.",
                            file=root / spec["file"],
                            key=key,
                            position=position,
                            part=part if isinstance(entry, list) else None,
                            parts=len(parts),
                            reason=str(error),
                        ) from error
        return masks
    raise DatasetFormatError(f"Unknown mask spec kind {kind!r}; expected 'index_png' or 'rle'.")


def _fit(mask: np.ndarray, size: tuple[int, int], path: Path) -> np.ndarray:
    if mask.shape != tuple(size):
        raise DatasetFormatError(
            f"{path}: label of size {mask.shape} does not match its frame's size {tuple(size)}."
        )
    return mask


def merge_by_text(targets: Sequence[SegTarget]) -> list[SegTarget]:
    """One target per text: a text that several objects carry covers all of them.

    Referring datasets attach texts to objects, and two objects of one video or image can carry the same
    text ("a man in a red shirt" for two men; an expression repeated for another object). As separate
    targets, a sample listing that text would mark one of the two as anomalous and the other as normal;
    merged, the listed category covers every object it describes, as class datasets already do
    (YouTube-VOS, Mapillary). Masks are united (``index_png`` values, ``rle`` keys), visible frames too.

    Args:
        targets: A record's targets, in index order.

    Texts are compared as the Anomaly Exposure Sampler compares them (``exposure.normalize_text``:
    whitespace collapsed, case folded), so "A man in red" and "a man in red" are one target, spelled as
    first seen: the sampler treats them as one category, and a listed category must cover every object
    it describes (Eq. 2).

    Returns:
        The targets with each text once, at its first position.

    Raises:
        DatasetFormatError: two targets of one text whose masks cannot be united (another kind, other
            label files), which no source produces.
    """
    merged: dict[str, SegTarget] = {}
    for target in targets:
        key = comparison_key(target.text)
        first = merged.get(key)
        if first is None:
            merged[key] = target
            continue
        merged[key] = SegTarget(
            text=first.text,
            mask=_united(first.mask, target.mask, text=first.text),
            # An empty tuple means "visible everywhere / unknown": it absorbs the other.
            frames=tuple(sorted(set(first.frames) | set(target.frames)))
            if first.frames and target.frames
            else (),
        )
    return list(merged.values())


def _united(first: dict[str, Any], second: dict[str, Any], *, text: str) -> dict[str, Any]:
    kind = first.get("kind")
    if kind == "index_png" and second.get("kind") == kind and first["paths"] == second["paths"]:
        return {**first, "values": sorted({*first["values"], *second["values"]})}
    if kind == "rle" and second.get("kind") == kind and first["file"] == second["file"]:
        keys = [first["key"]] if isinstance(first["key"], str) else list(first["key"])
        for key in [second["key"]] if isinstance(second["key"], str) else second["key"]:
            if key not in keys:
                keys.append(key)
        united = {**first, "key": keys[0] if len(keys) == 1 else keys}
        if "anno_ids" in first or "anno_ids" in second:  # MeViS: the annotations behind the keys
            united["anno_ids"] = sorted({*first.get("anno_ids", []), *second.get("anno_ids", [])})
        return united
    raise DatasetFormatError(
        f"Cannot unite the masks of two targets with the text {text!r}: {first} and {second}."
    )
