"""The embedded default: generate the synthetic benchmark, train a tiny LAVIDA on CPU, evaluate zero-shot.

Everything runs offline on a laptop-class CPU in minutes, through the real code paths:

1. **Data** (``lavida.synthetic``): a segmentation training set of coloured shapes (videos and images,
   masks, one text description per object) and two VAD test sets in the ShanghaiTech layout — one whose
   anomaly categories are drawn from the training descriptions ("seen"; the run warns about any of them
   that a small training set happens not to contain) and one whose categories never appear in training
   ("unseen").
2. **Model**: the tiny twin of the paper's model with random base weights written to disk and loaded
   through the production loaders (``lavida.models.random_init``).
3. **Training**: the real trainer, data pipeline and Anomaly Exposure Sampler (``lavida.train``).
4. **Evaluation**: the real ShanghaiTech loader and evaluation runner, zero-shot, prompted with each test
   set's anomaly categories.

Outputs in ``output_dir``: ``metrics.json`` (seen split: ``frame_auc_micro``, ``pixel_auc``, ...; unseen
split under ``unseen_*``), ``report.md``, ``score_curves.png`` (frame scores with the ground-truth
intervals shaded) and ``overlays/*.png`` (predicted masks over frames); the plots and the report come from
``lavida.demo_report``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lavida.atomic import read_json, write_json
from lavida.demo_report import untrained_list, within_video_auc, write_plots, write_report
from lavida.models.base_fingerprint import BaseModelMismatchError
from lavida.models.config import LavidaConfig
from lavida.run_outputs import RECORD_DIR, remove_previous_outputs
from lavida.train.resume_check import ResumeMismatchError

log = logging.getLogger(__name__)

STAND_INS_FILE = "stand_ins.json"  # in base_models/: marks finished base models and stand-in pretraining
DATA_SETTINGS_FILE = "settings.json"  # in data/: the sizes and seed the synthetic sets were made with
# What the demo's own records hold, for read_json's errors.
_RECORD = 'a lavida-demo record {"settings": {...}, ...}; delete the folder it is in to make it again'
DATA_SETTINGS = (
    "seed",
    "train_videos",
    "train_images",
    "train_frames",
    "test_anomalous",
    "test_normal",
    "test_frames",
)


@dataclass
class DemoConfig:
    """Sizes and schedule of the demo (3–9 minutes on 2 cores, by machine; the defaults do not yet meet the
    frame-AUC target, see docs/benchmarks.md).

    Attributes:
        output_dir: Where everything goes.
        seed: Seed of the data, the random base models and training.
        train_videos, train_images, train_frames: Size of the synthetic training set (≥ 1 entry in all;
            ``train_frames`` ≥ 2).
        test_anomalous, test_normal, test_frames: Videos per test split and their length
            (``test_anomalous`` ≥ 1, so the frame AUC has positives; ``test_frames`` ≥ 4).
        sam_pretrain_steps: Point-prompt pretraining of the tiny SAM2 (``lavida.synthetic.pretrain_sam``),
            standing in for the real SAM2's pretraining.
        clip_pretrain_steps: Contrastive image–text pretraining of the tiny CLIP
            (``lavida.synthetic.pretrain_clip``), standing in for the real CLIP's.
        steps: Optimizer steps.
        lr: Peak learning rate (the tiny random model needs far more than the paper's 1e-5).
        decoder_lr_scale: Learning-rate multiplier of the SAM2 prompt encoder and mask decoder (the paper
            trains them at the same rate as the rest, starting from a decoder trained on SA-1B; the tiny
            decoder has only seen synthetic clicks; at 0.3 its object-score head can collapse to a constant
            below 0, and SAM2's convention then blanks every mask: docs/benchmarks.md).
        loss_weights: ``sam2`` (20/1/1/1) or ``official`` (20/2/1/2, a stronger frame-level term).
        batch_size: Clips per step.
        max_categories: max(K_E) of the sampler (the test prompts list 6 categories).
        category_count: The sampler's ``category_count``: ``paper`` (Eq. 1–2: a normal clip lists one
            category fewer, so at max(K_E) = 8 the count alone lowers the frame BCE from 0.68 to 0.60) or
            ``matched`` (as many as an anomalous clip). ``matched`` removes that shortcut from the training
            loss but did not change the test ranking in one run each (docs/benchmarks.md), so the demo keeps
            the paper's.
        num_workers: Dataloader workers.
    """

    output_dir: str = "outputs/demo"
    seed: int = 0
    train_videos: int = 160
    train_images: int = 80
    train_frames: int = 16
    test_anomalous: int = 6
    test_normal: int = 4
    test_frames: int = 48
    sam_pretrain_steps: int = 300
    clip_pretrain_steps: int = 300
    steps: int = 2000
    lr: float = 1e-3
    decoder_lr_scale: float = 0.1
    loss_weights: str = "official"
    batch_size: int = 2
    max_categories: int = 8
    category_count: str = "paper"
    num_workers: int = 1

    def __post_init__(self) -> None:
        # Checked here, before anything is written, and named as the demo's settings; the minima are the
        # generators' (lavida.synthetic.datasets), whose specs check them again under their own names.
        from lavida.synthetic.datasets import MIN_VAD_FRAMES, MIN_VIDEO_FRAMES, check_at_least

        check_at_least(
            self,
            train_videos=0,
            train_images=0,
            train_frames=MIN_VIDEO_FRAMES,
            test_anomalous=1,
            test_normal=0,
            test_frames=MIN_VAD_FRAMES,
        )
        if self.train_videos + self.train_images < 1:
            raise ValueError(
                "DemoConfig: train_videos + train_images is 0; the training set needs at least 1 entry."
            )


def run_demo(config: DemoConfig, *, model: dict | None = None) -> dict:
    """Run the whole demo; return the metrics written to ``<output_dir>/metrics.json``.

    Args:
        config: Sizes and schedule.
        model: The model configuration as a mapping (``model=tiny`` composed by Hydra); None composes it.
    """
    from lavida.data.config import DataConfig
    from lavida.data.sources.base import read_manifest, write_manifest
    from lavida.data.sources.synthetic import SyntheticSource
    from lavida.synthetic.datasets import (
        SegmentationSetSpec,
        VadSetSpec,
        default_split,
        untrained_categories,
        write_segmentation_set,
        write_vad_set,
    )
    from lavida.train.config import LauncherConfig, TrainConfig
    from lavida.train.loop import Trainer
    from lavida.train.state import latest_checkpoint

    started = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = default_split(config.seed)

    # 1. Data (each set is skipped when its marker file says a rerun already wrote it)
    check_data_settings(config)
    train_root = out / "data" / "synthetic_train"
    # What this run takes over from an earlier one in the same folder: its time then does not count
    # the whole demo, so the time target is not judged (lavida.demo_report.targets_line).
    reused = []
    if (train_root / "meta.json").is_file():
        reused.append("data")
    else:
        spec = SegmentationSetSpec(
            videos=config.train_videos,
            images=config.train_images,
            frames=config.train_frames,
            seed=config.seed,
        )
        write_segmentation_set(train_root, split, spec)
    source = SyntheticSource(train_root)
    if not source.manifest_path().is_file():
        write_manifest(source.index(), source.manifest_path(), options=source.index_options())
    # Training objects are drawn at random from all training descriptions, so a small set may lack some
    # seen (or normal) category altogether (or show it only hidden by other objects, as no target), and
    # the "seen" row then is not all training targets.
    untrained = untrained_categories(read_manifest(source.manifest_path()), split)
    if untrained["seen"] or untrained["normal"]:
        log.warning(
            "The training set (%s) has 0 targets of %s: raise train_videos / train_images to train on them.",
            train_root / "meta.json",
            untrained_list(untrained),
        )
    test_sets = {}
    for name, anomalies, seed in (
        ("seen", split.seen_anomalies, 101),
        ("unseen", split.unseen_anomalies, 202),
    ):
        root = out / "data" / f"vad_{name}"
        if not (root / "synthetic_layout.json").is_file():
            spec = VadSetSpec(
                anomalous_videos=config.test_anomalous,
                normal_videos=config.test_normal,
                frames=config.test_frames,
                seed=config.seed + seed,
            )
            write_vad_set(root, anomalies=anomalies, normal=split.normal, spec=spec)
        test_sets[name] = (root, list(anomalies))
    log.info("Synthetic data ready in %.0f s", time.perf_counter() - started)

    # 2. Tiny model with random base weights, written and loaded like real ones
    model_config = LavidaConfig.from_dict(model if model is not None else _tiny_model_dict())
    if (out / "base_models" / STAND_INS_FILE).is_file():
        reused.append("base models")
    model_config = base_models(config, model_config, train_root)

    # 3. Training
    data = DataConfig.from_dict(
        {
            "sources": {"synthetic": {"weight": 1.0, "root": str(train_root)}},
            "max_categories": config.max_categories,
            "category_count": config.category_count,
            "strides": [1, 2],
            "num_workers": config.num_workers,
            "seed": config.seed,
        }
    )
    train = TrainConfig.from_dict(
        {
            "epochs": 1,
            "batches_per_epoch": config.steps,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "log_every": 50,
            "save_every": 500,
            "val_every": 0,
            "logger": "tensorboard",
            "loss": {"weights": config.loss_weights},
            "optim": {
                "lr": config.lr,
                "warmup_steps": min(100, config.steps // 10),
                "lr_scales": {"mask_decoder.sam.": config.decoder_lr_scale},
            },
        }
    )
    trainer = Trainer(
        model=model_config,
        data=data,
        train=train,
        launcher=LauncherConfig(name="cpu", cpu=True),
        output_dir=out / "train",
        sources={"synthetic": source},
    )
    if latest_checkpoint(out / "train") is not None:
        reused.append("training")
    try:
        trainer.setup()  # the resume check: the last of this run's refusals
    except ResumeMismatchError as error:
        raise demo_resume_error(error, out) from error
    except BaseModelMismatchError as error:
        # The trainer's hints (model.<part>.pretrained, train.resume_check=warn) are no lavida-demo settings.
        raise ValueError(
            f"{out / 'base_models'} holds other base models ({', '.join(error.sections)}) than the training "
            f"checkpoints in {out / 'train'} were trained on (their files changed since). Use a fresh "
            f"output_dir, or delete {out / 'base_models'} and {out / 'train'} to make new ones and train again "
            "(the synthetic data there is reused)."
        ) from error
    # Once this run has passed its checks (a refused rerun keeps them): a rerun that then dies must not
    # leave the earlier results and .hydra/ record beside the new training state, as if they were its own.
    remove_previous_outputs(out, files=_RUN_OUTPUTS, folders=_RUN_FOLDERS)
    fit_started = time.perf_counter()
    summary = trainer.fit()
    train_seconds = time.perf_counter() - fit_started

    # 4. Zero-shot evaluation on both test splits
    metrics: dict = {}
    reports = {}
    predictor, run_info = _predictor(summary.final_checkpoint)  # loaded and fingerprinted once for both
    for name, (root, anomalies) in test_sets.items():
        result = _evaluate(predictor, run_info, root, anomalies, out / f"eval_{name}")
        reports[name] = result
        prefix = "" if name == "seen" else "unseen_"
        for key, value in result.items():
            if isinstance(value, float):
                metrics[prefix + key] = value
        metrics[prefix + "frame_auc_within_videos"] = within_video_auc(out / f"eval_{name}", root)
    write_plots(out, test_sets)
    metrics["train_steps"] = summary.steps
    metrics["train_seconds"] = round(train_seconds, 1)  # trainer.fit alone
    # Everything from the start: data, stand-in pretraining, training, evaluation and plots.
    metrics["total_seconds"] = round(time.perf_counter() - started, 1)
    metrics["reused_from_earlier_run"] = reused  # [] for a whole run
    write_report(out, asdict(config), split, metrics, summary, untrained=untrained)
    write_json(out / "metrics.json", metrics, indent=2)  # last, as lavida-eval does: readers key on it
    log.info("Demo finished in %.0f s: %s", metrics["total_seconds"], json.dumps(metrics))
    return metrics


# What the end of a run writes into output_dir, metrics first (readers key on it); the eval_* folders are
# lavida-eval's own, which clears its outputs when it recomputes.
_RUN_OUTPUTS = ("metrics.json", "report.md", "score_curves.png")
_RUN_FOLDERS = ("overlays", RECORD_DIR)


def base_models(config: DemoConfig, model_config: LavidaConfig, train_root: Path) -> LavidaConfig:
    """Write the random base models under ``<output_dir>/base_models`` and run the stand-in pretrainings.

    Done once per output folder: ``stand_ins.json``, written last, records the settings and the resulting
    model config, and a rerun (after a kill, or to re-evaluate) reuses them instead of pretraining again.
    A training run resumed on different frozen weights than it started with would be silently wrong, so
    a rerun with other settings is refused.

    Returns:
        ``model_config`` with every ``pretrained`` path pointing at the written base models.
    """
    from lavida.models.random_init import write_random_pretrained

    # Absolute: the checkpoint's config names these folders, and lavida-eval / lavida-detect must find
    # them from any working directory.
    # Not resolve(): a checkpoint finds its run folder among its own unresolved parents (symlinks kept).
    base = Path(config.output_dir).absolute() / "base_models"
    record_file = base / STAND_INS_FILE
    settings = {
        "seed": config.seed,
        # The stand-ins are pretrained on the training set, so they belong to its sizes too: data
        # regenerated with other sizes must not be trained on with the old stand-ins (or resume their run).
        "train_videos": config.train_videos,
        "train_images": config.train_images,
        "train_frames": config.train_frames,
        "sam_pretrain_steps": config.sam_pretrain_steps,
        "clip_pretrain_steps": config.clip_pretrain_steps,
        "model": model_config.to_dict(),
    }
    if record_file.is_file():
        _check_settings(
            record_file, settings, what="base models", fresh=[base, Path(config.output_dir) / "train"]
        )
        log.info("Reusing the base models and stand-in pretraining in %s", base)
        return _here(LavidaConfig.from_dict(read_json(record_file, expected=_RECORD)["model"]), base)
    from lavida.train.state import latest_checkpoint

    train_dir = Path(config.output_dir) / "train"
    if latest_checkpoint(train_dir) is not None:
        # Base models made again need not be the ones that run started on (the stand-ins' floats depend
        # on the thread count, lavida.cli.demo.torch_threads); the trainer would refuse them by their
        # fingerprints, but only after the minutes of stand-in pretraining.
        raise ValueError(
            f"{train_dir} holds training checkpoints, but {record_file} (the record of the base models they "
            f"were trained on) is missing. Use a fresh output_dir, or delete {train_dir} to train again "
            f"on new base models."
        )

    model_config = write_random_pretrained(model_config, base, seed=config.seed)
    if config.sam_pretrain_steps:
        from lavida.synthetic.pretrain_sam import pretrain_sam

        pretrain_sam(
            model_config.mask_decoder.pretrained,
            train_root,
            steps=config.sam_pretrain_steps,
            seed=config.seed,
        )
    if config.clip_pretrain_steps:
        from lavida.synthetic.pretrain_clip import pretrain_clip

        pretrain_clip(
            model_config.text_encoder.pretrained,
            train_root,
            model_name=model_config.text_encoder.model_name,
            arch=model_config.text_encoder.arch,
            steps=config.clip_pretrain_steps,
            seed=config.seed,
        )
    write_json(record_file, {"settings": settings, "model": model_config.to_dict()}, indent=1)
    return model_config


def _here(recorded: LavidaConfig, base: Path) -> LavidaConfig:
    """``recorded`` with its base models pointed at ``base``, where they lie now.

    The record names them absolutely, where the output folder was when they were written; a folder moved
    or renamed as a whole holds them here, and the old place may be gone or hold another run's.
    """
    from lavida.models.random_init import random_pretrained_paths, random_pretrained_root

    data = recorded.to_dict()
    for section, path in random_pretrained_paths(base).items():
        if random_pretrained_root(section, data[section].get("pretrained")) is not None:
            data[section]["pretrained"] = str(path)
    return LavidaConfig.from_dict(data)


# The trainer's settings (resume_check's dotted keys) that each demo setting decides (run_demo, step 3).
_DEMO_SETTINGS = {
    "train.batches_per_epoch": "steps",
    "train.optim.warmup_steps": "steps",
    "train.batch_size": "batch_size",
    "train.seed": "seed",
    "data.seed": "seed",
    "train.optim.lr": "lr",
    "train.optim.lr_scales": "decoder_lr_scale",
    "train.loss.weights": "loss_weights",
    "data.max_categories": "max_categories",
    "data.category_count": "category_count",
    "model": "model",
}


def demo_resume_error(error: ResumeMismatchError, out: Path) -> ValueError:
    """The trainer's refusal to resume, told in the demo's terms.

    The trainer's own hint (``train.resume_check=warn``) is not a lavida-demo setting, so lavida-demo
    would refuse it; the demo's fix is a fresh output_dir, or deleting its training folder.
    """
    changed = []
    for key in error.changed:
        setting = next(
            (name for prefix, name in _DEMO_SETTINGS.items() if f"{key}.".startswith(f"{prefix}.")), None
        )
        if setting is not None and setting not in changed:
            changed.append(setting)
    what = f" (changed since then: {', '.join(changed)})" if changed else ""
    if error.changes:
        details = "Differences (checkpoint -> now):\n  " + "\n  ".join(error.changes)
    else:
        details = "The settings record of its latest checkpoint could not be read."
    return ValueError(
        f"{out / 'train'} holds the training checkpoints of an earlier demo run with other settings{what}; "
        f"resuming it would mix the two. Use a fresh output_dir, or delete {out / 'train'} to train again "
        f"(the synthetic data and base models there are reused).\n{details}"
    )


def check_data_settings(config: DemoConfig) -> None:
    """Refuse to reuse ``<output_dir>/data`` made with other data settings; record them in a fresh folder.

    The base models' stand-in pretraining and the training run were made from the training set, so a
    changed seed or training-set size also names ``base_models/`` and ``train/`` as folders to delete
    (deleting ``data/`` alone would only meet the base models' refusal on the next run); the test sets
    decide nothing that was trained.
    """
    out = Path(config.output_dir)
    _check_settings(
        out / "data" / DATA_SETTINGS_FILE,
        {key: getattr(config, key) for key in DATA_SETTINGS},
        what="synthetic data",
        fresh=[out / "data"],
        trained_from={key: [out / "base_models", out / "train"] for key in _TRAINING_DATA_SETTINGS},
    )


# The data settings that the base models' record (base_models) and the training run depend on.
_TRAINING_DATA_SETTINGS = ("seed", "train_videos", "train_images", "train_frames")


def _check_settings(
    record_file: Path,
    settings: dict,
    *,
    what: str,
    fresh: list[Path],
    trained_from: dict[str, list[Path]] | None = None,
) -> None:
    """Refuse to reuse ``what`` if ``record_file`` says it was made with other ``settings``; record them if
    the file is missing (a fresh folder, or one from before the record existed).

    Args:
        fresh: The folders to delete to start over, named in the error.
        trained_from: Setting → further folders made from ``what`` under it, named in the error too when
            that setting differs.
    """
    settings = json.loads(json.dumps(settings))  # as it reads back from the file (tuples become lists)
    if not record_file.is_file():
        write_json(record_file, {"settings": settings}, indent=1)
        return
    recorded = read_json(record_file, expected=_RECORD)["settings"]
    if recorded != settings:
        changed = sorted(
            key for key in settings.keys() | recorded.keys() if settings.get(key) != recorded.get(key)
        )
        folders = list(fresh)
        for key in changed:
            folders += [f for f in (trained_from or {}).get(key, []) if f not in folders]
        names = [str(folder) for folder in folders]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        raise ValueError(
            f"{record_file}: the {what} there were made with other settings than this run's (differing: "
            f"{', '.join(changed)}). Use a fresh output_dir, or delete {listed} to start over."
        )


def _tiny_model_dict() -> dict:
    """The ``model=tiny`` config (lavida/configs/model/tiny.yaml), composed without the CLI."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose("info", overrides=["model=tiny"])
    return OmegaConf.to_container(cfg.model, resolve=True)


def _predictor(checkpoint: Path):
    """The trained model as a ``Predictor``, and the run info its evaluation caches are keyed on."""
    from lavida.data.processor import LavidaProcessor
    from lavida.inference import Predictor
    from lavida.models.checkpoint import checkpoint_digest, load_checkpoint

    model, config = load_checkpoint(checkpoint)
    predictor = Predictor(
        model=model, processor=LavidaProcessor.for_model(model, config.inputs), batch_size=2
    )
    # Keyed on the weights too: a rerun that trained further into the same final/ re-evaluates.
    return predictor, {"checkpoint": str(checkpoint), "checkpoint_sha256": checkpoint_digest(checkpoint)}


def _evaluate(predictor, run_info: dict, root: Path, categories: list[str], output_dir: Path) -> dict:
    from lavida.eval.benchmarks import get_benchmark
    from lavida.eval.runner import run_evaluation

    benchmark = get_benchmark("shanghaitech", root, pixel_metrics=True)
    return run_evaluation(
        benchmark=benchmark,
        protocol=benchmark.protocol("standard"),
        output_dir=output_dir,
        predictor=predictor,
        categories=categories,
        run_info=run_info,
        overwrite=True,
    )
