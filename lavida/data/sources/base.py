"""The uniform record every training source produces, and the interface a source implements.

A *source* reads one segmentation dataset in its official layout. Indexing it (slow: walks the
folders, parses annotation files) yields :class:`SegRecord` s, which ``lavida-prepare`` writes once to
a JSON-lines manifest; training then starts from the manifest and the source only loads frames and
masks on demand.

A record is one image or one video with the things that can be segmented in it (*targets*, each with
a text description and a mask spec the source understands), the group it belongs to, and every text
visible in it. The Anomaly Exposure Sampler (``lavida.data.exposure``, Eq. 1–2) turns a record and a
target into a (categories, is-anomaly) pair; the source turns the target into per-frame masks.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lavida.atomic import atomic_path
from lavida.data.video import read_image


class DatasetFormatError(ValueError):
    """A dataset file is missing or does not have the expected format; the message names the file."""


@dataclass(frozen=True)
class SegTarget:
    """One segmentable thing: its description and how to get its mask.

    Attributes:
        text: The description used as the genuine anomaly category (a class name or a referring
            expression).
        mask: JSON-serialisable spec interpreted by the record's source, e.g. ``{"class_id": 12}``,
            ``{"object_ids": [2]}``, ``{"ann_id": 1234}``, ``{"anno_ids": [5, 9]}``.
        frames: For videos, positions (into ``SegRecord.frames``) where the target is annotated as
            visible; empty = unknown/everywhere.
    """

    text: str
    mask: dict[str, Any]
    frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class SegRecord:
    """One image or video of a segmentation dataset.

    Attributes:
        source: The source's name (``ade20k``, ``mevis``, ...).
        key: Unique within the source.
        group: Records of one group (same video, same image) share their present texts: a text present
            anywhere in the group is never used as an irrelevant category for this record.
        frames: Frame file paths relative to the source root, in temporal order (one for an image).
        targets: Candidates for the genuine description.
        present: Every text describing something visible in this record (targets' texts included).
        is_video: Video (clips are sampled from ``frames``) or image.
        meta: Source-specific extras (JSON-serialisable), e.g. image size.
    """

    source: str
    key: str
    group: str
    frames: tuple[str, ...]
    targets: tuple[SegTarget, ...]
    present: tuple[str, ...]
    is_video: bool
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "key": self.key,
                "group": self.group,
                "frames": list(self.frames),
                "targets": [{"text": t.text, "mask": t.mask, "frames": list(t.frames)} for t in self.targets],
                "present": list(self.present),
                "is_video": self.is_video,
                "meta": self.meta,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, line: str) -> SegRecord:
        data = json.loads(line)
        return cls(
            source=data["source"],
            key=data["key"],
            group=data["group"],
            frames=tuple(data["frames"]),
            targets=tuple(
                SegTarget(t["text"], t["mask"], tuple(t.get("frames", ()))) for t in data["targets"]
            ),
            present=tuple(data["present"]),
            is_video=bool(data["is_video"]),
            meta=data.get("meta", {}),
        )


_HEADER_KEY = "manifest_options"  # the first line of a manifest: {"manifest_options": {...}}


def write_manifest(
    records: Iterable[SegRecord], path: str | Path, *, options: dict[str, Any] | None = None
) -> int:
    """Write records as JSON lines (atomically: a temporary file renamed into place); return the count.

    With ``options`` (the source's :meth:`SegmentationSource.index_options`), a first line records them,
    so that training can refuse a manifest indexed with other ones (:func:`check_manifest_options`);
    without, the manifest's options are unknown and it is accepted as it is.
    """
    count = 0
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        if options is not None:
            handle.write(json.dumps({_HEADER_KEY: options}) + "\n")
        for record in records:
            handle.write(record.to_json() + "\n")
            count += 1
    return count


def read_manifest(path: str | Path) -> list[SegRecord]:
    """Read a JSON-lines manifest.

    Raises:
        DatasetFormatError: naming the file and line of a malformed record.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: manifest not found; run `lavida-prepare` for this dataset first.")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or _header(line) is not None:  # anywhere: manifests may be concatenated
                continue
            try:
                records.append(SegRecord.from_json(line))
            except (KeyError, TypeError, ValueError) as error:
                raise DatasetFormatError(f"{path}, line {number}: not a valid record ({error}).") from error
    return records


def _header(line: str) -> dict[str, Any] | None:
    """The options of a manifest's header line; None when ``line`` is a record."""
    if not line.startswith('{"' + _HEADER_KEY + '"'):  # cheap: records start with {"source"
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if isinstance(data, dict) and set(data) == {_HEADER_KEY} and isinstance(data[_HEADER_KEY], dict):
        return data[_HEADER_KEY]
    return None


class ManifestOptionsError(DatasetFormatError):
    """A manifest was indexed with other source options than the configuration gives."""


def check_manifest_options(path: str | Path, source: SegmentationSource, *, setting: str) -> None:
    """Raise unless the manifest at ``path`` was indexed with ``source``'s options.

    A manifest written with another class list, label version or split scheme holds other targets;
    training on it with this configuration would silently mix the two. Manifests without recorded
    options (written before they were recorded, or by ``write_manifest`` without them) are accepted;
    concatenated manifests must all agree.

    Args:
        setting: Where the options are configured, for the message (``data.sources.<name>.options``).

    Raises:
        ManifestOptionsError: naming the manifest, both sets of options and how to reconcile them.
    """
    path = Path(path)
    wanted = json.loads(json.dumps(source.index_options()))  # as it reads back (tuples as lists)
    with path.open(encoding="utf-8") as handle:
        differing = [options for options in map(_header, handle) if options not in (None, wanted)]
    if differing:
        recorded = differing[0]
        given = " ".join(f"{key}={value}" for key, value in recorded.items()) or "the defaults"
        raise ManifestOptionsError(
            f"{path}: indexed with the options {recorded}, but {setting} gives {wanted}. Re-run "
            f"`lavida-prepare {source.name} root=... {' '.join(f'{k}={v}' for k, v in wanted.items())}`, "
            f"or set {setting} to match the manifest ({given})."
        )


class SegmentationSource(abc.ABC):
    """A segmentation dataset in its official layout.

    Subclasses set ``name`` and implement :meth:`index` and :meth:`load_masks`.

    Args:
        root: The dataset's root folder (as downloaded; see data/README.md).
        split: Which split to read (the training split by default).
    """

    name: str
    # Constructor options that change which records and targets ``index`` yields (a class list, a label
    # version): they are stored in the manifest and checked when training reads it.
    record_options: tuple[str, ...] = ()

    def __init__(self, root: str | Path, *, split: str = "train") -> None:
        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise DatasetFormatError(
                f"{self.name}: dataset root '{self.root}' does not exist. See data/README.md for what to download."
            )

    @abc.abstractmethod
    def index(self) -> Iterator[SegRecord]:
        """Walk the official layout and yield every usable record (slow; done once by lavida-prepare)."""

    def load_frames(self, record: SegRecord, positions: Sequence[int]) -> np.ndarray:
        """Frames ``positions`` (indices into ``record.frames``) as (n, H, W, 3) uint8.

        Raises:
            DatasetFormatError: a frame's size differs from the first one's (named with both sizes).
        """
        frames = [read_image(self.root / record.frames[i]) for i in positions]
        for position, frame in zip(positions, frames, strict=True):
            if frame.shape != frames[0].shape:
                raise DatasetFormatError(
                    f"{self.root / record.frames[position]}: frame of shape {frame.shape}, but "
                    f"{self.root / record.frames[positions[0]]} of the same video has {frames[0].shape}; "
                    "every frame of a video must have one size."
                )
        return np.stack(frames)

    def load_masks(self, record: SegRecord, target: SegTarget, positions: Sequence[int]) -> np.ndarray:
        """The target's masks on frames ``positions`` as (n, H, W) bool (all False where it is absent).

        The default reads the target's mask spec (``lavida.data.sources.masks``) at the size the indexer
        stored in ``record.meta["size"]``, or the first frame's size if it stored none.
        """
        from lavida.data.sources.masks import image_size, load_mask_spec

        if "size" in record.meta:
            size = (int(record.meta["size"][0]), int(record.meta["size"][1]))
        else:
            size = image_size(self.root / record.frames[0])
        return load_mask_spec(target.mask, positions, root=self.root, size=size)

    def collect_records(
        self,
        items: Sequence,
        build: Callable[..., SegRecord],
        *,
        skip_errors: bool,
        log: logging.Logger,
        unit: str = "images",
    ) -> Iterator[SegRecord]:
        """Yield ``build(item)`` for every item, leaving out records without targets.

        A :class:`DatasetFormatError` stops indexing, or with ``skip_errors`` is logged and counted;
        both counts are logged at the end.
        """
        skipped = without_targets = 0
        for item in items:
            try:
                record = build(item)
            except DatasetFormatError as error:
                if not skip_errors:
                    raise
                skipped += 1
                log.warning("%s: skipping %s: %s", self.name, getattr(item, "name", item), error)
                continue
            if not record.targets:
                without_targets += 1
                continue
            yield record
        if without_targets:
            log.info("%s: %d %s have no target and are left out.", self.name, without_targets, unit)
        if skipped:
            log.warning("%s: skipped %d of %d %s with format errors.", self.name, skipped, len(items), unit)

    def index_options(self) -> dict[str, Any]:
        """This source's ``record_options`` and their values (paths as POSIX strings)."""
        values = {key: getattr(self, key) for key in self.record_options}
        return {key: value.as_posix() if isinstance(value, Path) else value for key, value in values.items()}

    def manifest_path(self, directory: str | Path | None = None) -> Path:
        """Where ``lavida-prepare`` writes this source's manifest (default: ``<root>/.lavida/``)."""
        base = Path(directory) if directory is not None else self.root / ".lavida"
        return base / f"{self.name}_{self.split}.jsonl"
