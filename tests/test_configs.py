"""Every model config composes, and every real option has a tiny twin of the same structure."""

import re
from pathlib import Path

import pytest
from conftest import compose_model_config

from lavida.models.config import InputConfig, LavidaConfig

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "lavida" / "configs" / "model"
# Real option -> its tiny twin, per group.
TWINS = {
    "mllm": {"qwen2vl_7b": "tiny", "qwen2_5vl_7b": "tiny_qwen2_5"},
    "text_encoder": {"clip_b32": "tiny"},
    "mask_decoder": {
        "sam2.1_hiera_s": "tiny",
        "sam2.1_hiera_t": "tiny",
        "sam2.1_hiera_b_plus": "tiny",
        "sam2.1_hiera_l": "tiny",
    },
    "projector": {"paper": "tiny"},
}


def _shape(value):
    """The key tree of a config (values dropped); lists count as leaves."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__ if isinstance(value, list) else "leaf"


def test_every_group_option_has_a_twin_listed():
    for group, twins in TWINS.items():
        options = {path.stem for path in (CONFIG_ROOT / group).glob("*.yaml")}
        assert set(twins) | set(twins.values()) == options, group


@pytest.mark.parametrize("group,real,tiny", [(g, r, t) for g, tw in TWINS.items() for r, t in tw.items()])
def test_tiny_twin_has_the_same_structure(group, real, tiny):
    real_config = compose_model_config("lavida", [f"model/{group}={real}"]).to_dict()[group]
    tiny_config = compose_model_config("lavida", [f"model/{group}={tiny}"]).to_dict()[group]
    if group in ("mllm", "mask_decoder"):  # sub-config keys may differ by family, but never the top level
        assert set(real_config["arch"]) == set(tiny_config["arch"])
        for key, value in real_config["arch"].items():
            if isinstance(value, dict):
                assert set(value) == set(tiny_config["arch"][key]), key
    assert set(real_config) == set(tiny_config)


def test_model_configs_compose_to_the_paper_defaults():
    config = compose_model_config("lavida")
    assert (
        config.compression.ratio == 0.2
        and config.compression.k == 8
        and config.compression.density == "paper"
    )
    assert config.projector.hidden_dim == 768 and config.projector.num_queries == 48
    assert config.projector.num_layers == 5 and config.projector.out_dim == 256
    assert config.mllm.lora == {"r": 8, "alpha": 16, "dropout": 0.05}
    assert config.mllm.arch["text_config"]["hidden_size"] == 3584  # f_sem ∈ R^3584 (B.5)
    assert config.mask_decoder.prompt_embedding == "linear"
    official = compose_model_config("lavida", ["model/compression=official"]).compression
    assert (official.ratio, official.density) == (0.5, "lof")


def test_unknown_keys_are_rejected_with_the_valid_ones():
    data = LavidaConfig().to_dict()
    data["projector"]["num_querys"] = 3
    with pytest.raises(ValueError, match=r"model.projector: unknown keys \['num_querys'\].*num_queries"):
        LavidaConfig.from_dict(data)


def test_a_misspelt_dtype_is_rejected_with_the_valid_ones():
    """It would otherwise fail deep in model building as "module 'torch' has no attribute 'bf16'"."""
    with pytest.raises(
        ValueError, match=r"model.dtype must be one of float32, bfloat16, float16; got 'bf16'"
    ):
        LavidaConfig.from_dict({"dtype": "bf16"})


def test_a_misspelt_base_weights_setting_is_rejected_with_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"^model.base_weights must be 'required' or 'optional'; got 'requried'.$"
    ):
        LavidaConfig.from_dict({"base_weights": "requried"})


@pytest.mark.parametrize(
    ("section", "key", "typo", "choices"),
    [
        ("mllm", "family", "qwen2.5_vl", "qwen2_vl, qwen2_5_vl"),
        ("mllm", "positions", "rope", "mrope, sequential"),
        ("compression", "density", "LOF", "paper, lof"),
        ("mask_decoder", "prompt_embedding", "mlp", "linear, none"),
        ("projector", "kind", "q_former", "multiscale, qformer, mlp"),
        ("projector", "eq7", "Paper", "paper, official"),
    ],
)
def test_a_misspelt_choice_is_rejected_naming_its_key(section, key, typo, choices):
    """Each was checked only where the model is built from it, if at all, in a message that did not name
    the key (model.mllm.family only by the processor)."""
    with pytest.raises(
        ValueError,
        match=rf"^model\.{section}\.{key} must be one of {choices}, got '{typo}'; e\.g\. model\.{section}\.{key}={choices.split(', ')[0]}\.$",
    ):
        LavidaConfig.from_dict({section: {key: typo}})


def test_a_section_given_as_a_scalar_is_rejected_naming_the_section():
    """``model.projector=3`` on the command line: the section must be a mapping of its settings."""
    with pytest.raises(TypeError, match=r"^model.projector: expected a mapping, got int.$"):
        LavidaConfig.from_dict({"projector": 3})


def test_environment_variables_set_weight_paths(monkeypatch):
    monkeypatch.setenv("LAVIDA_QWEN2VL_PATH", "/models/qwen")
    monkeypatch.setenv("LAVIDA_SAM2_PATH", "/models/sam2")
    monkeypatch.setenv("LAVIDA_CLIP_PATH", "/models/clip.safetensors")
    config = compose_model_config("lavida")
    assert config.mllm.pretrained == "/models/qwen"
    assert config.mask_decoder.pretrained == "/models/sam2"
    assert config.text_encoder.pretrained == "/models/clip.safetensors"
    assert config.without_weights().mllm.pretrained is None


def test_every_config_folder_holds_configs():
    """No empty folder among the configs for settings nothing reads (a per-machine ``local/`` once):
    machine-specific paths come from environment variables (README, "The paper run"), and no config
    is git-ignored."""
    root = CONFIG_ROOT.parent
    for folder in (p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        assert any(folder.glob("*.yaml")), f"{folder}: no config in it"
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text()
    assert "lavida/configs" not in ignored


def test_the_readme_detect_commands_parse():
    """The README's lavida-detect lines, split as a shell would, compose into the detect config."""
    import shlex

    from hydra import compose, initialize_config_module

    from lavida.data.prompts import parse_categories

    readme = Path(__file__).resolve().parents[1] / "README.md"
    lines = [line.strip() for line in readme.read_text().splitlines() if ".venv/bin/lavida-detect " in line]
    assert len(lines) >= 2
    parsed = []
    with initialize_config_module("lavida.configs", version_base=None):
        for line in lines:
            overrides = shlex.split(line.split("#")[0])[1:]
            parsed.append(parse_categories(compose("detect", overrides=overrides).categories))
    assert parsed[0] == ["fire", "car accident"] and ["intrusion"] in parsed


def test_every_training_setting_is_overridable_without_a_plus():
    """Each field of TrainConfig (and its optim/loss sections) is in the composed train config, so that
    ``train.optim.schedule_over=micro_batches`` as docs/fidelity.md writes it is accepted: a key the yaml
    leaves out needs Hydra's ``+`` (lr_scales, a map of parameter prefixes, is the one such setting)."""
    import dataclasses

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from lavida.train import config as train_config

    with initialize_config_module("lavida.configs", version_base=None):
        composed = OmegaConf.to_container(compose("train").train, resolve=True)
        compose("train", overrides=["train.optim.schedule_over=micro_batches"])  # as docs/fidelity.md

    def missing(cls, values, prefix):
        for field in dataclasses.fields(cls):
            nested = getattr(train_config, field.type, None) if isinstance(field.type, str) else None
            if field.name not in values:
                yield prefix + field.name
            elif dataclasses.is_dataclass(nested):
                yield from missing(nested, values[field.name], f"{prefix}{field.name}.")

    assert list(missing(train_config.TrainConfig, composed, "train.")) == ["train.optim.lr_scales"]


def test_model_dataclass_defaults_are_the_paper_settings():
    """A LavidaConfig built in code (lavida-info, benchmarks, tests) is the paper's model, not only a composed one."""
    config = LavidaConfig()
    # B.5: LoRA "rank r = 8 and scaling factor α = 16"; dropout 0.05 is the release's (docs/fidelity.md)
    assert config.mllm.lora == {"r": 8, "alpha": 16, "dropout": 0.05}
    assert (config.mllm.positions, config.mllm.gradient_checkpointing) == ("mrope", False)
    # §4.3.2 / Fig. 7b: "At a compression ratio of 0.2"; k = 8 is the release's (docs/fidelity.md)
    assert (config.compression.enabled, config.compression.ratio, config.compression.k) == (True, 0.2, 8)
    assert config.mask_decoder.train_image_encoder is False  # B.2 freezes the vision backbone
    projector = config.projector
    # B.5: d_a 768, 48 queries, 5 layers, D_m 256; 12 heads, MLP 2048, 8 cross-attention heads at
    # downsample 2: the release's two-way blocks (docs/fidelity.md, "projector Eq. 7/8")
    assert (projector.hidden_dim, projector.num_queries, projector.num_layers, projector.out_dim) == (
        768,
        48,
        5,
        256,
    )
    assert (projector.num_heads, projector.mlp_dim, projector.cross_attn_heads) == (12, 2048, 8)
    assert projector.attention_downsample_rate == 2
    # the release's per-frame pixel budgets (docs/fidelity.md, "MLLM pixel budget per frame")
    assert config.inputs == InputConfig(
        train_video_budget=(200_704, 401_408),
        test_video_budget=(1_003_520, 1_204_224),
        image_budget=(25_088, 802_816),
    )


def test_pixel_budgets_are_read_as_integer_pairs():
    """YAML and JSON give lists (and JSON may give floats): each budget becomes an (int, int) tuple, in order;
    min = max is a fixed size and allowed."""
    inputs = LavidaConfig.from_dict(
        {"inputs": {"image_budget": [100.0, 100], "train_video_budget": [1, 7]}}
    ).inputs
    assert inputs.image_budget == (100, 100) and all(type(v) is int for v in inputs.image_budget)
    assert inputs.train_video_budget == (1, 7)  # min 1 is the smallest "0 < min"


@pytest.mark.parametrize("budget", [[0, 10], [11, 10], [1, 2, 3], [5]])
def test_a_malformed_pixel_budget_is_refused(budget):
    message = (
        f"model.inputs.image_budget must be [min_pixels, max_pixels] with 0 < min ≤ max, got {tuple(budget)}."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        InputConfig(image_budget=budget)


def test_clearing_weights_needs_an_architecture_except_for_clip():
    """open_clip knows its named text towers, so CLIP loses its path without an ``arch``; the MLLM and SAM2
    cannot be built from a name."""
    config = LavidaConfig.from_dict({"text_encoder": {"pretrained": "/models/clip.safetensors"}})
    cleared = config.without_weights()
    assert cleared.text_encoder.pretrained is None and cleared.base_weights == "optional"
    assert cleared.text_encoder.model_name == "ViT-B-32-quickgelu"
    for section in ("mllm", "mask_decoder"):
        with pytest.raises(ValueError, match=rf"^model\.{section} has weights but no `arch`"):
            LavidaConfig.from_dict({section: {"pretrained": "/models/x"}}).without_weights()
    with_arch = LavidaConfig.from_dict(
        {"mllm": {"pretrained": "/models/x", "arch": {"a": 1}}}
    ).without_weights()
    assert with_arch.mllm.pretrained is None and with_arch.mllm.arch == {"a": 1}


def test_nested_sections_are_built_as_their_dataclasses():
    config = LavidaConfig.from_dict({"projector": {"num_queries": 24}, "compression": {"ratio": 0.5}})
    assert config.projector.num_queries == 24 and config.projector.hidden_dim == 768
    assert config.compression.ratio == 0.5 and config.to_dict()["compression"]["ratio"] == 0.5
