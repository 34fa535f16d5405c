"""Under DeepSpeed the logged ``train/lr`` of step s must be the rate step s applied.

DeepSpeed's engine steps the schedule itself, inside ``accelerator.backward`` (Accelerate's
``DeepSpeedSchedulerWrapper.step`` does nothing), so a rate read after ``backward`` is already the next
step's. The rate each step applied is read here from DeepSpeed's optimizer at the moment it steps.

Run as a script (by the test, under ``torch.distributed.run``), this file is the worker.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


def worker(config_json: str, data_root: str, output_dir: str) -> None:
    sys.path.insert(0, str(HERE.parent))
    from zero_worker import build_trainer

    from lavida.train.config import OptimConfig

    trainer = build_trainer(config_json, data_root, output_dir, "zero2")
    trainer.config = dataclasses.replace(
        trainer.config,
        epochs=1,
        batches_per_epoch=3,
        save_every=0,
        optim=OptimConfig(lr=1e-3, warmup_steps=4, decay="constant"),
    )
    trainer.setup()
    engine = trainer.model
    applied: list[float] = []
    optimizer_step = engine.optimizer.step

    def recording_step(*args, **kwargs):
        applied.append(engine.optimizer.param_groups[0]["lr"])
        return optimizer_step(*args, **kwargs)

    engine.optimizer.step = recording_step
    logged: list[float] = []
    trainer.accelerator.log = lambda values, step: logged.append(values["train/lr"])
    trainer.fit()
    Path(output_dir, "lr_report.json").write_text(
        json.dumps({"applied": applied, "logged": logged}), encoding="utf-8"
    )


def test_zero2_logs_the_rate_each_step_applied(synthetic_train_root, tiny_pretrained, tmp_path):
    pytest.importorskip("deepspeed")
    config = tmp_path / "model.json"
    config.write_text(json.dumps(tiny_pretrained.to_dict()))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
        str(HERE), str(config), str(synthetic_train_root), str(out),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=REPO, env=env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    report = json.loads((out / "lr_report.json").read_text())
    # The default log warm-up over 4 steps (B.3's WarmupDecayLR, docs/fidelity.md): log(k + 1) / log(4) of lr
    # on steps k = 0, 1, 2, the first at lr 0.
    assert report["applied"] == pytest.approx([1e-3 * math.log(k + 1) / math.log(4) for k in range(3)])
    assert report["logged"] == pytest.approx(report["applied"])


if __name__ == "__main__":
    worker(*sys.argv[1:4])
