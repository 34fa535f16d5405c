"""Tiny image-segmentation datasets written in their official layouts, for the source tests.

Each ``write_*_tree(root)`` writes a few 24x32 images with hand-placed rectangles and returns a dict
of what it wrote (the root to give the source, the label arrays or masks, the texts), so tests compare
the sources' output with hand-built values. Video-dataset writers live in ``video_trees.py``.

Formats follow the research notes (train_datasets.md §2, §6): label PNGs are written with PIL (mode
"L" for ADE20K and Cityscapes, palette mode "P" for Mapillary), refer annotations as COCO JSON with
polygons or RLE, and the refs as a real pickle (written here with the standard ``pickle`` module —
test code only; the package never unpickles outside ``refer_pickle``).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 24, 32


def _rgb(seed: int) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 picture."""
    return np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _save_image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(seed)).save(path)
    return path


def _label(boxes: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    """(H, W) uint8 label: each (value, row0, row1, col0, col1) box painted in order (later wins)."""
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    for value, row0, row1, col0, col1 in boxes:
        label[row0:row1, col0:col1] = value
    return label


def _save_label(path: Path, label: np.ndarray, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is None:
        Image.fromarray(label, mode="L").save(path)
    else:
        image = Image.fromarray(label, mode="P")
        image.putpalette(palette)
        image.save(path)


# -- ADE20K (ADEChallengeData2016) ---------------------------------------------------------------------


def write_ade20k_tree(root: str | Path) -> dict[str, Any]:
    """ADEChallengeData2016 with 3 training images and 1 validation image.

    Class ids: 1 wall, 3 sky, 13 person, 21 car, 37 lamp, 150 flag, 8 bed (0 = other objects).
    ``ADE_train_00000003`` shows only background classes (wall, sky), so it has no target unless
    background classes are allowed. ``ADE_train_00000002`` has a 2-pixel lamp (for ``min_pixels``).

    Returns:
        ``{"root": <root>, "labels": {split: {stem: (H, W) uint8}}}``.
    """
    root = Path(root)
    labels = {
        "training": {
            "ADE_train_00000001": _label([(1, 0, 8, 0, 32), (13, 10, 18, 4, 12), (21, 12, 20, 20, 30)]),
            "ADE_train_00000002": _label([(3, 0, 10, 0, 32), (150, 12, 16, 2, 6), (37, 20, 21, 10, 12)]),
            "ADE_train_00000003": _label([(1, 0, 12, 0, 32), (3, 12, 24, 0, 32)]),
        },
        "validation": {"ADE_val_00000001": _label([(8, 4, 20, 4, 28)])},
    }
    for seed, (folder, items) in enumerate(labels.items()):
        for offset, (stem, label) in enumerate(items.items()):
            _save_image(root / "images" / folder / f"{stem}.jpg", seed * 10 + offset)
            _save_label(root / "annotations" / folder / f"{stem}.png", label)
    return {"root": root, "labels": labels}


# -- Mapillary Vistas (v2.0 labels) -------------------------------------------------------------------

MAPILLARY_LABELS = [
    {"name": "animal--bird", "readable": "Bird", "color": [165, 42, 42]},
    {"name": "construction--barrier--curb", "readable": "Curb", "color": [196, 196, 196]},
    {"name": "object--vehicle--car", "readable": "Car", "color": [0, 0, 142]},
    {"name": "marking--discrete--crosswalk-zebra", "readable": "Lane Marking - Crosswalk", "color": [200, 128, 128]},
    {"name": "marking-only--discrete--crosswalk-zebra", "readable": "Lane Marking - Crosswalk", "color": [200, 128, 129]},
    {"name": "void--ego-vehicle", "readable": "Ego Vehicle", "color": [120, 10, 10]},
    {"name": "void--unlabeled", "readable": "Unlabeled", "color": [0, 0, 0]},
]  # fmt: skip


def write_mapillary_tree(root: str | Path) -> dict[str, Any]:
    """Mapillary Vistas research-edition layout with a 7-label ``config_v2.0.json`` and 3 images.

    Labels 3 and 4 share the readable name "Lane Marking - Crosswalk" (one target for both); 5 and 6
    are void. ``k3`` holds only "unlabeled" pixels, so it has no target.

    Returns:
        ``{"root": <root>, "labels": {key: (H, W) uint8}}`` (training split).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    config = {"labels": [{**label, "instances": False, "evaluate": True} for label in MAPILLARY_LABELS]}
    config["labels"][-1]["evaluate"] = False
    (root / "config_v2.0.json").write_text(json.dumps(config))
    palette = [channel for label in MAPILLARY_LABELS for channel in label["color"]]
    labels = {
        "k1": _label([(6, 0, 24, 0, 32), (0, 2, 6, 2, 8), (2, 10, 20, 10, 26), (5, 20, 24, 0, 32)]),
        "k2": _label([(1, 0, 24, 0, 32), (3, 4, 8, 0, 16), (4, 4, 8, 16, 32)]),
        "k3": _label([(6, 0, 24, 0, 32)]),
    }
    for seed, (key, label) in enumerate(labels.items()):
        _save_image(root / "training" / "images" / f"{key}.jpg", 100 + seed)
        _save_label(root / "training" / "v2.0" / "labels" / f"{key}.png", label, palette)
    return {"root": root, "labels": labels}


# -- Cityscapes (gtFine) ------------------------------------------------------------------------------


def write_cityscapes_tree(root: str | Path) -> dict[str, Any]:
    """Cityscapes leftImg8bit + gtFine labelIds for 3 training images in 2 cities.

    Label ids: 0 unlabeled, 4 static, 7 road, 19 traffic light, 22 terrain, 23 sky, 24 person,
    26 car, 27 truck, 33 bicycle. ``aachen_000001_000019`` holds none of the official eight classes.

    Returns:
        ``{"root": <root>, "labels": {stem: (H, W) uint8}}`` with stem ``<city>_<seq>_<frame>``.
    """
    root = Path(root)
    labels = {
        "aachen_000000_000019": _label([(7, 12, 24, 0, 32), (26, 14, 20, 2, 12), (19, 0, 6, 20, 24), (33, 18, 22, 24, 30)]),
        "aachen_000001_000019": _label([(23, 0, 8, 0, 32), (7, 8, 24, 0, 32), (24, 10, 20, 14, 18)]),
        "bochum_000000_000313": _label([(4, 0, 4, 0, 32), (22, 16, 24, 0, 16), (27, 6, 16, 8, 28)]),
    }  # fmt: skip
    for seed, (stem, label) in enumerate(labels.items()):
        city = stem.split("_")[0]
        _save_image(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", 200 + seed)
        _save_label(root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", label)
    return {"root": root, "labels": labels}


# -- refer API datasets (refCLEF / refCOCO / refCOCO+ / refCOCOg) ---------------------------------------


def _box(row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[row0:row1, col0:col1] = True
    return mask


def _polygon(row0: int, row1: int, col0: int, col1: int) -> list[float]:
    """The COCO polygon whose rasterisation is rows row0:row1, cols col0:col1 (x = column)."""
    return [float(v) for v in (col0, row0, col1, row0, col1, row1, col0, row1)]


def _compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE: run lengths over the column-major pixels, starting with background."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [HEIGHT, WIDTH], "counts": counts}


def _sentences(*texts: str) -> list[dict[str, Any]]:
    return [
        {"raw": t, "sent": t.lower(), "tokens": t.lower().split(), "sent_id": i} for i, t in enumerate(texts)
    ]


def write_refer_tree(
    root: str | Path, dataset: str = "refcoco", *, refs_format: str = "pickle"
) -> dict[str, Any]:
    """One refer dataset under a ``refer_seg`` root: instances.json, the refs file and the images.

    Three images: image 1 has two train refs (one with three sentences, two of them equal after
    normalisation; one whose annotation has two parts), image 2 a train ref and a ``testA`` ref,
    image 3 only a ``val`` ref. refCOCO* annotations are polygons; refCLEF's are a list of compressed
    RLEs, a single compressed RLE and an uncompressed RLE, as its instances.json mixes them. The
    refs file is ``refs(unc)`` (``refs(umd)`` for refcocog).

    Args:
        root: The ``refer_seg`` folder (several datasets may share it).
        dataset: ``"refclef"``, ``"refcoco"``, ``"refcoco+"`` or ``"refcocog"``.
        refs_format: ``"pickle"`` (as downloaded) or ``"json"`` (as if already converted).

    Returns:
        ``{"root", "dataset_dir", "refs_path", "masks": {ref_id: (H, W) bool},
        "sentences": {ref_id: [normalised texts]}, "train_refs": [ref ids], "frames": {image_id: rel path}}``.
    """
    root = Path(root)
    dataset_dir = root / dataset
    dataset_dir.mkdir(parents=True, exist_ok=True)
    split_by = "umd" if dataset == "refcocog" else "unc"
    masks = {
        0: _box(2, 10, 2, 10),
        1: _box(12, 16, 4, 8) | _box(18, 22, 20, 30),  # two parts (two polygons / two RLEs)
        2: _box(0, 24, 16, 32),
        3: _box(5, 9, 5, 9),
        4: _box(1, 3, 1, 3),
    }
    image_of_ref = {0: 1, 1: 1, 2: 2, 3: 2, 4: 3}
    split_of_ref = {0: "train", 1: "train", 2: "train", 3: "testA", 4: "val"}
    texts = {
        0: ("The man on the left.", "left   man", "Left man."),
        1: ("red car",),
        2: ("the  dog\n",),
        3: ("blue sky",),
        4: ("val thing",),
    }
    if dataset == "refclef":
        image_dir = "images/saiapr_tc-12"
        frames = {i: f"{image_dir}/{i - 1:02d}/images/{i}.jpg" for i in (1, 2, 3)}
        file_names = {i: f"{i - 1:02d}/images/{i}.jpg" for i in (1, 2, 3)}
        segmentations = {
            0: [_compressed_rle(masks[0])],
            1: [_compressed_rle(_box(12, 16, 4, 8)), _compressed_rle(_box(18, 22, 20, 30))],
            2: _compressed_rle(masks[2]),
            3: _uncompressed_rle(masks[3]),
            4: [_compressed_rle(masks[4])],
        }
    else:
        image_dir = "images/mscoco/images/train2014"
        file_names = {i: f"COCO_train2014_{i:012d}.jpg" for i in (1, 2, 3)}
        frames = {i: f"{image_dir}/{file_names[i]}" for i in (1, 2, 3)}
        segmentations = {
            0: [_polygon(2, 10, 2, 10)],
            1: [_polygon(12, 16, 4, 8), _polygon(18, 22, 20, 30)],
            2: [_polygon(0, 24, 16, 32)],
            3: [_polygon(5, 9, 5, 9)],
            4: [_polygon(1, 3, 1, 3)],
        }
    for image_id, frame in frames.items():
        _save_image(root / frame, 300 + image_id)
    instances = {
        "images": [
            {"id": i, "file_name": file_names[i], "height": HEIGHT, "width": WIDTH} for i in sorted(frames)
        ],
        "annotations": [
            {"id": 100 + r, "image_id": image_of_ref[r], "category_id": 1, "iscrowd": 0, "segmentation": seg}
            for r, seg in segmentations.items()
        ],
        "categories": [{"id": 1, "name": "thing", "supercategory": "thing"}],
    }
    (dataset_dir / "instances.json").write_text(json.dumps(instances))
    refs = [
        {
            "ref_id": r,
            "ann_id": 100 + r,
            "image_id": image_of_ref[r],
            "category_id": 1,
            "split": split_of_ref[r],
            "sent_ids": list(range(len(texts[r]))),
            "sentences": _sentences(*texts[r]),
            "file_name": f"ignored_{r}.jpg",
        }
        for r in texts
    ]
    if refs_format == "pickle":
        refs_path = dataset_dir / f"refs({split_by}).p"
        refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    else:
        refs_path = dataset_dir / f"refs({split_by}).json"
        refs_path.write_text(json.dumps(refs))
    sentences = {
        0: ["the man on the left", "left man"],
        1: ["red car"],
        2: ["the dog"],
        3: ["blue sky"],
        4: ["val thing"],
    }
    return {
        "root": root,
        "dataset_dir": dataset_dir,
        "refs_path": refs_path,
        "masks": masks,
        "sentences": sentences,
        "train_refs": [0, 1, 2],
        "frames": frames,
    }
