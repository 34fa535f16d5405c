"""Ctrl-C held back while a frame's files are written, so that a stopped live stream keeps whole frames."""

from __future__ import annotations

import signal
import threading


class HeldInterrupt:
    """Holds Ctrl-C (SIGINT) back during the block; ``pending`` then says whether it came.

    Only when ``enabled``, in the main thread (the only one SIGINT reaches) and while SIGINT has
    Python's default handler: a program that installed its own keeps it.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.pending = False
        self._previous = None

    def __enter__(self) -> HeldInterrupt:
        if (
            self.enabled
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self.pending = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
