"""The record types, manifests and default loaders every training source shares (``sources.base``)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from PIL import Image
from trees import write_ade20k_tree, write_cityscapes_tree

from lavida.data.sources.ade20k import ADE20KSource
from lavida.data.sources.base import (
    DatasetFormatError,
    ManifestOptionsError,
    SegmentationSource,
    SegRecord,
    SegTarget,
    check_manifest_options,
    read_manifest,
    write_manifest,
)
from lavida.data.sources.cityscapes import CityscapesSource


class _Images(SegmentationSource):
    """The smallest concrete source: only the base class's loaders are under test."""

    name = "images"
    is_video = False

    def index(self):
        return iter(())


def _record(frames: tuple[str, ...], meta: dict) -> SegRecord:
    target = SegTarget(text="dot", mask={"kind": "index_png", "paths": ["label.png"], "values": [1]})
    return SegRecord(
        source="images",
        key="a",
        group="images/a",
        frames=frames,
        targets=(target,),
        present=("dot",),
        is_video=False,
        meta=meta,
    )


def test_records_and_targets_are_frozen():
    """Records are shared by every sample drawn from them (and compared with the manifest's): a sampler
    that changed one in place would change it for all later samples."""
    record = _record(("a.png",), {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.key = "b"
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.targets[0].text = "other"


def test_a_malformed_record_is_named_by_its_line(tmp_path):
    """Line numbers count from 1 and include the header: header = line 1, the record = line 2, the bad
    line = line 3."""
    path = tmp_path / "m.jsonl"
    write_manifest([_record(("a.png",), {})], path, options={"classes": "x"})
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"source": "images"}\n')
    with pytest.raises(DatasetFormatError, match=r"m\.jsonl, line 3: not a valid record"):
        read_manifest(path)


def test_a_header_whose_options_are_not_a_dict_is_not_skipped_as_a_header(tmp_path):
    """Only ``{"manifest_options": {...}}`` is a header; a line with a non-dict there is a broken record,
    not silently dropped."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"manifest_options": "train19"}\n', encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"m\.jsonl, line 1: not a valid record"):
        read_manifest(path)


def test_a_broken_header_line_is_a_malformed_record(tmp_path):
    """A line that starts like a header but is not JSON (cut short) is not skipped as a header: it is a
    record that does not parse, named by its line."""
    path = tmp_path / "m.jsonl"
    write_manifest([_record(("a.png",), {})], path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"manifest_options": {"classes": \n')
    with pytest.raises(DatasetFormatError, match=r"m\.jsonl, line 2: not a valid record"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("recorded", "given"),
    [({"classes": "train19", "min_pixels": 1}, "classes=train19 min_pixels=1"), ({}, "the defaults")],
)
def test_the_options_refusal_says_which_options_match_the_manifest(tmp_path, recorded, given):
    """The refusal ends with the options to set to use the manifest as it is, written key=value, or
    "the defaults" when the manifest recorded none."""
    root = write_cityscapes_tree(tmp_path / "cityscapes")["root"]
    path = tmp_path / "m.jsonl"
    write_manifest([], path, options=recorded)
    with pytest.raises(ManifestOptionsError) as refused:
        check_manifest_options(path, CityscapesSource(root), setting="data.sources.cityscapes.options")
    assert str(refused.value).endswith(
        f"or set data.sources.cityscapes.options to match the manifest ({given})."
    )


def test_mask_size_comes_from_meta_or_else_from_the_first_frame(tmp_path):
    """load_masks uses the size stored in ``meta`` (without opening the frame, absent here) and reads the
    first frame's size only when none is stored; both give the label's 2x3 mask."""
    label = np.zeros((2, 3), np.uint8)
    label[1, 2] = 1
    Image.fromarray(label).save(tmp_path / "label.png")
    source = _Images(tmp_path)
    stored = source.load_masks(_record(("a.png",), {"size": [2, 3]}), _record((), {}).targets[0], [0])
    np.testing.assert_array_equal(stored, label[None] == 1)
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "a.png")
    read = source.load_masks(_record(("a.png",), {}), _record((), {}).targets[0], [0])
    np.testing.assert_array_equal(read, label[None] == 1)


def test_frames_of_two_sizes_name_both_files(tmp_path):
    """The error names the odd frame with its shape, then the first frame with its shape."""
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 3, 3), np.uint8)).save(tmp_path / "b.png")
    source = _Images(tmp_path)
    with pytest.raises(DatasetFormatError) as refused:
        source.load_frames(_record(("a.png", "b.png"), {}), [0, 1])
    assert str(refused.value).startswith(
        f"{tmp_path / 'b.png'}: frame of shape (4, 3, 3), but {tmp_path / 'a.png'} of the same video has (2, 3, 3);"
    )


def test_records_without_a_target_are_counted_in_one_message(tmp_path, caplog):
    """ADE_train_00000003 shows only wall and sky (background): 1 image without a target, said once."""
    root = write_ade20k_tree(tmp_path / "ADEChallengeData2016")["root"]
    with caplog.at_level(logging.INFO, logger="lavida.data.sources.ade20k"):
        records = list(ADE20KSource(root).index())
    assert len(records) == 2
    assert "ade20k: 1 images have no target and are left out." in caplog.messages


def test_reading_a_missing_manifest_says_to_prepare_the_dataset(tmp_path):
    path = tmp_path / "ade20k_train.jsonl"
    with pytest.raises(DatasetFormatError) as error:
        read_manifest(path)
    assert str(error.value) == f"{path}: manifest not found; run `lavida-prepare` for this dataset first."
