"""The training loop: learning, exact resume, non-finite loss, schedule."""

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import other_weights
from omegaconf import OmegaConf
from torch import nn
from trainers import make_trainer, poison_loss

import lavida.configs
import lavida.models.checkpoint as checkpoint_module
from lavida.data.config import DataConfig
from lavida.losses import LavidaLoss, SegLossWeights
from lavida.models.base_fingerprint import BaseModelMismatchError
from lavida.models.checkpoint import read_checkpoint_meta
from lavida.train.config import LauncherConfig, OptimConfig, TrainConfig, launcher_from_dict
from lavida.train.loop import NonFiniteLossError
from lavida.train.optim import build_optimizer, warmup_decay_factor
from lavida.train.resume_check import RUN_CONFIG_FILE, ResumeMismatchError
from lavida.train.state import latest_checkpoint, read_progress


def test_single_batch_overfits(synthetic_train_root, tiny_pretrained, tmp_path):
    """Repeating one batch, the loss must fall far (the model can learn what it is shown)."""
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run")
    trainer.setup()
    batch = next(iter(trainer.loader))
    steps = [trainer.train_step(batch) for _ in range(30)]
    # Both terms of Eq. 10 fall: the masks / object scores (L_seg) fast; the answer tokens (L_txt)
    # slowly, as only LoRA on q/v and the <SEG> rows of a 2-layer, 64-wide LLM can change.
    for key, factor in (("loss_seg", 0.6), ("loss_txt", 0.95), ("loss", 0.8)):
        assert steps[-1][key] < factor * steps[0][key], (key, [round(s[key], 3) for s in steps])


def test_loss_falls_over_training(synthetic_train_root, tiny_pretrained, tmp_path):
    trainer = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "run", batches_per_epoch=12, epochs=2
    )
    trainer.setup()
    first = [trainer.compute_loss(batch)["loss"].item() for batch in trainer.loader]
    summary = trainer.fit()
    trainer.model.eval()
    trainer.loader.set_epoch(0)  # the items of `first` (Accelerate's loader sets the dataset's epoch)
    with torch.no_grad():
        after = [trainer.compute_loss(batch)["loss"].item() for batch in trainer.loader]
    assert sum(after) / len(after) < 0.8 * sum(first) / len(first)
    assert summary.steps == 24
    assert (tmp_path / "run" / "final" / "heads.safetensors").is_file()
    # Evaluation and detection default to the clip length the model was trained on.
    meta = read_checkpoint_meta(tmp_path / "run" / "final")
    assert meta["clip_length"] == trainer.data_config.clip_length and meta["step"] == 24
    assert (tmp_path / "run" / "run_config.json").is_file()


def test_the_object_score_learns_the_batch_frame_labels(synthetic_train_root, tiny_pretrained, tmp_path):
    """data.frame_labels reaches L_seg: labels other than mask presence (Eq. 2's 1ᵀ) change the
    object-score term and nothing else."""
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run")
    trainer.setup()
    trainer.model.eval()  # no dropout: the two forward passes must be the same
    batch = next(iter(trainer.loader))
    presence = batch.batch.target_masks.flatten(1).any(dim=1).float()
    assert torch.equal(batch.batch.frame_labels, presence)  # the default, `presence`
    flipped = dataclasses.replace(batch, batch=dataclasses.replace(batch.batch, frame_labels=1 - presence))
    with torch.no_grad():
        default, changed = trainer.compute_loss(batch), trainer.compute_loss(flipped)
    for key in ("loss_mask", "loss_dice", "loss_iou", "loss_txt"):
        assert torch.equal(default[key], changed[key]), key
    assert changed["loss_class"].item() != pytest.approx(default["loss_class"].item(), rel=1e-3)


NON_DEFAULT_LOSS = {
    "lambda_txt": 0.5,
    "lambda_seg": 2.0,
    "weights": "official",
    "focal_alpha": 0.5,
    "focal_gamma": 1.0,
    "supervise_all_iou": False,
    "iou_l1": False,
}


@pytest.mark.parametrize(
    ("settings", "expected_loss"),
    [
        ({}, LavidaLoss()),
        (
            NON_DEFAULT_LOSS,
            LavidaLoss(
                lambda_txt=0.5,
                lambda_seg=2.0,
                seg_weights=SegLossWeights.official(),
                focal_alpha=0.5,
                focal_gamma=1.0,
                supervise_all_iou=False,
                iou_l1=False,
            ),
        ),
    ],
    ids=["defaults", "every_setting_changed"],
)
def test_the_training_loss_is_eq_10_with_the_configured_settings_over_the_batchs_frames(
    synthetic_train_root, tiny_pretrained, tmp_path, settings, expected_loss
):
    """compute_loss is LavidaLoss built from train.loss on the model's outputs, and on one process L_seg's
    sums are divided by the batch's own frame count N (LavidaLoss's default), not by another size."""
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", loss=settings)
    trainer.setup()
    trainer.model.eval()  # no dropout: both forward passes must be the same
    batch = next(iter(trainer.loader))
    inputs = batch.batch
    assert inputs.target_masks.shape[0] not in inputs.target_masks.shape[1:]
    with torch.no_grad():
        output = trainer.model(inputs)
        expected = expected_loss(
            lm_loss=output.lm_loss,
            mask_logits=output.mask_logits,
            iou_pred=output.iou_pred,
            object_logits=output.object_logits,
            target_masks=inputs.target_masks,
        )
        got = trainer.compute_loss(batch)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, msg=key)


def test_kill_and_resume_gives_the_same_next_step(synthetic_train_root, tiny_pretrained, tmp_path):
    """Stopping after a checkpoint and resuming replays exactly what an uninterrupted run does next,
    also after an epoch boundary (epoch 1 must draw epoch 1's items, not epoch 0's again)."""
    sizes = {"epochs": 2, "batches_per_epoch": 3}
    straight = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "straight", **sizes)
    straight.setup()
    straight_losses = []
    original = straight.train_step
    straight.train_step = lambda batch: straight_losses.append(original(batch)) or straight_losses[-1]
    straight.fit()
    assert len(straight_losses) == 6

    first = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "resumed", save_every=2, **sizes)
    first.setup()
    step = first.train_step

    def killed_after_step_4(batch):
        if first.progress.step == 4:
            raise KeyboardInterrupt  # a kill: step 4's checkpoint is written, step 5 never runs
        return step(batch)

    first.train_step = killed_after_step_4
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert (first.progress.step, first.progress.epoch, first.progress.batch_in_epoch) == (4, 1, 1)
    pointer = tmp_path / "resumed" / "checkpoints" / "latest.txt"
    assert pointer.read_text().strip() == "step_0000004"
    pointer.unlink()  # resuming scans the checkpoints; a lost pointer must not restart from step 0
    resumed = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "resumed", save_every=2, **sizes)
    resumed.setup()
    assert (resumed.progress.step, resumed.progress.epoch, resumed.progress.batch_in_epoch) == (4, 1, 1)
    resumed_losses = []
    again = resumed.train_step
    resumed.train_step = lambda batch: resumed_losses.append(again(batch)) or resumed_losses[-1]
    resumed.fit()
    assert len(resumed_losses) == 2
    for key in ("loss", "loss_txt", "loss_seg"):
        assert resumed_losses[0][key] == straight_losses[4][key], key
        assert resumed_losses[1][key] == straight_losses[5][key], key


def test_trainer_refuses_a_changed_recipe_before_building_the_model(
    synthetic_train_root, tiny_pretrained, tmp_path, monkeypatch, caplog
):
    """Through the trainer: its checkpoints carry the record, and a resume with another learning rate
    or from a folder that is no training checkpoint stops before the (possibly 7B) model is built;
    cadence settings may change, and resume_check=warn continues with the new recipe."""
    out = tmp_path / "run"
    make_trainer(synthetic_train_root, tiny_pretrained, out, max_steps=2, save_every=2).fit()
    checkpoint = out / "checkpoints" / "step_0000002"
    recorded = json.loads((checkpoint / RUN_CONFIG_FILE).read_text())
    assert recorded["processes"] == 1 and recorded["train"]["optim"]["lr"] == 3e-3

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before the settings were compared")

    changed = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        out,
        max_steps=2,
        save_every=2,
        optim={"lr": 1e-3, "warmup_steps": 0, "decay": "constant"},
    )
    monkeypatch.setattr("lavida.train.loop.build_lavida", no_build)
    with pytest.raises(ResumeMismatchError, match=r"train.optim.lr: 0.003 -> 0.001"):
        changed.setup()
    for not_a_checkpoint in (out, out / "final"):  # the run folder, its evaluable model
        wrong = make_trainer(
            synthetic_train_root, tiny_pretrained, out, max_steps=2, resume=str(not_a_checkpoint)
        )
        with pytest.raises(
            FileNotFoundError, match=r"is not a complete training checkpoint: missing \['progress"
        ):
            wrong.setup()
    monkeypatch.undo()

    same = make_trainer(
        synthetic_train_root, tiny_pretrained, out, max_steps=2, save_every=1, log_every=2, keep_last=3
    )
    same.setup()
    assert same.progress.step == 2
    warned = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        out,
        max_steps=2,
        save_every=2,
        resume_check="warn",
        optim={"lr": 1e-3, "warmup_steps": 0, "decay": "constant"},
    )
    with caplog.at_level(logging.WARNING):
        warned.setup()
    assert warned.progress.step == 2 and "train.optim.lr: 0.003 -> 0.001" in caplog.text


def test_a_resume_on_other_base_weights_at_the_same_path_is_refused(
    synthetic_train_root, tiny_pretrained, tmp_path, monkeypatch, caplog
):
    """The run's settings agree (the path is the same), but the folder now holds another model (a
    re-download of the Instruct model over the base one, say): refused before the model is built;
    resume_check=warn resumes on the new weights."""
    base = tmp_path / "mllm"
    shutil.copytree(tiny_pretrained.mllm.pretrained, base)
    config = dataclasses.replace(
        tiny_pretrained, mllm=dataclasses.replace(tiny_pretrained.mllm, pretrained=str(base))
    )
    out = tmp_path / "run"
    make_trainer(synthetic_train_root, config, out, max_steps=2, save_every=2).fit()
    shutil.rmtree(base)
    other_weights(tiny_pretrained.mllm.pretrained, base)

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before the base weights were compared")

    monkeypatch.setattr("lavida.train.loop.build_lavida", no_build)
    with pytest.raises(
        BaseModelMismatchError,
        match=rf"(?s)step_0000002 was trained on other base weights.*mllm at {base}.*any other sign\. Point "
        r"model\.<part>\.pretrained \(or its LAVIDA_\*_PATH variable\) at the weights it was trained on;.*"
        r"train\.resume_check=warn resumes on them\.",
    ):
        make_trainer(synthetic_train_root, config, out, max_steps=2, save_every=2).setup()
    monkeypatch.undo()
    warned = make_trainer(synthetic_train_root, config, out, max_steps=2, save_every=2, resume_check="warn")
    with caplog.at_level(logging.WARNING):
        warned.setup()
    assert warned.progress.step == 2 and f"mllm at {base}" in caplog.text

    # Fingerprints of another version cannot be compared: the resume goes on, and says so.
    meta_file = out / "checkpoints" / "step_0000002" / "model" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["base_model_fingerprint_version"]
    meta_file.write_text(json.dumps(meta))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lavida.models.base_fingerprint"):
        make_trainer(synthetic_train_root, config, out, max_steps=2, save_every=2).setup()
    assert "fingerprints were made by another version of lavida (unversioned, now 1)" in caplog.text


@pytest.mark.parametrize("launcher", ["zero2", "zero3"])
def test_deepspeed_precision_without_the_models_dtype_is_refused_with_the_fix(
    launcher, synthetic_train_root, tiny_pretrained, tmp_path
):
    """DeepSpeed trains in launcher.mixed_precision (deepspeed_config decides DeepSpeed's bf16/fp16 from it,
    whatever the yaml's block says), casting the weights it trains and leaving the frozen ones in
    model.dtype: with float32 frozen weights under bf16 the first step failed inside SAM2 (float !=
    BFloat16). A mismatch is refused before anything is built; float32 throughout (mixed_precision=no) and
    matching dtypes are accepted."""
    yaml = Path(lavida.configs.__file__).with_name("launcher") / f"{launcher}.yaml"
    out = tmp_path / "run"

    def trainer(precision, dtype, *, bf16_block=True):
        settings = OmegaConf.to_container(OmegaConf.load(yaml))
        settings["mixed_precision"] = precision
        if not bf16_block:
            del settings["deepspeed"]["bf16"]
        model = dataclasses.replace(tiny_pretrained, dtype=dtype)
        return make_trainer(synthetic_train_root, model, out, launcher=launcher_from_dict(settings))

    for precision, dtype, bf16_block in (
        ("bf16", "float32", True),
        ("bf16", "float32", False),  # a yaml without the block: deepspeed_config enables bf16 all the same
        ("fp16", "float32", True),
        ("fp16", "bfloat16", True),
        ("bf16", "float16", True),
    ):
        wanted = {"bf16": "bfloat16", "fp16": "float16"}[precision]
        with pytest.raises(
            ValueError,
            match=rf"launcher '{launcher}' trains with DeepSpeed in {precision}, .* leaves the frozen ones in "
            rf"model.dtype={dtype}. Set model.dtype={wanted}",
        ):
            trainer(precision, dtype, bf16_block=bf16_block)
    trainer("no", "float32")  # float32 throughout
    trainer("bf16", "bfloat16")  # experiment=paper_main
    trainer("fp16", "float16")
    assert not out.exists()


def test_checkpoints_of_another_run_or_later_steps_are_refused(
    synthetic_train_root, tiny_pretrained, tmp_path, monkeypatch
):
    """Pruning keeps the highest step numbers: a fresh run beside an earlier run's checkpoints, or a
    rollback to step 2 beside step 4, would delete its own checkpoints as it wrote them."""
    out = tmp_path / "run"
    make_trainer(synthetic_train_root, tiny_pretrained, out, max_steps=4, save_every=2).fit()
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_0000002", "step_0000004"]

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before the output directory was checked")

    monkeypatch.setattr("lavida.train.loop.build_lavida", no_build)
    fresh = make_trainer(
        synthetic_train_root, tiny_pretrained, out, max_steps=4, save_every=2, resume="never"
    )
    with pytest.raises(FileExistsError, match=r"resume=never starts a new run, .*step_0000002, step_0000004"):
        fresh.setup()
    rollback = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        out,
        max_steps=4,
        save_every=2,
        resume=str(checkpoints / "step_0000002"),
    )
    with pytest.raises(
        FileExistsError, match=r"resuming from step 2, but .* later checkpoints \(step_0000004\)"
    ):
        rollback.setup()
    monkeypatch.undo()

    newest = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        out,
        max_steps=4,
        save_every=2,
        resume=str(checkpoints / "step_0000004"),
    )
    newest.setup()
    assert newest.progress.step == 4
    # A fresh run into a new folder is fine.
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "new", max_steps=1, resume="never").setup()


def test_progress_file_must_hold_the_three_counters(tmp_path):
    (tmp_path / "progress.json").write_text('{"step": 4, "epoch": 1}')
    with pytest.raises(
        ValueError, match=r"progress.json should hold the training progress .* got \{'step': 4"
    ):
        read_progress(tmp_path)
    (tmp_path / "progress.json").write_text('{"step": 4, "epoch": 1, "batch_in_epoch": 1}')
    assert (read_progress(tmp_path).step, read_progress(tmp_path).batch_in_epoch) == (4, 1)


def test_resume_finds_the_newest_complete_checkpoint_whatever_latest_txt_says(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    for name in ("step_0000002", "step_0000004", "step_0000010"):
        (root / name / "model").mkdir(parents=True)
        (root / name / "progress.json").write_text("{}")
    (root / "step_0000012.staging" / "model").mkdir(parents=True)  # a save that was killed
    (root / "step_0000012.staging" / "progress.json").write_text("{}")
    (root / "step_0000008" / "model").mkdir(parents=True)  # no progress.json: incomplete
    (root / "latest.txt").write_text("step_0000010\n")
    assert latest_checkpoint(tmp_path) == root / "step_0000010"
    assert not caplog.records

    (root / "latest.txt").write_text("step_0000004\n")  # lagging: killed between rename and pointer
    assert latest_checkpoint(tmp_path) == root / "step_0000010"
    assert "step_0000004" in caplog.text and "step_0000010" in caplog.text

    shutil.rmtree(root / "step_0000010")  # the pointer names a folder that is gone
    (root / "latest.txt").write_text("step_0000010\n")
    assert latest_checkpoint(tmp_path) == root / "step_0000004"
    (root / "latest.txt").unlink()
    assert latest_checkpoint(tmp_path) == root / "step_0000004"
    assert latest_checkpoint(tmp_path / "fresh") is None


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", save_every=1, max_steps=3)
    trainer.setup()
    poison_loss(trainer, on_call=3, value=float("nan"))
    with pytest.raises(NonFiniteLossError, match="step_0000002"):
        trainer.fit()
    latest = (tmp_path / "run" / "checkpoints" / "latest.txt").read_text().strip()
    assert latest == "step_0000002"
    assert not (tmp_path / "run" / "checkpoints" / "step_0000003").exists()


def test_non_finite_gradient_stops_before_the_update(synthetic_train_root, tiny_pretrained, tmp_path):
    """A finite loss whose backward overflows must not reach the weights (nor a checkpoint)."""
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", save_every=1, max_steps=3)
    trainer.setup()
    calls = {"n": 0}
    compute = trainer.compute_loss
    weight = next(p for p in trainer.model.parameters() if p.requires_grad)

    def poisoned(batch):
        calls["n"] += 1
        losses = compute(batch)
        if calls["n"] == 3:  # adds exactly 0 to the loss, but sqrt's gradient at 0 is infinite: NaN grads
            losses["loss"] = losses["loss"] + 0.0 * (weight - weight.detach()).abs().sqrt().sum()
        return losses

    trainer.compute_loss = poisoned
    with pytest.raises(
        NonFiniteLossError, match=r"Step 3: the loss is finite .* gradient norm is nan.*step_0000002"
    ):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert not (tmp_path / "run" / "checkpoints" / "step_0000003").exists()


def test_logged_means_count_what_each_key_was_measured_on(synthetic_train_root, tiny_pretrained, tmp_path):
    """With accumulation, grad_norm exists once per optimizer step, the losses once per micro-batch."""
    trainer = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "run", grad_accum=2, max_steps=2, log_every=2
    )
    trainer.setup()
    returned, logged = [], []
    step = trainer.train_step
    trainer.train_step = lambda batch: returned.append(step(batch)) or returned[-1]
    trainer.accelerator.log = lambda values, step: logged.append((step, values))
    trainer.fit()
    assert len(returned) == 4 and [s for s, _ in logged] == [2]
    values = logged[0][1]
    norms = [r["grad_norm"] for r in returned if "grad_norm" in r]
    assert len(norms) == 2
    # Summed and divided in float64, as here: exactly these means (float32 would round them).
    assert values["train/grad_norm"] == sum(norms) / 2
    assert values["train/loss"] == sum(r["loss"] for r in returned) / 4


def test_validation_scores_the_same_draws_at_every_call(synthetic_train_root, tiny_pretrained, tmp_path):
    trainer = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "run", val_every=1, val_batches=2
    )
    trainer.setup()
    modes = []
    compute = trainer.compute_loss
    trainer.compute_loss = lambda batch: modes.append(torch.is_grad_enabled()) or compute(batch)
    first, second = trainer.validate(), trainer.validate()
    assert first == second and first["val/loss"] > 0
    assert modes and not any(modes)  # no autograd graph kept for validation batches


@pytest.mark.parametrize("val_batches", [1, 2])
def test_validation_reports_the_mean_of_each_loss_over_the_held_out_batches(
    synthetic_train_root, tiny_pretrained, tmp_path, val_batches
):
    """Each val/ loss is that term's mean over the val_batches held-out batches (computed here one batch at
    a time, dropout off), and the model goes back to training mode afterwards. One training step first:
    with every LoRA B still zero, LoRA's dropout could not change a loss, so validating in training mode
    would go unnoticed."""
    trainer = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "run", val_every=1, val_batches=val_batches
    )
    trainer.setup()
    trainer._seed_micro_batch()
    trainer.train_step(next(iter(trainer.loader)))
    trainer.model.eval()
    trainer.validation.set_epoch(0)
    with torch.no_grad():
        per_batch = [trainer.compute_loss(batch) for batch in trainer.validation]
    trainer.model.train()
    assert len(per_batch) == val_batches
    expected = {
        f"val/{key}": sum(float(losses[key]) for losses in per_batch) / val_batches for key in per_batch[0]
    }
    metrics = trainer.validate()
    assert metrics == pytest.approx(expected, rel=1e-5)
    assert trainer.model.training


def test_validation_draws_from_the_sources_the_trainer_was_given(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """Sources handed to the Trainer as objects (custom data) feed the held-out batches too: the validation
    set reuses the sources setup opened, never re-opens them from data.sources (whose root is missing
    here)."""
    trainer = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "run", val_every=1, val_batches=1
    )
    moved = {"synthetic": {"weight": 1.0, "root": str(tmp_path / "not_there")}}
    trainer.data_config = DataConfig.from_dict({**trainer.data_config.to_dict(), "sources": moved})
    trainer.setup()
    assert len(trainer.validation) == 1 and trainer.validate()["val/loss"] > 0


def test_warmup_decay_schedule_shape():
    linear = [
        warmup_decay_factor(s, warmup_steps=4, total_steps=12, warmup_type="linear", decay="linear")
        for s in range(12)
    ]
    assert linear[:4] == [0.25, 0.5, 0.75, 1.0]
    assert (
        linear[4] == pytest.approx(1.0)
        and linear[8] == pytest.approx(0.5)
        and linear[11] == pytest.approx(0.125)
    )
    # DeepSpeed WarmupLR's log shape, log(i + 1) / log(W) (deepspeed/runtime/lr_schedules.py): 1 at the
    # warm-up's last step, as the linear one.
    log = [
        warmup_decay_factor(s, warmup_steps=100, total_steps=1000, warmup_type="log", decay="linear")
        for s in (0, 1, 99, 100)
    ]
    assert log == pytest.approx([0.0, math.log(2) / math.log(100), 1.0, 1.0])


def test_learning_rate_scales_make_parameter_groups():
    model = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2), "c": nn.Linear(2, 2)})
    model["a"].bias.requires_grad_(False)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, lr_scales={"b.": 0.1, "c.": 0.0, "b.bias": 0.5}))
    lrs = sorted((group["lr"], sum(p.numel() for p in group["params"])) for group in optimizer.param_groups)
    # a.weight at 1e-3; b.weight at 1e-4; b.bias (longest prefix wins) at 5e-4; c frozen; a.bias not trainable.
    assert lrs == [(pytest.approx(1e-4), 4), (pytest.approx(5e-4), 2), (pytest.approx(1e-3), 4)]


def test_parameters_at_lr_scale_0_stay_out_of_the_clipped_norm(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """lr scale 0 leaves the SAM2 decoder out of the optimizer: its gradients must not enter the clipped
    norm, nor pile up from step to step. The norm is checked against one computed by hand from the
    optimized parameters' gradients right before clipping."""
    scales = {"mask_decoder.": 0.0}
    trainer = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        max_steps=3,
        optim={"lr": 3e-3, "warmup_steps": 0, "decay": "constant", "grad_clip": 1e6, "lr_scales": scales},
    )
    trainer.setup()
    model = trainer.accelerator.unwrap_model(trainer.model)
    frozen = [p for n, p in model.named_parameters() if n.startswith("mask_decoder.") and p.requires_grad]
    trained = [
        p for n, p in model.named_parameters() if not n.startswith("mask_decoder.") and p.requires_grad
    ]
    assert frozen and trained
    by_hand, clip = [], trainer.accelerator.clip_grad_norm_

    def measured(parameters, max_norm):
        by_hand.append(float(torch.cat([p.grad.flatten() for p in trained if p.grad is not None]).norm()))
        return clip(parameters, max_norm)

    trainer.accelerator.clip_grad_norm_ = measured
    for batch in list(trainer.loader)[:3]:
        norm = trainer.train_step(batch)["grad_norm"]
        assert norm == pytest.approx(by_hand[-1], rel=1e-5)
        assert all(p.grad is None for p in frozen)  # cleared after every step, as the optimized ones are


def test_the_logged_learning_rate_is_the_one_applied(synthetic_train_root, tiny_pretrained, tmp_path):
    """train/lr at step s is the rate step s used (the default log warm-up over 4 steps: log(s + 1) / log(4)
    of lr, the first step at lr 0)."""
    trainer = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        max_steps=3,
        optim={"lr": 1e-3, "warmup_steps": 4, "decay": "constant"},
    )
    trainer.setup()
    logged = []
    trainer.accelerator.log = lambda values, step: logged.append(values["train/lr"])
    trainer.fit()
    assert logged == pytest.approx([1e-3 * math.log(s + 1) / math.log(4) for s in range(3)])


def test_a_resume_allowed_to_change_the_optimizer_uses_the_new_settings(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """resume_check=warn with a lower lr (the advice after a non-finite loss) and another weight decay:
    the restored optimizer state must not bring the checkpoint's back; the schedule keeps its position."""
    out = tmp_path / "run"
    schedule = {"warmup_steps": 0, "decay": "linear"}
    first = make_trainer(
        synthetic_train_root, tiny_pretrained, out, save_every=2, optim={"lr": 3e-3, **schedule}
    )
    first.setup()
    step = first.train_step

    def killed_after_step_2(batch):
        if first.progress.step == 2:
            raise KeyboardInterrupt
        return step(batch)

    first.train_step = killed_after_step_2
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        out,
        save_every=2,
        resume_check="warn",
        optim={"lr": 1e-4, "weight_decay": 0.01, "eps": 1e-6, **schedule},
    )
    resumed.setup()
    assert resumed.progress.step == 2
    (group,) = resumed.optimizer.param_groups
    assert (group["weight_decay"], group["eps"], group["initial_lr"]) == (0.01, 1e-6, 1e-4)
    assert group["lr"] == pytest.approx(1e-4 * 4 / 6)  # linear decay over 6 steps, 2 done
    assert len(resumed.optimizer.state) == len(group["params"])  # Adam's moments were restored
    logged = []
    resumed.accelerator.log = lambda values, step: logged.append(values["train/lr"])
    resumed.fit()
    assert logged == pytest.approx([1e-4 * 4 / 6, 1e-4 * 3 / 6, 1e-4 * 2 / 6, 1e-4 * 1 / 6])


def test_the_logged_learning_rate_is_the_configured_one_under_lr_scales(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """With a slower SAM2 decoder (the demo's lr_scales) train/lr is optim.lr × the schedule, not the
    slow group's rate."""
    trainer = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        max_steps=2,
        optim={"lr": 1e-3, "warmup_steps": 0, "decay": "constant", "lr_scales": {"mask_decoder.": 0.1}},
    )
    trainer.setup()
    assert sorted(group["lr"] for group in trainer.optimizer.param_groups) == pytest.approx([1e-4, 1e-3])
    logged = []
    trainer.accelerator.log = lambda values, step: logged.append(values["train/lr"])
    trainer.fit()
    assert logged == pytest.approx([1e-3, 1e-3])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"optim": {"warmup_type": "cosine"}}, "warmup_type must be linear or log"),
        ({"optim": {"decay": "cosine"}}, "decay must be linear or constant"),
        ({"optim": {"lr": -1.0}}, r"lr must be > 0"),
        ({"optim": {"lr": 0.0}}, r"lr must be > 0"),
        ({"optim": {"weight_decay": -0.1}}, "weight_decay must be ≥ 0"),
        ({"optim": {"grad_clip": -1.0}}, "grad_clip must be ≥ 0"),
        ({"optim": {"warmup_steps": -5}}, "warmup_steps must be ≥ 0"),
        ({"optim": {"betas": [0.9, 1.5]}}, "betas must be two numbers"),
        ({"optim": {"lr_scales": {"mask_decoder.": -0.1}}}, "lr_scales must be ≥ 0"),
        ({"keep_last": 0}, "keep_last must be ≥ 1"),
        ({"save_every": -2}, "save_every must be ≥ 0"),
        ({"val_every": -1}, "val_every must be ≥ 0"),
        ({"val_batches": -1}, "val_batches must be ≥ 0"),
    ],
)
def test_training_settings_are_checked_before_anything_is_built(bad, message):
    """A typo or a sign error is refused when the config is read, not after a (7B) model is loaded, and
    never quietly reinterpreted (keep_last 0 kept 1; a negative lr scale froze the parameters)."""
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(bad)


def test_a_rerun_of_a_finished_run_keeps_its_final_model(
    synthetic_train_root, tiny_pretrained, tmp_path, monkeypatch
):
    """Rerunning lavida-train after it finished trained nothing but saved final/ again, with the new git
    revision in its meta.json: the checkpoint's digest changed, and lavida-eval refused its own cached
    results for the same weights."""
    sizes = {"epochs": 1, "batches_per_epoch": 2}
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes).fit()
    final = tmp_path / "run" / "final"
    digest = checkpoint_module.checkpoint_digest(final)
    assert read_checkpoint_meta(final)["step"] == 2

    monkeypatch.setattr(checkpoint_module, "_git_revision", lambda: "0123456789abcdef+dirty")  # a pull since
    rerun = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes)
    trained = []
    step = rerun.train_step
    rerun.train_step = lambda batch: trained.append(step(batch)) or trained[-1]
    summary = rerun.fit()
    assert not trained and summary.steps == 2 and summary.final_checkpoint == final
    assert checkpoint_module.checkpoint_digest(final) == digest

    # A final/ that is not the finished step's (deleted, or left by an earlier, shorter run) is written.
    shutil.rmtree(final)
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes).fit()
    assert read_checkpoint_meta(final)["git_revision"] == "0123456789abcdef+dirty"


def test_the_final_model_of_an_earlier_run_is_not_kept_for_this_one(
    synthetic_train_root, tiny_pretrained, tmp_path, monkeypatch
):
    """Run A finishes; its checkpoints are deleted (as a refused resume says to), not its final/. Run B, with
    another learning rate, is killed while saving final/, and its rerun trains nothing: final/ was kept as
    "current" because its meta.json named the same step, so B's run folder served A's model. It is now kept
    only with the weights of the run's newest checkpoint."""
    sizes = {"epochs": 1, "batches_per_epoch": 2}
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes).fit()
    final = tmp_path / "run" / "final"
    a_heads = (final / "heads.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "run" / "checkpoints")

    other_lr = {"optim": {"lr": 1e-4, "warmup_steps": 0, "decay": "constant"}}
    b = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes, **other_lr)
    monkeypatch.setattr(b, "save_final", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        b.fit()
    newest = tmp_path / "run" / "checkpoints" / "step_0000002" / "model" / "heads.safetensors"
    assert newest.read_bytes() != a_heads  # B's weights differ from A's
    monkeypatch.undo()
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes, **other_lr).fit()
    assert (final / "heads.safetensors").read_bytes() == newest.read_bytes()


def test_checkpoints_record_the_revision_the_run_started_with_and_a_resume_on_other_code_warns(
    synthetic_train_root, tiny_pretrained, tmp_path, monkeypatch, caplog
):
    """The git revision was read at each save: a commit made while a run trained was recorded in its later
    checkpoints and final/, whose weights came from the code it started with. It is read when the run
    starts; and resuming a checkpoint saved by other code says so."""
    calls = []  # the first read sees commit aaaa; a commit is made while the run trains

    def revision():
        calls.append(1)
        return "aaaa" if len(calls) == 1 else "bbbb+dirty"

    monkeypatch.setattr(checkpoint_module, "_git_revision", revision)
    sizes = {"epochs": 1, "batches_per_epoch": 2, "save_every": 1}
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes).fit()
    run = tmp_path / "run"
    saved = [run / "checkpoints" / f"step_000000{n}" / "model" for n in (1, 2)] + [run / "final"]
    assert [read_checkpoint_meta(path)["git_revision"] for path in saved] == ["aaaa"] * 3
    with caplog.at_level(logging.WARNING, logger="lavida.train.loop"):
        make_trainer(synthetic_train_root, tiny_pretrained, run, **sizes).fit()  # trains nothing
    assert (
        f"Resuming {run / 'checkpoints' / 'step_0000002'}, saved by lavida aaaa, with lavida bbbb+dirty: the rest "
        "of the run is trained by other code." in caplog.messages
    )


@pytest.mark.parametrize("meta", ['{"step": 1}', '{"step": 2'], ids=["another_step", "unreadable"])
def test_a_rerun_saves_final_again_unless_its_meta_names_the_finished_step(
    synthetic_train_root, tiny_pretrained, tmp_path, meta
):
    """A complete final/ is kept only when its meta.json says it was saved at the finished step: one saved at
    another step (left by an earlier, shorter run) or whose meta.json cannot be read is written again."""
    sizes = {"epochs": 1, "batches_per_epoch": 2}
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes).fit()
    final = tmp_path / "run" / "final"
    (final / "meta.json").write_text(meta)
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **sizes).fit()
    assert read_checkpoint_meta(final)["step"] == 2


def test_each_training_checkpoints_model_records_its_step_and_clip_length(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """A training checkpoint's model/ is evaluable as is: like final/, its meta.json holds the step it was
    saved at and the clip length it was trained on (evaluation and detection default to it)."""
    out = tmp_path / "run"
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, out, max_steps=2, save_every=1, keep_last=2)
    trainer.fit()
    for step in (1, 2):
        meta = read_checkpoint_meta(out / "checkpoints" / f"step_{step:07d}" / "model")
        assert (meta["step"], meta["clip_length"]) == (step, trainer.data_config.clip_length)


def test_the_training_loader_reads_with_data_num_workers_and_validation_in_the_main_process(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """data.num_workers sets the training loader's worker processes; the few validation batches are read in
    the main process. Checked on the loaders setup built, without iterating them (no worker starts)."""
    trainer = make_trainer(
        synthetic_train_root, tiny_pretrained, tmp_path / "run", val_every=1, val_batches=1
    )
    trainer.data_config = dataclasses.replace(trainer.data_config, num_workers=1)
    trainer.setup()
    assert (trainer.loader.num_workers, trainer.validation.num_workers) == (1, 0)


@pytest.mark.parametrize("trainable_fp32", [True, False])
def test_a_bf16_model_trains_its_parameters_in_float32_only_if_asked(
    synthetic_train_root, tiny_pretrained, tmp_path, trainable_fp32
):
    """Mixed precision (supplement B.3, bf16): with train.trainable_fp32 the trained parameters (and so their
    optimizer state) are float32 while the frozen base weights stay in model.dtype; without it, the trained
    projector and mask decoder are bf16 too (PEFT keeps the MLLM's adapters in float32 either way)."""
    model = dataclasses.replace(tiny_pretrained, dtype="bfloat16")
    trainer = make_trainer(
        synthetic_train_root,
        model,
        tmp_path / "run",
        launcher=LauncherConfig(cpu=True, mixed_precision="bf16"),
        trainable_fp32=trainable_fp32,
    )
    trainer.setup()
    named = list(trainer.accelerator.unwrap_model(trainer.model).named_parameters())
    trained = {p.dtype for name, p in named if p.requires_grad and not name.startswith("mllm.")}
    frozen = {p.dtype for _, p in named if not p.requires_grad}
    assert trained == {torch.float32 if trainable_fp32 else torch.bfloat16}
    assert {p.dtype for name, p in named if name.startswith("mllm.") and p.requires_grad} == {torch.float32}
    assert frozen == {torch.bfloat16}


def test_val_batches_0_turns_validation_off(synthetic_train_root, tiny_pretrained, tmp_path, caplog):
    """val_every > 0 with val_batches 0 validates on nothing: no held-out set is built and nothing is logged."""
    caplog.set_level(logging.INFO)
    settings = {"batches_per_epoch": 1, "val_every": 1, "val_batches": 0}
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", **settings)
    trainer.fit()
    assert trainer.validation is None
    assert not [record for record in caplog.records if record.getMessage().startswith("Validation")]


def test_save_every_0_saves_one_checkpoint_at_the_end(synthetic_train_root, tiny_pretrained, tmp_path):
    """save_every 0 is "only at the end": with keep_last 2 a save at every step would leave two."""
    make_trainer(synthetic_train_root, tiny_pretrained, tmp_path / "run", max_steps=2, keep_last=2).fit()
    steps = sorted(path.name for path in (tmp_path / "run" / "checkpoints").glob("step_*"))
    assert steps == ["step_0000002"]


@pytest.mark.parametrize(("schedule_over", "length"), [("steps", 2), ("micro_batches", 4)])
def test_the_decay_spans_the_steps_or_like_the_release_the_micro_batches(
    synthetic_train_root, tiny_pretrained, tmp_path, schedule_over, length
):
    """Two optimizer steps of accumulation 2, linear decay, no warm-up: laid over the 2 steps the rates are
    1 and 1/2 of lr; laid over the 4 micro-batches (the release's 16,000 for its 8,000 steps) 1 and 3/4."""
    trainer = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        batches_per_epoch=2,
        grad_accum=2,
        batch_size=1,
        optim={"lr": 1e-3, "warmup_steps": 0, "decay": "linear", "schedule_over": schedule_over},
    )
    trainer.setup()
    logged = []
    trainer.accelerator.log = lambda values, step: logged.append(values["train/lr"])
    trainer.fit()
    assert logged == pytest.approx([1e-3 * (length - step) / length for step in (0, 1)])


def test_a_run_logs_its_validation_losses_and_the_final_checkpoint_paths(
    synthetic_train_root, tiny_pretrained, tmp_path, caplog
):
    """Found by a new-user walkthrough: with logger=none the validation losses were shown nowhere, Accelerate
    logged "The used dataset had no length ..." once per loss at every validation, and the log named the
    staging folder of each training checkpoint (step_N.staging/model) instead of where it ends up."""
    caplog.set_level(logging.INFO)
    trainer = make_trainer(
        synthetic_train_root,
        tiny_pretrained,
        tmp_path / "run",
        batches_per_epoch=2,
        val_every=1,
        val_batches=1,
        save_every=1,
    )
    trainer.fit()
    messages = [record.getMessage() for record in caplog.records]
    validations = [m for m in messages if m.startswith("Validation at step")]
    assert len(validations) == 2 and "Validation at step 2: loss " in validations[1]
    assert "had no length" not in caplog.text
    assert ".staging" not in caplog.text
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [m for m in messages if m.startswith("Saved")] == [
        f"Saved training checkpoint {checkpoints / 'step_0000001'}",
        f"Saved training checkpoint {checkpoints / 'step_0000002'}",
        f"Saved the trained model to {tmp_path / 'run' / 'final'}",
    ]


def test_setup_writes_the_runs_settings_and_the_commands_to_run_config_json(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """run_config.json (which a resume compares with) holds the train settings, the process count and the
    command's settings as given, values JSON cannot hold (a Path) written as text."""
    out = tmp_path / "runs" / "first"
    command = {"run_name": "smoke", "output_dir": out}
    trainer = make_trainer(synthetic_train_root, tiny_pretrained, out, run_config=command, max_steps=3)
    trainer.setup()
    recorded = json.loads((out / "run_config.json").read_text())
    assert recorded["hydra"] == {"run_name": "smoke", "output_dir": str(out)}
    train = recorded["train"]
    assert (train["max_steps"], train["batch_size"], recorded["processes"]) == (3, 2, 1)


def test_a_tensorboard_run_records_its_settings_flattened_to_scalars(
    synthetic_train_root, tiny_pretrained, tmp_path
):
    """train.logger=tensorboard starts Accelerate's tracker under <output_dir>/lavida with the run's settings as
    hyperparameters: nested keys joined with dots, None written as "null", lists left out (TensorBoard's
    hparams take scalars only)."""
    out = tmp_path / "run"
    make_trainer(synthetic_train_root, tiny_pretrained, out, max_steps=1, logger="tensorboard").fit()
    (record,) = (out / "lavida").glob("*/hparams.yml")
    hparams = yaml.safe_load(record.read_text())
    assert hparams["train.optim.lr"] == 3e-3 and hparams["train.max_steps"] == 1
    assert hparams["train.logger"] == "tensorboard" and hparams["processes"] == 1
    assert hparams["data.sources.synthetic.weight"] == 1.0
    assert hparams["launcher.deepspeed"] == "null"
    assert "data.strides" not in hparams and "train.optim.betas" not in hparams
    assert all(isinstance(value, (bool, int, float, str)) for value in hparams.values())
