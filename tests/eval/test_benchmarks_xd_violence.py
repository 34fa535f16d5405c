"""XD-Violence loader on a tiny tree in the release's layout (tests/eval/trees.py)."""

import logging
import re
import shutil

import numpy as np
import pytest
from eval.trees import write_xd_violence_tree

from lavida.eval.benchmark import GroundTruthError
from lavida.eval.benchmarks.xd_violence import XDViolence, label_codes, read_xd_annotations

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


def test_a_test_folder_without_its_videos_folder_names_it_and_the_expected_layout(tree):
    videos = tree.root / "XD-Violence-test" / "videos"
    shutil.rmtree(videos)
    with pytest.raises(FileNotFoundError) as error:
        XDViolence(tree.root).videos()
    assert str(error.value) == (
        f"XD-Violence: {videos} not found. Expected <root>/videos/*.mp4 and <root>/annotations.txt "
        "(or both inside <root>/XD-Violence-test/)."
    )


def test_skipping_every_missing_video_of_an_empty_videos_folder_leaves_nothing_to_evaluate(tree, caplog):
    """skip_missing=True skips the annotated videos that are not there; with none there at all, the empty
    folder is refused by name rather than evaluated as a benchmark of no video."""
    videos = tree.root / "XD-Violence-test" / "videos"
    for video in videos.iterdir():
        video.unlink()
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(
            FileNotFoundError, match=rf"^XD-Violence: {re.escape(str(videos))} holds no video files\.$"
        ),
    ):
        XDViolence(tree.root, skip_missing=True).videos()
    assert "skipping 2 annotated videos without a file" in caplog.text


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


def test_label_codes_come_after_the_last_label_marker():
    """Only the text after the last ``_label_`` holds the codes (a title may contain the marker)."""
    assert label_codes("The_label_Maker__#1_label_B1-0-0") == ["B1"]


def test_annotation_lines_with_paths_and_single_frame_intervals(tmp_path):
    """A leading folder (either slash) and ``.mp4`` are dropped from the name; ``0 0`` and ``7 7`` are
    one-frame intervals (inclusive ends)."""
    path = tmp_path / "annotations.txt"
    path.write_text("videos/Some.Film__#1_label_B1-0-0.mp4 0 0 7 7\nvideos\\Other__#2_label_G-0-0 3 6\n")
    annotations = read_xd_annotations(path)
    assert {name: (a.intervals, a.line) for name, a in annotations.items()} == {
        "Some.Film__#1_label_B1-0-0": (((0, 0), (7, 7)), 1),
        "Other__#2_label_G-0-0": (((3, 6),), 2),
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Some.Film__#1_label_B1-0-0", "0 frame numbers after the name"),
        ("Some.Film__#1_label_B1-0-0 -1 5", r"interval \[-1, 5\] is invalid"),
        ("Some.Film__#1_label_B1-0-0 9 5", r"interval \[9, 5\] is invalid"),
        (f"{BAD_BOYS} 30 31", rf"'{re.escape(BAD_BOYS)}' is annotated twice \(first on line 1\)"),
    ],
)
def test_malformed_lines_are_refused(tree, line, message):
    """A name alone, a negative start, a reversed interval and a second line for a video are refused,
    naming the file and the line (line 3: after the tree's two lines)."""
    path = tree.files["annotations"]
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(GroundTruthError, match=rf"annotations\.txt, line 3: {message}"):
        read_xd_annotations(path)


def test_only_visible_video_files_are_test_videos(tree):
    """Every video in ``videos/`` is a test video, so macOS ``._`` litter, other files and folders must
    not become (normal) test videos."""
    videos_dir = tree.root / "XD-Violence-test" / "videos"
    (videos_dir / f"._{NORMAL}.mp4").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (videos_dir / "README.txt").write_text("not a video\n")
    (videos_dir / "Folder__#1_label_A.mp4").mkdir()
    bench = XDViolence(tree.root)
    assert sorted(v.name for v in bench.videos()) == sorted([BAD_BOYS, FIGHT, NORMAL])
    assert not bench.has_pixel_gt


def test_root_annotations_win_over_a_nested_test_folder(tree):
    """``<root>/annotations.txt`` is read when it exists, even beside an ``XD-Violence-test/`` folder."""
    test = tree.root / "XD-Violence-test"
    flat = tree.root / "flat"
    shutil.copytree(test, flat)
    (flat / "annotations.txt").write_text(f"{FIGHT} 1 2\n")
    (flat / "XD-Violence-test").mkdir()
    videos = {v.name: v for v in XDViolence(flat).videos()}
    np.testing.assert_array_equal(np.flatnonzero(videos[FIGHT].frame_labels), [1, 2])


def test_names_and_labels_that_disagree_are_logged(tree, caplog):
    """Unknown label codes, a violent name without a line, and a normal (``A``) name with intervals are
    logged; the annotation file decides the labels either way."""
    videos_dir = tree.root / "XD-Violence-test" / "videos"
    shutil.copy(videos_dir / f"{NORMAL}.mp4", videos_dir / "Riot__#1_label_B4-Z9-0.mp4")
    shutil.copy(videos_dir / f"{NORMAL}.mp4", videos_dir / "Calm__#1_label_A.mp4")
    path = tree.files["annotations"]
    path.write_text(path.read_text() + "Calm__#1_label_A 2 3\n")
    with caplog.at_level(logging.WARNING):
        videos = {v.name: v for v in XDViolence(tree.root).videos()}
    assert "XD-Violence Riot__#1_label_B4-Z9-0: unknown label codes ['Z9'] in the name." in caplog.text
    assert (
        "XD-Violence Riot__#1_label_B4-Z9-0: labelled violent (['B4', 'Z9']) but has no annotation line; "
        "scored as all normal." in caplog.text
    )
    assert "line 3: 'Calm__#1_label_A' is labelled normal (A) but has intervals" in caplog.text
    assert not videos["Riot__#1_label_B4-Z9-0"].is_anomalous
    assert videos["Riot__#1_label_B4-Z9-0"].meta["labels"] == ["riot", "Z9"]
    np.testing.assert_array_equal(np.flatnonzero(videos["Calm__#1_label_A"].frame_labels), [2, 3])
    # The tree's own videos agree with their names: none of them is named in a warning.
    assert not any(name in caplog.text for name in (BAD_BOYS, FIGHT, NORMAL))


@pytest.mark.parametrize(("count", "tail"), [(10, ""), (11, " ...")])
def test_missing_video_list_is_cut_after_ten_names(tree, count, tail):
    """Ten missing names are listed in full; from eleven on, the first ten and '...'."""
    names = [f"Gone{k:02d}__#1_label_B1-0-0" for k in range(count)]
    tree.files["annotations"].write_text("".join(f"{n} 1 2\n" for n in names))
    with pytest.raises(FileNotFoundError, match=rf"XD-Violence: {count} videos annotated") as error:
        XDViolence(tree.root).videos()
    assert f": {', '.join(names[:10])}{tail}. Copy them there" in str(error.value)


def test_missing_normal_videos_get_numbered_placeholder_names(tree, monkeypatch):
    """Their names are listed nowhere, so each gets ``<normal video k of N not found>``, k from 1."""
    from lavida.eval.benchmarks import xd_violence

    monkeypatch.setattr(xd_violence, "OFFICIAL_VIOLENT", 2)
    monkeypatch.setattr(xd_violence, "OFFICIAL_NORMAL", 3)
    bench = XDViolence(tree.root, skip_missing=True)
    bench.videos()
    assert [v.name for v in bench.missing] == [
        "<normal video 1 of 2 not found>",
        "<normal video 2 of 2 not found>",
    ]


def test_exclusive_ends_keep_intervals_that_still_hold_a_frame(tree):
    """Exclusive ends: ``0 1`` is frame 0 and ``6 9`` frames 6..8, while ``3 3`` holds no frame and is
    dropped; inclusive ends give 0..1, 3 and 6..9."""
    path = tree.files["annotations"]
    path.write_text(f"{BAD_BOYS} 0 1\n{FIGHT} 3 3 6 9\n")
    inclusive = {v.name: v for v in XDViolence(tree.root).videos()}
    np.testing.assert_array_equal(np.flatnonzero(inclusive[BAD_BOYS].frame_labels), [0, 1])
    np.testing.assert_array_equal(np.flatnonzero(inclusive[FIGHT].frame_labels), [3, 6, 7, 8, 9])
    exclusive = {v.name: v for v in XDViolence(tree.root, end_inclusive=False).videos()}
    np.testing.assert_array_equal(np.flatnonzero(exclusive[BAD_BOYS].frame_labels), [0])
    np.testing.assert_array_equal(np.flatnonzero(exclusive[FIGHT].frame_labels), [6, 7, 8])


def test_a_single_missing_normal_video_is_refused(tree, monkeypatch):
    """One normal video fewer than the official split (here 2 expected, 1 present) is already missing."""
    from lavida.eval.benchmarks import xd_violence

    monkeypatch.setattr(xd_violence, "OFFICIAL_VIOLENT", 2)
    monkeypatch.setattr(xd_violence, "OFFICIAL_NORMAL", 2)
    with pytest.raises(FileNotFoundError, match=r"holds 1 normal test videos .* has 2\. Copy the 1 missing"):
        XDViolence(tree.root).videos()


def test_only_unannotated_normal_names_count_as_normal_videos(tree, monkeypatch):
    """A violent-named video without a line is not one of the split's normal videos: with 2 normal videos
    expected and only NORMAL (``_label_A``, no line) present, one is still missing."""
    from lavida.eval.benchmarks import xd_violence

    videos_dir = tree.root / "XD-Violence-test" / "videos"
    shutil.copy(videos_dir / f"{NORMAL}.mp4", videos_dir / "Riot__#1_label_B4-0-0.mp4")
    monkeypatch.setattr(xd_violence, "OFFICIAL_VIOLENT", 2)
    monkeypatch.setattr(xd_violence, "OFFICIAL_NORMAL", 2)
    with pytest.raises(FileNotFoundError, match=r"holds 1 normal test videos .* has 2\. Copy the 1 missing"):
        XDViolence(tree.root).videos()
