"""``checkpoint=DIR`` checked before anything slow runs (lavida.cli.checkpoints.check_checkpoint): each
kind of wrong folder is refused with the whole message naming the folder to give instead."""

import pytest

from lavida.cli.checkpoints import check_checkpoint
from lavida.models.weights import WeightsNotFoundError

_GIVE = (
    "Give the folder of a trained model: lavida-train writes it to outputs/train/<run_name>/final (and "
    "every saved step's to <run_name>/checkpoints/step_N/model)."
)


def _checkpoint(folder):
    """A folder with the two files check_checkpoint looks for (lavida_config.json, heads.safetensors)."""
    folder.mkdir(parents=True)
    for name in ("lavida_config.json", "heads.safetensors"):
        (folder / name).write_text("")
    return folder


def _refusal(checkpoint) -> str:
    with pytest.raises(WeightsNotFoundError) as error:
        check_checkpoint(checkpoint)
    return str(error.value)


def test_a_saved_model_folder_passes(tmp_path):
    assert check_checkpoint(_checkpoint(tmp_path / "final")) is None
    assert check_checkpoint(str(tmp_path / "final")) is None


def test_a_missing_path_and_a_file_are_named_as_such(tmp_path):
    (tmp_path / "model.safetensors").write_text("")
    assert (
        _refusal(tmp_path / "nosuch")
        == f"checkpoint={tmp_path}/nosuch: '{tmp_path}/nosuch' does not exist. {_GIVE}"
    )
    file = tmp_path / "model.safetensors"
    assert _refusal(file) == f"checkpoint={file}: '{file}' is a file. {_GIVE}"


def test_a_training_checkpoint_names_its_model_folder(tmp_path):
    step = tmp_path / "checkpoints" / "step_4"
    _checkpoint(step / "model")
    assert _refusal(step) == (
        f"checkpoint={step} is a training checkpoint of lavida-train (model, optimizer and progress, to "
        f"resume from); the model saved at that step is its model/ folder: checkpoint={step}/model."
    )


def test_a_run_folder_names_its_final_folder(tmp_path):
    run = tmp_path / "run"
    _checkpoint(run / "final")
    assert _refusal(run) == (
        f"checkpoint={run} is the run folder of lavida-train; its trained model is the final/ folder: "
        f"checkpoint={run}/final (every saved step's is checkpoints/step_N/model)."
    )


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ([], "['lavida_config.json', 'heads.safetensors']"),
        (["lavida_config.json"], "['heads.safetensors']"),
        (["heads.safetensors"], "['lavida_config.json']"),
    ],
)
def test_a_folder_without_the_model_files_lists_what_is_missing_and_found(tmp_path, present, missing):
    """Either file missing refuses the folder; the message lists the missing ones in that order and what
    the folder holds, sorted (a folder named heads.safetensors is not the file)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "b.txt").write_text("")
    (folder / "a").mkdir()
    for name in present:
        (folder / name).write_text("")
    if "heads.safetensors" not in present:
        (folder / "model").mkdir()  # a model/ without a config is no training checkpoint
    found = sorted(["a", "b.txt", *present, *([] if "heads.safetensors" in present else ["model"])])
    assert _refusal(folder) == (
        f"checkpoint={folder} is not a LAVIDA checkpoint: missing {missing} (a checkpoint holds "
        f"lavida_config.json, heads.safetensors, mllm_adapter/ and meta.json); found {found}. lavida-train "
        f"writes the trained model to outputs/train/<run_name>/final."
    )


def test_a_home_relative_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _checkpoint(tmp_path / "final")
    assert check_checkpoint("~/final") is None
    assert _refusal("~/nosuch") == f"checkpoint=~/nosuch: '{tmp_path}/nosuch' does not exist. {_GIVE}"
