"""The UBnormal loader and its RBDC/TBDC ground truth (tests/eval/trees.py tree).

Each test reproduces one defect and failed before its fix.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from eval.trees import write_ubnormal_tree
from PIL import Image

from lavida.eval.benchmarks.ubnormal import UBnormal, read_id_map
from lavida.metrics import tracks_from_id_maps


@pytest.fixture
def tree(tmp_path):
    return write_ubnormal_tree(tmp_path / "UBnormal")


def load(tree, **kwargs):
    return {v.name: v for v in UBnormal(tree.root, split_lists=tree.files["split_lists"], **kwargs).videos()}


def resave_maps(tree, name: str, *, bits: int) -> None:
    """Write every id map of ``name`` again at a lower PNG bit depth, keeping the stored ids.

    PNG optimisers (optipng, oxipng, pngcrush) do this losslessly whenever the ids fit, so a re-compressed
    copy of the dataset holds such files."""
    for path in sorted(tree.files[f"{name}:annotations"].glob("*_gt.png")):
        with Image.open(path) as image:
            ids = np.asarray(image)
        assert ids.max() < 2**bits  # the ids fit the smaller depth: the file stores them exactly
        if bits == 1:
            Image.fromarray(ids.astype(bool)).save(path)  # Pillow writes mode "1" as a 1-bit greyscale PNG
        else:
            Image.fromarray(ids, mode="L").save(path, bits=bits)


# -- id maps stored at 2 or 4 bits per pixel ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bits"), [("abnormal_scene_2_scenario_4", 4), ("abnormal_scene_1_scenario_1", 2)]
)
def test_low_bit_depth_id_maps_keep_their_ids(tree, name, bits):
    """Pillow scales 2- and 4-bit greyscale samples to 0..255 (id 3 at 4 bits reads as 51), so no
    anomalous id was ever found: the pixel ground truth came out all normal and the track builder skipped
    every frame, with frame labels still 1 — silently wrong RBDC/TBDC and pixel AUC."""
    before = load(tree)[name]
    expected_tracks = before.tracks
    assert expected_tracks.shape[0] > 0
    resave_maps(tree, name, bits=bits)
    path = next(tree.files[f"{name}:annotations"].glob("*_0004_gt.png"))
    with Image.open(path) as image:
        assert np.asarray(image).max() > 2**bits - 1  # Pillow itself returns the scaled samples
    after = load(tree)[name]
    frames = np.arange(after.num_frames)
    expected_masks = tree.videos[name].masks  # written by the tree from the ids themselves
    assert expected_masks.any()
    np.testing.assert_array_equal(after.pixel_masks(frames), expected_masks)
    np.testing.assert_array_equal(after.tracks, expected_tracks)  # the 8-bit maps' tracks
    # Hand-worked: each box bounds the object's block as the tree wrote it (rows r0..r1-1, cols c0..c1-1).
    blocks = {"abnormal_scene_2_scenario_4": {0: (2, 2, 7, 5), 1: (40, 24, 45, 29)}}
    blocks["abnormal_scene_1_scenario_1"] = {0: (6, 4, 13, 9)}
    assert {t: tuple(box) for t, _, *box in after.tracks.tolist()} == blocks[name]


def test_one_bit_id_map_reads_as_integer_ids(tree):
    """A 1-bit map (the only id is 1) decoded as a bool array: the track builder refused it with
    "object_boxes: id_map must be a 2-D integer array ... dtype bool", naming no file or video."""
    name = "abnormal_scene_2_scenario_2"  # validation: object 1 on rows 10..19, cols 10..19; track 1,1,2
    resave_maps(tree, name, bits=1)
    path = tree.files[f"{name}:annotations"] / f"{name}_0001_gt.png"
    ids = read_id_map(path)
    assert np.issubdtype(ids.dtype, np.integer)
    assert ids.sum() == 100 and ids[10:20, 10:20].min() == 1
    video = load(tree, split="validation")[name]
    np.testing.assert_array_equal(video.tracks, [[0, 1, 10, 10, 19, 19], [0, 2, 10, 10, 19, 19]])
    np.testing.assert_array_equal(video.pixel_masks(np.arange(6)), tree.videos[name].masks)


# -- an anomalous object missing from the maps -----------------------------------------------------------


def test_absent_anomalous_object_is_reported_with_its_file_and_id(tree, caplog):
    """A track whose object id is in no map (a wrong id in the tracks file) left the video with frame labels
    but no anomalous pixel and no RBDC region; the only trace was "tracks_from_id_maps: 3 (track, frame)
    pairs had no pixel of their object", naming neither the video, the file nor the object."""
    name = "abnormal_scene_2_scenario_4"
    tracks = tree.files[f"{name}:tracks"]
    tracks.write_text("3,4,6\n9,10,12\n")  # object 9 is in none of the maps (they hold 3 and 5)
    with caplog.at_level(logging.WARNING):
        video = load(tree)[name]
    np.testing.assert_array_equal(video.tracks[:, :2], [[0, 4], [0, 5], [0, 6]])
    messages = [r.getMessage() for r in caplog.records if "no pixel" in r.getMessage()]
    assert len(messages) == 1
    assert str(tracks) in messages[0] and "object 9" in messages[0] and "[10, 12]" in messages[0]
    assert "3 of its 3 frames" in messages[0]


def test_missing_raise_names_where(tree):
    maps = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match=r"^v\.txt: .*object 2 has no pixel in frame 0"):
        tracks_from_id_maps(maps, [[2, 0, 1]], missing="raise", where="v.txt")


# -- split lists other than the official ones ------------------------------------------------------------


def test_split_lists_of_another_size_are_reported(tree, caplog):
    """A split_lists folder naming 2 + 1 test videos (here the tiny tree's) loaded without a word, so a
    run on a subset or an outdated copy of the lists looked like the official 211-video test set (the
    UCF-Crime, ShanghaiTech and Ped2 loaders report this)."""
    with caplog.at_level(logging.WARNING, logger="lavida.eval.benchmarks.ubnormal"):
        UBnormal(tree.root, split_lists=tree.files["split_lists"]).video_names()
    assert "name 3 videos (2 abnormal, 1 normal); the official test split has 211 (158 + 53)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lavida.eval.benchmarks.ubnormal"):
        assert len(UBnormal(tree.root).video_names()) == 211  # the shipped official lists
        assert len(UBnormal(tree.root, split="validation").video_names()) == 64
    assert "official" not in caplog.text


def test_a_misspelt_track_box_is_refused_when_the_benchmark_is_made(tmp_path):
    """It used to pass the constructor and fail only while the tracks were built, after every video's maps
    had been listed."""
    from lavida.eval.benchmarks.ubnormal import UBnormal

    with pytest.raises(ValueError, match=r"track_box must be one of union, largest_component, got 'largest'"):
        UBnormal(tmp_path, track_box="largest")
