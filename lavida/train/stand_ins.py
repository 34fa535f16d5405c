"""The random stand-in base models a resumed smoke run must train on (``base_weights: optional``).

A smoke run's frozen base models are random stand-ins in its run folder (``<run>/base_models/``,
lavida.models.random_init); its checkpoints record where they lie relative to themselves and a digest of
their files (lavida.models.checkpoint). A resume must go on with the very weights its checkpoint was
trained on: this finds them when the run folder lacks them, or refuses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lavida.atomic import atomic_dir, atomic_path, read_json
from lavida.file_state import files_digest
from lavida.models.base_model_places import STAND_IN_DIGESTS_KEY
from lavida.models.checkpoint import CONFIG_FILE, read_checkpoint_meta, stand_in_places
from lavida.models.random_init import random_pretrained_paths
from lavida.models.weights import WeightsNotFoundError


def stand_ins_to_copy(resume: Path, root: Path, sections: list[str]) -> dict[str, Path]:
    """Section → where the random stand-in that ``resume`` was trained on lies, for each one ``root`` lacks.

    A resumed run must train on the frozen weights its checkpoint was trained on. Where the run folder
    lacks them (moved without its ``base_models/``, or resumed from another run's checkpoint with
    ``train.resume``), they are found beside the checkpoint or where it was saved with them, and known by
    the digest the checkpoint recorded; new random ones, or another run's, would go under the trained
    weights without a word. A checkpoint that recorded their places but not yet their digests takes the
    first place that exists, as ``load_checkpoint`` does; one saved before lavida recorded its stand-ins
    is not checked.

    Raises:
        WeightsNotFoundError: ``root`` holds other stand-ins, or a missing one is found nowhere (one
            line: what, and how to fix it; a FileNotFoundError, as load_checkpoint raises it).
    """
    trained_on = stand_in_places(resume / "model")
    digests = read_checkpoint_meta(resume / "model").get(STAND_IN_DIGESTS_KEY) or {}
    paths = random_pretrained_paths(root)
    saved = read_json(
        resume / "model" / CONFIG_FILE, expected="the model configuration save_checkpoint writes"
    )
    other = [
        section
        for section in sections
        if section in digests and paths[section].exists() and files_digest(paths[section]) != digests[section]
    ]
    copies, lost = {}, []
    for section in sections:
        if section not in trained_on or paths[section].exists():
            continue
        places = [
            trained_on[section],
            Path((saved.get(section) or {}).get("pretrained") or trained_on[section]),
        ]
        found = [
            p
            for p in dict.fromkeys(places)
            if p.exists() and (section not in digests or files_digest(p) == digests[section])
        ]
        if found:
            copies[section] = found[0]
        else:
            lost.append(section)
    if not lost and not other:
        return copies
    problem = []
    if lost:
        problem.append(
            f"lacks the random stand-in base models it was trained on ({_names(paths, root, lost)}), and no copy "
            "with their files lies beside the checkpoint or where it was saved"
        )
    if other:
        problem.append(
            f"holds other stand-ins than it was trained on ({_names(paths, root, other)}: their files differ)"
        )
    raise WeightsNotFoundError(
        f"Resuming from {resume}, but {root} {' and '.join(problem)}; other frozen weights would go under its "
        f"trained weights. Put the run's own base_models/ folder in {root}, or start over: a new output_dir "
        "without train.resume."
    )


def copy_stand_in(source: Path, target: Path) -> None:
    """Copy a stand-in (a model folder, or the CLIP text tower's one file) to ``target``, atomically."""
    if source.is_dir():
        with atomic_dir(target) as staging:
            shutil.copytree(source, staging, dirs_exist_ok=True)
    else:
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)


def _names(paths: dict[str, Path], root: Path, sections: list[str]) -> str:
    return ", ".join(str(paths[section].relative_to(root)) for section in sections)
