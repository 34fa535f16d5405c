"""The training sources (supplement B.1), one module per dataset, imported only when asked for.

``SOURCES`` maps each source name to ``"module:Class"``; :func:`get_source` imports the module on first
use, so a missing optional dependency of one dataset never breaks the others. A ``"module:Class"``
string is accepted in place of a name, to plug in a source defined elsewhere.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lavida.data.sources.base import SegmentationSource

SOURCES: dict[str, str] = {
    # Images (B.1 1)
    "ade20k": "lavida.data.sources.ade20k:ADE20KSource",
    "mapillary": "lavida.data.sources.mapillary:MapillaryVistasSource",
    "cityscapes": "lavida.data.sources.cityscapes:CityscapesSource",
    "refclef": "lavida.data.sources.refer:RefClefSource",
    "refcoco": "lavida.data.sources.refer:RefCocoSource",
    "refcoco+": "lavida.data.sources.refer:RefCocoPlusSource",
    "refcocog": "lavida.data.sources.refer:RefCocoGSource",
    # Videos (B.1 2)
    "vos": "lavida.data.sources.youtube_vos:YouTubeVOSSource",
    "refvos": "lavida.data.sources.ref_youtube_vos:RefYouTubeVOSSource",
    "mevis": "lavida.data.sources.mevis:MeViSSource",
    "refdavis": "lavida.data.sources.ref_davis:RefDAVISSource",
    # The embedded synthetic set (lavida.synthetic): the demo and tests
    "synthetic": "lavida.data.sources.synthetic:SyntheticSource",
}

IMAGE_SOURCES = ("ade20k", "mapillary", "cityscapes", "refclef", "refcoco", "refcoco+", "refcocog")
VIDEO_SOURCES = ("vos", "refvos", "mevis", "refdavis")


def source_class(name: str) -> type[SegmentationSource]:
    """The class registered under ``name`` (or named by a ``"module:Class"`` string), imported lazily.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
        ImportError: the source's module cannot be imported (the message says which and why).
        TypeError: the object found is not a :class:`SegmentationSource` subclass.
    """
    if name in SOURCES:
        spec = SOURCES[name]
    elif ":" in name:
        spec = name
    else:
        raise KeyError(
            f"Unknown training source '{name}'; known sources: {', '.join(SOURCES)} (or 'module:Class')."
        )
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"Training source '{name}' is not available: cannot import {module_name} ({error})."
        ) from error
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, SegmentationSource)):
        raise TypeError(f"{spec} is not a SegmentationSource subclass (training source '{name}').")
    return cls


def get_source(name: str, root: str | Path, **kwargs: Any) -> SegmentationSource:
    """Build the source ``name`` reading the dataset at ``root``; ``kwargs`` go to its constructor.

    Example:
        >>> source = get_source("ade20k", "/data/ADEChallengeData2016")  # doctest: +SKIP
    """
    return source_class(name)(root, **kwargs)


__all__ = ["IMAGE_SOURCES", "SOURCES", "VIDEO_SOURCES", "get_source", "source_class"]
