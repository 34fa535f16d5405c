"""ADE20K SceneParsing source on a tiny ADEChallengeData2016 tree."""

import logging
import shutil

import numpy as np
import pytest
from PIL import Image
from trees import write_ade20k_tree

from lavida.data.sources.ade20k import ADE20K_BACKGROUND, ADE20KSource, ade20k_class_names
from lavida.data.sources.base import DatasetFormatError, read_manifest, write_manifest


@pytest.fixture
def tree(tmp_path):
    return write_ade20k_tree(tmp_path / "ADEChallengeData2016")


def test_class_list_is_objectinfo150_first_synonyms():
    names = ade20k_class_names()
    assert len(names) == 150 and len(set(names)) == 150
    # Spot checks against objectInfo150.txt (id: first synonym).
    for class_id, name in {
        1: "wall",
        13: "person",
        21: "car",
        45: "chest of drawers",
        90: "television receiver",
        150: "flag",
    }.items():
        assert names[class_id - 1] == name
    assert ADE20K_BACKGROUND <= set(names) and len(ADE20K_BACKGROUND) == 20


def test_records_targets_present_and_groups(tree):
    records = list(ADE20KSource(tree["root"]).index())
    # Image 3 shows only wall and sky: no target, left out.
    assert [r.key for r in records] == ["ADE_train_00000001", "ADE_train_00000002"]
    first, second = records
    assert first.source == "ade20k" and first.group == "ade20k/ADE_train_00000001" and not first.is_video
    assert first.frames == ("images/training/ADE_train_00000001.jpg",)
    assert first.meta["size"] == [24, 32]
    # Wall is background: visible (present) but never the genuine anomaly; 0 = other is neither.
    assert [t.text for t in first.targets] == ["person", "car"]
    assert first.present == ("wall", "person", "car")
    assert [t.mask for t in first.targets] == [
        {"kind": "index_png", "paths": ["annotations/training/ADE_train_00000001.png"], "values": [13]},
        {"kind": "index_png", "paths": ["annotations/training/ADE_train_00000001.png"], "values": [21]},
    ]
    assert [t.text for t in second.targets] == ["lamp", "flag"]
    assert second.present == ("sky", "lamp", "flag")


def test_masks_are_the_class_pixels(tree):
    source = ADE20KSource(tree["root"])
    record = next(iter(source.index()))
    label = tree["labels"]["training"]["ADE_train_00000001"]
    person, car = record.targets
    np.testing.assert_array_equal(source.load_masks(record, person, [0])[0], label == 13)
    car_mask = source.load_masks(record, car, [0])
    assert car_mask.shape == (1, 24, 32) and car_mask.dtype == bool
    expected = np.zeros((24, 32), bool)
    expected[12:20, 20:30] = True
    np.testing.assert_array_equal(car_mask[0], expected)


def test_background_option_and_min_pixels(tree):
    records = list(ADE20KSource(tree["root"], exclude_background=False).index())
    assert [r.key for r in records] == ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"]
    assert [t.text for t in records[2].targets] == ["wall", "sky"]
    # The lamp covers 2 pixels: still present, no longer a target.
    second = next(
        r for r in ADE20KSource(tree["root"], min_pixels=3).index() if r.key == "ADE_train_00000002"
    )
    assert [t.text for t in second.targets] == ["flag"] and "lamp" in second.present


def test_min_pixels_is_inclusive_and_by_default_keeps_a_single_pixel(tree):
    """min_pixels is the fewest pixels a target may have ("fewer than this" is not a target), and the
    default 1 keeps every class, as the official code does (ADE20KSource docstring)."""
    # The lamp (37) covers exactly 2 pixels (row 20, cols 10-11): min_pixels=2 keeps it as a target.
    second = next(
        r for r in ADE20KSource(tree["root"], min_pixels=2).index() if r.key == "ADE_train_00000002"
    )
    assert [t.text for t in second.targets] == ["lamp", "flag"]
    # Image 3 holds only wall and sky (no target); one lamp pixel makes lamp its one target by default.
    label = tree["labels"]["training"]["ADE_train_00000003"].copy()
    label[0, 0] = 37
    Image.fromarray(label).save(tree["root"] / "annotations/training/ADE_train_00000003.png")
    third = next(r for r in ADE20KSource(tree["root"]).index() if r.key == "ADE_train_00000003")
    assert [t.text for t in third.targets] == ["lamp"] and third.present == ("wall", "sky", "lamp")


def test_validation_split_and_manifest_round_trip(tree, tmp_path):
    source = ADE20KSource(tree["root"], split="val")
    records = list(source.index())
    assert [(r.key, [t.text for t in r.targets]) for r in records] == [("ADE_val_00000001", ["bed"])]
    path = source.manifest_path(tmp_path / "out")
    assert path.name == "ade20k_val.jsonl"
    write_manifest(records, path)
    (loaded,) = read_manifest(path)
    assert loaded == records[0]
    assert source.load_masks(loaded, loaded.targets[0], [0]).sum() == 16 * 24


def test_missing_and_corrupt_files_name_the_file(tree, caplog):
    root = tree["root"]
    (root / "annotations/training/ADE_train_00000002.png").unlink()
    (root / "annotations/training/ADE_train_00000001.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError, match="ADE_train_00000001.png"):
        list(ADE20KSource(root).index())
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources.ade20k"):
        records = list(ADE20KSource(root, exclude_background=False).index(skip_errors=True))
    assert [r.key for r in records] == ["ADE_train_00000003"]
    assert (
        "skipped 2 of 3 images" in caplog.text and "ADE_train_00000002.png: annotation missing" in caplog.text
    )


def test_an_annotation_without_its_image_is_refused(tree, caplog):
    """A deleted ADE_train_00000002.jpg dropped its image without a word (3 entries became 2), while a
    missing annotation was an error; the release pairs them one to one, so both are missing files."""
    root = tree["root"]
    (root / "images/training/ADE_train_00000002.jpg").unlink()
    with pytest.raises(
        DatasetFormatError,
        match=r"images/training/ADE_train_00000002\.jpg: image missing for annotation ADE_train_00000002\.png",
    ):
        list(ADE20KSource(root).index())
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources.ade20k"):
        records = list(ADE20KSource(root, exclude_background=False).index(skip_errors=True))
    assert [r.key for r in records] == ["ADE_train_00000001", "ADE_train_00000003"]
    assert "skipped 1 of 3 images" in caplog.text


def test_a_missing_annotations_folder_is_a_layout_error_even_when_skipping(tree):
    """Without annotations/training the root is the wrong folder, not a set of images to skip one by one:
    skip_errors would otherwise index nothing without an error."""
    shutil.rmtree(tree["root"] / "annotations" / "training")
    with pytest.raises(DatasetFormatError, match="found 3 images and no annotations folder"):
        list(ADE20KSource(tree["root"]).index(skip_errors=True))


def test_invalid_label_values_and_sizes_are_rejected(tree):
    from PIL import Image

    root = tree["root"]
    Image.fromarray(np.full((24, 32), 200, np.uint8), mode="L").save(
        root / "annotations/training/ADE_train_00000001.png"
    )
    with pytest.raises(DatasetFormatError, match=r"ADE_train_00000001.png: pixel value 200"):
        list(ADE20KSource(root).index())
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(
        root / "annotations/training/ADE_train_00000001.png"
    )
    with pytest.raises(
        DatasetFormatError, match=r"ADE_train_00000001.jpg: image is 24x32 but its annotation is 10x10"
    ):
        list(ADE20KSource(root).index())


def test_wrong_root_says_what_layout_is_expected(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist"):
        ADE20KSource(tmp_path / "nowhere")
    with pytest.raises(DatasetFormatError, match="ADEChallengeData2016 layout"):
        list(ADE20KSource(tmp_path).index())
    with pytest.raises(ValueError, match="unknown split"):
        ADE20KSource(tmp_path, split="test")
    with pytest.raises(ValueError, match=r"^ade20k: min_pixels must be >= 1, got 0\.$"):
        ADE20KSource(tmp_path, min_pixels=0)
