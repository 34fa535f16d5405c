"""Cityscapes (gtFine labelIds) source on a tiny tree."""

import logging
import shutil

import numpy as np
import pytest
from PIL import Image
from trees import _label, _save_image, _save_label, write_cityscapes_tree

from lavida.data.sources.base import DatasetFormatError, write_manifest
from lavida.data.sources.cityscapes import (
    CITYSCAPES_LABELS,
    CITYSCAPES_OFFICIAL8,
    CITYSCAPES_TRAIN19,
    CityscapesSource,
)


@pytest.fixture
def tree(tmp_path):
    return write_cityscapes_tree(tmp_path / "cityscapes")


def test_label_table_subsets():
    assert len(CITYSCAPES_LABELS) == 34 and CITYSCAPES_LABELS[26] == "car"
    assert [CITYSCAPES_LABELS[i] for i in CITYSCAPES_OFFICIAL8] == [
        "traffic light", "traffic sign", "terrain", "truck", "bus", "train", "motorcycle", "bicycle",
    ]  # fmt: skip
    assert len(CITYSCAPES_TRAIN19) == 19 and set(CITYSCAPES_OFFICIAL8) <= set(CITYSCAPES_TRAIN19)


def test_train19_is_the_benchmark_classes_in_train_id_order():
    """CITYSCAPES_TRAIN19 lists the label ids of trainIds 0..18 in order (cityscapesscripts
    helpers/labels.py; train_datasets.md §2.3: road 7->0, sidewalk 8->1, building 11->2, ... bicycle 33->18)."""
    assert [CITYSCAPES_LABELS[i] for i in CITYSCAPES_TRAIN19] == [
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
        "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
    ]  # fmt: skip


def test_min_pixels_is_inclusive_and_by_default_keeps_a_single_pixel(tree):
    """min_pixels is the fewest pixels a target may have, and the default 1 keeps every class, as the
    official code does (CityscapesSource docstring)."""
    # aachen_000000's traffic light (rows 0-5, cols 20-23) and bicycle (rows 18-21, cols 24-29) cover
    # 6*4 = 4*6 = 24 pixels each: min_pixels=24 keeps both, 25 neither (and the image is left out).
    records = {r.key: r for r in CityscapesSource(tree["root"], min_pixels=24).index()}
    assert [t.text for t in records["aachen_000000_000019"].targets] == ["traffic light", "bicycle"]
    records = {r.key: r for r in CityscapesSource(tree["root"], min_pixels=25).index()}
    assert sorted(records) == ["bochum_000000_000313"]
    # aachen_000001 shows none of the eight; one traffic-sign pixel (id 20) makes it its target.
    stem = "aachen_000001_000019"
    label = tree["labels"][stem].copy()
    label[0, 0] = 20
    Image.fromarray(label).save(tree["root"] / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png")
    records = {r.key: r for r in CityscapesSource(tree["root"]).index()}
    assert [t.text for t in records[stem].targets] == ["traffic sign"]


def test_a_train_ids_png_is_refused(tree):
    """*_labelTrainIds.png (made by createTrainIdLabelImgs, ignore = 255) is not a labelIds file: refused
    with the file named, not a KeyError for label 255."""
    stem = "aachen_000000_000019"
    label = tree["labels"][stem].copy()
    label[0, 0] = 255
    Image.fromarray(label).save(tree["root"] / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png")
    with pytest.raises(
        DatasetFormatError, match=rf"{stem}_gtFine_labelIds.png: pixel value 255 is not a Cityscapes label id"
    ):
        list(CityscapesSource(tree["root"]).index())


def test_a_missing_gtfine_folder_is_a_layout_error_even_when_skipping(tree):
    """Without gtFine/train the download is incomplete: skip_errors must not turn that into an empty index."""
    shutil.rmtree(tree["root"] / "gtFine" / "train")
    with pytest.raises(DatasetFormatError, match="found 3 images and no gtFine folder"):
        list(CityscapesSource(tree["root"]).index(skip_errors=True))


def test_official8_targets_only_the_eight_ids(tree):
    records = list(CityscapesSource(tree["root"]).index())
    # aachen_000001 shows road, sky, person: none of the eight, so it is left out.
    assert [r.key for r in records] == ["aachen_000000_000019", "bochum_000000_000313"]
    aachen, bochum = records
    assert aachen.group == "cityscapes/aachen_000000_000019" and aachen.meta["city"] == "aachen"
    assert aachen.frames == ("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",)
    assert [t.text for t in aachen.targets] == ["traffic light", "bicycle"]
    # Road and car are visible, so present, but not selectable; unlabeled (0) is neither.
    assert aachen.present == ("road", "traffic light", "car", "bicycle")
    assert aachen.targets[0].mask == {
        "kind": "index_png",
        "paths": ["gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"],
        "values": [19],
    }
    # Static (id 4) is a void id: not present.
    assert [t.text for t in bochum.targets] == ["terrain", "truck"] and bochum.present == ("terrain", "truck")


def test_train19_and_masks(tree):
    source = CityscapesSource(tree["root"], classes="train19")
    records = {r.key: r for r in source.index()}
    assert len(records) == 3
    assert [t.text for t in records["aachen_000000_000019"].targets] == [
        "road",
        "traffic light",
        "car",
        "bicycle",
    ]
    assert [t.text for t in records["aachen_000001_000019"].targets] == ["road", "sky", "person"]
    aachen = records["aachen_000000_000019"]
    car = np.zeros((24, 32), bool)
    car[14:20, 2:12] = True
    np.testing.assert_array_equal(source.load_masks(aachen, aachen.targets[2], [0])[0], car)
    road = source.load_masks(aachen, aachen.targets[0], [0])[0]
    np.testing.assert_array_equal(road, tree["labels"]["aachen_000000_000019"] == 7)


def test_bad_files_raise_or_are_skipped(tree, caplog):
    root = tree["root"]
    (root / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetFormatError, match="bochum_000000_000313_gtFine_labelIds.png: label missing"):
        list(CityscapesSource(root).index())
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources.cityscapes"):
        records = list(CityscapesSource(root).index(skip_errors=True))
    assert [r.key for r in records] == ["aachen_000000_000019"] and "skipped 1 of 3 images" in caplog.text
    (root / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png").write_bytes(b"")
    with pytest.raises(
        DatasetFormatError, match="aachen_000000_000019_leftImg8bit.png: cannot read the image"
    ):
        list(CityscapesSource(root).index())


def test_options_are_validated(tree, tmp_path):
    with pytest.raises(ValueError, match="unknown class set"):
        CityscapesSource(tree["root"], classes="all")
    with pytest.raises(ValueError, match="unknown split"):
        CityscapesSource(tree["root"], split="test")
    with pytest.raises(ValueError, match=r"^cityscapes: min_pixels must be >= 1, got 0\.$"):
        CityscapesSource(tree["root"], min_pixels=0)
    with pytest.raises(DatasetFormatError, match="gtFine_trainvaltest.zip"):
        list(CityscapesSource(tree["root"], split="val").index())


@pytest.mark.parametrize("single_pole", [False, True])
def test_a_polegroup_is_poles(tree, single_pole):
    """A polegroup (label 18) is poles: with train19, whose "pole" is a target, a normal sample must not
    list "pole" as absent (Eq. 1), and an anomalous "pole" sample must not mark the group's poles as
    normal: "pole" is present and its mask covers both labels."""
    root, stem = tree["root"], "aachen_000002_000019"
    _save_image(root / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", 210)
    boxes = [(7, 12, 24, 0, 32), (18, 0, 12, 0, 4), (26, 14, 20, 8, 20), (19, 0, 4, 12, 16)]  # + light
    if single_pole:
        boxes.append((17, 0, 12, 28, 30))
    label = _label(boxes)
    _save_label(root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", label)
    source = CityscapesSource(root, classes="train19")
    record = next(r for r in source.index() if r.key == stem)
    assert sorted(record.present) == ["car", "pole", "polegroup", "road", "traffic light"]  # each once
    assert [t.text for t in record.targets] == ["road", "pole", "traffic light", "car"]
    pole = record.targets[1]
    assert pole.mask["values"] == [17, 18]
    np.testing.assert_array_equal(source.load_masks(record, pole, [0])[0], np.isin(label, [17, 18]))
    official = next(r for r in CityscapesSource(root).index() if r.key == stem)  # official8: no pole
    assert "pole" in official.present and [t.text for t in official.targets] == ["traffic light"]


def test_a_pole_as_the_highest_label_is_read_with_its_empty_group(tree):
    """An image whose highest label id is a pole (17): the polegroup (18) lies past it, and must count as
    empty, not past the end of the label histogram."""
    root, stem = tree["root"], "aachen_000003_000019"
    _save_image(root / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", 210)
    label = _label([(7, 12, 24, 0, 32), (17, 0, 12, 28, 30)])
    _save_label(root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", label)
    source = CityscapesSource(root, classes="train19")
    record = next(r for r in source.index() if r.key == stem)
    assert sorted(record.present) == ["pole", "road"]
    assert [t.text for t in record.targets] == ["road", "pole"]
    np.testing.assert_array_equal(source.load_masks(record, record.targets[1], [0])[0], label == 17)


def test_training_refuses_a_manifest_prepared_with_other_options(tree, capsys):
    """The manifest's name does not say which class set it holds: training reads its recorded options."""
    from lavida.cli.prepare import run
    from lavida.data.config import DataConfig, SourceConfig
    from lavida.data.train_dataset import build_train_dataset

    root = tree["root"]
    run("cityscapes", {"root": str(root)}, {"classes": "train19"})
    capsys.readouterr()
    manifest = root / ".lavida" / "cityscapes_train.jsonl"

    def build(**options):
        config = DataConfig(sources={"cityscapes": SourceConfig(weight=1.0, root=str(root), options=options)})
        return build_train_dataset(config, processor=None)

    with pytest.raises(
        ValueError, match=r"(?s)cityscapes_train\.jsonl: indexed with the options.*train19.*official8"
    ):
        build()  # the default class set, official8
    with pytest.raises(ValueError, match="prepared with other options"):  # misconfigured, not missing:
        build_train_dataset(  # renormalize must not train on the other sources without it
            DataConfig(
                sources={"cityscapes": SourceConfig(weight=1.0, root=str(root))},
                missing_sources="renormalize",
            ),
            processor=None,
        )
    dataset = build(classes="train19")
    texts = {target.text for record in dataset.records["cityscapes"] for target in record.targets}
    assert texts == {t.text for r in CityscapesSource(root, classes="train19").index() for t in r.targets}
    assert texts - {CITYSCAPES_LABELS[i] for i in CITYSCAPES_OFFICIAL8}  # classes official8 would not give

    # Concatenated manifests: a header in the middle is skipped, and every header must agree.
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines + lines))
    assert len(build(classes="train19").records["cityscapes"]) == 2 * len(dataset.records["cityscapes"])
    manifest.write_text("".join(lines + [lines[0].replace("train19", "official8")] + lines[1:]))
    with pytest.raises(ValueError, match="indexed with the options"):
        build(classes="train19")
    # A manifest without recorded options (older, or written without them) is read as it is.
    write_manifest(CityscapesSource(root, classes="train19").index(), manifest)
    assert not manifest.read_text().startswith('{"manifest_options"')
    assert build().records["cityscapes"]
