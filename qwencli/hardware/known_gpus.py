"""The table of known GPUs (`profiles/gpus.toml`): memory, bandwidth and backend by name.

What-if runs (`--gpu "RTX 4090"`) and named machines need a card's memory and bandwidth without
the card being present, and a probe that knows a GPU's name but not its bandwidth can look it up.
Names are matched loosely: case, spacing, punctuation and vendor words ("NVIDIA", "GeForce",
"AMD", "Radeon", "Intel", "Apple", "Tesla", "Graphics") are ignored, "Laptop GPU"/"Mobile"/"Max-Q"
mean the laptop part, and the series prefix ("RTX", "GTX", "RX", "Arc") may be left out, so
"NVIDIA GeForce RTX 4090", "rtx4090" and "4090" find the same entry. Apple chips whose bandwidth
depends on the GPU core count (M3 Max, M4 Max) are told apart by `cores`, or by a core count in
the name ("M3 Max 40-core GPU"); without one the slower variant is returned, so estimates err low.

This module also holds what `profiles.py` shares for reading sizes: the `SIZE` field and
`size_at`, so a bad size reads like every other file error (`tomlfile`'s format).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from qwencli import tomlfile
from qwencli.errors import ConfigError
from qwencli.hardware import metal
from qwencli.hardware.model import Bandwidth, Cpu, Gpu
from qwencli.paths import bundled_profiles_dir
from qwencli.tomlfile import Field
from qwencli.units import parse_size

VENDORS = ("nvidia", "amd", "intel", "apple")
BACKENDS = ("cuda", "hip", "metal", "vulkan", "sycl")

# --------------------------------------------------------------------------------------------
# Schema (sizes shared with profiles.py)

# A memory size as a person writes it ("16GB"; bare GB is binary, as units.parse_size documents).
SIZE = Field("str", expect='a size string such as "16GB"')


def size_at(file: Path, key: str, text: str) -> int:
    """A `SIZE` value in bytes; what parse_size objects to becomes `<file>: <key>: <problem>`."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise tomlfile.error(file, key, str(exc)) from None


_ENTRY = {
    "name": Field("str", required=True, blank=False),
    "aliases": Field("strs", blank=False),
    "vendor": Field("str", required=True, choices=VENDORS),
    "backend": Field("str", required=True, choices=BACKENDS),
    "memory": SIZE,  # required unless unified (Apple chips use the machine's RAM)
    "bandwidth_gbs": Field("number", required=True, above=0),
    "unified": Field("bool"),
    "gpu_cores": Field("ints", minimum=1),
    # a system on a chip brings its CPU and OS (all or none; unified entries only)
    "cpu_model": Field("str", blank=False),
    "cpu_arch": Field("str", blank=False),
    "cpu_cores": Field("int", minimum=1),
    "cpu_performance_cores": Field("int", minimum=1),
    "cpu_features": Field("strs", blank=False),
    "os": Field("str", choices=("linux", "darwin", "windows")),
    # what the chip's CPU cores can draw, when less than the chip's bandwidth (optional)
    "cpu_bandwidth_gbs": Field("number", above=0),
}
_SOC_KEYS = ("cpu_model", "cpu_arch", "cpu_cores", "cpu_features", "os")
_TABLE = {"gpu": Field("tables", required=True, sub=_ENTRY)}


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class KnownGpu:
    """One row of `profiles/gpus.toml`: what a what-if or named machine needs to know of a card."""

    name: str  # canonical name, shown to the user
    aliases: tuple[str, ...]
    vendor: str  # "nvidia" | "amd" | "intel" | "apple"
    backend: str  # llama.cpp backend: "cuda" | "hip" | "metal" | "vulkan" | "sycl"
    memory_bytes: int | None  # None for Apple chips: their memory is the machine's RAM
    bandwidth_bytes_per_s: int
    unified: bool  # shares system RAM (Apple Silicon, Jetson)
    gpu_cores: tuple[int, ...] = ()  # Apple: the GPU core counts this entry stands for
    cpu: Cpu | None = None  # a system on a chip's CPU (Apple M-series, Jetson), else None
    os: str | None = None  # the OS such a machine runs ("darwin" for Apple)
    # what the chip's CPU cores can draw (Apple Max/Ultra: about half the chip's), else None
    cpu_bandwidth_bytes_per_s: int | None = None

    @property
    def bandwidth_gbs(self) -> float:
        """Peak bandwidth in decimal GB/s, as the table states it."""
        return self.bandwidth_bytes_per_s / 1e9

    @property
    def bandwidth(self) -> Bandwidth:
        return Bandwidth(
            self.bandwidth_bytes_per_s,
            "table",
            f"{self.name} specification (known-GPU table, profiles/gpus.toml)",
        )

    def to_gpu(
        self,
        index: int,
        *,
        vram_bytes: int | None = None,
        pool_bytes: int | None = None,
        cores: int | None = None,
    ) -> Gpu:
        """This card as a present, idle GPU (free = total: a stated card is assumed unused).

        `vram_bytes` overrides the table's memory; `pool_bytes` is the RAM a unified GPU shares.
        A Metal GPU gets macOS's default working set as its usable (free) memory.
        """
        if self.unified:
            total = pool_bytes if pool_bytes is not None else self.memory_bytes
            if total is None:
                raise ValueError(f"{self.name} shares system RAM: give pool_bytes")
            working_set = working_set_source = None
            free = total
            if self.backend == "metal":
                working_set = metal.default_working_set(total)
                working_set_source = metal.DEFAULT_SHARE_SOURCE
                free = working_set
            return Gpu(
                index=index,
                name=self.name,
                vendor=self.vendor,
                total_bytes=total,
                free_bytes=free,
                unified=True,
                backend=self.backend,
                integrated=True,
                bandwidth=self.bandwidth,
                cores=cores if cores is not None else _single(self.gpu_cores),
                working_set_bytes=working_set,
                working_set_source=working_set_source,
            )
        total = vram_bytes if vram_bytes is not None else self.memory_bytes
        if total is None:  # pragma: no cover - the loader requires memory for discrete cards
            raise ValueError(f"{self.name} has no memory size in the table")
        return Gpu(
            index=index,
            name=self.name,
            vendor=self.vendor,
            total_bytes=total,
            free_bytes=total,
            unified=False,
            backend=self.backend,
            bandwidth=self.bandwidth,
        )


def _single(values: tuple[int, ...]) -> int | None:
    return values[0] if len(values) == 1 else None


def default_table_path() -> Path:
    return bundled_profiles_dir() / "gpus.toml"


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> tuple[KnownGpu, ...]:
    data = tomlfile.read(path)
    tomlfile.check(data, _TABLE, path)
    gpus = tuple(_entry(path, f"gpu[{i}]", raw) for i, raw in enumerate(data["gpu"]))
    _check_unique(path, gpus)
    return gpus


def load_known_gpus(path: Path | None = None) -> tuple[KnownGpu, ...]:
    """The known-GPU table (bundled unless `path` is given), validated and cached per file."""
    return _load_cached(Path(path) if path is not None else default_table_path())


def _entry(path: Path, key: str, raw: dict[str, Any]) -> KnownGpu:
    """One schema-checked `[[gpu]]` table. Apple-style unified entries may omit `memory`."""
    unified = raw.get("unified", False)
    memory = size_at(path, f"{key}.memory", raw["memory"]) if "memory" in raw else None
    if memory is None and not unified:
        raise tomlfile.error(path, f"{key}.memory",
                             "missing required key (a GPU without unified = true needs it)")
    soc = [k for k in _SOC_KEYS if k in raw]
    if soc and len(soc) != len(_SOC_KEYS):
        missing = ", ".join(k for k in _SOC_KEYS if k not in raw)
        raise tomlfile.error(path, key, f"a system on a chip needs all of its CPU keys: "
                                        f"missing {missing}")
    if soc and not unified:
        raise tomlfile.error(path, f"{key}.cpu_model",
                             "only a unified GPU (a system on a chip) brings a CPU")
    if "cpu_bandwidth_gbs" in raw and not soc:
        raise tomlfile.error(path, f"{key}.cpu_bandwidth_gbs",
                             "only a system on a chip (with its CPU keys) has a CPU bandwidth")
    if raw.get("cpu_bandwidth_gbs", 0) > raw["bandwidth_gbs"]:
        raise tomlfile.error(path, f"{key}.cpu_bandwidth_gbs",
                             "is more than the chip's bandwidth_gbs")
    cpu = None
    if soc:
        cores = raw["cpu_cores"]
        performance = raw.get("cpu_performance_cores")
        if performance is not None and performance > cores:
            raise tomlfile.error(path, f"{key}.cpu_performance_cores",
                                 f"{performance} is more than cpu_cores {cores}")
        cpu = Cpu(model=raw["cpu_model"], arch=raw["cpu_arch"], physical_cores=cores,
                  logical_cores=cores,  # neither Apple's nor Jetson's cores have SMT
                  features=tuple(sorted({f.lower() for f in raw["cpu_features"]})),
                  performance_cores=performance)
    return KnownGpu(
        name=raw["name"],
        aliases=tuple(raw.get("aliases", ())),
        vendor=raw["vendor"],
        backend=raw["backend"],
        memory_bytes=memory,
        bandwidth_bytes_per_s=round(raw["bandwidth_gbs"] * 1e9),
        unified=unified,
        gpu_cores=tuple(raw.get("gpu_cores", ())),
        cpu=cpu,
        os=raw.get("os"),
        cpu_bandwidth_bytes_per_s=round(raw["cpu_bandwidth_gbs"] * 1e9)
        if "cpu_bandwidth_gbs" in raw else None,
    )


def _check_unique(path: Path, gpus: Sequence[KnownGpu]) -> None:
    """Two entries may share a name key only when GPU core counts tell them apart (M3 Max)."""
    for key, entries in _index(gpus).items():
        if len(entries) < 2:
            continue
        cores = [c for entry in entries for c in entry.gpu_cores]
        if any(not entry.gpu_cores for entry in entries) or len(cores) != len(set(cores)):
            names = ", ".join(sorted({entry.name for entry in entries}))
            raise ConfigError(
                f"{path}: entries {names} all match the name {key!r}; "
                "rename one or tell them apart with distinct gpu_cores"
            )


# --------------------------------------------------------------------------------------------
# Name matching

_DROP_WORDS = frozenset(
    {"nvidia", "geforce", "amd", "radeon", "intel", "apple", "tesla", "graphics", "gpu", "r", "tm"}
)
_LAPTOP_WORDS = frozenset({"laptop", "mobile", "maxq"})
_SERIES_PREFIXES = ("rtx", "gtx", "rx", "arc")
_CORES_RE = re.compile(r"(\d+)\s*-?\s*cores?\b(\s*gpu)?", re.IGNORECASE)


def split_cores(name: str) -> tuple[str, int | None]:
    """'Apple M3 Max (40-core GPU)' -> ('Apple M3 Max ()', 40): the core count named in it."""
    match = _CORES_RE.search(name)
    if not match:
        return name, None
    return name[: match.start()] + name[match.end() :], int(match.group(1))


def normalise(name: str) -> str:
    """The matching key: lower-case letters and digits, vendor words dropped, laptop marked."""
    text = name.lower().replace("max-q", "maxq").replace("™", " ").replace("®", " ")
    tokens = [t for t in re.split(r"[^a-z0-9]+", text) if t and t not in _DROP_WORDS]
    laptop = any(t in _LAPTOP_WORDS for t in tokens)
    tokens = [t for t in tokens if t not in _LAPTOP_WORDS and t != "design"]
    if laptop:
        tokens.append("laptop")
    return "".join(tokens)


def _keys(name: str) -> list[str]:
    """The full key and, when it starts with a series prefix, the key without it."""
    key = normalise(split_cores(name)[0])
    keys = [key]
    for prefix in _SERIES_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            keys.append(key[len(prefix) :])
            break
    return keys


def _index(gpus: Sequence[KnownGpu]) -> dict[str, list[KnownGpu]]:
    index: dict[str, list[KnownGpu]] = {}
    for gpu in gpus:
        for label in (gpu.name, *gpu.aliases):
            for key in _keys(label):
                entries = index.setdefault(key, [])
                if not any(entry is gpu for entry in entries):  # a duplicate row still counts
                    entries.append(gpu)
    return index


@lru_cache(maxsize=8)
def _cached_index(gpus: tuple[KnownGpu, ...]) -> dict[str, list[KnownGpu]]:
    return _index(gpus)


def lookup(
    name: str, cores: int | None = None, *, table: Sequence[KnownGpu] | None = None
) -> KnownGpu | None:
    """The known GPU this name means, or None. `cores` picks an Apple variant (M3 Max 30/40)."""
    gpus = tuple(table) if table is not None else load_known_gpus()
    index = _cached_index(gpus)
    bare, named_cores = split_cores(name)
    if cores is None:
        cores = named_cores
    key = normalise(bare)
    if not key:
        return None
    entries = index.get(key)
    if entries is None:
        for prefix in _SERIES_PREFIXES:
            if key.startswith(prefix):
                entries = index.get(key[len(prefix) :])
                break
    if not entries:
        return None
    if len(entries) == 1:
        return entries[0]
    if cores is not None:
        for entry in entries:
            if cores in entry.gpu_cores:
                return entry
    return min(entries, key=lambda entry: entry.bandwidth_bytes_per_s)


def nearest_names(name: str, n: int = 5, *, table: Sequence[KnownGpu] | None = None) -> list[str]:
    """Canonical names that look like `name`, best first, for 'did you mean' messages."""
    gpus = tuple(table) if table is not None else load_known_gpus()
    index = _cached_index(gpus)
    key = normalise(split_cores(name)[0])
    if not key:
        return []
    names: list[str] = []
    for match in difflib.get_close_matches(key, list(index), n=n * 4, cutoff=0.5):
        for entry in index[match]:
            if entry.name not in names:
                names.append(entry.name)
    return names[:n]
