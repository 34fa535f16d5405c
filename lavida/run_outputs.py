"""A finished run's outputs in its output folder, and their removal before a rerun computes anything.

lavida-eval and lavida-demo write their results (``metrics.json`` first among them, the file readers key
on) and the ``.hydra/`` record of the command (:data:`RECORD_DIR`, lavida/cli/record.py) at the end. A
rerun that passes its checks removes the previous ones first, so that a rerun killed midway leaves no
results, or record, describing other results than those now on disk.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

RECORD_DIR = ".hydra"  # the entry points' record of the command, beside its results

__all__ = ["RECORD_DIR", "remove_previous_outputs"]


def remove_previous_outputs(output_dir: Path, *, files: Sequence[str], folders: Sequence[str]) -> None:
    """Remove ``files`` (in order: list the one readers key on first) and then ``folders`` of
    ``output_dir``, where they exist; logs what was removed."""
    removed = []
    for name in files:
        with contextlib.suppress(FileNotFoundError):
            (output_dir / name).unlink()
            removed.append(name)
    for name in folders:
        if (output_dir / name).is_dir():
            shutil.rmtree(output_dir / name)
            removed.append(f"{name}/")
    if removed:
        log.info(
            "%s: removed the previous run's %s; they are written again at the end.",
            output_dir,
            ", ".join(removed),
        )
