"""The CPU: model, core counts and the instruction sets llama.cpp's CPU backend can use.

llama.cpp picks its fastest kernels from a handful of instruction sets (AVX2, AVX-512, VNNI, AMX on
x86; NEON, dot product, i8mm, SVE, SME on ARM). The OS spells them its own way: the Linux kernel's
/proc/cpuinfo names ("pni" for SSE3, "asimddp" for the ARM dot product), macOS's sysctl names
("AVX1.0", "hw.optional.arm.FEAT_DotProd"). `llama_features` maps all of them onto one vocabulary,
close to llama.cpp's own feature report (`llama_print_system_info`), which differs in three names:
it says AVX512 for avx512f, AVX512_VBMI for avx512vbmi and MATMUL_INT8 for i8mm, and has no flag
for avx512bw or amx_bf16.

Parsers are pure; `probe_cpu` is the only function that touches the machine.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from qwencli.hardware.model import Cpu

X86_ARCHES = frozenset({"x86_64", "i386", "i486", "i586", "i686", "x86"})

# OS flag name (lower case, prefixes stripped) -> llama.cpp feature.
# Linux names: arch/x86/include/asm/cpufeatures.h (as printed in /proc/cpuinfo "flags").
# macOS names: machdep.cpu.features / machdep.cpu.leaf7_features tokens and hw.optional.* keys.
_X86_FLAGS: dict[str, str] = {
    "pni": "sse3",  # the kernel's name for SSE3 ("Prescott New Instructions")
    "sse3": "sse3",
    "ssse3": "ssse3",
    "supplementalsse3": "ssse3",  # hw.optional.supplementalsse3
    "avx": "avx",
    "avx1.0": "avx",  # machdep.cpu.features
    "avx1_0": "avx",  # hw.optional.avx1_0
    "avx2": "avx2",
    "avx2_0": "avx2",  # hw.optional.avx2_0
    "avx_vnni": "avx_vnni",
    "avxvnni": "avx_vnni",
    "f16c": "f16c",
    "fma": "fma",
    "bmi2": "bmi2",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vbmi": "avx512vbmi",
    "avx512_vnni": "avx512_vnni",
    "avx512vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512bf16": "avx512_bf16",
    "amx_int8": "amx_int8",
    "amxint8": "amx_int8",
    "amx_bf16": "amx_bf16",
    "amxbf16": "amx_bf16",
}

# Linux arm64 names: Documentation/arch/arm64/elf_hwcaps.rst; 32-bit ARM: "neon", "vfpv4".
# macOS names: hw.optional.neon*, hw.optional.AdvSIMD, hw.optional.arm.FEAT_*.
_ARM_FLAGS: dict[str, str] = {
    "asimd": "neon",
    "neon": "neon",
    "advsimd": "neon",
    "vfpv4": "arm_fma",  # 32-bit ARM: VFPv4 brings fused multiply-add
    "asimdhp": "fp16_va",  # half-precision vector arithmetic (FEAT_FP16)
    "fphp": "fp16_va",
    "fp16": "fp16_va",  # hw.optional.arm.FEAT_FP16
    "neon_fp16": "fp16_va",
    "asimddp": "dotprod",
    "dotprod": "dotprod",  # hw.optional.arm.FEAT_DotProd
    "i8mm": "i8mm",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
    "sme2": "sme",  # SME2 implies SME
}

# MIDR implementer -> part -> core name, from the Linux kernel's arch/arm64/include/asm/cputype.h
# and util-linux's lscpu-arm.c. Only parts people run models on.
_ARM_PARTS: dict[int, tuple[str, dict[int, str]]] = {
    0x41: ("ARM", {
        0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
        0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
        0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD0E: "Cortex-A76AE", 0xD40: "Neoverse-V1",
        0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510",
        0xD47: "Cortex-A710", 0xD48: "Cortex-X2", 0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C",
        0xD4D: "Cortex-A715", 0xD4E: "Cortex-X3", 0xD4F: "Neoverse-V2", 0xD80: "Cortex-A520",
        0xD81: "Cortex-A720", 0xD82: "Cortex-X4", 0xD84: "Neoverse-V3", 0xD85: "Cortex-X925",
        0xD87: "Cortex-A725", 0xD8E: "Neoverse-N3",
    }),
    0x46: ("Fujitsu", {0x001: "A64FX"}),
    0x48: ("HiSilicon", {0xD01: "TaiShan-v110"}),
    0x4E: ("NVIDIA", {0x003: "Denver 2", 0x004: "Carmel"}),
    0x51: ("Qualcomm", {0x001: "Oryon"}),
    0x61: ("Apple", {
        0x022: "M1 Icestorm", 0x023: "M1 Firestorm", 0x024: "M1 Pro Icestorm",
        0x025: "M1 Pro Firestorm", 0x028: "M1 Max Icestorm", 0x029: "M1 Max Firestorm",
        0x032: "M2 Blizzard", 0x033: "M2 Avalanche",
    }),
    0xC0: ("Ampere", {0xAC3: "Ampere-1", 0xAC4: "Ampere-1a"}),
}


def normalize_arch(machine: str) -> str:
    """One spelling per architecture: Windows says "AMD64", Linux "aarch64", macOS "arm64"."""
    m = machine.strip().lower()
    if m in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if m in ("aarch64", "arm64", "armv8l", "aarch64_be"):
        return "arm64"
    return m or "unknown"


def _flag_key(flag: str) -> str:
    """Strip the macOS sysctl prefixes so "hw.optional.arm.FEAT_DotProd" reads "dotprod"."""
    key = flag.strip().lower()
    for prefix in ("hw.optional.", "arm.", "feat_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def llama_features(flags: Iterable[str], arch: str) -> tuple[str, ...]:
    """Map OS flag names to llama.cpp's instruction-set names (lower case, sorted, unique).

    On arm64 NEON and fused multiply-add are part of the base architecture, so they are always
    reported even when the OS does not list them (macOS lists neither under those names).
    """
    norm = normalize_arch(arch)
    found: set[str] = set()
    if norm in X86_ARCHES:
        table = _X86_FLAGS
    elif norm == "arm64" or norm.startswith("arm"):
        table = _ARM_FLAGS
        if norm == "arm64":
            found.update(("neon", "arm_fma"))
    else:
        return ()
    for flag in flags:
        feature = table.get(_flag_key(flag))
        if feature:
            found.add(feature)
    return tuple(sorted(found))


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per blank-line separated block (keys as printed, stripped)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _parse_int(text: str | None, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), base)
    except ValueError:
        return None


def _arm_core_name(implementer: str | None, part: str | None) -> str | None:
    imp = _parse_int(implementer, 0)
    num = _parse_int(part, 0)
    if imp is None or num is None:
        return None
    vendor, parts = _ARM_PARTS.get(imp, (f"implementer 0x{imp:02x}", {}))
    return parts.get(num) or f"{vendor} part 0x{num:03x}"


def _arm_model(blocks: list[dict[str, str]]) -> str | None:
    """Core names in order of appearance ("Cortex-A55 + Cortex-A76"), board name in brackets."""
    cores: list[str] = []
    board: str | None = None
    for block in blocks:
        name = _arm_core_name(block.get("CPU implementer"), block.get("CPU part"))
        if name and name not in cores:
            cores.append(name)
        board = board or block.get("Model") or block.get("Hardware")
    if not cores:
        return None
    model = " + ".join(cores)
    return f"{model} ({board})" if board else model


def _common_flags(blocks: list[dict[str, str]], key: str) -> set[str]:
    """Flags every processor has: a hybrid CPU may only use what all of its cores support."""
    sets = [set(b[key].split()) for b in blocks if b.get(key)]
    if not sets:
        return set()
    common = sets[0]
    for s in sets[1:]:
        common &= s
    return common


def parse_proc_cpuinfo(
    text: str, machine: str, physical_cores: int | None, logical_cores: int
) -> Cpu:
    """A `Cpu` from Linux /proc/cpuinfo (x86 "model name"/"flags", ARM "Features"/"CPU part").

    `physical_cores` None means the caller could not count them: they are counted from the distinct
    (physical id, core id) pairs, and when the text has none (ARM) each logical CPU is a core.
    """
    arch = normalize_arch(machine)
    blocks = _cpuinfo_blocks(text)
    logical = max(1, logical_cores)

    if physical_cores is None:
        pairs = {
            (b["physical id"], b["core id"])
            for b in blocks
            if "physical id" in b and "core id" in b
        }
        physical_cores = len(pairs) or logical
    physical = max(1, min(physical_cores, logical))

    model: str | None = None
    for block in blocks:
        name = block.get("model name") or block.get("cpu model")
        if name:
            model = " ".join(name.split())
            break
    if arch in X86_ARCHES:
        flags = _common_flags(blocks, "flags")
    else:
        flags = _common_flags(blocks, "Features")
        # The part table names ARM cores better than the kernel's generic "ARMv7 Processor rev 3".
        model = _arm_model(blocks) or model
    if not model:
        for block in blocks:
            model = block.get("Hardware") or block.get("Processor") or block.get("Model")
            if model:
                break
    return Cpu(
        model=model or f"unknown {arch} CPU",
        arch=arch,
        physical_cores=physical,
        logical_cores=logical,
        features=llama_features(flags, arch),
    )


def parse_darwin_sysctl_cpu(sysctl: Mapping[str, str]) -> Cpu:
    """A `Cpu` from macOS sysctl values (Apple Silicon and Intel Macs).

    The architecture comes from the hardware (hw.optional.arm64), not from platform.machine(): a
    Python running under Rosetta reports x86_64 on an Apple Silicon Mac.
    """
    brand = " ".join(sysctl.get("machdep.cpu.brand_string", "").split())
    apple_silicon = sysctl.get("hw.optional.arm64", "").strip() == "1" or brand.startswith("Apple")
    arch = "arm64" if apple_silicon else "x86_64"

    ncpu = _parse_int(sysctl.get("hw.ncpu"))
    logical = _parse_int(sysctl.get("hw.logicalcpu")) or ncpu or 1
    physical = _parse_int(sysctl.get("hw.physicalcpu")) or logical
    perf = _parse_int(sysctl.get("hw.perflevel0.physicalcpu"))

    flags = [k for k, v in sysctl.items() if k.startswith("hw.optional.") and v.strip() == "1"]
    flags += sysctl.get("machdep.cpu.features", "").split()
    flags += sysctl.get("machdep.cpu.leaf7_features", "").split()

    return Cpu(
        model=brand or ("Apple Silicon" if apple_silicon else "unknown Intel Mac CPU"),
        arch=arch,
        physical_cores=max(1, min(physical, logical)),
        logical_cores=max(1, logical),
        features=llama_features(flags, arch),
        performance_cores=perf if perf and perf > 0 else None,
    )


# `sysctl` accepts subtree names: "hw.optional" prints every hw.optional.* key, "machdep.cpu" the
# brand string and feature lists.
DARWIN_CPU_SYSCTL_KEYS = (
    "machdep.cpu",
    "hw.optional",
    "hw.ncpu",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "hw.perflevel0.physicalcpu",
)


def _cpu_counts() -> tuple[int | None, int]:
    """(physical, logical) from psutil; physical None when the OS does not say."""
    try:
        import psutil

        logical = psutil.cpu_count(logical=True)
        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or failing on an exotic platform: fall back to os
        logical, physical = None, None
    return physical, logical or os.cpu_count() or 1


def probe_cpu() -> Cpu:
    """The I/O edge: this machine's CPU. Never raises for a missing file or command."""
    machine = platform.machine()
    arch = normalize_arch(machine)
    physical, logical = _cpu_counts()

    if sys.platform == "darwin":
        from qwencli.hardware.apple import run_sysctl

        values = run_sysctl(DARWIN_CPU_SYSCTL_KEYS)
        if values:
            return parse_darwin_sysctl_cpu(values)
    elif sys.platform.startswith("linux"):
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        if text:
            return parse_proc_cpuinfo(text, machine, physical, logical)

    # Windows and anything else: name and counts only; the instruction sets stay unknown.
    model = " ".join((platform.processor() or "").split()) or f"unknown {arch} CPU"
    phys = physical or logical
    return Cpu(
        model=model,
        arch=arch,
        physical_cores=max(1, min(phys, logical)),
        logical_cores=max(1, logical),
        features=(),
    )


# ------------------------------------------------------------------------------------------
# The threads a model runs with


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 cpu.max, v1 cfs_quota/period), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def default_threads(physical_cores: int | None, *, cgroup_root: Path | None = None) -> int:
    """Physical cores, capped by the CPUs this process may use (affinity, cgroup quota).

    Logical (SMT) siblings add nothing to a memory-bound decode, and llama.cpp's spinning
    threads on CPUs we do not really have make everything slower. Without a probed count
    (`qwen worker`, a bare engine load), the OS's physical count; half the logical CPUs only
    when it gives none (a two-CPU VM without SMT would get one thread from that guess).
    """
    count = physical_cores or _cpu_counts()[0] or max(1, (os.cpu_count() or 2) // 2)
    if hasattr(os, "sched_getaffinity"):
        with contextlib.suppress(OSError):
            count = min(count, len(os.sched_getaffinity(0)))
    limit = _cgroup_cpu_limit(cgroup_root or Path("/sys/fs/cgroup"))
    if limit is not None:
        count = min(count, max(1, math.floor(limit)))
    return max(1, count)
