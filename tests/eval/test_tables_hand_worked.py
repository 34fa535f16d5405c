"""lavida.eval.tables on hand-built runs: shortfalls, source comparisons and the exact tables, in words.

The runs are built in memory (:class:`RunResult`) or as bare folders, with no evaluation, so each rule is
pinned by a small case worked out by hand. The official test-split sizes are research/vad_eval.md §1's
(ShanghaiTech 107, UCSD Ped2 12 test videos); the paper's numbers are main paper Tab. 1 / Tab. 2.
"""

import dataclasses
import logging
import re
from pathlib import Path

import pytest
from conftest import write_eval_run

from lavida.eval.tables import (
    NoResultsError,
    OverridableRefusal,
    RunResult,
    build_tables,
    read_run,
    read_runs,
    source_differences,
)


def _model(checkpoint=None, digest=None, **extra):
    """A model run's source as lavida-eval records it (lavida.eval.runner._source)."""
    return {"mode": "model", "checkpoint": checkpoint, "checkpoint_sha256": digest, **extra}


# -- shortfall ------------------------------------------------------------------------------------------


def test_shortfall_against_the_official_count():
    """A run is whole only with the official count and nothing left out; otherwise the message says how
    many were evaluated of how many, what was left out, and what the given lists held (evaluated + left
    out) when that is not the official count either."""

    def shortfall(benchmark, protocol="standard", **metrics):
        return RunResult(Path("r"), benchmark, protocol, metrics).shortfall

    # No split and no videos_left_out recorded: a test run with nothing left out.
    assert shortfall("shanghaitech", num_videos=107) is None
    # 107 evaluated (the official count) but 5 left out: the lists given held 107 + 5 = 112.
    assert shortfall("shanghaitech", num_videos=107, videos_left_out=5) == (
        "107 videos evaluated where the official test split has 107 under the standard protocol, 5 left out "
        "(missing on disk, or beyond max_videos); the split lists, annotation file or dataset folder given "
        "hold 112"
    )
    # 100 evaluated and 3 left out: fewer than 107, and the lists held 100 + 3 = 103, not 107.
    assert shortfall("shanghaitech", num_videos=100, videos_left_out=3) == (
        "100 of the official test split's 107 videos evaluated under the standard protocol, 3 left out "
        "(missing on disk, or beyond max_videos); the split lists, annotation file or dataset folder given "
        "hold 103"
    )
    # UCSD Ped2 has 12 test videos: 11 evaluated, nothing left out, so the lists held 11.
    assert shortfall("ucsd_ped2", "lavida_official", num_videos=11) == (
        "11 of the official test split's 12 videos evaluated under the lavida_official protocol; "
        "the split lists, annotation file or dataset folder given hold 11"
    )
    # A count that is not an int (a bool is not a count) is not known to be the official one.
    not_recorded = (
        "the number of videos evaluated not recorded (no num_videos in metrics.json), so not known to be "
        "the 12 of the official test split under the standard protocol"
    )
    for count in (True, 12.0, None):
        assert shortfall("ucsd_ped2", num_videos=count) == not_recorded


def test_shortfall_without_an_official_count():
    """A benchmark or protocol with no official count is held only to its split and what it left out."""
    run = RunResult(Path("r"), "avenue", "standard", {})
    assert run.shortfall is None
    assert dataclasses.replace(run, metrics={"videos_left_out": 3}).shortfall == "3 test videos left out"
    assert RunResult(Path("r"), "shanghaitech", "other", {"videos_left_out": 3}).shortfall == (
        "3 test videos left out"
    )
    other_split = {"split": "validation", "videos_left_out": 2, "num_videos": 107}
    assert dataclasses.replace(run, metrics=other_split).shortfall == (
        "the validation split and 2 test videos left out"
    )


# -- sources in words -----------------------------------------------------------------------------------


def test_describe_source_in_words():
    """The source line below the tables: mode, checkpoint (path and digest where recorded), the model
    settings in name order skipping empty ones, and the categories."""

    def describe(source):
        return RunResult(Path("r"), "ubnormal", "standard", {"source": source}).describe_source()

    model = _model(
        "/w/a.pt",
        "ab12",
        clip_length=8,
        settings={"dtype": "torch.float32", "checkpoint_overrides": {}, "gate_masks": None},
    )
    assert describe(model) == (
        "model, checkpoint `/w/a.pt` (sha256 ab12), clip_length 8, dtype torch.float32, "
        "the benchmark's categories"
    )
    assert describe({"mode": "model", "checkpoint": "/w/b.pt"}) == (
        "model, checkpoint `/w/b.pt`, the benchmark's categories"
    )
    assert describe({"mode": "model"}) == "model, checkpoint not recorded, the benchmark's categories"
    saved = {
        "mode": "scores-only",
        "predictions": "/p/ub",
        "default_categories": False,
        "categories": ["fight", "fire"],
    }
    assert describe(saved) == "scores-only, predictions `/p/ub`, categories 'fight, fire'"
    assert describe(saved | {"categories": None}) == "scores-only, predictions `/p/ub`, categories ''"
    for unrecorded in (None, "model"):  # absent, or not a dict
        assert describe(unrecorded) == "source not recorded (written before lavida-eval recorded it)"


def test_run_results_are_frozen():
    """A run read once is shared by the checks and the tables: it cannot be changed in between."""
    run = RunResult(Path("r"), "ubnormal", "standard", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.benchmark = "shanghaitech"


# -- source_differences ---------------------------------------------------------------------------------


def test_checkpoints_are_known_by_digest_then_by_path():
    """The same digest at two paths is one model; two digests at one path are two; without both digests
    the paths decide, and an unrecorded checkpoint agrees with any."""
    assert source_differences(_model("/w/a.pt", "ab12"), _model("/moved/a.pt", "ab12")) == []
    assert source_differences(_model("/w/a.pt", "ab12"), _model("/w/a.pt", "cd34")) == [
        "checkpoint: `/w/a.pt` (sha256 ab12) vs `/w/a.pt` (sha256 cd34)"
    ]
    assert source_differences(_model("/w/a.pt", "ab12"), _model("/w/a.pt")) == []
    assert source_differences(_model("/w/a.pt"), _model("/w/b.pt")) == ["checkpoint: `/w/a.pt` vs `/w/b.pt`"]
    assert source_differences(_model("/w/a.pt"), _model()) == []
    assert source_differences(_model(), _model("/w/a.pt")) == []


def test_settings_modes_and_categories_are_compared():
    """Settings are compared where both runs record them; modes must match; scores-only runs are not
    compared by prediction folder; categories are the benchmark's own or one given list."""
    eight, four = _model("/w/a.pt", clip_length=8), _model("/w/a.pt", clip_length=4)
    assert source_differences(eight, four) == ["clip_length: 8 vs 4"]
    assert source_differences(eight, _model("/w/a.pt")) == []
    assert source_differences(_model("/w/a.pt"), four) == []
    dtypes = [_model(settings={"dtype": dtype}) for dtype in ("float32", "bfloat16")]
    assert source_differences(*dtypes) == ["dtype: float32 vs bfloat16"]

    saved = {"mode": "scores-only", "predictions": "/p/ub"}
    assert source_differences(saved, saved | {"predictions": "/p/sht"}) == []
    assert source_differences(_model("/w/a.pt"), saved) == ["mode: model vs scores-only"]

    given = saved | {"default_categories": False, "categories": ["fight", "fire"]}
    assert source_differences(given, given | {"predictions": "/p/sht"}) == []
    assert source_differences(saved, given) == ["categories: the benchmark's vs 'fight, fire'"]


# -- build_tables ---------------------------------------------------------------------------------------


def _source(checkpoint="/w/a.pt"):
    return _model(checkpoint, clip_length=8)


def test_tables_in_full():
    """The whole Markdown and CSV for one whole ShanghaiTech run and one partial Ped2 run: the paper's row
    (main paper Tab. 1: 76.45, 85.28, 82.18, 90.62; Tab. 2: 87.68), protocols as rows in name order, our
    metrics in percent to two places (0.81234 -> 81.23, 0.7 -> 70.00), † and its footnote, the sources."""
    sht = RunResult(
        Path("runs/sht"),
        "shanghaitech",
        "standard",
        {"num_videos": 107, "frame_auc_micro": 0.81234, "source": _source()},
    )
    ped2 = RunResult(
        Path("runs/ped2"),
        "ucsd_ped2",
        "lavida_official",
        {"num_videos": 10, "videos_left_out": 2, "pixel_auc": 0.7, "source": _source()},
    )
    markdown, csv_text = build_tables([sht, ped2], label="v1", allow_partial=True)
    source = "model, checkpoint `/w/a.pt`, clip_length 8, the benchmark's categories"
    assert markdown == (
        "## Tab. 1 — frame level, zero-shot\n"
        "\n"
        "| method | UBnormal AUC | ShanghaiTech AUC | UCF-Crime AUC | XD-Violence AP |\n"
        "|---|---:|---:|---:|---:|\n"
        "| LAVIDA (paper) | 76.45 | 85.28 | 82.18 | 90.62 |\n"
        "| v1 (lavida_official protocol) | – | – | – | – |\n"
        "| v1 (standard protocol) | – | 81.23 | – | – |\n"
        "\n"
        "## Tab. 2 — UCSD Ped2, pixel level, zero-shot\n"
        "\n"
        "| method | UCSD Ped2 pixel AUC |\n"
        "|---|---:|\n"
        "| LAVIDA (paper) | 87.68 |\n"
        "| v1 (lavida_official protocol) | 70.00 † |\n"
        "| v1 (standard protocol) | – |\n"
        "\n"
        "† not the whole test split:\n"
        "- ucsd_ped2 (lavida_official protocol, runs/ped2): 10 of the official test split's 12 videos "
        "evaluated under the lavida_official protocol, 2 left out (missing on disk, or beyond max_videos)\n"
        "\n"
        "Runs:\n"
        f"- shanghaitech (standard protocol), `runs/sht`: {source}\n"
        f"- ucsd_ped2 (lavida_official protocol), `runs/ped2`: {source}\n"
    )
    assert csv_text.splitlines() == [
        "table,row,UBnormal AUC,ShanghaiTech AUC,UCF-Crime AUC,XD-Violence AP,UCSD Ped2 pixel AUC",
        "paper,LAVIDA (paper),76.45,85.28,82.18,90.62,87.68",
        "ours,v1 (lavida_official protocol),–,–,–,–,70.00 †",
        "ours,v1 (standard protocol),–,81.23,–,–,–",
    ]


def test_a_run_without_the_tables_metric_shows_a_dash():
    """XD-Violence is reported as AP: a run with only an AUC has no number for the table."""
    xd = RunResult(Path("xd"), "xd_violence", "standard", {"num_videos": 800, "frame_auc_micro": 0.9})
    markdown, _ = build_tables([xd])
    assert "| ours (standard protocol) | – | – | – | – |" in markdown


def test_refusals_are_the_default_and_the_options_override_them():
    """Without the options a partial run and runs of two checkpoints are refused; whole runs of one
    model are not; two runs of one benchmark and protocol are refused whatever the options."""
    whole = RunResult(Path("whole"), "shanghaitech", "standard", {"num_videos": 107, "source": _source()})
    partial = RunResult(
        Path("part"), "ucsd_ped2", "standard", {"num_videos": 11, "pixel_auc": 0.5, "source": _source()}
    )
    with pytest.raises(OverridableRefusal, match=r"Not whole test splits.*part \(11 of") as refusal:
        build_tables([whole, partial])
    assert str(refusal.value).endswith("pass allow_partial=True to show them marked †.")
    markdown, _ = build_tables([whole, partial], allow_partial=True)
    assert "| ours (standard protocol) | 50.00 † |" in markdown
    other = dataclasses.replace(partial, metrics={"num_videos": 12, "source": _source("/w/b.pt")})
    with pytest.raises(OverridableRefusal, match="checkpoint: `/w/a.pt` vs `/w/b.pt`"):
        build_tables([whole, other])
    markdown, _ = build_tables([whole, other], allow_mixed=True)
    assert "\nRuns, not one model's (--allow-mixed):\n" in markdown and "\nRuns:\n" not in markdown
    markdown, _ = build_tables([whole])
    assert "\nRuns:\n" in markdown and "†" not in markdown
    with pytest.raises(ValueError, match="whole and whole both evaluate shanghaitech under the standard"):
        build_tables([whole, whole], allow_partial=True, allow_mixed=True)


def test_each_run_is_compared_with_the_earlier_ones_until_a_difference():
    """Runs of checkpoints a, a, c: the third differs from the first (reported once, not again for the
    second); a run with no recorded source is compared with none and named in a warning."""
    runs = [
        RunResult(Path(f"r{i}"), benchmark, "standard", {"num_videos": count, "source": _source(ckpt)})
        for i, (benchmark, count, ckpt) in enumerate(
            [("shanghaitech", 107, "/w/a.pt"), ("ucsd_ped2", 12, "/w/a.pt"), ("ucf_crime", 290, "/w/c.pt")]
        )
    ]
    with pytest.raises(OverridableRefusal) as refusal:
        build_tables(runs)
    assert refusal.value.problem == (
        "These runs would share the row 'ours' as if one model made them, but r0 and r2 differ in "
        "checkpoint: `/w/a.pt` vs `/w/c.pt`."
    )


def test_a_run_without_a_source_is_taken_with_a_warning(caplog):
    """Runs written before lavida-eval recorded the source agree with any, and are named in a warning."""
    new = RunResult(Path("new"), "shanghaitech", "standard", {"num_videos": 107, "source": _source()})
    old = RunResult(Path("old"), "ucf_crime", "standard", {"num_videos": 290})
    newer = RunResult(Path("newer"), "ucsd_ped2", "standard", {"num_videos": 12, "source": _source()})
    with caplog.at_level(logging.WARNING, logger="lavida.eval.tables"):
        build_tables([new, old, newer])
    assert [record.getMessage() for record in caplog.records] == [
        "old: no source in metrics.json (written before lavida-eval recorded it), so not checked to be the "
        "same model as the other runs."
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lavida.eval.tables"):
        build_tables([new, newer])
    assert caplog.records == []


# -- reading folders ------------------------------------------------------------------------------------


def test_folders_without_metrics(tmp_path):
    """What a folder without metrics.json is said to be: missing, empty, logs only (with an empty .hydra),
    a parent of runs (three named, then ...), or something else (an empty cache, a filled .hydra)."""
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_run(tmp_path / "missing")
    with pytest.raises(NoResultsError, match=r"\(it holds nothing\)\.$"):
        read_run(tmp_path)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "eval.log").write_text("")
    with pytest.raises(NoResultsError, match=r"\(it holds \.hydra, eval\.log\)\.$"):
        read_run(tmp_path)
    (tmp_path / ".hydra" / "config.yaml").write_text("")
    for folder in (tmp_path, _empty_cache(tmp_path / "cache")):
        with pytest.raises(FileNotFoundError, match="no metrics.json — is this") as error:
            read_run(folder)
        assert type(error.value) is FileNotFoundError

    parent = tmp_path / "parent"
    for name in ("a", "b", "c"):
        write_eval_run(parent / name, "shanghaitech", "standard")
    with pytest.raises(FileNotFoundError, match=r"subfolders a, b, c hold lavida-eval runs; pass the runs"):
        read_run(parent)
    write_eval_run(parent / "d", "shanghaitech", "standard")
    with pytest.raises(FileNotFoundError, match=r"subfolders a, b, c, \.\.\. hold .*e\.g\. .*parent.\*$"):
        read_run(parent)


def _empty_cache(folder):
    (folder / "predictions").mkdir(parents=True)
    (folder / "eval.log").write_text("")
    return folder


def test_read_run_title_and_read_runs(tmp_path, caplog):
    """The benchmark and protocol come from report.md's first line (an empty report has none); read_runs
    skips folders with no results, and refuses when every folder given is such a one."""
    run = read_run(write_eval_run(tmp_path / "run", "ubnormal", "lavida_official", num_videos=107))
    assert (run.benchmark, run.protocol, run.metrics["num_videos"]) == ("ubnormal", "lavida_official", 107)
    empty = write_eval_run(tmp_path / "empty_report", "shanghaitech", "standard")
    (empty / "report.md").write_text("")
    with pytest.raises(ValueError, match=re.escape("title line ''")):
        read_run(empty)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "eval.log").write_text("")
    with caplog.at_level(logging.WARNING, logger="lavida.eval.tables"):
        assert [found.path for found in read_runs([logs, tmp_path / "run"])] == [tmp_path / "run"]
    assert "Skipping" in caplog.text
    with pytest.raises(ValueError, match="None of the folders given holds results"):
        read_runs([logs])
