"""Domain errors. Library code raises these; `cli` maps them once to a message and an exit code.

Exit codes (documented in the README): 0 ok, 1 error, 2 usage error, 130 interrupted (Ctrl-C),
141 the reader of stdout went away (a closed pipe, as a Unix tool killed by SIGPIPE reports).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141


class QwenError(Exception):
    """An expected failure: shown as one line (plus an optional hint), never as a traceback."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(QwenError):
    """The command line asked for something that cannot be: bad value, unknown name."""

    exit_code = EXIT_USAGE


class ConfigError(QwenError):
    """A data or config file (a profile, a user overlay) is malformed; names the file."""


class ProbeError(QwenError):
    """The hardware could not be read at all (a single missing driver is not an error)."""
