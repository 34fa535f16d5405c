"""The training-source readers: hand-worked records field by field, and the defects found in them.

Every expected record below is worked out by hand from the tree writers' definitions (``trees.py``,
``video_trees.py``), not copied from the readers' output: the comments say where each value comes from.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from PIL import Image
from trees import (
    _box,
    _polygon,
    write_ade20k_tree,
    write_cityscapes_tree,
    write_mapillary_tree,
    write_refer_tree,
)
from video_trees import write_mevis_tree, write_ref_youtube_vos_tree, write_youtube_vos_tree

from lavida.data.sources.ade20k import ADE20KSource
from lavida.data.sources.base import SegRecord, SegTarget
from lavida.data.sources.cityscapes import CityscapesSource
from lavida.data.sources.mapillary import MapillaryVistasSource
from lavida.data.sources.masks import load_mask_spec
from lavida.data.sources.mevis import MeViSSource
from lavida.data.sources.ref_youtube_vos import RefYouTubeVOSSource
from lavida.data.sources.refer import RefCocoSource
from lavida.data.sources.synthetic import SyntheticSource
from lavida.data.sources.youtube_vos import YouTubeVOSSource

SIZE = [24, 32]


def _index_png(paths: list[str], values: list[int]) -> dict:
    return {"kind": "index_png", "paths": paths, "values": values}


# -- hand-worked records -------------------------------------------------------------------------------


def test_ade20k_record_by_hand(tmp_path):
    # ADE_train_00000001: wall (1) rows 0-8, person (13), car (21); the rest is 0 = "other objects".
    root = write_ade20k_tree(tmp_path / "ADEChallengeData2016")["root"]
    record = next(iter(ADE20KSource(root).index()))
    label = "annotations/training/ADE_train_00000001.png"
    assert record == SegRecord(
        source="ade20k",
        key="ADE_train_00000001",
        group="ade20k/ADE_train_00000001",
        frames=("images/training/ADE_train_00000001.jpg",),
        # wall is a background class: present, never a target; 0 is neither.
        targets=(
            SegTarget("person", _index_png([label], [13])),
            SegTarget("car", _index_png([label], [21])),
        ),
        present=("wall", "person", "car"),
        is_video=False,
        meta={"size": SIZE},
    )


def test_cityscapes_record_by_hand(tmp_path):
    # aachen_000000_000019: road 7, car 26, traffic light 19, bicycle 33 (0 = unlabeled elsewhere).
    root = write_cityscapes_tree(tmp_path / "Cityscapes")["root"]
    record = next(iter(CityscapesSource(root).index()))
    label = "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    assert record == SegRecord(
        source="cityscapes",
        key="aachen_000000_000019",
        group="cityscapes/aachen_000000_000019",
        frames=("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",),
        # official8: of these only 19 and 33 are targets; every named class (id >= 7) is present.
        targets=(
            SegTarget("traffic light", _index_png([label], [19])),
            SegTarget("bicycle", _index_png([label], [33])),
        ),
        present=("road", "traffic light", "car", "bicycle"),
        is_video=False,
        meta={"size": SIZE, "city": "aachen"},
    )


def test_mapillary_record_by_hand(tmp_path):
    # k1: unlabeled (6) everywhere, bird (0), car (2), ego vehicle (5): both void labels are dropped.
    root = write_mapillary_tree(tmp_path / "Mapillary")["root"]
    record = next(iter(MapillaryVistasSource(root).index()))
    label = "training/v2.0/labels/k1.png"
    assert record == SegRecord(
        source="mapillary",
        key="k1",
        group="mapillary/k1",
        frames=("training/images/k1.jpg",),
        targets=(SegTarget("bird", _index_png([label], [0])), SegTarget("car", _index_png([label], [2]))),
        present=("bird", "car"),
        is_video=False,
        meta={"size": SIZE},
    )


def test_refcoco_record_by_hand(tmp_path):
    # Image 1: ref 0 ("The man on the left.", "left   man", "Left man.") and ref 1 ("red car"), train.
    tree = write_refer_tree(tmp_path / "refer_seg", "refcoco")
    source = RefCocoSource(tree["root"])
    record = next(iter(source.index()))
    shard = ".lavida/refcoco_unc_train_masks/00000.json"
    assert record == SegRecord(
        source="refcoco",
        key="1",
        group="refcoco/1",
        frames=("images/mscoco/images/train2014/COCO_train2014_000000000001.jpg",),
        # `sent` is the lower-cased text; "left man" twice (after normalising) is one target.
        targets=(
            SegTarget("the man on the left", {"kind": "rle", "file": shard, "key": "0"}),
            SegTarget("left man", {"kind": "rle", "file": shard, "key": "0"}),
            SegTarget("red car", {"kind": "rle", "file": shard, "key": "1"}),
        ),
        present=("the man on the left", "left man", "red car"),
        is_video=False,
        meta={"size": SIZE, "image_id": 1},
    )
    # Ref 1's annotation is two polygons: its mask is their union.
    mask = source.load_masks(record, record.targets[2], [0])[0]
    np.testing.assert_array_equal(mask, _box(12, 16, 4, 8) | _box(18, 22, 20, 30))


def test_youtube_vos_record_by_hand(tmp_path):
    # v1: person 1 on every frame, tennis_racket 2 on 00005/00010, person 3 on 00000/00005, others 4.
    root = write_youtube_vos_tree(tmp_path / "YouTube-VOS")["root"]
    record = next(iter(YouTubeVOSSource(root).index()))
    stems = ["00000", "00005", "00010", "00015"]
    labels = [f"train/Annotations/v1/{s}.png" for s in stems]
    assert record == SegRecord(
        source="vos",
        key="v1",
        group="vos/v1",
        frames=tuple(f"train/JPEGImages/v1/{s}.jpg" for s in stems),
        targets=(
            SegTarget("person", _index_png(labels, [1, 3]), (0, 1, 2, 3)),  # both persons, united
            SegTarget("tennis racket", _index_png(labels, [2]), (1, 2)),  # "_" -> " "
        ),
        present=("person", "tennis racket"),  # "others" is neither
        is_video=True,
        meta={"size": SIZE},
    )


def test_ref_youtube_vos_record_by_hand(tmp_path):
    # v1 expressions: 0 "a man in a red shirt." -> obj "1"; 1 -> obj "2"; 2 -> obj 3 (int); 3 "a man in
    # a red shirt" -> obj "3": equal to 0 once normalised, so one target covering objects 1 and 3.
    root = write_ref_youtube_vos_tree(tmp_path / "Ref-YouTube-VOS")["root"]
    record = next(iter(RefYouTubeVOSSource(root).index()))
    stems = ["00000", "00005", "00010", "00015"]
    labels = [f"train/Annotations/v1/{s}.png" for s in stems]
    assert record == SegRecord(
        source="refvos",
        key="v1",
        group="refvos/v1",
        frames=tuple(f"train/JPEGImages/v1/{s}.jpg" for s in stems),
        targets=(
            SegTarget("a man in a red shirt", _index_png(labels, [1, 3]), (0, 1, 2, 3)),
            SegTarget("a tennis racket held up", _index_png(labels, [2]), (1, 2)),
            SegTarget("the person on the left", _index_png(labels, [3]), (0, 1)),
        ),
        present=("a man in a red shirt", "a tennis racket held up", "the person on the left"),
        is_video=True,
        meta={"size": SIZE},
    )


def test_mevis_record_by_hand(tmp_path):
    # m1 (5 frames): anno 10 on frames 0-2, anno 11 on 1, 2, 4; "two cats playing" -> [10, 11];
    # "the cat on the left." and "the cat on the left" -> [10] (one target); "the cat that jumps" -> [11].
    tree = write_mevis_tree(tmp_path / "MeViS")
    source = MeViSSource(tree["root"])
    record = next(iter(source.index()))
    shard = ".lavida/mevis_masks/train/m1.json"
    assert record == SegRecord(
        source="mevis",
        key="m1",
        group="mevis/m1",
        frames=tuple(f"train/JPEGImages/m1/{t:05d}.jpg" for t in range(5)),
        targets=(
            SegTarget(
                "two cats playing",
                {"kind": "rle", "file": shard, "key": "10+11", "anno_ids": [10, 11]},
                (0, 1, 2, 4),
            ),
            SegTarget(
                "the cat on the left",
                {"kind": "rle", "file": shard, "key": "10", "anno_ids": [10]},
                (0, 1, 2),
            ),
            SegTarget(
                "the cat that jumps", {"kind": "rle", "file": shard, "key": "11", "anno_ids": [11]}, (1, 2, 4)
            ),
        ),
        present=("two cats playing", "the cat on the left", "the cat that jumps"),
        is_video=True,
        meta={"size": SIZE},
    )
    union = tree["masks"]["m1"]["10"] | tree["masks"]["m1"]["11"]
    np.testing.assert_array_equal(source.load_masks(record, record.targets[0], range(5)), union)


# -- defect: RLE files cached by path only ---------------------------------------------------------------


def test_rle_masks_follow_a_reindex_in_the_same_process(tmp_path):
    """Re-indexing rewrites the shard files under the same names; masks loaded afterwards in the same
    process must be the new ones (the parsed-file cache was keyed by the path alone)."""
    tree = write_refer_tree(tmp_path / "refer_seg", "refcoco")
    source = RefCocoSource(tree["root"])
    record = next(iter(source.index()))
    np.testing.assert_array_equal(source.load_masks(record, record.targets[0], [0])[0], tree["masks"][0])
    instances_path = tree["dataset_dir"] / "instances.json"
    instances = json.loads(instances_path.read_text())
    instances["annotations"][0]["segmentation"] = [_polygon(0, 4, 0, 4)]  # ref 0's annotation, redrawn
    instances_path.write_text(json.dumps(instances))
    record = next(iter(source.index()))
    np.testing.assert_array_equal(source.load_masks(record, record.targets[0], [0])[0], _box(0, 4, 0, 4))


def test_rewritten_rle_file_is_read_again(tmp_path):
    path = tmp_path / "masks.json"
    full = {"size": [2, 2], "counts": [0, 4]}
    path.write_text(json.dumps({"a": [{"size": [2, 2], "counts": [4]}]}))
    spec = {"kind": "rle", "file": "masks.json", "key": "a"}
    assert not load_mask_spec(spec, [0], root=tmp_path, size=(2, 2)).any()
    path.write_text(json.dumps({"a": [full]}))
    assert load_mask_spec(spec, [0], root=tmp_path, size=(2, 2)).all()


# -- defect: objects annotated on no frame became "visible everywhere" targets ----------------------------


def _empty_frame_list(root, video: str, object_id: str) -> None:
    path = root / "train" / "meta.json"
    meta = json.loads(path.read_text())
    meta["videos"][video]["objects"][object_id]["frames"] = []
    path.write_text(json.dumps(meta))


def test_youtube_vos_object_on_no_frame_is_not_a_target(tmp_path, caplog):
    # v2: earless_seal (1) on 00000/00010, others (2). With the seal listed on no frame, v2 has no target.
    root = write_youtube_vos_tree(tmp_path / "YouTube-VOS")["root"]
    _empty_frame_list(root, "v2", "1")
    with caplog.at_level(logging.INFO):
        records = {record.key: record for record in YouTubeVOSSource(root).index()}
    assert sorted(records) == ["v1"]
    assert "1 objects have an empty frame list" in caplog.text
    # v1: person 3 on no frame leaves "person" = object 1 only, still on every frame.
    _empty_frame_list(root, "v1", "3")
    (record,) = YouTubeVOSSource(root).index()
    assert [(t.text, t.mask["values"], t.frames) for t in record.targets] == [
        ("person", [1], (0, 1, 2, 3)),
        ("tennis racket", [2], (1, 2)),
    ]


def test_ref_youtube_vos_object_on_no_frame_is_left_out(tmp_path, caplog):
    # v2: "a bird flying away" names object 2 ("others"); listed on no frame, it has nothing to segment.
    root = write_ref_youtube_vos_tree(tmp_path / "Ref-YouTube-VOS")["root"]
    _empty_frame_list(root, "v2", "2")
    with caplog.at_level(logging.INFO):
        records = {record.key: record for record in RefYouTubeVOSSource(root).index()}
    assert [(t.text, t.frames) for t in records["v2"].targets] == [("a seal lying on a rock", (0, 2))]
    assert records["v2"].present == ("a seal lying on a rock",)
    assert "1 expressions refer to an object with an empty frame list" in caplog.text


# -- defect: synthetic objects hidden on every frame stayed targets --------------------------------------


def _synthetic_entry(root, key: str, labels: list[np.ndarray], objects: dict[str, str]) -> dict:
    for t, label in enumerate(labels):
        for folder, array in (("Annotations", label), ("JPEGImages", np.zeros((*label.shape, 3), np.uint8))):
            (root / folder / key).mkdir(parents=True, exist_ok=True)
            suffix = "png" if folder == "Annotations" else "jpg"
            Image.fromarray(array.astype(np.uint8)).save(root / folder / key / f"{t:05d}.{suffix}")
    return {"frames": len(labels), "objects": objects}


def test_synthetic_record_by_hand_and_hidden_objects(tmp_path, caplog):
    # v0000: object 1 ("red circle") on frame 1 only; object 2 ("blue square ") drawn over by object 3 on
    # both frames, so never visible; object 3 ("green ring") on both. i0000: object 1 hidden by object 2.
    a = np.zeros((4, 5), np.uint8)
    a[0, 0], a[1:3, 1:3] = 3, 3
    b = a.copy()
    b[3, 4] = 1
    image = np.full((4, 5), 2, np.uint8)
    meta = {
        "videos": {"v0000": _synthetic_entry(tmp_path, "v0000", [a, b], {"1": "red circle", "2": "blue square ", "3": "green ring"})},
        "images": {"i0000": _synthetic_entry(tmp_path, "i0000", [image], {"1": "red circle", "2": "white star"})},
    }  # fmt: skip
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO):
        video, picture = SyntheticSource(tmp_path).index()
    labels = ["Annotations/v0000/00000.png", "Annotations/v0000/00001.png"]
    assert video == SegRecord(
        source="synthetic",
        key="v0000",
        group="synthetic/v0000",
        frames=("JPEGImages/v0000/00000.jpg", "JPEGImages/v0000/00001.jpg"),
        targets=(
            SegTarget("red circle", _index_png(labels, [1]), (1,)),
            SegTarget("green ring", _index_png(labels, [3]), (0, 1)),
        ),
        present=("red circle", "green ring"),
        is_video=True,
    )
    assert picture.targets == (SegTarget("white star", _index_png(["Annotations/i0000/00000.png"], [2])),)
    assert picture.present == ("white star",) and not picture.is_video
    assert "2 objects are hidden on every frame" in caplog.text
    assert "show no object" not in caplog.text  # each entry has a visible object


def test_synthetic_entry_without_a_visible_object_is_left_out(tmp_path, caplog):
    """v0000 shows none of its objects and is left out, counted exactly; v0001 after it is still read."""
    shown = np.zeros((4, 5))
    shown[0, 0] = 1
    meta = {
        "videos": {
            "v0000": _synthetic_entry(tmp_path, "v0000", [np.zeros((4, 5))], {"1": "red circle"}),
            "v0001": _synthetic_entry(tmp_path, "v0001", [shown], {"1": "blue square"}),
        }
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="lavida.data.sources"):
        assert [record.key for record in SyntheticSource(tmp_path).index()] == ["v0001"]
    messages = [record.getMessage() for record in caplog.records]
    assert "synthetic: 1 objects are hidden on every frame and are not targets." in messages
    assert "synthetic: 1 entries show no object and are left out." in messages
