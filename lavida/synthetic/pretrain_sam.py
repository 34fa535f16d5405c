"""Promptable-segmentation pretraining of the tiny SAM2 on the synthetic shapes.

LAVIDA starts from a *pretrained* SAM2 (B.5): its frozen encoder sees, and its decoder turns prompt
tokens into masks and object scores. The tiny stand-in model of the demo has random weights, which do
neither — its decoder ignores prompt tokens whose differences are small, so the projector never gets
a learning signal. Like the real SAM2 (trained on SA-1B with clicks), the tiny SAM2 is therefore first
trained on the synthetic training images with point prompts: a click inside an object asks for that
object (its mask, object score 1); a lone negative click asks for nothing (empty mask, object score 0).
Only then is it frozen (encoder) and fine-tuned (decoder) as the paper prescribes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lavida.data.processor import sam_pixel_values
from lavida.data.sources.base import read_manifest
from lavida.data.sources.synthetic import SyntheticSource
from lavida.losses import SegLossWeights, segmentation_loss

log = logging.getLogger(__name__)


def pretrain_sam(
    sam_dir: str | Path,
    train_root: str | Path,
    *,
    steps: int = 400,
    batch_size: int = 16,
    lr: float = 2e-3,
    encoder_lr_scale: float = 0.1,
    seed: int = 0,
) -> dict[str, float]:
    """Train the SAM2 saved in ``sam_dir`` with point prompts on the synthetic set; save it back in place.

    Args:
        encoder_lr_scale: Learning-rate multiplier of the image encoder. At the full rate the encoder's
            deepest level degenerates within ~50 steps into one large constant vector (per-location norm
            ~150 against a spatial variation of ~0.1): the mask path does not mind (it reads the
            high-resolution levels), but every decoder token then attends to the same thing and the
            object score cannot learn. At 0.1 the deepest level stays at norm ~10 with variation ~2.

    Returns:
        The mean losses of the last 50 steps.
    """
    from transformers import Sam2Model

    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    sam = Sam2Model.from_pretrained(str(sam_dir), local_files_only=True).train()
    source = SyntheticSource(train_root)
    records = read_manifest(source.manifest_path())
    side = sam.config.prompt_encoder_config.image_size
    encoder = [p for name, p in sam.named_parameters() if name.startswith("vision_encoder.")]
    rest = [p for name, p in sam.named_parameters() if not name.startswith("vision_encoder.")]
    optimizer = torch.optim.AdamW(
        [{"params": encoder, "lr": lr * encoder_lr_scale}, {"params": rest, "lr": lr}], weight_decay=1e-4
    )
    history: list[dict[str, float]] = []
    for _ in tqdm(range(steps), desc="pretrain tiny SAM2", unit="step"):
        pixels, points, labels, masks = _batch(source, records, batch_size, side, generator)
        output = sam(pixel_values=pixels, input_points=points, input_labels=labels, multimask_output=True)
        losses = segmentation_loss(
            mask_logits=output.pred_masks[:, 0],
            iou_pred=output.iou_scores[:, 0],
            object_logits=output.object_score_logits.reshape(-1),
            target_masks=masks,
            weights=SegLossWeights(),
        )
        optimizer.zero_grad(set_to_none=True)
        losses["loss_seg"].backward()
        optimizer.step()
        history.append({key: float(value) for key, value in losses.items()})
    sam.save_pretrained(str(sam_dir))
    final = {key: float(np.mean([h[key] for h in history[-50:]])) for key in history[-1]}
    log.info("Pretrained the tiny SAM2 for %d steps: %s", steps, final)
    return final


def _batch(source: SyntheticSource, records, batch_size: int, side: int, rng: np.random.Generator):
    """Frames, one click each, and the target masks (S×S): clicks on objects, or lone negative clicks."""
    frames, points, labels, masks = [], [], [], []
    while len(frames) < batch_size:
        record = records[int(rng.integers(len(records)))]
        position = int(rng.integers(len(record.frames)))
        target = record.targets[int(rng.integers(len(record.targets)))]
        frame = source.load_frames(record, [position])[0]
        mask = source.load_masks(record, target, [position])[0]
        height, width = mask.shape
        if rng.random() < 0.75 and mask.any():  # a click on the object: segment it
            ys, xs = np.nonzero(mask)
            pick = int(rng.integers(ys.size))
            y, x, label, target_mask = ys[pick], xs[pick], 1, mask
        else:  # a lone negative click: nothing is asked for
            y, x = int(rng.integers(height)), int(rng.integers(width))
            label, target_mask = 0, np.zeros_like(mask)
        frames.append(frame)
        points.append([[[x * side / width, y * side / height]]])
        labels.append([[label]])
        masks.append(target_mask)
    pixels = sam_pixel_values(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), side)
    target = torch.from_numpy(np.stack(masks)).float().unsqueeze(1)
    target = torch.nn.functional.interpolate(target, size=(side, side), mode="nearest-exact")[:, 0]
    return pixels, torch.tensor(points, dtype=torch.float32), torch.tensor(labels), target
