"""Resuming continues the *same* run: the settings that decide what is trained must not change.

A training checkpoint records the run's settings (``run_config.json``, written by the trainer). Exact
resume (item i of epoch e, the dropout masks, the learning-rate schedule) replays an uninterrupted run
only if the model, the data, the recipe and the process count are the ones the checkpoint was made
with. A changed learning rate, dtype, ``max_steps`` (the schedule decays to 0 at the last step) or data
mixture would otherwise continue silently as a different, unrecorded run.

Settings that only say *where* things are or *how often* something is reported may change: base-model
and dataset paths (another machine), data workers, logging, checkpoint and validation cadence.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

_ABSENT = object()  # a key one of the two records does not have

RUN_CONFIG_FILE = "run_config.json"

# The sections of the trainer's record that decide what is trained.
COMPARED_SECTIONS = ("model", "data", "train", "launcher", "processes")

# Dotted keys (fnmatch patterns) that may change when resuming without changing what is computed.
FREE_TO_CHANGE = (
    "model.*.pretrained",  # base-model paths: the same weights on another machine
    "model.base_weights",  # whether a missing path is an error, not what is loaded
    "model.mllm.attn_implementation",  # the same attention, another kernel
    "model.mllm.gradient_checkpointing",  # recomputes the same activations
    "data.data_root",
    "data.manifest_dir",
    "data.sources.*.root",
    "data.sources.*.manifest",
    "data.num_workers",
    "data.samples_per_epoch",  # derived by the trainer from train.* and the process count
    "train.resume",
    "train.resume_check",
    "train.logger",
    "train.log_every",
    "train.save_every",
    "train.keep_last",
    "train.val_every",
    "train.val_batches",
    "launcher.name",
    "launcher.cpu",
    "launcher.find_unused_parameters",
)


class ResumeMismatchError(ValueError):
    """The run being resumed was made with other settings than the ones given now."""


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The compared settings of a trainer record as dotted keys, after a JSON round trip (tuples → lists)."""
    plain = json.loads(json.dumps({k: record[k] for k in COMPARED_SECTIONS if k in record}, default=str))
    flat = _flatten(plain)
    return {
        key: value
        for key, value in flat.items()
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in FREE_TO_CHANGE)
    }


def check_resume_settings(
    checkpoint: Path,
    current_record: dict[str, Any],
    *,
    mode: Literal["strict", "warn"],
) -> list[str]:
    """Compare the settings recorded in ``checkpoint`` with ``current_record``; return the differences.

    Args:
        checkpoint: A training checkpoint directory (``.../checkpoints/step_<N>``).
        current_record: The trainer's record of the run about to resume (``Trainer.record``).
        mode: ``strict`` raises on any difference; ``warn`` logs them and continues.

    Returns:
        One line per changed setting, ``key: <in the checkpoint> -> <now>`` (empty when they agree, or when
        the checkpoint predates the record, which is logged).

    Raises:
        FileNotFoundError: ``checkpoint`` is not a directory (e.g. a mistyped ``train.resume``).
        ResumeMismatchError: ``mode`` is ``strict`` and a setting differs.
    """
    if not Path(checkpoint).is_dir():
        raise FileNotFoundError(
            f"train.resume={checkpoint} is not a directory; it should be a training checkpoint "
            "(<output_dir>/checkpoints/step_<N>), or `auto` / `never`."
        )
    path = Path(checkpoint) / RUN_CONFIG_FILE
    if not path.is_file():
        log.warning(
            "%s holds no %s (written by lavida before 2026-12-04); the settings of the resumed run cannot "
            "be compared with the current ones.",
            checkpoint,
            RUN_CONFIG_FILE,
        )
        return []
    try:
        recorded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResumeMismatchError(
            f"{path} is not readable JSON ({error}); it should hold the settings the checkpoint was trained "
            "with. Resume from another checkpoint (train.resume=<dir>) or set train.resume_check=warn."
        ) from error
    before, now = comparable(recorded), comparable(current_record)
    changes = [
        f"{key}: {_show(before.get(key, _ABSENT))} -> {_show(now.get(key, _ABSENT))}"
        for key in sorted(set(before) | set(now))
        if before.get(key, _ABSENT) != now.get(key, _ABSENT)
    ]
    if not changes:
        return []
    listed = "\n  ".join(changes)
    if mode == "strict":
        raise ResumeMismatchError(
            f"Resuming from {checkpoint}, but these settings differ from the ones it was trained with "
            f"(checkpoint -> now):\n  {listed}\n"
            "Resuming replays an uninterrupted run only with the same settings. Either give the run's own "
            f"settings (they are in {path}), train into a new output_dir, or set train.resume_check=warn to "
            "continue with the new ones (the run is then no longer a replay of one configuration)."
        )
    log.warning(
        "Resuming from %s with changed settings (checkpoint -> now); the run is no longer a replay of one "
        "configuration:\n  %s",
        checkpoint,
        listed,
    )
    return changes


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)
