"""Signal handlers that hold for the length of a block (a model load, an answer, a session) and
are put back after it.

Python lets only the main thread install handlers, so elsewhere the block runs with the
process's own handling. Each user says which signals it handles and which dispositions it may
replace: a signal someone chose to ignore (`nohup`, a background job) or to handle stays as it
was where that matters.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class HandledSignals:
    """Base for a `with` block that handles `SIGNALS` with `_handler`."""

    SIGNALS: tuple[str, ...] = ("SIGINT",)

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        raise NotImplementedError

    def _replaces(self, current: Any) -> bool:
        """Whether this block may take over a signal whose disposition is `current`."""
        return True

    def __enter__(self) -> HandledSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name, None)  # SIGHUP is not on Windows
                if number is not None and self._replaces(signal.getsignal(number)):
                    self._previous[number] = signal.signal(number, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
