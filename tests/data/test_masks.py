"""Mask specs: index PNGs and COCO RLE, checked against hand-built masks."""

import json
import re

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from lavida.data.sources.base import DatasetFormatError, SegTarget
from lavida.data.sources.masks import (
    check_image_size,
    decode_rle,
    encode_rle,
    image_size,
    load_mask_spec,
    merge_by_text,
    polygons_to_rle,
    read_index_png,
)
from lavida.data.sources.refer import segmentation_to_rle


def test_rle_round_trip_and_union():
    a = np.zeros((6, 9), bool)
    a[1:3, 2:5] = True
    b = np.zeros((6, 9), bool)
    b[4, :] = True
    np.testing.assert_array_equal(decode_rle(encode_rle(a), (6, 9)), a)
    np.testing.assert_array_equal(decode_rle([encode_rle(a), None, encode_rle(b)], (6, 9)), a | b)
    assert not decode_rle(None, (6, 9)).any()
    uncompressed = {"size": [6, 9], "counts": [6 * 9]}  # all background
    assert not decode_rle(uncompressed, (6, 9)).any()


def test_polygon_rasterises_the_rectangle():
    mask = decode_rle(polygons_to_rle([[1, 1, 5, 1, 5, 3, 1, 3]], 5, 7), (5, 7))
    assert mask.sum() == 8 and mask[1:3, 1:5].all()


def test_index_png_keeps_palette_indices(tmp_path):
    label = np.zeros((4, 5), np.uint8)
    label[0, 0], label[2, 3] = 7, 12
    image = Image.fromarray(label, mode="P")
    image.putpalette([255, 0, 0] * 256)  # every index has the same colour: RGB would lose the ids
    image.save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_index_png(tmp_path / "a.png"), label)
    spec = {"kind": "index_png", "paths": ["a.png", None], "values": [12]}
    masks = load_mask_spec(spec, [0, 1], root=tmp_path, size=(4, 5))
    assert masks.shape == (2, 4, 5) and masks[0].sum() == 1 and masks[0, 2, 3] and not masks[1].any()


def test_rle_spec_and_errors(tmp_path):
    mask = np.zeros((4, 5), bool)
    mask[1, 1] = True
    (tmp_path / "v.json").write_text(json.dumps({"e1": [None, encode_rle(mask)]}))
    spec = {"kind": "rle", "file": "v.json", "key": "e1"}
    masks = load_mask_spec(spec, [1, 0], root=tmp_path, size=(4, 5))
    assert masks[0].sum() == 1 and not masks[1].any()
    with pytest.raises(DatasetFormatError, match="no entry 'e2'"):
        load_mask_spec({**spec, "key": "e2"}, [0], root=tmp_path, size=(4, 5))
    with pytest.raises(DatasetFormatError, match="Unknown mask spec kind"):
        load_mask_spec({"kind": "poly"}, [0], root=tmp_path, size=(4, 5))
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetFormatError, match="single-channel"):
        read_index_png(tmp_path / "rgb.png")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"size": [4, 5], "counts": "not an rle"}, "counts"),
        ({"size": [4, 5], "count": "typo"}, "no counts"),
        ({"size": [3, 5], "counts": "b"}, "size"),
    ],
)
def test_a_malformed_rle_entry_names_the_file_entry_and_frame(tmp_path, entry, problem):
    """A damaged mask file stops with a DatasetFormatError (which data.skip_errors can skip) naming it."""
    if problem == "size":
        entry = encode_rle(np.zeros((3, 5), bool))
    (tmp_path / "v.json").write_text(json.dumps({"e1": [None, entry]}))
    spec = {"kind": "rle", "file": "v.json", "key": "e1"}
    with pytest.raises(DatasetFormatError, match=rf"{tmp_path / 'v.json'}: entry 'e1', frame 1: "):
        load_mask_spec(spec, [0, 1], root=tmp_path, size=(4, 5))


def test_targets_sharing_a_text_are_merged_with_their_masks_and_frames(tmp_path):
    paths = ["a/0.png", "a/1.png"]
    png = {"kind": "index_png", "paths": paths}
    targets = [
        SegTarget("a man", {**png, "values": [3]}, frames=(1,)),
        SegTarget("a dog", {**png, "values": [2]}, frames=(0,)),
        SegTarget("a man", {**png, "values": [1, 3]}, frames=(0,)),
    ]
    assert merge_by_text(targets) == [
        SegTarget("a man", {**png, "values": [1, 3]}, frames=(0, 1)),
        SegTarget("a dog", {**png, "values": [2]}, frames=(0,)),
    ]
    # MeViS-style RLE specs: the keys and their annotations are united; unknown visibility (()) wins.
    rle = {"kind": "rle", "file": "m.json"}
    merged = merge_by_text(
        [
            SegTarget("cats", {**rle, "key": "10", "anno_ids": [10]}, frames=(0,)),
            SegTarget("cats", {**rle, "key": "10+11", "anno_ids": [10, 11]}, frames=()),
            SegTarget("cats", {**rle, "key": "10", "anno_ids": [10]}, frames=(2,)),
        ]
    )
    assert merged == [SegTarget("cats", {**rle, "key": ["10", "10+11"], "anno_ids": [10, 11]}, frames=())]
    # Texts equal up to case and spacing are one category for the sampler, so they are one target too,
    # spelled as first seen (Eq. 2: the listed category's mask covers every object it describes).
    assert merge_by_text(
        [
            SegTarget("A man  in red", {**png, "values": [1]}),
            SegTarget("a man in red", {**png, "values": [3]}),
        ]
    ) == [SegTarget("A man  in red", {**png, "values": [1, 3]})]
    with pytest.raises(DatasetFormatError, match="Cannot unite the masks of two targets with the text 'x'"):
        merge_by_text([SegTarget("x", {**png, "values": [1]}), SegTarget("x", {**rle, "key": "1"})])


def test_an_rle_spec_with_several_keys_is_their_union(tmp_path):
    left, right = np.zeros((4, 6), bool), np.zeros((4, 6), bool)
    left[:, :2], right[1:3, 3:] = True, True
    (tmp_path / "m.json").write_text(
        json.dumps({"a": [encode_rle(left)], "b": [encode_rle(right)], "c": [None]})
    )
    spec = {"kind": "rle", "file": "m.json", "key": ["a", "b", "c"]}
    np.testing.assert_array_equal(load_mask_spec(spec, [0], root=tmp_path, size=(4, 6))[0], left | right)
    with pytest.raises(DatasetFormatError, match="no entry 'd'"):
        load_mask_spec({**spec, "key": ["a", "d"]}, [0], root=tmp_path, size=(4, 6))


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png(width: int, height: int, idat: list[tuple[bytes, bytes]]) -> bytes:
    import struct

    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(_chunk(k, d) for k, d in idat) + _chunk(b"IEND", b"")


def test_every_unreadable_label_or_image_is_a_format_error_naming_the_file(tmp_path):
    """Pillow raises SyntaxError for a broken chunk and DecompressionBombError for a huge header: both must
    be DatasetFormatErrors (which index(skip_errors=True) and data.skip_errors skip), naming the file."""
    import zlib

    from lavida.data.sources.masks import image_size
    from lavida.data.train_dataset import READ_ERRORS

    label = np.zeros((24, 32), np.uint8)
    label[2:10, 2:10] = 13
    pixels = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in label))  # filter byte 0 per row
    broken = tmp_path / "broken.png"  # the second IDAT chunk's type is mangled
    broken.write_bytes(_png(32, 24, [(b"IDAT", pixels[:10]), (b"ID\x00T", pixels[10:])]))
    huge = tmp_path / "huge.png"  # a header claiming 100,000 x 100,000 pixels
    huge.write_bytes(_png(100_000, 100_000, [(b"IDAT", pixels)]))
    for path, reader in ((broken, read_index_png), (huge, read_index_png), (huge, image_size)):
        with pytest.raises(DatasetFormatError, match=path.name) as caught:
            reader(path)
        assert isinstance(caught.value, READ_ERRORS)


def test_polygons_without_area_are_an_empty_mask():
    """A segmentation whose polygons all have fewer than three points (or none) is an empty mask, which
    the refer indexer leaves out like an empty segmentation; it used to raise IndexError from pycocotools
    (``frPyObjects([])``), which no reader catches, stopping lavida-prepare. As a box, [1, 1, 5, 3] would
    be 15 pixels."""
    for polygons in ([[1, 1, 5, 3]], []):
        rle = polygons_to_rle(polygons, 5, 7)
        assert rle["size"] == [5, 7]
        np.testing.assert_array_equal(decode_rle(rle, (5, 7)), np.zeros((5, 7), bool))
    # The refer indexer's reader, through which such an annotation reached pycocotools.
    rle = segmentation_to_rle([[1, 1, 5, 3]], 5, 7)
    np.testing.assert_array_equal(decode_rle(rle, (5, 7)), np.zeros((5, 7), bool))


def test_image_size_is_height_then_width_and_a_mismatch_names_both(tmp_path):
    """Readers compare an image with its label by (H, W); a swapped or wrong index would pass transposed
    images, so a 3×5 image is checked against (3, 5) and (5, 3)."""
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(tmp_path / "a.png")  # 3 rows, 5 columns
    assert image_size(tmp_path / "a.png") == (3, 5)
    assert check_image_size(tmp_path / "a.png", (3, 5)) is None
    with pytest.raises(DatasetFormatError, match="image is 3x5 but its annotation is 5x3"):
        check_image_size(tmp_path / "a.png", (5, 3))


def test_rles_decode_whatever_their_counts_and_shape():
    """An uncompressed RLE of a non-square frame is read as (H, W) = its size, in COCO's column-major
    order, and pycocotools' own output (counts as bytes) decodes as well as the JSON form (str)."""
    # [[0, 1, 1], [0, 0, 1]] column by column: 0 0 | 1 0 | 1 1 → runs 2 zeros, 1 one, 1 zero, 2 ones.
    expected = np.array([[0, 1, 1], [0, 0, 1]], bool)
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [2, 1, 1, 2]}, (2, 3)), expected)
    native = coco_mask.encode(np.asfortranarray(expected.astype(np.uint8)))
    assert isinstance(native["counts"], bytes)
    np.testing.assert_array_equal(decode_rle(native, (2, 3)), expected)


def test_a_triangle_is_a_polygon():
    """COCO's polygons need three points (6 numbers): a triangle is kept, beside a shorter list (no
    area) that must not reach pycocotools, which reads a 4-number first entry as a box [x, y, w, h]."""
    triangle = [0, 0, 6, 0, 0, 6]
    # The same triangle with its last vertex repeated (8 numbers) is the reference rasterisation.
    same = decode_rle(polygons_to_rle([[*triangle, 0, 6]], 8, 8), (8, 8))
    assert same.any()
    np.testing.assert_array_equal(decode_rle(polygons_to_rle([triangle], 8, 8), (8, 8)), same)
    np.testing.assert_array_equal(decode_rle(polygons_to_rle([[1, 1, 5, 3], triangle], 8, 8), (8, 8)), same)


def test_a_position_past_the_last_frame_is_a_format_error(tmp_path):
    """A manifest asking for frame n of an n-frame spec is a DatasetFormatError naming it (which
    data.skip_errors can skip), not an IndexError (which stops training)."""
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "a.png")
    png = {"kind": "index_png", "paths": ["a.png", None], "values": [1]}
    with pytest.raises(DatasetFormatError, match="index_png spec has 2 frames; position 2 requested"):
        load_mask_spec(png, [0, 2], root=tmp_path, size=(4, 5))
    (tmp_path / "v.json").write_text(json.dumps({"e1": [None, None]}))
    rle = {"kind": "rle", "file": "v.json", "key": "e1"}
    with pytest.raises(DatasetFormatError, match=rf"{tmp_path / 'v.json'}: 'e1' has no frame 2\."):
        load_mask_spec(rle, [1, 2], root=tmp_path, size=(4, 5))


def test_merged_rle_specs_keep_a_single_key_and_only_the_annotations_they_have():
    """Two refs of one text with the same key stay one string key (the manifest's form for one mask);
    ``anno_ids`` (MeViS) is united when either target has it and never invented for refer specs."""
    rle = {"kind": "rle", "file": "m.json"}
    assert merge_by_text(
        [SegTarget("a cat", {**rle, "key": "7"}), SegTarget("a cat", {**rle, "key": "7"})]
    ) == [SegTarget("a cat", {**rle, "key": "7"})]
    assert merge_by_text(
        [SegTarget("a cat", {**rle, "key": "7"}), SegTarget("a cat", {**rle, "key": "8"})]
    ) == [SegTarget("a cat", {**rle, "key": ["7", "8"]})]
    merged = merge_by_text(
        [SegTarget("cats", {**rle, "key": "10"}), SegTarget("cats", {**rle, "key": "11", "anno_ids": [11]})]
    )
    assert merged == [SegTarget("cats", {**rle, "key": ["10", "11"], "anno_ids": [11]})]


@pytest.mark.parametrize(("text", "problem"), [(None, "No such file"), ('{"e1": [nul', "Expecting value")])
def test_a_missing_or_corrupt_rle_file_names_it_and_says_to_prepare_again(tmp_path, text, problem):
    if text is not None:
        (tmp_path / "v.json").write_text(text)
    spec = {"kind": "rle", "file": "v.json", "key": "e1"}
    with pytest.raises(
        DatasetFormatError,
        match=rf"{re.escape(str(tmp_path / 'v.json'))}: cannot read the RLE file \(.*{problem}.*\); re-run "
        "lavida-prepare",
    ):
        load_mask_spec(spec, [0], root=tmp_path, size=(4, 5))


def test_an_index_png_of_another_size_than_its_frame_names_the_label(tmp_path):
    Image.fromarray(np.zeros((4, 5), np.uint8), mode="P").save(tmp_path / "a.png")
    spec = {"kind": "index_png", "paths": ["a.png"], "values": [1]}
    with pytest.raises(
        DatasetFormatError,
        match=re.escape(
            f"{tmp_path / 'a.png'}: label of size (4, 5) does not match its frame's size (3, 5)."
        ),
    ):
        load_mask_spec(spec, [0], root=tmp_path, size=(3, 5))
