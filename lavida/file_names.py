"""File names made from free text (video names, stream URLs) that are valid on every file system."""

from __future__ import annotations

import re

__all__ = ["safe_file_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(text: str) -> str:
    """``text`` with every run of characters outside A-Z, a-z, 0-9, ``.``, ``_``, ``-`` turned into ``_``.

    ``"scene 1/b"`` → ``"scene_1_b"``. Callers that need distinct names check for clashes themselves,
    ignoring case: ``A`` and ``a`` are one file on macOS and Windows.
    """
    return _UNSAFE.sub("_", text)
