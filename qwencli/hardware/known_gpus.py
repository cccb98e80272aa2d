"""The table of known GPUs (`profiles/gpus.toml`): memory, bandwidth and backend by name.

What-if runs (`--gpu "RTX 4090"`) and named machines need a card's memory and bandwidth without
the card being present, and a probe that knows a GPU's name but not its bandwidth can look it up.
Names are matched loosely: case, spacing, punctuation and vendor words ("NVIDIA", "GeForce",
"AMD", "Radeon", "Intel", "Apple", "Tesla", "Graphics") are ignored, "Laptop GPU"/"Mobile"/"Max-Q"
mean the laptop part, and the series prefix ("RTX", "GTX", "RX", "Arc") may be left out, so
"NVIDIA GeForce RTX 4090", "rtx4090" and "4090" find the same entry. Apple chips whose bandwidth
depends on the GPU core count (M3 Max, M4 Max) are told apart by `cores`, or by a core count in
the name ("M3 Max 40-core GPU"); without one the slower variant is returned, so estimates err low.

This module also holds the small TOML reading helpers that `profiles.py` shares: every error
names the file and the key, and a syntax error names the line.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from qwencli.errors import ConfigError
from qwencli.hardware import metal
from qwencli.hardware.model import Bandwidth, Gpu
from qwencli.paths import bundled_profiles_dir
from qwencli.units import parse_size

VENDORS = ("nvidia", "amd", "intel", "apple")
BACKENDS = ("cuda", "hip", "metal", "vulkan", "sycl")

# --------------------------------------------------------------------------------------------
# TOML reading shared with profiles.py


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a ConfigError "<file>: line N: <problem>"."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {_toml_problem(exc, text)}") from exc


def _toml_problem(exc: Exception, text: str) -> str:
    """tomllib says "Invalid value (at line 3, column 7)"; users read "line 3: invalid value"."""
    message = str(exc)
    match = re.match(r"^(.*?)\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        problem, line, column = match.groups()
        return f"line {line}: {problem[:1].lower()}{problem[1:]} (column {column})"
    match = re.match(r"^(.*?)\s*\(at end of document\)$", message)
    if match:
        problem = match.group(1)
        last_line = max(1, len(text.splitlines()))
        return f"line {last_line}: {problem[:1].lower()}{problem[1:]} (at end of file)"
    return message


class TomlSection:
    """Typed access to one TOML table; every error names the file and the dotted key."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = data
        self.prefix = prefix

    def key(self, name: str) -> str:
        """The dotted key as a user would find it in the file, e.g. 'gpus[0].vram'."""
        return f"{self.prefix}{name}"

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{self.key(name)}': {problem}")

    def check_keys(self, required: Sequence[str], optional: Sequence[str] = ()) -> None:
        """Reject unknown keys (a typo would otherwise be silently ignored) and missing ones."""
        allowed = set(required) | set(optional)
        for name in self.data:
            if name not in allowed:
                known = ", ".join(sorted(allowed))
                raise ConfigError(
                    f"{self.path}: unknown key '{self.key(name)}' (allowed here: {known})"
                )
        for name in required:
            if name not in self.data:
                raise ConfigError(f"{self.path}: missing key '{self.key(name)}'")

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = self.data[name]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(name, f"expected {what}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(name, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def string(self, name: str, choices: Sequence[str] | None = None) -> str:
        value: str = self._get(name, str, "a string")
        if not value.strip():
            raise self.error(name, "must not be empty")
        if choices is not None and value not in choices:
            raise self.error(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, name: str, minimum: int = 1) -> int:
        value: int = self._get(name, int, "an integer")
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        return value

    def positive_number(self, name: str) -> float:
        value = self._get(name, (int, float), "a number")
        if value <= 0:
            raise self.error(name, f"must be greater than zero, got {value}")
        return float(value)

    def boolean(self, name: str) -> bool:
        value: bool = self._get(name, bool, "true or false")
        return value

    def size(self, name: str) -> int:
        """A size string such as "16GB" (bare GB is binary, as units.parse_size documents)."""
        value = self._get(name, str, 'a size string such as "16GB"')
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from exc

    def strings(self, name: str) -> tuple[str, ...]:
        values = self._get(name, list, "a list of strings")
        for value in values:
            if not isinstance(value, str) or not value.strip():
                raise self.error(name, f"expected a list of strings, found {value!r}")
        return tuple(values)

    def integers(self, name: str) -> tuple[int, ...]:
        values = self._get(name, list, "a list of integers")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise self.error(name, f"expected a list of positive integers, found {value!r}")
        return tuple(values)

    def table(self, name: str) -> TomlSection:
        value = self._get(name, dict, "a table")
        return TomlSection(self.path, value, f"{self.key(name)}.")

    def tables(self, name: str) -> list[TomlSection]:
        values = self._get(name, list, "an array of tables")
        sections = []
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise self.error(f"{name}[{i}]", "expected a table")
            sections.append(TomlSection(self.path, value, f"{self.key(name)}[{i}]."))
        return sections


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
    data = read_toml(path)
    root = TomlSection(path, data)
    root.check_keys(["gpu"])
    gpus = tuple(parse_entry(section) for section in root.tables("gpu"))
    _check_unique(path, gpus)
    return gpus


def load_known_gpus(path: Path | None = None) -> tuple[KnownGpu, ...]:
    """The known-GPU table (bundled unless `path` is given), validated and cached per file."""
    return _load_cached(Path(path) if path is not None else default_table_path())


def parse_entry(section: TomlSection) -> KnownGpu:
    """Validate one `[[gpu]]` table. Apple-style unified entries may omit `memory`."""
    section.check_keys(
        ["name", "vendor", "backend", "bandwidth_gbs"],
        ["aliases", "memory", "unified", "gpu_cores"],
    )
    unified = section.boolean("unified") if section.has("unified") else False
    memory = section.size("memory") if section.has("memory") else None
    if memory is None and not unified:
        raise ConfigError(f"{section.path}: missing key '{section.key('memory')}'")
    return KnownGpu(
        name=section.string("name"),
        aliases=section.strings("aliases") if section.has("aliases") else (),
        vendor=section.string("vendor", VENDORS),
        backend=section.string("backend", BACKENDS),
        memory_bytes=memory,
        bandwidth_bytes_per_s=round(section.positive_number("bandwidth_gbs") * 1e9),
        unified=unified,
        gpu_cores=section.integers("gpu_cores") if section.has("gpu_cores") else (),
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
