"""The training loop: accumulation boundaries, clipping, exact resume, failures during saving.

Each check compares the loop with an independent computation: gradients taken with ``torch.autograd.grad``
outside the loop, or an uninterrupted run of the same settings.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from trainers import make_trainer as shared_trainer
from trainers import poison_loss

from lavida.train.loop import NonFiniteLossError, Trainer
from lavida.train.state import latest_checkpoint, read_progress


def make_trainer(root, model_config, output_dir, **train_overrides) -> Trainer:
    """The shared test trainer with one clip per batch and 4 batches (data seed 5)."""
    sizes = {"batches_per_epoch": 4, "batch_size": 1}
    return shared_trainer(root, model_config, output_dir, data_seed=5, **{**sizes, **train_overrides})


def trained(trainer: Trainer) -> dict[str, torch.Tensor]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def record_steps(trainer: Trainer, *, kill_after: int | None = None) -> list[dict[str, float]]:
    """Wrap ``trainer.train_step`` to record each micro-batch's losses (and to stop as a kill would, on
    the first micro-batch after optimizer step ``kill_after``); also record the logged rates."""
    returned: list[dict[str, float]] = []
    step = trainer.train_step

    def recorded(batch):
        if kill_after is not None and trainer.progress.step == kill_after:
            raise KeyboardInterrupt
        returned.append(step(batch))
        return returned[-1]

    trainer.train_step = recorded
    return returned


def test_accumulated_gradient_is_the_mean_of_the_micro_batches_and_is_clipped_once(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """grad_accum 2: no update after the first micro-batch; at the boundary the gradient is the mean of
    the two micro-batch gradients (each computed here with autograd.grad, same dropout seeds), its global
    L2 norm over all optimized parameters is what is reported, the clipped gradient has norm grad_clip,
    and the schedule moves once."""
    clip = 1e-3
    trainer = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        grad_accum=2,
        optim={"lr": 1e-3, "warmup_steps": 0, "decay": "linear", "grad_clip": clip},
    )
    trainer.setup()
    loader = iter(trainer.loader)
    batches = [next(loader), next(loader)]
    params = trainer._optimized

    independent = []
    for index, batch in enumerate(batches):
        trainer.progress.batch_in_epoch = index
        trainer._seed_micro_batch()
        loss = trainer.compute_loss(batch)["loss"]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        independent.append(
            [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        )
    mean = [(a + b) / 2 for a, b in zip(*independent, strict=True)]
    expected_norm = float(torch.cat([g.flatten() for g in mean]).norm())
    assert expected_norm > 10 * clip  # so that clipping acts

    seen = {}
    clip_grad_norm = trainer.accelerator.clip_grad_norm_

    def spy(parameters, max_norm):
        parameters = list(parameters)
        seen["ids"] = [id(p) for p in parameters]
        seen["before"] = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in parameters]
        norm = clip_grad_norm(parameters, max_norm)
        seen["after"] = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in parameters]
        seen["max_norm"] = max_norm
        return norm

    trainer.accelerator.clip_grad_norm_ = spy
    start = trained(trainer)
    trainer.progress.batch_in_epoch = 0
    trainer._seed_micro_batch()
    first = trainer.train_step(batches[0])
    assert "grad_norm" not in first and not seen  # no clipping, no step inside the accumulation
    assert all(torch.equal(start[n], p) for n, p in trained(trainer).items())
    assert trainer.scheduler.scheduler.last_epoch == 0
    trainer.progress.batch_in_epoch = 1
    trainer._seed_micro_batch()
    second = trainer.train_step(batches[1])

    assert seen["ids"] == [id(p) for p in params] and seen["max_norm"] == clip
    for got, want in zip(seen["before"], mean, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert second["grad_norm"] == pytest.approx(expected_norm, rel=1e-4)
    clipped = float(torch.cat([g.flatten() for g in seen["after"]]).norm())
    assert clipped == pytest.approx(clip, rel=1e-4)
    assert trainer.scheduler.scheduler.last_epoch == 1
    assert any(not torch.equal(start[n], p) for n, p in trained(trainer).items())


@pytest.mark.parametrize("kill_after", [1, 2], ids=["mid_epoch", "epoch_boundary"])
def test_resume_with_accumulation_replays_the_uninterrupted_run(
    synthetic_train_root, tiny_pretrained, tmp_path, kill_after
):
    """2 epochs × 2 optimizer steps × 2 micro-batches, a warm-up/decay schedule (so a lost schedule
    position shows), killed after step 1 (mid-epoch) or step 2 (the checkpoint then sits at the very
    end of epoch 0: (step 2, epoch 0, micro-batch 4)). The resumed run must give the uninterrupted
    run's remaining losses, gradient norms and rates bit for bit, and the same final weights."""
    sizes = {
        "epochs": 2,
        "batches_per_epoch": 2,
        "grad_accum": 2,
        "save_every": 1,
        "keep_last": 5,
        "optim": {"lr": 3e-3, "warmup_steps": 2, "decay": "linear"},
    }
    straight = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "straight", **sizes)
    straight.setup()
    straight_steps = record_steps(straight)
    straight_lrs = []
    straight.accelerator.log = lambda values, step: straight_lrs.append(values["train/lr"])
    straight.fit()
    assert len(straight_steps) == 8 and len(straight_lrs) == 4

    out = tmp_path / "resumed"
    first = make_trainer(synthetic_train_root, tiny_pretrained, out, **sizes)
    first.setup()
    record_steps(first, kill_after=kill_after)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    checkpoint = latest_checkpoint(out)
    progress = read_progress(checkpoint)
    assert (progress.step, progress.epoch, progress.batch_in_epoch) == (
        (1, 0, 2) if kill_after == 1 else (2, 0, 4)
    )

    resumed = make_trainer(synthetic_train_root, tiny_pretrained, out, **sizes)
    resumed.setup()
    resumed_steps = record_steps(resumed)
    resumed_lrs = []
    resumed.accelerator.log = lambda values, step: resumed_lrs.append(values["train/lr"])
    resumed.fit()
    done = 2 * kill_after
    assert len(resumed_steps) == 8 - done
    for got, want in zip(resumed_steps, straight_steps[done:], strict=True):
        assert got == want
    assert resumed_lrs == straight_lrs[kill_after:]
    end, again = trained(straight), trained(resumed)
    assert end.keys() == again.keys()
    for name in end:
        assert torch.equal(end[name], again[name]), name


def test_a_failure_while_saving_keeps_the_previous_checkpoint(
    synthetic_train_root, tiny_pretrained, tmp_path, monkeypatch
):
    """A save that fails half-way (here the optimizer state's write) must leave the last complete
    checkpoint as the one resumed from, and the half-written folder must not count as a checkpoint."""
    out = tmp_path / "run"
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, out, save_every=1, max_steps=3)
    trainer.setup()
    import lavida.train.state as state

    real_save = state.torch.save
    calls = {"n": 0}

    def failing_save(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            real_save(obj, path, *args, **kwargs)
            with open(path, "r+b") as handle:  # a write cut short: a truncated file
                handle.truncate(10)
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(state.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit()
    monkeypatch.undo()
    root = out / "checkpoints"
    assert latest_checkpoint(out) == root / "step_0000001"
    assert (root / "latest.txt").read_text().strip() == "step_0000001"
    assert not (root / "step_0000002").exists()
    resumed = make_trainer(synthetic_train_root, tiny_pretrained, out, save_every=1, max_steps=3)
    resumed.setup()
    assert resumed.progress.step == 1
    resumed.fit()
    assert latest_checkpoint(out) == root / "step_0000003"
    assert not list(root.glob("*.staging"))


def test_non_finite_loss_inside_an_accumulation_stops_before_any_update(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """A NaN on the first micro-batch of step 2 (accumulation 2): the run stops with the message, no
    step-2 checkpoint is written, and the weights are still those of the step-1 checkpoint."""
    out = tmp_path / "run"
    trainer = make_trainer(
        synthetic_train_root, tiny_pretrained, out, grad_accum=2, save_every=1, max_steps=3
    )
    trainer.setup()
    poison_loss(trainer, on_call=3, value=float("inf"))
    after_step_1 = {}
    save = trainer.save

    def saving():
        after_step_1.update(trained(trainer)) if trainer.progress.step == 1 else None
        return save()

    trainer.save = saving
    with pytest.raises(
        NonFiniteLossError, match=r"Step 2: the loss is inf .*step_0000001.*Lower the learning"
    ):
        trainer.fit()
    assert latest_checkpoint(out) == out / "checkpoints" / "step_0000001"
    assert not (out / "checkpoints" / "step_0000002").exists()
    for name, value in trained(trainer).items():
        assert torch.equal(value, after_step_1[name]), name


def test_grad_clip_0_measures_the_norm_unclipped_and_a_step_clears_every_gradient(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """grad_clip 0 disables clipping (train/config.py): the norm is still measured and reported, with
    max_norm inf, and the gradient stepped is the whole one. After the optimizer step no optimized parameter
    keeps a gradient (None, not zeros), so the next step's gradient starts afresh."""
    trainer = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        optim={"lr": 1e-3, "warmup_steps": 0, "decay": "constant", "grad_clip": 0.0},
    )
    trainer.setup()
    seen = {}
    clip_grad_norm = trainer.accelerator.clip_grad_norm_

    def spy(parameters, max_norm):
        parameters = list(parameters)
        seen["max_norm"] = max_norm
        seen["before"] = float(torch.cat([p.grad.flatten() for p in parameters if p.grad is not None]).norm())
        norm = clip_grad_norm(parameters, max_norm)
        seen["after"] = float(torch.cat([p.grad.flatten() for p in parameters if p.grad is not None]).norm())
        return norm

    trainer.accelerator.clip_grad_norm_ = spy
    trainer._seed_micro_batch()
    losses = trainer.train_step(next(iter(trainer.loader)))
    assert seen["max_norm"] == math.inf
    assert seen["after"] == seen["before"] > 0
    assert losses["grad_norm"] == pytest.approx(seen["before"], rel=1e-5)
    assert all(p.grad is None for p in trainer._optimized)


def test_a_gradient_norm_given_as_a_python_float_is_reported_as_it_is(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """Under DeepSpeed ``clip_grad_norm_`` returns the step's norm as a Python float, not a tensor: the step
    must report that number (not fail on it)."""
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run")
    trainer.setup()
    clip_grad_norm = trainer.accelerator.clip_grad_norm_
    returned = []

    def as_deepspeed(parameters, max_norm):
        returned.append(float(clip_grad_norm(parameters, max_norm)))
        return returned[-1]

    trainer.accelerator.clip_grad_norm_ = as_deepspeed
    trainer._seed_micro_batch()
    losses = trainer.train_step(next(iter(trainer.loader)))
    assert len(returned) == 1 and returned[0] > 0
    assert losses["grad_norm"] == returned[0]


def test_fit_trains_with_dropout_on_even_after_the_model_was_put_in_eval_mode(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """A model left in eval mode (e.g. by an evaluation between setup and fit) must train in training mode:
    LoRA's dropout is part of the recipe."""
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", max_steps=1)
    trainer.setup()
    trainer.model.eval()
    dropouts = [m for name, m in trainer.model.named_modules() if name.endswith("lora_dropout")]
    assert dropouts
    modes = []
    compute = trainer.compute_loss
    trainer.compute_loss = lambda batch: modes.append([m.training for m in dropouts]) or compute(batch)
    trainer.fit()
    assert modes == [[True] * len(dropouts)]


def test_losses_are_logged_every_log_every_steps_and_at_the_last_and_validation_every_val_every(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """3 steps, log_every 2, val_every 2: the training losses (with grad_norm and lr) go to the tracker at
    steps 2 and 3 (the last step is always logged), the validation losses at step 2, after that step's
    training losses; the summary's time is the run's, measured inside fit()."""
    trainer = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        batches_per_epoch=3,
        log_every=2,
        val_every=2,
        val_batches=1,
    )
    trainer.setup()
    logged = []
    trainer.accelerator.log = lambda values, step: logged.append((step, sorted(values)))
    before = time.perf_counter()
    summary = trainer.fit()
    took = time.perf_counter() - before
    terms = sorted(key for key in summary.last_losses if key not in ("grad_norm", "lr"))
    assert "loss" in terms and {"grad_norm", "lr"} <= set(summary.last_losses)
    train = sorted(f"train/{key}" for key in summary.last_losses)
    validation = sorted(f"val/{key}" for key in terms)
    assert logged == [(2, train), (2, validation), (3, train)]
    assert 0 < summary.seconds <= took
