"""Loading a model with workers, and what happens when one is lost.

Devices: llama.cpp's default device selection does not see devices that
`ggml_backend_rpc_add_server` registers at run time, so the model is given them explicitly:
`llama_model_params.devices`, a NULL-terminated array, in the plan's order (the planner puts
the workers' devices first, as llama.cpp orders them, then the local GPUs it uses), which is
also the order of the plan's `tensor_split`.

A lost worker: llama.cpp's RPC client calls `GGML_ABORT` when a worker's connection breaks
("Remote RPC server crashed or returned malformed response"), which would end the process with
SIGABRT and a C backtrace, in the middle of a line of the answer. With workers in use, a ggml
abort callback is installed instead: it finds which worker is gone, hands a `WorkerLost` to the
command's handler (which says it in one line and commits the conversation log), and ends the
process with exit code 1. The process must end: the thread that asked the worker is blocked in
C waiting for an answer that will never come, so there is nothing to return to.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qwencli.errors import EXIT_ERROR, QwenError, WorkerLost

if TYPE_CHECKING:
    from qwencli.fit import Plan

PROBE_TIMEOUT_S = 5.0  # each worker must answer its probe within this at load time
LOST_CHECK_TIMEOUT_S = 1.0  # when llama.cpp gives up on a connection: which worker is gone
LOST_SETTLE_S = 2.0  # how long a dying worker may still accept connections


@dataclass
class Devices:
    """The explicit device array for one load (kept alive as long as the model)."""

    array: Any  # ctypes array of ggml_backend_dev_t, NULL-terminated
    names: tuple[str, ...]  # what each device is, in order ("RPC0[host:port]", "CUDA0")
    endpoints: tuple[str, ...]  # the workers, in order


def worker_endpoints(plan: Plan) -> tuple[str, ...]:
    """The plan's workers, each once, in the plan's order."""
    return tuple(dict.fromkeys(d.worker.endpoint for d in plan.devices if d.worker is not None))


def check_workers(endpoints: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Every worker answers as an RPC server should (WorkerUnreachable naming the first one
    that does not). Nothing is handed to llama.cpp's client before this passed."""
    from qwencli.rpc.protocol import probe_endpoint

    for endpoint in endpoints:
        probe_endpoint(endpoint, timeout_s, measure_bandwidth=False)


def plan_devices(plan: Plan) -> Devices | None:
    """Register the plan's workers with llama.cpp and build the device array; None when the
    plan uses no worker (llama.cpp's default devices are right then)."""
    import ctypes

    from qwencli.rpc import library

    endpoints = worker_endpoints(plan)
    if not endpoints:
        return None
    if not library.supports_rpc():
        raise library.RpcUnavailable(
            "the plan puts layers on workers, but the installed llama-cpp-python was built "
            "without RPC", hint=library.reinstall_hint())
    check_workers(endpoints)
    watch_for_lost_workers(endpoints)
    registered = {endpoint: library.add_server(endpoint) for endpoint in endpoints}
    local_gpus = [d for d in library.local_devices()
                  if d.kind == "gpu" and not d.registry.startswith("RPC")]
    if not local_gpus:  # integrated GPUs count only when there is no discrete one (llama.cpp)
        local_gpus = [d for d in library.local_devices()
                      if d.kind == "igpu" and not d.registry.startswith("RPC")]
    pointers: list[int] = []
    names: list[str] = []
    for device in plan.devices:
        if device.worker is not None:
            served = registered[device.worker.endpoint]
            if not 0 <= device.worker.device < len(served):
                raise QwenError(f"worker {device.worker.endpoint} serves {len(served)} "
                                f"device(s); the plan uses its device {device.worker.device}",
                                hint="plan again: the worker changed since it was asked")
            pointers.append(served[device.worker.device])
            names.append(f"RPC{device.worker.device}[{device.worker.endpoint}]")
        else:
            if not 0 <= device.index < len(local_gpus):
                raise QwenError(f"the plan uses GPU {device.index}, which llama.cpp does not "
                                "see on this machine")
            pointers.append(local_gpus[device.index].pointer)
            names.append(local_gpus[device.index].name)
    array = (ctypes.c_void_p * (len(pointers) + 1))(*pointers, None)
    return Devices(array=array, names=tuple(names), endpoints=endpoints)


# ------------------------------------------------------------------------------------------
# A worker whose machine vanishes

KEEPALIVE_IDLE_S = 5  # the connection is probed after this long without traffic,
KEEPALIVE_INTERVAL_S = 2  # then every this many seconds,
KEEPALIVE_COUNT = 5  # and given up after this many unanswered probes (about 15 s in all);
USER_TIMEOUT_MS = 20_000  # data sent and not acknowledged for this long also gives up.


def _peer(endpoint: str) -> tuple[str, int] | None:
    host, _, port = endpoint.rpartition(":")
    try:
        return socket.gethostbyname(host.strip("[]")), int(port)
    except (OSError, ValueError):
        return None


def keep_alive(endpoints: Sequence[str]) -> int:
    """Make this process's connections to the workers notice a vanished machine.

    llama.cpp's client waits for a worker's answer with a plain blocking read: a machine that
    is switched off or drops off the network sends no reset, so the read would wait forever.
    TCP keepalive (answered by a live machine's kernel even while the worker computes) and
    TCP_USER_TIMEOUT make the kernel end such a connection within about 20 s; llama.cpp then
    sees the error and aborts, which the abort callback turns into the one-line `WorkerLost`.
    The sockets are llama.cpp's: found among this process's descriptors (Linux: /proc/self/fd)
    by their peer address and set through a duplicate. Returns how many were set."""
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        return 0  # not Linux: a vanished machine is noticed when TCP gives up by itself
    peers = {peer for peer in map(_peer, endpoints) if peer is not None}
    done = 0
    for name in os.listdir(fd_dir):
        try:
            if not os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                continue
            copy = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            if copy.type != socket.SOCK_STREAM or copy.getpeername()[:2] not in peers:
                continue
            copy.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
                                  ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                                  ("TCP_KEEPCNT", KEEPALIVE_COUNT),
                                  ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS)):
                if hasattr(socket, option):
                    copy.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
            done += 1
        except OSError:
            continue
        finally:
            copy.close()  # the duplicate only: llama.cpp's descriptor stays open
    return done


# ------------------------------------------------------------------------------------------
# A lost worker

LossHandler = Callable[[WorkerLost], None]


class _LossWatch:
    def __init__(self) -> None:
        self.endpoints: tuple[str, ...] = ()
        self.handler: LossHandler | None = None
        self.callback: Any = None
        self.lock = threading.Lock()


_WATCH = _LossWatch()


def on_worker_lost(handler: LossHandler | None) -> None:
    """What the command does with a lost worker before the process ends with exit code 1:
    say it (one line) and commit what must not be lost. Called from llama.cpp's thread."""
    _WATCH.handler = handler


def _refused(endpoint: str, timeout_s: float) -> str | None:
    """Why `endpoint` cannot be connected to now; None when it accepts a connection."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


def _gone(endpoints: Sequence[str], timeout_s: float) -> list[str]:
    """The workers that cannot be connected to. A worker process that has just died can
    still accept a connection for a moment (its connection to us breaks before its
    listening socket is closed), so this looks again for up to LOST_SETTLE_S; but only a
    refusal counts then: a live worker that serves us does not accept our checks, which
    queue up and, once its queue is full, time out."""
    deadline = time.monotonic() + LOST_SETTLE_S
    gone = [e for e in endpoints if _refused(e, timeout_s) is not None]
    while not gone and time.monotonic() < deadline:
        time.sleep(0.05)
        gone = [e for e in endpoints
                if (_refused(e, timeout_s) or "").startswith(("connection refused",
                                                              "no route", "network is"))]
    return gone


def lost_error(message: str, endpoints: Sequence[str],
               timeout_s: float = LOST_CHECK_TIMEOUT_S) -> WorkerLost:
    """The one-line error for llama.cpp's abort `message`, naming the worker that is gone."""
    named = [e for e in endpoints if e in message]
    gone = named or _gone(endpoints, timeout_s)
    hint = "start the worker again (`qwen worker` on that machine) and run the command again"
    if len(gone) == 1:
        why = _refused(gone[0], timeout_s) if not named else "it could not be reached"
        return WorkerLost(f"worker {gone[0]} was lost: {why or 'the connection broke'}",
                          hint=hint)
    which = ", ".join(gone or endpoints)
    plural = "workers" if len(gone or endpoints) > 1 else "worker"
    return WorkerLost(f"lost the connection to {plural} {which}", hint=hint)


def _on_abort(message: bytes | None) -> None:
    text = (message or b"").decode("utf-8", "replace").strip()
    with _WATCH.lock:  # two workers failing at once: one message
        error = lost_error(text, _WATCH.endpoints)
        handler = _WATCH.handler
        if handler is not None:
            with contextlib.suppress(BaseException):
                handler(error)
        os._exit(EXIT_ERROR)


def watch_for_lost_workers(endpoints: Sequence[str]) -> None:
    """Install the abort callback (once) for these workers."""
    from qwencli.rpc import library

    _WATCH.endpoints = tuple(dict.fromkeys((*_WATCH.endpoints, *endpoints)))
    if _WATCH.callback is None:
        _WATCH.callback = library.abort_callback_type()(_on_abort)
        library.set_abort_callback(_WATCH.callback)
