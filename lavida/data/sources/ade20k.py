"""ADE20K SceneParsing (ADEChallengeData2016): 150 classes, one uint8 label PNG per image.

Layout (train_datasets.md §2.1; CSAILVision/sceneparsing README)::

    <root>/images/training/ADE_train_00000001.jpg
    <root>/annotations/training/ADE_train_00000001.png   # 0 = other objects, k = class k (1..150)
    <root>/images/validation/...  <root>/annotations/validation/...

``<root>`` is the extracted ``ADEChallengeData2016`` folder. One record per image; one target per
class present, its mask the pixels equal to the class id (raw values: no offset at load time). Class
names are the first synonyms of objectInfo150.txt (``lavida/data/resources/ade20k_classes.txt``).

Background classes: the official LAVIDA code never makes wall, sky, floor, ... the genuine anomaly
(lavida_official.md §8), so by default they are not targets; they stay in ``present``, since they are
visible, and so are never offered as an irrelevant category for the image either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from lavida.data.sources.base import DatasetFormatError, SegmentationSource, SegRecord, SegTarget
from lavida.data.sources.masks import check_image_size, read_index_png
from lavida.data.sources.text import normalize_text

__all__ = ["ADE20K_BACKGROUND", "ADE20KSource", "ade20k_class_names"]

logger = logging.getLogger(__name__)

NUM_CLASSES = 150

# The 20 classes the official code (dataset/image/ADE20K.py) excludes from the genuine anomaly
# (lavida_official.md §8): scene layout and terrain, which no one would call an anomaly.
ADE20K_BACKGROUND = frozenset(
    {
        "wall", "building", "sky", "floor", "tree", "ceiling", "road", "grass", "sidewalk", "earth",
        "mountain", "field", "sea", "sand", "path", "runway", "river", "hill", "land", "lake",
    }
)  # fmt: skip

# Our split names and the release's folder names.
_SPLIT_FOLDERS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "validation": "validation",
}


@cache
def ade20k_class_names() -> tuple[str, ...]:
    """The 150 class names; position k - 1 holds the name of pixel value k."""
    text = resources.files("lavida.data").joinpath("resources/ade20k_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if len(names) != NUM_CLASSES:  # a packaging error, not a user error
        raise RuntimeError(
            f"lavida/data/resources/ade20k_classes.txt lists {len(names)} names, expected 150."
        )
    return names


class ADE20KSource(SegmentationSource):
    """ADE20K SceneParsing as image records with one target per (non-background) class present.

    Args:
        root: The ``ADEChallengeData2016`` folder (holding ``images/`` and ``annotations/``).
        split: ``"train"`` (folder ``training``) or ``"val"`` (``validation``).
        exclude_background: Leave the 20 background classes of :data:`ADE20K_BACKGROUND` out of the
            targets, as the official code does (default). They are always listed in ``present``.
        min_pixels: A class covering fewer pixels than this is listed in ``present`` but is not a
            target (too small to segment). 1 (default) keeps every class, as the official code does.

    Raises:
        DatasetFormatError: ``root`` does not exist.
        ValueError: Unknown ``split`` or ``min_pixels`` < 1.
    """

    name = "ade20k"
    record_options = ("exclude_background", "min_pixels")

    def __init__(
        self, root: str | Path, *, split: str = "train", exclude_background: bool = True, min_pixels: int = 1
    ) -> None:
        if split not in _SPLIT_FOLDERS:
            raise ValueError(f"ade20k: unknown split {split!r}; expected one of {sorted(_SPLIT_FOLDERS)}.")
        if min_pixels < 1:
            raise ValueError(f"ade20k: min_pixels must be >= 1, got {min_pixels}.")
        super().__init__(root, split=split)
        self.exclude_background = exclude_background
        self.min_pixels = min_pixels
        self.class_names = ade20k_class_names()

    def index(self, *, skip_errors: bool = False) -> Iterator[SegRecord]:
        """Yield one record per image that has at least one target, in file-name order.

        Args:
            skip_errors: Log and skip an image whose annotation is missing, unreadable or invalid, or an
                annotation whose image is missing, instead of raising; a count of skipped images is
                logged at the end.

        Raises:
            DatasetFormatError: The split's folders are missing or empty, or (unless
                ``skip_errors``) an image's annotation is missing or invalid, or an annotation's image is
                missing; the message names the file.
        """
        folder = _SPLIT_FOLDERS[self.split]
        images_dir = self.root / "images" / folder
        labels_dir = self.root / "annotations" / folder
        images = sorted(images_dir.glob("*.jpg")) if images_dir.is_dir() else []
        if not images or not labels_dir.is_dir():
            raise DatasetFormatError(
                f"ade20k: expected images in {images_dir}/*.jpg and label PNGs in {labels_dir}/*.png "
                f"(the ADEChallengeData2016 layout: images/{folder}, annotations/{folder}); found "
                f"{len(images)} images{'' if labels_dir.is_dir() else ' and no annotations folder'}. "
                "Point root at the extracted ADEChallengeData2016 folder."
            )
        # Every stem with an image or an annotation: the release pairs them one to one, so an annotation
        # without its image is a missing file (listing the images alone dropped it without a word).
        stems = {image.stem for image in images} | {label.stem for label in labels_dir.glob("*.png")}
        yield from self.collect_records(
            [images_dir / f"{stem}.jpg" for stem in sorted(stems)],
            lambda image: self._record(image, labels_dir / f"{image.stem}.png"),
            skip_errors=skip_errors,
            log=logger,
        )

    def _record(self, image: Path, label_path: Path) -> SegRecord:
        if not image.is_file():
            raise DatasetFormatError(
                f"{image}: image missing for annotation {label_path.name}; every label PNG has its JPEG in "
                "the ADEChallengeData2016 release. Re-extract the zip, or run with skip_errors=true to skip it."
            )
        if not label_path.is_file():
            raise DatasetFormatError(f"{label_path}: annotation missing for image {image.name}.")
        label = read_index_png(label_path)
        check_image_size(image, label.shape)
        if label.min() < 0 or label.max() > NUM_CLASSES:
            raise DatasetFormatError(
                f"{label_path}: pixel value {int(label.max())} is not an ADE20K SceneParsing class id "
                "(expected 0..150); is this a full-ADE20K '_seg.png' rather than an ADEChallengeData2016 label?"
            )
        counts = np.bincount(label.ravel(), minlength=NUM_CLASSES + 1)
        label_file = label_path.relative_to(self.root).as_posix()
        present, targets = [], []
        for value in np.flatnonzero(counts[1:]) + 1:  # 0 = "other objects": not a class
            text = normalize_text(self.class_names[value - 1])
            present.append(text)
            if self.exclude_background and text in ADE20K_BACKGROUND:
                continue
            if counts[value] >= self.min_pixels:
                mask = {"kind": "index_png", "paths": [label_file], "values": [int(value)]}
                targets.append(SegTarget(text=text, mask=mask))
        return SegRecord(
            source=self.name,
            key=image.stem,
            group=f"{self.name}/{image.stem}",
            frames=(image.relative_to(self.root).as_posix(),),
            targets=tuple(targets),
            present=tuple(present),
            is_video=False,
            meta={"size": [int(label.shape[0]), int(label.shape[1])]},
        )
