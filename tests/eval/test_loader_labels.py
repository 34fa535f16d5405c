"""The test-benchmark loaders against the datasets' documented formats (research/vad_eval.md §1).

Each loader gets a hand-worked label array checked element by element (interval ends at the first and
the last frame, ends past the video), and each defect found in them has a test that failed before
its fix. Trees come from ``tests/eval/trees.py``.
"""

import logging
import shutil

import numpy as np
import pytest
from eval.trees import (
    write_shanghaitech_tree,
    write_ubnormal_tree,
    write_ucf_crime_tree,
    write_ucsd_ped2_tree,
)
from PIL import Image

from lavida.eval.benchmark import GroundTruthError, labels_from_intervals
from lavida.eval.benchmarks.shanghaitech import ShanghaiTech
from lavida.eval.benchmarks.ubnormal import UBnormal
from lavida.eval.benchmarks.ucf_crime import UCFCrime, read_ucf_annotations
from lavida.eval.benchmarks.ucsd_ped2 import UCSDPed2, read_ucsd_frame_gt

# -- hand-worked label arrays ----------------------------------------------------------------------------


def test_ubnormal_hand_worked_labels_and_masks(tmp_path, caplog):
    """16 maps; tracks ``3,0,0`` / ``5,14,30`` / ``3,7,8``: frame 0 (first frame), 7..8, and 14..15 (30 is
    past the last map, clipped with a warning). Object 3 fills rows 2..5 x cols 2..7 of every map, object 5
    rows 24..29 x cols 40..45."""
    tree = write_ubnormal_tree(tmp_path / "UBnormal")
    name = "abnormal_scene_2_scenario_4"
    tree.files[f"{name}:tracks"].write_text("3,0,0\n5,14,30\n3,7,8\n")
    with caplog.at_level(logging.WARNING):
        video = {v.name: v for v in UBnormal(tree.root, split_lists=tree.files["split_lists"]).videos()}[name]
    expected = [1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    assert video.frame_labels.dtype == np.uint8 and video.frame_labels.tolist() == expected
    assert "line 2: interval [14, 30] clipped to the last frame 15" in caplog.text
    masks = video.pixel_masks(np.arange(16))
    assert masks.sum(axis=(1, 2)).tolist() == [24, 0, 0, 0, 0, 0, 0, 24, 24, 0, 0, 0, 0, 0, 36, 36]
    assert masks[0, 2:6, 2:8].all() and masks[14, 24:30, 40:46].all()
    assert not masks[14, 2:6, 2:8].any()  # object 3 is in the map but not anomalous on frame 14


def test_shanghaitech_hand_worked_labels(tmp_path, caplog):
    tree = write_shanghaitech_tree(tmp_path / "sht")
    labels = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0, 1], np.uint8)  # first and last frame anomalous
    np.save(tree.files["01_0014:frame_mask"], labels.astype(np.int64))  # dtype as some copies store it
    pixel = np.zeros((10, 32, 48), np.uint8)
    pixel[labels.astype(bool), 5:9, 7:11] = 1
    np.save(tree.files["01_0014:pixel_mask"], pixel)
    with caplog.at_level(logging.WARNING):
        video = ShanghaiTech(tree.root).videos()[0]
    assert video.frame_labels.dtype == np.uint8
    assert video.frame_labels.tolist() == [1, 0, 0, 1, 1, 0, 0, 0, 0, 1]
    assert "disagree" not in caplog.text
    assert video.pixel_masks(np.array([9])).sum() == 16


def test_ucf_crime_hand_worked_labels(tmp_path, caplog):
    """Abuse028 has 16 decoded frames; ``0 2 14 20``: the first three frames and 14..15 (20 is past the end)."""
    tree = write_ucf_crime_tree(tmp_path / "UCF")
    path = tree.files["annotations"]
    path.write_text(path.read_text().replace("Abuse  5  9  -1  -1", "Abuse  0  2  14  20"))
    with caplog.at_level(logging.WARNING):
        inclusive = {v.name: v for v in UCFCrime(tree.root).videos()}["Abuse028_x264"]
    assert inclusive.frame_labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert "line 1: interval [14, 20] runs past the last frame 15" in caplog.text
    exclusive = {v.name: v for v in UCFCrime(tree.root, end_inclusive=False).videos()}["Abuse028_x264"]
    assert exclusive.frame_labels.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]


def test_ucsd_ped2_hand_worked_labels(tmp_path, caplog):
    """Test001 has 8 frames; ``[1:1, 7:9]`` (1-based, inclusive) → 0-based frames 0 and 6..7 (9 clipped)."""
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    tree.files["matlab"].write_text(
        "TestVideoFile{end+1}.gt_frame = [1:1, 7:9];\nTestVideoFile{end+1}.gt_frame = [1:2, 5:6];\n"
    )
    with caplog.at_level(logging.WARNING):
        first = UCSDPed2(tree.root).videos()[0]
    assert first.frame_labels.tolist() == [1, 0, 0, 0, 0, 0, 1, 1]
    assert "clip 1: a range runs past the clip's 8 frames" in caplog.text
    assert "clip 2: a range runs past" not in caplog.text  # [1:2, 5:6] fits Test002's 6 frames
    assert first.meta == {"gt_dir": str(tree.files["Test001:gt"])}


def test_ucsd_ped2_clips_come_in_number_order_without_zero_padding(tmp_path):
    """Folders ``Test1`` .. ``Test10`` are clips 1..10 in that order, not in name order (Test10 before Test2)."""
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    test = tree.files["matlab"].parent
    for number in (1, 2):
        for suffix in ("", "_gt"):
            (test / f"Test{number:03d}{suffix}").rename(test / f"Test{number}{suffix}")
    for number in range(3, 11):
        for suffix in ("", "_gt"):
            shutil.copytree(test / f"Test2{suffix}", test / f"Test{number}{suffix}")
    tree.files["matlab"].write_text("TestVideoFile{end+1}.gt_frame = [1:2];\n" * 10)
    names = [video.name for video in UCSDPed2(tree.root).videos()]
    assert names == [f"Test{number}" for number in range(1, 11)]


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64, np.float32])
def test_shanghaitech_masks_of_any_numeric_dtype(tmp_path, dtype):
    """Copies of the release store the masks as uint8, int64, bool or float 0/1; all read alike."""
    tree = write_shanghaitech_tree(tmp_path / "sht")
    for kind in ("frame_mask", "pixel_mask"):
        path = tree.files[f"01_0014:{kind}"]
        np.save(path, np.load(path).astype(dtype))
    video = ShanghaiTech(tree.root).videos()[0]
    assert video.frame_labels.dtype == np.uint8
    assert video.frame_labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]
    np.testing.assert_array_equal(video.pixel_masks(np.arange(10)), tree.videos["01_0014"].masks)


def test_windows_line_endings_and_byte_order_mark(tmp_path):
    """The UCF annotation file and Ped2's .m as saved by Windows tools: CRLF, a BOM, trailing blanks."""
    ucf = tmp_path / "ucf.txt"
    ucf.write_bytes(
        b"\xef\xbb\xbfAbuse028_x264.mp4  Abuse  165  240  -1 -1  \r\n"
        b"Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1\r\n\r\n"
    )
    abuse, normal = read_ucf_annotations(ucf)
    assert (abuse.name, abuse.intervals, normal.intervals) == ("Abuse028_x264", ((165, 240),), ())
    matlab = tmp_path / "UCSDped2.m"
    matlab.write_bytes(b"\xef\xbb\xbfTestVideoFile = {};\r\nTestVideoFile{end+1}.gt_frame = [61:180];\r\n")
    assert read_ucsd_frame_gt(matlab) == [[(60, 179)]]


# The frame ground truth of the 12 Ped2 test clips as a third-party copy of UCSDped2.m gives it, and clip
# frame counts that sum to vad_eval.md §1.5's 2,010 (12 clips of 120 to 180 frames). Neither was checked
# against the UCSD_Anomaly_Dataset.v1p2 archive (not available offline): this is a parse of a realistic
# file, not a record of the dataset.
PED2_M = """TestVideoFile = {};
% ground truth
TestVideoFile{end+1}.gt_frame = [61:180];
TestVideoFile{end+1}.gt_frame = [95:180];
TestVideoFile{end+1}.gt_frame = [1:146];
TestVideoFile{end+1}.gt_frame = [31:180];
TestVideoFile{end+1}.gt_frame = [1:129];
TestVideoFile{end+1}.gt_frame = [1:162];
TestVideoFile{end+1}.gt_frame = [46:180];
TestVideoFile{end+1}.gt_frame = [1:180];
TestVideoFile{end+1}.gt_frame = [1:120];
TestVideoFile{end+1}.gt_frame = [1:150];
TestVideoFile{end+1}.gt_frame = [1:180];
TestVideoFile{end+1}.gt_frame = [88:180];
"""
PED2_FRAMES = [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]


def test_ucsd_ped2_official_ranges_give_the_official_frame_totals(tmp_path):
    path = tmp_path / "UCSDped2.m"
    path.write_text(PED2_M)
    clips = read_ucsd_frame_gt(path)
    assert len(clips) == 12 and sum(PED2_FRAMES) == 2010
    labels = [labels_from_intervals(n, c, where="x") for n, c in zip(PED2_FRAMES, clips, strict=True)]
    assert all(end < n for c, n in zip(clips, PED2_FRAMES, strict=True) for _, end in c)  # none clipped
    assert [int(x.sum()) for x in labels] == [120, 86, 146, 150, 129, 162, 135, 180, 120, 150, 180, 93]
    assert sum(int(x.sum()) for x in labels) == 1651
    assert labels[0][59] == 0 and labels[0][60] == 1 and labels[0][179] == 1  # [61:180] → 60..179


# -- UCSD Ped2: the clip list and the two label sources under frame_labels="pixel" ------------------------


def test_ped2_pixel_labels_still_refuse_a_partial_copy(tmp_path):
    """With the release's frame labels (``frame_labels="pixel"``) UCSDped2.m was never read, so a copy
    missing a clip folder loaded as the whole test set."""
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    shutil.rmtree(tree.root / "UCSDped2" / "Test" / "Test002")
    shutil.rmtree(tree.files["Test002:gt"])
    with pytest.raises(
        GroundTruthError, match=r"UCSDped2\.m: 2 gt_frame lines for 1 test clips.*missing: Test002"
    ):
        UCSDPed2(tree.root, frame_labels="pixel").videos()


def test_ped2_pixel_labels_are_compared_with_the_matlab_ranges(tmp_path, caplog):
    """The docs say the two sources are compared at load; under ``frame_labels="pixel"`` they were not."""
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    tree.files["matlab"].write_text(
        "TestVideoFile{end+1}.gt_frame = [3:6];\nTestVideoFile{end+1}.gt_frame = [1:2, 5:6];\n"
    )
    with caplog.at_level(logging.WARNING):
        first = UCSDPed2(tree.root, frame_labels="pixel").videos()[0]
    assert first.frame_labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 0]  # any(mask): frames 2..4
    assert "Test001: any(pixel mask) and UCSDped2.m disagree on 1 of 8 frames" in caplog.text


def test_ped2_pixel_labels_without_the_matlab_file_load_with_a_warning(tmp_path, caplog):
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    tree.files["matlab"].unlink()
    with caplog.at_level(logging.WARNING):
        videos = UCSDPed2(tree.root, frame_labels="pixel").videos()
    assert [v.name for v in videos] == ["Test001", "Test002"]
    assert "UCSDped2.m not found" in caplog.text and "official test set has 12" in caplog.text


def test_ped2_missing_clip_folder_is_named(tmp_path):
    """A copy without Test001 (the .m still lists both clips) was refused with counts only."""
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    shutil.rmtree(tree.root / "UCSDped2" / "Test" / "Test001")
    with pytest.raises(GroundTruthError, match=r"missing: Test001\b"):
        UCSDPed2(tree.root).videos()


def test_ped2_clip_numbers_with_a_gap_are_refused(tmp_path):
    """The n-th gt_frame line belongs to TestNNN = n. Folders Test001 and Test003 with a two-line .m gave
    Test003 the labels of line 2 (Test002's), silently."""
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    test = tree.root / "UCSDped2" / "Test"
    (test / "Test002").rename(test / "Test003")
    (test / "Test002_gt").rename(test / "Test003_gt")
    with pytest.raises(GroundTruthError, match=r"missing: Test002.*Test003 has no gt_frame line"):
        UCSDPed2(tree.root).videos()


# -- ShanghaiTech: the release's layout (no test_frame_mask) -------------------------------------------------


def test_shanghaitech_partial_copy_is_refused_without_frame_masks(tmp_path):
    """The release reads frames + test_pixel_mask only. Without test_frame_mask/ (and with
    ``frame_labels="pixel_mask"``) a video whose frame folder is missing was not noticed."""
    tree = write_shanghaitech_tree(tmp_path / "sht")
    shutil.rmtree(tree.root / "testing" / "test_frame_mask")
    shutil.rmtree(tree.root / "testing" / "frames" / "02_0161")
    with pytest.raises(FileNotFoundError, match=r"1 annotated test videos have no frame folder.*02_0161"):
        ShanghaiTech(tree.root, frame_labels="pixel_mask").videos()


def test_shanghaitech_pixel_mask_labels_are_compared_with_the_frame_mask(tmp_path, caplog):
    tree = write_shanghaitech_tree(tmp_path / "sht")
    labels = np.load(tree.files["01_0014:frame_mask"])
    labels[0] = 1
    np.save(tree.files["01_0014:frame_mask"], labels)
    with caplog.at_level(logging.WARNING):
        video = ShanghaiTech(tree.root, frame_labels="pixel_mask").videos()[0]
    assert video.frame_labels[0] == 0
    assert "01_0014: any(test_pixel_mask) and test_frame_mask disagree on 1 of 10 frames" in caplog.text


def test_shanghaitech_size_differs_from_the_official_split(tmp_path, caplog):
    tree = write_shanghaitech_tree(tmp_path / "sht")
    with caplog.at_level(logging.WARNING):
        ShanghaiTech(tree.root).videos()
    assert "2 test videos; the official test set has 107" in caplog.text


# -- UCF-Crime: the frame-count variant of the annotation file, and the split size -------------------------


def test_ucf_lines_with_a_frame_count_are_read(tmp_path):
    """vad_eval.md §1.3: an RTFM-style variant puts the path and the frame count before the class
    (``Arson/Arson022_x264.mp4 8640 Arson 3500 4000 -1 -1``); it was refused as malformed."""
    path = tmp_path / "ann.txt"
    path.write_text(
        "Arson/Arson022_x264.mp4 8640 Arson 3500 4000 -1 -1\nNormal_Videos_003_x264 1200 Normal -1 -1 -1 -1\n"
    )
    arson, normal = read_ucf_annotations(path)
    assert (arson.name, arson.label, arson.intervals, arson.frames) == (
        "Arson022_x264",
        "Arson",
        ((3500, 4000),),
        8640,
    )
    assert (normal.label, normal.intervals, normal.frames) == ("Normal", (), 1200)


def test_ucf_frame_count_of_the_line_is_compared_with_the_decoder(tmp_path, caplog):
    tree = write_ucf_crime_tree(tmp_path / "UCF")
    path = tree.files["annotations"]
    path.write_text(
        "Abuse/Abuse028_x264.mp4 16 Abuse 5 9 -1 -1\n"
        "Arson/Arson011_x264.mp4 42 Arson 2 4 20 25\n"
        "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4 12 Normal -1 -1 -1 -1\n"
    )
    with caplog.at_level(logging.WARNING):
        videos = {v.name: v for v in UCFCrime(tree.root).videos()}
    for name, v in videos.items():
        np.testing.assert_array_equal(v.frame_labels, tree.videos[name].labels)
    assert "line 2: the line gives 42 frames but the decoder reads 40" in caplog.text
    assert "Abuse028" not in caplog.text and "Normal_Videos_003" not in caplog.text
    assert videos["Arson011_x264"].meta["annotated_frames"] == 42


def test_ucf_annotation_file_smaller_than_the_official_split_is_logged(tmp_path, caplog):
    tree = write_ucf_crime_tree(tmp_path / "UCF")
    with caplog.at_level(logging.WARNING):
        UCFCrime(tree.root).videos()
    assert (
        "lists 3 test videos (2 anomalous, 1 normal); the official test set has 290 (140 + 150)"
        in caplog.text
    )


def test_xd_annotation_file_smaller_than_the_official_split_is_logged(tmp_path, caplog):
    from eval.trees import write_xd_violence_tree

    from lavida.eval.benchmarks.xd_violence import XDViolence

    tree = write_xd_violence_tree(tmp_path / "XD")
    with caplog.at_level(logging.WARNING):
        XDViolence(tree.root).videos()
    assert (
        "lists 2 violent test videos; the official test set has 800 (500 violent + 300 normal)" in caplog.text
    )


# -- UBnormal: id maps of different sizes ------------------------------------------------------------------


def test_ubnormal_id_maps_of_different_sizes_name_the_folder(tmp_path):
    """np.stack raised a bare ValueError ("all input arrays must have the same shape") naming nothing."""
    tree = write_ubnormal_tree(tmp_path / "UBnormal")
    name = "abnormal_scene_2_scenario_4"
    odd = tree.files[f"{name}:annotations"] / f"{name}_0005_gt.png"
    Image.fromarray(np.full((16, 24), 3, np.uint8)).save(odd)
    video = {v.name: v for v in UBnormal(tree.root, split_lists=tree.files["split_lists"]).videos()}[name]
    with pytest.raises(GroundTruthError, match=rf"{name}_0005_gt\.png is 16x24 .* 32x48"):
        video.pixel_masks(np.arange(16))
