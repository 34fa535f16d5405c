"""The metrics' shared input checks (lavida.metrics._validation): the dtypes they return, the bounds of
alpha and beta, the errors for inputs given in the wrong container, and the per-frame pixel maps' shapes.

The metric tests reach these checks through whole metrics, with float32/float64 scores; these pin the
promises made for other inputs.
"""

import re

import numpy as np
import pytest

from lavida.metrics import frame_auc
from lavida.metrics._validation import check_frame_maps, check_labels, check_scores, check_unit_interval
from lavida.metrics.pixel_criterion import PixelCriterion
from lavida.metrics.pixel_per_frame import PerFramePixelAUC


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_scores_are_returned_without_a_copy(dtype):
    """A (T, H, W) map of a long video is large: valid float32/float64 scores come back as the same array."""
    scores = np.array([[0.0, 0.25], [0.5, 1.0]], dtype)
    assert check_scores(scores, fn="f", where="scores") is scores


@pytest.mark.parametrize("dtype", [np.float16, np.uint8, np.int64])
def test_small_floats_and_integers_become_float32(dtype):
    """float16 and integer scores become float32, which holds them exactly (0.25 and 0.5 are powers of
    two; 0 and 1 are the only valid integers) at half the memory of float64."""
    values = [0, 1] if np.issubdtype(dtype, np.integer) else [0.0, 0.25, 0.5, 1.0]
    checked = check_scores(np.array(values, dtype), fn="f", where="scores")
    assert checked.dtype == np.float32
    np.testing.assert_array_equal(checked, np.array(values, np.float64))


def test_wider_floats_become_float64_not_float32():
    """A long double score keeps float64 precision: 1/3 in float32 is 0.3333333432674408, which differs
    from float64's 1/3 by 1e-8, enough to swap two close frames' order in a ranking metric."""
    third = np.longdouble(1) / 3
    checked = check_scores(np.array([third]), fn="f", where="scores")
    assert checked.dtype == np.float64
    assert checked[0] == float(third)


@pytest.mark.parametrize(
    ("check", "values", "message"),
    [
        (
            check_scores,
            np.array([True, False]),
            "f: scores[2] has dtype bool; expected real-valued scores in [0, 1]. A binary prediction is a "
            "valid score map: pass it as numbers, e.g. mask.astype(np.float32).",
        ),
        (check_scores, np.array(["0.5"]), "f: scores[2] must hold real numbers in [0, 1], got dtype <U3."),
        (
            check_scores,
            np.array([0.5j]),
            "f: scores[2] must hold real numbers in [0, 1], got dtype complex128.",
        ),
        (check_labels, np.array(["1"]), "f: scores[2] must be bool or 0/1 numbers, got dtype <U1."),
    ],
)
def test_a_non_numeric_dtype_is_refused_naming_the_input_and_the_dtype(check, values, message):
    """Strings (a csv column read as text) and complex numbers have no order against [0, 1]; bool scores
    would rank every positive alike, and are refused with the conversion that makes them valid scores."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check(values, fn="f", where="scores[2]")


@pytest.mark.parametrize(("value", "ok"), [(1.0, True), (0.5, True), (1.0 + 1e-12, False), (0.0, False)])
def test_alpha_and_beta_lie_in_the_half_open_unit_interval(value, ok):
    """RBDC/TBDC's alpha and beta lie in (0, 1]: 1.0 is allowed (one detection covering the whole track),
    0 is not (every region would count as a detection)."""
    if ok:
        assert check_unit_interval(value, fn="rbdc_tbdc", name="alpha") == value
    else:
        with pytest.raises(ValueError, match=r"rbdc_tbdc: alpha must lie in \(0, 1\]"):
            check_unit_interval(value, fn="rbdc_tbdc", name="alpha")


def test_a_string_is_not_a_sequence_of_videos():
    """A string is a Sequence in Python, so it must be refused by name, not read as one video per character."""
    with pytest.raises(
        TypeError, match=r"frame_auc: scores must be a sequence \(e\.g\. a list\) .*, got str;"
    ):
        frame_auc("0.1 0.9", [np.array([0, 1])])


def test_a_flat_list_of_scores_gets_the_hint_to_wrap_it_and_a_wrong_shape_does_not():
    """[0.1, 0.9] is one video's scores given as two 0-d "videos": the error says how to wrap it. A
    per-video array of another shape is a different mistake and gets no such hint."""
    with pytest.raises(ValueError) as flat:
        frame_auc([0.1, 0.9], [0, 1])
    assert str(flat.value) == (
        "frame_auc: scores[0] must have shape (T,), got shape (); one video's scores go in as "
        "[np.asarray(scores)]."
    )
    with pytest.raises(ValueError) as two_d:
        frame_auc([np.zeros((2, 2))], [np.zeros((2, 2))])
    assert str(two_d.value) == "frame_auc: scores[0] must have shape (T,), got shape (2, 2)."


def test_frame_maps_come_back_one_row_per_frame_and_a_single_frame_is_one_frame():
    scores = np.arange(12, dtype=np.float64).reshape(2, 2, 3) / 11
    labels = np.arange(12).reshape(2, 2, 3) % 2
    s, y = check_frame_maps(scores, labels, fn="f")
    assert s.shape == y.shape == (2, 6) and y.dtype == np.bool_
    assert np.array_equal(s, scores.reshape(2, 6)) and np.array_equal(y, labels.reshape(2, 6) == 1)
    one_s, one_y = check_frame_maps(scores[1], labels[1], fn="f")  # (H, W)
    assert np.array_equal(one_s, s[1:]) and np.array_equal(one_y, y[1:])


@pytest.mark.parametrize("metric", [PixelCriterion, PerFramePixelAUC])
@pytest.mark.parametrize(
    ("shape", "label_shape", "message"),
    [
        ((2, 4, 4), (2, 4, 5), "scores have shape (2, 4, 4) but labels have shape (2, 4, 5)."),
        ((1, 2, 4, 4), (1, 2, 4, 4), "expected non-empty (T, H, W) or (H, W) maps, got shape (1, 2, 4, 4)."),
        ((4,), (4,), "expected non-empty (T, H, W) or (H, W) maps, got shape (4,)."),
        ((2, 0, 4), (2, 0, 4), "expected non-empty (T, H, W) or (H, W) maps, got shape (2, 0, 4)."),
        ((2, 4, 0), (2, 4, 0), "expected non-empty (T, H, W) or (H, W) maps, got shape (2, 4, 0)."),
    ],
)
def test_per_frame_pixel_metrics_refuse_maps_of_the_wrong_shape_naming_themselves(
    metric, shape, label_shape, message
):
    """Both per-frame pixel metrics check their maps alike and name their own update in the message."""
    with pytest.raises(ValueError) as error:
        metric().update(np.zeros(shape), np.zeros(label_shape, dtype=bool))
    assert str(error.value) == f"{metric.__name__}.update: {message}"
