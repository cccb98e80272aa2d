"""Wait until a process is blocked waiting for input, before a test sends it a signal.

CPython acts on SIGINT only where its C code checks for signals. A process that is about to
wait for input (readline at a `>>> ` prompt, a socket read) checks, then enters select/poll; a
SIGINT that lands between the two is noted but not acted on until the wait ends: a key press
for readline, the next byte or the read timeout for a socket. A test that sends the signal as
soon as it sees the prompt, or the last byte of a held transfer on disk, loses that race now
and then on a busy machine, and then waits for an answer that never comes.

The event to wait for is "blocked in select/poll": on Linux, /proc/PID/syscall names the
system call the process's main thread is blocked in. Where that file is missing (not Linux) or
the architecture's numbers are not known here, `until_waiting_for_input` returns False at once
and the caller sends the signal anyway (the old, racy behaviour).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

from tests import ceilings

# select, poll, pselect6, ppoll, epoll_wait, epoll_pwait
_WAITS = {"x86_64": {23, 7, 270, 271, 232, 281}, "aarch64": {72, 73, 22}}


def _syscall(pid: int) -> int | None:
    """The number of the system call the process's main thread is blocked in, if any."""
    try:
        text = Path(f"/proc/{pid}/syscall").read_text()
    except OSError:
        return None
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    return int(first) if first.lstrip("-").isdigit() and int(first) >= 0 else None


def supported(pid: int) -> bool:
    return platform.machine() in _WAITS and Path(f"/proc/{pid}/syscall").exists()


def until_waiting_for_input(pid: int, alive: Callable[[], bool] = lambda: True) -> bool:
    """Wait until `pid` is blocked in select/poll (True), or say at once that this platform
    cannot tell (False). Fails the test if the process exits first, or after
    ceilings.PROCESS_S (only a bound for a wait that never ends)."""
    if not supported(pid):
        return False
    waits = _WAITS[platform.machine()]
    give_up = time.monotonic() + ceilings.PROCESS_S
    while _syscall(pid) not in waits:
        assert alive(), f"process {pid} exited before it waited for input"
        assert time.monotonic() < give_up, f"process {pid} never waited for input"
        time.sleep(0.005)
    return True
