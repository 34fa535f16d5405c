"""Benchmark: what opening each test benchmark costs at its real size, on synthetic trees of tiny files.

Writes the five test sets in their official layouts (as ``tests/eval/trees.py`` does, at the real
sizes) with tiny files: 8×8 frames, masks and id maps by default, 16×16 mp4s of a few frames. Then, per
benchmark, times ``get_benchmark(name, root)`` plus its ``videos()`` (the load) and a pass over every
video's ground truth the way ``lavida.eval.runner`` reads it (the ``standard`` protocol's clip plan,
the labels of the scored frames and, on benchmarks with pixel ground truth, ``pixel_masks`` of the
scored frames in chunks of ``EvalSettings.pixel_chunk``), and counts the file operations of one more
pass: image and ``.npy`` reads (and the files read more than once), raw opens, ``stat`` calls, directory
listings and videos opened with the decoder. ``--memory`` adds what the loaded benchmark holds.

Real sizes (``research/vad_eval.md`` §1): UCSD Ped2 12 clips, 2,010 frames with one mask each;
ShanghaiTech 107 frame folders, 40,791 frames, ``(F, H, W)`` pixel masks; UBnormal the 211 test videos
of the shipped split lists (158 abnormal) with ~89,900 id maps; UCF-Crime 290 videos; XD-Violence 800.

    python benchmarks/benchmark_loaders.py                         # all five, trees in a temporary folder
    python benchmarks/benchmark_loaders.py --only ucsd_ped2 --size 240 360
    python benchmarks/benchmark_loaders.py --root /tmp/loader-trees --keep --profile 20  # reuses kept trees

With tiny files the figures are the loaders' own overhead (listing, parsing, per-file opens, Python),
not decoding: real masks and videos add their decoding time. The trees are read from the page cache.
Prints a markdown table; ``--profile N`` also prints each benchmark's top N functions by cumulative
time (cProfile). ``--keep`` keeps the trees in ``<root>/<tree>-HxW``, where a later ``--keep`` run reuses
them; each appears there only once complete (:func:`tree_folder`). Without it every tree is written
afresh and removed at the end.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import cProfile
import io
import logging
import os
import pstats
import shutil
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

import lavida.data.video as video_module
import lavida.eval.benchmarks._common as common_module
from lavida.data.video import write_video
from lavida.eval.benchmark import VadBenchmark, plan_clips
from lavida.eval.benchmarks import get_benchmark
from lavida.eval.benchmarks._common import resource
from lavida.eval.settings import EvalSettings
from lavida.number_checks import count_at_least

CHUNK = EvalSettings().pixel_chunk

# UCSD Ped2's 12 test clips (2,010 frames) and their UCSDped2.m ranges (1-based, inclusive; the file is
# quoted in tests/eval/test_loader_labels.py): 1,651 anomalous frames.
PED2_CLIPS = [
    (180, (61, 180)),
    (180, (95, 180)),
    (150, (1, 146)),
    (180, (31, 180)),
    (150, (1, 129)),
    (180, (1, 162)),
    (180, (46, 180)),
    (180, (1, 180)),
    (120, (1, 120)),
    (150, (1, 150)),
    (180, (1, 180)),
    (180, (88, 180)),
]
SHANGHAITECH_VIDEOS, SHANGHAITECH_FRAMES = 107, 40_791
UBNORMAL_FRAMES = 89_908  # the 211 test videos' id maps (research/vad_eval.md §1.1)
UCF_CLASSES = ["Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting"]


def _image_bytes(array: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


def _box(size: tuple[int, int], value: int) -> np.ndarray:
    """(H, W) uint8 zeros with ``value`` on a box in the upper-left quarter."""
    array = np.zeros(size, np.uint8)
    array[: max(1, size[0] // 4), : max(1, size[1] // 4)] = value
    return array


def _write_many(paths: list[Path], data: bytes) -> None:
    for path in paths:
        path.write_bytes(data)


def write_ucsd_ped2(root: Path, size: tuple[int, int]) -> None:
    test = root / "UCSDped2" / "Test"
    frame = _image_bytes(np.full(size, 90, np.uint8), "TIFF")
    blank, box = _image_bytes(_box(size, 0), "BMP"), _image_bytes(_box(size, 255), "BMP")
    lines = ["TestVideoFile = {};"]
    for number, (frames, (first, last)) in enumerate(PED2_CLIPS, start=1):
        clip, gt = test / f"Test{number:03d}", test / f"Test{number:03d}_gt"
        clip.mkdir(parents=True)
        gt.mkdir()
        _write_many([clip / f"{t:03d}.tif" for t in range(1, frames + 1)], frame)
        for t in range(1, frames + 1):
            (gt / f"{t:03d}.bmp").write_bytes(box if first <= t <= last else blank)
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{first}:{last}];")
    (test / "UCSDped2.m").write_text("\n".join(lines) + "\n")


def write_shanghaitech(root: Path, size: tuple[int, int]) -> None:
    testing = root / "testing"
    frame = _image_bytes(np.full((*size, 3), 90, np.uint8), "JPEG")
    for folder in ("test_frame_mask", "test_pixel_mask"):
        (testing / folder).mkdir(parents=True)
    base, extra = divmod(SHANGHAITECH_FRAMES, SHANGHAITECH_VIDEOS)
    for k in range(SHANGHAITECH_VIDEOS):
        name = f"{k % 12 + 1:02d}_{k + 1:04d}"
        frames = base + (k < extra)
        folder = testing / "frames" / name
        folder.mkdir(parents=True)
        _write_many([folder / f"{t:03d}.jpg" for t in range(frames)], frame)
        labels = np.zeros(frames, np.uint8)
        if k % 2 == 0:  # about half the test videos are anomalous
            labels[frames // 3 : 2 * frames // 3] = 1
        pixel = labels[:, None, None] * _box(size, 1)[None]
        np.save(testing / "test_frame_mask" / f"{name}.npy", labels)
        np.save(testing / "test_pixel_mask" / f"{name}.npy", pixel)


def _tiny_video(folder: Path, frames: int) -> Path:
    """One tiny mp4, copied for every video (opening it is what the loaders pay, not its content)."""
    return write_video(folder / "template.mp4", np.full((frames, 16, 16, 3), 90, np.uint8), fps=30)


def write_ubnormal(root: Path, size: tuple[int, int]) -> None:
    lists = resource("ubnormal")
    abnormal = (lists / "abnormal_test_video_names.txt").read_text().split("\n")
    normal = (lists / "normal_test_video_names.txt").read_text().split("\n")
    names = [(n, True) for n in abnormal if n and not n.startswith("#")]
    names += [(n, False) for n in normal if n and not n.startswith("#")]
    template = _tiny_video(root, 8)
    person = _box(size, 2)  # a normal person (object 2) in every map
    with_anomaly = person.copy()
    with_anomaly[-max(1, size[0] // 4) :, -max(1, size[1] // 4) :] = 1  # the anomalous object 1
    person_png, anomaly_png = _image_bytes(person, "PNG"), _image_bytes(with_anomaly, "PNG")
    base, extra = divmod(UBNORMAL_FRAMES, len(names))
    for k, (name, is_abnormal) in enumerate(names):
        scene = root / f"Scene{name.split('_')[2]}"
        annotations = scene / f"{name}_annotations"
        annotations.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, scene / f"{name}.mp4")
        frames = base + (k < extra)
        start, end = frames // 3, 2 * frames // 3
        for t in range(frames):
            inside = is_abnormal and start <= t <= end
            (annotations / f"{name}_{t:04d}_gt.png").write_bytes(anomaly_png if inside else person_png)
        if is_abnormal:
            (annotations / f"{name}_tracks.txt").write_text(f"1,{start},{end}\n")
    template.unlink()


def write_ucf_crime(root: Path, size: tuple[int, int]) -> None:
    template = _tiny_video(root, 32)
    lines = []
    for k in range(140):
        label = UCF_CLASSES[k % len(UCF_CLASSES)]
        name = f"{label}{k:03d}_x264.mp4"
        folder = root / "Anomaly-Videos" / label
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, folder / name)
        lines.append(f"{name}  {label}  4  12  {'20  28' if k % 3 == 0 else '-1  -1'}")
    (root / "Testing_Normal_Videos_Anomaly").mkdir()
    for k in range(150):
        name = f"Normal_Videos_{k:03d}_x264.mp4"
        shutil.copyfile(template, root / "Testing_Normal_Videos_Anomaly" / name)
        lines.append(f"{name}  Normal  -1  -1  -1  -1")
    (root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text("\n".join(lines) + "\n")
    template.unlink()


def write_xd_violence(root: Path, size: tuple[int, int]) -> None:
    test = root / "XD-Violence-test"
    (test / "videos").mkdir(parents=True)
    template = _tiny_video(root, 32)
    lines = []
    for k in range(800):
        violent = k < 500
        name = f"Movie.{k:03d}__#00-01-{k % 60:02d}_label_{'B1-0-0' if violent else 'A'}"
        shutil.copyfile(template, test / "videos" / f"{name}.mp4")
        if violent:
            lines.append(f"{name} 2 9" + (" 15 20 24 30" if k % 3 == 0 else ""))
    (test / "annotations.txt").write_text("\n".join(lines) + "\n")
    template.unlink()


WRITERS: dict[str, Callable[[Path, tuple[int, int]], None]] = {
    "ucsd_ped2": write_ucsd_ped2,
    "shanghaitech": write_shanghaitech,
    "ubnormal": write_ubnormal,
    "ucf_crime": write_ucf_crime,
    "xd_violence": write_xd_violence,
}


# Rows of the table: (benchmark, constructor options, tree). ShanghaiTech's pixel metrics are off by
# default; the second row switches them on (evaluation then reads the pixel masks too).
RUNS = {
    "ucsd_ped2": ("ucsd_ped2", {}, "ucsd_ped2"),
    "shanghaitech": ("shanghaitech", {}, "shanghaitech"),
    "shanghaitech_pixel": ("shanghaitech", {"pixel_metrics": True}, "shanghaitech"),
    "ubnormal": ("ubnormal", {}, "ubnormal"),
    "ucf_crime": ("ucf_crime", {}, "ucf_crime"),
    "xd_violence": ("xd_violence", {}, "xd_violence"),
}


def open_and_read(name: str, root: Path, options: dict) -> tuple[float, float, float, VadBenchmark]:
    """Load the benchmark and read every video's ground truth as the runner does.

    Returns:
        (load seconds, ground-truth seconds, CPU seconds of both, all threads, the benchmark).
    """
    cpu = time.process_time()
    t0 = time.perf_counter()
    bench = get_benchmark(name, root, **options)
    protocol = bench.protocol("standard")
    videos = bench.select(protocol)
    bench.missing_under(protocol)
    t1 = time.perf_counter()
    for video in videos:
        plan = plan_clips(
            video.num_frames,
            interval=protocol.interval,
            clip_length=protocol.clip_length,
            drop_tail=protocol.drop_tail,
        )
        video.frame_labels[plan.scored]  # the labels the runner scores
        if bench.has_pixel_gt and video.pixel_masks is not None:
            for start in range(0, plan.scored.size, CHUNK):
                video.pixel_masks(plan.scored[start : start + CHUNK])
    return t1 - t0, time.perf_counter() - t1, time.process_time() - cpu, bench


@contextlib.contextmanager
def counting_files() -> Iterator[dict[str, Counter]]:
    """Count, by path: image and ``.npy`` reads (``PIL.Image.open``, ``np.load``), raw file opens (Pillow
    opens a raw BMP twice, to map it; a memory-mapped ``np.load`` twice too), ``stat`` calls, directory
    listings and videos opened with the decoder."""
    counts: dict[str, Counter] = {kind: Counter() for kind in ("read", "open", "stat", "listdir", "video")}

    def wrap(function: Callable, kind: str) -> Callable:
        def counted(path, *args, **kwargs):
            counts[kind][os.fspath(path) if isinstance(path, str | os.PathLike) else repr(path)] += 1
            return function(path, *args, **kwargs)

        return counted

    patches = [
        (Image, "open", "read"),
        (np, "load", "read"),
        (builtins, "open", "open"),
        (io, "open", "open"),
        (os, "stat", "stat"),
        (os, "listdir", "listdir"),
        (os, "scandir", "listdir"),
        (video_module, "open_video", "video"),
        (common_module, "open_video", "video"),
    ]
    saved = [(owner, attribute, getattr(owner, attribute)) for owner, attribute, _ in patches]
    try:
        for owner, attribute, kind in patches:
            setattr(owner, attribute, wrap(getattr(owner, attribute), kind))
        yield counts
    finally:
        for owner, attribute, original in saved:
            setattr(owner, attribute, original)


def measure(run: str, root: Path, repeat: int, memory: bool) -> dict:
    """Seconds (best of ``repeat`` passes), file counts (one more pass) and, with ``memory``, what the
    loaded benchmark holds after the ground-truth pass (tracemalloc, one more pass) of one row."""
    name, options, _ = RUNS[run]
    timings = [open_and_read(name, root, options) for _ in range(repeat)]
    load, truth, cpu, bench = min(timings, key=lambda t: t[0] + t[1])
    videos = bench.videos()
    del timings
    with counting_files() as counts:
        open_and_read(name, root, options)
    held = None
    if memory:
        tracemalloc.start()
        *_, kept = open_and_read(name, root, options)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del kept
    reads = counts["read"]
    return {
        "benchmark": run,
        "videos": len(videos),
        "frames": sum(v.num_frames for v in videos),
        "load": load,
        "truth": truth,
        "cpu": cpu,
        "reads": sum(reads.values()),
        "files read": len(reads),
        "read >1": sum(1 for n in reads.values() if n > 1),
        "opens": sum(counts["open"].values()),
        "stat": sum(counts["stat"].values()),
        "listings": sum(counts["listdir"].values()),
        "videos opened": sum(counts["video"].values()),
        "held": held,
    }


def tree_folder(base: Path, tree: str, size: tuple[int, int], *, keep: bool) -> tuple[Path, bool]:
    """Where ``tree`` at ``size`` is read from, written first unless ``keep`` finds it complete.

    A tree is written into a temporary sibling (``.<tree>-HxW.tmp-*``) and, with ``keep``, renamed to
    ``<base>/<tree>-HxW`` only once its writer has finished, so that name only ever holds a complete
    tree: one interrupted midway (Ctrl-C, an error, a full disk) is removed, and one killed outright
    leaves only a hidden ``.tmp-`` folder that no run reads. Without ``keep`` nothing there is reused
    (an existing ``<tree>-HxW`` is left as it is) and the tree stays in its temporary sibling, which the
    caller removes.

    Returns:
        (the tree's folder, whether this call wrote it).
    """
    final = base / f"{tree}-{size[0]}x{size[1]}"
    if keep and final.is_dir():
        return final, False
    base.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=base, prefix=f".{final.name}.tmp-"))
    try:
        WRITERS[tree](temporary, size)
    except BaseException:  # Ctrl-C included: half a tree must not be left where a run could read it
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if not keep:
        return temporary, True
    temporary.rename(final)  # one rename: <tree>-HxW appears complete or not at all
    return final, True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    positive, non_negative = count_at_least(1), count_at_least(0)
    parser.add_argument("--only", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument(
        "--size", type=positive, nargs=2, default=(8, 8), metavar=("H", "W"), help="image size"
    )
    parser.add_argument("--root", type=Path, help="where to write the trees (default: a temporary folder)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the trees in <root>/<tree>-HxW and reuse those a finished run left there "
        "(without it, every tree is written afresh and removed at the end)",
    )
    parser.add_argument("--repeat", type=positive, default=3, help="timed passes; the best is printed")
    parser.add_argument(
        "--profile", type=non_negative, default=0, metavar="N", help="print the top N functions"
    )
    parser.add_argument(
        "--memory", action="store_true", help="also measure the memory the loaded benchmark holds (slow)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    size = tuple(args.size)

    base = args.root or Path(tempfile.mkdtemp(prefix="lavida-loaders-"))
    written: list[Path] = []  # removed at the end unless --keep (never the --root folder itself)
    trees: dict[str, Path] = {}  # shanghaitech's tree serves two rows
    rows = []
    try:
        for run in args.only:
            name, options, tree = RUNS[run]
            if tree not in trees:
                t0 = time.perf_counter()
                trees[tree], wrote = tree_folder(base, tree, size, keep=args.keep)
                if wrote:
                    written.append(trees[tree])
                    print(f"wrote {trees[tree]} in {time.perf_counter() - t0:.1f} s", flush=True)
            root = trees[tree]
            rows.append(measure(run, root, args.repeat, args.memory))
            if args.profile:
                profile = cProfile.Profile()
                profile.runcall(open_and_read, name, root, options)
                print(f"\n{run}: top {args.profile} by cumulative time")
                pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
    finally:
        if not args.keep:
            for root in written:
                shutil.rmtree(root, ignore_errors=True)
            if args.root is None:
                shutil.rmtree(base, ignore_errors=True)

    print(f"\nimages {size[0]}x{size[1]}; seconds: best of {args.repeat}; counts: one more pass\n")
    columns = (
        "| benchmark | videos | frames | load s | ground truth s | total s | CPU s | image/npy reads | files read "
        "| read >1 | raw opens | stat | dir listings | videos opened |"
    )
    print(columns + (" held MiB |" if args.memory else ""))
    print("|---|" + "---:|" * (13 + args.memory))
    for row in rows:
        cells = [
            row["benchmark"],
            row["videos"],
            f"{row['frames']:,}",
            f"{row['load']:.2f}",
            f"{row['truth']:.2f}",
            f"{row['load'] + row['truth']:.2f}",
            f"{row['cpu']:.2f}",
            *(f"{row[key]:,}" for key in ("reads", "files read", "read >1", "opens", "stat", "listings")),
            f"{row['videos opened']:,}",
        ]
        if args.memory:
            cells.append(f"{row['held'] / 2**20:.1f}")
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
