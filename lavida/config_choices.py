"""Refusing a config value outside its ``Literal`` choices, by the key's full name.

Hydra passes what was typed, so ``model.mllm.family=qwen2.5_vl`` or ``train.logger=tb`` would otherwise
fail deep in a builder or in Accelerate, without naming the key (or, for a typo that happens to select a
default branch, not at all). Shared by the model and training configs.
"""

from __future__ import annotations

import typing
from typing import Literal

__all__ = ["check_choices"]


def check_choices(config: object, where: str) -> None:
    """Raise ValueError if a ``Literal`` field of the dataclass instance ``config`` holds another value.

    Args:
        config: A dataclass instance (annotations may be strings, under ``from __future__ import
            annotations``: they are resolved in the class's module).
        where: The config's key path, e.g. ``model.projector``; the message names ``<where>.<field>``.
    """
    for name, hint in typing.get_type_hints(type(config)).items():
        if typing.get_origin(hint) is not Literal:
            continue
        choices = typing.get_args(hint)
        value = getattr(config, name)
        if value not in choices:
            raise ValueError(
                f"{where}.{name} must be one of {', '.join(map(str, choices))}, got {value!r}; e.g. "
                f"{where}.{name}={choices[0]}."
            )
