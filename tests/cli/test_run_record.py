"""The `.hydra/` record in an output_dir is the one of the command that made the results there: a rerun
that is refused (changed settings over cached results, a resume with changed settings) leaves it alone."""

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[2] / "lavida" / "configs"


def test_hydra_writes_no_record_of_its_own_before_the_checks():
    """Hydra writes `<output_dir>/.hydra/` before our code runs unless output_subdir is null; the entry
    points write it themselves (lavida/cli/record.py)."""
    for config in ("eval", "train", "demo", "detect", "info"):
        hydra = OmegaConf.load(CONFIGS / f"{config}.yaml").hydra
        assert hydra.get("output_subdir", ".hydra") is None, config  # Hydra's default: .hydra


def lavida_eval(monkeypatch, *overrides):
    """`lavida-eval <overrides>` in this process, through Hydra's command line (the record is its own)."""
    from lavida.cli.eval import main

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the error itself, not Hydra's sys.exit(1)
    argv = ["lavida-eval", *overrides, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", argv)
    main()


def test_a_refused_eval_rerun_leaves_the_record_of_the_results(tmp_path, monkeypatch):
    from eval.trees import write_ucsd_ped2_tree

    from lavida.eval.benchmarks import get_benchmark

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    rng = np.random.default_rng(0)
    for video in get_benchmark("ucsd_ped2", tree.root).videos():
        np.save(predictions / f"{video.name}.npy", rng.random(video.num_frames).astype(np.float32))
    out = tmp_path / "out"
    command = [
        "benchmark=ucsd_ped2",
        f"benchmark.root={tree.root}",
        f"predictions={predictions}",
        f"output_dir={out}",
        "num_workers=0",
    ]
    lavida_eval(monkeypatch, *command, "categories=fire")
    record = out / ".hydra"
    assert sorted(p.name for p in record.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert yaml.safe_load((record / "overrides.yaml").read_text())[-1] == "categories=fire"
    assert yaml.safe_load((record / "config.yaml").read_text())["categories"] == "fire"
    made = {p.name: p.read_bytes() for p in record.iterdir()}

    with pytest.raises(ValueError, match="overwrite=true"):
        lavida_eval(monkeypatch, *command, "categories=smoke")
    assert {p.name: p.read_bytes() for p in record.iterdir()} == made

    lavida_eval(monkeypatch, *command, "categories=smoke", "overwrite=true")
    assert yaml.safe_load((record / "overrides.yaml").read_text())[-2:] == [
        "categories=smoke",
        "overwrite=true",
    ]
    assert [p.name for p in out.iterdir() if p.name.startswith(".hydra")] == [".hydra"]  # no staging left


def test_a_refused_train_resume_leaves_the_record_of_the_run(synthetic_train_root, tiny_pretrained, tmp_path):
    """The record is written after the trainer's resume check, beside run_config.json (written then too)."""
    from train.test_cli_train import SOURCES, compose

    from lavida.cli.train import run
    from lavida.data.sources.synthetic import SyntheticSource
    from lavida.train.resume_check import ResumeMismatchError

    out = tmp_path / "run"
    sources = {name: SyntheticSource(synthetic_train_root) for name in SOURCES}
    cfg = compose("official", tiny_pretrained, out, "launcher.mixed_precision=bf16")
    run(cfg, sources=sources, record={"overrides.yaml": "- first\n"})
    config = (out / "run_config.json").read_text()
    assert (out / ".hydra" / "overrides.yaml").read_text() == "- first\n"

    changed = compose("official", tiny_pretrained, out, "launcher.mixed_precision=bf16", "train.optim.lr=0.5")
    with pytest.raises(ResumeMismatchError):
        run(changed, sources=sources, record={"overrides.yaml": "- second\n"})
    assert (out / ".hydra" / "overrides.yaml").read_text() == "- first\n"
    assert (out / "run_config.json").read_text() == config
