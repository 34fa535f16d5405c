"""The training-source readers against the real downloads' formats.

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
    # The whole message: "-1 refs ..." would contain "1 refs ...".
    assert "refclef: 1 refs without a usable sentence or with an empty mask were left out." in caplog.messages


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
