"""`qwen worker`: llama.cpp's RPC server, run in this process on this machine's devices.

`ggml_backend_rpc_start_server` binds, then serves one client at a time forever; it runs in a
daemon thread so that the main thread stays in Python and Ctrl-C / SIGTERM stop the worker.
It writes its own banner and "Accepted client connection" lines with C's printf to fd 1; the
worker points fd 1 at stderr for the C side (a log, like llama.cpp's) and keeps stdout, on a
copy of the original descriptor, for its own report.

Which devices: this machine's GPUs when llama.cpp sees any, else its CPU (what llama.cpp's
`rpc-server` serves by default).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from qwencli.errors import QwenError, UsageError
from qwencli.rpc.library import Device

READY_TIMEOUT_S = 60.0  # a GPU backend can take a while to initialise


@dataclass(frozen=True)
class Serving:
    """What a started worker serves."""

    endpoint: str  # "host:port"
    devices: tuple[Device, ...]
    threads: int
    cache_dir: Path | None
    exposed: bool  # bound to an address other than loopback: anyone who reaches it may use it


def check_host(host: str) -> str:
    """llama.cpp's server binds IPv4 literals only (inet_addr): '0.0.0.0', '10.0.0.2', ..."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise UsageError(f"--host must be an IPv4 address (llama.cpp's RPC server takes no "
                         f"names or IPv6), not {host!r}; 0.0.0.0 listens on every "
                         "interface") from None
    return str(address)


def check_port_free(host: str, port: int) -> None:
    """Fail in one line when something already listens there (llama.cpp would only say
    'Failed to create server socket')."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama.cpp binds
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise QwenError(f"port {port} on {host} is in use (another qwen worker?)",
                            hint="stop that one, or pick another with --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise QwenError(f"{host} is not an address of this machine",
                            hint="use 0.0.0.0 for every interface, or one of this "
                                 "machine's addresses") from None
        raise QwenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()


def _bound(host: str, port: int) -> bool:
    """Whether a socket is bound there now (ours to test with: bind fails)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return False
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    finally:
        probe.close()


def served_devices(devices: tuple[Device, ...]) -> tuple[Device, ...]:
    """The GPUs llama.cpp sees here (not other workers' devices), else the CPU."""
    gpus = tuple(d for d in devices if d.kind in ("gpu", "igpu")
                 and not d.registry.startswith("RPC"))
    if gpus:
        return gpus
    return tuple(d for d in devices if d.kind == "cpu")[:1]


def _c_stdout_to_stderr() -> None:
    """Point fd 1 at stderr for llama.cpp's printf, and Python's sys.stdout at a copy of the
    original fd 1, so that stdout carries only the worker's own report."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):
        return  # no real descriptors (an embedding): leave things as they are
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    sys.stdout = open(saved, "w", buffering=1, encoding=encoding, errors="replace",  # noqa: SIM115
                      closefd=True)


class Worker:
    """A started worker: `serving` says what; `wait` blocks until it stops by itself."""

    def __init__(self, serving: Serving, thread: threading.Thread) -> None:
        self.serving = serving
        self._thread = thread

    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self, poll_s: float = 0.5) -> None:
        """Return when the server thread ends (it only does when it fails); Ctrl-C reaches
        the caller between polls."""
        while self._thread.is_alive():
            self._thread.join(poll_s)


def start(host: str, port: int, threads: int, cache_dir: Path | None) -> Worker:
    """Start serving this machine's devices on host:port; returns once it listens."""
    from qwencli.rpc.threads import quiet_idle_threads

    quiet_idle_threads()  # before llama.cpp's libraries load (rpc/threads.py)
    from qwencli.rpc import library

    host = check_host(host)
    check_port_free(host, port)
    devices = served_devices(library.local_devices())
    if not devices:
        raise QwenError("llama.cpp sees no device to serve on this machine")
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from qwencli.errors import os_error

            raise os_error(exc, cache_dir, "create") from None
    endpoint = f"{host}:{port}"
    _c_stdout_to_stderr()
    thread = threading.Thread(
        target=library.start_server, name="qwen-worker",
        args=(endpoint, str(cache_dir) if cache_dir else None, threads,
              tuple(d.pointer for d in devices)), daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _bound(host, port):
        if not thread.is_alive():
            raise QwenError(f"llama.cpp's RPC server could not start on {endpoint} (its "
                            "reason is on stderr above)")
        if time.monotonic() > deadline:
            raise QwenError(f"llama.cpp's RPC server did not listen on {endpoint} within "
                            f"{READY_TIMEOUT_S:g} s")
        time.sleep(0.01)
    exposed = not ipaddress.IPv4Address(host).is_loopback
    return Worker(Serving(endpoint=endpoint, devices=devices, threads=threads,
                          cache_dir=cache_dir, exposed=exposed), thread)
