"""``lavida-info [model=NAME]``: build a model on the meta device and print its parameter counts.

Nothing is allocated and no weights are read: the architecture comes from the config (``arch``), so
this works for the full 8.5 B model on any machine. The last line is ``total_params=N``.
"""

from __future__ import annotations

import logging

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from lavida.cli.errors import user_errors
from lavida.cli.keys import reject_unknown_keys
from lavida.models.config import LavidaConfig
from lavida.models.lavida import build_lavida
from lavida.models.summary import component_counts
from lavida.models.text_encoder import quiet_open_clip

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> int:
    """Print the per-component table for ``cfg.model``; return the total parameter count.

    Raises:
        ValueError: for a top-level key ``info.yaml`` does not define (``+modle=tiny``), naming the
            nearest valid key, before anything is built; or for an invalid model size
            (``model.projector.num_queries=0``). ``lavida-info`` prints either as one line and exits 2.
    """
    reject_unknown_keys(cfg, config_name="info")
    config = LavidaConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True)).without_weights()
    # The build's own lines ("Built qwen2_vl (random init)", open_clip's "initialized randomly") describe
    # a model loaded for use; on the meta device they only alarm a user whose LAVIDA_*_PATH are set.
    builders = logging.getLogger("lavida.models")
    level = builders.level
    builders.setLevel(logging.WARNING)
    try:
        with torch.device("meta"), quiet_open_clip(keep_random_notice=False):
            model = build_lavida(config)
    finally:
        builders.setLevel(level)
    rows = component_counts(model)
    width = max(len(row.name) for row in rows)
    log.info(
        "The architecture of the configured model, built on the meta device: no weights read or allocated."
    )
    print(f"{'component':<{width}}  {'total':>15}  {'trainable':>13}")
    for row in rows:
        print(f"{row.name:<{width}}  {row.total:>15,}  {row.trainable:>13,}")
    total = sum(row.total for row in rows)
    trainable = sum(row.trainable for row in rows)
    print(f"{'all':<{width}}  {total:>15,}  {trainable:>13,}")
    print(f"total_params={total}")
    return total


@hydra.main(version_base=None, config_path="pkg://lavida.configs", config_name="info")
def main(cfg: DictConfig) -> None:
    # A misspelt key or an invalid size is the user's to fix: one line, not Hydra's traceback.
    with user_errors("lavida-info", cfg):
        run(cfg)


if __name__ == "__main__":
    main()
