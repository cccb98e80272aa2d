"""Real `qwen worker` processes on loopback for the RPC tests, and a `qwen` whose plans put
layers on them.

`start_worker` starts `python -m qwencli worker` on a free loopback port and returns once the
worker printed its ready line ("listening on HOST:PORT"), never after a sleep. `rss_growth`
says how much a worker's resident memory grew since it was ready (what a model loaded on it
costs there), for comparing with the planner's figure for that worker.

Run as a script, this module is `qwen` with one change: the plan a command loads with puts
QWEN_TEST_RPC_LAYERS layers on the workers named in QWEN_TEST_RPC_WORKERS (split evenly,
workers first, as llama.cpp orders devices), the rest on this machine's CPU. Layers are
counted as llama.cpp's n_gpu_layers counts them: from the end, the output layer first (2 on a
2-layer model: the second repeating layer and the output layer). That
stands in for `--rpc` (planned by another part of the code) so that the runtime is tested on
its own: `python -m tests.rpc_workers chat -m MODEL "prompt"`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.ceilings import PROCESS_S

READY = "listening on "
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """A process's resident memory now (Linux: /proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class _Lines:
    """A stream read line by line in a thread, so a test can wait for a line with a ceiling."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout_s: float = PROCESS_S) -> str:
        while True:
            line = self.lines.get(timeout=timeout_s)
            if line is None:
                raise AssertionError(f"the stream ended before {marker!r}: {self.seen}")
            self.seen.append(line)
            if marker in line:
                return line

    def rest(self, timeout_s: float = PROCESS_S) -> str:
        """Everything up to the end of the stream."""
        while True:
            line = self.lines.get(timeout=timeout_s)
            if line is None:
                return "".join(self.seen)
            self.seen.append(line)


@dataclass
class RunningWorker:
    process: subprocess.Popen[str]
    endpoint: str
    stdout: _Lines
    stderr: _Lines
    ready_rss: int  # resident memory once it listened, before any client

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_growth(self) -> int:
        """How much its resident memory grew since it was ready: what a client's buffers
        (weights, KV cache, compute) cost on this worker."""
        return rss_bytes(self.pid) - self.ready_rss

    def peak_rss_growth(self) -> int:
        """How much its peak resident memory (VmHWM) rose above its resident memory when it
        was ready: what loading and running a model cost it at most."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 - self.ready_rss
        raise RuntimeError(f"no VmHWM for {self.pid}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(PROCESS_S)

    def stop(self) -> int:
        """SIGTERM, then wait: its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(PROCESS_S)


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "qwencli", "worker", *args]


def start_worker(cache: Path, *, threads: int = 1, port: int | None = None,
                 extra: Sequence[str] = (), env: dict[str, str] | None = None) -> RunningWorker:
    """A `qwen worker` on a free loopback port, ready (its ready line printed)."""
    port = port or free_port()
    process = subprocess.Popen(
        worker_command("--port", str(port), "--threads", str(threads), "--cache", str(cache),
                       *extra),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env=env)
    assert process.stdout is not None and process.stderr is not None
    out, err = _Lines(process.stdout), _Lines(process.stderr)
    try:
        line = out.wait_for(READY)
    except AssertionError:
        process.kill()
        raise AssertionError(f"worker did not start: {err.rest()}") from None
    endpoint = line.strip()[len(READY):]
    return RunningWorker(process, endpoint, out, err, rss_bytes(process.pid))


@contextlib.contextmanager
def workers(cache: Path, count: int = 2, threads: int = 1) -> Iterator[list[RunningWorker]]:
    started: list[RunningWorker] = []
    try:
        for index in range(count):
            started.append(start_worker(cache / f"worker{index}", threads=threads))
        yield started
    finally:
        for worker in started:
            with contextlib.suppress(Exception):
                worker.kill()


# ------------------------------------------------------------------------------------------
# Plans with workers, built by hand


def worker_plan(plan: Any, endpoints: Sequence[str], layers: int) -> Any:
    """`plan` with `layers` layers (llama.cpp's n_gpu_layers: the output layer first) on the
    workers, split evenly, workers first; the rest on this machine's CPU."""
    from qwencli.fit import Breakdown, DevicePlan
    from qwencli.hardware.remote import Link, Worker

    share = [layers // len(endpoints) + (1 if i < layers % len(endpoints) else 0)
             for i in range(len(endpoints))]
    link = Link(bandwidth_bytes_per_s=1e9, rtt_s=1e-4, source="stated", detail="test")
    devices = tuple(
        DevicePlan(index=i, name=f"RPC0[{endpoint}]", layers=share[i], budget_bytes=1 << 40,
                   breakdown=Breakdown(),
                   worker=Worker(endpoint=endpoint, device=0, name=f"RPC0[{endpoint}]",
                                 description="test worker", free_bytes=1 << 40,
                                 total_bytes=1 << 40, link=link))
        for i, endpoint in enumerate(endpoints))
    return dataclasses.replace(plan, devices=devices, n_gpu_layers=layers,
                               tensor_split=tuple(n / layers for n in share),
                               moe_cpu_layers=0)


def _patch_planner() -> None:
    from qwencli.chat import select

    endpoints = [e for e in os.environ.get("QWEN_TEST_RPC_WORKERS", "").split(",") if e]
    layers = int(os.environ.get("QWEN_TEST_RPC_LAYERS", "0"))
    if not endpoints or not layers:
        return
    original = select.plan_load

    def plan_load(*args: Any, **kwargs: Any) -> Any:
        the_plan, *rest = original(*args, **kwargs)
        return (worker_plan(the_plan, endpoints, layers), *rest)

    select.plan_load = plan_load


def main(argv: Sequence[str]) -> Any:
    _patch_planner()
    from qwencli.cli import main as qwen_main

    return qwen_main(list(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


LONG_PROMPT = "tell me " * 280  # about 560 tokens: more than one 512-token micro-batch


@dataclass(frozen=True)
class WorkerMemory:
    """Each worker's resident memory growth after each prompt, and its peak at the end."""

    after: tuple[tuple[int, ...], ...]  # per prompt, per worker
    peaks: tuple[int, ...]  # per worker


def chat_memory(model: Path, started: Sequence[RunningWorker], placement: Sequence[str],
                prompts: Sequence[str], env: dict[str, str]) -> WorkerMemory:
    """`qwen chat -m MODEL PLACEMENT` in a pseudo-terminal: each prompt answered in turn (the
    next sent once the prompt marker is back), each worker's RSS growth read after each."""
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "qwencli", "chat", "-m", str(model),
                                           "--threads", "1", "--seed", "1", "-n", "4",
                                           *placement],
                          env=env, cwd=str(ROOT), encoding="utf-8", timeout=PROCESS_S,
                          dimensions=(50, 250))
    after = []
    try:
        child.expect_exact(">>> ")
        for prompt in prompts:
            child.sendline(prompt)
            child.expect_exact(">>> ")
            after.append(tuple(w.rss_growth() for w in started))
        peaks = tuple(w.peak_rss_growth() for w in started)
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        if child.isalive():
            child.terminate(force=True)
    return WorkerMemory(tuple(after), peaks)
