"""Resuming continues the same run: changed settings are refused (or, on request, logged)."""

import json
import logging
from pathlib import Path

import pytest

from lavida.train.resume_check import RUN_CONFIG_FILE, ResumeMismatchError, check_resume_settings


def record(**changes):
    """A trainer record in the shape ``Trainer._record`` writes, with dotted-key changes applied."""
    base = {
        "model": {"dtype": "float32", "mllm": {"pretrained": "/a/qwen", "gradient_checkpointing": False}},
        "data": {
            "num_workers": 4,
            "max_categories": 30,
            "sources": {"vos": {"root": "/a/vos", "weight": 0.05}},
        },
        "train": {
            "seed": 44,
            "log_every": 10,
            "max_steps": None,
            "optim": {"lr": 1e-5, "betas": (0.9, 0.999)},
        },
        "launcher": {"name": "single", "mixed_precision": "bf16", "cpu": False, "deepspeed": None},
        "processes": 1,
        "hydra": {"output_dir": "/runs/a"},
    }
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = base
        for key in parents:
            node = node[key]
        node[leaf] = value
    return base


def checkpoint_with(tmp_path, recorded):
    directory = tmp_path / "checkpoints" / "step_0000002"
    directory.mkdir(parents=True)
    (directory / RUN_CONFIG_FILE).write_text(json.dumps(recorded))
    return directory


def test_the_same_settings_resume(tmp_path):
    # The record reads back with lists where it was written with tuples (betas): still the same.
    assert check_resume_settings(checkpoint_with(tmp_path, record()), record(), mode="strict") == []


def test_settings_that_decide_training_are_refused_and_listed(tmp_path):
    checkpoint = checkpoint_with(tmp_path, record())
    now = record(
        model__dtype="bfloat16",
        train__optim__lr=3e-5,
        train__max_steps=500,  # the schedule decays to 0 at the last step: another run
        data__sources__vos__weight=0.5,
        processes=2,
    )
    with pytest.raises(ResumeMismatchError) as error:
        check_resume_settings(checkpoint, now, mode="strict")
    message = str(error.value)
    for line in (
        "data.sources.vos.weight: 0.05 -> 0.5",
        "model.dtype: 'float32' -> 'bfloat16'",
        "processes: 1 -> 2",
        "train.max_steps: None -> 500",
        "train.optim.lr: 1e-05 -> 3e-05",
    ):
        assert f"\n  {line}\n" in message + "\n", line
    assert str(checkpoint) in message and "train.resume_check=warn" in message
    assert "log_every" not in message and "hydra" not in message


def test_where_and_how_often_may_change(tmp_path):
    checkpoint = checkpoint_with(tmp_path, record())
    now = record(
        model__mllm__pretrained="/b/qwen",
        model__mllm__gradient_checkpointing=True,
        data__num_workers=0,
        data__sources__vos__root="/b/vos",
        data__skip_errors=True,  # what the error of an unreadable item tells the user to set
        train__log_every=1,
        launcher__name="ddp",
        hydra={"output_dir": "/runs/b"},
    )
    assert check_resume_settings(checkpoint, now, mode="strict") == []


def test_a_base_model_path_may_move_but_not_vanish(tmp_path):
    """With base_weights optional an unset path means random frozen weights: another run."""
    checkpoint = checkpoint_with(tmp_path, record())
    with pytest.raises(ResumeMismatchError, match=r"model.mllm.pretrained: '\(set\)' -> '\(unset\)'"):
        check_resume_settings(checkpoint, record(model__mllm__pretrained=None), mode="strict")


def test_added_and_removed_settings_count_as_changes(tmp_path):
    checkpoint = checkpoint_with(tmp_path, record())
    now = record(train__optim__lr_scales={"sam.mask_decoder": 0.1})
    del now["data"]["max_categories"]
    with pytest.raises(ResumeMismatchError, match=r"data.max_categories: 30 -> \(absent\)") as error:
        check_resume_settings(checkpoint, now, mode="strict")
    assert "train.optim.lr_scales.sam.mask_decoder: (absent) -> 0.1" in str(error.value)
    assert "an option that a code update added or removed" in str(error.value)


def test_keys_with_dots_are_not_confused(tmp_path):
    """lr_scales keys are parameter-name prefixes: 'a.b.' and 'a.b' match different parameters."""
    checkpoint = checkpoint_with(tmp_path, record(train__optim__lr_scales={"mask_decoder.sam.": 0.1}))
    now = record(train__optim__lr_scales={"mask_decoder.sam": 0.1})
    with pytest.raises(ResumeMismatchError, match=r"lr_scales.mask_decoder.sam: \(absent\) -> 0.1"):
        check_resume_settings(checkpoint, now, mode="strict")


def test_nan_equals_nan(tmp_path):
    checkpoint = checkpoint_with(tmp_path, record(train__max_steps=float("nan")))
    assert check_resume_settings(checkpoint, record(train__max_steps=float("nan")), mode="strict") == []


def test_a_value_the_trainer_wrote_as_text_equals_the_same_value_now(tmp_path):
    """The trainer writes its record with ``json.dumps(..., default=str)``: a Path reads back as text, and
    must still equal the Path of the run resuming, while another Path must not."""
    read_back = json.loads(json.dumps(record(train__init_from=Path("/runs/a/final")), default=str))
    checkpoint = checkpoint_with(tmp_path, read_back)
    now = record(train__init_from=Path("/runs/a/final"))
    assert check_resume_settings(checkpoint, now, mode="strict") == []
    moved = record(train__init_from=Path("/runs/b/final"))
    with pytest.raises(ResumeMismatchError, match="train.init_from: '/runs/a/final' -> '/runs/b/final'"):
        check_resume_settings(checkpoint, moved, mode="strict")


def test_warn_mode_logs_the_changes_and_continues(tmp_path, caplog):
    checkpoint = checkpoint_with(tmp_path, record())
    with caplog.at_level(logging.WARNING):
        changes = check_resume_settings(checkpoint, record(train__seed=7), mode="warn")
    assert changes == ["train.seed: 44 -> 7"]
    assert "train.seed: 44 -> 7" in caplog.text


def test_a_checkpoint_without_a_record_resumes_with_a_warning(tmp_path, caplog):
    directory = tmp_path / "step_0000002"
    directory.mkdir()
    with caplog.at_level(logging.WARNING):
        assert check_resume_settings(directory, record(), mode="strict") == []
    assert RUN_CONFIG_FILE in caplog.text and "cannot be compared" in caplog.text


def test_an_unreadable_record_is_refused_in_strict_mode_and_skipped_in_warn_mode(tmp_path, caplog):
    checkpoint = checkpoint_with(tmp_path, record())
    for text, problem in (("{not json", "not readable JSON"), ("null", "a JSON NoneType, not an object")):
        (checkpoint / RUN_CONFIG_FILE).write_text(text)
        with pytest.raises(ResumeMismatchError, match=rf"{RUN_CONFIG_FILE} is {problem}.*resume_check=warn"):
            check_resume_settings(checkpoint, record(), mode="strict")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert check_resume_settings(checkpoint, record(train__seed=7), mode="warn") == []
        assert problem in caplog.text and "not compared" in caplog.text


def test_the_errors_changed_keys_include_settings_on_one_side_only(tmp_path):
    """Callers name their own settings from ``ResumeMismatchError.changed`` (lavida-demo), so a setting
    added or removed must be there too, not only in the message; sorted dotted keys, one per change."""
    checkpoint = checkpoint_with(tmp_path, record())
    now = record(train__seed=7, train__optim__lr_scales={"sam.mask_decoder": 0.1})
    del now["data"]["max_categories"]
    with pytest.raises(ResumeMismatchError) as error:
        check_resume_settings(checkpoint, now, mode="strict")
    # Removed, added, changed: the three keys, sorted as strings.
    assert error.value.changed == (
        "data.max_categories",
        "train.optim.lr_scales.sam.mask_decoder",
        "train.seed",
    )
    assert error.value.changes == (
        "data.max_categories: 30 -> (absent)",
        "train.optim.lr_scales.sam.mask_decoder: (absent) -> 0.1",
        "train.seed: 44 -> 7",
    )
