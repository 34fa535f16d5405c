"""The semantic extractor: LoRA placement, <SEG> gradient, M-RoPE ids of kept tokens, equivalence with HF."""

import pytest
import torch
from conftest import make_samples, tiny_processor_for

from lavida.models.compression import TokenCompressor


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
    with torch.no_grad():
        ours = model.mllm(batch)
        reference = model.mllm.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            mm_token_type_ids=batch.mm_token_type_ids,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            pixel_values_videos=batch.pixel_values_videos,
            video_grid_thw=batch.video_grid_thw,
            labels=batch.labels,
            output_hidden_states=True,
        )
    seg = batch.input_ids == model.mllm.seg_token_id
    torch.testing.assert_close(ours.seg_features, reference.hidden_states[-1][seg], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.lm_loss, reference.loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.kept_tokens, ours.visual_tokens)


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
