"""lavida-train, lavida-eval and lavida-detect end a run refused by the user's input with one block on stderr,
``lavida-<tool>: <message>``, and status 2 (lavida/cli/errors.py); the traceback goes to the job's log file,
HYDRA_FULL_ERROR=1 still shows it, and an error that is no refusal (a bug) keeps Hydra's traceback.

Hydra printed "Error executing job with overrides: [...]" and a traceback before every such message."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cli_config
from omegaconf import OmegaConf

from lavida.cli.errors import is_user_error, raised_by_lavida, user_errors, user_message

BIN = Path(sys.executable).parent


def console(tool: str, *overrides: str, cwd: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    """Run the installed console script ``tool`` (``lavida-detect``) as a user's shell would."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [str(BIN / tool), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


# -- the console scripts ---------------------------------------------------------------------------------


def test_detect_refusal_is_one_block_with_status_2_and_the_traceback_in_the_log(tmp_path):
    """``lavida-detect input=nosuch.mp4 ...`` printed Hydra's banner and a traceback ending in
    ``VideoReadError: nosuch.mp4: no such file, ...``, and exited with 1."""
    for name in ("lavida_config.json", "heads.safetensors"):  # a checkpoint as check_checkpoint sees it
        (tmp_path / "ckpt").mkdir(exist_ok=True)
        (tmp_path / "ckpt" / name).write_text("{}")
    overrides = ["input=nosuch.mp4", "categories=fire", "checkpoint=ckpt", "output_dir=out"]
    done = console("lavida-detect", *overrides, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "lavida-detect: nosuch.mp4: no such file, folder, URL or device.\n"
    log = (tmp_path / "out" / "detect.log").read_text()
    assert "Traceback (most recent call last)" in log and "VideoReadError: nosuch.mp4: no such file" in log

    # HYDRA_FULL_ERROR=1: Hydra's full report, as before.
    done = console("lavida-detect", *overrides, cwd=tmp_path, full_error=True)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "VideoReadError: nosuch.mp4: no such file" in done.stderr


def test_detect_names_every_missing_setting_with_a_command_to_copy(tmp_path):
    """Without categories= the user got ``omegaconf.errors.MissingMandatoryValue: Missing mandatory value:
    categories`` under a traceback, and no word of the form categories takes."""
    done = console("lavida-detect", "input=street.mp4", "output_dir=out", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
    assert done.stderr.startswith(
        "lavida-detect: missing categories= and checkpoint=, which have no default."
    )
    assert """  lavida-detect input=street.mp4 'categories="fire, fighting"' checkpoint=""" in done.stderr


def test_eval_names_the_final_folder_of_a_training_run(tmp_path):
    """``checkpoint=outputs/train/<run>`` (the run, not its final/ model) was refused as "not a LAVIDA
    checkpoint", under a traceback, without naming final/."""
    run = tmp_path / "outputs" / "train" / "paper_main"
    (run / "final").mkdir(parents=True)
    (run / "final" / "lavida_config.json").write_text("{}")
    done = console("lavida-eval", "checkpoint=outputs/train/paper_main", "output_dir=out", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "lavida-eval: checkpoint=outputs/train/paper_main is the run folder of lavida-train; its trained "
        "model is the final/ folder: checkpoint=outputs/train/paper_main/final (every saved step's is "
        "checkpoints/step_N/model).\n"
    )


def test_an_error_raised_inside_a_library_keeps_its_traceback(tmp_path):
    """A ValueError from numpy (or torch) inside the job is a bug or an unexpected state, not a refusal of
    the user's settings: Hydra still reports it with its traceback, and the log file holds it too."""
    script = (
        "import sys, numpy\n"
        "import lavida.cli.detect as detect\n"
        "detect.check_checkpoint = lambda checkpoint: None\n"
        "detect.expand_inputs = lambda source: numpy.linspace(0, 1, -1)\n"
        "sys.argv = ['lavida-detect', 'input=a.mp4', 'categories=fire', 'checkpoint=c', 'output_dir=out']\n"
        "detect.main()\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError: Number of samples, -1, must be non-negative." in done.stderr
    assert "lavida-detect:" not in done.stderr
    assert "Number of samples, -1" in (tmp_path / "out" / "detect.log").read_text()


# -- which exceptions are user errors --------------------------------------------------------------------


@pytest.fixture
def raise_in_lavida(tmp_path, monkeypatch):
    """``raise_in_lavida(source)``: the exception of ``source`` (defining ``f()``), run as a module file that
    lies in the lavida package as errors.py sees it (its PACKAGE pointed at a scratch folder)."""
    import importlib.util

    import lavida.cli.errors as errors

    monkeypatch.setattr(errors, "PACKAGE", tmp_path)
    count = iter(range(1000))

    def run(source: str) -> BaseException:
        path = tmp_path / f"fake_{next(count)}.py"
        path.write_text("import numpy as np\n\n" + source + "\n")
        spec = importlib.util.spec_from_file_location(f"lavida_fake_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            module.f()
        except Exception as error:
            return error
        raise AssertionError("f() raised nothing")

    return run


@pytest.mark.parametrize(
    ("source", "user"),
    [
        ("def f():\n    raise ValueError('threshold must be in [0, 1]')", True),
        (
            "def f():\n    try:\n        int('x')\n    except ValueError as e:\n        raise TypeError('no') from e",
            True,
        ),
        ("def f():\n    raise FileNotFoundError('root does not exist')", True),
        ("def f():\n    raise KeyError('unknown source')", True),
        # The interpreter failing inside our code: bugs.
        ("def f():\n    a, b = (1, 2, 3)", False),
        ("def f():\n    return int('x')", False),
        ("def f():\n    return len([], key=1)", False),
        ("def f():\n    try:\n        int('x')\n    except ValueError:\n        raise", False),
        # Raised inside numpy, called from our code.
        ("def f():\n    return np.linspace(0, 1, -1)", False),
        # Our own raise, but of a type that our checks do not use for the user.
        ("def f():\n    raise RuntimeError('loaded in float16, not in float32 as recorded')", False),
        ("def f():\n    raise IndexError('frame 9 of 8')", False),
    ],
)
def test_user_errors_are_our_checks_not_the_interpreter_or_a_library(source, user, raise_in_lavida):
    error = raise_in_lavida(source)
    assert is_user_error(error) is user


def test_the_projects_error_classes_and_missing_values_are_user_errors_wherever_raised():
    from omegaconf.errors import MissingMandatoryValue

    from lavida.data.video import VideoReadError
    from lavida.eval.benchmark import GroundTruthError
    from lavida.models.weights import WeightsNotFoundError
    from lavida.train.resume_check import ResumeMismatchError

    for error in (
        VideoReadError("x"),
        GroundTruthError("x"),
        WeightsNotFoundError("x"),
        ResumeMismatchError("x"),
        MissingMandatoryValue("x"),
    ):
        assert is_user_error(error)
    try:
        int("x")  # a test file: not the lavida package
    except ValueError as error:
        assert not raised_by_lavida(error.__traceback__)
        assert not is_user_error(error)


def test_a_raise_outside_the_lavida_package_is_no_user_error():
    """The package is lavida/ itself, not the repository above it: a check raised by a test, a script or an
    installed library beside lavida (site-packages) keeps Hydra's traceback."""
    try:
        raise ValueError("threshold must be in [0, 1]")  # a raise statement, but in tests/, not lavida/
    except ValueError as error:
        assert raised_by_lavida(error.__traceback__) is False
        assert is_user_error(error) is False


def test_an_error_without_a_traceback_was_not_raised_by_lavida():
    assert raised_by_lavida(None) is False  # nothing raised it: no raise statement of ours


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (KeyError("Unknown training source x"), "Unknown training source x"),  # a message, not in quotes
        (KeyError(3), "3"),  # a key, not a message: str(KeyError(3)) is '3'
        (KeyError("a", "b"), "('a', 'b')"),  # two arguments: str() of the args tuple
        (ValueError(Path("clip.mp4")), "clip.mp4"),  # str(ValueError(x)) is str(x)
    ],
)
def test_the_message_is_the_text_of_the_error(error, message):
    """Only a KeyError with one text argument is unwrapped; any other error is shown as str() writes it."""
    assert user_message(error, OmegaConf.create({})) == message


def test_one_missing_nested_setting_is_named_once_by_its_full_key():
    """omegaconf's error holds the key (``root``) and the full key (``data.root``): the full one is named."""
    cfg = OmegaConf.create({"run_name": "a", "data": {"root": "???"}})
    try:
        cfg.data.root  # noqa: B018 (raises)
    except Exception as error:
        message = user_message(error, cfg)
    assert message == (
        "missing data.root=, which has no default. Give it on the command line: data.root=<value>."
    )


def test_three_missing_settings_are_listed_in_the_configs_order_with_the_example():
    cfg = OmegaConf.create({"input": "???", "threshold": 0.5, "categories": "???", "checkpoint": "???"})
    try:
        cfg.checkpoint  # noqa: B018 (raises)
    except Exception as error:
        message = user_message(error, cfg, example="lavida-detect input=a.mp4 categories=fire checkpoint=c")
    # input, categories, checkpoint: the config's order, not the order read or the alphabet.
    assert message == (
        "missing input=, categories= and checkpoint=, which have no default. Give them on the command "
        "line, as in\n  lavida-detect input=a.mp4 categories=fire checkpoint=c"
    )


# -- the handler in-process ------------------------------------------------------------------------------


@pytest.fixture
def log_file(tmp_path):
    """A file handler on the root logger, as Hydra's job logging installs one."""
    path = tmp_path / "job.log"
    handler = logging.FileHandler(path)
    logging.getLogger().addHandler(handler)
    yield path
    logging.getLogger().removeHandler(handler)
    handler.close()


def test_handler_prints_the_message_as_written_and_exits_2(log_file, capsys, monkeypatch, raise_in_lavida):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = OmegaConf.create({"a": 1})
    with pytest.raises(SystemExit) as exit_:
        with user_errors("lavida-eval", cfg):
            raise raise_in_lavida("def f():\n    raise ValueError('lavida-eval: first line\\nsecond line')")
    assert exit_.value.code == 2
    # Multi-line kept; a message that names the command already is not prefixed twice.
    assert capsys.readouterr().err == "lavida-eval: first line\nsecond line\n"
    assert (
        "Traceback" in log_file.read_text() and "ValueError: lavida-eval: first line" in log_file.read_text()
    )

    with pytest.raises(SystemExit):
        with user_errors("lavida-train", cfg):
            raise raise_in_lavida("def f():\n    raise KeyError('Unknown training source x')")
    assert capsys.readouterr().err == "lavida-train: Unknown training source x\n"  # not in quotes


def test_handler_lets_full_errors_and_bugs_through_to_hydra(log_file, capsys, monkeypatch, raise_in_lavida):
    cfg = OmegaConf.create({"a": 1})
    bug = raise_in_lavida("def f():\n    a, b = (1, 2, 3)")
    with pytest.raises(ValueError) as raised:
        with user_errors("lavida-eval", cfg):
            raise bug
    assert raised.value is bug and capsys.readouterr().err == ""
    assert "too many values to unpack" in log_file.read_text()

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    refusal = raise_in_lavida("def f():\n    raise ValueError('threshold must be in [0, 1]')")
    with pytest.raises(ValueError) as raised:
        with user_errors("lavida-eval", cfg):
            raise refusal
    assert raised.value is refusal and capsys.readouterr().err == ""


def test_missing_settings_without_an_example_name_the_override():
    from lavida.cli.errors import user_message

    cfg = OmegaConf.create({"run_name": "???", "data": {"root": "???"}})
    try:
        cfg.run_name  # noqa: B018 (raises)
    except Exception as error:
        message = user_message(error, cfg)
    assert message == (
        "missing run_name= and data.root=, which have no default. Give them on the command line: "
        "run_name=<value> data.root=<value>."
    )


# -- checks added with the handler -----------------------------------------------------------------------


def eval_config(**values):
    return compose_cli_config("eval", f"benchmark={values.pop('benchmark', 'ucsd_ped2')}", **values)


def test_eval_checks_the_mode_and_the_predictions_folder_before_the_benchmark_loads(tmp_path, monkeypatch):
    """``predictions=nonexist`` failed on the first video ("No predictions for video '...': expected ... in
    nonexist") without saying that the folder does not exist; with neither checkpoint= nor predictions=,
    the benchmark was loaded (or its missing root reported) first."""
    import lavida.cli.eval as evaluate

    monkeypatch.setattr(evaluate, "get_benchmark", lambda *a, **k: pytest.fail("the benchmark was loaded"))
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"^predictions=.*nonexist: '.*nonexist' does not exist\. "):
        evaluate.run(eval_config(predictions=str(tmp_path / "nonexist"), output_dir=out))
    (tmp_path / "scores.npy").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"scores\.npy' is a file\. Give the folder"):
        evaluate.run(eval_config(predictions=str(tmp_path / "scores.npy"), output_dir=out))
    with pytest.raises(ValueError, match=r"^Give checkpoint=<dir> .* or predictions=<dir>"):
        evaluate.run(eval_config(output_dir=out))


def test_eval_lists_every_video_without_predictions(tmp_path):
    from eval.trees import write_ucsd_ped2_tree

    from lavida.cli.eval import run

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    predictions = tmp_path / "preds"
    predictions.mkdir()
    names = list(tree.videos)
    np.save(predictions / f"{names[0]}.npy", np.full(tree.videos[names[0]].num_frames, 0.5, np.float32))
    cfg = eval_config(
        **{"benchmark.root": str(tree.root)}, predictions=str(predictions), output_dir=str(tmp_path / "o")
    )
    missing = "".join(rf"\n  {name}: expected {name}\.npz / {name}\.npy" for name in names[1:])
    with pytest.raises(
        FileNotFoundError, match=rf"for {len(names) - 1} of the {len(names)} videos evaluated:{missing}\n"
    ):
        run(cfg)


def test_ctrl_c_ends_a_job_with_what_to_do_next(capsys):
    from lavida.cli.errors import interrupted

    with pytest.raises(SystemExit) as stop, interrupted("lavida-train", then="rerun to resume."):
        raise KeyboardInterrupt
    assert stop.value.code == 130 and stop.value.__cause__ is None
    assert capsys.readouterr().err == "lavida-train: interrupted; rerun to resume.\n"
