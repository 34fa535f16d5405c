"""The forward pass after the MLLM (§3.8, Eq. 9) and of what it reports.

Every expectation is computed independently of the code under test: transformers' own ``Sam2Model``
forward is the reference for the decoder wiring, hand-built outputs for the mask choice and the gating,
and a frame run in another batch for the independence of frames.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_model_config
from transformers.models.sam2_video.modeling_sam2_video import NO_OBJ_SCORE

from lavida.models.mask_decoder import NO_OBJECT_LOGIT, ImageFeatures, build_mask_decoder
from lavida.models.outputs import LavidaOutput, LavidaPrediction


@pytest.fixture(scope="module")
def decoder():
    """The tiny SAM2 with a non-zero "no memory" embedding (random init leaves it at zero, which would
    hide a missing addition) and B.5's prompt embedding layer."""
    torch.manual_seed(0)
    arch = compose_model_config("tiny").mask_decoder.arch
    module = build_mask_decoder(arch=arch, prompt_dim=24, prompt_embedding="linear").eval()
    with torch.no_grad():
        module.sam.no_memory_embedding.normal_()
    return module


def _output(mask_logits, iou_pred, object_logits) -> LavidaOutput:
    return LavidaOutput(
        mask_logits=mask_logits,
        iou_pred=iou_pred,
        object_logits=object_logits,
        seg_features=torch.zeros(1, 4),
        lm_loss=None,
        visual_tokens=torch.zeros(1),
        kept_tokens=torch.zeros(1),
    )


def test_decoder_matches_sam2_model_forward_given_the_same_sparse_prompt(decoder):
    """Eq. 9 wiring: transformers' Sam2Model.forward adds the no-memory embedding to the deepest level,
    projects levels 0/1 with conv_s0/conv_s1 as the high-resolution features, adds the no-mask dense
    embedding and its image-wide positional encoding. Given our sparse prompt (embed(f_proj[t]), one
    token) through its prompt encoder, it must return our masks, IoUs and object logits exactly."""
    sam = decoder.sam
    side = decoder.image_size
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(3, 3, side, side, generator=g)
    prompts = torch.randn(3, 24, generator=g)
    with torch.no_grad():
        ours = decoder(decoder.encode_images(pixels), prompts)
        sparse = decoder.prompt_embedding(prompts).reshape(3, 1, 1, -1)
        original = sam.prompt_encoder.forward

        def only_our_prompt(input_points, input_labels, input_boxes, input_masks):
            _, dense = original(None, None, None, None)  # SAM2's "no mask" dense embedding
            return sparse, dense.expand(3, -1, -1, -1)

        sam.prompt_encoder.forward = only_our_prompt
        try:
            reference = sam(pixel_values=pixels, multimask_output=True)
        finally:
            sam.prompt_encoder.forward = original
    assert ours.mask_logits.shape == (3, 3, side // 4, side // 4)
    assert torch.equal(ours.mask_logits, reference.pred_masks[:, 0])
    assert torch.equal(ours.iou_pred, reference.iou_scores[:, 0])
    assert torch.equal(ours.object_logits, reference.object_score_logits.reshape(3))


def test_a_frame_does_not_see_the_other_frames_of_the_batch(decoder):
    """Frames are decoded independently (no memory attention, official code): changing every other
    frame's image and prompt leaves a frame's outputs bit for bit unchanged."""
    side = decoder.image_size
    g = torch.Generator().manual_seed(5)
    pixels = torch.randn(4, 3, side, side, generator=g)
    prompts = torch.randn(4, 24, generator=g)
    other_pixels, other_prompts = pixels.clone(), prompts.clone()
    other_pixels[[0, 1, 3]] = torch.randn(3, 3, side, side, generator=g)
    other_prompts[[0, 1, 3]] = torch.randn(3, 24, generator=g)
    with torch.no_grad():
        a = decoder(decoder.encode_images(pixels), prompts)
        b = decoder(decoder.encode_images(other_pixels), other_prompts)
    assert torch.equal(a.mask_logits[2], b.mask_logits[2])
    assert torch.equal(a.iou_pred[2], b.iou_pred[2])
    assert torch.equal(a.object_logits[2], b.object_logits[2])
    assert not torch.equal(a.object_logits[0], b.object_logits[0])


def test_reported_mask_is_the_argmax_iou_candidate_and_gating_starts_at_logit_zero():
    """SAM2: the reported mask is the candidate with the highest predicted IoU; its logits become −1024
    where the object logit is ≤ 0 (SAM2 keeps the mask only where the logit is > 0), so a frame at
    exactly 0 (and −0.0) is gated and one at the smallest positive float is not."""
    candidates = torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3, 1, 1).expand(5, 3, 2, 2).clone()
    iou_pred = torch.tensor(
        [[0.1, 0.9, 0.2], [0.7, 0.1, 0.2], [0.1, 0.2, 0.3], [0.5, 0.5, 0.1], [0.3, 0.2, 0.8]]
    )
    tiny = torch.finfo(torch.float32).tiny
    object_logits = torch.tensor([0.0, -0.0, tiny, -tiny, 2.0])
    output = _output(candidates, iou_pred, object_logits)
    raw = LavidaPrediction.from_output(output, gate_masks=False)
    best = [1, 0, 2, 0, 2]  # frame 3: a tie goes to the first candidate (torch.argmax, as SAM2)
    for frame, k in enumerate(best):
        assert torch.equal(raw.mask_logits[frame], candidates[frame, k])
    gated = LavidaPrediction.from_output(output, gate_masks=True)
    for frame, absent in enumerate([True, True, False, True, False]):
        want = torch.full((2, 2), NO_OBJECT_LOGIT) if absent else candidates[frame, best[frame]]
        assert torch.equal(gated.mask_logits[frame], want), frame
    assert torch.equal(gated.frame_scores, raw.frame_scores)  # gating never touches the frame score
    assert gated.frame_scores[0].item() == 0.5


def test_pixel_scores_keep_the_ranking_of_large_mask_logits():
    """The pixel score is a probability whose pooled AUC must order pixels as their logits do (the
    release scores the logits): float32's sigmoid is exactly 1.0 above a logit of ~16.6, which would tie
    them, so the probabilities are float64 (as the frame scores and docs/fidelity.md's pixel score)."""
    logits = torch.tensor([[0.0, 12.0, 17.0, 18.0, 25.0, 30.0]]).reshape(1, 1, 2, 3)
    logits = logits.expand(1, 3, 2, 3).clone()
    output = _output(logits, torch.tensor([[0.9, 0.1, 0.1]]), torch.tensor([3.0]))
    prediction = LavidaPrediction.from_output(output)
    pixels = prediction.pixel_scores((2, 3))  # same size: the bilinear resize is the identity
    assert pixels.shape == (1, 2, 3)
    assert pixels.dtype == torch.float64
    flat = pixels.flatten()
    assert (flat.diff() > 0).all(), flat.tolist()
    want = torch.tensor(
        [1 / (1 + math.exp(-x)) for x in (0.0, 12.0, 17.0, 18.0, 25.0, 30.0)], dtype=torch.float64
    )
    torch.testing.assert_close(flat, want, rtol=1e-12, atol=0)


def test_pixel_scores_of_a_gated_frame_are_zero():
    logits = torch.full((1, 3, 2, 2), 5.0)
    output = _output(logits, torch.tensor([[0.9, 0.1, 0.1]]), torch.tensor([0.0]))
    pixels = LavidaPrediction.from_output(output, gate_masks=True).pixel_scores((4, 4))
    assert pixels.shape == (1, 4, 4) and bool((pixels == 0).all())


def test_masks_are_gated_unless_asked_not_to():
    """Gating is the default (SAM2 reports −1024 where it sees no object), so callers that do not pass
    ``gate_masks`` get the masks the evaluation scores: a frame with object logit −1 is gated, one with +1
    keeps its best candidate."""
    candidates = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1).expand(2, 3, 1, 1).clone()
    output = _output(candidates, torch.tensor([[0.1, 0.9, 0.2], [0.1, 0.9, 0.2]]), torch.tensor([-1.0, 1.0]))
    masks = LavidaPrediction.from_output(output).mask_logits
    assert torch.equal(masks, torch.tensor([NO_OBJECT_LOGIT, 2.0]).reshape(2, 1, 1))


def test_pixel_scores_upsample_with_half_pixel_centres():
    """The bilinear resize is SAM2's ``align_corners=False``: a 1x2 mask [0, 4] upsampled to 1x4 samples
    the source at x_src = (x + 0.5) / 2 − 0.5 = −0.25, 0.25, 0.75, 1.25, clamped to [0, 1], so the logits
    are 0, 1, 3, 4 (align_corners=True would give 0, 4/3, 8/3, 4), then the sigmoid."""
    logits = torch.tensor([0.0, 4.0]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2).clone()
    output = _output(logits, torch.tensor([[0.9, 0.1, 0.1]]), torch.tensor([3.0]))
    pixels = LavidaPrediction.from_output(output).pixel_scores((1, 4))
    want = torch.tensor([[[1 / (1 + math.exp(-x)) for x in (0.0, 1.0, 3.0, 4.0)]]], dtype=torch.float64)
    torch.testing.assert_close(pixels, want, rtol=1e-12, atol=0)


def test_no_object_logit_is_sam2s():
    """Gated frames carry SAM2's own "no object" score (transformers' port: ``NO_OBJ_SCORE`` = −1024),
    so saved mask logits compare with SAM2's and the release's."""
    assert NO_OBJECT_LOGIT == NO_OBJ_SCORE == -1024.0


def test_image_feature_tokens_are_row_major_with_channels_last():
    """f_v as the projector's token sequence: token y·w + x holds the C channels of pixel (y, x), for f_v
    and its position encoding alike. Hand-built (N=2, C=2, h=2, w=3) maps whose value 100·n + 10·c + (3y + x)
    names its frame, channel and pixel."""
    n, c, y, x = torch.meshgrid(
        torch.arange(2), torch.arange(2), torch.arange(2), torch.arange(3), indexing="ij"
    )
    top = (100 * n + 10 * c + 3 * y + x).float()
    features = ImageFeatures(top=top, top_pos=-top, high_res=[])
    tokens, pos = features.tokens()
    # frame 0: tokens 0..5 = pixels (0,0), (0,1), (0,2), (1,0), (1,1), (1,2); channel 1 adds 10
    frame0 = [[float(t), float(10 + t)] for t in range(6)]
    want = torch.tensor([frame0, [[100 + a, 100 + b] for a, b in frame0]])
    assert torch.equal(tokens, want)
    assert torch.equal(pos, -want)


def test_projector_features_are_the_deepest_level_with_its_own_position_encoding(decoder):
    """f_v and its sine position encoding (B.5, docs/fidelity.md "f_v for the projector") are SAM2's
    deepest FPN level and the encoding of that same level, as transformers' ``Sam2Model.get_image_features``
    pairs them (flattened (HW, N, C) there, (N, HW, C) here)."""
    side = decoder.image_size
    pixels = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        f_v, f_v_pos = decoder.encode_images(pixels).tokens()
        reference = decoder.sam.get_image_features(pixels)
    assert torch.equal(f_v, reference.fpn_hidden_states[-1].permute(1, 0, 2))
    assert torch.equal(f_v_pos, reference.fpn_position_encoding[-1].permute(1, 0, 2))


def test_outside_parameters_are_the_ones_forward_reads_directly(decoder):
    """ZeRO-3 gathers a parameter only inside its own module's forward: ``forward`` reads SAM2's
    no-memory embedding, owned by ``Sam2Model`` (whose forward it never calls), so that one must be listed."""
    assert [id(p) for p in decoder.outside_parameters()] == [id(decoder.sam.no_memory_embedding)]


def test_frozen_encoder_builds_no_graph_and_the_decoder_convs_do(decoder):
    """B.2: the SAM2 image encoder is frozen and runs without gradients, even for frames that require
    them (as in input attribution); conv_s0/conv_s1 belong to the trained decoder and keep theirs."""
    side = decoder.image_size
    pixels = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(9)).requires_grad_()
    features = decoder.encode_images(pixels)
    assert not features.top.requires_grad and not features.top_pos.requires_grad
    assert [level.requires_grad for level in features.high_res] == [True, True]
