"""MeViS source on a tiny tree (video_trees.write_mevis_tree): RLE masks, unions, per-video shards."""

import json
import logging
import re

import numpy as np
import pytest
from trees import _uncompressed_rle
from video_trees import (
    SIZE,
    box,
    encode,
    records_by_key,
    write_frame,
    write_json,
    write_mevis_tree,
    write_youtube_vos_tree,
)

from lavida.data.sources.base import DatasetFormatError, read_manifest, write_manifest
from lavida.data.sources.mevis import MeViSSource, iter_json_object
from lavida.data.sources.youtube_vos import YouTubeVOSSource


@pytest.fixture
def tree(tmp_path):
    return write_mevis_tree(tmp_path / "mevis")


def test_one_target_per_expression_and_one_shard_per_video(tree):
    records = records_by_key(MeViSSource(tree["root"]))
    assert sorted(records) == ["m1", "m2"]
    m1 = records["m1"]
    assert m1.source == "mevis" and m1.group == "mevis/m1" and m1.meta["size"] == list(SIZE)
    assert m1.frames == tuple(f"train/JPEGImages/m1/{stem}.jpg" for stem in tree["frames"]["m1"])
    assert [(t.text, t.mask["key"], t.mask["anno_ids"], t.frames) for t in m1.targets] == [
        ("two cats playing", "10+11", [10, 11], (0, 1, 2, 4)),  # absent on frame 3 only
        ("the cat on the left", "10", [10], (0, 1, 2)),
        ("the cat that jumps", "11", [11], (1, 2, 4)),
    ]  # the fixture's fourth expression repeats "the cat on the left" for annotation 10: one target
    assert m1.present == ("two cats playing", "the cat on the left", "the cat that jumps")
    for record in records.values():
        assert {t.mask["kind"] for t in record.targets} == {"rle"}
        assert {t.mask["file"] for t in record.targets} == {f".lavida/mevis_masks/train/{record.key}.json"}
    shard = json.loads((tree["root"] / ".lavida/mevis_masks/train/m1.json").read_text())
    assert sorted(shard) == ["10", "10+11", "11"]  # keyed by annotation set, each stored once
    assert shard["10+11"][3] is None and len(shard["10+11"][1]) == 2


def test_masks_are_the_union_never_the_sum(tree):
    source = MeViSSource(tree["root"])
    records = records_by_key(source)
    cat_a, cat_b = tree["masks"]["m1"]["10"], tree["masks"]["m1"]["11"]
    assert (cat_a & cat_b).any()  # the fixture's two cats overlap
    both = source.load_masks(records["m1"], records["m1"].targets[0], range(5))
    assert both.dtype == bool
    np.testing.assert_array_equal(
        both, cat_a | cat_b
    )  # overlap pixels stay in (the official `== 1` loses them)
    assert not both[3].any()  # both annotations null on frame 3
    np.testing.assert_array_equal(
        source.load_masks(records["m1"], records["m1"].targets[2], [4, 0]), cat_b[[4, 0]]
    )
    dog = source.load_masks(records["m2"], records["m2"].targets[0], [0, 1, 2])
    np.testing.assert_array_equal(dog, tree["masks"]["m2"]["12"])
    assert not dog[1].any()


def test_training_never_opens_mask_dict(tree):
    source = MeViSSource(tree["root"])
    written = list(source.index())
    write_manifest(written, source.manifest_path())
    tree["mask_dict"].rename(tree["mask_dict"].with_name("mask_dict.moved"))
    records = read_manifest(source.manifest_path())  # a fresh start from the manifest
    assert not tree["mask_dict"].exists()
    for record in records:
        for target in record.targets:
            masks = source.load_masks(record, target, range(len(record.frames)))
            assert masks.shape == (len(record.frames), *SIZE)
            assert masks.any(axis=(1, 2)).nonzero()[0].tolist() == list(target.frames)


def test_rle_and_png_give_the_same_masks(tmp_path):
    # The same object masks as YouTube-VOS palette PNGs and as a MeViS mask_dict of RLEs.
    ytvos = write_youtube_vos_tree(tmp_path / "ytvos")
    root = tmp_path / "mevis_from_pngs"
    mask_dict, videos = {}, {}
    for video in ("v1", "v2"):
        stems = ytvos["frames"][video]
        for position, stem in enumerate(stems):
            write_frame(root / "train/JPEGImages" / video / f"{stem}.jpg", position)
        expressions = {}
        by_category = {}
        for object_id, entry in ytvos["objects"][video].items():
            anno = f"{video}{object_id}".replace("v", "")  # unique numeric id per object
            masks = ytvos["masks"][video][int(object_id)]
            mask_dict[anno] = [encode(m) if m.any() else None for m in masks]
            if entry["category"] != "others":
                by_category.setdefault(entry["category"].replace("_", " "), []).append(int(anno))
        for i, (category, annos) in enumerate(by_category.items()):
            expressions[str(i)] = {"exp": category, "obj_id": annos, "anno_id": annos}
        videos[video] = {"expressions": expressions, "frames": stems}
    write_json(root / "train/meta_expressions.json", {"videos": videos})
    write_json(root / "train/mask_dict.json", mask_dict)
    png_source, rle_source = YouTubeVOSSource(ytvos["root"]), MeViSSource(root)
    png_records, rle_records = records_by_key(png_source), records_by_key(rle_source)
    assert sorted(png_records) == sorted(rle_records) == ["v1", "v2"]
    compared = 0
    for video, png_record in png_records.items():
        rle_record = rle_records[video]
        assert [t.text for t in png_record.targets] == [t.text for t in rle_record.targets]
        for png_target, rle_target in zip(png_record.targets, rle_record.targets, strict=True):
            every = list(range(len(png_record.frames)))
            np.testing.assert_array_equal(
                png_source.load_masks(png_record, png_target, every),
                rle_source.load_masks(rle_record, rle_target, every),
            )
            assert png_target.frames == rle_target.frames
            compared += 1
    assert compared == 3


@pytest.mark.parametrize("chunk_chars", [1, 7, 64, 1 << 20])
def test_streaming_reader_matches_json_load(tree, chunk_chars):
    expected = json.loads(tree["mask_dict"].read_text())
    assert dict(iter_json_object(tree["mask_dict"], chunk_chars=chunk_chars)) == expected


def test_streaming_reader_edge_cases(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(' { "a" : 12345 , "b":[1, {"c": null}] ,"d":"x}"}\n ')
    assert list(iter_json_object(path, chunk_chars=3)) == [("a", 12345), ("b", [1, {"c": None}]), ("d", "x}")]
    path.write_text("{}")
    assert list(iter_json_object(path)) == []
    for broken in ('{"a": [1, 2}', '{"a": 1', "[1, 2]", '{"a": 1} trailing', "", "{1: 2}"):
        path.write_text(broken)
        with pytest.raises(DatasetFormatError, match=r"a\.json: not valid JSON"):
            list(iter_json_object(path, chunk_chars=4))


def test_streaming_reader_numbers_cut_at_every_position(tmp_path):
    """A chunk may end inside a number's fraction or exponent ("0." or "1e" alone decode as numbers)."""
    path = tmp_path / "numbers.json"
    text = '{"a": 0.25, "b": [1e-3, -2.5E+2, 10], "c": 123456}'
    path.write_text(text)
    expected = json.loads(text)
    for chunk_chars in range(1, len(text) + 1):
        assert dict(iter_json_object(path, chunk_chars=chunk_chars)) == expected, chunk_chars


def test_small_chunks_index_the_same(tree):
    assert list(MeViSSource(tree["root"], chunk_chars=5).index()) == list(MeViSSource(tree["root"]).index())


def test_artifacts_outside_the_root_are_referenced_by_absolute_path(tree, tmp_path):
    source = MeViSSource(tree["root"])
    records = records_by_key(source, artifacts=tmp_path / "elsewhere")
    shard = tmp_path / "elsewhere/mevis_masks/train/m2.json"
    assert shard.is_file() and not (tree["root"] / ".lavida").exists()
    target = records["m2"].targets[0]
    assert target.mask["file"] == shard.resolve().as_posix()
    np.testing.assert_array_equal(
        source.load_masks(records["m2"], target, [0]), tree["masks"]["m2"]["12"][[0]]
    )


def test_valid_u_split(tmp_path):
    written = write_mevis_tree(tmp_path / "mevis", split="valid_u")
    records = records_by_key(MeViSSource(written["root"], split="valid_u"))
    assert sorted(records) == ["m1", "m2"]
    assert records["m2"].frames[0] == "valid_u/JPEGImages/m2/00000.jpg"
    assert (written["root"] / ".lavida/mevis_masks/valid_u/m2.json").is_file()
    with pytest.raises(ValueError, match="'valid' is not supported"):
        MeViSSource(written["root"], split="valid")


def test_missing_annotation_and_bad_masks_name_mask_dict(tree):
    data = json.loads(tree["mask_dict"].read_text())
    del data["11"]
    write_json(tree["mask_dict"], data)
    with pytest.raises(
        DatasetFormatError, match=r"mask_dict\.json: no entry for annotation id\(s\) 11 of video m1"
    ):
        list(MeViSSource(tree["root"]).index())
    data["11"] = data["10"][:4]  # one frame short
    write_json(tree["mask_dict"], data)
    with pytest.raises(
        DatasetFormatError,
        match=r"mask_dict\.json: annotation 11 \(video m1\): expected a list of 5 masks .*, got 4 entries\.",
    ):
        list(MeViSSource(tree["root"]).index())
    data["11"] = {"0": data["10"][0]}  # not a list at all
    write_json(tree["mask_dict"], data)
    with pytest.raises(
        DatasetFormatError, match=r"annotation 11 \(video m1\): expected a list .*, got dict\."
    ):
        list(MeViSSource(tree["root"]).index())
    data["11"] = data["10"][:4] + [encode(np.zeros((5, 5), bool))]
    write_json(tree["mask_dict"], data)
    with pytest.raises(
        DatasetFormatError, match=r"frame 4 has a \[5, 5\] mask but the video's frames are \[24, 32\]"
    ):
        list(MeViSSource(tree["root"]).index())
    tree["mask_dict"].write_text('{"10": [null, ')
    with pytest.raises(DatasetFormatError, match=r"mask_dict\.json: not valid JSON"):
        list(MeViSSource(tree["root"]).index())
    tree["mask_dict"].unlink()
    with pytest.raises(DatasetFormatError, match=r"mask_dict\.json: file not found"):
        list(MeViSSource(tree["root"]).index())


def test_rle_counts_no_encoder_writes_are_refused_at_prepare(tree):
    """``counts: '!!!'`` passed lavida-prepare, was copied into the shard, and training then blamed the
    shard and said to re-run lavida-prepare, which copied the same bad mask again."""
    data = json.loads(tree["mask_dict"].read_text())
    data["10"][0] = {"size": [24, 32], "counts": "!!!"}
    write_json(tree["mask_dict"], data)
    with pytest.raises(
        DatasetFormatError,
        match=r"mask_dict\.json: annotation 10 \(video m1\): frame 0 is not a COCO RLE: its counts hold "
        r"characters no encoder writes .*The file is corrupt: download or extract it again",
    ):
        list(MeViSSource(tree["root"]).index())


def test_a_mask_that_fails_to_decode_names_mask_dict_and_its_annotation(tree):
    """Counts of valid characters that overrun the frame are only found by decoding, which prepare does
    not do (mevis._check_masks says why); loading names the dataset's file and the annotation, not the
    shard, and does not send the user to re-run lavida-prepare, which would copy the same mask."""
    data = json.loads(tree["mask_dict"].read_text())
    data["11"][4] = {"size": [24, 32], "counts": "0PP3"}  # 3072 pixels for a 24×32 frame
    write_json(tree["mask_dict"], data)
    source = MeViSSource(tree["root"])
    m1 = records_by_key(source)["m1"]
    mask_dict = tree["root"] / "train/mask_dict.json"
    shard = tree["root"] / ".lavida/mevis_masks/train/m1.json"
    for target in m1.targets[0], m1.targets[2]:  # "10+11": annotation 10 is absent on frame 4; and "11"
        with pytest.raises(DatasetFormatError) as refused:
            source.load_masks(m1, target, [3, 4])
        assert str(refused.value) == (
            f"{mask_dict}: annotation 11 (video m1), frame 4: not a valid COCO RLE (Invalid RLE mask "
            f"representation). lavida-prepare copied it unchanged into {shard}, so the dataset's file is "
            "corrupt: download or extract mask_dict.json again, then re-run lavida-prepare mevis."
        )
    assert source.load_masks(m1, m1.targets[0], [0, 1]).any(axis=(1, 2)).all()  # other frames still load


def test_missing_frames_and_metadata_name_the_file(tree):
    (tree["root"] / "train/JPEGImages/m2/00001.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"JPEGImages/m2: 1 of the video's 3 frames.*00001\.jpg"):
        list(MeViSSource(tree["root"]).index())
    (tree["root"] / "train/meta_expressions.json").write_text('{"videos": [1, 2]}')
    with pytest.raises(DatasetFormatError, match=r'meta_expressions\.json: expected .* no "videos" mapping'):
        list(MeViSSource(tree["root"]).index())


def test_skip_errors_logs_a_count_and_continues(tree, caplog):
    data = json.loads(tree["mask_dict"].read_text())
    del data["12"]
    write_json(tree["mask_dict"], data)
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources"):
        records = records_by_key(MeViSSource(tree["root"]), skip_errors=True)
    assert sorted(records) == ["m1"]
    skipping, summary = [record.getMessage() for record in caplog.records]  # one per skipped video, one total
    assert skipping.startswith("mevis: skipping video m2: ")
    assert summary == (
        "mevis: skipped 1 of 2 videos with format errors (first: m2); their records are not in the manifest."
    )
    assert not (tree["root"] / ".lavida/mevis_masks/train/m2.json").exists()


def test_expressions_never_visible_are_left_out(tree, caplog):
    """An annotation null or empty on every frame describes nothing in the video: as a target it would be
    an anomalous sample with an empty mask, its empty visibility read as "visible everywhere"."""
    baseline = {
        key: [(t.text, t.mask["key"], t.frames) for t in record.targets]
        for key, record in records_by_key(MeViSSource(tree["root"])).items()
    }
    meta = json.loads((tree["root"] / "train/meta_expressions.json").read_text())
    expressions = meta["videos"]["m1"]["expressions"]
    expressions["90"] = {"exp": "the dog that left before the video starts", "obj_id": [7], "anno_id": [70]}
    expressions["91"] = {"exp": "a cat that never shows", "obj_id": [8], "anno_id": [71]}
    expressions["92"] = {"exp": "The cat on the left", "obj_id": [7], "anno_id": [70]}  # shares a text
    meta["videos"]["m2"]["expressions"] = {"0": {"exp": "nothing at all", "obj_id": [9], "anno_id": [72]}}
    write_json(tree["root"] / "train/meta_expressions.json", meta)
    masks = json.loads(tree["mask_dict"].read_text())
    masks["70"] = [None] * 5
    masks["71"] = [encode(np.zeros(SIZE, bool))] * 5  # RLEs of zero area
    masks["72"] = [None] * 3
    write_json(tree["mask_dict"], masks)

    with caplog.at_level(logging.INFO, logger="lavida.data.sources"):
        records = records_by_key(MeViSSource(tree["root"]))
    assert {
        key: [(t.text, t.mask["key"], t.frames) for t in record.targets] for key, record in records.items()
    } == {"m1": baseline["m1"]}  # the shared text keeps its visible frames (0, 1, 2); m2 has no target left
    shard = json.loads((tree["root"] / ".lavida/mevis_masks/train/m1.json").read_text())
    assert sorted(shard) == ["10", "10+11", "11"]
    # Left out: 90 and 92 (annotation 70, null everywhere), 91 (71, empty everywhere), m2's only one (72).
    assert "mevis: 4 expressions have no mask on any frame (null or empty everywhere) and are left out." in [
        record.getMessage() for record in caplog.records
    ]


def test_annotation_id_zero_is_a_real_annotation(tree):
    """MeViS ``anno_id`` s number the split's annotations, not palette values (research notes §2.7: obj_id
    [0, 1, 2, 3] has anno_id [2, 3, 4, 5]), so 0 is a usable id; parse_object_id refuses only negative ids."""
    meta = json.loads((tree["root"] / "train/meta_expressions.json").read_text())
    meta["videos"]["m2"]["expressions"]["0"]["anno_id"] = [0]  # the dog: annotation 12 renamed 0
    write_json(tree["root"] / "train/meta_expressions.json", meta)
    masks = json.loads(tree["mask_dict"].read_text())
    masks["0"] = masks.pop("12")
    write_json(tree["mask_dict"], masks)
    source = MeViSSource(tree["root"])
    m2 = records_by_key(source)["m2"]
    (dog,) = m2.targets
    # The fixture's dog is on frames 0 and 2 (video_trees._mevis_masks).
    assert (dog.text, dog.mask["key"], dog.mask["anno_ids"], dog.frames) == (
        "a dog running",
        "0",
        [0],
        (0, 2),
    )
    np.testing.assert_array_equal(source.load_masks(m2, dog, [0, 1, 2]), tree["masks"]["m2"]["12"])


_BROKEN = [
    ('{"aaaa": 1, "bbbb": 2, "c": [1, 2}', "Expecting ',' delimiter"),  # a bad value
    ('{"aaaa": 1, "bbbb" 2}', "expected one of ':', found '2'"),
    ('{"aaaa": 1', "expected one of ',}', found 'the end of the file'"),  # cut off
    ("{}x", "unexpected data after the top-level object"),
]


@pytest.mark.parametrize("chunk_chars", [3, 4, 1 << 20])
@pytest.mark.parametrize("text, reason", _BROKEN)
def test_streaming_reader_errors_give_the_position_in_the_whole_file(tmp_path, chunk_chars, text, reason):
    """A broken mask_dict.json's error gives the position in the whole file however it was chunked, and
    says what was found there; the reference position is the one json.loads reports for the whole text."""
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError) as reference:
        json.loads(text)
    expected = f"broken.json: not valid JSON near character {reference.value.pos} ({reason});"
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(iter_json_object(path, chunk_chars=chunk_chars))


def test_left_out_expressions_and_videos_are_counted_exactly_in_the_log(tree, caplog):
    """The prepare log is how a user learns how much of MeViS was dropped, so each count must be exact (a
    substring check like "1 expressions" also matches "-1 expressions")."""
    # Hand count: m1 gets an expression whose text normalises to "" and one with no annotation id (2 left
    # out); m2's only expression now names annotation 72, null on every frame (1 never visible), which
    # leaves m2 without a target (1 video).
    meta = json.loads((tree["root"] / "train/meta_expressions.json").read_text())
    m1 = meta["videos"]["m1"]["expressions"]
    m1["90"] = {"exp": " . ", "obj_id": [0], "anno_id": [10]}
    m1["91"] = {"exp": "a cat", "obj_id": [], "anno_id": []}
    meta["videos"]["m2"]["expressions"]["0"]["anno_id"] = [72]
    write_json(tree["root"] / "train/meta_expressions.json", meta)
    masks = json.loads(tree["mask_dict"].read_text())
    masks["72"] = [None] * 3
    write_json(tree["mask_dict"], masks)
    with caplog.at_level(logging.INFO, logger="lavida.data.sources"):
        records = records_by_key(MeViSSource(tree["root"]))
    assert sorted(records) == ["m1"]
    assert records["m1"].present == ("two cats playing", "the cat on the left", "the cat that jumps")
    messages = [record.getMessage() for record in caplog.records]
    assert "mevis: 2 expressions have an empty text or no annotation id and are left out." in messages
    assert (
        "mevis: 1 expressions have no mask on any frame (null or empty everywhere) and are left out."
        in messages
    )
    assert "mevis: 1 videos have no usable expression and are left out." in messages


def test_a_video_entry_without_frames_or_exp_names_the_expressions_file(tree):
    """The record's frames come from meta_expressions.json; without a "frames" list the video would be
    read from whatever JPEGs are on disk instead. An expression without an "exp" string has no text."""
    path = tree["root"] / "train/meta_expressions.json"
    meta = json.loads(path.read_text())
    del meta["videos"]["m2"]["frames"]
    write_json(path, meta)
    expected = f'{path}: video m2 needs an "expressions" mapping and a non-empty "frames" list.'
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(MeViSSource(tree["root"]).index())
    meta["videos"]["m2"]["frames"] = tree["frames"]["m2"]
    meta["videos"]["m2"]["expressions"]["0"]["exp"] = None
    write_json(path, meta)
    expected = f'{path}: video m2, expression 0: no "exp" string.'
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(MeViSSource(tree["root"]).index())


def test_missing_annotations_are_named_first_five_in_numeric_order(tree):
    """The message lists at most five of the ids mask_dict.json lacks, smallest first (numerically, not
    as strings, where "100" < "20")."""
    path = tree["root"] / "train/meta_expressions.json"
    meta = json.loads(path.read_text())
    meta["videos"]["m1"]["expressions"]["9"] = {
        "exp": "ghosts",
        "obj_id": [5],
        "anno_id": [4000, 30, 3, 100, 21, 20],
    }
    write_json(path, meta)
    # Numeric order of the six absent ids: 3, 20, 21, 30, 100, 4000; the first five are named.
    expected = f"{tree['mask_dict']}: no entry for annotation id(s) 3, 20, 21, 30, 100 of video m1 (used by"
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(MeViSSource(tree["root"]).index())


def test_an_older_shard_without_nulls_names_every_annotation_of_the_key(tree):
    """A shard written before frames kept a null per absent annotation holds fewer RLEs than the key has
    ids; the failing RLE cannot then be traced to one annotation, so all of the key's ids are named."""
    source = MeViSSource(tree["root"])
    m1 = records_by_key(source)["m1"]
    shard_path = tree["root"] / ".lavida/mevis_masks/train/m1.json"
    shard = json.loads(shard_path.read_text())
    # "10+11" on frame 4: annotation 10 is absent there; the old layout kept only 11's RLE, here broken.
    shard["10+11"][4] = [{"size": [24, 32], "counts": "0PP3"}]  # 3072 pixels for a 24×32 frame
    shard_path.write_text(json.dumps(shard))
    with pytest.raises(
        DatasetFormatError, match=r"mask_dict\.json: one of annotations 10, 11 \(video m1\), frame 4:"
    ):
        source.load_masks(m1, m1.targets[0], [4])


def test_a_one_pixel_mask_is_visible(tree):
    """Visibility is read from the RLE areas without decoding: any area above zero is visible, down to a
    single pixel (MeViS has small, distant objects)."""
    masks = json.loads(tree["mask_dict"].read_text())
    pixel = box(5, 7, 1, 1)  # one pixel, on frame 1 of m2, where the dog was absent
    masks["12"][1] = encode(pixel)
    write_json(tree["mask_dict"], masks)
    source = MeViSSource(tree["root"])
    m2 = records_by_key(source)["m2"]
    assert m2.targets[0].frames == (0, 1, 2)
    np.testing.assert_array_equal(source.load_masks(m2, m2.targets[0], [1])[0], pixel)


def test_the_streaming_reader_names_a_missing_or_undecodable_file(tmp_path):
    with pytest.raises(DatasetFormatError, match=re.escape(f"{tmp_path / 'mask_dict.json'}: file not found")):
        list(iter_json_object(tmp_path / "mask_dict.json"))
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"caf\xe9": 1}'.encode("latin-1"))
    with pytest.raises(DatasetFormatError, match=re.escape(f"{latin1}: cannot read the file ('utf-8' codec")):
        list(iter_json_object(latin1))


def test_an_anno_id_that_is_not_a_list_names_the_expression(tree):
    path = tree["root"] / "train/meta_expressions.json"
    meta = json.loads(path.read_text())
    meta["videos"]["m2"]["expressions"]["0"]["anno_id"] = 12
    write_json(path, meta)
    expected = f'{path}: video m2, expression 0: "anno_id" must be a list of ids.'
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(MeViSSource(tree["root"]).index())


def test_skip_errors_passes_over_a_video_whose_expressions_are_malformed(tree, caplog):
    """A video refused while its expressions are read (before mask_dict.json) is skipped like one refused
    for its masks; the other video is indexed."""
    path = tree["root"] / "train/meta_expressions.json"
    meta = json.loads(path.read_text())
    meta["videos"]["m1"]["expressions"]["2"]["exp"] = 7
    write_json(path, meta)
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources"):
        records = records_by_key(MeViSSource(tree["root"]), skip_errors=True)
    assert sorted(records) == ["m2"]
    assert caplog.records[0].getMessage().startswith("mevis: skipping video m1: ")
    assert 'expression 2: no "exp" string' in caplog.records[0].getMessage()


def test_a_video_left_without_annotation_ids_needs_nothing_from_mask_dict(tree, caplog):
    """Every expression of m2 left out (no annotation id): m2 waits for no mask, is finished at once and,
    without a target, left out and counted; m1 is indexed as usual."""
    path = tree["root"] / "train/meta_expressions.json"
    meta = json.loads(path.read_text())
    meta["videos"]["m2"]["expressions"]["0"]["anno_id"] = []
    write_json(path, meta)
    with caplog.at_level(logging.INFO, logger="lavida.data.sources"):
        records = records_by_key(MeViSSource(tree["root"]))
    assert sorted(records) == ["m1"]
    messages = [record.getMessage() for record in caplog.records]
    assert "mevis: 1 expressions have an empty text or no annotation id and are left out." in messages
    assert "mevis: 1 videos have no usable expression and are left out." in messages
    assert not (tree["root"] / ".lavida/mevis_masks/train/m2.json").exists()


def test_uncompressed_rles_give_the_same_visibility_and_masks(tree):
    """mask_dict.json may hold COCO's uncompressed RLEs (counts as a list of run lengths); visibility is
    read from them as from compressed ones."""
    masks = json.loads(tree["mask_dict"].read_text())
    dog = tree["masks"]["m2"]["12"]
    masks["12"] = [
        None if rle is None else _uncompressed_rle(m) for rle, m in zip(masks["12"], dog, strict=True)
    ]
    write_json(tree["mask_dict"], masks)
    source = MeViSSource(tree["root"])
    m2 = records_by_key(source)["m2"]
    assert m2.targets[0].frames == (0, 2)  # the dog is absent on frame 1
    np.testing.assert_array_equal(source.load_masks(m2, m2.targets[0], [0, 1, 2]), dog)


@pytest.mark.parametrize("how", ["empty texts", "masks null everywhere"])
def test_a_first_video_without_a_usable_expression_leaves_the_next_one_indexed(tree, how):
    """m1 (read first) loses every expression, either before any mask is needed (empty texts) or once its
    masks are read (null on every frame); m2 after it is indexed as before."""
    baseline = records_by_key(MeViSSource(tree["root"]))["m2"]
    meta = json.loads((tree["root"] / "train/meta_expressions.json").read_text())
    for expression in meta["videos"]["m1"]["expressions"].values():
        if how == "empty texts":
            expression["exp"] = " . "
        else:
            expression["anno_id"] = [70]
    write_json(tree["root"] / "train/meta_expressions.json", meta)
    masks = json.loads(tree["mask_dict"].read_text())
    masks["70"] = [None] * 5
    write_json(tree["mask_dict"], masks)
    records = records_by_key(MeViSSource(tree["root"]))
    assert sorted(records) == ["m2"]
    assert records["m2"].targets == baseline.targets


def test_a_missing_mask_file_is_named(tree):
    tree["mask_dict"].unlink()
    message = f"{tree['mask_dict']}: file not found; expected "
    with pytest.raises(DatasetFormatError, match=re.escape(message)):
        list(MeViSSource(tree["root"]).index())


def test_expressions_sharing_an_annotation_before_another_one_keep_both_masks(tree):
    """Two expressions of m1 name annotation 10 before one names 11: each key is computed once, and the
    repeat must not stop the keys after it."""
    meta = json.loads((tree["root"] / "train/meta_expressions.json").read_text())
    meta["videos"]["m1"]["expressions"] = {
        "0": {"exp": "the cat on the left", "obj_id": [0], "anno_id": [10]},
        "1": {"exp": "the left cat", "obj_id": [0], "anno_id": [10]},
        "2": {"exp": "the cat that jumps", "obj_id": [1], "anno_id": [11]},
    }
    write_json(tree["root"] / "train/meta_expressions.json", meta)
    record = records_by_key(MeViSSource(tree["root"]))["m1"]
    assert [(t.text, t.mask["key"]) for t in record.targets] == [
        ("the cat on the left", "10"),
        ("the left cat", "10"),
        ("the cat that jumps", "11"),
    ]
    shard = json.loads((tree["root"] / ".lavida/mevis_masks/train/m1.json").read_text())
    assert sorted(shard) == ["10", "11"]
