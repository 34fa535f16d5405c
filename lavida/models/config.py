"""The model's configuration as typed dataclasses.

Hydra composes YAML groups (``lavida/configs/model``) into a plain mapping with exactly these fields;
entry points turn it into a :class:`LavidaConfig` with :meth:`LavidaConfig.from_dict`. A checkpoint
stores the same mapping as JSON, so a trained model is rebuilt without Hydra (docs/decisions.md).
Unknown keys are rejected with the list of valid ones, so a YAML typo fails loudly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from lavida.config_choices import check_choices
from lavida.number_checks import is_real


@dataclass
class MllmConfig:
    """Semantic extractor (§3.5, B.5). See ``lavida.models.mllm.build_semantic_extractor``."""

    family: Literal["qwen2_vl", "qwen2_5_vl"] = "qwen2_vl"
    pretrained: str | None = None
    arch: dict | None = None
    lora: dict | None = field(default_factory=lambda: {"r": 8, "alpha": 16, "dropout": 0.05})
    positions: Literal["mrope", "sequential"] = "mrope"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False


@dataclass
class CompressionConfig:
    """Reverse-attention token compression (§3.4). ``ratio: 1.0`` or ``enabled: false`` disables it."""

    enabled: bool = True
    # Fraction of visual tokens kept, in (0, 1]. The paper states no default; 0.2 is the ratio of its runtime
    # and memory figures: "At a compression ratio of 0.2" (§4.3.2, Fig. 7b), and supplement Tab. 2's LLM
    # time (26.96 ms) is supplement Tab. 4's 0.2 column.
    ratio: float = 0.2
    k: int = 8
    density: Literal["paper", "lof"] = "paper"

    def __post_init__(self) -> None:
        # A ratio above 1 cannot keep more tokens than there are; rejecting it (rather than treating it as
        # "no compression") keeps a typo such as 2 for 0.2 from silently switching §3.4 off.
        # `not 0 < ratio <= 1` also rejects NaN.
        if not is_real(self.ratio) or not 0 < self.ratio <= 1:
            raise ValueError(
                f"model.compression.ratio must be in (0, 1], the fraction of visual tokens kept (§3.4); got "
                f"{self.ratio!r}. Use model.compression.ratio=1.0 or model.compression.enabled=false to "
                "disable compression."
            )


@dataclass
class TextEncoderConfig:
    """CLIP text tower (B.5). See ``lavida.models.text_encoder.build_category_encoder``."""

    model_name: str = "ViT-B-32-quickgelu"
    pretrained: str | None = None
    arch: dict | None = None


@dataclass
class MaskDecoderConfig:
    """SAM2 (§3.8, B.5). See ``lavida.models.mask_decoder.build_mask_decoder``."""

    pretrained: str | None = None
    arch: dict | None = None
    prompt_embedding: Literal["linear", "none"] = "linear"
    train_image_encoder: bool = False  # B.2 freezes it (every shipped config does)


@dataclass
class ProjectorConfig:
    """Multi-Scale Semantic Projector (§3.7, B.5: d_a 768, 48 queries, 5 layers, D_m 256).

    ``kind`` selects Tab. 4's adapter: ``multiscale`` (proposed), ``qformer`` or ``mlp`` (baselines).
    """

    kind: Literal["multiscale", "qformer", "mlp"] = "multiscale"
    hidden_dim: int = 768
    num_queries: int = 48
    num_layers: int = 5
    num_heads: int = 12
    mlp_dim: int = 2048
    cross_attn_heads: int = 8
    attention_downsample_rate: int = 2
    out_dim: int = 256
    eq7: Literal["paper", "official"] = "paper"  # official: residual + LayerNorm before W_o


@dataclass
class InputConfig:
    """Per-frame pixel budgets [min, max] of the MLLM branch (official values, lavida_official.md §2)."""

    train_video_budget: tuple[int, int] = (200_704, 401_408)
    test_video_budget: tuple[int, int] = (1_003_520, 1_204_224)
    image_budget: tuple[int, int] = (25_088, 802_816)

    def __post_init__(self) -> None:
        for name in ("train_video_budget", "test_video_budget", "image_budget"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(
                    f"model.inputs.{name} must be [min_pixels, max_pixels] with 0 < min ≤ max, got {value}."
                )
            object.__setattr__(self, name, (int(value[0]), int(value[1])))


DType = Literal["float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(DType)


@dataclass
class LavidaConfig:
    """The whole model. ``dtype`` applies to every component (float32 on CPU, bfloat16 on GPU)."""

    mllm: MllmConfig = field(default_factory=MllmConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    inputs: InputConfig = field(default_factory=InputConfig)
    dtype: DType = "float32"
    # "required": every base model (MLLM, CLIP text, SAM2) must come from a local path, and a missing one
    # is an error before anything loads (the paper's models: LAVIDA fine-tunes pretrained bases).
    # "optional": a base model without a path gets random weights (tiny twins, lavida-info, benchmarks).
    base_weights: Literal["required", "optional"] = "required"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}.")
        if self.base_weights not in ("required", "optional"):
            raise ValueError(
                f"model.base_weights must be 'required' or 'optional'; got {self.base_weights!r}."
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LavidaConfig:
        """Build from a nested mapping (e.g. ``OmegaConf.to_container(cfg.model, resolve=True)``)."""
        return _from_dict(cls, data, "model")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def without_weights(self) -> LavidaConfig:
        """The same architecture with every ``pretrained`` path cleared (random init, e.g. on meta)."""
        data = self.to_dict()
        for section in ("mllm", "text_encoder", "mask_decoder"):
            # open_clip knows its named architectures; the other two need `arch`.
            needs_arch = section != "text_encoder"
            if needs_arch and data[section]["pretrained"] is not None and data[section]["arch"] is None:
                raise ValueError(
                    f"model.{section} has weights but no `arch`: its architecture is only known from the "
                    "weights. Add the architecture to the config to build it without weights."
                )
            data[section]["pretrained"] = None
        data["base_weights"] = "optional"
        return LavidaConfig.from_dict(data)


def _from_dict(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}.")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys are {sorted(known)}.")
    values = {}
    for name, value in data.items():
        nested = _NESTED.get(known[name].type) if isinstance(known[name].type, str) else None
        values[name] = _from_dict(nested, value, f"{where}.{name}") if nested is not None else value
    built = cls(**values)
    check_choices(built, where)  # model.mllm.family, projector.kind, ...: named here, not in a builder
    return built


_NESTED = {
    "MllmConfig": MllmConfig,
    "CompressionConfig": CompressionConfig,
    "TextEncoderConfig": TextEncoderConfig,
    "MaskDecoderConfig": MaskDecoderConfig,
    "ProjectorConfig": ProjectorConfig,
    "InputConfig": InputConfig,
}
