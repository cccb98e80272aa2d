"""`qwen recommend`, `qwen fit`, `qwen models`: which model and quant, and how it fits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from qwencli.cli import _complete
from qwencli.cli._common import (
    JsonOpt,
    command,
    command_app,
    finite,
    machine,
    speed_calibration,
    whatif_options,
)
from qwencli.errors import UsageError

if TYPE_CHECKING:
    from qwencli.hardware.whatif import WhatIf

app = command_app()

UseOpt = Annotated[str, typer.Option(
    "--use", metavar="USE", help="What the model is for: chat, code, math or reasoning.",
    autocompletion=_complete.uses)]
CtxOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045 - typer needs Optional on 3.10
    "--ctx", metavar="N", min=256, help="Context length in tokens.")]


def _check_use(use: str) -> str:
    from qwencli.recommend import USES

    if use not in USES:
        raise UsageError(f"--use {use!r} is not one of {', '.join(USES)}")
    return use


@command(app, "recommend")
@whatif_options
def recommend(
    use: UseOpt = "chat",
    ctx: CtxOpt = None,
    min_speed: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--min-speed", metavar="TOK/S", min=0,
        help="Slowest acceptable decode speed, tokens/s (default 10; when nothing here "
             "reaches the default, the best of what runs is shown, marked as slower).")
    ] = None,
    top: Annotated[int, typer.Option("--top", metavar="K", min=1,
                                     help="How many picks to show.")] = 5,
    think: Annotated[Optional[bool], typer.Option(  # noqa: UP045
        "--think/--no-think", show_default=False,
        help="Rank models that can switch by their thinking (or non-thinking) quality figure; "
             "default: the mode the chat runs (thinking for --use reasoning, else each "
             "model's default).")] = None,
    json_output: JsonOpt = False,
    *,
    whatif: WhatIf,
) -> None:
    """Rank the Qwen models and quants that fit this machine, with the memory plan and speed.

    Quality is Qwen's published MMLU-Pro for the mode the chat will run, or a named fallback
    where Qwen publishes none; the reasons say which figure and mode were used.

    Examples:

      qwen recommend

      qwen recommend --use code --ctx 32768

      qwen recommend --no-think

      qwen recommend --hardware apple-m2-8gb --json
    """
    from qwencli import output, reports
    from qwencli.catalog import load_catalog
    from qwencli.recommend import DEFAULT_MIN_SPEED, rank, workers_pick

    _check_use(use)
    finite("--min-speed", min_speed)
    hardware, budget = machine(whatif)
    catalog = load_catalog()
    calibration = speed_calibration(hardware, whatif)
    picks = rank(catalog, hardware, budget, use=use, ctx=ctx, min_speed=min_speed, top=top,
                 think=think, calibration=calibration)
    added = workers_pick(catalog, hardware, budget, use=use, ctx=ctx, min_speed=min_speed,
                         think=think, calibration=calibration, first=picks[0]) if picks else None
    floor = DEFAULT_MIN_SPEED if min_speed is None else min_speed
    if json_output:
        output.print_json(reports.recommend_document(picks, hardware, budget, use, ctx, floor,
                                                     added))
    else:
        output.print_report(reports.recommend_sections(picks, hardware, use, ctx, floor, added))


@command(app, "fit")
@whatif_options
def fit(
    model: Annotated[str, typer.Argument(
        metavar="MODEL", autocompletion=_complete.models,
        help="qwen3-8b, qwen3-8b:Q5_K_M, Qwen/Qwen3-8B-GGUF:Q4_K_M, owner/repo/file.gguf, "
             "or a path to a .gguf file.")],
    ctx: CtxOpt = None,
    gpu_layers: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--gpu-layers", metavar="N", min=0,
        help="Put N layers on the GPU instead of the most that fit.")] = None,
    kv_type: Annotated[str, typer.Option(
        "--kv-type", metavar="TYPE", help="KV cache type: f16, q8_0 or q4_0.")] = "f16",
    print_llama_args: Annotated[bool, typer.Option(
        "--print-llama-args",
        help="Print only the llama.cpp arguments (llama-server, llama-cli) for this plan.")
    ] = False,
    prompt_tokens: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--prompt-tokens", metavar="N", min=1, max=10_000_000,
        help="A prompt of N tokens: how long until the first token of the answer.")] = None,
    json_output: JsonOpt = False,
    *,
    whatif: WhatIf,
) -> None:
    """The memory plan for one model: will it fit, how many layers go to the GPU, how fast.

    Without a quant, plans the one `qwen pull` and `qwen chat -m` would use here. Reads the
    GGUF header where it can (a local file, a download, the Hub by HTTP Range) and falls back
    to catalog figures; the output says which.

    Examples:

      qwen fit qwen3-8b

      qwen fit qwen3-14b:Q4_K_M --ctx 32768 --gpu "RTX 4090"

      qwen fit ./model.gguf --json

      llama-server $(qwen fit qwen3-30b-a3b --print-llama-args)

      qwen fit qwen3-8b --prompt-tokens 20000
    """
    from qwencli import output, reports
    from qwencli.catalog import load_catalog
    from qwencli.planner import fit_model

    if kv_type not in ("f16", "q8_0", "q4_0"):
        raise UsageError(f"--kv-type {kv_type!r} is not one of f16, q8_0, q4_0")
    hardware, budget = machine(whatif)
    result = fit_model(model, load_catalog(), hardware, budget, ctx=ctx, gpu_layers=gpu_layers,
                       kv_type=kv_type, prompt_tokens=prompt_tokens,
                       calibration=speed_calibration(hardware, whatif))
    if print_llama_args and json_output:
        raise UsageError("--print-llama-args and --json are two different outputs; give one")
    if print_llama_args:
        import shlex

        output.write(shlex.join(reports.llama_args(result)) + "\n")
    elif json_output:
        output.print_json(reports.fit_document(result))
    else:
        output.print_report(reports.fit_sections(result, hardware))


@command(app, "models")
def models(
    use: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--use", metavar="USE", help="Only models for chat, code, math or reasoning.",
        autocompletion=_complete.uses)] = None,
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
