"""The ``<output_dir>/.hydra/`` record of a run, written by the entry points once their checks pass.

Hydra itself would write it (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``) before the command
runs, so a rerun that is then refused (lavida-eval over cached results made with other settings,
lavida-train resuming with changed settings, ...) would leave the refused command's record beside
results it did not make. The configs therefore set ``hydra.output_subdir: null``; each entry point takes
the same three files from Hydra (:func:`hydra_record`) and writes them when its results are accepted:
lavida-train after the trainer's resume check (with ``run_config.json``), lavida-eval and lavida-demo
when they finish. The folder is replaced whole (``atomic_dir``), so the record beside the results is
always the one of the command that made them; a lavida-eval rerun that recomputes results removes the old
record with the old metrics before it computes (``lavida.eval.runner``), and a lavida-demo rerun once its
checks pass (``lavida.run_outputs.remove_previous_outputs``), so a crash leaves neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lavida.atomic import atomic_dir
from lavida.run_outputs import RECORD_DIR


def hydra_record(cfg: DictConfig) -> dict[str, str]:
    """The files Hydra writes for this command (name → YAML text); call inside the ``@hydra.main``
    function, with the config it was given."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.instance().cfg  # {"hydra": ...}, as Hydra saves it
    return {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
        "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task),
    }


def write_record(output_dir: str | Path, files: Mapping[str, str]) -> Path:
    """Replace ``<output_dir>/.hydra/`` with ``files`` as one folder; returns its path."""
    path = Path(output_dir) / RECORD_DIR
    with atomic_dir(path) as staging:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
    return path
