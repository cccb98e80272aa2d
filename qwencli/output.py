"""The only module that prints or asks.

stdout carries the product: a report, a table, or exactly one JSON document. Warnings, progress and
errors go to stderr. Rich formatting is used only when the stream is a terminal and NO_COLOR is not
set (https://no-color.org); otherwise plain aligned text with no escape codes, so pipes and scripts
get clean output. Rich is imported only on that path, to keep start-up fast.

Writing to stdout goes through `write`, which turns the ways stdout can fail into one outcome
each: a reader that went away (`| head`) stops the command quietly with EXIT_PIPE, like a Unix
tool killed by SIGPIPE; any other write error (a full disk, a closed descriptor) is one line on
stderr and exit 1. Library code never prints: it gets progress and consent as callbacks made
here (`progress`, `confirm`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from qwencli.errors import EXIT_ERROR, EXIT_PIPE, StdoutClosed

SCHEMA_VERSION = 1


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's final flush does not complain
    about the pipe that went away (the Python documentation's recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def write_error(exc: BaseException) -> int | None:
    """The exit code for an error raised while writing stdout (None: not such an error).
    A broken pipe is quiet; anything else is said in one line."""
    if isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError)
                                            and exc.errno == errno.EPIPE):
        _silence_stdout()
        return EXIT_PIPE
    return None


def _encodable(text: str, stream: TextIO) -> str:
    """`text` as the stream's encoding can carry it: characters it lacks (a cp1252 console, a
    redirect with PYTHONIOENCODING=ascii) become `\\uXXXX` escapes instead of an error."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        pass
    return text


def _utf8(stream: TextIO | None) -> bool:
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "")
    return encoding in ("utf8", "utf8sig")


def write(text: str, stream: TextIO | None = None) -> None:
    """Put `text` on stdout (or `stream`) now. See the module docstring for failures."""
    out = stream or sys.stdout
    if out is None:  # started with stdout closed (`>&-`)
        error("cannot write the output: stdout is closed")
        raise StdoutClosed(EXIT_ERROR)
    try:
        out.write(_encodable(text, out))
        out.flush()
    except (BrokenPipeError, ValueError) as exc:  # ValueError: a stream closed under us
        if isinstance(exc, ValueError) and "closed" not in str(exc):
            raise
        _silence_stdout()
        raise StdoutClosed(EXIT_PIPE) from None
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _silence_stdout()
            raise StdoutClosed(EXIT_PIPE) from None
        error(f"cannot write the output: {exc.strerror or exc}")
        raise StdoutClosed(EXIT_ERROR) from None


@dataclass(frozen=True)
class Section:
    """A titled block of a report: key/value rows, an optional table, notes underneath."""

    title: str
    rows: tuple[tuple[str, str], ...] = ()
    header: tuple[str, ...] = ()
    table: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = ()


def wants_rich(stream: TextIO) -> bool:
    """Rich only for a terminal, and never when NO_COLOR is set or TERM is dumb."""
    if os.environ.get("NO_COLOR", "") != "":
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _finite(value: Any) -> Any:
    """JSON has no Infinity or NaN: a number that is not finite is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def print_json(document: dict[str, Any], stream: TextIO | None = None) -> None:
    """Print one JSON document carrying the schema version first: always valid JSON, and
    plain ASCII when the stream cannot carry UTF-8 (escapes lose nothing)."""
    payload = _finite({"schema_version": SCHEMA_VERSION, **document})
    ascii_only = not _utf8(stream or sys.stdout)
    write(json.dumps(payload, indent=2, ensure_ascii=ascii_only, allow_nan=False) + "\n",
          stream)


def print_report(sections: Sequence[Section], stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    if out is not None and wants_rich(out):
        try:
            _print_rich(sections, out)
        except OSError as exc:
            code = write_error(exc)
            if code is None:
                raise
            raise StdoutClosed(code) from None
    else:
        write(render_plain(sections), stream)


def render_plain(sections: Sequence[Section]) -> str:
    """Plain text: a title line, indented aligned rows, a space-aligned table, notes."""
    lines: list[str] = []
    for section in sections:
        if lines:
            lines.append("")
        lines.append(section.title)
        width = max((len(key) for key, _ in section.rows), default=0)
        lines.extend(f"  {key.ljust(width)}  {value}".rstrip() for key, value in section.rows)
        if section.table:
            rows = [section.header, *section.table] if section.header else list(section.table)
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
                lines.append("  " + "  ".join(cells).rstrip())
        lines.extend(f"  {note}" for note in section.notes)
    return "\n".join(lines) + "\n"


def _print_rich(sections: Sequence[Section], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False)
    for number, section in enumerate(sections):
        if number:
            console.print()
        console.print(f"[bold]{section.title}[/bold]", markup=True)
        if section.rows:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="cyan", no_wrap=True)
            grid.add_column()
            for key, value in section.rows:
                grid.add_row(f"  {key}", value)
            console.print(grid, markup=False)
        if section.table:
            table = Table(*section.header, box=None, padding=(0, 2), header_style="bold")
            for row in section.table:
                table.add_row(*row)
            console.print(table, markup=False)
        for note in section.notes:
            console.print(f"  [dim]{_escape(note)}[/dim]", markup=True)


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def interrupted() -> None:
    """Ctrl-C: said on its own line, as shells expect."""
    _err_write("\ninterrupted\n")


def info(message: str) -> None:
    """A line for the person, not the product: stderr, no label."""
    _err_write(message + "\n")


def warn(message: str) -> None:
    _to_stderr("warning", message, "yellow")


def error(message: str, hint: str | None = None) -> None:
    _to_stderr("error", message, "red")
    if hint:
        _to_stderr("hint", hint, None)


def _to_stderr(label: str, message: str, colour: str | None) -> None:
    err = sys.stderr
    if colour and err is not None and wants_rich(err):
        _err_write(f"\x1b[1;{_ANSI[colour]}m{label}:\x1b[0m {message}\n")
    else:
        _err_write(f"{label}: {message}\n")


def _err_write(text: str) -> None:
    """stderr is for the person; when it is gone there is nobody to tell."""
    err = sys.stderr
    if err is None:
        return
    try:
        err.write(_encodable(text, err))
        err.flush()
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------------------------
# Asking


def can_ask() -> bool:
    """Someone can answer a question: stdin and stderr are terminals."""
    try:
        return bool(sys.stdin and sys.stdin.isatty() and sys.stderr and sys.stderr.isatty())
    except (OSError, ValueError):
        return False


def confirm(question: str, *, default: bool) -> bool:
    """A yes/no question on the terminal (stderr), read from stdin; end of input is "no"."""
    hint = "[Y/n]" if default else "[y/N]"
    _err_write(f"{question} {hint} ")
    answer = sys.stdin.readline()
    if not answer:
        _err_write("\n")
        return False
    text = answer.strip().lower()
    return default if not text else text in ("y", "yes")


# --------------------------------------------------------------------------------------------
# Progress


class _RichProgress:
    """A bar with bytes, rate and time left, on stderr (rich.progress, imported here)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                             DownloadColumn(binary_units=True),
                             TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                             transient=False)
        self._task: Any = None

    def start(self, label: str, total: int, done: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, completed=done)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        self._bar.stop()


class _LineProgress:
    """Plain lines every few seconds: for logs, and for terminals that asked for no colour."""

    def __init__(self, every: float = 2.0) -> None:
        self._every = every
        self._label, self._total, self._done, self._start_done = "", 0, 0, 0
        self._t0 = self._last = 0.0

    def start(self, label: str, total: int, done: int) -> None:
        self._label, self._total, self._done, self._start_done = label, total, done, done
        self._t0 = self._last = time.monotonic()
        self._line()

    def advance(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._line()

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        from qwencli.units import format_bytes

        elapsed = max(time.monotonic() - self._t0, 1e-6)
        rate = (self._done - self._start_done) / elapsed
        left = (self._total - self._done) / rate if rate > 0 else None
        done = min(max(self._done, 0), self._total) if self._total else 0
        pct = 100.0 * done / self._total if self._total else 100.0
        eta = f", {left:.0f}s left" if left is not None and self._done < self._total else ""
        _err_write(f"{self._label}: {pct:5.1f}%  {format_bytes(done)} of "
                   f"{format_bytes(self._total)}  {rate / 1e6:.1f} MB/s{eta}\n")


def progress(show: bool) -> _RichProgress | _LineProgress | None:
    """Progress on stderr: a bar on a colour terminal, plain lines elsewhere; None when not
    shown."""
    if not show:
        return None
    if sys.stderr is not None and wants_rich(sys.stderr):
        return _RichProgress()
    return _LineProgress()


_ANSI = {"red": "31", "yellow": "33"}
