"""The whole model: a mixed image/video batch forward + backward, and batching invariance."""

import torch
from conftest import make_samples, tiny_processor_for

from lavida.losses import LavidaLoss


def test_forward_backward_mixed_batch(tiny_model):
    processor = tiny_processor_for(tiny_model)
    video, image = make_samples()
    batch = processor([video, image], train=True)
    out = tiny_model(batch)

    n = 8 + 1  # frames: 8 of the video, 1 image
    side = tiny_model.mask_decoder.image_size // 4  # SAM2's low-res masks: 4 × the 1/16 embedding
    assert out.mask_logits.shape == (n, 3, side, side)
    assert out.iou_pred.shape == (n, 3) and out.object_logits.shape == (n,)
    assert out.seg_features.shape == (2, tiny_model.mllm.hidden_size)
    losses = LavidaLoss()(
        lm_loss=out.lm_loss,
        mask_logits=out.mask_logits,
        iou_pred=out.iou_pred,
        object_logits=out.object_logits,
        target_masks=batch.target_masks,
    )
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()

    grads = {name: p.grad for name, p in tiny_model.named_parameters() if p.requires_grad}
    got = {name for name, grad in grads.items() if grad is not None and grad.abs().sum() > 0}
    # Every trained component learns from this one batch.
    for prefix in (
        "projector.",
        "mask_decoder.prompt_embedding.",
        "mask_decoder.sam.mask_decoder.transformer.",
        "mask_decoder.sam.mask_decoder.pred_obj_score_head.",
        "mask_decoder.sam.mask_decoder.iou_prediction_head.",
        "mask_decoder.sam.mask_decoder.conv_s0.",
        "mask_decoder.sam.prompt_encoder.no_mask_embed.",
    ):
        assert any(name.startswith(prefix) for name in got), prefix
    assert any("lora_B" in name for name in got)  # lora_A's gradient is 0 at step 0: B starts at zero
    assert sum("trainable_tokens_delta" in name for name in got) == 2
    # Frozen parts (B.2): no gradient, not trainable.
    for name, parameter in tiny_model.named_parameters():
        if name.startswith(("text_encoder.", "mask_decoder.sam.vision_encoder.")) or ".visual." in name:
            assert not parameter.requires_grad and parameter.grad is None, name


def test_sample_outputs_do_not_depend_on_batch_mates(tiny_model):
    """Padding, packing and per-sample compression must keep samples independent."""
    processor = tiny_processor_for(tiny_model)
    video, image = make_samples()
    tiny_model.eval()
    with torch.no_grad():
        together = tiny_model(processor([video, image], train=False))
        alone_video = tiny_model(processor([video], train=False))
        alone_image = tiny_model(processor([image], train=False))
    torch.testing.assert_close(together.object_logits[:8], alone_video.object_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together.object_logits[8:], alone_image.object_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together.mask_logits[:8], alone_video.mask_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(together.seg_features[1:], alone_image.seg_features, rtol=1e-4, atol=1e-5)


def test_predict_scores_and_best_masks(tiny_model):
    processor = tiny_processor_for(tiny_model)
    video, _ = make_samples()
    batch = processor([video], train=False)
    tiny_model.eval()
    raw = tiny_model(batch)
    prediction = tiny_model.predict(batch, gate_masks=False)
    torch.testing.assert_close(prediction.frame_scores, torch.sigmoid(raw.object_logits.detach().double()))
    best = raw.iou_pred.argmax(dim=1)
    for frame in range(8):
        torch.testing.assert_close(
            prediction.mask_logits[frame], raw.mask_logits[frame, best[frame]].detach()
        )
    gated = tiny_model.predict(batch, gate_masks=True)
    absent = raw.object_logits <= 0
    assert bool((gated.mask_logits[absent] == -1024.0).all())
    torch.testing.assert_close(gated.mask_logits[~absent], prediction.mask_logits[~absent])
    pixels = prediction.pixel_scores((64, 96))
    assert pixels.shape == (8, 64, 96) and float(pixels.min()) >= 0 and float(pixels.max()) <= 1


def test_qwen2_5_vl_twin_runs(tmp_path):
    """The Qwen2.5-VL option builds, saves, loads and runs end to end (its rope uses second_per_grid_ts)."""
    from conftest import compose_model_config

    from lavida.models.lavida import build_lavida
    from lavida.models.random_init import write_random_pretrained

    config = write_random_pretrained(compose_model_config("tiny", ["model/mllm=tiny_qwen2_5"]), tmp_path)
    model = build_lavida(config)
    assert type(model.mllm.hf_model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    video, image = make_samples()
    batch = tiny_processor_for(model)([video, image], train=True)
    out = model(batch)
    assert out.object_logits.shape == (9,) and torch.isfinite(out.lm_loss)

    # Frame order reaches the LLM: each 2-frame group of the 8-frame clip has its own temporal position
    # (without a frame rate transformers assumed 24 fps and all four groups shared one).
    video_batch = tiny_processor_for(model)([video], train=False)
    hf = model.mllm.hf_model
    positions, _ = hf.model.get_rope_index(
        input_ids=video_batch.input_ids,
        mm_token_type_ids=video_batch.mm_token_type_ids,
        video_grid_thw=video_batch.video_grid_thw,
        attention_mask=video_batch.attention_mask,
        second_per_grid_ts=video_batch.second_per_grid_ts,
    )
    temporal = positions[0, 0, video_batch.input_ids[0] == hf.config.video_token_id].unique()
    assert len(temporal) == int(video_batch.video_grid_thw[0, 0]) == 4, temporal.tolist()


def test_bfloat16_model_runs(tiny_pretrained):
    """A bf16 build (the GPU setting) runs: every weight bf16 except PEFT's adapters, which PEFT keeps
    in float32 on purpose (``autocast_adapter_dtype``)."""
    import dataclasses

    from lavida.models.lavida import build_lavida

    model = build_lavida(dataclasses.replace(tiny_pretrained, dtype="bfloat16")).eval()
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    adapters = {name for name in dtypes if "lora_" in name or "trainable_tokens_delta" in name}
    assert adapters and all(dtypes[name] == torch.float32 for name in adapters)
    assert {dtype for name, dtype in dtypes.items() if name not in adapters} == {torch.bfloat16}
    video, _ = make_samples()
    with torch.no_grad():
        out = model(tiny_processor_for(model)([video], train=False).to("cpu", dtype=torch.bfloat16))
    assert out.object_logits.dtype == torch.bfloat16 and torch.isfinite(out.object_logits.float()).all()


def test_frame_scores_keep_the_ranking_of_large_object_logits():
    """float32's sigmoid is exactly 1.0 above a logit of ~16.6, which would tie frames the logits (the
    release's frame score) rank apart; the scores are float64."""
    from lavida.models.outputs import LavidaOutput, LavidaPrediction

    logits = torch.tensor([0.0, 12.0, 17.0, 18.0, 25.0, 30.0])
    assert torch.sigmoid(logits[2:]).unique().tolist() == [1.0]  # what float32 would give
    output = LavidaOutput(
        mask_logits=torch.zeros(6, 3, 4, 4),
        iou_pred=torch.zeros(6, 3),
        object_logits=logits,
        seg_features=torch.zeros(1, 8),
        lm_loss=None,
        visual_tokens=torch.zeros(1),
        kept_tokens=torch.zeros(1),
    )
    scores = LavidaPrediction.from_output(output).frame_scores
    assert scores.dtype == torch.float64
    assert (scores.diff() > 0).all(), scores.tolist()
