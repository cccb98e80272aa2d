"""The only module that prints.

stdout carries the product: a report, a table, or exactly one JSON document. Warnings, progress and
errors go to stderr. Rich formatting is used only when the stream is a terminal and NO_COLOR is not
set (https://no-color.org); otherwise plain aligned text with no escape codes, so pipes and scripts
get clean output. Rich is imported only on that path, to keep start-up fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

SCHEMA_VERSION = 1


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


def print_json(document: dict[str, Any], stream: TextIO | None = None) -> None:
    """Print one JSON document carrying the schema version first."""
    out = stream or sys.stdout
    payload = {"schema_version": SCHEMA_VERSION, **document}
    out.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    out.flush()


def print_report(sections: Sequence[Section], stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    if wants_rich(out):
        _print_rich(sections, out)
    else:
        out.write(render_plain(sections))
    out.flush()


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


def info(message: str) -> None:
    """A line for the person, not the product: stderr, no label."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    _to_stderr("warning", message, "yellow")


def error(message: str, hint: str | None = None) -> None:
    _to_stderr("error", message, "red")
    if hint:
        _to_stderr("hint", hint, None)


def _to_stderr(label: str, message: str, colour: str | None) -> None:
    err = sys.stderr
    if colour and wants_rich(err):
        err.write(f"\x1b[1;{_ANSI[colour]}m{label}:\x1b[0m {message}\n")
    else:
        err.write(f"{label}: {message}\n")
    err.flush()


_ANSI = {"red": "31", "yellow": "33"}
