"""What :class:`lavida.models.lavida.LavidaModel` returns (notation of ``lavida.data.types``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lavida.models.mask_decoder import NO_OBJECT_LOGIT


@dataclass
class LavidaOutput:
    """Raw training-time outputs (N frames of B samples; floats in the model's dtype).

    Attributes:
        mask_logits: (N, M, h, w) mask logits per frame (M = 3; h = w = S/4, i.e. 256 at S = 1024).
        iou_pred: (N, M) predicted IoU of each mask.
        object_logits: (N,) object-score logits: the frame-level anomaly score before the sigmoid (§3.8).
        seg_features: (B, D_llm) f_sem, the <SEG> token's last hidden state (D_llm: the MLLM's hidden size).
        lm_loss: Scalar L_txt, or None without labels.
        visual_tokens: (B,) int64 visual tokens per sample before compression.
        kept_tokens: (B,) int64 visual tokens per sample after compression.
    """

    mask_logits: torch.Tensor
    iou_pred: torch.Tensor
    object_logits: torch.Tensor
    seg_features: torch.Tensor
    lm_loss: torch.Tensor | None
    visual_tokens: torch.Tensor
    kept_tokens: torch.Tensor


@dataclass
class LavidaPrediction:
    """Inference outputs per frame (N frames; ``mask_logits`` and ``object_logits`` in the model's dtype).

    Attributes:
        frame_scores: (N,) float64 anomaly probability per frame, sigmoid of the object-score logit (§3.8).
            Float64 because float32's sigmoid is exactly 1.0 for every logit above ~16.6: such frames
            would tie, where the logits (the release's frame score) rank them.
        mask_logits: (N, h, w) logits of the mask with the highest predicted IoU; on frames whose object
            score is ≤ 0 they are set to −1024 when gating is on (SAM2's no-object convention).
        object_logits: (N,) the raw object-score logits.
    """

    frame_scores: torch.Tensor
    mask_logits: torch.Tensor
    object_logits: torch.Tensor

    @classmethod
    def from_output(cls, output: LavidaOutput, *, gate_masks: bool = True) -> LavidaPrediction:
        """Pick the best mask per frame (highest predicted IoU) and optionally gate it by the object score."""
        best = output.iou_pred.argmax(dim=1)  # (N,)
        frames = torch.arange(best.shape[0], device=best.device)
        masks = output.mask_logits[frames, best]  # (N, h, w)
        if gate_masks:
            absent = (output.object_logits <= 0).reshape(-1, 1, 1)
            masks = masks.masked_fill(absent, NO_OBJECT_LOGIT)
        return cls(
            frame_scores=torch.sigmoid(output.object_logits.double()),
            mask_logits=masks,
            object_logits=output.object_logits,
        )

    def pixel_scores(self, size: tuple[int, int]) -> torch.Tensor:
        """(N, H, W) float64 per-pixel anomaly probabilities in [0, 1] at ``size`` = (H, W): bilinear
        upsampling of the logits, then the sigmoid (SAM2's order).

        The sigmoid runs in float64, as for :attr:`frame_scores`: in float32 it is exactly 1.0 for every
        logit above ~16.6, so a pooled pixel AUC would tie pixels that the logits (the release's pixel
        score) rank apart.
        """
        logits = F.interpolate(
            self.mask_logits.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False
        )
        return torch.sigmoid(logits[:, 0].double())
