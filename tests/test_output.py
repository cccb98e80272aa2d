"""Output conventions: plain text off a terminal, one JSON document, errors on stderr."""

from __future__ import annotations

import io
import json

import pytest

from qwencli import output
from qwencli.output import Section


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_report_aligns_rows_and_tables() -> None:
    text = output.render_plain([
        Section("CPU", rows=(("model", "EPYC"), ("cores", "2")), notes=("a note",)),
        Section("Picks", header=("model", "quant"), table=(("qwen3-8b", "Q4_K_M"),)),
    ])
    assert text == (
        "CPU\n  model  EPYC\n  cores  2\n  a note\n\n"
        "Picks\n  model     quant\n  qwen3-8b  Q4_K_M\n"
    )


def test_json_document_carries_schema_version_first() -> None:
    out = io.StringIO()
    output.print_json({"answer": 42}, out)
    document = json.loads(out.getvalue())
    assert list(document) == ["schema_version", "answer"]
    assert document["schema_version"] == output.SCHEMA_VERSION
    assert out.getvalue().count("\n{") == 0 and out.getvalue().endswith("}\n")


def test_rich_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "xterm-256color")
    assert output.wants_rich(FakeTty())
    assert not output.wants_rich(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not output.wants_rich(FakeTty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not output.wants_rich(FakeTty())


def test_rich_report_on_a_terminal_has_colour_and_same_content(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "xterm-256color")
    tty = FakeTty()
    output.print_report([Section("CPU", rows=(("model", "EPYC [x]"),), notes=("n [1]",))], tty)
    assert "\x1b[" in tty.getvalue()
    assert "EPYC [x]" in tty.getvalue() and "n [1]" in tty.getvalue()


def test_errors_and_warnings_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    output.error("it broke", "try this")
    output.warn("careful")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: it broke\nhint: try this\nwarning: careful\n"
