"""Fingerprints of files on disk: cheap ones of their state (``file_state``), for caches that must notice
when their inputs change, and digests of their content (``files_digest``), for a file's identity.

A fingerprint is the path and a digest of the files' relative names, sizes and modification times,
not of their content: prediction folders and videos can hold gigabytes, and rewriting a file changes
its time. Checkpoints and the smoke runs' random stand-ins, which are small and can be rewritten in place,
are hashed by content instead (``files_digest``; ``lavida.models.checkpoint.checkpoint_digest``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["file_state", "files_digest"]


def file_state(path: str | Path) -> dict:
    """``{"path", "files"}`` for a file, or for a folder and every file under it (a missing path: none)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        names = [p.relative_to(path).as_posix() for p in files]
    else:
        files = [path] if path.is_file() else []
        names = [p.name for p in files]
    stats = [p.stat() for p in files]
    listing = [(name, s.st_size, s.st_mtime_ns) for name, s in zip(names, stats, strict=True)]
    return {"path": str(path), "files": hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]}


def files_digest(path: str | Path) -> str:
    """The first 16 hex digits of a SHA-256 over the files of a folder (names, sizes, bytes), or of one file.

    Hidden files and folders in a folder (``.DS_Store``, ``.ipynb_checkpoints/``) are left out: a file
    browser or notebook writes them beside a checkpoint's files, and they are no part of its weights.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    root = path.parent if path.is_file() else path
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
