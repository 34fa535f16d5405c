"""The test suite's own hygiene: a Hydra app run in-process leaves no logging handler for later tests."""

import io
import logging
import sys

import hydra
from _pytest.logging import LogCaptureHandler
from conftest import kept_logging_setup, ours


def _log_inside(_config) -> None:
    logging.getLogger("lavida.test_app").info("inside the app")


def test_a_hydra_app_s_handlers_are_gone_and_closed_after_kept_logging_setup(tmp_path, monkeypatch):
    """Hydra's job logging puts a console handler on the stream of the moment and a file handler on the
    job's log; without the clean-up, a later test's log line goes to that stream after pytest closed it."""
    root = logging.getLogger()
    before = ours(root.handlers)
    level = root.level
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)  # Hydra's console handler writes to ext://sys.stdout
    monkeypatch.setattr(sys, "argv", ["app", f"hydra.run.dir={tmp_path}"])
    app = hydra.main(version_base=None, config_path=str(tmp_path))(_log_inside)
    with kept_logging_setup():
        app()
        added = [h for h in ours(root.handlers) if h not in before]
        # What the clean-up has to undo: Hydra's two handlers and its INFO level.
        assert sorted(type(h).__name__ for h in added) == ["FileHandler", "StreamHandler"]
        assert root.level == logging.INFO != level
    assert "inside the app" in stream.getvalue()
    assert ours(root.handlers) == before
    assert root.level == level
    file_handler = next(h for h in added if isinstance(h, logging.FileHandler))
    assert file_handler.stream is None  # closed: the job's log file is let go


def test_kept_logging_setup_puts_back_a_removed_handler_and_the_loggers_switches():
    """dictConfig also drops the handlers it does not name and may disable loggers that existed before."""
    logger = logging.getLogger("lavida.test_isolation")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        with kept_logging_setup():
            logger.removeHandler(handler)
            logger.disabled = True
            logger.propagate = False
            logger.setLevel(logging.ERROR)
        assert handler in logger.handlers
        assert (logger.disabled, logger.propagate, logger.level) == (False, True, logging.NOTSET)
    finally:
        logger.removeHandler(handler)


def test_kept_logging_setup_leaves_pytests_own_capture_handlers_alone():
    """pytest adds and removes its capture handlers at each test phase; the clean-up, which runs in the
    tear-down phase, must neither take away that phase's handler nor bring back the set-up phase's."""
    root = logging.getLogger()
    setup_phase, teardown_phase = LogCaptureHandler(), LogCaptureHandler()
    root.addHandler(setup_phase)
    try:
        with kept_logging_setup():
            root.removeHandler(setup_phase)
            root.addHandler(teardown_phase)
        assert teardown_phase in root.handlers
        assert setup_phase not in root.handlers
    finally:
        root.removeHandler(setup_phase)
        root.removeHandler(teardown_phase)
