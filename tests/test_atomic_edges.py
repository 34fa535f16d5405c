"""lavida.atomic at its edges: exact name lengths, the hostname and PID in staging names, the exchange
and its fallbacks (forced, so they run on every system), clean-up that cannot finish, the umask's source."""

import ctypes
import errno
import os
import re
import stat
from pathlib import Path

import pytest
from conftest import skip_without_exchange, tree_listing

import lavida.atomic as atomic
from lavida.atomic import atomic_dir, atomic_path, exchange_paths, write_text


@pytest.fixture
def umask():
    """Set the process's umask for one test; restored after."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def _swap_folders(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "x").write_text("from a")
    (second / "y").write_text("from b")
    return first, second


# -- names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tail", "reserve", "expected"),
    [
        # room for the name = 255 - reserve - len(".<tail>") = 255 - 0 - 3 = 252 bytes
        ("a" * 301, ".x", 0, "." + "a" * 252 + ".x"),
        ("a" * 252, ".x", 0, "." + "a" * 252 + ".x"),  # exactly the room: kept whole
        ("short", ".x", 0, ".short.x"),
        # "é" is 2 bytes in UTF-8: 126 of them fill the 252 bytes
        ("é" * 200, ".x", 0, "." + "é" * 126 + ".x"),
        # "a" + 125 "é" is 251 bytes; a 126th "é" would make 253: only whole characters are kept
        ("a" + "é" * 200, ".x", 0, ".a" + "é" * 125 + ".x"),
        # reserve 20: 255 - 20 - 3 = 232 bytes
        ("a" * 301, ".x", 20, "." + "a" * 232 + ".x"),
    ],
)
def test_hidden_names_are_cut_to_the_last_whole_character_that_fits(name, tail, reserve, expected):
    """The sibling's name is the target's cut just short enough: 255 bytes minus ``reserve``, no less."""
    assert atomic._hidden_name(name, tail, reserve=reserve) == expected


def test_the_temporary_of_a_255_byte_name_is_255_bytes(tmp_path):
    """``.<name>.<pid>.<hex>.tmp`` with the name cut to fit uses the whole 255 bytes (1 + room + tail)."""
    target = tmp_path / ("b" * 255)
    with atomic_path(target) as temporary:
        assert len(os.fsencode(temporary.name)) == 255
        assert re.fullmatch(r"\.b+\.\d+\.[0-9a-f]{8}\.tmp", temporary.name)
        temporary.write_text("new")
    assert tree_listing(tmp_path) == {"b" * 255: "new"}


def test_a_suffix_of_32_bytes_is_kept_and_one_of_33_is_not(tmp_path):
    """The temporary keeps suffixes up to 32 bytes (``_MAX_KEPT_SUFFIX``; ".safetensors" is 12)."""
    kept, dropped = "." + "k" * 31, "." + "d" * 32  # 32 and 33 bytes
    with atomic_path(tmp_path / f"x{kept}") as temporary:
        assert re.fullmatch(rf"\.x{kept}\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp{kept}", temporary.name)
        temporary.write_text("x")
    with atomic_path(tmp_path / f"y{dropped}") as temporary:
        assert re.fullmatch(rf"\.y{dropped}\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", temporary.name)
        temporary.write_text("y")
    assert tree_listing(tmp_path) == {f"x{kept}": "x", f"y{dropped}": "y"}


@pytest.mark.parametrize(
    ("hostname", "host"),
    [
        ("node-7.cluster_a", "node-7-cluster-a"),  # runs of characters outside [A-Za-z0-9-] become "-"
        ("", "host"),  # no name at all
        ("h" * 70, "h" * 64),  # at most 64 characters
    ],
)
def test_staging_folders_are_named_after_the_host_and_pid(tmp_path, monkeypatch, hostname, host):
    """``.<name>.<host>.<pid>.<8 hex>.tmp``: the host part is what tells this machine's abandoned staging
    folders from those of another machine sharing the file system."""
    monkeypatch.setattr(atomic.socket, "gethostname", lambda: hostname)
    with atomic_dir(tmp_path / "out") as staging:
        assert re.fullmatch(rf"\.out\.{host}\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", staging.name)
        (staging / "a.txt").write_text("a")
    assert tree_listing(tmp_path) == {"out": {"a.txt": "a"}}


def test_a_writer_with_the_largest_pid_still_gets_a_staging_folder(tmp_path, monkeypatch):
    """Linux PIDs stay below pid_max, at most PID_MAX_LIMIT = 4194304 (<linux/threads.h>): with the largest,
    4194303, the staging name of a 255-byte folder name uses all 255 bytes, and must not need one more."""
    monkeypatch.setattr(atomic.os, "getpid", lambda: 4194303)
    name = "c" * 255
    with atomic_dir(tmp_path / name) as staging:
        assert len(os.fsencode(staging.name)) == 255 and ".4194303." in staging.name
        (staging / "a.txt").write_text("a")
    assert tree_listing(tmp_path) == {name: {"a.txt": "a"}}


# -- parents, clean-up --------------------------------------------------------------------------------


def test_missing_parent_folders_are_created_at_any_depth(tmp_path):
    write_text(tmp_path / "a" / "b" / "report.md", "text")
    with atomic_dir(tmp_path / "c" / "d" / "out") as staging:
        (staging / "x.txt").write_text("x")
    assert tree_listing(tmp_path) == {"a": {"b": {"report.md": "text"}}, "c": {"d": {"out": {"x.txt": "x"}}}}


def test_a_block_failing_before_it_wrote_raises_its_own_error(tmp_path):
    """No temporary file exists yet: removing it must not raise (FileNotFoundError) in place of the error."""
    with pytest.raises(RuntimeError, match="before writing"):
        with atomic_path(tmp_path / "report.md"):
            raise RuntimeError("before writing")
    assert tree_listing(tmp_path) == {}


def test_two_writers_of_one_folder_in_one_process_get_their_own_staging(tmp_path):
    """Nested (or threaded) writers of the same folder must not share a staging folder; the last to
    finish wins, whole."""
    out = tmp_path / "out"
    with atomic_dir(out) as first, atomic_dir(out) as second:
        assert first != second
        (first / "from.txt").write_text("first")
        (second / "from.txt").write_text("second")
    assert tree_listing(tmp_path) == {"out": {"from.txt": "first"}}  # ``first`` closed last


def test_the_fallback_sets_each_old_folder_aside_under_its_own_name(tmp_path, monkeypatch):
    """A kill in the fallback leaves ``.out.<pid>.<hex>.old`` as the only copy; a later writer with the same
    PID (containers reuse them) must not pick the same name."""
    monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)
    real = os.replace
    set_aside = []

    def replace(source, target):
        if Path(target).name.endswith(".old"):
            set_aside.append(Path(target).name)
        return real(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)
    for version in ("1", "2", "3"):
        with atomic_dir(tmp_path / "out") as staging:
            (staging / "v.txt").write_text(version)
    assert len(set_aside) == 2 and len(set(set_aside)) == 2  # the first write had nothing to set aside
    assert all(re.fullmatch(rf"\.out\.{os.getpid()}\.[0-9a-f]{{8}}\.old", name) for name in set_aside)
    assert tree_listing(tmp_path) == {"out": {"v.txt": "3"}}


def _undeletable(monkeypatch, name: str) -> None:
    """Files called ``name`` refuse deletion, as another user's file in a folder of theirs would (the
    tests may run as root, which no mode stops)."""
    real = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fsdecode(os.path.basename(path)) == name:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "unlink", unlink)


@pytest.mark.parametrize("exchange", [True, False])
def test_an_old_version_that_cannot_be_deleted_does_not_fail_the_write(tmp_path, monkeypatch, exchange):
    """The new folder is in place once renamed; what of the old one cannot be deleted is left, silently."""
    if exchange:
        skip_without_exchange(tmp_path)
    else:
        monkeypatch.setattr(atomic, "exchange_paths", lambda first, second: False)
    out = tmp_path / "out"
    with atomic_dir(out) as staging:
        (staging / "locked.bin").write_text("old")
    _undeletable(monkeypatch, "locked.bin")
    with atomic_dir(out) as staging:
        (staging / "new.txt").write_text("new")
    listing = tree_listing(tmp_path)
    assert listing.pop("out") == {"new.txt": "new"}
    assert list(listing.values()) == [{"locked.bin": "old"}]  # the old version's leftover, hidden


def test_an_abandoned_staging_folder_that_cannot_be_deleted_does_not_fail_the_write(tmp_path, monkeypatch):
    """A leftover that cannot be removed (another user's, say) is left; the write goes on."""
    dead = 4194304  # never a Linux PID: PIDs stay below pid_max, at most PID_MAX_LIMIT = 4194304
    left = tmp_path / f"{atomic._staging_prefix(tmp_path / 'out')}{dead}.abcd1234.tmp"
    left.mkdir()
    (left / "locked.bin").write_text("x")
    _undeletable(monkeypatch, "locked.bin")
    with atomic_dir(tmp_path / "out") as staging:
        (staging / "new.txt").write_text("new")
    assert tree_listing(tmp_path) == {"out": {"new.txt": "new"}, left.name: {"locked.bin": "x"}}


def test_a_failed_flush_of_the_parent_raises_that_error(tmp_path, monkeypatch):
    """The folder is renamed, then its parent flushed; if that flush fails (EIO), the EIO is raised, not a
    FileNotFoundError from removing a staging folder that is already gone."""
    out = tmp_path / "out"
    with atomic_dir(out) as staging:
        (staging / "v.txt").write_text("old")
    parent = tmp_path.stat()
    real = os.fsync

    def fsync(descriptor):
        status = os.fstat(descriptor)
        if (status.st_dev, status.st_ino) == (parent.st_dev, parent.st_ino):
            raise OSError(errno.EIO, "Input/output error")
        return real(descriptor)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(OSError) as raised:
        with atomic_dir(out) as staging:
            (staging / "v.txt").write_text("new")
    assert raised.value.errno == errno.EIO
    assert tree_listing(tmp_path) == {"out": {"v.txt": "new"}}  # renamed before the flush failed


# -- the exchange and its fallbacks -------------------------------------------------------------------


def test_exchange_paths_swaps_where_the_c_library_does(tmp_path):
    """Probed directly through ctypes: where renameat2 exchanges, exchange_paths must too (and not fall
    back to the two-rename path, which can leave the target missing after a kill)."""
    skip_without_exchange(tmp_path)
    first, second = _swap_folders(tmp_path)
    assert exchange_paths(first, second) is True
    assert tree_listing(tmp_path) == {"a": {"y": "from b"}, "b": {"x": "from a"}}


def test_exchange_paths_takes_relative_paths(tmp_path, monkeypatch):
    """Relative paths are relative to the working directory (AT_FDCWD), as for os.replace."""
    skip_without_exchange(tmp_path)
    _swap_folders(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert exchange_paths("a", Path("b")) is True
    assert tree_listing(tmp_path) == {"a": {"y": "from b"}, "b": {"x": "from a"}}


def _fake_renameat2(code: int):
    """A renameat2 that fails with errno ``code``, as the C library reports it (-1 and errno)."""

    def renameat2(*args):
        ctypes.set_errno(code)
        return -1

    return renameat2


@pytest.mark.parametrize("code", [None, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP])
def test_without_an_exchange_folders_are_still_replaced(tmp_path, monkeypatch, code):
    """No renameat2 at all (off Linux, or a C library lacking it: None), or one the file system refuses
    (some network file systems answer EINVAL, old kernels ENOSYS): exchange_paths says False, swaps
    nothing, and atomic_dir replaces the folder by the two renames."""
    monkeypatch.setattr(atomic, "_renameat2", lambda: None if code is None else _fake_renameat2(code))
    first, second = _swap_folders(tmp_path)
    assert exchange_paths(first, second) is False
    out = tmp_path / "out"
    for version in ("old", "new"):
        with atomic_dir(out) as staging:
            (staging / f"{version}.txt").write_text(version)
    assert tree_listing(tmp_path) == {"a": {"x": "from a"}, "b": {"y": "from b"}, "out": {"new.txt": "new"}}


def test_a_real_exchange_failure_is_raised_with_its_errno(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_renameat2", lambda: _fake_renameat2(errno.ENOENT))
    with pytest.raises(FileNotFoundError):
        exchange_paths(tmp_path / "a", tmp_path / "missing")


def test_renameat2_is_not_looked_up_off_linux(monkeypatch):
    monkeypatch.setattr(atomic.sys, "platform", "darwin")
    assert atomic._renameat2.__wrapped__() is None


# -- permissions and the umask ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_link_written_through_atomic_path_leaves_what_it_points_to_alone(tmp_path, umask, kind):
    """Only regular files written in place get read permissions added: a link to a private folder (0700)
    or to a private file (0600, say another run's weights) must not open it to the group and others."""
    umask(0o022)
    private = tmp_path / "private"
    if kind == "folder":
        private.mkdir()
        private.chmod(0o700)
    else:
        private.write_bytes(b"w")
        private.chmod(0o600)
    with atomic_path(tmp_path / "latest") as temporary:
        os.symlink(private, temporary)
    assert (tmp_path / "latest").resolve() == private
    assert stat.S_IMODE(private.stat().st_mode) == (0o700 if kind == "folder" else 0o600)


def test_a_file_system_that_refuses_chmod_still_gets_the_file(tmp_path, umask, monkeypatch):
    """A mount without POSIX modes (CIFS, some FUSE file systems) answers chmod with EPERM: the read bits
    cannot be added there, and the write must still land whole."""
    umask(0o022)
    refused = []

    def refuse(path, mode):
        refused.append(mode)
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr(atomic.os, "chmod", refuse)
    with atomic_path(tmp_path / "weights.bin") as temporary:
        temporary.write_bytes(b"w")
        descriptor = os.open(temporary, os.O_RDONLY)
        os.fchmod(descriptor, 0o600)  # as safetensors leaves its files
        os.close(descriptor)
    assert refused == [0o644]  # the read bits were asked for
    assert (tmp_path / "weights.bin").read_bytes() == b"w"
    assert stat.S_IMODE((tmp_path / "weights.bin").stat().st_mode) == 0o600


def test_a_file_gone_before_its_mode_is_read_is_left_alone(tmp_path):
    """A file removed meanwhile (by the block's own cleanup, or another process) is not an error of the
    write: there is nothing left to make readable."""
    atomic._readable_as_umask_allows(tmp_path / "gone.bin", umask=0o022)  # no FileNotFoundError


def test_on_linux_the_umask_is_read_without_setting_it(tmp_path, umask, monkeypatch):
    """os.umask can only be read by setting it, which races with other threads creating files; Linux
    shows it in /proc/self/status. A private file under umask 027 gets 0600 | (0444 & ~027) = 0640."""
    if "Umask:" not in Path("/proc/self/status").read_text(encoding="utf-8"):
        pytest.skip("needs Linux's /proc/self/status (kernel 4.7 or later)")
    umask(0o027)
    calls = []
    real = os.umask
    monkeypatch.setattr(atomic.os, "umask", lambda mask: calls.append(mask) or real(mask))
    with atomic_path(tmp_path / "weights.bin") as temporary:
        temporary.write_bytes(b"w")
        temporary.chmod(0o600)
    assert stat.S_IMODE((tmp_path / "weights.bin").stat().st_mode) == 0o640
    assert calls == []


def test_without_proc_the_umask_is_set_and_restored(tmp_path, umask, monkeypatch):
    """Where /proc cannot be read, the umask is still found (0640 as above) and left as it was."""
    umask(0o027)
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if str(self) == "/proc/self/status":
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with atomic_path(tmp_path / "weights.bin") as temporary:
        temporary.write_bytes(b"w")
        temporary.chmod(0o600)
    assert stat.S_IMODE((tmp_path / "weights.bin").stat().st_mode) == 0o640
    assert umask(0o027) == 0o027  # os.umask returns the mask it replaces


def test_a_staging_folder_of_another_users_running_writer_is_kept(tmp_path, monkeypatch):
    """Signal 0 to another user's process is refused with EPERM: the process exists, so its staging folder
    is a live write (a colleague's run on a shared folder) and must not be deleted."""

    def kill(pid, signal):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "kill", kill)
    staging = tmp_path / f"{atomic._staging_prefix(tmp_path / 'out')}4194303.abcd1234.tmp"
    staging.mkdir()
    (staging / "part.bin").write_bytes(b"x")
    with atomic_dir(tmp_path / "out") as mine:
        (mine / "new.txt").write_text("new")
    assert tree_listing(tmp_path) == {"out": {"new.txt": "new"}, staging.name: {"part.bin": "x"}}


def test_a_running_writer_is_only_asked_whether_it_runs(tmp_path, monkeypatch):
    """The liveness check of a staging folder's PID is signal 0, which delivers nothing: a real signal
    (SIGHUP, say) would end the other process writing the same folder. The writer here is this process,
    which runs, so its staging folder is kept."""
    sent = []
    monkeypatch.setattr(atomic.os, "kill", lambda pid, signal: sent.append((pid, signal)))
    staging = tmp_path / f"{atomic._staging_prefix(tmp_path / 'out')}{os.getpid()}.abcd1234.tmp"
    staging.mkdir()
    with atomic_dir(tmp_path / "out") as mine:
        (mine / "new.txt").write_text("new")
    assert sent == [(os.getpid(), 0)]
    assert tree_listing(tmp_path) == {"out": {"new.txt": "new"}, staging.name: {}}
