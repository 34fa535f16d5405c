"""A rerun's removal of the previous run's results (lavida.run_outputs) and the ``.hydra/`` record it
writes at the end (lavida.cli.record.write_record), on hand-made output folders."""

import logging

from conftest import tree_listing

from lavida.cli.record import write_record
from lavida.run_outputs import RECORD_DIR, remove_previous_outputs


def test_the_listed_outputs_are_removed_and_named_in_one_log_line(tmp_path, caplog):
    """Files in the given order, then folders (with a trailing /); what is not there, a folder name that
    is a file, and anything unlisted stay; the record folder is Hydra's usual name."""
    for name in ("metrics.json", "scores.csv", "keep.txt", "figures"):
        (tmp_path / name).write_text(name)
    (tmp_path / "figures").unlink()
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_text("a")
    (tmp_path / RECORD_DIR).mkdir()
    (tmp_path / "plots").write_text("not a folder")
    with caplog.at_level(logging.INFO, logger="lavida.run_outputs"):
        remove_previous_outputs(
            tmp_path,
            files=["metrics.json", "absent.json", "scores.csv"],
            folders=["figures", "plots", "gone", RECORD_DIR],
        )
    assert RECORD_DIR == ".hydra"
    assert tree_listing(tmp_path) == {"keep.txt": "keep.txt", "plots": "not a folder"}
    assert caplog.messages == [
        f"{tmp_path}: removed the previous run's metrics.json, scores.csv, figures/, .hydra/; they are "
        "written again at the end."
    ]


def test_nothing_to_remove_logs_nothing(tmp_path, caplog):
    (tmp_path / "keep.txt").write_text("keep")
    with caplog.at_level(logging.INFO, logger="lavida.run_outputs"):
        remove_previous_outputs(tmp_path, files=["metrics.json"], folders=["figures"])
    assert caplog.messages == []
    assert tree_listing(tmp_path) == {"keep.txt": "keep"}


def test_the_record_replaces_the_old_one_whole(tmp_path):
    """write_record writes each file's text under <output_dir>/.hydra/ and drops files of an older record."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "hydra.yaml").write_text("old")
    path = write_record(str(tmp_path), {"config.yaml": "a: 1\n", "overrides.yaml": "- ü=1\n"})
    assert path == tmp_path / ".hydra"
    assert tree_listing(tmp_path) == {".hydra": {"config.yaml": "a: 1\n", "overrides.yaml": "- ü=1\n"}}
