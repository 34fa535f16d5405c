"""refCLEF / refCOCO / refCOCO+ / refCOCOg sources and the restricted refs-pickle converter."""

import io
import json
import logging
import os
import pickle
import re

import numpy as np
import pytest
from PIL import Image
from trees import write_refer_tree

from lavida.data.sources import refer_pickle
from lavida.data.sources.base import DatasetFormatError, read_manifest, write_manifest
from lavida.data.sources.masks import decode_rle, encode_rle
from lavida.data.sources.refer import (
    RefClefSource,
    RefCocoGSource,
    RefCocoPlusSource,
    RefCocoSource,
    segmentation_to_rle,
)
from lavida.data.sources.refer_pickle import DataOnlyUnpickler, convert_refs_pickle, load_data_pickle
from lavida.data.sources.text import normalize_text


@pytest.fixture
def refcoco(tmp_path):
    return write_refer_tree(tmp_path / "refer_seg", "refcoco")


def _check_masks(source, records, tree):
    """Every target's mask equals its ref's hand-built mask."""
    for record in records:
        for target in record.targets:
            mask = source.load_masks(record, target, [0])
            assert mask.shape == (1, 24, 32) and mask.dtype == bool
            np.testing.assert_array_equal(mask[0], tree["masks"][int(target.mask["key"])])


def test_one_target_per_ref_sentence_train_split_only(refcoco):
    source = RefCocoSource(refcoco["root"])
    records = list(source.index())
    # Image 3 only has a val ref.
    assert [r.key for r in records] == ["1", "2"]
    image1, image2 = records
    assert image1.source == "refcoco" and image1.group == "refcoco/1" and not image1.is_video
    assert image1.frames == ("images/mscoco/images/train2014/COCO_train2014_000000000001.jpg",)
    assert image1.meta == {"size": [24, 32], "image_id": 1}
    # Sentences are normalised and a ref's duplicates ("left man" twice) collapse.
    assert [(t.text, t.mask["key"]) for t in image1.targets] == [
        ("the man on the left", "0"),
        ("left man", "0"),
        ("red car", "1"),
    ]
    assert image1.targets[0].mask == {
        "kind": "rle",
        "file": ".lavida/refcoco_unc_train_masks/00000.json",
        "key": "0",
    }
    assert image1.present == ("the man on the left", "left man", "red car")
    # The testA ref is not a target but describes something visible, so it is present.
    assert [t.text for t in image2.targets] == ["the dog"] and image2.present == ("the dog", "blue sky")
    _check_masks(source, records, refcoco)


def test_a_sentence_on_two_refs_covers_both_objects(tmp_path):
    """Two objects of one image described by one sentence: a sample listing it marks both anomalous
    (as separate targets, one of the two would have been labelled normal)."""
    refcoco = write_refer_tree(tmp_path / "refer_seg", "refcoco", refs_format="json")
    refs = json.loads(refcoco["refs_path"].read_text())
    car = next(ref for ref in refs if ref["ref_id"] == 1)
    car["sentences"].append({"sent_id": 9, "raw": "left man.", "sent": "left man"})
    car["sent_ids"].append(9)
    refcoco["refs_path"].write_text(json.dumps(refs))
    source = RefCocoSource(refcoco["root"])
    image1 = next(iter(source.index()))
    assert [(t.text, t.mask["key"]) for t in image1.targets] == [
        ("the man on the left", "0"),
        ("left man", ["0", "1"]),
        ("red car", "1"),
    ]
    both = source.load_masks(image1, image1.targets[1], [0])[0]
    np.testing.assert_array_equal(both, refcoco["masks"][0] | refcoco["masks"][1])


def test_masks_are_sharded_by_image_and_stale_shards_go(refcoco, monkeypatch):
    from lavida.data.sources import refer

    monkeypatch.setattr(refer, "_IMAGES_PER_SHARD", 1)
    source = RefCocoSource(refcoco["root"])
    image1, image2 = source.index()
    shards = refcoco["root"] / ".lavida" / "refcoco_unc_train_masks"
    assert {t.mask["file"] for t in image1.targets} == {".lavida/refcoco_unc_train_masks/00000.json"}
    assert {t.mask["file"] for t in image2.targets} == {".lavida/refcoco_unc_train_masks/00001.json"}
    assert json.loads((shards / "00001.json").read_text()).keys() == {"2"}
    _check_masks(source, [image1, image2], refcoco)
    monkeypatch.setattr(refer, "_IMAGES_PER_SHARD", 100)
    list(source.index())  # a re-run replaces the folder: no stale 00001.json
    assert sorted(p.name for p in shards.iterdir()) == ["00000.json"]


def test_other_splits(refcoco):
    (val,) = RefCocoSource(refcoco["root"], split="val").index()
    assert val.key == "3" and [t.text for t in val.targets] == ["val thing"]
    (test_a,) = RefCocoSource(refcoco["root"], split="testA").index()
    assert test_a.key == "2" and [t.text for t in test_a.targets] == ["blue sky"]
    with pytest.raises(DatasetFormatError, match=r"no usable ref in split 'test'.*'testA', 'train', 'val'"):
        list(RefCocoSource(refcoco["root"], split="test").index())


def test_pickle_is_converted_once_to_json(refcoco):
    root = refcoco["root"]
    list(RefCocoSource(root).index())
    converted = root / ".lavida" / "refcoco_refs(unc).json"
    assert json.loads(converted.read_text())[0]["sentences"][0]["sent"] == "the man on the left."
    refcoco["refs_path"].unlink()  # from now on only the JSON is read
    assert [r.key for r in RefCocoSource(root).index()] == ["1", "2"]


def test_a_replaced_pickle_is_converted_again_even_when_older(refcoco):
    """unzip, tar and cp -p give a re-downloaded pickle the archive's old time: the conversion must still
    follow the new pickle, and an unchanged one is not converted twice."""
    import os

    root, path = refcoco["root"], refcoco["refs_path"]
    list(RefCocoSource(root).index())
    converted = root / ".lavida" / "refcoco_refs(unc).json"
    made = converted.stat().st_mtime_ns
    list(RefCocoSource(root).index())
    assert converted.stat().st_mtime_ns == made  # unchanged pickle: the JSON is reused

    refs = json.loads(converted.read_text())
    refs[0]["sentences"][0]["sent"] = "the man in the red shirt."
    path.write_bytes(pickle.dumps(refs, protocol=2))
    os.utime(path, ns=(10**9, 10**9))  # 1970: older than the conversion
    records = list(RefCocoSource(root).index())
    assert records[0].targets[0].text == "the man in the red shirt"


def test_refs_json_next_to_the_pickle_is_used_directly(tmp_path):
    tree = write_refer_tree(tmp_path / "refer_seg", "refcoco+", refs_format="json")
    source = RefCocoPlusSource(tree["root"])
    records = list(source.index())
    assert [r.group for r in records] == ["refcoco+/1", "refcoco+/2"]
    assert not (tree["root"] / ".lavida" / "refcoco+_refs(unc).json").exists()
    _check_masks(source, records, tree)


def test_refclef_rle_annotations_and_image_paths(tmp_path):
    tree = write_refer_tree(tmp_path / "refer_seg", "refclef")
    source = RefClefSource(tree["root"])
    records = list(source.index())
    assert records[0].frames == ("images/saiapr_tc-12/00/images/1.jpg",)
    # A list of RLEs (union), a single compressed RLE; the uncompressed one is on a testA ref.
    _check_masks(source, records, tree)
    (test_a,) = RefClefSource(tree["root"], split="testA").index()
    _check_masks(source, [test_a], tree)


def test_refcocog_defaults_to_the_umd_split(tmp_path):
    tree = write_refer_tree(tmp_path / "refer_seg", "refcocog")
    records = list(RefCocoGSource(tree["root"]).index())
    assert records[0].targets[0].mask["file"] == ".lavida/refcocog_umd_train_masks/00000.json"
    with pytest.raises(DatasetFormatError, match=r"refs\(unc\)\.p: not found.*split_by='unc'"):
        list(RefCocoGSource(tree["root"], split_by="unc").index())


def test_artifacts_outside_root_and_manifest_round_trip(refcoco, tmp_path):
    source = RefCocoSource(refcoco["root"])
    artifacts = tmp_path / "prepared"
    records = list(source.index(artifacts=artifacts))
    mask_file = (artifacts / "refcoco_unc_train_masks" / "00000.json").resolve()
    assert records[0].targets[0].mask["file"] == mask_file.as_posix()
    assert set(json.loads(mask_file.read_text())) == {"0", "1", "2"}
    assert (artifacts / "refcoco_refs(unc).json").is_file()
    manifest = source.manifest_path(artifacts)
    write_manifest(records, manifest)
    loaded = read_manifest(manifest)
    assert loaded == records
    _check_masks(source, loaded, refcoco)


def test_missing_files_raise_or_are_skipped(refcoco, caplog):
    root = refcoco["root"]
    (root / refcoco["frames"][1]).unlink()
    with pytest.raises(DatasetFormatError, match="COCO_train2014_000000000001.jpg: image not found"):
        list(RefCocoSource(root).index())
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources.refer"):
        records = list(RefCocoSource(root).index(skip_errors=True))
    assert [r.key for r in records] == ["2"] and "skipped 1 images" in caplog.text
    # Only the kept image's refs are in the mask shards.
    assert set(json.loads((root / ".lavida/refcoco_unc_train_masks/00000.json").read_text())) == {"2"}
    (root / "refcoco" / "instances.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"refcoco/instances.json: not found"):
        list(RefCocoSource(root).index())


def test_an_image_of_another_size_than_instances_json_says_is_refused(refcoco):
    root = refcoco["root"]
    image = root / refcoco["frames"][1]
    Image.new("RGB", (10, 8)).save(image)
    with pytest.raises(DatasetFormatError, match=rf"{image.name}: image is 8x10 but its annotation is 24x32"):
        list(RefCocoSource(root).index())


def test_bad_annotations_name_the_file(refcoco):
    path = refcoco["dataset_dir"] / "instances.json"
    instances = json.loads(path.read_text())
    instances["annotations"][0]["segmentation"] = {"size": [10, 10], "counts": "abc"}
    path.write_text(json.dumps(instances))
    with pytest.raises(DatasetFormatError, match=r"instances.json, annotation 100: RLE with size \[10, 10\]"):
        list(RefCocoSource(refcoco["root"]).index())
    instances["annotations"][0]["segmentation"] = [[2.0, 2.0, 10.0, 2.0, 10.0, 10.0]]
    instances["annotations"][0]["image_id"] = 2
    path.write_text(json.dumps(instances))
    with pytest.raises(DatasetFormatError, match="annotation 100 is on image 2, but ref 0 says image 1"):
        list(RefCocoSource(refcoco["root"]).index())
    path.write_text("{not json")
    with pytest.raises(DatasetFormatError, match="instances.json: expected COCO-style JSON"):
        list(RefCocoSource(refcoco["root"]).index())


def test_malformed_refs_name_the_file(refcoco):
    refs = [{"ref_id": "0", "ann_id": 100, "image_id": 1, "split": "train", "sentences": []}]
    (refcoco["dataset_dir"] / "refs(unc).json").write_text(json.dumps(refs))
    with pytest.raises(DatasetFormatError, match=r"refs\(unc\)\.json: ref #0 lacks integer ref_id"):
        list(RefCocoSource(refcoco["root"]).index())


@pytest.mark.parametrize(
    ("sentences", "problem"),
    [(None, "lacks sentences"), ("the man on the left", "lacks a sentences list")],
)
def test_a_ref_without_a_sentences_list_names_the_file_and_the_ref(tmp_path, sentences, problem):
    """A ref without ``sentences`` (or with a string there) is a format error naming the ref, not a bare
    KeyError from deep in the indexer nor a string read character by character into no sentence."""
    refcoco = write_refer_tree(tmp_path / "refer_seg", "refcoco", refs_format="json")
    refs = json.loads(refcoco["refs_path"].read_text())
    del refs[0]["sentences"]
    if sentences is not None:
        refs[0]["sentences"] = sentences
    refcoco["refs_path"].write_text(json.dumps(refs))
    with pytest.raises(DatasetFormatError, match=rf"refs\(unc\)\.json: ref #0 {problem}"):
        list(RefCocoSource(refcoco["root"]).index())


def test_an_annotation_without_a_segmentation_key_names_the_ref(refcoco):
    """instances.json holding annotation 100 (ref 0's) without a ``segmentation`` field: a format error
    naming the ann_id and ref, as for a missing annotation, not a KeyError."""
    path = refcoco["dataset_dir"] / "instances.json"
    instances = json.loads(path.read_text())
    del instances["annotations"][0]["segmentation"]
    path.write_text(json.dumps(instances))
    with pytest.raises(
        DatasetFormatError, match=r"no annotation \(with a segmentation\) for ann_id 100 of ref 0"
    ):
        list(RefCocoSource(refcoco["root"]).index())


def test_the_count_of_refs_left_out_is_logged_exactly(tmp_path, caplog):
    """Refs without a usable sentence or with an empty mask are left out and counted in one message.

    Ref 1 (image 1) gets only a sentence that normalises to "" and ref 2 (image 2, its only train ref)
    an empty segmentation, so 2 refs go: image 1 keeps ref 0's two sentences, image 2 has no target
    left and no record. The whole message is compared: "-2 refs ..." contains "2 refs ...".
    """
    refcoco = write_refer_tree(tmp_path / "refer_seg", "refcoco", refs_format="json")
    refs = json.loads(refcoco["refs_path"].read_text())
    refs[1]["sentences"] = [{"raw": " . ", "sent": " . ", "tokens": [], "sent_id": 0}]
    refcoco["refs_path"].write_text(json.dumps(refs))
    path = refcoco["dataset_dir"] / "instances.json"
    instances = json.loads(path.read_text())
    instances["annotations"][2]["segmentation"] = []  # annotation 102 = ref 2
    path.write_text(json.dumps(instances))
    with caplog.at_level(logging.INFO, logger="lavida.data.sources.refer"):
        (image1,) = RefCocoSource(refcoco["root"]).index()
    assert image1.key == "1"
    assert [(t.text, t.mask["key"]) for t in image1.targets] == [
        ("the man on the left", "0"),
        ("left man", "0"),
    ]
    assert "refcoco: 2 refs without a usable sentence or with an empty mask were left out." in caplog.messages


def test_corrupt_refs_pickle_names_the_file(refcoco):
    refcoco["refs_path"].write_bytes(refcoco["refs_path"].read_bytes()[:40])
    with pytest.raises(DatasetFormatError, match=r"refs\(unc\)\.p: not a valid pickle"):
        list(RefCocoSource(refcoco["root"]).index())


def test_segmentation_layouts_agree():
    mask = np.zeros((24, 32), bool)
    mask[3:7, 5:9] = True
    polygon = segmentation_to_rle([[5.0, 3.0, 9.0, 3.0, 9.0, 7.0, 5.0, 7.0]], 24, 32)
    np.testing.assert_array_equal(decode_rle(polygon, (24, 32)), mask)
    assert segmentation_to_rle(encode_rle(mask), 24, 32) == encode_rle(mask)
    with pytest.raises(DatasetFormatError, match="mixes polygons and RLEs"):
        segmentation_to_rle([[1.0, 2.0], encode_rle(mask)], 24, 32)


@pytest.mark.parametrize("segmentation", ["counts", 7, None])
def test_a_segmentation_neither_list_nor_dict_is_unknown(segmentation):
    """A segmentation that is neither polygons nor RLE (a string, a number, null) is refused as unknown,
    not iterated as if it were a list of parts."""
    with pytest.raises(DatasetFormatError, match="empty or unknown segmentation"):
        segmentation_to_rle(segmentation, 24, 32)


# -- the restricted unpickler ------------------------------------------------------------------------


class _Exploit:
    """Unpickling this calls os.mkdir on ``marker``: code run by a malicious pickle (no shell involved)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_that_imports_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps([{"ref_id": 1}, _Exploit(marker)])
    path = tmp_path / "refs(unc).p"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=r"refs\(unc\)\.p: refused: opcode STACK_GLOBAL"):
        convert_refs_pickle(path)
    # The unpickler alone, without the opcode scan, refuses the global too.
    with pytest.raises(pickle.UnpicklingError, match=r"refused global '(posix|os|nt)\.mkdir'"):
        DataOnlyUnpickler(io.BytesIO(data)).load()
    for protocol in (0, 2):  # protocol 0 uses GLOBAL (text), protocol 2 GLOBAL + REDUCE
        with pytest.raises(DatasetFormatError, match="refused: opcode GLOBAL"):
            load_data_pickle(pickle.dumps(_Exploit(marker), protocol=protocol))
        with pytest.raises(pickle.UnpicklingError, match="refused global"):
            DataOnlyUnpickler(io.BytesIO(pickle.dumps(_Exploit(marker), protocol=protocol))).load()
    assert not marker.exists() and not path.with_suffix(".json").exists()


def test_a_refused_pickle_and_a_truncated_one_each_say_one_thing(tmp_path):
    """The refusal of code ended "...download it again from a trusted copy.); the file may be truncated.":
    the refusal, a ValueError, was caught by the corrupt-stream handler and reworded."""
    with pytest.raises(DatasetFormatError) as refused:
        load_data_pickle(pickle.dumps([{"ref_id": 1}, _Exploit(tmp_path / "pwned")]), name="refs(unc).p")
    assert re.fullmatch(
        r"refs\(unc\)\.p: refused: opcode STACK_GLOBAL at byte \d+ imports or calls code\. The refer "
        r"pickles hold only plain data, so this file is not a genuine one; download it again from a "
        r"trusted copy\.",
        str(refused.value),
    )
    with pytest.raises(DatasetFormatError) as truncated:
        load_data_pickle(pickle.dumps([{"ref_id": 1, "sent": "a dog"}])[:-6], name="refs(unc).p")
    assert re.fullmatch(
        r"refs\(unc\)\.p: not a valid pickle \(.+\); the file is truncated or corrupt\. Download it again\.",
        str(truncated.value),
    )
    assert "refused" not in str(truncated.value)


def test_plain_data_pickles_convert_next_to_the_pickle(tmp_path):
    refs = [{"ref_id": 1, "sentences": [{"sent": "a dog"}], "pair": (1, 2)}]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs))
    output = convert_refs_pickle(path)
    assert output == tmp_path / "refs(unc).json"
    assert json.loads(output.read_text()) == [{"ref_id": 1, "sentences": [{"sent": "a dog"}], "pair": [1, 2]}]
    path.write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(DatasetFormatError, match="expected a list of ref dicts"):
        convert_refs_pickle(path)


def test_a_list_holding_anything_but_ref_dicts_is_not_converted(tmp_path):
    """A list is not enough: every item must be a ref dict, or the JSON would hold what no source reads."""
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1}, 2]))
    with pytest.raises(DatasetFormatError, match="expected a list of ref dicts"):
        convert_refs_pickle(path)
    assert not path.with_suffix(".json").exists()


def test_none_and_scalars_load_as_themselves():
    """None, floats and bools are plain data: loaded unchanged, never refused as unexpected values."""
    assert load_data_pickle(pickle.dumps([None, 1.5, True, {"bbox": None}])) == [
        None,
        1.5,
        True,
        {"bbox": None},
    ]


# Each opcode that imports or calls code, alone after a protocol-2 header (PROTO 2 is bytes 0-1, so it
# sits at byte 2), with the arguments pickletools decodes for it; the scan only parses, never runs, so
# the stack need not make sense. Byte values are the pickle module's opcode constants.
_CODE_PICKLES = {
    "GLOBAL": pickle.GLOBAL + b"os\nsystem\n",
    "STACK_GLOBAL": pickle.STACK_GLOBAL,
    "INST": pickle.INST + b"os\nsystem\n",
    "OBJ": pickle.OBJ,
    "REDUCE": pickle.REDUCE,
    "BUILD": pickle.BUILD,
    "NEWOBJ": pickle.NEWOBJ,
    "NEWOBJ_EX": pickle.NEWOBJ_EX,
    "EXT1": pickle.EXT1 + b"\x01",
    "EXT2": pickle.EXT2 + b"\x01\x00",
    "EXT4": pickle.EXT4 + b"\x01\x00\x00\x00",
    "PERSID": pickle.PERSID + b"0\n",
    "BINPERSID": pickle.BINPERSID,
}


@pytest.mark.parametrize("opcode", sorted(_CODE_PICKLES))
def test_every_opcode_that_reaches_code_is_refused_by_name(opcode):
    """The scan refuses each of the 13 opcodes that import, call or hook code (module docstring, step 1),
    naming it and its offset — not only the GLOBAL/STACK_GLOBAL that real exploits start with."""
    data = pickle.PROTO + b"\x02" + _CODE_PICKLES[opcode] + pickle.STOP
    with pytest.raises(DatasetFormatError) as refused:
        load_data_pickle(data, name="refs(unc).p")
    assert str(refused.value).startswith(
        f"refs(unc).p: refused: opcode {opcode} at byte 2 imports or calls code."
    )


def test_python2_byte_strings_are_decoded_as_utf8():
    # What Python 2's pickle.dumps([{'ref_id': 7, 'sent': 'cafés'}], 2) writes: str as SHORT_BINSTRING.
    python2 = b"\x80\x02]q\x00}q\x01(U\x06ref_idq\x02K\x07U\x04sentq\x03U\x06caf\xc3\xa9sq\x04ua."
    assert load_data_pickle(python2) == [{"ref_id": 7, "sent": "cafés"}]
    latin1 = python2.replace(b"U\x06caf\xc3\xa9s", b"U\x05caf\xe9s")
    with pytest.raises(DatasetFormatError, match="not valid UTF-8"):
        load_data_pickle(latin1, name="old.p")


def test_image_dir_can_live_outside_root(refcoco, tmp_path):
    moved = tmp_path / "coco_train2014"
    (refcoco["root"] / "images/mscoco/images/train2014").rename(moved)
    source = RefCocoSource(refcoco["root"], image_dir=moved)
    records = list(source.index())
    assert records[0].frames == (f"{moved.as_posix()}/COCO_train2014_000000000001.jpg",)
    assert source.load_frames(records[0], [0]).shape == (1, 24, 32, 3)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  The man\t on the\nleft.  ", "The man on the left"),
        ("left man..", "left man"),
        ("st. george statue", "st. george statue"),
        ("a dog .", "a dog"),
        (" . ", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected
    with pytest.raises(TypeError, match="expected a str"):
        normalize_text(b"bytes")


def test_the_unpickler_alone_refuses_a_persistent_id():
    """A persistent id hands control to a hook; the unpickler refuses it even without the opcode scan."""
    data = pickle.PROTO + b"\x02" + pickle.PERSID + b"refs\n" + pickle.STOP
    with pytest.raises(pickle.UnpicklingError, match="refused persistent id 'refs': only plain data"):
        DataOnlyUnpickler(io.BytesIO(data)).load()


def test_a_global_the_scan_missed_is_still_refused_naming_the_file(monkeypatch, tmp_path):
    """The unpickler is the check that guarantees nothing is imported (module docstring, step 2): with the
    opcode scan emptied, a pickle that imports os.mkdir is refused as a DatasetFormatError naming the
    file, not as a bare UnpicklingError."""
    monkeypatch.setattr(refer_pickle, "_CODE_OPCODES", frozenset())
    with pytest.raises(
        DatasetFormatError, match=r"refs\(unc\)\.p: refused global '(posix|os|nt)\.mkdir'"
    ) as refused:
        load_data_pickle(pickle.dumps(_Exploit(tmp_path / "pwned")), name="refs(unc).p")
    assert isinstance(refused.value.__cause__, refer_pickle.RefusedPickleError)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (pickle.POP, "stack underflow"),  # well-formed opcodes that the unpickler cannot run
        (pickle.BINGET + b"\x05", "Memo value not found"),
        (pickle.EMPTY_DICT + pickle.EMPTY_LIST + pickle.EMPTY_LIST + pickle.SETITEM, "unhashable type"),
    ],
)
def test_a_pickle_that_parses_but_cannot_be_loaded_is_corrupt(body, problem):
    """The opcode scan only parses; a stream whose opcodes cannot run is reported as corrupt, naming the
    file and the unpickler's reason."""
    with pytest.raises(
        DatasetFormatError,
        match=rf"refs\(unc\)\.p: not a valid pickle \(.*{problem}.*\); the file is truncated",
    ):
        load_data_pickle(pickle.PROTO + b"\x02" + body + pickle.STOP, name="refs(unc).p")


def test_a_self_containing_list_is_refused_naming_the_file():
    """JSON cannot hold a list that contains itself; refused with its file named, not a RecursionError."""
    looped = []
    looped.append(looped)
    with pytest.raises(DatasetFormatError, match=r"refs\(unc\)\.p: the pickle holds a self-referencing"):
        load_data_pickle(pickle.dumps(looped), name="refs(unc).p")


def test_a_missing_refs_pickle_names_the_file(tmp_path):
    path = tmp_path / "refs(unc).p"
    with pytest.raises(DatasetFormatError, match=re.escape(f"{path}: cannot read the refs pickle")):
        convert_refs_pickle(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[{not json", r"cannot read the refs JSON \(Expecting"),
        ('{"refs": []}', "expected a list of refs, got dict"),
    ],
)
def test_an_unreadable_refs_json_names_the_file(tmp_path, text, problem):
    refcoco = write_refer_tree(tmp_path / "refer_seg", "refcoco", refs_format="json")
    refcoco["refs_path"].write_text(text)
    with pytest.raises(DatasetFormatError, match=rf"refs\(unc\)\.json: {problem}"):
        list(RefCocoSource(refcoco["root"]).index())


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda images: images.pop(0), "no image with id 1, which refs point to"),
        (lambda images: images[0].pop("height"), "image 1 lacks height/width/file_name"),
        (lambda images: images[0].update(width="wide"), "image 1 lacks height/width/file_name"),
    ],
)
def test_an_image_entry_refs_cannot_use_names_instances_json(refcoco, change, problem):
    """Image 1 (the first in instances.json) missing, or without a usable size: an error naming
    instances.json and the image, not a KeyError."""
    path = refcoco["dataset_dir"] / "instances.json"
    instances = json.loads(path.read_text())
    change(instances["images"])
    path.write_text(json.dumps(instances))
    with pytest.raises(DatasetFormatError, match=rf"refcoco/instances\.json: {problem}"):
        list(RefCocoSource(refcoco["root"]).index())


def test_an_rle_whose_counts_are_not_ascii_names_the_annotation(refcoco):
    """A compressed RLE's counts string is ASCII; anything else names instances.json and the ann_id."""
    path = refcoco["dataset_dir"] / "instances.json"
    instances = json.loads(path.read_text())
    instances["annotations"][0]["segmentation"] = {"size": [24, 32], "counts": "é"}
    path.write_text(json.dumps(instances))
    with pytest.raises(
        DatasetFormatError, match=r"instances\.json, annotation 100: RLE counts cannot be read \('ascii'"
    ):
        list(RefCocoSource(refcoco["root"]).index())


def test_sentences_that_are_not_dicts_are_skipped(tmp_path):
    """A stray string among a ref's sentence dicts is ignored; the ref's real sentences stay."""
    refcoco = write_refer_tree(tmp_path / "refer_seg", "refcoco", refs_format="json")
    refs = json.loads(refcoco["refs_path"].read_text())
    refs[0]["sentences"].insert(0, "a stray string")
    refcoco["refs_path"].write_text(json.dumps(refs))
    (image1, _) = RefCocoSource(refcoco["root"]).index()
    assert [t.text for t in image1.targets if t.mask["key"] == "0"] == refcoco["sentences"][0]


def test_an_unreadable_conversion_record_converts_the_pickle_again(refcoco):
    """The record of which pickle a conversion came from, if corrupt, cannot vouch for the JSON: the
    pickle is converted again (an edited JSON is replaced by the pickle's refs)."""
    root = refcoco["root"]
    list(RefCocoSource(root).index())
    converted = root / ".lavida" / "refcoco_refs(unc).json"
    refs = json.loads(converted.read_text())
    refs[0]["sentences"][0]["sent"] = "edited"
    converted.write_text(json.dumps(refs))
    converted.with_name("refcoco_refs(unc).source.json").write_text("{half written")
    records = list(RefCocoSource(root).index())
    assert records[0].targets[0].text == "the man on the left"
