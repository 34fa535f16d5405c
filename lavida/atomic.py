"""Atomic file writes: write beside the target, then rename into place (and ``read_json``, the
reading side of ``write_json``, whose errors name the file).

A reader, or a run resumed after a kill, finds either the old file or the new one, never half of one
(``os.replace`` is atomic within a file system). The new data is flushed to disk (``fsync``) before the
rename, and the folder holding the name after it, so a crash of the machine or a power cut does not
leave the new name pointing at empty or partly written data either (ext4 and xfs may reorder the
rename before the data otherwise). The temporary name is unique to the process and the
call, so two processes writing the same target never share a temporary file, and it keeps the
target's suffix (``np.savez`` appends ``.npz`` to names without it). A write that raises removes its
temporary file.

Folders (``atomic_dir``) are written into a hidden staging sibling (``.<name>.<host>.<pid>.*.tmp``) that
then takes the old folder's place; staging folders that killed processes of this machine left behind
are removed the next time the same folder is written. On Linux the two folders swap names in one step
(``renameat2`` with ``RENAME_EXCHANGE``), so the target always exists, whole. Where that is
unsupported (other systems, some network file systems) the old folder is renamed aside first and the
staging folder renamed into place after: a kill between the two renames leaves the old folder under
its hidden ``.<name>.*.old`` name and none at the target. Either way a kill never leaves a mix of both
versions.

Files that their writer created private (safetensors writes 0600) get, before the rename, the read
permissions the umask allows, like every other file of the folder.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import glob
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_dir",
    "atomic_path",
    "exchange_paths",
    "read_json",
    "replace_dir",
    "write_json",
    "write_text",
]

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on leaving the block it replaces ``path``.

    The parent folder is created if needed. If the block raises, the temporary file is deleted and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tail = f".{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # The suffix is kept for writers that add their own (np.savez); a long one would crowd out the name.
    suffix = path.suffix if len(os.fsencode(path.suffix)) <= _MAX_KEPT_SUFFIX else ""
    temporary = path.with_name(_hidden_name(path.name, tail + suffix))
    try:
        yield temporary
        _readable_as_umask_allows(temporary, umask=_umask())
        _flush(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _flush(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any, **dumps: Any) -> None:
    """Write ``json.dumps(data, **dumps)`` and a final newline to ``path`` atomically."""
    write_text(path, json.dumps(data, **dumps) + "\n")


def read_json(path: str | Path, *, expected: str) -> Any:
    """Read a JSON file the project wrote (or a person edited); bad JSON is a ``ValueError`` that names
    the file, where the parser stopped, and ``expected`` (what the file should hold)."""
    path = Path(path)
    try:
        # UTF-8 whatever the locale: write_json writes it, and JSON is UTF-8 (RFC 8259).
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {error.start}); expected {expected}. Save the file as UTF-8, "
            f"or delete it to have it written again where that is possible."
        ) from error
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); expected "
            f"{expected}. Fix the file, or delete it to have it written again where that is possible."
        ) from error


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path`` to fill; on leaving the block it replaces ``path``.

    An existing folder at ``path`` is replaced as a whole, so no file of the old version survives. If
    the block raises, the staging folder is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(path)
    # Not tempfile.mkdtemp: its folders are private (0700), and this one becomes the user's output.
    staging = path.with_name(f"{_staging_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}.tmp")
    staging.mkdir()
    try:
        yield staging
        replace_dir(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _staging_prefix(path: Path) -> str:
    """``.<name>.<host>.``: staging folders of ``path`` made on this machine (then comes the PID)."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:64] or "host"
    # Room for the PID and the rest (``<pid>.<8 hex>.tmp``), so a name near the limit still gets one.
    return _hidden_name(path.name, f".{host}.", reserve=len("4194304.01234567.tmp"))


def _remove_abandoned_staging(path: Path) -> None:
    """Delete staging folders of ``path`` that a killed process of this machine left behind.

    Only folders whose PID no longer runs here: a live writer's folder (this or another process, or a
    process of another machine sharing the file system) is never touched. ``.old`` folders are not
    staging folders; after a kill in the fallback rename they may hold the only copy.
    """
    prefix = _staging_prefix(path)
    for candidate in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = candidate.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and candidate.is_dir() and not _running(int(pid)):
            log.info("Removing %s, left by a process that no longer runs.", candidate)
            shutil.rmtree(candidate, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    return True


def replace_dir(staging: str | Path, path: str | Path) -> None:
    """Move the finished folder ``staging`` to ``path``, deleting whatever folder was there.

    For writers that cannot use :func:`atomic_dir` (a training checkpoint is filled by every process of
    a distributed run, so its staging folder needs a name they all know). ``staging`` must lie on the
    same file system as ``path``, e.g. beside it.
    """
    staging, path = Path(staging), Path(path)
    _flush_tree(staging)
    if not path.exists() and not path.is_symlink():
        os.replace(staging, path)
    elif exchange_paths(staging, path):  # the staging name now holds the old version
        _delete(staging)
    else:
        old = path.with_name(_hidden_name(path.name, f".{os.getpid()}.{secrets.token_hex(4)}.old"))
        os.replace(path, old)
        try:
            os.replace(staging, path)
        except BaseException:
            # The new folder could not take the name (another file system, say): the old one takes it
            # back, so a failure that is raised, unlike a kill, never leaves the target missing.
            os.replace(old, path)
            raise
        _delete(old)
    _flush(path.parent)


# Longest name one folder entry may have, in bytes (ext4, xfs, btrfs, tmpfs; APFS and NTFS count
# characters, which are never more than the bytes).
_NAME_MAX = 255
# Longest suffix a temporary file keeps (".safetensors" is 12 bytes).
_MAX_KEPT_SUFFIX = 32


def _hidden_name(name: str, tail: str, *, reserve: int = 0) -> str:
    """``.<name><tail>``, with ``name`` cut short (whole characters) so that it fits in one file name
    with ``reserve`` bytes to spare: a target whose own name is near the limit must still get its
    temporary, staging or ``.old`` sibling."""
    room = _NAME_MAX - reserve - len(os.fsencode(f".{tail}"))
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}{tail}"


def _flush(entry: Path) -> None:
    """Write ``entry``'s data (a file) or names (a folder) to disk before going on.

    Flushed where it can be: not a folder on Windows (which cannot open one), nor what the user may not
    open (a folder of mode 0333 can be written to but not listed), nor on file systems that answer
    EINVAL (some network ones). Those writes still land whole; only their durability across a machine
    crash is then the system's.
    """
    if os.name == "nt" and entry.is_dir():
        return
    try:
        # Windows flushes only files opened for writing; POSIX flushes read-only descriptors too.
        descriptor = os.open(entry, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    except PermissionError:
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(descriptor)


def _flush_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` (and itself), deepest first; files written private
    get the read permissions the umask allows (:func:`_readable_as_umask_allows`)."""
    umask = _umask()  # once per folder, not per file (a dataset folder may hold thousands)
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            file = Path(root, name)
            if not file.is_symlink():
                _readable_as_umask_allows(file, umask=umask)
                _flush(file)
        _flush(Path(root))


def _readable_as_umask_allows(file: Path, *, umask: int) -> None:
    """Add the read permissions ``umask`` (the process's) grants new files, where the writer left them out.

    safetensors (0.8) writes its files with mode 0600, as ``tempfile`` does, so weights saved through it
    (checkpoints, PEFT adapters, the stand-in base models) could not be read by the colleagues who can
    read every other file of the same folder (0644 under the usual umask 022). No permission is removed.
    """
    try:
        mode = file.lstat().st_mode  # a link is left alone, and so is what it points to (chmod follows links)
    except OSError:
        return
    wanted = mode | (0o444 & ~umask)
    if stat.S_ISREG(mode) and wanted != mode:
        try:
            os.chmod(file, stat.S_IMODE(wanted))
        except OSError:  # a file system without POSIX modes: its files are as readable as it makes them
            pass


def _umask() -> int:
    """The process's umask, now (it may change while the process runs): from /proc on Linux, a few
    microseconds; elsewhere set and restored, which is racy while other threads create files."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _delete(entry: Path) -> None:
    """Remove what was replaced: a folder with everything in it, or a file or symbolic link (the link
    itself, never what it points to); rmtree alone fails on those, silently with ignore_errors."""
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(entry, ignore_errors=True)


_AT_FDCWD = -100  # <fcntl.h>: paths relative to the working directory
_RENAME_EXCHANGE = 2  # <linux/fs.h>
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


def exchange_paths(first: str | Path, second: str | Path) -> bool:
    """Swap the names of two existing paths in one atomic step; False where the system cannot.

    Linux's ``renameat2(..., RENAME_EXCHANGE)`` (kernel 3.15, glibc 2.28; ext4, xfs, btrfs, tmpfs and
    overlayfs support it). Any other failure (a missing path, no permission) raises ``OSError``.
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@functools.cache
def _renameat2():
    """The C library's ``renameat2``, typed; None off Linux or with a C library that lacks it."""
    if sys.platform != "linux":
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc ≥ 2.28
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function
