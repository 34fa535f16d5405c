"""YouTube-VOS 2019 source on a tiny tree in the official layout (video_trees.write_youtube_vos_tree)."""

import json
import logging
import re

import numpy as np
import pytest
from PIL import Image
from video_trees import SIZE, records_by_key, write_youtube_vos_tree

from lavida.data.sources.base import DatasetFormatError, read_manifest, write_manifest
from lavida.data.sources.youtube_vos import YouTubeVOSSource


@pytest.fixture
def tree(tmp_path):
    return write_youtube_vos_tree(tmp_path / "youtube_vos")


def test_one_record_per_video_one_target_per_named_category(tree):
    records = records_by_key(YouTubeVOSSource(tree["root"]))
    assert sorted(records) == ["v1", "v2"]  # v3 holds only an "others" object: no target
    v1 = records["v1"]
    assert v1.source == "vos" and v1.group == "vos/v1" and v1.is_video
    assert v1.frames == tuple(f"train/JPEGImages/v1/{stem}.jpg" for stem in tree["frames"]["v1"])
    assert v1.meta["size"] == list(SIZE)
    assert [target.text for target in v1.targets] == ["person", "tennis racket"]  # "_" -> " "
    person, racket = v1.targets
    assert person.mask["kind"] == "index_png" and person.mask["values"] == [1, 3]  # both person objects
    assert person.mask["paths"] == [f"train/Annotations/v1/{stem}.png" for stem in tree["frames"]["v1"]]
    assert person.frames == (0, 1, 2, 3) and racket.frames == (1, 2)
    assert records["v2"].targets[0].text == "earless seal" and records["v2"].targets[0].frames == (0, 2)


def test_others_is_neither_a_target_nor_present(tree):
    for record in YouTubeVOSSource(tree["root"]).index():
        assert "others" not in record.present
        assert all(target.text != "others" for target in record.targets)
        assert record.present == tuple(target.text for target in record.targets)
    assert all(
        4 not in target.mask["values"]
        for target in records_by_key(YouTubeVOSSource(tree["root"]))["v1"].targets
    )


def test_masks_equal_the_hand_built_union(tree):
    source = YouTubeVOSSource(tree["root"])
    records = records_by_key(source)
    masks = tree["masks"]
    person, racket = records["v1"].targets
    positions = [3, 0, 2, 1]  # any order, as clip sampling asks
    np.testing.assert_array_equal(
        source.load_masks(records["v1"], person, positions), (masks["v1"][1] | masks["v1"][3])[positions]
    )
    loaded = source.load_masks(records["v1"], racket, [0, 1, 2, 3])
    np.testing.assert_array_equal(loaded, masks["v1"][2])
    assert loaded.dtype == bool and not loaded[0].any() and not loaded[3].any()  # absent: all False
    seal = source.load_masks(records["v2"], records["v2"].targets[0], [0, 1, 2])
    np.testing.assert_array_equal(seal, masks["v2"][1])
    assert not seal[1].any()  # the frame without any object


def test_manifest_round_trip_and_frames(tree, tmp_path):
    source = YouTubeVOSSource(tree["root"])
    written = list(source.index())
    assert write_manifest(written, source.manifest_path()) == 2
    records = read_manifest(source.manifest_path())
    assert records == written
    frames = source.load_frames(records[0], [0, 2])
    assert frames.shape == (2, *SIZE, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(
        source.load_masks(records[0], records[0].targets[1], [1]), tree["masks"]["v1"][2][[1]]
    )


def test_unannotated_jpegs_are_ignored(tree):
    # A train_all_frames-style folder: JPEGs between the annotated frames are not part of the record.
    (tree["root"] / "train/JPEGImages/v1/00001.jpg").write_bytes(
        (tree["root"] / "train/JPEGImages/v1/00000.jpg").read_bytes()
    )
    records = records_by_key(YouTubeVOSSource(tree["root"]))
    assert len(records["v1"].frames) == 4


def test_missing_or_corrupt_metadata_names_the_file(tree):
    meta = tree["root"] / "train" / "meta.json"
    meta.write_text("{not json")
    with pytest.raises(DatasetFormatError, match=r"meta\.json: not a readable JSON"):
        list(YouTubeVOSSource(tree["root"]).index())
    meta.unlink()
    with pytest.raises(DatasetFormatError, match=r"meta\.json: file not found"):
        list(YouTubeVOSSource(tree["root"]).index())


def test_missing_frame_and_corrupt_annotation_name_the_file(tree):
    root = tree["root"]
    (root / "train/JPEGImages/v2/00005.jpg").unlink()
    with pytest.raises(
        DatasetFormatError, match=r"JPEGImages/v2: 1 of the video's 3 frames have no '\*\.jpg'.*00005\.jpg"
    ):
        list(YouTubeVOSSource(root).index())
    (root / "train/Annotations/v1/00000.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError, match=r"Annotations/v1/00000\.png: cannot read"):
        list(YouTubeVOSSource(root).index())


def test_corrupt_annotation_at_load_time_names_the_file(tree):
    source = YouTubeVOSSource(tree["root"])
    record = records_by_key(source)["v1"]
    (tree["root"] / "train/Annotations/v1/00010.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetFormatError, match=r"Annotations/v1/00010\.png"):
        source.load_masks(record, record.targets[0], [2])


def test_metadata_frame_without_annotation_is_an_error(tree):
    meta_path = tree["root"] / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["v1"]["objects"]["2"]["frames"].append("00020")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError, match=r"meta\.json: video v1 lists frame '00020'"):
        list(YouTubeVOSSource(tree["root"]).index())


def test_skip_errors_logs_a_count_and_continues(tree, caplog):
    """The first video (v1) is broken: v2 after it is still read (v3 has no target)."""
    (tree["root"] / "train/Annotations/v1/00010.png").unlink()
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources"):
        records = records_by_key(YouTubeVOSSource(tree["root"]), skip_errors=True)
    assert sorted(records) == ["v2"]
    skipping, summary = [record.getMessage() for record in caplog.records]  # one per skipped video, one total
    assert skipping.startswith("vos: skipping video v1: ")
    assert summary == (
        "vos: skipped 1 of 3 videos with format errors (first: v1); their records are not in the manifest."
    )


@pytest.mark.parametrize(
    "change",
    [{"category": "others"}, {"category": "_"}, {"frames": []}],
    ids=["others", "no words", "on no frame"],
)
def test_an_object_left_out_first_leaves_the_later_objects_of_the_video(tree, change):
    """v1's object 1 (read first) is left out; objects 2 and 3 after it are still targets, in id order."""
    meta_path = tree["root"] / "train/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["v1"]["objects"]["1"].update(change)
    meta_path.write_text(json.dumps(meta))
    racket, person = records_by_key(YouTubeVOSSource(tree["root"]))["v1"].targets
    assert (racket.text, racket.mask["values"]) == ("tennis racket", [2])
    assert (person.text, person.mask["values"]) == ("person", [3])


def test_objects_are_read_in_the_order_of_their_numbers_not_their_names(tree):
    """With ids 2, 4, 10 and 30 the targets follow the numbers (racket 2 before person 10): by name, "10"
    and "30" would come before "2" and the targets of a video would change order with its ids' digits."""
    meta_path = tree["root"] / "train/meta.json"
    meta = json.loads(meta_path.read_text())
    objects = meta["videos"]["v1"]["objects"]
    objects["10"], objects["30"] = objects.pop("1"), objects.pop("3")  # the two person objects
    meta_path.write_text(json.dumps(meta))
    racket, person = records_by_key(YouTubeVOSSource(tree["root"]))["v1"].targets
    assert (racket.text, racket.mask["values"]) == ("tennis racket", [2])
    assert (person.text, person.mask["values"]) == ("person", [10, 30])


def test_split_and_root_are_checked(tmp_path, tree):
    with pytest.raises(ValueError, match="split 'valid' is not supported"):
        YouTubeVOSSource(tree["root"], split="valid")
    with pytest.raises(DatasetFormatError, match="does not exist"):
        YouTubeVOSSource(tmp_path / "nowhere")
    # No index-time artefacts for this source: nothing is written.
    list(YouTubeVOSSource(tree["root"]).index(artifacts=tmp_path / "artefacts"))
    assert not (tmp_path / "artefacts").exists()


def test_a_frame_of_another_size_names_both_files(tree):
    """np.stack would fail with a bare ValueError that names no file and that skip_errors cannot skip."""
    records = records_by_key(YouTubeVOSSource(tree["root"]))
    odd = tree["root"] / "train" / "JPEGImages" / "v1" / records["v1"].frames[2].split("/")[-1]
    Image.new("RGB", (40, 30)).save(odd)
    with pytest.raises(DatasetFormatError, match=rf"{odd.name}: frame of shape \(30, 40, 3\), but .* has"):
        YouTubeVOSSource(tree["root"]).load_frames(records["v1"], [0, 2])


def test_left_out_objects_and_videos_are_counted_exactly_in_the_log(tree, caplog):
    """The prepare log is how a user learns how much of YouTube-VOS was dropped, so the counts must be
    exact (a substring check like "1 objects" also matches "-1 objects")."""
    # Hand count: emptying the frame lists of v1's racket (object 2) and v2's seal (object 1) leaves out
    # 2 objects; v2 is then left with "others" only, and v3 only ever had "others": 2 videos dropped.
    meta_path = tree["root"] / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["v1"]["objects"]["2"]["frames"] = []
    meta["videos"]["v2"]["objects"]["1"]["frames"] = []
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="lavida.data.sources"):
        records = records_by_key(YouTubeVOSSource(tree["root"]))
    assert sorted(records) == ["v1"]
    messages = [record.getMessage() for record in caplog.records]
    assert f"vos: 2 objects have an empty frame list in {meta_path}; left out." in messages
    assert (
        "vos: 2 videos have only 'others' objects or objects on no frame (no target) and are left out."
        in messages
    )


def test_a_first_frame_of_another_size_than_its_annotation_names_both_sizes(tree):
    """Only the first frame's sizes are compared at index time, and the record's size is that frame's;
    the message must name the annotation file and give both sizes as HxW."""
    root = tree["root"]
    Image.new("RGB", (16, 12)).save(root / "train/JPEGImages/v2/00000.jpg")  # W=16, H=12
    # The annotation stays SIZE = (24, 32); the other frames of v2 stay 24x32 as well.
    expected = f"{root / 'train/Annotations/v2/00000.png'}: annotation is 24x32 but its frame is 12x16;"
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(YouTubeVOSSource(root).index())


def test_a_video_without_annotation_pngs_names_its_annotation_folder(tree):
    """A YouTube-VOS record's frames are its annotated frames, so a video whose Annotations folder is
    empty has none, and the message must point at that folder, not at the (full) JPEG folder."""
    root = tree["root"]
    for png in (root / "train/Annotations/v2").iterdir():
        png.unlink()
    expected = f"{root / 'train/Annotations/v2'}: the video has no frames."
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(YouTubeVOSSource(root).index())


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda v1: v1.pop("objects"), 'video v1 has no "objects" mapping.'),
        (lambda v1: v1["objects"]["2"].pop("category"), "video v1, object 2: no category string."),
        (
            lambda v1: v1["objects"]["2"].update(frames="00005"),
            "video v1: expected a list of frame ids, got str.",
        ),
    ],
)
def test_a_malformed_video_entry_names_the_metadata_and_the_video(tree, edit, problem):
    meta_path = tree["root"] / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    edit(meta["videos"]["v1"])
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError, match=re.escape(f"{meta_path}: {problem}")):
        list(YouTubeVOSSource(tree["root"]).index())


def test_a_category_without_words_is_no_target(tree):
    """A category that normalises to nothing ("_") gives no target with an empty text; the video's other
    objects stay."""
    meta_path = tree["root"] / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["v1"]["objects"]["2"]["category"] = "_"
    meta_path.write_text(json.dumps(meta))
    v1 = records_by_key(YouTubeVOSSource(tree["root"]))["v1"]
    assert [target.text for target in v1.targets] == ["person"]
    assert v1.present == ("person",)
