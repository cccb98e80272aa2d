"""The `qwen` command line: the app, `main`, and the command modules, loaded when used.

Each command group lives in its own module (`hw`, `plan`, `hub`, `chat`, `logs`, `serve`,
`config`, `worker`) with its own small Typer app; `COMMANDS` says where each command is, and
the group imports a module only when one of its commands runs or is described, so `qwen hw`
never imports the chat code. Commands are thin: parse, call one library function, render
through `output`; errors are mapped once, in `_common.handle_errors`.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from qwencli import __version__

#: command name -> the module that defines it, in the order `qwen --help` lists them.
COMMANDS = {
    "hw": "hw",
    "recommend": "plan",
    "fit": "plan",
    "models": "plan",
    "pull": "hub",
    "list": "hub",
    "rm": "hub",
    "chat": "chat",
    "logs": "logs",
    "serve": "serve",
    "bench": "bench",
    "config": "config",
    "worker": "worker",
}


class LazyGroup(TyperGroup):
    """A group whose commands are imported from their modules on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        group = _module_group(module_name)
        if cmd_name == module_name and not group.commands.get(cmd_name):
            group.name = cmd_name  # a command group of its own (`qwen config ...`)
            return group
        return group.commands.get(cmd_name)


@functools.cache
def _module_group(module_name: str) -> Any:
    """A command module's commands, built once (`qwen --help` asks for each of them)."""
    module = importlib.import_module(f"qwencli.cli.{module_name}")
    return typer.main.get_group(module.app)


app = typer.Typer(
    name="qwen",
    cls=LazyGroup,
    help="Pick, download and chat with the right Qwen model for this computer.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help text everywhere: Typer's Rich help costs ~70 ms of imports and rendering, which
    # put `qwen --help` over its 0.15 s budget on a terminal; plain text reads the same.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        from qwencli import output

        output.write(f"qwen {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", help="Print the version and exit.", is_eager=True,
        callback=_version_callback)] = False,
) -> None:
    """Pick, download and chat with the right Qwen model for this computer."""


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    from qwencli.errors import EXIT_INTERRUPTED, StdoutClosed

    try:
        return app(args=argv)
    except KeyboardInterrupt:
        from qwencli import output

        output.interrupted()
        sys.exit(EXIT_INTERRUPTED)
    except StdoutClosed as exc:
        sys.exit(exc.exit_code)
