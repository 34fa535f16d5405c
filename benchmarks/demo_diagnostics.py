"""Why the demo's frame scores stay flat: two measurements on the tiny SAM2 of a ``lavida-demo`` run.

LAVIDA's frame-level anomaly score is SAM2's object score (§3.8). The decoder's object token, like
the projector's category attention (Eq. 7), only sees SAM2's *top-level* features (8×8 for the tiny
model), so the demo can only learn frame scores if (1) those features say what an object is and
(2) the decoder can learn "is the prompted thing in this frame?" from them. This script measures both
on the SAM2 of a finished demo run (``<demo>/base_models/sam2``, after its pretraining) and the demo's
synthetic training set:

1. **Linear probes.** For every object of sampled training frames, the feature vector of the cell
   it covers most is taken at each level (top 8×8, 16×16, 32×32), and a logistic regression
   (sklearn) predicts the object's colour and its shape from it (70 % of objects to fit, 30 % to
   score). Chance is about 1/8 for colour and 1/6 for shape.
2. **Oracle prompts.** A copy of the decoder is trained as in LAVIDA (frozen encoder, B.2) but
   prompted by a learned embedding per training description instead of the projector: half the
   frames are asked for a visible object (its mask, presence 1), half for an absent description
   (empty mask, presence 0). It prints the object-score loss and the presence accuracy every 50
   steps. Chance: loss ln 2 = 0.693, accuracy 0.5.

Run from the repository root after a demo run::

    python benchmarks/demo_diagnostics.py outputs/demo
    python benchmarks/demo_diagnostics.py outputs/demo --steps 600 --class-weight 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lavida.data.processor import sam_pixel_values
from lavida.data.sources.base import SegRecord, read_manifest
from lavida.data.sources.synthetic import SyntheticSource
from lavida.losses import SegLossWeights, segmentation_loss
from lavida.models.mask_decoder import MultiLevelMaskDecoder, build_mask_decoder
from lavida.synthetic.shapes import COLOURS, SHAPES


def probe_levels(
    decoder: MultiLevelMaskDecoder,
    source: SyntheticSource,
    records: list[SegRecord],
    *,
    frames: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Held-out accuracy of linear colour and shape probes on each feature level.

    Returns:
        ``{level: {"colour": accuracy, "shape": accuracy, "objects": count}}`` with levels ``top``,
        ``mid`` and ``high`` (lowest to highest resolution).
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    features: dict[str, list[np.ndarray]] = {"top": [], "mid": [], "high": []}
    colours, shapes = [], []
    for index in rng.choice(len(records), size=min(frames, len(records)), replace=False):
        record = records[int(index)]
        frame = source.load_frames(record, [0])[0]
        pixels = sam_pixel_values(torch.from_numpy(frame[None]).permute(0, 3, 1, 2), decoder.image_size)
        with torch.no_grad():
            levels = decoder.sam.vision_encoder(pixels).fpn_hidden_states  # high → low resolution
        named = {"high": levels[0][0], "mid": levels[1][0], "top": levels[-1][0]}  # each (C, h, w)
        for target in record.targets:
            mask = source.load_masks(record, target, [0])[0]
            if not mask.any():
                continue
            area = torch.from_numpy(mask).float()[None, None]
            for name, level in named.items():
                cover = F.adaptive_avg_pool2d(area, level.shape[-2:]).flatten()  # fraction of each cell
                features[name].append(level.flatten(1)[:, int(cover.argmax())].numpy())
            colour, shape = target.text.split(" ", 1)
            colours.append(colour)
            shapes.append(shape)
    fit = np.arange(len(colours)) < int(0.7 * len(colours))
    results = {}
    for name, rows in features.items():
        x = np.stack(rows)
        results[name] = {"objects": float(len(rows))}
        for label, y in (("colour", np.array(colours)), ("shape", np.array(shapes))):
            classifier = LogisticRegression(max_iter=2000).fit(x[fit], y[fit])
            results[name][label] = float(classifier.score(x[~fit], y[~fit]))
    return results


def deepest_level_spread(decoder: MultiLevelMaskDecoder, pixels: torch.Tensor) -> tuple[float, float]:
    """Mean per-location norm of the deepest level and its mean distance from the frame's mean feature.

    A spread near 0 means every location carries the same vector: the decoder's tokens and the
    projector's category attention then see no difference between places.
    """
    with torch.no_grad():
        top = decoder.encode_images(pixels).top.flatten(2)  # (N, C, h·w)
    spread = (top - top.mean(dim=2, keepdim=True)).norm(dim=1).mean()
    return float(top.norm(dim=1).mean()), float(spread)


def presence_batch(
    source: SyntheticSource,
    records: list[SegRecord],
    texts: list[str],
    *,
    size: int,
    side: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Frames with one description each: a visible object's (p = 0.5) or an absent training description's.

    Returns:
        pixels (B, 3, S, S), description indices (B,) into ``texts``, target masks (B, S/4, S/4) at the
        decoder's mask resolution (all zero when the description is absent), and each frame's
        (record index, frame position).
    """
    frames, chosen, masks, origins = [], [], [], []
    while len(frames) < size:
        index = int(rng.integers(len(records)))
        record = records[index]
        position = int(rng.integers(len(record.frames)))
        frame = source.load_frames(record, [position])[0]
        visible = {}
        for target in record.targets:
            mask = source.load_masks(record, target, [position])[0]
            if mask.any():
                visible[target.text] = mask
        if visible and rng.random() < 0.5:
            text = sorted(visible)[int(rng.integers(len(visible)))]
            mask = visible[text]
        else:
            absent = [t for t in texts if t not in visible]
            text = absent[int(rng.integers(len(absent)))]
            mask = np.zeros(frame.shape[:2], dtype=bool)
        frames.append(frame)
        chosen.append(texts.index(text))
        masks.append(mask)
        origins.append((index, position))
    pixels = sam_pixel_values(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), side)
    target = torch.from_numpy(np.stack(masks)).float()[:, None]
    target = F.interpolate(target, size=(side // 4, side // 4), mode="nearest-exact")[:, 0]
    return pixels, torch.tensor(chosen), target, origins


def train_oracle(
    decoder: MultiLevelMaskDecoder,
    source: SyntheticSource,
    records: list[SegRecord],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    class_weight: float,
    seed: int,
) -> list[dict[str, float]]:
    """Train ``decoder`` with one learned prompt per training description; the means of every 50 steps.

    Each row has the object-score loss, the dice loss, the presence accuracy and ``logit_std``, the
    spread of the object-score logits across a batch's frames (≈ 0 when the score ignores its input).
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    texts = sorted({target.text for record in records for target in record.targets})
    prompts = torch.nn.Embedding(len(texts), decoder.prompt_embedding.in_features)
    weights = SegLossWeights(loss_class=class_weight)
    params = [p for p in decoder.parameters() if p.requires_grad] + list(prompts.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-5)
    decoder.train()
    window, rows = [], []
    for step in range(1, steps + 1):
        pixels, chosen, target, _ = presence_batch(
            source, records, texts, size=batch_size, side=decoder.image_size, rng=rng
        )
        out = decoder(decoder.encode_images(pixels), prompts(chosen))
        losses = segmentation_loss(
            mask_logits=out.mask_logits,
            iou_pred=out.iou_pred,
            object_logits=out.object_logits,
            target_masks=target,
            weights=weights,
        )
        optimizer.zero_grad(set_to_none=True)
        losses["loss_seg"].backward()
        optimizer.step()
        present = target.flatten(1).any(dim=1)
        accuracy = ((out.object_logits > 0) == present).float().mean()
        spread = out.object_logits.detach().std()
        window.append(
            (losses["loss_class"].item(), losses["loss_dice"].item(), accuracy.item(), spread.item())
        )
        if step % 50 == 0 or step == steps:
            mean = np.mean(window, axis=0)
            rows.append(
                {
                    "step": step,
                    "loss_class": mean[0],
                    "loss_dice": mean[1],
                    "accuracy": mean[2],
                    "logit_std": mean[3],
                }
            )
            window = []
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo_dir", type=Path, help="output_dir of a finished lavida-demo run")
    parser.add_argument("--probe-frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300, help="oracle-prompt training steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--class-weight", type=float, default=1.0, help="weight of the object-score loss")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sam_dir = args.demo_dir / "base_models" / "sam2"
    train_root = args.demo_dir / "data" / "synthetic_train"
    for path in (sam_dir, train_root):
        if not path.is_dir():
            raise SystemExit(f"{path} does not exist: give the output_dir of a finished `lavida-demo` run.")
    source = SyntheticSource(train_root)
    records = read_manifest(source.manifest_path())
    # The oracle prompts are as wide as SAM2's prompt tokens (any width works: B.5's Linear maps them).
    width = json.loads((sam_dir / "config.json").read_text())["prompt_encoder_config"]["hidden_size"]
    decoder = build_mask_decoder(pretrained=str(sam_dir), prompt_dim=width)

    frames = np.stack([source.load_frames(record, [0])[0] for record in records[:32]])
    pixels = sam_pixel_values(torch.from_numpy(frames).permute(0, 3, 1, 2), decoder.image_size)
    norm, spread = deepest_level_spread(decoder, pixels)
    print(f"## Deepest level: per-location norm {norm:.2f}, spatial spread {spread:.3f}\n")
    print("## Linear probes (held-out accuracy)\n")
    print("| level | objects | colour | shape |\n|---|---:|---:|---:|")
    for name, row in probe_levels(decoder, source, records, frames=args.probe_frames, seed=args.seed).items():
        print(f"| {name} | {row['objects']:.0f} | {row['colour']:.2f} | {row['shape']:.2f} |")
    print(f"\nchance: colour {1 / len(COLOURS):.2f}, shape {1 / len(SHAPES):.2f}\n")

    print(f"## Oracle prompts: {args.steps} steps of {args.batch_size} frames, lr {args.lr}\n")
    print(
        "| step | object-score loss | presence accuracy | logit std | dice loss |\n|---:|---:|---:|---:|---:|"
    )
    started = time.perf_counter()
    for row in train_oracle(
        decoder,
        source,
        records,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        class_weight=args.class_weight,
        seed=args.seed,
    ):
        print(
            f"| {row['step']} | {row['loss_class']:.3f} | {row['accuracy']:.3f} | {row['logit_std']:.4f} "
            f"| {row['loss_dice']:.3f} |"
        )
    print(f"\nchance: loss {np.log(2):.3f}, accuracy 0.500; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
