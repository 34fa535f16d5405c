"""Run by tests/train/test_ddp.py under `accelerate launch`: two training steps, then each rank saves
its trainable parameters so the test can compare ranks; with a fourth argument ``rerun``, the same run
again, which finds nothing left to train."""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from lavida.data.config import DataConfig
from lavida.data.sources.synthetic import SyntheticSource
from lavida.models.config import LavidaConfig
from lavida.train.config import LauncherConfig, TrainConfig
from lavida.train.loop import Trainer


def main(config_json: str, data_root: str, output_dir: str, mode: str = "train") -> None:
    torch.set_num_threads(1)
    data = DataConfig.from_dict(
        {
            "sources": {"synthetic": {"weight": 1.0, "root": data_root}},
            "max_categories": 4,
            "num_workers": 0,
            "strides": [1],
        }
    )
    train = TrainConfig.from_dict(
        {
            "epochs": 1,
            "batches_per_epoch": 2,
            "batch_size": 1,
            "log_every": 1,
            "save_every": 0,
            "val_every": 0,
            "logger": "none",
            "optim": {"lr": 1e-3, "warmup_steps": 4},
        }
    )
    trainer = Trainer(
        model=LavidaConfig.from_dict(json.loads(Path(config_json).read_text(encoding="utf-8"))),
        data=data,
        train=train,
        launcher=LauncherConfig(name="cpu", cpu=True),
        output_dir=output_dir,
        sources={"synthetic": SyntheticSource(data_root)},
    )
    trainer.setup()
    acc = trainer.accelerator
    if mode == "rerun":  # the same command again after the run finished: nothing left to train
        summary = trainer.fit()
        rerun = {"steps": summary.steps, "final": str(summary.final_checkpoint)}
        Path(f"{output_dir}/rerun_rank{acc.process_index}.json").write_text(
            json.dumps(rerun), encoding="utf-8"
        )
        return

    def save(tag: str) -> None:
        model = acc.unwrap_model(trainer.model)
        state = {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(state, f"{output_dir}/{tag}_rank{acc.process_index}_of_{acc.num_processes}.safetensors")

    save("initial")
    # L_seg's divisor for batches of 2 and 8 frames on the two ranks: their mean on both (a collective,
    # so before fit(), whose end_training() ends the process group).
    normalizer = float(trainer.mean_over_processes(2 + 6 * acc.process_index))
    # L_txt re-weighted by this rank's share of the answer tokens (checked against the plain value).
    batch = next(iter(trainer.loader))
    if acc.process_index == 1:  # fewer answer tokens on rank 1, so the two ranks' shares differ
        labels = batch.batch.labels
        supervised = (labels != -100).nonzero()
        labels[supervised[:5, 0], supervised[:5, 1]] = -100
    trainer.model.eval()  # no LoRA dropout: both forwards see the same model (fit() sets train mode)
    with torch.no_grad():
        weighted = trainer.compute_loss(batch)["loss_txt"].item()
        plain = trainer.model(batch.batch.to(acc.device)).lm_loss.item()
    tokens = int((batch.batch.labels[:, 1:] != -100).sum())
    mean_tokens = float(trainer.mean_over_processes(tokens))
    # Each micro-batch's losses on this rank, and what the loop logs (one micro-batch per logged step).
    losses, logged = [], []
    step = trainer.train_step
    trainer.train_step = lambda batch: losses.append(step(batch)) or losses[-1]
    acc.log = lambda values, step: logged.append(values["train/loss"])
    trainer.fit()
    save("trained")
    # How often the learning-rate schedule advanced: once per optimizer step, whatever the process count.
    schedule = {
        "steps": trainer.scheduler.scheduler.last_epoch,
        "lr": trainer.scheduler.get_last_lr()[0],
        "frame_normalizer": normalizer,
        "txt": {"weighted": weighted, "plain": plain, "tokens": tokens, "mean_tokens": mean_tokens},
        "losses": [float(loss["loss"]) for loss in losses],
        "logged": logged,
    }
    Path(f"{output_dir}/schedule_rank{acc.process_index}.json").write_text(
        json.dumps(schedule), encoding="utf-8"
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
