"""build_semantic_extractor's own steps, checked around stand-in models (no weights, no PEFT): LoRA defaults,
freezing, checkpointing, the build log, offline loading, vocabulary growth and the embedding-tie test."""

import dataclasses
import logging
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_model_config
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

from lavida.models import mllm as mllm_module
from lavida.models.mllm import LoraSettings


def test_lora_defaults_are_the_paper_s_and_the_official_code_s():
    """A config that leaves LoRA fields out gets r 8, α 16 (supplement B.5) and the official code's
    dropout 0.05 on q_proj/v_proj (docs/fidelity.md, LoRA row)."""
    assert dataclasses.astuple(LoraSettings()) == (8, 16, 0.05, ("q_proj", "v_proj"))


class _RecordingModel(nn.Module):
    """A stand-in transformers model: one parameter, and a record of activation-checkpointing requests."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.checkpointing_requests = []

    def activation_checkpointing_enable(self, **kwargs) -> None:
        self.checkpointing_requests.append(kwargs)


@pytest.fixture
def stub_build(monkeypatch):
    """``build_semantic_extractor`` around a :class:`_RecordingModel` (no weights, no PEFT): its own steps only."""
    model = _RecordingModel()
    tokenizer = SimpleNamespace(convert_tokens_to_ids={"<SEG>": 263}.__getitem__)
    processor = SimpleNamespace(tokenizer=tokenizer)
    monkeypatch.setattr(mllm_module, "load_base_mllm", lambda **_: (model, processor))
    monkeypatch.setattr(mllm_module, "_apply_lora", lambda model, **_: model)
    return model


def test_a_default_build_is_frozen_unchecked_and_logged_as_random_init(stub_build, caplog):
    """Without ``pretrained`` the log says "random init"; the base model is frozen before LoRA/<SEG>
    adapters are added, and activation checkpointing stays off unless asked (it recomputes every layer)."""
    with caplog.at_level(logging.INFO, logger="lavida.models.mllm"):
        extractor = mllm_module.build_semantic_extractor(arch={})
    assert extractor.model is stub_build and extractor.seg_token_id == 263
    assert not stub_build.weight.requires_grad
    assert stub_build.checkpointing_requests == []
    assert [r.getMessage() for r in caplog.records if r.name == "lavida.models.mllm"] == [
        "Built qwen2_vl (random init), <SEG> id 263, compression None, positions mrope"
    ]


def test_checkpointing_is_requested_non_reentrant(stub_build):
    """Checkpointing is asked for non-reentrant (PyTorch's recommended mode): the reentrant one computes no
    gradient for a segment's parameters when none of its inputs needs one, as with a frozen base model."""
    mllm_module.build_semantic_extractor(arch={}, gradient_checkpointing=True)
    assert stub_build.checkpointing_requests == [
        {"activation_checkpointing_kwargs": {"use_reentrant": False}}
    ]


class _RecordingLoader:
    """A stand-in model class whose ``from_pretrained`` records its arguments and reports a complete load."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        cls.calls.append((args, kwargs))
        return "model", {"missing_keys": [], "unexpected_keys": []}


def test_pretrained_mllm_loads_offline_with_the_loading_report(tmp_path):
    """The MLLM is read from its local folder only (``local_files_only``: no hub look-up, the machines are
    offline), in the configured dtype and attention, with the loading report that catches missing tensors."""
    _RecordingLoader.calls = []
    model = mllm_module._from_pretrained(_RecordingLoader, tmp_path, torch.bfloat16, "eager")
    assert model == "model"
    assert _RecordingLoader.calls == [
        (
            (str(tmp_path),),
            {
                "dtype": torch.bfloat16,
                "attn_implementation": "eager",
                "local_files_only": True,
                "output_loading_info": True,
            },
        )
    ]


class _Vocabulary(nn.Module):
    """A stand-in model with a ``rows × 4`` input embedding that records resize requests."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(rows, 4)
        self.resizes = []

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def resize_token_embeddings(self, *args, **kwargs) -> None:
        self.resizes.append((args, kwargs))


@pytest.mark.parametrize(
    ("tokenizer_size", "expected"),
    [(9, []), (10, []), (11, [((11,), {"mean_resizing": True})])],
    ids=["spare_rows", "exact_fit", "too_small"],
)
def test_the_embedding_grows_only_when_seg_does_not_fit(tokenizer_size, expected):
    """10 rows hold a 9- or 10-token tokenizer as they are (Qwen2-VL-7B's spare rows take <SEG>, never
    shrunk: docs/fidelity.md); an 11-token one grows the matrix, new rows at the mean of the old."""
    model = _Vocabulary(rows=10)
    mllm_module._ensure_vocabulary(model, tokenizer_size)
    assert model.resizes == expected


def _tie_probe(*, shared: bool, outer=None, text=None):
    """A stand-in model for ``_embeddings_tied``: head sharing the embedding or not, and the
    ``tie_word_embeddings`` flags of the outer and text configs (None: attribute absent)."""
    embedding = SimpleNamespace(weight=torch.zeros(3, 2))
    head = SimpleNamespace(weight=embedding.weight if shared else torch.zeros(3, 2))
    text_config = SimpleNamespace() if text is None else SimpleNamespace(tie_word_embeddings=text)
    config = SimpleNamespace(get_text_config=lambda: text_config)
    if outer is not None:
        config.tie_word_embeddings = outer
    return SimpleNamespace(
        get_input_embeddings=lambda: embedding, get_output_embeddings=lambda: head, config=config
    )


@pytest.mark.parametrize(
    ("probe", "tied"),
    [
        (_tie_probe(shared=True, outer=False, text=False), True),  # the shared matrix decides
        (_tie_probe(shared=False, outer=True, text=False), True),  # a flat hub config.json
        (_tie_probe(shared=False, outer=False, text=True), True),  # a nested text config
        (_tie_probe(shared=False, outer=False, text=False), False),  # Qwen2-VL-7B
        (_tie_probe(shared=False), False),  # no flag anywhere: not tied
    ],
    ids=["shared_weight", "outer_flag", "text_flag", "untied", "no_flags"],
)
def test_embeddings_are_tied_by_a_shared_matrix_or_either_flag(probe, tied):
    """The tie is read from the shared weight first, then from the outer or the text config's
    ``tie_word_embeddings`` (transformers 5 keeps it on the outer one); a missing flag means untied."""
    assert mllm_module._embeddings_tied(probe) is tied


_TOKEN_IDS = {
    "<|image_pad|>": 11,
    "<|video_pad|>": 12,
    "<|vision_start|>": 13,
    "<|vision_end|>": 14,
    "<|im_end|>": 15,
}


@pytest.mark.parametrize(
    ("family", "config_class", "model_type"),
    [("qwen2_vl", Qwen2VLConfig, "qwen2_vl"), ("qwen2_5_vl", Qwen2_5_VLConfig, "qwen2_5_vl")],
)
def test_an_arch_config_is_the_family_s_with_the_tokenizer_s_ids(family, config_class, model_type):
    """The config class follows the family (its ``model_type`` goes into a saved checkpoint's config.json,
    which decides the class it reloads as), and every special-token id is the tokenizer's."""
    tokenizer = SimpleNamespace(convert_tokens_to_ids=_TOKEN_IDS.__getitem__, pad_token_id=16)
    config = mllm_module._config_from_arch(family, {"text_config": {"hidden_size": 64}}, tokenizer)
    assert type(config) is config_class and config.model_type == model_type
    ids = (
        config.image_token_id,
        config.video_token_id,
        config.vision_start_token_id,
        config.vision_end_token_id,
    )
    assert ids == (11, 12, 13, 14)
    text = config.get_text_config()
    assert (text.hidden_size, text.eos_token_id, text.pad_token_id) == (64, 15, 16)


def test_neither_weights_nor_an_architecture_is_refused():
    with pytest.raises(
        ValueError, match=r"^The MLLM needs either `pretrained` \(a local directory\) or `arch`\.$"
    ):
        mllm_module.load_base_mllm()


def test_an_unknown_family_is_refused_by_name():
    """The config check refuses a misspelt family first; load_base_mllm refuses one given directly too."""
    with pytest.raises(ValueError) as error:
        mllm_module.load_base_mllm(family="qwen3_vl", arch=compose_model_config("tiny").mllm.arch)
    assert str(error.value) == "Unknown MLLM family 'qwen3_vl'; expected 'qwen2_vl' or 'qwen2_5_vl'."


def test_a_random_model_too_small_for_the_tokenizer_grows_to_it():
    """An arch whose vocabulary lacks room for <SEG> (200 rows for the 264-token tiny tokenizer) is grown as
    it is built, input embedding and LM head alike."""
    arch = compose_model_config("tiny").mllm.arch
    small = {**arch, "text_config": {**arch["text_config"], "vocab_size": 200}}
    model, processor = mllm_module.load_base_mllm(arch=small)
    assert len(processor.tokenizer) == 264
    assert model.get_input_embeddings().weight.shape[0] == 264
    assert model.get_output_embeddings().weight.shape[0] == 264


def test_a_random_model_s_processor_takes_the_vision_tower_s_patching():
    """Without a folder the processor is built, and must patch frames as the arch's vision tower does (here
    7-pixel patches merged 3×3 over 1 frame, not Qwen2-VL's 14, 2×2 and 2)."""
    arch = compose_model_config("tiny").mllm.arch
    vision = {**arch["vision_config"], "patch_size": 7, "spatial_merge_size": 3, "temporal_patch_size": 1}
    _, processor = mllm_module.load_base_mllm(arch={**arch, "vision_config": vision})
    for part in (processor.image_processor, processor.video_processor):
        assert (part.patch_size, part.merge_size, part.temporal_patch_size) == (7, 3, 1)


def test_a_random_model_is_built_in_the_dtype_and_attention_asked_for_and_the_default_dtype_is_restored():
    arch = compose_model_config("tiny").mllm.arch
    extractor = mllm_module.build_semantic_extractor(
        arch=arch, lora=None, dtype="bfloat16", attn_implementation="eager"
    )
    # PEFT keeps the trainable <SEG>-row deltas it adds in float32; every weight of the model is bf16.
    weights = {n: p.dtype for n, p in extractor.hf_model.named_parameters() if "trainable_tokens" not in n}
    assert weights and set(weights.values()) == {torch.bfloat16}
    assert extractor.hf_model.config._attn_implementation == "eager"
    assert torch.get_default_dtype() == torch.float32


def test_lora_settings_other_than_peft_s_defaults_reach_every_adapter():
    """r 4, α 12, dropout 0.1: none is PEFT's default (r 8, α 8, dropout 0), so each must be passed on."""
    lora = {"r": 4, "alpha": 12, "dropout": 0.1}
    extractor = mllm_module.build_semantic_extractor(arch=compose_model_config("tiny").mllm.arch, lora=lora)
    adapters = [module for module in extractor.model.modules() if isinstance(module, LoraLayer)]
    assert adapters
    for module in adapters:
        assert (module.r["default"], module.lora_alpha["default"]) == (4, 12)
        assert module.lora_dropout["default"].p == pytest.approx(0.1)
        assert module.lora_A["default"].weight.shape[0] == 4


def test_the_position_mode_reaches_the_extractor(stub_build):
    assert mllm_module.build_semantic_extractor(arch={}, positions="sequential").positions == "sequential"
