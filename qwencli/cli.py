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
from qwencli.errors import EXIT_ERROR, EXIT_INTERRUPTED, QwenError, UsageError

app = typer.Typer(
    name="qwen",
    help="Pick, download and chat with the right Qwen model for this computer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text everywhere: Typer's Rich help costs ~70 ms of imports and rendering, which
    # put `qwen --help` over its 0.15 s budget on a terminal; plain text reads the same.
    rich_markup_mode=None,
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

def _machine(ram: int | None, vram: int | None, gpus: int | None, gpu: str | None,
             unified: bool, cpu_only: bool, hardware: str | None):  # -> (Hardware, Budget)
    """The machine to plan for: probed, or described by the what-if options."""
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.hardware.whatif import resolve_hardware

    machine = resolve_hardware(_whatif(ram, vram, gpus, gpu, unified, cpu_only, hardware), probe)
    return machine, plan_budget(machine)


UseOpt = Annotated[str, typer.Option(
    "--use", metavar="USE", help="What the model is for: chat, code, math or reasoning.")]
CtxOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--ctx", metavar="N", min=256, help="Context length in tokens.")]


def _check_use(use: str) -> str:
    from qwencli.recommend import USES

    if use not in USES:
        raise UsageError(f"--use {use!r} is not one of {', '.join(USES)}")
    return use


@app.command()
@handle_errors
def recommend(
    use: UseOpt = "chat",
    ctx: CtxOpt = None,
    min_speed: Annotated[float, typer.Option(
        "--min-speed", metavar="TOK/S", min=0,
        help="Slowest acceptable decode speed, tokens/s.")] = 10.0,
    top: Annotated[int, typer.Option("--top", metavar="K", min=1,
                                     help="How many picks to show.")] = 5,
    json_output: JsonOpt = False,
    ram: RamOpt = None,
    vram: VramOpt = None,
    gpus: GpusOpt = None,
    gpu: GpuOpt = None,
    unified: UnifiedOpt = False,
    cpu_only: CpuOnlyOpt = False,
    hardware: HardwareOpt = None,
) -> None:
    """Rank the Qwen models and quants that fit this machine, with the memory plan and speed.

    Examples:

      qwen recommend

      qwen recommend --use code --ctx 32768

      qwen recommend --hardware apple-m2-8gb --json
    """
    from qwencli import output, reports
    from qwencli.catalog import load_catalog
    from qwencli.recommend import rank

    _check_use(use)
    machine, budget = _machine(ram, vram, gpus, gpu, unified, cpu_only, hardware)
    for warning in machine.warnings:
        output.warn(warning)
    picks = rank(load_catalog(), machine, budget, use=use, ctx=ctx, min_speed=min_speed,
                 top=top)
    if json_output:
        output.print_json(reports.recommend_document(picks, machine, budget, use, ctx,
                                                     min_speed))
    else:
        output.print_report(reports.recommend_sections(picks, machine, use, ctx, min_speed))


@app.command()
@handle_errors
def fit(
    model: Annotated[str, typer.Argument(
        metavar="MODEL",
        help="qwen3-8b, qwen3-8b:Q5_K_M, Qwen/Qwen3-8B-GGUF:Q4_K_M, owner/repo/file.gguf, "
             "or a path to a .gguf file.")],
    ctx: CtxOpt = None,
    gpu_layers: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--gpu-layers", metavar="N", min=0,
        help="Put N layers on the GPU instead of the most that fit.")] = None,
    kv_type: Annotated[str, typer.Option(
        "--kv-type", metavar="TYPE", help="KV cache type: f16, q8_0 or q4_0.")] = "f16",
    json_output: JsonOpt = False,
    ram: RamOpt = None,
    vram: VramOpt = None,
    gpus: GpusOpt = None,
    gpu: GpuOpt = None,
    unified: UnifiedOpt = False,
    cpu_only: CpuOnlyOpt = False,
    hardware: HardwareOpt = None,
) -> None:
    """The memory plan for one model: will it fit, how many layers go to the GPU, how fast.

    Reads the GGUF header where it can (a local file, a download, the Hub by HTTP Range) and
    falls back to catalog figures; the output says which.

    Examples:

      qwen fit qwen3-8b

      qwen fit qwen3-14b:Q4_K_M --ctx 32768 --gpu RTX 4090

      qwen fit ./model.gguf --json
    """
    from qwencli import output, reports
    from qwencli.catalog import load_catalog
    from qwencli.fit import KV_TYPE_BYTES
    from qwencli.planner import fit_model

    if kv_type not in ("f16", "q8_0", "q4_0") or kv_type not in KV_TYPE_BYTES:
        raise UsageError(f"--kv-type {kv_type!r} is not one of f16, q8_0, q4_0")
    machine, budget = _machine(ram, vram, gpus, gpu, unified, cpu_only, hardware)
    for warning in machine.warnings:
        output.warn(warning)
    result = fit_model(model, load_catalog(), machine, budget, ctx=ctx, gpu_layers=gpu_layers,
                       kv_type=kv_type)
    if json_output:
        output.print_json(reports.fit_document(result))
    else:
        output.print_report(reports.fit_sections(result, machine))


@app.command()
@handle_errors
def models(
    use: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--use", metavar="USE", help="Only models for chat, code, math or reasoning.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """List the Qwen models in the catalog.

    Examples:

      qwen models

      qwen models --use code --json
    """
    from qwencli import output, reports
    from qwencli.catalog import load_catalog

    if use is not None:
        _check_use(use)
    found = load_catalog().models(use)
    if json_output:
        output.print_json(reports.models_document(found))
    else:
        output.print_report(reports.models_sections(found, use))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.exit(EXIT_INTERRUPTED)


# Commands that live in their own modules register themselves on the app (imports stay lazy).
from qwencli.cli_hub import register as _register_hub  # noqa: E402

_register_hub(app)

from qwencli.cli_chat import register as _register_chat  # noqa: E402

_register_chat(app)
