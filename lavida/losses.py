"""LAVIDA's training objective (paper §3.9, Eq. 10).

``L = λ_txt · L_txt + λ_seg · L_seg``, where ``L_txt`` is the MLLM's language-model loss and ``L_seg``
is SAM2's training loss (the paper only says "SAM2's loss"; we follow the behaviour of SAM2's
``training/loss_fns.py`` as the official LAVIDA code uses it):

- every frame has M candidate masks (M = 3 with multimask output); per frame and mask, a sigmoid
  focal loss averaged over pixels and a dice loss;
- the best mask of a frame is the one with the lowest ``w_mask · focal + w_dice · dice``; focal and
  dice are taken at that mask only, the IoU-prediction loss (L1 or MSE between predicted and actual
  IoU) over all M masks (``supervise_all_iou``, SAM2's training configs; the best mask only with
  ``supervise_all_iou=False``, as the release does), all only on frames whose target mask is
  non-empty;
- an object-presence loss (BCE on the object-score logit; it is the frame anomaly score) on every
  frame;
- every term is a sum over frames divided by N, the number of frames in the batch, as the release does
  (each frame one object); in a data-parallel run by the mean N over the processes, as SAM2 all-reduces
  its object count. SAM2's own loss divides each frame's sum over objects by the object count and adds
  the frames of a clip up: with one target per sample that is the sum over frames divided by B, the
  same weight for every frame but an L_seg larger by the mean clip length (docs/fidelity.md).

All losses are computed in float32 whatever the input dtype.

Notation: N frames, M masks per frame, H×W pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LavidaLoss",
    "SegLossWeights",
    "dice_loss",
    "iou_targets",
    "segmentation_loss",
    "sigmoid_focal_loss",
]


@dataclass(frozen=True)
class SegLossWeights:
    """Weights of the four ``L_seg`` terms.

    The defaults are SAM2's training weights (mask 20, dice 1, IoU 1, class 1), i.e. "SAM2's loss"
    as the paper states it. :meth:`official` gives the weights of the official LAVIDA training
    config (mask 20, dice 2, IoU 1, class 2).

    The mask and dice weights also choose the best of the M masks (argmin of
    ``loss_mask · focal + loss_dice · dice``).
    """

    loss_mask: float = 20.0
    loss_dice: float = 1.0
    loss_iou: float = 1.0
    loss_class: float = 1.0

    def __post_init__(self) -> None:
        for name in ("loss_mask", "loss_dice", "loss_iou", "loss_class"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"SegLossWeights.{name} must be finite and >= 0, got {value}")

    @classmethod
    def sam2(cls) -> SegLossWeights:
        """SAM2's training weights: mask 20, dice 1, IoU 1, class 1 (the default)."""
        return cls()

    @classmethod
    def official(cls) -> SegLossWeights:
        """The official LAVIDA config's weights: mask 20, dice 2, IoU 1, class 2."""
        return cls(loss_mask=20.0, loss_dice=2.0, loss_iou=1.0, loss_class=2.0)


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Per-element sigmoid focal loss (Lin et al., 2017), as SAM2 uses it.

    ``FL = α_t · (1 − p_t)^γ · BCE(logits, targets)`` with ``p = sigmoid(logits)``,
    ``p_t = p·t + (1 − p)(1 − t)`` and ``α_t = α·t + (1 − α)(1 − t)``. A negative ``alpha``
    disables the α weighting; ``alpha < 0, gamma = 0`` is plain BCE-with-logits.

    Args:
        logits: Any shape.
        targets: Same shape, values in [0, 1].
        alpha: Weight of the positive class, or < 0 for none.
        gamma: Focusing exponent (>= 0).

    Returns:
        The unreduced loss, shape of ``logits``.
    """
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Soft dice loss per mask: ``1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1)`` with ``p = sigmoid(logits)``.

    Args:
        logits: (N, M, H, W) (any number of trailing pixel dims).
        targets: Same shape, values in [0, 1].

    Returns:
        (N, M).
    """
    p = torch.sigmoid(logits).flatten(2)
    t = targets.flatten(2)
    numerator = 2 * (p * t).sum(-1)
    denominator = p.sum(-1) + t.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def iou_targets(mask_logits: Tensor, targets: Tensor) -> Tensor:
    """Actual IoU of each predicted mask (logit > 0) with its target (> 0); the union is clamped at 1.

    An empty prediction of an empty target therefore has IoU 0 (as in SAM2).

    Args:
        mask_logits: (N, M, H, W).
        targets: Same shape.

    Returns:
        (N, M) float32, no gradient.
    """
    pred = mask_logits.flatten(2) > 0
    gt = targets.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return inter / union.clamp(min=1.0)


def segmentation_loss(
    *,
    mask_logits: Tensor,
    iou_pred: Tensor,
    object_logits: Tensor,
    target_masks: Tensor,
    weights: SegLossWeights,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    supervise_all_iou: bool = True,
    iou_l1: bool = True,
    num_frames: float | Tensor | None = None,
    frame_labels: Tensor | None = None,
) -> dict[str, Tensor]:
    """``L_seg``: SAM2's multi-mask loss over the N frames of a batch.

    If ``target_masks`` has another resolution than ``mask_logits``, the logits are upsampled
    bilinearly (``align_corners=False``) to the target size first: SAM2 computes its loss on
    full-resolution masks. Targets are binarised (> 0).

    Args:
        mask_logits: (N, M, H', W') mask logits, M candidate masks per frame.
        iou_pred: (N, M) predicted IoU of each mask.
        object_logits: (N,) (or (N, 1)) object-score logits; the frame anomaly score.
        target_masks: (N, H, W) ground-truth masks; all zero on a frame without the target.
        weights: Term weights; also used to choose the best mask.
        focal_alpha: α of the mask focal loss.
        focal_gamma: γ of the mask focal loss.
        supervise_all_iou: Average the IoU loss over all M masks instead of the best one.
        iou_l1: L1 IoU loss (SAM2's training configs, the LAVIDA release) if True, else MSE (the
            default argument of SAM2's loss class).
        num_frames: What the sums are divided by; None: N. A data-parallel run passes the mean of N over
            its processes (as SAM2 all-reduces its object count), so that averaging the processes'
            gradients weighs every frame alike, as one process with their whole batch would.
        frame_labels: (N,) targets of the object score (y^f of Eq. 2), or None: 1 where the target mask
            has a pixel (SAM2's rule). Masks and IoUs are supervised on frames with a target pixel either
            way (a labelled frame without one has no mask to learn).

    Returns:
        Scalar float32 tensors ``loss_mask``, ``loss_dice``, ``loss_iou``, ``loss_class`` (each
        already divided by ``num_frames``) and ``loss_seg = Σ weight · term``.

    Raises:
        ValueError: If shapes disagree or N = 0.
    """
    if mask_logits.ndim != 4:
        raise ValueError(f"mask_logits must be (N, M, H, W), got {tuple(mask_logits.shape)}")
    n, m = mask_logits.shape[:2]
    if n == 0 or m == 0:
        raise ValueError(
            f"segmentation_loss needs at least one frame and one mask, got {tuple(mask_logits.shape)}"
        )
    if iou_pred.shape != (n, m):
        raise ValueError(f"iou_pred must be (N, M) = {(n, m)}, got {tuple(iou_pred.shape)}")
    if object_logits.shape not in ((n,), (n, 1)):
        raise ValueError(
            f"object_logits must be (N,) or (N, 1) with N = {n}, got {tuple(object_logits.shape)}"
        )
    if target_masks.ndim != 3 or target_masks.shape[0] != n:
        raise ValueError(f"target_masks must be (N={n}, H, W), got {tuple(target_masks.shape)}")
    if frame_labels is not None and frame_labels.shape not in ((n,), (n, 1)):
        raise ValueError(f"frame_labels must be (N,) with N = {n}, got {tuple(frame_labels.shape)}")

    logits = mask_logits.float()
    if logits.shape[-2:] != target_masks.shape[-2:]:
        # SAM2 supervises full-resolution masks: bring the logits to the target size.
        logits = F.interpolate(logits, size=target_masks.shape[-2:], mode="bilinear", align_corners=False)
    targets = (target_masks > 0).float().unsqueeze(1).expand_as(logits)  # (N, M, H, W)

    focal = (
        sigmoid_focal_loss(logits, targets, alpha=focal_alpha, gamma=focal_gamma).flatten(2).mean(-1)
    )  # (N, M)
    dice = dice_loss(logits, targets)  # (N, M)
    actual_iou = iou_targets(logits, targets)  # (N, M)
    iou_pred = iou_pred.float()
    if iou_l1:
        iou_err = F.l1_loss(iou_pred, actual_iou, reduction="none")  # (N, M)
    else:
        iou_err = F.mse_loss(iou_pred, actual_iou, reduction="none")

    # Best of the M masks per frame, by the weighted focal + dice (no gradient through the choice).
    best = torch.argmin(weights.loss_mask * focal + weights.loss_dice * dice, dim=1)  # (N,)
    rows = torch.arange(n, device=logits.device)
    focal_best = focal[rows, best]
    dice_best = dice[rows, best]
    iou_best = iou_err.mean(dim=1) if supervise_all_iou else iou_err[rows, best]

    # Only frames that contain the target are supervised on masks and IoU.
    target_obj = targets[:, 0].flatten(1).any(dim=1).float()  # (N,)
    # Object presence: plain BCE (SAM2's focal with α < 0, γ = 0) on every frame, towards the frame
    # labels of Eq. 2 where given.
    presence = target_obj if frame_labels is None else frame_labels.reshape(n).float()
    loss_class = F.binary_cross_entropy_with_logits(
        object_logits.reshape(n).float(), presence, reduction="sum"
    )

    divisor = n if num_frames is None else num_frames
    losses = {
        "loss_mask": (focal_best * target_obj).sum() / divisor,
        "loss_dice": (dice_best * target_obj).sum() / divisor,
        "loss_iou": (iou_best * target_obj).sum() / divisor,
        "loss_class": loss_class / divisor,
    }
    losses["loss_seg"] = (
        weights.loss_mask * losses["loss_mask"]
        + weights.loss_dice * losses["loss_dice"]
        + weights.loss_iou * losses["loss_iou"]
        + weights.loss_class * losses["loss_class"]
    )
    return losses


class LavidaLoss(nn.Module):
    """Eq. 10: ``L = λ_txt · L_txt + λ_seg · L_seg`` (supplement B.3: both λ = 1).

    Args:
        lambda_txt: Weight of the MLLM language-model loss.
        lambda_seg: Weight of the segmentation loss.
        seg_weights: Weights inside ``L_seg`` (default: SAM2's; ``SegLossWeights.official()`` for
            the official LAVIDA config).
        focal_alpha: α of the mask focal loss.
        focal_gamma: γ of the mask focal loss.
        supervise_all_iou: See :func:`segmentation_loss`.
        iou_l1: See :func:`segmentation_loss`.
    """

    def __init__(
        self,
        *,
        lambda_txt: float = 1.0,
        lambda_seg: float = 1.0,
        seg_weights: SegLossWeights = SegLossWeights(),
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        supervise_all_iou: bool = True,
        iou_l1: bool = True,
    ) -> None:
        super().__init__()
        self.lambda_txt = lambda_txt
        self.lambda_seg = lambda_seg
        self.seg_weights = seg_weights
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.supervise_all_iou = supervise_all_iou
        self.iou_l1 = iou_l1

    def extra_repr(self) -> str:
        return (
            f"lambda_txt={self.lambda_txt}, lambda_seg={self.lambda_seg}, seg_weights={self.seg_weights}, "
            f"focal_alpha={self.focal_alpha}, focal_gamma={self.focal_gamma}, "
            f"supervise_all_iou={self.supervise_all_iou}, iou_l1={self.iou_l1}"
        )

    def forward(
        self,
        *,
        lm_loss: Tensor | None,
        mask_logits: Tensor,
        iou_pred: Tensor,
        object_logits: Tensor,
        target_masks: Tensor,
        num_frames: float | Tensor | None = None,
        frame_labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute every term.

        Args:
            lm_loss: Scalar MLLM loss ``L_txt``, or None (counted as 0).
            mask_logits: (N, M, H', W').
            iou_pred: (N, M).
            object_logits: (N,) or (N, 1).
            target_masks: (N, H, W).
            num_frames: The divisor of ``L_seg``'s sums (see :func:`segmentation_loss`); None: N.
            frame_labels: (N,) object-score targets (see :func:`segmentation_loss`); None: mask presence.

        Returns:
            Scalar tensors: the :func:`segmentation_loss` terms plus ``loss_txt`` and ``loss``.
        """
        losses = segmentation_loss(
            mask_logits=mask_logits,
            iou_pred=iou_pred,
            object_logits=object_logits,
            target_masks=target_masks,
            weights=self.seg_weights,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            supervise_all_iou=self.supervise_all_iou,
            iou_l1=self.iou_l1,
            num_frames=num_frames,
            frame_labels=frame_labels,
        )
        if lm_loss is None:
            loss_txt = losses["loss_seg"].new_zeros(())
        else:
            if lm_loss.numel() != 1:
                raise ValueError(f"lm_loss must be a scalar, got shape {tuple(lm_loss.shape)}")
            loss_txt = lm_loss.float().reshape(())
        losses["loss_txt"] = loss_txt
        losses["loss"] = self.lambda_txt * loss_txt + self.lambda_seg * losses["loss_seg"]  # Eq. 10
        return losses
