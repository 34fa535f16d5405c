"""Refer-YouTube-VOS source on a tiny tree (video_trees.write_ref_youtube_vos_tree)."""

import json
import logging
import re
import shutil

import numpy as np
import pytest
from video_trees import SIZE, records_by_key, write_ref_youtube_vos_tree

from lavida.data.sources.base import DatasetFormatError
from lavida.data.sources.ref_youtube_vos import RefYouTubeVOSSource


@pytest.fixture
def tree(tmp_path):
    return write_ref_youtube_vos_tree(tmp_path / "ref_youtube_vos")


def test_one_target_per_normalised_text(tree):
    records = records_by_key(RefYouTubeVOSSource(tree["root"]))
    assert sorted(records) == ["v1", "v2", "v3"]  # v3's only object is "others": fine as a referent
    v1 = records["v1"]
    assert v1.source == "refvos" and v1.group == "refvos/v1" and v1.meta["size"] == list(SIZE)
    assert v1.frames == tuple(f"train/JPEGImages/v1/{stem}.jpg" for stem in tree["frames"]["v1"])
    assert [(t.text, t.mask["values"], t.frames) for t in v1.targets] == [
        # Trailing period dropped; the same text on object 3 too: one target covering both objects.
        ("a man in a red shirt", [1, 3], (0, 1, 2, 3)),
        ("a tennis racket held up", [2], (1, 2)),  # whitespace collapsed
        ("the person on the left", [3], (0, 1)),  # obj_id written as an int
    ]
    assert v1.present == ("a man in a red shirt", "a tennis racket held up", "the person on the left")
    assert [t.text for t in records["v2"].targets] == ["a seal lying on a rock", "a bird flying away"]


def test_masks_equal_the_hand_built_object_masks(tree):
    source = RefYouTubeVOSSource(tree["root"])
    records = records_by_key(source)
    for video, record in records.items():
        every = list(range(len(record.frames)))
        for target in record.targets:
            expected = np.any([tree["masks"][video][value] for value in target.mask["values"]], axis=0)
            loaded = source.load_masks(record, target, every)
            np.testing.assert_array_equal(loaded, expected)
            absent = [p for p in every if p not in target.frames]
            assert not loaded[absent].any()
    bird = records["v2"].targets[1]  # an "others" object in YouTube-VOS, visible on frame 2 only
    assert source.load_masks(records["v2"], bird, [0, 1, 2]).sum(axis=(1, 2)).tolist() == [0, 0, 24]


def test_separate_youtube_vos_root(tree, tmp_path):
    # One copy of the frames: the Ref-YouTube-VOS folder only holds meta_expressions/.
    expressions_root = tmp_path / "only_expressions"
    shutil.copytree(tree["root"] / "meta_expressions", expressions_root / "meta_expressions")
    source = RefYouTubeVOSSource(expressions_root, ytvos_root=tree["root"])
    assert source.root == tree["root"]
    records = records_by_key(source)
    assert records == records_by_key(RefYouTubeVOSSource(tree["root"]))
    assert source.load_frames(records["v1"], [1]).shape == (1, *SIZE, 3)
    with pytest.raises(DatasetFormatError, match="does not exist"):
        RefYouTubeVOSSource(tmp_path / "nowhere", ytvos_root=tree["root"])


def test_a_missing_ytvos_root_is_named_as_ytvos_root(tree, tmp_path, capsys):
    """``lavida-prepare refvos root=R ytvos_root=/nonexist`` said "dataset root '/nonexist' does not
    exist", naming the setting that was right."""
    from lavida.cli.prepare import main

    missing = tmp_path / "nonexist"
    with pytest.raises(SystemExit):
        main(["refvos", f"root={tree['root']}", f"ytvos_root={missing}"])
    message = capsys.readouterr().err
    assert f"refvos: ytvos_root '{missing}' does not exist" in message and "dataset root" not in message
    with pytest.raises(DatasetFormatError, match=r"dataset root '.*nowhere' does not exist"):
        RefYouTubeVOSSource(tmp_path / "nowhere", ytvos_root=missing)  # root is checked first


def test_expression_about_an_unknown_object_is_left_out(tree, caplog):
    path = tree["root"] / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["v2"]["expressions"]["2"] = {"exp": "a ghost", "obj_id": "9"}
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="lavida.data.sources"):
        records = records_by_key(RefYouTubeVOSSource(tree["root"]))
    assert "a ghost" not in records["v2"].present and len(records["v2"].targets) == 2
    assert "1 expressions refer to an object" in caplog.text


def test_missing_or_corrupt_files_name_the_file(tree):
    root = tree["root"]
    path = root / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["v1"]["frames"].append("00020")
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=r"JPEGImages/v1: 1 of the video's 5 frames.*00020\.jpg"):
        list(RefYouTubeVOSSource(root).index())
    data["videos"]["v1"]["expressions"]["0"]["obj_id"] = "one"
    data["videos"]["v1"]["frames"].pop()
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=r"meta_expressions\.json: video v1: object id 'one'"):
        list(RefYouTubeVOSSource(root).index())
    path.unlink()
    with pytest.raises(
        DatasetFormatError, match=r"meta_expressions/train/meta_expressions\.json: file not found"
    ):
        list(RefYouTubeVOSSource(root).index())


def test_missing_youtube_vos_meta_names_the_file(tree):
    (tree["root"] / "train/meta.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"train/meta\.json: file not found.*Ref-YouTube-VOS ships"):
        list(RefYouTubeVOSSource(tree["root"]).index())


def test_skip_errors_logs_a_count_and_continues(tree, caplog):
    """The first video (v1) is broken: the two after it are still read."""
    shutil.rmtree(tree["root"] / "train/Annotations/v1")
    with pytest.raises(DatasetFormatError, match=r"Annotations/v1: folder not found"):
        list(RefYouTubeVOSSource(tree["root"]).index())
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources"):
        records = records_by_key(RefYouTubeVOSSource(tree["root"]), skip_errors=True)
    assert sorted(records) == ["v2", "v3"]
    assert "skipped 1 of 3 videos" in caplog.text


def test_a_first_video_without_a_usable_expression_leaves_the_others_read(tree):
    """Every expression of v1 (read first) is about object 9, which meta.json does not list."""
    path = tree["root"] / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    for expression in data["videos"]["v1"]["expressions"].values():
        expression["obj_id"] = "9"
    path.write_text(json.dumps(data))
    assert sorted(records_by_key(RefYouTubeVOSSource(tree["root"]))) == ["v2", "v3"]


def test_expressions_left_out_first_leave_the_later_ones_of_the_video(tree):
    """v1's first expression has no words and its second names object 9, which meta.json does not list:
    the two after them are still read."""
    path = tree["root"] / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    expressions = data["videos"]["v1"]["expressions"]
    expressions["0"]["exp"] = " . "
    expressions["1"]["obj_id"] = "9"
    path.write_text(json.dumps(data))
    record = records_by_key(RefYouTubeVOSSource(tree["root"]))["v1"]
    assert sorted(target.text for target in record.targets) == [
        "a man in a red shirt",
        "the person on the left",
    ]


def test_left_out_expressions_and_videos_are_counted_exactly_in_the_log(tree, caplog):
    """The prepare log is how a user learns how much was dropped, so each count must be exact (a
    substring check like "1 expressions" also matches "-1 expressions")."""
    # Hand count: v2 and v3 each get an expression about object 9, which meta.json does not list (2
    # unknown); v2's bird (object 2) is listed on no frame (1 never annotated); v3's only expression was
    # the one moved to object 9, so v3 has no target (1 video).
    root = tree["root"]
    path = root / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["v2"]["expressions"]["2"] = {"exp": "a ghost", "obj_id": "9"}
    data["videos"]["v3"]["expressions"]["0"]["obj_id"] = "9"
    path.write_text(json.dumps(data))
    meta_path = root / "train/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["v2"]["objects"]["2"]["frames"] = []
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="lavida.data.sources"):
        records = records_by_key(RefYouTubeVOSSource(root))
    assert sorted(records) == ["v1", "v2"]
    assert records["v2"].present == ("a seal lying on a rock",)
    messages = [record.getMessage() for record in caplog.records]
    assert f"refvos: 2 expressions refer to an object that {meta_path} does not list; left out." in messages
    assert (
        f"refvos: 1 expressions refer to an object with an empty frame list in {meta_path}; left out."
        in messages
    )
    assert "refvos: 1 videos have no usable expression and are left out." in messages


def test_a_video_entry_without_frames_or_exp_names_the_expressions_file(tree):
    """The record's frames come from meta_expressions.json; without a "frames" list the video would be
    read from whatever PNGs are on disk instead. An expression without an "exp" string has no text."""
    root = tree["root"]
    path = root / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    del data["videos"]["v2"]["frames"]
    path.write_text(json.dumps(data))
    expected = f'{path}: video v2 needs an "expressions" mapping and a non-empty "frames" list.'
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(RefYouTubeVOSSource(root).index())
    data["videos"]["v2"]["frames"] = tree["frames"]["v2"]
    data["videos"]["v2"]["expressions"]["1"] = {"exp": None, "obj_id": "2"}
    path.write_text(json.dumps(data))
    expected = f'{path}: video v2, expression 1: no "exp" string.'
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(RefYouTubeVOSSource(root).index())


@pytest.mark.parametrize(
    "edit", [lambda videos: videos.pop("v2"), lambda videos: videos["v2"].pop("objects")]
)
def test_a_video_youtube_vos_meta_does_not_describe_names_both_files(tree, edit):
    """The expressions name a video that YouTube-VOS's meta.json lacks (or lists without objects): the
    two files do not belong together, and both are named."""
    root = tree["root"]
    meta_path = root / "train/meta.json"
    meta = json.loads(meta_path.read_text())
    edit(meta["videos"])
    meta_path.write_text(json.dumps(meta))
    expressions = root / "meta_expressions/train/meta_expressions.json"
    expected = f"{meta_path}: video v2 (listed in {expressions}) has no objects entry."
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(RefYouTubeVOSSource(root).index())


def test_an_expression_without_words_is_left_out(tree):
    path = tree["root"] / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["v2"]["expressions"]["1"]["exp"] = " . "
    path.write_text(json.dumps(data))
    v2 = records_by_key(RefYouTubeVOSSource(tree["root"]))["v2"]
    assert [t.text for t in v2.targets] == ["a seal lying on a rock"]
    assert v2.present == ("a seal lying on a rock",)
