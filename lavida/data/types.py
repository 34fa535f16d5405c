"""Typed containers for what flows between data and model.

Notation used in every shape below: B samples in a batch, T_b frames of sample b (T_b = 1 for an
image), N = Σ_b T_b frames in the batch, L the padded token length, S the SAM2 input side (1024 for
the real model), K_b categories of sample b, C = ΣK_b.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

# Label value ignored by the cross-entropy (L_txt): every token that is not part of the answer.
IGNORE_INDEX = -100


@dataclass
class ClipSample:
    """One training or test sample before processing.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB frames; T = 1 for an image.
        categories: The anomaly categories to look for (K strings), in prompt order.
        is_video: Whether the frames are a video clip (True) or a single image (False).
        masks: (T, H, W) bool target masks (pixels of the anomaly), or None at inference.
        frame_labels: (T,) float frame-level labels, or None (then derived from the masks).
        answer_template: Index of the answer template to use; None → the processor's choice.
        prompt_template: Index of the user template to use; None → the processor's choice.
    """

    frames: np.ndarray | torch.Tensor
    categories: list[str]
    is_video: bool = True
    masks: np.ndarray | torch.Tensor | None = None
    frame_labels: np.ndarray | torch.Tensor | None = None
    prompt_template: int | None = None
    answer_template: int | None = None


@dataclass
class LavidaBatch:
    """A collated batch for :class:`lavida.models.lavida.LavidaModel`.

    MLLM branch (Qwen2-VL, §3.5):
        input_ids: (B, L) int64 prompt + answer token ids, right-padded.
        attention_mask: (B, L) int64, 1 on real tokens.
        mm_token_type_ids: (B, L) int32, 0 text / 1 image / 2 video token (for the 3-D M-RoPE ids).
        labels: (B, L) int64 answer tokens, -100 elsewhere (L_txt); None at inference.
        pixel_values: (P_img, C·t·p·p) image patches of the image samples, or None.
        image_grid_thw: (n_images, 3) int64 patch grids, or None.
        pixel_values_videos: (P_vid, C·t·p·p) video patches of the video samples, or None.
        video_grid_thw: (n_videos, 3) int64 patch grids, or None.
    SAM2 branch (§3.6, §3.8):
        sam_pixel_values: (N, 3, S, S) float, ImageNet-normalised frames.
        frame_to_sample: (N,) int64, the sample each frame belongs to (non-decreasing).
    Categories (CLIP text, §3.6):
        category_tokens: (C, 77) int64 CLIP token ids of every category of every sample.
        category_to_sample: (C,) int64, the sample each category belongs to (non-decreasing).
    Targets (training):
        target_masks: (N, S, S) float in {0, 1}, or None.
        frame_labels: (N,) float in {0, 1}, or None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    sam_pixel_values: torch.Tensor
    frame_to_sample: torch.Tensor
    category_tokens: torch.Tensor
    category_to_sample: torch.Tensor
    labels: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    second_per_grid_ts: torch.Tensor | None = None
    target_masks: torch.Tensor | None = None
    frame_labels: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_frames(self) -> int:
        return self.sam_pixel_values.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LavidaBatch:
        """Move every tensor to ``device``; floating-point pixel tensors also to ``dtype`` if given."""
        moved = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                cast = dtype if dtype is not None and field.name in _PIXEL_FIELDS else None
                value = value.to(device=device, dtype=cast, non_blocking=True)
            moved[field.name] = value
        return replace(self, **moved)


_PIXEL_FIELDS = frozenset({"pixel_values", "pixel_values_videos", "sam_pixel_values"})
