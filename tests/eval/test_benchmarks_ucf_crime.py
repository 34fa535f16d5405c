"""UCF-Crime loader on a tiny tree in the official archive layout (tests/eval/trees.py)."""

import logging

import numpy as np
import pytest
from eval.trees import write_ucf_crime_tree

from lavida.eval.benchmark import GroundTruthError, plan_clips
from lavida.eval.benchmarks.ucf_crime import UCFCrime, read_ucf_annotations


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


def test_path_prefixed_names_are_accepted(tmp_path):
    path = tmp_path / "ann.txt"
    path.write_text("Arson/Arson022_x264.mp4 Arson 3500 4000 -1 -1\n")
    (ann,) = read_ucf_annotations(path)
    assert ann.name == "Arson022_x264" and ann.intervals == ((3500, 4000),) and ann.line == 1
