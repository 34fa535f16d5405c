"""Training settings as typed dataclasses (B.3), built from the Hydra ``train``/``launcher`` groups."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from lavida.config_choices import check_choices
from lavida.number_checks import is_real, is_whole


@dataclass
class OptimConfig:
    """AdamW and its schedule (B.3: lr 1e-5, weight decay 1e-5, WarmupDecayLR with 100 warm-up steps).

    Attributes:
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (the paper's 1e-5; the official code ran with AdamW's default 0.01).
        betas: AdamW betas.
        eps: AdamW epsilon.
        warmup_steps: Optimizer steps of warm-up.
        warmup_type: ``log``, the shape of DeepSpeed's WarmupDecayLR, which B.3 names (log-shaped unless
            told otherwise; it runs the first step at lr 0), or ``linear``, what the release's HF scheduler
            does (``train=official``).
        decay: ``linear`` towards 0, reached just after the last step (WarmupDecayLR), or ``constant`` after warm-up.
        schedule_over: What the decay's length counts: ``steps``, the run's optimizer steps (it reaches 0 after
            the last step), or ``micro_batches``, the release's: its HF schedule was laid out over every
            micro-batch (16,000) but stepped once per optimizer step (8,000 with accumulation 2), so it
            ends near half the peak rate (lavida_official.md §9; ``train=official``).
        grad_clip: Max gradient norm; 0 disables (the official code: 1.0).
        lr_scales: Parameter-name prefix → learning-rate multiplier (0 freezes). Empty for the paper (one
            learning rate for everything); the synthetic demo slows the SAM2 decoder down (docs/decisions.md).
    """

    lr: float = 1e-5
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    warmup_type: Literal["linear", "log"] = "log"
    decay: Literal["linear", "constant"] = "linear"
    schedule_over: Literal["steps", "micro_batches"] = "steps"
    grad_clip: float = 1.0
    lr_scales: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked here, before a model is built: at 7B a typo would otherwise cost the whole load.
        if not self.lr > 0:
            raise ValueError(f"train.optim.lr must be > 0, got {self.lr}.")
        for name in ("weight_decay", "eps", "warmup_steps", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"train.optim.{name} must be ≥ 0, got {getattr(self, name)}.")
        if self.warmup_type not in ("linear", "log"):
            raise ValueError(f"train.optim.warmup_type must be linear or log, got {self.warmup_type!r}.")
        if self.decay not in ("linear", "constant"):
            raise ValueError(f"train.optim.decay must be linear or constant, got {self.decay!r}.")
        if self.schedule_over not in ("steps", "micro_batches"):
            raise ValueError(
                f"train.optim.schedule_over must be steps or micro_batches, got {self.schedule_over!r}."
            )
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"train.optim.betas must be two numbers in [0, 1), got {self.betas}.")
        negative = {prefix: scale for prefix, scale in self.lr_scales.items() if not scale >= 0}
        if negative:
            raise ValueError(f"train.optim.lr_scales must be ≥ 0 (0 freezes), got {negative}.")


@dataclass
class LossConfig:
    """Eq. 10 and L_seg: "SAM2's training loss" (§3.9) as SAM2's released training configs set it.

    SAM2's ``sam2.1_training`` configs: weights 20/1/1/1, the IoU loss L1 and over all candidate masks
    (``supervise_all_iou: true``, ``iou_use_l1_loss: true``). The LAVIDA release uses 20/2/1/2 and the
    best mask only (``train=official``; docs/fidelity.md).
    """

    lambda_txt: float = 1.0
    lambda_seg: float = 1.0
    weights: Literal["sam2", "official"] = "sam2"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    supervise_all_iou: bool = True
    iou_l1: bool = True

    def __post_init__(self) -> None:
        # The trainer maps every value but "official" to SAM2's weights: a typo would train silently with
        # the other recipe.
        if self.weights not in ("sam2", "official"):
            raise ValueError(
                f"train.loss.weights must be sam2 or official, got {self.weights!r}; e.g. train.loss.weights=sam2."
            )
        for name in ("lambda_txt", "lambda_seg", "focal_gamma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"train.loss.{name} must be a finite number ≥ 0, got {value}.")
        if not (math.isfinite(self.focal_alpha) and self.focal_alpha <= 1):
            raise ValueError(
                f"train.loss.focal_alpha must be at most 1 (a negative value disables the α weighting), got "
                f"{self.focal_alpha}; SAM2 and the paper use 0.25."
            )


@dataclass
class LauncherConfig:
    """How the run is distributed (the only place DeepSpeed settings live).

    Attributes:
        name: ``single``, ``ddp``, ``zero2`` or ``zero3`` (informative).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (Accelerate autocast).
        cpu: Force CPU even where a GPU exists (tests, demo).
        deepspeed: A DeepSpeed config dict (ZeRO stage etc.), or None for plain PyTorch/DDP.
        find_unused_parameters: DDP flag: look for trainable parameters a step's graph leaves out, so that
            DDP does not wait for their gradients. A safeguard: on the tiny model every trainable
            parameter is in the graph of mixed, video-only, image-only and target-free batches (the mask
            token multimask mode drops still gets a zero gradient through the slice), and DDP says so on
            its first step; ``false`` saves one graph traversal per step where a run is known to use all.
    """

    name: str = "single"
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    cpu: bool = False
    deepspeed: dict | None = None
    find_unused_parameters: bool = True


@dataclass
class TrainConfig:
    """The training loop (B.3: batch 2, 10 epochs × 2,000 batches).

    Attributes:
        epochs: Passes over ``batches_per_epoch`` batches.
        batches_per_epoch: Optimizer-level batches per epoch (per process: each draws its own items).
        batch_size: Samples per forward pass per process.
        grad_accum: Forward passes per optimizer step.
        max_steps: Stop after this many optimizer steps (smoke runs); None = epochs × batches_per_epoch.
        seed: Seed of the model's randomness (dropout); the data has its own (``data.seed``).
        trainable_fp32: Keep trainable parameters in float32 when the model is bf16 (mixed precision). PEFT
            keeps the MLLM's LoRA and ``<SEG>``-row adapters in float32 either way (its default).
        log_every: Optimizer steps between logged losses.
        save_every: Optimizer steps between checkpoints (0: only at the end).
        keep_last: Checkpoints kept (older ones are deleted).
        val_every: Optimizer steps between validations (0: never); validation uses held-out draws from
            the training sources, never a test benchmark.
        val_batches: Batches per validation.
        resume: ``auto`` (continue from the latest checkpoint in the output directory if any), ``never``
            (a new run; refused if the output directory holds checkpoints), or a checkpoint directory
            (refused if the output directory holds later checkpoints).
        resume_check: ``strict`` refuses to resume when a setting that decides what is trained (model,
            data, recipe, precision, process count) differs from the checkpoint's record, or a base model's
            files are not the ones it was trained on (lavida/models/base_fingerprint.py); ``warn`` logs
            the differences and continues (``lavida/train/resume_check.py`` lists what may change).
        logger: ``tensorboard``, ``wandb`` or ``none``.
    """

    epochs: int = 10
    batches_per_epoch: int = 2000
    batch_size: int = 2
    grad_accum: int = 1
    max_steps: int | None = None
    seed: int = 44
    trainable_fp32: bool = True
    log_every: int = 10
    save_every: int = 1000
    keep_last: int = 2
    val_every: int = 1000
    val_batches: int = 8
    resume: str = "auto"
    resume_check: Literal["strict", "warn"] = "strict"
    logger: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "batches_per_epoch", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be ≥ 1, got {getattr(self, name)}.")
        if self.resume_check not in ("strict", "warn"):
            raise ValueError(f"train.resume_check must be 'strict' or 'warn', got {self.resume_check!r}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train.max_steps must be ≥ 1 or null, got {self.max_steps}.")
        if self.keep_last < 1:
            raise ValueError(f"train.keep_last must be ≥ 1 (checkpoints kept), got {self.keep_last}.")
        for name in ("save_every", "val_every", "val_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be ≥ 0 (0: {_ZERO[name]}), got {getattr(self, name)}.")

    @property
    def total_steps(self) -> int:
        full = self.epochs * self.batches_per_epoch
        return min(full, self.max_steps) if self.max_steps is not None else full

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        optim = _build(OptimConfig, data.pop("optim", {}) or {}, "train.optim")
        loss = _build(LossConfig, data.pop("loss", {}) or {}, "train.loss")
        return _build(cls, {**data, "optim": optim, "loss": loss}, "train")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_ZERO = {"save_every": "only at the end", "val_every": "never", "val_batches": "no validation"}


def launcher_from_dict(data: dict[str, Any]) -> LauncherConfig:
    return _build(LauncherConfig, data, "launcher")


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        return data  # already built
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys are {sorted(known)}.")
    _check_types(cls, data, where)
    if "betas" in data:
        data = {**data, "betas": tuple(data["betas"])}
    built = cls(**data)
    # After the dataclass's own checks, whose messages say more where they exist (train.logger and
    # launcher.mixed_precision have none: Accelerate would refuse them without naming the key).
    check_choices(built, where)
    return built


# What a scalar field's annotation (a string, under ``from __future__ import annotations``) accepts.
_SCALARS = {
    "float": ("a number", is_real),
    "int": ("a whole number", is_whole),
    "int | None": (
        "a whole number or null",
        lambda v: v is None or is_whole(v),
    ),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
}


def _check_types(cls, data: dict[str, Any], where: str) -> None:
    """Refuse a mistyped scalar by name: Hydra passes what was typed, so ``train.optim.lr=abc`` arrives as
    the string 'abc', which would otherwise fail later in a bare comparison (or, worse, run)."""
    for spec in dataclasses.fields(cls):
        if spec.name not in data or spec.type not in _SCALARS:
            continue
        expected, accepts = _SCALARS[spec.type]
        value = data[spec.name]
        if not accepts(value):
            raise ValueError(
                f"{where}.{spec.name} must be {expected}, got {value!r}; e.g. "
                f"{where}.{spec.name}={_example(spec)}."
            )


def _example(spec: dataclasses.Field) -> str:
    """The field's default as it is typed on the command line."""
    default = spec.default
    if default is None:
        return "null"
    return str(default).lower() if isinstance(default, bool) else str(default)
