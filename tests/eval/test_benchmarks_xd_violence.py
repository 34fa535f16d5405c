"""XD-Violence loader on a tiny tree in the release's layout (tests/eval/trees.py)."""

import logging

import numpy as np
import pytest
from eval.trees import write_xd_violence_tree

from lavida.eval.benchmark import GroundTruthError
from lavida.eval.benchmarks.xd_violence import XDViolence, label_codes

BAD_BOYS = "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"
FIGHT = "v=wVey5JDRf_I__#1_label_B1-0-0"
NORMAL = "A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A"


@pytest.fixture
def tree(tmp_path):
    return write_xd_violence_tree(tmp_path / "XD")


def test_videos_intervals_and_label_meta(tree):
    videos = {v.name: v for v in XDViolence(tree.root).videos()}
    assert sorted(videos) == sorted([BAD_BOYS, FIGHT, NORMAL])  # dotted names kept whole
    # Four intervals on one line, inclusive ends.
    np.testing.assert_array_equal(np.flatnonzero(videos[BAD_BOYS].frame_labels), [0, 1, 4, 5, 8, 9, 12, 13])
    np.testing.assert_array_equal(np.flatnonzero(videos[FIGHT].frame_labels), [3, 4, 5, 6])  # line had ".mp4"
    assert not videos[NORMAL].is_anomalous and not videos[NORMAL].meta["annotated"]
    assert videos[BAD_BOYS].meta["labels"] == ["explosion", "shooting", "car accident"]
    assert videos[BAD_BOYS].meta["label_codes"] == ["G", "B2", "B6"]
    for name, v in videos.items():
        assert v.num_frames == tree.videos[name].num_frames
        np.testing.assert_array_equal(v.frame_labels, tree.videos[name].labels)
        assert v.meta["labels"] == tree.videos[name].meta["labels"] and v.pixel_masks is None


def test_root_may_be_the_test_folder_itself(tree):
    assert len(XDViolence(tree.root / "XD-Violence-test").videos()) == 3


def test_ap_is_primary_and_official_interval_is_128(tree):
    bench = XDViolence(tree.root)
    assert bench.primary_metric == "frame_ap"
    assert bench.protocol("standard").interval == 32 and bench.protocol("lavida_official").interval == 128
    assert bench.categories == ["fighting", "shooting", "riot", "abuse", "car accident", "explosion"]


def test_exclusive_end_option(tree):
    videos = {v.name: v for v in XDViolence(tree.root, end_inclusive=False).videos()}
    np.testing.assert_array_equal(np.flatnonzero(videos[FIGHT].frame_labels), [3, 4, 5])
    assert not videos[BAD_BOYS].frame_labels[1]  # "0 1" becomes frame 0 only


def test_odd_number_of_frame_numbers_names_file_and_line(tree):
    path = tree.files["annotations"]
    path.write_text(path.read_text() + "Some.Film__#00-00-01_00-00-09_label_B4-0-0 10 20 30\n")
    with pytest.raises(GroundTruthError, match=r"annotations\.txt, line 3: 3 frame numbers .* even number"):
        XDViolence(tree.root).videos()


def test_missing_annotated_video(tree, caplog):
    path = tree.files["annotations"]
    path.write_text(path.read_text() + "Gone.Film__#00-00-01_00-00-09_label_B4-0-0 10 20\n")
    with pytest.raises(
        FileNotFoundError,
        match=r"1 videos annotated .* Gone\.Film(.|\n)*\+benchmark\.options\.skip_missing=true",
    ):
        XDViolence(tree.root).videos()
    with caplog.at_level(logging.WARNING):
        bench = XDViolence(tree.root, skip_missing=True)
        assert len(bench.videos()) == 3
    assert bench.missing_videos == 1  # reported as left out (metrics.json, lavida-tables)


def test_missing_normal_videos_of_the_official_split(tree, monkeypatch, caplog):
    """The official annotations.txt lists the 500 violent test videos and none of the 300 normal ones, so a
    folder with fewer normal videos is missing some; the split's sizes are shrunk here to the tree's 2
    annotated videos, with 3 normal ones expected where the tree has 1."""
    from lavida.eval.benchmarks import xd_violence

    assert (xd_violence.OFFICIAL_VIOLENT, xd_violence.OFFICIAL_NORMAL) == (500, 300)  # vad_eval.md §1.4
    monkeypatch.setattr(xd_violence, "OFFICIAL_VIOLENT", 2)
    monkeypatch.setattr(xd_violence, "OFFICIAL_NORMAL", 3)
    with pytest.raises(
        FileNotFoundError,
        match=r"holds 1 normal test videos .* has 3\. Copy the 2 missing .*\+benchmark\.options\.skip_missing=true",
    ):
        XDViolence(tree.root).videos()
    with caplog.at_level(logging.WARNING):
        bench = XDViolence(tree.root, skip_missing=True)
        assert len(bench.videos()) == 3
    assert bench.missing_videos == 2 and "counting the 2 missing ones as left out" in caplog.text
    assert bench.missing_under(bench.protocol("standard")) == 2  # reported as left out (metrics.json)
    assert all(video.meta["labels"] == ["normal"] for video in bench.missing)

    # A normal video that is there is not missing; a list other than the official one is not counted.
    for violent, normal in ((2, 1), (500, 3)):
        monkeypatch.setattr(xd_violence, "OFFICIAL_VIOLENT", violent)
        monkeypatch.setattr(xd_violence, "OFFICIAL_NORMAL", normal)
        bench = XDViolence(tree.root)
        assert len(bench.videos()) == 3 and bench.missing_videos == 0


def test_label_codes():
    assert label_codes("x_label_B2-G-0") == ["B2", "G"]
    assert label_codes("x_label_A") == ["A"]
    assert label_codes("plain_name") == []
