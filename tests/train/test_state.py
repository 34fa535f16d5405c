"""Training checkpoints written and read directly (lavida.train.state), without a training loop.

The trainer tests exercise these through whole runs; here each behaviour is pinned on its own, in well
under a second: what a checkpoint folder holds, pruning, the restore of model, optimizer and schedule, the
fp16 scaler-less fallback, ZeRO-3's gathering, and stray ``step_*`` folders.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from lavida.train.state import (
    Progress,
    check_checkpoints_in_the_way,
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


def save(model, config, optimizer, scheduler, output_dir, progress, *, keep_last=5):
    return save_training_checkpoint(
        accelerator=Accelerator(cpu=True),
        model=model,
        model_config=config,
        optimizer=optimizer,
        scheduler=scheduler,
        progress=progress,
        output_dir=output_dir,
        keep_last=keep_last,
        run_config={"train": {"seed": 1}},
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
