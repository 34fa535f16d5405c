"""lavida.losses: tie-breaking of the best mask, target binarisation, and the data-parallel
normalisation (each against a hand-worked case or the single-process loss)."""

from __future__ import annotations

import math

import pytest
import torch

from lavida.losses import SegLossWeights, segmentation_loss


def _seg(logits, iou_pred, obj, targets, **kw):
    return segmentation_loss(
        mask_logits=logits,
        iou_pred=iou_pred,
        object_logits=obj,
        target_masks=targets,
        weights=kw.pop("weights", SegLossWeights()),
        **kw,
    )


def test_tied_candidates_take_the_first_mask():
    """Two identical candidate masks: the best one is the first (torch.argmin's rule, as SAM2's), which
    decides the IoU term when only the best mask is supervised (the release). Masks 0 and 1 are equal
    with actual IoU 1; predicted IoUs 0.75 and 0.0 give |0.75 − 1| = 0.25 at index 0, 1.0 at index 1."""
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # (1, 2, 2)
    perfect = 20 * target[0] - 10
    logits = torch.stack([perfect, perfect, torch.full((2, 2), -10.0)])[None]  # (1, 3, 2, 2)
    iou_pred = torch.tensor([[0.75, 0.0, 0.0]])
    out = _seg(logits, iou_pred, torch.zeros(1), target, supervise_all_iou=False)
    assert out["loss_iou"].item() == pytest.approx(0.25)


def test_targets_are_binarised_at_zero():
    """A 0/255 mask (or a soft one) supervises as its > 0 pixels: the same loss as the 0/1 mask."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 3, 6, 5, generator=g) * 3
    iou_pred, obj = torch.rand(3, 3, generator=g), torch.randn(3, generator=g)
    binary = (torch.rand(3, 6, 5, generator=g) > 0.5).float()
    binary[1] = 0
    scaled = binary * 255
    soft = binary * torch.rand(3, 6, 5, generator=g).clamp(min=0.01) - (1 - binary) * 0.5
    want = _seg(logits, iou_pred, obj, binary)
    for targets in (scaled, soft):
        got = _seg(logits, iou_pred, obj, targets)
        for key in want:
            assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("weights", [SegLossWeights(), SegLossWeights.official()], ids=["sam2", "official"])
def test_data_parallel_normalisation_equals_one_process_with_the_whole_batch(weights):
    """Rank 0 holds 2 frames, rank 1 holds 8; each divides its sums by the mean count, 5. DDP averages
    the two ranks' gradients, i.e. differentiates (L_0 + L_1) / 2, which must be the loss of one process
    holding all 10 frames (divided by 10): every frame weighs alike whichever rank holds it."""
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(10, 3, 5, 4, generator=g) * 2
    iou_pred, obj = torch.rand(10, 3, generator=g), torch.randn(10, generator=g)
    targets = (torch.rand(10, 5, 4, generator=g) > 0.5).float()
    targets[[1, 6]] = 0
    whole = _seg(logits, iou_pred, obj, targets, weights=weights)
    ranks = [slice(0, 2), slice(2, 10)]
    parts = [_seg(logits[r], iou_pred[r], obj[r], targets[r], weights=weights, num_frames=5.0) for r in ranks]
    for key in whole:
        assert (parts[0][key] + parts[1][key]).item() / 2 == pytest.approx(whole[key].item(), rel=1e-6), key
    # The plain per-rank mean would weigh rank 0's 2 frames like rank 1's 8: a different loss.
    plain = [_seg(logits[r], iou_pred[r], obj[r], targets[r], weights=weights) for r in ranks]
    mean_of_means = (plain[0]["loss_class"] + plain[1]["loss_class"]).item() / 2
    assert not math.isclose(mean_of_means, whole["loss_class"].item(), rel_tol=1e-3)
