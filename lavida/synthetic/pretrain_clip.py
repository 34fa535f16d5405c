"""Contrastive image–text pretraining of the tiny CLIP on the synthetic training objects.

LAVIDA's category features f_c come from a *pretrained*, frozen CLIP text tower (Eq. 6, B.5): "red
circle" and "red square" get features that share what "red" means, which is what lets the projector
(Eq. 7) match categories never seen in training. The tiny stand-in tower of the demo has random
weights, whose features mix the words arbitrarily. Like the real CLIP (trained on image–text pairs),
the tiny CLIP is therefore first trained the CLIP way — a symmetric contrastive loss between its image
tower and its text tower — on crops of the synthetic *training* objects and their descriptions. Only
its text tower is saved back (the only part LAVIDA loads), and it stays frozen from then on.

Only training descriptions are used; the held-out categories' words occur in other training
combinations (``default_split``), never as a pair.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from lavida.atomic import atomic_path
from lavida.data.sources.base import SegRecord, read_manifest
from lavida.data.sources.synthetic import SyntheticSource
from lavida.models.text_encoder import load_clip_text_weights, quiet_open_clip, register_clip_config

log = logging.getLogger(__name__)


def pretrain_clip(
    clip_file: str | Path,
    train_root: str | Path,
    *,
    model_name: str,
    arch: dict,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Train the tiny CLIP whose text tower is saved in ``clip_file``; save the text tower back in place.

    Args:
        clip_file: open_clip text-tower state dict (``.safetensors``), as ``write_random_pretrained``
            writes it; its image tower starts from random weights and is discarded afterwards.
        train_root: The synthetic training set (with its manifest).
        model_name, arch: The open_clip model name and config (``model.text_encoder``).
        steps: Optimizer steps.
        batch_size: Object crops per step, each with a distinct description (so every other text of
            the batch is a true negative).
        lr: AdamW learning rate.
        seed: Seed of the sampling and of the image tower's initialisation.

    Returns:
        The mean contrastive loss and the text→image top-1 accuracy of the last 50 steps, and of the
        first 10 (``initial_loss``, ``initial_accuracy``).
    """
    import open_clip

    if steps < 1:
        raise ValueError(
            f"steps must be at least 1, got {steps} (the returned losses average the last steps)."
        )
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    register_clip_config(model_name, arch)
    with quiet_open_clip(keep_random_notice=False):  # the text tower's weights are loaded just below
        clip = open_clip.create_model(model_name, pretrained=None, device=torch.device("cpu"))
        tokenizer = open_clip.get_tokenizer(model_name)
    visual = clip.visual  # random; the file holds the text tower only (its loader expects no image tower)
    del clip.visual
    load_clip_text_weights(clip, str(clip_file))
    clip.visual = visual
    clip.train()
    side = clip.visual.image_size
    side = side[0] if isinstance(side, tuple | list) else int(side)
    source = SyntheticSource(train_root)
    instances = _instances(read_manifest(source.manifest_path()))
    if len(instances) < 2:
        raise ValueError(
            f"{source.manifest_path()}: contrastive pretraining needs at least 2 distinct object descriptions, "
            f"found {len(instances)}; regenerate the synthetic training set (lavida.synthetic.datasets)."
        )
    texts = sorted(instances)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).reshape(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=1e-4)
    history: list[tuple[float, float]] = []
    for _ in tqdm(range(steps), desc="pretrain tiny CLIP", unit="step"):
        chosen = rng.choice(len(texts), size=min(batch_size, len(texts)), replace=False)
        names = [texts[i] for i in chosen]
        images = torch.stack([_crop(source, instances[name], side, rng) for name in names])
        images = (images - mean) / std  # CLIP's image normalisation
        image_features = torch.nn.functional.normalize(clip.encode_image(images), dim=-1)
        text_features = torch.nn.functional.normalize(clip.encode_text(tokenizer(names)), dim=-1)
        logits = clip.logit_scale.exp() * text_features @ image_features.T  # (B texts, B images)
        target = torch.arange(len(names))
        loss = 0.5 * (
            torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(logits.T, target)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, np.log(100))  # CLIP's cap on the temperature
        history.append((float(loss.detach()), float((logits.argmax(dim=1) == target).float().mean())))
    state = {key: value.detach().contiguous() for key, value in clip.state_dict().items()}
    text_state = {key: value for key, value in state.items() if not key.startswith("visual.")}
    with atomic_path(clip_file) as temporary:
        save_file(text_state, str(temporary))
    loss, accuracy = np.mean(history[-50:], axis=0)
    initial_loss, initial_accuracy = np.mean(history[:10], axis=0)
    final = {
        "loss": float(loss),
        "accuracy": float(accuracy),
        "initial_loss": float(initial_loss),
        "initial_accuracy": float(initial_accuracy),
    }
    log.info("Pretrained the tiny CLIP for %d steps: %s", steps, final)
    return final


def _instances(records: list[SegRecord]) -> dict[str, list[tuple[SegRecord, int]]]:
    """Description → every (record, target index) carrying it."""
    found: dict[str, list[tuple[SegRecord, int]]] = {}
    for record in records:
        for index, target in enumerate(record.targets):
            found.setdefault(target.text, []).append((record, index))
    return found


def _crop(
    source: SyntheticSource, candidates: list[tuple[SegRecord, int]], side: int, rng: np.random.Generator
) -> torch.Tensor:
    """A visible instance of one description: its bounding box (plus a 2-pixel margin) as (3, side, side)
    in [0, 1]."""
    for _ in range(100):
        record, index = candidates[int(rng.integers(len(candidates)))]
        position = int(rng.integers(len(record.frames)))
        mask = source.load_masks(record, record.targets[index], [position])[0]
        if mask.any():
            break
    else:
        raise ValueError(
            f"{source.root}: no visible instance of '{record.targets[index].text}' found in 100 draws."
        )
    frame = source.load_frames(record, [position])[0]
    ys, xs = np.nonzero(mask)
    top, bottom = max(ys.min() - 2, 0), min(ys.max() + 3, mask.shape[0])
    left, right = max(xs.min() - 2, 0), min(xs.max() + 3, mask.shape[1])
    crop = torch.from_numpy(frame[top:bottom, left:right]).permute(2, 0, 1).float()[None] / 255.0
    return torch.nn.functional.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False)[0]
