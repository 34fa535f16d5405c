"""Multi-process runs (``accelerate launch``): progress lines from the main process only, the other ranks'
warnings and refusals marked with their rank, and CPU processes that really share the work
(lavida/cli/ranks.py).

Every process of a launched lavida-eval or lavida-train printed every INFO line (N copies, interleaved in
one log file); on a machine without CUDA, lavida-eval's processes did not even form a group, so each
evaluated every video and printed the metrics itself."""

import importlib
import io
import json
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import accelerate
import pytest
import torch
from conftest import free_port
from eval.trees import ped2_scores_only
from omegaconf import OmegaConf
from transformers.utils import logging as transformers_logging

import lavida.cli.eval as evaluate
from lavida.cli.errors import interrupted, user_errors
from lavida.cli.ranks import log_from_main_process, process_rank, process_state
from lavida.data.video import VideoReadError

HYDRA_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job_logging default


@pytest.fixture
def job_handlers(tmp_path):
    """The root logger as Hydra sets up a job: a console and a file handler at INFO; restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    transformers_logging.get_logger()  # transformers' own handler, as after any transformers import
    transformers_handler = logging.getLogger("transformers").handlers[0]
    saved_transformers = transformers_handler.formatter, transformers_handler.stream
    bars_were_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_handler.setStream(io.StringIO())
    console = logging.StreamHandler(io.StringIO())
    log_file = logging.FileHandler(tmp_path / "job.log")
    for handler in (console, log_file):
        handler.setFormatter(logging.Formatter(HYDRA_FORMAT))
    root.handlers[:] = [console, log_file]
    root.setLevel(logging.INFO)
    yield console.stream, tmp_path / "job.log"
    log_file.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    transformers_handler.setFormatter(saved_transformers[0])
    transformers_handler.setStream(saved_transformers[1])
    if bars_were_enabled:  # as it was: disable_progress_bar() also turned huggingface_hub's off
        transformers_logging.enable_progress_bar()


def _log_three_lines() -> None:
    logging.getLogger("lavida.eval.runner").info("2 of 2 videos are not cached")
    logging.getLogger("a_library.weights").info("loading weights")  # a library's, propagated to the root
    logging.getLogger("lavida.eval.benchmarks.ucsd_ped2").warning("2 test clips; the official set has 12")


def test_other_ranks_pass_on_warnings_only_each_marked_with_its_rank(job_handlers):
    console, log_file = job_handlers
    assert log_from_main_process(rank=3) == 3
    log_from_main_process(rank=3)  # a second call does not mark the lines twice
    _log_three_lines()
    logging.getLogger().handlers[1].flush()
    for text in (console.getvalue(), log_file.read_text()):
        lines = text.splitlines()
        assert len(lines) == 1, text
        assert lines[0].startswith("[rank 3] [")
        assert lines[0].endswith(
            "[lavida.eval.benchmarks.ucsd_ped2][WARNING] - 2 test clips; the official set has 12"
        )
    # transformers logs through its own handler, not the root's: its lines are marked as well, and its
    # progress bars ("Loading weights", one per process and model) are the main process's alone.
    transformers_logging.get_logger("transformers.modeling_utils").warning("Some weights were not used")
    transformers_stream = logging.getLogger("transformers").handlers[0].stream
    (line,) = transformers_stream.getvalue().splitlines()
    assert line.startswith("[rank 3] ") and line.endswith("] Some weights were not used"), line
    assert not transformers_logging.is_progress_bar_enabled()


def test_a_handler_added_after_the_first_call_is_marked_by_the_next(job_handlers):
    """Marked handlers are skipped, not taken as a sign that the rest are marked too: a handler added in
    between (a job that logs to a second file) is marked by the next call."""
    console, _ = job_handlers
    log_from_main_process(rank=2)
    late = logging.StreamHandler(io.StringIO())
    late.setFormatter(logging.Formatter(HYDRA_FORMAT))
    logging.getLogger().addHandler(late)
    log_from_main_process(rank=2)
    _log_three_lines()
    for text in (console.getvalue(), late.stream.getvalue()):
        (line,) = text.splitlines()
        assert line.startswith("[rank 2] [") and line.count("[rank 2]") == 1, text
        assert line.endswith("[WARNING] - 2 test clips; the official set has 12"), text


def test_the_main_process_logs_as_configured(job_handlers):
    console, log_file = job_handlers
    assert log_from_main_process(rank=0) == 0
    _log_three_lines()
    logging.getLogger().handlers[1].flush()
    for text in (console.getvalue(), log_file.read_text()):
        lines = text.splitlines()
        assert [line.rsplit(" - ", 1)[1] for line in lines] == [
            "2 of 2 videos are not cached",
            "loading weights",
            "2 test clips; the official set has 12",
        ]
        assert not any("[rank" in line for line in lines)
    transformers_logging.get_logger("transformers.modeling_utils").warning("Some weights were not used")
    transformers_stream = logging.getLogger("transformers").handlers[0].stream
    (line,) = transformers_stream.getvalue().splitlines()
    assert line.endswith("] Some weights were not used") and "[rank" not in line, line
    assert transformers_logging.is_progress_bar_enabled()


def test_transformers_lines_carry_the_rank_in_a_process_that_has_not_imported_it_yet():
    """An entry point may mark the handlers before transformers is imported; the handler transformers
    sets up then must carry the rank all the same. A fresh process: this one set up transformers'
    handler long ago. (The pinned transformers sets it up on import; the explicit
    ``get_logger()`` in ``_mark_transformers`` covers a release that sets it up at the first logger.)"""
    code = (
        "import logging\n"
        "from lavida.cli.ranks import log_from_main_process\n"
        "assert not logging.getLogger('transformers').handlers, 'transformers already set up'\n"
        "log_from_main_process(rank=3)\n"
        "from transformers.utils import logging as transformers_logging\n"
        "transformers_logging.get_logger('transformers.modeling_utils').warning('Some weights were not used')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stderr.splitlines()
    assert line.startswith("[rank 3] ") and line.endswith(" Some weights were not used"), line


LAUNCHER_VARIABLES = (
    "RANK", "WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE",
)  # fmt: skip


@pytest.mark.parametrize(
    ("environment", "rank"),
    [
        ({}, 0),
        ({"RANK": "5", "WORLD_SIZE": "8"}, 5),  # torchrun, accelerate launch, deepspeed
        ({"PMI_RANK": "3", "PMI_SIZE": "4"}, 3),  # accelerate launch --mpirun_hostfile (MPICH)
        ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4"}, 2),  # Open MPI
        ({"WORLD_SIZE": "4"}, 0),  # a size without a rank: the process is taken for the main one
        # A rank left over in a single process's environment: Accelerate makes it the main process, so
        # its progress lines must not be held back.
        ({"RANK": "1"}, 0),
        ({"RANK": "1", "WORLD_SIZE": "1"}, 0),
    ],
)
def test_the_rank_is_the_launchers(monkeypatch, environment, rank):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert process_rank() == rank


@pytest.mark.parametrize(
    ("world_size", "cuda", "cpu"),
    [("2", False, True), ("2", True, False), ("1", False, False), ("1", True, False)],
)
def test_only_launched_processes_without_cuda_are_made_cpu_processes(monkeypatch, world_size, cuda, cpu):
    """Launched processes without CUDA must join one CPU (gloo) group; a single process is left to
    Accelerate's own choice of device (MPS, XPU), as are processes that have CUDA."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    made = []
    monkeypatch.setattr(accelerate, "PartialState", lambda **kwargs: made.append(kwargs) or "state")
    assert process_state() == "state"
    assert made == [{"cpu": cpu}]


def test_a_malformed_launcher_variable_is_named(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "five")
    with pytest.raises(ValueError, match="RANK='five' is not a whole number"):
        process_rank()
    monkeypatch.setenv("RANK", "²")  # a digit to str.isdigit, not to int()
    with pytest.raises(ValueError, match="RANK='²' is not a whole number"):
        process_rank()


def test_another_ranks_refusal_names_the_rank_and_its_ctrl_c_says_nothing(monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as stop, user_errors("lavida-eval", OmegaConf.create({})):
        raise VideoReadError("clip_007.avi: decoding failed after 12 frame(s).")
    assert stop.value.code == 2
    assert (
        capsys.readouterr().err == "lavida-eval [rank 1]: clip_007.avi: decoding failed after 12 frame(s).\n"
    )

    # Ctrl-C reaches every process of the run; the main one says what to do next.
    with pytest.raises(SystemExit) as stop, interrupted("lavida-train", then="rerun to resume."):
        raise KeyboardInterrupt
    assert stop.value.code == 130 and capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit), interrupted("lavida-train", then="rerun to resume."):
        raise KeyboardInterrupt
    assert capsys.readouterr().err == "lavida-train: interrupted; rerun to resume.\n"


def test_a_malformed_rank_ends_the_job_as_the_main_process(monkeypatch, capsys):
    """With ``RANK=five`` (a refusal of its own, from process_rank) the closing lines are the main
    process's: no rank tag on a refusal, and Ctrl-C still says what to do next."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "five")
    with pytest.raises(SystemExit) as stop, user_errors("lavida-eval", OmegaConf.create({})):
        raise VideoReadError("clip_007.avi: decoding failed after 12 frame(s).")
    assert stop.value.code == 2
    assert capsys.readouterr().err == "lavida-eval: clip_007.avi: decoding failed after 12 frame(s).\n"
    with pytest.raises(SystemExit) as stop, interrupted("lavida-train", then="rerun to resume."):
        raise KeyboardInterrupt
    assert stop.value.code == 130
    assert capsys.readouterr().err == "lavida-train: interrupted; rerun to resume.\n"


def test_two_cpu_processes_share_the_videos_and_log_once(tmp_path):
    """``accelerate launch --num_processes 2 -m lavida.cli.eval ...`` on a machine without CUDA (scores-only
    mode): the metrics of one process, computed once; the run's INFO lines once, in console and log."""
    tree, predictions, single = ped2_scores_only(tmp_path)
    out = tmp_path / "two"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
        "--dynamo_backend", "no",
        "-m", "lavida.cli.eval", "benchmark=ucsd_ped2", f"benchmark.root={tree.root}",
        f"predictions={predictions}", f"output_dir={out}",
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the machine without CUDA this is about, also where a GPU is
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {key: metrics[key] for key in single} == single
    for text in (done.stdout + done.stderr, (out / "eval.log").read_text()):
        info = [line for line in text.splitlines() if "][INFO] - " in line]
        summary = "ucsd_ped2 (standard), 2 videos, 14 frames: "  # the metrics, once
        assert len([line for line in info if summary in line]) == 1, text
        assert len([line for line in info if "test clips (2 anomalous)" in line]) == 1, text
        # Rank 1's lines: its warnings (both ranks read the partial test set and the predictions without
        # pixel maps), marked, and nothing else.
        marked = [line for line in text.splitlines() if line.startswith("[rank")]
        assert len(marked) == 2 and all(line.startswith("[rank 1] [") for line in marked), text
        assert "][WARNING] - UCSD Ped2:" in marked[0] and "holds 2 test clips" in marked[0], text
        assert "][WARNING] - " in marked[1] and "no saved pixel maps" in marked[1], text
    # Each process computed one of the two videos: one progress bar, over one video.
    assert "(standard): 100%|██████████| 1/1" in done.stderr, done.stderr


@pytest.mark.parametrize("tool", ["train", "eval"])
def test_the_entry_points_hand_logging_to_the_main_process_before_the_job(tool, monkeypatch):
    """lavida-train is launched the same way as lavida-eval; its 2-process run (tests/train/test_ddp.py)
    goes through the trainer, so the wiring of the entry point is checked here."""
    module = importlib.import_module(f"lavida.cli.{tool}")
    calls = []
    monkeypatch.setattr(
        module, "log_from_main_process", lambda **kwargs: calls.append(("log_from_main_process", kwargs))
    )
    monkeypatch.setattr(module, "hydra_record", lambda cfg: {})
    monkeypatch.setattr(module, "write_record", lambda *args: None)
    monkeypatch.setattr(module, "run", lambda cfg, **kwargs: calls.append("run"))
    monkeypatch.setenv("DS_ACCELERATOR", "unset by the test")  # lavida-train may set it: restored after
    monkeypatch.delenv("DS_ACCELERATOR")
    module.main.__wrapped__(OmegaConf.create({"output_dir": "unused", "launcher": {"cpu": True}}))
    # lavida-eval has started Accelerate's state by then and passes the rank it gave (mpirun sets no RANK).
    expected = {"rank": 0} if tool == "eval" else {}
    assert calls == [("log_from_main_process", expected), "run"]


@pytest.mark.parametrize("rank", [0, 1])
def test_only_the_main_process_writes_the_record_of_an_eval_run(rank, tmp_path, monkeypatch):
    """Every process of a launched lavida-eval ends the job; one writes ``<output_dir>/.hydra/`` (the others
    would replace the same folder at the same time)."""
    state = SimpleNamespace(process_index=rank, is_main_process=rank == 0)
    monkeypatch.setattr(evaluate, "process_state", lambda: state)
    monkeypatch.setattr(evaluate, "log_from_main_process", lambda **kwargs: None)
    monkeypatch.setattr(evaluate, "hydra_record", lambda cfg: {"overrides.yaml": "- num_workers=0\n"})
    monkeypatch.setattr(evaluate, "run", lambda cfg: {})
    evaluate.main.__wrapped__(OmegaConf.create({"output_dir": str(tmp_path / "out")}))
    written = sorted(path.name for path in (tmp_path / "out").glob(".hydra/*"))
    assert written == (["overrides.yaml"] if rank == 0 else [])
