"""``launcher.mixed_precision=fp16`` without DeepSpeed trains under a dynamic loss scaler.

Accelerate then scales the loss by a ``GradScaler`` (initial scale 2^16), whose first steps commonly
overflow in fp16: the scaler's answer is to skip that update and lower the scale, not an error. The
loop must let it (and stop only when the scale has fallen below 1, as DeepSpeed's fp16 does at its
minimum scale), must not advance the schedule on a skipped update, and must checkpoint the scaler so
that a resumed run skips exactly the steps an uninterrupted one does.

Accelerate gives a scaler only on an accelerator device; on the CPU the same scaler
(``torch.amp.GradScaler("cpu")``) is put into the Accelerator before ``prepare``, where Accelerate
would have put it, with fp16 autocast.
"""

from __future__ import annotations

import pytest
import torch
from test_training_loop import make_trainer, record_steps, trained

import lavida.train.loop as loop
from lavida.train.config import LauncherConfig
from lavida.train.launcher import build_accelerator
from lavida.train.loop import NonFiniteLossError
from lavida.train.state import latest_checkpoint

# A first scale that overflows whatever the gradients are, then one that never does at this size.
FIRST_SCALE = 2.0**40
BACKOFF = 2.0**-38  # 2^40 → 4


@pytest.fixture
def fp16_scaler(monkeypatch):
    settings = {"init_scale": FIRST_SCALE, "backoff_factor": BACKOFF}

    def accelerator_with_scaler(launcher, train, *, output_dir):
        acc = build_accelerator(launcher, train, output_dir=output_dir)
        assert acc.mixed_precision == "fp16" and acc.scaler is None  # the CPU: no scaler of its own
        acc.native_amp = True  # fp16 autocast, as on a GPU
        acc.scaler = torch.amp.GradScaler("cpu", growth_interval=10_000, **settings)
        return acc

    monkeypatch.setattr(loop, "build_accelerator", accelerator_with_scaler)
    return settings


def fp16_trainer(root, model_config, output_dir, **overrides):
    trainer = make_trainer(root, model_config, output_dir, **overrides)
    trainer.launcher = LauncherConfig(cpu=True, mixed_precision="fp16")
    return trainer


def test_an_overflowing_fp16_step_is_skipped_not_fatal(
    fp16_scaler, synthetic_train_root, tiny_pretrained, tmp_path
):
    trainer = fp16_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        max_steps=3,
        optim={"lr": 1e-3, "warmup_steps": 0, "decay": "linear"},
    )
    trainer.setup()
    start = trained(trainer)
    steps = record_steps(trainer)
    rates = []
    trainer.accelerator.log = lambda values, step: rates.append(values["train/lr"])
    schedule_positions = []
    optimizer_step = trainer.optimizer.step

    def stepping(*args, **kwargs):
        result = optimizer_step(*args, **kwargs)
        if trainer.accelerator.sync_gradients:
            schedule_positions.append(
                (trainer.optimizer.step_was_skipped, trainer.scheduler.scheduler.last_epoch, trained(trainer))
            )
        return result

    trainer.optimizer.step = stepping
    summary = trainer.fit()
    assert summary.steps == 3 and len(steps) == 3
    skipped = [entry[0] for entry in schedule_positions]
    assert skipped == [True, False, False]
    # The skipped step changed no weight; the two applied ones did.
    assert all(torch.equal(start[n], p) for n, p in schedule_positions[0][2].items())
    assert any(not torch.equal(start[n], p) for n, p in schedule_positions[2][2].items())
    # The schedule advances on applied updates only (last_epoch read before the loop steps it).
    assert [entry[1] for entry in schedule_positions] == [0, 0, 1]
    assert trainer.scheduler.scheduler.last_epoch == 2
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3 * 2 / 3])  # linear decay over 3 steps, 1 skipped
    assert trainer.accelerator.scaler.get_scale() == FIRST_SCALE * BACKOFF
    # No non-finite norm reaches the logs: a skipped step reports none.
    assert "grad_norm" not in steps[0] and all(
        torch.isfinite(torch.tensor(s["grad_norm"])) for s in steps[1:]
    )


def test_fp16_resume_restores_the_loss_scale(fp16_scaler, synthetic_train_root, tiny_pretrained, tmp_path):
    """Killed after step 2 (the scale is then 4): the resumed run must go on at scale 4, not at the
    initial scale, which would skip its first step where the uninterrupted run did not."""
    sizes = {"max_steps": 4, "save_every": 1, "keep_last": 5}
    straight = fp16_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "straight", **sizes)
    straight.setup()
    straight_steps = record_steps(straight)
    straight.fit()
    out = tmp_path / "resumed"
    first = fp16_trainer(synthetic_train_root, tiny_pretrained, out, **sizes)
    first.setup()
    record_steps(first, kill_after=2)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert latest_checkpoint(out).name == "step_0000002"
    resumed = fp16_trainer(synthetic_train_root, tiny_pretrained, out, **sizes)
    resumed.setup()
    assert resumed.accelerator.scaler.get_scale() == FIRST_SCALE * BACKOFF
    resumed_steps = record_steps(resumed)
    resumed.fit()
    assert resumed_steps == straight_steps[2:]
    end, again = trained(straight), trained(resumed)
    assert all(torch.equal(end[n], again[n]) for n in end)


def test_fp16_gradients_that_never_become_finite_stop_the_run(
    fp16_scaler, synthetic_train_root, tiny_pretrained, tmp_path
):
    """NaN gradients at every scale: each step is skipped and halves the scale; once it is below 1
    (DeepSpeed fp16's minimum) the run stops with the usual message, no update applied."""
    fp16_scaler.update(init_scale=4.0, backoff_factor=0.5)  # 4 → 2 → 1 → 0.5: the third skip stops
    trainer = fp16_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", max_steps=4)
    trainer.setup()
    start = trained(trainer)
    compute = trainer.compute_loss
    weight = next(p for p in trainer.model.parameters() if p.requires_grad)

    def poisoned(batch):  # adds exactly 0, but the gradient of sqrt at 0 is infinite: NaN gradients
        losses = compute(batch)
        losses["loss"] = losses["loss"] + 0.0 * (weight - weight.detach()).abs().sqrt().sum()
        return losses

    trainer.compute_loss = poisoned
    with pytest.raises(NonFiniteLossError, match=r"Step 3: .*loss scale .*0\.5"):
        trainer.fit()
    assert all(torch.equal(start[n], p) for n, p in trained(trainer).items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (Accelerate's own fp16 scaler)")
def test_fp16_trains_on_a_gpu_with_accelerates_own_scaler(synthetic_train_root, tiny_pretrained, tmp_path):
    """No stand-in: Accelerate's GradScaler on CUDA. Overflowing steps (if any) are skipped, the schedule
    counts the applied ones, and the weights stay finite."""
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", max_steps=4, save_every=2)
    trainer.launcher = LauncherConfig(cpu=False, mixed_precision="fp16")
    trainer.setup()
    assert isinstance(trainer.accelerator.scaler, torch.amp.GradScaler)
    skipped = []
    optimizer_step = trainer.optimizer.step

    def stepping(*args, **kwargs):
        result = optimizer_step(*args, **kwargs)
        if trainer.accelerator.sync_gradients:
            skipped.append(trainer.optimizer.step_was_skipped)
        return result

    trainer.optimizer.step = stepping
    assert trainer.fit().steps == 4 and len(skipped) == 4
    assert trainer.scheduler.scheduler.last_epoch == skipped.count(False)
    assert all(torch.isfinite(p).all() for p in trained(trainer).values())
