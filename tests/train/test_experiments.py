"""Every training experiment composes into valid typed configs; every DeepSpeed launcher validates."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from transformers import get_linear_schedule_with_warmup

from lavida.data.config import DataConfig
from lavida.models.config import LavidaConfig
from lavida.train.config import LauncherConfig, TrainConfig, launcher_from_dict
from lavida.train.launcher import build_accelerator, deepspeed_config
from lavida.train.optim import build_scheduler, schedule_length

CONFIGS = Path(__file__).resolve().parents[2] / "lavida" / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONFIGS / "launcher").glob("*.yaml"))


def compose_train(overrides):
    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    model = LavidaConfig.from_dict(cfg["model"])
    data = DataConfig.from_dict(cfg["data"])
    train = TrainConfig.from_dict(cfg["train"])
    launcher_from_dict(cfg["launcher"])
    assert cfg["run_name"] == experiment
    assert train.total_steps > 0 and data.weights()
    assert model.mllm.arch["text_config"]["hidden_size"] == 3584


def test_paper_recipe_values():
    cfg = compose_train(["experiment=paper_main"])
    train = TrainConfig.from_dict(cfg["train"])
    assert (train.optim.lr, train.optim.weight_decay, train.optim.warmup_steps) == (1e-5, 1e-5, 100)
    # B.3's WarmupDecayLR is DeepSpeed's: log-shaped warm-up unless told otherwise; the release's is linear.
    optim = train.optim
    assert (optim.warmup_type, optim.decay, optim.schedule_over) == ("log", "linear", "steps")
    assert (train.batch_size, train.epochs, train.batches_per_epoch, train.optim.grad_clip) == (
        2,
        10,
        2000,
        1.0,
    )
    assert (train.loss.lambda_txt, train.loss.lambda_seg) == (1.0, 1.0)
    # "SAM2's training loss" (§3.9) as SAM2's training configs set it: 20/1/1/1, L1 IoU over all masks.
    assert (train.loss.weights, train.loss.supervise_all_iou, train.loss.iou_l1) == ("sam2", True, True)
    assert LavidaConfig.from_dict(cfg["model"]).projector.eq7 == "paper"
    official_cfg = compose_train(["experiment=official"])
    official = TrainConfig.from_dict(official_cfg["train"])
    assert (official.epochs, official.grad_accum, official.optim.weight_decay) == (8, 2, 0.01)
    assert (official.optim.warmup_type, official.optim.schedule_over) == ("linear", "micro_batches")
    assert (official.loss.weights, official.loss.supervise_all_iou) == ("official", False)
    official_model = LavidaConfig.from_dict(official_cfg["model"])
    assert (official_model.projector.eq7, official_model.mllm.positions) == ("official", "sequential")
    caps = DataConfig.from_dict(official_cfg["data"]).sources
    assert (
        caps["mapillary"].max_categories,
        caps["cityscapes"].max_categories,
        caps["ade20k"].max_categories,
    ) == (
        20,
        6,
        None,  # the global 30
    )


def test_ablations_change_what_they_say():
    assert (
        DataConfig.from_dict(compose_train(["experiment=ablation_max_categories_10"])["data"]).max_categories
        == 10
    )
    assert (
        LavidaConfig.from_dict(
            compose_train(["experiment=ablation_queries_64"])["model"]
        ).projector.num_queries
        == 64
    )
    assert (
        LavidaConfig.from_dict(compose_train(["experiment=ablation_adapter_mlp"])["model"]).projector.kind
        == "mlp"
    )
    assert (
        DataConfig.from_dict(compose_train(["experiment=ablation_clip_length_16"])["data"]).clip_length == 16
    )
    no_vos = DataConfig.from_dict(compose_train(["experiment=ablation_data_no_vos"])["data"])
    assert "vos" not in no_vos.weights() and "mevis" in no_vos.weights()


@pytest.mark.parametrize("launcher", [name for name in LAUNCHERS if name.startswith("zero")])
def test_deepspeed_launchers_validate(launcher):
    """DeepSpeed's own config parser accepts every ZeRO launcher, with batch settings from the train config."""
    deepspeed = pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = compose_train([f"launcher={launcher}"])
    train = TrainConfig.from_dict(cfg["train"])
    ds = deepspeed_config(launcher_from_dict(cfg["launcher"]), train)
    parsed = DeepSpeedConfig(ds)
    assert parsed.zero_optimization_stage == int(launcher[-1])
    assert parsed.train_micro_batch_size_per_gpu == train.batch_size
    assert parsed.gradient_accumulation_steps == train.grad_accum
    assert parsed.gradient_clipping == train.optim.grad_clip
    assert deepspeed.__version__
    # The launcher's mixed_precision decides DeepSpeed's precision both ways (its yaml enables bf16).
    assert parsed.bfloat16_config.enabled
    full = compose_train([f"launcher={launcher}", "launcher.mixed_precision=no"])
    plain = DeepSpeedConfig(deepspeed_config(launcher_from_dict(full["launcher"]), train))
    assert not plain.bfloat16_config.enabled and not plain.float16_config.enabled


@pytest.mark.parametrize(
    ("key", "value", "setting"),
    [
        ("gradient_clipping", 0.5, "train.optim.grad_clip"),
        ("train_micro_batch_size_per_gpu", 4, "train.batch_size"),
        ("gradient_accumulation_steps", 8, "train.grad_accum"),
        ("train_batch_size", 64, "train.batch_size"),
    ],
)
def test_a_launcher_batch_or_clipping_value_that_disagrees_is_refused(key, value, setting):
    """These keys come from the train config; one written in a launcher yaml was replaced without a word,
    so the run trained with other settings than the yaml said."""
    cfg = compose_train(["launcher=zero2", f"+launcher.deepspeed.{key}={value}"])
    train = TrainConfig.from_dict(cfg["train"])
    with pytest.raises(ValueError, match=rf"launcher\.deepspeed\.{key} is {value}.*{setting}"):
        deepspeed_config(launcher_from_dict(cfg["launcher"]), train)
    # The same value as the loop's, or DeepSpeed's "auto", is accepted.
    agreeing = {
        "gradient_clipping": train.optim.grad_clip,
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": "auto",
    }[key]
    cfg = compose_train(["launcher=zero2", f"+launcher.deepspeed.{key}={agreeing}"])
    config = deepspeed_config(launcher_from_dict(cfg["launcher"]), train)
    assert (
        config.get(key, "auto") in (agreeing, "auto")
        and config["train_micro_batch_size_per_gpu"] == train.batch_size
    )
    # DeepSpeed's own parser compares train_batch_size with numbers and fails on "auto": it is left out.
    assert "train_batch_size" not in config


# Real option of the train group -> its tiny twin (the same recipe in a few CPU steps).
TRAIN_TWINS = {"paper": "tiny", "official": "official_tiny"}


def test_every_train_option_has_a_tiny_twin_with_its_recipe():
    assert set(TRAIN_TWINS) | set(TRAIN_TWINS.values()) == {
        p.stem for p in (CONFIGS / "train").glob("*.yaml")
    }
    for real, tiny in TRAIN_TWINS.items():
        real_train = TrainConfig.from_dict(compose_train([f"train={real}"])["train"])
        tiny_train = TrainConfig.from_dict(compose_train([f"train={tiny}"])["train"])
        assert tiny_train.total_steps < real_train.total_steps
        assert _recipe(tiny_train) == _recipe(real_train), real


def _recipe(train: TrainConfig) -> tuple:
    optim = train.optim
    return train.grad_accum, optim.weight_decay, optim.warmup_type, optim.schedule_over, train.loss


def test_the_official_schedule_is_the_releases_hf_schedule():
    """train=official: HF's get_linear_schedule_with_warmup(100, 16,000), stepped at its 8,000 optimizer steps
    (lavida_official.md §9), so the last step runs at about half the peak; train=paper decays to 0. In the
    warm-up each step runs at HF's factor of the next step (docs/fidelity.md: the first at lr/100, not 0)."""

    def factors(name: str, steps: list[int]) -> tuple[list[float], TrainConfig]:
        train = TrainConfig.from_dict(compose_train([f"train={name}"])["train"])
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        length = schedule_length(train.optim, total_steps=train.total_steps, grad_accum=train.grad_accum)
        schedule = build_scheduler(optimizer, train.optim, total_steps=length)
        return [schedule.lr_lambdas[0](step) for step in steps], train

    official, train = factors("official", [100, 4000, 7999])
    assert (train.total_steps, train.grad_accum, train.optim.warmup_steps) == (8000, 2, 100)
    release = get_linear_schedule_with_warmup(
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 100, 16000
    )
    assert official == pytest.approx([release.lr_lambdas[0](step) for step in (100, 4000, 7999)], abs=1e-12)
    assert official[-1] == pytest.approx(0.5032, abs=1e-4)
    warmup, _ = factors("official", [0, 1, 50, 98, 99])
    assert warmup == pytest.approx(
        [release.lr_lambdas[0](step + 1) for step in (0, 1, 50, 98, 99)], abs=1e-12
    )
    assert warmup == pytest.approx([0.01, 0.02, 0.51, 0.99, 1.0], abs=1e-12)  # (k + 1) / 100 by hand
    paper_train = TrainConfig.from_dict(compose_train(["train=paper"])["train"])
    paper, _ = factors("paper", [paper_train.total_steps - 1])
    assert paper_train.total_steps == 20000 and paper[0] == pytest.approx(1 / 19900)


# A ZeRO yaml carrying an fp16 block; the batch settings come from TRAIN below.
FP16_BLOCK = {"zero_optimization": {"stage": 2}, "fp16": {"enabled": True, "loss_scale": 0}}
TRAIN = {"batch_size": 3, "grad_accum": 2, "optim": {"grad_clip": 0.0}}


@pytest.mark.parametrize(
    ("precision", "fp16", "bf16"),
    [
        ("bf16", {"enabled": False, "loss_scale": 0}, {"enabled": True}),  # the yaml's fp16 block turned off
        ("no", {"enabled": False, "loss_scale": 0}, {"enabled": False}),
        ("fp16", {"enabled": True, "loss_scale": 0}, {"enabled": False}),  # kept as the yaml wrote it
    ],
)
def test_the_deepspeed_dict_follows_the_launcher_and_the_loop(precision, fp16, bf16):
    """The whole dict handed to DeepSpeed: the yaml's settings, the loop's batch settings, and precision
    blocks that say what launcher.mixed_precision says. grad_clip 0 disables clipping in the loop
    (TrainConfig) and in DeepSpeed alike (gradient_clipping 0.0 is DeepSpeed's "no clipping")."""
    launcher = LauncherConfig(name="zero2", mixed_precision=precision, deepspeed=FP16_BLOCK)
    config = deepspeed_config(launcher, TrainConfig.from_dict(TRAIN))
    assert config == {
        "zero_optimization": {"stage": 2},
        "fp16": fp16,
        "bf16": bf16,
        "train_micro_batch_size_per_gpu": 3,
        "gradient_accumulation_steps": 2,
        "gradient_clipping": 0.0,
    }
    assert FP16_BLOCK["fp16"] == {"enabled": True, "loss_scale": 0}  # the launcher's own dict is left as is


def test_the_accelerator_of_a_plain_run(tmp_path):
    """build_accelerator without a deepspeed dict: no DeepSpeed plugin, the loop's accumulation, a tracker
    only where train.logger names one, and the LR schedule stepped once per optimizer step (B.3's 100
    warm-up iterations; Accelerate's default would step it once per process, N times too fast on N)."""
    launcher = LauncherConfig(name="cpu", cpu=True)
    silent = build_accelerator(
        launcher, TrainConfig.from_dict({"grad_accum": 2, "logger": "none"}), output_dir=tmp_path
    )
    assert silent.step_scheduler_with_optimizer is False
    assert silent.state.deepspeed_plugin is None
    assert silent.gradient_accumulation_steps == 2
    assert silent.log_with == []
    assert silent.ddp_handler.find_unused_parameters is True  # LauncherConfig's default
    assert silent.mixed_precision == "no"
    logged = build_accelerator(
        launcher, TrainConfig.from_dict({"logger": "tensorboard"}), output_dir=tmp_path
    )
    assert [str(tracker) for tracker in logged.log_with] == ["tensorboard"]
    assert logged.project_dir == str(tmp_path)


def test_the_accelerator_takes_the_launchers_precision_and_ddp_flag(tmp_path):
    """launcher.mixed_precision and launcher.find_unused_parameters reach Accelerate (bf16 runs on CPU too)."""
    launcher = LauncherConfig(name="cpu", cpu=True, mixed_precision="bf16", find_unused_parameters=False)
    accelerator = build_accelerator(launcher, TrainConfig.from_dict({"logger": "none"}), output_dir=tmp_path)
    assert accelerator.mixed_precision == "bf16"
    assert accelerator.ddp_handler.find_unused_parameters is False
