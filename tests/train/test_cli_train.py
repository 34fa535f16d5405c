"""`lavida-train experiment=<name>` through Hydra, at tiny sizes: the entry point every paper run uses.

Each experiment is composed with the tiny twins (`model=tiny data=tiny train=tiny launcher=cpu`) and
trained on the synthetic set standing in for each of the eleven segmentation sources, so that the
experiment's own settings (projector kind, clip length, compression, data weights, dtype, gradient
checkpointing) run through the real loop.
"""

import json
import logging
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lavida.cli.train import run
from lavida.data.sources.synthetic import SyntheticSource
from lavida.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "lavida" / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
SOURCES = sorted(OmegaConf.load(CONFIGS / "data" / "official.yaml").sources)


def compose(experiment: str, tiny_pretrained, output_dir: Path, *extra: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    train_twin = "official_tiny" if experiment == "official" else "tiny"
    overrides = [
        f"experiment={experiment}",
        "model=tiny",
        "data=tiny",
        f"train={train_twin}",
        "launcher=cpu",
        f"model.mllm.pretrained={tiny_pretrained.mllm.pretrained}",
        f"model.text_encoder.pretrained={tiny_pretrained.text_encoder.pretrained}",
        f"model.mask_decoder.pretrained={tiny_pretrained.mask_decoder.pretrained}",
        f"output_dir={output_dir}",
        *extra,
    ]
    with initialize_config_module("lavida.configs", version_base=None):
        return hydra_compose("train", overrides=overrides)


def train(experiment, tiny_pretrained, root, output_dir, *extra):
    cfg = compose(experiment, tiny_pretrained, output_dir, *extra)
    return cfg, run(cfg, sources={name: SyntheticSource(root) for name in SOURCES})


def test_paper_main_tiny_twin_trains_in_bf16_with_checkpointing(
    synthetic_train_root, tiny_pretrained, tmp_path, caplog
):
    """The paper's run keeps its bf16 base weights and gradient checkpointing at tiny size, under CPU
    autocast."""
    out = tmp_path / "paper_main"
    with caplog.at_level(logging.INFO, logger="lavida.cli.train"):
        cfg, summary = train(
            "paper_main", tiny_pretrained, synthetic_train_root, out, "launcher.mixed_precision=bf16"
        )
    assert (cfg.model.dtype, cfg.model.mllm.gradient_checkpointing) == ("bfloat16", True)
    assert summary.steps == 4 and summary.final_checkpoint == out / "final"
    assert re.search(
        rf"Finished 4 steps in \d+ s; final model: {re.escape(str(out / 'final'))}$", caplog.text, re.M
    )
    recorded = json.loads((out / "run_config.json").read_text())
    assert recorded["hydra"]["run_name"] == "paper_main" and recorded["model"]["dtype"] == "bfloat16"
    meta = json.loads((out / "final" / "meta.json").read_text())
    assert (meta["step"], meta["clip_length"]) == (4, 8)
    # The same command again resumes from its own checkpoint: the record each checkpoint carries reads
    # back equal to the one Hydra composes now (no setting is refused as changed).
    with caplog.at_level(logging.INFO, logger="lavida.train.state"):
        _, again = train(
            "paper_main", tiny_pretrained, synthetic_train_root, out, "launcher.mixed_precision=bf16"
        )
    assert again.steps == 4 and "Resumed from" in caplog.text and "at step 4 " in caplog.text


def test_bf16_weights_without_autocast_are_refused_with_the_fix(tiny_pretrained, tmp_path):
    """Frozen bf16 weights beside float32 trained ones fail inside the first forward without autocast;
    the trainer says so before building anything."""
    cfg = compose("paper_main", tiny_pretrained, tmp_path / "o")
    with pytest.raises(ValueError, match=r"model.dtype=bfloat16 .* needs autocast, but launcher 'cpu' has "):
        run(cfg, sources={})
    assert not (tmp_path / "o").exists()


def test_a_misspelt_added_key_is_refused_before_anything_is_made(tiny_pretrained, tmp_path):
    """``+trian.max_steps=1`` would otherwise train the default number of steps without a word."""
    cfg = compose("paper_main", tiny_pretrained, tmp_path / "o", "+trian.max_steps=1")
    with pytest.raises(
        ValueError, match=r"^lavida-train: unknown key\(s\) 'trian' \(did you mean 'train'\?\)"
    ):
        run(cfg, sources={})
    assert not (tmp_path / "o").exists()


# In the default run: the release (its own train twin, LOF compression, Eq. 7 official, 1-D positions),
# another adapter, another clip length, another data mixture. The rest (~4 s each) run with `-m slow`.
QUICK = {"official", "ablation_adapter_qformer", "ablation_clip_length_16", "ablation_data_image_only"}


@pytest.mark.parametrize(
    "experiment", [e if e in QUICK else pytest.param(e, marks=pytest.mark.slow) for e in EXPERIMENTS]
)
def test_every_experiment_trains_at_tiny_size(experiment, synthetic_train_root, tiny_pretrained, tmp_path):
    out = tmp_path / experiment
    cfg, summary = train(
        experiment, tiny_pretrained, synthetic_train_root, out, "launcher.mixed_precision=bf16"
    )
    assert (
        summary.steps
        == TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True)).total_steps
        > 0
    )
    assert (out / "final" / "heads.safetensors").is_file()
    assert json.loads((out / "run_config.json").read_text())["hydra"]["run_name"] == experiment
