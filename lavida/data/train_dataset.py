"""The training dataset: source mixture → record → target → clip → Anomaly Exposure Sampler → processor.

Item ``i`` is a pure function of ``(seed, epoch, i)``: a ``numpy.random.SeedSequence`` of those numbers
is split into independent streams (source/record/target choice, clip, sampler, prompt template), so
an item is identical in every dataloader worker, across restarts and whatever the number of workers,
and changing one stage's use of randomness does not shift the others.

Per item (§3.3, B.3):

1. draw a source by mixture weight, then a record uniformly among the source's records, then one of
   its targets uniformly;
2. draw the clip (``lavida.data.clips``: T frames of a video, preferring windows where the target is
   visible; T = 1 for an image);
3. run the Anomaly Exposure Sampler (``lavida.data.exposure``, Eq. 1–2);
4. load the frames and, for an anomalous sample, the target's masks through the source; a normal
   sample gets all-zero masks and zero frame labels;
5. frame labels of an anomalous clip: per-frame mask presence (``"presence"``, the official code's
   and our default) or all ones (``"clip"``, Eq. 2's 1ᵀ);
6. ``LavidaProcessor.encode(sample, train=True)`` in the worker.

An unreadable file stops training with an error naming it, or, with ``skip_errors``, is logged, counted
in the item's ``ItemInfo.skipped`` and replaced by another deterministic draw.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lavida.data.clips import clip_positions
from lavida.data.config import DataConfig
from lavida.data.exposure import AnomalyExposureSampler, PoolWeighting, TextPool
from lavida.data.mixture import Mixture
from lavida.data.processor import EncodedSample, LavidaProcessor
from lavida.data.sources import get_source
from lavida.data.sources.base import (
    DatasetFormatError,
    ManifestOptionsError,
    SegmentationSource,
    SegRecord,
    check_manifest_options,
    read_manifest,
)
from lavida.data.types import ClipSample, LavidaBatch

log = logging.getLogger(__name__)

FrameLabelMode = Literal["presence", "clip"]

# What a broken file raises: OSError (missing file, undecodable image: VideoReadError) or a format
# error from a source. Anything else is a bug and is never skipped.
READ_ERRORS = (OSError, DatasetFormatError)


class UnreadableItemError(RuntimeError):
    """A training item could not be read; the message names the source, record and file."""


@dataclass(frozen=True)
class ItemInfo:
    """Where an item came from (for logging and tests).

    Attributes:
        index: The dataset index.
        source: Source name.
        key: The record's key.
        target: Index of the chosen target in ``record.targets``.
        text: The target's description (listed only when ``is_anomaly``).
        is_anomaly: The sampler's decision.
        categories: The listed categories, in prompt order.
        positions: (T,) frame positions in the record.
        visible_frames: Frames whose target mask is non-empty (0 for a normal sample).
        skipped: ``"source/key: error"`` of each unreadable draw replaced before this one.
    """

    index: int
    source: str
    key: str
    target: int
    text: str
    is_anomaly: bool
    categories: tuple[str, ...]
    positions: tuple[int, ...]
    visible_frames: int
    skipped: tuple[str, ...] = ()


@dataclass
class TrainItem:
    """One item: the processed sample (with a processor) or the raw one (without), and its origin."""

    info: ItemInfo
    encoded: EncodedSample | None = None
    sample: ClipSample | None = None


@dataclass
class TrainBatch:
    """A collated batch and the origin of each of its items.

    Attributes:
        items: One :class:`ItemInfo` per sample, in batch order.
        batch: The model's batch (with a processor), else None.
        samples: The raw samples (without a processor), else None.
    """

    items: list[ItemInfo]
    batch: LavidaBatch | None = None
    samples: list[ClipSample] | None = None

    @property
    def num_skipped(self) -> int:
        """Unreadable draws replaced while building this batch."""
        return sum(len(item.skipped) for item in self.items)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TrainBatch:
        return replace(self, batch=None if self.batch is None else self.batch.to(device, dtype))


class TrainCollator:
    """``collate_fn`` for :class:`TrainDataset`: ``LavidaProcessor.collate`` plus the items' origins."""

    def __init__(self, processor: LavidaProcessor | None) -> None:
        self.processor = processor

    def __call__(self, items: Sequence[TrainItem]) -> TrainBatch:
        infos = [item.info for item in items]
        if self.processor is None:
            return TrainBatch(items=infos, samples=[item.sample for item in items])
        return TrainBatch(items=infos, batch=self.processor.collate([item.encoded for item in items]))


class TrainDataset(Dataset):
    """Map-style dataset of pseudo-anomaly clips (see the module docstring).

    Args:
        sources: Name → source (loads frames and masks).
        records: Name → the source's records (from its manifest); records without targets are dropped.
        mixture: Which source each item comes from; every name must be in ``sources`` and ``records``.
        sampler: The Anomaly Exposure Sampler.
        processor: Turns samples into model inputs; None → items carry the raw :class:`ClipSample`.
        length: Items per epoch.
        seed: Seed of every draw.
        clip_length: Frames per video clip T.
        strides: Candidate clip strides.
        strides_per_source: Per-source stride sets overriding ``strides``.
        max_categories_per_source: Per-source max(K_E) overriding the sampler's.
        visibility_tries: Strides tried while looking for a window showing the target.
        frame_labels: ``"presence"`` or ``"clip"`` (see the module docstring).
        pool_weighting: How irrelevant descriptions are weighted (``TextPool``).
        pool_weighting_per_source: Per-source weightings overriding ``pool_weighting``.
        skip_errors: Replace unreadable items by new draws (logged, counted) instead of raising.
        max_attempts: Consecutive unreadable draws tolerated per item with ``skip_errors``.
    """

    def __init__(
        self,
        *,
        sources: Mapping[str, SegmentationSource],
        records: Mapping[str, Sequence[SegRecord]],
        mixture: Mixture,
        sampler: AnomalyExposureSampler,
        processor: LavidaProcessor | None = None,
        length: int,
        seed: int = 0,
        clip_length: int = 8,
        strides: Sequence[int] = (1, 2, 4),
        strides_per_source: Mapping[str, Sequence[int]] | None = None,
        max_categories_per_source: Mapping[str, int] | None = None,
        visibility_tries: int = 3,
        frame_labels: FrameLabelMode = "presence",
        pool_weighting: PoolWeighting = "samples",
        pool_weighting_per_source: Mapping[str, PoolWeighting] | None = None,
        skip_errors: bool = False,
        max_attempts: int = 10,
    ) -> None:
        if frame_labels not in ("presence", "clip"):
            raise ValueError(f"frame_labels must be 'presence' or 'clip', got {frame_labels!r}.")
        if length < 1 or max_attempts < 1:
            raise ValueError(f"length and max_attempts must be ≥ 1, got {length} and {max_attempts}.")
        self.sources = dict(sources)
        self.records: dict[str, list[SegRecord]] = {}
        self.pools: dict[str, TextPool] = {}
        for name in mixture.names:
            if name not in sources or name not in records:
                raise ValueError(
                    f"Mixture source '{name}' has no {'source' if name not in sources else 'records'}."
                )
            usable = [record for record in records[name] if record.targets]
            if len(usable) < len(records[name]):
                log.info(
                    "%s: %d records without targets are not used.", name, len(records[name]) - len(usable)
                )
            if not usable:
                raise ValueError(
                    f"Source '{name}' has no record with a target; re-run lavida-prepare for it."
                )
            self.records[name] = usable
            weighting = (pool_weighting_per_source or {}).get(name, pool_weighting)
            self.pools[name] = TextPool.from_records(usable, weighting=weighting)
        self.mixture = mixture
        self.sampler = sampler
        self.processor = processor
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        self.clip_length = int(clip_length)
        self.strides = tuple(strides)
        self.strides_per_source = {name: tuple(s) for name, s in (strides_per_source or {}).items()}
        self.max_categories_per_source = dict(max_categories_per_source or {})
        self.visibility_tries = int(visibility_tries)
        self.frame_labels = frame_labels
        self.skip_errors = bool(skip_errors)
        self.max_attempts = int(max_attempts)
        self.num_skipped = 0  # in this process only; ItemInfo.skipped is what survives worker processes

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (still deterministic) set of items. Takes effect in workers started after
        the call, so use it with ``persistent_workers=False`` (the DataLoader default)."""
        self.epoch = int(epoch)

    @property
    def collate_fn(self) -> TrainCollator:
        return TrainCollator(self.processor)

    def __getitem__(self, index: int) -> TrainItem:
        if not 0 <= index < self.length:
            raise IndexError(f"Item {index} is outside the dataset's {self.length} items.")
        skipped: list[str] = []
        for attempt in range(self.max_attempts):
            # Independent streams: choice, clip, sampler, template (module docstring).
            streams = np.random.SeedSequence([self.seed, self.epoch, index, attempt]).spawn(4)
            choice, clip_rng, sampler_rng, template_rng = (np.random.default_rng(s) for s in streams)
            name = self.mixture.draw(choice)
            records = self.records[name]
            record = records[int(choice.integers(len(records)))]
            target = int(choice.integers(len(record.targets)))
            try:
                item = self._build(index, name, record, target, clip_rng, sampler_rng, template_rng)
            except READ_ERRORS as error:
                message = f"{name} record '{record.key}' (item {index}): {error}"
                if not self.skip_errors:
                    raise UnreadableItemError(
                        f"{message}. Fix or remove the file and re-run lavida-prepare, or set "
                        "data.skip_errors=true to skip unreadable items."
                    ) from error
                self.num_skipped += 1
                skipped.append(f"{name}/{record.key}: {error}")
                log.warning(
                    "Skipping an unreadable item (%d so far in this process): %s", self.num_skipped, message
                )
                continue
            return replace(item, info=replace(item.info, skipped=tuple(skipped)))
        raise UnreadableItemError(
            f"Item {index}: {self.max_attempts} draws in a row were unreadable; the data is badly broken:\n"
            + "\n".join(skipped)
        )

    def _build(
        self,
        index: int,
        name: str,
        record: SegRecord,
        target_index: int,
        clip_rng: np.random.Generator,
        sampler_rng: np.random.Generator,
        template_rng: np.random.Generator,
    ) -> TrainItem:
        source = self.sources[name]
        target = record.targets[target_index]
        positions = clip_positions(
            len(record.frames),
            is_video=record.is_video,
            length=self.clip_length,
            strides=self.strides_per_source.get(name, self.strides),
            visible=target.frames,
            rng=clip_rng,
            tries=self.visibility_tries,
        )
        exposure = self.sampler(
            record,
            target,
            self.pools[name],
            rng=sampler_rng,
            max_categories=self.max_categories_per_source.get(name),
        )
        # Read each distinct frame once (short videos repeat their last frame).
        unique, inverse = np.unique(positions, return_inverse=True)
        frames = np.asarray(source.load_frames(record, unique.tolist()))[inverse]  # (T, H, W, 3)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise DatasetFormatError(
                f"{name} record '{record.key}': frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}."
            )
        if exposure.is_anomaly:
            masks = np.asarray(source.load_masks(record, target, unique.tolist()), dtype=bool)[
                inverse
            ]  # (T, H, W)
            if masks.shape != frames.shape[:3]:
                raise DatasetFormatError(
                    f"{name} record '{record.key}': masks {masks.shape} do not match frames {frames.shape[:3]}."
                )
            present = masks.reshape(len(masks), -1).any(axis=1)  # (T,)
            labels = present if self.frame_labels == "presence" else np.ones_like(present)
        else:
            masks = np.zeros(frames.shape[:3], dtype=bool)  # Eq. 2: normal → no anomalous pixel
            present = labels = np.zeros(len(frames), dtype=bool)
        sample = ClipSample(
            frames=frames,
            categories=exposure.categories,
            is_video=record.is_video,
            masks=masks,
            frame_labels=labels.astype(np.float32),
        )
        info = ItemInfo(
            index=index,
            source=name,
            key=record.key,
            target=target_index,
            text=target.text,
            is_anomaly=exposure.is_anomaly,
            categories=tuple(exposure.categories),
            positions=tuple(int(p) for p in positions),
            visible_frames=int(present.sum()),
        )
        if self.processor is None:
            return TrainItem(info=info, sample=sample)
        return TrainItem(info=info, encoded=self.processor.encode(sample, train=True, rng=template_rng))


@dataclass(frozen=True)
class OpenedSources:
    """The training sources that could be read, their records and the mixture over them.

    Attributes:
        sources: Name → built source.
        records: Name → the source's records with at least one target.
        mixture: The effective mixture: the configured weights over the readable sources, renormalised
            (with ``missing_sources: renormalize`` it depends on what is on disk at start-up).
    """

    sources: dict[str, SegmentationSource]
    records: dict[str, list[SegRecord]]
    mixture: Mixture


def open_train_sources(
    config: DataConfig, *, sources: Mapping[str, SegmentationSource] | None = None
) -> OpenedSources:
    """Build every source with a positive weight (``get_source``) and read its manifest.

    A source that cannot be (no root, missing folder, module or manifest, no usable record) is an error
    or, with ``missing_sources: renormalize``, dropped with a warning and its weight spread over the rest.

    Args:
        config: The data configuration.
        sources: Already built sources by name (tests, custom data); built from ``config`` otherwise.

    Raises:
        ValueError: a weighted source is unavailable (``missing_sources: error``) or none is left.
    """
    built: dict[str, SegmentationSource] = {}
    records: dict[str, list[SegRecord]] = {}
    problems: dict[str, str] = {}
    unrooted: list[str] = []  # relative roots while LAVIDA_DATA_ROOT is unset: one cause, said once
    mismatched: list[str] = []  # misconfigured, not missing: never renormalised away
    for name in config.weights():
        settings = config.sources[name]
        try:
            if sources is not None and name in sources:
                source = sources[name]
            else:
                root = config.root_of(name)
                if root is None:
                    if settings.root is not None and config.data_root is None:
                        unrooted.append(name)
                        problems[name] = (
                            f"no dataset folder (root '{settings.root}' is relative; no LAVIDA_DATA_ROOT)"
                        )
                        continue
                    raise DatasetFormatError(
                        "no dataset folder: set LAVIDA_DATA_ROOT (or data.data_root) or an absolute "
                        f"data.sources.{name}.root"
                    )
                source = get_source(name, root, split=settings.split, **settings.options)
            manifest = settings.manifest or source.manifest_path(config.manifest_dir)
            if not Path(manifest).is_file():
                # lavida-prepare's out= (or refvos' ytvos_root=, which moves the root) puts a manifest
                # elsewhere: say how training finds it, not only that it is missing.
                raise DatasetFormatError(
                    f"{manifest}: manifest not found. Run `lavida-prepare {name} root={source.root}` first; "
                    f"one written elsewhere is read with data.manifest_dir=DIR or data.sources.{name}.manifest="
                    f"FILE, and lavida-prepare options that move it (ytvos_root= for refvos) go under "
                    f"data.sources.{name}.options too."
                )
            usable = [record for record in read_manifest(manifest) if record.targets]
            check_manifest_options(manifest, source, setting=f"data.sources.{name}.options")
            if not usable:
                raise DatasetFormatError(f"{manifest}: no record with a target; re-run lavida-prepare {name}")
        except ManifestOptionsError as error:
            mismatched.append(f"  {name}: {error}")
            continue
        except (DatasetFormatError, ImportError, OSError) as error:
            problems[name] = str(error)
            continue
        built[name], records[name] = source, usable
        log.info("Training source %s: %d records, weight %.3f.", name, len(usable), settings.weight)
    if mismatched:
        raise ValueError(
            "Training sources whose manifests were prepared with other options:\n" + "\n".join(mismatched)
        )
    # An unset LAVIDA_DATA_ROOT leaves out every source with a relative root (a fresh shell: all of them).
    # It is said once, first, rather than as one more line per source.
    headline = [_no_data_root(unrooted)] if unrooted else []
    # A source's own errors often start with its name already ("mevis: dataset root ... does not exist").
    lines = {
        name: problem if problem.startswith(f"{name}: ") else f"{name}: {problem}"
        for name, problem in problems.items()
    }
    others = [line for name, line in lines.items() if name not in unrooted]
    if problems and config.missing_sources == "error":
        listed = "\n".join(f"  {line}" for line in lines.values())
        rest = ", or set data.missing_sources=renormalize to train on the rest" if built else ""
        raise ValueError(
            "\n".join([*headline, f"Training sources cannot be read:\n{listed}"])
            + f"\nPrepare them (data/README.md), or set their weight to 0 (data.sources.<name>.weight=0){rest}."
        )
    if problems and not built:
        raise ValueError(
            "\n".join(
                [
                    *headline,
                    f"None of the mixture's sources {list(config.weights())} is available; see data/README.md.",
                    *(f"  {line}" for line in others),
                ]
            )
        )
    mixture = Mixture(config.weights()).restricted(
        built, on_missing="renormalize", reasons=[*headline, *others]
    )
    return OpenedSources(sources=built, records=records, mixture=mixture)


def _no_data_root(names: Sequence[str]) -> str:
    """The one message for sources whose relative roots hang off an unset ``LAVIDA_DATA_ROOT``."""
    return (
        f"LAVIDA_DATA_ROOT (data.data_root) is not set, so the training sources {', '.join(names)} have no "
        "dataset folder (their roots are relative to it). Set it to the folder holding the datasets "
        "(data/README.md), pass data.data_root=DIR, or give a source an absolute data.sources.<name>.root."
    )


def data_record(config: DataConfig, opened: OpenedSources) -> dict:
    """The data section of a run record: ``config.to_dict()`` plus ``effective_mixture``.

    The effective mixture (name → probability of the sources actually read) is recorded because with
    ``missing_sources: renormalize`` the same configuration trains on another mixture when a source is
    missing; a resume compares the record (``lavida.train.resume_check``) and so sees the change.
    """
    return {**config.to_dict(), "effective_mixture": opened.mixture.weights}


def build_train_dataset(
    config: DataConfig,
    *,
    processor: LavidaProcessor | None,
    sources: Mapping[str, SegmentationSource] | None = None,
    opened: OpenedSources | None = None,
) -> TrainDataset:
    """The training dataset described by ``config``.

    Args:
        config: The data configuration.
        processor: The model's processor; None → items carry raw samples.
        sources: Already built sources by name (tests, custom data); built from ``config`` otherwise.
        opened: The sources as :func:`open_train_sources` opened them (the trainer opens them once, before
            its resume check, so the recorded mixture is the one trained on); opened from ``config``
            and ``sources`` otherwise.

    Raises:
        ValueError: a weighted source is unavailable (``missing_sources: error``) or none is left.
    """
    if opened is None:
        opened = open_train_sources(config, sources=sources)
    return TrainDataset(
        sources=opened.sources,
        records=opened.records,
        mixture=opened.mixture,
        sampler=AnomalyExposureSampler(
            p=config.p, max_categories=config.max_categories, category_count=config.category_count
        ),
        processor=processor,
        length=config.samples_per_epoch,
        seed=config.seed,
        clip_length=config.clip_length,
        strides=config.strides,
        strides_per_source={n: s.strides for n, s in config.sources.items() if s.strides is not None},
        max_categories_per_source={
            n: s.max_categories for n, s in config.sources.items() if s.max_categories is not None
        },
        visibility_tries=config.visibility_tries,
        frame_labels=config.frame_labels,
        pool_weighting=config.pool_weighting,
        pool_weighting_per_source={
            n: s.pool_weighting for n, s in config.sources.items() if s.pool_weighting is not None
        },
        skip_errors=config.skip_errors,
        max_attempts=config.max_attempts,
    )
