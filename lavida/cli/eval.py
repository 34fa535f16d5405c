"""``lavida-eval``: zero-shot evaluation of a checkpoint (or saved predictions) on a VAD benchmark."""

from __future__ import annotations

import dataclasses
import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from lavida.data.prompts import parse_categories
from lavida.eval.benchmarks import get_benchmark
from lavida.eval.runner import EvalSettings, run_evaluation
from lavida.models.checkpoint import checkpoint_digest, trained_clip_length

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Evaluate as configured (see lavida/configs/eval.yaml); returns the metrics on rank 0."""
    options = OmegaConf.to_container(cfg.benchmark.options, resolve=True) or {}
    benchmark = get_benchmark(cfg.benchmark.name, cfg.benchmark.root, **options)
    protocol = benchmark.protocol(cfg.protocol)
    clip_length = cfg.clip_length
    if clip_length is None and cfg.checkpoint is not None:
        clip_length = trained_clip_length(cfg.checkpoint)
    if clip_length is not None:
        protocol = dataclasses.replace(protocol, clip_length=int(clip_length))
    log.info("Clips of %d frames, one every %d frames sampled", protocol.clip_length, protocol.interval)
    settings = EvalSettings(
        region_thresholds=tuple(cfg.region_thresholds) if cfg.region_thresholds else None,
        pixel_size=tuple(cfg.pixel_size) if cfg.pixel_size else None,
        pixel_chunk=cfg.pixel_chunk,
        max_videos=cfg.max_videos,
    )
    categories = parse_categories(cfg.categories) if cfg.categories is not None else None
    if cfg.predictions is not None and cfg.checkpoint is not None:
        raise ValueError(
            f"Give checkpoint=<dir> (run the model) or predictions=<dir> (score saved predictions), not both: "
            f"got checkpoint={cfg.checkpoint} and predictions={cfg.predictions}."
        )
    if cfg.predictions is not None:
        return run_evaluation(
            benchmark=benchmark,
            protocol=protocol,
            output_dir=cfg.output_dir,
            predictions_dir=cfg.predictions,
            categories=categories,
            settings=settings,
            overwrite=cfg.overwrite,
        )
    if cfg.checkpoint is None:
        raise ValueError(
            "Give checkpoint=<dir> (a trained LAVIDA checkpoint) or predictions=<dir> (scores only)."
        )
    predictor = build_predictor(cfg)
    return run_evaluation(
        benchmark=benchmark,
        protocol=protocol,
        output_dir=cfg.output_dir,
        predictor=predictor,
        categories=categories,
        settings=settings,
        # The digest, not only the path: a checkpoint retrained in place must not reuse cached results;
        # and every setting that changes the predictions.
        run_info={
            "checkpoint": str(cfg.checkpoint),
            "checkpoint_sha256": checkpoint_digest(cfg.checkpoint),
            "checkpoint_overrides": OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or {},
            "dtype": str(predictor.dtype),
            "gate_masks": predictor.gate_masks,
        },
        overwrite=cfg.overwrite,
    )


def build_predictor(cfg: DictConfig):
    """Load the checkpoint onto this process's device with its input processor."""
    import torch
    from accelerate import PartialState

    from lavida.data.processor import LavidaProcessor
    from lavida.inference import Predictor
    from lavida.models.checkpoint import load_checkpoint

    device = PartialState().device
    overrides = OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or {}
    dtype = cfg.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    overrides.setdefault("dtype", dtype)
    model, config = load_checkpoint(cfg.checkpoint, config_overrides=overrides, device=device)
    processor = LavidaProcessor.for_model(model, config.inputs)
    log.info("Loaded %s on %s (%s)", cfg.checkpoint, device, getattr(torch, dtype))
    return Predictor(
        model=model,
        processor=processor,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        gate_masks=cfg.gate_masks,
    )


@hydra.main(version_base=None, config_path="pkg://lavida.configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
