"""`qwen bench`: measure this machine with a model loaded as `qwen chat` loads it, and keep the
result as this machine's calibration (or forget it with --reset)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from qwencli.cli._common import (
    JsonOpt,
    command,
    command_app,
    lazy_machine,
    say_lost_workers,
    speed_calibration,
    worker_options,
)

if TYPE_CHECKING:
    from qwencli.hardware.cluster import WorkerOptions

app = command_app()


@command(app, "bench")
@worker_options
def bench(
    model: Annotated[Optional[str], typer.Argument(  # noqa: UP045 - typer needs Optional
        metavar="[MODEL]",
        help="A catalog name, a Hub reference or a .gguf file (default: the model `qwen chat` "
             "would use). It must be downloaded.", show_default=False)] = None,
    ctx: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--ctx", metavar="N", min=256,
        help="Context size in tokens (default: what `qwen chat` uses).")] = None,
    prompt_tokens: Annotated[int, typer.Option(
        "--prompt-tokens", metavar="N", min=1, max=1_000_000,
        help="Prompt batch to time (like llama-bench's pp512).")] = 512,
    gen_tokens: Annotated[int, typer.Option(
        "--gen-tokens", metavar="N", min=1, max=1_000_000,
        help="Tokens to decode (like llama-bench's tg128).")] = 128,
    depth: Annotated[Optional[list[int]], typer.Option(  # noqa: UP045
        "--depth", metavar="N", min=0,
        help="Also measure after N tokens of context; repeat for several (default: half the "
             "context; 0 alone: only the empty context).")] = None,
    repetitions: Annotated[int, typer.Option(
        "--repetitions", "-r", metavar="N", min=1, max=100,
        help="Runs of each test; the median counts.")] = 3,
    threads: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--threads", "-t", metavar="N", min=1, max=1024,
        help="CPU threads (default: what `qwen chat` uses; a calibration is kept per thread "
             "count).")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="One short run at an empty context: a usable calibration in seconds "
                        "on a small model.")] = False,
    no_save: Annotated[bool, typer.Option(
        "--no-save", help="Measure only; leave the calibration as it is.")] = False,
    reset: Annotated[bool, typer.Option(
        "--reset", help="Forget this machine's calibration and exit.")] = False,
    json_output: JsonOpt = False,
    *,
    workers: WorkerOptions,
) -> None:
    """Measure prompt and decode speed, load time, time to first token and memory here, beside
    the estimate; `qwen fit` and `qwen recommend` then use the measurement.

    Examples:

      qwen bench

      qwen bench qwen3-0.6b --quick

      qwen bench ./model.gguf --depth 0 --depth 4096 --json

      qwen bench --reset
    """
    from qwencli import output, reports

    if reset:
        from qwencli.calibration import calibration_path
        from qwencli.calibration import reset as forget

        removed = forget()
        if json_output:
            output.print_json(reports.bench_reset_document(removed, calibration_path()))
        else:
            output.info(f"forgot this machine's calibration ({calibration_path()})" if removed
                        else "no calibration was stored")
        return
    from qwencli.bench import BenchRequest, run_bench
    from qwencli.calibration import CalibrationError, record_from, store
    from qwencli.hardware.whatif import WhatIf

    say_lost_workers()
    get_machine = lazy_machine(WhatIf(workers=workers))
    hardware, _budget = get_machine()
    if hardware.workers and not no_save:
        # A run across machines measures the network too: it is not this machine's speed.
        output.info("not stored as this machine's calibration: the run uses workers (--rpc)")
        no_save = True
    request = BenchRequest(model=model, ctx=ctx, prompt_tokens=prompt_tokens,
                           gen_tokens=gen_tokens, depths=tuple(depth) if depth else None,
                           repetitions=repetitions, threads=threads, quick=quick)
    # The estimates beside the figures are the uncalibrated ones: the ratios are what the
    # calibration learns.
    result = run_bench(request, machine=get_machine, calibrate=speed_calibration,
                       progress=output.info)
    stored = None
    if not no_save:
        try:
            stored = store(record_from(result, hardware), hardware, result.threads)
        except CalibrationError as exc:
            output.warn(f"nothing stored: {exc}")
    if json_output:
        output.print_json(reports.bench_document(result, stored))
    else:
        output.print_report(reports.bench_sections(result, stored))
