"""Benchmark the training data pipeline: TrainDataset + LavidaProcessor.encode + collate.

Writes a synthetic dataset in a temporary folder (JPEG frames at a realistic size, 720×1280 by
default, and 'L' PNG object-id maps), then measures clips per second through a DataLoader with
``--workers`` worker processes, the way training reads data, and a per-stage breakdown in one process
(read frames, read masks, encode, collate).

The processor is the real one (Qwen2-VL patchifier with the offline byte-level tokenizer, CLIP's BPE
tokenizer) at the official pixel budgets and SAM2's 1024² input by default; ``--budget tiny`` uses the
tiny model's budgets (56²–112² px per frame, SAM side 128).

    python benchmarks/data.py                         # 70 % video / 30 % image, 2 workers
    python benchmarks/data.py --budget tiny --batches 30
    python benchmarks/data.py --height 480 --width 854

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lavida.data.exposure import AnomalyExposureSampler  # noqa: E402
from lavida.data.mixture import Mixture  # noqa: E402
from lavida.data.processor import IMAGE_BUDGET, TRAIN_VIDEO_BUDGET, LavidaProcessor, PixelBudget  # noqa: E402
from lavida.data.sources.base import SegmentationSource, SegRecord, SegTarget  # noqa: E402
from lavida.data.sources.masks import load_mask_spec  # noqa: E402
from lavida.data.train_dataset import TrainDataset  # noqa: E402
from lavida.number_checks import count_at_least  # noqa: E402

NAMES = [
    "dog",
    "car",
    "person",
    "bicycle",
    "horse",
    "umbrella",
    "boat",
    "a man in a red coat",
    "the left cat",
]


class SyntheticSource(SegmentationSource):
    """Records built by :func:`write_synthetic`, kept in memory (no manifest needed)."""

    name = "synthetic"
    is_video = True

    def __init__(self, root: Path, records: list[SegRecord], *, is_video: bool) -> None:
        super().__init__(root)
        self.records = records
        self.is_video = is_video

    def index(self):
        yield from self.records

    def load_masks(self, record, target, positions):
        return load_mask_spec(target.mask, positions, root=self.root, size=tuple(record.meta["size"]))


def write_synthetic(root: Path, *, items: int, frames: int, height: int, width: int, is_video: bool):
    """JPEG frames of smooth noise (so they compress like photos) with one moving object per item."""
    rng = np.random.default_rng(0)
    records = []
    yy, xx = np.mgrid[0:height, 0:width]
    for item in range(items):
        base = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        background = np.asarray(Image.fromarray(base).resize((width, height), Image.BILINEAR))
        frame_paths, label_paths = [], []
        for t in range(frames):
            cy, cx = height // 2, (width // 4 + 7 * t) % width
            inside = (yy - cy) ** 2 / (height / 8) ** 2 + (xx - cx) ** 2 / (width / 10) ** 2 <= 1
            frame = background.copy()
            frame[inside] = (220, 40, 40)
            frame_path = Path("frames") / f"{item:03d}" / f"{t:05d}.jpg"
            label_path = Path("labels") / f"{item:03d}" / f"{t:05d}.png"
            (root / frame_path).parent.mkdir(parents=True, exist_ok=True)
            (root / label_path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(root / frame_path, quality=90)
            Image.fromarray(inside.astype(np.uint8), mode="L").save(root / label_path)
            frame_paths.append(str(frame_path))
            label_paths.append(str(label_path))
        text = NAMES[item % len(NAMES)]
        target = SegTarget(
            text, {"kind": "index_png", "paths": label_paths, "values": [1]}, tuple(range(frames))
        )
        records.append(
            SegRecord(
                source="synthetic",
                key=f"{'v' if is_video else 'i'}{item}",
                group=f"{item}",
                frames=tuple(frame_paths),
                targets=(target,),
                present=(text,),
                is_video=is_video,
                meta={"size": [height, width]},
            )
        )
    return SyntheticSource(root, records, is_video=is_video)


def build_processor(budget: str) -> LavidaProcessor:
    import open_clip

    from lavida.models.qwen_processor import load_processor

    if budget == "tiny":
        tiny = PixelBudget(56 * 56, 112 * 112)
        budgets = dict(train_video_budget=tiny, test_video_budget=tiny, image_budget=tiny)
        side = 128
    else:
        budgets = dict(train_video_budget=TRAIN_VIDEO_BUDGET, image_budget=IMAGE_BUDGET)
        side = 1024
    return LavidaProcessor(
        qwen_processor=load_processor(None, family="qwen2_vl"),
        clip_tokenizer=open_clip.get_tokenizer("ViT-B-32"),
        sam_image_size=side,
        **budgets,
    )


def stage_times(dataset: TrainDataset, processor: LavidaProcessor, count: int) -> dict[str, float]:
    """Milliseconds per clip of each stage, in this process (one thread, like a worker)."""
    totals = {"read frames": 0.0, "read masks (anomalous clips only, in training)": 0.0, "encode": 0.0}
    encoded = []
    dataset.processor = None  # items carry the raw sample; the stages are re-run below with timers
    try:
        for index in range(count):
            item = dataset[index]
            source = dataset.sources[item.info.source]
            record = next(r for r in dataset.records[item.info.source] if r.key == item.info.key)
            positions = sorted(set(item.info.positions))
            start = time.perf_counter()
            source.load_frames(record, positions)
            totals["read frames"] += time.perf_counter() - start
            start = time.perf_counter()
            source.load_masks(record, record.targets[item.info.target], positions)
            totals["read masks (anomalous clips only, in training)"] += time.perf_counter() - start
            start = time.perf_counter()
            encoded.append(processor.encode(item.sample, train=True, rng=np.random.default_rng(index)))
            totals["encode"] += time.perf_counter() - start
    finally:
        dataset.processor = processor
    result = {key: 1000 * value / count for key, value in totals.items()}
    pairs = [encoded[i : i + 2] for i in range(0, len(encoded) - 1, 2)]
    start = time.perf_counter()
    for pair in pairs:
        processor.collate(pair)
    result["collate, per batch of 2"] = 1000 * (time.perf_counter() - start) / max(len(pairs), 1)
    return result


def measure_loader(loader, *, warmup: int) -> tuple[int, int, float]:
    """Clips and frames of the batches after the first ``warmup``, and the seconds they took to arrive.

    The clock restarts each time a warm-up batch has arrived, so it covers exactly the counted batches.
    """
    clips = frames = 0
    started = time.perf_counter()
    for number, batch in enumerate(loader):
        if number < warmup:
            started = time.perf_counter()
            continue
        clips += len(batch.items)
        frames += batch.batch.num_frames
    return clips, frames, time.perf_counter() - started


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    positive, non_negative = count_at_least(1), count_at_least(0)
    parser.add_argument("--height", type=positive, default=720)
    parser.add_argument("--width", type=positive, default=1280)
    parser.add_argument("--videos", type=positive, default=6)
    parser.add_argument("--frames", type=positive, default=40, help="frames per video")
    parser.add_argument("--images", type=positive, default=6)
    parser.add_argument("--video-share", type=float, default=0.7, help="mixture weight of videos")
    parser.add_argument("--budget", choices=["official", "tiny"], default="official")
    parser.add_argument("--workers", type=non_negative, default=2)
    parser.add_argument("--batch-size", type=positive, default=2)
    parser.add_argument("--batches", type=positive, default=20, help="timed batches")
    parser.add_argument("--warmup", type=non_negative, default=2, help="batches before timing starts")
    parser.add_argument("--stage-clips", type=positive, default=6, help="clips for the per-stage breakdown")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lavida-bench-data-") as folder:
        root = Path(folder)
        start = time.perf_counter()
        size = dict(height=args.height, width=args.width)
        videos = write_synthetic(
            root / "videos", items=args.videos, frames=args.frames, is_video=True, **size
        )
        images = write_synthetic(root / "images", items=args.images, frames=1, is_video=False, **size)
        written = time.perf_counter() - start
        processor = build_processor(args.budget)
        length = (args.warmup + args.batches) * args.batch_size
        dataset = TrainDataset(
            sources={"videos": videos, "images": images},
            records={"videos": videos.records, "images": images.records},
            mixture=Mixture({"videos": args.video_share, "images": 1 - args.video_share}),
            sampler=AnomalyExposureSampler(p=0.5, max_categories=30),
            processor=processor,
            length=length,
            seed=0,
        )
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            num_workers=args.workers,
            collate_fn=dataset.collate_fn,
            prefetch_factor=2 if args.workers else None,
        )
        clips, frames, elapsed = measure_loader(loader, warmup=args.warmup)
        torch.set_num_threads(1)
        stages = stage_times(dataset, processor, args.stage_clips)

    print(
        f"Synthetic data: {args.videos} videos × {args.frames} frames + {args.images} images at "
        f"{args.height}×{args.width} (JPEG q90), written in {written:.1f} s; budget {args.budget}; "
        f"{os.cpu_count()} CPUs, {args.workers} workers, batch {args.batch_size}, video share {args.video_share}."
    )
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| clips / s (DataLoader, {args.workers} workers) | {clips / elapsed:.2f} |")
    print(f"| frames / s | {frames / elapsed:.1f} |")
    print(f"| batches / s | {clips / elapsed / args.batch_size:.2f} |")
    for stage, ms in stages.items():
        unit = "ms" if stage.startswith("collate") else "ms per clip"
        print(f"| {stage}, {unit} (1 process, 1 thread) | {ms:.1f} |")


if __name__ == "__main__":
    main()
