"""UCSD Ped2 loader on a tiny tree in the official layout, macOS litter included (tests/eval/trees.py)."""

import logging
import re
import shutil

import numpy as np
import pytest
from eval.trees import write_ucsd_ped2_tree

from lavida.eval.benchmark import GroundTruthError, plan_clips
from lavida.eval.benchmarks.ucsd_ped2 import UCSDPed2, parse_matlab_ranges, read_ucsd_frame_gt


@pytest.fixture
def tree(tmp_path):
    return write_ucsd_ped2_tree(tmp_path / "UCSD_Anomaly_Dataset.v1p2")


def test_clips_labels_from_matlab_ranges_and_masks(tree):
    bench = UCSDPed2(tree.root)
    videos = bench.videos()
    assert [v.name for v in videos] == ["Test001", "Test002"]  # ._Test001 ignored
    first, second = videos
    assert first.num_frames == 8 and second.num_frames == 6  # ._001.tif and .DS_Store ignored
    np.testing.assert_array_equal(first.frame_labels, [0, 0, 1, 1, 1, 0, 0, 0])  # [3:5], 1-based inclusive
    np.testing.assert_array_equal(second.frame_labels, [1, 1, 0, 0, 1, 1])  # [1:2, 5:6]
    masks = first.pixel_masks(np.array([1, 2]))
    assert masks.shape == (2, 32, 48) and not masks[0].any() and masks[1].sum() == 8 * 12
    for v in videos:
        np.testing.assert_array_equal(v.pixel_masks(np.arange(v.num_frames)), tree.videos[v.name].masks)
    assert bench.has_pixel_gt and bench.primary_metric == "pixel_auc"
    assert bench.categories == ["car", "cart", "wheelchair", "skate", "bicycle"]


def test_root_may_be_the_ucsdped2_folder(tree):
    assert len(UCSDPed2(tree.root / "UCSDped2").videos()) == 2
    with pytest.raises(FileNotFoundError, match="no UCSDped2/Test folder"):
        UCSDPed2(tree.root / "UCSDped2" / "Test" / "Test001")


@pytest.mark.parametrize(
    ("body", "intervals"),
    [
        ("61:180", [(60, 179)]),
        ("61 : 180", [(60, 179)]),
        ("1:10, 50:60", [(0, 9), (49, 59)]),
        ("5 7", [(4, 4), (6, 6)]),
        ("1:2:7", [(0, 0), (2, 2), (4, 4), (6, 6)]),
        ("", []),
    ],
)
def test_matlab_ranges(body, intervals):
    assert parse_matlab_ranges(body, where="x") == intervals


def test_malformed_matlab_line_names_file_and_line(tree):
    tree.files["matlab"].write_text(
        "TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [3:5];\nTestVideoFile{end+1}.gt_frame = [1-2];\n"
    )
    with pytest.raises(GroundTruthError, match=r"UCSDped2\.m, line 3: '1-2' is not a MATLAB range"):
        UCSDPed2(tree.root).videos()
    tree.files["matlab"].write_text("TestVideoFile{end+1}.gt_frame = [3:5];\n")
    with pytest.raises(GroundTruthError, match=r"UCSDped2\.m: 1 gt_frame lines for 2 test clips"):
        UCSDPed2(tree.root).videos()
    tree.files["matlab"].unlink()
    with pytest.raises(GroundTruthError, match=r"UCSDped2\.m: ground-truth file not found"):
        UCSDPed2(tree.root).videos()


def test_mask_count_must_match_the_frames(tree):
    next(tree.files["Test002:gt"].glob("006.bmp")).unlink()
    with pytest.raises(GroundTruthError, match=r"Test002_gt: 5 masks for 6 frames"):
        UCSDPed2(tree.root).videos()


def test_a_test_folder_without_clip_folders_is_refused_naming_it(tree):
    test = tree.root / "UCSDped2" / "Test"
    for name in ("Test001", "Test002"):
        shutil.rmtree(test / name)
    with pytest.raises(
        FileNotFoundError, match=rf"^UCSD Ped2: {re.escape(str(test))} holds no TestNNN folders\.$"
    ):
        UCSDPed2(tree.root).videos()


def test_a_clip_without_tif_frames_is_refused_naming_it(tree):
    """The AppleDouble ``._001.tif`` and ``.DS_Store`` left in the folder are not frames."""
    clip = tree.root / "UCSDped2" / "Test" / "Test002"
    for frame in clip.glob("[0-9]*.tif"):
        frame.unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"^UCSD Ped2: {re.escape(str(clip))} holds no \.tif frames\.$"
    ):
        UCSDPed2(tree.root).videos()


def test_a_clip_without_its_mask_folder_names_the_folder_expected(tree):
    shutil.rmtree(tree.files["Test002:gt"])
    clip = tree.root / "UCSDped2" / "Test" / "Test002"
    with pytest.raises(GroundTruthError) as error:
        UCSDPed2(tree.root).videos()
    assert str(error.value) == (
        f"{tree.files['Test002:gt']}: pixel ground truth not found; expected one .bmp mask per frame of {clip}."
    )


def test_other_images_beside_the_frames_are_refused(tree):
    """The runner decodes a clip folder with open_video, which takes every image file; a stray
    000_preview.png would become frame 0 for the model and shift every frame against its label."""
    from PIL import Image

    from lavida.data.video import open_video

    clip = tree.root / "UCSDped2" / "Test" / "Test001"
    (clip / "notes.txt").write_text("not an image: neither the loader nor the reader takes it")
    for video in UCSDPed2(tree.root).videos():
        assert open_video(video.path).num_frames == video.num_frames
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(clip / "000_preview.png")
    with pytest.raises(GroundTruthError, match=r"Test001: .*000_preview\.png.*[Rr]emove"):
        UCSDPed2(tree.root).videos()


def test_disagreement_with_pixel_masks_is_logged(tree, caplog):
    tree.files["matlab"].write_text(
        "TestVideoFile{end+1}.gt_frame = [3:6];\nTestVideoFile{end+1}.gt_frame = [1:2, 5:6];\n"
    )
    with caplog.at_level(logging.WARNING):
        first = UCSDPed2(tree.root).videos()[0]
    assert "Test001: UCSDped2.m and any(pixel mask) disagree on 1 of 8 frames" in caplog.text
    assert first.frame_labels[5] == 1
    assert UCSDPed2(tree.root, frame_labels="pixel").videos()[0].frame_labels[5] == 0


def test_interval_one_plan(tree):
    bench = UCSDPed2(tree.root)
    assert bench.protocol("standard").interval == bench.protocol("lavida_official").interval == 1
    plan = plan_clips(bench.videos()[0].num_frames, interval=1)
    np.testing.assert_array_equal(plan.clips, [np.arange(8)])
    assert plan_clips(bench.videos()[1].num_frames, interval=1, drop_tail=True).num_clips == 0


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "LA", "RGBA"])
def test_mask_images_are_read_in_any_mode_without_their_alpha_band(tmp_path, mode):
    """A mask saved with an (opaque) alpha band must not turn every pixel anomalous."""
    from PIL import Image

    from lavida.eval.benchmarks._common import read_mask_image

    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:4] = True
    grey = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
    grey.convert(mode).save(tmp_path / "000.png")
    assert (read_mask_image(tmp_path / "000.png") == mask).all()


@pytest.mark.parametrize("name", ["UCSDped1", "ped1_copy"])
def test_a_ped1_folder_is_named_as_ped1(tmp_path, name):
    """UCSDped1/ has Ped2's layout (Test/TestNNN, UCSDped1.m) but masks for a few clips only; given as the
    root it must be named as the wrong set, not fail later on a missing Test001_gt."""
    from lavida.eval.benchmarks.ucsd_ped2 import UCSDPed2

    test = tmp_path / name / "Test"
    (test / "Test001").mkdir(parents=True)
    (test / "UCSDped1.m").write_text("TestVideoFile = {};\n")
    with pytest.raises(FileNotFoundError, match=r"is UCSD Ped1 .*holds UCSDped2/"):
        UCSDPed2(tmp_path / name).videos()


@pytest.mark.parametrize(
    ("body", "intervals"),
    [
        ("1:2:8", [(0, 0), (2, 2), (4, 4), (6, 6)]),  # 1, 3, 5, 7: the stop 8 is not on the step
        ("2:3:8", [(1, 1), (4, 4), (7, 7)]),  # 2, 5, 8: the stop is included when reached
        ("9:4", []),  # MATLAB's a:b is empty when b < a
        ("1:2:5, 9:10", [(0, 0), (2, 2), (4, 4), (8, 9)]),  # a range after a stepped one is still read
    ],
)
def test_matlab_step_ranges_and_empty_ranges(body, intervals):
    """MATLAB ``a:s:b`` stops at the last step not past ``b``; ``a:b`` with ``b < a`` is empty."""
    assert parse_matlab_ranges(body, where="x") == intervals


@pytest.mark.parametrize(
    ("body", "message"),
    [("1:0:5", "'1:0:5' has a zero step"), ("0:5", "'0:5': MATLAB frame numbers start at 1")],
)
def test_matlab_ranges_that_cannot_be_frames_are_refused(body, message):
    """A zero step (``range`` would raise a bare ValueError) and frame 0 (MATLAB counts from 1)."""
    with pytest.raises(GroundTruthError, match=rf"^x: {message}"):
        parse_matlab_ranges(body, where="x")


def test_explicitly_numbered_matlab_lines_are_put_in_clip_order(tmp_path):
    """``TestVideoFile{2}`` before ``TestVideoFile{1}``: the number, not the line order, names the clip."""
    path = tmp_path / "UCSDped2.m"
    path.write_text("TestVideoFile{2}.gt_frame = [5:6];\nTestVideoFile{ 1 }.gt_frame = [1:2];\n")
    assert read_ucsd_frame_gt(path) == [[(0, 1)], [(4, 5)]]


def test_end_plus_one_follows_the_largest_clip_number_so_far(tmp_path):
    """MATLAB's ``end`` is the cell array's length, which is its largest index so far: after
    ``TestVideoFile{2}``, ``{end+1}`` is clip 3 (not 2, the count of lines so far + 1), and ``{1}`` then
    fills the first slot."""
    path = tmp_path / "UCSDped2.m"
    path.write_text(
        "TestVideoFile{2}.gt_frame = [5:6];\nTestVideoFile{end+1}.gt_frame = [7:8];\n"
        "TestVideoFile{1}.gt_frame = [1:2];\n"
    )
    assert read_ucsd_frame_gt(path) == [[(0, 1)], [(4, 5)], [(6, 7)]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "TestVideoFile{1}.gt_frame = [1:2];\nTestVideoFile{1}.gt_frame = [3:4];\n",
            ", line 2: clip 1 is given twice",
        ),
        (
            "TestVideoFile{1}.gt_frame = [1:2];\nTestVideoFile{3}.gt_frame = [3:4];\n",
            r": clips \[1, 3\] are not numbered 1 \.\. 2",
        ),
        ("TestVideoFile = {};\n% TestVideoFile{end+1}.gt_frame = [1:2];\n", ": no gt_frame line found"),
        (
            "TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = 3:5;\n",
            r", line 2: 'TestVideoFile\{end\+1\}\.gt_frame = 3:5;' does not match lines "
            r"'TestVideoFile\{end\+1\}\.gt_frame = \[start:end\];' \(1-based, inclusive\)\.$",
        ),
    ],
)
def test_matlab_clip_numbers_must_run_from_one(tmp_path, text, message):
    """A clip given twice, a gap in the clip numbers, a file with no (uncommented) gt_frame line, and a
    gt_frame line without the brackets of a MATLAB array."""
    path = tmp_path / "UCSDped2.m"
    path.write_text(text)
    with pytest.raises(GroundTruthError, match=rf"UCSDped2\.m{message}"):
        read_ucsd_frame_gt(path)


def test_unpadded_clip_folders_are_numbered(tree):
    """``Test1`` and ``Test2`` (no zero padding) are clips 1 and 2 of the .m file."""
    test = tree.root / "UCSDped2" / "Test"
    for n in (1, 2):
        (test / f"Test{n:03d}").rename(test / f"Test{n}")
        (test / f"Test{n:03d}_gt").rename(test / f"Test{n}_gt")
    videos = UCSDPed2(tree.root).videos()
    assert [v.name for v in videos] == ["Test1", "Test2"]
    np.testing.assert_array_equal(videos[1].frame_labels, [1, 1, 0, 0, 1, 1])  # [1:2, 5:6]


def test_unknown_frame_label_source_is_refused(tree):
    """A misspelt label source fails at construction instead of silently giving the pixel-mask labels."""
    with pytest.raises(ValueError, match=r"frame_labels must be 'matlab' or 'pixel', got 'mask'"):
        UCSDPed2(tree.root, frame_labels="mask")


def test_root_may_hold_the_archive_folder(tree):
    """The folder holding ``UCSD_Anomaly_Dataset.v1p2/UCSDped2`` is accepted as the root."""
    bench = UCSDPed2(tree.root.parent)
    assert bench.test_dir == tree.root / "UCSDped2" / "Test"
    assert [v.name for v in bench.videos()] == ["Test001", "Test002"]


def test_a_single_other_matlab_file_is_used(tree):
    """A renamed frame GT file (``Ped2_gt.m``) is read when it is the only visible ``.m`` (the tree's
    ``._UCSDped2.m`` AppleDouble file does not count); with two candidates none is guessed."""
    test = tree.root / "UCSDped2" / "Test"
    tree.files["matlab"].rename(test / "Ped2_gt.m")
    first = UCSDPed2(tree.root).videos()[0]
    np.testing.assert_array_equal(first.frame_labels, [0, 0, 1, 1, 1, 0, 0, 0])
    (test / "old.m").write_text("TestVideoFile{end+1}.gt_frame = [1:8];\n")
    with pytest.raises(GroundTruthError, match=r"UCSDped2\.m: ground-truth file not found"):
        UCSDPed2(tree.root).videos()


def test_masks_of_another_size_than_the_frames_are_logged(tree, caplog):
    """Frames are 32x48 (H x W): 16x24 masks are logged with both sizes as (H, W); same-size masks are not."""
    from PIL import Image

    for path in tree.files["Test002:gt"].glob("[0-9]*.bmp"):
        Image.fromarray(np.zeros((16, 24), np.uint8)).save(path)
    with caplog.at_level(logging.WARNING):
        UCSDPed2(tree.root).videos()
    assert (
        "Test002_gt: masks are (16, 24) but the frames are (32, 48); pixel metrics will resize."
        in caplog.text
    )
    assert "Test001_gt" not in caplog.text


@pytest.mark.parametrize(("count", "tail"), [(10, ""), (11, " ...")])
def test_stray_images_are_listed_up_to_ten(tree, count, tail):
    """Ten stray images are all named; from eleven on, the first ten (sorted) and '...'."""
    from PIL import Image

    clip = tree.root / "UCSDped2" / "Test" / "Test001"
    for k in range(count):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(clip / f"extra{k:02d}.png")
    with pytest.raises(GroundTruthError) as error:
        UCSDPed2(tree.root).videos()
    listed = ", ".join(f"extra{k:02d}.png" for k in range(10))
    assert f"not .tif frames: {listed}{tail}. Evaluation" in str(error.value)


def test_a_one_frame_clip_is_read(tree):
    """A clip of a single .tif frame (and mask) loads: its frame size is read from that frame. Test002 cut
    to its first frame, whose mask is anomalous, with the single-frame MATLAB vector ``[1]``."""
    test = tree.root / "UCSDped2" / "Test"
    for n in range(2, 7):
        (test / "Test002" / f"{n:03d}.tif").unlink()
        (test / "Test002_gt" / f"{n:03d}.bmp").unlink()
    tree.files["matlab"].write_text(
        "TestVideoFile{end+1}.gt_frame = [3:5];\nTestVideoFile{end+1}.gt_frame = [1];\n"
    )
    second = UCSDPed2(tree.root).videos()[1]
    assert second.num_frames == 1
    np.testing.assert_array_equal(second.frame_labels, [1])
    np.testing.assert_array_equal(second.pixel_masks(np.array([0])), tree.videos["Test002"].masks[:1])
