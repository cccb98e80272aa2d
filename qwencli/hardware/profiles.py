"""Named machines (`profiles/hardware/*.toml`) for `--hardware NAME` what-if runs.

A profile states a machine from its spec sheet, so plans can be made for hardware the user does
not have at hand. Bundled profiles ship in `profiles/hardware/`; files in the user's
`config_dir()/hardware/` add to them, and one with the same name replaces the bundled one.

Schema (unknown keys are an error, so a typo is not silently ignored):

    name = "desktop-rtx4090-64gb"      # must equal the file name without .toml
    description = "..."
    os = "linux"                        # linux | darwin | windows
    ram = "64GB"                        # size string; bare GB is binary, as on the box
    ram_bandwidth_gbs = 83.2            # CPU memory bandwidth, decimal GB/s
    ram_available = "60GB"              # optional; default: ram less the OS's idle reserve
    unified = false                     # optional; true for Apple Silicon / Jetson
    [cpu]
    model = "AMD Ryzen 9 7950X"
    arch = "x86_64"                     # x86_64 | arm64 | ...
    physical_cores = 16
    logical_cores = 32
    performance_cores = 8               # optional (Apple P-cores)
    features = ["avx2", "fma", ...]     # as cpu.llama_features names them (sorted on load)
    [[gpus]]                            # optional, one table per kind of card
    name = "RTX 4090"                   # a name the known-GPU table (profiles/gpus.toml) knows
    count = 1                           # optional, default 1
    vram = "24GB"                       # optional override of the table's memory

`unified` must agree with the GPU table: a unified machine has exactly one unified GPU, whose
memory is the machine's RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qwencli import tomlfile
from qwencli.errors import ConfigError, UsageError
from qwencli.hardware.known_gpus import SIZE, KnownGpu, lookup, nearest_names, size_at
from qwencli.hardware.model import (
    Bandwidth,
    Cpu,
    Gpu,
    Hardware,
    LlamaCppBuild,
    Memory,
)
from qwencli.paths import bundled_profiles_dir, config_dir
from qwencli.tomlfile import Field
from qwencli.units import format_bytes

GIB = 1024**3
OSES = ("linux", "darwin", "windows")

# What an idle OS (kernel, desktop or services, page cache it will not give back) keeps for
# itself on a machine whose RAM is stated rather than measured: 10 % of RAM, at least 0.5 GiB
# (a headless server) and at most 2 GiB (a desktop session), and never more than half the RAM.
RESERVE_SHARE = 0.10
RESERVE_MIN = GIB // 2
RESERVE_MAX = 2 * GIB
# An OS whose realistic idle use is known to be above that rule keeps its own figure:
# estimate: macOS (Sonoma/Sequoia) with a browser and a terminal open keeps about 2.5 GB in use
# (wired + compressed + app memory in Activity Monitor), far above the generic 10 % on an 8 GB
# Mac. A stated Mac (profile or what-if) reserves this much, never more than half its RAM.
OS_RESERVE = {"darwin": 5 * GIB // 2}

_TEXT = Field("str", required=True, blank=False)
_COUNT = Field("int", required=True, minimum=1)
_SCHEMA = {
    "name": _TEXT,
    "description": _TEXT,
    "os": Field("str", required=True, choices=OSES),
    "ram": replace(SIZE, required=True),
    "ram_bandwidth_gbs": Field("number", required=True, above=0),
    "ram_available": SIZE,
    "unified": Field("bool"),
    "cpu": Field("table", required=True, sub={
        "model": _TEXT,
        "arch": _TEXT,
        "physical_cores": _COUNT,
        "logical_cores": _COUNT,
        "performance_cores": Field("int", minimum=1),
        "features": Field("strs", required=True, blank=False),
    }),
    "gpus": Field("tables", sub={
        "name": _TEXT,  # a name the known-GPU table knows (checked after the schema)
        "count": Field("int", minimum=1),
        "vram": SIZE,
    }),
}


@dataclass(frozen=True)
class ProfileGpu:
    """One `[[gpus]]` entry: a known card, how many, and an optional memory override."""

    name: str  # canonical known-GPU name
    count: int
    vram_bytes: int | None


@dataclass(frozen=True)
class HardwareProfile:
    """A named machine as its file states it (sizes in bytes, bandwidth in bytes/s)."""

    name: str
    description: str
    path: Path
    os: str
    cpu: Cpu
    ram_bytes: int
    ram_bandwidth_bytes_per_s: int
    ram_available_bytes: int | None
    gpus: tuple[ProfileGpu, ...]
    unified: bool


# --------------------------------------------------------------------------------------------
# Building a Hardware from stated facts (shared with whatif.py)


def idle_os_reserve(total_bytes: int, os: str = "linux") -> int:
    """RAM an idle OS keeps for itself: the OS's own figure (macOS: 2.5 GiB), else
    max(0.5 GiB, 10 %) capped at 2 GiB; never more than half."""
    reserve = OS_RESERVE.get(os)
    if reserve is None:
        reserve = min(max(RESERVE_MIN, int(total_bytes * RESERVE_SHARE)), RESERVE_MAX)
    return min(reserve, total_bytes // 2)


def reserve_rule(os: str) -> str:
    """The reserve rule in words, for the memory's reason line."""
    if os in OS_RESERVE:
        return f"what an idle {OS_NAMES.get(os, os)} keeps, an estimate"
    return "an idle OS keeps (10 % of RAM, at least 0.5 GiB, at most 2 GiB)"


OS_NAMES = {"darwin": "macOS", "linux": "Linux", "windows": "Windows"}


def stated_memory(
    total_bytes: int,
    *,
    available_bytes: int | None,
    bandwidth: Bandwidth | None,
    swap_total_bytes: int = 0,
    swap_free_bytes: int = 0,
    origin: str,
    os: str = "linux",
) -> Memory:
    """Memory for a machine whose RAM is stated (profile, --ram), not measured.

    Without a stated `available_bytes`, available is the total less `idle_os_reserve` of
    the machine's OS.
    """
    if available_bytes is None:
        reserve = idle_os_reserve(total_bytes, os)
        available = total_bytes - reserve
        reason = (
            f"{origin}: {format_bytes(total_bytes)} stated, less {format_bytes(reserve)} "
            f"{reserve_rule(os)}"
        )
    else:
        available = min(available_bytes, total_bytes)
        reason = f"{origin}: {format_bytes(available)} available as stated"
    return Memory(
        total_bytes=total_bytes,
        available_bytes=available,
        swap_total_bytes=swap_total_bytes,
        swap_free_bytes=swap_free_bytes,
        limit_bytes=None,
        limit_source=None,
        reason=reason,
        bandwidth=bandwidth,
    )


def gpu_backend(gpus: Sequence[Gpu]) -> str:
    """The backend a build for these GPUs would use: that of the GPU with the most memory."""
    return max(gpus, key=lambda gpu: gpu.total_bytes).backend


def assumed_build(
    gpus: Sequence[Gpu], *, version: str | None, cpu_features: tuple[str, ...]
) -> LlamaCppBuild:
    """A stated machine assumes a llama-cpp-python build that can use its GPUs (or its CPU)."""
    if gpus:
        return LlamaCppBuild(
            installed=True,
            version=version,
            gpu_offload=True,
            backend=gpu_backend(gpus),
            cpu_features=cpu_features,
            source="assumed",
        )
    return LlamaCppBuild(
        installed=True,
        version=version,
        gpu_offload=False,
        backend="cpu",
        cpu_features=cpu_features,
        source="assumed",
    )


def profile_to_hardware(p: HardwareProfile, table: Sequence[KnownGpu] | None = None) -> Hardware:
    """The profile as a Hardware record (source "profile NAME"); pure given the GPU table."""
    memory = stated_memory(
        p.ram_bytes,
        available_bytes=p.ram_available_bytes,
        bandwidth=Bandwidth(
            p.ram_bandwidth_bytes_per_s,
            "profile",
            f"stated in profile {p.name} ({p.path})",
        ),
        origin=f"profile {p.name}",
        os=p.os,
    )
    gpus: list[Gpu] = []
    for entry in p.gpus:
        known = lookup(entry.name, table=table)
        if known is None:  # pragma: no cover - load_profile checked the name
            raise ConfigError(f"{p.path}: unknown GPU {entry.name!r}")
        for _ in range(entry.count):
            gpus.append(
                known.to_gpu(len(gpus), vram_bytes=entry.vram_bytes, pool_bytes=p.ram_bytes)
            )
    return Hardware(
        os=p.os,
        cpu=p.cpu,
        memory=memory,
        gpus=tuple(gpus),
        llama_cpp=assumed_build(gpus, version=None, cpu_features=p.cpu.features),
        source=f"profile {p.name}",
    )


# --------------------------------------------------------------------------------------------
# Files


def list_profiles() -> dict[str, Path]:
    """Profile name -> file, bundled first, the user's `config_dir()/hardware/` overriding."""
    found: dict[str, Path] = {}
    for folder in (bundled_profiles_dir() / "hardware", config_dir() / "hardware"):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return dict(sorted(found.items()))


def load_profile(name: str) -> HardwareProfile:
    """Load and validate a named profile; an unknown name is a usage error listing the names."""
    profiles = list_profiles()
    path = profiles.get(name)
    if path is None:
        known = ", ".join(profiles) or "(none)"
        raise UsageError(
            f"unknown hardware profile {name!r}; known profiles: {known}",
            hint=f"add your own as {config_dir() / 'hardware' / (name + '.toml')}",
        )
    return parse_profile(path, tomlfile.read(path))


def parse_profile(
    path: Path, data: dict[str, Any], table: Sequence[KnownGpu] | None = None
) -> HardwareProfile:
    """Validate parsed TOML as a profile; every error names the file and the key."""
    tomlfile.check(data, _SCHEMA, path)
    name = data["name"]
    if name != path.stem:
        raise tomlfile.error(path, "name", f"{name!r} must equal the file name {path.stem!r}")
    ram = size_at(path, "ram", data["ram"])
    available = None
    if "ram_available" in data:
        available = size_at(path, "ram_available", data["ram_available"])
        if available > ram:
            raise tomlfile.error(path, "ram_available", "is larger than ram")
    unified = data.get("unified", False)
    gpus = _parse_gpus(path, data.get("gpus", ()), table)
    _check_unified(path, gpus, unified, table)
    return HardwareProfile(
        name=name,
        description=data["description"],
        path=path,
        os=data["os"],
        cpu=_parse_cpu(path, data["cpu"]),
        ram_bytes=ram,
        ram_bandwidth_bytes_per_s=round(data["ram_bandwidth_gbs"] * 1e9),
        ram_available_bytes=available,
        gpus=gpus,
        unified=unified,
    )


def _parse_cpu(path: Path, cpu: dict[str, Any]) -> Cpu:
    physical = cpu["physical_cores"]
    logical = cpu["logical_cores"]
    if logical < physical:
        raise tomlfile.error(path, "cpu.logical_cores",
                             f"{logical} is fewer than physical_cores {physical}")
    performance = cpu.get("performance_cores")
    if performance is not None and performance > physical:
        raise tomlfile.error(path, "cpu.performance_cores",
                             f"{performance} is more than physical_cores")
    return Cpu(
        model=cpu["model"],
        arch=cpu["arch"],
        physical_cores=physical,
        logical_cores=logical,
        features=tuple(sorted({f.lower() for f in cpu["features"]})),
        performance_cores=performance,
    )


def _parse_gpus(
    path: Path, entries: Sequence[dict[str, Any]], table: Sequence[KnownGpu] | None
) -> tuple[ProfileGpu, ...]:
    gpus = []
    for i, entry in enumerate(entries):
        key = f"gpus[{i}]"
        given = entry["name"]
        known = lookup(given, table=table)
        if known is None:
            near = nearest_names(given, table=table)
            suggestion = f"; did you mean {', '.join(near)}?" if near else ""
            raise tomlfile.error(path, f"{key}.name", f"unknown GPU {given!r}{suggestion}")
        vram = size_at(path, f"{key}.vram", entry["vram"]) if "vram" in entry else None
        if vram is not None and known.unified:
            raise tomlfile.error(path, f"{key}.vram",
                                 f"{known.name} shares system RAM; set ram instead")
        gpus.append(ProfileGpu(name=known.name, count=entry.get("count", 1), vram_bytes=vram))
    return tuple(gpus)


def _check_unified(
    path: Path,
    gpus: Sequence[ProfileGpu],
    unified: bool,
    table: Sequence[KnownGpu] | None,
) -> None:
    """A unified machine has one unified GPU; a unified GPU needs a unified machine."""
    kinds = [lookup(gpu.name, table=table) for gpu in gpus]
    shared = [
        gpu for gpu, known in zip(gpus, kinds, strict=True) if known is not None and known.unified
    ]
    if unified and (len(gpus) != 1 or len(shared) != 1 or gpus[0].count != 1):
        raise tomlfile.error(path, "unified",
                             "a unified-memory machine needs exactly one unified GPU")
    if shared and not unified:
        raise tomlfile.error(path, "unified",
                             f"{shared[0].name} shares system RAM: set unified = true")
