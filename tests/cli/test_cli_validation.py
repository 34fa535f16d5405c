"""The command lines refuse bad settings before anything expensive runs, and their messages name the key,
what was expected and the working syntax (lavida-eval, lavida-detect, lavida-train, lavida-demo)."""

import re
import runpy
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import compose_cli_config
from omegaconf import OmegaConf

import lavida.cli.detect as detect_cli
import lavida.cli.eval as evaluate

ROOT = Path(__file__).resolve().parents[2]


def compose(config: str, *overrides: str):
    return compose_cli_config(config, *overrides)


def detect_overrides(tmp_path: Path, *extra: str) -> list[str]:
    video = tmp_path / "street.mp4"
    video.write_bytes(b"never read: the settings are refused first")
    return [
        f"input={video}",
        "categories=fire",
        f"checkpoint={tmp_path / 'no_checkpoint'}",  # never loaded: the settings are refused first
        f"output_dir={tmp_path / 'out'}",
        "device=cpu",
        *extra,
    ]


def eval_overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "benchmark=ucsd_ped2",
        f"benchmark.root={tmp_path / 'no_such_root'}",
        f"predictions={tmp_path}",
        f"output_dir={tmp_path / 'out'}",
        *extra,
    ]


# -- 1. misspelt top-level keys ------------------------------------------------------------------------


def test_detect_refuses_a_misspelt_key(tmp_path):
    from lavida.cli.detect import run

    cfg = compose("detect", *detect_overrides(tmp_path, "+treshold=0.9"))
    with pytest.raises(ValueError, match=r"'treshold'.*did you mean 'threshold'") as error:
        run(cfg)
    assert "aggregation" in str(error.value)  # the valid keys are listed
    assert not (tmp_path / "out").exists()


def test_eval_refuses_a_misspelt_key(tmp_path):
    from lavida.cli.eval import run

    cfg = compose("eval", *eval_overrides(tmp_path, "+pixel_sizes=[240,360]"))
    with pytest.raises(ValueError, match=r"'pixel_sizes'.*did you mean 'pixel_size'"):
        run(cfg)


def test_train_refuses_a_misspelt_key(tmp_path, monkeypatch):
    import lavida.cli.train as cli

    def no_training(**kwargs):
        raise AssertionError("the trainer was built despite the misspelt key")

    monkeypatch.setattr(cli, "Trainer", no_training)
    cfg = compose("train", "model=tiny", "data=tiny", "train=tiny", "launcher=cpu", "+run_nme=smoke")
    with pytest.raises(ValueError, match=r"'run_nme'.*did you mean 'run_name'") as error:
        cli.run(cfg)
    assert "experiment" in str(error.value) and "launcher" in str(error.value)


def test_known_keys_and_experiments_are_accepted(tmp_path, monkeypatch):
    """Every key of the primary config, the config groups and an experiment's keys pass."""
    import lavida.cli.train as cli

    built = {}

    class FakeTrainer:
        def __init__(self, **kwargs):
            built.update(kwargs)

        def fit(self):
            return type("Summary", (), {"steps": 0, "seconds": 0.0, "final_checkpoint": "final"})()

    monkeypatch.setattr(cli, "Trainer", FakeTrainer)
    cfg = compose("train", "experiment=paper_main", "model=tiny", "data=tiny", "train=tiny", "launcher=cpu")
    cli.run(cfg)
    assert built["output_dir"].endswith("paper_main")


# -- 2. benchmark options --------------------------------------------------------------------------------


def _documented_eval_overrides(text: str) -> list[list[str]]:
    """The `lavida-eval ...` overrides in a document's code spans that set a loader option."""
    commands = re.findall(r"lavida-eval ([^`\n]*benchmark\.options[^`\n]*)", text)
    return [command.split() for command in commands]


@pytest.mark.parametrize("document", ["README.md", "docs/evaluation.md"])
def test_documented_benchmark_options_compose(document):
    commands = _documented_eval_overrides((ROOT / document).read_text())
    assert commands, f"{document} shows no lavida-eval command setting benchmark.options"
    for overrides in commands:
        overrides = [o.replace("DIR", "/tmp/x").replace("...", "/tmp/x") for o in overrides if "=" in o]
        cfg = compose("eval", *overrides)
        options = OmegaConf.to_container(cfg.benchmark.options)
        # Every documented loader option arrives under benchmark.options with the value written.
        documented = {
            key.split("benchmark.options.", 1)[1]: yaml.safe_load(value)
            for key, value in (o.split("=", 1) for o in overrides)
            if "benchmark.options." in key
        }
        assert documented and {key: options.get(key) for key in documented} == documented, overrides


def test_documents_do_not_suggest_bare_loader_options():
    for document in ("README.md", "docs/evaluation.md"):
        text = (ROOT / document).read_text()
        assert "+benchmark.options.skip_missing=true" in text, document
        assert "skip_missing=True` (" not in text, document


# -- 3. lavida-detect window settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "named", "expected"),
    [
        ("aggregation=median", "aggregation", "mean"),
        ("interval=0", "interval", "≥ 1"),
        ("stride=0", "stride", "≥ 1"),
        ("clip_length=0", "clip_length", "≥ 1"),
        ("clip_length=2.5", "clip_length", "≥ 1"),
        ("interval=abc", "interval", "whole number"),
    ],
)
def test_detect_refuses_bad_window_settings_before_loading(tmp_path, override, named, expected):
    from lavida.cli.detect import run

    cfg = compose("detect", *detect_overrides(tmp_path, override))
    with pytest.raises(ValueError, match=rf"^{named} .*{re.escape(expected)}"):
        run(cfg)
    assert not (tmp_path / "out").exists()


def test_detect_refuses_a_stride_longer_than_the_clip(tmp_path):
    from lavida.cli.detect import run

    cfg = compose("detect", *detect_overrides(tmp_path, "clip_length=4", "stride=5"))
    with pytest.raises(ValueError, match=r"stride .*clip_length"):
        run(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["save=segments"], "save must be 'all' or 'anomalous'"),
        (["overlay=false", "save=anomalous"], "save=anomalous writes the overlay video"),
        (["threshold=1.5"], "threshold must be a number in [0, 1]"),
        (["fps=0"], "fps must be a positive number"),
        (["max_frames=0"], "max_frames must be a whole number of frames ≥ 1"),
        (["min_interval=0"], "min_interval must be a whole number of frames ≥ 1"),
        (["merge_gap=-1"], "merge_gap must be a whole number of frames ≥ 0"),
        (["stride=9"], "stride must be at most clip_length (8)"),  # clip_length=null: the checkpoint's 8
    ],
)
def test_detect_refuses_bad_output_and_scoring_settings_before_making_a_folder(
    detect_checkpoint, tmp_path, overrides, message
):
    """The detector would refuse each of these too, but only once the output folder exists and the model is
    loading (minutes for the paper's model); lavida-detect names them first, on a valid checkpoint."""
    cfg = compose_cli_config(
        "detect", *detect_overrides(tmp_path, *overrides), checkpoint=str(detect_checkpoint)
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        detect_cli.run(cfg)
    assert not (tmp_path / "out").exists()


def test_detect_checks_the_checkpoint_before_reading_any_input(tmp_path, monkeypatch):
    """As lavida-eval does: a wrong checkpoint= is named before the inputs are listed or a folder is made
    (it used to surface only when the model failed to load, after the output folder existed)."""
    import lavida.cli.detect as cli
    from lavida.models.weights import WeightsNotFoundError

    monkeypatch.setattr(cli, "expand_inputs", lambda *a: pytest.fail("the inputs were read"))
    cfg = compose("detect", *detect_overrides(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"no_checkpoint"):
        cli.run(cfg)
    assert not (tmp_path / "out").exists()


def test_detect_refuses_an_output_dir_that_is_a_file_before_loading_the_model(
    detect_checkpoint, tmp_path, monkeypatch
):
    """The output folder is made before the model loads (minutes for the paper's model): an output_dir that
    names a file fails at once, not once the model is loaded."""
    monkeypatch.setattr(
        detect_cli.Detector, "from_checkpoint", lambda *a, **k: pytest.fail("the model was loaded")
    )
    (tmp_path / "out").write_text("a file, not a folder")
    cfg = compose_cli_config("detect", *detect_overrides(tmp_path), checkpoint=str(detect_checkpoint))
    with pytest.raises(FileExistsError):
        detect_cli.run(cfg)


def test_detect_does_not_hide_index_errors_as_skipped_videos(tmp_path, monkeypatch):
    """A bug (here an IndexError inside detection) stops the run instead of skipping every video."""
    import torch

    import lavida.cli.detect as cli

    class BuggyDetector:
        clip_length, dtype, device = 8, torch.float32, torch.device("cpu")

        @classmethod
        def from_checkpoint(cls, *args, **kwargs):
            return cls()

        def detect(self, *args, **kwargs):
            raise IndexError("index 8 is out of bounds for axis 0 with size 8")

    monkeypatch.setattr(cli, "Detector", BuggyDetector)
    monkeypatch.setattr(cli, "check_checkpoint", lambda path: None)
    monkeypatch.setattr(cli, "checkpoint_digest", lambda path: "0" * 16)
    monkeypatch.setattr(cli, "loaded_base_fingerprints", lambda path, **kwargs: {})
    cfg = compose("detect", *detect_overrides(tmp_path))
    with pytest.raises(IndexError, match="out of bounds"):
        cli.run(cfg)


def test_python_m_composes_the_detect_config(monkeypatch, capsys, tmp_path):
    """``python -m lavida.cli.detect`` is the Hydra app over lavida/configs/detect.yaml (``--cfg job`` prints
    the composed job config without running it), with Hydra's current defaults (version_base=None)."""
    argv = ["lavida-detect", "--cfg", "job", "input=a.mp4", "categories=fire", "checkpoint=c", "stride=2"]
    monkeypatch.setattr(sys, "argv", [*argv, f"output_dir={tmp_path}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Hydra warns when version_base is left out
        warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
        runpy.run_module("lavida.cli.detect", run_name="__main__")
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = {**yaml.safe_load((ROOT / "lavida" / "configs" / "detect.yaml").read_text()), "stride": 2}
    del expected["hydra"]
    assert printed == {
        **expected,
        "input": "a.mp4",
        "categories": "fire",
        "checkpoint": "c",
        "output_dir": str(tmp_path),
    }


def test_python_m_composes_the_info_config(monkeypatch, capsys):
    """``python -m lavida.cli.info`` is the Hydra app over lavida/configs/info.yaml, as lavida-info is."""
    monkeypatch.setattr(sys, "argv", ["lavida-info", "--cfg", "job", "model=tiny"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Hydra warns when version_base is left out
        warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
        runpy.run_module("lavida.cli.info", run_name="__main__")
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == OmegaConf.to_container(compose_cli_config("info", "model=tiny"))


@pytest.mark.parametrize(
    ("name", "usage"),
    [("tables", "usage: lavida-tables [-h] [--out OUT]"), ("prepare", "usage: lavida-prepare [-h] dataset")],
)
def test_python_m_runs_the_argparse_commands(monkeypatch, capsys, name, usage):
    """``python -m lavida.cli.tables`` / ``.prepare`` run the same ``main`` as the console scripts."""
    monkeypatch.setattr(sys, "argv", [f"lavida-{name}", "--help"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
        with pytest.raises(SystemExit) as stop:
            runpy.run_module(f"lavida.cli.{name}", run_name="__main__")
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_detect_stops_when_the_model_loads_otherwise_than_run_json_records(tmp_path, monkeypatch):
    """Each video's run.json records the clip length, dtype and device known before the load (a rerun
    compares them without loading): a model that loaded otherwise would leave outputs under a wrong record,
    so the run stops before detecting with it."""

    class OtherDetector:
        clip_length, dtype, device = 4, torch.float32, torch.device("cpu")

        @classmethod
        def from_checkpoint(cls, *args, **kwargs):
            return cls()

        def detect(self, *args, **kwargs):
            pytest.fail("detected with a model other than the one recorded")

    monkeypatch.setattr(detect_cli, "Detector", OtherDetector)
    monkeypatch.setattr(detect_cli, "check_checkpoint", lambda path: None)
    monkeypatch.setattr(detect_cli, "checkpoint_digest", lambda path: "0" * 16)
    monkeypatch.setattr(detect_cli, "loaded_base_fingerprints", lambda path, **kwargs: {})
    cfg = compose("detect", *detect_overrides(tmp_path, "dtype=float32"))
    expected = "loaded as {'clip_length': 4, 'dtype': 'torch.float32', 'device': 'cpu'}, not as recorded: "
    with pytest.raises(RuntimeError, match=re.escape(expected + "{'clip_length': 8,")):
        detect_cli.run(cfg)
    assert list((tmp_path / "out").rglob("run.json")) == []


# -- 4. eval list settings and train types ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pixel_size=240", r"pixel_size must be \[H, W\].*pixel_size=\[240,360\]"),
        ("pixel_size=[10]", r"pixel_size must be \[H, W\]"),
        ("pixel_size=[0,10]", r"pixel_size must be \[H, W\]"),
        ("region_thresholds=0.5", r"region_thresholds must be a list.*region_thresholds=\[0.5\]"),
        ("region_thresholds=[1.5]", r"region_thresholds must be a list"),
    ],
)
def test_eval_refuses_malformed_list_settings(tmp_path, override, message):
    from lavida.cli.eval import run

    cfg = compose("eval", *eval_overrides(tmp_path, override))
    with pytest.raises(ValueError, match=message):
        run(cfg)


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("pixel_size=240", "got 240."),
        ("pixel_size=[10]", "got [10]."),
        ("region_thresholds=[1.5]", "got [1.5]."),
        ("clip_length=2.5", "got 2.5."),
    ],
)
def test_eval_names_a_refused_setting_as_typed(tmp_path, override, shown):
    cfg = compose("eval", *eval_overrides(tmp_path, override))
    with pytest.raises(ValueError) as error:
        evaluate.run(cfg)
    assert shown in str(error.value)


def test_eval_accepts_well_formed_list_settings():
    from lavida.cli.eval import eval_settings

    cfg = compose("eval", "pixel_size=[240,360]", "region_thresholds=[0.25,0.5]")
    settings = eval_settings(cfg)
    assert settings.pixel_size == (240, 360) and settings.region_thresholds == (0.25, 0.5)


@pytest.mark.parametrize("given", ["null", "[]"])
def test_eval_takes_null_or_an_empty_list_as_no_region_thresholds(given):
    settings = evaluate.eval_settings(compose("eval", f"region_thresholds={given}"))
    assert settings.region_thresholds is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optim": {"lr": "abc"}}, r"train\.optim\.lr must be a number, got 'abc'"),
        ({"epochs": "ten"}, r"train\.epochs must be a whole number, got 'ten'"),
        ({"epochs": 2.5}, r"train\.epochs must be a whole number"),
        ({"max_steps": "x"}, r"train\.max_steps must be a whole number or null"),
        ({"trainable_fp32": "yes"}, r"train\.trainable_fp32 must be true or false"),
    ],
)
def test_train_config_names_a_mistyped_setting(values, message):
    from lavida.train.config import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_train_config_still_accepts_integers_for_floats():
    from lavida.train.config import TrainConfig

    assert TrainConfig.from_dict({"optim": {"lr": 1, "grad_clip": 0}}).optim.lr == 1


# -- 5. a missing benchmark root ---------------------------------------------------------------------------


def test_missing_benchmark_root_points_to_the_evaluation_docs(tmp_path):
    from lavida.eval.benchmarks import get_benchmark

    with pytest.raises(FileNotFoundError) as error:
        get_benchmark("ucsd_ped2", tmp_path / "nowhere")
    message = str(error.value)
    assert "docs/evaluation.md" in message and "data/README.md" not in message
    assert "LAVIDA_DATA_ROOT" in message and "benchmark.root=DIR" in message


def test_the_documented_root_override_composes():
    cfg = compose("eval", "benchmark=ucsd_ped2", "benchmark.root=/tmp/ped2")
    assert cfg.benchmark.root == "/tmp/ped2"


# -- 6. lavida-demo's hint on a changed rerun ----------------------------------------------------------------


def test_resume_mismatch_lists_the_changed_keys(tmp_path):
    from lavida.train.resume_check import ResumeMismatchError, check_resume_settings

    (tmp_path / "step_2").mkdir()
    record = {"train": {"batches_per_epoch": 3, "seed": 0}}
    check_resume_settings(tmp_path / "step_2", record, mode="strict")  # no record yet: nothing to compare
    from lavida.atomic import write_json
    from lavida.train.resume_check import RUN_CONFIG_FILE

    write_json(tmp_path / "step_2" / RUN_CONFIG_FILE, record)
    with pytest.raises(ResumeMismatchError) as error:
        check_resume_settings(
            tmp_path / "step_2", {"train": {"batches_per_epoch": 5, "seed": 0}}, mode="strict"
        )
    assert error.value.changed == ("train.batches_per_epoch",)


def test_demo_hint_names_its_own_setting_and_not_train_resume_check(tmp_path):
    from lavida.demo import demo_resume_error
    from lavida.train.resume_check import ResumeMismatchError

    error = ResumeMismatchError(
        "... or set train.resume_check=warn ...",
        changed=("train.batches_per_epoch", "train.optim.warmup_steps", "train.optim.lr"),
    )
    message = str(demo_resume_error(error, tmp_path))
    assert "resume_check" not in message
    assert "steps, lr" in message
    assert "fresh output_dir" in message and str(tmp_path / "train") in message


# -- 7. smoke commands in the experiment configs ---------------------------------------------------------------


@pytest.mark.parametrize("experiment", ["paper_main", "official"])
def test_smoke_commands_do_not_write_into_the_real_run(experiment):
    text = (ROOT / "lavida" / "configs" / "experiment" / f"{experiment}.yaml").read_text()
    smoke = [line for line in text.splitlines() if "lavida-train" in line and "model=tiny" in line]
    assert smoke, experiment
    for line in smoke:
        overrides = line.split("lavida-train", 1)[1].split()
        cfg = compose("train", *overrides)
        assert cfg.run_name != experiment, line
        assert not cfg.output_dir.endswith(f"/{experiment}"), line
