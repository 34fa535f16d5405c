"""Whether a setting, or a value read from a file, is a number: bools excluded; and counts on a command line.

Python's ``bool`` is an ``int`` (``isinstance(True, int)`` holds), so a key set to ``true`` where a count or a
threshold is expected would pass a plain ``isinstance`` check and be read as 1. numpy's scalars count as
numbers (numpy registers them with :mod:`numbers`); ``numpy.bool_`` does not.
"""

from __future__ import annotations

import argparse
import numbers
from collections.abc import Callable

__all__ = ["count_at_least", "is_real", "is_whole"]


def is_real(value: object) -> bool:
    """A real number (int, float, numpy scalar, ...), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_whole(value: object) -> bool:
    """An integer (int or numpy integer), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def count_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number ≥ ``minimum``. argparse's error then names the flag
    (``argument --repeat: expected a whole number ≥ 1, got '0'``) instead of a failure deep in the run."""

    def parse(text: str) -> int:
        if not text.strip().removeprefix("-").isdecimal() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number ≥ {minimum}, got {text!r}")
        return int(text)

    return parse
