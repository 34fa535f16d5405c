"""refCLEF, refCOCO, refCOCO+ and refCOCOg: referring expressions on still images (the refer API data).

Layout (lichengunc/refer data/README.md; train_datasets.md §2.4)::

    <root>/images/mscoco/images/train2014/COCO_train2014_000000xxxxxx.jpg   # refcoco, refcoco+, refcocog
    <root>/images/saiapr_tc-12/<file_name>                                  # refclef (SAIAPR TC-12 subset)
    <root>/<dataset>/instances.json       # COCO-style images / annotations (polygons or RLE)
    <root>/<dataset>/refs(<split_by>).p   # pickled list of refs (or refs(<split_by>).json)

``<root>`` is the ``refer_seg`` folder; an image's path is the image folder joined with its
``file_name`` in instances.json, as in the refer API and LISA. Splits: ``unc`` for refclef, refcoco and
refcoco+, ``umd`` for refcocog (image-disjoint train/val/test; LISA's choice and the refer README's
recommendation).

Records and targets: one record per image that has a ref in the split (group = the image); one
target per (ref, distinct sentence) — every sentence is kept, as the research notes recommend
(§5.2), where Sa2VA fixed one random sentence per ref for a whole run. A ref with several sentences
thus has several targets sharing one mask; the sampler, drawing a target uniformly, draws a ref in
proportion to its sentence count (refCOCO* refs have 1-3, so the tilt is small). ``present`` holds the
sentences of every ref on the image, of any split, since each describes something visible there.

Masks: each ref's annotation is converted at index time to one COCO RLE (polygons rasterised with
``polygons_to_rle``; RLEs, a list of RLEs — refCLEF — or uncompressed RLE merged into one) and
stored, keyed by ref id, in a folder of small JSON shards per dataset and split
(``<artifacts>/<name>_<split_by>_<split>_masks/00000.json``, ... — 100 images each, see
``_IMAGES_PER_SHARD`` for why not one file): the mask spec is
``{"kind": "rle", "file": "<that folder>/<shard>.json", "key": "<ref_id>"}``.

Index-time artifacts go to ``artifacts`` (default ``<root>/.lavida/``, where the manifest also goes
by default): the mask shards and, when only the pickle exists, the converted ``refs(<split_by>).json``.
Nothing here unpickles: the pickle is converted by :mod:`lavida.data.sources.refer_pickle`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lavida.atomic import atomic_dir, write_json
from lavida.data.sources.base import DatasetFormatError, SegmentationSource, SegRecord, SegTarget
from lavida.data.sources.masks import check_image_size, decode_rle, encode_rle, merge_by_text, polygons_to_rle
from lavida.data.sources.refer_pickle import convert_refs_pickle
from lavida.data.sources.text import normalize_text
from lavida.file_state import file_state
from lavida.number_checks import is_whole

__all__ = ["RefClefSource", "RefCocoGSource", "RefCocoPlusSource", "RefCocoSource", "ReferSource"]

logger = logging.getLogger(__name__)

_COCO_IMAGES = "images/mscoco/images/train2014"

# Masks are split into files of this many images' refs (~250 refs, ~100 KB for refCOCO) rather than one
# file per dataset: load_mask_spec keeps only the last few parsed files (an LRU cache shared with the
# per-video MeViS shards), so in a mixed run a single 10-20 MB file would be re-read and re-parsed on
# nearly every refCOCO sample, while a small shard costs about a millisecond.
_IMAGES_PER_SHARD = 100
_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


class ReferSource(SegmentationSource):
    """A refer-API dataset as image records with one target per (ref, sentence) of the split.

    Subclasses set ``name`` (the dataset folder), ``default_split_by`` and ``default_image_dir``.

    Args:
        root: The ``refer_seg`` folder holding ``images/`` and one folder per dataset.
        split: Which refs become targets (``"train"`` by default; also ``"val"``, ``"test"``,
            ``"testA"``, ``"testB"`` depending on the split scheme).
        split_by: The split scheme, i.e. which ``refs(<split_by>)`` file to read; default
            ``default_split_by`` (``unc``; ``umd`` for refcocog).
        image_dir: The image folder, relative to ``root`` or absolute (default: the refer API's,
            ``images/mscoco/images/train2014`` or ``images/saiapr_tc-12``). Absolute paths are stored
            as such in the records, so a manifest made with one stays valid only on that machine.

    Raises:
        DatasetFormatError: ``root`` does not exist.
    """

    default_split_by: str = "unc"
    default_image_dir: str = _COCO_IMAGES
    record_options = ("split_by", "image_dir")

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        split_by: str | None = None,
        image_dir: str | Path | None = None,
    ) -> None:
        super().__init__(root, split=split)
        self.split_by = split_by or self.default_split_by
        self.image_dir = Path(image_dir) if image_dir is not None else Path(self.default_image_dir)
        self.dataset_dir = self.root / self.name

    # -- indexing ------------------------------------------------------------------------------------

    def index(self, *, artifacts: str | Path | None = None, skip_errors: bool = False) -> Iterator[SegRecord]:
        """Yield one record per image with refs in the split, in image-id order.

        Everything is computed before the first record is yielded, and the mask shards are written
        by then, so every yielded record's masks can be loaded.

        Args:
            artifacts: Folder for files made at index time: the mask shards
                (``<name>_<split_by>_<split>_masks/``, replaced as a whole on every run) and, if
                needed, the converted refs JSON (default ``<root>/.lavida``, the folder the video
                sources use too). Records refer to the shards relative to the root when they are
                inside it, by absolute path otherwise, so keep the folder for as long as the manifest
                is used.
            skip_errors: Log and skip an image whose file, entry in instances.json or annotation is
                missing or invalid instead of raising; a count of skipped images is logged. Errors in
                instances.json or the refs file as a whole always raise.

        Raises:
            DatasetFormatError: instances.json or the refs file is missing or malformed, no ref is in
                the split, or (unless ``skip_errors``) an image or annotation is bad; the message
                names the file.
        """
        folder = Path(artifacts).expanduser() if artifacts is not None else self.root / ".lavida"
        images, annotations = self._read_instances(self.dataset_dir / "instances.json")
        refs_path = self._refs_json(folder)
        refs_by_image = self._read_refs(refs_path)
        mask_dir = folder / f"{self.name}_{self.split_by}_{self.split}_masks"
        mask_dir_reference = _relative_or_absolute(mask_dir, self.root)

        records: list[SegRecord] = []
        shards: dict[str, dict[str, list[dict[str, Any]]]] = {}  # shard file name -> {ref_id: [rle]}
        skipped = 0
        dropped_refs = 0
        for image_id in sorted(refs_by_image):
            image_refs = refs_by_image[image_id]
            if not any(ref["split"] == self.split for ref in image_refs):
                continue
            shard = f"{len(records) // _IMAGES_PER_SHARD:05d}.json"
            try:
                record, image_masks, dropped = self._record(
                    image_id, image_refs, images, annotations, f"{mask_dir_reference}/{shard}"
                )
            except DatasetFormatError as error:
                if not skip_errors:
                    raise
                skipped += 1
                logger.warning("%s: skipping image %s: %s", self.name, image_id, error)
                continue
            dropped_refs += dropped
            if record.targets:
                records.append(record)
                shards.setdefault(shard, {}).update(image_masks)
        if not records:
            raise DatasetFormatError(
                f"{refs_path}: no usable ref in split {self.split!r} "
                f"(splits present: {sorted({ref['split'] for refs in refs_by_image.values() for ref in refs})})."
            )
        if dropped_refs:
            logger.info(
                "%s: %d refs without a usable sentence or with an empty mask were left out.",
                self.name,
                dropped_refs,
            )
        if skipped:
            logger.warning("%s: skipped %d images with format errors.", self.name, skipped)
        _write_shards(mask_dir, shards)
        logger.info(
            "%s (%s, %s): %d images, %d refs, %d targets; masks in %s (%d files).",
            self.name, self.split_by, self.split, len(records), sum(map(len, shards.values())),
            sum(len(record.targets) for record in records), mask_dir, len(shards),
        )  # fmt: skip
        yield from records

    def _read_instances(self, path: Path) -> tuple[dict[int, dict], dict[int, dict]]:
        if not path.is_file():
            raise DatasetFormatError(
                f"{path}: not found. Expected the refer layout <root>/{self.name}/instances.json with "
                f"refs({self.split_by}).p; extract {self.name}.zip into the refer_seg folder given as root."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            images = {int(image["id"]): image for image in data["images"]}
            annotations = {int(ann["id"]): ann for ann in data["annotations"]}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DatasetFormatError(
                f"{path}: expected COCO-style JSON with 'images' and 'annotations' lists of dicts with "
                f"'id' ({error!r})."
            ) from error
        return images, annotations

    def _refs_json(self, folder: Path) -> Path:
        """The refs as JSON: shipped/converted next to the pickle, else ours, else convert now."""
        stem = f"refs({self.split_by})"
        pickle_path = self.dataset_dir / f"{stem}.p"
        beside = self.dataset_dir / f"{stem}.json"
        if beside.is_file():
            return beside
        converted = folder / f"{self.name}_{stem}.json"
        # Which pickle (name, size, time) the conversion was made from: re-convert when it is replaced,
        # even by an older file (unzip, tar and cp -p restore an archive's old times).
        made_from = converted.with_name(f"{converted.stem}.source.json")
        if pickle_path.is_file():
            state = file_state(pickle_path)
            if not (converted.is_file() and _read_state(made_from) == state):
                convert_refs_pickle(pickle_path, output=converted)
                write_json(made_from, state)  # after the conversion: a kill between them re-converts
            return converted
        if converted.is_file():  # the pickle was removed after its conversion
            return converted
        raise DatasetFormatError(
            f"{pickle_path}: not found (nor {beside.name}). Expected the refer file refs({self.split_by}).p "
            f"in {self.dataset_dir}; is split_by={self.split_by!r} right for {self.name}?"
        )

    def _read_refs(self, path: Path) -> dict[int, list[dict[str, Any]]]:
        try:
            refs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DatasetFormatError(f"{path}: cannot read the refs JSON ({error}).") from error
        if not isinstance(refs, list):
            raise DatasetFormatError(f"{path}: expected a list of refs, got {type(refs).__name__}.")
        by_image: dict[int, list[dict[str, Any]]] = {}
        for position, ref in enumerate(refs):
            missing = [key for key in _REF_KEYS if not isinstance(ref, dict) or key not in ref]
            if not missing and not isinstance(ref["sentences"], list):
                missing = ["a sentences list"]
            if not missing and not all(is_whole(ref[key]) for key in ("ref_id", "ann_id", "image_id")):
                missing = ["integer ref_id/ann_id/image_id"]
            if missing:
                raise DatasetFormatError(
                    f"{path}: ref #{position} lacks {', '.join(missing)}; every ref needs "
                    f"{', '.join(_REF_KEYS)} (ids as integers)."
                )
            by_image.setdefault(int(ref["image_id"]), []).append(ref)
        return by_image

    def _record(
        self,
        image_id: int,
        image_refs: list[dict[str, Any]],
        images: dict[int, dict],
        annotations: dict[int, dict],
        mask_file: str,
    ) -> tuple[SegRecord, dict[str, list[dict[str, Any]]], int]:
        """One image's record, its refs' RLEs ({ref_id: [rle]}) and the number of refs left out."""
        instances = self.dataset_dir / "instances.json"
        image = images.get(image_id)
        if image is None:
            raise DatasetFormatError(f"{instances}: no image with id {image_id}, which refs point to.")
        try:
            height, width, file_name = int(image["height"]), int(image["width"]), str(image["file_name"])
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetFormatError(
                f"{instances}: image {image_id} lacks height/width/file_name."
            ) from error
        frame = (self.image_dir / file_name).as_posix()
        _check_image(self.root / frame, (height, width))

        present: dict[str, None] = {}  # ordered set
        targets: list[SegTarget] = []
        masks: dict[str, list[dict[str, Any]]] = {}
        dropped = 0
        for ref in image_refs:
            sentences = _sentences(ref)
            present.update(dict.fromkeys(sentences))
            if ref["split"] != self.split:
                continue
            annotation = annotations.get(int(ref["ann_id"]))
            if annotation is None or "segmentation" not in annotation:
                raise DatasetFormatError(
                    f"{instances}: no annotation (with a segmentation) for ann_id {ref['ann_id']} of ref {ref['ref_id']}."
                )
            if annotation.get("image_id", image_id) != image_id:  # the refs and instances disagree
                raise DatasetFormatError(
                    f"{instances}: annotation {ref['ann_id']} is on image {annotation['image_id']}, but ref "
                    f"{ref['ref_id']} says image {image_id}; are the refs file and instances.json from the same dataset?"
                )
            try:
                rle = segmentation_to_rle(annotation["segmentation"], height, width)
                empty = _area(rle) == 0
            except DatasetFormatError as error:
                raise DatasetFormatError(f"{instances}, annotation {ref['ann_id']}: {error}") from error
            if not sentences or empty:
                dropped += 1
                continue
            key = str(ref["ref_id"])
            masks[key] = [rle]  # one entry per frame; an image has one frame
            spec = {"kind": "rle", "file": mask_file, "key": key}
            targets.extend(SegTarget(text=sentence, mask=spec) for sentence in sentences)
        record = SegRecord(
            source=self.name,
            key=str(image_id),
            group=f"{self.name}/{image_id}",
            frames=(frame,),
            targets=tuple(merge_by_text(targets)),  # a sentence on two refs covers both objects
            present=tuple(present),
            is_video=False,
            meta={"size": [height, width], "image_id": image_id},
        )
        return record, masks, dropped


class RefClefSource(ReferSource):
    """refCLEF (ReferItGame on SAIAPR TC-12 images), UNC split; annotations are RLE."""

    name = "refclef"
    default_image_dir = "images/saiapr_tc-12"


class RefCocoSource(ReferSource):
    """refCOCO (COCO train2014 images), UNC split."""

    name = "refcoco"


class RefCocoPlusSource(ReferSource):
    """refCOCO+ (no location words), UNC split."""

    name = "refcoco+"


class RefCocoGSource(ReferSource):
    """refCOCOg (longer expressions), UMD split (image-disjoint)."""

    name = "refcocog"
    default_split_by = "umd"


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A COCO ``segmentation`` field as one compressed RLE (``counts`` str) of an image's size.

    Accepts polygons (a list of ``[x1, y1, x2, y2, ...]``), one RLE dict (compressed or
    uncompressed) or a list of RLE dicts (refCLEF); several parts are merged into their union, as the
    refer API's ``getMask`` sums them.

    An empty list is an empty mask: some annotations in the refer data have no segmentation, and the
    reference loaders read them as an all-zero mask (LISA's refer_seg_dataset checks
    ``len(ann["segmentation"]) == 0``); the caller then leaves the ref out like any empty mask,
    instead of one such annotation stopping the whole indexing run. So are polygons with fewer than three
    points (no area; :func:`polygons_to_rle`).

    Raises:
        DatasetFormatError: Unknown layout, or an RLE whose size is not (height, width).
    """
    if isinstance(segmentation, list) and not segmentation:
        return encode_rle(np.zeros((height, width), dtype=bool))
    parts = [segmentation] if isinstance(segmentation, dict) else segmentation
    if not isinstance(parts, list) or not parts:
        raise DatasetFormatError(f"empty or unknown segmentation {str(segmentation)[:80]!r}.")
    if all(isinstance(part, dict) for part in parts):
        for part in parts:
            if "counts" not in part or list(part.get("size", ())) != [height, width]:
                raise DatasetFormatError(
                    f"RLE with size {part.get('size')} (expected [{height}, {width}], the image's size)."
                )
        if len(parts) == 1 and isinstance(parts[0]["counts"], str):
            return {"size": [height, width], "counts": parts[0]["counts"]}  # already what we store
        return encode_rle(decode_rle(parts, (height, width)))
    if all(isinstance(part, list) for part in parts):
        return polygons_to_rle(parts, height, width)
    raise DatasetFormatError(f"segmentation mixes polygons and RLEs: {str(segmentation)[:80]!r}.")


def _sentences(ref: dict[str, Any]) -> list[str]:
    """A ref's distinct normalised sentences, in order (``sent`` is the refer API's cleaned text)."""
    texts: dict[str, None] = {}
    for sentence in ref["sentences"]:
        if not isinstance(sentence, dict):
            continue
        raw = sentence.get("sent") or sentence.get("raw")
        if isinstance(raw, str) and (text := normalize_text(raw)):
            texts[text] = None
    return list(texts)


def _read_state(path: Path) -> dict | None:
    """A conversion's ``file_state`` of its pickle, or None when missing or unreadable (convert again)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _area(rle: dict[str, Any]) -> int:
    from pycocotools import mask as coco_mask

    try:
        return int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))
    except (ValueError, TypeError, UnicodeError) as error:
        raise DatasetFormatError(f"RLE counts cannot be read ({error}).") from error


def _relative_or_absolute(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (portable manifests), else absolute."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _write_shards(directory: Path, shards: dict[str, dict[str, Any]]) -> None:
    """Replace ``directory`` with one JSON file per shard, so no stale shard of an earlier run survives.

    The files are written into a staging folder that then takes the old one's place (``atomic_dir``): an
    interrupted run leaves the previous shards intact.
    """
    with atomic_dir(directory) as fresh:
        for name, content in shards.items():
            (fresh / name).write_text(json.dumps(content, separators=(",", ":")), encoding="utf-8")


def _check_image(image: Path, size: tuple[int, int]) -> None:
    """Raise unless ``image`` exists and is ``size`` (H, W) as instances.json says; reads the header only."""
    if not image.is_file():
        raise DatasetFormatError(
            f"{image}: image not found. Expected the refer image folders under root "
            "(images/mscoco/images/train2014 for refCOCO*, images/saiapr_tc-12 for refCLEF), or pass image_dir."
        )
    check_image_size(image, size)
