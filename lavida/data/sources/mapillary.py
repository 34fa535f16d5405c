"""Mapillary Vistas (research edition, v2.0 labels): 124 classes, one palette PNG per image.

Layout (train_datasets.md §2.2)::

    <root>/config_v2.0.json                        # {"labels": [{"name", "readable", ...}, ...]}
    <root>/training/images/<key>.jpg
    <root>/training/v2.0/labels/<key>.png          # 8-bit palette PNG: palette index = label index
    <root>/validation/...

A label's pixel value is its position in the config's ``labels`` list; its text is ``readable``
lower-cased, as in the reference loaders (LISA/VISA ``init_mapillary``). One record per image; one
target per class present.

Void labels: the official code keeps all 124 names, so "unlabeled", "ego vehicle" and "car mount"
can become the genuine anomaly (lavida_official.md §8) — a bug the research notes advise against
copying (train_datasets.md §2.2). Labels named ``void--*`` are therefore neither targets nor present
texts by default (``skip_void=False`` restores the official behaviour).

Group labels (v2.0): a "Person Group" is persons and a "Pole Group" poles, told apart no further. As
for Cityscapes' polegroup, the class counts as present wherever its group is (Eq. 1 draws S_irr from
what is absent), and the group's pixels are part of the class's mask, so that an anomalous "person"
sample does not mark a crowd normal. A "Vehicle Group" holds vehicles of unnamed kinds: no vehicle
class is listed as absent where one is visible, and none takes its pixels. The groups stay targets of
their own as well.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lavida.data.sources.base import DatasetFormatError, SegmentationSource, SegRecord, SegTarget
from lavida.data.sources.masks import check_image_size, read_index_png
from lavida.data.sources.text import normalize_text

__all__ = ["MapillaryVistasSource"]

logger = logging.getLogger(__name__)

_SPLIT_FOLDERS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "validation": "validation",
}
_VOID_PREFIX = "void--"
# Class label -> its group label (config names); see the module notes.
_GROUPS_OF = {
    "human--person--individual": "human--person--person-group",
    "object--support--pole": "object--support--pole-group",
}
_VEHICLE_GROUP = "object--vehicle--vehicle-group"
_VEHICLE_PREFIX = "object--vehicle--"


class MapillaryVistasSource(SegmentationSource):
    """Mapillary Vistas as image records with one target per (non-void) class present.

    Args:
        root: The extracted research edition (holding ``config_v2.0.json`` and ``training/``).
        split: ``"train"`` (folder ``training``) or ``"val"`` (``validation``).
        version: Label version, ``"v2.0"`` (124 labels; default, as the official code) or ``"v1.2"``
            (66 labels); selects ``config_<version>.json`` and ``<split>/<version>/labels``.
        skip_void: Drop ``void--*`` labels (unlabeled, ego vehicle, car mount, ...) from targets and
            present texts (default). ``False`` keeps them, as the official code does.
        min_pixels: A class covering fewer pixels is listed in ``present`` but is not a target;
            1 (default) keeps every class, as the official code does.

    Raises:
        DatasetFormatError: ``root`` does not exist, or the config file is missing or malformed.
        ValueError: Unknown ``split`` or ``version``, or ``min_pixels`` < 1.
    """

    name = "mapillary"
    record_options = ("version", "skip_void", "min_pixels")

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        version: str = "v2.0",
        skip_void: bool = True,
        min_pixels: int = 1,
    ) -> None:
        if split not in _SPLIT_FOLDERS:
            raise ValueError(f"mapillary: unknown split {split!r}; expected one of {sorted(_SPLIT_FOLDERS)}.")
        if version not in ("v2.0", "v1.2"):
            raise ValueError(f"mapillary: unknown label version {version!r}; expected 'v2.0' or 'v1.2'.")
        if min_pixels < 1:
            raise ValueError(f"mapillary: min_pixels must be >= 1, got {min_pixels}.")
        super().__init__(root, split=split)
        self.version = version
        self.skip_void = skip_void
        self.min_pixels = min_pixels
        # texts[v] is the description of pixel value v, or None for a skipped void label.
        self.texts, names = self._read_config(self.root / f"config_{version}.json")
        value_of = {name: value for value, name in enumerate(names)}
        # Pixel value of a class -> the value of its group, where the config has both.
        self._group_of = {
            value_of[name]: value_of[group]
            for name, group in _GROUPS_OF.items()
            if name in value_of and group in value_of
        }
        self._vehicle_group = value_of.get(_VEHICLE_GROUP)
        self._vehicle_texts = tuple(
            dict.fromkeys(
                text
                for name, text in zip(names, self.texts, strict=True)
                if name.startswith(_VEHICLE_PREFIX) and name != _VEHICLE_GROUP and text is not None
            )
        )

    def _read_config(self, path: Path) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
        """(text of each pixel value or None for a skipped void label, config name of each value)."""
        try:
            labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
            entries = [(str(label["name"]), label["readable"]) for label in labels]
        except FileNotFoundError as error:
            raise DatasetFormatError(
                f"{path}: the label config is missing; it ships at the root of the Mapillary Vistas "
                "research edition next to training/ and validation/."
            ) from error
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DatasetFormatError(
                f"{path}: expected {{'labels': [{{'name': ..., 'readable': ...}}, ...]}} ({error!r})."
            ) from error
        texts: list[str | None] = []
        for position, (name, readable) in enumerate(entries):
            if not isinstance(readable, str) or not normalize_text(readable):
                raise DatasetFormatError(f"{path}: label {position} ({name}) has no readable name.")
            void = name.startswith(_VOID_PREFIX)
            texts.append(None if void and self.skip_void else normalize_text(readable.lower()))
        if not entries:
            raise DatasetFormatError(f"{path}: the config lists no labels.")
        return tuple(texts), tuple(name for name, _ in entries)

    def index(self, *, skip_errors: bool = False) -> Iterator[SegRecord]:
        """Yield one record per image that has at least one target, in file-name order.

        Args:
            skip_errors: Log and skip an image whose label is missing, unreadable or invalid instead
                of raising; a count of skipped images is logged at the end.

        Raises:
            DatasetFormatError: The split's folders are missing or empty, or (unless
                ``skip_errors``) an image's label is missing or invalid; the message names the file.
        """
        folder = _SPLIT_FOLDERS[self.split]
        images_dir = self.root / folder / "images"
        labels_dir = self.root / folder / self.version / "labels"
        images = sorted(images_dir.glob("*.jpg")) if images_dir.is_dir() else []
        if not images or not labels_dir.is_dir():
            raise DatasetFormatError(
                f"mapillary: expected images in {images_dir}/*.jpg and label PNGs in {labels_dir}/*.png; "
                f"found {len(images)} images{'' if labels_dir.is_dir() else ' and no labels folder'}. "
                "Point root at the extracted research edition (the folder holding config_v2.0.json)."
            )
        yield from self.collect_records(
            images,
            lambda image: self._record(image, labels_dir / f"{image.stem}.png"),
            skip_errors=skip_errors,
            log=logger,
        )

    def _record(self, image: Path, label_path: Path) -> SegRecord:
        if not label_path.is_file():
            raise DatasetFormatError(f"{label_path}: label missing for image {image.name}.")
        label = read_index_png(label_path)
        check_image_size(image, label.shape)
        if label.min() < 0 or label.max() >= len(self.texts):
            raise DatasetFormatError(
                f"{label_path}: pixel value {int(label.max())} has no entry in config_{self.version}.json "
                f"(labels 0..{len(self.texts) - 1}); do the labels and the config come from the same version?"
            )
        # bincount, not np.unique: Mapillary labels are up to ~25 MP and sorting them dominates indexing.
        counts = np.bincount(label.ravel(), minlength=len(self.texts))
        values_by_text: dict[str, list[int]] = {}
        for value in np.flatnonzero(counts):
            text = self.texts[value]
            if text is not None:  # several labels may share a readable name: one target for all
                values_by_text.setdefault(text, []).append(int(value))
        for value, group in self._group_of.items():
            if counts[group] and self.texts[value] is not None:  # the class, at least as its group
                values_by_text.setdefault(self.texts[value], []).append(group)
        present = list(values_by_text)
        if self._vehicle_group is not None and counts[self._vehicle_group]:
            present += [text for text in self._vehicle_texts if text not in values_by_text]
        label_file = label_path.relative_to(self.root).as_posix()
        targets = tuple(
            SegTarget(text=text, mask={"kind": "index_png", "paths": [label_file], "values": values})
            for text, values in values_by_text.items()
            if counts[values].sum() >= self.min_pixels
        )
        return SegRecord(
            source=self.name,
            key=image.stem,
            group=f"{self.name}/{image.stem}",
            frames=(image.relative_to(self.root).as_posix(),),
            targets=targets,
            present=tuple(present),
            is_video=False,
            meta={"size": [int(label.shape[0]), int(label.shape[1])]},
        )
