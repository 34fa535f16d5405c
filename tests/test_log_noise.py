"""Building the model prints what the user needs, not the libraries' own chatter (new-user walkthrough)."""

import logging
import warnings

import pytest


def test_building_the_model_raises_no_is_gradient_checkpointing_notice(tiny_pretrained):
    """PEFT reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps the MLLM; every CLI run
    printed the FutureWarning (pyproject.toml used to ignore it under pytest only)."""
    from lavida.models.lavida import build_lavida

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_lavida(tiny_pretrained)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def _build_text_tower(config, *, with_weights: bool):
    from lavida.models.text_encoder import build_category_encoder

    t = config.text_encoder
    pretrained = t.pretrained if with_weights else None
    return build_category_encoder(model_name=t.model_name, pretrained=pretrained, arch=t.arch)


def _open_clip_records(caplog):
    # open_clip 3.x logs on the root logger (logging.info / logging.warning).
    return [record for record in caplog.records if record.name == "root"]


def test_the_clip_tower_built_from_its_weights_logs_nothing_of_open_clip(tiny_pretrained, caplog):
    caplog.set_level(logging.INFO)
    _build_text_tower(tiny_pretrained, with_weights=True)
    assert [r.getMessage() for r in _open_clip_records(caplog)] == []
    assert "Built CLIP text tower" in caplog.text  # lavida's own line says what was built, from which file


def test_a_random_clip_tower_keeps_open_clip_s_random_init_warning_only(tiny_pretrained, caplog):
    caplog.set_level(logging.INFO)
    _build_text_tower(tiny_pretrained, with_weights=False)
    records = _open_clip_records(caplog)
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "initialized randomly" in records[0].getMessage()


@pytest.mark.parametrize("with_weights", [True, False])
def test_building_the_clip_tower_leaves_an_unconfigured_root_logger_unconfigured(
    tiny_pretrained, capsys, with_weights
):
    """open_clip's logging.info() ran logging.basicConfig() when the root logger had no handler (a Python
    API user's program): a stderr handler stayed, and "WARNING:root:..." lines followed."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        _build_text_tower(tiny_pretrained, with_weights=with_weights)
        assert root.handlers == [] and root.level == saved_level
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    err = capsys.readouterr().err
    assert "INFO" not in err and "root" not in err
    # What Python prints by itself without a handler (logging.lastResort) still comes through.
    assert ("initialized randomly" in err) is not with_weights


def test_save_checkpoint_leaves_the_info_line_to_its_callers(tiny_model, tiny_pretrained, tmp_path, caplog):
    """A training checkpoint is written into a staging folder: save_checkpoint's own INFO line named it."""
    from lavida.models.checkpoint import save_checkpoint

    caplog.set_level(logging.INFO)
    save_checkpoint(tiny_model, tiny_pretrained, tmp_path / "step.staging" / "model")
    assert "staging" not in caplog.text


def test_the_demo_s_stand_ins_are_made_without_open_clip_s_chatter(tiny_pretrained, tmp_path, caplog):
    """``lavida-demo`` printed open_clip's eight progress lines and two "initialized randomly" warnings while
    it wrote its random base models and pretrained the tiny CLIP, both random on purpose and said so."""
    import shutil

    from conftest import compose_model_config, write_synthetic_train

    from lavida.models.random_init import write_random_pretrained
    from lavida.synthetic.pretrain_clip import pretrain_clip

    caplog.set_level(logging.INFO)
    write_random_pretrained(compose_model_config("tiny"), tmp_path / "base")
    assert "Wrote random base models" in caplog.text  # lavida's own line says they are random
    text = tiny_pretrained.text_encoder
    clip_file = tmp_path / "open_clip_model.safetensors"
    shutil.copy(text.pretrained, clip_file)
    train_root = write_synthetic_train(tmp_path / "train", videos=2, images=4, frames=2)
    pretrain_clip(clip_file, train_root, model_name=text.model_name, arch=text.arch, steps=1, batch_size=4)
    assert [r.getMessage() for r in _open_clip_records(caplog)] == []


def test_the_demo_tells_deepspeed_it_runs_on_the_cpu(monkeypatch, tmp_path):
    """Accelerate's model unwrapping imports DeepSpeed where it is installed, which warned on every demo run
    "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it"."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    import lavida.cli.demo as demo

    pytest.importorskip("deepspeed")
    # Set first, so that monkeypatch restores the variable's absence after main's setdefault: later tests
    # (and the subprocesses they build from os.environ) must not run DeepSpeed on the CPU accelerator.
    monkeypatch.setenv("DS_ACCELERATOR", "unset by the test")
    monkeypatch.delenv("DS_ACCELERATOR")
    monkeypatch.setattr(demo, "run", lambda cfg: {})
    monkeypatch.setattr(demo, "hydra_record", lambda cfg: {})
    monkeypatch.setattr(demo, "write_record", lambda *args: None)
    demo.main.__wrapped__(OmegaConf.create({"num_workers": 1, "output_dir": str(tmp_path)}))
    import os

    assert os.environ["DS_ACCELERATOR"] == "cpu"
    done = subprocess.run(
        [sys.executable, "-c", "import deepspeed"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert done.returncode == 0 and "Setting accelerator" not in done.stdout + done.stderr, done.stderr


@pytest.mark.parametrize(
    ("launcher", "told"),
    [("cpu", True), ("zero2", False), ("single", None)],  # None: told exactly when there is no GPU
)
def test_lavida_train_tells_deepspeed_the_cpu_is_meant(monkeypatch, tmp_path, launcher, told):
    """``lavida-train launcher=cpu`` printed DeepSpeed's "Setting accelerator to CPU ... unable to detect
    it" on every process (Accelerate imports DeepSpeed for unwrapping and checkpoints); a ZeRO launcher
    keeps DeepSpeed's own detection, where a missing GPU is news."""
    import os

    import torch
    from conftest import compose_cli_config

    import lavida.cli.train as train

    if told is None:
        told = not torch.cuda.is_available()
    monkeypatch.setenv("DS_ACCELERATOR", "unset by the test")  # restored to absent afterwards
    monkeypatch.delenv("DS_ACCELERATOR")
    ran = []
    monkeypatch.setattr(train, "run", lambda cfg, record: ran.append(os.environ.get("DS_ACCELERATOR")))
    monkeypatch.setattr(train, "hydra_record", lambda cfg: {})
    cfg = compose_cli_config("train", "model=tiny", "data=tiny", "train=tiny", f"launcher={launcher}")
    cfg.output_dir = str(tmp_path)
    train.main.__wrapped__(cfg)
    assert ran == (["cpu"] if told else [None])
