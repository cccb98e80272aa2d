"""System RAM bandwidth: measured once with a multi-threaded copy, then cached.

Decode speed on a CPU is bounded by how fast the weights stream from RAM, and no portable API
reports the DIMM speed, so we measure: each thread (one per physical core, at most 8) copies its
own 64 MiB buffer with `ctypes.memmove`, which releases the GIL; the best of a few rounds counts
the bytes read plus the bytes written. A copy moves each byte twice, so this is the same figure
STREAM's "copy" reports. The result is cached per machine (CPU model, RAM size) in the cache dir.

The cache file is outside data: an entry is used only when it is a whole number of bytes/s
between 100 MB/s (slower than any DRAM a llama.cpp machine has; a figure below it is a broken
measurement) and 10 TB/s (several times the fastest CPU memory, HBM-equipped server chips at
about 1 TB/s, counted twice by a copy). Anything else (0, -1, 1e999, NaN, a string) is a miss:
measured again and rewritten, because every speed estimate divides by it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

from qwencli.fileio import atomic_write
from qwencli.hardware.model import Bandwidth

BUFFER_BYTES = 64 * 1024 * 1024
ROUNDS = 3
MAX_THREADS = 8
MIN_BYTES_PER_S = 10**8  # 100 MB/s
MAX_BYTES_PER_S = 10**13  # 10 TB/s
_MAX_DETAIL_CHARS = 300


def _copy_rounds(n_threads: int) -> float:
    """Best bytes/s over ROUNDS rounds of every thread copying its buffer once."""
    buffers = []
    for _ in range(n_threads):
        src = bytearray(b"\x01") * BUFFER_BYTES
        dst = bytearray(BUFFER_BYTES)
        buffers.append(
            (
                ctypes.addressof((ctypes.c_char * BUFFER_BYTES).from_buffer(src)),
                ctypes.addressof((ctypes.c_char * BUFFER_BYTES).from_buffer(dst)),
                src,
                dst,
            )
        )
    best = 0.0
    for round_no in range(ROUNDS + 1):  # round 0 faults the pages in and is not counted
        start_gate = threading.Barrier(n_threads + 1)

        def worker(src_addr: int, dst_addr: int, gate: threading.Barrier = start_gate) -> None:
            gate.wait()
            ctypes.memmove(dst_addr, src_addr, BUFFER_BYTES)

        threads = [
            threading.Thread(target=worker, args=(src_addr, dst_addr))
            for src_addr, dst_addr, _s, _d in buffers
        ]
        for thread in threads:
            thread.start()
        start_gate.wait()
        t0 = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - t0
        if round_no and elapsed > 0:
            best = max(best, 2 * BUFFER_BYTES * n_threads / elapsed)
    return best


def measure_ram_bandwidth(physical_cores: int) -> Bandwidth:
    """Measure now (about 0.1-0.3 s and 128 MiB per thread)."""
    n_threads = max(1, min(physical_cores, MAX_THREADS))
    rate = _copy_rounds(n_threads)
    return Bandwidth(
        bytes_per_s=int(rate),
        source="measured",
        detail=f"measured: memmove copy, {n_threads} thread(s) x 64 MiB, read + write bytes",
    )


def plausible(bytes_per_s: object) -> bool:
    """A RAM bandwidth figure that a real machine could have (see the module docstring)."""
    if isinstance(bytes_per_s, bool) or not isinstance(bytes_per_s, int | float):
        return False
    return math.isfinite(bytes_per_s) and MIN_BYTES_PER_S <= bytes_per_s <= MAX_BYTES_PER_S


def cache_entry(data: Any, machine_key: str) -> Bandwidth | None:
    """The measurement a cache entry holds for this machine; None when it is for another
    machine or fails validation (the caller measures again)."""
    if not isinstance(data, dict) or data.get("machine") != machine_key:
        return None
    rate, source, detail = data.get("bytes_per_s"), data.get("source"), data.get("detail")
    if not plausible(rate) or source != "measured" or not isinstance(detail, str) \
            or len(detail) > _MAX_DETAIL_CHARS or not detail.isprintable():
        return None
    return Bandwidth(int(rate), source, detail)


def cached_ram_bandwidth(cache_file: Path, machine_key: str, physical_cores: int) -> Bandwidth:
    """The cached measurement for this machine, measuring (and caching) when there is none
    or the cached one is not believable."""
    try:
        cached = cache_entry(json.loads(cache_file.read_text()), machine_key)
        if cached is not None:
            return cached
    except (OSError, ValueError, RecursionError):
        pass
    measured = measure_ram_bandwidth(physical_cores)
    if not plausible(measured.bytes_per_s):
        return measured  # a broken measurement is not cached: the next run measures again
    # One rename: another qwen reading it sees the old file or the new one. A read-only cache
    # only costs a re-measurement next time.
    with contextlib.suppress(OSError):
        atomic_write(cache_file, json.dumps({
            "machine": machine_key,
            "bytes_per_s": measured.bytes_per_s,
            "source": measured.source,
            "detail": measured.detail + f" on {time.strftime('%Y-%m-%d')}",
        }))
    return measured
