"""Shared test set-up: offline, deterministic, CPU only."""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path

# No network, ever: set before transformers / huggingface_hub are imported by any test module.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# At most 2 torch threads per test process; under pytest-xdist (`make test` runs one worker per core)
# each worker gets its share of the cores, so that the workers' thread pools do not fight over them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(
    int(os.environ.get("LAVIDA_TEST_THREADS", max(1, min(2, (os.cpu_count() or 1) // _WORKERS))))
)


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    """Every test starts from the same seed and the default dtype, and leaves them as found."""
    torch.manual_seed(0)
    np.random.seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@contextlib.contextmanager
def kept_logging_setup():
    """Put the logging set-up back as it was: the handlers, levels and switches of the root logger and of
    every logger that existed before. A Hydra app run in-process (``main()`` of a console script) configures
    logging with handlers on the stream pytest captured for that test; left in place, they write to a closed
    file in later tests of the same worker, which logging reports as a "--- Logging error ---" traceback.

    pytest's own capture handlers come and go with each test phase (set-up, call, tear-down), so they are
    neither restored nor removed here."""
    loggers = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    saved = [(lg, ours(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers]
    try:
        yield
    finally:
        for lg, handlers, level, propagate, disabled in saved:
            for handler in ours(lg.handlers):
                if handler not in handlers:
                    lg.removeHandler(handler)
                    handler.close()  # a file handler (Hydra's job log) lets go of its file
            for handler in handlers:
                if handler not in lg.handlers:
                    lg.addHandler(handler)
            if lg.level != level:
                lg.setLevel(level)  # only where changed: each call clears every logger's level cache
            lg.propagate = propagate
            lg.disabled = disabled


def ours(handlers: list[logging.Handler]) -> list[logging.Handler]:
    """The handlers that are not pytest's per-phase capture handlers."""
    return [h for h in handlers if not type(h).__module__.startswith("_pytest.")]


@pytest.fixture(autouse=True)
def _kept_logging_setup():
    """No test leaves logging configured differently for the next one (see kept_logging_setup)."""
    with kept_logging_setup():
        yield


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Accelerate keeps one process-wide state: a test that builds a Trainer must not fix the mixed
    precision of a later test (a bf16 run after an fp32 one is refused by Accelerate)."""
    yield
    import sys

    state = sys.modules.get("accelerate.state")  # only where a test imported it: no import cost elsewhere
    if state is not None:
        state.AcceleratorState._reset_state(reset_partial_state=True)


def evaluate_saved(bench, predictions, output_dir, **options):
    """Scores-only evaluation of saved predictions under the standard protocol."""
    from lavida.eval.runner import run_evaluation

    return run_evaluation(
        benchmark=bench,
        protocol=bench.protocol("standard"),
        output_dir=output_dir,
        predictions_dir=predictions,
        **options,
    )


def save_ramp_scores(folder: Path, frame_counts: dict[str, int]) -> Path:
    """Saved frame scores for a scores-only run: ``<folder>/<video>.npy`` rising from 0 to 1 over each video's
    frames (``frame_counts``: video name → frame count). Returns ``folder``, made here."""
    folder.mkdir()
    for name, count in frame_counts.items():
        np.save(folder / f"{name}.npy", np.linspace(0, 1, count))
    return folder


def load_benchmark_script(name: str):
    """Import ``benchmarks/<name>.py`` (not a package) as a registered module, so its dataclasses resolve."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lavida_benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- tiny models, built offline and loaded through the production loaders ------------------------------


def free_port() -> int:
    """A TCP port that is free now, for a launched run's rendezvous: `accelerate launch` would otherwise
    take 29500, which two launched tests running at once (`make test` runs tests in parallel) both claim."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def compose_cli_config(name: str, *overrides: str, **values):
    """A command's Hydra config (``lavida/configs/<name>.yaml``) as the command line composes it, with
    ``values`` then set by dotted key (``**{"benchmark.root": DIR}``), values Hydra's grammar would parse."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose(name, overrides=list(overrides))
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def compose_model_config(name: str = "tiny", overrides: list[str] | None = None):
    """Compose ``lavida/configs/model/<name>.yaml`` (with overrides) into a LavidaConfig."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from lavida.models.config import LavidaConfig

    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose("info", overrides=[f"model={name}", *(overrides or [])])
    return LavidaConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory):
    """The tiny config, its random base models written to disk in their native formats."""
    from lavida.models.random_init import write_random_pretrained

    return write_random_pretrained(compose_model_config("tiny"), tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture
def tiny_model(tiny_pretrained):
    """A fresh tiny LAVIDA model loaded from the written base models (function scope: tests may train it)."""
    from lavida.models.lavida import build_lavida

    torch.manual_seed(0)
    return build_lavida(tiny_pretrained)


@pytest.fixture(scope="session")
def detect_checkpoint(tiny_pretrained, tmp_path_factory):
    """A saved tiny checkpoint whose object score is positive somewhere, so that lavida-detect finds masks
    and intervals (tests/detect)."""
    from lavida.models.checkpoint import save_checkpoint
    from lavida.models.lavida import build_lavida

    torch.manual_seed(0)
    model = build_lavida(tiny_pretrained)
    with torch.no_grad():
        model.mask_decoder.sam.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(0.5)
    return save_checkpoint(model, tiny_pretrained, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def detector(detect_checkpoint):
    """A Detector on ``detect_checkpoint`` (threshold 0.5), one per test module."""
    from lavida import Detector

    return Detector.from_checkpoint(detect_checkpoint, device="cpu", threshold=0.5)


def tiny_processor_for(model):
    """A LavidaProcessor for the tiny model with the tiny config's small pixel budgets."""
    from lavida.data.processor import LavidaProcessor

    return LavidaProcessor.for_model(model, compose_model_config("tiny").inputs)


def make_samples(seed: int = 0):
    """A video clip (8 frames, 3 categories) and an image (1 category), with masks."""
    from lavida.data.types import ClipSample

    rng = np.random.default_rng(seed)
    video = ClipSample(
        frames=rng.integers(0, 256, (8, 64, 96, 3), dtype=np.uint8),
        categories=["fire", "a man running", "car crash"],
        is_video=True,
        masks=rng.random((8, 64, 96)) > 0.7,
    )
    image = ClipSample(
        frames=rng.integers(0, 256, (1, 80, 80, 3), dtype=np.uint8),
        categories=["dog"],
        is_video=False,
        masks=rng.random((1, 80, 80)) > 0.5,
    )
    return video, image


def write_synthetic_train(root, **spec):
    """A synthetic training set (``SegmentationSetSpec(**spec)``, split of seed 0) with its manifest, at ``root``."""
    from lavida.data.sources.base import write_manifest
    from lavida.data.sources.synthetic import SyntheticSource
    from lavida.synthetic.datasets import SegmentationSetSpec, default_split, write_segmentation_set

    write_segmentation_set(root, default_split(0), SegmentationSetSpec(**spec))
    source = SyntheticSource(root)
    write_manifest(source.index(), source.manifest_path())
    return root


@pytest.fixture(scope="session")
def synthetic_train_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_train")
    return write_synthetic_train(root, videos=6, images=4, frames=8, height=64, width=96, seed=0)


def write_broken_png(path, *, shape=(40, 50, 3)):
    """Write a PNG whose first data chunk claims half its length and return its path: Pillow then reads
    a chunk type from the middle of the data and raises SyntaxError ("broken PNG file"), not OSError."""
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    assert data[37:41] == b"IDAT"  # right after the 8-byte signature and the 25-byte IHDR chunk
    data[33:37] = (int.from_bytes(data[33:37], "big") // 2).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def write_bomb_bmp(path, *, shape=(40, 50, 3)):
    """Write a BMP whose header claims 60000×60000 pixels and return its path: Pillow raises
    DecompressionBombError (an Exception, not an OSError)."""
    from PIL import Image

    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[18:26] = (60000).to_bytes(4, "little") * 2  # width, height
    path.write_bytes(bytes(data))
    return path


def moving_square(n, h=48, w=64):
    """(n, h, w, 3) uint8 frames: a red 12×12 square moving right over grey, 3 pixels a frame."""
    frames = np.full((n, h, w, 3), 90, np.uint8)
    for t in range(n):
        x = (3 * t) % (w - 12)
        frames[t, 10:22, x : x + 12] = (230, 40, 40)
    return frames


def grey_ramp(n, h=16, w=16):
    """(n, h, w, 3) uint8 frames: frame t uniform grey 20·t + 10 (n ≤ 12), so that a decoded frame's mean
    tells its index after lossy encoding (:func:`grey_ramp_indices`)."""
    return np.stack([np.full((h, w, 3), 20 * t + 10, np.uint8) for t in range(n)])


def grey_ramp_indices(frames) -> list[int]:
    """The index of each frame of :func:`grey_ramp`, read back from its mean."""
    return [int(round((float(frame.mean()) - 10) / 20)) for frame in frames]


def write_grey_ramp(path, n, *, fps=10):
    """:func:`grey_ramp` of ``n`` frames written to ``path`` by ``write_video`` (near-lossless mpeg4)."""
    from lavida.data.video import write_video

    return write_video(path, grey_ramp(n), fps=fps)


# Qwen/Qwen2-VL-7B-Instruct's preprocessor_config.json, verbatim (the processor tests build folders with it).
QWEN2_VL_PREPROCESSOR = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}


def sweeping_frames(n: int = 40, h: int = 48, w: int = 64):
    """(n, h, w, 3) uint8 frames, each unlike the others: a colour ramp over time and a green bar moving
    right, so a frame returned in another frame's place is told apart (video decoder tests)."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, :, :, 0] = (6 * i) % 256
        frames[i, :, :, 2] = 255 - (6 * i) % 256
        x = (3 * i) % (w - 16)
        frames[i, 10:26, x : x + 16, 1] = 220
    return frames


def decode_sequentially(path):
    """Every frame of a video file decoded front to back with PyAV: the reference order of its frames."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def grey_noise_frames(n: int = 6, h: int = 48, w: int = 64):
    """(n, h, w, 3) uint8 grey noise: detail everywhere, so an encoder's quantiser shows in the decoding
    error, and no colour, so chroma subsampling adds none (encoder quality tests)."""
    return np.repeat(np.random.default_rng(0).integers(0, 256, (n, h, w, 1), dtype=np.uint8), 3, axis=3)


def mean_decode_error(path, frames) -> float:
    """Mean |decoded − written| over every pixel of the video file ``path`` written from ``frames``."""
    decoded = decode_sequentially(path)
    return float(np.abs(decoded.astype(int) - frames).mean())


def other_weights(source, target):
    """A copy of the base model at ``source`` whose largest tensor in each safetensors file is moved:
    the same architecture, other weights (as Qwen2-VL-7B-Instruct is to Qwen2-VL-7B)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy(source, target)
    for file in [target] if target.is_file() else sorted(target.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        largest = max(
            (n for n in tensors if tensors[n].is_floating_point()), key=lambda n: tensors[n].numel()
        )
        tensors[largest] = tensors[largest] + 0.01
        save_file(tensors, str(file), metadata=metadata)
    return target


def checkpoint_on_its_own_clip(tiny_pretrained, tmp_path):
    """A tiny checkpoint whose CLIP text tower is a copy of its own at ``tmp_path/clip/`` (the shared
    ``tiny_pretrained`` stays untouched when a test replaces it); returns (checkpoint, clip file)."""
    import dataclasses

    from lavida.models.checkpoint import save_checkpoint
    from lavida.models.lavida import build_lavida

    clip = tmp_path / "clip" / "open_clip_model.safetensors"
    clip.parent.mkdir()
    shutil.copy(tiny_pretrained.text_encoder.pretrained, clip)
    text_encoder = dataclasses.replace(tiny_pretrained.text_encoder, pretrained=str(clip))
    config = dataclasses.replace(tiny_pretrained, text_encoder=text_encoder)
    torch.manual_seed(0)
    return save_checkpoint(build_lavida(config), config, tmp_path / "final"), clip


def file_digests(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) by its relative path, as the SHA-256 of its bytes: two
    trees are byte-identical when these are equal, and a difference names the file."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def tree_listing(folder: Path) -> dict:
    """Every entry under ``folder`` (hidden ones too) with its text, folders as nested dicts: what a
    reader finds there after an atomic write, a failed one, or a kill."""
    return {
        p.name: (tree_listing(p) if p.is_dir() and not p.is_symlink() else p.read_text())
        for p in sorted(folder.iterdir())
    }


def offline_lavida_processor(
    qwen_processor=None, *, family: str = "qwen2_vl", sam_image_size: int = 64, **budgets
):
    """A LavidaProcessor on ``qwen_processor`` (default: the offline byte-level Qwen processor of
    ``family``), CLIP tokens all zero (not checked where this is used); ``budgets`` are LavidaProcessor's
    ``train_video_budget``, ``test_video_budget`` and ``image_budget`` (the official ones where left out)."""
    from lavida.data.processor import LavidaProcessor
    from lavida.models.qwen_processor import load_processor

    return LavidaProcessor(
        qwen_processor=qwen_processor or load_processor(None, family=family),
        clip_tokenizer=lambda names: torch.zeros(len(names), 77, dtype=torch.long),
        sam_image_size=sam_image_size,
        **budgets,
    )


def write_eval_run(folder: Path, benchmark: str, protocol: str, **metrics) -> Path:
    """A finished lavida-eval run folder: metrics.json (the whole official test split unless ``metrics``
    says otherwise) and report.md's title line, which is where lavida-tables reads the benchmark."""
    from lavida.eval.tables import OFFICIAL_TEST_VIDEOS

    folder.mkdir(parents=True)
    whole = {"split": "test", "videos_left_out": 0, "num_videos": OFFICIAL_TEST_VIDEOS[benchmark][protocol]}
    (folder / "metrics.json").write_text(json.dumps({**whole, **metrics}))
    (folder / "report.md").write_text(f"# {benchmark} — {protocol} protocol\n", encoding="utf-8")
    return folder


def skip_without_exchange(folder: Path) -> None:
    """Skip unless the C library's renameat2 swaps two folders in ``folder`` (Linux, and a file system that
    supports RENAME_EXCHANGE). Asked directly through ctypes, not through lavida.atomic: a bug there that
    disabled the exchange would otherwise skip the very tests meant to catch it. AT_FDCWD is -100
    (<fcntl.h>), RENAME_EXCHANGE is 1 << 1 (<linux/fs.h>)."""
    import ctypes

    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    swapped = False
    if function is not None:
        first, second = folder / ".probe_a", folder / ".probe_b"
        first.mkdir()
        second.mkdir()
        (first / "a").touch()
        swapped = function(-100, os.fsencode(first), -100, os.fsencode(second), 2) == 0
        assert (second / "a").exists() == swapped  # the probe itself: moved only where it said so
        shutil.rmtree(first)
        shutil.rmtree(second)
    if not swapped:
        pytest.skip("this system or file system has no atomic exchange (renameat2 RENAME_EXCHANGE)")


class FakeSegSource:
    """Stands in for a ``SegSource`` (``SyntheticSource``) where a test needs hand-made masks and frames:
    ``masks[(record key, target text)]`` and ``frames[record key]`` are lists of (H, W) bool masks and
    (H, W, 3) uint8 frames, indexed by frame position; counts the mask loads."""

    def __init__(self, masks, frames):
        self.root = Path("synthetic_train")
        self.masks, self.frames, self.mask_loads = masks, frames, 0

    def load_masks(self, record, target, positions):
        self.mask_loads += 1
        return [self.masks[record.key, target.text][p] for p in positions]

    def load_frames(self, record, positions):
        return [self.frames[record.key][p] for p in positions]


def seg_record(key, *texts, frames=1):
    """A synthetic-source record with one target per text (object ids 1, 2, ...)."""
    from lavida.data.sources.base import SegRecord, SegTarget

    return SegRecord(
        source="synthetic",
        key=key,
        group=key,
        frames=tuple(f"{key}/{t:05d}.jpg" for t in range(frames)),
        targets=tuple(SegTarget(text, {"object_ids": [i]}) for i, text in enumerate(texts, start=1)),
        present=texts,
        is_video=frames > 1,
    )


def slow_auc_eer(fpr, tpr):
    """Trapezoid area, and the EER where fpr - (1 - tpr) changes sign, by a walk over the segments."""
    area = sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(fpr)))
    for i in range(1, len(fpr)):
        before, after = fpr[i - 1] - (1 - tpr[i - 1]), fpr[i] - (1 - tpr[i])
        if after >= 0 > before:
            w = -before / (after - before)
            return area, fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    raise AssertionError("the ROC from (0, 0) to (1, 1) always crosses FPR = FNR")


def legacy_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torch's legacy "nearest" resize of (n, h, w) arrays, written out: output pixel i takes input
    floor(i · in / out), the scale in float32 as torch computes it."""
    h, w = array.shape[1:]
    rows = np.minimum(np.floor(np.arange(size[0]) * np.float32(h / size[0])).astype(int), h - 1)
    cols = np.minimum(np.floor(np.arange(size[1]) * np.float32(w / size[1])).astype(int), w - 1)
    return array[:, rows][:, :, cols]
