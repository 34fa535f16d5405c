"""The optimizer and the learning-rate schedule against independent computations.

The schedule is compared with a slow, step-by-step re-implementation of DeepSpeed's ``WarmupDecayLR``
(``deepspeed/runtime/lr_schedules.py``: ``WarmupLR._get_gamma`` and ``WarmupDecayLR._get_gamma``),
written out here from its documented formula, and with DeepSpeed's own class where it is installed.
AdamW is checked against one update worked out by hand (decoupled weight decay, bias-corrected moments).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lavida.train.config import OptimConfig
from lavida.train.optim import (
    apply_optim_settings,
    build_optimizer,
    build_scheduler,
    schedule_length,
    warmup_decay_factor,
)

PAPER_TOTAL = 10 * 2000  # B.3: 10 epochs x 2,000 batches, one optimizer step per batch
PAPER_WARMUP = 100  # B.3: 100 warm-up iterations


class SlowWarmupDecayLR:
    """DeepSpeed's WarmupDecayLR with warmup_min_lr 0 and warmup_max_lr 1 (so lr = gamma), one call at a
    time. ``iteration`` is DeepSpeed's ``last_batch_iteration``: -1 after construction (the rate is then
    warmup_min_lr, 0), +1 per ``step()``."""

    def __init__(self, *, total: int, warmup: int, kind: str) -> None:
        self.total = total
        self.warmup = max(2, warmup)  # DeepSpeed never warms up over fewer than 2 steps
        self.kind = kind
        self.iteration = -1
        self.lr = 0.0

    def step(self) -> float:
        self.iteration += 1
        i = self.iteration
        if i < self.warmup:
            if self.kind == "log":
                gamma = math.log(i + 1) / math.log(self.warmup)
            else:
                gamma = i / self.warmup
        else:
            gamma = max(0.0, (self.total - i) / max(1.0, self.total - self.warmup))
        self.lr = gamma
        return gamma


def ours(step: int, *, kind: str, total: int = PAPER_TOTAL, warmup: int = PAPER_WARMUP) -> float:
    return warmup_decay_factor(step, warmup_steps=warmup, total_steps=total, warmup_type=kind, decay="linear")


def test_log_warmup_is_deepspeeds_formula_at_every_step_of_the_paper_run():
    """``warmup_type: log``: the factor of optimizer step k is DeepSpeed's gamma at last_batch_iteration k,
    for all 20,000 steps of B.3, and these hand-worked values:
    k = 0: log 1 / log 100 = 0; k = 1: log 2 / log 100; k = 99: log 100 / log 100 = 1;
    k = 100: (20000 − 100) / (20000 − 100) = 1; k = 19999: 1 / 19900."""
    slow = SlowWarmupDecayLR(total=PAPER_TOTAL, warmup=PAPER_WARMUP, kind="log")
    for k in range(PAPER_TOTAL):
        assert ours(k, kind="log") == pytest.approx(slow.step(), abs=1e-15), k
    hand = {0: 0.0, 1: math.log(2) / math.log(100), 99: 1.0, 100: 1.0, PAPER_TOTAL - 1: 1 / 19900}
    for k, value in hand.items():
        assert ours(k, kind="log") == pytest.approx(value, rel=1e-12, abs=1e-15), k
    # A factor of 0 means the first optimizer step changes nothing (AdamW's decay is scaled by lr too).
    assert ours(0, kind="log") == 0.0


def test_linear_warmup_is_deepspeeds_one_step_ahead_in_the_warmup_only():
    """``warmup_type: linear`` (the release's shape; docs/fidelity.md "first step runs at lr/100"): during the
    warm-up the factor of step k is DeepSpeed's linear gamma one iteration later, (k + 1)/W; from step W
    on it is DeepSpeed's decay at iteration k. Hand-worked: k = 0: 1/100; k = 1: 2/100; k = 99: 1;
    k = 100: 1; k = 19999: 1/19900 (so the rate is 1 on two steps, 99 and 100)."""
    slow = SlowWarmupDecayLR(total=PAPER_TOTAL, warmup=PAPER_WARMUP, kind="linear")
    deepspeed = [slow.step() for _ in range(PAPER_TOTAL + 1)]
    for k in range(PAPER_TOTAL):
        expected = deepspeed[k + 1] if k < PAPER_WARMUP else deepspeed[k]
        assert ours(k, kind="linear") == pytest.approx(expected, abs=1e-15), k
    hand = {0: 0.01, 1: 0.02, 99: 1.0, 100: 1.0, PAPER_TOTAL - 1: 1 / 19900}
    for k, value in hand.items():
        assert ours(k, kind="linear") == pytest.approx(value, rel=1e-12), k


def test_slow_reference_is_deepspeeds_own_class():
    """The re-implementation above agrees with the installed DeepSpeed (so the comparisons test what
    DeepSpeed does, not only what this file says it does)."""
    lr_schedules = pytest.importorskip("deepspeed.runtime.lr_schedules")
    for kind in ("log", "linear"):
        parameter = nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=1.0)
        real = lr_schedules.WarmupDecayLR(
            optimizer,
            total_num_steps=300,
            warmup_min_lr=0.0,
            warmup_max_lr=1.0,
            warmup_num_steps=20,
            warmup_type=kind,
        )
        slow = SlowWarmupDecayLR(total=300, warmup=20, kind=kind)
        assert optimizer.param_groups[0]["lr"] == slow.lr == 0.0  # before the first step(): min lr
        for _ in range(310):
            real.step()
            assert optimizer.param_groups[0]["lr"] == pytest.approx(slow.step(), abs=1e-15)


@pytest.mark.parametrize("kind", ["log", "linear"])
def test_every_parameter_group_follows_the_schedule_times_its_scale(kind):
    """The LambdaLR that the loop steps once per optimizer step: group g's rate at step k is
    lr × scale_g × factor(k), checked against the slow DeepSpeed reference over a whole short run."""
    model = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)})
    config = OptimConfig(lr=2e-3, warmup_steps=5, warmup_type=kind, lr_scales={"b.": 0.1})
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps=17)
    scales = sorted(group["initial_lr"] / config.lr for group in optimizer.param_groups)
    assert scales == pytest.approx([0.1, 1.0])
    slow = SlowWarmupDecayLR(total=17, warmup=5, kind=kind)
    deepspeed = [slow.step() for _ in range(18)]
    for k in range(17):
        factor = deepspeed[k + 1] if kind == "linear" and k < 5 else deepspeed[k]
        for group in optimizer.param_groups:
            scale = group["initial_lr"] / config.lr
            assert group["lr"] == pytest.approx(config.lr * scale * factor, rel=1e-12, abs=1e-18), (k, scale)
        optimizer.step()  # no gradients: nothing moves, but the order step → scheduler.step is kept
        scheduler.step()
    assert all(group["lr"] == 0.0 for group in optimizer.param_groups)  # decayed to 0 after the last step


def test_adamw_settings_and_weight_decay_on_every_trainable_parameter():
    """B.3: AdamW, lr 1e-5, weight decay 1e-5; betas and eps are not stated, so AdamW's (0.9, 0.999) and
    1e-8 (the release passes none either). The decay applies to every trainable tensor, biases and norm
    weights included (one value in B.3; the release gives all parameters to AdamW); frozen ones are not
    given to the optimizer at all."""
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    model[2].requires_grad_(False)
    optimizer = build_optimizer(model, OptimConfig())
    assert type(optimizer) is torch.optim.AdamW
    (group,) = optimizer.param_groups
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (
        1e-5,
        1e-5,
        (0.9, 0.999),
        1e-8,
    )
    assert not group["amsgrad"] and not group["maximize"]
    given = {id(p) for p in group["params"]}
    trainable = [model[0].weight, model[0].bias, model[1].weight, model[1].bias]
    assert given == {id(p) for p in trainable}


@pytest.mark.parametrize("frozen", ["by requires_grad", "by an lr scale of 0"])
def test_a_model_with_nothing_to_train_is_refused(frozen):
    """Everything frozen (or every trainable group given lr_scales 0): an AdamW over no parameter would
    only fail inside torch, or train nothing for the whole run."""
    model = nn.Linear(2, 1)
    config = OptimConfig()
    if frozen == "by requires_grad":
        model.requires_grad_(False)
    else:
        config = OptimConfig(lr_scales={"": 0.0})
    with pytest.raises(ValueError, match=r"^The model has no trainable parameter; nothing to optimise\.$"):
        build_optimizer(model, config)


def test_one_adamw_step_by_hand():
    """First AdamW step (Loshchilov & Hutter): p ← p·(1 − lr·wd) − lr · m̂ / (√v̂ + eps) with m̂ = g and
    v̂ = g² after bias correction, i.e. p·(1 − lr·wd) − lr · g / (|g| + eps). Decoupled: the decay is not
    added to the gradient (Adam with L2 would give a different update)."""
    parameter = nn.Parameter(torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64))
    model = nn.ParameterDict({"w": parameter})
    config = OptimConfig(lr=0.1, weight_decay=0.3, eps=1e-3)
    optimizer = build_optimizer(model, config)
    gradient = torch.tensor([0.02, -1.0, 0.0], dtype=torch.float64)
    parameter.grad = gradient.clone()
    before = parameter.detach().clone()
    optimizer.step()
    by_hand = [
        p * (1 - 0.1 * 0.3) - 0.1 * g / (abs(g) + 1e-3)
        for p, g in zip(before.tolist(), gradient.tolist(), strict=True)
    ]
    assert parameter.detach().tolist() == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("kind", ["log", "linear"])
@pytest.mark.parametrize(("total", "warmup"), [(6, 2), (5, 4)])
def test_short_warmups_and_runs_follow_deepspeed(kind, total, warmup):
    """The shortest warm-up DeepSpeed runs (W = 2: log gives 0 then 1) and a run whose decay lasts
    one step (total − W = 1), against the slow DeepSpeed reference at every step and one past the
    last (the rate the schedule is left at, 0). ``linear`` is DeepSpeed's one iteration ahead during
    the warm-up only, as above."""
    slow = SlowWarmupDecayLR(total=total, warmup=warmup, kind=kind)
    deepspeed = [slow.step() for _ in range(total + 2)]
    for k in range(total + 1):
        expected = deepspeed[k + 1] if kind == "linear" and k < warmup else deepspeed[k]
        assert ours(k, kind=kind, total=total, warmup=warmup) == pytest.approx(expected, abs=1e-15), k
    assert ours(total, kind=kind, total=total, warmup=warmup) == 0.0


@pytest.mark.parametrize("kind", ["log", "linear"])
def test_no_warmup_and_a_one_step_warmup(kind):
    """Where DeepSpeed would stretch the warm-up to 2 steps, ours follows its docstring: W = 0 starts
    the decay at once and W = 1 reaches 1 at step W − 1 = 0. Total 4, W = 0: (4 − k)/4 for k = 0..4,
    i.e. 1, 3/4, 1/2, 1/4, 0. Total 5, W = 1: 1 at k = 0 (both kinds), then (5 − k)/(5 − 1):
    1, 3/4, 1/2, 1/4, 0 for k = 1..5."""
    assert [ours(k, kind=kind, total=4, warmup=0) for k in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert [ours(k, kind=kind, total=5, warmup=1) for k in range(6)] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_constant_decay_keeps_the_peak_after_the_warmup():
    """``decay="constant"``: the warm-up as usual, then 1 for good (no decay towards total_steps).
    Linear warm-up over 4 steps: 1/4, 2/4, 3/4, 1, then 1 up to and past total = 8; without a
    warm-up 1 from the first step."""

    def constant(step: int, warmup: int) -> float:
        return warmup_decay_factor(
            step, warmup_steps=warmup, total_steps=8, warmup_type="linear", decay="constant"
        )

    assert [constant(k, 4) for k in range(10)] == [0.25, 0.5, 0.75] + [1.0] * 7
    assert [constant(k, 0) for k in range(10)] == [1.0] * 10


@pytest.mark.parametrize("kind", ["log", "linear"])
def test_a_run_no_longer_than_its_warmup_ends_at_the_peak(kind):
    """With total_steps ≤ warmup_steps there is no decay phase: the rate rises over the run and stays
    at 1 after it (no division by total − W = 0 when the schedule steps past the last step). Linear,
    W = 3, total 3: 1/3, 2/3, 1, then 1; log: log 1/log 3 = 0, log 2/log 3, 1, then 1. Total 2 < W = 3
    gives the same first two steps and 1 after."""
    first = [0.0, math.log(2) / math.log(3)] if kind == "log" else [1 / 3, 2 / 3]
    for total in (3, 2):
        got = [ours(k, kind=kind, total=total, warmup=3) for k in range(5)]
        assert got == pytest.approx(first + [1.0, 1.0, 1.0], rel=1e-12, abs=1e-15), total
    config = OptimConfig(lr=1.0, warmup_steps=3, warmup_type=kind)
    optimizer = build_optimizer(nn.Linear(2, 1), config)
    scheduler = build_scheduler(optimizer, config, total_steps=3)
    for _ in range(3):  # the loop's order: optimizer step, then the schedule
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == [1.0]


def test_schedule_length_counts_steps_or_micro_batches():
    """``schedule_over``: the run's optimizer steps (B.3's 20,000), or the release's micro-batches,
    steps × accumulation (its 8,000 steps of accumulation 2 laid out over 16,000; lavida_official.md §9)."""
    assert schedule_length(OptimConfig(), total_steps=PAPER_TOTAL, grad_accum=2) == 20000
    release = OptimConfig(schedule_over="micro_batches")
    assert schedule_length(release, total_steps=8000, grad_accum=2) == 16000


def test_build_scheduler_rejects_a_schedule_changed_after_validation():
    """OptimConfig checks warmup_type and decay when built; build_scheduler checks them again, each on
    its own, so that a config edited afterwards cannot fall through to the linear warm-up/decay."""
    for field_name in ("warmup_type", "decay"):
        config = OptimConfig()
        setattr(config, field_name, "cosine")
        optimizer = build_optimizer(nn.Linear(2, 1), OptimConfig())
        with pytest.raises(ValueError, match="optim.warmup_type must be linear"):
            build_scheduler(optimizer, config, total_steps=10)


def test_apply_optim_settings_puts_the_new_recipe_into_a_restored_optimizer():
    """A resume with another recipe (resume_check=warn): every group's rate becomes new lr × its scale ×
    the schedule's factor at the restored step, and weight decay, betas and eps the new ones; the
    schedule's base rates and last rates follow, and its next step goes on from there.

    Groups at scales 0.1 and 1 (sorted), linear warm-up of 2, total 10, stepped 4 times: the factor at
    step 4 is (10 − 4)/(10 − 2) = 3/4. New lr 4e-3: rates 4e-3·0.1·3/4 = 3e-4 and 3e-3; after one more
    step (10 − 5)/8 = 5/8: 2.5e-4 and 2.5e-3."""
    model = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)})
    old = OptimConfig(lr=1e-3, warmup_steps=2, warmup_type="linear", lr_scales={"b.": 0.1})
    optimizer = build_optimizer(model, old)
    scheduler = build_scheduler(optimizer, old, total_steps=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    new = OptimConfig(
        lr=4e-3, weight_decay=0.2, betas=(0.8, 0.99), eps=1e-6, warmup_steps=2, warmup_type="linear"
    )
    apply_optim_settings(optimizer, scheduler, new, scales=[0.1, 1.0])
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([3e-4, 3e-3], rel=1e-12)
    assert [group["initial_lr"] for group in optimizer.param_groups] == pytest.approx([4e-4, 4e-3], rel=1e-12)
    for group in optimizer.param_groups:
        assert (group["weight_decay"], group["betas"], group["eps"]) == (0.2, (0.8, 0.99), 1e-6)
    assert scheduler.base_lrs == pytest.approx([4e-4, 4e-3], rel=1e-12)
    assert scheduler.get_last_lr() == pytest.approx([3e-4, 3e-3], rel=1e-12)
    optimizer.step()
    scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([2.5e-4, 2.5e-3], rel=1e-12)
    with pytest.raises(ValueError):  # one scale per group: none may keep the old settings
        apply_optim_settings(optimizer, scheduler, new, scales=[1.0])
