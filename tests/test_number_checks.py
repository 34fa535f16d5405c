"""The shared number predicates: bools are not numbers (a key set to ``true`` must not read as 1)."""

from fractions import Fraction

import numpy as np
import pytest

from lavida.number_checks import is_real, is_whole


@pytest.mark.parametrize(
    ("value", "real", "whole"),
    [
        (3, True, True),
        (np.int64(3), True, True),
        (np.uint8(3), True, True),
        (2.5, True, False),
        (2.0, True, False),  # a float is a number, not a whole number, even when integral
        (np.float32(0.4), True, False),
        (float("nan"), True, False),  # a number: range checks reject it
        (Fraction(2, 5), True, False),
        (True, False, False),
        (np.bool_(True), False, False),
        ("3", False, False),
        (None, False, False),
    ],
)
def test_bools_strings_and_none_are_not_numbers(value, real, whole):
    assert (is_real(value), is_whole(value)) == (real, whole)
