"""Where a checkpoint's frozen base models lie: recorded when it is saved, found again when it is loaded.

A checkpoint names its base models by path (``lavida_config.json``, made absolute when it is saved:
``absolute_base_paths``), and a smoke run's checkpoint also records where its random stand-ins lie relative
to it, with a digest of each (``meta.json``'s ``STAND_INS_KEY`` and ``STAND_IN_DIGESTS_KEY``). On load, a
path that no longer holds them is replaced, in this order, by:

- the same place relative to the checkpoint, for the random stand-ins a smoke run writes into its run
  folder (``<run>/base_models/``), so that a run folder moved as a whole still loads; the stand-in there
  must have the digest the checkpoint recorded;
- the README's environment variable (``LAVIDA_QWEN2VL_PATH``, ...), where the weights there have the
  fingerprint the checkpoint recorded (``lavida.models.base_fingerprint``).

Paths given as overrides always win. Where nothing is found, the error says how to point at the weights
(``moved_hint``); a checkpoint trained on random stand-ins that were never saved is refused
(``check_base_models_saved``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lavida.file_state import files_digest
from lavida.models.base_fingerprint import recorded_fingerprints, weights_fingerprint
from lavida.models.config import LavidaConfig
from lavida.models.random_init import BASE_MODEL_SECTIONS, random_pretrained_paths, unset_base_models
from lavida.models.weights import WeightsNotFoundError

log = logging.getLogger(__name__)


def absolute_base_paths(settings: dict) -> dict:
    """``settings`` with every relative base-model path made absolute against the current folder.

    A checkpoint is read from wherever evaluation runs; a path like ``weights/qwen`` (a relative
    ``model.mllm.pretrained``, or the demo's ``outputs/demo/base_models``) would then name another folder,
    or none.
    """
    settings = {key: dict(value) if isinstance(value, dict) else value for key, value in settings.items()}
    for section in BASE_MODEL_SECTIONS:
        path = settings[section].get("pretrained")
        if path is not None and not Path(path).expanduser().is_absolute():
            settings[section]["pretrained"] = str(Path(path).expanduser().absolute())
    return settings


# meta.json: section → path of the run folder's stand-in relative to the checkpoint (smoke runs only).
STAND_INS_KEY = "stand_ins_relative"
# meta.json: section → files_digest of that stand-in, so that a stand-in found at a path is known to be the
# one the checkpoint was trained on: the recorded place may hold another run's by now (a new run under the
# old name after a move). A few MB at the tiny sizes, hashed whole; every base model also gets the sampled
# fingerprint of lavida.models.base_fingerprint, which is what real weights get.
STAND_IN_DIGESTS_KEY = "stand_in_sha256"

# How far above a checkpoint its run folder may lie: <run>/final, <run>/checkpoints/step_N/model, and
# the demo's <demo>/train/final.
_RUN_FOLDER_DEPTH = 4


def stand_ins_relative(config: LavidaConfig, settings: dict, directory: Path) -> dict[str, str]:
    """Section → its base model's path relative to ``directory``, for the random stand-ins that lavida wrote
    into the run folder that holds ``directory`` (``<run>/base_models/...``); {} for real base weights."""
    if config.base_weights != "optional":
        return {}
    here = directory.absolute()
    relative = {}
    for section in BASE_MODEL_SECTIONS:
        path = settings[section].get("pretrained")
        if path is None:
            continue
        for run in list(here.parents)[:_RUN_FOLDER_DEPTH]:
            if Path(path) == random_pretrained_paths(run / "base_models")[section]:
                relative[section] = os.path.relpath(path, here)
                break
    return relative


def stand_ins_from_meta(directory: Path, meta: dict[str, Any]) -> dict[str, Path]:
    """Section → where the checkpoint ``directory``'s stand-in lies now, by the place relative to it that
    its ``meta`` (meta.json) records; {} for real base weights."""
    relative = meta.get(STAND_INS_KEY) or {}
    return {
        section: Path(os.path.normpath(directory.absolute() / place)) for section, place in relative.items()
    }


def relocated_stand_ins(
    data: dict, directory: Path, overrides: dict[str, Any], meta: dict[str, Any], *, announce: bool
) -> dict:
    """``data`` with each stand-in pointed at the copy the checkpoint was trained on: the recorded path, or
    else the same place relative to the checkpoint (its run folder was moved). Where the checkpoint
    recorded their digests, the first whose files match is taken, and a stand-in matching at neither place
    is refused; older checkpoints take the recorded path if it exists. Paths given in ``overrides`` stay.

    Raises:
        WeightsNotFoundError: the stand-in at the recorded path (and at the relative place) is another one.
    """
    digests = meta.get(STAND_IN_DIGESTS_KEY) or {}
    found: dict[str, Path] = {}
    for section, candidate in stand_ins_from_meta(directory, meta).items():
        recorded = (data.get(section) or {}).get("pretrained")
        if recorded is None or "pretrained" in (overrides.get(section) or {}):
            continue
        places = [p for p in dict.fromkeys([Path(recorded), candidate]) if p.exists()]
        if section in digests:
            matching = [p for p in places if files_digest(p) == digests[section]]
            if places and not matching:
                raise WeightsNotFoundError(
                    f"{directory}: the {section} stand-in at {' and at '.join(map(str, places))} is not the one "
                    f"this checkpoint was trained on (its files differ: another run's?). Put the run's own "
                    f"base_models/ back beside it, or point at them with "
                    f"checkpoint_overrides.{section}.pretrained=PATH."
                )
            places = matching
        if places and places[0] != Path(recorded):
            found[section] = places[0]
    if not found:
        return data
    moved = {section: {"pretrained": str(path)} for section, path in found.items()}
    for section, path in found.items() if announce else ():
        log.info(
            "%s: the stand-in %s is gone or another one; using %s, its place relative to the checkpoint "
            "(the run folder was moved).",
            directory,
            data[section]["pretrained"],
            path,
        )
    return merge_settings(data, moved)


def base_models_from_variables(
    data: dict, directory: Path, overrides: dict[str, Any], meta: dict, *, announce: bool
) -> dict:
    """``data`` with each base model whose recorded path is gone taken from its environment variable
    (``LAVIDA_QWEN2VL_PATH``, ...; README, step 1), where the weights there are the ones the checkpoint was
    trained on: their fingerprint is the one it recorded. A checkpoint trained on one machine then loads on
    another whose variables point at its own copies. Without a recorded fingerprint, or where it differs,
    the recorded path stays (and its absence is reported, with how to point elsewhere). ``announce`` logs
    what was taken or passed over.
    """
    from lavida.models.lavida import path_variable

    fingerprints = recorded_fingerprints(meta)
    found = {}
    for section in BASE_MODEL_SECTIONS:
        recorded = (data.get(section) or {}).get("pretrained")
        overridden = "pretrained" in (overrides.get(section) or {})
        if recorded is None or overridden or Path(recorded).expanduser().exists():
            continue
        variable = path_variable(section, (data.get("mllm") or {}).get("family", "qwen2_vl"))
        value = os.environ.get(variable)
        if not value or not Path(value).expanduser().exists() or section not in fingerprints:
            continue
        same = weights_fingerprint(value) == fingerprints[section]
        if same:
            found[section] = {"pretrained": value}
        if announce:
            log.log(
                logging.INFO if same else logging.WARNING,
                "%s: the %s base model it names (%s) is gone; %s=%s %s",
                directory,
                section,
                recorded,
                variable,
                value,
                "holds the same weights (the fingerprint the checkpoint recorded): using it."
                if same
                else "holds other weights than it was trained on (their fingerprint differs): not used.",
            )
    return merge_settings(data, found) if found else data


def check_base_models_saved(config: LavidaConfig, config_file: Path) -> None:
    """Refuse a checkpoint trained on random base models that were never written to disk.

    A checkpoint holds only what trains; building an unset base model again draws other random frozen
    weights under the trained heads, so every load would score differently.
    """
    unset = unset_base_models(config)
    # Required base models without a path are refused by check_base_weights, naming their variables.
    if not unset or config.base_weights != "optional":
        return
    first = unset[0]
    raise WeightsNotFoundError(
        f"{config_file}: no base weights for {', '.join(f'model.{section}' for section in unset)}. The "
        "checkpoint was trained on random stand-ins that were not saved (base_weights: optional), and it holds "
        "only what trains, so building them again would put other random weights under the trained heads and "
        "every load would score differently. lavida-train now writes such stand-ins into the run folder "
        "(base_models/), and its checkpoints name them: retrain the checkpoint, or give the weights it was "
        f"trained on: load_checkpoint(..., config_overrides={{'{first}': {{'pretrained': DIR}}}}); "
        f"lavida-eval / lavida-detect: +checkpoint_overrides.{first}.pretrained=DIR."
    )


def moved_base_models(config: LavidaConfig, overrides: dict[str, Any]) -> list[str]:
    """The sections whose base-model path came from the saved config and does not exist here."""
    moved = []
    for section in BASE_MODEL_SECTIONS:
        path = getattr(config, section).pretrained
        overridden = "pretrained" in (overrides.get(section) or {})
        if path is not None and not overridden and not Path(path).expanduser().exists():
            moved.append(section)
    return moved


def moved_hint(config_file: Path, sections: list[str]) -> str:
    """How to point a checkpoint whose base models in ``sections`` are gone at copies on this machine."""
    # The environment variables and model.<part>.pretrained that the training error suggests do not
    # reach a checkpoint: its base-model paths are fixed in its config file when it is saved.
    lines = [
        f"{', '.join(f'{section}.pretrained' for section in sections)} "
        f"{'come' if len(sections) > 1 else 'comes'} from the checkpoint's "
        f"{config_file} (written where it was trained); model.<part>.pretrained does not change them, and an "
        "environment variable (LAVIDA_QWEN2VL_PATH, ...) is used in their place only where it holds the very "
        "weights the checkpoint recorded a fingerprint of. Point the checkpoint at the local copies:"
    ]
    for section in sections:
        lines.append(
            f"  - lavida-eval / lavida-detect: +checkpoint_overrides.{section}.pretrained=DIR; "
            f"load_checkpoint(..., config_overrides={{'{section}': {{'pretrained': DIR}}}})"
        )
    lines.append(f"  (or edit the paths in {config_file})")
    return "\n".join(lines)


def merge_settings(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, nested mappings key by key (neither is changed)."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            merge_settings(base[key], value)
            if isinstance(value, dict) and isinstance(base.get(key), dict)
            else value
        )
    return merged
