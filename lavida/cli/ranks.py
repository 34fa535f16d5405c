"""Console and log file of a multi-process run (``accelerate launch``): progress from the main process only.

Under ``accelerate launch --num_processes N`` every process runs the same Hydra job, and Hydra gives each
the same handlers: the console and ``<output_dir>/<job>.log``. Every progress line then came N times, the
copies interleaved in one log file. The main process (global rank 0) keeps the job's logging as configured;
the others pass on warnings and errors only, each line marked ``[rank R]``, so that a failure on one rank
is still seen and attributed to it.
"""

from __future__ import annotations

import logging
import os

# Where the launchers put the global rank and the number of processes: torchrun, ``accelerate launch`` and
# the DeepSpeed launcher set RANK and WORLD_SIZE; ``accelerate launch --mpirun_hostfile`` (mpirun: MPICH,
# Open MPI, MVAPICH) sets its own pairs, which Accelerate reads in this order too. Read from the
# environment rather than from Accelerate's state: that would start the process group before the
# trainer's Accelerator chooses its own settings (``cpu=True``, the DeepSpeed plugin).
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _first_count(names: tuple[str, ...], *, default: int) -> int:
    """The first of ``names`` that is set, as a whole number ≥ 0; ``default`` where none is.

    Raises:
        ValueError: the variable holds something else, naming it.
    """
    for name in names:
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        if not value.isdecimal():
            raise ValueError(
                f"the environment variable {name}={value!r} is not a whole number ≥ 0; it is set by the "
                "launcher (accelerate launch, torchrun, mpirun): unset it for a single process."
            )
        return int(value)
    return default


def launched_processes() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    return max(_first_count(SIZE_VARIABLES, default=1), 1)


def process_rank() -> int:
    """This process's global rank: 0 for the main (or only) process.

    A rank left in the environment of a single process (a stale shell variable, one pod of a cluster job)
    counts as 0: Accelerate makes such a process its main one, and its progress must be shown.

    Raises:
        ValueError: a launcher's variable holds something other than a whole number.
    """
    if launched_processes() == 1:
        return 0
    return _first_count(RANK_VARIABLES, default=0)


def rank_tag(rank: int) -> str:
    """``""`` on the main process, ``" [rank R]"`` elsewhere: what a line of rank R is marked with."""
    return "" if rank == 0 else f" [rank {rank}]"


class _RankFormatter(logging.Formatter):
    """Puts ``[rank R]`` before the line another handler's formatter makes of a record."""

    def __init__(self, inner: logging.Formatter | None, *, rank: int) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        return f"[rank {self.rank}] {self.inner.format(record)}"


def log_from_main_process(*, rank: int | None = None) -> int:
    """Leave the job's log handlers to the main process; on other ranks pass only warnings and errors.

    Call at the start of a Hydra job, after Hydra has configured logging. On the main process nothing
    changes. Elsewhere every handler of the root logger (Hydra's console and file handlers) is raised to
    WARNING and marks its lines ``[rank R]``, which holds back the INFO lines of every logger that
    propagates to the root: lavida's, Accelerate's, PEFT's. transformers logs through a handler of its
    own (warnings only, by default): its lines are marked too, and its progress bars ("Loading weights",
    one per process and model) are left to the main process. DeepSpeed's handler, also its own and at
    WARNING, is left as it is: marking it would mean importing DeepSpeed in every run.

    Args:
        rank: The global rank; by default :func:`process_rank`.

    Returns:
        The rank.
    """
    rank = process_rank() if rank is None else rank
    if rank == 0:
        return rank
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _RankFormatter):
            continue  # already marked (a second call in the same process)
        handler.setLevel(max(handler.level, logging.WARNING))
        handler.setFormatter(_RankFormatter(handler.formatter, rank=rank))
    _mark_transformers(rank)
    return rank


def _mark_transformers(rank: int) -> None:
    """Mark transformers' own log lines with the rank and leave its progress bars to the main process."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.get_logger()  # sets up transformers' handler if nothing has yet
    for handler in logging.getLogger("transformers").handlers:
        if not isinstance(handler.formatter, _RankFormatter):
            handler.setFormatter(_RankFormatter(handler.formatter, rank=rank))


def process_state():
    """Accelerate's state of this process (``accelerate.PartialState``), started as the launcher meant it.

    On a machine without CUDA, Accelerate starts the processes of ``accelerate launch --num_processes N``
    as N single processes unless told ``cpu=True``: each then evaluated every video by itself, racing the
    others over the same output folder. Launched processes without CUDA therefore join as CPU processes
    (gloo), as ``launcher=cpu`` makes lavida-train's do. Once started, the state is shared by the process:
    later ``PartialState()`` calls (the evaluation runner's) get this one.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=launched_processes() > 1 and not torch.cuda.is_available())
