"""What differs between two records of settings, in words: ``threshold was 0.5, now 0.3``.

Caches (lavida-eval's per-video results, lavida-detect's finished videos) store the settings that made
them as JSON; a rerun with other settings recomputes or refuses, and says which ones changed.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["changed_settings"]

_ABSENT = object()


def changed_settings(was: Any, now: Any, *, key: str | None = None) -> list[str]:
    """``key was X, now Y`` for each setting that differs, descending into dicts both sides hold and naming
    nested ones by their dotted key (``base_models.text_encoder``); a key one side lacks is ``absent``.

    Values are compared as JSON, as the caches hash them: 1, 1.0 and True differ.
    """
    if isinstance(was, dict) and isinstance(now, dict):
        return [
            change
            for name in sorted(set(was) | set(now))
            for change in changed_settings(
                was.get(name, _ABSENT), now.get(name, _ABSENT), key=name if key is None else f"{key}.{name}"
            )
        ]
    if _as_json(was) == _as_json(now):
        return []
    shown = ["absent" if value is _ABSENT else repr(value) for value in (was, now)]
    return [f"{key} was {shown[0]}, now {shown[1]}"]


def _as_json(value: Any) -> str | object:
    if value is _ABSENT:
        return _ABSENT
    return json.dumps(value, sort_keys=True, default=str)
