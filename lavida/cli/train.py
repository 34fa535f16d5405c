"""``lavida-train experiment=<name>``: train LAVIDA (Hydra entry point; see lavida/configs/train.yaml).

Multi-GPU and multi-node runs use the same script under ``accelerate launch``, e.g.
``accelerate launch --multi_gpu --num_processes 8 -m lavida.cli.train experiment=paper_main launcher=zero2``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import hydra
from omegaconf import DictConfig, OmegaConf

from lavida.cli.errors import interrupted, user_errors
from lavida.cli.keys import reject_unknown_keys
from lavida.cli.ranks import log_from_main_process
from lavida.cli.record import hydra_record, write_record
from lavida.data.config import DataConfig
from lavida.models.config import LavidaConfig
from lavida.train.config import TrainConfig, launcher_from_dict
from lavida.train.loop import Trainer, TrainSummary

log = logging.getLogger(__name__)


def run(
    cfg: DictConfig, *, sources: dict | None = None, record: Mapping[str, str] | None = None
) -> TrainSummary:
    """Train as configured; returns the summary (the final checkpoint is ``<output_dir>/final``).

    ``record``: the ``.hydra/`` files of the command (:func:`lavida.cli.record.hydra_record`), written
    into ``output_dir`` once the trainer has accepted the run (a resume with changed settings is refused
    first), as ``run_config.json`` is.
    """
    reject_unknown_keys(cfg, config_name="train")
    container = OmegaConf.to_container(cfg, resolve=True)
    trainer = Trainer(
        model=LavidaConfig.from_dict(container["model"]),
        data=DataConfig.from_dict(container["data"]),
        train=TrainConfig.from_dict(container["train"]),
        launcher=launcher_from_dict(container["launcher"]),
        output_dir=cfg.output_dir,
        sources=sources,
        run_config=container,
    )
    if record is not None:
        trainer.setup()  # refuses a resume with changed settings: the record of the run there stays
        if trainer.accelerator.is_main_process:
            write_record(cfg.output_dir, record)
    summary = trainer.fit()
    log.info(
        "Finished %d steps in %.0f s; final model: %s",
        summary.steps,
        summary.seconds,
        summary.final_checkpoint,
    )
    return summary


def quiet_deepspeed_on_cpu(launcher: DictConfig) -> None:
    """Tell DeepSpeed the CPU is meant when a launcher without DeepSpeed trains on the CPU.

    Accelerate imports DeepSpeed where it is installed (model unwrapping, checkpoints), and DeepSpeed then
    warned on every process "Setting accelerator to CPU. If you have GPU or other accelerator, we were
    unable to detect it", a false alarm for ``launcher=cpu``. ZeRO launchers are left to DeepSpeed's own
    detection: there a missing GPU is news.
    """
    import torch

    if launcher.get("deepspeed") is None and (launcher.get("cpu") or not torch.cuda.is_available()):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


@hydra.main(version_base=None, config_path="pkg://lavida.configs", config_name="train")
def main(cfg: DictConfig) -> None:
    resume = (
        f"rerun the same command to resume from the newest checkpoint in {cfg.output_dir}/checkpoints "
        "(the steps after it are trained again)."
    )
    with interrupted("lavida-train", then=resume), user_errors("lavida-train", cfg):
        log_from_main_process()
        quiet_deepspeed_on_cpu(cfg.launcher)
        run(cfg, record=hydra_record(cfg))


if __name__ == "__main__":
    main()
