"""The `qwen` command line: parse, call one library function, hand the result to `output`.

Errors are mapped once, here: a `QwenError` becomes one line on stderr and its exit code; Ctrl-C
exits 130; anything unexpected is one line too unless QWEN_DEBUG=1 asks for the traceback.
Heavy modules are imported inside the commands so that `qwen --help` starts fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar

import typer

from qwencli import __version__
from qwencli.errors import EXIT_ERROR, EXIT_INTERRUPTED, QwenError
from qwencli.output import wants_rich

app = typer.Typer(
    name="qwen",
    help="Pick, download and chat with the right Qwen model for this computer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Rich help only on a colour terminal; pipes and NO_COLOR get plain text (and a faster start).
    rich_markup_mode="rich" if wants_rich(sys.stdout) else None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Map domain errors and Ctrl-C to a message and an exit code, at the edge only."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from qwencli import output

        try:
            return func(*args, **kwargs)
        except QwenError as exc:
            output.error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("\ninterrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if os.environ.get("QWEN_DEBUG"):
                raise
            output.error(f"unexpected {type(exc).__name__}: {exc}",
                         "run again with QWEN_DEBUG=1 for the traceback, and report it")
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def _size_option(text: str) -> int:
    from qwencli.units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"qwen {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", help="Print the version and exit.", is_eager=True,
        callback=_version_callback)] = False,
) -> None:
    """Pick, download and chat with the right Qwen model for this computer."""


WHATIF = "What-if hardware (replace probed values)"

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
RamOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045 - typer needs Optional on 3.10
    "--ram", metavar="SIZE", parser=_size_option, rich_help_panel=WHATIF,
    help="System RAM, e.g. 16GB, 16GiB, 16G, 16384MB (with --unified: the shared pool).")]
VramOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--vram", metavar="SIZE", parser=_size_option, rich_help_panel=WHATIF,
    help="Memory per GPU, e.g. 24GB.")]
GpusOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--gpus", metavar="N", min=1, max=16, rich_help_panel=WHATIF, help="Number of GPUs.")]
GpuOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--gpu", metavar="NAME", rich_help_panel=WHATIF,
    help='A known GPU, e.g. "RTX 4090" (fills in memory and bandwidth).')]
UnifiedOpt = Annotated[bool, typer.Option(
    "--unified", rich_help_panel=WHATIF,
    help="Apple-style unified memory: GPU and CPU share --ram.")]
CpuOnlyOpt = Annotated[bool, typer.Option(
    "--cpu-only", rich_help_panel=WHATIF, help="Ignore all GPUs.")]
HardwareOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--hardware", metavar="NAME", rich_help_panel=WHATIF,
    help="A named machine from profiles/hardware (e.g. desktop-rtx4090-64gb).")]


def _whatif(ram: int | None, vram: int | None, gpus: int | None, gpu: str | None,
            unified: bool, cpu_only: bool, hardware: str | None):  # -> WhatIf
    from qwencli.hardware.whatif import WhatIf

    return WhatIf(ram_bytes=ram, vram_bytes=vram, gpu_count=gpus, gpu_name=gpu,
                  unified=unified, cpu_only=cpu_only, hardware=hardware)


@app.command()
@handle_errors
def hw(
    json_output: JsonOpt = False,
    ram: RamOpt = None,
    vram: VramOpt = None,
    gpus: GpusOpt = None,
    gpu: GpuOpt = None,
    unified: UnifiedOpt = False,
    cpu_only: CpuOnlyOpt = False,
    hardware: HardwareOpt = None,
) -> None:
    """Show what this machine has: CPU, memory, GPUs, the llama.cpp build, and the budget.

    Examples:

      qwen hw

      qwen hw --json

      qwen hw --hardware apple-m2-8gb
    """
    from qwencli import output, reports
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.hardware.whatif import resolve_hardware

    machine = resolve_hardware(_whatif(ram, vram, gpus, gpu, unified, cpu_only, hardware), probe)
    budget = plan_budget(machine)
    for warning in machine.warnings:
        output.warn(warning)
    if json_output:
        output.print_json(reports.hardware_document(machine, budget))
    else:
        output.print_report(reports.hardware_sections(machine, budget))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.exit(EXIT_INTERRUPTED)
