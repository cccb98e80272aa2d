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


class StdoutClosed(Exception):
    """stdout cannot take the product any more (a reader gone, a full disk): the command ends
    with `exit_code` (EXIT_PIPE quietly, or 1 after output said why)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


class ProbeError(QwenError):
    """The hardware could not be read at all (a single missing driver is not an error)."""


def os_error(exc: OSError, path: object, doing: str = "write",
             hint: str | None = None) -> QwenError:
    """One place that turns an OS error about a local file into a one-line message that says
    what is wrong *here* (a full disk, a path through a file, no permission), never a network
    problem, with the next thing to try."""

    error = _os_error(exc, f"{path}", doing)
    if hint:
        error.hint = hint
    return error


def _os_error(exc: OSError, where: str, doing: str) -> QwenError:
    import errno

    code = exc.errno
    if code == errno.ENOSPC:
        return QwenError(f"no space left on the disk holding {where}",
                         hint="free some space (`qwen list`, `qwen rm MODEL`) and run it again")
    if code in (errno.EACCES, errno.EPERM):
        return QwenError(f"cannot {doing} {where}: permission denied",
                         hint="check the folder's owner and permissions, or point the "
                              "variable that names it elsewhere")
    if code == errno.EROFS:
        return QwenError(f"cannot {doing} {where}: the file system is read-only")
    if code == errno.ENOTDIR:
        return QwenError(f"cannot {doing} {where}: part of that path is a file, not a folder")
    if code == errno.ENOENT:
        return QwenError(f"cannot {doing} {where}: no such file or folder")
    return QwenError(f"cannot {doing} {where}: {exc.strerror or exc}")


class WorkerUnreachable(QwenError):
    """A `qwen worker` named on the command line cannot be reached or does not answer as
    llama.cpp's RPC server does (names the worker)."""


class WorkerLost(QwenError):
    """A worker went away while a model was loaded on it (names the worker)."""
