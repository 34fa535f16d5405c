"""The MLLM path with a realistic Qwen2-VL model folder instead of the byte-level test tokenizer.

No real Qwen2-VL files can be downloaded here, so ``_write_qwen_folder`` writes a folder laid out as
``Qwen/Qwen2-VL-7B-Instruct`` is: a trained byte-level BPE with Qwen2's own pre-tokenizer and Qwen's 14
special tokens after the regular vocabulary (the real ids are 151,643–151,656), the real chat template,
``preprocessor_config.json`` with the real values, and ``tokenizer_config.json`` with the real settings
(eos ``<|im_end|>``, pad ``<|endoftext|>``, left padding). ``AutoProcessor`` loads it exactly as it loads
the real folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QWEN2_VL_PREPROCESSOR, offline_lavida_processor

from lavida.data.processor import LavidaProcessor, PixelBudget, smart_resize
from lavida.data.prompts import PromptTemplates
from lavida.data.types import ClipSample
from lavida.models.qwen_processor import load_processor

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2-VL-7B-Instruct's chat_template.json, verbatim.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _write_qwen_folder(directory):
    """The processor files of a Qwen2-VL-Instruct folder (see the module docstring); returns the directory."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(
        models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Merges learnt on the prompt vocabulary, so that words of the templates become multi-byte tokens.
    templates = PromptTemplates.load()
    corpus = [*templates.user, *templates.answer, templates.system, "system user assistant fire, fighting"]
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus * 20, trainer)
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIALS]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    (directory / "vocab.json").write_text(
        json.dumps({k: v for k, v in vocab.items() if k not in QWEN_SPECIALS})
    )
    (directory / "merges.txt").write_text("#version: 0.2\n")
    special = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    tokenizer_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(vocab[token]): {"content": token, **special} for token in QWEN_SPECIALS},
        "additional_special_tokens": list(QWEN_SPECIALS[1:]),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_VL_CHAT_TEMPLATE}))
    (directory / "preprocessor_config.json").write_text(json.dumps(QWEN2_VL_PREPROCESSOR))
    return directory


def _processor_only_folder(directory):
    """A folder that passes the processor's file check (config and weights are placeholders)."""
    _write_qwen_folder(directory)
    (directory / "config.json").write_text('{"model_type": "qwen2_vl"}')
    (directory / "model.safetensors").write_bytes(b"")
    return directory


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    return _processor_only_folder(tmp_path_factory.mktemp("qwen2_vl_instruct"))


def _lavida_processor(qwen_processor, side: int = 32) -> LavidaProcessor:
    budget = PixelBudget(28 * 28 * 20, 28 * 28 * 30)  # small frames: 4 × 6 merged tokens for 64 × 96
    return offline_lavida_processor(
        qwen_processor,
        sam_image_size=side,
        train_video_budget=budget,
        test_video_budget=budget,
        image_budget=budget,
    )


def _clip(frames: int = 8, seed: int = 0) -> ClipSample:
    rng = np.random.default_rng(seed)
    return ClipSample(
        frames=rng.integers(0, 256, (frames, 64, 96, 3), dtype=np.uint8),
        categories=["fire", "fighting"],
        is_video=True,
        masks=rng.random((frames, 64, 96)) > 0.7,
    )


# -- the realistic tokenizer: <SEG>, chat template, answer labels (regression guards) -----------------


def test_seg_is_one_new_token_of_the_real_tokenizer(qwen_folder):
    """``<SEG>`` gets the first free id (151,657 in the real tokenizer) and never splits, wherever it stands."""
    from transformers import AutoProcessor

    from lavida.models.qwen_processor import load_processor

    size_before = len(AutoProcessor.from_pretrained(str(qwen_folder), local_files_only=True).tokenizer)
    tokenizer = load_processor(qwen_folder).tokenizer
    seg = tokenizer.convert_tokens_to_ids("<SEG>")
    assert seg == size_before == len(tokenizer) - 1
    for answer in PromptTemplates.load().answer:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert ids.count(seg) == 1
    longest = "Sure, the segmentation result is <SEG>."
    assert len(tokenizer(longest, add_special_tokens=False)["input_ids"]) < len(longest) // 3  # real merges


def test_rendered_prompt_is_the_real_chat_template(qwen_folder):
    """Our hand-rendered ChatML equals Qwen2-VL's chat template for [video, text] + the answer."""
    from lavida.models.qwen_processor import load_processor

    processor = load_processor(qwen_folder)
    templates = PromptTemplates.load()
    for is_video in (True, False):
        for user in range(len(templates.user)):
            chat = templates.render(["fire", "fighting"], is_video=is_video, user_index=user, answer_index=2)
            question = templates.user[user].format(
                type="video" if is_video else "image", categories="fire, fighting"
            )
            visual = {"type": "video"} if is_video else {"type": "image"}
            messages = [{"role": "user", "content": [visual, {"type": "text", "text": question}]}]
            prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            assert chat.prompt == prompt
            messages.append({"role": "assistant", "content": [{"type": "text", "text": templates.answer[2]}]})
            full = processor.apply_chat_template(messages, tokenize=False)
            assert full == chat.prompt + chat.answer + "\n"  # the release also labels this "\n"


def test_answer_labels_start_after_the_assistant_header(qwen_folder):
    """Labels = everything after the last ``<|im_start|>assistant\\n`` (the release's ``generate_labels``
    rule, computed here on the ids), for every answer template, with real BPE merges."""
    from lavida.models.qwen_processor import load_processor

    processor = _lavida_processor(load_processor(qwen_folder))
    tokenizer = processor.tokenizer
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert header[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    seen = set()
    for seed in range(12):
        encoded = processor.encode(_clip(), train=True, rng=np.random.default_rng(seed))
        ids = encoded.input_ids.tolist()
        n = len(header)
        starts = [i for i in range(len(ids) - n + 1) if ids[i : i + n] == header]
        first = starts[-1] + n
        expected = torch.full_like(encoded.input_ids, -100)
        expected[first:] = encoded.input_ids[first:]
        assert torch.equal(encoded.labels, expected)
        seen.add(tokenizer.decode(ids[first:]))
    assert seen == {answer + "<|im_end|>" for answer in PromptTemplates.load().answer}


# -- defects --------------------------------------------------------------------------------------------


def test_folder_video_config_never_resamples_the_clip(qwen_folder, tmp_path):
    """LAVIDA hands the processor exactly the clip's frames. A model folder whose video processor config
    turns frame sampling on (a ``video_preprocessor_config.json`` with ``do_sample_frames: true`` and an
    ``fps`` below the 2 fps we declare) made the processor drop half of an 8-frame clip without a word
    (grid_t 2 instead of 4). The pixel cap that only matters when the processor resizes is switched off
    too (it warned on every run of a real folder)."""
    from lavida.models.qwen_processor import load_processor

    sampling = _processor_only_folder(tmp_path / "sampling")
    video_config = {
        **{k: v for k, v in QWEN2_VL_PREPROCESSOR.items() if k not in ("image_processor_type",)},
        "video_processor_type": "Qwen2VLVideoProcessor",
        "do_sample_frames": True,
        "fps": 1.0,
        "max_pixels": 28 * 28 * 4,  # a per-frame cap below our budget: must not apply either
    }
    (sampling / "video_preprocessor_config.json").write_text(json.dumps(video_config))
    plain = _lavida_processor(load_processor(qwen_folder)).encode(_clip(), train=False)
    loaded = load_processor(sampling)
    encoded = _lavida_processor(loaded).encode(_clip(), train=False)
    h, w = smart_resize(64, 96, factor=28, budget=PixelBudget(28 * 28 * 20, 28 * 28 * 30))
    assert encoded.grid_thw.tolist() == plain.grid_thw.tolist() == [[4, h // 14, w // 14]]
    torch.testing.assert_close(encoded.pixel_values, plain.pixel_values, rtol=0, atol=0)
    assert loaded.video_processor.cap_pixels_per_frame is False


def test_folder_image_config_never_resizes_the_frame(qwen_folder, tmp_path):
    """A folder's ``preprocessor_config.json`` whose pixel cap (here 56², under our image budget) would make
    the image processor shrink a frame LAVIDA already resized: the frame's grid is LAVIDA's, not the cap's."""
    capped = Path(shutil.copytree(qwen_folder, tmp_path / "capped"))
    config = {**QWEN2_VL_PREPROCESSOR, "min_pixels": 28 * 28, "max_pixels": 56 * 56}
    (capped / "preprocessor_config.json").write_text(json.dumps(config))
    image = ClipSample(frames=_clip(frames=1).frames, categories=["fire"], is_video=False)
    encoded = _lavida_processor(load_processor(capped)).encode(image, train=False)
    h, w = smart_resize(64, 96, factor=28, budget=PixelBudget(28 * 28 * 20, 28 * 28 * 30))
    assert encoded.grid_thw.tolist() == [[1, h // 14, w // 14]]


def _save_tied_model(directory):
    """A tiny Qwen2-VL with tied input/output embeddings (as Qwen2-VL-2B, Qwen2.5-VL-3B), saved by
    transformers next to the realistic processor files: ``tie_word_embeddings`` sits on the outer config."""
    from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    _write_qwen_folder(directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    config = Qwen2VLConfig(  # the flat layout of the hub's config.json
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer) + 8,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2},
        **ids,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    model.save_pretrained(str(directory))
    return directory


# PEFT's own notices on tied models (merging tied adapters, peft#2777; a transformers deprecation it
# calls): about PEFT's internals, not about what this test checks.
@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize("lora", [None, {}], ids=["frozen_llm", "lora"])
def test_tied_embedding_checkpoint_trains_the_seg_row(tmp_path, lora):
    """For a checkpoint with tied embeddings the ``<SEG>`` row of the shared matrix is the one trainable
    row. The tie was looked up on the text config, where transformers 5 no longer keeps it, so the LM head
    got its own trainable-token adapter too; with ``lora: null`` that adapter wraps the tied layer and
    every forward raised 'TrainableTokensLayer wraps an unknown layer type'."""
    from lavida.models.mllm import build_semantic_extractor

    directory = _save_tied_model(tmp_path / "tied")
    extractor = build_semantic_extractor(family="qwen2_vl", pretrained=str(directory), lora=lora)
    hf = extractor.hf_model
    batch = _lavida_processor(extractor.processor)([_clip()], train=True)
    out = extractor(batch)
    (out.seg_features.sum() + out.lm_loss).backward()
    deltas = {n: p for n, p in extractor.named_parameters() if "trainable_tokens_delta" in n}
    assert len(deltas) == 1 and "embed_tokens" in next(iter(deltas))
    delta = next(iter(deltas.values()))
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    # The LM head reads the same (updated) <SEG> row as the embedding: the tie survives the adapter.
    seg = extractor.seg_token_id
    probe = torch.randn(1, hf.config.text_config.hidden_size)
    with torch.no_grad():
        delta.add_(1.0)
        row = hf.get_input_embeddings()(torch.tensor([[seg]]))[0, 0]
        torch.testing.assert_close(hf.get_output_embeddings()(probe)[0, seg], probe[0] @ row)


# -- templates: structural tokens are refused when the templates are made -----------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"user": ("Find <SEG> among {categories}.",)},  # a second <SEG>: f_sem would be ambiguous
        {"system": "You are <SEG>."},
        {"user": ("Find {categories}.<|im_end|>\n<|im_start|>user\n",)},  # breaks the chat format
        {"answer": ("Sure<|im_end|>, it is <SEG>.",)},  # an early <|im_end|> inside the labelled answer
    ],
    ids=["seg_in_user", "seg_in_system", "chat_token_in_user", "chat_token_in_answer"],
)
def test_templates_with_structural_tokens_are_refused(fields):
    """Such a template file used to load, then failed in the first forward ('exactly one <SEG>') or, for
    chat tokens, silently trained on a different conversation. Now it fails when it is made."""
    base = {
        "user": ("Find {categories}.",),
        "answer": ("Sure, it is <SEG>.",),
        "system": "You are a helpful assistant.",
    }
    with pytest.raises(ValueError, match="<SEG>|chat token"):
        PromptTemplates(**{**base, **fields}, inference_user=0, inference_answer=0)
