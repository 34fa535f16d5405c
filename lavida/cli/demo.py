"""``lavida-demo``: synthetic data → tiny LAVIDA trained on CPU → zero-shot evaluation (lavida/demo.py)."""

from __future__ import annotations

import dataclasses
import json
import os

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from lavida.cli.errors import user_errors
from lavida.cli.record import hydra_record, write_record
from lavida.demo import DemoConfig, run_demo


def run(cfg: DictConfig) -> dict:
    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("hydra", None)
    model = values.pop("model")
    known = {f.name for f in dataclasses.fields(DemoConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"demo: unknown keys {unknown}; valid keys are {sorted(known)}.")
    return run_demo(DemoConfig(**values), model=model)


def torch_threads(num_workers: int) -> int:
    """Intra-op threads of the demo on its 2-core target: one core is left to the data worker if there is one.

    The thread count changes the floating-point reduction order, so the stand-in pretraining and hence
    the demo's metrics differ between thread counts (docs/benchmarks.md); tests that reproduce
    ``make demo`` use this too.
    """
    return 2 if num_workers == 0 else 1


@hydra.main(version_base=None, config_path="pkg://lavida.configs", config_name="demo")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(torch_threads(cfg.num_workers))
    # The demo runs on the CPU. Accelerate's model unwrapping imports DeepSpeed where it is installed,
    # which then warns that it found no GPU; told the CPU is meant, it says nothing.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    record = hydra_record(cfg)
    with user_errors("lavida-demo", cfg):
        metrics = run(cfg)
    write_record(cfg.output_dir, record)  # once the results are written: a refused rerun keeps the old record
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, float)}, indent=1))
    print(f"Outputs in {cfg.output_dir}: metrics.json, report.md, score_curves.png, overlays/")


if __name__ == "__main__":
    main()
