"""lavida.atomic: a write either lands whole or leaves the old file, and never leaves temporaries behind."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_without_exchange

from lavida.atomic import atomic_dir, atomic_path, exchange_paths, write_json, write_text


def test_write_text_and_json_replace_the_file(tmp_path):
    target = tmp_path / "sub" / "metrics.json"  # the parent is created
    write_text(target, "old")
    write_json(target, {"auc": 0.5, "name": "é"}, ensure_ascii=False)
    text = target.read_text(encoding="utf-8")
    assert json.loads(text) == {"auc": 0.5, "name": "é"}
    assert text.endswith("}\n")  # a text file's final newline (cat, diff and git expect it)
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "report.md"
    write_text(target, "old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as temporary:
            temporary.write_text("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_temporaries_are_unique_hidden_and_keep_the_suffix(tmp_path):
    target = tmp_path / "video.npz"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == tmp_path
        assert first.name.startswith(".video.npz.") and first.suffix == ".npz"
        np.savez_compressed(first, x=np.arange(3))  # np.savez would append .npz to any other name
        np.savez_compressed(second, x=np.arange(4))
    with np.load(target) as data:  # the block that closed last wins
        assert data["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["video.npz"]


def _files(folder):
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    weights = tmp_path / "sam2"
    with atomic_dir(weights) as staging:  # a first write creates the folder
        (staging / "config.json").write_text("old")
        (staging / "only_in_old.bin").write_text("old")
    assert _files(weights) == {"config.json": "old", "only_in_old.bin": "old"}

    with pytest.raises(OSError, match="disk full"):
        with atomic_dir(weights) as staging:  # a save that dies after its first file
            (staging / "config.json").write_text("new")
            raise OSError("disk full")
    assert _files(weights) == {"config.json": "old", "only_in_old.bin": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["sam2"]  # the staging folder is gone

    with atomic_dir(weights) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".sam2.") and not any(staging.iterdir())
        (staging / "config.json").write_text("new")
        (staging / "model.safetensors").write_text("new")
    # No file of the old version survives, and neither staging nor the old folder is left behind.
    assert _files(weights) == {"config.json": "new", "model.safetensors": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["sam2"]
    # The folder gets the permissions of any folder the user makes (umask), not private ones.
    (tmp_path / "plain").mkdir()
    assert weights.stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_exchange_paths_swaps_two_folders_or_says_it_cannot(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "x").write_text("from a")
    (second / "y").write_text("from b")
    skip_without_exchange(tmp_path)
    assert exchange_paths(first, second)
    assert _files(first) == {"y": "from b"} and _files(second) == {"x": "from a"}
    with pytest.raises(FileNotFoundError):  # a real failure is raised, not taken for "unsupported"
        exchange_paths(first, tmp_path / "missing")


def test_a_replaced_folder_never_goes_missing(tmp_path, monkeypatch):
    """A kill at any step of the swap still leaves a whole folder at the target (where exchange works)."""
    import os

    import lavida.atomic as atomic

    skip_without_exchange(tmp_path)
    weights = tmp_path / "sam2"
    with atomic_dir(weights) as staging:
        (staging / "config.json").write_text("old")

    seen = []

    def checked(step):
        def wrapped(*args, **kwargs):
            result = step(*args, **kwargs)
            seen.append(_files(weights) if weights.is_dir() else None)  # what a kill right now would leave
            return result

        return wrapped

    monkeypatch.setattr(atomic, "exchange_paths", checked(atomic.exchange_paths))
    monkeypatch.setattr(atomic.os, "replace", checked(os.replace))
    with atomic_dir(weights) as staging:
        (staging / "config.json").write_text("new")
    assert seen and None not in seen  # the old code renamed the folder aside first: None after that step
    assert seen[-1] == {"config.json": "new"} and _files(weights) == {"config.json": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["sam2"]


def test_without_exchange_a_folder_is_still_replaced_whole(tmp_path, monkeypatch):
    import lavida.atomic as atomic

    monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)  # e.g. macOS, NFS
    weights = tmp_path / "sam2"
    with atomic_dir(weights) as staging:
        (staging / "old.bin").write_text("old")
    with atomic_dir(weights) as staging:
        (staging / "new.bin").write_text("new")
    assert _files(weights) == {"new.bin": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["sam2"]


def test_staging_folders_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    """A SIGKILL leaves the staging folder behind; the next write of the same folder removes it, but
    never the folder of a writer that still runs, of another machine, or a fallback's ``.old``."""
    import os
    import subprocess
    import sys

    from lavida.atomic import _staging_prefix

    host = _staging_prefix(tmp_path / "out").split(".")[-2]  # the host part of atomic_dir's staging names
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(finished.stdout)  # a PID that no longer runs (reuse within the test is vanishingly rare)
    leftovers = {
        "killed": tmp_path / f".out.{host}.{dead}.abcd1234.tmp",
        "running": tmp_path / f".out.{host}.{os.getpid()}.abcd1234.tmp",
        "other_machine": tmp_path / f".out.elsewhere.{dead}.abcd1234.tmp",
        "fallback_old": tmp_path / f".out.{dead}.abcd1234.old",
        "other_folder": tmp_path / f".out2.{host}.{dead}.abcd1234.tmp",
    }
    for folder in leftovers.values():
        folder.mkdir()
        (folder / "part.bin").write_bytes(b"x")
    with atomic_dir(tmp_path / "out") as staging:
        (staging / "done.txt").write_text("new")
    assert not leftovers["killed"].exists()
    assert all(leftovers[name].exists() for name in leftovers if name != "killed")
    assert _files(tmp_path / "out") == {"done.txt": "new"}


@pytest.mark.parametrize("exchange", [True, False])
@pytest.mark.parametrize("old", ["file", "link to a folder", "dangling link"])
def test_a_file_or_link_in_the_folders_place_is_replaced_and_nothing_is_left(
    tmp_path, monkeypatch, exchange, old
):
    """What stood at the folder's path goes: a file or a link (the link itself, not what it points to)."""
    import os

    import lavida.atomic as atomic

    if not exchange:
        monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)  # e.g. macOS, NFS
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    if old == "file":
        out.write_text("old")
    else:
        os.symlink(elsewhere if old == "link to a folder" else tmp_path / "missing", out)
    with atomic_dir(out) as staging:
        (staging / "new.txt").write_text("new")
    assert not out.is_symlink() and _files(out) == {"new.txt": "new"}
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no hidden leftover of the swap
    assert _files(elsewhere) == {"keep.txt": "keep"}


_NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name descriptors")


def _record_flushes(monkeypatch):
    """Log every fsync (by the path it flushed) and every rename, in order."""
    import os

    import lavida.atomic as atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace  # atomic.os is the os module: keep the originals

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        return real_fsync(descriptor)

    def replace(source, target):
        events.append(("rename", str(source), str(target)))
        return real_replace(source, target)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return events


@_NEEDS_PROC
def test_a_file_reaches_the_disk_before_its_rename_and_the_rename_after(tmp_path, monkeypatch):
    """A machine crash after the rename must not find the new name on unwritten data."""
    events = _record_flushes(monkeypatch)
    target = tmp_path / "metrics.json"
    write_text(target, "new")
    (rename,) = [event for event in events if event[0] == "rename"]
    temporary = rename[1]
    assert events == [("fsync", temporary), rename, ("fsync", str(tmp_path))]


@_NEEDS_PROC
@pytest.mark.parametrize("exchange", [True, False])
def test_a_folder_reaches_the_disk_before_it_takes_the_old_ones_place(tmp_path, monkeypatch, exchange):
    import lavida.atomic as atomic

    weights = tmp_path / "sam2"
    with atomic_dir(weights) as staging:
        (staging / "old.bin").write_text("old")
    if not exchange:
        monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)  # e.g. macOS, NFS
    events = _record_flushes(monkeypatch)
    swapped = []
    if exchange:
        skip_without_exchange(tmp_path)
        real_exchange = atomic.exchange_paths

        def logged_exchange(first, second):
            events.append(("exchange", str(first), str(second)))
            swapped.append(True)
            return real_exchange(first, second)

        monkeypatch.setattr(atomic, "exchange_paths", logged_exchange)
    with atomic_dir(weights) as staging:
        (staging / "nested").mkdir()
        (staging / "nested" / "model.safetensors").write_text("new")
        (staging / "config.json").write_text("new")
    first_move = next(i for i, event in enumerate(events) if event[0] in ("rename", "exchange"))
    flushed_before = {event[1] for event in events[:first_move] if event[0] == "fsync"}
    assert flushed_before == {
        str(staging / "nested" / "model.safetensors"),
        str(staging / "config.json"),
        str(staging / "nested"),
        str(staging),
    }
    assert events[-1] == ("fsync", str(tmp_path))  # the new name itself is on disk
    assert swapped == ([True] if exchange else [])
    assert (weights / "config.json").read_text() == "new" and not (weights / "old.bin").exists()


def test_a_folder_that_cannot_be_opened_is_written_to_all_the_same(tmp_path, monkeypatch):
    """A folder of mode 0333 can be written to but not opened for its fsync (root ignores modes, so the
    refusal is simulated): the write must succeed, as it did before folders were flushed."""
    import os

    import lavida.atomic as atomic

    real_open = os.open

    def refusing_folders(path, flags, *args, **kwargs):
        if Path(path).is_dir():
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", refusing_folders)
    write_text(tmp_path / "drop" / "report.md", "new")
    with atomic_dir(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("a")
    assert (tmp_path / "drop" / "report.md").read_text() == "new"
    assert (tmp_path / "out" / "a.txt").read_text() == "a"


@pytest.fixture
def umask():
    """Set the process's umask for one test; restored after."""
    import os

    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def test_private_files_become_as_readable_as_the_umask_allows(tmp_path, umask):
    """safetensors 0.8 writes 0600; written through atomic_path or atomic_dir, its files get the read
    bits every other output gets (0644 under umask 022), and no more than the umask allows (077)."""
    import stat

    import torch
    from safetensors.torch import save_file

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    save_file({"a": torch.zeros(2)}, str(tmp_path / "bare.safetensors"))
    assert mode(tmp_path / "bare.safetensors") == 0o600  # what the library does (the test can fail)
    for mask, expected in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        umask(mask)
        file = tmp_path / f"file_{mask:o}.safetensors"
        with atomic_path(file) as temporary:
            save_file({"a": torch.zeros(2)}, str(temporary))
        folder = tmp_path / f"folder_{mask:o}"
        with atomic_dir(folder) as staging:
            (staging / "sub").mkdir()
            save_file({"a": torch.zeros(2)}, str(staging / "sub" / "model.safetensors"))
            (staging / "script.sh").write_text("#!/bin/sh\n")
            (staging / "script.sh").chmod(0o700)
        assert mode(file) == expected, oct(mask)
        assert mode(folder / "sub" / "model.safetensors") == expected, oct(mask)
        assert mode(folder / "script.sh") == 0o700 | (0o444 & ~mask)  # read added, nothing removed


def test_saved_checkpoints_are_readable_by_whom_the_umask_allows(trained_checkpoint_files, umask):
    import stat

    weights = [p for p in trained_checkpoint_files.rglob("*.safetensors")]
    assert {p.name for p in weights} >= {"heads.safetensors", "adapter_model.safetensors"}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in weights} == {"0o644"}


@pytest.fixture
def trained_checkpoint_files(tiny_pretrained, tmp_path, umask):
    import torch

    from lavida.models.checkpoint import save_checkpoint
    from lavida.models.lavida import build_lavida

    umask(0o022)
    torch.manual_seed(0)
    return save_checkpoint(build_lavida(tiny_pretrained), tiny_pretrained, tmp_path / "ckpt")
