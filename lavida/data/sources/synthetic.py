"""The embedded synthetic segmentation set (``lavida.synthetic.datasets``) as a training source."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lavida.data.sources.base import DatasetFormatError, SegmentationSource, SegRecord, SegTarget
from lavida.data.sources.masks import read_index_png
from lavida.data.sources.text import normalize_text
from lavida.data.sources.youtube_vos import read_json
from lavida.number_checks import is_whole

log = logging.getLogger(__name__)

# What lavida.synthetic.datasets.write_segmentation_set writes (images are one-frame entries).
META_LAYOUT = (
    '{"videos": {"<id>": {"frames": <count ≥ 1>, "objects": {"<object id ≥ 1>": "<description>", ...}}, ...}, '
    '"images": {...same...}}'
)
_WRITE_AGAIN = "Write the set again with lavida.synthetic.datasets.write_segmentation_set."


class SyntheticSource(SegmentationSource):
    """Videos and images of coloured shapes (``meta.json`` layout), one target per visible object.

    Records of videos carry, per target, the frames where the object is visible, so clip sampling can
    prefer windows that show it. An object that later objects hide on every frame (the generator draws
    them over each other) is neither a target nor a present text: as a target it would make an
    anomalous sample with an empty mask, and a video target's empty ``frames`` would read as "visible
    everywhere" (the other sources leave such targets out too). An entry left with no visible object
    is left out; both counts are logged.
    """

    name = "synthetic"

    def index(self, *, artifacts: str | Path | None = None, skip_errors: bool = False) -> Iterator[SegRecord]:
        meta_file = self.root / "meta.json"
        if not meta_file.is_file():
            raise DatasetFormatError(
                f"{meta_file}: not found; write the set with lavida.synthetic.datasets first."
            )
        meta = _read_meta(meta_file)
        hidden = without_targets = 0
        for kind in ("videos", "images"):
            for key, entry in sorted(meta.get(kind, {}).items()):
                frames = tuple(f"JPEGImages/{key}/{t:05d}.jpg" for t in range(entry["frames"]))
                masks = [f"Annotations/{key}/{t:05d}.png" for t in range(entry["frames"])]
                ids_per_frame = [set(np.unique(read_index_png(self.root / path)).tolist()) for path in masks]
                targets = []
                for object_id, text in entry["objects"].items():
                    visible = [t for t, ids in enumerate(ids_per_frame) if int(object_id) in ids]
                    if not visible:
                        hidden += 1
                        continue
                    spec = {"kind": "index_png", "paths": masks, "values": [int(object_id)]}
                    targets.append(
                        SegTarget(
                            text=normalize_text(text),
                            mask=spec,
                            frames=tuple(visible) if kind == "videos" else (),
                        )
                    )
                if not targets:
                    without_targets += 1
                    continue
                yield SegRecord(
                    source=self.name,
                    key=key,
                    group=f"synthetic/{key}",
                    frames=frames,
                    targets=tuple(targets),
                    present=tuple(dict.fromkeys(target.text for target in targets)),
                    is_video=kind == "videos",
                )
        if hidden:
            log.info("synthetic: %d objects are hidden on every frame and are not targets.", hidden)
        if without_targets:
            log.info("synthetic: %d entries show no object and are left out.", without_targets)


def _read_meta(meta_file: Path) -> dict[str, Any]:
    """The checked ``meta.json``: every entry has ``frames`` ≥ 1 and an ``objects`` mapping id → text.

    Raises:
        DatasetFormatError: the file is not JSON or not in :data:`META_LAYOUT`; names the file and entry.
    """
    expected = f"the synthetic set's metadata, {META_LAYOUT}"
    meta = read_json(meta_file, expected=expected, fix=_WRITE_AGAIN)

    def fail(problem: str) -> DatasetFormatError:
        return DatasetFormatError(f"{meta_file}: {problem}; expected {META_LAYOUT}. {_WRITE_AGAIN}")

    if not isinstance(meta, dict):
        raise fail(f"expected a JSON object, got {type(meta).__name__}")
    for kind in ("videos", "images"):
        entries = meta.get(kind, {})
        if not isinstance(entries, dict):
            raise fail(f'"{kind}" must map ids to entries, got {type(entries).__name__}')
        for key, entry in entries.items():
            if not isinstance(entry, dict):
                raise fail(f'{kind} entry "{key}" is {type(entry).__name__}, not an object')
            frames = entry.get("frames")
            if not is_whole(frames) or frames < 1:
                raise fail(f'{kind} entry "{key}": "frames" must be a frame count ≥ 1, got {frames!r}')
            objects = entry.get("objects")
            if not isinstance(objects, dict) or not all(
                isinstance(object_id, str) and object_id.isdigit() and isinstance(text, str)
                for object_id, text in objects.items()
            ):
                raise fail(
                    f'{kind} entry "{key}": "objects" must map object ids ("1", "2", ...) to descriptions, '
                    f"got {objects!r}"
                )
    return meta
