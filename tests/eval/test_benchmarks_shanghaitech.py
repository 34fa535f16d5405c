"""ShanghaiTech loader on a tiny tree in the common layout (tests/eval/trees.py)."""

import logging

import numpy as np
import pytest
from eval.trees import write_shanghaitech_tree

from lavida.eval.benchmark import GroundTruthError, plan_clips
from lavida.eval.benchmarks.shanghaitech import ShanghaiTech


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
