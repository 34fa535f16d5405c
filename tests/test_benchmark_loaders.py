"""benchmarks/benchmark_loaders.py's command line: which trees it writes, reuses and removes, and its flags.

The writers and the measurement are replaced by stand-ins, so no real-size tree is written; the counts of a
real tree are checked in tests/eval/test_loader_reads.py.
"""

import pytest
from conftest import load_benchmark_script


@pytest.fixture
def script(monkeypatch):
    """The script; its Ped2 writer records each folder it writes into, and `measure` each folder it reads."""
    module = load_benchmark_script("benchmark_loaders")
    calls = {"wrote": [], "measured": [], "fail": False}

    def write(root, size):
        calls["wrote"].append(root)
        (root / "half").write_text("the first half of the tree")
        if calls["fail"]:
            raise KeyboardInterrupt  # stopped midway, as Ctrl-C stops a real writer
        (root / "rest").write_text("the rest")

    def measure(run, root, repeat, memory):
        calls["measured"].append((root, sorted(p.name for p in root.iterdir())))
        counts = ("videos", "frames", "reads", "files read", "read >1", "opens", "stat", "listings")
        return {"benchmark": run, "load": 0.0, "truth": 0.0, "cpu": 0.0, "videos opened": 0, "held": None} | {
            key: 0 for key in counts
        }

    monkeypatch.setitem(module.WRITERS, "ucsd_ped2", write)
    monkeypatch.setattr(module, "measure", measure)
    module.calls = calls
    return module


def run(script, monkeypatch, *arguments):
    """``python benchmarks/benchmark_loaders.py --only ucsd_ped2 ARGUMENTS`` (through sys.argv)."""
    monkeypatch.setattr("sys.argv", ["benchmark_loaders.py", "--only", "ucsd_ped2", *arguments])
    script.main()


def test_a_tree_interrupted_midway_is_never_reused(script, monkeypatch, tmp_path):
    """A --keep run stopped while writing left ``<root>/ucsd_ped2-8x8`` holding half a tree, which the next
    --keep run took as finished and measured."""
    script.calls["fail"] = True
    with pytest.raises(KeyboardInterrupt):
        run(script, monkeypatch, "--root", str(tmp_path), "--keep")
    assert list(tmp_path.iterdir()) == []  # neither the tree's name nor a half-written sibling

    script.calls["fail"] = False
    run(script, monkeypatch, "--root", str(tmp_path), "--keep")
    tree = tmp_path / "ucsd_ped2-8x8"
    assert script.calls["measured"] == [(tree, ["half", "rest"])]  # written again, in full
    assert [p.name for p in tmp_path.iterdir()] == [tree.name]  # kept, nothing beside it

    run(script, monkeypatch, "--root", str(tmp_path), "--keep")
    assert len(script.calls["wrote"]) == 2  # the finished tree is reused
    assert script.calls["measured"][-1] == (tree, ["half", "rest"])


def test_without_keep_an_existing_tree_is_neither_reused_nor_removed(script, monkeypatch, tmp_path):
    """``--root R`` without --keep measured whatever ``R/ucsd_ped2-8x8`` held, though the help promised
    reuse only with --keep."""
    kept = tmp_path / "ucsd_ped2-8x8"
    kept.mkdir()
    (kept / "from_an_earlier_run").write_text("")
    run(script, monkeypatch, "--root", str(tmp_path))
    [(measured, names)] = script.calls["measured"]
    assert measured != kept and names == ["half", "rest"]  # a tree of its own, written in full
    assert not measured.exists()  # and removed at the end
    assert [p.name for p in tmp_path.iterdir()] == [kept.name]
    assert [p.name for p in kept.iterdir()] == ["from_an_earlier_run"]


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [(["--repeat", "0"], "--repeat"), (["--size", "0", "0"], "--size"), (["--profile", "-1"], "--profile")],
)
def test_counts_out_of_range_are_usage_errors_naming_the_flag(script, monkeypatch, capsys, arguments, flag):
    """``--repeat 0`` ended in ``ValueError: min() arg is an empty sequence`` after the trees were written,
    ``--size 0 0`` in a PIL error."""
    with pytest.raises(SystemExit) as raised:
        run(script, monkeypatch, *arguments)
    assert raised.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert script.calls["wrote"] == []
