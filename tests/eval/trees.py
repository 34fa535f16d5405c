"""Tiny test sets written in the five benchmarks' official layouts, for the loader and runner tests.

Each ``write_<benchmark>_tree(root)`` writes a few 32×48 videos (a handful of frames each) with
hand-placed anomalies and returns a :class:`WrittenTree`: the root to give the benchmark, the expected
frame labels and pixel masks per video, and the paths of the ground-truth files (so tests can corrupt
them). Videos are mp4 (``lavida.data.video.write_video``) or frame folders, as in each dataset.
:class:`VideosMadeByTheTest` is a benchmark with no tree at all, for tests that hand-make their videos.

Import with ``from eval.trees import ...`` (``tests/`` is on ``sys.path``; ``tests/data/sources`` has its
own ``trees`` module, so the bare name is ambiguous in a full run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lavida.data.video import write_video
from lavida.eval.benchmark import VadBenchmark

HEIGHT, WIDTH = 32, 48


@dataclass
class ExpectedVideo:
    """What a loader should report for one written video.

    Attributes:
        num_frames: Frames the loader should count (F).
        labels: (F,) uint8 frame labels.
        masks: (F, H, W) bool pixel ground truth, or None where the benchmark has none.
        meta: Facts the loader should put into ``TestVideo.meta`` (a subset is enough).
    """

    num_frames: int
    labels: np.ndarray
    masks: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class WrittenTree:
    """A written tree: ``root`` for the benchmark, expected videos by name, notable files by role."""

    root: Path
    videos: dict[str, ExpectedVideo]
    files: dict[str, Path] = field(default_factory=dict)


def _frames(num_frames: int, seed: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: a grey background with a moving bright square (decodes cleanly)."""
    frames = np.full((num_frames, HEIGHT, WIDTH, 3), 60 + 10 * (seed % 5), np.uint8)
    for t in range(num_frames):
        frames[t, 8:16, 2 + 2 * t % 30 : 10 + 2 * t % 30] = 220
    return frames


def _labels(num_frames: int, intervals: list[tuple[int, int]]) -> np.ndarray:
    """(F,) uint8 with ones on inclusive [start, end] intervals."""
    labels = np.zeros(num_frames, np.uint8)
    for start, end in intervals:
        labels[start : end + 1] = 1
    return labels


def _box_masks(labels: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(F, H, W) bool: ``box`` = (row0, row1, col0, col1) set on the frames labelled 1."""
    masks = np.zeros((labels.size, HEIGHT, WIDTH), bool)
    row0, row1, col0, col1 = box
    masks[labels.astype(bool), row0:row1, col0:col1] = True
    return masks


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- UBnormal --------------------------------------------------------------------------------------------

# (name, scene, decoded frames, id maps or 0, {object id: (row0, row1, col0, col1)}, tracks, new tracks)
_UBNORMAL = {
    "test": [
        (
            "abnormal_scene_1_scenario_1",
            12,
            10,
            {1: (4, 10, 6, 14), 2: (20, 28, 30, 40)},
            "1,1,3\n",
            "1,2,5\n",
        ),
        (
            "abnormal_scene_2_scenario_4",
            16,
            16,
            {3: (2, 6, 2, 8), 5: (24, 30, 40, 46)},
            "3,4,6\n5.0,10,12.0\n",
            None,
        ),
        ("normal_scene_3_scenario_7", 8, 0, {}, None, None),
    ],
    "validation": [
        ("abnormal_scene_2_scenario_2", 6, 6, {1: (10, 20, 10, 20)}, "1,1,2\n", None),
        ("normal_scene_12_scenario_5", 6, 6, {4: (0, 8, 0, 8)}, None, None),
    ],
}


def write_ubnormal_tree(root: str | Path) -> WrittenTree:
    """UBnormal with 2 abnormal + 1 normal test videos and 1 + 1 validation videos.

    - ``abnormal_scene_1_scenario_1``: 12 decoded frames but 10 id maps (the maps' count wins); object 1
      (anomalous) and 2 (a normal person) in every map; ``_tracks.txt`` says ``1,1,3`` → frames 1..3
      anomalous (frame and pixel labels), while ``_new_tracks.txt`` says ``1,2,5``, which only the
      RBDC/TBDC tracks read (frames 2..5).
    - ``abnormal_scene_2_scenario_4``: 16 frames and maps, objects 3 (frames 4..6) and 5 (10..12, written
      as floats ``5.0,10,12.0``).
    - ``normal_scene_3_scenario_7``: 8 frames, no annotation folder (the decoder's count is used).
    - validation: ``abnormal_scene_2_scenario_2`` (6 frames, object 1 on 1..2) and
      ``normal_scene_12_scenario_5`` (6 frames, maps with a non-anomalous object).

    The split lists are written to ``<root>/scripts/`` (pass ``split_lists=tree.files["split_lists"]``).
    ``files`` also has ``"<name>:tracks"``, ``"<name>:new_tracks"`` and ``"<name>:annotations"``.
    """
    root = Path(root)
    videos: dict[str, ExpectedVideo] = {}
    files: dict[str, Path] = {"split_lists": root / "scripts"}
    for split, entries in _UBNORMAL.items():
        names = {"abnormal": [], "normal": []}
        for seed, (name, frames, maps, objects, tracks, new_tracks) in enumerate(entries):
            scene = root / f"Scene{name.split('_')[2]}"
            write_video(scene / f"{name}.mp4", _frames(frames, seed), fps=30)
            abnormal = name.startswith("abnormal")
            names["abnormal" if abnormal else "normal"].append(name)
            num_frames = maps or frames
            used = tracks or ""  # frame and pixel labels: _tracks.txt only (_new_tracks.txt: RBDC/TBDC)
            rows = [tuple(int(float(v)) for v in line.split(",")) for line in used.split()]
            labels = _labels(num_frames, [(s, e) for _, s, e in rows])
            masks = np.zeros((num_frames, HEIGHT, WIDTH), bool)
            ann = scene / f"{name}_annotations"
            if maps:
                ann.mkdir(parents=True, exist_ok=True)
                files[f"{name}:annotations"] = ann
                for t in range(maps):
                    id_map = np.zeros((HEIGHT, WIDTH), np.uint8)
                    for obj, (row0, row1, col0, col1) in objects.items():
                        id_map[row0:row1, col0:col1] = obj
                        if any(o == obj and s <= t <= e for o, s, e in rows):
                            masks[t, row0:row1, col0:col1] = True
                    Image.fromarray(id_map, mode="L").save(ann / f"{name}_{t:04d}_gt.png")
            if tracks is not None:
                files[f"{name}:tracks"] = _write_text(ann / f"{name}_tracks.txt", tracks)
            if new_tracks is not None:
                files[f"{name}:new_tracks"] = _write_text(ann / f"{name}_new_tracks.txt", new_tracks)
            videos[name] = ExpectedVideo(
                num_frames,
                labels,
                masks,
                {"abnormal": abnormal, "split": split, "scene": int(name.split("_")[2])},
            )
        for kind, listed in names.items():
            _write_text(root / "scripts" / f"{kind}_{split}_video_names.txt", "\n".join(listed) + "\n")
    return WrittenTree(root, videos, files)


# -- ShanghaiTech ----------------------------------------------------------------------------------------


def write_shanghaitech_tree(root: str | Path) -> WrittenTree:
    """ShanghaiTech ``testing/`` with two frame folders and their frame and pixel masks.

    - ``01_0014``: 10 frames, anomalous on 3..6 (a box in the pixel masks on exactly those frames).
    - ``02_0161``: 8 frames, normal.

    ``files`` has ``"<name>:frame_mask"`` and ``"<name>:pixel_mask"``.
    """
    root = Path(root)
    testing = root / "testing"
    videos: dict[str, ExpectedVideo] = {}
    files: dict[str, Path] = {}
    for seed, (name, frames, intervals) in enumerate((("01_0014", 10, [(3, 6)]), ("02_0161", 8, []))):
        folder = testing / "frames" / name
        folder.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(_frames(frames, seed)):
            Image.fromarray(frame).save(folder / f"{t:03d}.jpg")
        labels = _labels(frames, intervals)
        masks = _box_masks(labels, (12, 20, 20, 30))
        for kind, array in (("frame_mask", labels), ("pixel_mask", masks.astype(np.uint8))):
            path = testing / f"test_{kind}" / f"{name}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array)
            files[f"{name}:{kind}"] = path
        videos[name] = ExpectedVideo(frames, labels, masks, {"scene": int(name[:2])})
    return WrittenTree(root, videos, files)


# -- UCF-Crime -------------------------------------------------------------------------------------------


def write_ucf_crime_tree(root: str | Path) -> WrittenTree:
    """UCF-Crime with three annotated test videos in the archive's folders.

    - ``Abuse028_x264`` (``Anomaly-Videos-Part-1/Abuse/``, 16 frames): ``5 9 -1 -1`` → frames 5..9.
    - ``Arson011_x264`` (``Anomaly-Videos/Arson/``, 40 frames; its line has no ``.mp4``): two intervals
      ``2 4 20 25``.
    - ``Normal_Videos_003_x264`` (``Testing_Normal_Videos_Anomaly/``, 12 frames): ``-1 -1 -1 -1``.

    ``files["annotations"]`` is the annotation file.
    """
    root = Path(root)
    entries = [
        (
            "Abuse028_x264",
            "Abuse",
            16,
            "Anomaly-Videos-Part-1/Abuse",
            "Abuse028_x264.mp4  Abuse  5  9  -1  -1",
            [(5, 9)],
        ),
        (
            "Arson011_x264",
            "Arson",
            40,
            "Anomaly-Videos/Arson",
            "Arson011_x264\tArson 2 4 20 25",
            [(2, 4), (20, 25)],
        ),
        (
            "Normal_Videos_003_x264",
            "Normal",
            12,
            "Testing_Normal_Videos_Anomaly",
            "Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1",
            [],
        ),
    ]
    videos: dict[str, ExpectedVideo] = {}
    lines = []
    for seed, (name, label, frames, folder, line, intervals) in enumerate(entries):
        write_video(root / folder / f"{name}.mp4", _frames(frames, seed), fps=30)
        lines.append(line)
        videos[name] = ExpectedVideo(frames, _labels(frames, intervals), None, {"class": label})
    annotations = _write_text(
        root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt", "\n".join(lines) + "\n"
    )
    return WrittenTree(root, videos, {"annotations": annotations})


# -- XD-Violence -----------------------------------------------------------------------------------------


def write_xd_violence_tree(root: str | Path) -> WrittenTree:
    """XD-Violence ``XD-Violence-test/`` with three videos (``root`` is the folder holding it).

    - ``Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6`` (20 frames): four intervals
      ``0 1 4 5 8 9 12 13``; dots in the name.
    - ``v=wVey5JDRf_I__#1_label_B1-0-0`` (16 frames): one interval ``3 6``, written with ``.mp4``.
    - ``A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A`` (12 frames): no line → normal.

    ``files["annotations"]`` is ``annotations.txt``.
    """
    root = Path(root)
    test = root / "XD-Violence-test"
    entries = [
        (
            "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6",
            20,
            "0 1 4 5 8 9 12 13",
            [(0, 1), (4, 5), (8, 9), (12, 13)],
        ),
        ("v=wVey5JDRf_I__#1_label_B1-0-0", 16, "3 6", [(3, 6)]),
        ("A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A", 12, None, []),
    ]
    labels_of = {
        "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6": ["explosion", "shooting", "car accident"],
        "v=wVey5JDRf_I__#1_label_B1-0-0": ["fighting"],
        "A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_A": ["normal"],
    }
    videos: dict[str, ExpectedVideo] = {}
    lines = []
    for seed, (name, frames, numbers, intervals) in enumerate(entries):
        write_video(test / "videos" / f"{name}.mp4", _frames(frames, seed), fps=24)
        if numbers is not None:
            lines.append(f"{name}{'.mp4' if seed == 1 else ''} {numbers}")
        videos[name] = ExpectedVideo(
            frames,
            _labels(frames, intervals),
            None,
            {"labels": labels_of[name], "annotated": numbers is not None},
        )
    annotations = _write_text(test / "annotations.txt", "\n".join(lines) + "\n")
    return WrittenTree(root, videos, {"annotations": annotations})


# -- UCSD Ped2 -------------------------------------------------------------------------------------------

_PED2_M = """TestVideoFile = {};
% frame-level ground truth, 1-based inclusive
TestVideoFile{end+1}.gt_frame = [3:5];
TestVideoFile{end+1}.gt_frame = [1:2, 5:6];
"""


def write_ucsd_ped2_tree(root: str | Path) -> WrittenTree:
    """``UCSDped2/Test`` with two clips of .tif frames, .bmp masks, ``UCSDped2.m`` and macOS litter.

    - ``Test001``: 8 frames, ``[3:5]`` → 0-based frames 2..4 (masks on exactly those).
    - ``Test002``: 6 frames, ``[1:2, 5:6]`` → frames 0, 1, 4, 5.
    - ``._*`` AppleDouble files next to frames, masks and the ``.m`` file, ``.DS_Store`` files and a
      ``._Test001`` folder, all of which the loader must ignore.

    ``root`` is the folder holding ``UCSDped2/``; ``files`` has ``"matlab"`` and ``"<name>:gt"`` (mask folders).
    """
    root = Path(root)
    test = root / "UCSDped2" / "Test"
    videos: dict[str, ExpectedVideo] = {}
    files: dict[str, Path] = {"matlab": _write_text(test / "UCSDped2.m", _PED2_M)}
    junk = b"\x00\x05\x16\x07AppleDouble"
    (test / "._UCSDped2.m").write_bytes(junk)
    (test / ".DS_Store").write_bytes(junk)
    (test / "._Test001").mkdir()
    for seed, (name, frames, intervals) in enumerate(
        (("Test001", 8, [(2, 4)]), ("Test002", 6, [(0, 1), (4, 5)]))
    ):
        folder, gt = test / name, test / f"{name}_gt"
        folder.mkdir(parents=True)
        gt.mkdir()
        labels = _labels(frames, intervals)
        masks = _box_masks(labels, (6, 14, 24, 36))
        for t, frame in enumerate(_frames(frames, seed)):
            Image.fromarray(frame[..., 0], mode="L").save(folder / f"{t + 1:03d}.tif")
            Image.fromarray(masks[t].astype(np.uint8) * 255, mode="L").save(gt / f"{t + 1:03d}.bmp")
        for junk_path in (folder / "._001.tif", gt / "._001.bmp", folder / ".DS_Store", gt / ".DS_Store"):
            junk_path.write_bytes(junk)
        files[f"{name}:gt"] = gt
        videos[name] = ExpectedVideo(frames, labels, masks)
    return WrittenTree(root, videos, files)


def ped2_scores_only(tmp_path: Path) -> tuple[WrittenTree, Path, dict]:
    """A Ped2 tree with random saved frame scores, and the metrics of one process evaluating them.

    For the multi-process tests, which compare ``accelerate launch`` runs with this single-process run.

    Returns:
        The tree, the predictions folder (``<video>.npy``), and the single-process metrics.
    """
    from lavida.eval.benchmarks import get_benchmark
    from lavida.eval.runner import run_evaluation

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    benchmark = get_benchmark("ucsd_ped2", tree.root)
    rng = np.random.default_rng(0)
    for video in benchmark.videos():
        np.save(predictions / f"{video.name}.npy", rng.random(video.num_frames).astype(np.float32))
    single = run_evaluation(
        benchmark=benchmark,
        protocol=benchmark.protocol("standard"),
        output_dir=tmp_path / "one",
        predictions_dir=predictions,
    )
    return tree, predictions, single


class VideosMadeByTheTest(VadBenchmark):
    """A benchmark whose test videos each test makes itself (it loads none): category "fire", interval 1
    under both protocols, pixel ground truth as ``pixel_gt`` says."""

    name = "bench"
    intervals = {"standard": 1, "lavida_official": 1}

    def __init__(self, root: str | Path, *, pixel_gt: bool = False) -> None:
        super().__init__(root)
        self.has_pixel_gt = pixel_gt

    @property
    def categories(self) -> list[str]:
        return ["fire"]

    def load_videos(self) -> list:
        return []
