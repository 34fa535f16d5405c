"""A smoke run's folder moved or renamed between a kill and its resume (``mv outputs/train/smoke /elsewhere``,
then the same command with ``output_dir=/elsewhere/smoke``).

The run folder holds the random stand-ins of its base models (``base_models/``); its checkpoints and its
``run_config.json`` name them at the old place. The resumed run must train on the stand-ins that moved with
it (never on what lies at the old place now, nor on new random ones), and continue exactly where the
uninterrupted run would be; one moved without them gets them from where it was trained, and where they
are found nowhere (or the folder holds other ones) it is refused before the model is built.
"""

import json
import shutil

import pytest
import torch
from conftest import compose_model_config
from trainers import make_trainer

from lavida.models.random_init import random_pretrained_paths, write_random_pretrained
from lavida.train.resume_check import ResumeMismatchError

SIZES = {"batches_per_epoch": 4, "save_every": 2}  # checkpoints at steps 2 and 4
SECTIONS = ("mllm", "mask_decoder", "text_encoder")
KEYS = ("loss", "loss_txt", "loss_seg")


def _recording(trainer) -> list[dict[str, float]]:
    """The losses of every micro-batch the trainer runs from now on."""
    losses: list[dict[str, float]] = []
    step = trainer.train_step
    trainer.train_step = lambda batch: losses.append(step(batch)) or losses[-1]
    return losses


@pytest.fixture(scope="module")
def killed_run(synthetic_train_root, tmp_path_factory):
    """A smoke run (``model=tiny``: stand-ins written into its folder) killed after its step-2 checkpoint,
    and the per-step losses of the same run left uninterrupted."""
    config = compose_model_config("tiny")
    assert config.base_weights == "optional" and config.mllm.pretrained is None
    folder = tmp_path_factory.mktemp("moved_run")
    straight = make_trainer(synthetic_train_root, config, folder / "straight", **SIZES)
    straight.setup()
    losses = _recording(straight)
    straight.fit()
    assert len(losses) == 4

    first = make_trainer(synthetic_train_root, config, folder / "killed", **SIZES)
    first.setup()
    step = first.train_step

    def killed_after_step_2(batch):
        if first.progress.step == 2:
            raise KeyboardInterrupt  # step 2's checkpoint is written, step 3 never runs
        return step(batch)

    first.train_step = killed_after_step_2
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert not (folder / "killed" / "final").exists()
    # Each test moves the run away from where it was trained: it is put back from this copy first.
    shutil.copytree(folder / "killed", folder / "as_killed")
    return folder / "killed", losses


def _moved(killed_run, tmp_path):
    """The killed run, as it was left where it trained (its old place), moved to ``<tmp>/elsewhere/renamed``.

    Returns the old place and the new one.
    """
    old, _ = killed_run
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(old.parent / "as_killed", old)
    new = tmp_path / "elsewhere" / "renamed"
    new.parent.mkdir()
    shutil.move(old, new)
    return old, new


def _other_stand_ins_at(old) -> None:
    """Another run's stand-ins (another seed) where the moved run's stand-ins were: a new smoke run under the
    old name. Training on them would give other losses."""
    with torch.random.fork_rng(devices=[]):
        write_random_pretrained(compose_model_config("tiny"), old / "base_models", seed=1)


def _times(paths) -> dict[str, int]:
    return {section: path.stat().st_mtime_ns for section, path in paths.items()}


def _resumes_exactly(trainer, straight, stand_ins, new) -> None:
    """Set up ``trainer``: it continues at step 2 on ``stand_ins`` and trains the steps of the uninterrupted
    run, loss for loss; its final model names the moved stand-ins."""
    trainer.setup()
    assert (trainer.progress.step, trainer.progress.epoch, trainer.progress.batch_in_epoch) == (2, 0, 2)
    used = {section: getattr(trainer.model_config, section).pretrained for section in SECTIONS}
    assert used == {section: str(path) for section, path in stand_ins.items()}
    losses = _recording(trainer)
    summary = trainer.fit()
    assert summary.steps == 4 and summary.final_checkpoint == new / "final"
    assert len(losses) == 2
    for key in KEYS:
        assert [step[key] for step in losses] == [step[key] for step in straight[2:]], key
    saved = json.loads((new / "final" / "lavida_config.json").read_text())
    assert {section: saved[section]["pretrained"] for section in SECTIONS} == used


def test_a_moved_run_resumes_on_the_stand_ins_that_moved_with_it(killed_run, synthetic_train_root, tmp_path):
    """The same command with the new output_dir continues at step 2 with the uninterrupted run's losses, on
    the moved stand-ins (not rewritten), although another run's stand-ins now lie at the old place."""
    _, straight = killed_run
    old, new = _moved(killed_run, tmp_path)
    _other_stand_ins_at(old)
    recorded = json.loads((new / "run_config.json").read_text())
    assert recorded["model"]["mllm"]["pretrained"] == str(old / "base_models" / "mllm")  # the old place
    stand_ins = random_pretrained_paths(new / "base_models")
    written = _times(stand_ins)

    resumed = make_trainer(synthetic_train_root, compose_model_config("tiny"), new, **SIZES)
    _resumes_exactly(resumed, straight, stand_ins, new)
    assert _times(stand_ins) == written
    # The run's record now names where it is.
    assert json.loads((new / "run_config.json").read_text())["model"]["mllm"]["pretrained"] == str(
        stand_ins["mllm"]
    )


def test_a_run_moved_without_its_stand_ins_takes_them_from_where_it_was_trained(
    killed_run, synthetic_train_root, tmp_path, caplog
):
    """Only checkpoints/ moved (or base_models/ deleted), the old place still there: the stand-ins the
    checkpoint was trained on (known by its digests) are copied in, and the run continues exactly."""
    from lavida.file_state import files_digest

    _, straight = killed_run
    old, new = _moved(killed_run, tmp_path)
    shutil.rmtree(new / "base_models")
    shutil.copytree(old.parent / "as_killed" / "base_models", old / "base_models")
    resumed = make_trainer(synthetic_train_root, compose_model_config("tiny"), new, **SIZES)
    stand_ins = random_pretrained_paths(new / "base_models")
    with caplog.at_level("INFO"):
        _resumes_exactly(resumed, straight, stand_ins, new)
    recorded = json.loads((new / "checkpoints" / "step_0000002" / "model" / "meta.json").read_text())
    assert {section: files_digest(stand_ins[section]) for section in SECTIONS} == recorded["stand_in_sha256"]
    assert f"from {old / 'base_models' / 'sam2'} into {new / 'base_models'}" in caplog.text
    # Copied, not drawn again (the same seed would draw the same weights, which would hide a missing copy).
    assert "Wrote random base models" not in caplog.text


@pytest.mark.parametrize("digests", ["recorded", "not recorded (older lavida)"])
def test_another_runs_stand_ins_at_the_old_place_are_not_copied(
    killed_run, synthetic_train_root, tmp_path, digests
):
    """Moved without base_models/, and a new run has taken over the old place: its stand-ins are not the
    checkpoint's, which its digests tell; refused, nothing written. A checkpoint without digests takes the
    old place, as load_checkpoint does."""
    old, new = _moved(killed_run, tmp_path)
    shutil.rmtree(new / "base_models")
    _other_stand_ins_at(old)
    if digests != "recorded":
        meta_file = new / "checkpoints" / "step_0000002" / "model" / "meta.json"
        meta = json.loads(meta_file.read_text())
        del meta["stand_in_sha256"], meta["base_model_fingerprints"]  # neither was recorded then
        meta_file.write_text(json.dumps(meta))
    trainer = make_trainer(synthetic_train_root, compose_model_config("tiny"), new, **SIZES)
    if digests == "recorded":
        with pytest.raises(FileNotFoundError, match=r"no copy with their files lies beside the checkpoint"):
            trainer.setup()
        assert not (new / "base_models").exists()
    else:
        trainer.setup()
        assert trainer.progress.step == 2
        assert (new / "base_models" / "sam2").is_dir()


def test_a_run_moved_without_its_stand_ins_found_nowhere_is_refused(
    killed_run, synthetic_train_root, tmp_path
):
    """Neither in the run folder nor where the checkpoint was saved with them: new random stand-ins would
    put other frozen weights under the trained heads. Refused in one line, before anything is written."""
    _, new = _moved(killed_run, tmp_path)
    shutil.rmtree(new / "base_models")
    trainer = make_trainer(synthetic_train_root, compose_model_config("tiny"), new, **SIZES)
    with pytest.raises(FileNotFoundError) as error:
        trainer.setup()
    message = str(error.value)
    assert "\n" not in message
    assert str(new / "base_models") in message and "step_0000002" in message
    assert "(mllm, sam2, clip/open_clip_model.safetensors)" in message
    assert "start over: a new output_dir without train.resume" in message
    assert not (new / "base_models").exists()  # no new random stand-ins


def test_resuming_another_runs_checkpoint_brings_its_stand_ins_along(
    killed_run, synthetic_train_root, tmp_path, caplog
):
    """``train.resume=<run>/checkpoints/step_N`` into a new output_dir: the new run folder gets the stand-ins
    that checkpoint was trained on, copied from beside it, and continues exactly."""
    _, straight = killed_run
    _, source = _moved(killed_run, tmp_path)
    target = tmp_path / "continued"
    checkpoint = source / "checkpoints" / "step_0000002"
    resumed = make_trainer(
        synthetic_train_root, compose_model_config("tiny"), target, **SIZES, resume=str(checkpoint)
    )
    with caplog.at_level("INFO"):
        _resumes_exactly(resumed, straight, random_pretrained_paths(target / "base_models"), target)
    assert "Copied the mllm stand-in" in caplog.text and "Wrote random base models" not in caplog.text


def test_a_moved_run_given_another_runs_stand_ins_is_refused(killed_run, synthetic_train_root, tmp_path):
    """base_models/ copied from the old place after a new run took it over: other frozen weights under the
    trained ones. The checkpoint's digests tell them apart; refused before anything is written."""
    old, new = _moved(killed_run, tmp_path)
    shutil.rmtree(new / "base_models")
    _other_stand_ins_at(new)
    written = _times(random_pretrained_paths(new / "base_models"))
    trainer = make_trainer(synthetic_train_root, compose_model_config("tiny"), new, **SIZES)
    with pytest.raises(
        FileNotFoundError, match=r"holds other stand-ins than it was trained on \(mllm, "
    ) as error:
        trainer.setup()
    assert "\n" not in str(error.value) and "a new output_dir without train.resume" in str(error.value)
    assert _times(random_pretrained_paths(new / "base_models")) == written  # nothing rewritten


def test_a_moved_run_with_a_changed_setting_is_still_refused(killed_run, synthetic_train_root, tmp_path):
    """Moving changes only paths, which may differ; a changed learning rate is refused as in place, and the
    refusal names only it."""
    _, new = _moved(killed_run, tmp_path)
    trainer = make_trainer(
        synthetic_train_root,
        compose_model_config("tiny"),
        new,
        **SIZES,
        optim={"lr": 1e-3, "warmup_steps": 0, "decay": "constant"},
    )
    with pytest.raises(ResumeMismatchError) as error:
        trainer.setup()
    assert error.value.changed == ("train.optim.lr",)
