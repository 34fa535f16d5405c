"""ShanghaiTech loader on a tiny tree in the common layout (tests/eval/trees.py)."""

import logging
import re
import shutil

import numpy as np
import pytest
from eval.trees import write_shanghaitech_tree

from lavida.eval.benchmark import GroundTruthError, plan_clips
from lavida.eval.benchmarks.shanghaitech import ShanghaiTech, any_pixel


@pytest.fixture
def tree(tmp_path):
    return write_shanghaitech_tree(tmp_path / "shanghaitech")


def test_videos_frames_labels_and_pixel_masks(tree):
    videos = ShanghaiTech(tree.root).videos()
    assert [v.name for v in videos] == ["01_0014", "02_0161"]
    anomalous, normal = videos
    assert anomalous.num_frames == 10 and normal.num_frames == 8
    np.testing.assert_array_equal(anomalous.frame_labels, [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    assert not normal.is_anomalous
    masks = anomalous.pixel_masks(np.array([2, 4]))
    assert masks.shape == (2, 32, 48) and masks.dtype == bool
    assert not masks[0].any() and masks[1].sum() == 8 * 10
    assert anomalous.path.name == "01_0014" and anomalous.meta["scene"] == 1
    for v in videos:
        np.testing.assert_array_equal(v.pixel_masks(np.arange(v.num_frames)), tree.videos[v.name].masks)


def test_root_may_be_the_testing_folder(tree):
    assert len(ShanghaiTech(tree.root / "testing").videos()) == 2


def test_pixel_mask_in_hwt_order_is_refused(tree):
    path = tree.files["01_0014:pixel_mask"]
    np.save(path, np.moveaxis(np.load(path), 0, -1))  # (H, W, F)
    with pytest.raises(
        GroundTruthError, match=r"01_0014\.npy: shape \(32, 48, 10\), expected \(10, H, W\).*\(H, W, F\)"
    ):
        ShanghaiTech(tree.root).videos()


def test_masks_that_disagree_with_the_frame_count_are_refused(tree):
    np.save(tree.files["02_0161:pixel_mask"], np.zeros((7, 32, 48), np.uint8))
    with pytest.raises(
        GroundTruthError, match=r"test_pixel_mask/02_0161\.npy: shape \(7, 32, 48\), expected \(8, H, W\)"
    ):
        ShanghaiTech(tree.root).videos()
    write_shanghaitech_tree(tree.root)  # repair
    np.save(tree.files["02_0161:frame_mask"], np.zeros(9, np.uint8))
    with pytest.raises(
        GroundTruthError, match=r"test_frame_mask/02_0161\.npy: shape \(9,\), expected \(8,\)"
    ):
        ShanghaiTech(tree.root).videos()


def test_missing_ground_truth_file_is_named(tree):
    tree.files["01_0014:frame_mask"].unlink()
    with pytest.raises(GroundTruthError, match=r"test_frame_mask/01_0014\.npy: ground-truth file not found"):
        ShanghaiTech(tree.root).videos()


def test_disagreement_with_the_pixel_masks_is_logged(tree, caplog):
    labels = np.load(tree.files["01_0014:frame_mask"])
    labels[7] = 1
    np.save(tree.files["01_0014:frame_mask"], labels)
    with caplog.at_level(logging.WARNING):
        videos = ShanghaiTech(tree.root).videos()
    assert "01_0014: test_frame_mask and any(test_pixel_mask) disagree on 1 of 10 frames" in caplog.text
    assert videos[0].frame_labels[7] == 1  # the frame mask is the default source
    assert ShanghaiTech(tree.root, frame_labels="pixel_mask").videos()[0].frame_labels[7] == 0


def test_intervals_and_clip_plan(tree):
    bench = ShanghaiTech(tree.root)
    assert bench.protocol("standard").interval == bench.protocol("lavida_official").interval == 2
    video = bench.videos()[0]  # 10 frames
    np.testing.assert_array_equal(plan_clips(video.num_frames, interval=2).clips, [[0, 2, 4, 6, 8, 8, 8, 8]])
    assert plan_clips(video.num_frames, interval=2, drop_tail=True).num_clips == 0  # window = 16 frames
    assert len(bench.categories) == 18
    assert not bench.has_pixel_gt and ShanghaiTech(tree.root, pixel_metrics=True).has_pixel_gt


@pytest.mark.parametrize("kind", ["frame_mask", "pixel_mask"])
@pytest.mark.parametrize("damage", ["empty", "npz", "pickle"])
def test_unreadable_npy_ground_truth_names_the_file(tree, kind, damage):
    """An empty file (EOFError in numpy) or an .npz saved under the .npy name (numpy returns an NpzFile,
    which has no .ndim) must be a GroundTruthError naming the file, not a bare numpy error; a pickled
    object array is refused without being unpickled."""
    path = tree.files[f"01_0014:{kind}"]
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "npz":
        array = np.load(path)
        with open(path, "wb") as handle:  # a file handle: np.savez would append .npz to a path
            np.savez(handle, array)
    else:
        np.save(path, np.array([0, None], dtype=object), allow_pickle=True)
    with pytest.raises(GroundTruthError, match=rf"test_{kind}/01_0014\.npy: .*expected .*array"):
        ShanghaiTech(tree.root).videos()


def test_unknown_frame_label_source_is_refused(tree):
    """A misspelt label source fails at construction instead of silently using the frame masks."""
    with pytest.raises(ValueError, match=r"frame_labels must be 'frame_mask' or 'pixel_mask', got 'pixel'"):
        ShanghaiTech(tree.root, frame_labels="pixel")


def test_hidden_entries_beside_the_videos_are_ignored(tree):
    """macOS litter: a ``.DS_Store`` file and a ``._01_0014`` folder among the frame folders, and
    ``._01_0014.npy`` among the masks, are not test videos."""
    testing = tree.root / "testing"
    (testing / "frames" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (testing / "frames" / "._01_0014").mkdir()
    for kind in ("test_frame_mask", "test_pixel_mask"):
        (testing / kind / "._01_0014.npy").write_bytes(b"\x00\x05\x16\x07")
    assert [v.name for v in ShanghaiTech(tree.root).videos()] == ["01_0014", "02_0161"]


def test_two_dimensional_masks_are_refused(tree):
    """A pixel mask of one frame per row (F, W) and a frame mask of shape (F, 1) have the right first
    axis but not the documented rank."""
    np.save(tree.files["02_0161:pixel_mask"], np.zeros((8, 48), np.uint8))
    with pytest.raises(GroundTruthError, match=r"02_0161\.npy: shape \(8, 48\), expected \(8, H, W\)"):
        ShanghaiTech(tree.root).videos()
    write_shanghaitech_tree(tree.root)  # repair
    np.save(tree.files["02_0161:frame_mask"], np.zeros((8, 1), np.uint8))
    with pytest.raises(GroundTruthError, match=r"02_0161\.npy: shape \(8, 1\), expected \(8,\)"):
        ShanghaiTech(tree.root).videos()


def test_hwf_hint_only_where_the_last_axis_is_the_frame_count(tree):
    """(7, 32, 48) for 8 frames is simply wrong: no "(H, W, F)" hint."""
    np.save(tree.files["02_0161:pixel_mask"], np.zeros((7, 32, 48), np.uint8))
    with pytest.raises(GroundTruthError) as error:
        ShanghaiTech(tree.root).videos()
    assert str(error.value).endswith("(8 frames).")


def test_frame_mask_values_other_than_zero_and_one_are_refused(tree):
    """A frame mask holding 0..11 (say, object counts) is not 0/1; only the first ten values are named.
    01_0014 gets two more frames (12) so that there are more than ten distinct values."""
    folder = tree.root / "testing" / "frames" / "01_0014"
    for t in (10, 11):
        shutil.copy(folder / "000.jpg", folder / f"{t:03d}.jpg")
    np.save(tree.files["01_0014:pixel_mask"], np.zeros((12, 32, 48), np.uint8))
    np.save(tree.files["01_0014:frame_mask"], np.arange(12))
    with pytest.raises(
        GroundTruthError,
        match=r"01_0014\.npy: values \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\], expected only 0 and 1",
    ):
        ShanghaiTech(tree.root).videos()


def test_masks_of_another_size_than_the_frames_are_logged(tree, caplog):
    """Frames are 32x48 (H x W); masks of 16x24 are kept but logged (pixel metrics resize them)."""
    np.save(tree.files["02_0161:pixel_mask"], np.zeros((8, 16, 24), np.uint8))
    with caplog.at_level(logging.WARNING):
        ShanghaiTech(tree.root).videos()
    assert "02_0161.npy: masks are 16x24 but the frames are 32x48; pixel metrics will resize." in caplog.text
    assert "01_0014.npy: masks are" not in caplog.text  # same size as its frames


def test_without_the_check_the_pixel_masks_are_not_compared(tree, caplog):
    """``check_pixel_labels=False`` leaves the frame-mask labels as they are and logs no disagreement; the
    release's source (``pixel_mask``) still reads the pixel masks for its labels."""
    labels = np.load(tree.files["01_0014:frame_mask"])
    labels[7] = 1
    np.save(tree.files["01_0014:frame_mask"], labels)
    with caplog.at_level(logging.WARNING):
        by_frame = ShanghaiTech(tree.root, check_pixel_labels=False).videos()[0]
        assert "disagree" not in caplog.text
        by_pixel = ShanghaiTech(tree.root, frame_labels="pixel_mask", check_pixel_labels=False).videos()[0]
    np.testing.assert_array_equal(by_frame.frame_labels, [0, 0, 0, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(by_pixel.frame_labels, [0, 0, 0, 1, 1, 1, 1, 0, 0, 0])
    assert by_pixel.frame_labels.dtype == np.uint8


def test_scene_is_the_leading_number_of_the_name(tree):
    """``01_0014`` → scene 1; a folder whose name does not start with a number has no scene."""
    testing = tree.root / "testing"
    (testing / "frames" / "02_0161").rename(testing / "frames" / "extra_12")
    for kind in ("test_frame_mask", "test_pixel_mask"):
        (testing / kind / "02_0161.npy").rename(testing / kind / "extra_12.npy")
    videos = {v.name: v for v in ShanghaiTech(tree.root).videos()}
    assert videos["01_0014"].meta["scene"] == 1 and videos["extra_12"].meta["scene"] is None


def test_any_pixel_covers_every_chunk_of_frames():
    """70 frames of 2x3 pixels (more frames than one 64-frame chunk, and than pixels per side):
    anomalous pixels on frames 0, 63, 64 and 69 only."""
    masks = np.zeros((70, 2, 3), np.uint8)
    masks[[0, 63, 64, 69], 1, 2] = 1
    np.testing.assert_array_equal(np.flatnonzero(any_pixel(masks)), [0, 63, 64, 69])


def test_videos_without_frames_are_listed_up_to_ten(tree):
    """Eleven masks without a frame folder: the count says 11, the list names the first ten (sorted)."""
    for k in range(11):
        np.save(tree.root / "testing" / "test_pixel_mask" / f"09_{k:04d}.npy", np.zeros((1, 2, 2), np.uint8))
    listed = ", ".join(f"09_{k:04d}" for k in range(10))
    with pytest.raises(FileNotFoundError) as error:
        ShanghaiTech(tree.root).videos()
    assert "11 annotated test videos have no frame folder in " in str(error.value)
    assert str(error.value).endswith(f": {listed}. Extract all test frames.")


def test_a_root_without_the_frames_folder_names_it_and_the_expected_layout(tree):
    frames = tree.root / "testing" / "frames"
    shutil.rmtree(frames)
    with pytest.raises(FileNotFoundError) as error:
        ShanghaiTech(tree.root).videos()
    assert str(error.value).startswith(f"ShanghaiTech: {frames} not found. Expected <root>/testing/frames/")
    assert "<root>/testing/test_pixel_mask/<video>.npy." in str(error.value)


def test_a_frames_folder_without_videos_is_refused_naming_it(tree):
    """No masks either (a copy whose extraction failed): nothing names a missing video, so the empty folder
    itself must be reported rather than an evaluation over no video."""
    testing = tree.root / "testing"
    for folder in ("frames", "test_frame_mask", "test_pixel_mask"):
        shutil.rmtree(testing / folder)
    (testing / "frames").mkdir()
    with pytest.raises(
        FileNotFoundError,
        match=rf"^ShanghaiTech: {re.escape(str(testing / 'frames'))} holds no video folders\.$",
    ):
        ShanghaiTech(tree.root).videos()


def test_a_video_folder_without_frame_images_is_refused_naming_it(tree):
    folder = tree.root / "testing" / "frames" / "02_0161"
    for image in folder.iterdir():
        image.unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"^ShanghaiTech: {re.escape(str(folder))} holds no frame images\.$"
    ):
        ShanghaiTech(tree.root).videos()
