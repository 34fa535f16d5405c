"""Per-video evaluation results: what is cached on disk, and how it is computed from predictions.

A :class:`VideoResult` holds everything the benchmark metrics need from one video, so that an
interrupted evaluation resumes without recomputing finished videos and shards of a multi-process run
are merged at the end: frame scores and labels of the scored frames, and — for benchmarks with
pixel ground truth — the sufficient statistics of the pixel metrics (pooled pixel-AUC histogram,
per-frame AUC sums, the 40 % criterion's per-frame critical scores) and the scored regions for
RBDC/TBDC. Pixel maps themselves are not stored (UBnormal alone would need tens of GB).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
import torch.nn.functional as F

from lavida.atomic import atomic_path
from lavida.metrics import PerFramePixelAUC, PixelAUC, PixelCriterion, extract_regions

_PREFIXES = {"pixel_auc": PixelAUC, "per_frame": PerFramePixelAUC, "criterion": PixelCriterion}

# Pixel probabilities reach the metrics in float64 (sigmoid in float64), and the pooled AUC resolves
# 60 octaves below 0.5: distinct mask logits stay distinct up to |logit| ≈ 36.7 on the positive side
# (float64's 1 - x) and 41.6 on the negative side, where the release's roc_auc_score on the logits
# orders them. In float32, every logit above ~16.6 became exactly 1.0 and tied.
PIXEL_AUC_OCTAVES = 60


def _pixel_auc() -> PixelAUC:
    return PixelAUC(octaves=PIXEL_AUC_OCTAVES)


@dataclass
class PixelStatistics:
    """Streaming pixel-metric accumulators of one or more videos."""

    pixel_auc: PixelAUC = field(default_factory=_pixel_auc)
    per_frame: PerFramePixelAUC = field(default_factory=PerFramePixelAUC)
    criterion: PixelCriterion = field(default_factory=PixelCriterion)

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add (n, H, W) pixel probabilities and (n, H, W) bool ground truth."""
        self.pixel_auc.update(scores, labels)
        self.per_frame.update(scores, labels)
        self.criterion.update(scores, labels)

    def merge(self, other: PixelStatistics) -> PixelStatistics:
        self.pixel_auc.merge(other.pixel_auc)
        self.per_frame.merge(other.per_frame)
        self.criterion.merge(other.criterion)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {}
        for prefix in _PREFIXES:
            for key, value in getattr(self, prefix).state_dict().items():
                state[f"{prefix}.{key}"] = np.asarray(value)
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> PixelStatistics:
        stats = cls()
        if "pixel_auc.octaves" in state:
            # A cache written with other quantiser settings loads as it was written (its fingerprint
            # then tells the runner to recompute or refuse it); merging needs equal settings.
            stats.pixel_auc = PixelAUC(
                mantissa_bits=int(state["pixel_auc.mantissa_bits"]), octaves=int(state["pixel_auc.octaves"])
            )
        for prefix in _PREFIXES:
            part = {
                key.split(".", 1)[1]: value for key, value in state.items() if key.startswith(prefix + ".")
            }
            getattr(stats, prefix).load_state_dict(part)
        return stats


@dataclass
class VideoResult:
    """One video's contribution to the benchmark metrics.

    Attributes:
        name: The video's name in the benchmark.
        scored: (F,) int64 raw frame indices that were scored.
        frame_scores: (F,) float64 anomaly probabilities.
        frame_labels: (F,) uint8 ground truth.
        pixels: Pixel-metric statistics, or None without pixel ground truth.
        regions: (N, 6) rows ``(frame, x_min, y_min, x_max, y_max, score)`` for RBDC/TBDC, or None.
        fingerprint: Identifies the settings that produced the result (a resumed run must match).
        facts: JSON of what ``fingerprint`` digests (the run's settings and this video's own inputs), so
            that a refused rerun can say which of them differ; "" in caches of earlier versions.
    """

    name: str
    scored: np.ndarray
    frame_scores: np.ndarray
    frame_labels: np.ndarray
    pixels: PixelStatistics | None = None
    regions: np.ndarray | None = None
    fingerprint: str = ""
    facts: str = ""

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` atomically (a temporary file renamed into place), in ``.npz`` format whatever
        its suffix."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "name": np.asarray(self.name),
            "fingerprint": np.asarray(self.fingerprint),
            "facts": np.asarray(self.facts),
            "scored": self.scored.astype(np.int64),
            "frame_scores": self.frame_scores.astype(np.float64),
            "frame_labels": self.frame_labels.astype(np.uint8),
        }
        if self.pixels is not None:
            arrays.update({f"pixels.{k}": v for k, v in self.pixels.state_dict().items()})
        if self.regions is not None:
            arrays["regions"] = self.regions.astype(np.float64)
        # Through a handle: given a name without .npz, np.savez would append it and write beside the
        # temporary file that atomic_path renames.
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            _savez_deflated(handle, arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> VideoResult:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        pixel_state = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("pixels.")}
        return cls(
            name=str(arrays["name"]),
            scored=arrays["scored"],
            frame_scores=arrays["frame_scores"],
            frame_labels=arrays["frame_labels"],
            pixels=PixelStatistics.from_state_dict(pixel_state) if pixel_state else None,
            regions=arrays.get("regions"),
            fingerprint=str(arrays["fingerprint"]),
            facts=str(arrays["facts"]) if "facts" in arrays else "",
        )

    @staticmethod
    def read_fingerprint(path: str | Path) -> tuple[str, str]:
        """``(fingerprint, facts)`` of a saved result, reading only those two members of the archive.

        Raises:
            OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError: the file is not a readable result.
        """
        with np.load(path, allow_pickle=False) as data:
            facts = str(data["facts"]) if "facts" in data.files else ""
            return str(data["fingerprint"]), facts


# zlib level of the cached results. np.savez_compressed uses zlib's default (6), which spent ~7x longer
# on a pooled-AUC histogram (up to ~1.9M bins x 3 int64) than level 1 for files ~13 % smaller: with
# saved pixel maps the compression was a third of a scores-only evaluation's time.
_CACHE_COMPRESSLEVEL = 1


def _savez_deflated(handle: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed(handle, **arrays)`` at zlib level :data:`_CACHE_COMPRESSLEVEL`: the same .npz
    layout (one ``<key>.npy`` member per array, deflated), read back by ``np.load`` as the same arrays."""
    with zipfile.ZipFile(
        handle,
        mode="w",
        compression=zipfile.ZIP_DEFLATED,
        compresslevel=_CACHE_COMPRESSLEVEL,
        allowZip64=True,
    ) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


PixelProvider = Callable[[np.ndarray], np.ndarray]

# How predicted maps and ground truth reach the size the pixel metrics are computed at.
# "bilinear": predictions bilinearly, ground truth by nearest neighbour (pixel centres), straight from
#   their own sizes. "release": as the official release's validation (train_acc.py, eval_pixel): the
#   ground truth is first stretched to the predictions' grid (SAM2's S×S input), then both are
#   resized with torch's legacy "nearest" mode (docs/evaluation.md).
PixelResize = Literal["bilinear", "release"]


def pixel_statistics(
    scored: np.ndarray,
    *,
    predicted: PixelProvider,
    ground_truth: PixelProvider,
    size: tuple[int, int] | None = None,
    resize: PixelResize = "bilinear",
    region_thresholds: tuple[float, ...] | None = None,
    chunk: int = 16,
    holds: np.ndarray | None = None,
) -> tuple[PixelStatistics, np.ndarray | None]:
    """Stream the pixel metrics of one video, a chunk of frames at a time.

    Args:
        scored: (F,) raw frame indices to evaluate.
        predicted: frames → (n, h, w) predicted probabilities (any size), ideally float64 (a float32
            sigmoid ties every logit above ~16.6 at 1.0).
        ground_truth: frames → (n, H, W) bool masks.
        size: Compute the metrics at this (H, W), or None for the ground truth's own size.
        resize: How both reach ``size`` (see :data:`PixelResize`).
        region_thresholds: Extract scored regions at these levels for RBDC/TBDC; None skips them.
            Regions are always cut from the predictions bilinearly resized to the ground truth's own
            size, so that their boxes share the coordinates of the ground-truth tracks whatever ``size``.
        chunk: Frames per step (bounds memory).
        holds: Optional sample-and-hold map: ``holds[frame]`` identifies the prediction a raw frame
            holds, and ``predicted`` returns one and the same map for frames with equal ids. Each chunk
            then predicts and resizes every distinct map once and repeats it for the frames that hold it
            (with an interval I, 1/I of the work; the statistics are identical).

    Returns:
        The statistics and the (N, 6) regions (or None).
    """
    stats = PixelStatistics()
    regions = []
    for start in range(0, scored.size, chunk):
        frames = scored[start : start + chunk]
        labels = np.asarray(ground_truth(frames), dtype=bool)
        asked, repeat = frames, None
        if holds is not None:
            _, first, inverse = np.unique(np.asarray(holds)[frames], return_index=True, return_inverse=True)
            if first.size < frames.size:
                asked, repeat = frames[first], inverse.reshape(-1)
        predictions = _exact_probabilities(predicted(asked))
        native = tuple(labels.shape[1:])
        target = tuple(size or native)
        if resize == "release":
            grid = tuple(predictions.shape[1:])
            scores = resize_probabilities(predictions, target, mode="nearest")  # picks pixels: any width
            labels_at_target = _release_masks(labels, grid, target)
        else:
            scores = _bilinear(predictions, target)
            labels_at_target = resize_masks(labels, target)
        stats.update(_repeated(scores, repeat), labels_at_target)
        if region_thresholds is not None:
            same = target == native and resize == "bilinear"
            at_native = scores if same else _bilinear(predictions, native)
            regions.append(
                extract_regions(
                    _repeated(at_native, repeat), thresholds=list(region_thresholds), frames=frames.tolist()
                )
            )
    boxes = None
    if region_thresholds is not None:
        boxes = np.concatenate(regions) if regions else np.zeros((0, 6))
    return stats, boxes


def _exact_probabilities(predictions: np.ndarray) -> np.ndarray:
    """Predicted maps in float64, except float32 ones, which stay as they are until a bilinear resize.

    Every metric gives a float32 map exactly the result of its float64 copy (the conversion is exact and
    keeps order and ties; PixelAUC bins the same value identically in both widths; the critical scores,
    region peaks and thresholds compare the same numbers), so copying it to float64 only doubled the
    memory traffic of scores-only evaluation. Bilinear interpolation is where the width matters:
    :func:`_bilinear` widens first, as the float64 copy used to.
    """
    predictions = np.asarray(predictions)
    if predictions.dtype == np.float32:
        return predictions
    return predictions.astype(np.float64, copy=False)  # see PIXEL_AUC_OCTAVES


def _bilinear(predictions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``resize_probabilities`` of the float64 maps (identity, in the maps' own width, at their size)."""
    if tuple(predictions.shape[1:]) == tuple(size):
        return predictions
    return resize_probabilities(predictions.astype(np.float64, copy=False), size)


def _release_masks(masks: np.ndarray, grid: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """``resize_masks(resize_masks(masks, grid, mode="nearest"), target, mode="nearest")`` without the
    ``grid``-sized (S×S) intermediate: torch's legacy nearest rule picks each output row and column by
    its own axis alone, so the two resizes compose into one pick of rows and columns of ``masks``."""
    if tuple(masks.shape[1:]) == tuple(target) and tuple(grid) == tuple(target):
        return masks
    rows, cols = (
        _nearest_index(masks.shape[1 + axis], grid[axis])[_nearest_index(grid[axis], target[axis])]
        for axis in (0, 1)
    )
    return masks[:, rows[:, None], cols[None, :]]


def _nearest_index(length: int, size: int) -> np.ndarray:
    """Source index of each of ``size`` outputs resizing ``length`` inputs with torch's legacy
    ``nearest`` (the rule itself: an index ramp resized along one axis)."""
    ramp = torch.arange(length, dtype=torch.float64).view(1, 1, length, 1)
    return F.interpolate(ramp, size=(size, 1), mode="nearest")[0, 0, :, 0].numpy().astype(np.intp)


def _repeated(maps: np.ndarray, repeat: np.ndarray | None) -> np.ndarray:
    """The distinct maps of a chunk back on every frame that holds them (``holds``)."""
    return maps if repeat is None else maps[repeat]


def resize_probabilities(
    scores: np.ndarray, size: tuple[int, int], *, mode: Literal["bilinear", "nearest"] = "bilinear"
) -> np.ndarray:
    """(n, h, w) probabilities → (n, H, W) (identity if the size matches)."""
    if tuple(scores.shape[1:]) == tuple(size):
        return scores
    tensor = torch.from_numpy(np.ascontiguousarray(scores)).unsqueeze(1)
    if mode == "nearest":
        return F.interpolate(tensor, size=size, mode="nearest")[:, 0].numpy()
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[:, 0].clamp_(0, 1).numpy()


def resize_masks(
    masks: np.ndarray, size: tuple[int, int], *, mode: Literal["nearest-exact", "nearest"] = "nearest-exact"
) -> np.ndarray:
    """(n, h, w) bool → (n, H, W) bool by nearest neighbour (identity if the size matches).

    ``nearest-exact`` samples pixel centres; ``nearest`` is torch's legacy rule, which the official
    release uses.
    """
    if tuple(masks.shape[1:]) == tuple(size):
        return masks
    tensor = torch.from_numpy(np.ascontiguousarray(masks)).to(torch.uint8).unsqueeze(1)
    return F.interpolate(tensor, size=size, mode=mode)[:, 0].bool().numpy()
