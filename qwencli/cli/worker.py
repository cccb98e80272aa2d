"""`qwen worker`: lend this machine's memory and compute to a model running on another one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from qwencli.cli._common import command, command_app

app = command_app()

WORKER_HELP = """Serve this machine's GPUs (or its CPU) to `qwen chat/serve/bench --rpc` on
another machine, over llama.cpp's RPC backend. Runs until Ctrl-C.

llama.cpp's RPC has no authentication and no encryption: anyone who can reach the port can
use this machine's memory and compute. Keep the default 127.0.0.1, or bind an address of a
network you trust.

Examples:

  qwen worker

  qwen worker --host 0.0.0.0 --port 50052

  qwen worker --host 10.0.0.2 --threads 8 --cache ~/.cache/qwen/rpc
"""


@command(app, "worker", help=WORKER_HELP)
def worker(
    host: Annotated[str, typer.Option(
        "--host", metavar="IPV4", help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", "-p", min=1, max=65535, help="TCP port to listen on.")] = 50052,
    threads: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--threads", "-t", metavar="N", min=1, max=1024,
        help="CPU threads (default: the physical cores this process may use).")] = None,
    cache: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--cache", metavar="DIR", file_okay=False,
        help="Keep large tensors here, so that loading the same model again sends only "
             "their hashes (default: rpc/ in qwen's cache folder).")] = None,
) -> None:
    import signal

    from qwencli import output, reports
    from qwencli.errors import EXIT_OK
    from qwencli.hardware.cpu import default_threads
    from qwencli.paths import cache_dir
    from qwencli.rpc import server

    def stop(signum: int, frame: object) -> None:
        raise typer.Exit(EXIT_OK)

    # Before the ready line: a supervisor may send SIGTERM as soon as it reads it.
    signal.signal(signal.SIGTERM, stop)
    started = server.start(host, port, threads or default_threads(None),
                           cache if cache is not None else cache_dir() / "rpc")
    for line in reports.worker_lines(started.serving):
        output.write(line + "\n")
    if started.serving.exposed:
        output.warn(reports.WORKER_EXPOSED_WARNING.format(endpoint=started.serving.endpoint))
    output.write(f"listening on {started.serving.endpoint}\n")
    started.wait()  # returns only if llama.cpp's server stopped by itself
    raise typer.Exit(1)
