"""The training loop (B.3): setup → train → save, readable top to bottom.

    trainer = Trainer(model=..., data=..., train=..., launcher=..., output_dir=...)
    summary = trainer.fit()

``setup`` builds the accelerator, model, processor, data, optimizer, schedule and logger, and resumes
from the newest checkpoint if there is one. ``fit`` loops over epochs and batches; ``train_step`` is
the only place that touches accumulation, autocast, backward and clipping. A non-finite loss or gradient
stops the run with a clear message; the last good checkpoint is left as it was. Under fp16's loss scaler
an overflowing update is skipped instead (the scaler lowers its scale), unless the scale falls below 1.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lavida.atomic import write_json
from lavida.data.config import DataConfig
from lavida.data.processor import LavidaProcessor
from lavida.data.train_dataset import (
    OpenedSources,
    TrainBatch,
    build_train_dataset,
    data_record,
    open_train_sources,
)
from lavida.data.types import IGNORE_INDEX
from lavida.file_state import files_digest
from lavida.losses import LavidaLoss, SegLossWeights
from lavida.models import checkpoint as checkpoint_io
from lavida.models.base_fingerprint import check_base_models, fingerprints_to_compare
from lavida.models.checkpoint import (
    ADAPTER_DIR,
    CONFIG_FILE,
    HEADS_FILE,
    META_FILE,
    read_checkpoint_meta,
    save_checkpoint,
)
from lavida.models.config import LavidaConfig
from lavida.models.lavida import build_lavida
from lavida.models.random_init import (
    random_pretrained_paths,
    unset_base_models,
    write_random_pretrained,
)
from lavida.train.config import LauncherConfig, TrainConfig
from lavida.train.launcher import build_accelerator, register_zero3_outside_parameters
from lavida.train.optim import apply_optim_settings, build_optimizer, build_scheduler, schedule_length
from lavida.train.resume_check import check_resume_settings
from lavida.train.stand_ins import copy_stand_in, stand_ins_to_copy
from lavida.train.state import (
    Progress,
    check_checkpoints_in_the_way,
    check_training_checkpoint,
    latest_checkpoint,
    load_training_checkpoint,
    read_progress,
    save_training_checkpoint,
    whole_trainable_weights,
)

log = logging.getLogger(__name__)


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two saved models hold the same trained weights: their heads file and LoRA adapter, byte for
    byte (not meta.json, which records the git revision at saving)."""
    if (a / HEADS_FILE).read_bytes() != (b / HEADS_FILE).read_bytes():
        return False
    adapter_a, adapter_b = a / ADAPTER_DIR, b / ADAPTER_DIR
    if adapter_a.is_dir() != adapter_b.is_dir():
        return False
    return not adapter_a.is_dir() or files_digest(adapter_a) == files_digest(adapter_b)


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient norm became NaN or infinite; training stopped without saving."""


@dataclass
class TrainSummary:
    """What a finished run reports."""

    steps: int
    final_checkpoint: Path
    last_losses: dict[str, float]
    seconds: float


class Trainer:
    """Trains LAVIDA on pseudo-anomalies.

    Args:
        model: The model configuration.
        data: The training data configuration.
        train: Loop, optimizer and loss settings.
        launcher: Distribution and precision.
        output_dir: Run directory (checkpoints, logs, the final model).
        sources: Already built sources by name (e.g. the synthetic one); others are built from ``data``.
        run_config: The resolved configuration to record with the run (Hydra's, as a plain dict).
    """

    def __init__(
        self,
        *,
        model: LavidaConfig,
        data: DataConfig,
        train: TrainConfig,
        launcher: LauncherConfig,
        output_dir: str | Path,
        sources: dict | None = None,
        run_config: dict | None = None,
    ) -> None:
        if model.dtype != "float32" and train.trainable_fp32 and launcher.mixed_precision == "no":
            # Frozen weights in bf16 beside float32 trainable ones only run under autocast; without it
            # the first layer mixing the two fails deep inside the forward pass.
            raise ValueError(
                f"model.dtype={model.dtype} keeps the frozen weights in {model.dtype} and the trained ones in "
                f"float32 (train.trainable_fp32), which needs autocast, but launcher '{launcher.name}' has "
                f"mixed_precision=no. Use a launcher with mixed_precision=bf16 (launcher=gpu, ddp, zero2 or "
                f"zero3; on CPU launcher.mixed_precision=bf16), or model.dtype=float32 (e.g. for a tiny "
                f"smoke run on CPU)."
            )
        wanted = {"bf16": "bfloat16", "fp16": "float16"}.get(launcher.mixed_precision)
        if launcher.deepspeed is not None and wanted is not None and model.dtype != wanted:
            # DeepSpeed trains in the launcher's precision (lavida.train.launcher.deepspeed_config): it casts
            # the weights it optimises and leaves the frozen ones in model.dtype, so the first layer mixing
            # the two failed deep inside the first step.
            raise ValueError(
                f"launcher '{launcher.name}' trains with DeepSpeed in {launcher.mixed_precision}, which casts the "
                f"trained weights to {wanted} but leaves the frozen ones in model.dtype={model.dtype}. Set "
                f"model.dtype={wanted}{' (as experiment=paper_main does)' if wanted == 'bfloat16' else ''}, or "
                "launcher.mixed_precision=no with model.dtype=float32 for float32 throughout, or train without "
                "DeepSpeed (launcher=single, ddp or cpu)."
            )
        self.model_config = model
        self.data_config = data
        self.config = train
        self.launcher = launcher
        self.output_dir = Path(output_dir)
        self.sources = sources
        self.run_config = run_config or {}
        self.progress = Progress()
        self._opened: OpenedSources | None = None  # the readable sources and effective mixture (setup)

    # -- setup -------------------------------------------------------------------------------------

    def setup(self) -> None:
        from accelerate.utils import set_seed

        self.accelerator = build_accelerator(self.launcher, self.config, output_dir=self.output_dir)
        acc = self.accelerator
        set_seed(self.config.seed, device_specific=True)
        resume = self._resume_from()
        # Read once, now: checkpoints record the code this run started with, not the checkout hours later.
        self._revision = checkpoint_io._git_revision()
        self._warn_of_other_code(resume)
        micro_batches = self.config.batches_per_epoch * self.config.grad_accum
        per_epoch = micro_batches * self.config.batch_size * acc.num_processes
        data = DataConfig.from_dict({**self.data_config.to_dict(), "samples_per_epoch": per_epoch})
        # The sources are opened before the resume check: with missing_sources=renormalize the mixture
        # trained on depends on which of them can be read now, and the record (compared below) holds it.
        self._opened = open_train_sources(data, sources=self.sources)
        # Random stand-ins only where the config allows them (base_weights: optional); a required base model
        # without a path is refused by build_lavida, before anything is built.
        if self.model_config.base_weights == "optional" and unset_base_models(self.model_config):
            self.model_config = self._random_base_models_on_disk(resume=resume)
        if resume is not None:
            # Before the model is built: a 7B model need not load to learn that the run cannot resume.
            check_resume_settings(resume, self._record(), mode=self.config.resume_check)
            check_base_models(
                fingerprints_to_compare(read_checkpoint_meta(resume / "model"), checkpoint=resume),
                self.model_config,
                checkpoint=resume,
                mode=self.config.resume_check,
                fix="Point model.<part>.pretrained (or its LAVIDA_*_PATH variable) at the weights it was trained "
                "on; if these are the same weights in another form (re-sharded, converted to another format or "
                "dtype), train.resume_check=warn resumes on them.",
            )
        log.info("Building the model")
        with self._whole_model_build():
            model = build_lavida(self.model_config)
        plugin = acc.state.deepspeed_plugin
        if plugin is not None and plugin.zero_stage == 3:
            register_zero3_outside_parameters(model)
        if self.config.trainable_fp32:
            # Mixed precision: frozen weights may be bf16, trained ones (and their optimizer state) stay fp32.
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()
        self.processor = LavidaProcessor.for_model(model, self.model_config.inputs)
        self.loss_fn = LavidaLoss(
            lambda_txt=self.config.loss.lambda_txt,
            lambda_seg=self.config.loss.lambda_seg,
            seg_weights=SegLossWeights.official()
            if self.config.loss.weights == "official"
            else SegLossWeights(),
            focal_alpha=self.config.loss.focal_alpha,
            focal_gamma=self.config.loss.focal_gamma,
            supervise_all_iou=self.config.loss.supervise_all_iou,
            iou_l1=self.config.loss.iou_l1,
        )

        self.dataset = build_train_dataset(data, processor=self.processor, opened=self._opened)
        loader = self._loader(self.dataset, data.num_workers)
        self.validation = None
        if self.config.val_every > 0 and self.config.val_batches > 0:
            val_data = DataConfig.from_dict(
                {
                    **data.to_dict(),
                    "seed": data.seed + 1_000_003,  # held-out draws from the training sources
                    "samples_per_epoch": self.config.val_batches * self.config.batch_size * acc.num_processes,
                }
            )
            val_set = build_train_dataset(val_data, processor=self.processor, opened=self._opened)
            self.validation = acc.prepare_data_loader(self._loader(val_set, 0), device_placement=False)

        optimizer = build_optimizer(model, self.config.optim)
        self._scales = [group["lr"] / self.config.optim.lr for group in optimizer.param_groups]
        # Parameters that an lr scale of 0 leaves out of the optimizer still get gradients (they keep
        # requires_grad, by which checkpoints select what trained): they must neither enter the clipped
        # norm nor accumulate gradients from step to step.
        self._optimized = [p for group in optimizer.param_groups for p in group["params"]]
        optimized = {id(p) for p in self._optimized}
        self._left_out = [p for p in model.parameters() if p.requires_grad and id(p) not in optimized]
        self._applied_lr = float("nan")
        length = schedule_length(
            self.config.optim, total_steps=self.config.total_steps, grad_accum=self.config.grad_accum
        )
        scheduler = build_scheduler(optimizer, self.config.optim, total_steps=length)
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.loader = acc.prepare_data_loader(loader, device_placement=False)

        if resume is not None:
            self.progress = load_training_checkpoint(
                resume, accelerator=acc, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
            )
            # The checkpoint's optimizer state carries its rates and weight decay; a resume that was
            # allowed to change them (resume_check=warn, e.g. a lower lr after a non-finite loss) uses the
            # configured ones, which run_config.json and later checkpoints record.
            apply_optim_settings(self.optimizer, self.scheduler, self.config.optim, scales=self._scales)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.output_dir / "run_config.json", self._record(), indent=2, default=str)
        if self.config.logger != "none":
            acc.init_trackers("lavida", config=_flat(self._record()))
        # ZeRO-3 leaves empty shards in the module; ds_numel is the whole parameter's size.
        trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
        log.info(
            "Training %.2f M parameters on %d process(es), %d steps (%d per epoch)",
            trainable / 1e6,
            acc.num_processes,
            self.config.total_steps,
            self.config.batches_per_epoch,
        )

    @contextlib.contextmanager
    def _whole_model_build(self) -> Iterator[None]:
        """A context in which the model is built whole, also under ZeRO-3.

        Under ZeRO-3 transformers builds the Qwen2-VL and SAM2 parts already sharded (DeepSpeed's
        ``zero.Init``) in the model's dtype, while LoRA, the ``<SEG>`` rows and the projector are built
        whole in fp32; DeepSpeed's stage-3 optimizer refuses trainable parameters of mixed dtypes (seen
        on an H200). Built whole, the model is cast to bf16 and sharded by DeepSpeed at ``prepare``, as
        under ZeRO-2; until then each process holds all of it (about 17 GB at 7B in bf16). transformers
        shards whenever Accelerate's ZeRO-3 config object is alive (Accelerate's own
        ``zero3_init_context_manager(enable=False)`` re-creates it), so it is unset for the build.
        """
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None or plugin.zero_stage != 3:
            yield
            return
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        try:
            yield
        finally:
            plugin.set_deepspeed_weakref()  # Accelerate's prepare() expects it

    def _loader(self, dataset, num_workers: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=False,  # every index is already a random draw; order is the data position
            num_workers=num_workers,
            collate_fn=dataset.collate_fn,
            drop_last=True,
        )

    def _warn_of_other_code(self, resume: Path | None) -> None:
        """Warn when the checkpoint resumed was saved by other code than this run's (``self._revision``)."""
        revision = self._revision
        if resume is None or not self.accelerator.is_main_process:
            return
        try:
            saved = read_checkpoint_meta(resume / "model").get("git_revision")
        except (OSError, ValueError):  # the resume itself names an unreadable checkpoint
            return
        if saved and revision and saved != revision:
            log.warning(
                "Resuming %s, saved by lavida %s, with lavida %s: the rest of the run is trained by other code.",
                resume,
                saved,
                revision,
            )

    def _resume_from(self) -> Path | None:
        """The checkpoint to resume from (None: a fresh run), after refusing an output_dir whose checkpoints
        would mix with this run's."""
        resume = self.config.resume
        if resume == "auto":
            return latest_checkpoint(self.output_dir)
        if resume == "never":
            check_checkpoints_in_the_way(self.output_dir, resume_step=None)
            return None
        path = Path(resume)
        check_training_checkpoint(path, deepspeed=self.accelerator.state.deepspeed_plugin is not None)
        check_checkpoints_in_the_way(self.output_dir, resume_step=read_progress(path).step)
        return path

    def _random_base_models_on_disk(self, *, resume: Path | None) -> LavidaConfig:
        """Write random stand-ins for the base models without weights into the run folder; point at them.

        With ``base_weights: optional`` (smoke runs) an unset base model is random. Drawn at build time,
        it would be drawn again, differently, by every later load of a checkpoint, which holds only what
        trains: the trained heads would run on other frozen weights, and each evaluation of the same
        checkpoint would give other scores. On disk, checkpoints name them as they name real weights
        (absolute paths). Written by the main process at the start of a run, reused on resume (those in
        the run folder where it is now, also after a move; those the resumed checkpoint was trained on,
        copied in, where the run folder lacks them); the global generator is left as it was.
        """
        acc = self.accelerator
        root = (self.output_dir / "base_models").absolute()
        copies = {}
        if resume is not None:  # on every process, before anything is written: they all refuse alike
            copies = stand_ins_to_copy(resume, root, unset_base_models(self.model_config))
        if acc.is_main_process:
            for section, source in copies.items():
                copy_stand_in(source, random_pretrained_paths(root)[section])
                log.info(
                    "Copied the %s stand-in %s was trained on from %s into %s", section, resume, source, root
                )
            with torch.random.fork_rng(devices=[]):
                write_random_pretrained(
                    self.model_config, root, seed=self.config.seed, reuse_existing=resume is not None
                )
        acc.wait_for_everyone()
        paths = random_pretrained_paths(root)
        data = self.model_config.to_dict()
        for section in unset_base_models(self.model_config):
            data[section]["pretrained"] = str(paths[section])
        return LavidaConfig.from_dict(data)

    def _record(self) -> dict:
        """The run's settings, written to ``run_config.json`` and into every checkpoint (resume compares them).

        Once the sources are opened (``setup``), the data section also holds the effective mixture
        (``data_record``), so a resume that would train on another mixture is seen as a changed setting.
        """
        data = (
            self.data_config.to_dict()
            if self._opened is None
            else data_record(self.data_config, self._opened)
        )
        return {
            "model": self.model_config.to_dict(),
            "data": data,
            "train": self.config.to_dict(),
            "launcher": {k: v for k, v in vars(self.launcher).items()},
            "processes": self.accelerator.num_processes,
            "hydra": self.run_config,
        }

    # -- loop --------------------------------------------------------------------------------------

    def fit(self) -> TrainSummary:
        """Train until ``total_steps``; return a summary. Call :meth:`setup` first (or let this do it)."""
        if not hasattr(self, "accelerator"):
            self.setup()
        acc = self.accelerator
        total = self.config.total_steps
        progress_bar = tqdm(
            total=total,
            initial=self.progress.step,
            desc="train",
            unit="step",
            disable=not acc.is_local_main_process,
        )
        started = time.perf_counter()
        started_at = self.progress.step
        last: dict[str, float] = {}
        # Per key: sums and counts since the last log (grad_norm exists on synchronising micro-batches only).
        running: dict[str, float] = {}
        counts: dict[str, int] = {}
        self.model.train()
        while self.progress.step < total:
            loader = self.loader
            if self.progress.batch_in_epoch:
                loader = acc.skip_first_batches(self.loader, self.progress.batch_in_epoch)
            # On the loader, not the dataset: when iterated, Accelerate's loader passes its own count of
            # passes to the dataset's set_epoch, a count that restarts at 0 in a resumed process.
            loader.set_epoch(self.progress.epoch)
            for batch in loader:
                self._seed_micro_batch()
                losses = self.train_step(batch)
                self.progress.batch_in_epoch += 1
                for key, value in losses.items():
                    running[key] = running.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
                if not acc.sync_gradients:
                    continue
                self.progress.step += 1
                progress_bar.update(1)
                if self.progress.step % self.config.log_every == 0 or self.progress.step == total:
                    last = self._mean_over_processes(running, counts)
                    last["lr"] = self._applied_lr
                    acc.log({f"train/{k}": v for k, v in last.items()}, step=self.progress.step)
                    progress_bar.set_postfix(loss=f"{last['loss']:.4f}")
                    running, counts = {}, {}
                if self.validation is not None and self.progress.step % self.config.val_every == 0:
                    metrics = self.validate()
                    acc.log(metrics, step=self.progress.step)
                    # Also where no tracker runs (logger=none, e.g. train=tiny on a CPU); the total loss first.
                    shown = sorted(metrics.items(), key=lambda item: item[0] != "val/loss")
                    log.info(
                        "Validation at step %d: %s",
                        self.progress.step,
                        ", ".join(f"{key.removeprefix('val/')} {value:.4f}" for key, value in shown),
                    )
                if self.config.save_every and self.progress.step % self.config.save_every == 0:
                    self.save()
                if self.progress.step >= total:
                    break
            else:  # the epoch ran out
                self.progress.epoch += 1
                self.progress.batch_in_epoch = 0
        progress_bar.close()
        if self.progress.step == started_at and self._final_is_current():
            # A rerun of a finished run: nothing trained, so its checkpoints and final/ stay as they are.
            # Saving final/ again would change its meta.json (git revision), hence its digest, and
            # lavida-eval would refuse its own cached results for the same weights.
            log.info("The run had already finished at step %d; final/ is kept as it is.", self.progress.step)
            final = self.output_dir / "final"
        else:
            if not self.config.save_every or self.progress.step % self.config.save_every:
                self.save()
            final = self.save_final()
        acc.end_training()
        return TrainSummary(self.progress.step, final, last, time.perf_counter() - started)

    def _seed_micro_batch(self) -> None:
        """Seed the model's randomness (LoRA dropout) from (seed, epoch, batch, rank).

        Dropout then depends only on the data position, never on how much randomness other code
        (dataloader iterators, checkpoint I/O) consumed before — so a resumed run draws exactly the
        masks an uninterrupted one would.
        """
        entropy = [
            self.config.seed,
            self.progress.epoch,
            self.progress.batch_in_epoch,
            self.accelerator.process_index,
        ]
        torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """One micro-batch: forward, loss, backward; on accumulation boundaries clip, step, zero."""
        acc = self.accelerator
        with acc.accumulate(self.model), acc.autocast():
            losses = self.compute_loss(batch)
            loss = losses["loss"]
            if not torch.isfinite(loss.detach()):
                terms = {k: float(v.detach()) for k, v in losses.items()}
                latest = latest_checkpoint(self.output_dir)
                raise NonFiniteLossError(
                    f"Step {self.progress.step + 1}: the loss is {float(loss.detach())} ({terms}). Training stopped; "
                    f"the last good checkpoint is {latest or 'none (none was saved yet)'}. Lower the learning "
                    "rate (resume with train.resume_check=warn), check the data of this batch, or train in "
                    "float32."
                )
            acc.backward(loss)
            if acc.sync_gradients:
                # Clipping off (grad_clip 0) still measures the norm: max_norm inf scales nothing. Under
                # DeepSpeed, backward() above already clipped and stepped (gradient_clipping in its
                # config), and this returns that step's norm as a Python float.
                max_norm = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else math.inf
                norm = acc.clip_grad_norm_(self._optimized, max_norm)
                if norm is not None and torch.isfinite(torch.as_tensor(norm)):
                    losses["grad_norm"] = norm
                elif norm is not None and acc.scaler is None:
                    # A finite loss can still overflow in backward; stepping would turn every weight
                    # into NaN and the next checkpoint would save them.
                    latest = latest_checkpoint(self.output_dir)
                    raise NonFiniteLossError(
                        f"Step {self.progress.step + 1}: the loss is finite ({float(loss.detach())}) but the "
                        f"gradient norm is {float(norm)}. Training stopped without saving; the last good "
                        f"checkpoint is {latest or 'none (none was saved yet)'}. Lower the learning rate "
                        "(resume with train.resume_check=warn), check the data of this batch, or train in "
                        "float32."
                    )
                # Otherwise fp16 with Accelerate's GradScaler: its scaled gradients overflowed (common in
                # the first steps, at scale 2^16). The scaler's step below skips this update and lowers
                # its scale; _after_skipped_update stops the run if that never ends.
            if acc.sync_gradients:  # the rate this optimizer step applies (the scheduler moves on below):
                # optim.lr × the schedule's factor, which groups with an lr scale apply times their scale
                self._applied_lr = self.scheduler.get_last_lr()[0] / self._scales[0]
            self.optimizer.step()
            if acc.sync_gradients:
                if acc.scaler is not None and self.optimizer.step_was_skipped:
                    # A skipped update still counts as a step of the run (as DeepSpeed's and HF's counters
                    # do), not of the schedule: B.3's warm-up and decay count applied updates.
                    self._after_skipped_update(loss)
                else:  # once per optimizer step (step_scheduler_with_optimizer=False)
                    self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            for parameter in self._left_out:
                parameter.grad = None
        return {
            key: float(value.detach() if torch.is_tensor(value) else value) for key, value in losses.items()
        }

    def _after_skipped_update(self, loss: torch.Tensor) -> None:
        """Log an fp16 update that the loss scaler skipped; stop once its scale has fallen below 1.

        Each overflow halves the scale (GradScaler's backoff); gradients that stay non-finite at every
        scale are a real divergence, stopped where DeepSpeed's fp16 stops (its minimum loss scale, 1).
        """
        scale = self.accelerator.scaler.get_scale()
        step = self.progress.step + 1
        if scale < 1.0:
            latest = latest_checkpoint(self.output_dir)
            raise NonFiniteLossError(
                f"Step {step}: the loss is {float(loss.detach())}, but its fp16 gradients overflowed at every "
                f"loss scale down to {scale:g}; no update was applied. Training stopped; the last good "
                f"checkpoint is {latest or 'none (none was saved yet)'}. Lower the learning rate (resume with "
                "train.resume_check=warn), check the data of this batch, or train in bf16 or float32."
            )
        log.warning(
            "Step %d: the fp16 gradients overflowed; the loss scaler skipped this update and lowered its "
            "scale to %g.",
            step,
            scale,
        )

    def compute_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """Eq. 10 on one batch: λ_txt·L_txt + λ_seg·L_seg."""
        inputs = batch.batch.to(self.accelerator.device)
        output = self.model(inputs)
        lm_loss = output.lm_loss
        if lm_loss is not None and self.accelerator.num_processes > 1 and inputs.labels is not None:
            # L_txt is this process's mean over its answer tokens; weighted by its token count over the
            # processes' mean, DDP's gradient average becomes the mean over all their tokens.
            tokens = int((inputs.labels[:, 1:] != IGNORE_INDEX).sum())
            lm_loss = lm_loss * tokens / self.mean_over_processes(tokens)
        return self.loss_fn(
            lm_loss=lm_loss,
            mask_logits=output.mask_logits,
            iou_pred=output.iou_pred,
            object_logits=output.object_logits,
            target_masks=inputs.target_masks,
            num_frames=self.mean_over_processes(inputs.target_masks.shape[0]),
            # y^f of Eq. 2 as data.frame_labels sets it (presence: decided on the full-resolution masks,
            # so a target that the resize to SAM2's input shrinks away still counts as present).
            frame_labels=inputs.frame_labels,
        )

    def mean_over_processes(self, count: int) -> float | torch.Tensor:
        """A per-batch count (frames, answer tokens), or with several processes its mean over them
        (collective). Used as the divisor of summed losses, it makes a process with 2 images and one
        with 2 videos of 8 frames weigh every frame alike once DDP averages their gradients, as one
        process with all 4 samples would (SAM2 all-reduces its object count the same way)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return count
        return acc.reduce(torch.tensor(float(count), device=acc.device), reduction="mean")

    def _mean_over_processes(self, running: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
        """Each logged quantity's mean over its micro-batches on every process.

        Each process's loss is already divided by normalisers taken over all processes (frames, answer
        tokens), so the step's loss is the mean of the processes' losses, not the main process's alone.
        """
        keys = sorted(running)
        totals = torch.tensor(
            [running[key] for key in keys] + [counts[key] for key in keys],
            dtype=torch.float64,
            device=self.accelerator.device,
        )
        totals = self.accelerator.reduce(totals, reduction="sum").tolist()
        return {key: totals[i] / totals[len(keys) + i] for i, key in enumerate(keys)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses on held-out draws from the training sources (never a test benchmark)."""
        acc = self.accelerator
        self.model.eval()
        # The same held-out draws at every call (Accelerate's loader would move to new ones each pass),
        # so that the curve follows the model, not the data.
        self.validation.set_epoch(0)
        totals: dict[str, float] = {}
        count = 0
        for batch in self.validation:
            with acc.autocast():
                losses = self.compute_loss(batch)
            for key, value in losses.items():
                # gather, not gather_for_metrics: the loader drops incomplete batches (drop_last) and every
                # process gets val_batches whole ones, so there are no duplicates to drop; with drop_last
                # Accelerate knows no remainder, and gather_for_metrics returned the same tensor after
                # logging "The used dataset had no length ..." at each validation's last batch, per loss.
                gathered = acc.gather(value.detach().reshape(1))
                totals[key] = totals.get(key, 0.0) + float(gathered.sum())
                if key == "loss":
                    count += gathered.numel()
        self.model.train()
        return {f"val/{key}": value / max(count, 1) for key, value in totals.items()}

    # -- saving ------------------------------------------------------------------------------------

    def save(self) -> Path:
        """A resumable training checkpoint (collective)."""
        return save_training_checkpoint(
            accelerator=self.accelerator,
            model=self.model,
            model_config=self.model_config,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            progress=self.progress,
            output_dir=self.output_dir,
            keep_last=self.config.keep_last,
            run_config=self._record(),
            extra_meta=self._meta(),
        )

    def _meta(self) -> dict:
        # The clip length the model was trained on: evaluation and detection default to it (supp. D.3.3
        # varies it at inference too).
        return {
            "step": self.progress.step,
            "clip_length": self.data_config.clip_length,
            "git_revision": self._revision,  # read when the run started (setup)
        }

    def _final_is_current(self) -> bool:
        """Whether ``final/`` holds a complete model saved at the current step, with the weights of this
        run's newest checkpoint (decided on the main process: every process must take the same branch, since
        saving is collective). The step alone would keep the final/ of an earlier run in the same folder
        whose checkpoints were deleted, had it stopped at the same step."""
        from accelerate.utils import broadcast_object_list

        final = self.output_dir / "final"
        current = [False]
        if self.accelerator.is_main_process:
            complete = all((final / name).is_file() for name in (CONFIG_FILE, HEADS_FILE, META_FILE))
            newest = latest_checkpoint(self.output_dir)
            try:
                current[0] = (
                    complete
                    and read_checkpoint_meta(final).get("step") == self.progress.step
                    and newest is not None
                    and _same_weights(final, newest / "model")
                )
            except (OSError, ValueError):  # an unreadable meta.json: save final/ again
                current[0] = False
        if self.accelerator.num_processes > 1:
            broadcast_object_list(current)
        return bool(current[0])

    def save_final(self) -> Path:
        """The trained model alone, in the evaluable checkpoint format: ``<output_dir>/final``."""
        final = self.output_dir / "final"
        self.accelerator.wait_for_everyone()
        model = self.accelerator.unwrap_model(self.model)
        with whole_trainable_weights(self.accelerator, model):
            if self.accelerator.is_main_process:
                save_checkpoint(model, self.model_config, final, extra_meta=self._meta())
                log.info("Saved the trained model to %s", final)
        self.accelerator.wait_for_everyone()
        return final


def _flat(record: dict, prefix: str = "") -> dict:
    """Flatten a nested config to scalar values (TensorBoard's hparams accept only those)."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        elif isinstance(value, (int, float, str, bool)) and not (
            isinstance(value, float) and math.isnan(value)
        ):
            flat[name] = value
        elif value is None:
            flat[name] = "null"
    return flat
