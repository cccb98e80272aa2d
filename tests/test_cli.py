"""The command line's shape: every command listed once, loaded only when used, plain help that
still groups the what-if options."""

from __future__ import annotations

from typer.testing import CliRunner

from qwencli.cli import COMMANDS, app
from tests.test_startup import _run


def _modules_after(*args: str) -> set[str]:
    return {name for name in _run(*args)[0] if name.startswith("qwencli")}


def test_help_lists_every_command_once_in_order() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines()
              if line.startswith("  ")]
    assert listed == list(COMMANDS)


def test_a_command_loads_only_its_own_module() -> None:
    loaded = _modules_after("hw", "--json")
    assert "qwencli.cli.hw" in loaded
    assert not {"qwencli.cli.chat", "qwencli.cli.hub", "qwencli.chat.terminal",
                "qwencli.chat.engine", "qwencli.hub"} & loaded


def test_plain_help_groups_the_what_if_options() -> None:
    result = CliRunner().invoke(app, ["fit", "--help"])
    assert result.exit_code == 0
    text = result.stdout
    assert "\x1b[" not in text and "╭" not in text  # plain text, no Rich panels
    before, whatif = text.split("Arguments:")[1].split("What-if hardware (replace probed "
                                                      "values):")
    arguments, options = before.split("Options:")
    whatif, workers = whatif.split("Other machines (llama.cpp RPC workers")
    assert "MODEL" in arguments and "--ctx" in options and "--ctx" not in whatif
    listed = {line.split()[0] for line in whatif.splitlines() if line.startswith("  --")}
    assert listed == {"--ram", "--vram", "--gpus", "--gpu", "--unified", "--cpu-only",
                      "--hardware"}
    assert {line.split()[0] for line in workers.splitlines() if line.startswith("  --")} \
        == {"--rpc", "--rpc-whatif", "--link"}
    assert not {line.split()[0] for line in options.splitlines()
                if line.startswith("  --")} & listed
