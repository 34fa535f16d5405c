"""The embedded synthetic benchmark: a segmentation training set and zero-shot VAD test sets.

Training data (``write_segmentation_set``) is segmentation data in the spirit of YouTube-VOS: videos
and images of coloured shapes, each object with a text description and per-frame masks::

    <root>/meta.json                       {"videos": {id: {"objects": {"1": "red circle", ...}, ...}}}
    <root>/JPEGImages/<id>/00000.jpg ...   frames (images are one-frame entries)
    <root>/Annotations/<id>/00000.png ...  palette PNGs, pixel value = object id

It is read by ``lavida.data.sources.synthetic.SyntheticSource`` and goes through the real Anomaly
Exposure Sampler like any dataset.

Test data (``write_vad_set``) is a VAD benchmark in the ShanghaiTech Campus layout, evaluated by the
real ShanghaiTech loader and evaluation runner: normal videos show "normal" objects moving about; in
anomalous videos an object of an anomaly category appears for a while. Frame and pixel ground truth
are exact.

The descriptions split into categories seen as training targets and held-out ones that never appear
in training at all, so zero-shot detection of unseen categories is measured separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lavida.atomic import write_json
from lavida.synthetic.shapes import SceneObject, all_descriptions, random_object, render


@dataclass(frozen=True)
class CategorySplit:
    """Which descriptions train, which are test anomalies, and which are never seen.

    Attributes:
        train: Descriptions used as training objects (targets and distractors).
        seen_anomalies: Test anomaly categories that are also training targets.
        unseen_anomalies: Test anomaly categories never shown in training.
        normal: Objects of normal test scenes (seen in training, never listed in a test prompt).
    """

    train: tuple[str, ...]
    seen_anomalies: tuple[str, ...]
    unseen_anomalies: tuple[str, ...]
    normal: tuple[str, ...]


def default_split(
    seed: int = 0, *, num_unseen: int = 6, num_seen: int = 6, num_normal: int = 6
) -> CategorySplit:
    """A split where every colour and shape of the unseen categories still occurs in training combinations."""
    rng = np.random.default_rng(seed)
    descriptions = all_descriptions()
    for _ in range(1000):
        order = rng.permutation(len(descriptions))
        unseen = [descriptions[i] for i in order[:num_unseen]]
        train = [descriptions[i] for i in order[num_unseen:]]
        words = {word for text in train for word in text.split()}
        if all(set(text.split()) <= words for text in unseen):
            break
    seen = train[:num_seen]
    normal = train[num_seen : num_seen + num_normal]
    return CategorySplit(tuple(train), tuple(seen), tuple(unseen), tuple(normal))


@dataclass
class SegmentationSetSpec:
    """Size of the synthetic training set."""

    videos: int = 120
    images: int = 60
    frames: int = 16
    height: int = 96
    width: int = 128
    max_objects: int = 3
    seed: int = 0


def write_segmentation_set(root: str | Path, split: CategorySplit, spec: SegmentationSetSpec) -> Path:
    """Write the training segmentation set (videos and images of training objects) under ``root``."""
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    meta: dict = {"version": 1, "videos": {}, "images": {}}
    entries = [("videos", f"v{i:04d}", spec.frames) for i in range(spec.videos)]
    entries += [("images", f"i{i:04d}", 1) for i in range(spec.images)]
    for kind, key, frames in entries:
        count = int(rng.integers(1, spec.max_objects + 1))
        names = [split.train[i] for i in rng.choice(len(split.train), size=count, replace=False)]
        objects = [
            random_object(n, height=spec.height, width=spec.width, frames=frames, rng=rng) for n in names
        ]
        if kind == "videos":
            for obj in objects:  # objects may enter late or leave early, so some frames lack them
                if rng.random() < 0.3:
                    obj.appear = int(rng.integers(0, frames // 2))
                if rng.random() < 0.3:
                    obj.disappear = int(rng.integers(frames // 2, frames + 1))
        video, ids = render(objects, height=spec.height, width=spec.width, frames=frames, rng=rng)
        _write_frames(root, key, video, ids)
        meta[kind][key] = {
            "objects": {str(i + 1): o.description for i, o in enumerate(objects)},
            "frames": frames,
        }
    # Written last and atomically: its presence marks a finished set (lavida-demo resumes on it).
    write_json(root / "meta.json", meta, indent=1)
    return root


def _write_frames(root: Path, key: str, video: np.ndarray, ids: np.ndarray) -> None:
    image_dir = root / "JPEGImages" / key
    mask_dir = root / "Annotations" / key
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    palette = [0, 0, 0] + [
        v for i in range(1, 256) for v in ((i * 67) % 256, (i * 131) % 256, (i * 199) % 256)
    ]
    for t, (frame, label) in enumerate(zip(video, ids, strict=True)):
        Image.fromarray(frame).save(image_dir / f"{t:05d}.jpg", quality=95)
        mask = Image.fromarray(label, mode="P")
        mask.putpalette(palette)
        mask.save(mask_dir / f"{t:05d}.png")


@dataclass
class VadSetSpec:
    """Size of one synthetic VAD test set (ShanghaiTech layout)."""

    anomalous_videos: int = 6
    normal_videos: int = 4
    frames: int = 48
    height: int = 96
    width: int = 128
    normal_objects: tuple[int, int] = (1, 2)
    seed: int = 1


def write_vad_set(
    root: str | Path, *, anomalies: tuple[str, ...], normal: tuple[str, ...], spec: VadSetSpec
) -> dict:
    """Write a VAD test set in the ShanghaiTech Campus layout under ``root``.

    Every video shows 1–2 normal objects throughout; anomalous videos add one object of an anomaly
    category on a contiguous interval covering 25–60 % of the video.

    Returns:
        ``{video name: {"anomaly": description or None, "interval": [start, end) or None,
        "normal_objects": [description, ...]}}`` (also written to ``<root>/synthetic_layout.json``).
    """
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    frames_dir = root / "testing" / "frames"
    frame_gt = root / "testing" / "test_frame_mask"
    pixel_gt = root / "testing" / "test_pixel_mask"
    for folder in (frames_dir, frame_gt, pixel_gt):
        folder.mkdir(parents=True, exist_ok=True)
    layout: dict = {}
    kinds = ["anomalous"] * spec.anomalous_videos + ["normal"] * spec.normal_videos
    for number, kind in enumerate(kinds, start=1):
        name = f"01_{number:04d}"  # ShanghaiTech's <scene>_<video> naming
        count = int(rng.integers(spec.normal_objects[0], spec.normal_objects[1] + 1))
        names = [normal[i] for i in rng.choice(len(normal), size=count, replace=False)]
        objects: list[SceneObject] = [
            random_object(n, height=spec.height, width=spec.width, frames=spec.frames, rng=rng) for n in names
        ]
        anomaly = interval = None
        if kind == "anomalous":
            anomaly = anomalies[(number - 1) % len(anomalies)]
            length = int(rng.integers(int(0.25 * spec.frames), int(0.6 * spec.frames) + 1))
            start = int(rng.integers(0, spec.frames - length + 1))
            interval = (start, start + length)
            intruder = random_object(
                anomaly, height=spec.height, width=spec.width, frames=spec.frames, rng=rng
            )
            intruder.appear, intruder.disappear = interval
            objects.append(intruder)
        video, ids = render(objects, height=spec.height, width=spec.width, frames=spec.frames, rng=rng)
        anomalous_id = len(objects) if anomaly is not None else -1
        pixel_mask = (ids == anomalous_id).astype(np.uint8)  # (T, H, W)
        folder = frames_dir / name
        folder.mkdir(exist_ok=True)
        for t, frame in enumerate(video):
            Image.fromarray(frame).save(folder / f"{t:03d}.jpg", quality=95)
        np.save(frame_gt / f"{name}.npy", pixel_mask.reshape(spec.frames, -1).any(axis=1).astype(np.uint8))
        np.save(pixel_gt / f"{name}.npy", pixel_mask)
        layout[name] = {
            "anomaly": anomaly,
            "interval": list(interval) if interval else None,
            "normal_objects": names,  # visible on every frame
        }
    write_json(root / "synthetic_layout.json", layout, indent=1)  # last and atomic, as meta.json above
    return layout
