"""The pieces every benchmark loader shares (``lavida/eval/benchmarks/_common.py``), pinned on hand-worked
inputs: which lines of a ground-truth text file count and under which line number, which frame numbers
are whole, which pixels of a mask image are anomalous, and how frame and pixel labels are compared."""

import logging
import re

import numpy as np
import pytest
from PIL import Image

from lavida.eval.benchmark import GroundTruthError, read_category_list
from lavida.eval.benchmarks._common import (
    MaskFiles,
    parse_frame_number,
    read_mask_image,
    stack_masks,
    text_lines,
    warn_if_labels_disagree,
)


def test_text_lines_skip_blanks_and_comments_and_keep_file_line_numbers(tmp_path):
    """Error messages cite ``line N`` of the file, so blank and ``#`` lines must still be counted."""
    path = tmp_path / "gt.txt"
    path.write_text("a 1 2\n\n# comment\n   \n  b 3 4  \n#x\n")
    # Line 1 "a 1 2"; 2 blank; 3 comment; 4 spaces only; 5 "b 3 4" stripped; 6 comment.
    assert text_lines(path, expected="x") == [(1, "a 1 2"), (5, "b 3 4")]


def test_a_ground_truth_file_in_another_encoding_is_refused_naming_it(tmp_path):
    """A Latin-1 file saved by an old editor: the error names the file and what it should hold, not
    Python's bare UnicodeDecodeError."""
    path = tmp_path / "gt.txt"
    path.write_bytes("Caf\xe9 1 2\n".encode("latin-1"))
    with pytest.raises(
        GroundTruthError,
        match=rf"^{re.escape(str(path))}: not a UTF-8 text file \(.*\); expected lines 'name s e'\.$",
    ):
        text_lines(path, expected="lines 'name s e'")


def test_a_category_list_of_comments_only_is_refused_naming_it(tmp_path):
    path = tmp_path / "categories.txt"
    path.write_text("# fire\n\n   \n")
    with pytest.raises(GroundTruthError, match=rf"^{re.escape(str(path))}: the category list is empty\.$"):
        read_category_list(path)


@pytest.mark.parametrize(("token", "value"), [("12", 12), ("12.0", 12), ("0", 0), ("-1", -1), ("3e2", 300)])
def test_whole_frame_numbers_are_read(token, value):
    """Integers, whole floats (numpy ``savetxt`` writes ``12.0``) and the ``-1`` of an absent interval."""
    assert parse_frame_number(token, where="w") == value


@pytest.mark.parametrize("token", ["12.5", "nan", "inf", "-inf"])
def test_fractional_or_infinite_frame_numbers_are_refused(token):
    """A fraction cannot index a frame; ``nan`` and ``inf`` must give the named error, not the
    ValueError/OverflowError that ``round`` raises on them."""
    with pytest.raises(GroundTruthError, match=rf"^w: '{token}' is not a whole frame number"):
        parse_frame_number(token, where="w")


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_mask_alpha_band_is_ignored(tmp_path, mode):
    """A saved mask is opaque everywhere: reading its alpha band as a colour would mark every pixel."""
    values = np.zeros((4, 6), np.uint8)
    values[1:3, 2:5] = 1  # 1, not 255: any value > 0 is anomalous
    image = Image.fromarray(values, mode="L").convert("RGB" if mode == "RGBA" else "L").convert(mode)
    assert image.mode == mode and np.asarray(image)[..., -1].min() == 255  # alpha opaque everywhere
    image.save(tmp_path / "m.png")
    mask = read_mask_image(tmp_path / "m.png")
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, values > 0)


def test_mask_values_above_zero_in_any_channel_are_anomalous(tmp_path):
    """Any value > 0 is anomalous (1, 2 and 255 alike), in any colour channel of a colour mask."""
    grey = np.array([[0, 1, 255], [0, 0, 2]], np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_mask_image(tmp_path / "grey.png"), [[0, 1, 1], [0, 0, 1]])
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1, 2] = 1  # blue only
    rgb[1, 0, 0] = 7  # red only
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask_image(tmp_path / "rgb.png"), [[0, 1, 0], [1, 0, 0]])


def test_mask_files_are_read_in_the_order_of_the_indices(tmp_path):
    """Frame t's mask marks column t: the masks come back in the order of the indices asked for."""
    files = []
    for t in range(3):
        array = np.zeros((2, 3), np.uint8)
        array[0, t] = 255  # frame t marks column t
        files.append(tmp_path / f"{t:03d}.bmp")
        Image.fromarray(array, mode="L").save(files[-1])
    masks = MaskFiles(files)(np.array([2, 0]))
    # Indices [2, 0]: frame 2 (column 2) first, then frame 0 (column 0).
    np.testing.assert_array_equal(masks, [[[0, 0, 1], [0, 0, 0]], [[1, 0, 0], [0, 0, 0]]])


def test_no_masks_stack_to_an_empty_array(tmp_path):
    """An empty batch is an empty (0, 0, 0) bool array, not None or a one-frame stack."""
    empty = stack_masks([], [], what="mask image")
    assert empty.shape == (0, 0, 0) and empty.dtype == bool


def test_masks_of_another_size_are_refused_naming_the_file(tmp_path):
    """The odd file and the first file's size (H x W) are named, both in their own order."""
    files = [tmp_path / "001.bmp", tmp_path / "002.bmp"]
    masks = [np.zeros((4, 6), bool), np.zeros((5, 7), bool)]
    with pytest.raises(GroundTruthError, match=r"002\.bmp is 5x7 \(HxW\) but 001\.bmp is 4x6"):
        stack_masks(masks, files, what="mask image")


def test_label_disagreement_counts_both_directions(caplog):
    """Frame labels 1 1 0 0 0, any-pixel labels 0 1 1 1 0: frame 0 is anomalous in the frame labels only
    (1), frames 2 and 3 in the pixel masks only (2), so 3 of 5 frames differ."""
    frame = np.array([1, 1, 0, 0, 0], np.uint8)
    pixel = np.array([0, 1, 1, 1, 0], bool)
    with caplog.at_level(logging.WARNING):
        count = warn_if_labels_disagree(frame, pixel, where="V", frame_source="F.m", pixel_source="any(P)")
    assert count == 3
    assert (
        "V: F.m and any(P) disagree on 3 of 5 frames (1 anomalous in F.m without an anomalous pixel, 2 with "
        "anomalous pixels but normal in F.m); the frame labels come from F.m." in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        count = warn_if_labels_disagree(
            frame, pixel, where="V", frame_source="F.m", pixel_source="any(P)", used="pixel"
        )
    assert count == 3
    assert "V: any(P) and F.m disagree on 3 of 5 frames" in caplog.text
    assert "the frame labels come from any(P)." in caplog.text


@pytest.mark.parametrize(
    ("frame", "pixel", "count"),
    [([1, 0, 0], [0, 0, 0], 1), ([0, 0, 0], [0, 1, 1], 2), ([1, 0, 1], [1, 0, 1], 0)],
)
def test_label_disagreement_in_one_direction_only_is_logged(caplog, frame, pixel, count):
    """Either direction alone is a disagreement; identical labels log nothing."""
    with caplog.at_level(logging.WARNING):
        assert warn_if_labels_disagree(frame, pixel, where="V", frame_source="a", pixel_source="b") == count
    assert ("disagree" in caplog.text) == (count > 0)
