"""``lavida-train``'s entry point (lavida/cli/train.py) with the trainer stood in for: what it hands the
trainer, when it writes the ``.hydra`` record, how it ends on Ctrl-C and on a user error, and its Hydra
wiring (``python -m lavida.cli.train``, as ``accelerate launch -m`` runs it).

Training itself is tests/train/test_cli_train.py; these take well under a second each.
"""

import os
import runpy
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import compose_cli_config
from omegaconf import OmegaConf

import lavida.cli.train as cli_train
from lavida.data.config import DataConfig
from lavida.models.config import LavidaConfig
from lavida.train.config import TrainConfig, launcher_from_dict
from lavida.train.resume_check import ResumeMismatchError

TINY = ("model=tiny", "data=tiny", "train=tiny", "launcher=cpu")


class FakeTrainer:
    """Records the calls lavida.cli.train.run makes, in order; ``main`` says which process it is."""

    def __init__(self, events: list, *, main: bool = True, **kwargs):
        self.events = events
        self.kwargs = kwargs
        self.accelerator = SimpleNamespace(is_main_process=main)
        self.summary = SimpleNamespace(steps=4, seconds=1.0, final_checkpoint="final")

    def setup(self):
        self.events.append("setup")

    def fit(self):
        self.events.append("fit")
        return self.summary


def fake_trainer(monkeypatch, *, main: bool = True) -> list:
    """Stand in for the Trainer; returns the list of events (the first, the trainer built)."""
    events = []

    def build(**kwargs):
        trainer = FakeTrainer(events, main=main, **kwargs)
        events.append(trainer)
        return trainer

    monkeypatch.setattr(cli_train, "Trainer", build)
    monkeypatch.setattr(cli_train, "write_record", lambda *args: events.append(("write_record", *args)))
    return events


def test_run_hands_the_trainer_the_resolved_sections(monkeypatch, tmp_path):
    """Interpolations are resolved first (``${oc.env:LAVIDA_DATA_ROOT,null}``, ``outputs/train/${run_name}``):
    the configs and the run record hold values, not ``${...}`` text."""
    monkeypatch.setenv("LAVIDA_DATA_ROOT", str(tmp_path / "datasets"))
    events = fake_trainer(monkeypatch)
    cfg = compose_cli_config("train", *TINY, "run_name=smoke")
    sources = {"synthetic": object()}
    summary = cli_train.run(cfg, sources=sources)
    trainer = events[0]
    assert summary is trainer.summary and events[1:] == ["fit"]  # no record asked for: no setup, none written
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["output_dir"] == "outputs/train/smoke"
    assert resolved["data"]["data_root"] == str(tmp_path / "datasets")
    assert trainer.kwargs == {
        "model": LavidaConfig.from_dict(resolved["model"]),
        "data": DataConfig.from_dict(resolved["data"]),
        "train": TrainConfig.from_dict(resolved["train"]),
        "launcher": launcher_from_dict(resolved["launcher"]),
        "output_dir": "outputs/train/smoke",
        "sources": sources,
        "run_config": resolved,
    }


@pytest.mark.parametrize("main", [True, False])
def test_the_record_is_written_by_the_main_process_after_the_resume_check(monkeypatch, tmp_path, main):
    """``setup`` (the resume check) first: a refused resume keeps the earlier run's record; then only the
    main process writes it, before training."""
    events = fake_trainer(monkeypatch, main=main)
    cfg = compose_cli_config("train", *TINY, f"output_dir={tmp_path}")
    cli_train.run(cfg, record={"overrides.yaml": "- run_name=smoke\n"})
    written = [("write_record", str(tmp_path), {"overrides.yaml": "- run_name=smoke\n"})] if main else []
    assert events[1:] == ["setup", *written, "fit"]


@pytest.fixture
def main_process(monkeypatch):
    """main() as run by one process: no rank set, no full tracebacks, its record and logging stood in for."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli_train, "hydra_record", lambda cfg: {"overrides.yaml": "- launcher=cpu\n"})
    monkeypatch.setattr(cli_train, "log_from_main_process", lambda **kwargs: None)
    monkeypatch.setenv("DS_ACCELERATOR", "unset by the test")  # main may set it: restored afterwards
    return OmegaConf.create({"output_dir": "runs/smoke", "launcher": {"cpu": True}})


def test_main_hands_run_the_record_of_the_command(monkeypatch, main_process):
    handed = []
    monkeypatch.setattr(cli_train, "run", lambda cfg, **kwargs: handed.append(kwargs))
    cli_train.main.__wrapped__(main_process)
    assert handed == [{"record": {"overrides.yaml": "- launcher=cpu\n"}}]


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys, main_process):
    def interrupted(cfg, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "run", interrupted)
    with pytest.raises(SystemExit) as stop:
        cli_train.main.__wrapped__(main_process)
    assert stop.value.code == 130  # the shell's status for SIGINT
    assert capsys.readouterr().err == (
        "lavida-train: interrupted; rerun the same command to resume from the newest checkpoint in "
        "runs/smoke/checkpoints (the steps after it are trained again).\n"
    )


def test_a_user_error_ends_with_the_commands_name(monkeypatch, capsys, main_process):
    def refused(cfg, **kwargs):
        raise ResumeMismatchError("runs/smoke/checkpoints/step_4 was trained with other settings.")

    monkeypatch.setattr(cli_train, "run", refused)
    with pytest.raises(SystemExit) as stop:
        cli_train.main.__wrapped__(main_process)
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "lavida-train: runs/smoke/checkpoints/step_4 was trained with other settings.\n"
    )


def test_python_m_composes_the_train_config(monkeypatch, capsys):
    """``accelerate launch ... -m lavida.cli.train experiment=...`` (the module docstring) runs the Hydra app
    over lavida/configs/train.yaml; ``--cfg job`` prints the composed job config without training."""
    monkeypatch.setattr(sys, "argv", ["lavida-train", "--cfg", "job", *TINY, "run_name=smoke"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Hydra warns when version_base is left out
        warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
        runpy.run_module("lavida.cli.train", run_name="__main__")
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = OmegaConf.to_container(compose_cli_config("train", *TINY, "run_name=smoke"))
    assert printed == expected and printed["output_dir"] == "outputs/train/${run_name}"


@pytest.mark.parametrize(
    ("launcher", "told"),
    [({"cpu": True}, True), ({"cpu": False}, False), ({"cpu": True, "deepspeed": {"zero_stage": 2}}, False)],
)
def test_deepspeed_is_told_the_cpu_only_for_a_cpu_launcher_on_a_gpu_machine(monkeypatch, launcher, told):
    """Where CUDA is available, only ``launcher.cpu`` means the CPU; a DeepSpeed launcher keeps its own
    detection (lavida.cli.train.quiet_deepspeed_on_cpu)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("DS_ACCELERATOR", "unset by the test")  # restored to absent afterwards
    monkeypatch.delenv("DS_ACCELERATOR")
    cli_train.quiet_deepspeed_on_cpu(OmegaConf.create(launcher))
    assert os.environ.get("DS_ACCELERATOR") == ("cpu" if told else None)
