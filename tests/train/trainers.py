"""The tests' trainer on the synthetic training set: small, fast, no logging or checkpoints unless asked."""

from lavida.data.config import DataConfig
from lavida.data.sources.synthetic import SyntheticSource
from lavida.train.config import LauncherConfig, TrainConfig
from lavida.train.loop import Trainer


def make_trainer(
    root,
    model_config,
    output_dir,
    *,
    data_seed: int = 3,
    launcher: LauncherConfig | None = None,
    run_config: dict | None = None,
    **train_overrides,
) -> Trainer:
    """A CPU Trainer over the synthetic set at ``root``: 6 batches of 2, lr 3e-3 constant; ``train_overrides``
    replace top-level train settings; ``launcher`` replaces the plain CPU one; ``run_config`` is the
    command's settings (what lavida-train passes)."""
    data = DataConfig.from_dict(
        {
            "sources": {"synthetic": {"weight": 1.0, "root": str(root)}},
            "max_categories": 4,
            "num_workers": 0,
            "strides": [1],
            "seed": data_seed,
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
        launcher=launcher or LauncherConfig(cpu=True),
        output_dir=output_dir,
        sources={"synthetic": SyntheticSource(root)},
        run_config=run_config,
    )


def poison_loss(trainer: Trainer, *, on_call: int, value: float) -> None:
    """Add ``value`` (inf or NaN) to the loss of the trainer's ``on_call``-th loss computation (1-based)."""
    calls = {"n": 0}
    compute = trainer.compute_loss

    def poisoned(batch):
        calls["n"] += 1
        losses = compute(batch)
        if calls["n"] == on_call:
            losses["loss"] = losses["loss"] + value
        return losses

    trainer.compute_loss = poisoned
