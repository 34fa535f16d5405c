"""``lavida.train.config``: the dataclass defaults are the paper's recipe (supplement B.3) and the shipped
``train=paper`` config, and every bound of the settings checks sits where its message says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lavida.train.config import LauncherConfig, LossConfig, OptimConfig, TrainConfig, launcher_from_dict

CONFIGS = Path(__file__).resolve().parents[2] / "lavida" / "configs"


def test_defaults_are_the_paper_recipe():
    """A TrainConfig built in code trains as the paper did, not only one composed by Hydra."""
    config = TrainConfig()
    # supplement B.3: "10 epochs, with each epoch comprising 2,000 batches", "The batch size is set to 2"
    assert (config.epochs, config.batches_per_epoch, config.batch_size, config.grad_accum) == (10, 2000, 2, 1)
    assert config.total_steps == 20_000  # 10 × 2,000, one optimizer step per batch
    # supplement B.3: AdamW "with both learning rate and weight decay set to 1e-5", "WarmupDecayLR ... warmup
    # iterations set to 100"; betas, eps: PyTorch's AdamW defaults, clipping 1.0: the release's (docs/fidelity.md)
    assert config.optim == OptimConfig(
        lr=1e-5, weight_decay=1e-5, betas=(0.9, 0.999), eps=1e-8, warmup_steps=100, grad_clip=1.0
    )
    assert (config.optim.warmup_type, config.optim.decay, config.optim.schedule_over) == (
        "log",
        "linear",
        "steps",
    )
    # supplement B.3: "The loss weight λ_txt, λ_seg are both set to 1"; focal α 0.25, γ 2, the IoU loss L1
    # over all candidate masks: SAM2's sam2.1_training configs (§3.9 "SAM2's training loss", docs/fidelity.md)
    assert config.loss == LossConfig(
        lambda_txt=1.0, lambda_seg=1.0, weights="sam2", focal_alpha=0.25, focal_gamma=2.0,
        supervise_all_iou=True, iou_l1=True,
    )  # fmt: skip


def test_defaults_are_the_shipped_paper_and_single_launcher_configs():
    """``lavida-train`` with no overrides (train.yaml's defaults: train=paper, launcher=single) and the
    dataclass defaults agree field by field, so a run record written from either reads the same."""
    paper = OmegaConf.to_container(OmegaConf.load(CONFIGS / "train" / "paper.yaml"))
    single = OmegaConf.to_container(OmegaConf.load(CONFIGS / "launcher" / "single.yaml"))
    assert TrainConfig.from_dict(paper) == TrainConfig()
    assert launcher_from_dict(single) == LauncherConfig()
    assert LauncherConfig() == LauncherConfig(  # single.yaml, spelt out
        name="single", mixed_precision="no", cpu=False, deepspeed=None, find_unused_parameters=True
    )


def test_a_config_survives_its_dict_round_trip():
    """The run record stores ``to_dict()``; resuming rebuilds the config from it."""
    config = TrainConfig(
        epochs=3,
        max_steps=4,
        seed=7,
        optim=OptimConfig(betas=(0.8, 0.9)),
        loss=LossConfig(weights="official"),
    )
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_built_sections_are_taken_as_they_are():
    optim = OptimConfig(lr=2e-5)
    assert TrainConfig.from_dict({"optim": optim, "max_steps": None}).optim is optim


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"epochs": 3, "batches_per_epoch": 5}, 15),  # 3 × 5
        ({"epochs": 3, "batches_per_epoch": 5, "max_steps": 7}, 7),  # min(15, 7)
        ({"epochs": 3, "batches_per_epoch": 5, "max_steps": 100}, 15),  # min(15, 100)
    ],
)
def test_total_steps_is_epochs_times_batches_capped_by_max_steps(values, expected):
    assert TrainConfig(**values).total_steps == expected


def test_the_smallest_allowed_values_are_accepted():
    """Each bound admits the value its message names: 0 freezes a parameter group (lr_scales), β = 0 is in
    [0, 1), α = 1 is "at most 1", one step/checkpoint is ≥ 1, and 0 means never for the periodic settings."""
    assert OptimConfig(betas=(0.0, 0.0), lr_scales={"decoder.": 0.0}).lr_scales == {"decoder.": 0.0}
    assert LossConfig(focal_alpha=1.0).focal_alpha == 1.0
    config = TrainConfig(max_steps=1, keep_last=1, save_every=0, val_every=0, val_batches=0)
    assert (config.max_steps, config.keep_last, config.save_every, config.val_every, config.val_batches) == (
        1, 1, 0, 0, 0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: OptimConfig(lr=0.0), "train.optim.lr must be > 0, got 0.0."),
        (
            lambda: OptimConfig(betas=(0.9, 1.0)),
            "train.optim.betas must be two numbers in [0, 1), got (0.9, 1.0).",
        ),
        (
            lambda: OptimConfig(betas=(0.9, 0.99, 0.999)),
            "train.optim.betas must be two numbers in [0, 1), got (0.9, 0.99, 0.999).",
        ),
        (
            lambda: OptimConfig(schedule_over="epochs"),
            "train.optim.schedule_over must be steps or micro_batches, got 'epochs'.",
        ),
        (lambda: TrainConfig(epochs=0), "train.epochs must be ≥ 1, got 0."),
        (lambda: TrainConfig(grad_accum=0), "train.grad_accum must be ≥ 1, got 0."),
        (lambda: TrainConfig(max_steps=0), "train.max_steps must be ≥ 1 or null, got 0."),
        (
            lambda: TrainConfig(resume_check="loose"),
            "train.resume_check must be 'strict' or 'warn', got 'loose'.",
        ),
    ],
)
def test_values_just_outside_a_bound_are_refused(make, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # each hint is the field's default as typed on the command line (lavida/configs/train/paper.yaml)
        (
            {"max_steps": "x"},
            "train.max_steps must be a whole number or null, got 'x'; e.g. train.max_steps=null.",
        ),
        (
            {"trainable_fp32": "yes"},
            "train.trainable_fp32 must be true or false, got 'yes'; e.g. train.trainable_fp32=true.",
        ),
        ({"optim": {"lr": "abc"}}, "train.optim.lr must be a number, got 'abc'; e.g. train.optim.lr=1e-05."),
    ],
)
def test_a_mistyped_value_is_refused_with_the_default_as_example(values, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: TrainConfig.from_dict({"logger": "tb"}),
            "train.logger must be one of tensorboard, wandb, none, got 'tb'; e.g. train.logger=tensorboard.",
        ),
        (
            lambda: launcher_from_dict({"mixed_precision": "bfloat16"}),
            "launcher.mixed_precision must be one of no, bf16, fp16, got 'bfloat16'; e.g. "
            "launcher.mixed_precision=no.",
        ),
    ],
)
def test_a_value_outside_its_choices_is_refused_naming_the_key(build, message):
    """Neither has a check of its own: Accelerate would refuse them later without naming the key."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build()


@pytest.mark.parametrize(
    ("values", "where", "key"),
    [({"epoch": 2}, "train", "epoch"), ({"optim": {"learning_rate": 1e-4}}, "train.optim", "learning_rate")],
)
def test_an_unknown_key_is_refused_naming_its_section_and_the_valid_keys(values, where, key):
    with pytest.raises(
        ValueError, match=rf"^{re.escape(where)}: unknown keys \['{key}'\]; valid keys are \["
    ) as error:
        TrainConfig.from_dict(values)
    valid = "'epochs'" if where == "train" else "'lr'"
    assert valid in str(error.value)
