"""Resuming continues the *same* run: the settings that decide what is trained must not change.

A training checkpoint records the run's settings (``run_config.json``, written by the trainer). Exact
resume (item i of epoch e, the dropout masks, the learning-rate schedule) replays an uninterrupted run
only if the model, the data, the recipe and the process count are the ones the checkpoint was made
with. A changed learning rate, dtype, ``max_steps`` (the schedule decays to 0 at the last step) or data
mixture would otherwise continue silently as a different, unrecorded run. The mixture compared is the
one actually sampled (``data.effective_mixture``: with ``missing_sources: renormalize`` a source absent
on this machine changes it although the configured weights do not).

Settings that only say *where* things are or *how often* something is reported may change: base-model
and dataset paths (another machine; whether a base model has a path at all is still compared), data
workers, how unreadable items are handled, logging, checkpoint and validation cadence. A setting that
only one of the two records has counts as changed: a data source or a learning-rate scale added is a
different run, and an option added by a code update since the save cannot be told apart from one (the
error says so, and ``train.resume_check=warn`` continues).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

from lavida.atomic import read_json

log = logging.getLogger(__name__)

RUN_CONFIG_FILE = "run_config.json"

# The sections of the trainer's record that decide what is trained.
COMPARED_SECTIONS = ("model", "data", "train", "launcher", "processes")

# Dotted keys (fnmatch patterns) that may change when resuming without changing what is computed.
FREE_TO_CHANGE = (
    "model.base_weights",  # whether a missing path is an error, not what is loaded
    "model.mllm.attn_implementation",  # the same attention, another kernel
    "model.mllm.gradient_checkpointing",  # recomputes the same activations
    "data.data_root",
    "data.manifest_dir",
    "data.sources.*.root",
    "data.sources.*.manifest",
    "data.num_workers",
    "data.samples_per_epoch",  # derived by the trainer from train.* and the process count
    # Items read without error are the same either way; the error that stopped the run says to set these.
    "data.skip_errors",
    "data.max_attempts",
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
    "launcher.deepspeed.steps_per_print",
    "launcher.deepspeed.wall_clock_breakdown",
)

# Keys compared only for being set or not: a base model's path may move, but not appear or vanish (with
# ``base_weights: optional`` an unset path means random frozen weights).
SET_OR_NOT = ("model.*.pretrained",)


class ResumeMismatchError(ValueError):
    """The run being resumed was made with other settings than the ones given now.

    Attributes:
        changed: The dotted keys that differ (``train.optim.lr``, ...); empty when the checkpoint's record
            could not be read. Callers with their own settings (lavida-demo) name theirs from these.
        changes: One line per difference, ``key: <in the checkpoint> -> <now>``.
    """

    def __init__(self, message: str, *, changed: tuple[str, ...] = (), changes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.changed = tuple(changed)
        self.changes = tuple(changes)


def comparable(record: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """The compared settings of a trainer record, keyed by their path, after a JSON round trip (tuples
    become lists, as they read back from ``run_config.json``)."""
    plain = json.loads(json.dumps({k: record[k] for k in COMPARED_SECTIONS if k in record}, default=str))
    settings = {}
    for path, value in _flatten(plain, ()).items():
        dotted = ".".join(path)
        if any(fnmatch.fnmatchcase(dotted, pattern) for pattern in FREE_TO_CHANGE):
            continue
        if any(fnmatch.fnmatchcase(dotted, pattern) for pattern in SET_OR_NOT):
            value = "(set)" if value is not None else "(unset)"
        settings[path] = value
    return settings


def check_resume_settings(
    checkpoint: Path,
    current_record: dict[str, Any],
    *,
    mode: Literal["strict", "warn"],
) -> list[str]:
    """Compare the settings recorded in ``checkpoint`` with ``current_record``; return the differences.

    Args:
        checkpoint: A training checkpoint directory (``.../checkpoints/step_<N>``).
        current_record: The trainer's record of the run about to resume (``Trainer._record``).
        mode: ``strict`` raises on a changed setting; ``warn`` logs the changes and continues.

    Returns:
        One line per changed setting, ``key: <in the checkpoint> -> <now>`` (empty when they agree, or when
        the checkpoint holds no readable record, which is logged).

    Raises:
        ResumeMismatchError: ``mode`` is ``strict`` and a setting differs or the record is unreadable.
    """
    path = Path(checkpoint) / RUN_CONFIG_FILE
    if not path.is_file():
        log.warning(
            "%s holds no %s (written by an older lavida); the settings of the resumed run cannot be "
            "compared with the current ones.",
            checkpoint,
            RUN_CONFIG_FILE,
        )
        return []
    recorded = _read_record(path, mode=mode)
    if recorded is None:
        return []
    before, now = comparable(recorded), comparable(current_record)
    changes = [
        f"{'.'.join(key)}: {_show(before, key)} -> {_show(now, key)}"
        for key in sorted(set(before) | set(now))
        if _differs(before, now, key)
    ]
    if not changes:
        return []
    listed = "\n  ".join(changes)
    if mode == "strict":
        one_sided = set(before) ^ set(now)
        hint = (
            "A setting absent on one side may also be an option that a code update added or removed since "
            "the checkpoint; if its value keeps the old behaviour, train.resume_check=warn is safe.\n"
            if one_sided
            else ""
        )
        raise ResumeMismatchError(
            f"Resuming from {checkpoint}, but these settings differ from the ones it was trained with "
            f"(checkpoint -> now):\n  {listed}\n{hint}"
            "Resuming replays an uninterrupted run only with the same settings. Either give the run's own "
            f"settings (they are in {path}), train into a new output_dir (another run_name) (or delete {Path(checkpoint).parent} "
            "to start over), or set train.resume_check=warn to continue with the new ones (the run is then "
            "no longer a replay of one configuration).",
            changes=tuple(changes),
            changed=tuple(
                sorted({".".join(key) for key in set(before) | set(now) if _differs(before, now, key)})
            ),
        )
    log.warning(
        "Resuming from %s with changed settings (checkpoint -> now); the run is no longer a replay of one "
        "configuration:\n  %s",
        checkpoint,
        listed,
    )
    return changes


def _read_record(path: Path, *, mode: str) -> dict | None:
    """The record in ``path``; an unreadable one raises in strict mode and is logged (None) in warn mode."""
    try:
        recorded = read_json(path, expected="the settings the checkpoint was trained with")
        problem = None if isinstance(recorded, dict) else f"a JSON {type(recorded).__name__}, not an object"
    except (OSError, ValueError) as error:  # read_json names the file and where the parser stopped
        problem = f"not readable JSON ({error})"
    if problem is None:
        return recorded
    if mode == "strict":
        raise ResumeMismatchError(
            f"{path} is {problem}; it should hold the settings the checkpoint was trained with. Set "
            f"train.resume_check=warn to resume without comparing them, or delete {path.parent} to resume "
            "from the checkpoint before it."
        )
    log.warning("%s is %s; the settings of the resumed run are not compared.", path, problem)
    return None


def _flatten(tree: Any, path: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    # Paths as tuples: keys may contain dots themselves (train.optim.lr_scales prefixes).
    if isinstance(tree, dict) and tree:
        flat: dict[tuple[str, ...], Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, (*path, str(key))))
        return flat
    return {path: tree}


def _show(settings: dict[tuple[str, ...], Any], key: tuple[str, ...]) -> str:
    return repr(settings[key]) if key in settings else "(absent)"


def _differs(before: dict, now: dict, key: tuple[str, ...]) -> bool:
    return not (key in before and key in now and _same(before[key], now[key]))


def _same(before: Any, now: Any) -> bool:
    both_nan = isinstance(before, float) and isinstance(now, float) and math.isnan(before) and math.isnan(now)
    return both_nan or before == now
