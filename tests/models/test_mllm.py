"""The semantic extractor: LoRA placement, <SEG> gradient, M-RoPE ids of kept tokens, equivalence with HF."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_model_config, make_samples, tiny_processor_for
from torch import nn

from lavida.data.processor import LavidaProcessor
from lavida.models.compression import TokenCompressor
from lavida.models.config import InputConfig
from lavida.models.lavida import build_lavida
from lavida.models.mllm import SemanticExtractor, _answer_cross_entropy, _pack


@pytest.fixture
def batch_and_model(tiny_model):
    processor = tiny_processor_for(tiny_model)
    video, image = make_samples()
    return processor([video, image], train=True), tiny_model


def test_lora_lands_only_on_language_model_q_v(tiny_model):
    """r=8 adapters on q_proj and v_proj of every LLM layer, nowhere else in the whole LAVIDA model."""
    from peft.tuners.lora import LoraLayer

    adapted = [name for name, module in tiny_model.named_modules() if isinstance(module, LoraLayer)]
    layers = tiny_model.mllm.hf_model.config.text_config.num_hidden_layers
    assert len(adapted) == 2 * layers
    assert all(".language_model.layers." in name for name in adapted)
    assert sorted(name.rsplit(".", 1)[-1] for name in adapted) == sorted(["q_proj", "v_proj"] * layers)
    for module in tiny_model.modules():
        if isinstance(module, LoraLayer):
            assert module.r["default"] == 8 and module.lora_alpha["default"] == 16
            assert module.lora_dropout["default"].p == pytest.approx(0.05)


def test_mllm_trainable_set_is_lora_plus_seg_rows(tiny_model):
    hf = tiny_model.mllm.hf_model
    text = hf.config.text_config
    hidden, layers = text.hidden_size, text.num_hidden_layers
    kv_dim = text.num_key_value_heads * (hidden // text.num_attention_heads)
    # LoRA: A (r × in) and B (out × r) for q (hidden→hidden) and v (hidden→kv_dim), plus two <SEG> rows.
    lora = layers * (8 * hidden + hidden * 8 + 8 * hidden + kv_dim * 8)
    expected = lora + 2 * hidden
    trainable = {n: p.numel() for n, p in tiny_model.mllm.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == expected
    assert not any("visual" in name for name in trainable)


def test_seg_row_receives_gradient(batch_and_model):
    """The official code rebuilt embeddings under no_grad, silently freezing <SEG>'s row; ours must learn."""
    batch, model = batch_and_model
    out = model.mllm(batch)
    (out.seg_features.sum() + out.lm_loss).backward()
    deltas = {n: p for n, p in model.mllm.named_parameters() if "trainable_tokens_delta" in n}
    assert len(deltas) == 2  # embed_tokens and lm_head rows
    for name, delta in deltas.items():
        assert delta.grad is not None and delta.grad.abs().sum() > 0, name


def test_without_lora_only_the_seg_rows_train(tiny_pretrained, tmp_path):
    """The frozen-LLM ablation (``lora: null``) still trains <SEG>'s rows of the embedding and the LM head,
    and its checkpoint round-trips."""
    import dataclasses

    from lavida.models.checkpoint import load_checkpoint, save_checkpoint
    from lavida.models.lavida import build_lavida

    config = dataclasses.replace(tiny_pretrained, mllm=dataclasses.replace(tiny_pretrained.mllm, lora=None))
    torch.manual_seed(0)
    model = build_lavida(config)
    hidden = model.mllm.hf_model.config.text_config.hidden_size
    trainable = {n: p for n, p in model.mllm.named_parameters() if p.requires_grad}
    assert sorted(n.split(".")[-3] for n in trainable) == ["embed_tokens", "lm_head"]
    assert sum(p.numel() for p in trainable.values()) == 2 * hidden
    video, image = make_samples()
    batch = tiny_processor_for(model)([video, image], train=True)
    out = model.mllm(batch)
    (out.seg_features.sum() + out.lm_loss).backward()
    for name, delta in trainable.items():
        assert delta.grad is not None and delta.grad.abs().sum() > 0, name
        with torch.no_grad():
            delta.add_(0.1)
    model.eval()
    with torch.no_grad():
        before = model(batch).seg_features
    save_checkpoint(model, config, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).seg_features, before, rtol=0, atol=0)


def test_uncompressed_path_equals_transformers_forward(batch_and_model):
    """With compression off, f_sem and L_txt must equal HF's own forward (its M-RoPE, its shifted loss)."""
    batch, model = batch_and_model
    model.mllm.compressor = None
    model.eval()
    ours = _check_equals_transformers_forward(
        model,
        batch,
        pixel_values=batch.pixel_values,
        image_grid_thw=batch.image_grid_thw,
        pixel_values_videos=batch.pixel_values_videos,
        video_grid_thw=batch.video_grid_thw,
    )
    assert torch.equal(ours.kept_tokens, ours.visual_tokens)


def _check_equals_transformers_forward(model, batch, **visual):
    """Assert that the semantic extractor's f_sem (the <SEG> rows of the last hidden state) and L_txt equal
    transformers' own forward on the same batch, given the visual inputs ``visual``; return ours."""
    with torch.no_grad():
        ours = model.mllm(batch)
        reference = model.mllm.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            mm_token_type_ids=batch.mm_token_type_ids,
            labels=batch.labels,
            output_hidden_states=True,
            **visual,
        )
    seg = batch.input_ids == model.mllm.seg_token_id
    torch.testing.assert_close(ours.seg_features, reference.hidden_states[-1][seg], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.lm_loss, reference.loss, rtol=1e-5, atol=1e-6)
    return ours


def _capture(model):
    """Record the compressor's kept indices and the position ids the language model receives."""
    record = {"keep": [], "positions": None, "embeds": None}
    compressor = model.mllm.compressor
    original = compressor.forward

    def compress(tokens):
        result = original(tokens)
        record["keep"].append(result.keep.clone())
        return result

    compressor.forward = compress

    def hook(module, args, kwargs):
        record["positions"] = kwargs["position_ids"].clone()
        record["mask"] = kwargs["attention_mask"].clone()

    model.mllm.hf_model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    return record


def test_kept_visual_tokens_keep_their_mrope_ids(batch_and_model):
    batch, model = batch_and_model
    record = _capture(model)
    with torch.no_grad():
        out = model.mllm(batch)
    full, _ = model.mllm.hf_model.model.get_rope_index(
        input_ids=batch.input_ids,
        mm_token_type_ids=batch.mm_token_type_ids,
        image_grid_thw=batch.image_grid_thw,
        video_grid_thw=batch.video_grid_thw,
        attention_mask=batch.attention_mask,
    )
    cfg = model.mllm.hf_model.config
    visual = (batch.input_ids == cfg.image_token_id) | (batch.input_ids == cfg.video_token_id)
    for b in range(batch.batch_size):
        slots = visual[b].nonzero(as_tuple=True)[0]
        kept = slots[record["keep"][b]]
        text = (batch.attention_mask[b].bool() & ~visual[b]).nonzero(as_tuple=True)[0]
        expected_positions = torch.sort(torch.cat([text, kept])).values  # order of the shortened sequence
        n = expected_positions.numel()
        assert int(record["mask"][b].sum()) == n
        assert torch.equal(record["positions"][:, b, :n], full[:, b, expected_positions])
        assert int(out.kept_tokens[b]) == max(1, int(slots.numel() * 0.2))
    # Compression really shortened the sequence, and some visual tokens have distinct h/w ids.
    assert int(out.kept_tokens.sum()) < int(out.visual_tokens.sum())


def test_sequential_positions_option(batch_and_model):
    batch, model = batch_and_model
    model.mllm.positions = "sequential"
    record = _capture(model)
    with torch.no_grad():
        model.mllm(batch)
    for b in range(batch.batch_size):
        n = int(record["mask"][b].sum())
        expected = torch.arange(n).expand(3, n)
        assert torch.equal(record["positions"][:, b, :n], expected)


def test_compression_ratio_one_changes_nothing(batch_and_model):
    batch, model = batch_and_model
    model.eval()
    with torch.no_grad():
        model.mllm.compressor = None
        plain = model.mllm(batch).seg_features
        model.mllm.compressor = TokenCompressor(ratio=1.0)
        identity = model.mllm(batch).seg_features
    torch.testing.assert_close(plain, identity, rtol=0, atol=0)


def test_missing_or_repeated_seg_token_is_an_error(batch_and_model):
    batch, model = batch_and_model
    seg = model.mllm.seg_token_id
    batch.input_ids[batch.input_ids == seg] = model.mllm.processor.tokenizer.pad_token_id + 1
    with pytest.raises(ValueError, match="exactly one <SEG>"):
        model.mllm(batch)


def test_gradient_checkpointing_is_switched_on_through_the_current_api(tiny_pretrained, recwarn):
    """``mllm.gradient_checkpointing`` checkpoints every LLM layer, through transformers' activation
    checkpointing (``gradient_checkpointing_enable`` is deprecated in transformers 5 and warns)."""
    import dataclasses

    from lavida.models.lavida import build_lavida

    checkpointed = dataclasses.replace(tiny_pretrained.mllm, gradient_checkpointing=True)
    model = build_lavida(dataclasses.replace(tiny_pretrained, mllm=checkpointed))
    base = model.mllm.hf_model  # the transformers model under the LoRA adapters
    assert base.is_activation_checkpointing
    layers = base.model.language_model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    assert not [w for w in recwarn if "gradient_checkpointing_enable" in str(w.message)]
    plain = build_lavida(tiny_pretrained).mllm.hf_model
    assert not plain.is_activation_checkpointing


def test_generate_without_compression_is_transformers_greedy_decoding(tiny_model):
    """generate() decodes with its own KV cache, continuing the 1-D position after the prompt's largest
    M-RoPE id; with compression off it must pick transformers' own greedy tokens (Qwen2-VL's rope deltas)."""
    video, _ = make_samples()
    batch = tiny_processor_for(tiny_model).question_batch(video.frames, "What happens?")
    mllm = tiny_model.mllm
    mllm.compressor = None
    tiny_model.eval()
    # The tokens of a random tiny model hardly depend on the positions; the logits of each step do.
    logits = []
    hook = mllm.hf_model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: logits.append(output.clone())  # (1, V)
    )
    try:
        ours = mllm.generate(batch, max_new_tokens=6)
    finally:
        hook.remove()
    with torch.no_grad():
        reference = mllm.hf_model.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            mm_token_type_ids=batch.mm_token_type_ids,
            pixel_values_videos=batch.pixel_values_videos,
            video_grid_thw=batch.video_grid_thw,
            max_new_tokens=6,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    assert ours == reference.sequences[0, batch.input_ids.shape[1] :].tolist()
    assert len(logits) == len(reference.logits) == 6
    for step, (mine, theirs) in enumerate(zip(logits, reference.logits, strict=True)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=f"step {step}")


def test_generate_stops_after_64_tokens_without_an_end_token(tiny_model, monkeypatch):
    """The default cap: a model whose end token never comes returns exactly 64 tokens."""
    video, _ = make_samples()
    batch = tiny_processor_for(tiny_model).question_batch(video.frames, "What happens?")
    tiny_model.eval()
    monkeypatch.setattr(tiny_model.mllm.hf_model.config.text_config, "eos_token_id", [-1])
    assert len(tiny_model.mllm.generate(batch)) == 64


def test_generate_takes_one_sample(batch_and_model):
    batch, model = batch_and_model
    with pytest.raises(ValueError) as error:
        model.mllm.generate(batch)
    assert str(error.value) == "generate() takes one sample, got a batch of 2."


def test_an_unknown_position_mode_is_refused():
    with pytest.raises(ValueError) as error:
        SemanticExtractor(model=nn.Identity(), seg_token_id=7, compressor=None, positions="rope")
    assert str(error.value) == "positions must be 'mrope' or 'sequential', got 'rope'."


def test_seg_features_are_the_rows_at_seg_and_bad_counts_are_named():
    extractor = SemanticExtractor(model=nn.Identity(), seg_token_id=7, compressor=None)
    hidden = torch.arange(12.0).reshape(2, 3, 2)
    # <SEG> (7) at position 1 of sample 0 and position 2 of sample 1: rows hidden[0, 1] and hidden[1, 2].
    features = extractor._seg_features(hidden, torch.tensor([[1, 7, 2], [3, 4, 7]]))
    torch.testing.assert_close(features, torch.tensor([[2.0, 3.0], [10.0, 11.0]]), rtol=0, atol=0)
    with pytest.raises(ValueError) as error:
        extractor._seg_features(hidden, torch.tensor([[1, 7, 2], [7, 7, 1]]))
    assert str(error.value) == (
        "Every sample needs exactly one <SEG> token in its answer; (sample, count) = [(1, 2)]. "
        "Build prompts with lavida.data.prompts, which strips '<SEG>' from category names."
    )


def test_pack_moves_the_kept_positions_to_the_front_of_each_row():
    """Hand-worked: row 0 keeps positions 0, 2, 3 and row 1 position 1, so L' = 3; row 1 is right-padded
    with id 0, attention 0, label -100 and position ids 0."""
    keep = torch.tensor([[True, False, True, True], [False, True, False, False]])
    embeds = torch.arange(16.0).reshape(2, 4, 2)
    input_ids = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, -100, -100]])
    position_ids = torch.arange(24).reshape(3, 2, 4) + 100
    packed = _pack(keep, embeds=embeds, input_ids=input_ids, labels=labels, position_ids=position_ids)
    expected_embeds = torch.tensor(
        [[[0.0, 1.0], [4.0, 5.0], [6.0, 7.0]], [[10.0, 11.0], [0.0, 0.0], [0.0, 0.0]]]
    )
    torch.testing.assert_close(packed.embeds, expected_embeds, rtol=0, atol=0)
    assert packed.input_ids.tolist() == [[10, 12, 13], [21, 0, 0]]
    assert packed.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert packed.labels.tolist() == [[-100, 5, 6], [7, -100, -100]]
    # position_ids[k, b, t] = 100 + 8k + 4b + t.
    assert packed.position_ids.tolist() == [
        [[100, 102, 103], [105, 0, 0]],
        [[108, 110, 111], [113, 0, 0]],
        [[116, 118, 119], [121, 0, 0]],
    ]
    assert (
        _pack(keep, embeds=embeds, input_ids=input_ids, labels=None, position_ids=position_ids).labels is None
    )


def test_answer_cross_entropy_is_the_shifted_loss_over_supervised_tokens():
    """The state at t predicts label t + 1; the reference is HF's rule done the slow way: the LM head on
    every position, shift by one, cross-entropy with ignore_index -100 (mean over supervised tokens)."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 4, 3)
    head = nn.Linear(3, 5, bias=False)
    labels = torch.tensor([[-100, -100, 4, 1], [-100, 2, -100, -100]])
    logits = head(hidden)[:, :-1]
    expected = F.cross_entropy(logits.reshape(-1, 5), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(_answer_cross_entropy(hidden, labels, head), expected)
    # One supervised token (label 3 at t = 2, predicted by the state at t = 1 of sample 0).
    one = torch.full((2, 4), -100)
    one[0, 2] = 3
    torch.testing.assert_close(
        _answer_cross_entropy(hidden, one, head), F.cross_entropy(head(hidden[0, 1])[None], torch.tensor([3]))
    )
    # Without a supervised token the loss is 0, and still part of the graph (a backward does not fail).
    hidden.requires_grad_(True)
    empty = _answer_cross_entropy(hidden, torch.full((2, 4), -100), head)
    assert empty.item() == 0.0 and empty.requires_grad


def test_a_one_token_image_keeps_its_visual_token_under_compression(tiny_model):
    """A 28 × 28 image is one 2 × 2 group of 14-pixel patches, one visual token after the merger; any ratio
    keeps max(1, ·) = 1 token (§3.4), so the language model must receive it."""
    _, image = make_samples()
    processor = LavidaProcessor.for_model(tiny_model, InputConfig(image_budget=(784, 784)))
    batch = processor([image], train=True)
    record = _capture(tiny_model)
    with torch.no_grad():
        out = tiny_model.mllm(batch)
    assert out.visual_tokens.tolist() == out.kept_tokens.tolist() == [1]
    # Every token of the prompt reaches the language model.
    assert int(record["mask"].sum()) == int(batch.attention_mask.sum())


def test_qwen2_5_vl_uncompressed_path_equals_transformers_forward():
    """Qwen2.5-VL's temporal M-RoPE ids read the seconds per frame group (second_per_grid_ts): with
    compression off, f_sem and L_txt equal transformers' own forward given the same seconds. Two clips
    (no image) in one batch: each gets its own visual tokens. The seconds are set apart from Qwen2.5-VL's
    default of 1 s, so that ignoring them would change the ids."""
    torch.manual_seed(0)
    model = build_lavida(compose_model_config("tiny", ["model/mllm=tiny_qwen2_5"])).eval()
    model.mllm.compressor = None
    (first, _), (second, _) = make_samples(0), make_samples(1)
    batch = tiny_processor_for(model)([first, second], train=True)
    assert batch.second_per_grid_ts.tolist() == [1.0, 1.0]  # what the default would give as well
    batch = dataclasses.replace(batch, second_per_grid_ts=torch.tensor([0.5, 3.0]))
    _check_equals_transformers_forward(
        model,
        batch,
        pixel_values_videos=batch.pixel_values_videos,
        video_grid_thw=batch.video_grid_thw,
        second_per_grid_ts=batch.second_per_grid_ts,
    )


def test_the_sizes_are_the_language_model_s(tiny_model):
    """lavida/configs/model/mllm/tiny.yaml: hidden_size 64, vocab_size 272 (the rows of the LM head)."""
    mllm = tiny_model.mllm
    assert (mllm.hidden_size, mllm.vocab_size) == (64, 272)
    assert mllm.hf_model.get_output_embeddings().weight.shape == (272, 64)


def test_a_batch_without_pixels_gets_an_empty_visual_canvas(tiny_model):
    """Without pixels and placeholders (a text-only batch) the visual canvas is all zeros, so the text
    embeddings pass through unchanged; placeholders without pixels are a processor/batch mismatch."""
    mllm = tiny_model.mllm
    no_pixels = SimpleNamespace(
        pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None
    )
    like = torch.ones(1, 3, 64)
    canvas = mllm._visual_tokens(no_pixels, torch.tensor([[1, 2, 3]]), like)
    torch.testing.assert_close(canvas, torch.zeros(1, 3, 64), rtol=0, atol=0)
    video_pad = mllm.hf_model.config.video_token_id
    with pytest.raises(ValueError) as error:
        mllm._visual_tokens(no_pixels, torch.tensor([[1, video_pad, video_pad]]), like)
    assert str(error.value) == (
        f"The batch has 2 placeholder tokens (id {video_pad}) but no pixels for them; the processor and the "
        "batch disagree."
    )


def test_a_grid_that_disagrees_with_the_placeholders_is_named():
    """A vision tower that returns more tokens than the batch has placeholders is refused with both counts
    (tokens, not the feature width) and the placeholder id, so a processor/batch mismatch is diagnosable."""
    # A stand-in tower: one image whose 3 tokens of width 4 meet only 2 placeholders (id 5) in the text.
    tower = SimpleNamespace(
        get_image_features=lambda pixels, grids: SimpleNamespace(pooler_output=[torch.zeros(3, 4)])
    )
    hf = SimpleNamespace(model=tower, config=SimpleNamespace(image_token_id=5, video_token_id=6))
    extractor = SemanticExtractor(model=hf, seg_token_id=7, compressor=None)
    batch = SimpleNamespace(
        pixel_values=torch.zeros(12, 8),
        image_grid_thw=torch.tensor([[1, 2, 6]]),
        pixel_values_videos=None,
        video_grid_thw=None,
    )
    with pytest.raises(ValueError) as error:
        extractor._visual_tokens(batch, torch.tensor([[1, 5, 5, 2]]), torch.zeros(1, 4, 4))
    assert str(error.value) == (
        "The vision tower produced 3 tokens for 2 placeholders (id 5); check the grid_thw of the batch."
    )
