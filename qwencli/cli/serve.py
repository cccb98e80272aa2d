"""`qwen serve`: parse the options, hand them to `serve.server.run_server`, exit with its code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from qwencli.cli._common import (
    DownloadYesOpt,
    GpuLayersOpt,
    KvTypeOpt,
    ModelOpt,
    ThreadsOpt,
    command,
    command_app,
    ctx_option,
    lazy_machine,
    say_lost_workers,
    speed_calibration,
    worker_options,
)

if TYPE_CHECKING:
    from qwencli.hardware.cluster import WorkerOptions

app = command_app()

SERVER_PANEL = "Server"
CtxOpt = ctx_option("the largest the plan allows here, at most the model's")

SERVE_HELP = """Serve a Qwen model over an OpenAI-compatible HTTP API.

The model is chosen and loaded as `qwen chat` would (same plan, same presets, thinking in
`reasoning_content`). Requests queue and are answered one at a time, in order of arrival.
Binds 127.0.0.1 unless --host says otherwise; set a key before exposing it.

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health.

Exit codes: 0 after SIGTERM, 130 after Ctrl-C, 1 when the model cannot be loaded or the
address is in use, 2 for a bad option.

Examples:

  qwen serve -m qwen3-8b

  qwen serve --host 0.0.0.0 --port 8000 --api-key-file ~/.config/qwen/key

  curl http://127.0.0.1:8080/v1/models
"""


@command(app, "serve", help=SERVE_HELP)
@worker_options
def serve(
    model: ModelOpt = None,
    yes: DownloadYesOpt = False,
    ctx: CtxOpt = None,
    gpu_layers: GpuLayersOpt = None,
    threads: ThreadsOpt = None,
    kv_type: KvTypeOpt = "f16",
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDRESS", rich_help_panel=SERVER_PANEL,
        help="Address to listen on (0.0.0.0: every network; warns without a key).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", "-p", metavar="PORT", min=0, max=65535, rich_help_panel=SERVER_PANEL,
        help="TCP port (0: any free one; the start-up line says which).")] = 8080,
    api_key: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--api-key", metavar="KEY", rich_help_panel=SERVER_PANEL, envvar="QWEN_API_KEY",
        show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on /v1 requests (prefer --api-key-file: "
             "a command line is visible to other users).")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--api-key-file", metavar="FILE", rich_help_panel=SERVER_PANEL,
        help="Read the key from the first line of FILE.")] = None,
    queue: Annotated[int, typer.Option(
        "--queue", metavar="N", min=1, max=10_000, rich_help_panel=SERVER_PANEL,
        help="Requests that may wait while one is answered; more get 503 + Retry-After.")
    ] = 16,
    cors: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--cors", metavar="ORIGIN", rich_help_panel=SERVER_PANEL,
        help="Let web pages from ORIGIN (e.g. http://localhost:3000) call the API; "
             "repeatable. Default: none.")] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", rich_help_panel=SERVER_PANEL,
        help="No request log lines on stderr.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", rich_help_panel=SERVER_PANEL,
        help="llama.cpp's log on stderr.")] = False,
    *,
    workers: WorkerOptions,
) -> None:
    from qwencli import output
    from qwencli.chat.terminal import ChatConsole, _fetcher
    from qwencli.errors import UsageError
    from qwencli.hardware.whatif import WhatIf
    from qwencli.serve.server import Report, ServeOptions, check_api_key, read_api_key, run_server

    say_lost_workers()
    if api_key is not None and api_key_file is not None:
        raise UsageError("--api-key and --api-key-file: give one of them")
    key = read_api_key(api_key_file) if api_key_file is not None else (
        check_api_key(api_key) if api_key is not None else None)
    code = run_server(
        ServeOptions(model=model, host=host, port=port, api_key=key, ctx=ctx,
                     gpu_layers=gpu_layers, threads=threads, kv_type=kv_type, queue=queue,
                     cors=tuple(cors or ()), quiet=quiet, verbose=verbose),
        lazy_machine(WhatIf(workers=workers)), _fetcher(ChatConsole(), yes, output.can_ask()),
        Report(info=output.info, warn=output.warn), speed_calibration)
    raise typer.Exit(code)
