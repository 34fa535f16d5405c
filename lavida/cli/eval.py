"""``lavida-eval``: zero-shot evaluation of a checkpoint (or saved predictions) on a VAD benchmark."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from lavida.cli.checkpoints import check_checkpoint
from lavida.cli.errors import user_errors
from lavida.cli.keys import reject_unknown_keys
from lavida.cli.ranks import log_from_main_process, process_state
from lavida.cli.record import hydra_record, write_record
from lavida.data.prompts import parse_categories
from lavida.eval.benchmarks import benchmark_class, get_benchmark
from lavida.eval.runner import run_evaluation
from lavida.eval.saved_predictions import SAVED_PREDICTIONS
from lavida.eval.settings import EvalSettings
from lavida.inference import Predictor, load_dtype
from lavida.models.checkpoint import (
    check_base_model_check,
    checkpoint_digest,
    loaded_base_fingerprints,
    trained_clip_length,
)
from lavida.number_checks import is_real, is_whole

log = logging.getLogger(__name__)


def loader_option_hints(cfg: DictConfig) -> dict[str, str]:
    """Top-level keys that are options of the benchmark's loader (``+skip_missing=true``, as Hydra's own
    error suggests for a bare ``skip_missing=true``) → the override that sets the option."""
    try:
        parameters = inspect.signature(benchmark_class(cfg.benchmark.name).__init__).parameters
    except ValueError:  # an unknown benchmark: get_benchmark names the valid ones
        return {}
    hints = {}
    for key in set(cfg) & set(parameters) - {"self", "root"}:
        value = cfg[key]
        shown = str(value).lower() if isinstance(value, bool) else value
        plus = "" if key in cfg.benchmark.options else "+"  # UBnormal's map already holds split
        hints[key] = f"an option of the {cfg.benchmark.name} loader: {plus}benchmark.options.{key}={shown}"
    return hints


def eval_settings(cfg: DictConfig) -> EvalSettings:
    """The runner's settings from the config, checked before any benchmark or model is loaded.

    Raises:
        ValueError: naming the setting and the expected form (``pixel_size=[240,360]``, ...).
    """
    pixel_size = cfg.pixel_size
    if pixel_size is not None:
        values = list(pixel_size) if OmegaConf.is_list(pixel_size) else None
        if values is None or len(values) != 2 or not all(is_whole(v) and v >= 1 for v in values):
            raise ValueError(
                f"pixel_size must be [H, W], two whole numbers of pixels ≥ 1, or null (the protocol's or "
                f"the ground truth's size); got {_shown(pixel_size)}. Set e.g. pixel_size=[240,360]."
            )
        pixel_size = tuple(int(v) for v in values)
    thresholds = cfg.region_thresholds
    if thresholds is not None:
        values = list(thresholds) if OmegaConf.is_list(thresholds) else None
        if values is None or not all(is_real(v) and 0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError(
                f"region_thresholds must be a list of numbers in [0, 1] (pixel-score thresholds for the "
                f"RBDC/TBDC regions; [] or null: none); got {_shown(thresholds)}. Set e.g. "
                "region_thresholds=[0.5]."
            )
        thresholds = tuple(float(v) for v in values) or None
    return EvalSettings(
        region_thresholds=thresholds,
        pixel_size=pixel_size,
        pixel_chunk=cfg.pixel_chunk,  # EvalSettings checks both counts
        max_videos=cfg.max_videos,
    )


def _clip_length(cfg: DictConfig) -> int | None:
    """``clip_length``, checked before the benchmark loads (probing its videos can take minutes): a whole
    number ≥ 1 or null (the checkpoint's); 2.5 would otherwise become 2 without a word."""
    value = cfg.clip_length
    if value is not None and not (is_whole(value) and value >= 1):
        raise ValueError(
            f"clip_length must be a whole number ≥ 1 or null, got {_shown(value)}. Set e.g. clip_length=8."
        )
    return value


def _shown(value) -> str:
    """A config value as the user typed it (a ListConfig as a plain list)."""
    return repr(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def run(cfg: DictConfig) -> dict:
    """Evaluate as configured (see lavida/configs/eval.yaml); returns the metrics on rank 0."""
    reject_unknown_keys(cfg, config_name="eval", hints=loader_option_hints(cfg))
    settings = eval_settings(cfg)
    clip_length = _clip_length(cfg)
    # The mode and its folder, before the benchmark loads: probing its videos can take minutes.
    if cfg.predictions is not None and cfg.checkpoint is not None:
        raise ValueError(
            f"Give checkpoint=<dir> (run the model) or predictions=<dir> (score saved predictions), not both: "
            f"got checkpoint={cfg.checkpoint} and predictions={cfg.predictions}."
        )
    if cfg.predictions is None and cfg.checkpoint is None:
        raise ValueError(
            "Give checkpoint=<dir> (a trained LAVIDA checkpoint) or predictions=<dir> (scores only)."
        )
    if cfg.checkpoint is not None:
        check_checkpoint(cfg.checkpoint)
        check_base_model_check(cfg.base_model_check)
        model_dtype(cfg)  # and a dtype the model cannot load in
    else:
        check_predictions_dir(cfg.predictions)
    options = OmegaConf.to_container(cfg.benchmark.options, resolve=True) or {}
    benchmark = get_benchmark(cfg.benchmark.name, cfg.benchmark.root, **options)
    protocol = benchmark.protocol(cfg.protocol)
    if clip_length is None and cfg.checkpoint is not None:
        clip_length = trained_clip_length(cfg.checkpoint)
    if clip_length is not None:
        protocol = dataclasses.replace(protocol, clip_length=int(clip_length))
    categories = parse_categories(cfg.categories) if cfg.categories is not None else None
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
    log.info("Clips of %d frames, one every %d frames sampled", protocol.clip_length, protocol.interval)
    dtype = str(getattr(torch, model_dtype(cfg)))  # "torch.bfloat16", as the loaded model's
    overrides = OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or {}
    return run_evaluation(
        benchmark=benchmark,
        protocol=protocol,
        output_dir=cfg.output_dir,
        # Loaded only if a video's result is not cached: a rerun to recompute the metrics skips it.
        predictor_factory=lambda: build_predictor(cfg),
        categories=categories,
        settings=settings,
        # The digest, not only the path: a checkpoint retrained in place must not reuse cached results;
        # and every setting that changes the predictions, all known before the model loads.
        run_info={
            "checkpoint": str(cfg.checkpoint),
            "checkpoint_sha256": checkpoint_digest(cfg.checkpoint),
            "checkpoint_overrides": overrides,
            "dtype": dtype,
            "gate_masks": cfg.gate_masks,
            # The frozen weights it builds on: other files at the same paths must not be served old results.
            "base_models": loaded_base_fingerprints(cfg.checkpoint, config_overrides=overrides),
        },
        overwrite=cfg.overwrite,
    )


def check_predictions_dir(predictions: str) -> None:
    """Refuse a ``predictions`` that is no folder, before the benchmark loads (as ``checkpoint=`` is checked).

    Raises:
        FileNotFoundError: naming the folder and what it should hold.
    """
    path = Path(predictions)
    if not path.is_dir():
        found = f"'{path}' is a file" if path.exists() else f"'{path}' does not exist"
        raise FileNotFoundError(
            f"predictions={predictions}: {found}. Give the folder of saved predictions: {SAVED_PREDICTIONS} "
            "(README, scores-only mode)."
        )


def model_dtype(cfg: DictConfig) -> str:
    """The dtype the checkpoint loads in on this process's device (``checkpoint_overrides.dtype``, else
    ``dtype``, else bfloat16 on GPU and float32 on CPU)."""
    from accelerate import PartialState

    overrides = OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or {}
    return load_dtype(PartialState().device, dtype=cfg.dtype, config_overrides=overrides)


def build_predictor(cfg: DictConfig) -> Predictor:
    """Load the checkpoint onto this process's device with its input processor."""
    from accelerate import PartialState

    from lavida.data.processor import LavidaProcessor
    from lavida.models.checkpoint import load_checkpoint

    device = PartialState().device
    dtype = model_dtype(cfg)
    overrides = OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or {}
    overrides["dtype"] = dtype
    model, config = load_checkpoint(
        cfg.checkpoint, config_overrides=overrides, device=device, base_model_check=cfg.base_model_check
    )
    processor = LavidaProcessor.for_model(model, config.inputs)
    log.info("Loaded %s on %s (%s)", cfg.checkpoint, device, getattr(torch, dtype))
    predictor = Predictor(
        model=model,
        processor=processor,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        gate_masks=cfg.gate_masks,
    )
    if predictor.dtype != getattr(torch, dtype):  # the cache fingerprint recorded it before the load
        raise RuntimeError(f"{cfg.checkpoint} loaded in {predictor.dtype}, not in {dtype} as recorded.")
    return predictor


@hydra.main(version_base=None, config_path="pkg://lavida.configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors("lavida-eval", cfg):
        state = process_state()
        log_from_main_process(rank=state.process_index)  # the rank Accelerate gave, whatever the launcher
        record = hydra_record(cfg)
        run(cfg)
    if state.is_main_process:  # once the results are written: a refused rerun keeps the old record
        write_record(cfg.output_dir, record)


if __name__ == "__main__":
    main()
