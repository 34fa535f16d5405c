"""UBnormal loader on a tiny tree in the official layout (tests/eval/trees.py)."""

import numpy as np
import pytest
from eval.trees import write_ubnormal_tree

from lavida.eval.benchmark import GroundTruthError, plan_clips
from lavida.eval.benchmarks.ubnormal import UBnormal


@pytest.fixture
def tree(tmp_path):
    return write_ubnormal_tree(tmp_path / "UBnormal")


def load(tree, **kwargs):
    return UBnormal(tree.root, split_lists=tree.files["split_lists"], **kwargs)


def test_test_split_frames_labels_masks_and_meta(tree):
    bench = load(tree)
    videos = bench.videos()
    assert [v.name for v in videos] == [
        "abnormal_scene_1_scenario_1",
        "abnormal_scene_2_scenario_4",
        "normal_scene_3_scenario_7",
    ]
    by_name = {v.name: v for v in videos}
    first = by_name["abnormal_scene_1_scenario_1"]
    # 12 decoded frames but 10 id maps: the maps decide.
    assert first.num_frames == 10 and first.meta["frames_from"] == "id_maps"
    # Frame labels come from _tracks.txt (1,1,3), never from _new_tracks.txt (1,2,5), as the official
    # write_frame_level_ground_truth.py and the release's loader read them.
    np.testing.assert_array_equal(first.frame_labels, [0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert first.meta["tracks_file"].endswith("_annotations/abnormal_scene_1_scenario_1_tracks.txt")
    assert first.meta["anomalies"] == [[1, 1, 3]]
    assert first.meta["region_tracks_file"].endswith("_new_tracks.txt")
    assert first.meta["track_anomalies"] == [[1, 2, 5]]
    # Pixel GT: object 1 inside its _tracks.txt interval only; object 2 (a normal person) never.
    masks = first.pixel_masks(np.array([0, 3, 4, 7]))
    assert masks.shape == (4, 32, 48) and masks.dtype == bool
    assert not masks[0].any() and not masks[2].any() and not masks[3].any()
    assert masks[1].sum() == 6 * 8 and masks[1, 4:10, 6:14].all()

    second = by_name["abnormal_scene_2_scenario_4"]
    np.testing.assert_array_equal(
        np.flatnonzero(second.frame_labels), [4, 5, 6, 10, 11, 12]
    )  # "5.0,10,12.0" parsed
    normal = by_name["normal_scene_3_scenario_7"]
    assert normal.num_frames == 8 and normal.meta["frames_from"] == "decoder" and not normal.is_anomalous
    assert normal.pixel_masks(np.array([0, 7])).shape == (2, 32, 48)
    for v in videos:
        expected = tree.videos[v.name]
        np.testing.assert_array_equal(v.frame_labels, expected.labels)
        np.testing.assert_array_equal(v.pixel_masks(np.arange(v.num_frames)), expected.masks)
        assert v.meta["abnormal"] == expected.meta["abnormal"] and v.meta["scene"] == expected.meta["scene"]
        assert v.fps == pytest.approx(30.0)


def test_rbdc_tracks_are_computed_from_the_id_maps(tree):
    by_name = {v.name: v for v in load(tree).videos()}
    # Object 1 fills rows 4..9, columns 6..13 → inclusive box (x_min, y_min, x_max, y_max) = (6, 4, 13, 9);
    # the tracks follow _new_tracks.txt (frames 2..5), as create_tracks_for_tbdc_rbdc.py does.
    np.testing.assert_array_equal(
        by_name["abnormal_scene_1_scenario_1"].tracks, [[0, f, 6, 4, 13, 9] for f in range(2, 6)]
    )
    tracks = by_name["abnormal_scene_2_scenario_4"].tracks
    np.testing.assert_array_equal(tracks[:, :2], [[0, 4], [0, 5], [0, 6], [1, 10], [1, 11], [1, 12]])
    np.testing.assert_array_equal(tracks[-1, 2:], [40, 24, 45, 29])
    assert by_name["normal_scene_3_scenario_7"].tracks.shape == (0, 6)
    assert all(v.tracks is None for v in load(tree, with_tracks=False).videos())


def test_validation_split(tree):
    videos = load(tree, split="validation").videos()
    assert [v.name for v in videos] == ["abnormal_scene_2_scenario_2", "normal_scene_12_scenario_5"]
    np.testing.assert_array_equal(videos[0].frame_labels, [0, 1, 1, 0, 0, 0])
    assert not videos[1].pixel_masks(np.arange(6)).any()  # maps with a non-anomalous object only
    with pytest.raises(ValueError, match="split must be"):
        load(tree, split="train")


def test_official_protocol_keeps_abnormal_videos_only(tree):
    bench = load(tree)
    standard, official = bench.protocol("standard"), bench.protocol("lavida_official")
    assert standard.interval == official.interval == 4
    assert len(bench.select(standard)) == 3
    assert [v.name for v in bench.select(official)] == [
        "abnormal_scene_1_scenario_1",
        "abnormal_scene_2_scenario_4",
    ]
    assert official.pixel_size == (158, 238) and official.drop_tail


def test_plan_clips_over_a_loaded_video(tree):
    video = {v.name: v for v in load(tree).videos()}["abnormal_scene_2_scenario_4"]  # 16 frames
    plan = plan_clips(video.num_frames, interval=4)
    np.testing.assert_array_equal(plan.clips, [[0, 4, 8, 12, 12, 12, 12, 12]])
    assert plan.scored.size == 16
    assert plan_clips(video.num_frames, interval=4, drop_tail=True).num_clips == 0  # one window = 32 frames


def test_shipped_official_lists(tree):
    bench = UBnormal(tree.root)
    test = bench.video_names()
    assert sum(test.values()) == 158 and len(test) == 211
    validation = UBnormal(tree.root, split="validation").video_names()
    assert sum(validation.values()) == 38 and len(validation) == 64
    assert not set(test) & set(validation)
    # The tiny tree uses official test names: with skip_missing, the 3 present videos load.
    with pytest.raises(
        FileNotFoundError,
        match=r"208 listed videos are missing(.|\n)*\+benchmark\.options\.skip_missing=true",
    ):
        bench.videos()
    skipping = UBnormal(tree.root, skip_missing=True)
    assert len(skipping.videos()) == 3 and skipping.missing_videos == 208  # reported as left out


def test_malformed_tracks_line_names_file_and_line(tree):
    path = tree.files["abnormal_scene_2_scenario_4:tracks"]
    path.write_text("3,4,6\n5,10\n")
    with pytest.raises(GroundTruthError, match=r"_tracks\.txt, line 2: expected 3 fields"):
        load(tree).videos()
    path.write_text("3,6,4\n")
    with pytest.raises(GroundTruthError, match=r"line 1: .*start ≤ end"):
        load(tree).videos()


def test_missing_tracks_file_and_missing_map(tree):
    tree.files["abnormal_scene_2_scenario_4:tracks"].unlink()
    with pytest.raises(
        GroundTruthError, match=r"abnormal_scene_2_scenario_4_tracks\.txt: the anomaly tracks"
    ):
        load(tree).videos()
    tree.files["abnormal_scene_2_scenario_4:tracks"].write_text("3,4,6\n")
    (
        tree.files["abnormal_scene_2_scenario_4:annotations"] / "abnormal_scene_2_scenario_4_0007_gt.png"
    ).unlink()
    with pytest.raises(GroundTruthError, match=r"frames \[7\] have no"):
        load(tree).videos()
