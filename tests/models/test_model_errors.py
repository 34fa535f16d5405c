"""Configuration and checkpoint mistakes fail loudly, naming the setting or file and how to fix it."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lavida.models.checkpoint import load_checkpoint, save_checkpoint
from lavida.models.config import CompressionConfig, LavidaConfig
from lavida.models.lavida import build_lavida
from lavida.models.weights import WeightsNotFoundError

CONFIGS = Path(__file__).resolve().parents[2] / "lavida" / "configs"


# -- compression ratio (§3.4: the fraction of visual tokens kept, in (0, 1]) ----------------------------


@pytest.mark.parametrize("ratio", [2.0, 5, 1.0001, 0.0, -0.2, float("nan")])
def test_compression_ratio_outside_unit_interval_is_rejected(ratio):
    # A ratio > 1 used to build no compressor at all: compression silently off.
    with pytest.raises(ValueError, match=r"model\.compression\.ratio must be in \(0, 1\]"):
        CompressionConfig(ratio=ratio)
    with pytest.raises(ValueError, match=r"model\.compression\.ratio"):
        LavidaConfig.from_dict({"compression": {"ratio": ratio}})


@pytest.mark.parametrize(("enabled", "ratio"), [(True, 0.2), (True, 1.0), (False, 0.2), (True, 1)])
def test_valid_compression_settings_are_kept(enabled, ratio):
    config = CompressionConfig(enabled=enabled, ratio=ratio)
    assert config.ratio == ratio
    assert config.enabled is enabled


# -- a checkpoint whose base models moved --------------------------------------------------------------


@pytest.fixture
def saved(tiny_model, tiny_pretrained, tmp_path):
    return save_checkpoint(tiny_model.eval(), tiny_pretrained, tmp_path / "ckpt"), tiny_pretrained


def _move_base(directory: Path, section: str, where: str) -> None:
    config_file = directory / "lavida_config.json"
    data = json.loads(config_file.read_text())
    data[section]["pretrained"] = where
    config_file.write_text(json.dumps(data))


@pytest.mark.parametrize("section", ["mllm", "mask_decoder", "text_encoder"])
def test_moved_base_model_names_the_checkpoint_override(saved, tmp_path, section):
    directory, _ = saved
    gone = str(tmp_path / "old_machine" / section)
    _move_base(directory, section, gone)
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(directory)
    message = str(info.value)
    assert gone in message
    assert str(directory / "lavida_config.json") in message
    assert f"+checkpoint_overrides.{section}.pretrained=DIR" in message
    assert f"config_overrides={{'{section}': {{'pretrained': DIR}}}}" in message


@pytest.mark.parametrize("name", ["eval", "detect"])
def test_documented_checkpoint_override_syntax_composes(name):
    from hydra import compose, initialize_config_module

    override = "+checkpoint_overrides.mllm.pretrained=/models/Qwen2-VL-7B-Instruct"
    # The yaml comment documents exactly this syntax (the `checkpoint_overrides={mllm: ...}` form it used to
    # show fails: the key is not in the struct config).
    assert override in (CONFIGS / f"{name}.yaml").read_text()
    required = ["input=a.mp4", "categories=fire", "checkpoint=ckpt"] if name == "detect" else []
    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose(name, overrides=[override, *required])
    assert OmegaConf.to_container(cfg.checkpoint_overrides) == {
        "mllm": {"pretrained": "/models/Qwen2-VL-7B-Instruct"}
    }


# -- LoRA configuration of the checkpoint vs the model --------------------------------------------------


def test_lora_rank_mismatch_names_the_adapter_and_both_ranks(saved):
    directory, config = saved
    saved_r = config.mllm.lora["r"]
    other = {**config.mllm.lora, "r": saved_r * 2}
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(directory, config_overrides={"mllm": {"lora": other}})
    message = str(info.value)
    assert str(directory / "mllm_adapter") in message
    assert f"r={saved_r}" in message and f"r={saved_r * 2}" in message
    assert "adapter_config.json" in message
    # The detail is torch's first size mismatch (the first LoRA A matrix), not its "Error(s) in loading" header.
    assert "does not fit the model's LoRA adapter (size mismatch for " in message
    assert f"q_proj.lora_A.default.weight: copying a param with shape torch.Size([{saved_r}, " in message
    assert "Error(s)" not in message


def test_lora_disabled_against_a_lora_checkpoint_names_the_saved_rank(saved):
    directory, config = saved
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(directory, config_overrides={"mllm": {"lora": None}})
    message = str(info.value)
    assert str(directory / "mllm_adapter") in message
    assert f"saved with r={config.mllm.lora['r']}" in message
    assert "; the model is configured without LoRA (model.mllm.lora: null). Load it" in message


def test_lora_on_more_modules_than_saved_is_refused_naming_the_missing_keys(saved):
    """A model configured with LoRA on k_proj as well as the saved q_proj/v_proj: the checkpoint holds no
    k_proj adapter, so loading must stop (naming a missing k_proj LoRA key) instead of keeping the
    fresh k_proj adapter."""
    directory, config = saved
    more = {**config.mllm.lora, "target_modules": ["q_proj", "v_proj", "k_proj"]}
    with pytest.raises(
        WeightsNotFoundError,
        match=r"does not match the model's adapter: unexpected \[\], missing \[.*k_proj\.lora_",
    ):
        load_checkpoint(directory, config_overrides={"mllm": {"lora": more}})


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("deleted", r"\[Errno 2\] No such file or directory: '.*adapter_config\.json'"),
        (
            "truncated",
            r".*adapter_config\.json: not valid JSON \(.*\); expected PEFT's adapter configuration\.",
        ),
        ("a list", r".*adapter_config\.json: not a JSON object"),
    ],
)
def test_an_unreadable_adapter_config_leaves_the_saved_lora_settings_unknown(saved, damage, reason):
    """The adapter's weights hold a rank-8 LoRA; without a readable adapter_config.json the message said
    "The adapter was saved without LoRA", sending the user to load it with ``lora: null``."""
    directory, config = saved
    adapter_config = directory / "mllm_adapter" / "adapter_config.json"
    if damage == "deleted":
        adapter_config.unlink()
    elif damage == "truncated":
        adapter_config.write_text(adapter_config.read_text()[:20])
    else:
        adapter_config.write_text("[8]")
    other = {**config.mllm.lora, "r": config.mllm.lora["r"] * 2}
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(directory, config_overrides={"mllm": {"lora": other}})
    message = str(info.value)
    assert "saved without LoRA" not in message
    assert re.search(rf"The adapter's saved LoRA settings are unknown \({reason}", message), message
    assert f"the model is configured with r={other['r']}" in message


def test_lora_against_an_adapter_saved_without_lora_names_both(tiny_pretrained, tmp_path):
    """The frozen-LLM ablation's checkpoint (``lora: null``: only the <SEG> rows) loaded with LoRA on: PEFT
    looks the <SEG> rows up under LoRA's names and raised a bare KeyError, which no caller explains."""
    config = dataclasses.replace(tiny_pretrained, mllm=dataclasses.replace(tiny_pretrained.mllm, lora=None))
    directory = save_checkpoint(build_lavida(config).eval(), config, tmp_path / "ckpt")
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(directory, config_overrides={"mllm": {"lora": tiny_pretrained.mllm.lora}})
    message = str(info.value)
    assert message.startswith(
        f"'{directory / 'mllm_adapter'}' does not fit the model's LoRA adapter (it lacks '"
    )
    assert (
        f"The adapter was saved without LoRA ({directory / 'mllm_adapter' / 'adapter_config.json'})"
        in message
    )
    assert f"the model is configured with r={tiny_pretrained.mllm.lora['r']}" in message


def test_a_checkpoint_without_its_adapter_weights_names_the_file(saved):
    directory, _ = saved
    (directory / "mllm_adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(directory)
    assert str(info.value) == (
        f"'{directory / 'mllm_adapter'}/adapter_model.safetensors' is missing: the MLLM adapter was not saved."
    )
