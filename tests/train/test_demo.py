"""`lavida-demo` end to end: every output is written at toy size (default run), and the full default demo
meets the issue's learning targets (slow; ``make test-slow``)."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import other_weights
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

import lavida.models.random_init
import lavida.synthetic.pretrain_clip
import lavida.synthetic.pretrain_sam
from lavida.cli.demo import run, torch_threads
from lavida.demo import (
    STAND_INS_FILE,
    DemoConfig,
    _check_settings,
    _tiny_model_dict,
    base_models,
    check_data_settings,
    demo_resume_error,
)
from lavida.demo_report import (
    TARGETS,
    TIME_BUDGET_S,
    coverage_line,
    score_axis_limits,
    targets_line,
    within_video_auc,
    write_plots,
    write_report,
)
from lavida.eval.result_cache import cached_result_path
from lavida.eval.video_result import VideoResult
from lavida.models.checkpoint import checkpoint_digest, save_checkpoint
from lavida.models.config import LavidaConfig
from lavida.models.lavida import build_lavida
from lavida.synthetic.datasets import default_split
from lavida.train.loop import Trainer, TrainSummary
from lavida.train.resume_check import ResumeMismatchError


def test_demo_writes_all_outputs(tmp_path, caplog, monkeypatch):

    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose("demo")
    small = {
        "output_dir": str(tmp_path / "demo"),
        "train_videos": 4,
        "train_images": 2,
        "train_frames": 8,
        "test_anomalous": 2,
        "test_normal": 1,
        "test_frames": 16,
        "sam_pretrain_steps": 3,
        "steps": 4,
        "num_workers": 0,
    }
    for key, value in small.items():
        OmegaConf.update(cfg, key, value)
    with caplog.at_level("WARNING", logger="lavida.demo"):
        started = time.perf_counter()
        metrics = run(cfg)
        elapsed = time.perf_counter() - started
    out = tmp_path / "demo"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics and metrics["train_steps"] == 4
    # Both times are spans within this call, rounded to 0.1 s: training is a part of the whole run.
    assert 0 <= metrics["train_seconds"] <= metrics["total_seconds"] <= elapsed + 0.05
    assert [round(metrics[key], 1) for key in ("train_seconds", "total_seconds")] == [
        metrics["train_seconds"],
        metrics["total_seconds"],
    ]
    assert metrics["reused_from_earlier_run"] == []  # a whole run: its time is judged
    # Each split's figures are its evaluation's: the frame AUC is sklearn's over the saved per-video
    # scores (2 anomalous videos and 1 normal one), the pixel AUC the one its metrics.json holds.

    keys = {"train_steps", "train_seconds", "total_seconds", "reused_from_earlier_run"}
    for prefix, split_name in (("", "seen"), ("unseen_", "unseen")):
        evaluation = out / f"eval_{split_name}"
        caches = sorted(p for p in (evaluation / "predictions").glob("*.npz") if not p.name.startswith("."))
        results = [VideoResult.load(path) for path in caches]
        assert len(results) == 3, caches
        labels = np.concatenate([result.frame_labels for result in results])
        scores = np.concatenate([result.frame_scores for result in results])
        expected = roc_auc_score(labels, scores)
        assert saved[prefix + "frame_auc_micro"] == pytest.approx(expected, abs=1e-12), split_name
        evaluated = json.loads((evaluation / "metrics.json").read_text())
        assert saved[prefix + "pixel_auc"] == evaluated["pixel_auc"], split_name
        # Each split is evaluated with the trained checkpoint, prompted with its own anomaly categories.
        final = out / "train" / "final"
        first_digest = checkpoint_digest(final)
        assert evaluated["source"]["checkpoint"] == str(final.resolve()), split_name
        assert evaluated["source"]["checkpoint_sha256"] == first_digest, split_name
        split = default_split(cfg.seed)
        anomalies = split.seen_anomalies if split_name == "seen" else split.unseen_anomalies
        assert evaluated["source"]["categories"] == list(anomalies), split_name
        # Every float figure of the split's evaluation, and nothing else of it, is in the demo's metrics.
        figures = {key: value for key, value in evaluated.items() if isinstance(value, float)}
        assert {key: saved[prefix + key] for key in figures} == figures, split_name
        keys |= {prefix + key for key in (*figures, "frame_auc_within_videos")}
        assert 0.0 <= saved[prefix + "pixel_auc"] <= 1.0, split_name
        assert (evaluated["num_videos"], evaluated["num_frames"]) == (3, 3 * 16), split_name
    assert set(saved) == keys
    # The trainer ran under the demo's settings (the ones a refused resume names, demo_resume_error).
    run_config = json.loads((out / "train" / "run_config.json").read_text())
    assert (run_config["train"]["batches_per_epoch"], run_config["train"]["batch_size"]) == (
        4,
        cfg.batch_size,
    )
    assert run_config["train"]["seed"] == run_config["data"]["seed"] == cfg.seed
    assert run_config["train"]["optim"]["lr"] == cfg.lr
    assert run_config["train"]["optim"]["lr_scales"] == {"mask_decoder.sam.": cfg.decoder_lr_scale}
    assert run_config["train"]["optim"]["warmup_steps"] <= cfg.steps / 10  # at most a tenth of the run
    assert run_config["train"]["loss"]["weights"] == cfg.loss_weights
    assert (run_config["data"]["max_categories"], run_config["data"]["category_count"]) == (
        cfg.max_categories,
        cfg.category_count,
    )
    assert run_config["data"]["num_workers"] == 0
    for name in (
        "report.md",
        "score_curves.png",
        "eval_seen/metrics.json",
        "eval_unseen/report.md",
        "train/final/heads.safetensors",
    ):
        assert (out / name).is_file(), name
    assert len(list((out / "overlays").glob("*.png"))) == 4  # two anomalous videos per split
    report = (out / "report.md").read_text()
    assert "unseen (never in training)" in report
    verdict = "met" if saved["frame_auc_micro"] >= 0.90 else "missed"
    assert f"frame AUC ≥ 90 %: {verdict} ({100 * saved['frame_auc_micro']:.2f} %)" in report
    for prefix, split_name in (("", "seen"), ("unseen_", "unseen")):
        # The within-video column against the runner's own per-video AUCs (anomalous videos only).
        rows = (out / f"eval_{split_name}" / "per_video.csv").read_text().splitlines()[1:]
        per_video = [float(row.split(",")[-1]) for row in rows if row.split(",")[-1]]
        assert len(per_video) == 2
        # per_video.csv holds 6 decimals, so the mean of two is known to within 5e-7
        assert saved[prefix + "frame_auc_within_videos"] == pytest.approx(sum(per_video) / 2, abs=5e-7)
    assert f"| {100 * saved['frame_auc_within_videos']:.1f} |" in report
    # Six toy training entries cannot show every seen category: the run warns and the report says which.
    meta = json.loads((out / "data" / "synthetic_train" / "meta.json").read_text())
    trained = {
        text
        for kind in ("videos", "images")
        for entry in meta[kind].values()
        for text in entry["objects"].values()
    }
    # Nothing of the unseen split is a training target, hence nor a distractor (the sampler's pool).
    assert trained and not trained & set(default_split(cfg.seed).unseen_anomalies)
    untrained_seen = [text for text in default_split(cfg.seed).seen_anomalies if text not in trained]
    assert untrained_seen
    assert f"0 training targets: seen {', '.join(untrained_seen)}" in report
    assert f"seen {', '.join(untrained_seen)}" in caplog.text

    # The plots read the evaluated videos' caches by name: a stray file beside them (here the hidden
    # temporary a killed cache write leaves) is not read.

    (out / "eval_seen" / "predictions" / ".01_0001.npz.1.0a1b.tmp.npz").write_bytes(b"truncated")
    (out / "score_curves.png").unlink()
    split = default_split(cfg.seed)
    test_sets = {
        "seen": (out / "data" / "vad_seen", list(split.seen_anomalies)),
        "unseen": (out / "data" / "vad_unseen", list(split.unseen_anomalies)),
    }
    write_plots(out, test_sets)
    assert (out / "score_curves.png").is_file()

    # A rerun into the folder takes everything over and times only itself: the time target is not judged.
    again = run(cfg)
    assert again["reused_from_earlier_run"] == ["data", "base models", "training"]
    assert again["frame_auc_micro"] == metrics["frame_auc_micro"]
    assert "whole run under 600 s: not measured" in (out / "report.md").read_text()

    # A rerun refused by the trainer's resume check (another step count) keeps the earlier results and
    # their .hydra record (written by the CLI, stood in for here)...
    (out / ".hydra").mkdir()
    (out / ".hydra" / "config.yaml").write_text("steps: 4\n")
    earlier = (out / "metrics.json").read_text()
    OmegaConf.update(cfg, "steps", 5)
    with pytest.raises(ValueError, match="earlier demo run with other settings"):
        run(cfg)
    assert (out / "metrics.json").read_text() == earlier
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "score_curves.png").is_file()
    # Base models whose files changed under the checkpoints (their fingerprints) are refused in the
    # demo's terms, not with the trainer's settings, which lavida-demo does not have.

    OmegaConf.update(cfg, "steps", 4)
    shutil.move(out / "base_models" / "sam2", tmp_path / "sam2_kept")
    other_weights(tmp_path / "sam2_kept", out / "base_models" / "sam2")
    with pytest.raises(
        ValueError, match=r"holds other base models \(mask_decoder\) than the training"
    ) as error:
        run(cfg)
    assert "resume_check" not in str(error.value) and (out / "metrics.json").read_text() == earlier
    shutil.rmtree(out / "base_models" / "sam2")
    shutil.move(tmp_path / "sam2_kept", out / "base_models" / "sam2")
    OmegaConf.update(cfg, "steps", 5)
    # ...while a rerun that passes its checks and then dies leaves none of them beside its new training.

    shutil.rmtree(out / "train")  # as the refusal says, to train again

    def killed(self):
        raise RuntimeError("killed while training")

    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", killed)
    with pytest.raises(RuntimeError, match="killed while training"):
        run(cfg)
    for name in ("metrics.json", "report.md", "score_curves.png", "overlays", ".hydra"):
        assert not (out / name).exists(), name
    assert (out / "base_models" / "stand_ins.json").is_file()  # what the checks accepted is kept
    # Trained again into the same train/final, the run evaluates its new weights: the evaluations cached
    # for the first run's weights are recomputed, not refused as other settings (_predictor's run info).
    monkeypatch.setattr(Trainer, "fit", fit)
    retrained = run(cfg)
    assert retrained["train_steps"] == 5 and retrained["reused_from_earlier_run"] == ["data", "base models"]
    for split_name in ("seen", "unseen"):
        evaluated = json.loads((out / f"eval_{split_name}" / "metrics.json").read_text())
        digest = evaluated["source"]["checkpoint_sha256"]
        assert digest == checkpoint_digest(out / "train" / "final") != first_digest, split_name


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue #5: no trainable part of the tiny model learns whether a listed category is in a frame "
    "(seen frame AUC 0.51-0.81 at seed 0 over machines and code versions; docs/benchmarks.md). "
    "Remove this marker once it passes.",
)
def test_demo_meets_learning_targets(tmp_path):
    """The full default demo (~8–10 min on 2 cores): the issue's targets on held-out synthetic videos."""

    assert TARGETS == {"frame_auc_micro": 0.90, "pixel_auc": 0.90} and TIME_BUDGET_S == 600  # issue #5
    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose("demo", overrides=[f"output_dir={tmp_path / 'demo'}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads(cfg.num_workers))  # as `lavida-demo` (make demo) does
    try:
        metrics = run(cfg)
    finally:
        torch.set_num_threads(threads)
    assert metrics["total_seconds"] < TIME_BUDGET_S
    for key, bound in TARGETS.items():
        assert metrics[key] >= bound, key


def test_base_models_keep_the_output_folders_own_path(tmp_path, synthetic_train_root):
    """An output folder reached through a symlink: the base models are named through it, as the checkpoint
    names its own folder, so the checkpoint records where its stand-ins lie (and their digests). Resolved
    paths recorded nothing, and such a run lost its protection against moves and other runs' stand-ins."""

    (tmp_path / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    config = DemoConfig(output_dir=str(link), sam_pretrain_steps=0, clip_pretrain_steps=0)
    made = base_models(config, LavidaConfig.from_dict(_tiny_model_dict()), synthetic_train_root)
    assert made.mask_decoder.pretrained == str(link / "base_models" / "sam2")
    save_checkpoint(build_lavida(made), made, link / "train" / "final")
    meta = json.loads((link / "train" / "final" / "meta.json").read_text())
    assert (
        set(meta["stand_ins_relative"])
        == set(meta["stand_in_sha256"])
        == {"mllm", "mask_decoder", "text_encoder"}
    )


def test_base_models_are_made_once_per_output_folder(tmp_path, synthetic_train_root, monkeypatch):
    """A rerun of the demo (after a kill) reuses the base models and stand-in pretraining it recorded,
    and refuses other settings: training resumed on other frozen weights would be silently wrong. The
    model config names them by absolute paths, so the demo's checkpoint loads from any directory."""

    monkeypatch.chdir(tmp_path.parent)
    config = DemoConfig(output_dir=tmp_path.name, sam_pretrain_steps=1, clip_pretrain_steps=1)  # relative
    made = base_models(config, LavidaConfig.from_dict(_tiny_model_dict()), synthetic_train_root)
    for path in (made.mllm.pretrained, made.mask_decoder.pretrained, made.text_encoder.pretrained):
        assert Path(path).is_absolute() and Path(path).is_relative_to(tmp_path / "base_models")
    sam_weights = tmp_path / "base_models" / "sam2" / "model.safetensors"
    written = sam_weights.read_bytes()

    def must_not_run(*args, **kwargs):
        raise AssertionError("the rerun pretrained again")

    monkeypatch.setattr(lavida.synthetic.pretrain_sam, "pretrain_sam", must_not_run)
    monkeypatch.setattr(lavida.synthetic.pretrain_clip, "pretrain_clip", must_not_run)
    monkeypatch.setattr("lavida.models.random_init.write_random_pretrained", must_not_run)
    again = base_models(config, LavidaConfig.from_dict(_tiny_model_dict()), synthetic_train_root)
    assert again.to_dict() == made.to_dict()
    assert sam_weights.read_bytes() == written

    other = DemoConfig(output_dir=str(tmp_path), sam_pretrain_steps=2, clip_pretrain_steps=1)
    with pytest.raises(ValueError, match=STAND_INS_FILE):
        base_models(other, LavidaConfig.from_dict(_tiny_model_dict()), synthetic_train_root)
    # The stand-ins were pretrained on the training set: regenerated with other sizes, it needs new ones
    # (and a new training run), not the old ones.
    resized = DemoConfig(
        output_dir=str(tmp_path),
        sam_pretrain_steps=1,
        clip_pretrain_steps=1,
        train_videos=config.train_videos + 1,
    )
    with pytest.raises(ValueError, match=r"differing: train_videos\).*delete .*base_models.* and .*train"):
        base_models(resized, LavidaConfig.from_dict(_tiny_model_dict()), synthetic_train_root)

    # Moved or renamed as a whole, the folder's rerun reuses the base models that moved with it, not their
    # recorded place, which may be gone or, as here, hold another run's.
    moved = tmp_path.parent / f"{tmp_path.name}_moved"
    shutil.copytree(tmp_path, moved)
    (tmp_path / "base_models" / "sam2" / "model.safetensors").write_bytes(b"another run's")
    there = base_models(
        DemoConfig(output_dir=str(moved), sam_pretrain_steps=1, clip_pretrain_steps=1),
        LavidaConfig.from_dict(_tiny_model_dict()),
        synthetic_train_root,
    )
    expected = made.to_dict()
    for section in ("mllm", "mask_decoder", "text_encoder"):
        expected[section]["pretrained"] = str(
            moved / Path(expected[section]["pretrained"]).relative_to(tmp_path)
        )
    assert there.to_dict() == expected
    assert Path(there.mask_decoder.pretrained, "model.safetensors").read_bytes() == written


def test_a_rerun_with_other_data_settings_is_refused(tmp_path):

    record = tmp_path / "data" / "settings.json"
    _check_settings(
        record, {"seed": 0, "train_videos": 160}, what="synthetic data", fresh=[tmp_path / "data"]
    )
    assert json.loads(record.read_text()) == {"settings": {"seed": 0, "train_videos": 160}}
    _check_settings(
        record, {"seed": 0, "train_videos": 160}, what="synthetic data", fresh=[tmp_path / "data"]
    )
    with pytest.raises(ValueError, match=r"settings.json.*differing: train_videos\)") as error:
        _check_settings(
            record, {"seed": 0, "train_videos": 40}, what="synthetic data", fresh=[tmp_path / "data"]
        )
    assert f"delete {tmp_path / 'data'} to start over" in str(error.value)


def test_report_states_which_targets_are_met():

    line = targets_line({"frame_auc_micro": 0.9, "pixel_auc": 0.97123, "total_seconds": 549.4})
    assert line == (
        "Targets: seen frame AUC ≥ 90 %: met (90.00 %); seen pixel AUC ≥ 90 %: met (97.12 %); "
        "whole run under 600 s: met (549.4 s)."
    )
    line = targets_line({"frame_auc_micro": 0.7993, "pixel_auc": 0.95, "total_seconds": 600.0})
    assert "seen frame AUC ≥ 90 %: missed (79.93 %)" in line and "under 600 s: missed (600.0 s)" in line
    line = targets_line({"frame_auc_micro": 0.95, "pixel_auc": 0.5, "total_seconds": 12.0})
    assert line == (
        "Targets: seen frame AUC ≥ 90 %: met (95.00 %); seen pixel AUC ≥ 90 %: missed (50.00 %); "
        "whole run under 600 s: met (12.0 s). "
        'What is known about the gap: docs/benchmarks.md, "The demo\'s frame scores".'
    )
    # Just short of a bound must not print as the bound itself.
    line = targets_line({"frame_auc_micro": 0.8996, "pixel_auc": 0.95, "total_seconds": 599.96})
    assert "missed (89.96 %)" in line and "met (600.0 s)" in line
    assert line.endswith('docs/benchmarks.md, "The demo\'s frame scores".')  # points to what is known
    # A rerun that took over earlier work timed only itself: the time target is not judged.
    line = targets_line(
        {
            "frame_auc_micro": 0.8,
            "pixel_auc": 0.95,
            "total_seconds": 12.0,
            "reused_from_earlier_run": ["data", "base models", "training"],
        }
    )
    assert (
        "whole run under 600 s: not measured (this run reused the data, base models, training of an earlier "
        "one in its folder and took 12.0 s itself)" in line
    )


def test_report_tables_both_splits_from_the_metrics_and_records_the_settings(tmp_path):
    """report.md's rows against hand-formatted percentages (one decimal), a missing figure as n/a, a
    rerun's time as its own, and the settings as given."""
    split = default_split(0)
    metrics = {
        "frame_auc_micro": 0.8125,
        "frame_auc_within_videos": 0.5,
        "frame_ap": 0.25,
        "pixel_auc": 0.9,
        "unseen_frame_auc_micro": 0.6,
        "unseen_frame_auc_within_videos": 0.75,
        "unseen_frame_ap": 0.125,  # no unseen_pixel_auc
        "total_seconds": 12.4,
        "reused_from_earlier_run": ["data", "base models"],
    }
    summary = TrainSummary(steps=7, final_checkpoint=tmp_path / "final", last_losses={}, seconds=1.0)
    untrained = {"seen": [split.seen_anomalies[0]], "normal": []}
    write_report(tmp_path, {"seed": 0, "steps": 7}, split, metrics, summary, untrained=untrained)
    lines = (tmp_path / "report.md").read_text().splitlines()
    seen, unseen = ", ".join(split.seen_anomalies), ", ".join(split.unseen_anomalies)
    # The title, the run line and the table, each a Markdown block of its own (blank lines between).
    assert lines[:11] == [
        "# LAVIDA demo — synthetic benchmark",
        "",
        "Trained the tiny model for 7 steps on CPU; total time 12 s "
        "(this run only: it reused the data, base models of an earlier one).",
        "",
        "| split | frame AUC (%) | frame AUC within videos (%) | frame AP (%) | pixel AUC (%) | anomaly "
        "categories |",
        "|---|---:|---:|---:|---:|---|",
        f"| seen (training targets) | 81.2 | 50.0 | 25.0 | 90.0 | {seen} |",
        f"| unseen (never in training) | 60.0 | 75.0 | 12.5 | n/a | {unseen} |",
        "",
        coverage_line(untrained),
        "",
    ]
    verdict = lines.index(targets_line(metrics))
    assert lines[verdict - 1] == lines[verdict + 1] == ""
    # The settings last, as a fenced JSON block.
    fence = lines.index("Settings:")
    assert lines[fence - 1] == "" and lines[fence + 1] == "```json" and lines[-1] == "```"
    assert json.loads("\n".join(lines[fence + 2 : -1])) == {"seed": 0, "steps": 7}
    whole = {**metrics, "reused_from_earlier_run": []}
    write_report(tmp_path, {}, split, whole, summary, untrained=untrained)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert lines[2] == "Trained the tiny model for 7 steps on CPU; total time 12 s."


def test_within_video_auc_ignores_offsets_between_videos_and_skips_one_class_ones(tmp_path):

    videos = {  # name: (frame scores, frame labels)
        "a": ([0.90, 0.95, 0.92, 0.99], [0, 1, 0, 1]),  # high offset, ranked perfectly: AUC 1
        "b": ([0.10, 0.30, 0.20, 0.05], [0, 1, 1, 0]),  # low offset, ranked perfectly: AUC 1
        "c": ([0.50, 0.40, 0.60, 0.70], [1, 0, 0, 0]),  # 1 positive above 1 of 3 negatives: AUC 1/3
        "n": ([0.99, 0.98, 0.97, 0.96], [0, 0, 0, 0]),  # normal: no AUC of its own, left out
        "x": ([0.01, 0.02, 0.03, 0.04], [1, 1, 1, 1]),  # anomalous throughout: no AUC either, left out
    }
    root, eval_dir = tmp_path / "vad", tmp_path / "eval"
    root.mkdir()
    (root / "synthetic_layout.json").write_text(json.dumps({name: {} for name in videos}))
    for name, (scores, labels) in videos.items():
        VideoResult(
            name=name,
            scored=np.arange(4),
            frame_scores=np.array(scores, dtype=np.float32),
            frame_labels=np.array(labels, dtype=np.uint8),
        ).save(cached_result_path(eval_dir, name))
    assert within_video_auc(eval_dir, root) == pytest.approx((1 + 1 + 1 / 3) / 3)


def test_within_video_auc_refuses_a_test_set_without_a_two_class_video(tmp_path):
    """A normal video and one anomalous throughout: no video has an AUC of its own, and no mean is made up."""
    root, eval_dir = tmp_path / "vad", tmp_path / "eval"
    root.mkdir()
    (root / "synthetic_layout.json").write_text(json.dumps({"n": {}, "x": {}}))
    for name, labels in (("n", [0, 0, 0]), ("x", [1, 1, 1])):
        VideoResult(
            name=name,
            scored=np.arange(3),
            frame_scores=np.array([0.1, 0.5, 0.9], dtype=np.float32),
            frame_labels=np.array(labels, dtype=np.uint8),
        ).save(cached_result_path(eval_dir, name))
    with pytest.raises(ValueError) as error:
        within_video_auc(eval_dir, root)
    assert str(error.value) == f"{root}: no test video has both anomalous and normal frames."


def test_an_unreadable_test_set_layout_says_what_it_should_hold(tmp_path):
    (tmp_path / "synthetic_layout.json").write_text("{")
    with pytest.raises(ValueError) as error:
        within_video_auc(tmp_path / "eval", tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'synthetic_layout.json'}: not valid JSON (")
    assert "; expected the test set's layout written by lavida.synthetic.datasets.write_vad_set. " in str(
        error.value
    )


def test_score_curves_share_one_axis_fitted_to_the_scores():

    # Scores 0.50–0.60 over two videos: span 0.10, widened by 5 % of it on each side.
    low, high = score_axis_limits([np.array([0.52, 0.60]), np.array([0.50, 0.55])])
    assert (low, high) == pytest.approx((0.495, 0.605))
    # Constant scores get the minimum span (0.05, plus margins) around them, not a zero-height axis.
    assert score_axis_limits([np.array([0.3, 0.3])]) == pytest.approx((0.2725, 0.3275))
    # Near the ends the axis stops at 0 and 1, as probabilities do.
    assert score_axis_limits([np.array([0.0, 1.0])]) == (0.0, 1.0)
    assert score_axis_limits([np.array([0.999, 1.0])]) == pytest.approx((0.972, 1.0))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"train_frames": 1}, r"train_frames=1.*at least 2"),
        ({"test_frames": 3}, r"test_frames=3.*at least 4"),
        ({"train_videos": -1}, r"train_videos=-1.*at least 0"),
        ({"test_anomalous": 0}, r"test_anomalous=0.*at least 1"),
        ({"test_normal": -1}, r"test_normal=-1.*at least 0"),
        ({"train_videos": 0, "train_images": 0}, r"train_videos \+ train_images.*at least 1"),
    ],
)
def test_demo_refuses_data_sizes_the_generators_cannot_honour(tmp_path, settings, message):
    """Refused when the config is made, before anything is written, naming the demo's own setting."""

    with pytest.raises(ValueError, match=r"^DemoConfig: " + message):
        DemoConfig(output_dir=str(tmp_path / "demo"), **settings)
    assert not (tmp_path / "demo").exists()


def test_report_names_the_seen_categories_the_training_set_lacks():

    line = coverage_line({"seen": [], "normal": []})
    assert line.startswith("Every seen anomaly and normal category is among the training targets")
    line = coverage_line({"seen": ["red circle", "blue ring"], "normal": ["cyan cross"]})
    assert "0 training targets: seen red circle, blue ring; normal cyan cross" in line
    assert line.endswith(" At this training-set size the seen row mixes trained and untrained categories.")
    line = coverage_line({"seen": [], "normal": ["cyan cross"]})
    assert "0 training targets: normal cyan cross." in line and "seen" not in line
    # Only untrained normal categories: the seen row is all training targets, the normal objects are not.
    assert line.endswith(
        " At this training-set size the test videos' normal objects include categories the model never "
        "trained on."
    )


# The trainer's settings (resume_check's dotted keys) and the demo setting run_demo derives each from
# (run_demo, step 3: the data and train dicts it builds; the model is the model=tiny group's).
TRAINER_KEY_TO_DEMO_SETTING = [
    ("train.batches_per_epoch", "steps"),
    ("train.optim.warmup_steps", "steps"),  # min(100, steps // 10)
    ("train.batch_size", "batch_size"),
    ("train.seed", "seed"),
    ("data.seed", "seed"),
    ("train.optim.lr", "lr"),
    ("train.optim.lr_scales.mask_decoder.sam.", "decoder_lr_scale"),
    ("train.loss.weights", "loss_weights"),
    ("data.max_categories", "max_categories"),
    ("data.category_count", "category_count"),
    ("model.mllm.lora.r", "model"),
]


@pytest.mark.parametrize(("key", "setting"), TRAINER_KEY_TO_DEMO_SETTING)
def test_a_refused_resume_names_the_demo_setting_behind_each_trainer_key(tmp_path, key, setting):
    error = ResumeMismatchError(
        "... train.resume_check=warn ...", changed=(key,), changes=(f"{key}: 1 -> 2",)
    )
    assert str(demo_resume_error(error, tmp_path)) == (
        f"{tmp_path / 'train'} holds the training checkpoints of an earlier demo run with other settings "
        f"(changed since then: {setting}); resuming it would mix the two. Use a fresh output_dir, or delete "
        f"{tmp_path / 'train'} to train again (the synthetic data and base models there are reused).\n"
        f"Differences (checkpoint -> now):\n  {key}: 1 -> 2"
    )


def test_a_refused_resume_names_each_setting_once_and_no_trainer_setting(tmp_path):
    """Two keys from ``steps`` name it once; a key no demo setting decides (``data.strides``, fixed by
    run_demo; ``model.mllm`` is no prefix of ``model_x``) names nothing; every difference is listed."""
    error = ResumeMismatchError(
        "...",
        changed=("train.optim.warmup_steps", "data.strides", "train.batches_per_epoch", "model_x"),
        changes=("train.optim.warmup_steps: 0 -> 1", "data.strides: [1] -> [1, 2]"),
    )
    message = str(demo_resume_error(error, tmp_path))
    assert "other settings (changed since then: steps); resuming" in message
    assert message.endswith(
        "Differences (checkpoint -> now):\n  train.optim.warmup_steps: 0 -> 1\n  data.strides: [1] -> [1, 2]"
    )
    unread = str(demo_resume_error(ResumeMismatchError("..."), tmp_path))
    assert "other settings; resuming it would mix the two." in unread
    assert unread.endswith("reused).\nThe settings record of its latest checkpoint could not be read.")


# What the demo's records must hold, as read_json names it when one is unreadable.
RECORD_EXPECTED = (
    'expected a lavida-demo record {"settings": {...}, ...}; delete the folder it is in to make it again.'
)


def _no_base_models_made(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("base models were written")

    monkeypatch.setattr(lavida.models.random_init, "write_random_pretrained", must_not_run)


def test_unreadable_records_say_what_they_should_hold(tmp_path, monkeypatch):
    """``data/settings.json`` and ``base_models/stand_ins.json``, the demo's records, are read, not
    silently written over: a truncated one is named with what it should hold."""
    _no_base_models_made(monkeypatch)
    config = DemoConfig(output_dir=str(tmp_path))
    for record in (tmp_path / "data" / "settings.json", tmp_path / "base_models" / "stand_ins.json"):
        record.parent.mkdir(parents=True)
        record.write_text("{")
    with pytest.raises(ValueError) as error:
        check_data_settings(config)
    assert str(error.value).startswith(f"{tmp_path / 'data' / 'settings.json'}: not valid JSON (")
    assert RECORD_EXPECTED in str(error.value)
    with pytest.raises(ValueError) as error:
        base_models(config, LavidaConfig.from_dict(_tiny_model_dict()), tmp_path / "data" / "synthetic_train")
    assert str(error.value).startswith(f"{tmp_path / 'base_models' / 'stand_ins.json'}: not valid JSON (")
    assert RECORD_EXPECTED in str(error.value)


# base_models' record: the settings the stand-ins were made under (base_models' docstring: the seed, the
# training set's sizes they were pretrained on, their pretraining steps, the model config).
STAND_IN_SETTINGS = {
    "seed": 3,
    "train_videos": 5,
    "train_images": 4,
    "train_frames": 6,
    "sam_pretrain_steps": 7,
    "clip_pretrain_steps": 8,
}
PLACES = {"mllm": "mllm", "mask_decoder": "sam2", "text_encoder": "clip/open_clip_model.safetensors"}


def _write_stand_ins_record(out: Path, made_in: Path) -> dict:
    """A stand_ins.json as an earlier run in ``made_in`` left it; returns the model config it records."""
    model = _tiny_model_dict()
    recorded = LavidaConfig.from_dict(model).to_dict()
    for section, place in PLACES.items():
        recorded[section]["pretrained"] = str(made_in / "base_models" / place)
    (out / "base_models").mkdir(parents=True)
    record = {
        "settings": {**STAND_IN_SETTINGS, "model": LavidaConfig.from_dict(model).to_dict()},
        "model": recorded,
    }
    (out / "base_models" / "stand_ins.json").write_text(json.dumps(record))
    return recorded


def test_base_models_reuse_a_record_made_under_the_same_settings_where_it_lies(tmp_path, monkeypatch):
    """The recorded model's base models are re-pointed at this output folder's base_models/ (a folder
    moved as a whole), and nothing is written or pretrained again."""
    _no_base_models_made(monkeypatch)
    out = tmp_path / "demo"
    recorded = _write_stand_ins_record(out, made_in=tmp_path / "gone")
    config = DemoConfig(output_dir=str(out), **STAND_IN_SETTINGS)
    made = base_models(config, LavidaConfig.from_dict(_tiny_model_dict()), out / "data" / "synthetic_train")
    expected = {**recorded}
    for section, place in PLACES.items():
        expected[section] = {**recorded[section], "pretrained": str(out / "base_models" / place)}
    assert made.to_dict() == expected


def test_base_models_reuse_leaves_real_weights_where_the_model_config_names_them(tmp_path, monkeypatch):
    """Only the random base models move with the output folder: a section the model config gave its own
    weights (which write_random_pretrained leaves as they are) keeps its path on reuse."""
    _no_base_models_made(monkeypatch)
    out = tmp_path / "demo"
    model = _tiny_model_dict()
    model["mask_decoder"]["pretrained"] = str(tmp_path / "weights" / "my_sam2")
    given = LavidaConfig.from_dict(model).to_dict()
    recorded = LavidaConfig.from_dict(model).to_dict()
    for section in ("mllm", "text_encoder"):
        recorded[section]["pretrained"] = str(tmp_path / "gone" / "base_models" / PLACES[section])
    (out / "base_models").mkdir(parents=True)
    record = {"settings": {**STAND_IN_SETTINGS, "model": given}, "model": recorded}
    (out / "base_models" / "stand_ins.json").write_text(json.dumps(record))
    config = DemoConfig(output_dir=str(out), **STAND_IN_SETTINGS)
    made = base_models(config, LavidaConfig.from_dict(model), out / "data" / "synthetic_train")
    assert made.mask_decoder.pretrained == str(tmp_path / "weights" / "my_sam2")
    assert made.mllm.pretrained == str(out / "base_models" / "mllm")
    assert made.text_encoder.pretrained == str(out / "base_models" / PLACES["text_encoder"])


@pytest.mark.parametrize("setting", list(STAND_IN_SETTINGS))
def test_base_models_refuse_each_other_setting_by_name(tmp_path, monkeypatch, setting):
    _no_base_models_made(monkeypatch)
    out = tmp_path / "demo"
    _write_stand_ins_record(out, made_in=out)
    config = DemoConfig(output_dir=str(out), **{**STAND_IN_SETTINGS, setting: STAND_IN_SETTINGS[setting] + 1})
    with pytest.raises(ValueError) as error:
        base_models(config, LavidaConfig.from_dict(_tiny_model_dict()), out / "data" / "synthetic_train")
    assert str(error.value) == (
        f"{out / 'base_models' / 'stand_ins.json'}: the base models there were made with other settings than "
        f"this run's (differing: {setting}). Use a fresh output_dir, or delete {out / 'base_models'} and "
        f"{out / 'train'} to start over."
    )


def test_recorded_settings_compare_as_they_read_back_and_name_keys_on_either_side(tmp_path):
    """A tuple reads back from JSON as a list (no refusal of an unchanged setting); a setting only the
    record has, or only this run has, is named as differing."""
    record = tmp_path / "settings.json"
    _check_settings(record, {"seed": 0, "strides": (1, 2)}, what="synthetic data", fresh=[tmp_path])
    _check_settings(record, {"seed": 0, "strides": (1, 2)}, what="synthetic data", fresh=[tmp_path])
    with pytest.raises(ValueError) as error:
        _check_settings(record, {"seed": 0, "frames": 4}, what="synthetic data", fresh=[tmp_path])
    assert str(error.value) == (
        f"{record}: the synthetic data there were made with other settings than this run's (differing: "
        f"frames, strides). Use a fresh output_dir, or delete {tmp_path} to start over."
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"train_videos": 0, "train_images": 1},  # "≥ 1 entry in all" (DemoConfig's docstring)
        {"train_videos": 1, "train_images": 0},
        {"train_frames": 2, "test_frames": 4, "test_anomalous": 1, "test_normal": 0},
    ],
)
def test_demo_accepts_data_sizes_on_their_bounds(tmp_path, settings):
    DemoConfig(output_dir=str(tmp_path), **settings)  # the check is that the bound is not refused


def test_demo_refuses_a_negative_image_count(tmp_path):
    """train_images has the same bound as train_videos (≥ 0), checked under the demo's name."""
    with pytest.raises(ValueError, match=r"DemoConfig: train_images=-1.*at least 0"):
        DemoConfig(output_dir=str(tmp_path / "demo"), train_images=-1)


@pytest.mark.parametrize(("sam_steps", "clip_steps"), [(2, 3), (0, 0)])
def test_base_models_are_made_and_pretrained_with_the_demos_seed_and_steps(
    tmp_path, monkeypatch, sam_steps, clip_steps
):
    """The random base models under <output_dir>/base_models and both stand-in pretrainings get the demo's
    seed and step counts; 0 steps skip a pretraining. The pieces are stood in for (each has its own tests)."""
    calls = []

    def fake_write(config, root, *, seed):
        calls.append(("write_random_pretrained", Path(root), seed))
        data = config.to_dict()
        for section, place in PLACES.items():
            data[section]["pretrained"] = str(Path(root) / place)
        return LavidaConfig.from_dict(data)

    def fake_sam(sam_dir, train_root, *, steps, seed):
        calls.append(("pretrain_sam", sam_dir, train_root, steps, seed))

    def fake_clip(clip_file, train_root, *, model_name, arch, steps, seed):
        calls.append(("pretrain_clip", clip_file, train_root, model_name, arch, steps, seed))

    monkeypatch.setattr(lavida.models.random_init, "write_random_pretrained", fake_write)
    monkeypatch.setattr(lavida.synthetic.pretrain_sam, "pretrain_sam", fake_sam)
    monkeypatch.setattr(lavida.synthetic.pretrain_clip, "pretrain_clip", fake_clip)
    out, root = tmp_path / "demo", tmp_path / "demo" / "data" / "synthetic_train"
    config = DemoConfig(
        output_dir=str(out), seed=5, sam_pretrain_steps=sam_steps, clip_pretrain_steps=clip_steps
    )
    model = LavidaConfig.from_dict(_tiny_model_dict())
    made = base_models(config, model, root)
    base = out / "base_models"
    text = made.text_encoder
    expected = [("write_random_pretrained", base, 5)]
    if sam_steps:
        expected.append(("pretrain_sam", str(base / "sam2"), root, 2, 5))
    if clip_steps:
        expected.append(("pretrain_clip", text.pretrained, root, text.model_name, text.arch, 3, 5))
    assert calls == expected
    assert made.mask_decoder.pretrained == str(base / "sam2")
    record = json.loads((base / "stand_ins.json").read_text())
    assert record["model"] == json.loads(json.dumps(made.to_dict()))
    assert record["settings"]["seed"] == 5 and record["settings"]["sam_pretrain_steps"] == sam_steps
