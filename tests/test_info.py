"""`lavida-info`: parameter counts on the meta device, checked against the architecture formulas."""

import pytest
from conftest import compose_model_config
from omegaconf import OmegaConf


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
    from lavida.cli.info import run

    total = run(OmegaConf.create({"model": compose_model_config(name).to_dict()}))
    return total, capsys.readouterr().out


def test_paper_model_is_8_5_billion(capsys):
    total, printed = _run(capsys, "lavida")
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


@pytest.mark.parametrize("name", ["tiny"])
def test_tiny_model_counts(capsys, name):
    total, printed = _run(capsys, name)
    assert total < 10_000_000
    assert "projector (multi-scale semantic)" in printed
