"""Promptable-segmentation pretraining of the tiny SAM2 on the synthetic shapes.

LAVIDA starts from a *pretrained* SAM2 (B.5): its frozen encoder sees, and its decoder turns prompt
tokens into masks and object scores. The tiny stand-in model of the demo has random weights, which do
neither — its decoder ignores prompt tokens whose differences are small, so the projector never gets
a learning signal. Like the real SAM2 (trained on SA-1B with clicks), the tiny SAM2 is therefore first
trained on the synthetic training images with point prompts: a click inside an object asks for that
object (its mask, object score 1); a lone negative click asks for nothing (empty mask, object score 0).
Only then is it frozen (encoder) and fine-tuned (decoder) as the paper prescribes.

Clicks alone teach the encoder where objects are, not what they are: after click pretraining a linear
probe reads an object's shape from the deepest level barely above chance (docs/benchmarks.md). The real
encoder (Hiera, pretrained on ImageNet and SA-1B) does encode what things look like, and LAVIDA relies
on it: the projector (Eq. 7) and the decoder's object token only read that level. So the stand-in
pretraining also trains every location of the deepest level to predict, through linear heads that are
discarded afterwards, the colour and the shape of what covers it (area-weighted soft labels, background
included). Colour and shape are separate heads: no colour × shape combination is ever a class, so the
categories held out of training stay unseen.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lavida.atomic import atomic_dir
from lavida.data.processor import sam_pixel_values
from lavida.data.sources.base import read_manifest
from lavida.data.sources.synthetic import SyntheticSource
from lavida.losses import SegLossWeights, segmentation_loss
from lavida.synthetic.shapes import COLOURS, SHAPES, split_description

log = logging.getLogger(__name__)


def pretrain_sam(
    sam_dir: str | Path,
    train_root: str | Path,
    *,
    steps: int = 400,
    batch_size: int = 16,
    lr: float = 2e-3,
    encoder_lr_scale: float = 1.0,
    semantic_weight: float = 3.0,
    seed: int = 0,
) -> dict[str, float]:
    """Train the SAM2 saved in ``sam_dir`` with point prompts on the synthetic set; save it back in place.

    Args:
        encoder_lr_scale: Learning-rate multiplier of the image encoder. Trained on clicks alone at the
            full rate, the deepest level degenerates within ~50 steps into one large constant vector
            (per-location norm ~150 against a spatial variation of ~0.1): the mask path does not mind
            (it reads the high-resolution levels), but every decoder token then attends to the same
            thing. The colour and shape heads (``semantic_weight`` > 0) keep the locations apart at the
            full rate; with ``semantic_weight=0`` use 0.1.
        semantic_weight: Weight of the per-location colour and shape cross-entropy on the deepest level
            (see the module docstring); 0 trains with clicks only.

    Returns:
        The mean losses of the last 50 steps, and of the first 10 as ``initial_<name>``.
    """
    from transformers import Sam2Model

    if steps < 1:
        raise ValueError(
            f"steps must be at least 1, got {steps} (the returned losses average the last steps)."
        )
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    sam = Sam2Model.from_pretrained(str(sam_dir), local_files_only=True).train()
    source = SyntheticSource(train_root)
    records = read_manifest(source.manifest_path())
    side = sam.config.prompt_encoder_config.image_size
    encoder = [p for name, p in sam.named_parameters() if name.startswith("vision_encoder.")]
    rest = [p for name, p in sam.named_parameters() if not name.startswith("vision_encoder.")]
    width = sam.config.vision_config.fpn_hidden_size
    grid = tuple(sam.config.vision_config.backbone_feature_sizes[-1])  # (h, w) of the deepest level
    # Linear read-outs of the deepest level, used only here (+1: background).
    heads = torch.nn.Conv2d(width, len(COLOURS) + len(SHAPES) + 2, kernel_size=1)
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder, "lr": lr * encoder_lr_scale},
            {"params": rest + list(heads.parameters()), "lr": lr},
        ],
        weight_decay=1e-4,
    )
    history: list[dict[str, float]] = []
    for _ in tqdm(range(steps), desc="pretrain tiny SAM2", unit="step"):
        pixels, points, labels, masks, semantics = _batch(source, records, batch_size, side, grid, generator)
        embeddings = _image_embeddings(sam, pixels)
        output = sam(
            image_embeddings=embeddings, input_points=points, input_labels=labels, multimask_output=True
        )
        losses = segmentation_loss(
            mask_logits=output.pred_masks[:, 0],
            iou_pred=output.iou_scores[:, 0],
            object_logits=output.object_score_logits.reshape(-1),
            target_masks=masks,
            weights=SegLossWeights(),
            # The IoU loss on the best mask only, as when this stand-in was measured (docs/benchmarks.md);
            # LAVIDA's own training supervises all masks (SAM2's training configs).
            supervise_all_iou=False,
        )
        losses["loss_semantic"] = _semantic_loss(heads(embeddings[-1]), semantics)
        total = losses["loss_seg"] + semantic_weight * losses["loss_semantic"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        history.append({key: float(value.detach()) for key, value in losses.items()})
    with atomic_dir(sam_dir) as staging:  # a kill leaves the old weights or the new, never half a file
        sam.save_pretrained(str(staging))
    final = {key: float(np.mean([h[key] for h in history[-50:]])) for key in history[-1]}
    final.update({f"initial_{key}": float(np.mean([h[key] for h in history[:10]])) for key in history[0]})
    log.info("Pretrained the tiny SAM2 for %d steps: %s", steps, final)
    return final


def _image_embeddings(sam, pixels: torch.Tensor) -> list[torch.Tensor]:
    """What ``Sam2Model.forward`` computes from pixels, with gradients (``get_image_embeddings`` has none).

    Returns:
        The feature maps, high → low resolution, each (B, C_l, h_l, w_l); the deepest (last) one has
        SAM2's "no memory" embedding added.
    """
    maps = sam.get_image_features(pixels, return_dict=True).fpn_hidden_states  # each (h·w, B, C)
    maps[-1] = maps[-1] + sam.no_memory_embedding
    sizes = sam.config.vision_config.backbone_feature_sizes
    return [
        m.permute(1, 2, 0).reshape(pixels.shape[0], -1, *size) for m, size in zip(maps, sizes, strict=True)
    ]


def _semantic_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft-label cross-entropy of the colour and the shape heads, averaged over locations.

    Args:
        logits: (B, colours + 1 + shapes + 1, h, w) head outputs on the deepest level.
        targets: (B, same, h, w) area fractions: the colour block and the shape block each sum to 1.
    """
    split = len(COLOURS) + 1
    loss = logits.new_zeros(())
    for block in (slice(0, split), slice(split, None)):
        log_probs = torch.log_softmax(logits[:, block], dim=1)
        loss = loss - (targets[:, block] * log_probs).sum(dim=1).mean()
    return loss


def _semantic_targets(ids: np.ndarray, names: list[str], side: int, grid: tuple[int, int]) -> torch.Tensor:
    """Area fractions of each colour and shape (background included) in every cell of ``grid``.

    Args:
        ids: (H, W) int, 0 = background, i = the object described by ``names[i - 1]``.
        names: "<colour> <shape>" descriptions.
        side: SAM2's input side S (the frame is resized to S×S as for the encoder).
        grid: (h, w) of the deepest level.

    Returns:
        (colours + 1 + shapes + 1, h, w) float32.
    """
    colour_ids = np.zeros(len(names) + 1, dtype=np.int64)  # 0 = background
    shape_ids = np.zeros(len(names) + 1, dtype=np.int64)
    for i, name in enumerate(names, start=1):
        colour, shape = split_description(name)
        colour_ids[i] = list(COLOURS).index(colour) + 1
        shape_ids[i] = SHAPES.index(shape) + 1
    ids_t = torch.from_numpy(ids.astype(np.int64))
    onehots = [
        torch.nn.functional.one_hot(torch.from_numpy(table)[ids_t], count).permute(2, 0, 1).float()
        for table, count in ((colour_ids, len(COLOURS) + 1), (shape_ids, len(SHAPES) + 1))
    ]
    stacked = torch.cat(onehots)[None]  # (1, K, H, W)
    stacked = torch.nn.functional.interpolate(stacked, size=(side, side), mode="nearest-exact")
    return torch.nn.functional.adaptive_avg_pool2d(stacked, grid)[0]


def _batch(
    source: SyntheticSource,
    records,
    batch_size: int,
    side: int,
    grid: tuple[int, int],
    rng: np.random.Generator,
):
    """Frames, one click each, the target masks (S×S) and the semantic targets of the deepest level.

    Clicks are on objects, or lone negative clicks.
    """
    frames, points, labels, masks, semantics = [], [], [], [], []
    while len(frames) < batch_size:
        record = records[int(rng.integers(len(records)))]
        position = int(rng.integers(len(record.frames)))
        chosen = int(rng.integers(len(record.targets)))
        frame = source.load_frames(record, [position])[0]
        every = [source.load_masks(record, other, [position])[0] for other in record.targets]
        mask = every[chosen]
        height, width = mask.shape
        ids = np.zeros((height, width), dtype=np.int64)
        for number, other_mask in enumerate(every, start=1):  # later objects drawn on top
            ids[other_mask] = number
        semantics.append(_semantic_targets(ids, [t.text for t in record.targets], side, grid))
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
    return (
        pixels,
        torch.tensor(points, dtype=torch.float32),
        torch.tensor(labels),
        target,
        torch.stack(semantics),
    )
