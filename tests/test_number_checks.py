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


@pytest.mark.parametrize(
    ("text", "minimum", "parsed"),
    [
        ("3", 1, 3),
        ("0", 0, 0),
        (" 7 ", 1, 7),
        ("0", 1, None),
        ("-1", 0, None),
        ("1.5", 1, None),
        ("x", 0, None),
        ("-1", -1, -1),  # "a whole number ≥ minimum": negative minimums take negative numbers
        ("-2", -1, None),
    ],
)
def test_count_at_least_parses_whole_numbers_from_its_minimum(text, minimum, parsed):
    import argparse

    from lavida.number_checks import count_at_least

    parse = count_at_least(minimum)
    if parsed is not None:
        assert parse(text) == parsed
        return
    with pytest.raises(
        argparse.ArgumentTypeError, match=f"expected a whole number ≥ {minimum}, got {text!r}"
    ):
        parse(text)
