"""CLIP text towers saved by transformers, read into open_clip's text tower.

The official LAVIDA code loads its category encoder with transformers, from a copy of
``openai/clip-vit-base-patch32`` (a ``CLIPModel`` folder: ``config.json`` and ``model.safetensors`` or
``pytorch_model.bin``). A researcher coming from that code has this folder, not open_clip's file. Both
hold the same OpenAI weights under other names, with the attention's q, k and v split into three
layers, so the folder can be renamed into open_clip's state dict and loaded into the same tower: the
features are open_clip's ``encode_text`` output either way (tested against transformers'
``get_text_features`` on the same weights).

Accepted: a ``CLIPModel`` or ``CLIPTextModelWithProjection`` folder (or its weights file, with or
without ``config.json`` beside it). A plain ``CLIPTextModel`` lacks the text projection and is refused:
its pooled output is another feature than the one LAVIDA's projector is built for (B.5, D_t = 512).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from lavida.models.weights import WeightsNotFoundError, load_state_dict_file

__all__ = [
    "TRANSFORMERS_CLIP_TYPES",
    "is_transformers_clip_folder",
    "is_transformers_clip_state",
    "open_clip_text_state",
    "read_transformers_clip_folder",
    "check_transformers_clip_folder",
    "read_config",
    "check_activation",
]

TRANSFORMERS_CLIP_TYPES = ("clip", "clip_text_model")
# The weights files of a transformers folder, in the order transformers itself prefers them.
_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# transformers name (under text_model.) → open_clip name; {i} is the layer index.
_RENAMES = (
    (r"embeddings\.token_embedding\.weight", "token_embedding.weight"),
    (r"embeddings\.position_embedding\.weight", "positional_embedding"),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)", r"transformer.resblocks.\1.ln_1.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)", r"transformer.resblocks.\1.ln_2.\2"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
        r"transformer.resblocks.\1.attn.out_proj.\2",
    ),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_fc.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_proj.\2"),
    (r"final_layer_norm\.(weight|bias)", r"ln_final.\1"),
)
_QKV = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")


# A CLIPTextModel saved by transformers 5 has its text tower's names without the text_model. prefix.
_BARE_TEXT_PREFIXES = ("embeddings.", "encoder.", "final_layer_norm.")


def is_transformers_clip_state(state: dict) -> bool:
    """Whether a state dict has transformers' CLIP names (``text_model.*``, or a bare text model's)."""
    return any(key.startswith("text_model.") for key in state) or "embeddings.token_embedding.weight" in state


def is_transformers_clip_folder(path: Path) -> bool:
    """Whether ``path`` is a folder with a transformers ``config.json`` (of any model type)."""
    return path.is_dir() and (path / "config.json").is_file()


def read_transformers_clip_folder(folder: Path, *, hint: str) -> tuple[dict, dict]:
    """The state dict and ``config.json`` of a transformers CLIP folder.

    Returns:
        (state dict with transformers' names, the parsed config.json).

    Raises:
        WeightsNotFoundError: the folder holds another model type or no weights file; the message names
            the folder, what it holds and what was expected.
    """
    config, weights = check_transformers_clip_folder(folder, hint=hint)
    if weights.name.endswith(".index.json"):
        return _read_shards(weights, hint=hint), config
    return load_state_dict_file(weights, what="CLIP text encoder", hint=hint), config


def check_transformers_clip_folder(folder: Path, *, hint: str) -> tuple[dict, Path]:
    """Check, without reading the weights, that ``folder`` is a transformers CLIP folder with weights.

    Returns:
        (the parsed config.json, the weights file transformers would read: the safetensors file, its
        shard index, or pytorch_model.bin).

    Raises:
        WeightsNotFoundError: as :func:`read_transformers_clip_folder`.
    """
    config = read_config(folder / "config.json", hint=hint)
    present = [name for name in _WEIGHTS_FILES if (folder / name).is_file()]
    if not present:
        listing = ", ".join(sorted(p.name for p in folder.iterdir())) or "(empty)"
        raise WeightsNotFoundError(
            f"CLIP text encoder: the transformers folder '{folder}' holds no weights file; expected "
            f"{' or '.join(_WEIGHTS_FILES)} beside its config.json. Found: {listing}.\n{hint}"
        )
    return config, folder / present[0]


def read_config(file: Path, *, hint: str) -> dict:
    """Parse a transformers ``config.json`` and check that it describes a CLIP text tower."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsNotFoundError(
            f"CLIP text encoder: could not read '{file}' ({error}).\n{hint}"
        ) from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in TRANSFORMERS_CLIP_TYPES:
        raise WeightsNotFoundError(
            f"CLIP text encoder: '{file}' describes a transformers model of type {model_type!r}; expected a "
            f"CLIP model ({' or '.join(map(repr, TRANSFORMERS_CLIP_TYPES))}), as in "
            f"openai/clip-vit-base-patch32.\n{hint}"
        )
    return config


def _read_shards(index: Path, *, hint: str) -> dict:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise WeightsNotFoundError(
            f"CLIP text encoder: could not read the shard index '{index}' ({error}); expected a json object "
            f"with a 'weight_map'.\n{hint}"
        ) from error
    state = {}
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        if not shard.is_file():
            raise WeightsNotFoundError(
                f"CLIP text encoder: '{index}' lists the shard '{name}', which is not in '{index.parent}'.\n{hint}"
            )
        state.update(load_state_dict_file(shard, what="CLIP text encoder", hint=hint))
    return state


def open_clip_text_state(state: dict, *, source: Path, hint: str) -> dict:
    """Rename a transformers CLIP state dict into open_clip's text-tower names.

    q, k and v become open_clip's packed ``in_proj`` (rows in that order, as ``nn.MultiheadAttention``
    reads them), and the text projection, a ``Linear`` weight (E, D) in transformers, becomes open_clip's
    (D, E) matrix that ``encode_text`` multiplies from the right. Image-tower tensors are dropped;
    anything else keeps its name, so the caller's checks report it.

    Raises:
        WeightsNotFoundError: the state has no text projection, or a layer lacks one of q, k, v.
    """
    if "text_model.embeddings.token_embedding.weight" not in state:
        state = {f"text_model.{k}" if k.startswith(_BARE_TEXT_PREFIXES) else k: v for k, v in state.items()}
    if "text_projection.weight" not in state:
        raise WeightsNotFoundError(
            f"CLIP text encoder: '{source}' holds a CLIP text tower without its text projection "
            "(text_projection.weight; a transformers CLIPTextModel). LAVIDA's category features are CLIP's "
            f"projected text features: use the whole CLIPModel folder (openai/clip-vit-base-patch32).\n{hint}"
        )
    converted: dict[str, torch.Tensor] = {"text_projection": state["text_projection.weight"].t().contiguous()}
    packed: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith("text_model."):
            continue  # vision_model.*, visual_projection, logit_scale: not the text tower
        name = key.removeprefix("text_model.")
        if name == "embeddings.position_ids":  # a buffer older transformers versions saved
            continue
        qkv = _QKV.fullmatch(name)
        if qkv:
            layer, part, kind = qkv.groups()
            packed.setdefault((layer, kind), {})[part] = value
            continue
        for pattern, replacement in _RENAMES:
            if re.fullmatch(pattern, name):
                converted[re.sub(pattern, replacement, name)] = value
                break
        else:
            converted[key] = value  # unknown: reported as unexpected by the loader
    for (layer, kind), parts in sorted(packed.items()):
        if set(parts) != {"q", "k", "v"}:
            lacking = sorted({"q", "k", "v"} - set(parts))
            raise WeightsNotFoundError(
                f"CLIP text encoder: '{source}' lacks the {'/'.join(lacking)} projection {kind} of text layer "
                f"{layer} (text_model.encoder.layers.{layer}.self_attn.*_proj.{kind}).\n{hint}"
            )
        converted[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    return converted


def check_activation(clip: nn.Module, config: dict, *, config_file: Path, model_name: str, hint: str) -> None:
    """Refuse a tower whose config.json names another MLP activation than the open_clip model uses.

    OpenAI's CLIPs use QuickGELU; open_clip's ``ViT-B-32`` uses exact GELU and ``ViT-B-32-quickgelu``
    QuickGELU. The weights fit either, so only the config says which one they were trained with.
    """
    text_config = config.get("text_config", config) if config.get("model_type") == "clip" else config
    act = text_config.get("hidden_act", "quick_gelu")  # transformers' CLIPTextConfig default
    mlp = clip.transformer.resblocks[0].mlp
    uses_quick = type(getattr(mlp, "gelu", None)).__name__ == "QuickGELU"
    if (act == "quick_gelu") != uses_quick:
        raise WeightsNotFoundError(
            f"CLIP text encoder: '{config_file}' says the tower was trained with hidden_act '{act}', but the "
            f"open_clip model '{model_name}' uses {'QuickGELU' if uses_quick else 'GELU'}. Set "
            "model.text_encoder.model_name to the matching open_clip model (OpenAI's weights: "
            f"'ViT-B-32-quickgelu').\n{hint}"
        )
