"""Tab. 1 / Tab. 2 collection from run directories."""

import re

import pytest
from conftest import write_eval_run

from lavida.cli.tables import main
from lavida.eval.tables import NoResultsError, read_run


def test_tables_put_our_numbers_beside_the_papers(tmp_path, capsys):
    a = write_eval_run(tmp_path / "a", "shanghaitech", "standard", frame_auc_micro=0.8123)
    b = write_eval_run(tmp_path / "b", "xd_violence", "standard", frame_ap=0.5, frame_auc_micro=0.9)
    c = write_eval_run(tmp_path / "c", "ucsd_ped2", "lavida_official", pixel_auc=0.7777)
    main([str(a), str(b), str(c), "--out", str(tmp_path / "t")])
    markdown = (tmp_path / "t" / "tables.md").read_text()
    assert "| LAVIDA (paper) | 76.45 | 85.28 | 82.18 | 90.62 |" in markdown
    assert "| ours (standard protocol) | – | 81.23 | – | 50.00 |" in markdown  # XD uses AP, not AUC
    assert "| ours (lavida_official protocol) | 77.77 |" in markdown
    rows = (tmp_path / "t" / "tables.csv").read_text().splitlines()
    assert rows[0].startswith("table,row,UBnormal AUC")
    assert "81.23" in capsys.readouterr().out


def test_read_run_errors(tmp_path):
    with pytest.raises(NoResultsError, match="no results"):  # an empty folder (see test_tables_partial.py)
        read_run(tmp_path)
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        read_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{")
    with pytest.raises(ValueError, match=r"metrics.json: not valid JSON .*line 1, column 2"):
        read_run(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no report.md"):
        read_run(tmp_path)
    (tmp_path / "report.md").write_text("something else\n")
    with pytest.raises(ValueError, match="title line"):
        read_run(tmp_path)


def test_two_runs_of_one_benchmark_and_protocol_are_refused(tmp_path, capsys):
    """Picking one by argument order would silently put whichever came last in the table."""
    v10 = write_eval_run(tmp_path / "ucf_v10", "ucf_crime", "standard", frame_auc_micro=0.85)
    v9 = write_eval_run(tmp_path / "ucf_v9", "ucf_crime", "standard", frame_auc_micro=0.70)
    other = write_eval_run(tmp_path / "ucf_official", "ucf_crime", "lavida_official", frame_auc_micro=0.75)
    with pytest.raises(SystemExit, match="2"):
        main([str(v10), str(v9), "--out", str(tmp_path / "t")])
    # The refusal is printed as it is, without a traceback, and nothing is written.
    error = capsys.readouterr().err
    assert re.search(
        r"lavida-tables: .*ucf_v10 and .*ucf_v9 both evaluate ucf_crime under the standard", error
    )
    assert "Traceback" not in error and not (tmp_path / "t").exists()
    main([str(v10), str(other), "--out", str(tmp_path / "t")])  # protocols are separate rows
    markdown = (tmp_path / "t" / "tables.md").read_text()
    assert "| ours (standard protocol) | – | – | 85.00 | – |" in markdown
    assert "| ours (lavida_official protocol) | – | – | 75.00 | – |" in markdown


def test_tables_are_rewritten_in_a_nested_out_folder_under_the_label_given(tmp_path):
    """``--out`` may name a folder not yet made (parents included) or one a previous run wrote."""
    run = write_eval_run(tmp_path / "a", "shanghaitech", "standard", frame_auc_micro=0.8123)
    out = tmp_path / "tables" / "v1"
    main([str(run), "--out", str(out)])
    main([str(run), "--out", str(out), "--label", "again"])
    assert "| again (standard protocol) | – | 81.23 | – | – |" in (out / "tables.md").read_text()
