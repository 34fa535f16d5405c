"""Tiny video-dataset trees in their official layouts, written at test time (no binaries committed).

Each writer fills ``root`` with a few 24×32 JPEG frames, palette ("P") PNG annotations or COCO RLEs and
the metadata JSON/text files of one dataset (research notes train_datasets.md §6), and returns a dict of
what it wrote, including the exact boolean mask of every object on every frame, so tests can compare
loaded masks pixel for pixel. Objects are axis-aligned boxes that move one step per frame.

Writers: :func:`write_youtube_vos_tree`, :func:`write_ref_youtube_vos_tree`, :func:`write_mevis_tree`,
:func:`write_ref_davis_tree` (converted layout), :func:`write_davis_raw_tree` (raw DAVIS + text files);
:func:`records_by_key` reads a source's index back by record key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIZE = (24, 32)  # (H, W) of every frame

# A DAVIS-like palette (index k gets a distinct colour); the ids, not the colours, carry the labels.
_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128] + [64] * (768 - 18)


def records_by_key(source, **kwargs) -> dict[str, Any]:
    """``source.index(**kwargs)`` as a dict from record key to record."""
    return {record.key: record for record in source.index(**kwargs)}


def box(top: int, left: int, height: int, width: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """(H, W) bool with one filled rectangle (clipped to the frame)."""
    mask = np.zeros(size, dtype=bool)
    mask[max(top, 0) : top + height, max(left, 0) : left + width] = True
    return mask


def object_mask(object_id: int, position: int) -> np.ndarray:
    """The box of object ``object_id`` (1..4) on frame ``position``: its own rows, moving right."""
    return box(1 + 5 * (object_id - 1), 1 + 3 * position, 4, 6)


def write_frame(path: Path, position: int, size: tuple[int, int] = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((*size, 3), 40 * (position % 6), dtype=np.uint8)
    pixels[..., 1] = np.arange(size[1], dtype=np.uint8)[None, :] * 7
    Image.fromarray(pixels).save(path, format="JPEG")


def write_label(path: Path, label: np.ndarray) -> None:
    """An (H, W) id map as a palette PNG (mode P), as YouTube-VOS and DAVIS ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE)
    image.save(path)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE with str counts, as in MeViS's mask_dict.json."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _write_id_video(
    image_dir: Path, mask_dir: Path, stems: list[str], objects: dict[int, list[str]]
) -> dict[int, np.ndarray]:
    """Frames + palette annotations of one video; ``objects``: id -> stems where it is visible.

    Returns each object's (T, H, W) masks.
    """
    masks = {object_id: np.zeros((len(stems), *SIZE), dtype=bool) for object_id in objects}
    for position, stem in enumerate(stems):
        write_frame(image_dir / f"{stem}.jpg", position)
        label = np.zeros(SIZE, dtype=np.uint8)
        for object_id, visible in objects.items():
            if stem in visible:
                masks[object_id][position] = object_mask(object_id, position)
                label[masks[object_id][position]] = object_id
        write_label(mask_dir / f"{stem}.png", label)
    return masks


# -- YouTube-VOS 2019 ------------------------------------------------------------------------------

# vid -> (frame stems, {object id: (category, stems where visible)}). v1 has two "person" objects (one
# target: their union), a tennis racket absent from frames 0 and 3, and an "others" object; v2 has a
# frame with no object at all; v3 has only an "others" object, so it has no target.
_YTVOS = {
    "v1": (
        ["00000", "00005", "00010", "00015"],
        {
            1: ("person", ["00000", "00005", "00010", "00015"]),
            2: ("tennis_racket", ["00005", "00010"]),
            3: ("person", ["00000", "00005"]),
            4: ("others", ["00010"]),
        },
    ),
    "v2": (
        ["00000", "00005", "00010"],
        {1: ("earless_seal", ["00000", "00010"]), 2: ("others", ["00010"])},
    ),
    "v3": (["00000", "00005"], {1: ("others", ["00000", "00005"])}),
}


def write_youtube_vos_tree(root: str | Path) -> dict[str, Any]:
    """YouTube-VOS 2019 ``train/{meta.json,JPEGImages,Annotations}`` with videos v1, v2, v3.

    Returns:
        ``{"root", "size", "frames": {vid: [stems]}, "objects": {vid: {id: {"category", "frames"}}},
        "masks": {vid: {id: (T, H, W) bool}}}``.
    """
    root = Path(root)
    meta: dict[str, Any] = {"videos": {}}
    written: dict[str, Any] = {"root": root, "size": SIZE, "frames": {}, "objects": {}, "masks": {}}
    for video, (stems, objects) in _YTVOS.items():
        masks = _write_id_video(
            root / "train" / "JPEGImages" / video,
            root / "train" / "Annotations" / video,
            stems,
            {object_id: visible for object_id, (_, visible) in objects.items()},
        )
        entry = {
            str(i): {"category": category, "frames": visible} for i, (category, visible) in objects.items()
        }
        meta["videos"][video] = {"objects": entry}
        written["frames"][video] = stems
        written["objects"][video] = entry
        written["masks"][video] = masks
    write_json(root / "train" / "meta.json", meta)
    return written


# -- Refer-YouTube-VOS ----------------------------------------------------------------------------

# Expressions over the YouTube-VOS tree: obj_id as a string and as an int, one text that needs
# normalising, two expressions equal after normalisation, and "others" objects named by expressions.
_REF_YTVOS = {
    "v1": {
        "0": {"exp": "a man in a red shirt.", "obj_id": "1"},
        "1": {"exp": "a  tennis racket\n held up ", "obj_id": "2"},
        "2": {"exp": "the person on the left", "obj_id": 3},
        "3": {"exp": "a man in a red shirt", "obj_id": "3"},
    },
    "v2": {
        "0": {"exp": "a seal lying on a rock", "obj_id": "1"},
        "1": {"exp": "a bird flying away", "obj_id": "2"},
    },
    "v3": {"0": {"exp": "a small boat", "obj_id": "1"}},
}


def write_ref_youtube_vos_tree(root: str | Path) -> dict[str, Any]:
    """The YouTube-VOS tree plus ``meta_expressions/train/meta_expressions.json``.

    Returns:
        What :func:`write_youtube_vos_tree` returns, plus ``"expressions": {vid: {id: {"exp", "obj_id"}}}``.
    """
    root = Path(root)
    written = write_youtube_vos_tree(root)
    videos = {
        video: {"expressions": expressions, "frames": written["frames"][video]}
        for video, expressions in _REF_YTVOS.items()
    }
    write_json(root / "meta_expressions" / "train" / "meta_expressions.json", {"videos": videos})
    written["expressions"] = _REF_YTVOS
    return written


# -- MeViS ----------------------------------------------------------------------------------------


def _mevis_masks() -> dict[str, dict[str, list[np.ndarray | None]]]:
    """vid -> anno id -> per-frame mask or None. Annotations 10 and 11 overlap on frames 1 and 2."""
    cat_a = [box(4, 4 + t, 8, 10) if t in (0, 1, 2) else None for t in range(5)]
    cat_b = [box(8, 10 + t, 8, 10) if t in (1, 2, 4) else None for t in range(5)]
    dog = [box(2, 2 + 4 * t, 6, 8) if t in (0, 2) else None for t in range(3)]
    return {"m1": {"10": cat_a, "11": cat_b}, "m2": {"12": dog}}


_MEVIS_EXPRESSIONS = {
    "m1": {
        "0": {"exp": "two cats playing", "obj_id": [0, 1], "anno_id": [10, 11]},
        "1": {"exp": "the cat on the left.", "obj_id": [0], "anno_id": [10]},
        "2": {"exp": "the cat that jumps", "obj_id": [1], "anno_id": [11]},
        "3": {"exp": "the cat on the left", "obj_id": [0], "anno_id": [10]},
    },
    "m2": {"0": {"exp": "a dog running", "obj_id": [0], "anno_id": [12]}},
}


def write_mevis_tree(root: str | Path, *, split: str = "train") -> dict[str, Any]:
    """MeViS ``<split>/{meta_expressions.json,mask_dict.json,JPEGImages}`` with videos m1 (5 frames) and m2 (3).

    mask_dict.json lists the annotations out of video order (10, 12, 11) plus one no expression uses (99).

    Returns:
        ``{"root", "size", "frames": {vid: [stems]}, "expressions": {vid: {...}},
        "masks": {vid: {anno id: (T, H, W) bool}}, "mask_dict": path}``.
    """
    root = Path(root)
    split_dir = root / split
    per_video = _mevis_masks()
    written: dict[str, Any] = {
        "root": root,
        "size": SIZE,
        "frames": {},
        "masks": {},
        "expressions": _MEVIS_EXPRESSIONS,
    }
    mask_dict: dict[str, Any] = {}
    videos = {}
    for vid_id, (video, per_anno) in enumerate(per_video.items()):
        length = len(next(iter(per_anno.values())))
        stems = [f"{t:05d}" for t in range(length)]
        for position, stem in enumerate(stems):
            write_frame(split_dir / "JPEGImages" / video / f"{stem}.jpg", position)
        videos[video] = {"expressions": _MEVIS_EXPRESSIONS[video], "vid_id": vid_id, "frames": stems}
        written["frames"][video] = stems
        written["masks"][video] = {
            anno: np.stack([m if m is not None else np.zeros(SIZE, bool) for m in masks])
            for anno, masks in per_anno.items()
        }
    for video, anno in (("m1", "10"), ("m2", "12"), ("m1", "11")):
        mask_dict[anno] = [encode(m) if m is not None else None for m in per_video[video][anno]]
    mask_dict["99"] = [encode(box(0, 0, 2, 2))] * 3
    write_json(split_dir / "meta_expressions.json", {"videos": videos})
    write_json(split_dir / "mask_dict.json", mask_dict)
    written["mask_dict"] = split_dir / "mask_dict.json"
    return written


# -- Refer-DAVIS-17, converted (ReferFormer) layout --------------------------------------------------

# vid -> (number of frames, {object id: visible positions}, [4 expressions per object, in object order]).
_DAVIS = {
    "train": {
        "bike-packing": (
            4,
            {1: [0, 1, 2, 3], 2: [1, 2]},
            [
                ("1", "a man riding a bike"),
                ("1", "a man riding a bike along a dirt road"),
                ("1", "the cyclist"),
                ("1", "the cyclist with a backpack"),
                ("2", "a black bike"),
                ("2", "a black bike moving forward"),
                ("2", "the bicycle"),
                ("2", "the bicycle ridden by the man."),
            ],
        ),
        "dog": (
            3,
            {1: [0, 2]},
            [
                ("1", "a dog"),
                ("1", "a dog running on grass"),
                ("1", "the black dog"),
                ("1", "the dog running"),
            ],
        ),
    },
    "valid": {
        "blackswan": (
            2,
            {1: [0, 1]},
            [("1", "a swan"), ("1", "a swan swimming"), ("1", "black swan"), ("1", "swan")],
        ),
    },
}


def write_ref_davis_tree(root: str | Path) -> dict[str, Any]:
    """Converted Ref-DAVIS: ``{train,valid}/{JPEGImages,Annotations,meta.json}`` and ``meta_expressions/``.

    Returns:
        ``{"root", "size", "frames": {split: {vid: [stems]}}, "expressions": {split: {vid: {id: {...}}}},
        "masks": {split: {vid: {id: (T, H, W) bool}}}}``.
    """
    root = Path(root)
    written: dict[str, Any] = {"root": root, "size": SIZE, "frames": {}, "expressions": {}, "masks": {}}
    for split, videos in _DAVIS.items():
        meta_expressions, meta = {}, {}
        for video, (length, objects, expressions) in videos.items():
            stems = [f"{t:05d}" for t in range(length)]
            visible = {object_id: [stems[t] for t in positions] for object_id, positions in objects.items()}
            masks = _write_id_video(
                root / split / "JPEGImages" / video, root / split / "Annotations" / video, stems, visible
            )
            numbered = {
                str(i): {"exp": text, "obj_id": object_id} for i, (object_id, text) in enumerate(expressions)
            }
            meta_expressions[video] = {"expressions": numbered, "frames": stems}
            meta[video] = {"objects": {str(object_id): {"category": "thing"} for object_id in objects}}
            written["frames"].setdefault(split, {})[video] = stems
            written["expressions"].setdefault(split, {})[video] = numbered
            written["masks"].setdefault(split, {})[video] = masks
        write_json(root / "meta_expressions" / split / "meta_expressions.json", {"videos": meta_expressions})
        write_json(root / split / "meta.json", {"videos": meta})
    return written


# -- Refer-DAVIS-17, raw release ------------------------------------------------------------------

# vid -> (split, number of frames, {object id: visible positions}, category per object).
_DAVIS_RAW = {
    "classic-car": ("train", 4, {1: [0, 1, 2, 3], 2: [1, 2, 3]}, {1: "car", 2: "person"}),
    "dogs-scale": ("train", 3, {1: [0, 1]}, {1: "dog"}),
    "blackswan": ("valid", 2, {1: [0, 1]}, {1: "swan"}),
}
# The four text files as (file, encoding, lines). Quirks, as in the real release: misspelt video names
# (clasic-car, dog-scale), annot2 files in latin-1 with a non-ASCII line, lines out of object order,
# CRLF line ends, a blank line, and a line for a video that is in no split.
_DAVIS_TEXT = [
    (
        "Davis17_annot1.txt",
        "utf-8",
        [
            'clasic-car 2 "a man walking"',
            'clasic-car 1 "a white car"',
            'dog-scale 1 "a small dog"',
            'blackswan 1 "a black swan"',
            'unknown-video 1 "nothing"',
        ],
    ),
    (
        "Davis17_annot1_full_video.txt",
        "utf-8",
        [
            'clasic-car 1 "a white car parked"',
            'clasic-car 2 "a man walking past the car"',
            "",
            'dog-scale 1 "a small dog on a scale"',
            'blackswan 1 "a black swan swimming"',
        ],
    ),
    (
        "Davis17_annot2.txt",
        "latin-1",
        [
            'clasic-car 1 "the white café racer"',
            'clasic-car 2 "a   man  in black"',
            'dog-scale 1 "dog"',
            'blackswan 1 "swan"',
        ],
    ),
    (
        "Davis17_annot2_full_video.txt",
        "latin-1",
        [
            'clasic-car 1 "a white car, façade behind it."',
            'clasic-car 2 "the man"',
            'dog-scale 1 "dog being weighed"',
            'blackswan 1 "swan in a pond"',
        ],
    ),
]


def write_davis_raw_tree(root: str | Path) -> dict[str, Any]:
    """Raw DAVIS-2017 (unsupervised 480p) + ``davis_text_annotations/`` with their known quirks.

    Returns:
        ``{"root", "size", "frames": {vid: [stems]}, "masks": {vid: {id: (T, H, W) bool}},
        "split": {vid: split}, "meta_expressions": {split: <expected converted JSON>},
        "categories": {vid: {id: category}}}``.
    """
    root = Path(root)
    davis = root / "DAVIS"
    written: dict[str, Any] = {
        "root": root,
        "size": SIZE,
        "frames": {},
        "masks": {},
        "split": {},
        "categories": {},
    }
    splits: dict[str, list[str]] = {"train": [], "valid": []}
    semantics = {}
    for video, (split, length, objects, categories) in _DAVIS_RAW.items():
        stems = [f"{t:05d}" for t in range(length)]
        visible = {object_id: [stems[t] for t in positions] for object_id, positions in objects.items()}
        written["masks"][video] = _write_id_video(
            davis / "JPEGImages" / "480p" / video,
            davis / "Annotations_unsupervised" / "480p" / video,
            stems,
            visible,
        )
        written["frames"][video] = stems
        written["split"][video] = split
        written["categories"][video] = categories
        splits[split].append(video)
        semantics[video] = {str(k): v for k, v in categories.items()}
    (davis / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (davis / "ImageSets" / "2017" / "train.txt").write_text("\n".join(splits["train"]) + "\n")
    (davis / "ImageSets" / "2017" / "val.txt").write_text("\n".join(splits["valid"]) + "\n")
    write_json(davis / "davis_semantics.json", semantics)
    text_dir = root / "davis_text_annotations"
    text_dir.mkdir(parents=True, exist_ok=True)
    for filename, encoding, lines in _DAVIS_TEXT:
        (text_dir / filename).write_bytes("\r\n".join(lines).encode(encoding) + b"\r\n")
    written["meta_expressions"] = {split: {"videos": {}} for split in splits}
    fixed = {"clasic-car": "classic-car", "dog-scale": "dogs-scale"}
    for video, (split, _, objects, _) in _DAVIS_RAW.items():
        expressions = {}
        for object_id in sorted(objects):
            for _, _, lines in _DAVIS_TEXT:
                for line in lines:
                    if not line:
                        continue
                    name, obj, text = line.split(" ", 2)
                    if fixed.get(name, name) == video and int(obj) == object_id:
                        expressions[str(len(expressions))] = {
                            "exp": " ".join(text.strip('"').split()),
                            "obj_id": obj,
                        }
        written["meta_expressions"][split]["videos"][video] = {
            "expressions": expressions,
            "frames": written["frames"][video],
        }
    return written
