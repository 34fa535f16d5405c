"""The training data configuration as plain dataclasses (no Hydra).

Hydra composes ``lavida/configs/data/*.yaml`` into a mapping with exactly these fields; the trainer
turns it into a :class:`DataConfig` with :meth:`DataConfig.from_dict` and builds the dataset with
``lavida.data.train_dataset.build_train_dataset``. Unknown keys are rejected with the list of valid
ones, so a YAML typo fails loudly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lavida.data.exposure import CATEGORY_COUNTS
from lavida.data.mixture import OFFICIAL_WEIGHTS

# Folder of each dataset under LAVIDA_DATA_ROOT (data/README.md describes each tree).
DEFAULT_ROOTS: dict[str, str] = {
    "ade20k": "ADEChallengeData2016",
    "mapillary": "MapillaryVistas",
    "cityscapes": "Cityscapes",
    "refclef": "refer_seg",
    "refcoco": "refer_seg",
    "refcoco+": "refer_seg",
    "refcocog": "refer_seg",
    "vos": "YouTube-VOS",
    "refvos": "Ref-YouTube-VOS",
    "mevis": "MeViS",
    "refdavis": "Ref-DAVIS17",
}


@dataclass
class SourceConfig:
    """One training source.

    Attributes:
        weight: Relative mixture weight; 0 leaves the source out (it need not exist).
        root: The dataset folder: absolute, or relative to ``DataConfig.data_root``.
        split: The split to read.
        manifest: The manifest file written by ``lavida-prepare``; None → ``<manifest_dir or
            root/.lavida>/<name>_<split>.jsonl``.
        max_categories: This source's max(K_E); None → ``DataConfig.max_categories``.
        strides: This source's clip strides; None → ``DataConfig.strides``.
        pool_weighting: How this source's irrelevant texts are weighted; None → ``DataConfig.pool_weighting``.
        options: Further keyword arguments of the source's constructor.
    """

    weight: float = 0.0
    root: str | None = None
    split: str = "train"
    manifest: str | None = None
    max_categories: int | None = None
    strides: list[int] | None = None
    pool_weighting: Literal["samples", "texts"] | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _official_sources() -> dict[str, SourceConfig]:
    return {
        name: SourceConfig(weight=OFFICIAL_WEIGHTS[name], root=DEFAULT_ROOTS[name])
        for name in OFFICIAL_WEIGHTS
    }


@dataclass
class DataConfig:
    """Training data: sources and mixture, the Anomaly Exposure Sampler, clips, loading.

    Attributes:
        data_root: Folder holding the datasets (``LAVIDA_DATA_ROOT``); relative source roots hang off it.
        manifest_dir: Where the manifests are; None → each dataset's ``<root>/.lavida/``.
        sources: Name → :class:`SourceConfig` (default: the official mixture, lavida_official.md §8).
        p: Probability of an anomalous sample (Eq. 2; B.5: 0.5).
        max_categories: max(K_E) (B.5: 30).
        category_count: ``paper`` (Eq. 1–2: normal samples list one category fewer, so the count hints
            at the label) or ``matched`` (both list K_E ~ Unif{2..min(max_categories, n)}, n the usable irrelevant
            texts; n < 2 falls back to the paper's rule with one warning; ``lavida.data.exposure``,
            docs/fidelity.md).
        pool_weighting: ``samples`` (Eq. 1: irrelevant texts drawn uniformly over samples) or ``texts``
            (uniformly over distinct texts).
        clip_length: Frames per video clip T (B.3: 8); images have T = 1.
        strides: Candidate clip strides, one drawn per clip.
        visibility_tries: Strides tried while looking for a window that shows the target.
        frame_labels: Anomalous clips' frame labels, the object score's target in L_seg: ``presence``
            (1 where the target's mask is non-empty; the official code and our default) or ``clip``
            (1ᵀ, Eq. 2).
        samples_per_epoch: Dataset length (B.3: 2,000 batches × 2).
        seed: Seed of every draw; item i is a function of (seed, epoch, i) only.
        num_workers: DataLoader worker processes.
        skip_errors: Skip unreadable items (logged and counted) instead of stopping with an error.
        max_attempts: Draws per item before giving up when ``skip_errors`` (consecutive failures).
        missing_sources: A weighted source that cannot be read: ``error`` (default) or ``renormalize``
            (dropped with a warning, remaining weights renormalised).
    """

    data_root: str | None = None
    manifest_dir: str | None = None
    sources: dict[str, SourceConfig] = field(default_factory=_official_sources)
    p: float = 0.5
    max_categories: int = 30
    category_count: Literal["paper", "matched"] = "paper"
    pool_weighting: Literal["samples", "texts"] = "samples"
    clip_length: int = 8
    strides: list[int] = field(default_factory=lambda: [1, 2, 4])
    visibility_tries: int = 3
    frame_labels: Literal["presence", "clip"] = "presence"
    samples_per_epoch: int = 4000
    seed: int = 44
    num_workers: int = 4
    skip_errors: bool = False
    max_attempts: int = 10
    missing_sources: Literal["error", "renormalize"] = "error"

    def __post_init__(self) -> None:
        _check(0.0 <= self.p <= 1.0, f"data.p must lie in [0, 1], got {self.p}.")
        _check(self.max_categories >= 1, f"data.max_categories must be ≥ 1, got {self.max_categories}.")
        _check(self.clip_length >= 1, f"data.clip_length must be ≥ 1, got {self.clip_length}.")
        _check(self.visibility_tries >= 1, f"data.visibility_tries must be ≥ 1, got {self.visibility_tries}.")
        _check(
            self.samples_per_epoch >= 1, f"data.samples_per_epoch must be ≥ 1, got {self.samples_per_epoch}."
        )
        _check(self.max_attempts >= 1, f"data.max_attempts must be ≥ 1, got {self.max_attempts}.")
        _check(self.num_workers >= 0, f"data.num_workers must be ≥ 0, got {self.num_workers}.")
        _check_strides(self.strides, "data.strides")
        _one_of("data.category_count", self.category_count, CATEGORY_COUNTS)
        _one_of("data.pool_weighting", self.pool_weighting, ("samples", "texts"))
        _one_of("data.frame_labels", self.frame_labels, ("presence", "clip"))
        _one_of("data.missing_sources", self.missing_sources, ("error", "renormalize"))
        for name, source in self.sources.items():
            _check(source.weight >= 0, f"data.sources.{name}.weight must be ≥ 0, got {source.weight}.")
            if source.max_categories is not None:
                _check(source.max_categories >= 1, f"data.sources.{name}.max_categories must be ≥ 1.")
            if source.strides is not None:
                _check_strides(source.strides, f"data.sources.{name}.strides")
            if source.pool_weighting is not None:
                _one_of(f"data.sources.{name}.pool_weighting", source.pool_weighting, ("samples", "texts"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        """Build from a mapping (e.g. ``OmegaConf.to_container(cfg.data, resolve=True)``)."""
        values = _fields_of(cls, data, "data")
        if "sources" in values:
            sources = values["sources"]
            if not isinstance(sources, dict):
                raise TypeError(f"data.sources: expected a mapping, got {type(sources).__name__}.")
            values["sources"] = {
                name: _build(SourceConfig, item or {}, f"data.sources.{name}")
                for name, item in sources.items()
            }
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def weights(self) -> dict[str, float]:
        """Sources with a positive weight, name → weight (relative)."""
        return {name: source.weight for name, source in self.sources.items() if source.weight > 0}

    def root_of(self, name: str) -> Path | None:
        """The dataset folder of source ``name``, or None when it cannot be known (no root, or a relative
        root without ``data_root``)."""
        root = self.sources[name].root
        if root is None:
            return None
        path = Path(root).expanduser()
        if path.is_absolute():
            return path
        return None if self.data_root is None else Path(self.data_root).expanduser() / path


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_strides(strides: list[int], where: str) -> None:
    _check(
        bool(strides) and all(isinstance(s, int) and s >= 1 for s in strides),
        f"{where} must be a non-empty list of positive integers, got {strides}.",
    )


def _one_of(where: str, value: str, options: tuple[str, ...]) -> None:
    _check(value in options, f"{where} must be one of {list(options)}, got {value!r}.")


def _fields_of(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys are {sorted(known)}.")
    return dict(data)


def _build(cls, data: dict[str, Any], where: str):
    return cls(**_fields_of(cls, data, where))
