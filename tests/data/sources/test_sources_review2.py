"""Second review of the training-source readers against the real downloads' formats.

Each test builds the smallest input that reproduces one way the real data differs from what the reader
assumed, and checks what the reader does with it now (the comment says what it did before).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from trees import write_refer_tree
from video_trees import write_mevis_tree

from lavida.data.sources.base import DatasetFormatError
from lavida.data.sources.masks import decode_rle
from lavida.data.sources.mevis import MeViSSource
from lavida.data.sources.refer import RefClefSource, segmentation_to_rle
from lavida.data.sources.refer_pickle import convert_refs_pickle, load_data_pickle

# -- refer: annotations without a segmentation -----------------------------------------------------------


def test_an_empty_segmentation_is_an_empty_mask():
    # The refer data has annotations whose segmentation is [] (LISA reads them as a zero mask); this
    # raised "empty or unknown segmentation".
    rle = segmentation_to_rle([], 24, 32)
    assert rle["size"] == [24, 32]
    assert not decode_rle(rle, (24, 32)).any()


def test_a_ref_without_segmentation_is_left_out_and_the_image_kept(tmp_path, caplog):
    # refCLEF image 1 holds refs 0 and 1 (train). Before, ref 0's empty segmentation stopped the whole
    # run (and with skip_errors dropped image 1 with its good ref 1); now only ref 0 is left out.
    tree = write_refer_tree(tmp_path / "refer_seg", "refclef")
    path = tree["dataset_dir"] / "instances.json"
    instances = json.loads(path.read_text())
    instances["annotations"][0]["segmentation"] = []  # annotation 100 = ref 0
    path.write_text(json.dumps(instances))
    source = RefClefSource(tree["root"])
    with caplog.at_level(logging.INFO, logger="lavida.data.sources.refer"):
        records = {record.key: record for record in source.index()}
    assert sorted(records) == ["1", "2"]
    image1 = records["1"]
    assert [target.text for target in image1.targets] == ["red car"]  # ref 1 only
    assert image1.targets[0].mask["key"] == "1"
    # Ref 0's sentences still describe something visible on the image: present, never irrelevant.
    assert {"the man on the left", "left man", "red car"} <= set(image1.present)
    np.testing.assert_array_equal(source.load_masks(image1, image1.targets[0], [0])[0], tree["masks"][1])
    assert "1 refs without a usable sentence or with an empty mask were left out" in caplog.text


# -- refer: Python-2 text pickles (protocol 0) -------------------------------------------------------------

# What Python 2's ``pickle.dump([{'ref_id': 7, 'sent': 'caf\xc3\xa9s', 'sentences': [{'raw': u'...'}]}], f)``
# writes with its default protocol 0: str as STRING lines with escapes, unicode as UNICODE lines.
_PROTOCOL0 = (
    b"(lp0\n(dp1\nS'ref_id'\np2\nI7\nsS'sent'\np3\nS'caf\\xc3\\xa9s'\np4\n"
    b"sS'sentences'\np5\n(lp6\n(dp7\nS'raw'\np8\nVna\\u00efve\np9\nsasa."
)


def test_a_python2_text_pickle_with_utf8_bytes_converts():
    # pickletools.genops decodes a STRING argument as ASCII, so this genuine-looking pickle was
    # refused as "not a valid pickle ... may be truncated" before it was ever unpickled.
    assert load_data_pickle(_PROTOCOL0) == [{"ref_id": 7, "sent": "cafés", "sentences": [{"raw": "naïve"}]}]


def test_a_python2_text_pickle_that_imports_code_is_still_refused(tmp_path):
    # The same list, then a protocol-0 GLOBAL + REDUCE (os.system('true')) after the UTF-8 string: the
    # scan must get past the string and name the opcode.
    evil = _PROTOCOL0[:-1] + b"cos\nsystem\n(S'true'\ntR."
    with pytest.raises(DatasetFormatError, match=r"refused: opcode GLOBAL at byte \d+"):
        load_data_pickle(evil, name="refs(unc).p")
    path = tmp_path / "refs(unc).p"
    path.write_bytes(evil)
    with pytest.raises(DatasetFormatError, match="opcode GLOBAL"):
        convert_refs_pickle(path)
    assert not (tmp_path / "refs(unc).json").exists()


@pytest.mark.parametrize("cut", [5, 20, 31, len(_PROTOCOL0) - 1])
def test_a_truncated_python2_text_pickle_is_reported(cut):
    with pytest.raises(DatasetFormatError, match="not a valid pickle"):
        load_data_pickle(_PROTOCOL0[:cut], name="refs(unc).p")


def test_a_python2_text_pickle_is_indexed_end_to_end(tmp_path):
    # The tree's refs with one non-ASCII sentence, as a refs(unc).json and as Python 2 would pickle
    # them (protocol 0, UTF-8 byte strings): the same records either way.
    tree = write_refer_tree(tmp_path / "refer_seg", "refclef")
    list(RefClefSource(tree["root"]).index())  # converts the tree's pickle to JSON
    refs = json.loads((tree["root"] / ".lavida" / "refclef_refs(unc).json").read_text())
    refs[0]["sentences"][0]["sent"] = "the café on the left"
    beside = tree["dataset_dir"] / "refs(unc).json"
    beside.write_text(json.dumps(refs), encoding="utf-8")
    expected = list(RefClefSource(tree["root"]).index())
    assert expected[0].targets[0].text == "the café on the left"
    beside.unlink()
    tree["refs_path"].write_bytes(_python2_protocol0(refs))
    assert list(RefClefSource(tree["root"]).index()) == expected


def _python2_protocol0(value) -> bytes:
    """``value`` (lists, dicts, str, int) pickled as Python 2's ``pickle.dumps(value)`` would: protocol 0,
    every str a byte string (STRING, UTF-8 bytes escaped), no memo."""

    def dump(item) -> bytes:
        if isinstance(item, bool):
            return b"I01\n" if item else b"I00\n"
        if isinstance(item, int):
            return b"I%d\n" % item
        if isinstance(item, str):
            escaped = "".join(
                chr(b) if 32 <= b < 127 and chr(b) not in "'\\" else f"\\x{b:02x}"
                for b in item.encode("utf-8")
            )
            return b"S'" + escaped.encode("ascii") + b"'\n"
        if isinstance(item, list):
            return b"(l" + b"".join(dump(element) + b"a" for element in item)
        if isinstance(item, dict):
            return b"(d" + b"".join(dump(key) + dump(element) + b"s" for key, element in item.items())
        raise TypeError(type(item))

    return dump(value) + b"."


# -- MeViS: a malformed RLE size in mask_dict.json ---------------------------------------------------------


@pytest.mark.parametrize("size", [None, 24, "24x32"])
def test_a_malformed_rle_size_names_mask_dict_and_the_annotation(tmp_path, size):
    # list(None) / list(24) raised a bare TypeError (no file, no annotation), which lavida-prepare does
    # not catch, so the run ended in a traceback.
    tree = write_mevis_tree(tmp_path / "mevis")
    data = json.loads(tree["mask_dict"].read_text())
    data["10"][0] = {"size": size, "counts": data["10"][0]["counts"]}
    tree["mask_dict"].write_text(json.dumps(data))
    with pytest.raises(
        DatasetFormatError, match=r"mask_dict\.json: annotation 10 \(video m1\): frame 0 is neither"
    ):
        list(MeViSSource(tree["root"]).index())
