"""`lavida-info`: parameter counts on the meta device against the architecture formulas; user errors."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_model_config
from omegaconf import OmegaConf

from lavida.cli.info import run
from lavida.models.lavida import build_lavida


def qwen2_vl_parameters(text: dict, vision: dict) -> int:
    """Qwen2-VL's parameter count written out from its architecture (independent of transformers)."""
    hidden, inter, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    head_dim = hidden // text["num_attention_heads"]
    kv = text["num_key_value_heads"] * head_dim
    attention = (hidden * hidden + hidden) + 2 * (hidden * kv + kv) + hidden * hidden  # q, k, v biased; o not
    block = attention + 3 * hidden * inter + 2 * hidden  # SwiGLU MLP, two RMSNorms
    language = text["vocab_size"] * hidden + layers * block + hidden
    lm_head = text["vocab_size"] * hidden
    width, depth = vision["embed_dim"], vision["depth"]
    patch = vision["in_channels"] * vision["temporal_patch_size"] * vision["patch_size"] ** 2 * width
    mlp = int(width * vision["mlp_ratio"])
    vision_block = (
        2 * 2 * width
        + (width * 3 * width + 3 * width)
        + (width * width + width)
        + 2 * width * mlp
        + mlp
        + width
    )
    merged = width * vision["spatial_merge_size"] ** 2
    merger = 2 * width + (merged * merged + merged) + (merged * vision["hidden_size"] + vision["hidden_size"])
    return language + lm_head + patch + depth * vision_block + merger


def _run(capsys, name):
    total = run(OmegaConf.create({"model": compose_model_config(name).to_dict()}))
    return total, capsys.readouterr().out


def test_paper_model_is_8_5_billion(capsys, caplog):
    with caplog.at_level(logging.INFO):
        total, printed = _run(capsys, "lavida")
    # Built on the meta device, said once; not the build's "random init" lines of a model loaded for use.
    assert "The architecture of the configured model, built on the meta device" in caplog.text
    assert printed.startswith("component ")  # the table alone on stdout
    assert "random" not in caplog.text.lower() and "random" not in printed.lower()
    assert logging.getLogger("lavida.models").level == logging.NOTSET  # as it was
    assert printed.strip().splitlines()[-1] == f"total_params={total}"
    assert 8.40e9 < total < 8.55e9  # B.3: "The total number of model parameters is 8.5B"
    rows = {line[:44].strip(): line for line in printed.splitlines()}
    config = compose_model_config("lavida")
    qwen = qwen2_vl_parameters(config.mllm.arch["text_config"], config.mllm.arch["vision_config"])
    counted = [int(rows[key].split()[-2].replace(",", "")) for key in rows if key.startswith("mllm.")]
    lora_and_rows = [int(rows[key].split()[-1].replace(",", "")) for key in rows if key.startswith("mllm.")]
    assert sum(counted) - sum(lora_and_rows) == qwen
    # ViT-B/32's text tower, without CLIP's contrastive temperature (logit_scale, not part of the tower)
    assert int(rows["text_encoder (CLIP text, frozen)"].split()[-2].replace(",", "")) == 63_428_096


def test_tiny_model_counts(capsys):
    """The tiny twin's table on the meta device against a real CPU build counted parameter by parameter,
    its MLLM rows against the Qwen2-VL formula, and its trainable MLLM entries against LoRA counted by hand."""
    total, printed = _run(capsys, "tiny")
    lines = printed.strip().splitlines()
    assert lines[-1] == f"total_params={total}"
    rows = {line[:44].strip(): line.split() for line in lines[1:-1]}
    totals = {key: int(row[-2].replace(",", "")) for key, row in rows.items()}
    trainable = {key: int(row[-1].replace(",", "")) for key, row in rows.items()}
    assert totals.pop("all") == total == sum(totals.values())
    # A real (CPU) build of the same config, counted without lavida.models.summary.
    config = compose_model_config("tiny")
    torch.manual_seed(0)
    model = build_lavida(config.without_weights())
    assert total == sum(p.numel() for p in model.parameters())
    assert trainable.pop("all") == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # The MLLM's frozen weights are Qwen2-VL's own count; what it trains is LoRA (r=8) on q and v of
    # both layers plus the <SEG> rows: per layer q 8 * (64 + 64), v 8 * (64 + 32) (2 KV heads of 16).
    qwen = qwen2_vl_parameters(config.mllm.arch["text_config"], config.mllm.arch["vision_config"])
    mllm = [key for key in totals if key.startswith("mllm.")]
    assert sum(totals[key] for key in mllm) - sum(trainable[key] for key in mllm) == qwen
    assert trainable["mllm.vision_tower (ViT + merger, frozen)"] == 0
    assert trainable["mllm.language_model (LoRA, <SEG> row)"] == 2 * (8 * (64 + 64) + 8 * (64 + 32)) + 64
    assert trainable["mllm.lm_head (<SEG> row)"] == 64
    assert trainable["text_encoder (CLIP text, frozen)"] == 0
    assert totals["projector (multi-scale semantic)"] == trainable["projector (multi-scale semantic)"] > 0


def test_an_interpolated_size_is_resolved_before_the_build(capsys):
    """A size written as an interpolation (``model.projector.num_queries='${model.projector.num_layers}'``
    on the command line) counts as the value it names, not as the text."""
    tiny = compose_model_config("tiny").to_dict()
    tiny["projector"]["num_layers"] = 3
    direct = run(OmegaConf.create({"model": {**tiny, "projector": {**tiny["projector"], "num_queries": 3}}}))
    interpolated = OmegaConf.create(
        {
            "model": {
                **tiny,
                "projector": {**tiny["projector"], "num_queries": "${model.projector.num_layers}"},
            }
        }
    )
    assert run(interpolated) == direct != run(OmegaConf.create({"model": tiny}))
    capsys.readouterr()


def lavida_info(*overrides: str, cwd) -> subprocess.CompletedProcess:
    """The installed ``lavida-info`` console script, as a user's shell runs it (no HYDRA_FULL_ERROR)."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    command = [str(Path(sys.executable).parent / "lavida-info"), *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+modle=tiny"], "lavida-info: unknown key(s) 'modle' (did you mean 'model'?); "),
        (["model=tiny", "model.projector.num_queries=0"], "lavida-info: num_queries must be positive, got 0"),
    ],
)
def test_a_user_error_is_one_line_with_status_2(tmp_path, overrides, message):
    """lavida-info printed Hydra's "Error executing job" banner and a traceback for these, and exited 1,
    where the other Hydra tools print ``lavida-<tool>: <message>`` and exit 2 (lavida/cli/errors.py)."""
    done = lavida_info(*overrides, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
    assert done.stderr.startswith(message), done.stderr
    assert done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # info writes nothing
