"""UBnormal loader on a tiny tree in the official layout (tests/eval/trees.py)."""

import dataclasses
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
from eval.trees import write_ubnormal_tree
from PIL import Image

from lavida.eval.benchmark import GroundTruthError, TestVideo, plan_clips
from lavida.eval.benchmarks.ubnormal import UBnormal, is_abnormal_video, read_id_map


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


# -- pinned on hand-worked inputs (mutation-testing survivors) --------------------------------------------


def write_lists(folder, abnormal: list[str], normal: list[str], split: str = "test"):
    """Split lists naming ``abnormal`` and ``normal`` videos, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, names in (("abnormal", abnormal), ("normal", normal)):
        (folder / f"{kind}_{split}_video_names.txt").write_text("".join(f"{n}\n" for n in names))
    return folder


def test_colour_id_map_keeps_its_first_channel(tmp_path):
    """A colour map (the dataset has none) reads as its first channel, as the docstring says; the other
    channels hold different values so that any other choice shows."""
    ids = np.array([[0, 3], [5, 0]], np.uint8)
    rgb = np.stack([ids, ids + 10, ids + 20], axis=-1)  # channel 0 = ids, 1 = ids + 10, 2 = ids + 20
    Image.fromarray(rgb).save(tmp_path / "v_0000_gt.png")
    read = read_id_map(tmp_path / "v_0000_gt.png")
    assert read.shape == (2, 2)
    np.testing.assert_array_equal(read, [[0, 3], [5, 0]])


@pytest.mark.parametrize(("cpus", "workers"), [(64, 8), (2, 2), (None, 1)])
def test_default_workers_are_the_cpus_up_to_eight(tmp_path, monkeypatch, cpus, workers):
    """``workers`` defaults to the CPU count capped at 8, and to 1 where the count is unknown."""
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert UBnormal(tmp_path).workers == workers
    assert UBnormal(tmp_path, workers=3).workers == 3


def test_is_abnormal_video_without_the_key_is_normal():
    """A video whose meta does not say ``abnormal`` is not kept by the official (abnormal-only) filter."""
    plain = TestVideo(name="v", path=Path("v.mp4"), frame_labels=np.zeros(2, np.uint8))
    assert not is_abnormal_video(plain)
    assert is_abnormal_video(dataclasses.replace(plain, meta={"abnormal": True}))


def test_a_name_listed_twice_is_refused(tmp_path):
    """The same video in the abnormal and the normal list: the second listing is named."""
    lists = write_lists(tmp_path / "lists", ["abnormal_scene_1_scenario_1"], ["abnormal_scene_1_scenario_1"])
    with pytest.raises(
        GroundTruthError,
        match=r"normal_test_video_names\.txt, line 1: 'abnormal_scene_1_scenario_1' is listed twice",
    ):
        UBnormal(tmp_path, split_lists=lists).video_names()


@pytest.mark.parametrize("name", ["abnormal_scene", "abnormal_scene_one_scenario_1", "normal_1_scene_2"])
def test_a_name_without_a_scene_number_is_refused(tmp_path, name):
    """Two tokens only, a word in the scene token, or a number in another token: no scene number in the
    third ``_``-separated token (line 2 of the list: line 1 is a good name)."""
    lists = write_lists(tmp_path / "lists", ["abnormal_scene_1_scenario_1", name], [])
    with pytest.raises(GroundTruthError, match=rf"line 2: '{name}' is not a UBnormal video name"):
        UBnormal(tmp_path, split_lists=lists).video_names()


def test_a_name_ending_with_its_scene_number_is_read(tmp_path):
    """Three tokens are enough: the scene number is the third (``normal_scene_5`` → Scene5)."""
    lists = write_lists(tmp_path / "lists", [], ["normal_scene_5"])
    assert UBnormal(tmp_path, split_lists=lists).video_names() == {"normal_scene_5": False}


@pytest.mark.parametrize(("count", "tail"), [(10, ""), (11, " ...")])
def test_missing_video_list_is_cut_after_ten_paths(tmp_path, count, tail):
    """Ten missing videos are listed in full; from eleven on, the first ten (sorted by name) and '...'."""
    names = [f"abnormal_scene_1_scenario_{k:02d}" for k in range(count)]
    lists = write_lists(tmp_path / "lists", names, [])
    root = tmp_path / "UBnormal"
    root.mkdir()
    listed = ", ".join(str(root / "Scene1" / f"{n}.mp4") for n in names[:10])
    with pytest.raises(FileNotFoundError) as error:
        UBnormal(root, split_lists=lists).videos()
    assert f"{count} listed videos are missing under {root}: {listed}{tail}. Extract" in str(error.value)


def test_abnormal_video_without_id_maps_is_refused(tree):
    """An abnormal video needs its maps (frame count and pixel ground truth); the message names the
    first map expected."""
    name = "abnormal_scene_2_scenario_4"
    ann = tree.files[f"{name}:annotations"]
    for path in ann.glob("*_gt.png"):
        path.unlink()
    with pytest.raises(GroundTruthError) as error:
        load(tree).videos()
    assert str(error.value) == (
        f"{ann}: abnormal video '{name}' has no object-id maps; expected "
        f"{ann / 'abnormal_scene_2_scenario_4_0000_gt.png'} and one map per frame."
    )


@pytest.mark.parametrize(
    ("absent", "named"),
    [([14], [14]), (list(range(1, 12)), list(range(1, 11)))],
    ids=["last-but-one", "eleven"],
)
def test_gaps_in_the_id_maps_are_named_up_to_ten(tree, absent, named):
    """16 maps 0..15: a gap just below the last map is found too; of eleven gaps (1..11), the first ten."""
    name = "abnormal_scene_2_scenario_4"
    ann = tree.files[f"{name}:annotations"]
    for t in absent:
        (ann / f"{name}_{t:04d}_gt.png").unlink()
    with pytest.raises(GroundTruthError, match=re.escape(f"frames {named} have no {name}_<%04d>_gt.png map")):
        load(tree).videos()


def test_intervals_at_the_frame_count_are_clipped_or_ignored(tree, caplog):
    """16 maps (frames 0..15): ``3,4,16`` ends one past the last frame → clipped to [4, 15];
    ``5,16,20`` starts one past it → ignored. Both logged with the file's line."""
    name = "abnormal_scene_2_scenario_4"
    tree.files[f"{name}:tracks"].write_text("3,4,16\n5,16,20\n")
    with caplog.at_level(logging.WARNING, logger="lavida.eval.benchmarks.ubnormal"):
        video = {v.name: v for v in load(tree).videos()}[name]
    assert video.meta["anomalies"] == [[3, 4, 15]]
    np.testing.assert_array_equal(np.flatnonzero(video.frame_labels), range(4, 16))
    assert "line 1: interval [4, 16] clipped to the last frame 15." in caplog.text
    assert "line 2: interval [16, 20] starts after the last frame (15); ignored." in caplog.text
    assert "no anomaly interval" not in caplog.text


def test_abnormal_video_without_a_usable_interval_is_reported(tree, caplog):
    """Every interval past the end (16 frames): the abnormal video is scored as all normal, with a warning."""
    name = "abnormal_scene_2_scenario_4"
    tracks = tree.files[f"{name}:tracks"]
    tracks.write_text("5,16,20\n")
    with caplog.at_level(logging.WARNING, logger="lavida.eval.benchmarks.ubnormal"):
        video = {v.name: v for v in load(tree).videos()}[name]
    assert video.meta["anomalies"] == [] and not video.is_anomalous and video.tracks.shape == (0, 6)
    assert f"{tracks}: no anomaly interval; the abnormal video is scored as all normal." in caplog.text
