"""The chat's files: the line history of the interactive session, and conversations saved
with /save and read back with /load (and --system-file's text).

Nothing here prints: a history that cannot be kept is reported through a `warn` callback, the
rest raises QwenError with one line. Reads are bounded and refuse anything that is not a regular
file (a FIFO, a device, a folder); writes are atomic (fileio).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwencli.chat.session import Conversation
from qwencli.envvars import env_bool
from qwencli.errors import QwenError, os_error
from qwencli.fileio import atomic_write, ensure_dir

# ------------------------------------------------------------------------------------------
# The line history


def history_file() -> Path | None:
    """The history file, or None with QWEN_NOHISTORY set (UsageError for a value that is
    neither yes nor no)."""
    if env_bool("QWEN_NOHISTORY"):
        return None
    from qwencli.paths import config_dir

    return config_dir() / "history"


HISTORY_LINES = 1000  # lines kept in memory and in the file
HISTORY_READ_LIMIT = 1 << 20  # only the newest MiB of the file is ever read
_NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffd]")  # control bytes, invalid UTF-8


def open_regular(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open for a regular file only: never blocks on a FIFO, never reads a device.
    OSError (EINVAL for something that is not a regular file)."""
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(22, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class HistoryText:
    lines: list[str]  # from the newest MiB at most, without lines that are not text
    cut: bool  # the file held more than was read
    open_line: bool  # the file does not end with a newline (a write cut short)


def read_history(path: Path) -> HistoryText:
    """The lines of a history file, from its newest MiB at most, with the ones that are not
    text (binary junk, invalid UTF-8, control characters) left out. A missing file has no
    lines; anything else unreadable is a QwenError."""
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return HistoryText([], False, False)
    except OSError as exc:
        if exc.errno == 22:
            raise QwenError(f"the history file {path} is not a regular file") from None
        raise os_error(exc, path, "read") from None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - HISTORY_READ_LIMIT)
        os.lseek(fd, start, os.SEEK_SET)
        chunks: list[bytes] = []
        left = HISTORY_READ_LIMIT
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    open_line = bool(data) and not data.endswith(b"\n")
    if start > 0:
        data = data.partition(b"\n")[2]  # the first line was cut
    lines = [line for line in data.decode("utf-8", errors="replace").split("\n")
             if line.strip() and not _NOT_TEXT.search(line)]
    return HistoryText(lines, start > 0, open_line)


class History:
    """Line editing through the stdlib readline (where it exists) and a history file that
    loses nothing: each line is appended to the file as it is entered (one O_APPEND write, so
    a closed terminal, a kill or a second session at once keep every line), and the file is
    cut back to its newest lines, in one rename, when a session ends with it grown well past
    them. A history file that cannot be read or written is a warning, never the end of the
    session."""

    def __init__(self, path: Path | None, warn: Callable[[str], None]) -> None:
        self.path = path
        self.warn = warn
        self._last: str | None = None
        self._open_line = False  # the file ends inside a line: start the next one first
        try:
            import readline
        except ImportError:  # Windows without pyreadline: the plain prompt
            self.readline: Any = None
        else:
            self.readline = readline
            readline.set_history_length(HISTORY_LINES)
        if path is None:
            return
        try:
            text = read_history(path)
        except QwenError as exc:
            self._give_up(exc.message)
            return
        self._open_line = text.open_line
        lines = text.lines[-HISTORY_LINES:]
        if self.readline is not None:
            for line in lines:
                self.readline.add_history(line)
        self._last = lines[-1] if lines else None

    def _give_up(self, why: str) -> None:
        self.warn(f"{why}; this session's lines are not kept in the history")
        self.path = None

    def record(self, line: str) -> None:
        """Append one entered line to the history file, now."""
        if self.path is None or not line.strip() or line == self._last:
            return
        self._last = line
        data = (line.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8", "replace")
        if self._open_line:
            data = b"\n" + data
        try:
            ensure_dir(self.path.parent)
            fd = open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, data)
                self._open_line = False
            finally:
                os.close(fd)
        except OSError as exc:
            why = (f"the history file {self.path} is not a regular file" if exc.errno == 22
                   else os_error(exc, self.path).message)
            self._give_up(why)

    def close(self) -> None:
        """Cut the file back to its newest HISTORY_LINES lines when it holds many more (or
        more than we read): one rename, so it is always either the old file or the new."""
        if self.path is None:
            return
        try:
            text = read_history(self.path)
            if text.cut or len(text.lines) > 2 * HISTORY_LINES:
                keep = "".join(line + "\n" for line in text.lines[-HISTORY_LINES:])
                atomic_write(self.path, keep)
        except (QwenError, OSError):
            pass  # the lines are in the file already; trimming can wait for the next session


# ------------------------------------------------------------------------------------------
# Saved conversations


LOAD_LIMIT = 16 * 1024 * 1024  # the largest file /load reads


def save_target(path: Path) -> tuple[Path, int | None]:
    """The file /save writes for `path` (a symbolic link: the file it points to) and, when it
    exists already, its permission bits. QwenError for a folder, a device or a FIFO, and for
    a folder that does not exist (a typo should not create folders)."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        info = target.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise os_error(exc, path, "write") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise QwenError(f"{path} is a folder", hint=f"give a file name: /save "
                                                        f"{path / 'conversation.json'}")
        if not stat.S_ISREG(info.st_mode):
            raise QwenError(f"{path} is not a regular file; /save writes only files")
        return target, stat.S_IMODE(info.st_mode)
    if not target.parent.is_dir():
        raise QwenError(f"cannot write {path}: the folder {target.parent} does not exist",
                        hint=f"create it first (mkdir -p {target.parent}) or choose another")
    return target, None


def save_conversation(path: Path, document: Mapping[str, Any], *,
                      mode: int | None = None) -> None:
    """Write `document` to `path` in one rename after syncing it to the disk: a reader, a
    crash or a full disk sees the old file or the new one, never half of one. `mode`: the
    permission bits of the file replaced (a new file is private to its owner)."""
    try:
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        payload = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from the terminal: JSON escapes it
        payload = (json.dumps(document, indent=2) + "\n").encode("ascii")
    try:
        atomic_write(path, payload, durable=True)
    except OSError as exc:
        raise os_error(exc, path, "write") from None
    if mode is not None:
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


def read_limited(path: Path, limit: int = LOAD_LIMIT,
                 what: str = "/load reads a JSON file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (QwenError otherwise: a folder, a
    device such as /dev/zero, a FIFO, a larger file, one that cannot be read). `what`: who
    reads what, for the messages."""
    reader = what.split(" reads ")[0]
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        raise QwenError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno == 22:
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise QwenError(f"{path} is {kind}; {what}") from None
        raise os_error(exc, path, "read") from None
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise QwenError(f"{path} is {_mib(size)}; {reader} reads at most {_mib(limit)}")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while we read
                raise QwenError(f"{path} is over {_mib(limit)}; {reader} reads at most "
                                f"{_mib(limit)}")
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB".replace(".0 MiB", " MiB")


def load_conversation(path: Path) -> Conversation:
    """A conversation saved by /save (or an OpenAI-style message list): a regular UTF-8 JSON
    file of at most LOAD_LIMIT bytes, of the right shape. QwenError, in one line, otherwise."""
    path = path.expanduser()
    data = read_limited(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QwenError(f"{path}: not UTF-8 text (byte {exc.start:,}); /load reads JSON "
                        "saved by /save") from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise QwenError(f"{path}: not a conversation (JSON nested too deeply)") from None
    except ValueError as exc:
        raise QwenError(f"{path}: not a JSON conversation ({exc})") from None
    return Conversation.from_document(document, str(path))


SYSTEM_FILE_LIMIT = 1 << 20  # the largest --system-file


def read_system_file(path: Path) -> str:
    """--system-file: a UTF-8 text file of at most SYSTEM_FILE_LIMIT bytes (QwenError, in one
    line, for anything else)."""
    path = path.expanduser()
    data = read_limited(path, SYSTEM_FILE_LIMIT, what="--system-file reads a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QwenError(f"{path}: not UTF-8 text (byte {exc.start:,})") from None
    if not text.strip():
        raise QwenError(f"{path} is empty; --system-file needs the system prompt's text")
    return text.strip()
