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

The descriptions split into "seen" categories, drawn from the training descriptions, and held-out ones
that never appear in training at all, so zero-shot detection of unseen categories is measured
separately. Training objects are drawn at random from all training descriptions, so a small training
set may contain no object of some seen category, or only objects hidden on every frame (which are no
training targets): ``untrained_categories`` names them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lavida.atomic import write_json
from lavida.data.sources.base import SegRecord
from lavida.synthetic.shapes import SceneObject, all_descriptions, random_object, render

# The generators' arithmetic sets these minima (checked by the specs below, named in their errors):
# a video draws late entries from [0, frames // 2), which is empty below 2 frames;
MIN_VIDEO_FRAMES = 2
# an anomalous interval is int(0.25 · frames) to int(0.6 · frames) frames long, empty below 4 frames;
MIN_VAD_FRAMES = 4
# an object is 8–9 pixels wide in the smallest frames (shapes.random_object) and must fit inside.
MIN_SIDE = 9


@dataclass(frozen=True)
class CategorySplit:
    """Which descriptions train, which are test anomalies, and which are never seen.

    Attributes:
        train: Descriptions used as training objects (targets and distractors).
        seen_anomalies: Test anomaly categories taken from ``train``. Training objects are drawn at
            random from all of ``train``, so they are training targets only where the training set
            contains them: each occurs 9–13 times at lavida-demo's default size, but a small set may
            miss some (:func:`untrained_categories`; lavida-demo warns and says so in its report).
        unseen_anomalies: Test anomaly categories never shown in training.
        normal: Objects of normal test scenes, taken from ``train`` (so, as the seen ones, in training
            where the set contains them) and never listed in a test prompt.
    """

    train: tuple[str, ...]
    seen_anomalies: tuple[str, ...]
    unseen_anomalies: tuple[str, ...]
    normal: tuple[str, ...]


def default_split(
    seed: int = 0, *, num_unseen: int = 6, num_seen: int = 6, num_normal: int = 6
) -> CategorySplit:
    """A split where every colour and shape of the unseen categories still occurs in training combinations.

    Raises:
        ValueError: a size below 1, more seen + normal categories than training descriptions remain, or
            no split within 1,000 tries keeps every unseen colour and shape in training.
    """
    descriptions = all_descriptions()
    for name, value in (("num_unseen", num_unseen), ("num_seen", num_seen), ("num_normal", num_normal)):
        if value < 1:
            raise ValueError(f"default_split: {name}={value} is too small; it must be at least 1.")
    train_count = len(descriptions) - num_unseen
    if num_seen + num_normal > train_count:
        # seen and normal are disjoint slices of the training descriptions; a short slice would give
        # fewer categories than asked for, silently.
        raise ValueError(
            f"default_split: {num_seen} seen + {num_normal} normal categories, but num_unseen={num_unseen} "
            f"leaves {train_count} training descriptions of {len(descriptions)} to take them from: lower "
            "num_unseen, num_seen or num_normal."
        )
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        order = rng.permutation(len(descriptions))
        unseen = [descriptions[i] for i in order[:num_unseen]]
        train = [descriptions[i] for i in order[num_unseen:]]
        words = {word for text in train for word in text.split()}
        if all(set(text.split()) <= words for text in unseen):
            break
    else:
        # Zero-shot on unseen categories relies on their words being trained in other combinations.
        raise ValueError(
            f"default_split: num_unseen={num_unseen} of {len(descriptions)} descriptions leaves no split "
            "(1,000 tried) in which every colour and shape of an unseen category occurs in training: "
            "lower num_unseen."
        )
    seen = train[:num_seen]
    normal = train[num_seen : num_seen + num_normal]
    return CategorySplit(tuple(train), tuple(seen), tuple(unseen), tuple(normal))


@dataclass
class SegmentationSetSpec:
    """Size of the synthetic training set.

    Attributes:
        videos, images: How many videos and one-frame images (≥ 0 each).
        frames: Frames per video (≥ :data:`MIN_VIDEO_FRAMES`).
        height, width: Frame size in pixels (≥ :data:`MIN_SIDE`).
        max_objects: Objects per entry are drawn from 1..max_objects (≥ 1, and at most the number of
            training descriptions, checked by :func:`write_segmentation_set`).
        seed: Seed of the whole set.
    """

    videos: int = 120
    images: int = 60
    frames: int = 16
    height: int = 96
    width: int = 128
    max_objects: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, videos=0, images=0, frames=MIN_VIDEO_FRAMES, height=MIN_SIDE, width=MIN_SIDE)
        check_at_least(self, max_objects=1)


def write_segmentation_set(root: str | Path, split: CategorySplit, spec: SegmentationSetSpec) -> Path:
    """Write the training segmentation set (videos and images of training objects) under ``root``."""
    if spec.max_objects > len(split.train):
        raise ValueError(
            f"SegmentationSetSpec: max_objects={spec.max_objects} but the split has {len(split.train)} "
            f"training descriptions and one entry shows each at most once: set max_objects to at most "
            f"{len(split.train)}."
        )
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


def untrained_categories(records: Iterable[SegRecord], split: CategorySplit) -> dict[str, list[str]]:
    """The seen anomaly and normal categories that are no training target in ``records``.

    Args:
        records: The training set's records as ``lavida.data.sources.synthetic.SyntheticSource`` indexes
            them (or its manifest): an object that later objects hide on every frame is no target there.

    Returns:
        ``{"seen": [description, ...], "normal": [description, ...]}`` in the split's order; empty lists
        when every one of them is a training target.
    """
    targets = {target.text for record in records for target in record.targets}
    return {
        "seen": [text for text in split.seen_anomalies if text not in targets],
        "normal": [text for text in split.normal if text not in targets],
    }


def check_at_least(spec, **minima: int) -> None:
    """Raise a ValueError naming the first of ``spec``'s settings (attributes) below its minimum."""
    for name, minimum in minima.items():
        value = getattr(spec, name)
        if value < minimum:
            raise ValueError(
                f"{type(spec).__name__}: {name}={value} is too small; it must be at least {minimum}."
            )


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
    """Size of one synthetic VAD test set (ShanghaiTech layout).

    Attributes:
        anomalous_videos, normal_videos: How many videos of each kind (≥ 0 each).
        frames: Frames per video (≥ :data:`MIN_VAD_FRAMES` when there are anomalous videos, else ≥ 1).
        height, width: Frame size in pixels (≥ :data:`MIN_SIDE`).
        normal_objects: (lo, hi): each video shows lo..hi normal objects, 1 ≤ lo ≤ hi (and hi at most the
            number of normal categories, checked by :func:`write_vad_set`).
        seed: Seed of the whole set.
    """

    anomalous_videos: int = 6
    normal_videos: int = 4
    frames: int = 48
    height: int = 96
    width: int = 128
    normal_objects: tuple[int, int] = (1, 2)
    seed: int = 1

    def __post_init__(self) -> None:
        check_at_least(self, anomalous_videos=0, normal_videos=0, height=MIN_SIDE, width=MIN_SIDE)
        check_at_least(self, frames=MIN_VAD_FRAMES if self.anomalous_videos > 0 else 1)
        low, high = self.normal_objects
        if not 1 <= low <= high:
            raise ValueError(
                f"VadSetSpec: normal_objects={tuple(self.normal_objects)} must be (lo, hi) with 1 ≤ lo ≤ hi "
                "normal objects per video."
            )


def write_vad_set(
    root: str | Path, *, anomalies: tuple[str, ...], normal: tuple[str, ...], spec: VadSetSpec
) -> dict:
    """Write a VAD test set in the ShanghaiTech Campus layout under ``root``.

    Every video draws 1–2 normal objects (``spec.normal_objects``) on every frame; anomalous videos add
    one object of an anomaly category on a contiguous interval covering 25–60 % of the video. Objects
    drawn later are on top, so a normal object can be fully covered on some frames, by another normal
    object or by the intruder: ``normal_visible`` records the frames where it is seen.

    Returns:
        ``{video name: {"anomaly": description or None, "interval": [start, end) or None,
        "normal_objects": [description, ...], "normal_visible": {description: [frame index, ...]}}}``
        (also written to ``<root>/synthetic_layout.json``), where ``normal_visible`` lists the frames on
        which at least one pixel of each normal object is visible.

    Raises:
        ValueError: A category is both an anomaly and normal, more normal objects are asked for than there
            are normal categories, or anomalous videos have no anomaly category.
    """
    high = spec.normal_objects[1]
    if high > len(normal):
        raise ValueError(
            f"VadSetSpec: normal_objects={tuple(spec.normal_objects)} asks for up to {high} distinct normal "
            f"objects per video, but there are at most {len(normal)} normal categories: lower hi."
        )
    if spec.anomalous_videos > 0 and not anomalies:
        raise ValueError(
            f"write_vad_set: {spec.anomalous_videos} anomalous videos but no anomaly categories were given."
        )
    both = sorted(set(anomalies) & set(normal))
    if both:
        raise ValueError(
            f"write_vad_set: {', '.join(both)} is both an anomaly and a normal category; a normal object of "
            "it would be labelled normal. Give disjoint categories."
        )
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
        # Read from the rendered ids: ≥ 1 pixel of the object on top, frame by frame.
        visible = (ids[:, :, :, None] == np.arange(1, count + 1)).any(axis=(1, 2))  # (T, count)
        layout[name] = {
            "anomaly": anomaly,
            "interval": list(interval) if interval else None,
            "normal_objects": names,  # drawn on every frame, though maybe covered on some
            "normal_visible": {text: np.flatnonzero(visible[:, k]).tolist() for k, text in enumerate(names)},
        }
    write_json(root / "synthetic_layout.json", layout, indent=1)  # last and atomic, as meta.json above
    return layout
