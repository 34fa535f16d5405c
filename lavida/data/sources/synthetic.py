"""The embedded synthetic segmentation set (``lavida.synthetic.datasets``) as a training source."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lavida.data.sources.base import DatasetFormatError, SegmentationSource, SegRecord, SegTarget
from lavida.data.sources.masks import read_index_png


class SyntheticSource(SegmentationSource):
    """Videos and images of coloured shapes (``meta.json`` layout), one target per object.

    Records of videos carry, per target, the frames where the object is visible, so clip sampling can
    prefer windows that show it.
    """

    name = "synthetic"
    is_video = True  # per record: images are one-frame records with ``is_video=False``

    def index(self, *, artifacts: str | Path | None = None, skip_errors: bool = False) -> Iterator[SegRecord]:
        meta_file = self.root / "meta.json"
        if not meta_file.is_file():
            raise DatasetFormatError(
                f"{meta_file}: not found; write the set with lavida.synthetic.datasets first."
            )
        meta = json.loads(meta_file.read_text())
        for kind in ("videos", "images"):
            for key, entry in sorted(meta.get(kind, {}).items()):
                frames = tuple(f"JPEGImages/{key}/{t:05d}.jpg" for t in range(entry["frames"]))
                masks = [f"Annotations/{key}/{t:05d}.png" for t in range(entry["frames"])]
                ids_per_frame = [set(np.unique(read_index_png(self.root / path)).tolist()) for path in masks]
                targets = []
                for object_id, text in entry["objects"].items():
                    visible = [t for t, ids in enumerate(ids_per_frame) if int(object_id) in ids]
                    spec = {"kind": "index_png", "paths": masks, "values": [int(object_id)]}
                    targets.append(
                        SegTarget(text=text, mask=spec, frames=tuple(visible) if kind == "videos" else ())
                    )
                yield SegRecord(
                    source=self.name,
                    key=key,
                    group=f"synthetic/{key}",
                    frames=frames,
                    targets=tuple(targets),
                    present=tuple(entry["objects"].values()),
                    is_video=kind == "videos",
                )
