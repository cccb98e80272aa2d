"""Apple Silicon's GPU: chip name, GPU cores and the unified memory Metal may use.

An Apple GPU has no VRAM of its own; it shares `hw.memsize` with the CPU, and Metal lets it wire
only a share of it (see `metal.working_set`). The core count comes from the IO registry
(`ioreg -rc AGXAccelerator -d1`, about 50 ms) and, when that fails, from
`system_profiler SPDisplaysDataType` (a second or more).

`run_sysctl` and `run_command` are the I/O edges shared with `cpu.probe_cpu`; the rest is pure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping

from qwencli.hardware import metal
from qwencli.hardware.model import Gpu

# Keys `apple_gpu` reads. sysctl skips (and complains on stderr about) keys a macOS lacks, e.g.
# iogpu.wired_limit_mb before macOS 14 or hw.optional.arm64 on old Intel releases.
APPLE_GPU_SYSCTL_KEYS = (
    "machdep.cpu.brand_string",
    "hw.memsize",
    "hw.optional.arm64",
    "iogpu.wired_limit_mb",
    "sysctl.proc_translated",
)

_IOREG_CORES = re.compile(r'"gpu-core-count"\s*=\s*(\d+)')


def run_command(args: list[str], timeout: float) -> str:
    """stdout of a short command, or "" when it is missing, fails to start or runs too long."""
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=False, errors="replace"
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""
    return proc.stdout or ""


def parse_sysctl(text: str) -> dict[str, str]:
    """`sysctl` output ("key: value" lines) as a dict; "sysctl: unknown oid" lines skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("sysctl:"):
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            # Older BSD style "key = value"; a bare "key:" has an empty value.
            key, sep, value = line.partition(" = ")
            if not sep and line.rstrip().endswith(":"):
                key, sep, value = line.rstrip()[:-1], ":", ""
        if sep and key.strip() and " " not in key.strip():
            values[key.strip()] = value.strip()
    return values


def run_sysctl(keys: Iterable[str]) -> dict[str, str]:
    """The values of these sysctl keys (or subtrees, like "hw.optional"); missing ones skipped.

    One `sysctl` process with a 2 s timeout; never raises.
    """
    names = [k for k in keys if k]
    if not names:
        return {}
    exe = shutil.which("sysctl") or "/usr/sbin/sysctl"
    return parse_sysctl(run_command([exe, *names], timeout=2))


def parse_system_profiler_displays(text: str) -> tuple[str | None, int | None]:
    """(chip name, GPU core count) from `system_profiler SPDisplaysDataType` plain text.

    Prefers an Apple GPU when a Mac lists several; the core count is the one inside that GPU's own
    section (SPHardwareDataType also has a "Total Number of Cores" line, for the CPU).
    """
    sections: list[tuple[str, int | None]] = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Chipset Model" and value:
            sections.append((value, None))
        elif key == "Total Number of Cores" and sections and sections[-1][1] is None:
            match = re.match(r"\d+", value)
            if match:
                sections[-1] = (sections[-1][0], int(match.group()))
    if not sections:
        return None, None
    for chip, cores in sections:
        if chip.startswith("Apple"):
            return chip, cores
    return sections[0]


def parse_ioreg_gpu_cores(text: str) -> int | None:
    """GPU core count from `ioreg -rc AGXAccelerator -d1` ("gpu-core-count" = 10)."""
    match = _IOREG_CORES.search(text)
    return int(match.group(1)) if match else None


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def is_apple_silicon(sysctl: Mapping[str, str]) -> bool:
    """True on an M-series Mac, also when this Python runs under Rosetta (hw.optional.arm64 = 1)."""
    brand = sysctl.get("machdep.cpu.brand_string", "").strip()
    return sysctl.get("hw.optional.arm64", "").strip() == "1" or brand.startswith("Apple M")


def apple_gpu(sysctl: Mapping[str, str], gpu_cores: int | None, chip: str | None) -> Gpu | None:
    """The Apple GPU as a `Gpu`, or None on an Intel Mac (or anything that is not Apple Silicon).

    Unified memory: total is all of RAM, free is Metal's working set (the caller caps it by the
    RAM actually available). None as well when hw.memsize is missing: there is nothing to plan with.
    """
    if not is_apple_silicon(sysctl):
        return None
    memsize = _int(sysctl.get("hw.memsize"))
    if not memsize or memsize <= 0:
        return None
    wired_mb = _int(sysctl.get("iogpu.wired_limit_mb"))
    working_set, source = metal.working_set(memsize, wired_mb)
    brand = " ".join(sysctl.get("machdep.cpu.brand_string", "").split())
    notes: tuple[str, ...] = ()
    if sysctl.get("sysctl.proc_translated", "").strip() == "1":
        notes = (
            "this Python runs under Rosetta (x86_64): llama.cpp runs translated and slower; "
            "an arm64 Python runs it natively",
        )
    return Gpu(
        index=0,
        name=chip or brand or "Apple GPU",
        vendor="apple",
        total_bytes=memsize,
        free_bytes=working_set,
        unified=True,
        backend="metal",
        integrated=True,
        cores=gpu_cores,
        working_set_bytes=working_set,
        working_set_source=source,
        notes=notes,
    )


def probe_apple() -> Gpu | None:
    """The I/O edge: this Mac's Apple GPU, or None elsewhere. Never raises."""
    if sys.platform != "darwin":
        return None
    sysctl = run_sysctl(APPLE_GPU_SYSCTL_KEYS)
    if not is_apple_silicon(sysctl):
        return None
    chip = " ".join(sysctl.get("machdep.cpu.brand_string", "").split()) or None
    cores = parse_ioreg_gpu_cores(run_command(["ioreg", "-rc", "AGXAccelerator", "-d1"], 2))
    if cores is None:
        sp_chip, cores = parse_system_profiler_displays(
            run_command(["system_profiler", "SPDisplaysDataType"], 10)
        )
        chip = chip or sp_chip
    return apple_gpu(sysctl, cores, chip)
