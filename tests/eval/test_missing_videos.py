"""Videos left out: a listed video missing on disk counts only where the protocol would evaluate it.

UBnormal's ``lavida_official`` protocol keeps abnormal videos only, so a missing normal video leaves
nothing out of that run (it stays complete for ``lavida-tables``), while ``standard`` evaluates every
video and reports it left out. A missing abnormal video is left out of both.
"""

import json

import numpy as np
import pytest
from eval.trees import write_ubnormal_tree, write_ucf_crime_tree, write_xd_violence_tree

from lavida.eval.benchmarks.ubnormal import UBnormal
from lavida.eval.benchmarks.ucf_crime import UCFCrime
from lavida.eval.benchmarks.xd_violence import XDViolence
from lavida.eval.runner import run_evaluation
from lavida.eval.settings import EvalSettings

NORMAL, ABNORMAL = "normal_scene_3_scenario_7", "abnormal_scene_2_scenario_4"


@pytest.fixture
def tree(tmp_path):
    return write_ubnormal_tree(tmp_path / "UBnormal")


def without(tree, name: str) -> UBnormal:
    """The tiny UBnormal test split with video ``name``'s file deleted, loaded with skip_missing."""
    (tree.root / f"Scene{name.split('_')[2]}" / f"{name}.mp4").unlink()
    bench = UBnormal(tree.root, split_lists=tree.files["split_lists"], skip_missing=True)
    bench.videos()
    return bench


def left_out(bench, protocol: str, output_dir, **settings) -> int:
    """``videos_left_out`` of metrics.json after a scores-only run of saved frame scores."""
    predictions = output_dir / "predictions_in"
    predictions.mkdir(parents=True)
    for video in bench.videos():
        np.save(predictions / f"{video.name}.npy", np.linspace(0, 1, video.num_frames, dtype=np.float32))
    metrics = run_evaluation(
        benchmark=bench,
        protocol=bench.protocol(protocol),
        output_dir=output_dir / "run",
        predictions_dir=predictions,
        settings=EvalSettings(**settings),
    )
    saved = json.loads((output_dir / "run" / "metrics.json").read_text())
    assert saved["videos_left_out"] == metrics["videos_left_out"]
    return saved["videos_left_out"]


def test_a_missing_normal_video_is_left_out_of_standard_only(tree, tmp_path):
    bench = without(tree, NORMAL)
    assert bench.missing_videos == 1 and [v.name for v in bench.missing] == [NORMAL]
    assert bench.missing_under(bench.protocol("lavida_official")) == 0
    assert left_out(bench, "lavida_official", tmp_path / "official") == 0  # a complete official run
    assert left_out(bench, "standard", tmp_path / "standard") == 1


def test_a_missing_abnormal_video_is_left_out_of_both_protocols(tree, tmp_path):
    bench = without(tree, ABNORMAL)
    assert [v.meta["abnormal"] for v in bench.missing] == [True]
    assert left_out(bench, "lavida_official", tmp_path / "official") == 1
    assert left_out(bench, "standard", tmp_path / "standard") == 1


def test_max_videos_adds_the_protocols_videos_beyond_the_cap(tree, tmp_path):
    """Left out = the protocol's missing videos + its present videos beyond max_videos (disjoint sets)."""
    bench = without(tree, NORMAL)  # present: 2 abnormal; the official protocol evaluates both
    assert left_out(bench, "lavida_official", tmp_path / "official", max_videos=1) == 0 + 1
    assert left_out(bench, "standard", tmp_path / "standard", max_videos=1) == 1 + 1


def test_benchmarks_without_a_video_filter_count_every_missing_video(tmp_path):
    ucf = write_ucf_crime_tree(tmp_path / "UCF")
    next(ucf.root.glob("Anomaly-Videos/Arson/*.mp4")).unlink()
    xd = write_xd_violence_tree(tmp_path / "XD")
    annotations = xd.files["annotations"]
    annotations.write_text(annotations.read_text() + "Gone.Film__#00-00-01_00-00-09_label_B4-0-0 10 20\n")
    for bench in (UCFCrime(ucf.root, skip_missing=True), XDViolence(xd.root, skip_missing=True)):
        for protocol in ("standard", "lavida_official"):  # neither has a video filter
            assert bench.missing_under(bench.protocol(protocol)) == 1, (bench.name, protocol)
        assert bench.missing_videos == 1 and bench.missing[0].meta["intervals"]  # the listed facts


def test_a_cap_at_or_above_the_protocols_videos_leaves_none_of_them_out(tree, tmp_path):
    """max_videos ≥ the videos present adds nothing: only the missing normal video is left out of standard
    (2 present, capped at 2 and at 5: 1 + max(0, 2 - cap) = 1)."""
    bench = without(tree, NORMAL)
    assert left_out(bench, "standard", tmp_path / "at", max_videos=2) == 1
    assert left_out(bench, "standard", tmp_path / "above", max_videos=5) == 1
