"""Run by tests/train/test_zero.py under ``torch.distributed.run``: DeepSpeed ZeRO training of the tiny
model in bf16 through the project's launcher config, writing what the test checks to ``output_dir``.

Arguments: the model config JSON, the synthetic data root, the output directory, the launcher name
(``zero2``/``zero3``, read from lavida/configs/launcher/<name>.yaml as the CLI does), and a step after
which to stop as a kill would (0: run to the end).
"""

import json
import math
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lavida.data.config import DataConfig
from lavida.data.sources.synthetic import SyntheticSource
from lavida.models.config import LavidaConfig
from lavida.train.config import TrainConfig, launcher_from_dict
from lavida.train.loop import Trainer

LAUNCHERS = Path(__file__).resolve().parents[2] / "lavida" / "configs" / "launcher"


def skip_deepspeed_inference_op() -> None:
    """Keep DeepSpeed from compiling its shared-memory all-reduce in this process.

    On the CPU accelerator DeepSpeed's communication backend builds a C++ extension at start-up (about 25 s
    on 2 cores, on every fresh machine and every new virtualenv path) that only ``inference_all_reduce``
    uses; ZeRO training reduces through torch.distributed, which these workers test.
    """
    import importlib

    # By module name: the attribute deepspeed.comm.torch is PyTorch itself (deepspeed.comm imports torch).
    backend = importlib.import_module("deepspeed.comm.torch")
    assert hasattr(backend, "build_shm_op"), "DeepSpeed moved build_shm_op: update this test helper"
    backend.build_shm_op = lambda: None


def build_trainer(config_json: str, data_root: str, output_dir: str, launcher_name: str) -> Trainer:
    skip_deepspeed_inference_op()
    model = json.loads(Path(config_json).read_text(encoding="utf-8"))
    model["dtype"] = "bfloat16"  # as experiment=paper_main: frozen weights in bf16
    model["mllm"]["gradient_checkpointing"] = True
    data = DataConfig.from_dict(
        {
            "sources": {"synthetic": {"weight": 1.0, "root": data_root}},
            "max_categories": 4,
            "num_workers": 0,
            "strides": [1],
            "seed": 3,
        }
    )
    train = TrainConfig.from_dict(
        {
            "epochs": 2,
            "batches_per_epoch": 2,
            "batch_size": 2,
            "log_every": 1,
            "save_every": 2,
            "val_every": 0,
            "logger": "none",
            # A large constant rate, so that two steps move the weights far enough for a resume that
            # lost the optimizer state or the weights to show in the next losses.
            "optim": {"lr": 3e-3, "warmup_steps": 0, "decay": "constant"},
        }
    )
    settings = OmegaConf.to_container(OmegaConf.load(LAUNCHERS / f"{launcher_name}.yaml"))
    if settings["deepspeed"]["zero_optimization"]["stage"] == 3:
        # At tiny size every trained parameter is below the persistence threshold and would stay whole;
        # shard them all, as the 7B model's are, so that gathering for checkpoints is exercised.
        settings["deepspeed"]["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    launcher = launcher_from_dict(settings)
    return Trainer(
        model=LavidaConfig.from_dict(model),
        data=data,
        train=train,
        launcher=launcher,
        output_dir=output_dir,
        sources={"synthetic": SyntheticSource(data_root)},
    )


def main(config_json: str, data_root: str, output_dir: str, launcher_name: str, stop_after: str) -> None:
    trainer = build_trainer(config_json, data_root, output_dir, launcher_name)
    trainer.setup()
    engine = trainer.model
    losses: list[dict[str, float]] = []
    step = trainer.train_step

    def recorded_step(batch):
        if int(stop_after) and trainer.progress.step == int(stop_after):
            raise KeyboardInterrupt  # a kill: this step's checkpoint is written, the next never runs
        result = step(batch)
        losses.append({k: float(v) for k, v in result.items()})
        return result

    trainer.train_step = recorded_step
    started_at = trainer.progress.step
    try:
        summary = trainer.fit()
        final = str(summary.final_checkpoint)
    except KeyboardInterrupt:
        final = None
    first_trainable = next(p for p in engine.parameters() if p.requires_grad)
    report = {
        "engine": type(engine).__name__,
        "zero_stage": engine.zero_optimization_stage(),
        "bf16": engine.bfloat16_enabled(),
        "trainable_dtype": str(first_trainable.dtype),
        "device": str(first_trainable.device),
        "started_at": started_at,
        "stopped_at": trainer.progress.step,
        "losses": losses,
        "all_finite": all(math.isfinite(v) for entry in losses for v in entry.values()),
        "frozen_bytes": sum(
            getattr(p, "ds_numel", p.numel()) * p.element_size()
            for p in engine.parameters()
            if not p.requires_grad
        ),
        "final": final,
    }
    if trainer.accelerator.is_main_process:
        Path(output_dir, "worker_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
