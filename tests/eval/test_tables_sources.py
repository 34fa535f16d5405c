"""One table row, one model: ``metrics.json`` records what produced a run (``source``), and lavida-tables
refuses to put runs of different checkpoints, modes or categories in one row unless ``--allow-mixed``."""

import dataclasses
import json
import logging
import re

import numpy as np
import pytest
from conftest import evaluate_saved, save_ramp_scores
from PIL import Image

from lavida.cli.tables import main as tables
from lavida.eval.benchmark import TestVideo, VadBenchmark
from lavida.eval.runner import run_evaluation
from lavida.eval.tables import OFFICIAL_TEST_VIDEOS, build_tables, read_run

# Each benchmark has its own prompt categories: runs on their defaults are one model's runs all the same.
CATEGORIES = {"ubnormal": ["running", "fighting"], "shanghaitech": ["bicycle", "chasing"]}


class Posing(VadBenchmark):
    """Two videos of 9 PNG frames (a red square from frame 4 in the first) posing as the paper's benchmark
    ``name``, so that lavida-tables places their runs in its columns."""

    intervals = {"standard": 2, "lavida_official": 4}
    has_pixel_gt = False

    def __init__(self, root, name):
        self.name = name
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root)

    @property
    def categories(self):
        return CATEGORIES[self.name]

    def load_videos(self):
        videos = []
        for video, start in (("a", 4), ("b", None)):
            folder = self.root / video
            folder.mkdir(exist_ok=True)
            labels = np.zeros(9, np.uint8)
            for t in range(9):
                frame = np.full((24, 32, 3), 40, np.uint8)
                if start is not None and t >= start:
                    frame[4:12, 6:16] = (220, 20, 20)
                    labels[t] = 1
                Image.fromarray(frame).save(folder / f"{t:03d}.png")
            videos.append(TestVideo(name=video, path=folder, frame_labels=labels))
        return videos


@pytest.fixture(autouse=True)
def _posing_test_sets(monkeypatch):
    """Posing's two videos stand for the whole test split of the benchmark it poses as, under both
    protocols, so that lavida-tables takes its runs as whole (tests/eval/test_tables_partial.py checks
    the official counts)."""
    for name in CATEGORIES:
        monkeypatch.setitem(OFFICIAL_TEST_VIDEOS, name, {"standard": 2, "lavida_official": 2})


@pytest.fixture
def scores_run(tmp_path):
    """``scores_run(name, benchmark, **options)``: a scores-only run into ``tmp_path/name`` of predictions
    saved in ``tmp_path/preds_<name>``."""

    def run(name, benchmark, **options):
        bench = Posing(tmp_path / "data" / benchmark, benchmark)
        frame_counts = {video.name: video.num_frames for video in bench.videos()}
        predictions = save_ramp_scores(tmp_path / f"preds_{name}", frame_counts)
        evaluate_saved(bench, predictions, tmp_path / name, **options)
        return tmp_path / name

    return run


@pytest.fixture
def model_run(tmp_path, tiny_model):
    """``model_run(name, benchmark, checkpoint=, digest=)``: a model run into ``tmp_path/name`` with the
    run info lavida-eval passes (the checkpoint as given and its digest)."""
    from conftest import tiny_processor_for

    from lavida.inference import Predictor

    predictor = Predictor(model=tiny_model, processor=tiny_processor_for(tiny_model), batch_size=2)

    def run(name, benchmark, *, checkpoint, digest, clip_length=8, **settings):
        bench = Posing(tmp_path / "data" / benchmark, benchmark)
        # The model settings as lavida-eval's run info spells them (lavida/cli/eval.py), defaults unless given.
        defaults = {
            "checkpoint_overrides": {},
            "dtype": "torch.float32",
            "gate_masks": True,
            "base_models": {"mllm": "0" * 16},
        }
        run_evaluation(
            benchmark=bench,
            protocol=dataclasses.replace(bench.protocol("standard"), clip_length=clip_length),
            output_dir=tmp_path / name,
            predictor=predictor,
            run_info={"checkpoint": str(checkpoint), "checkpoint_sha256": digest, **defaults, **settings},
        )
        return tmp_path / name

    return run


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_metrics_json_records_what_produced_the_run(scores_run, model_run, tmp_path, monkeypatch):
    """The mode, the checkpoint (resolved) and the digest lavida-eval computed, the prediction folder
    (resolved), and the categories used and whether they are the benchmark's; the other keys stay."""
    scores = _metrics(scores_run("scores", "ubnormal"))
    assert scores["source"] == {
        "mode": "scores-only",
        "checkpoint": None,
        "checkpoint_sha256": None,
        "predictions": str((tmp_path / "preds_scores").resolve()),
        "categories": ["running", "fighting"],
        "default_categories": True,
        "clip_length": None,  # saved predictions: made with settings lavida-eval does not know
        "settings": {},
    }
    assert scores["split"] == "test" and scores["videos_left_out"] == 0 and scores["clip_length"] == 8
    assert {"frame_auc_micro", "num_videos", "primary_metric"} <= scores.keys()

    custom = scores_run("custom", "ubnormal", categories=["fire"])
    assert _metrics(custom)["source"]["categories"] == ["fire"]
    assert _metrics(custom)["source"]["default_categories"] is False
    report = (custom / "report.md").read_text()
    assert (
        "- categories (1): fire\n- categories given for this run, not the benchmark's prompt list\n" in report
    )
    assert "not the benchmark's" not in (tmp_path / "scores" / "report.md").read_text()

    monkeypatch.chdir(tmp_path)
    model = model_run("model", "shanghaitech", checkpoint="ckpt/final", digest="0123456789abcdef")
    assert _metrics(model)["source"] == {
        "mode": "model",
        "checkpoint": str((tmp_path / "ckpt" / "final").resolve()),
        "checkpoint_sha256": "0123456789abcdef",
        "predictions": None,
        "categories": ["bicycle", "chasing"],
        "default_categories": True,
        "clip_length": 8,
        "settings": {
            "checkpoint_overrides": {},
            "dtype": "torch.float32",
            "gate_masks": True,
            "base_models": {"mllm": "0" * 16},
        },
    }
    assert "- checkpoint_sha256: `0123456789abcdef`" in (model / "report.md").read_text()


def test_runs_of_two_checkpoints_are_refused(model_run, tmp_path, capsys):
    """UBnormal from checkpoint A beside ShanghaiTech from checkpoint B is not one model's row."""
    a = model_run("ub_a", "ubnormal", checkpoint=tmp_path / "ckpt_a", digest="a" * 16)
    b = model_run("sht_b", "shanghaitech", checkpoint=tmp_path / "ckpt_b", digest="b" * 16)
    with pytest.raises(SystemExit, match="2"):
        tables([str(a), str(b)])
    refused = capsys.readouterr().err
    assert re.search(
        r"(?s)lavida-tables: .*ub_a and .*sht_b differ in checkpoint: .*ckpt_a.*a{16}.* vs .*ckpt_b.*b{16}",
        refused,
    )
    assert "--allow-mixed" in refused and "'ours'" in refused

    tables([str(a), str(b), "--allow-mixed", "--out", str(tmp_path / "t")])
    markdown = (tmp_path / "t" / "tables.md").read_text()
    ub, sht = (100 * _metrics(run)["frame_auc_micro"] for run in (a, b))
    assert f"| ours (standard protocol) | {ub:.2f} | {sht:.2f} | – | – |" in markdown
    assert f"ckpt_a` (sha256 {'a' * 16})" in markdown and f"ckpt_b` (sha256 {'b' * 16})" in markdown

    # The same weights moved elsewhere (same digest, other path) are one model.
    moved = model_run("sht_a", "shanghaitech", checkpoint=tmp_path / "moved" / "ckpt_a", digest="a" * 16)
    build_tables([read_run(a), read_run(moved)])


def test_runs_of_one_checkpoint_with_other_settings_are_refused(model_run, tmp_path):
    """One checkpoint run with another clip length, compression override, dtype or mask gating gives other
    numbers (supplement Tab. 4 and 7 ablate the first two), so such runs are not one row either."""
    ckpt, digest = tmp_path / "ckpt", "d" * 16
    base = model_run("ub", "ubnormal", checkpoint=ckpt, digest=digest)
    build_tables([read_run(base), read_run(model_run("sht", "shanghaitech", checkpoint=ckpt, digest=digest))])
    variants = {
        "clip_length: 8 vs 4": {"clip_length": 4},
        r"checkpoint_overrides: \{\} vs \{'compression': \{'ratio': 0.5\}\}": {
            "checkpoint_overrides": {"compression": {"ratio": 0.5}}
        },
        "dtype: torch.float32 vs torch.bfloat16": {"dtype": "torch.bfloat16"},
        "gate_masks: True vs False": {"gate_masks": False},
        # The same checkpoint on other base weights (base_model_check=warn): another model.
        rf"base_models: \{{'mllm': '{'0' * 16}'\}} vs \{{'mllm': '{'1' * 16}'\}}": {
            "base_models": {"mllm": "1" * 16}
        },
    }
    for number, (difference, settings) in enumerate(variants.items()):
        other = model_run(f"sht_{number}", "shanghaitech", checkpoint=ckpt, digest=digest, **settings)
        with pytest.raises(ValueError, match=rf"(?s)ub and .*sht_{number} differ in {difference}"):
            build_tables([read_run(base), read_run(other)])
        markdown, _ = build_tables([read_run(base), read_run(other)], allow_mixed=True)
        assert (
            f"checkpoint `{ckpt.resolve()}` (sha256 {digest}), base_models {{'mllm': '{'0' * 16}'}}, "
            "clip_length 8, dtype torch.float32, " in markdown
        )

    # A run written before the settings were recorded agrees with any (its source has none of them).
    old = tmp_path / "sht_0" / "metrics.json"
    metrics = json.loads(old.read_text())
    del metrics["source"]["clip_length"], metrics["source"]["settings"]
    old.write_text(json.dumps(metrics))
    build_tables([read_run(base), read_run(tmp_path / "sht_0")])


def test_base_weight_paths_in_the_overrides_do_not_part_runs_that_fingerprint_the_weights(
    model_run, tmp_path
):
    """A checkpoint trained on another machine is pointed at the local base weights with
    checkpoint_overrides.<part>.pretrained; where both runs record the weights' fingerprints (base_models),
    the path alone does not make another model. Another override, or other fingerprints, still does."""
    ckpt, digest = tmp_path / "ckpt", "e" * 16
    here = model_run("ub", "ubnormal", checkpoint=ckpt, digest=digest)
    there = model_run(
        "sht", "shanghaitech", checkpoint=ckpt, digest=digest,
        checkpoint_overrides={"mllm": {"pretrained": "/models/Qwen2-VL-7B-Instruct"}},
    )  # fmt: skip
    build_tables([read_run(here), read_run(there)])
    other = model_run(
        "sht_other", "shanghaitech", checkpoint=ckpt, digest=digest,
        checkpoint_overrides={"mllm": {"pretrained": "/models/x"}, "compression": {"ratio": 0.5}},
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"differ in checkpoint_overrides: \{\} vs \{'compression'"):
        build_tables([read_run(here), read_run(other)])


def test_a_scores_only_run_beside_a_model_run_is_refused(model_run, scores_run, tmp_path):
    """Another method's saved predictions are not our model's numbers."""
    model = model_run("ub_model", "ubnormal", checkpoint=tmp_path / "ckpt", digest="c" * 16)
    saved = scores_run("sht_saved", "shanghaitech")
    with pytest.raises(ValueError, match=r"ub_model and .*sht_saved differ in mode: model vs scores-only"):
        build_tables([read_run(model), read_run(saved)])
    markdown, _ = build_tables([read_run(model), read_run(saved)], allow_mixed=True)
    assert f"scores-only, predictions `{(tmp_path / 'preds_sht_saved').resolve()}`" in markdown


def test_runs_prompted_with_other_categories_are_refused(scores_run, tmp_path):
    """Each benchmark's own categories are one protocol; categories given by the user are another."""
    ub, sht = scores_run("ub", "ubnormal"), scores_run("sht", "shanghaitech")
    markdown, _ = build_tables([read_run(ub), read_run(sht)])  # other default lists, other folders
    assert "the benchmark's categories" in markdown
    assert str((tmp_path / "preds_ub").resolve()) in markdown  # the reader sees each run's predictions
    assert str((tmp_path / "preds_sht").resolve()) in markdown

    sht_fire = scores_run("sht_fire", "shanghaitech", categories=["fire"])
    with pytest.raises(
        ValueError, match=r"(?s)ub and .*sht_fire differ in categories: the benchmark's vs 'fire'"
    ):
        build_tables([read_run(ub), read_run(sht_fire)])
    ub_fire = scores_run("ub_fire", "ubnormal", categories=["fire"])
    build_tables([read_run(ub_fire), read_run(sht_fire)])  # one list given for every benchmark
    ub_smoke = scores_run("ub_smoke", "ubnormal", categories=["smoke"])
    with pytest.raises(ValueError, match=r"categories: 'smoke' vs 'fire'"):
        build_tables([read_run(ub_smoke), read_run(sht_fire)])
    build_tables([read_run(ub_smoke), read_run(sht_fire)], allow_mixed=True)


def test_runs_written_before_sources_were_recorded_are_still_read(scores_run, tmp_path, caplog):
    """A run without ``source`` in its metrics.json may be any model's: it is taken with any other run,
    and the tables and the log say its source is unknown."""
    old = tmp_path / "old"
    old.mkdir()
    # XD-Violence's whole test split (num_videos has been in every metrics.json lavida-eval wrote).
    (old / "metrics.json").write_text(json.dumps({"frame_ap": 0.5, "num_videos": 800}))
    (old / "report.md").write_text("# xd_violence — standard protocol\n")
    ub = scores_run("ub", "ubnormal")
    with caplog.at_level(logging.WARNING, logger="lavida.eval.tables"):
        markdown, _ = build_tables([read_run(old), read_run(ub)])
    assert "| ours (standard protocol) |" in markdown and "| 50.00 |" in markdown
    assert f"`{old}`: source not recorded" in markdown
    assert str(old) in caplog.text and "source" in caplog.text

    # An unknown source does not hide a known mismatch between the others.
    sht_fire = scores_run("sht_fire", "shanghaitech", categories=["fire"])
    with pytest.raises(ValueError, match="differ in categories"):
        build_tables([read_run(old), read_run(ub), read_run(sht_fire)])
