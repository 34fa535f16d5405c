"""AdamW over the trainable parameters and the warm-up/decay learning-rate schedule (B.3)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lavida.train.config import OptimConfig


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW on exactly the parameters that train (LoRA, ``<SEG>`` rows, projector, SAM2 decoder).

    Weight decay applies to all of them, as B.3 states one value; the frozen parts are not given to the
    optimizer at all, so they cannot drift (the official code passed every parameter).
    """
    groups: dict[float, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        matches = [prefix for prefix in config.lr_scales if name.startswith(prefix)]
        scale = config.lr_scales[max(matches, key=len)] if matches else 1.0  # the longest prefix wins
        if scale > 0:
            groups.setdefault(scale, []).append(parameter)
    if not groups:
        raise ValueError("The model has no trainable parameter; nothing to optimise.")
    param_groups = [{"params": params, "lr": config.lr * scale} for scale, params in sorted(groups.items())]
    return torch.optim.AdamW(
        param_groups,
        lr=config.lr,
        betas=tuple(config.betas),
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def warmup_decay_factor(
    step: int, *, warmup_steps: int, total_steps: int, warmup_type: str, decay: str
) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    WarmupDecayLR shape: rise to 1 over ``warmup_steps`` (linearly, or logarithmically as DeepSpeed's
    default, log(step + 1) / log(warmup_steps)), then fall linearly to 0 at ``total_steps`` (or stay at 1
    with ``decay="constant"``). Both warm-ups reach 1 at step ``warmup_steps - 1``.

    Against DeepSpeed's ``WarmupDecayLR`` at iteration i (its ``last_batch_iteration``): ``log`` is its
    gamma(i = step) at every step; ``linear`` is its gamma(step + 1) during the warm-up, so that the first
    step does not run at lr 0, and its gamma(step) after (tests/train/test_optimizer_schedule.py). When
    DeepSpeed's engine owns that schedule, optimizer step k applies gamma(k − 1), its minimum lr at k = 0.
    """
    if warmup_steps > 0 and step < warmup_steps:
        if warmup_type == "log":
            # DeepSpeed's WarmupLR: log(i + 1) / log(W), 0 at the first step.
            return math.log(step + 1) / math.log(warmup_steps) if warmup_steps > 1 else 1.0
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    remaining = total_steps - max(warmup_steps, 0)
    if remaining <= 0:
        return 1.0
    return max(0.0, (total_steps - step) / remaining)


def schedule_length(config: OptimConfig, *, total_steps: int, grad_accum: int) -> int:
    """The step count the decay is laid out over: the run's optimizer steps, or with
    ``schedule_over="micro_batches"`` its micro-batches (the release's schedule, stepped per optimizer step)."""
    return total_steps * grad_accum if config.schedule_over == "micro_batches" else total_steps


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, *, total_steps: int) -> LambdaLR:
    """A LambdaLR following :func:`warmup_decay_factor`, stepped once per optimizer step."""
    if config.warmup_type not in ("linear", "log") or config.decay not in ("linear", "constant"):
        raise ValueError(
            f"optim.warmup_type must be linear|log and optim.decay linear|constant, got "
            f"{config.warmup_type!r}, {config.decay!r}."
        )

    def factor(step: int) -> float:
        return warmup_decay_factor(
            step,
            warmup_steps=config.warmup_steps,
            total_steps=total_steps,
            warmup_type=config.warmup_type,
            decay=config.decay,
        )

    return LambdaLR(optimizer, factor)


def apply_optim_settings(optimizer, scheduler, config: OptimConfig, *, scales: list[float]) -> None:
    """Put ``config``'s rates, weight decay, betas and eps into a restored optimizer and its schedule.

    Loading an optimizer's state brings back the checkpoint's per-group ``lr``, ``initial_lr``,
    ``weight_decay``, ``betas`` and ``eps``, and loading the schedule its base rates; a resume that was
    allowed to change them would otherwise go on with the old ones. The step count and the moments stay.

    Args:
        optimizer: The optimizer of :func:`build_optimizer` (or Accelerate's/DeepSpeed's wrapper of it).
        scheduler: The schedule of :func:`build_scheduler` (or Accelerate's wrapper of it).
        scales: Each parameter group's lr scale, in group order.
    """
    schedule = getattr(scheduler, "scheduler", scheduler)  # Accelerate's AcceleratedScheduler wraps it
    groups = optimizer.param_groups
    for group, scale, factor in zip(groups, scales, schedule.lr_lambdas, strict=True):
        group["initial_lr"] = config.lr * scale
        group["lr"] = group["initial_lr"] * factor(schedule.last_epoch)
        group.update(weight_decay=config.weight_decay, betas=tuple(config.betas), eps=config.eps)
    schedule.base_lrs = [group["initial_lr"] for group in groups]
    schedule._last_lr = [group["lr"] for group in groups]  # what get_last_lr() reports
