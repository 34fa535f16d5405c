"""Save and load a trained LAVIDA model.

A checkpoint directory holds only what training changed; the frozen base models are read from their
local paths when the model is rebuilt:

    lavida_config.json      the model config (LavidaConfig.to_dict), incl. the base-model paths (absolute)
    mllm_adapter/           PEFT adapter: LoRA weights and the trained <SEG> rows (usable with PEFT tools)
    heads.safetensors       every other trained parameter: projector, SAM2 prompt encoder and mask
                            decoder, the prompt embedding layer
    meta.json               lavida version, git revision (``+dirty`` with uncommitted changes to
                            tracked files; null outside a checkout), parameter counts, <SEG> token id,
                            the training step and clip length (trainer checkpoints), a fingerprint
                            of each base model (lavida.models.base_fingerprint: loading compares them
                            with the weights found then), and where the run folder's random stand-ins
                            lie relative to the checkpoint, with a digest of each (smoke runs)

A smoke run's random stand-ins for the base models (``base_weights: optional``) live in its run folder
(``<run>/base_models/``, lavida.models.random_init). A checkpoint records their place relative to
itself too, so that a run folder moved or renamed as a whole (``mv outputs/demo outputs/demo_seed0``)
still loads, and a digest of their files: of the recorded path and the same place relative to the
checkpoint, the first whose files are the ones it was trained on is used, and loading is refused where
neither holds them (another run's stand-ins at the old place). How base models are found on load:
``lavida.models.base_model_places``.

Directories are written to a temporary sibling and renamed into place, so a crash never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

import lavida
from lavida.atomic import atomic_dir, read_json
from lavida.file_state import files_digest
from lavida.models.base_fingerprint import (
    base_model_fingerprints,
    check_base_models,
    fingerprint_record,
    fingerprints_to_compare,
)
from lavida.models.base_model_places import (
    STAND_IN_DIGESTS_KEY,
    STAND_INS_KEY,
    absolute_base_paths,
    base_models_from_variables,
    check_base_models_saved,
    merge_settings,
    moved_base_models,
    moved_hint,
    relocated_stand_ins,
    stand_ins_from_meta,
    stand_ins_relative,
)
from lavida.models.config import LavidaConfig
from lavida.models.lavida import LavidaModel, build_lavida
from lavida.models.weights import WeightsNotFoundError

log = logging.getLogger(__name__)

CONFIG_FILE = "lavida_config.json"
ADAPTER_DIR = "mllm_adapter"
HEADS_FILE = "heads.safetensors"
META_FILE = "meta.json"


def heads_state_dict(model: LavidaModel) -> dict[str, torch.Tensor]:
    """Every trainable parameter outside the MLLM, by its name in ``model``."""
    return {
        name: parameter.detach()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and not name.startswith("mllm.")
    }


def checkpoint_digest(directory: str | Path) -> str:
    """The first 16 hex digits of a SHA-256 over every file of a checkpoint (names, sizes, bytes).

    Evaluation caches are keyed on it, so results cached for one checkpoint are never reused for another
    one saved to the same path (a retrained ``final/``). Reads the whole checkpoint once: about 0.24 GB for
    the paper's model (59.6 M trained parameters in float32).
    """
    return files_digest(directory)


def save_checkpoint(
    model: LavidaModel,
    config: LavidaConfig,
    directory: str | Path,
    *,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s trained weights and ``config`` to ``directory`` (replaced atomically if it exists)."""
    directory = Path(directory)
    settings = absolute_base_paths(config.to_dict())
    stand_ins = stand_ins_relative(config, settings, directory)
    with atomic_dir(directory) as staging:
        (staging / CONFIG_FILE).write_text(json.dumps(settings, indent=2))
        peft_model = model.mllm.model
        if hasattr(peft_model, "save_pretrained") and hasattr(peft_model, "peft_config"):
            peft_model.save_pretrained(staging / ADAPTER_DIR)
        heads = {name: tensor.contiguous().cpu() for name, tensor in heads_state_dict(model).items()}
        save_file(heads, str(staging / HEADS_FILE))
        extra_meta = extra_meta or {}
        meta = {
            "lavida_version": lavida.__version__,
            # The trainer gives the revision it started with (extra_meta): no git call per save then.
            "git_revision": extra_meta["git_revision"] if "git_revision" in extra_meta else _git_revision(),
            "seg_token_id": model.mllm.seg_token_id,
            "trainable_parameters": model.trainable_parameter_count(),
            **fingerprint_record(config),
            **({STAND_INS_KEY: stand_ins} if stand_ins else {}),
            **(
                {STAND_IN_DIGESTS_KEY: {s: files_digest(settings[s]["pretrained"]) for s in stand_ins}}
                if stand_ins
                else {}
            ),
            **extra_meta,
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
    # DEBUG: callers that stage the directory (lavida.train.state) name the final place themselves.
    log.debug("Saved checkpoint to %s", directory)
    return directory


def stand_in_places(directory: str | Path) -> dict[str, Path]:
    """Section → where the checkpoint's random stand-in lies now, by its place relative to the checkpoint
    (``meta.json``'s ``stand_ins_relative``): inside the checkpoint's run folder, wherever that folder was
    moved. {} for real base weights, and for checkpoints saved before lavida recorded the place."""
    return stand_ins_from_meta(Path(directory), read_checkpoint_meta(directory))


def check_base_model_check(mode: str) -> None:
    """Refuse a ``base_model_check`` other than ``strict`` or ``warn`` (the CLIs call it before their first
    input: a rerun that loads no model would otherwise accept a misspelt one)."""
    if mode not in ("strict", "warn"):
        raise ValueError(f"base_model_check must be 'strict' or 'warn', got {mode!r}.")


def _resolved_settings(directory: Path, overrides: dict[str, Any], *, announce: bool) -> tuple[dict, dict]:
    """The model settings a load of ``directory`` builds (its saved config, ``overrides``, stand-ins found
    where the run folder moved, base models taken from their variables) and its meta.json. ``announce``
    logs where base models were found elsewhere than the config names."""
    data = read_json(directory / CONFIG_FILE, expected="the model configuration save_checkpoint writes")
    if overrides:
        data = merge_settings(data, overrides)
    meta = read_checkpoint_meta(directory)
    data = relocated_stand_ins(data, directory, overrides, meta, announce=announce)
    data = base_models_from_variables(data, directory, overrides, meta, announce=announce)
    return data, meta


def loaded_base_fingerprints(
    directory: str | Path, *, config_overrides: dict[str, Any] | None = None
) -> dict:
    """Section -> fingerprint of each base model that :func:`load_checkpoint` with ``config_overrides``
    would build on, without loading anything (milliseconds): for caches of a checkpoint's outputs, which
    must not be served after the base weights changed."""
    data, _ = _resolved_settings(Path(directory), config_overrides or {}, announce=False)
    return base_model_fingerprints(LavidaConfig.from_dict(data))


def load_checkpoint(
    directory: str | Path,
    *,
    config_overrides: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    base_model_check: Literal["strict", "warn"] = "strict",
) -> tuple[LavidaModel, LavidaConfig]:
    """Rebuild the model from a checkpoint directory, in eval mode (dropout off; ``.train()`` to fine-tune).

    Args:
        directory: A directory written by :func:`save_checkpoint`.
        config_overrides: Nested values replacing the saved config, e.g. new base-model paths on another
            machine: ``{"mllm": {"pretrained": "/models/Qwen2-VL-7B-Instruct"}, "dtype": "bfloat16"}``.
        device: Where to put the model.
        base_model_check: ``strict`` refuses base models whose files are not the ones the checkpoint was
            trained on (their fingerprints in ``meta.json``); ``warn`` logs the difference and loads (the
            same weights converted to another format, say).

    Raises:
        WeightsNotFoundError: a file is missing, or the weights do not match the configured model.
        BaseModelMismatchError: (a WeightsNotFoundError) a base model is not the one the checkpoint was
            trained on, and ``base_model_check`` is ``strict``.
    """
    directory = Path(directory)
    check_base_model_check(base_model_check)
    required = [CONFIG_FILE, HEADS_FILE]
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        if directory.is_dir():
            found = sorted(p.name for p in directory.iterdir())
        elif directory.is_file():
            found = "a file, not the checkpoint's folder: give the folder that holds it"
        else:
            found = "(no such directory)"
        raise WeightsNotFoundError(
            f"'{directory}' is not a LAVIDA checkpoint: missing {missing}. A checkpoint holds {CONFIG_FILE}, "
            f"{HEADS_FILE}, {ADAPTER_DIR}/ and {META_FILE}. Found: {found}"
        )
    data, meta = _resolved_settings(directory, config_overrides or {}, announce=True)
    config = LavidaConfig.from_dict(data)
    check_base_models_saved(config, directory / CONFIG_FILE)
    check_base_models(
        fingerprints_to_compare(meta, checkpoint=directory),
        config,
        checkpoint=directory,
        mode=base_model_check,
        fix="Point at the weights it was trained on (lavida-eval / lavida-detect: "
        "+checkpoint_overrides.<part>.pretrained=DIR; load_checkpoint(..., config_overrides=...)); if these "
        "are the same weights in another form (re-sharded, converted to another format or dtype), "
        "base_model_check=warn loads them anyway.",
    )
    try:
        model = build_lavida(config)
    except WeightsNotFoundError as error:
        moved = moved_base_models(config, config_overrides or {})
        if not moved:
            raise
        raise WeightsNotFoundError(f"{error}\n{moved_hint(directory / CONFIG_FILE, moved)}") from error
    load_trained_weights(model, directory)
    saved_seg = meta.get("seg_token_id")
    if saved_seg is not None and saved_seg != model.mllm.seg_token_id:
        raise WeightsNotFoundError(
            f"{directory / META_FILE}: the checkpoint was trained with <SEG> id {saved_seg}, but the tokenizer "
            f"now gives {model.mllm.seg_token_id}; the base MLLM differs from the one it was trained on."
        )
    # LoRA's dropout (0.05, the release's: lavida_official.md §2; B.5 gives only r and α) is for training only
    return model.to(device).eval(), config


DEFAULT_CLIP_LENGTH = 8  # B.3: T = 8 frames per clip


def trained_clip_length(directory: str | Path) -> int:
    """The clip length the checkpoint was trained on (its meta.json), else B.3's 8.

    Evaluation and detection default to it: we assume that supplement Tab. 7 tests each clip length with a
    model trained on it. The paper does not say; ``clip_length=`` evaluates one checkpoint at another length
    (docs/fidelity.md).
    """
    return int(read_checkpoint_meta(directory).get("clip_length", DEFAULT_CLIP_LENGTH))


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's ``meta.json`` (training facts such as ``step`` and ``clip_length``), or {} without one."""
    meta_file = Path(directory) / META_FILE
    if not meta_file.is_file():
        return {}
    return read_json(meta_file, expected="a JSON object of training facts (lavida_version, step, ...)")


def load_trained_weights(model: LavidaModel, directory: str | Path) -> None:
    """Load a checkpoint's trained weights (adapter + heads) into an already built ``model``.

    Used to resume training, where the model is built from the run's config first.
    """
    directory = Path(directory)
    _load_adapter(model, directory / ADAPTER_DIR)
    _load_heads(model, directory / HEADS_FILE)


def _load_adapter(model: LavidaModel, adapter_dir: Path) -> None:
    peft_model = model.mllm.model
    if not hasattr(peft_model, "peft_config"):
        return
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise WeightsNotFoundError(
            f"'{adapter_dir}/adapter_model.safetensors' is missing: the MLLM adapter was not saved."
        )
    weights = load_peft_weights(str(adapter_dir), device="cpu")
    try:
        result = set_peft_model_state_dict(peft_model, weights)
    except (RuntimeError, KeyError) as error:  # torch: "size mismatch for ...lora_A.weight ..."; PEFT: a
        # KeyError for a tensor the adapter lacks (one saved without LoRA, loaded with it)
        detail = f"it lacks {error}" if isinstance(error, KeyError) else _first_line(error)
        raise WeightsNotFoundError(
            f"'{adapter_dir}' does not fit the model's LoRA adapter ({detail}). "
            f"{_lora_settings(adapter_dir, peft_model)}"
        ) from error
    adapter_keys = [key for key in result.missing_keys if ".default" in key or "trainable_tokens" in key]
    if result.unexpected_keys or adapter_keys:
        raise WeightsNotFoundError(
            f"'{adapter_dir}' does not match the model's adapter: unexpected {result.unexpected_keys[:5]}, "
            f"missing {adapter_keys[:5]}. {_lora_settings(adapter_dir, peft_model)}"
        )


def _lora_settings(adapter_dir: Path, peft_model: Any) -> str:
    """Saved vs configured LoRA rank and target modules, and how to make them agree."""
    saved_file = adapter_dir / "adapter_config.json"
    try:
        saved = read_json(saved_file, expected="PEFT's adapter configuration")
        unknown = None if isinstance(saved, dict) else f"{saved_file}: not a JSON object"
    except (OSError, ValueError) as error:  # missing or not JSON: what was saved is unknown, not "no LoRA"
        saved, unknown = {}, str(error)
    configured = peft_model.peft_config["default"]
    if getattr(configured, "r", None) is None:  # only the trainable <SEG> rows: model.mllm.lora is null
        now = "the model is configured without LoRA (model.mllm.lora: null)"
    else:
        now = f"the model is configured with r={configured.r}, target_modules={configured.target_modules}"
    if unknown is not None:
        then = f"The adapter's saved LoRA settings are unknown ({unknown})"
    elif saved.get("r") is None:
        then = f"The adapter was saved without LoRA ({saved_file})"
    else:
        then = f"The adapter was saved with r={saved['r']}, target_modules={saved.get('target_modules')} ({saved_file})"
    return (
        f"{then}; {now}. Load it with the LoRA settings it was trained with "
        "(model.mllm.lora in the checkpoint's lavida_config.json, or a config_overrides / "
        "checkpoint_overrides entry for mllm.lora)."
    )


def _first_line(error: BaseException) -> str:
    """The first specific line of a state-dict error (torch's first line is only a header)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith("Error(s) in loading state_dict")]
    return (specific or lines or [type(error).__name__])[0]


def _load_heads(model: LavidaModel, heads_file: Path) -> None:
    try:
        heads = load_file(str(heads_file))
    except Exception as error:  # safetensors raises several types for corrupt files
        raise WeightsNotFoundError(
            f"Could not read '{heads_file}' ({error}); the file is corrupt."
        ) from error
    expected = heads_state_dict(model)
    missing = sorted(set(expected) - set(heads))
    unexpected = sorted(set(heads) - set(expected))
    if missing or unexpected:
        hint = ""
        if any(name.startswith("projector.category_norm.") for name in missing + unexpected):
            # Checkpoints written before model.projector.eq7 existed used the official form.
            form = "official" if unexpected else "paper"
            hint = (
                f' The checkpoint computes Eq. 7 in the \'{form}\' form: set "eq7": "{form}" under '
                f'"projector" in its {CONFIG_FILE}.'
            )
        raise WeightsNotFoundError(
            f"'{heads_file}' does not match the configured model: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}).{hint}"
        )
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in heads.items():
            if parameters[name].shape != tensor.shape:
                raise WeightsNotFoundError(
                    f"'{heads_file}': {name} has shape {tuple(tensor.shape)}, the model expects "
                    f"{tuple(parameters[name].shape)}."
                )
            parameters[name].copy_(tensor)


def _git_revision() -> str | None:
    """The commit of the lavida code that wrote a checkpoint, ``+dirty`` when tracked files differ from it;
    None outside a git checkout of lavida (an installed wheel, even inside another project's repository)
    or without git. The trainer reads it once, when it starts, and records that in every checkpoint it
    saves (``extra_meta``): the code the run imported, not what the checkout holds hours later."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    # A copy of lavida in another project's repository (say a git-ignored .venv) is not that project's code.
    tracked = git("ls-files", "--error-unmatch", Path(__file__).name)
    if tracked is None or tracked.returncode != 0:
        return None
    # Uncommitted changes to tracked files make the commit alone not name the code that ran.
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = status is not None and status.returncode == 0 and bool(status.stdout.strip())
    return head.stdout.strip() + ("+dirty" if dirty else "")
