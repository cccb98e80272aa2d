"""What every command shares: errors mapped at the edge, the what-if options, the machine.

Commands raise domain errors (`QwenError`); `handle_errors` turns them into one line on stderr
and the documented exit code, once, here. Only typer and the light bottom modules are imported
at module level, so that `qwen --help` stays fast.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer
from typer.core import TyperCommand

from qwencli.cli import _complete
from qwencli.errors import EXIT_ERROR, EXIT_INTERRUPTED, QwenError, StdoutClosed, UsageError

if TYPE_CHECKING:
    from qwencli.fit import SpeedCalibration
    from qwencli.hardware.model import Budget, Hardware
    from qwencli.hardware.whatif import WhatIf

F = TypeVar("F", bound=Callable[..., Any])


def _debug() -> bool:
    """QWEN_DEBUG=1 shows tracebacks; a value that is neither yes nor no counts as yes here
    (the person is already debugging)."""
    from qwencli.envvars import env_bool

    try:
        return env_bool("QWEN_DEBUG")
    except UsageError:
        return True


def handle_errors(func: F) -> F:
    """Map domain errors, Ctrl-C and a closed stdout to a message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from qwencli import output  # here, not at module level: `qwen --help` never needs it

        try:
            return func(*args, **kwargs)
        except QwenError as exc:
            output.error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            output.interrupted()
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except StdoutClosed as exc:
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            if _debug():
                raise
            mapped = output.write_error(exc)
            if mapped is not None:  # stdout went away or cannot be written
                raise typer.Exit(mapped) from None
            output.error(f"unexpected {type(exc).__name__}: {exc}",
                         "run again with QWEN_DEBUG=1 for the traceback, and report it")
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


class PanelCommand(TyperCommand):
    """Plain help that still groups options under their panel ("What-if hardware", ...):
    Typer draws panels only with Rich, which costs `qwen --help` its start-up budget."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                title = getattr(param, "rich_help_panel", None) or (
                    "Arguments" if param.param_type_name == "argument" else "Options")
                panels.setdefault(title, []).append(record)
        order = {"Arguments": 0, "Options": 1}
        for title, records in sorted(panels.items(), key=lambda item: order.get(item[0], 2)):
            with formatter.section(title):
                formatter.write_dl(records)


def command_app(**kwargs: Any) -> typer.Typer:
    """A command module's own small app: plain help (see PanelCommand), no completion."""
    return typer.Typer(rich_markup_mode=None, add_completion=False,
                       pretty_exceptions_enable=False, **kwargs)


def command(app: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """`app.command` with plain grouped help and the error mapping."""

    def register(func: F) -> F:
        app.command(name, cls=PanelCommand, **kwargs)(handle_errors(func))
        return func

    return register


def finite(option: str, value: float | None) -> float | None:
    """inf and nan parse as floats; no option of qwen means them."""
    import math

    if value is not None and not math.isfinite(value):
        raise UsageError(f"{option} must be a finite number, not {value}")
    return value


def size_option(text: str) -> int:
    from qwencli.units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


WHATIF_PANEL = "What-if hardware (replace probed values)"
WORKERS_PANEL = "Other machines (llama.cpp RPC workers, see `qwen worker`)"

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; answer yes.")]

_WHATIF_PARAMS = {
    "ram": (Annotated[Optional[int], typer.Option(  # noqa: UP045 - typer needs Optional on 3.10
        "--ram", metavar="SIZE", parser=size_option, rich_help_panel=WHATIF_PANEL,
        help="System RAM, e.g. 16GB, 16GiB, 16G, 16384MB (with --unified: the shared pool).")],
        None),
    "vram": (Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--vram", metavar="SIZE", parser=size_option, rich_help_panel=WHATIF_PANEL,
        help="Memory per GPU, e.g. 24GB.")], None),
    "gpus": (Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--gpus", metavar="N", min=1, max=16, rich_help_panel=WHATIF_PANEL,
        help="Number of GPUs.")], None),
    "gpu": (Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--gpu", metavar="NAME", rich_help_panel=WHATIF_PANEL,
        help='A known GPU, e.g. "RTX 4090" (fills in memory and bandwidth).')], None),
    "unified": (Annotated[bool, typer.Option(
        "--unified", rich_help_panel=WHATIF_PANEL,
        help="Apple-style unified memory: GPU and CPU share --ram.")], False),
    "cpu_only": (Annotated[bool, typer.Option(
        "--cpu-only", rich_help_panel=WHATIF_PANEL, help="Ignore all GPUs.")], False),
    "hardware": (Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--hardware", metavar="NAME", rich_help_panel=WHATIF_PANEL,
        autocompletion=_complete.hardware_profiles,
        help="A named machine from profiles/hardware (e.g. desktop-rtx4090-64gb).")], None),
}


_RPC_PARAM = (Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--rpc", metavar="HOST:PORT[,...]", rich_help_panel=WORKERS_PANEL,
    help="Also use these workers' devices (`qwen worker` on each machine); their free "
         "memory and link are asked over the network. Trusted networks only: llama.cpp's "
         "RPC has no authentication.")], None)
_LINK_PARAM = (Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--link", metavar="PRESET|BANDWIDTH,RTT", rich_help_panel=WORKERS_PANEL,
    help="The network to the workers: 10gbe, 2.5gbe, 1gbe, wifi, thunderbolt, loopback, or "
         "e.g. 1.25GB/s,0.2ms (default: measured for --rpc, 1gbe for --rpc-whatif).")], None)
_WORKER_PARAMS = {
    "rpc": _RPC_PARAM,
    "rpc_whatif": (Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--rpc-whatif", metavar="SPEC[,...]", rich_help_panel=WORKERS_PANEL,
        help="Plan with imagined workers: sizes (64GB: a machine like this one, or like "
             "--hardware, with that much memory) or hardware profile names "
             "(apple-m3-max-64gb).")], None),
    "link": _LINK_PARAM,
}
# `qwen chat`, `serve` and `bench` run the model: real workers only.
_RUN_WORKER_PARAMS = {"rpc": _RPC_PARAM, "link": (Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--link", metavar="PRESET|BANDWIDTH,RTT", rich_help_panel=WORKERS_PANEL,
    help="The network to the workers, for the plan: 10gbe, 2.5gbe, 1gbe, wifi, thunderbolt, "
         "loopback, or e.g. 1.25GB/s,0.2ms (default: measured).")], None)}


def _with_params(func: Callable[..., Any], replaced: str,
                 extra: dict[str, tuple[Any, Any]],
                 build: Callable[[dict[str, Any]], Any]) -> Any:
    """`func` with its `replaced` parameter turned into the options in `extra` (typer reads
    the signature), built back into one value by `build` at the call."""
    signature = inspect.signature(func)
    params = [p.replace(annotation=eval(p.annotation, func.__globals__))
              if isinstance(p.annotation, str) else p
              for p in signature.parameters.values() if p.name != replaced]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=annotation)
               for name, (annotation, default) in extra.items()]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, default)
                  for name, (_annotation, default) in extra.items()}
        return func(*args, **{replaced: build(values)}, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def whatif_options(func: F) -> F:
    """Give a command the what-if options, written once here (machines, and other machines'
    workers): the command takes one `whatif: WhatIf` parameter instead of ten."""

    def build(values: dict[str, Any]) -> Any:
        from qwencli.hardware.cluster import WorkerOptions
        from qwencli.hardware.whatif import WhatIf

        return WhatIf(ram_bytes=values["ram"], vram_bytes=values["vram"],
                      gpu_count=values["gpus"], gpu_name=values["gpu"],
                      unified=values["unified"], cpu_only=values["cpu_only"],
                      hardware=values["hardware"],
                      workers=WorkerOptions.parse(values["rpc"], values["rpc_whatif"],
                                                  values["link"]))

    return _with_params(func, "whatif", {**_WHATIF_PARAMS, **_WORKER_PARAMS}, build)


def worker_options(func: F) -> F:
    """`--rpc` and `--link` for the commands that run a model (chat, serve, bench): the command
    takes one `workers: WorkerOptions` parameter. What-if workers cannot run a model, so
    `--rpc-whatif` is for `fit` and `recommend`."""

    def build(values: dict[str, Any]) -> Any:
        from qwencli.hardware.cluster import WorkerOptions

        return WorkerOptions.parse(values["rpc"], None, values["link"])

    return _with_params(func, "workers", _RUN_WORKER_PARAMS, build)


def machine(whatif: WhatIf | None = None) -> tuple[Hardware, Budget]:
    """The machine to plan for: probed, or described by the what-if options. Its warnings
    (a what-if that contradicts itself, a probe that failed in part) are shown once, here."""
    from qwencli import output
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.hardware.whatif import WhatIf, resolve_hardware

    whatif = whatif or WhatIf()
    hw = resolve_hardware(whatif, probe)
    if whatif.workers.endpoints:  # real workers: a model may be loaded with them
        from qwencli.rpc.threads import quiet_idle_threads

        quiet_idle_threads()
    if not whatif.workers.is_empty():
        from dataclasses import replace

        from qwencli.hardware.cluster import resolve_workers
        from qwencli.rpc import probe as probe_worker  # asks a real worker (--rpc)

        workers = resolve_workers(whatif.workers, hw, probe_worker)
        hw = replace(hw, workers=workers,
                     source=f"{hw.source} + workers ({whatif.workers.describe()})")
    for warning in hw.warnings:
        output.warn(warning)
    return hw, plan_budget(hw)


def lazy_machine(whatif: WhatIf | None = None) -> Callable[[], tuple[Hardware, Budget]]:
    """`machine`, probed on the first call only (some commands never need it)."""
    found: list[tuple[Hardware, Budget]] = []

    def get() -> tuple[Hardware, Budget]:
        if not found:
            found.append(machine(whatif))
        return found[0]

    return get


# --------------------------------------------------------------------------------------------
# Loading a model: the options `qwen chat` and `qwen serve` share (one definition each)

MODEL_PANEL = "Model and hardware"
KV_TYPES = ("f16", "q8_0", "q4_0")


def _kv_type(value: str) -> str:
    if value not in KV_TYPES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(KV_TYPES)}")
    return value


ModelOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--model", "-m", metavar="MODEL", rich_help_panel=MODEL_PANEL,
    autocompletion=_complete.models,
    help="A catalog name (qwen3-8b, qwen3-8b:q5_k_m), a Hub reference "
         "(Qwen/Qwen3-8B-GGUF:Q4_K_M) or a .gguf file. Default: $QWEN_MODEL, the "
         "config's default-model, the best downloaded model, the top recommendation.")]
DownloadYesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", rich_help_panel=MODEL_PANEL,
    help="Download the model without asking when it is missing.")]
GpuLayersOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--gpu-layers", metavar="N", min=-1, rich_help_panel=MODEL_PANEL,
    help="Layers to offload to the GPU (-1: all; default: as many as fit).")]
ThreadsOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--threads", "-t", metavar="N", min=1, max=1024, rich_help_panel=MODEL_PANEL,
    help="CPU threads (default: the physical cores this process may use).")]
KvTypeOpt = Annotated[str, typer.Option(
    "--kv-type", metavar="TYPE", callback=_kv_type, rich_help_panel=MODEL_PANEL,
    help="KV cache type: f16, q8_0 or q4_0 (q8_0 halves the cache's memory).")]


def ctx_option(default: str) -> Any:
    """`--ctx N`; `default` says what happens without it (chat and serve differ)."""
    return Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--ctx", metavar="N", min=256, rich_help_panel=MODEL_PANEL,
        help=f"Context size in tokens (default: {default}).")]


def speed_calibration(hw: Hardware, whatif: WhatIf | None = None) -> SpeedCalibration | None:
    """What `qwen bench` measured here, for the probed machine only: a what-if machine is
    not this one, so it is planned from the uncalibrated constants. A stored file that cannot
    be used is a warning, and the estimate goes on uncalibrated."""
    from qwencli import output
    from qwencli.calibration import load
    from qwencli.hardware.cpu import default_threads

    if (whatif is not None and whatif.imagined()) or hw.source != "probed":
        return None
    loaded = load(hw, default_threads(hw.cpu.physical_cores))
    if loaded.warning:
        output.warn(loaded.warning)
    return loaded.calibration.speed if loaded.calibration is not None else None


def say_lost_workers() -> None:
    """A worker lost while this command runs a model on it is said in one line (the process
    then ends with exit code 1: llama.cpp cannot go on without it)."""
    from qwencli import output
    from qwencli.rpc.runtime import on_worker_lost

    on_worker_lost(lambda error: output.error(error.message, error.hint))
