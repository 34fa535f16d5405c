"""Fingerprints of the frozen base models a checkpoint was trained on, and the check that it runs on them.

A checkpoint holds only what training changed (LoRA, the ``<SEG>`` rows, the projector, SAM2's prompt
encoder and mask decoder) and names the frozen base models by path. Loaded on other weights at those
paths — Qwen2-VL-7B-Instruct where it was trained on Qwen2-VL-7B (docs/fidelity.md, "MLLM checkpoint"),
another SAM2 size, a re-downloaded folder holding a newer revision — it would build, run and score,
only wrongly. So every checkpoint records a fingerprint of each base model (``meta.json``'s
``base_model_fingerprints``), and loading it, or resuming its run, compares them with the weights found
now.

The fingerprint is *sampled*, so that checking a 7B model costs milliseconds, not the tens of seconds
a full hash of 16 GB takes (SHA-256 runs at about 1 GB/s on one core, and reading from disk may be
slower): for each weight file the loader reads (a folder's own ``*.safetensors``, else its ``*.bin``,
``*.pt``, ``*.pth``; every file where it holds none), its name within the folder, its size, its first
and last MiB (safetensors' header of tensor names, shapes and offsets, and the first and last tensors'
bytes), and 16 slices of 64 KiB spread evenly between them; small files are read whole. Any other
architecture, precision or sharding changes the names, sizes or headers; other weights of the same
architecture (a fine-tune, the Instruct model) change the sampled bytes. Edits confined to the
unsampled bytes go unseen: this tells models apart, it does not verify a download. Where one file holds
the weights its name does not count, so a folder and its weights file given directly (the CLIP loader
takes either) or a renamed file are the same weights; files the loader does not read (a
``pytorch_model.bin`` beside ``model.safetensors``, subfolders, hidden files such as ``.cache/`` of
``hf download``) are not fingerprinted.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Literal

from lavida.models.config import LavidaConfig
from lavida.models.random_init import BASE_MODEL_SECTIONS
from lavida.models.weights import WeightsNotFoundError

log = logging.getLogger(__name__)

# meta.json: section -> weights_fingerprint of the base model the checkpoint was trained on, and the
# version of weights_fingerprint that made them. Bump the version whenever what is hashed changes: records
# of another version are then not compared (as if the checkpoint had none), never refused as other weights.
BASE_FINGERPRINTS_KEY = "base_model_fingerprints"
FINGERPRINT_VERSION_KEY = "base_model_fingerprint_version"
FINGERPRINT_VERSION = 1

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

_EDGE = 1 << 20  # bytes read at each end of a file
_SLICE = 1 << 16  # bytes of each slice in between
_SLICES = 16


class BaseModelMismatchError(WeightsNotFoundError):
    """The base model at a path is not the one the checkpoint was trained on.

    Attributes:
        sections: The base models that differ (``mllm``, ``text_encoder``, ``mask_decoder``).
    """

    def __init__(self, message: str, *, sections: tuple[str, ...]) -> None:
        super().__init__(message)
        self.sections = sections


def weights_fingerprint(path: str | Path) -> str:
    """The first 16 hex digits of a SHA-256 over samples of a base model's weight files (module docstring).

    Args:
        path: A model folder (Qwen2-VL, transformers SAM2 or CLIP) or a single weight file (open_clip).

    Raises:
        WeightsNotFoundError: ``path`` does not exist.
    """
    path = Path(path).expanduser()
    if path.is_file():
        weights = [path]
    elif path.is_dir():
        weights = _weight_files(path)
    else:
        raise WeightsNotFoundError(f"{path}: no such base-model file or folder to fingerprint.")
    # One file is fingerprinted without its name: a model folder and its weights file given directly (the
    # CLIP loader takes either) are the same weights, and so is a renamed file.
    files = (
        [(weights[0], "")] if len(weights) == 1 else [(p, p.relative_to(path).as_posix()) for p in weights]
    )
    digest = hashlib.sha256()
    for file, name in files:
        size = file.stat().st_size
        digest.update(f"{name}\0{size}\0".encode())
        with file.open("rb") as handle:
            for offset, length in _sampled_ranges(size):
                handle.seek(offset)
                digest.update(handle.read(length))
    return digest.hexdigest()[:16]


def _weight_files(folder: Path) -> list[Path]:
    """The files of a model folder that hold the weights its loader reads, sorted.

    transformers reads the folder's own ``*.safetensors`` (one file, or the shards its index names) and
    only without them ``*.bin``/``*.pt``/``*.pth``; so a full download that also holds ``pytorch_model.bin``
    and a lean one without it are the same weights, and subfolders (``original/`` of some repositories)
    are not read. A folder without weight files counts every visible file under it.
    """
    own = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    safetensors = [p for p in own if p.suffix == ".safetensors"]
    if safetensors:
        return safetensors
    other = [p for p in own if p.suffix in WEIGHT_SUFFIXES]
    if other:
        return other
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _sampled_ranges(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the bytes of a file of ``size`` bytes that the fingerprint reads, in order."""
    if size <= 2 * _EDGE + _SLICES * _SLICE:
        return [(0, size)]
    gap = size - 2 * _EDGE - _SLICE  # the last slice ends where the last MiB starts
    middle = [(_EDGE + gap * i // (_SLICES - 1), _SLICE) for i in range(_SLICES)]
    return [(0, _EDGE), *middle, (size - _EDGE, _EDGE)]


def fingerprint_record(config: LavidaConfig) -> dict:
    """What a checkpoint's meta.json records of ``config``'s base models (fingerprints and their version)."""
    return {
        BASE_FINGERPRINTS_KEY: base_model_fingerprints(config),
        FINGERPRINT_VERSION_KEY: FINGERPRINT_VERSION,
    }


def recorded_fingerprints(meta: dict) -> dict[str, str]:
    """The base-model fingerprints a checkpoint's meta.json recorded with this version of the fingerprint;
    {} where it recorded none, or made them another way (they cannot be compared)."""
    if meta.get(FINGERPRINT_VERSION_KEY) != FINGERPRINT_VERSION:
        return {}
    return dict(meta.get(BASE_FINGERPRINTS_KEY) or {})


def fingerprints_to_compare(meta: dict, *, checkpoint: Path) -> dict[str, str]:
    """:func:`recorded_fingerprints`, saying once (INFO) when the checkpoint has fingerprints that cannot be
    compared: loading and resuming then run on whatever weights its paths hold, as before fingerprints."""
    recorded = recorded_fingerprints(meta)
    if not recorded and meta.get(BASE_FINGERPRINTS_KEY):
        log.info(
            "%s: its base-model fingerprints were made by another version of lavida (%s, now %d): its base "
            "models are not compared, and LAVIDA_*_PATH variables cannot stand in for its recorded paths.",
            checkpoint,
            meta.get(FINGERPRINT_VERSION_KEY, "unversioned"),
            FINGERPRINT_VERSION,
        )
    return recorded


def base_model_fingerprints(config: LavidaConfig) -> dict[str, str]:
    """Section -> :func:`weights_fingerprint` of each base model whose ``pretrained`` path exists."""
    fingerprints = {}
    for section in BASE_MODEL_SECTIONS:
        path = getattr(config, section).pretrained
        if path is not None and Path(path).expanduser().exists():
            fingerprints[section] = weights_fingerprint(path)
    return fingerprints


def check_base_models(
    recorded: dict[str, str],
    config: LavidaConfig,
    *,
    checkpoint: Path,
    mode: Literal["strict", "warn"],
    fix: str,
) -> list[str]:
    """Compare the fingerprints a checkpoint recorded with those of the base models ``config`` points at.

    Sections the checkpoint did not record (saved before lavida recorded them) and paths that do not exist
    (their loader names what is missing) are not compared.

    Args:
        recorded: The checkpoint's ``base_model_fingerprints`` (section -> fingerprint).
        config: The model config about to be built (after overrides and moved stand-ins).
        checkpoint: The checkpoint, named in the message.
        mode: ``strict`` raises on a difference; ``warn`` logs it and continues.
        fix: The end of the message: how to point at the right weights, and the caller's own option to go
            on with these (same weights in another form: re-sharded, converted to another format or dtype).

    Returns:
        One line per base model that differs.

    Raises:
        BaseModelMismatchError: ``mode`` is ``strict`` and a base model differs.
    """
    differing, lines = [], []
    for section in BASE_MODEL_SECTIONS:
        path = getattr(config, section).pretrained
        if section not in recorded or path is None or not Path(path).expanduser().exists():
            continue
        now = weights_fingerprint(path)
        if now != recorded[section]:
            differing.append(section)
            lines.append(f"{section} at {path}: fingerprint {now}, trained on {recorded[section]}")
    if not differing:
        return []
    listed = "\n  ".join(lines)
    if mode == "strict":
        raise BaseModelMismatchError(
            f"{checkpoint} was trained on other base weights than those found now:\n  {listed}\n"
            "Its trained layers would run on other frozen weights (e.g. Qwen2-VL-7B-Instruct where it was "
            f"trained on Qwen2-VL-7B, or another SAM2 size) and score wrongly without any other sign. {fix}",
            sections=tuple(differing),
        )
    log.warning(
        "%s was trained on other base weights than those found now (continuing, as asked):\n  %s",
        checkpoint,
        listed,
    )
    return lines
