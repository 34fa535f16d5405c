"""How lavida-train, -eval, -detect, -demo and -info end a run that the user's input refused.

Hydra reports any exception of its task as "Error executing job with overrides: [...]" and a traceback,
so a refusal that says what to do (a misspelt path, a training checkpoint given for a model, a missing
``categories=``) was buried under frames of our own code. A *user error* is printed instead as one block,
``lavida-<tool>: <message>``, and the command exits with status 2, as lavida-tables and lavida-prepare do.
Its traceback still goes to the job's log file, and ``HYDRA_FULL_ERROR=1`` shows it as Hydra always does.

Which exceptions are user errors (:func:`is_user_error`):

- the project's own classes (WeightsNotFoundError, VideoReadError, GroundTruthError, DatasetFormatError,
  ResumeMismatchError, NonFiniteLossError, UnreadableItemError, ...): each is raised only with a message
  for the user, wherever it is raised;
- omegaconf's ``MissingMandatoryValue``: a ``???`` setting left out (rephrased: which, and an example);
- ``ValueError``, ``TypeError``, ``KeyError``, ``ImportError``, ``FileNotFoundError``, ``FileExistsError``
  and ``NotADirectoryError`` only when a ``raise`` statement in the lavida package raised them: these are
  our checks of settings and files. The same types raised inside torch, numpy or transformers, or by the
  interpreter in our code (a tuple unpacked wrongly, a call with a wrong keyword, ``int("x")``), are bugs
  or unexpected states, not refusals: Hydra reports them with their traceback, as before.

Anything else (RuntimeError, AssertionError, ...) keeps Hydra's report.
"""

from __future__ import annotations

import contextlib
import dis
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from lavida.cli.ranks import process_rank, rank_tag

log = logging.getLogger(__name__)

USER_ERROR_STATUS = 2  # argparse's status for a usage error, as lavida-tables and lavida-prepare exit

# Built-in types that the project's checks raise with a message for the user (see the module docstring).
CHECKED_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    ImportError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
)

PACKAGE = Path(__file__).resolve().parents[1]  # lavida/


@contextlib.contextmanager
def user_errors(tool: str, cfg: DictConfig, *, example: str | None = None) -> Iterator[None]:
    """Run a Hydra entry point's job, ending it with ``tool: <message>`` and status 2 on a user error.

    Every failure's traceback is written to the job's log file first (Hydra's ``<output_dir>/<job>.log``).
    ``HYDRA_FULL_ERROR=1``, or an error that is no user error, re-raises to Hydra, which prints it with
    its traceback (and exits with status 1). Under ``accelerate launch`` a process other than the main one
    says ``tool [rank R]: <message>``: a refusal of one rank's data is seen with the rank it stopped.

    Args:
        tool: The command's name, ``lavida-detect``.
        cfg: The job's config (to list every ``???`` setting left out, not only the first one read).
        example: A full command line, shown when a required setting is missing.

    Raises:
        SystemExit: status 2, after a user error.
    """
    try:
        yield
    except Exception as error:
        _log_to_files(tool, error)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not is_user_error(error):
            raise
        message = user_message(error, cfg, example=example)
        message = message.removeprefix(f"{tool}: ")  # a check that names the command already (unknown keys)
        print(f"{tool}{rank_tag(_rank_or_main())}: {message}", file=sys.stderr)
        raise SystemExit(USER_ERROR_STATUS) from error


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` refuses the user's settings or files (module docstring), rather than a bug."""
    if isinstance(error, MissingMandatoryValue):
        return True
    if type(error).__module__.partition(".")[0] == "lavida":
        return True
    return isinstance(error, CHECKED_ERRORS) and raised_by_lavida(error.__traceback__)


def raised_by_lavida(tb: TracebackType | None) -> bool:
    """Whether the traceback ends at a ``raise`` statement in the lavida package.

    The last frame's file (not its module name: ``python -m lavida.cli.eval`` runs as ``__main__``) and
    its instruction: the interpreter failing inside our code (unpacking, a call's arguments, ``int("x")``)
    stops at another instruction than ``RAISE_VARARGS``, and a bare ``raise`` of such an error keeps the
    traceback of where it happened.
    """
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if not Path(code.co_filename).resolve().is_relative_to(PACKAGE):
        return False
    return any(
        instruction.offset == tb.tb_lasti and instruction.opname == "RAISE_VARARGS"
        for instruction in dis.get_instructions(code)
    )


def user_message(error: BaseException, cfg: DictConfig, *, example: str | None = None) -> str:
    """The message as the library wrote it; a missing ``???`` setting is named, with an example."""
    if isinstance(error, MissingMandatoryValue):
        return _missing_message(error, cfg, example)
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]  # str(KeyError) would wrap the message in quotes
    return str(error)


def _missing_message(error: MissingMandatoryValue, cfg: DictConfig, example: str | None) -> str:
    """``missing input= and categories=, ...``: every ``???`` setting left out, in the config's order."""
    keys = {str(error.full_key or error.key)}
    with contextlib.suppress(Exception):  # the message must not fail on a config it cannot walk
        keys |= set(OmegaConf.missing_keys(cfg))
    order = {key: index for index, key in enumerate(cfg)}
    keys = sorted(keys, key=lambda key: (order.get(key.split(".")[0], len(order)), key))
    shown = [f"{key}=" for key in keys]
    named = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
    them = "it" if len(keys) == 1 else "them"
    have = "has" if len(keys) == 1 else "have"
    head = f"missing {named}, which {have} no default. Give {them} on the command line"
    if example is None:
        return f"{head}: {' '.join(f'{key}=<value>' for key in keys)}."
    return f"{head}, as in\n  {example}"


def _log_to_files(tool: str, error: BaseException) -> None:
    """Write ``error``'s traceback to the log files of the job (Hydra's file handler), not the console.

    Logged through the logger, the traceback would also reach Hydra's console handler, which is the noise
    this module removes; the file keeps it for a bug report.
    """
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "%s failed:", (tool,), (type(error), error, error.__traceback__)
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.flush()


@contextlib.contextmanager
def interrupted(tool: str, *, then: str) -> Iterator[None]:
    """End a job stopped with Ctrl-C with one line saying what to do next (``then``), and status 130
    (the shell's for SIGINT), instead of a KeyboardInterrupt traceback through the training loop.

    Ctrl-C reaches every process of an ``accelerate launch`` run: only the main one says so.
    """
    try:
        yield
    except KeyboardInterrupt:
        if _rank_or_main() == 0:
            print(f"{tool}: interrupted; {then}", file=sys.stderr)
        raise SystemExit(130) from None


def _rank_or_main() -> int:
    """The process's rank for a closing message; 0 where ``RANK`` is malformed (its own refusal says so)."""
    try:
        return process_rank()
    except ValueError:
        return 0
