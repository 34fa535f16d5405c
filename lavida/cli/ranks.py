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

# The global rank set by the launchers (torchrun, ``accelerate launch``, the DeepSpeed launcher). Read
# from the environment rather than from Accelerate's state: that would start the process group before the
# trainer's Accelerator chooses its own settings (``cpu=True``, the DeepSpeed plugin).
RANK_VARIABLE = "RANK"


def process_rank() -> int:
    """This process's global rank: 0 for the main (or only) process.

    Raises:
        ValueError: ``RANK`` is set to something other than a whole number ≥ 0.
    """
    value = os.environ.get(RANK_VARIABLE, "0").strip() or "0"
    if not value.isdigit():
        raise ValueError(
            f"the environment variable {RANK_VARIABLE}={value!r} is not a process rank (a whole number ≥ 0); "
            "it is set by the launcher (accelerate launch, torchrun): unset it for a single process."
        )
    return int(value)


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
    WARNING and marks its lines ``[rank R]``: the libraries' loggers propagate to the root, so their INFO
    lines are held back too.

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
    return rank


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

    launched = int(os.environ.get("WORLD_SIZE", "1") or "1") > 1
    return PartialState(cpu=launched and not torch.cuda.is_available())
