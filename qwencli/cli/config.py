"""`qwen config`: show or change the settings in the config file."""

from __future__ import annotations

from typing import Annotated

import typer

from qwencli.cli._common import command, command_app

KEY_HELP = "The setting: default-model or log."

app = command_app(
    name="config", no_args_is_help=True,
    help="Show or change qwen's settings (the config file in the config directory).")


@command(app, "get")
def config_get(key: Annotated[str, typer.Argument(help=KEY_HELP)]) -> None:
    """Print a setting's value (exit 1 when it is not set).

    Example: qwen config get default-model
    """
    from qwencli import config, output

    value = config.get_value(key)
    if value is None:
        output.error(f"{key} is not set")
        raise typer.Exit(1)
    output.write(f"{value}\n")


@command(app, "set")
def config_set(key: Annotated[str, typer.Argument(help=KEY_HELP)],
               value: Annotated[str, typer.Argument(help="The value.")]) -> None:
    """Change a setting.

    Example: qwen config set default-model qwen3-8b:q4_k_m
    """
    from qwencli import config, output

    stored = config.set_value(key, value)
    output.info(f"{key} = {_shown(stored)}")


@command(app, "unset")
def config_unset(key: Annotated[str, typer.Argument(help=KEY_HELP)]) -> None:
    """Remove a setting (back to the built-in behaviour).

    Example: qwen config unset default-model
    """
    from qwencli import config, output

    removed = config.unset_value(key)
    output.info(f"{key} {'unset' if removed else 'was not set'}")


@command(app, "list")
def config_list(json_output: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document on stdout.")] = False) -> None:
    """Every setting, with its value and what it does."""
    from qwencli import config, output

    data = config.load_config()
    if json_output:
        output.print_json({"path": str(config.config_path()),
                           "settings": {key: data.get(key) for key in config.KEYS}})
        return
    for key, (describe, _check) in config.KEYS.items():
        value = data.get(key)
        output.write(f"{key} = {_shown(value) if value is not None else '(not set)'}\n")
        output.info(f"  {describe}")


@command(app, "path")
def config_path() -> None:
    """Print where the config file lives."""
    from qwencli import config, output

    output.write(f"{config.config_path()}\n")


def _shown(value: object) -> str:
    """A setting as it is typed: booleans as true/false."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
