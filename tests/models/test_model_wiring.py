"""The model wiring (§3.4-3.8): batching invariance, what compression keeps, trainable set.

Every expectation is computed independently of the code under test: a sample run alone is the
reference for the same sample in a mixed batch, and the kept sequence is rebuilt from the
compressor's own indices and the processor's token ids.
"""

import numpy as np
import pytest
import torch
from conftest import make_samples, tiny_processor_for

from lavida.data.types import ClipSample


def _samples():
    """Three samples that differ in everything a batch pads: frame count (8, 4, 1), frame size,
    number of categories (3, 5, 1) and hence prompt length and visual-token count."""
    video, image = make_samples()
    rng = np.random.default_rng(7)
    short = ClipSample(
        frames=rng.integers(0, 256, (4, 72, 56, 3), dtype=np.uint8),
        categories=["smoke", "a fallen bicycle", "fight", "dog", "a person climbing a fence"],
        is_video=True,
        masks=rng.random((4, 72, 56)) > 0.8,
    )
    return [image, video, short]  # the shortest prompt first: it is padded the most


def test_batched_outputs_equal_separate_calls(tiny_model):
    processor = tiny_processor_for(tiny_model)
    samples = _samples()
    tiny_model.eval()
    with torch.no_grad():
        together = tiny_model(processor(samples, train=False))
        alone = [tiny_model(processor([s], train=False)) for s in samples]
    frames = [1, 8, 4]
    assert together.object_logits.shape == (sum(frames),)
    start = 0
    for b, (out, n) in enumerate(zip(alone, frames, strict=True)):
        rows = slice(start, start + n)
        start += n
        torch.testing.assert_close(together.seg_features[b], out.seg_features[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.object_logits[rows], out.object_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.iou_pred[rows], out.iou_pred, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.mask_logits[rows], out.mask_logits, rtol=1e-4, atol=1e-4)
        assert int(together.visual_tokens[b]) == int(out.visual_tokens[0])
        assert int(together.kept_tokens[b]) == int(out.kept_tokens[0])
    # The samples really differ in their padded sizes.
    assert len(set(together.visual_tokens.tolist())) == 3


def test_compression_drops_only_visual_tokens_and_keeps_order(tiny_model):
    """The packed sequence = every real text token plus the kept visual slots, in original order;
    text embeddings untouched; kept slots hold Z' (Eq. 4) of their cluster."""
    processor = tiny_processor_for(tiny_model)
    batch = processor(_samples(), train=True)
    mllm = tiny_model.mllm
    results = []
    original = mllm.compressor.forward

    def compress(tokens):
        result = original(tokens)
        results.append((tokens.detach().clone(), result))
        return result

    mllm.compressor.forward = compress
    with torch.no_grad():
        packed, visual_counts, kept_counts = mllm._prepare(batch)
    cfg = mllm.hf_model.config
    visual = (batch.input_ids == cfg.image_token_id) | (batch.input_ids == cfg.video_token_id)
    embed = mllm.hf_model.get_input_embeddings()
    for b in range(batch.batch_size):
        tokens, result = results[b]
        real = batch.attention_mask[b].bool()
        slots = visual[b].nonzero(as_tuple=True)[0]
        assert tokens.shape[0] == slots.numel() == int(visual_counts[b])
        r = max(1, int(slots.numel() * 0.2))
        assert result.keep.numel() == r == int(kept_counts[b])
        kept = slots[result.keep]
        order = torch.sort(torch.cat([(real & ~visual[b]).nonzero(as_tuple=True)[0], kept])).values
        n = order.numel()
        assert int(packed.attention_mask[b].sum()) == n and bool(packed.attention_mask[b, :n].all())
        assert torch.equal(packed.input_ids[b, :n], batch.input_ids[b, order])
        assert torch.equal(packed.labels[b, :n], batch.labels[b, order])  # the answer is never dropped
        is_text = ~visual[b, order]
        with torch.no_grad():
            text_embeds = embed(batch.input_ids[b, order][is_text].unsqueeze(0))[0]
        torch.testing.assert_close(packed.embeds[b, :n][is_text], text_embeds, rtol=0, atol=0)
        torch.testing.assert_close(packed.embeds[b, :n][~is_text], result.tokens, rtol=0, atol=0)


def test_trainable_set_is_exactly_the_papers(tiny_model):
    """B.2 / B.5: LoRA (q, v of the LLM), the <SEG> rows, the projector, the prompt embedding layer and
    SAM2's prompt encoder + mask decoder train; the ViT, the SAM2 image encoder and CLIP are frozen.
    The prompt encoder's point / box / mask embeddings are never used (the only prompt is f_proj) and
    stay frozen; SAM2's "no memory" embedding is frozen as in the official code."""
    trainable = [name for name, p in tiny_model.named_parameters() if p.requires_grad]
    allowed = (
        "projector.",
        "mask_decoder.prompt_embedding.",
        "mask_decoder.sam.mask_decoder.",
        "mask_decoder.sam.prompt_encoder.no_mask_embed.",
    )
    mllm = [name for name in trainable if name.startswith("mllm.")]
    assert all(
        ("language_model.layers." in name and ".self_attn." in name and ".lora_" in name)
        or "trainable_tokens_delta" in name
        for name in mllm
    ), mllm
    assert sum("trainable_tokens_delta" in name for name in mllm) == 2  # embed_tokens and lm_head rows
    assert {name.split(".self_attn.")[1].split(".")[0] for name in mllm if ".lora_" in name} == {
        "q_proj",
        "v_proj",
    }
    others = [name for name in trainable if not name.startswith("mllm.")]
    assert all(name.startswith(allowed) for name in others), others
    # Everything under the allowed prefixes trains (nothing half-frozen by accident).
    for name, p in tiny_model.named_parameters():
        if name.startswith(allowed):
            assert p.requires_grad, name
    # And every module the paper trains is present.
    for prefix in allowed:
        assert any(name.startswith(prefix) for name in others), prefix


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_low_precision_model_ranks_compression_in_float32(tiny_pretrained, dtype):
    """A bf16 model hands bf16 visual tokens to the compressor; the background set is the one the
    float32 copy of the same values gives (ranking never happens in bf16)."""
    import dataclasses

    from lavida.models.compression import reverse_attention_compress
    from lavida.models.lavida import build_lavida

    model = build_lavida(dataclasses.replace(tiny_pretrained, dtype="bfloat16")).eval()
    seen = []
    original = model.mllm.compressor.forward

    def compress(tokens):
        result = original(tokens)
        seen.append((tokens.detach().clone(), result))
        return result

    model.mllm.compressor.forward = compress
    video, image = make_samples()
    batch = tiny_processor_for(model)([video, image], train=False).to("cpu", dtype=dtype)
    with torch.no_grad():
        model(batch)
    assert len(seen) == 2
    for tokens, result in seen:
        assert tokens.dtype == dtype and result.tokens.dtype == dtype
        reference = reverse_attention_compress(tokens.float(), 0.2, 8, "paper")
        assert torch.equal(result.keep, reference.keep)
        assert torch.equal(result.assignment, reference.assignment)
        assert torch.equal(result.tokens, reference.tokens.to(dtype))


def test_category_order_in_the_batch_does_not_matter(tiny_model):
    """f_c rows may come in any sample order (the batch documents non-decreasing owners, but a hand-built
    LavidaBatch is public API): interleaving the categories of two samples, each sample's own categories
    kept in their order, changes nothing."""
    import dataclasses

    processor = tiny_processor_for(tiny_model)
    samples = _samples()
    batch = processor(samples, train=False)
    owner = batch.category_to_sample  # [0, 1, 1, 1, 2, 2, 2, 2, 2]
    order = torch.tensor([4, 1, 0, 5, 2, 6, 7, 3, 8])  # interleaved; within a sample still ascending
    assert all(torch.all(order[owner[order] == b].diff() > 0) for b in range(3))
    shuffled = dataclasses.replace(
        batch, category_tokens=batch.category_tokens[order], category_to_sample=owner[order]
    )
    tiny_model.eval()
    with torch.no_grad():
        f_c, mask = tiny_model._category_features(batch)
        f_c2, mask2 = tiny_model._category_features(shuffled)
        assert torch.equal(mask, mask2)
        torch.testing.assert_close(f_c2, f_c, rtol=0, atol=0)
        torch.testing.assert_close(
            tiny_model(shuffled).object_logits, tiny_model(batch).object_logits, rtol=0, atol=0
        )
