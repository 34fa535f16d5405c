"""Training checkpoints written and read directly (lavida.train.state), without a training loop.

The trainer tests exercise these through whole runs; here each behaviour is pinned on its own, in well
under a second: what a checkpoint folder holds, pruning, the restore of model, optimizer and schedule, the
fp16 scaler-less fallback, ZeRO-3's gathering, and stray ``step_*`` folders.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from lavida.models.checkpoint import read_checkpoint_meta
from lavida.train.state import (
    Progress,
    check_checkpoints_in_the_way,
    check_training_checkpoint,
    latest_checkpoint,
    load_training_checkpoint,
    read_progress,
    save_training_checkpoint,
    whole_trainable_weights,
)


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def optimizer_and_schedule(model: torch.nn.Module):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    return optimizer, scheduler


def take_a_step(model, optimizer, scheduler) -> None:
    loss = sum(p.square().sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def save(
    model,
    config,
    optimizer,
    scheduler,
    output_dir,
    progress,
    *,
    keep_last=5,
    accelerator=None,
    run_config=None,
    extra_meta=None,
):
    return save_training_checkpoint(
        accelerator=accelerator or Accelerator(cpu=True),
        model=model,
        model_config=config,
        optimizer=optimizer,
        scheduler=scheduler,
        progress=progress,
        output_dir=output_dir,
        keep_last=keep_last,
        run_config={"train": {"seed": 1}} if run_config is None else run_config,
        extra_meta=extra_meta,
    )


def test_a_checkpoint_holds_the_documented_files_and_keep_last_1_keeps_only_the_newest(
    tiny_model, tiny_pretrained, tmp_path
):
    """state.py's docstring lists what a (non-DeepSpeed) checkpoint folder holds, and nothing a killed
    save left in its staging folder gets in; keep_last=1 (the smallest allowed, train/config.py) keeps the
    newest step only; the folder written is returned."""
    stale = tmp_path / "checkpoints" / "step_0000003.staging"
    stale.mkdir(parents=True)
    (stale / "half_written.bin").write_bytes(b"\0")
    optimizer, scheduler = optimizer_and_schedule(tiny_model)
    for step in (1, 2, 3):
        final = save(
            tiny_model,
            tiny_pretrained,
            optimizer,
            scheduler,
            tmp_path,
            Progress(step, 0, 2 * step),
            keep_last=1,
        )
    root = tmp_path / "checkpoints"
    assert final == root / "step_0000003"
    assert sorted(p.name for p in root.iterdir()) == ["latest.txt", "step_0000003"]
    assert (root / "latest.txt").read_text() == "step_0000003\n"
    assert sorted(p.name for p in final.iterdir()) == [
        "model",
        "optimizer.pt",
        "progress.json",
        "run_config.json",
    ]
    assert read_progress(final) == Progress(step=3, epoch=0, batch_in_epoch=6)


def test_fp16_resume_from_a_checkpoint_without_scaler_state_restores_the_rest_and_warns(
    tiny_model, tiny_pretrained, tmp_path, caplog
):
    """A checkpoint saved without fp16 (no "scaler" in optimizer.pt) resumed under fp16: weights, AdamW
    moments and the schedule position come back as saved (a later step changed all three), the scaler
    keeps its initial scale, and the fallback is logged naming the file rather than failing."""
    optimizer, scheduler = optimizer_and_schedule(tiny_model)
    take_a_step(tiny_model, optimizer, scheduler)
    weights, moments = trainable(tiny_model), copy.deepcopy(optimizer.state_dict()["state"])
    folder = save(tiny_model, tiny_pretrained, optimizer, scheduler, tmp_path, Progress(1, 0, 2))
    take_a_step(tiny_model, optimizer, scheduler)
    assert scheduler.last_epoch == 2

    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    with caplog.at_level(logging.WARNING):
        progress = load_training_checkpoint(
            folder, accelerator=accelerator, model=tiny_model, optimizer=optimizer, scheduler=scheduler
        )
    assert progress == Progress(step=1, epoch=0, batch_in_epoch=2)
    for name, value in trainable(tiny_model).items():
        assert torch.equal(value, weights[name]), name
    restored = optimizer.state_dict()["state"]
    assert restored.keys() == moments.keys()
    for index, saved in moments.items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(restored[index][key], saved[key]), (index, key)
    assert scheduler.last_epoch == 1
    assert accelerator.scaler.get_scale() == 8.0
    assert "holds no fp16 loss-scaler state" in caplog.text
    assert str(folder / "optimizer.pt") in caplog.text


def test_a_resume_without_fp16_says_nothing_about_a_loss_scaler(
    tiny_model, tiny_pretrained, tmp_path, caplog
):
    """Without fp16 there is no loss scale to restore: a checkpoint saved without one resumes with no
    warning (the fallback warning above is for fp16 resumes only)."""
    optimizer, scheduler = optimizer_and_schedule(tiny_model)
    folder = save(tiny_model, tiny_pretrained, optimizer, scheduler, tmp_path, Progress(1, 0, 2))
    with caplog.at_level(logging.WARNING, logger="lavida.train.state"):
        progress = load_training_checkpoint(
            folder,
            accelerator=Accelerator(cpu=True),
            model=tiny_model,
            optimizer=optimizer,
            scheduler=scheduler,
        )
    assert progress == Progress(step=1, epoch=0, batch_in_epoch=2)
    assert [record.getMessage() for record in caplog.records if record.name == "lavida.train.state"] == []


def test_only_zero_stage_3_gathers_and_then_exactly_the_trainable_parameters(monkeypatch):
    """ZeRO-3 shards every parameter, so a checkpoint must gather the trainable ones (only those: the frozen
    base models would be gathered for nothing); without DeepSpeed or under ZeRO-1/2 the module already
    holds whole tensors and nothing is gathered."""
    model = torch.nn.Linear(2, 2)
    model.bias.requires_grad_(False)
    calls = []

    @contextlib.contextmanager
    def gathered_parameters(params, modifier_rank):
        calls.append(([id(p) for p in params], modifier_rank))
        yield

    fake = SimpleNamespace(zero=SimpleNamespace(GatheredParameters=gathered_parameters))
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    for stage, expected in ((None, []), (1, []), (2, []), (3, [([id(model.weight)], None)])):
        plugin = None if stage is None else SimpleNamespace(zero_stage=stage)
        accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin))
        calls.clear()
        with whole_trainable_weights(accelerator, model):
            inside = list(calls)
        assert inside == expected, stage


def test_a_stray_step_folder_is_never_a_later_checkpoint(tmp_path):
    """A folder like ``step_backup`` (not written by lavida: no step number) beside the checkpoints must not
    block resuming from the newest one, nor be listed as a later checkpoint."""
    root = tmp_path / "checkpoints"
    for name in ("step_0000002", "step_0000004", "step_backup"):
        (root / name).mkdir(parents=True)
    check_checkpoints_in_the_way(tmp_path, resume_step=4)  # nothing later than step 4
    with pytest.raises(FileExistsError, match=r"later checkpoints \(step_0000004\);"):
        check_checkpoints_in_the_way(tmp_path, resume_step=2)


def test_a_copied_checkpoint_under_another_name_is_neither_newest_nor_pruned(
    tiny_model, tiny_pretrained, tmp_path
):
    """``cp -r step_0000004 step_best`` beside a run's checkpoints: ``step_best`` is no ``step_<N>`` folder
    (it has no step number), so it must not be taken for the newest checkpoint nor count towards
    keep_last. Sorted by name it came last ('b' > '0'): with keep_last=1 every new checkpoint was deleted
    as soon as it was written, and resume=auto went back to the copy."""
    best = tmp_path / "checkpoints" / "step_best"
    (best / "model").mkdir(parents=True)
    (best / "progress.json").write_text('{"step": 4, "epoch": 0, "batch_in_epoch": 4}')
    optimizer, scheduler = optimizer_and_schedule(tiny_model)
    for step in (5, 6):
        final = save(
            tiny_model, tiny_pretrained, optimizer, scheduler, tmp_path, Progress(step, 0, step), keep_last=1
        )
    assert final.is_dir() and final.name == "step_0000006"
    assert latest_checkpoint(tmp_path) == final
    assert best.is_dir()  # not lavida's to delete


def test_checkpoints_past_seven_digits_are_newer_than_the_padded_ones(tmp_path, caplog):
    """Folders are named ``step_{N:07d}``: the padding ends at 9,999,999, so by name ``step_10000000`` sorts
    before ``step_9999999`` ('1' < '9'); by step number it is the newer one."""
    root = tmp_path / "checkpoints"
    for name in ("step_9999999", "step_10000000"):
        (root / name / "model").mkdir(parents=True)
        (root / name / "progress.json").write_text("{}")
    (root / "latest.txt").write_text("step_10000000\n")
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == root / "step_10000000"
    assert caplog.text == ""  # the pointer agrees with the scan


class RecordingAccelerator:
    """The part of Accelerate's API that save/load use, recording the collective calls in order: stands in
    for another process (``main=False``) or for DeepSpeed (``plugin``), which need several processes or
    DeepSpeed itself to run for real."""

    def __init__(self, *, main: bool = True, plugin=None):
        self.is_main_process = main
        self.state = SimpleNamespace(deepspeed_plugin=plugin)
        self.scaler = None
        self.events: list = []

    def wait_for_everyone(self) -> None:
        self.events.append("barrier")

    def unwrap_model(self, model):
        return model

    def save_state(self, path, **options) -> None:
        self.events.append(("save_state", path, options))
        Path(path).mkdir()

    def load_state(self, path, **options) -> None:
        self.events.append(("load_state", path, options))


def test_a_fresh_run_starts_at_step_0_of_epoch_0():
    """Trainer starts a run without a checkpoint from ``Progress()``: nothing done yet."""
    assert Progress() == Progress(step=0, epoch=0, batch_in_epoch=0)


def test_only_the_main_process_writes_and_every_process_meets_at_the_three_barriers(
    tiny_model, tiny_pretrained, tmp_path
):
    """Saving is collective (every process calls it): a process other than the main one writes nothing,
    yet passes the same three barriers (staging made / files written / renamed), else the processes hang
    or read a half-written folder; it returns the folder the main process writes."""
    accelerator = RecordingAccelerator(main=False)
    optimizer, scheduler = optimizer_and_schedule(tiny_model)
    final = save(
        tiny_model,
        tiny_pretrained,
        optimizer,
        scheduler,
        tmp_path,
        Progress(2, 0, 2),
        accelerator=accelerator,
    )
    assert final == tmp_path / "checkpoints" / "step_0000002"
    assert not (tmp_path / "checkpoints").exists()
    assert accelerator.events == ["barrier", "barrier", "barrier"]


def test_under_deepspeed_the_engine_state_replaces_optimizer_pt_and_frozen_weights_are_left_out(
    tiny_model, tiny_pretrained, tmp_path
):
    """DeepSpeed's sharded state goes to ``accelerate/`` (state.py's docstring) without the frozen weights,
    written by every process between the first two barriers; no optimizer.pt (DeepSpeed holds optimizer,
    schedule and scaler); the run's settings are written with Paths as strings, and the trainer's facts
    into model/meta.json."""
    accelerator = RecordingAccelerator(plugin=SimpleNamespace(zero_stage=2))
    final = save(
        tiny_model,
        tiny_pretrained,
        None,
        None,
        tmp_path,
        Progress(2, 1, 3),
        accelerator=accelerator,
        run_config={"output_dir": tmp_path},
        extra_meta={"step": 2, "clip_length": 8},
    )
    staging = tmp_path / "checkpoints" / "step_0000002.staging"
    assert accelerator.events == [
        "barrier",
        ("save_state", str(staging / "accelerate"), {"exclude_frozen_parameters": True}),
        "barrier",
        "barrier",
    ]
    assert sorted(p.name for p in final.iterdir()) == [
        "accelerate",
        "model",
        "progress.json",
        "run_config.json",
    ]
    assert json.loads((final / "run_config.json").read_text()) == {"output_dir": str(tmp_path)}
    meta = read_checkpoint_meta(final / "model")  # the trainer's facts, which evaluation defaults to
    assert (meta["step"], meta["clip_length"]) == (2, 8)
    assert read_progress(final) == Progress(step=2, epoch=1, batch_in_epoch=3)


def test_a_deepspeed_resume_loads_the_engine_state_not_strictly_and_nothing_else(tmp_path):
    """Under DeepSpeed, Accelerate's load_state restores weights, optimizer, schedule and scaler from
    ``accelerate/``, not strictly (the frozen weights are not in it); optimizer.pt is not needed."""
    for name in ("model", "accelerate"):
        (tmp_path / name).mkdir()
    (tmp_path / "progress.json").write_text('{"step": 6, "epoch": 1, "batch_in_epoch": 2}')
    accelerator = RecordingAccelerator(plugin=SimpleNamespace(zero_stage=3))
    progress = load_training_checkpoint(
        tmp_path, accelerator=accelerator, model=None, optimizer=None, scheduler=None
    )
    assert progress == Progress(step=6, epoch=1, batch_in_epoch=2)
    assert accelerator.events == [("load_state", str(tmp_path / "accelerate"), {"load_module_strict": False})]


@pytest.mark.parametrize(
    ("deepspeed", "present", "missing"),
    [
        (False, ["model", "accelerate"], "['progress.json', 'optimizer.pt']"),
        (True, ["progress.json", "optimizer.pt"], "['model', 'accelerate']"),
    ],
    ids=["optimizer.pt", "deepspeed"],
)
def test_an_incomplete_training_checkpoint_is_refused_naming_what_it_lacks(
    tmp_path, deepspeed, present, missing
):
    """A training checkpoint holds progress.json, model/ and optimizer.pt, or accelerate/ under DeepSpeed
    (state.py's docstring); a folder without them (an output_dir, a final model) is refused in one message."""
    for name in present:
        (tmp_path / name).mkdir()
    required = ["progress.json", "model", "accelerate" if deepspeed else "optimizer.pt"]
    message = (
        f"{tmp_path} is not a complete training checkpoint: missing {missing}. A training checkpoint is a "
        f"folder <output_dir>/checkpoints/step_<N> holding {required}; give one as train.resume, or "
        "train.resume=auto to take the newest."
    )
    with pytest.raises(FileNotFoundError) as error:
        check_training_checkpoint(tmp_path, deepspeed=deepspeed)
    assert str(error.value) == message
    accelerator = RecordingAccelerator(plugin=SimpleNamespace(zero_stage=2) if deepspeed else None)
    with pytest.raises(FileNotFoundError) as error:  # load checks first, before restoring anything
        load_training_checkpoint(
            tmp_path, accelerator=accelerator, model=None, optimizer=None, scheduler=None
        )
    assert str(error.value) == message
    for name in required:
        (tmp_path / name).mkdir(exist_ok=True)
    check_training_checkpoint(tmp_path, deepspeed=deepspeed)  # complete: no error


def test_the_fp16_loss_scale_is_saved_and_restored(tiny_model, tiny_pretrained, tmp_path):
    """Under fp16 (not DeepSpeed) optimizer.pt also holds the loss scaler's state: the resumed run goes on
    at the scale reached (8), not at the initial one, which would skip the updates the first run applied."""
    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    optimizer, scheduler = optimizer_and_schedule(tiny_model)
    folder = save(
        tiny_model,
        tiny_pretrained,
        optimizer,
        scheduler,
        tmp_path,
        Progress(1, 0, 1),
        accelerator=accelerator,
    )
    assert torch.load(folder / "optimizer.pt", weights_only=True)["scaler"]["scale"] == 8.0
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    load_training_checkpoint(
        folder, accelerator=accelerator, model=tiny_model, optimizer=optimizer, scheduler=scheduler
    )
    assert accelerator.scaler.get_scale() == 8.0


def test_optimizer_pt_is_loaded_as_tensors_and_numbers_only(tmp_path, monkeypatch):
    """state.py's docstring: optimizer.pt is loaded weights_only, so a file holding any other pickled
    object (a shared checkpoint can run code when unpickled) is refused, not executed."""
    (tmp_path / "model").mkdir()
    (tmp_path / "progress.json").write_text('{"step": 1, "epoch": 0, "batch_in_epoch": 1}')
    torch.save({"optimizer": SimpleNamespace(), "scheduler": {}}, tmp_path / "optimizer.pt")
    monkeypatch.setattr("lavida.train.state.load_trained_weights", lambda *args, **kwargs: None)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_training_checkpoint(
            tmp_path, accelerator=RecordingAccelerator(), model=None, optimizer=None, scheduler=None
        )


def test_checkpoints_in_the_way_are_refused_listing_them_all(tmp_path):
    """A fresh run (train.resume=never) beside an earlier run's checkpoints, or a resume beside later ones:
    the whole message, every folder named."""
    root = tmp_path / "checkpoints"
    for name in ("step_0000002", "step_0000004", "step_0000006"):
        (root / name).mkdir(parents=True)
    tail = (
        "; the two runs' checkpoints would mix and pruning would delete the new ones. Train into a new "
        "output_dir, delete those folders, or resume with train.resume=auto."
    )
    with pytest.raises(FileExistsError) as error:
        check_checkpoints_in_the_way(tmp_path, resume_step=None)
    assert str(error.value) == (
        f"train.resume=never starts a new run, but {root} holds checkpoints of an earlier one "
        f"(step_0000002, step_0000004, step_0000006){tail}"
    )
    with pytest.raises(FileExistsError) as error:
        check_checkpoints_in_the_way(tmp_path, resume_step=2)
    assert str(error.value) == (
        f"resuming from step 2, but {root} holds later checkpoints (step_0000004, step_0000006){tail}"
    )
    check_checkpoints_in_the_way(tmp_path / "fresh", resume_step=None)  # nothing there


@pytest.mark.parametrize(
    "text", ['{"step": 4, "epoch": 1, "batch_in_epoch": 1.5}', "[4, 1, 1]"], ids=["fraction", "list"]
)
def test_progress_must_be_an_object_of_integers(tmp_path, text):
    """A hand-edited progress.json with a fraction, or not an object: refused with the whole message."""
    (tmp_path / "progress.json").write_text(text)
    with pytest.raises(ValueError) as error:
        read_progress(tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'progress.json'} should hold the training progress {{step, epoch, batch_in_epoch}} as "
        f"integers, got {json.loads(text)!r}."
    )
