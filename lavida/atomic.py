"""Atomic file writes: write beside the target, then rename into place.

A reader, or a run resumed after a kill, finds either the old file or the new one, never half of one
(``os.replace`` is atomic within a file system). The temporary name is unique to the process and the
call, so two processes writing the same target never share a temporary file, and it keeps the
target's suffix (``np.savez`` appends ``.npz`` to names without it). A write that raises removes its
temporary file.

Folders (``atomic_dir``) are written into a hidden staging sibling that then takes the old folder's
place: the old folder is renamed aside first and deleted after, so a kill leaves the old folder, the
new one, or (between the two renames) the old one under its hidden name, never a mix of both.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_dir", "atomic_path", "write_json", "write_text"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on leaving the block it replaces ``path``.

    The parent folder is created if needed. If the block raises, the temporary file is deleted and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any, **dumps: Any) -> None:
    """Write ``json.dumps(data, **dumps)`` and a final newline to ``path`` atomically."""
    write_text(path, json.dumps(data, **dumps) + "\n")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path`` to fill; on leaving the block it replaces ``path``.

    An existing folder at ``path`` is replaced as a whole, so no file of the old version survives. If
    the block raises, the staging folder is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its folders are private (0700), and this one becomes the user's output.
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    staging.mkdir()
    try:
        yield staging
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
            os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
