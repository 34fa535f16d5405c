"""Construction options of the Multi-Level Mask Decoder (B.2, B.5): B.5's prompt embedding layer or none
(the official code), and the frozen image encoder by default."""

from __future__ import annotations

import copy
import logging
import re

import pytest
import torch
from conftest import compose_model_config
from torch import nn
from transformers import Sam2Config

from lavida.models.mask_decoder import MultiLevelMaskDecoder, _sam2_config, build_mask_decoder, load_sam2


@pytest.fixture(scope="module")
def sam():
    """The tiny SAM2 (prompt width C = 32), random weights."""
    torch.manual_seed(0)
    return load_sam2(arch=compose_model_config("tiny").mask_decoder.arch)


def _sparse_prompts_received(decoder: MultiLevelMaskDecoder, prompts: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1, C) the sparse prompt embeddings SAM2's mask decoder is called with for ``prompts`` (N, D_m)."""
    received = []
    hook = decoder.sam.mask_decoder.register_forward_pre_hook(
        lambda module, args, kwargs: received.append(kwargs["sparse_prompt_embeddings"]), with_kwargs=True
    )
    try:
        pixels = torch.randn(prompts.shape[0], 3, decoder.image_size, decoder.image_size)
        with torch.no_grad():
            decoder(decoder.encode_images(pixels), prompts)
    finally:
        hook.remove()
    (sparse,) = received
    return sparse


def test_no_prompt_embedding_feeds_f_proj_unchanged(sam):
    """``prompt_embedding='none'`` (the official code) hands f_proj to SAM2's mask decoder as it is: no
    layer, no parameter beyond SAM2's own."""
    decoder = MultiLevelMaskDecoder(sam=sam, prompt_dim=32, prompt_embedding="none")
    prompts = torch.randn(3, 32)
    assert torch.equal(_sparse_prompts_received(decoder, prompts), prompts.reshape(3, 1, 1, 32))
    assert {name for name, _ in decoder.named_parameters()} == {
        f"sam.{name}" for name, _ in sam.named_parameters()
    }


def test_no_prompt_embedding_needs_the_prompt_width(sam):
    message = (
        "prompt_embedding='none' feeds f_proj straight into the decoder, so the projector's output width (24) "
        "must equal SAM2's prompt width (32)."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        MultiLevelMaskDecoder(sam=sam, prompt_dim=24, prompt_embedding="none")


def test_unknown_prompt_embedding_is_refused(sam):
    message = "prompt_embedding must be 'linear' or 'none', got 'mlp'."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        MultiLevelMaskDecoder(sam=sam, prompt_dim=32, prompt_embedding="mlp")


def test_defaults_freeze_the_image_encoder_and_predict_three_masks(sam):
    """B.2 freezes SAM2's image encoder; SAM2's multimask mode (3 masks), as the official code."""
    decoder = MultiLevelMaskDecoder(sam=sam, prompt_dim=32).train()
    assert decoder.multimask_output is True
    assert not any(p.requires_grad for p in sam.vision_encoder.parameters())
    assert not sam.vision_encoder.training and sam.mask_decoder.training


def test_eval_and_train_switch_every_trained_module_and_keep_the_encoder_in_eval(sam):
    """``eval()`` puts the whole module (prompt embedding, prompt encoder, mask decoder) in inference mode;
    ``train()`` brings back all but the frozen image encoder."""
    decoder = MultiLevelMaskDecoder(sam=sam, prompt_dim=32)
    trained = [decoder.prompt_embedding, sam.prompt_encoder, sam.mask_decoder]
    decoder.eval()
    assert not any(module.training for module in decoder.modules())
    decoder.train()
    assert all(module.training for part in trained for module in part.modules())
    assert not any(module.training for module in sam.vision_encoder.modules())


def test_build_without_prompt_embedding_feeds_f_proj_unchanged():
    """``build_mask_decoder`` passes ``prompt_embedding='none'`` on (the official code's wiring): no B.5 layer,
    where the default build has one."""
    arch = compose_model_config("tiny").mask_decoder.arch
    prompts = torch.randn(2, 32)
    decoder = build_mask_decoder(arch=arch, prompt_dim=32, prompt_embedding="none")
    assert torch.equal(_sparse_prompts_received(decoder, prompts), prompts.reshape(2, 1, 1, 32))
    default = build_mask_decoder(arch=arch, prompt_dim=32)
    with torch.no_grad():
        embedded = default.prompt_embedding(prompts)  # B.5's Linear(D_m → C)
    assert isinstance(default.prompt_embedding, nn.Linear)
    assert torch.equal(_sparse_prompts_received(default, prompts), embedded.reshape(2, 1, 1, 32))


def test_building_sam2_leaves_the_configured_arch_unchanged():
    """The arch belongs to the model config (saved with checkpoints, compared with a directory's): building
    SAM2 from it must not write transformers' backbone model type into it."""
    arch = compose_model_config("tiny").mask_decoder.arch
    before = copy.deepcopy(arch)
    load_sam2(arch=arch)
    assert arch == before


def test_an_arch_without_a_backbone_section_keeps_transformers_default_backbone():
    """``arch`` holds only the ``Sam2Config`` arguments that differ from transformers' defaults; one that
    leaves out the Hiera backbone gets transformers' default one (Hiera-T's blocks per stage)."""
    config = _sam2_config(Sam2Config, {"prompt_encoder_config": {"hidden_size": 32}})
    assert config.prompt_encoder_config.hidden_size == 32
    assert config.vision_config.backbone_config.blocks_per_stage == [1, 2, 7, 2]


def test_build_defaults_are_the_papers(caplog):
    """``build_mask_decoder``'s defaults: f_proj of width D_m = 256 (supplement B.5, "the output feature
    dimension is D_m = 256") into B.5's Linear(D_m → C), the image encoder frozen (B.2), and a log line
    naming where the weights came from."""
    arch = compose_model_config("tiny").mask_decoder.arch
    with caplog.at_level(logging.INFO, logger="lavida.models.mask_decoder"):
        decoder = build_mask_decoder(arch=arch)
    assert (decoder.prompt_embedding.in_features, decoder.prompt_embedding.out_features) == (256, 32)
    assert not any(p.requires_grad for p in decoder.sam.vision_encoder.parameters())
    assert [r.getMessage() for r in caplog.records] == ["Built SAM2 (random init), image size 128"]


def test_train_image_encoder_trains_every_encoder_parameter():
    """The experiment option ``train_image_encoder=True``: the whole image encoder trains and follows
    ``train()``, while the unused point / mask prompt embeddings stay frozen (no prompt reaches them)."""
    decoder = build_mask_decoder(
        arch=compose_model_config("tiny").mask_decoder.arch, prompt_dim=32, train_image_encoder=True
    ).train()
    encoder = decoder.sam.vision_encoder
    assert all(p.requires_grad for p in encoder.parameters()) and encoder.training
    prompt_encoder = decoder.sam.prompt_encoder
    unused = [prompt_encoder.mask_embed, prompt_encoder.point_embed, prompt_encoder.not_a_point_embed]
    assert not any(p.requires_grad for module in unused for p in module.parameters())


def test_neither_weights_nor_an_architecture_is_refused():
    """Without a directory there is nothing to read the architecture from: the build asks for one of the two
    instead of building some default SAM2."""
    with pytest.raises(
        ValueError, match=r"^SAM2 needs either `pretrained` \(a local directory\) or `arch`\.$"
    ):
        build_mask_decoder()
