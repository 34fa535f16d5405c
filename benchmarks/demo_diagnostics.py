"""Why the demo's frame scores stay flat: five measurements on the tiny SAM2 of a ``lavida-demo`` run.

LAVIDA's frame-level anomaly score is SAM2's object score (§3.8). The decoder's object token, like
the projector's category attention (Eq. 7), only sees SAM2's *top-level* features (8×8 for the tiny
model), so the demo can only learn frame scores if (1) those features say what an object is and
(2) the decoder can learn "is the prompted thing in this frame?" from them. This script measures both
on the SAM2 of a finished demo run (``<demo>/base_models/sam2``, after its pretraining) and the demo's
synthetic training set, in the order it prints them (docs/benchmarks.md lists the same five):

1. **Spread of the deepest level.** Its mean per-location norm and the mean distance of a location's
   feature from the frame's mean feature (near 0: every location carries the same vector).
2. **Linear probes.** For every object of sampled training frames, the feature vector of the cell
   it covers most is taken at each level (top 8×8, 16×16, 32×32), and a logistic regression
   (sklearn) predicts the object's colour and its shape from it (70 % of objects to fit, 30 % to
   score). Chance is about 1/8 for colour and 1/6 for shape.
3. **What one attribute buys.** On clips drawn by the demo's real training dataset (Anomaly Exposure
   Sampler, ``max_categories`` 8, strides 1 and 2), three rules decide each frame's presence label
   from the ground truth: "a listed category has the colour of a visible object", "... the shape ...",
   and "a listed category is a visible object" (exact, so it must score 1.0). The first two are the
   best any detector that sees only colour, or only shape, can do: the sampler's irrelevant
   categories often share a colour or a shape with a visible object. Also the frame AUC of the same
   rules on the demo's two test sets, and the frame BCE of the best predictor that sees only the
   number of listed categories (Eq. 1–2 list one fewer for a normal clip; ``--category-count
   matched`` removes that).
4. **Grounding probe and Eq. 7 head**, trained side by side on frozen features: the best
   category–location match (max-pooling keeps the match strength) and LAVIDA's own Eq. 7 attention
   read out as max_k w·f_a[k]. Reads the demo's trained model config (``train/final``);
   ``--grounding-steps 0`` skips it.
5. **Oracle prompts.** A copy of the decoder is trained as in LAVIDA (frozen encoder, B.2) but
   prompted by a learned embedding per training description instead of the projector: half the
   frames are asked for a visible object (its mask, presence 1), half for an absent description
   (empty mask, presence 0). It prints the object-score loss and the presence accuracy every 50
   steps. Chance: loss ln 2 = 0.693, accuracy 0.5. ``--steps 0`` skips it.

A folder that lacks any input (a demo killed midway) is refused before any work, naming what is missing.

Run from the repository root after a finished demo run::

    python benchmarks/demo_diagnostics.py outputs/demo
    python benchmarks/demo_diagnostics.py outputs/demo --steps 600 --class-weight 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lavida.data.config import DataConfig
from lavida.data.processor import sam_pixel_values
from lavida.data.sources.base import SegRecord, read_manifest
from lavida.data.sources.synthetic import SyntheticSource
from lavida.demo import STAND_INS_FILE
from lavida.losses import SegLossWeights, segmentation_loss
from lavida.models.mask_decoder import MultiLevelMaskDecoder, build_mask_decoder
from lavida.models.random_init import random_pretrained_paths
from lavida.number_checks import count_at_least
from lavida.synthetic.datasets import default_split
from lavida.synthetic.shapes import COLOURS, SHAPES, split_description


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
            colour, shape = split_description(target.text)
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


def demo_split(demo_dir: Path):
    """The category split the demo at ``demo_dir`` used: ``default_split`` of its seed (its training seed)."""
    run_config = demo_dir / "train" / "run_config.json"
    if not run_config.is_file():
        raise SystemExit(f"{run_config} does not exist: give the output_dir of a finished `lavida-demo` run.")
    return default_split(int(json.loads(run_config.read_text())["train"]["seed"]))


def demo_inputs(demo_dir: Path, *, grounding: bool) -> dict[Path, str]:
    """What :func:`main` reads from ``demo_dir``, each with what it is: a folder's file that the demo
    writes last stands for the whole folder.

    Args:
        grounding: Whether the grounding probe runs: it alone reads the trained model's config.
    """
    data, train = demo_dir / "data", demo_dir / "train"
    # SyntheticSource refuses a missing root, so only an existing one is asked where its manifest is.
    train_set = data / "synthetic_train"
    manifest = SyntheticSource(train_set).manifest_path() if train_set.is_dir() else train_set
    inputs = {
        demo_dir / "base_models" / "sam2" / "config.json": "the tiny SAM2 of the demo's base models",
        # Written once the stand-in pretraining has finished: without it base_models/sam2 may still hold
        # random weights, and every probe would describe an untrained encoder.
        demo_dir / "base_models" / STAND_INS_FILE: "the record of the finished stand-in pretraining",
        manifest: "the synthetic training set and its manifest",
        train / "run_config.json": "the training run's settings, whose seed gives the category split",
        data / "vad_seen" / "synthetic_layout.json": "the seen test set",
        data / "vad_unseen" / "synthetic_layout.json": "the unseen test set",
    }
    if grounding:
        inputs[train / "final" / "lavida_config.json"] = "the trained model, written when training ends"
        inputs[demo_clip_weights(demo_dir)] = "the tiny CLIP text weights of the demo's base models"
    return inputs


def demo_clip_weights(demo_dir: Path) -> Path:
    """The demo's pretrained tiny CLIP text tower, read from the demo folder itself (as its SAM2 is), not
    from the absolute path the trained model's config recorded: the folder may have been moved."""
    return random_pretrained_paths(demo_dir / "base_models")["text_encoder"]


def check_demo_dir(demo_dir: Path, *, grounding: bool) -> None:
    """Refuse, before any work, a folder that lacks something :func:`main` will read.

    A demo killed midway (or a folder that is no demo) otherwise failed minutes later, at the first
    missing file.

    Raises:
        SystemExit: naming every missing input, what it is and how to produce it.
    """
    inputs = demo_inputs(demo_dir, grounding=grounding)
    missing = [f"{path}: {what}" for path, what in inputs.items() if not path.exists()]
    model = demo_dir / "train" / "final" / "lavida_config.json"
    if not missing:
        return
    listed = "\n  ".join(missing)
    skip = " (--grounding-steps 0 skips the grounding probe, the only part that reads train/final)"
    raise SystemExit(
        f"{demo_dir} is not a finished `lavida-demo` run; missing:\n  {listed}\n"
        f"Rerun `lavida-demo output_dir={demo_dir}` with the settings it was started with to finish it (it "
        "reuses the data and base models there and resumes training), or give the output_dir of a "
        f"finished run{skip if grounding and not model.is_file() else ''}."
    )


def training_clips(
    source: SyntheticSource, *, clips: int, max_categories: int, seed: int, category_count: str = "paper"
):
    """The demo's real training dataset (Anomaly Exposure Sampler, strides 1 and 2), raw samples, ``clips`` long."""
    from lavida.data.train_dataset import build_train_dataset

    data = DataConfig.from_dict(
        {
            "sources": {"synthetic": {"weight": 1.0, "root": str(source.root)}},
            "max_categories": max_categories,
            "category_count": category_count,
            "strides": [1, 2],
            "num_workers": 0,
            "seed": seed,
            "samples_per_epoch": clips,
        }
    )
    return build_train_dataset(data, processor=None, sources={"synthetic": source})


def attribute_rules(categories: list[str] | tuple[str, ...], visible: list[str]) -> dict[str, bool]:
    """Presence decided by colour only, by shape only, and exactly, for "<colour> <shape>" descriptions.

    Args:
        categories: The listed categories.
        visible: Descriptions of the objects visible on the frame.
    """
    listed = [split_description(text) for text in categories]
    seen = [split_description(text) for text in visible]
    return {
        "colour": any(c[0] == v[0] for c in listed for v in seen),
        "shape": any(c[1] == v[1] for c in listed for v in seen),
        "exact": any(c == v for c in listed for v in seen),
    }


def count_only_bce(counts: np.ndarray, labels: np.ndarray) -> float:
    """Frame BCE of the best predictor that sees only the number of listed categories.

    It predicts, for each count, the share of positive frames among the frames with that count (the
    maximum-likelihood fit of such a predictor, scored on the same frames).

    Args:
        counts: (F,) number of listed categories of each frame's clip.
        labels: (F,) 0/1 frame labels.
    """
    counts, labels = np.asarray(counts), np.asarray(labels, dtype=np.float64)
    total = 0.0
    for count in np.unique(counts):
        chosen = labels[counts == count]
        rate = float(np.clip(chosen.mean(), 1e-12, 1 - 1e-12))
        total -= float((chosen * np.log(rate) + (1 - chosen) * np.log(1 - rate)).sum())
    return total / labels.size


def attribute_rule_accuracy(
    source: SyntheticSource,
    records: list[SegRecord],
    *,
    clips: int,
    max_categories: int,
    seed: int,
    category_count: str = "paper",
) -> dict[str, float]:
    """Frame accuracy of :func:`attribute_rules` against the training dataset's frame labels.

    Clips come from the real training dataset (the Anomaly Exposure Sampler with the demo's settings);
    each frame's visible objects are read from the ground-truth masks.

    Returns:
        ``{"colour", "shape", "exact": accuracy, "positive": fraction of frames labelled 1, "frames": n,
        "count_bce": BCE of the best count-only predictor (:func:`count_only_bce`), "constant_bce": BCE
        of the best constant}``.
    """
    dataset = training_clips(
        source, clips=clips, max_categories=max_categories, seed=seed, category_count=category_count
    )
    by_key = {record.key: record for record in records}
    hits: dict[str, list[bool]] = {"colour": [], "shape": [], "exact": []}
    labels, counts = [], []
    for index in range(clips):
        item = dataset[index]
        record = by_key[item.info.key]
        masks = {
            target.text: source.load_masks(record, target, list(item.info.positions)).reshape(
                len(item.info.positions), -1
            )
            for target in record.targets
        }
        for t, label in enumerate(item.sample.frame_labels):
            visible = [text for text, mask in masks.items() if mask[t].any()]
            for rule, decision in attribute_rules(item.sample.categories, visible).items():
                hits[rule].append(decision == bool(label))
            labels.append(bool(label))
            counts.append(len(item.sample.categories))
    return {
        **{rule: float(np.mean(values)) for rule, values in hits.items()},
        "positive": float(np.mean(labels)),
        "frames": float(len(labels)),
        "count_bce": count_only_bce(np.asarray(counts), np.asarray(labels)),
        "constant_bce": count_only_bce(np.zeros(len(labels)), np.asarray(labels)),
    }


def attribute_rule_test_auc(root: Path, categories: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Frame AUC (micro) of :func:`attribute_rules` on a synthetic VAD test set prompted with ``categories``.

    Each frame shows the video's normal objects that are visible on it, plus its anomaly on the frames
    labelled anomalous (``synthetic_layout.json``); a rule's yes/no is the frame's score (ties count half).
    """
    from sklearn.metrics import roc_auc_score

    layout = json.loads((root / "synthetic_layout.json").read_text())
    scores: dict[str, list[bool]] = {"colour": [], "shape": [], "exact": []}
    labels = []
    for name, info in sorted(layout.items()):
        if "normal_objects" not in info:
            raise ValueError(f"{root}/synthetic_layout.json lacks 'normal_objects': regenerate the test set.")
        truth = np.load(root / "testing" / "test_frame_mask" / f"{name}.npy")
        # A normal object drawn under a later one can be fully covered on some frames; layouts written
        # before "normal_visible" was recorded lack it, and there every normal object counts as visible
        # on every frame (what those layouts claimed).
        every_frame = range(len(truth))
        shown = {
            text: set(info.get("normal_visible", {}).get(text, every_frame))
            for text in info["normal_objects"]
        }
        for t, label in enumerate(truth):
            visible = [text for text in info["normal_objects"] if t in shown[text]]
            visible += [info["anomaly"]] if label else []
            for rule, decision in attribute_rules(categories, visible).items():
                scores[rule].append(decision)
            labels.append(bool(label))
    return {rule: float(roc_auc_score(labels, values)) for rule, values in scores.items()}


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
            supervise_all_iou=False,  # as the figures in docs/benchmarks.md were measured
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


class GroundingHead(torch.nn.Module):
    """Presence as the best category–location match: max_{k,l} ⟨g(v_l), W c_k⟩ / √d, scaled and shifted.

    The simplest detector that could use the stand-in features: a frame is anomalous when some listed
    category looks like some location. It is not LAVIDA's head; it tells whether the frozen features
    (SAM2's deepest level v, CLIP's category features c) carry what the projector must find.
    """

    def __init__(self, *, vision_dim: int, text_dim: int, dim: int = 64) -> None:
        super().__init__()
        self.vision = torch.nn.Sequential(
            torch.nn.Linear(vision_dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, dim)
        )
        self.text = torch.nn.Linear(text_dim, dim)
        self.scale = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        self.dim = dim

    def forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(T, L, vision_dim) locations of T frames and (K, text_dim) categories → (T,) logits."""
        match = torch.einsum("tld,kd->tkl", self.vision(vision), self.text(text)) / self.dim**0.5
        return self.scale[0] * match.flatten(1).amax(dim=1) + self.scale[1]


class Eq7PresenceHead(torch.nn.Module):
    """Presence read from LAVIDA's Eq. 7 alone: max_k w·f_a[k] + b, f_a from a fresh projector's attention.

    f_a[k] = W_o · CrossAttn(W_c c_k, W_v (v + pe), W_v (v + pe)) (Eq. 7; with ``eq7="official"`` in
    ``projector_kwargs``, W_o · LN(W_c c_k + CrossAttn(...))), exactly the projector's
    ``category_attention``. Softmax attention returns a
    convex combination of the values, so *how well* the best location matches category k is normalised
    away; presence must be recovered by comparing the query with what it attended to, a product that a
    linear read-out of f_a cannot form. Trained next to :class:`GroundingHead` on the same batches, it
    shows how much slower Eq. 7 learns presence than a head that keeps the match strength (max-pooling).
    """

    def __init__(self, *, projector_kwargs: dict, position: torch.Tensor) -> None:
        super().__init__()
        from lavida.models.projector import MultiScaleSemanticProjector

        self.projector = MultiScaleSemanticProjector(**projector_kwargs)
        self.readout = torch.nn.Linear(self.projector.hidden_dim, 1)
        self.register_buffer("position", position)  # (h·w, C) SAM2's sine encoding of the deepest level

    def forward(self, vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(T, L, vision_dim) locations of T frames and (K, text_dim) categories → (T,) logits."""
        frames = vision.shape[0]
        f_a = self.projector.category_attention(
            f_c=text[None],
            f_v=vision,
            f_v_pos=self.position.expand(frames, -1, -1),
            frame_to_sample=torch.zeros(frames, dtype=torch.long),
        )  # (T, K, D_a)
        return self.readout(f_a)[..., 0].amax(dim=1)


def train_grounding_probe(
    decoder: MultiLevelMaskDecoder,
    text_encoder,
    source: SyntheticSource,
    test_sets: dict[str, tuple[Path, list[str]]],
    *,
    steps: int,
    max_categories: int,
    seed: int,
    lr: float = 1e-3,
    every: int = 250,
    category_count: str = "paper",
    eq7_projector: dict | None = None,
    heads: dict[str, torch.nn.Module] | None = None,
) -> list[dict[str, float]]:
    """Train presence heads side by side on the demo's training clips (2 per step, frozen features).

    Args:
        category_count: The sampler's ``category_count`` (``paper`` or ``matched``).
        eq7_projector: Projector sizes (``model.projector`` of the demo's config, as
            ``MultiScaleSemanticProjector`` keywords): also train an :class:`Eq7PresenceHead` on the same
            batches, reported with the prefix ``eq7_``.
        heads: The heads to train instead, by report prefix; each maps (T, h·w, C) locations and (K, D_t)
            category features to (T,) presence logits. None: a fresh :class:`GroundingHead` (prefix "")
            and, with ``eq7_projector``, the :class:`Eq7PresenceHead`.

    Returns:
        Every ``every`` steps: the mean BCE of the window and the frame AUC (micro) on each test set.
    """
    from sklearn.metrics import roc_auc_score

    from lavida.data.video import open_video

    torch.manual_seed(seed)
    dataset = training_clips(
        source, clips=2 * steps, max_categories=max_categories, seed=seed, category_count=category_count
    )

    def locations(frames: np.ndarray) -> torch.Tensor:  # (T, H, W, 3) uint8 → (T, h·w, C)
        pixels = sam_pixel_values(torch.from_numpy(frames).permute(0, 3, 1, 2), decoder.image_size)
        with torch.no_grad():
            return decoder.encode_images(pixels).top.flatten(2).transpose(1, 2)

    def position() -> torch.Tensor:  # (h·w, C) the deepest level's sine encoding (the same for every frame)
        pixels = torch.zeros(1, 3, decoder.image_size, decoder.image_size)
        with torch.no_grad():
            return decoder.encode_images(pixels).tokens()[1][0]

    def categories(texts) -> torch.Tensor:
        with torch.no_grad():
            return text_encoder(text_encoder.tokenize(list(texts)))

    tests = {}
    for name, (root, texts) in test_sets.items():
        videos = []
        for folder in sorted((root / "testing" / "frames").iterdir()):
            truth = np.load(root / "testing" / "test_frame_mask" / f"{folder.name}.npy")
            videos.append((locations(open_video(folder).get_frames(np.arange(truth.size))), truth))
        tests[name] = (videos, categories(texts))

    if heads is None:
        vision_dim = locations(dataset[0].sample.frames[:1]).shape[-1]
        heads = {"": GroundingHead(vision_dim=vision_dim, text_dim=text_encoder.dim)}
        if eq7_projector is not None:
            sizes = {**eq7_projector, "vision_dim": vision_dim, "text_dim": text_encoder.dim}
            heads["eq7_"] = Eq7PresenceHead(projector_kwargs=sizes, position=position())
    optimizers = {prefix: torch.optim.AdamW(head.parameters(), lr=lr) for prefix, head in heads.items()}
    windows: dict[str, list[float]] = {prefix: [] for prefix in heads}
    rows = []
    for step in range(1, steps + 1):
        batch = []
        for item in (dataset[2 * step - 2], dataset[2 * step - 1]):
            sample = item.sample
            labels = torch.as_tensor(sample.frame_labels, dtype=torch.float32)
            batch.append((locations(sample.frames), categories(sample.categories), labels))
        for prefix, head in heads.items():
            loss = sum(F.binary_cross_entropy_with_logits(head(v, c), y) for v, c, y in batch) / len(batch)
            optimizers[prefix].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[prefix].step()
            windows[prefix].append(float(loss.detach()))
        if step % every == 0 or step == steps:
            row: dict[str, float] = {"step": step}
            with torch.no_grad():
                for prefix, head in heads.items():
                    row[prefix + "loss"] = float(np.mean(windows[prefix]))
                    windows[prefix] = []
                    for name, (videos, text) in tests.items():
                        scores = np.concatenate([head(v, text).numpy() for v, _ in videos])
                        truth = np.concatenate([t for _, t in videos])
                        row[prefix + name] = (
                            float(roc_auc_score(truth, scores))
                            if 0 < truth.sum() < truth.size
                            else float("nan")
                        )
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    positive, non_negative = count_at_least(1), count_at_least(0)
    parser.add_argument("demo_dir", type=Path, help="output_dir of a finished lavida-demo run")
    parser.add_argument("--probe-frames", type=positive, default=200, help="training frames for the probes")
    parser.add_argument(
        "--steps", type=non_negative, default=300, help="oracle-prompt training steps (0: skip)"
    )
    parser.add_argument("--batch-size", type=positive, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--class-weight", type=float, default=1.0, help="weight of the object-score loss")
    parser.add_argument(
        "--rule-clips", type=positive, default=400, help="training clips for the attribute rules"
    )
    parser.add_argument("--max-categories", type=positive, default=8, help="as the demo's max_categories")
    parser.add_argument(
        "--grounding-steps", type=non_negative, default=1500, help="grounding-probe steps (0: skip)"
    )
    parser.add_argument(
        "--category-count",
        choices=("paper", "matched"),
        default="paper",
        help="the sampler's category_count for the attribute rules and the probes",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    check_demo_dir(args.demo_dir, grounding=args.grounding_steps > 0)
    sam_dir = args.demo_dir / "base_models" / "sam2"
    train_root = args.demo_dir / "data" / "synthetic_train"
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

    rules = attribute_rule_accuracy(
        source,
        records,
        clips=args.rule_clips,
        max_categories=args.max_categories,
        seed=args.seed,
        category_count=args.category_count,
    )
    print(f"## Presence from one attribute: {rules['frames']:.0f} frames of the training dataset\n")
    print("| rule | frame accuracy |\n|---|---:|")
    for rule in ("colour", "shape", "exact"):
        print(f"| {rule} | {rules[rule]:.3f} |")
    print(f"| always the majority label | {max(rules['positive'], 1 - rules['positive']):.3f} |\n")
    print(
        f"Frame BCE of a predictor that sees only the number of listed categories: {rules['count_bce']:.3f} "
        f"(a constant: {rules['constant_bce']:.3f}; sampler category_count={args.category_count})\n"
    )
    split = demo_split(args.demo_dir)
    print("Frame AUC of the same rules on the demo's test sets:\n")
    print("| test set | colour | shape | exact |\n|---|---:|---:|---:|")
    for name, categories in (("seen", split.seen_anomalies), ("unseen", split.unseen_anomalies)):
        try:
            aucs = attribute_rule_test_auc(args.demo_dir / "data" / f"vad_{name}", categories)
        except (OSError, ValueError) as error:
            print(f"| {name} | {error} | | |")
            continue
        print(f"| {name} | {aucs['colour']:.3f} | {aucs['shape']:.3f} | {aucs['exact']:.3f} |")
    print()

    if args.grounding_steps:
        from lavida.models.config import LavidaConfig
        from lavida.models.text_encoder import build_category_encoder

        model_config = LavidaConfig.from_dict(
            json.loads((args.demo_dir / "train" / "final" / "lavida_config.json").read_text())
        )
        config = model_config.text_encoder
        text_encoder = build_category_encoder(
            model_name=config.model_name, pretrained=str(demo_clip_weights(args.demo_dir)), arch=config.arch
        )
        # The demo's projector sizes as constructor keywords; Eq. 7 does not read f_sem (llm_dim unused).
        eq7 = {
            key: value for key, value in dataclasses.asdict(model_config.projector).items() if key != "kind"
        }
        eq7["llm_dim"] = 1
        test_sets = {
            name: (args.demo_dir / "data" / f"vad_{name}", list(categories))
            for name, categories in (("seen", split.seen_anomalies), ("unseen", split.unseen_anomalies))
        }
        print(
            f"## Grounding probe (max category–location match) and Eq. 7 head (max_k w·f_a[k]) on frozen "
            f"features, {args.grounding_steps} steps\n"
        )
        print(
            "| step | BCE max-match | AUC seen | AUC unseen | BCE Eq. 7 | AUC seen | AUC unseen |\n"
            "|---:|---:|---:|---:|---:|---:|---:|"
        )
        for row in train_grounding_probe(
            decoder,
            text_encoder,
            source,
            test_sets,
            steps=args.grounding_steps,
            max_categories=args.max_categories,
            seed=args.seed,
            category_count=args.category_count,
            eq7_projector=eq7,
        ):
            print(
                f"| {row['step']} | {row['loss']:.3f} | {row['seen']:.3f} | {row['unseen']:.3f} "
                f"| {row['eq7_loss']:.3f} | {row['eq7_seen']:.3f} | {row['eq7_unseen']:.3f} |"
            )
        print(
            "\nchance: frame AUC 0.5; BCE of a constant score = the label entropy (0.68 at 43 % positives)\n"
        )

    if args.steps:
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
