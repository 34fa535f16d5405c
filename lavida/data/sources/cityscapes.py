"""Cityscapes (gtFine, fine annotations): uint8 ``*_gtFine_labelIds.png`` with label ids 0..33.

Layout (cityscapesScripts README; train_datasets.md §2.3)::

    <root>/leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/train/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

One record per image; one target per selected class present, its mask the pixels equal to the raw
label id. Which classes may be targets (``classes``):

- ``"official8"`` (default): the eight label ids the official LAVIDA code uses (dataset/image/
  CitySpace.py; lavida_official.md §8) — traffic light, traffic sign, terrain, truck, bus, train,
  motorcycle, bicycle. Road, car, person, ... are so common in street scenes that the authors left
  them out as anomalies.
- ``"train19"``: the 19 classes of the Cityscapes benchmark (``trainId`` != 255).

Every named class visible in the image (label id >= 7; ids 0..6 are void: unlabeled, ego vehicle,
rectification border, out of roi, static, dynamic, ground) is listed in ``present`` either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lavida.data.sources.base import DatasetFormatError, SegmentationSource, SegRecord, SegTarget
from lavida.data.sources.masks import check_image_size, read_index_png
from lavida.data.sources.text import normalize_text

__all__ = ["CITYSCAPES_LABELS", "CITYSCAPES_OFFICIAL8", "CITYSCAPES_TRAIN19", "CityscapesSource"]

logger = logging.getLogger(__name__)

# labelId -> name, from the label table of mcordts/cityscapesScripts
# (cityscapesscripts/helpers/labels.py). "license plate" (id -1) is never written to labelIds PNGs.
CITYSCAPES_LABELS: dict[int, str] = {
    0: "unlabeled", 1: "ego vehicle", 2: "rectification border", 3: "out of roi", 4: "static",
    5: "dynamic", 6: "ground", 7: "road", 8: "sidewalk", 9: "parking", 10: "rail track",
    11: "building", 12: "wall", 13: "fence", 14: "guard rail", 15: "bridge", 16: "tunnel", 17: "pole",
    18: "polegroup", 19: "traffic light", 20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky",
    24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 29: "caravan", 30: "trailer",
    31: "train", 32: "motorcycle", 33: "bicycle",
}  # fmt: skip

# Label ids 0..6 belong to the "void" category of labels.py: not descriptions of anything.
_FIRST_NAMED_ID = 7
# Labels that are groups of another class's objects told apart no further (a "polegroup" is poles;
# Cityscapes ignores it in train19, whose "pole" is a target): where the group is present, so is the
# class (Eq. 1), and the group's pixels belong to the class's mask, which would otherwise mark those
# poles as normal in an anomalous "pole" sample.
_GROUPS_OF = {17: (18,)}  # pole: polegroup

# The label ids of the 19 benchmark classes (trainId 0..18 in labels.py, in trainId order).
CITYSCAPES_TRAIN19: tuple[int, ...] = (
    7,
    8,
    11,
    12,
    13,
    17,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    28,
    31,
    32,
    33,
)

# The label ids the official LAVIDA loader uses as anomalies (lavida_official.md §8).
CITYSCAPES_OFFICIAL8: tuple[int, ...] = (19, 20, 22, 27, 28, 31, 32, 33)

_CLASS_SETS = {"official8": CITYSCAPES_OFFICIAL8, "train19": CITYSCAPES_TRAIN19}
_LABEL_SUFFIX = "_gtFine_labelIds.png"
_IMAGE_SUFFIX = "_leftImg8bit.png"


class CityscapesSource(SegmentationSource):
    """Cityscapes gtFine as image records with one target per selected class present.

    Args:
        root: The folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"`` (default) or ``"val"`` (test-split gtFine PNGs are placeholders).
        classes: ``"official8"`` (default, the official code's eight label ids) or ``"train19"``.
        min_pixels: A class covering fewer pixels is listed in ``present`` but is not a target;
            1 (default) keeps every class, as the official code does.

    Raises:
        DatasetFormatError: ``root`` does not exist.
        ValueError: Unknown ``split`` or ``classes``, or ``min_pixels`` < 1.
    """

    name = "cityscapes"
    record_options = ("classes", "min_pixels")

    def __init__(
        self, root: str | Path, *, split: str = "train", classes: str = "official8", min_pixels: int = 1
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(
                f"cityscapes: unknown split {split!r}; expected 'train' or 'val' (test labels are placeholders)."
            )
        if classes not in _CLASS_SETS:
            raise ValueError(
                f"cityscapes: unknown class set {classes!r}; expected one of {sorted(_CLASS_SETS)}."
            )
        if min_pixels < 1:
            raise ValueError(f"cityscapes: min_pixels must be >= 1, got {min_pixels}.")
        super().__init__(root, split=split)
        self.classes = classes
        self.target_ids = frozenset(_CLASS_SETS[classes])
        self.min_pixels = min_pixels

    def index(self, *, skip_errors: bool = False) -> Iterator[SegRecord]:
        """Yield one record per image that has at least one target, ordered by city then file name.

        Args:
            skip_errors: Log and skip an image whose label is missing, unreadable or invalid instead
                of raising; a count of skipped images is logged at the end.

        Raises:
            DatasetFormatError: The split's folders are missing or empty, or (unless
                ``skip_errors``) an image's label is missing or invalid; the message names the file.
        """
        images_dir = self.root / "leftImg8bit" / self.split
        labels_dir = self.root / "gtFine" / self.split
        images = sorted(images_dir.glob(f"*/*{_IMAGE_SUFFIX}")) if images_dir.is_dir() else []
        if not images or not labels_dir.is_dir():
            raise DatasetFormatError(
                f"cityscapes: expected images in {images_dir}/<city>/*{_IMAGE_SUFFIX} and labels in "
                f"{labels_dir}/<city>/*{_LABEL_SUFFIX}; found {len(images)} images"
                f"{'' if labels_dir.is_dir() else ' and no gtFine folder'}. Extract "
                "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into root."
            )

        def build(image: Path) -> SegRecord:
            stem = image.name[: -len(_IMAGE_SUFFIX)]  # <city>_<seq>_<frame>
            return self._record(image, labels_dir / image.parent.name / f"{stem}{_LABEL_SUFFIX}", stem)

        yield from self.collect_records(images, build, skip_errors=skip_errors, log=logger)

    def _record(self, image: Path, label_path: Path, stem: str) -> SegRecord:
        if not label_path.is_file():
            raise DatasetFormatError(f"{label_path}: label missing for image {image.name}.")
        label = read_index_png(label_path)
        check_image_size(image, label.shape)
        if label.min() < 0 or label.max() > max(CITYSCAPES_LABELS):
            raise DatasetFormatError(
                f"{label_path}: pixel value {int(label.max())} is not a Cityscapes label id (0..33); "
                f"use the *{_LABEL_SUFFIX} files, not labelTrainIds, instanceIds or color PNGs."
            )
        counts = np.bincount(label.ravel(), minlength=max(CITYSCAPES_LABELS) + 1)
        label_file = label_path.relative_to(self.root).as_posix()
        named = range(_FIRST_NAMED_ID, len(counts))
        present = [normalize_text(CITYSCAPES_LABELS[value]) for value in named if counts[value]]
        targets = []
        for value in named:
            values = [value, *_GROUPS_OF.get(value, ())]  # a class with its group's pixels
            pixels = int(counts[values].sum())
            if not pixels:
                continue
            text = normalize_text(CITYSCAPES_LABELS[value])
            if not counts[value]:
                present.append(text)  # in the image through its group only: never listed as absent
            if value in self.target_ids and pixels >= self.min_pixels:
                mask = {"kind": "index_png", "paths": [label_file], "values": values}
                targets.append(SegTarget(text=text, mask=mask))
        return SegRecord(
            source=self.name,
            key=stem,
            group=f"{self.name}/{stem}",
            frames=(image.relative_to(self.root).as_posix(),),
            targets=tuple(targets),
            present=tuple(present),
            is_video=False,
            meta={"size": [int(label.shape[0]), int(label.shape[1])], "city": image.parent.name},
        )
