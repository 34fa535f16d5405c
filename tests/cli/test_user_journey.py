"""Following the README's "paper run, step by step" on tiny stand-ins, from a folder outside the repository,
through the console scripts' own entry points: each test reproduces one defect that journey turned up."""

import sys
from pathlib import Path

import pytest
from conftest import moving_square


def cli(main, *args: str) -> None:
    """Run a Hydra console script (``lavida-detect``, ...) in this process, as the shell would."""
    from unittest import mock

    with mock.patch.object(sys, "argv", [main.__module__, *args]):
        main()


# -- step 5: a rerun that names the same video by another path redid it --------------------------------


def test_detect_rerun_naming_the_video_by_its_absolute_path_reuses_it(
    detect_checkpoint, tmp_path, monkeypatch
):
    """README step 5: "a rerun into the same output_dir reuses the videos finished with the same checkpoint
    ..., categories, settings and input". The input's fingerprint held the path as typed, so the same file
    given as ``street.mp4`` and then as ``$PWD/street.mp4`` (or from another folder) was computed again."""
    from lavida.cli.detect import main
    from lavida.data.video import write_video
    from lavida.detect.detector import Detector

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_video(work / "street.mp4", moving_square(6), fps=6)
    common = ["categories=fire", f"checkpoint={detect_checkpoint}", "overlay=false", "device=cpu"]
    cli(main, "input=street.mp4", "output_dir=outputs/detect", *common)
    assert (work / "outputs" / "detect" / "street" / "summary.json").is_file()

    computed = []
    original = Detector.detect
    monkeypatch.setattr(
        Detector,
        "detect",
        lambda self, source, *a, **k: computed.append(source) or original(self, source, *a, **k),
    )
    cli(main, f"input={work / 'street.mp4'}", f"output_dir={work / 'outputs' / 'detect'}", *common)
    # ... and from another folder, with the paths relative to it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cli(main, "input=../work/street.mp4", "output_dir=../work/outputs/detect", *common)
    assert computed == []

    # The file itself changed: redone.
    monkeypatch.chdir(work)
    write_video(work / "street.mp4", moving_square(8), fps=6)
    cli(main, "input=street.mp4", "output_dir=outputs/detect", *common)
    assert [Path(source).name for source in computed] == ["street.mp4"]


# -- step 4/5: checkpoint= a typo, or one of lavida-train's resume states ------------------------------


@pytest.fixture(scope="module")
def trained_run(detect_checkpoint, tmp_path_factory):
    """A lavida-train run folder as it lies on disk: final/ and a resume state checkpoints/step_N/ (whose
    model is in model/)."""
    import shutil

    run = tmp_path_factory.mktemp("train") / "paper_main"
    shutil.copytree(detect_checkpoint, run / "final")
    step = run / "checkpoints" / "step_0000004"
    shutil.copytree(detect_checkpoint, step / "model")
    (step / "progress.json").write_text('{"step": 4}')
    (step / "optimizer.pt").write_bytes(b"")
    return run


def test_eval_refuses_a_misspelt_checkpoint_before_loading_the_benchmark(
    trained_run, tmp_path, monkeypatch, capsys
):
    """``lavida-eval benchmark=... checkpoint=outputs/train/paper_main/fnal`` loaded the benchmark first
    (probing every video of UCF-Crime or XD-Violence takes minutes), logged "Clips of 8 frames" as if it
    had read the checkpoint's clip length, and only then failed."""
    import lavida.cli.eval as evaluate

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evaluate, "get_benchmark", lambda *a, **k: pytest.fail("the benchmark was loaded"))
    with pytest.raises(SystemExit):
        cli(evaluate.main, "benchmark=xd_violence", f"checkpoint={trained_run / 'fnal'}")
    err = capsys.readouterr().err
    assert "fnal' does not exist" in err and "outputs/train/<run_name>/final" in err


def test_eval_and_detect_name_the_model_folder_of_a_training_checkpoint(
    trained_run, tmp_path, monkeypatch, capsys
):
    """Evaluating a checkpoint saved during training (README step 3: checkpoints/step_N/) was refused as
    "not a LAVIDA checkpoint: missing lavida_config.json, heads.safetensors", without saying that the model
    of that step is its model/ folder."""
    import lavida.cli.detect as detect
    import lavida.cli.eval as evaluate
    from lavida.data.video import write_video

    monkeypatch.chdir(tmp_path)
    step = trained_run / "checkpoints" / "step_0000004"
    monkeypatch.setattr(evaluate, "get_benchmark", lambda *a, **k: pytest.fail("the benchmark was loaded"))
    with pytest.raises(SystemExit):
        cli(evaluate.main, "benchmark=shanghaitech", f"checkpoint={step}")
    assert f"checkpoint={step / 'model'}" in capsys.readouterr().err

    write_video(tmp_path / "street.mp4", moving_square(4), fps=4)
    with pytest.raises(SystemExit):
        cli(detect.main, "input=street.mp4", "categories=fire", f"checkpoint={step}", "device=cpu")
    assert f"checkpoint={step / 'model'}" in capsys.readouterr().err
    assert not (tmp_path / "outputs" / "detect" / "street").exists()

    # The model/ folder it names is evaluated.
    cli(detect.main, "input=street.mp4", "categories=fire", f"checkpoint={step / 'model'}", "device=cpu")
    assert (tmp_path / "outputs" / "detect" / "street" / "summary.json").is_file()
