"""Training checkpoints: written atomically, resumed exactly.

A training checkpoint directory ``<output_dir>/checkpoints/step_<N>/`` holds

    model/                  the trained weights in the LAVIDA checkpoint format (evaluable as is)
    optimizer.pt            optimizer and scheduler state, and fp16's loss scale where there is one
                            (tensors and numbers; loaded weights_only)
    progress.json           optimizer step, epoch, micro-batches consumed in the epoch
    run_config.json         the run's resolved settings and process count (resuming compares them:
                            lavida/train/resume_check.py)
    accelerate/             (DeepSpeed only) Accelerate's sharded engine state

Everything is first written to ``step_<N>.staging`` and renamed when complete; ``latest.txt`` names
the newest complete checkpoint for people, while resuming scans the folders (``latest_checkpoint``).
Neither data nor RNG needs state of its own: item i of epoch e is a pure function of (seed, e, i), and
the model's randomness is reseeded per micro-batch from (seed, epoch, batch, rank) — so resuming at
(epoch, micro-batch) replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lavida.atomic import read_json, replace_dir, write_text
from lavida.models.checkpoint import load_trained_weights, save_checkpoint
from lavida.models.config import LavidaConfig
from lavida.train.resume_check import RUN_CONFIG_FILE

log = logging.getLogger(__name__)

LATEST = "latest.txt"


@dataclass
class Progress:
    """Where training stands.

    Attributes:
        step: Optimizer steps done.
        epoch: Current epoch (0-based).
        batch_in_epoch: Micro-batches of this epoch already consumed.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def checkpoint_root(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_training_checkpoint(
    *,
    accelerator,
    model,
    model_config: LavidaConfig,
    optimizer,
    scheduler,
    progress: Progress,
    output_dir: Path,
    keep_last: int,
    run_config: dict,
    extra_meta: dict | None = None,
) -> Path:
    """Write a training checkpoint for ``progress.step`` (collective: every process must call it)."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{progress.step:07d}"
    staging = root / f"step_{progress.step:07d}.staging"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()

    uses_deepspeed = accelerator.state.deepspeed_plugin is not None
    if uses_deepspeed:
        # Frozen weights (about 16 GB of the 7B model) are rebuilt from the base models on resume;
        # DeepSpeed would otherwise write them into every checkpoint.
        accelerator.save_state(str(staging / "accelerate"), exclude_frozen_parameters=True)
    unwrapped = accelerator.unwrap_model(model)
    with whole_trainable_weights(accelerator, unwrapped):
        if accelerator.is_main_process:
            save_checkpoint(unwrapped, model_config, staging / "model", extra_meta=extra_meta)
    if accelerator.is_main_process:
        if not uses_deepspeed:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            if accelerator.scaler is not None:
                # fp16's loss scale: a resume that restarted at the initial scale would skip updates that
                # the uninterrupted run applied (DeepSpeed keeps its own scaler in its state).
                state["scaler"] = accelerator.scaler.state_dict()
            torch.save(state, staging / "optimizer.pt")
        (staging / "progress.json").write_text(json.dumps(asdict(progress), indent=2))
        (staging / RUN_CONFIG_FILE).write_text(json.dumps(run_config, indent=2, default=str))
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        replace_dir(staging, final)
        write_text(root / LATEST, final.name + "\n")
        _prune(root, keep_last)
        log.info("Saved training checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


@contextlib.contextmanager
def whole_trainable_weights(accelerator, model: torch.nn.Module) -> Iterator[None]:
    """Inside, every trainable parameter of ``model`` holds its whole tensor on every process.

    Under ZeRO-3 each process keeps only a shard of each parameter (an empty tensor in the module), so a
    checkpoint written from the module would hold empty tensors; the shards are gathered for the time of
    the block. Collective: every process must enter it. Elsewhere it does nothing.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None or plugin.zero_stage != 3:
        yield
        return
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
        yield


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete training checkpoint in ``output_dir``, or None.

    Found by scanning the ``step_<N>`` folders, not by trusting ``latest.txt`` alone: a pointer that is
    missing, names a deleted folder, or lags behind (a kill between the rename and the pointer's write)
    would otherwise restart the run from step 0, whose pruning then deletes the checkpoints it could
    have resumed from. A pointer that disagrees with the scan is logged.
    """
    root = checkpoint_root(output_dir)
    complete = [folder for folder in _step_folders(root) if _is_complete(folder)]
    newest = complete[-1] if complete else None
    pointer = root / LATEST
    named = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else None
    if named != (newest.name if newest else None):
        log.warning(
            "%s names %s, but the newest complete checkpoint in %s is %s; using the latter.",
            pointer,
            named or "nothing (it is missing)",
            root,
            newest.name if newest else "none",
        )
    return newest


def check_checkpoints_in_the_way(output_dir: Path, *, resume_step: int | None) -> None:
    """Refuse to train into ``output_dir`` if its checkpoints belong to another run or to later steps.

    Pruning keeps the newest ``keep_last`` step folders by step number, so a fresh run (``resume_step``
    None, i.e. ``train.resume=never``) beside an earlier run's checkpoints, or a run resumed from step N
    beside checkpoints after N, would delete its own new checkpoints as soon as it wrote them, and a later
    ``resume=auto`` would continue the other run.

    Raises:
        FileExistsError: such checkpoints exist (the message lists them and says what to do).
    """
    root = checkpoint_root(output_dir)
    folders = _step_folders(root)
    if resume_step is not None:
        folders = [folder for folder in folders if _step_number(folder) > resume_step]
    if not folders:
        return
    names = ", ".join(folder.name for folder in folders)
    if resume_step is None:
        situation = (
            f"train.resume=never starts a new run, but {root} holds checkpoints of an earlier one ({names})"
        )
    else:
        situation = f"resuming from step {resume_step}, but {root} holds later checkpoints ({names})"
    raise FileExistsError(
        f"{situation}; the two runs' checkpoints would mix and pruning would delete the new ones. Train into "
        "a new output_dir, delete those folders, or resume with train.resume=auto."
    )


def _step_number(folder: Path) -> int:
    """N of a folder :func:`_step_folders` returned."""
    return int(folder.name.removeprefix("step_"))


def _step_folders(root: Path) -> list[Path]:
    """The ``step_<N>`` folders under ``root``, by N (oldest first).

    Staging folders and other names (a user's copy such as ``step_best``) are not checkpoints: counted as
    one, the copy was taken for the newest by resume=auto and counted towards keep_last. The order is N's,
    not the names': ``{:07d}`` stops padding at step 10,000,000.
    """
    folders = [p for p in root.glob("step_*") if p.is_dir() and p.name.removeprefix("step_").isdecimal()]
    return sorted(folders, key=_step_number)


def _is_complete(directory: Path) -> bool:
    # save_training_checkpoint renames a folder to step_<N> only once all of it is written.
    return (directory / "progress.json").is_file() and (directory / "model").is_dir()


def check_training_checkpoint(directory: Path, *, deepspeed: bool) -> None:
    """Raise ``FileNotFoundError`` unless ``directory`` holds a complete training checkpoint.

    Called before the model is built for an explicit ``train.resume`` (a run's ``output_dir`` or its
    ``final`` model are common mistakes), and again by :func:`load_training_checkpoint`.
    """
    directory = Path(directory)
    required = ["progress.json", "model", "accelerate" if deepspeed else "optimizer.pt"]
    missing = [name for name in required if not (directory / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a complete training checkpoint: missing {missing}. A training checkpoint is "
            f"a folder <output_dir>/checkpoints/step_<N> holding {required}; give one as train.resume, or "
            "train.resume=auto to take the newest."
        )


def load_training_checkpoint(directory: Path, *, accelerator, model, optimizer, scheduler) -> Progress:
    """Restore weights, optimizer and scheduler from ``directory``; return the progress to resume at.

    Raises:
        FileNotFoundError: a required file is missing (the message lists what a checkpoint holds).
        ValueError: ``progress.json`` is not what it should be (:func:`read_progress`).
    """
    directory = Path(directory)
    check_training_checkpoint(directory, deepspeed=accelerator.state.deepspeed_plugin is not None)
    if accelerator.state.deepspeed_plugin is not None:
        # Not strict: the checkpoint holds the trained weights only (see save_training_checkpoint).
        accelerator.load_state(str(directory / "accelerate"), load_module_strict=False)
    else:
        load_trained_weights(accelerator.unwrap_model(model), directory / "model")
        state = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if accelerator.scaler is not None:
            if "scaler" in state:
                accelerator.scaler.load_state_dict(state["scaler"])
            else:
                log.warning(
                    "%s holds no fp16 loss-scaler state (saved without fp16 or by an older lavida); the "
                    "scaler starts again from its initial scale, and may skip a few updates.",
                    directory / "optimizer.pt",
                )
    progress = read_progress(directory)
    log.info(
        "Resumed from %s at step %d (epoch %d, batch %d)",
        directory,
        progress.step,
        progress.epoch,
        progress.batch_in_epoch,
    )
    return progress


def read_progress(directory: Path) -> Progress:
    """The ``progress.json`` of a training checkpoint.

    Raises:
        ValueError: the file is not the JSON object ``{"step", "epoch", "batch_in_epoch"}`` it should be.
    """
    path = Path(directory) / "progress.json"
    expected = "the training progress {step, epoch, batch_in_epoch}"
    data = read_json(path, expected=expected)
    fields = {"step", "epoch", "batch_in_epoch"}
    if (
        not isinstance(data, dict)
        or set(data) != fields
        or not all(isinstance(v, int) for v in data.values())
    ):
        raise ValueError(f"{path} should hold {expected} as integers, got {data!r}.")
    return Progress(**data)


def _prune(root: Path, keep_last: int) -> None:
    checkpoints = _step_folders(root)
    for old in checkpoints[: max(0, len(checkpoints) - max(keep_last, 1))]:
        shutil.rmtree(old, ignore_errors=True)
