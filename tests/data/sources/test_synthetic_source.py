"""The synthetic set as a training source, on a hand-built ``meta.json`` tree: which objects become targets,
on which frames, and what is left out and logged."""

import json
import logging

import numpy as np
from PIL import Image

from lavida.data.sources.synthetic import SyntheticSource


def write_entry(root, key, id_maps):
    """One entry's frames (blank JPEGs) and index-PNG annotations, one (H, W) object-id map per frame."""
    for t, ids in enumerate(id_maps):
        for folder, suffix, image in (
            ("JPEGImages", "jpg", Image.new("RGB", (8, 6))),
            ("Annotations", "png", Image.fromarray(np.asarray(ids, dtype=np.uint8), mode="L")),
        ):
            path = root / folder / key / f"{t:05d}.{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)


def test_visible_objects_are_targets_on_their_frames_and_the_rest_is_counted_in_the_log(tmp_path, caplog):
    empty = np.zeros((6, 8), dtype=np.uint8)
    shows_1 = empty.copy()
    shows_1[1:3, 2:5] = 1
    # video "a": object 1 on frame 1 only, object 2 on no frame (drawn over); video "b": nothing visible;
    # image "c": object 1 visible.
    write_entry(tmp_path, "a", [empty, shows_1, empty])
    write_entry(tmp_path, "b", [empty, empty])
    write_entry(tmp_path, "c", [shows_1])
    meta = {
        "videos": {
            "a": {"frames": 3, "objects": {"1": "Red  Circle", "2": "blue square"}},
            "b": {"frames": 2, "objects": {"1": "green cross"}},
        },
        "images": {"c": {"frames": 1, "objects": {"1": "yellow ring"}}},
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    caplog.set_level(logging.INFO, logger="lavida.data.sources.synthetic")
    records = list(SyntheticSource(tmp_path).index())

    assert [(r.key, r.is_video, r.present) for r in records] == [
        ("a", True, ("Red Circle",)),  # spaces collapsed, as every source does
        ("c", False, ("yellow ring",)),
    ]
    video, image = records
    assert video.frames == ("JPEGImages/a/00000.jpg", "JPEGImages/a/00001.jpg", "JPEGImages/a/00002.jpg")
    (target,) = video.targets
    assert target.frames == (1,)  # where the object is visible
    assert target.mask == {
        "kind": "index_png",
        "paths": ["Annotations/a/00000.png", "Annotations/a/00001.png", "Annotations/a/00002.png"],
        "values": [1],
    }
    assert image.targets[0].frames == ()  # an image: no frame list
    assert image.group == "synthetic/c"
    # Object 2 of "a" and object 1 of "b" are hidden on every frame; "b" is left without a target.
    assert caplog.messages == [
        "synthetic: 2 objects are hidden on every frame and are not targets.",
        "synthetic: 1 entries show no object and are left out.",
    ]


def test_a_set_where_every_object_shows_logs_nothing(tmp_path, caplog):
    shows_1 = np.zeros((6, 8), dtype=np.uint8)
    shows_1[0, 0] = 1
    write_entry(tmp_path, "c", [shows_1])
    meta = {"images": {"c": {"frames": 1, "objects": {"1": "yellow ring"}}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    caplog.set_level(logging.INFO, logger="lavida.data.sources.synthetic")
    assert [r.key for r in SyntheticSource(tmp_path).index()] == ["c"]
    assert caplog.messages == []
