"""UCF-Crime loader on a tiny tree in the official archive layout (tests/eval/trees.py)."""

import logging
import shutil

import numpy as np
import pytest
from eval.trees import write_ucf_crime_tree

from lavida.eval.benchmark import GroundTruthError, plan_clips
from lavida.eval.benchmarks.ucf_crime import UCFCrime, index_videos, read_ucf_annotations


@pytest.fixture
def tree(tmp_path):
    return write_ucf_crime_tree(tmp_path / "UCF_Crimes")


def test_videos_found_across_part_folders_with_labels(tree):
    videos = {v.name: v for v in UCFCrime(tree.root).videos()}
    assert sorted(videos) == ["Abuse028_x264", "Arson011_x264", "Normal_Videos_003_x264"]
    assert videos["Abuse028_x264"].path.parent.parent.name == "Anomaly-Videos-Part-1"
    assert videos["Normal_Videos_003_x264"].path.parent.name == "Testing_Normal_Videos_Anomaly"
    # "5 9 -1 -1": one interval, inclusive ends.
    np.testing.assert_array_equal(np.flatnonzero(videos["Abuse028_x264"].frame_labels), [5, 6, 7, 8, 9])
    # Two intervals "2 4 20 25" on a line without ".mp4".
    np.testing.assert_array_equal(
        np.flatnonzero(videos["Arson011_x264"].frame_labels), [2, 3, 4, *range(20, 26)]
    )
    assert not videos["Normal_Videos_003_x264"].is_anomalous
    for name, v in videos.items():
        assert v.num_frames == tree.videos[name].num_frames
        np.testing.assert_array_equal(v.frame_labels, tree.videos[name].labels)
        assert v.meta["class"] == tree.videos[name].meta["class"] and v.pixel_masks is None
        assert v.fps == pytest.approx(30.0)


def test_exclusive_end_option(tree):
    videos = {v.name: v for v in UCFCrime(tree.root, end_inclusive=False).videos()}
    np.testing.assert_array_equal(np.flatnonzero(videos["Abuse028_x264"].frame_labels), [5, 6, 7, 8])


def test_official_protocol_uses_interval_128(tree):
    bench = UCFCrime(tree.root)
    assert bench.protocol("standard").interval == 32 and bench.protocol("lavida_official").interval == 128
    assert bench.primary_metric == "frame_auc_micro" and not bench.has_pixel_gt
    arson = {v.name: v for v in bench.videos()}["Arson011_x264"]  # 40 frames
    standard = plan_clips(arson.num_frames, interval=32)
    np.testing.assert_array_equal(standard.clips, [[0, 32, 32, 32, 32, 32, 32, 32]])
    assert standard.scored.size == 40 and standard.source[31] == 0 and standard.source[39] == 1
    official = bench.protocol("lavida_official")
    dropped = plan_clips(arson.num_frames, interval=official.interval, drop_tail=official.drop_tail)
    assert dropped.num_clips == 0 and dropped.scored.size == 0  # shorter than one 1024-frame window


def test_missing_video_is_reported_or_skipped(tree, caplog):
    next(tree.root.glob("Anomaly-Videos/Arson/*.mp4")).unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"1 of 3 videos annotated .* not found: Arson011_x264(.|\n)*\+benchmark\.options\.skip_missing=true",
    ):
        UCFCrime(tree.root).videos()
    with caplog.at_level(logging.WARNING):
        bench = UCFCrime(tree.root, skip_missing=True)
        videos = bench.videos()
    assert bench.missing_videos == 1  # reported as left out (metrics.json, lavida-tables)
    assert [v.name for v in videos] == ["Abuse028_x264", "Normal_Videos_003_x264"]
    assert "skipping 1 annotated videos" in caplog.text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Robbery050_x264.mp4 Robbery 10 20 -1", "does not match"),
        ("Robbery050_x264.mp4 Robbery ten 20 -1 -1", "'ten' is not a frame number"),
        ("Robbery050_x264.mp4 Robbery 10 -1 -1 -1", "half absent"),
        ("Robbery050_x264.mp4 Robbery 30 20 -1 -1", "ends before it starts"),
        ("Abuse028_x264 Abuse 1 2 -1 -1", "annotated twice"),
    ],
)
def test_malformed_lines_name_the_file_and_line(tree, line, message):
    path = tree.files["annotations"]
    path.write_text(path.read_text() + "\n" + line + "\n")
    with pytest.raises(
        GroundTruthError, match=rf"Temporal_Anomaly_Annotation_for_Testing_Videos\.txt, line 5: .*{message}"
    ):
        read_ucf_annotations(path)


def test_missing_annotation_file(tree):
    tree.files["annotations"].unlink()
    with pytest.raises(
        GroundTruthError,
        match=r"Temporal_Anomaly_Annotation_for_Testing_Videos\.txt: ground-truth file not found",
    ):
        UCFCrime(tree.root).videos()


def test_an_annotation_file_of_comments_only_is_refused_naming_it(tmp_path):
    """An empty annotation file would otherwise evaluate no video at all."""
    path = tmp_path / "ann.txt"
    path.write_text("# name class start1 end1 start2 end2\n\n")
    with pytest.raises(
        GroundTruthError, match=r"ann\.txt: the file holds no annotation; expected lines 'name class"
    ):
        read_ucf_annotations(path)


def test_path_prefixed_names_are_accepted(tmp_path):
    path = tmp_path / "ann.txt"
    path.write_text("Arson/Arson022_x264.mp4 Arson 3500 4000 -1 -1\n")
    (ann,) = read_ucf_annotations(path)
    assert ann.name == "Arson022_x264" and ann.intervals == ((3500, 4000),) and ann.line == 1


def test_one_pair_and_single_frame_intervals_are_read(tmp_path):
    """A line may carry one pair only, and an interval may be one frame (start == end, frame 0 included):
    the format is 'an even number (>= 2) of frame numbers' with inclusive ends."""
    path = tmp_path / "ann.txt"
    path.write_text("Abuse028_x264.mp4 Abuse 5 9\nArson011_x264 Arson 0 0 7 7 -1 -1\n")
    abuse, arson = read_ucf_annotations(path)
    assert (abuse.label, abuse.intervals, abuse.frames) == ("Abuse", ((5, 9),), None)
    assert (arson.label, arson.intervals) == ("Arson", ((0, 0), (7, 7)))


@pytest.mark.parametrize(
    "line",
    [
        "Abuse028_x264.mp4",
        "Abuse028_x264.mp4 Abuse",
        "Abuse028_x264.mp4 8640",
        "Abuse028_x264.mp4 165 240 -1 -1",
        "Abuse028_x264.mp4 ８６４０ Abuse 5 9",
    ],
)
def test_lines_that_do_not_match_the_format_are_refused(tmp_path, line):
    """A bare name, a class without frame numbers, a name and a count, a line without its class column
    (``165`` is not a frame count: ``240`` is no class), or a count in non-ASCII digits (not read as a
    frame count, so the line has three numbers) do not match the format."""
    path = tmp_path / "ann.txt"
    path.write_text(line + "\n")
    with pytest.raises(GroundTruthError, match=r"ann\.txt, line 1: .* does not match"):
        read_ucf_annotations(path)


def test_single_frame_interval_labels_one_frame(tree):
    """``7 7 10 11``: frames 7, 10 and 11 with inclusive ends; with exclusive ends [7, 7) is empty and
    [10, 11) is frame 10."""
    path = tree.files["annotations"]
    path.write_text(path.read_text().replace("Abuse  5  9  -1  -1", "Abuse  7  7  10  11"))
    inclusive = {v.name: v for v in UCFCrime(tree.root).videos()}["Abuse028_x264"]
    np.testing.assert_array_equal(np.flatnonzero(inclusive.frame_labels), [7, 10, 11])
    exclusive = {v.name: v for v in UCFCrime(tree.root, end_inclusive=False).videos()}["Abuse028_x264"]
    np.testing.assert_array_equal(np.flatnonzero(exclusive.frame_labels), [10])  # [7, 7) is empty


def test_interval_ending_on_the_frame_count_is_reported(tree, caplog):
    """Abuse028 has 16 frames (0..15): an end of 16 is past the last frame, an end of 15 is not."""
    path = tree.files["annotations"]
    path.write_text(path.read_text().replace("Abuse  5  9  -1  -1", "Abuse  5  16  -1  -1"))
    with caplog.at_level(logging.WARNING):
        UCFCrime(tree.root).videos()
    assert "line 1: interval [5, 16] runs past the last frame 15" in caplog.text
    path.write_text(path.read_text().replace("Abuse  5  16  -1  -1", "Abuse  5  15  -1  -1"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        UCFCrime(tree.root).videos()
    assert "runs past" not in caplog.text


def test_class_and_intervals_that_disagree_are_logged(tree, caplog):
    """A 'Normal' line with an interval keeps it; an anomaly class without one is all normal."""
    path = tree.files["annotations"]
    text = path.read_text().replace("Abuse  5  9  -1  -1", "Abuse  -1  -1  -1  -1")
    path.write_text(text.replace("Normal  -1  -1  -1  -1", "Normal  1  2  -1  -1"))
    with caplog.at_level(logging.WARNING):
        videos = {v.name: v for v in UCFCrime(tree.root).videos()}
    assert not videos["Abuse028_x264"].is_anomalous
    np.testing.assert_array_equal(np.flatnonzero(videos["Normal_Videos_003_x264"].frame_labels), [1, 2])
    assert "line 1: class 'Abuse' but no interval; the video is scored as all normal." in caplog.text
    assert "line 3: a 'Normal' video with anomalous intervals; the intervals are used." in caplog.text
    assert "line 2" not in caplog.text  # Arson011: a class with intervals


def test_consistent_lines_log_no_class_warning(tree, caplog):
    """The tree's classes agree with their intervals (Abuse, Arson with some; Normal with none)."""
    with caplog.at_level(logging.WARNING):
        UCFCrime(tree.root).videos()
    assert "but no interval" not in caplog.text and "'Normal' video with" not in caplog.text


def test_annotation_file_name_is_matched_case_insensitively(tree):
    """The archive spells the file ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt`` or in other cases."""
    lower = tree.root / "temporal_anomaly_annotation_for_testing_videos.txt"
    tree.files["annotations"].rename(lower)
    (tree.root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt.bak").write_text("not it\n")
    bench = UCFCrime(tree.root)
    assert bench.annotation_file == lower
    assert len(bench.videos()) == 3


def test_a_video_found_twice_is_taken_from_its_class_folder(tree):
    """Copies in the root (searched first) must not win over the class folder (or, for a normal video,
    Testing_Normal_Videos_Anomaly). The root copies are the 40-frame Arson video, so the frame count
    tells which copy was read."""
    arson = next(tree.root.glob("Anomaly-Videos/Arson/*.mp4"))
    shutil.copy(arson, tree.root / "Abuse028_x264.mp4")
    shutil.copy(arson, tree.root / "Normal_Videos_003_x264.mp4")
    videos = {v.name: v for v in UCFCrime(tree.root).videos()}
    abuse, normal = videos["Abuse028_x264"], videos["Normal_Videos_003_x264"]
    assert abuse.path.parent.name == "Abuse" and abuse.num_frames == 16
    assert normal.path.parent.name == "Testing_Normal_Videos_Anomaly" and normal.num_frames == 12


def test_a_video_found_twice_outside_its_class_folder_takes_the_first(tree):
    """No copy in the expected folder: the first in search order (the root) is used."""
    abuse = next(tree.root.glob("Anomaly-Videos-Part-1/Abuse/*.mp4"))
    shutil.move(abuse, tree.root / abuse.name)
    other = tree.root / "Anomaly-Videos" / "Arson" / abuse.name
    shutil.copy(next(tree.root.glob("Anomaly-Videos/Arson/Arson011_x264.mp4")), other)
    video = {v.name: v for v in UCFCrime(tree.root).videos()}["Abuse028_x264"]
    assert video.path == tree.root / abuse.name and video.num_frames == 16


def test_index_videos_lists_only_visible_video_files(tmp_path):
    """macOS ``._`` litter, other files and folders named like videos are not videos."""
    folder = tmp_path / "Abuse"
    folder.mkdir()
    for name in ("Abuse028_x264.mp4", "._Abuse028_x264.mp4", "._Abuse029_x264.mp4", "notes.txt"):
        (folder / name).write_bytes(b"x")
    (folder / "Abuse030_x264.mp4").mkdir()
    assert index_videos([folder, tmp_path / "absent"]) == {"Abuse028_x264": [folder / "Abuse028_x264.mp4"]}


def test_missing_videos_are_expected_in_the_archive_folders(tree):
    """A missing video's recorded path is where the official archive keeps it."""
    for path in (*tree.root.glob("Anomaly-Videos/Arson/*.mp4"), *tree.root.glob("Testing_Normal*/*.mp4")):
        path.unlink()
    bench = UCFCrime(tree.root, skip_missing=True)
    bench.videos()
    assert {v.name: v.path for v in bench.missing} == {
        "Arson011_x264": tree.root / "Anomaly-Videos" / "Arson" / "Arson011_x264.mp4",
        "Normal_Videos_003_x264": tree.root / "Testing_Normal_Videos_Anomaly" / "Normal_Videos_003_x264.mp4",
    }


@pytest.mark.parametrize(("count", "tail"), [(10, ""), (11, " ...")])
def test_missing_video_list_is_cut_after_ten_names(tmp_path, count, tail):
    """Ten missing names are listed in full; from eleven on, the first ten and '...'."""
    root = tmp_path / "UCF"
    root.mkdir()
    lines = [f"Robbery{k:03d}_x264.mp4 Robbery 1 2 -1 -1" for k in range(count)]
    (root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text("\n".join(lines) + "\n")
    listed = ", ".join(f"Robbery{k:03d}_x264" for k in range(10))
    with pytest.raises(FileNotFoundError, match=rf"{count} of {count} videos annotated") as error:
        UCFCrime(root).videos()
    assert f"not found: {listed}{tail}. Expected" in str(error.value)


@pytest.mark.parametrize(("anomalous", "logged"), [(140, False), (139, True)])
def test_only_a_file_of_another_size_than_the_official_split_is_logged(tmp_path, caplog, anomalous, logged):
    """The official file lists 140 anomalous and 150 normal videos (vad_eval.md §1.3): it is not logged as
    incomparable; one anomalous line fewer is. No video is on disk (all skipped): the check reads the file."""
    root = tmp_path / "UCF"
    root.mkdir()
    lines = [f"Robbery{k:03d}_x264.mp4 Robbery 1 2 -1 -1" for k in range(anomalous)]
    lines += [f"Normal_Videos_{k:03d}_x264.mp4 Normal -1 -1 -1 -1" for k in range(150)]
    (root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        assert UCFCrime(root, skip_missing=True).videos() == []
    assert ("not comparable with published ones" in caplog.text) == logged
