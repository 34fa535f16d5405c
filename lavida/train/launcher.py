"""The ``Accelerator`` for a launcher config: single process, DDP, or DeepSpeed ZeRO-2/3.

The same training script runs under ``python -m``/``lavida-train`` (one process) and under
``accelerate launch`` (several processes, one or more nodes); the launcher config only chooses mixed
precision and, for ZeRO, hands its DeepSpeed dict to Accelerate.
"""

from __future__ import annotations

import copy
from pathlib import Path

from lavida.train.config import LauncherConfig, TrainConfig


def deepspeed_config(launcher: LauncherConfig, train: TrainConfig) -> dict | None:
    """The launcher's DeepSpeed dict with the batch settings filled in from the training config.

    DeepSpeed wants ``train_micro_batch_size_per_gpu``, ``gradient_accumulation_steps`` and
    ``gradient_clipping``; they are taken from ``train`` so they can never disagree with the loop.
    """
    if launcher.deepspeed is None:
        return None
    config = copy.deepcopy(launcher.deepspeed)
    filled = {
        "train_micro_batch_size_per_gpu": (train.batch_size, "train.batch_size"),
        "gradient_accumulation_steps": (train.grad_accum, "train.grad_accum"),
        "gradient_clipping": (
            train.optim.grad_clip if train.optim.grad_clip > 0 else 0.0,
            "train.optim.grad_clip",
        ),
    }
    for key, (value, setting) in filled.items():
        # A value written in the launcher yaml that disagrees would be replaced without a word, and the
        # run would train with other settings than the yaml says ("auto" is DeepSpeed's "fill it in").
        given = config.get(key, "auto")
        if given != "auto" and given != value:
            raise ValueError(
                f"launcher.deepspeed.{key} is {given!r}, but {setting} is {value!r}: the loop's value is the one "
                f"used. Remove {key} from the launcher config (or set it to auto) and set {setting} instead."
            )
        config[key] = value
    if config.get("train_batch_size", "auto") != "auto":
        raise ValueError(
            f"launcher.deepspeed.train_batch_size is {config['train_batch_size']!r}: the global batch follows "
            "from train.batch_size × train.grad_accum × the number of processes. Remove it from the launcher "
            "config."
        )
    config.pop("train_batch_size", None)
    # The launcher's mixed_precision decides, both ways: a ZeRO yaml's bf16 block must not keep training
    # in bf16 a run that asked for "no" (and records "no").
    config["bf16"] = {**config.get("bf16", {}), "enabled": launcher.mixed_precision == "bf16"}
    if launcher.mixed_precision != "fp16" and "fp16" in config:
        config["fp16"] = {**config["fp16"], "enabled": False}
    return config


def build_accelerator(launcher: LauncherConfig, train: TrainConfig, *, output_dir: Path):
    """An ``Accelerator`` configured for ``launcher`` (logging to ``output_dir`` when a logger is set)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import DeepSpeedPlugin

    handlers = [DistributedDataParallelKwargs(find_unused_parameters=launcher.find_unused_parameters)]
    ds_config = deepspeed_config(launcher, train)
    plugin = DeepSpeedPlugin(hf_ds_config=ds_config) if ds_config is not None else None
    log_with = None if train.logger == "none" else train.logger
    return Accelerator(
        cpu=launcher.cpu,
        mixed_precision=launcher.mixed_precision,
        gradient_accumulation_steps=train.grad_accum,
        # The schedule counts optimizer steps (B.3's 100 warm-up iterations); by default Accelerate would
        # advance it once per process at every step, N times too fast on N processes.
        step_scheduler_with_optimizer=False,
        deepspeed_plugin=plugin,
        kwargs_handlers=handlers,
        log_with=log_with,
        project_dir=str(output_dir),
    )


def register_zero3_outside_parameters(model) -> None:
    """Tell ZeRO-3 which parameters LAVIDA reads outside their own module's forward.

    ZeRO-3 keeps a shard of each parameter and gathers the whole tensor only while the module owning it
    runs ``forward``; a parameter read by another module (peft's ``<SEG>``-row layers read the embedding
    and LM-head weights of the layers they wrap; SAM2's no-memory embedding; CLIP's
    positional embedding and projection) would be an empty shard there. Call before ``prepare``.
    """
    import deepspeed
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    pairs = [
        (module, module.base_layer.weight)
        for module in model.modules()
        if isinstance(module, TrainableTokensLayer)
    ]
    pairs += [(model.mask_decoder, p) for p in model.mask_decoder.outside_parameters()]
    pairs += [(model.text_encoder, p) for p in model.text_encoder.outside_parameters()]
    for module, parameter in pairs:
        deepspeed.zero.register_external_parameter(module, parameter)
