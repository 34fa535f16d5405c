"""lavida-tables holds each run to its benchmark's official test split, and skips folders with no results.

A run on other split lists, another annotation file or part of a dataset copy leaves nothing out of what it
was given (``"split": "test", "videos_left_out": 0``), so only its video count (``num_videos``) shows that
it is not the paper's test set; it is refused unless ``--allow-partial``, then marked †. A folder that holds
only Hydra's log (a refused or unfinished lavida-eval run) is skipped with a warning, so that the README's
``lavida-tables outputs/eval/*`` still builds the tables.
"""

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_eval_run
from eval.trees import write_shanghaitech_tree, write_ubnormal_tree, write_ucf_crime_tree

from lavida.cli.tables import main as tables
from lavida.eval.benchmarks import get_benchmark
from lavida.eval.paper_results import PAPER_RESULTS
from lavida.eval.runner import run_evaluation
from lavida.eval.tables import (
    OFFICIAL_TEST_VIDEOS,
    NoResultsError,
    OverridableRefusal,
    build_tables,
    read_run,
    read_runs,
)


def _run(folder, benchmark, protocol, **metrics):
    """:func:`write_eval_run` with the table's metric at 0.75 unless ``metrics`` says otherwise."""
    return write_eval_run(folder, benchmark, protocol, **{PAPER_RESULTS[benchmark][0]: 0.75, **metrics})


def _evaluate(bench, protocol, output_dir):
    """A scores-only lavida-eval run of ``bench`` under ``protocol``: saved frame scores, no pixel maps."""
    predictions = output_dir.parent / f"{output_dir.name}_predictions"
    predictions.mkdir(parents=True)
    for video in bench.videos():
        np.save(predictions / f"{video.name}.npy", np.linspace(0, 1, video.num_frames, dtype=np.float32))
    run_evaluation(
        benchmark=bench, protocol=bench.protocol(protocol), output_dir=output_dir, predictions_dir=predictions
    )
    return output_dir


# -- the official counts ---------------------------------------------------------------------------------


def test_the_official_counts_are_the_papers_test_sets_and_the_shipped_split_lists():
    """The counts the tables hold runs to (taken from the loaders' constants) against the test-set sizes of
    research/vad_eval.md §1, written out here, and UBnormal's shipped split lists (the authors')."""
    from lavida.eval.benchmarks._common import resource, text_lines

    lists = {
        kind: len(text_lines(resource("ubnormal") / f"{kind}_test_video_names.txt", expected="names"))
        for kind in ("abnormal", "normal")
    }
    assert lists == {"abnormal": 158, "normal": 53}
    assert OFFICIAL_TEST_VIDEOS == {
        "ubnormal": {"standard": 211, "lavida_official": 158},  # the release evaluates abnormal videos only
        "shanghaitech": {"standard": 107, "lavida_official": 107},
        "ucf_crime": {"standard": 290, "lavida_official": 290},
        "xd_violence": {"standard": 800, "lavida_official": 800},
        "ucsd_ped2": {"standard": 12, "lavida_official": 12},
    }
    assert OFFICIAL_TEST_VIDEOS.keys() == PAPER_RESULTS.keys()


# -- A: runs on part of a test set -----------------------------------------------------------------------


def test_runs_on_part_of_a_test_set_are_refused_unless_allowed(tmp_path, capsys):
    """The walkthrough's runs: UBnormal on custom split lists (3 test videos; 2 under lavida_official,
    which keeps the abnormal ones), a ShanghaiTech tree of 2 videos, a UCF-Crime annotation file of 3
    lines. Each metrics.json says "test" and nothing left out; the tables still refuse them."""
    ub = write_ubnormal_tree(tmp_path / "UBnormal")
    lists = {"split_lists": ub.files["split_lists"]}
    runs = {
        "ub_standard": (get_benchmark("ubnormal", ub.root, **lists), "standard", 3, 211),
        "ub_official": (get_benchmark("ubnormal", ub.root, **lists), "lavida_official", 2, 158),
        "sht": (
            get_benchmark("shanghaitech", write_shanghaitech_tree(tmp_path / "SHT").root),
            "standard",
            2,
            107,
        ),
        "ucf": (get_benchmark("ucf_crime", write_ucf_crime_tree(tmp_path / "UCF").root), "standard", 3, 290),
    }
    out = tmp_path / "outputs" / "eval"
    for name, (bench, protocol, evaluated, _) in runs.items():
        metrics = json.loads((_evaluate(bench, protocol, out / name) / "metrics.json").read_text())
        assert (metrics["split"], metrics["videos_left_out"], metrics["num_videos"]) == ("test", 0, evaluated)

    for name, (_, protocol, evaluated, official) in runs.items():
        with pytest.raises(SystemExit, match="2"):
            tables([str(out / name)])
        refused = capsys.readouterr().err
        # The run folder, the count evaluated and the count expected.
        assert re.search(
            rf"{re.escape(str(out / name))} \({evaluated} of the official test split's {official} videos "
            rf"evaluated under the {protocol} protocol; the split lists, annotation file or dataset folder "
            rf"given hold {evaluated}\)",
            refused,
        ), refused
        assert "--allow-partial" in refused

    tables(
        [str(out / name) for name in ("ub_official", "sht", "ucf")]
        + ["--allow-partial", "--out", str(tmp_path / "t")]
    )
    markdown = (tmp_path / "t" / "tables.md").read_text()
    row = re.search(r"\| ours \(standard protocol\) \| – \| (\S+ †) \| (\S+ †) \| – \|", markdown)
    assert row, markdown
    assert "† not the whole test split:" in markdown
    assert "2 of the official test split's 107 videos evaluated under the standard protocol" in markdown
    # The tree's UBnormal videos are shorter than one official window, so no frame was scored (–); the
    # run is listed as partial all the same.
    assert (
        f"(lavida_official protocol, {out / 'ub_official'}): 2 of the official test split's 158" in markdown
    )


def test_the_count_is_checked_beside_the_videos_left_out(tmp_path):
    """A max_videos or skip_missing run says what it left out and how many it evaluated of how many; a
    run of the official count is whole; a run of more videos than the official set is not; a metrics.json
    without num_videos (never written by lavida-eval) is not known to be whole."""
    whole = read_run(_run(tmp_path / "whole", "xd_violence", "standard"))
    assert whole.shortfall is None
    capped = read_run(
        _run(tmp_path / "capped", "shanghaitech", "standard", num_videos=2, videos_left_out=105)
    )
    assert capped.shortfall == (
        "2 of the official test split's 107 videos evaluated under the standard protocol, 105 left out "
        "(missing on disk, or beyond max_videos)"
    )
    more = read_run(_run(tmp_path / "more", "ucf_crime", "lavida_official", num_videos=300))
    assert more.shortfall == (
        "300 videos evaluated where the official test split has 290 under the lavida_official protocol; "
        "the split lists, annotation file or dataset folder given hold 300"
    )
    # UBnormal's lavida_official protocol evaluates the 158 abnormal test videos: all 211 is not its set.
    assert read_run(_run(tmp_path / "ub", "ubnormal", "lavida_official")).shortfall is None
    assert "211 videos evaluated where the official test split has 158" in str(
        read_run(_run(tmp_path / "ub_all", "ubnormal", "lavida_official", num_videos=211)).shortfall
    )
    # Another split is reported as such, not held to the test split's count.
    validation = read_run(_run(tmp_path / "val", "ubnormal", "standard", split="validation", num_videos=64))
    assert validation.shortfall == "the validation split"
    unknown = tmp_path / "unknown"
    _run(unknown, "ucsd_ped2", "standard")
    metrics = json.loads((unknown / "metrics.json").read_text())
    del metrics["num_videos"]
    (unknown / "metrics.json").write_text(json.dumps(metrics))
    assert "no num_videos in metrics.json" in str(read_run(unknown).shortfall)
    with pytest.raises(
        OverridableRefusal, match="unknown .*not known to be the 12 of the official test split"
    ):
        build_tables([whole, read_run(unknown)])
    markdown, _ = build_tables([whole, read_run(unknown), capped], allow_partial=True)
    assert "| 75.00 † |" in markdown and f"ucsd_ped2 (standard protocol, {unknown})" in markdown


def test_refusals_name_the_flag_on_the_command_line_and_the_keyword_in_python(tmp_path, capsys):
    """lavida-tables printed ``--allow-partial (allow_partial=True)``; each caller now reads its own."""
    capped = _run(tmp_path / "capped", "shanghaitech", "standard", num_videos=2, videos_left_out=105)
    with pytest.raises(OverridableRefusal) as refusal:
        build_tables([read_run(capped)])
    assert "allow_partial=True" in str(refusal.value) and "--allow-partial" not in str(refusal.value)
    with pytest.raises(SystemExit, match="2"):
        tables([str(capped)])
    printed = capsys.readouterr().err
    assert "pass --allow-partial to show them marked †" in printed and "allow_partial=True" not in printed

    a = _run(tmp_path / "a", "ubnormal", "standard", source={"mode": "model", "checkpoint": "/a"})
    b = _run(tmp_path / "b", "shanghaitech", "standard", source={"mode": "model", "checkpoint": "/b"})
    with pytest.raises(OverridableRefusal) as refusal:
        build_tables([read_run(a), read_run(b)])
    assert "(label= names the row), or allow_mixed=True" in str(refusal.value)
    with pytest.raises(SystemExit, match="2"):
        tables([str(a), str(b)])
    printed = capsys.readouterr().err
    assert "(--label names the row), or --allow-mixed to put them" in printed
    assert "allow_mixed=True" not in printed and "label=" not in printed


# -- B: folders with no results --------------------------------------------------------------------------


def test_a_folder_holding_only_logs_is_skipped_with_a_warning(tmp_path, caplog):
    """A refused run leaves Hydra's eval.log (perhaps an empty .hydra); other content is no such run."""
    runs = tmp_path / "outputs" / "eval"
    done = _run(runs / "shanghaitech_standard", "shanghaitech", "standard")
    refused = runs / "shanghaitech_lavida_offical"
    refused.mkdir()
    (refused / "eval.log").write_text("[lavida-eval] Unknown protocol 'lavida_offical'\n")
    empty_record = runs / "ucf_crime_standard"
    (empty_record / ".hydra").mkdir(parents=True)
    (empty_record / "eval.log").write_text("")
    with caplog.at_level(logging.WARNING, logger="lavida.eval.tables"):
        found = read_runs(sorted(runs.iterdir()))
    assert [run.path for run in found] == [done]
    for folder in (refused, empty_record):
        assert re.search(
            rf"{re.escape(str(folder))}: no results: a run that did not finish or was refused", caplog.text
        )
    with pytest.raises(NoResultsError, match=r"it holds eval.log\)"):
        read_run(refused)

    # A folder with anything else (a killed run's cache, a filled .hydra, other files) is refused as before.
    for extra in ("predictions/video.npz", ".hydra/config.yaml", "notes.txt"):
        folder = tmp_path / "other" / extra.replace("/", "_")
        (folder / extra).parent.mkdir(parents=True)
        (folder / extra).write_text("")
        (folder / "eval.log").write_text("")
        with pytest.raises(
            FileNotFoundError, match="no metrics.json — is this a lavida-eval output"
        ) as error:
            read_runs([folder, done])
        assert not isinstance(error.value, NoResultsError)

    with pytest.raises(ValueError, match="None of the folders given holds results"):
        read_runs([refused, empty_record])


def test_a_parent_folder_of_runs_is_refused_with_a_glob_to_pass(tmp_path, capsys):
    runs = tmp_path / "outputs" / "eval"
    _run(runs / "shanghaitech_standard", "shanghaitech", "standard")
    _run(runs / "ubnormal_standard", "ubnormal", "standard")
    with pytest.raises(SystemExit, match="2"):
        tables([str(runs)])
    printed = capsys.readouterr().err
    assert "its subfolders shanghaitech_standard, ubnormal_standard hold lavida-eval runs" in printed
    assert f"e.g. {runs / '*'}" in printed


def test_lavida_tables_over_outputs_eval_after_a_refused_lavida_eval(tmp_path, capsys, monkeypatch):
    """The README's commands end to end: lavida-eval refuses a misspelt protocol, leaving its output folder
    with Hydra's log only; ``lavida-tables outputs/eval/*`` then builds the tables from the finished run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "lavida.cli.eval",
            "benchmark=shanghaitech",
            f"benchmark.root={tmp_path / 'data'}",
            f"predictions={tmp_path / 'data'}",
            "protocol=lavida_offical",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert refused.returncode != 0 and "lavida_offical" in refused.stderr
    left = tmp_path / "outputs" / "eval" / "shanghaitech_lavida_offical"
    assert [p.name for p in left.iterdir()] == ["eval.log"]
    _run(tmp_path / "outputs" / "eval" / "ubnormal_standard", "ubnormal", "standard")

    tables(sorted(str(p) for p in (tmp_path / "outputs" / "eval").iterdir()) + ["--out", "outputs/tables"])
    assert "| ours (standard protocol) | 75.00 | – | – | – |" in capsys.readouterr().out
    assert (tmp_path / "outputs" / "tables" / "tables.md").is_file()


def test_the_console_script_prints_the_librarys_warnings_on_stderr_under_its_name(tmp_path):
    """``lavida-tables outputs/eval/*`` as a user's shell runs it (no pytest log handlers): the warning for a
    folder with no results reaches stderr as ``lavida-tables: ...``, as the refusals do, and the table stdout;
    ``--label`` names the row."""
    done = _run(tmp_path / "ubnormal_standard", "ubnormal", "standard")
    refused = tmp_path / "shanghaitech_lavida_offical"
    refused.mkdir()
    (refused / "eval.log").write_text("[lavida-eval] Unknown protocol 'lavida_offical'\n")
    command = [str(Path(sys.executable).parent / "lavida-tables"), str(done), str(refused), "--label", "mine"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stderr.splitlines()
    assert (
        f"lavida-tables: Skipping {refused}: no results: a run that did not finish or was refused (it holds "
        "eval.log)."
    ) in lines
    assert all(line.startswith("lavida-tables: ") for line in lines)
    assert "| mine (standard protocol) | 75.00 | – | – | – |" in shown.stdout
