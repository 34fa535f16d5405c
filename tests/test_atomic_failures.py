"""lavida.atomic under failure: a failure at each step (write, fsync, rename) leaves the old version or the
new one, whole, and nothing else; names near the file-name limit; reading JSON whatever the locale."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tree_listing

import lavida.atomic as atomic
from lavida.atomic import atomic_dir, atomic_path, read_json, write_json, write_text


def _failing_nth(real, n: int, error: OSError):
    """``real`` that raises ``error`` on its n-th call (counting from 1), like a crash at that step."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise error
        return real(*args, **kwargs)

    return wrapped


# -- files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["write", "fsync", "rename"])
def test_a_file_write_failing_at_any_step_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, step):
    target = tmp_path / "metrics.json"
    write_text(target, "old")
    if step == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", _failing_nth(os.fsync, 1, OSError(5, "I/O error")))
    if step == "rename":
        monkeypatch.setattr(atomic.os, "replace", _failing_nth(os.replace, 1, OSError(28, "disk full")))
    with pytest.raises(OSError):
        with atomic_path(target) as temporary:
            temporary.write_text("new, half")
            if step == "write":
                raise OSError(28, "No space left on device")
    assert tree_listing(tmp_path) == {"metrics.json": "old"}


def test_a_file_failing_before_it_existed_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "replace", _failing_nth(os.replace, 1, OSError(18, "cross-device")))
    with pytest.raises(OSError):
        write_text(tmp_path / "new.txt", "new")
    assert tree_listing(tmp_path) == {}


def test_a_new_file_gets_the_mode_of_any_file_the_user_makes(tmp_path):
    write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


@pytest.mark.parametrize(
    "name", ["a b.c d.json", "métriques ü 日本.json", ".hidden", "archive.tar.gz", "noext"]
)
def test_names_with_spaces_dots_and_unicode(tmp_path, name):
    write_text(tmp_path / name, "old")
    write_json(tmp_path / name, {"name": name}, ensure_ascii=False)
    assert read_json(tmp_path / name, expected="a name") == {"name": name}
    assert [p.name for p in tmp_path.iterdir()] == [name]


# The longest names a file system takes (255 bytes), in ASCII and in two-byte characters.
LONG_NAMES = ["a" * 250 + ".json", "é" * 125 + ".npz", "b" * 255]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_a_file_whose_name_is_near_the_limit_is_written(tmp_path, name):
    """The temporary name adds ``.<pid>.<hex>.tmp`` to the target's: over 255 bytes it was refused
    (ENAMETOOLONG) although the target's own name is valid."""
    target = tmp_path / name
    write_text(target, "old")
    write_text(target, "new")
    assert tree_listing(tmp_path) == {name: "new"}
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            assert len(os.fsencode(temporary.name)) <= 255 and temporary.name.startswith(".")
            temporary.write_text("half")
            raise RuntimeError("killed")
    assert tree_listing(tmp_path) == {name: "new"}


def test_a_long_suffix_is_not_kept_but_npz_is(tmp_path):
    with atomic_path(tmp_path / ("x." + "s" * 200)) as temporary:
        assert temporary.name.endswith(".tmp")
        temporary.write_text("x")
    with atomic_path(tmp_path / ("y" * 250 + ".npz")) as temporary:
        assert temporary.suffix == ".npz"
        temporary.write_text("x")


# -- folders ------------------------------------------------------------------------------------------


def _old_folder(tmp_path) -> Path:
    out = tmp_path / "out"
    with atomic_dir(out) as staging:
        (staging / "old.bin").write_text("old")
        (staging / "sub").mkdir()
        (staging / "sub" / "old.txt").write_text("old")
    return out


OLD = {"out": {"old.bin": "old", "sub": {"old.txt": "old"}}}


# With the atomic exchange there is one rename, which either happens or not: only its fsync can fail apart.
@pytest.mark.parametrize(
    ("exchange", "failing"),
    [(True, "fsync"), (False, "fsync"), (False, "first rename"), (False, "second rename")],
)
def test_a_folder_write_failing_at_any_step_keeps_the_old_folder_whole(
    tmp_path, monkeypatch, exchange, failing
):
    """Without the atomic exchange the old folder is renamed aside, then the new one into place: when the
    second rename raised (another file system, a full directory), the old folder stayed under its hidden
    ``.out.*.old`` name, the new one was deleted and nothing was left at ``out``."""
    out = _old_folder(tmp_path)
    if not exchange:
        monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)
    error = OSError(18, "Invalid cross-device link")
    if failing == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", _failing_nth(os.fsync, 2, OSError(5, "I/O error")))
    else:
        n = 1 if failing == "first rename" else 2
        monkeypatch.setattr(atomic.os, "replace", _failing_nth(os.replace, n, error))
    with pytest.raises(OSError):
        with atomic_dir(out) as staging:
            (staging / "new.bin").write_text("new")
    assert tree_listing(tmp_path) == OLD


def test_a_folder_failing_before_it_existed_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.os, "replace", _failing_nth(os.replace, 1, OSError(18, "cross-device")))
    with pytest.raises(OSError):
        with atomic_dir(tmp_path / "out") as staging:
            (staging / "new.bin").write_text("new")
    assert tree_listing(tmp_path) == {}


def test_replace_dir_from_another_file_system_keeps_the_old_folder(tmp_path, monkeypatch):
    """replace_dir's caller (training checkpoints) names the staging folder; if it lies elsewhere, the
    rename fails with EXDEV and the old checkpoint must still be at its name."""
    out = _old_folder(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "new.bin").write_text("new")
    monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)
    real = os.replace

    def cross_device(source, target):
        if Path(source) == staging:
            raise OSError(18, "Invalid cross-device link", str(source), None, str(target))
        return real(source, target)

    monkeypatch.setattr(atomic.os, "replace", cross_device)
    with pytest.raises(OSError, match="cross-device"):
        atomic.replace_dir(staging, out)
    assert tree_listing(tmp_path) == {**OLD, "staging": {"new.bin": "new"}}


@pytest.mark.parametrize("exchange", [True, False])
@pytest.mark.parametrize("name", ["c" * 255, "é" * 127, "d" * 200])
def test_a_folder_whose_name_is_near_the_limit_is_replaced(tmp_path, monkeypatch, exchange, name):
    """Staging ``.<name>.<host>.<pid>.<hex>.tmp`` and ``.<name>.<pid>.<hex>.old`` stay within 255 bytes."""
    if not exchange:
        monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)
    out = tmp_path / name
    for version in ("old", "new"):
        with atomic_dir(out) as staging:
            assert len(os.fsencode(staging.name)) <= 255
            (staging / f"{version}.txt").write_text(version)
    assert tree_listing(tmp_path) == {name: {"new.txt": "new"}}


def test_a_killed_writer_of_a_long_named_folder_is_cleaned_up_too(tmp_path):
    from lavida.atomic import _staging_prefix

    name = "e" * 250
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    left = tmp_path / f"{_staging_prefix(tmp_path / name)}{int(finished.stdout)}.abcd1234.tmp"
    assert len(os.fsencode(left.name)) <= 255
    left.mkdir()
    with atomic_dir(tmp_path / name) as staging:
        (staging / "a").write_text("a")
    assert tree_listing(tmp_path) == {name: {"a": "a"}}


# -- reading JSON -------------------------------------------------------------------------------------


def test_read_json_reads_utf8_whatever_the_locale(tmp_path):
    """write_json writes UTF-8; read_json read with the locale's encoding (ASCII under LC_ALL=C without
    UTF-8 mode, cp1252 on Windows), so a written "é" failed to read back or came back as "Ã©"."""
    target = tmp_path / "m.json"
    write_json(target, {"name": "é"}, ensure_ascii=False)
    code = f"from lavida.atomic import read_json; print(ascii(read_json({str(target)!r}, expected='x')))"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    result = subprocess.run(
        [sys.executable, "-X", "utf8=0", "-c", code], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ascii({"name": "é"})


def test_read_json_names_a_file_that_is_not_utf8(tmp_path):
    target = tmp_path / "m.json"
    target.write_bytes('{"name": "é"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"m\.json: not UTF-8 .*expected the run's record"):
        read_json(target, expected="the run's record")
