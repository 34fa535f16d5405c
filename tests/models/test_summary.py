"""Parameter counts per component (lavida.models.summary), on a hand-built stand-in with the
attribute layout of LavidaModel: a few small layers whose sizes are counted by hand below."""

import dataclasses

import pytest
from torch import nn

from lavida.models.summary import ComponentCount, component_counts


class _Stub(nn.Module):
    """Holds child modules under the attribute names component_counts reads."""

    def __init__(self, **children):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)


def _frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False)


def _model() -> nn.Module:
    embed = nn.Embedding(5, 2)  # 10, trainable
    lm_head = nn.Linear(2, 5, bias=False)
    lm_head.weight = embed.weight  # tied, as Qwen's small models: counted once, in the first row
    sam = _Stub(
        vision_encoder=_frozen(nn.Linear(2, 2)),  # 4 + 2 = 6, frozen
        prompt_encoder=nn.Linear(1, 2),  # 2 + 2 = 4
        mask_decoder=nn.Linear(3, 1),  # 3 + 1 = 4
        extra=_frozen(nn.Linear(3, 2)),  # 6 + 2 = 8, frozen, in no listed group: "other"
    )
    hf = _Stub(model=_Stub(visual=_frozen(nn.Linear(2, 3)), language_model=embed), lm_head=lm_head)
    model = _Stub(
        mllm=_Stub(hf_model=hf),
        text_encoder=_frozen(nn.Linear(1, 1)),  # 1 + 1 = 2, frozen
        mask_decoder=_Stub(sam=sam, prompt_embedding=nn.Linear(2, 1)),  # 2 + 1 = 3
        projector=nn.Linear(2, 2),  # 6
    )
    model.mask_decoder.prompt_embedding.weight.requires_grad_(False)  # 2 of its 3 frozen
    return model


def test_each_parameter_is_counted_once_in_its_row():
    """Rows in the documented order with (total, trainable) counted by hand in _model's comments; the
    tied lm_head weight is already counted in the language model's row; what no row lists is "other"."""
    rows = component_counts(_model())
    assert rows == [
        ComponentCount("mllm.vision_tower (ViT + merger, frozen)", 9, 0),  # Linear(2, 3): 6 + 3
        ComponentCount("mllm.language_model (LoRA, <SEG> row)", 10, 10),
        ComponentCount("mllm.lm_head (<SEG> row)", 0, 0),
        ComponentCount("text_encoder (CLIP text, frozen)", 2, 0),
        ComponentCount("sam2.image_encoder (frozen)", 6, 0),
        ComponentCount("sam2.prompt_encoder + mask_decoder", 4 + 4 + 3, 4 + 4 + 1),
        ComponentCount("projector (multi-scale semantic)", 6, 6),
        ComponentCount("other", 8, 0),
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rows[0].total = 1  # a row is a record, not a counter to update


def test_no_other_row_when_every_parameter_is_listed():
    model = _model()
    del model.mask_decoder.sam.extra
    assert [row.name for row in component_counts(model)][-1] == "projector (multi-scale semantic)"


def test_a_parameter_in_two_modules_of_one_row_counts_once():
    """The prompt embedding sharing the mask decoder's layer (one module reached twice) adds nothing."""
    model = _model()
    model.mask_decoder.prompt_embedding = model.mask_decoder.sam.mask_decoder
    row = component_counts(model)[5]
    assert (row.total, row.trainable) == (4 + 4, 4 + 4)
