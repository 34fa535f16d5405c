"""The training loop: learning, exact resume, non-finite loss, schedule."""

import math
import shutil

import pytest
import torch

from lavida.data.config import DataConfig
from lavida.data.sources.synthetic import SyntheticSource
from lavida.train.config import LauncherConfig, TrainConfig
from lavida.train.loop import NonFiniteLossError, Trainer
from lavida.train.optim import warmup_decay_factor
from lavida.train.state import latest_checkpoint


def make_trainer(root, model_config, output_dir, **train_overrides):
    data = DataConfig.from_dict(
        {
            "sources": {"synthetic": {"weight": 1.0, "root": str(root)}},
            "max_categories": 4,
            "num_workers": 0,
            "strides": [1],
            "seed": 3,
        }
    )
    train = {
        "epochs": 1,
        "batches_per_epoch": 6,
        "batch_size": 2,
        "log_every": 1,
        "save_every": 0,
        "val_every": 0,
        "logger": "none",
        "optim": {"lr": 3e-3, "warmup_steps": 0, "decay": "constant"},
    }
    train.update(train_overrides)
    return Trainer(
        model=model_config,
        data=data,
        train=TrainConfig.from_dict(train),
        launcher=LauncherConfig(cpu=True),
        output_dir=output_dir,
        sources={"synthetic": SyntheticSource(root)},
    )


def test_single_batch_overfits(synthetic_train_root, tiny_pretrained, tmp_path):
    """Repeating one batch, the loss must fall far (the model can learn what it is shown)."""
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run")
    trainer.setup()
    batch = next(iter(trainer.loader))
    steps = [trainer.train_step(batch) for _ in range(30)]
    # Both terms of Eq. 10 fall: the masks / object scores (L_seg) fast; the answer tokens (L_txt)
    # slowly, as only LoRA on q/v and the <SEG> rows of a 2-layer, 64-wide LLM can change.
    for key, factor in (("loss_seg", 0.6), ("loss_txt", 0.95), ("loss", 0.8)):
        assert steps[-1][key] < factor * steps[0][key], (key, [round(s[key], 3) for s in steps])


def test_loss_falls_over_training(synthetic_train_root, tiny_pretrained, tmp_path):
    trainer = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "run", batches_per_epoch=12, epochs=2
    )
    trainer.setup()
    first = [trainer.compute_loss(batch)["loss"].item() for batch in trainer.loader]
    summary = trainer.fit()
    trainer.model.eval()
    trainer.dataset.set_epoch(0)
    with torch.no_grad():
        after = [trainer.compute_loss(batch)["loss"].item() for batch in trainer.loader]
    assert sum(after) / len(after) < 0.8 * sum(first) / len(first)
    assert summary.steps == 24
    assert (tmp_path / "run" / "final" / "heads.safetensors").is_file()
    assert (tmp_path / "run" / "run_config.json").is_file()


def test_kill_and_resume_gives_the_same_next_step(synthetic_train_root, tiny_pretrained, tmp_path):
    """Stopping after a checkpoint and resuming replays exactly what an uninterrupted run does next."""
    straight = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "straight", max_steps=4)
    straight.setup()
    straight_losses = []
    original = straight.train_step
    straight.train_step = lambda batch: straight_losses.append(original(batch)) or straight_losses[-1]
    straight.fit()

    first = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "resumed", max_steps=2, save_every=2
    )
    first.fit()  # "killed" after step 2, its checkpoint written
    pointer = tmp_path / "resumed" / "checkpoints" / "latest.txt"
    assert pointer.read_text().strip() == "step_0000002"
    pointer.unlink()  # resuming scans the checkpoints; a lost pointer must not restart from step 0
    resumed = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "resumed", max_steps=4, save_every=2
    )
    resumed.setup()
    assert resumed.progress.step == 2 and resumed.progress.batch_in_epoch == 2
    resumed_losses = []
    again = resumed.train_step
    resumed.train_step = lambda batch: resumed_losses.append(again(batch)) or resumed_losses[-1]
    resumed.fit()
    assert len(resumed_losses) == 2
    for key in ("loss", "loss_txt", "loss_seg"):
        assert resumed_losses[0][key] == straight_losses[2][key], key
        assert resumed_losses[1][key] == straight_losses[3][key], key


def test_resume_finds_the_newest_complete_checkpoint_whatever_latest_txt_says(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    for name in ("step_0000002", "step_0000004", "step_0000010"):
        (root / name / "model").mkdir(parents=True)
        (root / name / "progress.json").write_text("{}")
    (root / "step_0000012.staging" / "model").mkdir(parents=True)  # a save that was killed
    (root / "step_0000012.staging" / "progress.json").write_text("{}")
    (root / "step_0000008" / "model").mkdir(parents=True)  # no progress.json: incomplete
    (root / "latest.txt").write_text("step_0000010\n")
    assert latest_checkpoint(tmp_path) == root / "step_0000010"
    assert not caplog.records

    (root / "latest.txt").write_text("step_0000004\n")  # lagging: killed between rename and pointer
    assert latest_checkpoint(tmp_path) == root / "step_0000010"
    assert "step_0000004" in caplog.text and "step_0000010" in caplog.text

    shutil.rmtree(root / "step_0000010")  # the pointer names a folder that is gone
    (root / "latest.txt").write_text("step_0000010\n")
    assert latest_checkpoint(tmp_path) == root / "step_0000004"
    (root / "latest.txt").unlink()
    assert latest_checkpoint(tmp_path) == root / "step_0000004"
    assert latest_checkpoint(tmp_path / "fresh") is None


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", save_every=1, max_steps=3)
    trainer.setup()
    calls = {"n": 0}
    compute = trainer.compute_loss

    def poisoned(batch):
        calls["n"] += 1
        losses = compute(batch)
        if calls["n"] == 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    trainer.compute_loss = poisoned
    with pytest.raises(NonFiniteLossError, match="step_0000002"):
        trainer.fit()
    latest = (tmp_path / "run" / "checkpoints" / "latest.txt").read_text().strip()
    assert latest == "step_0000002"
    assert not (tmp_path / "run" / "checkpoints" / "step_0000003").exists()


def test_warmup_decay_schedule_shape():
    linear = [
        warmup_decay_factor(s, warmup_steps=4, total_steps=12, warmup_type="linear", decay="linear")
        for s in range(12)
    ]
    assert linear[:4] == [0.25, 0.5, 0.75, 1.0]
    assert (
        linear[4] == pytest.approx(1.0)
        and linear[8] == pytest.approx(0.5)
        and linear[11] == pytest.approx(0.125)
    )
    # DeepSpeed WarmupLR's log shape: log(step + 1) / log(warmup + 1).
    log = [
        warmup_decay_factor(s, warmup_steps=100, total_steps=1000, warmup_type="log", decay="linear")
        for s in (0, 1, 99)
    ]
    assert log == pytest.approx([0.0, math.log(2) / math.log(101), math.log(100) / math.log(101)])


def test_learning_rate_scales_make_parameter_groups():
    from torch import nn

    from lavida.train.config import OptimConfig
    from lavida.train.optim import build_optimizer

    model = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2), "c": nn.Linear(2, 2)})
    model["a"].bias.requires_grad_(False)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, lr_scales={"b.": 0.1, "c.": 0.0, "b.bias": 0.5}))
    lrs = sorted((group["lr"], sum(p.numel() for p in group["params"])) for group in optimizer.param_groups)
    # a.weight at 1e-3; b.weight at 1e-4; b.bias (longest prefix wins) at 5e-4; c frozen; a.bias not trainable.
    assert lrs == [(pytest.approx(1e-4), 4), (pytest.approx(5e-4), 2), (pytest.approx(1e-3), 4)]
