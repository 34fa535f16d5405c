"""The synthetic scene generator's building blocks, against frames worked out by hand.

``shape_mask`` stencils are drawn on paper at sizes 5 and 8 (8 is the smallest size ``random_object``
draws); ``render`` is run on a 4×5 frame with two moving objects whose corners, border bounces and
paint order are worked out below; ``background`` is fed scripted draws for which the expected texture
follows from bilinear interpolation being exact on bilinear functions.
"""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

import lavida.synthetic.shapes as shapes
from lavida.synthetic.shapes import (
    COLOURS,
    SceneObject,
    all_descriptions,
    background,
    describe,
    random_object,
    render,
    shape_mask,
    split_description,
)


def _picture(rows: str) -> np.ndarray:
    """'#' = inside, '.' = outside; one string per row, separated by spaces."""
    return np.array([[c == "#" for c in row] for row in rows.split()])


# Size 5: centre c = 2, half-size 2.5, so the offsets (i - c) / 2.5 are -0.8, -0.4, 0, 0.4, 0.8.
# Size 8: c = 3.5, half-size 4, offsets ±0.125, ±0.375, ±0.625, ±0.875.
STENCILS = {
    # r <= 0.95: corners r = √(0.8² + 0.8²) = 1.13 out, (0.8, 0.4) r = 0.89 in.
    ("circle", 5): ".###. ##### ##### ##### .###.",
    # size 8: (0.875, 0.375) r = 0.95196 out; (0.875, 0.125) r = 0.884 in; (0.625, 0.625) r = 0.884 in.
    ("circle", 8): "...##... .######. .######. ######## ######## .######. .######. ...##...",
    # |dx|, |dy| <= 0.8: every offset of size 5 is within, the ±0.8 rim included.
    ("square", 5): "##### ##### ##### ##### #####",
    # size 8: ±0.875 is out, so a one-pixel border is left.
    ("square", 8): "........ .######. .######. .######. .######. .######. .######. ........",
    # dy <= 0.85 and dy >= -0.85 + 1.7|dx|: row dy=-0.8 needs |dx| <= 0.03 (centre only); dy=-0.4:
    # |dx| <= 0.26 (centre); dy=0: |dx| <= 0.5 (3 px); dy=0.4: |dx| <= 0.76 (3 px); dy=0.8: |dx| <= 0.97 (5 px).
    ("triangle", 5): "..#.. ..#.. .###. .###. #####",
    # size 8: row dy=0.875 > 0.85 is empty; dy=±0.125 ... 0.625 give |dx| <= 0.13, 0.28, 0.43, 0.57,
    # 0.72, 0.87 -> 2, 2, 4, 4, 6, 6 px.
    ("triangle", 8): "........ ...##... ...##... ..####.. ..####.. .######. .######. ........",
    # bars |d| <= 0.3 wide (centre column / row only at size 5), |d| <= 0.95 long (all of them).
    ("cross", 5): "..#.. ..#.. ##### ..#.. ..#..",
    # size 8: |d| <= 0.3 keeps the offsets ±0.125: bars two pixels wide.
    ("cross", 8): "...##... ...##... ...##... ######## ######## ...##... ...##... ...##...",
    # 0.55 <= r <= 0.95: the centre (r=0) and its 4-neighbours (r=0.4) are out, (0.4, 0.4) r=0.57 in.
    ("ring", 5): ".###. ##.## #...# ##.## .###.",
    # size 8: (0.125, 0.375) r=0.40 and (0.375, 0.375) r=0.53 out; (0.125, 0.625) r=0.64 in.
    ("ring", 8): "...##... .######. .#....#. ##....## ##....## .#....#. .######. ...##...",
    # |dx| + |dy| <= 0.95: 0.8 + 0 in, 0.4 + 0.4 in, 0.8 + 0.4 out.
    ("diamond", 5): "..#.. .###. ##### .###. ..#..",
    # size 8: 0.875 + 0.125 = 1.0 out, 0.625 + 0.125 = 0.75 in, 0.375 + 0.375 = 0.75 in, 0.625 + 0.375 = 1.0 out.
    ("diamond", 8): "........ ...##... ..####.. .######. .######. ..####.. ...##... ........",
}


@pytest.mark.parametrize(("shape", "size"), list(STENCILS))
def test_shape_stencil_matches_the_hand_drawn_one(shape, size):
    """Each stencil's geometry (centre, scale, thresholds, which side of each bound is inside)."""
    np.testing.assert_array_equal(shape_mask(shape, size), _picture(STENCILS[shape, size]))


def test_cross_bars_reach_exactly_to_their_inclusive_end_at_size_20():
    """At size 20 the bars' ends sit exactly on |d| = 0.95 ((19 - 9.5) / 10), which is inside; at size
    21 the end offset 10 / 10.5 = 0.952 is outside, so the bars stop one pixel short of the border."""
    at_20, at_21 = shape_mask("cross", 20), shape_mask("cross", 21)
    assert at_20[9, 0] and at_20[9, 19] and at_20[0, 9] and at_20[19, 9]
    # size 21: the centre row/column is 10; the bars run over 1..19, not 0 or 20.
    assert at_21[10].tolist() == [False] + [True] * 19 + [False]
    assert at_21[:, 10].tolist() == [False] + [True] * 19 + [False]


def test_pixels_exactly_on_a_stencil_edge_are_inside():
    """Every bound is inclusive (<=, >=); these sizes put pixel centres exactly on an edge."""
    # cross, size 10: c = 4.5, half-size 5; |x - 4.5| / 5 <= 0.3 keeps x = 3..6 (3 and 6 on the edge),
    # in both bars.
    cross = shape_mask("cross", 10)
    bar = [False] * 3 + [True] * 4 + [False] * 3
    assert cross[0].tolist() == bar and cross[:, 0].tolist() == bar
    # triangle, size 20: row 18 has dy = 8.5 / 10 = 0.85, the bottom edge: inside, and as wide as the
    # stencil (|dx| <= (0.85 + 0.85) / 1.7 = 1); row 19 (dy = 0.95) is below it.
    triangle = shape_mask("triangle", 20)
    assert triangle[18].all() and not triangle[19].any()
    # triangle, size 22: pixel (19, 0) has dy = 8.5 / 11 = 17/22 and |dx| = 10.5 / 11 = 21/22, so
    # -0.85 + 1.7·21/22 = (-18.7 + 35.7) / 22 = 17/22: on the slanted edge, inside (and its mirror image).
    triangle = shape_mask("triangle", 22)
    assert triangle[19, 0] and triangle[19, 21] and not triangle[18, 0]
    # diamond, size 40: pixels (10, 10) and (1, 19) have |dx| + |dy| = 9.5/20 + 9.5/20 = 18.5/20 + 0.5/20
    # = 0.95, the edge.
    diamond = shape_mask("diamond", 40)
    assert diamond[10, 10] and diamond[29, 29] and diamond[1, 19] and not diamond[0, 19]


def test_unknown_shape_is_refused():
    with pytest.raises(ValueError, match=r"^Unknown shape 'hexagon'; expected one of \("):
        shape_mask("hexagon", 8)


def test_descriptions_round_trip_and_cover_every_colour_and_shape():
    """``split_description`` inverts ``describe`` (a shape name with a space included: only the first
    space separates the colour); the catalogue is every colour × shape pair once, colour-major."""
    assert describe("red", "circle") == "red circle"
    assert split_description("red circle") == ("red", "circle")
    assert split_description(describe("blue", "rounded square")) == ("blue", "rounded square")
    expected = [f"{c} {s}" for c in COLOURS for s in shapes.SHAPES]  # 8 colours × 6 shapes
    assert all_descriptions() == expected and len(expected) == 48
    assert SceneObject("cyan", "ring", 8, (0.0, 0.0), (0.0, 0.0)).description == "cyan ring"


# Expected hue (degrees) of each colour name; the palette must be recognisably what it is called.
HUES = {"red": 0, "green": 128, "blue": 228, "yellow": 56, "magenta": 303, "cyan": 183, "orange": 29}


def test_palette_colours_look_like_their_names():
    """Colour names are what the model is taught to ground: each RGB value must be saturated, near the
    named hue (within 15°), and bright; white is a light grey. Hues: colorsys of the RGB triples."""
    for name, hue in HUES.items():
        h, s, v = colorsys.rgb_to_hsv(*(np.asarray(COLOURS[name]) / 255.0))
        distance = min(abs(h * 360 - hue), 360 - abs(h * 360 - hue))
        assert distance <= 15 and s >= 0.7 and v >= 0.7, (name, h * 360, s, v)
    assert min(COLOURS["white"]) >= 230 and max(COLOURS["white"]) - min(COLOURS["white"]) <= 10


# ---- render: a 4×5 frame, 5 frames, worked out by hand ---------------------------------------------
#
# Object 1, red square of size 2 (a full 2×2 stencil), start (1, 1), velocity (-1, 0.8). Its top-left
# corner bounces between 0 and 4 - 2 = 2 (rows) and 5 - 2 = 3 (columns), a triangle wave:
#   rows 1 - t = 1, 0, -1, -2, -3 -> 1, 0, 1, 2, 1;  columns 1 + 0.8t = 1, 1.8, 2.6, 3.4, 4.2 -> 1, 1.8,
#   2.6, 2.6, 1.8, rounded 1, 2, 3, 3, 2.
# Object 2, blue cross of size 3 (a plus sign: only the centre column/row is within |d| <= 0.3), start
# (1, 3), velocity (0, -1), visible on frames [1, 4). Rows: 1 (limit 1, stays); columns 3 - t = 2, 1, 0.
# It is drawn after object 1, so it is on top where they overlap.
EXPECTED_IDS = [
    "00000 01100 01100 00000",  # t=0: square at (1, 1); the cross has not appeared
    "00110 00120 00222 00020",  # t=1: square at (0, 2); cross centred at (2, 3), over the square at (1, 3)
    "00000 00211 02221 00200",  # t=2: square at (1, 3); cross centred at (2, 2)
    "00000 02000 22211 02011",  # t=3: square at (2, 3); cross centred at (2, 1)
    "00000 00110 00110 00000",  # t=4: square at (1, 2); the cross has gone (disappear = 4)
]


def _scene() -> list[SceneObject]:
    return [
        SceneObject("red", "square", 2, (1.0, 1.0), (-1.0, 0.8)),
        SceneObject("blue", "cross", 3, (1.0, 3.0), (0.0, -1.0), appear=1, disappear=4),
    ]


@pytest.fixture
def flat_background(monkeypatch):
    """Replace the textured background by a flat grey of the returned level (settable)."""
    level = {"grey": 100.0}

    def flat(height, width, rng):
        return np.full((height, width, 3), level["grey"], dtype=np.float32)

    monkeypatch.setattr(shapes, "background", flat)
    return level


def test_render_places_bounces_and_stacks_objects_as_worked_out_by_hand(flat_background):
    frames, ids = render(_scene(), height=4, width=5, frames=5, rng=np.random.default_rng(0))
    expected = np.array([[[int(c) for c in row] for row in t.split()] for t in EXPECTED_IDS])
    assert ids.dtype == np.uint8 and frames.dtype == np.uint8 and frames.shape == (5, 4, 5, 3)
    np.testing.assert_array_equal(ids, expected)
    # Pixels show the colour of the object on top (or the grey 100), up to the noise (σ = 3; 5σ = 15).
    palette = np.array([(100, 100, 100), COLOURS["red"], COLOURS["blue"]])
    assert np.abs(frames.astype(int) - palette[expected]).max() <= 15


def test_object_as_tall_as_the_frame_stays_at_the_top(flat_background):
    """No room to move on an axis (size = height): the corner stays at 0 whatever the velocity."""
    scene = [SceneObject("green", "square", 4, (0.0, 0.0), (2.0, 0.0))]
    _, ids = render(scene, height=4, width=6, frames=3, rng=np.random.default_rng(0))
    # size-4 square: offsets ±0.25, ±0.75 all <= 0.8, so a full 4×4 block in columns 0-3 every frame.
    expected = np.zeros((3, 4, 6), dtype=np.uint8)
    expected[:, :, :4] = 1
    np.testing.assert_array_equal(ids, expected)


def test_frame_noise_is_zero_mean_sigma_3_and_truncated_to_uint8(flat_background):
    """Pixel noise N(0, 3²) on a flat grey 100, cast to uint8 (truncation, so the mean falls by 0.5):
    the mean offset is -0.5 and the standard deviation √(9 + 1/12) = 3.01 (49,152 samples: standard
    errors 0.014 and 0.01)."""
    frames, ids = render([], height=64, width=64, frames=4, rng=np.random.default_rng(1))
    offset = frames.astype(np.float64) - 100.0
    assert not ids.any()
    assert -0.6 < offset.mean() < -0.4
    assert 2.95 < offset.std() < 3.07


def test_noisy_pixels_saturate_at_255_instead_of_wrapping(flat_background):
    """On a grey of 254 the noise pushes about half the pixels over 255: they saturate at 255 (the
    clip), none wraps round to a dark value."""
    flat_background["grey"] = 254.0
    frames, _ = render([], height=32, width=32, frames=2, rng=np.random.default_rng(2))
    assert frames.min() >= 254 - 15 and frames.max() == 255


def test_scene_objects_are_visible_from_frame_0_until_removed():
    """The defaults: visible from frame 0 and (for any practical length) never disappearing."""
    obj = SceneObject("red", "circle", 8, (0.0, 0.0), (0.0, 0.0))
    assert obj.appear == 0 and obj.disappear >= 10**6


# ---- random_object: sizes, starts and velocities -----------------------------------------------------


def _draw(n: int, **frame) -> list[SceneObject]:
    rng = np.random.default_rng(3)
    return [random_object("red circle", rng=rng, **frame) for _ in range(n)]


@pytest.mark.parametrize(
    ("height", "width", "sizes"),
    [
        # side from 1/6 to 1/3 of the shorter side (docs/benchmarks.md, "objects ~1.5× larger (side
        # 1/4–1/2 of the frame instead of 1/6–1/3"), half-open, at least 8 and below at least 10.
        (60, 66, set(range(10, 20))),  # 60 // 6 = 10, 60 // 3 = 20
        (30, 38, {8, 9}),  # 30 // 6 = 5 -> 8;  30 // 3 = 10
        (24, 96, {8, 9}),  # 24 // 3 = 8 -> 10
    ],
)
def test_random_object_size_is_a_sixth_to_a_third_of_the_shorter_side(height, width, sizes):
    drawn = _draw(300, height=height, width=width, frames=5)
    assert {o.size for o in drawn} == sizes
    assert all(o.colour == "red" and o.shape == "circle" for o in drawn)


def test_random_object_starts_inside_the_frame_and_moves_at_most_speed():
    """Top-left corner uniform in [0, H - size] × [0, W - size]; velocity uniform in [-1.5, 1.5]² (the
    default speed); 300 draws come within 1 px (start; 5 % of the range) and 0.1 px/frame of each bound."""
    height, width = 30, 60  # not square: a swapped axis shows
    drawn = _draw(300, height=height, width=width, frames=5)
    rows = np.array([o.start[0] for o in drawn]) / np.array([height - o.size for o in drawn])
    cols = np.array([o.start[1] for o in drawn]) / np.array([width - o.size for o in drawn])
    for axis, fraction in enumerate((rows, cols)):  # start / (side - size) fills [0, 1]
        assert 0 <= fraction.min() < 0.05 and 0.95 < fraction.max() <= 1
        assert min(o.start[axis] for o in drawn) < 1
    velocity = np.array([o.velocity for o in drawn])
    assert velocity.shape == (300, 2)
    assert -1.5 <= velocity.min() < -1.4 and 1.4 < velocity.max() <= 1.5
    assert all(o.appear == 0 for o in drawn)


def test_single_frame_objects_stand_still_and_two_frame_ones_move():
    still = _draw(5, height=30, width=38, frames=1)
    assert all(o.velocity == (0.0, 0.0) for o in still)
    moving = _draw(5, height=30, width=38, frames=2)
    assert all(v != 0.0 for o in moving for v in o.velocity)


# ---- background: scripted draws --------------------------------------------------------------------


class _ScriptedRng:
    """Stands in for ``numpy.random.Generator`` in ``background``: ``random`` returns the bilinear field
    f(i, j, k) = 0.1·i + 0.05·j + 0.02·i·j + 0.01·k over the requested grid, ``uniform`` returns the
    scripted values in order; every call is recorded."""

    def __init__(self, uniforms):
        self.uniforms = list(uniforms)
        self.calls = []

    def random(self, shape):
        self.calls.append(("random", shape))
        i, j, k = np.indices(shape, dtype=np.float64)
        return 0.1 * i + 0.05 * j + 0.02 * i * j + 0.01 * k

    def uniform(self, low, high, size=None):
        self.calls.append(("uniform", low, high, size))
        value = self.uniforms.pop(0)
        return np.full(size, value) if size is not None else value


@pytest.mark.parametrize("along", ["columns", "rows"])
def test_background_texture_matches_the_worked_out_field(along):
    """16×24 frame: a coarse (16 // 8 + 2, 24 // 8 + 2) = (4, 5) grid sampled at rows y = linspace(0,
    2.999, 16), columns x = linspace(0, 3.999, 24), interpolated bilinearly, which reproduces the field
    f(y, x) exactly; stripes 0.5 + 0.5·sin(s / p) along the columns (angle 0) or rows (angle π/2) with
    p = 2/π, so sin(s·π/2) = 0, 1, 0, -1, ...; base grey 100 in every channel. Expected:
    100 + 40·(f - 0.5) + 12·(stripes - 0.5)."""
    angle = 0.0 if along == "columns" else np.pi / 2
    rng = _ScriptedRng([angle, 2 / np.pi, 100.0])
    texture = background(16, 24, rng)
    assert rng.calls == [
        ("random", (4, 5, 3)),
        ("uniform", 0, np.pi, None),  # stripe direction
        ("uniform", 3, 9, None),  # stripe period / 2π, in pixels
        ("uniform", 70, 140, 3),  # base grey per channel
    ]
    y = np.linspace(0, 2.999, 16)[:, None, None]
    x = np.linspace(0, 3.999, 24)[None, :, None]
    k = np.arange(3)[None, None, :]
    field = 0.1 * y + 0.05 * x + 0.02 * y * x + 0.01 * k
    s = np.arange(24)[None, :, None] if along == "columns" else np.arange(16)[:, None, None]
    stripes = 0.5 + 0.5 * np.array([0.0, 1.0, 0.0, -1.0])[s % 4]
    expected = 100 + 40 * (field - 0.5) + 12 * (stripes - 0.5)
    assert texture.shape == (16, 24, 3)
    np.testing.assert_allclose(texture, expected, atol=1e-3)


def test_background_values_stay_within_their_design_range():
    """Base grey in [70, 140] ± 20 (smooth noise, 40·[-0.5, 0.5]) ± 6 (stripes, 12·[-0.5, 0.5]): the
    texture never leaves [44, 166], so it is never clipped and stays low-contrast; over 20 seeds the
    channels' means spread over most of the base range."""
    means = []
    for seed in range(20):
        texture = background(24, 40, np.random.default_rng(seed))
        assert texture.shape == (24, 40, 3) and texture.dtype == np.float64  # linspace's float64 wins
        assert 44 <= texture.min() and texture.max() <= 166
        means.extend(texture.mean(axis=(0, 1)))
    assert min(means) < 85 and max(means) > 125
