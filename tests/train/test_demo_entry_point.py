"""``lavida-demo``'s entry point (lavida/cli/demo.py) without the demo itself: what the command line hands
to ``run_demo``, the thread count, what it prints and records, and its Hydra wiring (``python -m``).

The demo's run is stood in for, so each test takes well under a second; the demo end to end is
tests/train/test_demo.py.
"""

import dataclasses
import runpy
import sys
import warnings

import pytest
import torch
import yaml
from conftest import compose_cli_config
from omegaconf import OmegaConf

import lavida.cli.demo as cli_demo
from lavida.demo import DemoConfig, _check_settings, _tiny_model_dict


@pytest.fixture
def threads_kept():
    """main() sets torch's thread count for the process: put it back for the tests after this one."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_run_hands_the_composed_settings_and_model_to_run_demo(monkeypatch):
    handed = {}

    def fake_run_demo(config, *, model):
        handed.update(config=config, model=model)
        return {"frame_auc_micro": 0.5}

    monkeypatch.setattr(cli_demo, "run_demo", fake_run_demo)
    cfg = compose_cli_config("demo")  # nothing is written: run_demo is stood in for
    assert cli_demo.run(cfg) == {"frame_auc_micro": 0.5}
    # Every field of lavida/configs/demo.yaml, as composed, is DemoConfig's default.
    assert handed["config"] == DemoConfig()
    assert (handed["config"].output_dir, handed["config"].steps) == ("outputs/demo", 2000)
    assert handed["model"] == _tiny_model_dict()


def test_run_refuses_an_unknown_key_naming_the_valid_ones(monkeypatch, tmp_path):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the demo ran despite the unknown key")

    monkeypatch.setattr(cli_demo, "run_demo", must_not_run)
    cfg = compose_cli_config("demo", f"output_dir={tmp_path}", "+stepz=7")
    valid = sorted(field.name for field in dataclasses.fields(DemoConfig))
    with pytest.raises(ValueError) as error:
        cli_demo.run(cfg)
    assert str(error.value) == f"demo: unknown keys ['stepz']; valid keys are {valid}."


@pytest.mark.parametrize(("num_workers", "threads"), [(0, 2), (1, 1), (2, 1)])
def test_torch_threads_leave_one_of_two_cores_to_a_data_worker(num_workers, threads):
    """The demo's 2-core target: both cores compute without a worker, one with any (docstring)."""
    assert cli_demo.torch_threads(num_workers) == threads


def test_main_prints_the_float_metrics_and_records_the_run_after_it(
    monkeypatch, tmp_path, capsys, threads_kept
):
    events = []
    metrics = {"frame_auc_micro": 0.75, "pixel_auc": 0.5, "train_steps": 4, "reused_from_earlier_run": []}

    def fake_run(cfg):
        events.append(("run", torch.get_num_threads()))
        return metrics

    monkeypatch.setattr(cli_demo, "run", fake_run)
    monkeypatch.setattr(cli_demo, "hydra_record", lambda cfg: {"overrides.yaml": "- steps=4\n"})
    monkeypatch.setattr(cli_demo, "write_record", lambda *args: events.append(("write_record", *args)))
    torch.set_num_threads(2)
    cli_demo.main.__wrapped__(OmegaConf.create({"num_workers": 1, "output_dir": str(tmp_path)}))
    assert events == [("run", 1), ("write_record", str(tmp_path), {"overrides.yaml": "- steps=4\n"})]
    assert capsys.readouterr().out == (
        '{\n "frame_auc_micro": 0.75,\n "pixel_auc": 0.5\n}\n'
        f"Outputs in {tmp_path}: metrics.json, report.md, score_curves.png, overlays/\n"
    )


def test_main_ends_a_refused_run_with_the_demos_name_and_keeps_the_old_record(
    monkeypatch, tmp_path, capsys, threads_kept
):
    """A refused rerun (lavida.cli.errors.user_errors): status 2, one line, and no new .hydra record."""

    record = tmp_path / "data" / "settings.json"

    def refused(cfg):  # the data made with another seed: lavida.demo's own refusal
        _check_settings(record, {"seed": 0}, what="synthetic data", fresh=[record.parent])
        _check_settings(record, {"seed": 1}, what="synthetic data", fresh=[record.parent])

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(cli_demo, "run", refused)
    monkeypatch.setattr(cli_demo, "hydra_record", lambda cfg: {})
    monkeypatch.setattr(cli_demo, "write_record", lambda *args: pytest.fail("the record was written"))
    with pytest.raises(SystemExit) as stop:
        cli_demo.main.__wrapped__(OmegaConf.create({"num_workers": 0, "output_dir": str(tmp_path)}))
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        f"lavida-demo: {record}: the synthetic data there were made with other settings than this run's "
        f"(differing: seed). Use a fresh output_dir, or delete {record.parent} to start over.\n"
    )


def test_python_m_composes_the_demo_config(monkeypatch, capsys, tmp_path):
    """``python -m lavida.cli.demo`` is the Hydra app over lavida/configs/demo.yaml (``--cfg job`` prints
    the composed job config without running it), with Hydra's current defaults (version_base=None)."""
    monkeypatch.setattr(sys, "argv", ["lavida-demo", "--cfg", "job", "steps=7", f"output_dir={tmp_path}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Hydra warns when version_base is left out
        warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
        runpy.run_module("lavida.cli.demo", run_name="__main__")
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == {
        **dataclasses.asdict(DemoConfig(output_dir=str(tmp_path), steps=7)),
        "model": _tiny_model_dict(),
    }


def test_run_resolves_interpolations_in_the_settings(monkeypatch, tmp_path):
    """``lavida-demo 'output_dir=${oc.env:SCRATCH}/demo'``: the demo gets the path, not the ``${...}`` text."""
    handed = []
    monkeypatch.setattr(cli_demo, "run_demo", lambda config, *, model: handed.append(config) or {})
    monkeypatch.setenv("SCRATCH", str(tmp_path))
    cli_demo.run(compose_cli_config("demo", "output_dir=${oc.env:SCRATCH}/demo"))
    assert handed[0].output_dir == f"{tmp_path}/demo"
