"""Whether a setting, or a value read from a file, is a number: bools excluded.

Python's ``bool`` is an ``int`` (``isinstance(True, int)`` holds), so a key set to ``true`` where a count or a
threshold is expected would pass a plain ``isinstance`` check and be read as 1. numpy's scalars count as
numbers (numpy registers them with :mod:`numbers`); ``numpy.bool_`` does not.
"""

from __future__ import annotations

import numbers

__all__ = ["is_real", "is_whole"]


def is_real(value: object) -> bool:
    """A real number (int, float, numpy scalar, ...), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_whole(value: object) -> bool:
    """An integer (int or numpy integer), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
