"""Mapillary Vistas (v2.0) source on a tiny research-edition tree."""

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image
from trees import MAPILLARY_LABELS, _label, _save_image, _save_label, write_mapillary_tree

from lavida.data.sources.base import DatasetFormatError
from lavida.data.sources.mapillary import MapillaryVistasSource


@pytest.fixture
def tree(tmp_path):
    return write_mapillary_tree(tmp_path / "mapillary")


def test_palette_indices_become_lowercased_readable_targets(tree):
    source = MapillaryVistasSource(tree["root"])
    records = list(source.index())
    # k3 holds only "unlabeled": no target, left out.
    assert [r.key for r in records] == ["k1", "k2"]
    k1, k2 = records
    assert (
        k1.group == "mapillary/k1"
        and k1.frames == ("training/images/k1.jpg",)
        and k1.meta["size"] == [24, 32]
    )
    # Void labels (ego vehicle, unlabeled) are neither targets nor present texts.
    assert [t.text for t in k1.targets] == ["bird", "car"] and k1.present == ("bird", "car")
    assert k1.targets[1].mask == {
        "kind": "index_png",
        "paths": ["training/v2.0/labels/k1.png"],
        "values": [2],
    }
    # Two labels with the same readable name make one target covering both values.
    assert [(t.text, t.mask["values"]) for t in k2.targets] == [
        ("curb", [1]),
        ("lane marking - crosswalk", [3, 4]),
    ]


def test_masks_match_the_hand_built_labels(tree):
    source = MapillaryVistasSource(tree["root"])
    k1, k2 = source.index()
    bird = np.zeros((24, 32), bool)
    bird[2:6, 2:8] = True
    np.testing.assert_array_equal(source.load_masks(k1, k1.targets[0], [0])[0], bird)
    crosswalk = np.zeros((24, 32), bool)
    crosswalk[4:8, :] = True
    np.testing.assert_array_equal(source.load_masks(k2, k2.targets[1], [0])[0], crosswalk)
    np.testing.assert_array_equal(source.load_masks(k2, k2.targets[0], [0])[0], tree["labels"]["k2"] == 1)


def test_official_behaviour_keeps_void_labels(tree):
    records = list(MapillaryVistasSource(tree["root"], skip_void=False).index())
    assert [r.key for r in records] == ["k1", "k2", "k3"]
    assert [t.text for t in records[0].targets] == ["bird", "car", "ego vehicle", "unlabeled"]


def test_min_pixels_counts_all_values_of_a_text_and_defaults_to_one(tree):
    """min_pixels compares with the pixels of all labels sharing a text, and keeps a target that has
    exactly that many; the default 1 keeps every class, as the official code does (class docstring)."""
    # k2's crosswalk is labels 3 and 4, 4x16 = 64 pixels each: 128 together, so min_pixels=128 keeps it
    # (neither label alone reaches it); curb (label 1) covers 24*32 - 128 = 640.
    k2 = next(r for r in MapillaryVistasSource(tree["root"], min_pixels=128).index() if r.key == "k2")
    assert [t.text for t in k2.targets] == ["curb", "lane marking - crosswalk"]
    k2 = next(r for r in MapillaryVistasSource(tree["root"], min_pixels=129).index() if r.key == "k2")
    assert [t.text for t in k2.targets] == ["curb"] and k2.present == ("curb", "lane marking - crosswalk")
    # k3 is all "unlabeled" (no target); one car pixel (label 2) makes car its target by default.
    label = tree["labels"]["k3"].copy()
    label[0, 0] = 2
    image = Image.fromarray(label)
    image.putpalette([channel for entry in MAPILLARY_LABELS for channel in entry["color"]])
    image.save(tree["root"] / "training" / "v2.0" / "labels" / "k3.png")
    k3 = next(r for r in MapillaryVistasSource(tree["root"]).index() if r.key == "k3")
    assert [t.text for t in k3.targets] == ["car"]


@pytest.mark.parametrize("readable", ["", " . ", None])
def test_a_label_without_a_readable_name_names_the_config(tree, readable):
    """A label whose readable name is empty (after normalisation) or not a string would be a target with
    no text; the config is refused, naming the label."""
    config = tree["root"] / "config_v2.0.json"
    data = json.loads(config.read_text())
    data["labels"][0]["readable"] = readable
    config.write_text(json.dumps(data))
    with pytest.raises(
        DatasetFormatError, match=r"config_v2.0.json: label 0 \(animal--bird\) has no readable name"
    ):
        MapillaryVistasSource(tree["root"])


def test_config_errors_name_the_file(tree):
    config = tree["root"] / "config_v2.0.json"
    config.write_text(json.dumps({"labels": [{"name": "animal--bird"}]}))
    with pytest.raises(DatasetFormatError, match=r"config_v2.0.json: expected"):
        MapillaryVistasSource(tree["root"])
    config.unlink()
    with pytest.raises(DatasetFormatError, match=r"config_v2.0.json: the label config is missing"):
        MapillaryVistasSource(tree["root"])


def test_bad_labels_raise_or_are_skipped(tree, caplog):
    labels = tree["root"] / "training" / "v2.0" / "labels"
    Image.fromarray(np.full((24, 32), 9, np.uint8), mode="L").save(labels / "k2.png")  # 9: no such label
    (labels / "k1.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"k1.png: label missing"):
        list(MapillaryVistasSource(tree["root"]).index())
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources.mapillary"):
        records = list(MapillaryVistasSource(tree["root"], skip_void=False).index(skip_errors=True))
    assert [r.key for r in records] == ["k3"]
    assert "k2.png: pixel value 9 has no entry in config_v2.0.json" in caplog.text
    assert "skipped 2 of 3 images" in caplog.text


def test_a_label_of_another_size_than_its_image_is_refused(tree):
    labels = tree["root"] / "training" / "v2.0" / "labels"
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(labels / "k1.png")
    with pytest.raises(DatasetFormatError, match=r"k1.jpg: image is 24x32 but its annotation is 10x10"):
        list(MapillaryVistasSource(tree["root"]).index())


def test_the_first_value_past_the_config_is_refused(tree):
    """The config lists 7 labels (values 0..6): value 7 is the first with no entry, a format error naming
    the range, not an IndexError."""
    label = tree["labels"]["k1"].copy()
    label[0, 0] = 7
    Image.fromarray(label).save(tree["root"] / "training" / "v2.0" / "labels" / "k1.png")
    with pytest.raises(
        DatasetFormatError, match=r"k1.png: pixel value 7 has no entry in config_v2.0.json \(labels 0..6\)"
    ):
        list(MapillaryVistasSource(tree["root"]).index())


def test_a_missing_labels_folder_is_a_layout_error_even_when_skipping(tree):
    """Without training/v2.0/labels the root or version is wrong: skip_errors must not turn that into an
    empty index."""
    shutil.rmtree(tree["root"] / "training" / "v2.0" / "labels")
    with pytest.raises(DatasetFormatError, match="found 3 images and no labels folder"):
        list(MapillaryVistasSource(tree["root"]).index(skip_errors=True))


def test_missing_split_folder_explains_the_layout(tree):
    with pytest.raises(DatasetFormatError, match=r"validation/images/\*\.jpg"):
        list(MapillaryVistasSource(tree["root"], split="val").index())


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"split": "test"},
            r"unknown split 'test'; expected one of \['train', 'training', 'val', 'validation'\]",
        ),
        ({"version": "v3.0"}, r"unknown label version 'v3.0'; expected 'v2.0' or 'v1.2'"),
        ({"min_pixels": 0}, r"min_pixels must be >= 1, got 0"),
    ],
)
def test_unknown_options_are_refused_before_reading_the_dataset(tmp_path, options, problem):
    """Checked first: the folder need not exist for a mistyped option to be named."""
    with pytest.raises(ValueError, match=rf"^mapillary: {problem}\.$"):
        MapillaryVistasSource(tmp_path / "missing", **options)


def test_a_config_without_labels_is_refused(tree):
    config = tree["root"] / "config_v2.0.json"
    config.write_text(json.dumps({"labels": []}))
    with pytest.raises(DatasetFormatError, match=r"config_v2\.0\.json: the config lists no labels\."):
        MapillaryVistasSource(tree["root"])


# Entries of the real config_v2.0.json (names and readable names), at other pixel values.
GROUP_LABELS = [
    ("animal--bird", "Bird"),
    ("human--person--individual", "Person"),
    ("human--person--person-group", "Person Group"),
    ("object--support--pole", "Pole"),
    ("object--support--pole-group", "Pole Group"),
    ("object--vehicle--car", "Car"),
    ("object--vehicle--truck", "Truck"),
    ("object--vehicle--vehicle-group", "Vehicle Group"),
    ("void--unlabeled", "Unlabeled"),
]


def test_a_group_label_is_its_class(tmp_path):
    """Person Group (2) is persons and Pole Group (4) poles: where a group is, the class is present (a
    normal sample must not list it as absent, Eq. 1) and an anomalous sample of the class covers the
    group's pixels. A Vehicle Group (7) holds vehicles of unnamed kinds: car and truck count as present
    there, but take none of its pixels. Each group is still a target of its own."""
    root = tmp_path / "mapillary"
    labels = [
        {"name": name, "readable": readable, "instances": False, "evaluate": True}
        for name, readable in GROUP_LABELS
    ]
    root.mkdir()
    (root / "config_v2.0.json").write_text(json.dumps({"labels": labels}), encoding="utf-8")
    images = {
        "crowd": _label(
            [(8, 0, 24, 0, 32), (0, 0, 4, 0, 4), (2, 4, 12, 0, 10), (4, 0, 12, 20, 24), (7, 14, 24, 0, 16)]
        ),
        "mixed": _label([(8, 0, 24, 0, 32), (1, 0, 8, 0, 4), (2, 10, 20, 0, 10), (3, 0, 12, 20, 22)]),
    }
    palette = [value for index in range(len(GROUP_LABELS)) for value in (index, index, index)]
    for seed, (key, label) in enumerate(images.items()):
        _save_image(root / "training" / "images" / f"{key}.jpg", seed)
        _save_label(root / "training" / "v2.0" / "labels" / f"{key}.png", label, palette)
    source = MapillaryVistasSource(root)
    crowd, mixed = source.index()
    assert sorted(crowd.present) == [
        "bird", "car", "person", "person group", "pole", "pole group", "truck", "vehicle group"
    ]  # fmt: skip
    assert [(t.text, t.mask["values"]) for t in crowd.targets] == [
        ("bird", [0]),
        ("person group", [2]),
        ("pole group", [4]),
        ("vehicle group", [7]),
        ("person", [2]),
        ("pole", [4]),
    ]
    assert sorted(mixed.present) == ["person", "person group", "pole"]
    person = next(t for t in mixed.targets if t.text == "person")
    assert person.mask["values"] == [1, 2]
    np.testing.assert_array_equal(source.load_masks(mixed, person, [0])[0], np.isin(images["mixed"], [1, 2]))
