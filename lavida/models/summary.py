"""Parameter counts per component, for ``lavida-info`` and logs."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ComponentCount:
    """Parameters of one component: ``total`` and how many of them train."""

    name: str
    total: int
    trainable: int


def _count(modules: list[nn.Module], skip: set[int] | None = None) -> tuple[int, int, set[int]]:
    seen = set(skip or ())
    total = trainable = 0
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            total += parameter.numel()
            trainable += parameter.numel() if parameter.requires_grad else 0
    return total, trainable, seen


def component_counts(model: nn.Module) -> list[ComponentCount]:
    """Split a :class:`~lavida.models.lavida.LavidaModel` into its parts (each parameter counted once).

    Rows: MLLM vision tower, MLLM language model (incl. LoRA and the ``<SEG>`` rows), LM head, CLIP text
    tower, SAM2 image encoder, SAM2 prompt encoder + mask decoder (+ the prompt embedding layer), projector.
    """
    hf = model.mllm.hf_model
    sam = model.mask_decoder.sam
    groups = [
        ("mllm.vision_tower (ViT + merger, frozen)", [hf.model.visual]),
        ("mllm.language_model (LoRA, <SEG> row)", [hf.model.language_model]),
        ("mllm.lm_head (<SEG> row)", [hf.lm_head]),
        ("text_encoder (CLIP text, frozen)", [model.text_encoder]),
        ("sam2.image_encoder (frozen)", [sam.vision_encoder]),
        (
            "sam2.prompt_encoder + mask_decoder",
            [sam.prompt_encoder, sam.mask_decoder, model.mask_decoder.prompt_embedding],
        ),
        ("projector (multi-scale semantic)", [model.projector]),
    ]
    rows = []
    seen: set[int] = set()
    for name, modules in groups:
        total, trainable, seen = _count(modules, seen)
        rows.append(ComponentCount(name, total, trainable))
    rest_total, rest_trainable, _ = _count([model], seen)  # anything not listed above (e.g. SAM2 embeddings)
    if rest_total:
        rows.append(ComponentCount("other", rest_total, rest_trainable))
    return rows
