"""Procedural scenes: coloured shapes moving over textured backgrounds, with exact masks and names.

Each object is described by text ("red circle", "blue triangle", ...); a scene renders T frames of
an (H, W) image with each object's per-frame mask. Everything is drawn with numpy from a seeded
``numpy.random.Generator``, so a dataset is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 220, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 210, 220),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")


def describe(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def split_description(description: str) -> tuple[str, str]:
    """The inverse of :func:`describe`: "red circle" → ("red", "circle")."""
    colour, shape = description.split(" ", 1)
    return colour, shape


def all_descriptions() -> list[str]:
    """Every colour × shape description, in a fixed order."""
    return [describe(colour, shape) for colour in COLOURS for shape in SHAPES]


def shape_mask(shape: str, size: int) -> np.ndarray:
    """A (size, size) bool stencil of ``shape``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    dy, dx = (y - c) / (size / 2.0), (x - c) / (size / 2.0)
    radius = np.hypot(dx, dy)
    if shape == "circle":
        return radius <= 0.95
    if shape == "square":
        return (np.abs(dx) <= 0.8) & (np.abs(dy) <= 0.8)
    if shape == "triangle":
        return (dy <= 0.85) & (dy >= -0.85 + 1.7 * np.abs(dx))
    if shape == "cross":
        return ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 0.95)) | ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 0.95))
    if shape == "ring":
        return (radius <= 0.95) & (radius >= 0.55)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 0.95
    raise ValueError(f"Unknown shape '{shape}'; expected one of {SHAPES}.")


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A low-contrast textured background (smooth noise + stripes), (H, W, 3) float64 in [44, 166]."""
    coarse = rng.random((height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    ys = np.linspace(0, coarse.shape[0] - 1.001, height)
    xs = np.linspace(0, coarse.shape[1] - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    smooth = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(3, 9))
    base = rng.uniform(70, 140, size=3).astype(np.float32)
    return np.clip(base + 40 * (smooth - 0.5) + 12 * (stripes[..., None] - 0.5), 0, 255)


@dataclass
class SceneObject:
    """An object moving in a straight line; visible on frames [appear, disappear)."""

    colour: str
    shape: str
    size: int
    start: tuple[float, float]
    velocity: tuple[float, float]
    appear: int = 0
    disappear: int = 1 << 30

    @property
    def description(self) -> str:
        return describe(self.colour, self.shape)


def random_object(
    description: str, *, height: int, width: int, frames: int, rng: np.random.Generator, speed: float = 1.5
) -> SceneObject:
    """An object of ``description`` with a random size, start and velocity inside the frame."""
    colour, shape = split_description(description)
    size = int(rng.integers(max(8, min(height, width) // 6), max(10, min(height, width) // 3)))
    start = (rng.uniform(0, height - size), rng.uniform(0, width - size))
    velocity = tuple(rng.uniform(-speed, speed, size=2)) if frames > 1 else (0.0, 0.0)
    return SceneObject(colour, shape, size, start, velocity)


def render(
    objects: list[SceneObject], *, height: int, width: int, frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene.

    Returns:
        frames: (T, H, W, 3) uint8.
        ids: (T, H, W) uint8 object ids (1-based, in list order; 0 = background; later objects on top).
    """
    canvas = background(height, width, rng)
    video = np.repeat(canvas[None], frames, axis=0)
    noise = rng.normal(0, 3, size=video.shape).astype(np.float32)
    ids = np.zeros((frames, height, width), dtype=np.uint8)
    for number, obj in enumerate(objects, start=1):
        stencil = shape_mask(obj.shape, obj.size)
        colour = np.asarray(COLOURS[obj.colour], dtype=np.float32)
        for t in range(max(obj.appear, 0), min(obj.disappear, frames)):
            y = obj.start[0] + obj.velocity[0] * t
            x = obj.start[1] + obj.velocity[1] * t
            # Bounce off the borders so objects stay in view.
            y = _bounce(y, height - obj.size)
            x = _bounce(x, width - obj.size)
            top, left = int(round(y)), int(round(x))
            region = (slice(top, top + obj.size), slice(left, left + obj.size))
            video[t][region][stencil] = colour
            ids[t][region][stencil] = number
    return np.clip(video + noise, 0, 255).astype(np.uint8), ids


def _bounce(position: float, limit: int) -> float:
    if limit <= 0:
        return 0.0
    period = 2 * limit
    position = position % period
    return position if position <= limit else period - position
