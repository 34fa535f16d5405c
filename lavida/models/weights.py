"""Checks for locally stored pretrained weights, with errors that say what is missing and how to fix it.

LAVIDA never downloads anything: every base model (Qwen2-VL, SAM2, CLIP) is read from a local path
given in the config (usually through an environment variable, see ``lavida/configs/paths``). These
helpers turn the many ways a local copy can be incomplete into one readable error.
"""

from __future__ import annotations

import fnmatch
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    """A pretrained directory or file is missing or incomplete."""


def _listing(directory: Path, limit: int = 20) -> str:
    names = sorted(p.name for p in directory.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
    return shown or "(empty)"


def check_pretrained_dir(
    path: str | Path,
    *,
    what: str,
    required: Sequence[Sequence[str]],
    hint: str,
) -> Path:
    """Check that ``path`` is a directory holding every required file.

    Args:
        path: The directory to check.
        what: Human name of the model, e.g. ``"Qwen2-VL-7B-Instruct"``.
        required: One entry per required file; each entry lists alternative glob patterns of which at
            least one must match (e.g. ``["model.safetensors", "model.safetensors.index.json"]``).
        hint: How to obtain the files (shown in the error).

    Returns:
        The directory as a ``Path``.

    Raises:
        WeightsNotFoundError: if the directory does not exist or a required file is missing; the message
            lists the expected files and what the directory holds.
    """
    directory = Path(path).expanduser()
    expected = "\n".join("  - " + " or ".join(alternatives) for alternatives in required)
    if not directory.is_dir():
        raise WeightsNotFoundError(
            f"{what}: expected a local directory at '{directory}', but it does not exist"
            f"{' (it is a file)' if directory.is_file() else ''}.\n"
            f"It must contain:\n{expected}\n{hint}"
        )
    names = [p.name for p in directory.iterdir()]
    missing = [
        alternatives
        for alternatives in required
        if not any(fnmatch.filter(names, pattern) for pattern in alternatives)
    ]
    if missing:
        missing_text = "\n".join("  - " + " or ".join(alternatives) for alternatives in missing)
        raise WeightsNotFoundError(
            f"{what}: the directory '{directory}' is incomplete.\nMissing:\n{missing_text}\n"
            f"It must contain:\n{expected}\nFound: {_listing(directory)}\n{hint}"
        )
    return directory


def check_nothing_missing(loading: dict, *, directory: Path, what: str, hint: str) -> None:
    """Refuse a transformers model loaded with tensors its files lack.

    ``from_pretrained`` initialises a tensor missing from the files at random and only logs a load report,
    so a model with a random part would train and evaluate without any other sign of it. Extra tensors in
    the files are not refused (the hub's SAM2 video checkpoints hold memory modules the image model
    ignores).

    Args:
        loading: ``from_pretrained(..., output_loading_info=True)``'s second value.
        directory: The folder loaded, for the message.
        what: Human name of the model.
        hint: How to get complete weights.

    Raises:
        WeightsNotFoundError: naming the folder and up to five missing tensors.
    """
    missing = sorted(loading["missing_keys"])
    if missing:
        raise WeightsNotFoundError(
            f"{what}: the weights in '{directory}' lack {len(missing)} tensors of the model its config.json "
            f"describes, e.g. {missing[:5]}: an incomplete download or another model.\n{hint}"
        )


def check_weights_file(path: str | Path, *, what: str, suffixes: Sequence[str], hint: str) -> Path:
    """Check that ``path`` is an existing weights file with one of the given suffixes.

    A folder is refused with the file in it to point at: the only one with a matching suffix, or the
    only one of those that ``hint`` names.

    Raises:
        WeightsNotFoundError: if the file is missing or has an unexpected suffix.
    """
    file = Path(path).expanduser()
    if file.is_dir():  # the repository's folder instead of the file in it: name the file to point at
        inside = sorted(p.name for p in file.iterdir() if p.is_file() and p.name.endswith(tuple(suffixes)))
        # A download may hold other models' files beside the one to use (timm's CLIP repository has
        # timm's image-only model.safetensors beside open_clip's files): the one the hint names wins.
        named = [name for name in inside if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", hint)]
        if len(named) == 1:
            inside = named
        if len(inside) == 1:
            found = f"Point at the file in it: '{file / inside[0]}'."
        elif inside:
            found = f"Point at one of the files in it: {', '.join(inside)}."
        else:
            found = f"It holds no {' or '.join(suffixes)} file: {_listing(file)}."
        raise WeightsNotFoundError(
            f"{what}: expected a weights file, but '{file}' is a folder. {found}\n{hint}"
        )
    if not file.is_file():
        parent = file.parent
        found = f"\nFound in '{parent}': {_listing(parent)}" if parent.is_dir() else ""
        raise WeightsNotFoundError(
            f"{what}: expected a weights file at '{file}' ({' or '.join(suffixes)}), but it does not exist."
            f"{found}\n{hint}"
        )
    if not any(file.name.endswith(suffix) for suffix in suffixes):
        raise WeightsNotFoundError(
            f"{what}: '{file}' is not a supported weights file; expected one of {', '.join(suffixes)}.\n{hint}"
        )
    return file


def load_state_dict_file(path: Path, *, what: str, hint: str = "") -> dict:
    """Read a ``.safetensors`` file, or a ``.bin``/``.pt`` state dict with ``weights_only=True``.

    Args:
        path: The file.
        what: Human name of the model, for the errors.
        hint: Which file to obtain instead (shown where the file is of another kind).

    Raises:
        WeightsNotFoundError: if the file cannot be parsed (truncated download, wrong format) or holds
            more than tensors (a TorchScript archive, pickled objects); the message names the file.
    """
    import torch

    if _is_torchscript(path):
        # torch.load refuses these with weights_only=True, and its message suggests weights_only=False.
        raise WeightsNotFoundError(
            f"{what}: '{path}' is a TorchScript archive (as OpenAI's original CLIP .pt files are): a program "
            f"with its weights, which LAVIDA never loads, since loading runs the code in it. {hint}".rstrip()
        )
    try:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # the loaders raise many types; all but one mean a corrupt file
        if "Weights only load failed" not in str(error):  # torch's refusal of a pickled object
            raise _unreadable(path, what, error) from error
        # Not torch's text: it explains how to load the file unsafely.
        refused = re.search(r"Unsupported global: GLOBAL [\w.]+", str(error))
        raise WeightsNotFoundError(
            f"{what}: '{path}' holds Python objects besides tensors"
            f"{f' ({refused.group(0)})' if refused else ''}; LAVIDA reads weights_only state dicts and never "
            f"unpickles objects. Expected a state dict of tensors. {hint}".rstrip()
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsNotFoundError(
            f"{what}: '{path}' does not hold a state dict (got {type(state).__name__})."
        )
    return state


def _unreadable(path: Path, what: str, error: BaseException) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{what}: could not read '{path}' ({type(error).__name__}: {error}). The file is corrupt or "
        "not a state dict; download it again."
    )


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip, as torch.save's files are, with a ``code/`` folder."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
