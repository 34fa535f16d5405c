"""Weighted choice of a training source per sample.

The paper gives no mixture; the official release draws a dataset per sample with fixed ratios
(lavida_official.md §8): vos .05, refvos .20, mevis .25, refdavis .20, cityscapes .05, the refCOCO
family .10, ade20k .10, mapillary .05 — 70 % video, 30 % image. The release reads the four referring
image datasets as one; we keep them as four sources and split the family's .10 **equally** (.025
each). Splitting by size would give nearly the same numbers: refCOCO, refCOCO+ and refCOCOg share
their COCO images and refCLEF has about as many (17–27 K training images each), and equal shares keep
the mixture independent of what was downloaded.

Weights are relative (normalised to sum 1); a weight of 0 leaves the source out. A source the
mixture needs but that is not available is an error by default (the experiment would silently
change); :meth:`Mixture.restricted` with ``on_missing="renormalize"`` drops it with a warning and
renormalises the rest instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

REFER_FAMILY = ("refclef", "refcoco", "refcoco+", "refcocog")

# The official release's ratios (lavida_official.md §8), refCOCO family split equally.
OFFICIAL_WEIGHTS: dict[str, float] = {
    "vos": 0.05,
    "refvos": 0.20,
    "mevis": 0.25,
    "refdavis": 0.20,
    "cityscapes": 0.05,
    **{name: 0.10 / len(REFER_FAMILY) for name in REFER_FAMILY},
    "ade20k": 0.10,
    "mapillary": 0.05,
}

OnMissing = Literal["error", "renormalize"]


class Mixture:
    """Draws a source name with probability proportional to its weight.

    Args:
        weights: Source name → non-negative weight (relative; zeros are dropped).

    Raises:
        ValueError: a negative or non-finite weight, or no positive weight.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        for name, weight in weights.items():
            if not math.isfinite(float(weight)) or float(weight) < 0:
                raise ValueError(f"Mixture weight of '{name}' must be a finite number ≥ 0, got {weight}.")
        kept = {name: float(weight) for name, weight in weights.items() if float(weight) > 0}
        if not kept:
            raise ValueError(
                f"The mixture has no source with a positive weight ({dict(weights)}); give at least one "
                "source a weight > 0 in data.sources.<name>.weight."
            )
        total = sum(kept.values())
        self.names: tuple[str, ...] = tuple(kept)
        self.probabilities = np.asarray([kept[name] / total for name in self.names])  # (S,) sums to 1
        self._cdf = np.cumsum(self.probabilities)
        # The cumulative sum can end a rounding step below 1 (seven equal weights: 1 - 2.2e-16); pinning
        # it to 1 keeps every uniform draw in [0, 1) inside the last source's interval.
        self._cdf[-1] = 1.0

    @property
    def weights(self) -> dict[str, float]:
        """Normalised weights, name → probability."""
        return dict(zip(self.names, self.probabilities.tolist(), strict=True))

    def draw(self, rng: np.random.Generator) -> str:
        """One source name (consumes exactly one uniform from ``rng``)."""
        return self.names[int(np.searchsorted(self._cdf, rng.random(), side="right"))]

    def restricted(
        self, available: Collection[str], *, on_missing: OnMissing = "error", reasons: Sequence[str] = ()
    ) -> Mixture:
        """The mixture over the sources in ``available`` only.

        Args:
            available: Sources that can be read.
            on_missing: ``"error"`` raises if a weighted source is unavailable; ``"renormalize"`` drops
                it with a warning and renormalises the remaining weights.
            reasons: Lines saying why sources are unavailable, added to that one warning.

        Raises:
            ValueError: a source is missing (``on_missing="error"``), or none is left.
        """
        if on_missing not in ("error", "renormalize"):
            raise ValueError(f"on_missing must be 'error' or 'renormalize', got {on_missing!r}.")
        missing = [name for name in self.names if name not in available]
        if not missing:
            return self
        share = sum(self.weights[name] for name in missing)
        if on_missing == "error":
            raise ValueError(
                f"Training sources {missing} (together {share:.0%} of the mixture) are not available. "
                "Download and prepare them (data/README.md), set their weight to 0 "
                "(data.sources.<name>.weight=0), or set data.missing_sources=renormalize to train on the rest."
            )
        kept = {name: weight for name, weight in self.weights.items() if name not in missing}
        if not kept:
            raise ValueError(
                f"None of the mixture's sources {list(self.names)} is available; see data/README.md."
            )
        log.warning(
            "Sources %s are not available; their %.0f%% of the mixture is spread over %s.%s",
            missing,
            100 * share,
            list(kept),
            "".join(f"\n  {reason}" for reason in reasons),
        )
        return Mixture(kept)

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={prob:.3f}" for name, prob in self.weights.items())
        return f"Mixture({parts})"
