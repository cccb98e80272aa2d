"""`qwen serve`'s lifecycle: choose the model, claim the address, load, serve, stop.

1. The model is chosen exactly as `qwen chat` chooses it (chat.select, with its download
   consent), and planned as `qwen fit` plans it, at the largest context the plan allows.
2. The address is bound here, before the load, so that a port in use is a one-line error at
   once; uvicorn then serves on that socket in its own thread while the model loads in the
   main thread: `/health` answers 503 until the model is ready, 200 after.
3. The main thread runs the queue (worker.Scheduler) until SIGINT or SIGTERM: the server stops
   accepting, the answer in progress stops at its next token, queued requests get a 503, open
   connections get a few seconds to close. Exit code 0 after SIGTERM, 130 after Ctrl-C (as
   every qwen command), 1 when the model cannot be chosen or loaded, 2 for a usage error.

Nothing here prints: lines for the person go through the `Report` callbacks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwencli.chat.select import Fetch, LoadRequest, Machine, open_model, resolve_model
from qwencli.chat.signals import HandledSignals
from qwencli.errors import EXIT_INTERRUPTED, EXIT_OK, QwenError, UsageError, os_error

if TYPE_CHECKING:
    from qwencli.recommend import Calibrate

GRACE_S = 5  # how long open connections get to finish once the server stops
MAX_KEY_FILE_BYTES = 4096
MIN_KEY_CHARS = 8


@dataclass(frozen=True)
class ServeOptions:
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    ctx: int | None = None
    gpu_layers: int | None = None
    threads: int | None = None
    kv_type: str = "f16"
    queue: int = 16
    cors: tuple[str, ...] = ()
    quiet: bool = False
    verbose: bool = False


@dataclass(frozen=True)
class Report:
    """Where the server's lines go (the CLI passes output.info / output.warn)."""

    info: Callable[[str], None]
    warn: Callable[[str], None]


def read_api_key(path: Path) -> str:
    """The key in a file (its first line, without surrounding whitespace)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise UsageError(f"--api-key-file {path}: larger than {MAX_KEY_FILE_BYTES} bytes; "
                         "is this the key file?")
    try:
        lines = data.decode("utf-8").strip().splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"--api-key-file {path}: not UTF-8 text") from None
    key = lines[0].strip() if lines else ""
    return check_api_key(key, f"--api-key-file {path}")


def check_api_key(key: str, source: str = "--api-key") -> str:
    if len(key) < MIN_KEY_CHARS:
        raise UsageError(f"{source}: an API key needs at least {MIN_KEY_CHARS} characters")
    if not key.isprintable() or any(c.isspace() for c in key):
        raise UsageError(f"{source}: the key must be printable, without spaces")
    return key


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        import errno

        if exc.errno == errno.EADDRINUSE:
            raise QwenError(f"cannot listen on {host}:{port}: the address is in use",
                            hint="stop what is using it, or choose another --port") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise QwenError(f"cannot listen on {host}:{port}: permission denied",
                            hint="ports below 1024 need privileges; use --port 8080") from None
        raise QwenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def exposure(sock: socket.socket) -> str | None:
    """Who besides this machine can reach the socket (None: loopback only)."""
    host = sock.getsockname()[0]
    address = ipaddress.ip_address(host.split("%")[0])
    if address.is_loopback:
        return None
    if address.is_unspecified:
        return "every network this machine is on"
    return f"anyone who can reach {host}"


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    address = ipaddress.ip_address(host.split("%")[0])
    if address.is_unspecified:
        host = "127.0.0.1" if address.version == 4 else "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class StopSignals(HandledSignals):
    """SIGINT and SIGTERM stop the server: the first one is recorded and the queue told to
    stop (a flag and a put, safe in a handler); later ones change nothing. While llama.cpp
    loads the model, chat.engine's own guard takes SIGINT (the load stops, exit 130); a SIGTERM
    then is recorded here and takes effect when the load ends."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        super().__init__()
        self.on_stop: Callable[[], None] | None = None  # set once there is a queue to stop
        self.received: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            if self.on_stop is not None:
                self.on_stop()

    def _replaces(self, current: Any) -> bool:
        return current is not signal.SIG_IGN


class _Uvicorn:
    """uvicorn serving `app` on `sock` in a thread of its own (its signal handlers are only
    installed in the main thread, which keeps ours)."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import logging

        import uvicorn

        # uvicorn's own log would repeat what our request log says; errors still show.
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=GRACE_S, server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="qwen-serve-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        while not self.server.started:  # a few milliseconds: uvicorn sets up its loop
            if not self.thread.is_alive():
                raise QwenError("the HTTP server failed to start",
                                hint="run again with QWEN_DEBUG=1")
            time.sleep(0.005)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(GRACE_S + 5)


def run_server(opts: ServeOptions, machine: Machine, fetch: Fetch | None,
               report: Report, calibrate: Calibrate | None = None) -> int:
    """`qwen serve`: returns the exit code (0 after SIGTERM, 130 after Ctrl-C)."""
    from qwencli.chat.session import thinking_support
    from qwencli.serve.app import ServerState, create_app
    from qwencli.serve.worker import Scheduler, ServedModel

    choice = resolve_model(opts.model, machine=machine, fetch=fetch, calibrate=calibrate)
    hw, budget = machine()
    sock = bind(opts.host, opts.port)
    url = url_of(sock)
    reach = exposure(sock)
    if reach and opts.api_key is None:
        report.warn(f"listening on {sock.getsockname()[0]} without an API key: {reach} can "
                    "use this model; set --api-key or --api-key-file")
    state = ServerState(api_key=opts.api_key,
                        log=(lambda line: None) if opts.quiet else report.info)
    http = _Uvicorn(create_app(state, cors=opts.cors), sock)
    engine = None
    signals = StopSignals()
    try:
        with signals:
            http.start()
            report.info(f"listening on {url} (loading {choice.label} ...)")
            loaded = open_model(choice, LoadRequest(opts.ctx, opts.gpu_layers, opts.threads,
                                                    opts.verbose, kv_type=opts.kv_type,
                                                    largest_ctx=True), hw, budget)
            for note in loaded.notes:
                report.warn(note)
            engine = loaded.engine
            aliases = tuple(dict.fromkeys(a for a in (
                choice.path.name, choice.path.stem, choice.spec.id if choice.spec else None)
                if a and a != choice.label))
            model = ServedModel(engine, choice.label, aliases,
                                thinking_support(choice.spec, engine.template), choice.spec,
                                choice.path, int(time.time()))
            scheduler = Scheduler(model, limit=opts.queue, log=state.log)
            signals.on_stop = scheduler.stop
            if signals.received is not None:  # it came during the load
                scheduler.stop()
            else:
                state.model, state.scheduler, state.status = model, scheduler, "ready"
                report.info(f"ready: {choice.label}"
                            f"{f' ({loaded.quant})' if loaded.quant else ''}, context "
                            f"{engine.n_ctx:,} tokens, queue {opts.queue}; OpenAI base URL "
                            f"{url}/v1{' (API key required)' if opts.api_key else ''}")
            scheduler.run()
            state.status = "stopping"
            http.stop()  # before the engine goes: no request may still be tokenizing
    finally:
        state.status = "stopping"
        http.stop()
        sock.close()
        if engine is not None:
            engine.close()
    received = signals.received
    report.info("stopped")
    return EXIT_INTERRUPTED if received == signal.SIGINT else EXIT_OK
