"""The command line's shape: every command listed once, loaded only when used, plain help that
still groups the what-if options."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from qwencli.cli import COMMANDS, app
from tests import ceilings

PROBE = """
import sys
sys.argv = ["qwen", *{args!r}]
from qwencli.cli import main
try:
    main()
except SystemExit:
    pass
sys.stdout.flush()
print(sorted(m for m in sys.modules if m.startswith("qwencli")), file=sys.__stderr__)
"""


def _modules_after(*args: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=list(args))],
                            capture_output=True, text=True, timeout=ceilings.PROCESS_S, check=True)
    return set(eval(result.stderr.strip().splitlines()[-1]))


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
    assert "MODEL" in arguments and "--ctx" in options and "--ctx" not in whatif
    listed = {line.split()[0] for line in whatif.splitlines() if line.startswith("  --")}
    assert listed == {"--ram", "--vram", "--gpus", "--gpu", "--unified", "--cpu-only",
                      "--hardware"}
    assert not {line.split()[0] for line in options.splitlines()
                if line.startswith("  --")} & listed
