"""HeldInterrupt: Ctrl-C held back while a frame's files are written (a stopped live stream keeps whole
frames), only when enabled, in the main thread, and while SIGINT has Python's default handler."""

import signal
import threading

import pytest

from lavida.detect.interrupt import HeldInterrupt


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for the test: a process started in the background by a shell without job
    control inherits SIGINT ignored, and Python then installs none."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_the_block_is_held_and_reported_then_the_default_handler_is_back(default_sigint):
    with HeldInterrupt(enabled=True) as held:
        assert held.pending is False
        signal.raise_signal(signal.SIGINT)
        assert held.pending is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_a_block_without_ctrl_c_reports_none(default_sigint):
    with HeldInterrupt(enabled=True) as held:
        pass
    assert held.pending is False and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_disabled_it_lets_ctrl_c_through(default_sigint):
    hold = HeldInterrupt(enabled=False)
    with pytest.raises(KeyboardInterrupt), hold:
        signal.raise_signal(signal.SIGINT)
    assert hold.pending is False and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_programs_own_handler_is_kept(default_sigint):
    calls = []

    def own(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGINT, own)
    with HeldInterrupt(enabled=True) as held:
        signal.raise_signal(signal.SIGINT)
    assert calls == [signal.SIGINT] and held.pending is False
    assert signal.getsignal(signal.SIGINT) is own


def test_outside_the_main_thread_it_holds_nothing_and_does_not_fail(default_sigint):
    """Only the main thread may set signal handlers (signal.signal raises ValueError elsewhere)."""
    outcome = []

    def in_thread():
        try:
            with HeldInterrupt(enabled=True) as held:
                outcome.append((held.pending, signal.getsignal(signal.SIGINT)))
        except Exception as error:  # noqa: BLE001 - reported to the main thread
            outcome.append(error)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert outcome == [(False, signal.default_int_handler)]
