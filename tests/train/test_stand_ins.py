"""Where a resumed smoke run finds the random stand-ins its checkpoint was trained on (lavida.train.stand_ins),
pinned directly on hand-made checkpoint folders, without training.

tests/train/test_moved_run.py covers the same rules through whole runs; here each rule is checked on its own
in milliseconds: the place relative to the checkpoint first, then the place recorded at save time; a copy
counts only where its files match the recorded digest (or, without digests, where it exists); a section the
run folder already holds is never copied, and is refused if its files differ; a section the checkpoint
recorded no stand-in for (real weights) is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lavida.file_state import files_digest
from lavida.models.random_init import random_pretrained_paths
from lavida.models.weights import WeightsNotFoundError
from lavida.train.stand_ins import copy_stand_in, stand_ins_to_copy

SECTIONS = ["mllm", "mask_decoder", "text_encoder"]


def write_stand_ins(root: Path, content: bytes) -> dict[str, Path]:
    """Stand-in files at ``random_pretrained_paths(root)``: a folder with one file for the folder-shaped
    models, the one file for the CLIP text tower; ``content`` tells one set from another."""
    paths = random_pretrained_paths(root)
    for section, path in paths.items():
        if path.suffix == ".safetensors":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content + section.encode())
        else:
            path.mkdir(parents=True)
            (path / "weights.bin").write_bytes(content + section.encode())
    return paths


def trained_run(run: Path, *, sections=SECTIONS, digests: bool = True) -> Path:
    """A run folder with stand-ins (content b"trained") and a step-2 checkpoint whose meta.json records
    their places relative to ``model/`` and (where ``digests``) their digests, as save_checkpoint does."""
    paths = write_stand_ins(run / "base_models", b"trained")
    model = run / "checkpoints" / "step_0000002" / "model"
    model.mkdir(parents=True)
    meta = {"stand_ins_relative": {s: os.path.relpath(paths[s], model) for s in sections}}
    if digests:
        meta["stand_in_sha256"] = {s: files_digest(paths[s]) for s in sections}
    (model / "meta.json").write_text(json.dumps(meta))
    (model / "lavida_config.json").write_text(
        json.dumps({s: {"pretrained": str(paths[s])} for s in SECTIONS})
    )
    return model.parent


def moved(checkpoint: Path, elsewhere: Path) -> Path:
    """The checkpoint alone copied into another run folder (its stand-ins left behind)."""
    target = elsewhere / "checkpoints" / checkpoint.name
    target.parent.mkdir(parents=True)
    os.rename(checkpoint, target)
    return target


def test_a_run_folder_without_its_stand_ins_gets_those_beside_the_checkpoint(tmp_path):
    """train.resume=<other run>/checkpoints/step_N into a new output_dir: every stand-in comes from the
    checkpoint's run folder (its place relative to the checkpoint)."""
    resume = trained_run(tmp_path / "a")
    copies = stand_ins_to_copy(resume, tmp_path / "b" / "base_models", SECTIONS)
    assert copies == random_pretrained_paths(tmp_path / "a" / "base_models")


def test_a_checkpoint_moved_without_its_stand_ins_takes_them_from_where_it_was_saved(tmp_path):
    """Nothing at the relative place: the path recorded in the checkpoint's lavida_config.json is next."""
    resume = moved(trained_run(tmp_path / "a"), tmp_path / "b")
    copies = stand_ins_to_copy(resume, tmp_path / "b" / "base_models", SECTIONS)
    assert copies == random_pretrained_paths(tmp_path / "a" / "base_models")


def test_only_a_copy_whose_files_match_the_recorded_digest_is_taken(tmp_path):
    """The relative place holds other stand-ins (a new run under the old name): passed over for the recorded
    place, whose files match. With the two swapped, the relative place is taken, being first."""
    resume = moved(trained_run(tmp_path / "a"), tmp_path / "b")
    write_stand_ins(tmp_path / "b" / "base_models", b"another run")
    copies = stand_ins_to_copy(resume, tmp_path / "c" / "base_models", SECTIONS)
    assert copies == random_pretrained_paths(tmp_path / "a" / "base_models")

    resume = moved(trained_run(tmp_path / "d"), tmp_path / "e")
    write_stand_ins(tmp_path / "e" / "base_models", b"trained")  # the same files at both places
    copies = stand_ins_to_copy(resume, tmp_path / "f" / "base_models", SECTIONS)
    assert copies == random_pretrained_paths(tmp_path / "e" / "base_models")


def test_without_recorded_digests_the_first_place_that_exists_is_taken(tmp_path):
    """A checkpoint saved before lavida recorded digests cannot tell copies apart: the relative place is
    taken even though its files differ from the recorded place's (as load_checkpoint does)."""
    resume = moved(trained_run(tmp_path / "a", digests=False), tmp_path / "b")
    write_stand_ins(tmp_path / "b" / "base_models", b"another run")
    copies = stand_ins_to_copy(resume, tmp_path / "c" / "base_models", SECTIONS)
    assert copies == random_pretrained_paths(tmp_path / "b" / "base_models")


def test_a_section_the_run_folder_holds_or_without_a_recorded_stand_in_is_not_copied(tmp_path):
    """The run folder's own stand-in (same files) stays; a section the checkpoint recorded no stand-in for
    (given real weights) is neither copied nor missing; the remaining one is copied."""
    resume = trained_run(tmp_path / "a", sections=["mllm", "mask_decoder"])
    root = tmp_path / "b" / "base_models"
    paths = write_stand_ins(root, b"trained")
    shutil.rmtree(paths["mask_decoder"])  # a model folder
    paths["text_encoder"].unlink()  # the CLIP tower's one file
    copies = stand_ins_to_copy(resume, root, SECTIONS)
    assert copies == {"mask_decoder": tmp_path / "a" / "base_models" / "sam2"}


def refusal(resume: Path, root: Path, problem: str) -> str:
    return (
        f"Resuming from {resume}, but {root} {problem}; other frozen weights would go under its trained weights. "
        f"Put the run's own base_models/ folder in {root}, or start over: a new output_dir without train.resume."
    )


LOST = (
    "lacks the random stand-in base models it was trained on ({}), and no copy with their files lies beside "
    "the checkpoint or where it was saved"
)
OTHER = "holds other stand-ins than it was trained on ({}: their files differ)"


def test_stand_ins_found_nowhere_are_refused_naming_them(tmp_path):
    """The checkpoint moved, and its run folder with the stand-ins deleted: new random ones would go under
    the trained weights. One line names what is missing, relative to the run folder."""
    resume = moved(trained_run(tmp_path / "a"), tmp_path / "b")
    for path in random_pretrained_paths(tmp_path / "a" / "base_models").values():
        os.rename(path, path.with_name("gone_" + path.name))
    root = tmp_path / "b" / "base_models"
    with pytest.raises(WeightsNotFoundError) as error:
        stand_ins_to_copy(resume, root, SECTIONS)
    names = "mllm, sam2, clip/open_clip_model.safetensors"
    assert str(error.value) == refusal(resume, root, LOST.format(names))


def test_other_stand_ins_in_the_run_folder_are_refused_and_with_lost_ones_both_are_named(tmp_path):
    """The run folder holds stand-ins whose files differ from the recorded digests (another run's): refused,
    naming them; where others are also found nowhere, the message names both."""
    resume = trained_run(tmp_path / "a")
    root = tmp_path / "b" / "base_models"
    write_stand_ins(root, b"another run")
    with pytest.raises(WeightsNotFoundError) as error:
        stand_ins_to_copy(resume, root, SECTIONS)
    names = "mllm, sam2, clip/open_clip_model.safetensors"
    assert str(error.value) == refusal(resume, root, OTHER.format(names))

    clip = random_pretrained_paths(root)["text_encoder"]
    clip.unlink()
    os.rename(tmp_path / "a" / "base_models" / "clip", tmp_path / "a" / "base_models" / "gone")
    with pytest.raises(WeightsNotFoundError) as error:
        stand_ins_to_copy(resume, root, SECTIONS)
    problem = LOST.format("clip/open_clip_model.safetensors") + " and " + OTHER.format("mllm, sam2")
    assert str(error.value) == refusal(resume, root, problem)


@pytest.mark.parametrize("section", ["mllm", "text_encoder"])
def test_a_stand_in_is_copied_whole_into_an_empty_place(tmp_path, section):
    """A model folder (with its subfolders) or the CLIP tower's one file, copied byte for byte."""
    source = write_stand_ins(tmp_path / "a", b"trained")[section]
    if source.is_dir():
        (source / "nested").mkdir()
        (source / "nested" / "config.json").write_text("{}")
    target = random_pretrained_paths(tmp_path / "b")[section]
    copy_stand_in(source, target)
    assert files_digest(target) == files_digest(source)
    assert target.is_dir() == source.is_dir()


def test_a_checkpoint_whose_model_configuration_is_not_json_is_refused_saying_what_it_should_hold(tmp_path):
    """A hand-edited (broken) lavida_config.json: the error names the file and what it should hold."""
    resume = trained_run(tmp_path / "a")
    config = resume / "model" / "lavida_config.json"
    config.write_text("{")
    with pytest.raises(ValueError) as error:
        stand_ins_to_copy(resume, tmp_path / "b" / "base_models", SECTIONS)
    assert str(error.value) == (
        f"{config}: not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2); "
        "expected the model configuration save_checkpoint writes. Fix the file, or delete it to have it "
        "written again where that is possible."
    )
