"""Tests of lavida.losses: each term against hand-worked cases and slow loop references."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lavida.losses import (
    LavidaLoss,
    SegLossWeights,
    dice_loss,
    iou_targets,
    segmentation_loss,
    sigmoid_focal_loss,
)

LN3 = math.log(3.0)

# ---------------------------------------------------------------------------------------------
# Slow references (float64, explicit loops; the formulas are written out, not shared with the code)
# ---------------------------------------------------------------------------------------------


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _focal_pixel(x: float, t: float, alpha: float, gamma: float) -> float:
    # FL = α_t (1 − p_t)^γ · BCE,  BCE = −[t log p + (1 − t) log(1 − p)],  p = σ(x)
    # p_t = p t + (1 − p)(1 − t),  α_t = α t + (1 − α)(1 − t); α < 0 means no α_t factor
    p = _sigmoid(x)
    bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss *= alpha * t + (1 - alpha) * (1 - t)
    return loss


def _per_mask_terms(logit: np.ndarray, target: np.ndarray, alpha: float, gamma: float):
    """focal mean over pixels, dice = 1 − (2Σpt + 1)/(Σp + Σt + 1), IoU of (x > 0) vs (t > 0)."""
    h, w = logit.shape
    focal = sp = st = spt = 0.0
    inter = union = 0
    for i in range(h):
        for j in range(w):
            x, t = float(logit[i, j]), float(target[i, j])
            focal += _focal_pixel(x, t, alpha, gamma)
            p = _sigmoid(x)
            sp += p
            st += t
            spt += p * t
            a, b = x > 0, t > 0
            inter += a and b
            union += a or b
    dice = 1 - (2 * spt + 1) / (sp + st + 1)
    iou = inter / max(union, 1)
    return focal / (h * w), dice, iou


def _reference_seg_loss(
    logits, iou_pred, obj, targets, w: SegLossWeights, *, alpha, gamma, all_iou, l1
) -> dict[str, float]:
    n, m = logits.shape[:2]
    out = dict.fromkeys(("loss_mask", "loss_dice", "loss_iou", "loss_class"), 0.0)
    for f in range(n):
        tgt = (targets[f] > 0).astype(np.float64)
        terms = [_per_mask_terms(logits[f, k], tgt, alpha, gamma) for k in range(m)]
        errs = [
            abs(iou_pred[f, k] - terms[k][2]) if l1 else (iou_pred[f, k] - terms[k][2]) ** 2 for k in range(m)
        ]
        best = min(range(m), key=lambda k: w.loss_mask * terms[k][0] + w.loss_dice * terms[k][1])
        present = float(tgt.any())
        if present:  # only frames that contain the target supervise masks and IoU
            out["loss_mask"] += terms[best][0]
            out["loss_dice"] += terms[best][1]
            out["loss_iou"] += sum(errs) / m if all_iou else errs[best]
        # plain BCE of the object logit against "target present"
        p = _sigmoid(float(obj[f]))
        out["loss_class"] += -(present * math.log(p) + (1 - present) * math.log(1 - p))
    out = {k: v / n for k, v in out.items()}  # every term is divided by the number of frames
    out["loss_seg"] = (
        w.loss_mask * out["loss_mask"]
        + w.loss_dice * out["loss_dice"]
        + w.loss_iou * out["loss_iou"]
        + w.loss_class * out["loss_class"]
    )
    return out


def _bilinear_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of the last two dims, align_corners=False (PyTorch's convention):
    src = (dst + 0.5)·(in/out) − 0.5, clamped at 0; neighbours floor(src) and floor(src)+1 (clamped)."""

    def coords(out_n: int, in_n: int):
        res = []
        for d in range(out_n):
            s = max((d + 0.5) * in_n / out_n - 0.5, 0.0)
            i0 = min(int(math.floor(s)), in_n - 1)
            i1 = min(i0 + 1, in_n - 1)
            res.append((i0, i1, s - i0))
        return res

    in_h, in_w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + (out_h, out_w))
    for i, (y0, y1, ly) in enumerate(coords(out_h, in_h)):
        for j, (x0, x1, lx) in enumerate(coords(out_w, in_w)):
            top = (1 - lx) * x[..., y0, x0] + lx * x[..., y0, x1]
            bottom = (1 - lx) * x[..., y1, x0] + lx * x[..., y1, x1]
            out[..., i, j] = (1 - ly) * top + ly * bottom
    return out


def _random_batch(n=4, m=3, h=5, w=7, *, negatives=(1,)):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(n, m, h, w, generator=g) * 3
    iou_pred = torch.rand(n, m, generator=g)
    obj = torch.randn(n, generator=g) * 2
    targets = (torch.rand(n, h, w, generator=g) > 0.6).float()
    for f in negatives:
        targets[f] = 0
    return logits, iou_pred, obj, targets


def _seg(logits, iou_pred, obj, targets, weights=None, **kw):
    return segmentation_loss(
        mask_logits=logits,
        iou_pred=iou_pred,
        object_logits=obj,
        target_masks=targets,
        weights=weights or SegLossWeights(),
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# Hand-worked tiny case: 1 frame, 1 mask, 2×2 pixels
#   logits [[ln3, −ln3], [0, 0]]  ->  p = [[0.75, 0.25], [0.5, 0.5]]
#   target [[1, 0], [0, 1]]
# ---------------------------------------------------------------------------------------------
HAND_LOGITS = torch.tensor([[[[LN3, -LN3], [0.0, 0.0]]]])  # (1, 1, 2, 2)
HAND_TARGET = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
# focal, α = 0.25, γ = 2, BCE = −log p_t:
#   (0,0): p_t = 0.75, α_t = 0.25: 0.25 · 0.25² · ln(4/3) = ln(4/3)/64
#   (0,1): p_t = 0.75, α_t = 0.75: 0.75 · 0.25² · ln(4/3) = 3 ln(4/3)/64
#   (1,0): p_t = 0.5,  α_t = 0.75: 0.75 · 0.5²  · ln 2    = 3 ln2/16
#   (1,1): p_t = 0.5,  α_t = 0.25: 0.25 · 0.5²  · ln 2    = ln2/16
HAND_FOCAL = [[math.log(4 / 3) / 64, 3 * math.log(4 / 3) / 64], [3 * math.log(2) / 16, math.log(2) / 16]]
HAND_FOCAL_MEAN = math.log(4 / 3) / 64 + math.log(2) / 16  # (4 ln(4/3)/64 + 4 ln2/16) / 4
# dice: Σpt = 0.75 + 0.5 = 1.25, Σp = 2, Σt = 2  ->  1 − (2.5 + 1)/(4 + 1) = 0.3
HAND_DICE = 0.3
# IoU: prediction (logit > 0) = {(0,0)}, target = {(0,0), (1,1)}  ->  1/2
HAND_IOU = 0.5


def test_focal_hand_case():
    got = sigmoid_focal_loss(HAND_LOGITS[0, 0].double(), HAND_TARGET[0].double())
    torch.testing.assert_close(got, torch.tensor(HAND_FOCAL, dtype=torch.float64), rtol=1e-6, atol=1e-9)


def test_focal_alpha_zero_weighs_only_the_negatives():
    """α = 0 is a valid α (only α < 0 disables the weighting, as in SAM2): α_t = α·t + (1 − α)(1 − t)
    = 1 − t, so positive pixels cost nothing and negative ones keep their full (1 − p_t)^γ · BCE.
    Hand case (γ = 2): (0,0) and (1,1) are positives -> 0;
    (0,1): p = 0.25, t = 0, p_t = 0.75: 0.25² · ln(4/3) = ln(4/3)/16;  (1,0): p_t = 0.5: 0.5² · ln 2."""
    got = sigmoid_focal_loss(HAND_LOGITS[0, 0].double(), HAND_TARGET[0].double(), alpha=0.0)
    want = [[0.0, math.log(4 / 3) / 16], [math.log(2) / 4, 0.0]]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-12)


def test_focal_without_alpha_and_gamma_is_bce():
    x, t = torch.randn(50) * 4, (torch.rand(50) > 0.5).float()
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t, alpha=-1.0, gamma=0.0),
        F.binary_cross_entropy_with_logits(x, t, reduction="none"),
    )


def test_focal_matches_pixel_loop():
    x, t = torch.randn(3, 4, dtype=torch.float64) * 3, (torch.rand(3, 4) > 0.5).double()
    for alpha, gamma in ((0.25, 2.0), (0.6, 1.0), (-1.0, 3.0)):
        got = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)
        want = [
            [_focal_pixel(float(x[i, j]), float(t[i, j]), alpha, gamma) for j in range(4)] for i in range(3)
        ]
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_dice_and_iou_hand_case():
    assert dice_loss(HAND_LOGITS, HAND_TARGET[:, None]).item() == pytest.approx(HAND_DICE, abs=1e-6)
    assert iou_targets(HAND_LOGITS, HAND_TARGET[:, None]).item() == pytest.approx(HAND_IOU)
    # empty prediction of an empty target: intersection 0, union clamped to 1 -> IoU 0
    assert iou_targets(-torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == 0.0
    # one-pixel prediction equal to a one-pixel target: 1/1
    one = torch.tensor([[[[1.0, -1.0], [-1.0, -1.0]]]])
    assert iou_targets(one, (one > 0).float()).item() == 1.0
    # dice of an all-empty target with p ≈ 0 -> 1 − 1/1 = 0
    assert dice_loss(torch.full((1, 1, 2, 2), -40.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_dice_and_iou_match_loops():
    logits, _, _, targets = _random_batch()
    tg = targets[:, None].expand_as(logits)
    dice, iou = dice_loss(logits, tg), iou_targets(logits, tg)
    assert dice.shape == iou.shape == (4, 3)
    for f in range(4):
        for k in range(3):
            _, d, i = _per_mask_terms(logits[f, k].double().numpy(), targets[f].double().numpy(), 0.25, 2.0)
            assert dice[f, k].item() == pytest.approx(d, abs=1e-6)
            assert iou[f, k].item() == pytest.approx(i, abs=1e-7)


def test_segmentation_loss_hand_case():
    iou_pred = torch.tensor([[0.8]])  # |0.8 − 0.5| = 0.3, (0.8 − 0.5)² = 0.09
    obj = torch.tensor([0.0])  # target present, BCE(0, 1) = ln 2
    out = _seg(HAND_LOGITS, iou_pred, obj, HAND_TARGET)  # SAM2 weights 20/1/1/1, N = 1
    assert out["loss_mask"].item() == pytest.approx(HAND_FOCAL_MEAN, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(HAND_DICE, rel=1e-5)
    assert out["loss_iou"].item() == pytest.approx(0.3, rel=1e-5)
    assert out["loss_class"].item() == pytest.approx(math.log(2), rel=1e-6)
    # 20·focal + 1·0.3 + 1·0.3 + 1·ln2
    assert out["loss_seg"].item() == pytest.approx(20 * HAND_FOCAL_MEAN + 0.6 + math.log(2), rel=1e-5)
    out = _seg(HAND_LOGITS, iou_pred, obj, HAND_TARGET, iou_l1=False)
    assert out["loss_iou"].item() == pytest.approx(0.09, rel=1e-5)
    # A data-parallel run divides by the mean frame count over its processes instead of N = 1.
    out = _seg(HAND_LOGITS, iou_pred, obj, HAND_TARGET, num_frames=torch.tensor(4.0))
    assert out["loss_class"].item() == pytest.approx(math.log(2) / 4, rel=1e-6)
    assert out["loss_seg"].item() == pytest.approx((20 * HAND_FOCAL_MEAN + 0.6 + math.log(2)) / 4, rel=1e-5)


@pytest.mark.parametrize("weights", [SegLossWeights(), SegLossWeights.official()], ids=["sam2", "official"])
@pytest.mark.parametrize("iou_l1", [True, False])
@pytest.mark.parametrize("all_iou", [False, True])
def test_segmentation_loss_matches_slow_reference(weights, iou_l1, all_iou):
    logits, iou_pred, obj, targets = _random_batch()
    got = _seg(logits, iou_pred, obj, targets, weights, supervise_all_iou=all_iou, iou_l1=iou_l1)
    want = _reference_seg_loss(
        logits.double().numpy(),
        iou_pred.double().numpy(),
        obj.double().numpy(),
        targets.numpy(),
        weights,
        alpha=0.25,
        gamma=2.0,
        all_iou=all_iou,
        l1=iou_l1,
    )
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].shape == ()
        assert got[key].dtype == torch.float32
        assert got[key].item() == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_focal_parameters_are_passed_through():
    logits, iou_pred, obj, targets = _random_batch()
    got = _seg(logits, iou_pred, obj, targets, focal_alpha=0.7, focal_gamma=1.0)
    want = _reference_seg_loss(
        logits.double().numpy(),
        iou_pred.double().numpy(),
        obj.double().numpy(),
        targets.numpy(),
        SegLossWeights(),
        alpha=0.7,
        gamma=1.0,
        all_iou=False,
        l1=True,
    )
    assert got["loss_mask"].item() == pytest.approx(want["loss_mask"], rel=1e-5)


def test_best_mask_selection():
    # Target [[1,0],[0,1]]. Candidates: perfect (±10 on/off target), all −10, all +10.
    tgt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    perfect, neg, pos = 20 * tgt - 10, torch.full((2, 2), -10.0), torch.full((2, 2), 10.0)
    # frame 0: perfect at index 1; frame 1: perfect at index 2
    logits = torch.stack([torch.stack([neg, perfect, pos]), torch.stack([pos, neg, perfect])])
    targets = tgt.expand(2, 2, 2)
    # actual IoUs: perfect 1; all-negative 0 (0/2); all-positive 2/4 = 0.5
    iou_pred = torch.zeros(2, 3)
    out = _seg(logits, iou_pred, torch.zeros(2), targets, supervise_all_iou=False)  # the release's rule
    best = torch.tensor([1, 2])
    focal = sigmoid_focal_loss(logits, targets[:, None].expand_as(logits)).flatten(2).mean(-1)
    dice = dice_loss(logits, targets[:, None].expand_as(logits))
    assert out["loss_mask"].item() == pytest.approx(focal[[0, 1], best].sum().item() / 2, rel=1e-6)
    assert out["loss_dice"].item() == pytest.approx(dice[[0, 1], best].sum().item() / 2, rel=1e-6)
    assert out["loss_iou"].item() == pytest.approx(1.0)  # |0 − 1| at the best index, both frames
    # the IoU prediction only matters at the best index ...
    iou_pred = torch.tensor([[0.3, 1.0, 0.9], [0.7, 0.2, 1.0]])
    assert _seg(logits, iou_pred, torch.zeros(2), targets, supervise_all_iou=False)["loss_iou"].item() == 0.0
    # ... unless all are supervised (SAM2's training configs, the default): mean over masks of
    # |pred − actual|, actual = (0, 1, 0.5)/(0.5, 0, 1)
    all_iou = _seg(logits, iou_pred, torch.zeros(2), targets)["loss_iou"].item()
    assert all_iou == pytest.approx(((0.3 + 0 + 0.4) / 3 + (0.2 + 0.2 + 0) / 3) / 2, rel=1e-6)


def test_best_mask_selection_uses_the_weights():
    logits, iou_pred, obj, targets = _random_batch(n=8, negatives=())
    tg = targets[:, None].expand_as(logits)
    focal = sigmoid_focal_loss(logits, tg).flatten(2).mean(-1)
    dice = dice_loss(logits, tg)
    by_focal, by_dice = focal.argmin(1), dice.argmin(1)
    assert (by_focal != by_dice).any(), "test data must make the two criteria disagree"
    rows = torch.arange(8)
    for w, idx in (
        (SegLossWeights(loss_mask=1.0, loss_dice=0.0), by_focal),
        (SegLossWeights(loss_mask=0.0, loss_dice=1.0), by_dice),
    ):
        out = _seg(logits, iou_pred, obj, targets, w)
        assert out["loss_mask"].item() == pytest.approx(focal[rows, idx].mean().item(), rel=1e-6)
        assert out["loss_dice"].item() == pytest.approx(dice[rows, idx].mean().item(), rel=1e-6)


def test_negative_frames_only_contribute_to_class_loss():
    logits, iou_pred, obj, targets = _random_batch(negatives=(1, 3))
    base = _seg(logits, iou_pred, obj, targets)
    logits2, iou2, obj2 = logits.clone(), iou_pred.clone(), obj.clone()
    logits2[[1, 3]] = torch.randn(2, 3, 5, 7) * 5
    iou2[[1, 3]] = torch.rand(2, 3)
    changed = _seg(logits2, iou2, obj2, targets)
    for key in ("loss_mask", "loss_dice", "loss_iou", "loss_class"):
        assert torch.equal(changed[key], base[key]), key
    obj2[1] += 3.0
    changed = _seg(logits2, iou2, obj2, targets)
    assert changed["loss_class"].item() != base["loss_class"].item()
    # and no mask-loss gradient reaches the negative frames' masks
    logits.requires_grad_(True)
    _seg(logits, iou_pred, obj, targets)["loss_seg"].backward()
    assert logits.grad[[1, 3]].abs().sum() == 0
    assert logits.grad[[0, 2]].abs().sum() > 0


def test_all_negative_batch():
    logits, iou_pred, obj, _ = _random_batch()
    out = _seg(logits, iou_pred, obj, torch.zeros(4, 5, 7))
    assert out["loss_mask"].item() == 0.0
    assert out["loss_dice"].item() == 0.0
    assert out["loss_iou"].item() == 0.0
    # BCE(x, 0) = log(1 + e^x), averaged over the 4 frames
    want = sum(math.log1p(math.exp(float(x))) for x in obj) / 4
    assert out["loss_class"].item() == pytest.approx(want, rel=1e-6)
    assert out["loss_seg"].item() == pytest.approx(want, rel=1e-6)  # class weight 1


def test_frame_labels_set_the_object_score_target_only():
    """Eq. 2's 1ᵀ (data.frame_labels=clip) labels a frame without a target pixel anomalous: the object
    score learns that label, while masks and IoUs stay supervised on frames with a target pixel only."""
    logits, iou_pred, obj, targets = _random_batch(negatives=(1, 3))
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0])  # frame 1 labelled present without a pixel
    with_labels = _seg(logits, iou_pred, obj, targets, frame_labels=labels)
    masks_only = _seg(logits, iou_pred, obj, targets)
    for key in ("loss_mask", "loss_dice", "loss_iou"):
        assert torch.equal(with_labels[key], masks_only[key]), key
    # BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x), by hand over the 4 frames
    want = (
        sum(math.log1p(math.exp(-float(x) if y else float(x))) for x, y in zip(obj, labels, strict=True)) / 4
    )
    assert with_labels["loss_class"].item() == pytest.approx(want, rel=1e-6)
    assert masks_only["loss_class"].item() != pytest.approx(want, rel=1e-3)
    # Labels equal to mask presence reproduce the default exactly.
    presence = targets.flatten(1).any(dim=1).float()
    assert torch.equal(
        _seg(logits, iou_pred, obj, targets, frame_labels=presence)["loss_class"], masks_only["loss_class"]
    )
    with pytest.raises(ValueError, match=r"frame_labels must be \(N,\) with N = 4"):
        _seg(logits, iou_pred, obj, targets, frame_labels=torch.ones(3))


def test_frame_labels_may_carry_a_trailing_unit_dim():
    """Like the object logits, frame labels of shape (N, 1) are accepted and mean the same as (N,);
    any other second dimension is a shape error, not a reshape failure further down."""
    logits, iou_pred, obj, targets = _random_batch(negatives=(1, 3))
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0])
    flat = _seg(logits, iou_pred, obj, targets, frame_labels=labels)
    column = _seg(logits, iou_pred, obj, targets, frame_labels=labels[:, None])
    assert all(torch.equal(flat[k], column[k]) for k in flat)
    with pytest.raises(ValueError, match=r"frame_labels must be \(N,\) with N = 4, got \(4, 2\)"):
        _seg(logits, iou_pred, obj, targets, frame_labels=torch.ones(4, 2))


def test_gradients_flow():
    logits, iou_pred, obj, targets = _random_batch()
    for t in (logits, iou_pred, obj):
        t.requires_grad_(True)
    _seg(logits, iou_pred, obj, targets)["loss_seg"].backward()
    for name, t in (("mask_logits", logits), ("iou_pred", iou_pred), ("object_logits", obj)):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_total_is_linear_in_the_weights():
    logits, iou_pred, obj, targets = _random_batch()
    base = _seg(logits, iou_pred, obj, targets, SegLossWeights())
    terms = ("loss_mask", "loss_dice", "loss_iou", "loss_class")
    # Weights that keep the mask/dice ratio keep the mask choice, so the terms are unchanged and the
    # total is exactly Σ w·term.
    for w in (SegLossWeights(loss_iou=3.0, loss_class=0.5), SegLossWeights(40.0, 2.0, 0.0, 7.0)):
        out = _seg(logits, iou_pred, obj, targets, w)
        for key in terms:
            assert torch.equal(out[key], base[key]), key
        torch.testing.assert_close(out["loss_seg"], sum(getattr(w, k) * base[k] for k in terms))
    doubled = _seg(logits, iou_pred, obj, targets, SegLossWeights(40.0, 2.0, 2.0, 2.0))
    torch.testing.assert_close(doubled["loss_seg"], 2 * base["loss_seg"])


def test_low_resolution_logits_are_upsampled_to_the_target():
    g = torch.Generator().manual_seed(3)
    low = torch.randn(2, 3, 4, 5, generator=g) * 3  # (N, M, 4, 5)
    targets = (torch.rand(2, 8, 10, generator=g) > 0.5).float()  # (N, 8, 10)
    iou_pred, obj = torch.rand(2, 3, generator=g), torch.randn(2, generator=g)
    got = _seg(low, iou_pred, obj, targets)
    up = _bilinear_resize(low.double().numpy(), 8, 10)
    want = _reference_seg_loss(
        up, iou_pred.double().numpy(), obj.double().numpy(), targets.numpy(), SegLossWeights(),
        alpha=0.25, gamma=2.0, all_iou=True, l1=True,
    )  # fmt: skip
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-5, abs=1e-7), key
    low.requires_grad_(True)
    _seg(low, iou_pred, obj, targets)["loss_seg"].backward()
    assert low.grad.abs().sum() > 0


def test_low_precision_inputs_give_float32_losses():
    logits, iou_pred, obj, targets = _random_batch()
    out = _seg(logits.bfloat16(), iou_pred.bfloat16(), obj.bfloat16(), targets.bool())
    ref = _seg(logits.bfloat16().float(), iou_pred.bfloat16().float(), obj.bfloat16().float(), targets)
    for key, value in out.items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ref[key])


def test_object_logits_may_carry_a_trailing_unit_dim():
    logits, iou_pred, obj, targets = _random_batch()
    a, b = _seg(logits, iou_pred, obj, targets), _seg(logits, iou_pred, obj[:, None], targets)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"mask_logits": torch.zeros(4, 5, 7)}, r"mask_logits must be \(N, M, H, W\), got \(4, 5, 7\)"),
        ({"iou_pred": torch.zeros(4, 2)}, r"iou_pred must be \(N, M\) = \(4, 3\), got \(4, 2\)"),
        (
            {"object_logits": torch.zeros(3)},
            r"object_logits must be \(N,\) or \(N, 1\) with N = 4, got \(3,\)",
        ),
        ({"target_masks": torch.zeros(3, 5, 7)}, r"target_masks must be \(N=4, H, W\), got \(3, 5, 7\)"),
        (
            {
                "mask_logits": torch.zeros(0, 3, 5, 7),
                "iou_pred": torch.zeros(0, 3),
                "object_logits": torch.zeros(0),
                "target_masks": torch.zeros(0, 5, 7),
            },
            r"needs at least one frame and one mask, got \(0, 3, 5, 7\)",
        ),
    ],
)
def test_shape_errors(bad, message):
    logits, iou_pred, obj, targets = _random_batch()
    kw = {"mask_logits": logits, "iou_pred": iou_pred, "object_logits": obj, "target_masks": targets} | bad
    with pytest.raises(ValueError, match=message):
        segmentation_loss(**kw, weights=SegLossWeights())


def test_seg_loss_weights():
    assert dataclasses.astuple(SegLossWeights()) == (20.0, 1.0, 1.0, 1.0)
    assert SegLossWeights.sam2() == SegLossWeights()
    assert dataclasses.astuple(SegLossWeights.official()) == (20.0, 2.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="loss_dice"):
        SegLossWeights(loss_dice=-1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SegLossWeights().loss_mask = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("lambda_txt,lambda_seg", [(1.0, 1.0), (0.5, 3.0)])
def test_lavida_loss_eq10(lambda_txt, lambda_seg):
    logits, iou_pred, obj, targets = _random_batch()
    weights = SegLossWeights.official()
    criterion = LavidaLoss(lambda_txt=lambda_txt, lambda_seg=lambda_seg, seg_weights=weights)
    lm = torch.tensor(2.5, requires_grad=True)
    out = criterion(
        lm_loss=lm, mask_logits=logits, iou_pred=iou_pred, object_logits=obj, target_masks=targets
    )
    seg = _seg(logits, iou_pred, obj, targets, weights)
    assert set(out) == {"loss_mask", "loss_dice", "loss_iou", "loss_class", "loss_seg", "loss_txt", "loss"}
    assert all(v.shape == () for v in out.values())
    torch.testing.assert_close(out["loss_seg"], seg["loss_seg"])
    torch.testing.assert_close(out["loss"], lambda_txt * lm.detach() + lambda_seg * seg["loss_seg"])
    out["loss"].backward()
    assert lm.grad.item() == pytest.approx(lambda_txt)
    # no LM loss: L_txt counts as 0
    out = criterion(
        lm_loss=None, mask_logits=logits, iou_pred=iou_pred, object_logits=obj, target_masks=targets
    )
    assert out["loss_txt"].item() == 0.0
    torch.testing.assert_close(out["loss"], lambda_seg * seg["loss_seg"])
    with pytest.raises(ValueError, match="scalar"):
        criterion(
            lm_loss=torch.ones(2),
            mask_logits=logits,
            iou_pred=iou_pred,
            object_logits=obj,
            target_masks=targets,
        )


@pytest.mark.parametrize(
    ("settings", "call"),
    [
        ({"focal_alpha": 0.6}, {}),
        ({"focal_gamma": 1.0}, {}),
        ({"supervise_all_iou": False}, {}),
        ({"iou_l1": False}, {}),
        ({}, {"num_frames": 10.0}),
        ({}, {"frame_labels": torch.tensor([1.0, 1.0, 0.0, 0.0])}),  # not mask presence (1, 0, 1, 1)
    ],
    ids=["focal_alpha", "focal_gamma", "supervise_all_iou", "iou_l1", "num_frames", "frame_labels"],
)
def test_lavida_loss_hands_each_setting_to_the_segmentation_loss(settings, call):
    """One setting at a time, so that each must arrive on its own: LavidaLoss's terms are segmentation_loss's
    with that setting, which on this batch differ from the defaults' (a setting dropped on the way shows)."""
    logits, iou_pred, obj, targets = _random_batch()
    batch = {"mask_logits": logits, "iou_pred": iou_pred, "object_logits": obj, "target_masks": targets}
    out = LavidaLoss(**settings)(lm_loss=None, **batch, **call)
    expected = segmentation_loss(**batch, weights=SegLossWeights(), **settings, **call)
    default = segmentation_loss(**batch, weights=SegLossWeights())
    for key in ("loss_mask", "loss_dice", "loss_iou", "loss_class", "loss_seg"):
        torch.testing.assert_close(out[key], expected[key], msg=key)
    assert out["loss_seg"].item() != pytest.approx(default["loss_seg"].item(), rel=1e-6)


def test_lavida_loss_defaults_are_the_paper():
    criterion = LavidaLoss()
    assert (criterion.lambda_txt, criterion.lambda_seg) == (1.0, 1.0)  # supplement B.3
    assert criterion.seg_weights == SegLossWeights()  # SAM2's loss
    assert "lambda_txt=1.0" in repr(criterion)
