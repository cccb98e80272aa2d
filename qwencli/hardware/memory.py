"""System memory and the container limit that may cap it.

Inside a container /proc/meminfo still describes the host, while the kernel enforces the cgroup's
memory limit: a model that "fits" in MemAvailable can still be OOM-killed. So the probe reads both
and keeps the smaller. Usage follows docker and cAdvisor's working set: the cgroup's charge minus
its inactive page cache, which the kernel reclaims before it kills anything.

Parsers are pure; `find_cgroup_limit` and `probe_memory` read files under a `root` so tests can
hand them a fake tree.
"""

from __future__ import annotations

from pathlib import Path

from qwencli.hardware.model import ContainerLimit, Memory
from qwencli.units import format_bytes

# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit value
# (9223372036854771712 with 4 KiB pages); any value this large is no limit in practice.
_NO_LIMIT = 2**62


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {key: bytes}. "kB" lines are converted; unitless counts stay as they are."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            number = int(parts[0])
        except ValueError:
            continue
        unit = parts[1].lower() if len(parts) > 1 else ""
        values[key.strip()] = number * 1024 if unit == "kb" else number
    return values


def _stat_value(memory_stat: str | None, *keys: str) -> int | None:
    """The first of `keys` found in a memory.stat text ("key value" lines)."""
    if not memory_stat:
        return None
    stats: dict[str, int] = {}
    for line in memory_stat.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                stats[parts[0]] = int(parts[1])
            except ValueError:
                continue
    for key in keys:
        if key in stats:
            return stats[key]
    return None


def _to_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _working_set(current: int | None, inactive_file: int | None) -> int | None:
    if current is None:
        return None
    return max(0, current - (inactive_file or 0))


def parse_cgroup_v2(
    memory_max: str, memory_current: str | None, memory_stat: str | None, path: str
) -> ContainerLimit | None:
    """A cgroup v2 limit from memory.max ("max": none); usage = memory.current - inactive_file."""
    limit = _to_int(memory_max)
    if limit is None or limit <= 0 or limit >= _NO_LIMIT:
        return None
    usage = _working_set(_to_int(memory_current), _stat_value(memory_stat, "inactive_file"))
    return ContainerLimit(limit, usage, f"cgroup v2 memory.max ({path})")


def parse_cgroup_v1(
    limit_in_bytes: str, usage_in_bytes: str | None, memory_stat: str | None, path: str
) -> ContainerLimit | None:
    """A cgroup v1 limit (memory.limit_in_bytes); usage = usage_in_bytes - total_inactive_file."""
    limit = _to_int(limit_in_bytes)
    if limit is None or limit <= 0 or limit >= _NO_LIMIT:
        return None
    inactive = _stat_value(memory_stat, "total_inactive_file", "inactive_file")
    usage = _working_set(_to_int(usage_in_bytes), inactive)
    return ContainerLimit(limit, usage, f"cgroup v1 memory.limit_in_bytes ({path})")


def _short_source(source: str) -> str:
    """'cgroup v2 memory.max (/sys/fs/cgroup/memory.max)' -> 'cgroup v2 memory.max'."""
    head, sep, _ = source.partition(" (")
    return head if sep else source


def resolve_memory(
    total: int,
    available: int,
    swap_total: int,
    swap_free: int,
    limit: ContainerLimit | None,
) -> Memory:
    """Physical RAM and a container limit, the smaller winning; `reason` says which and why."""
    if limit is None:
        reason = (
            f"no container memory limit; {format_bytes(available)} of {format_bytes(total)} "
            "physical RAM is available (the kernel's estimate of what can be allocated "
            "without swapping)"
        )
        return Memory(total, available, swap_total, swap_free, None, None, reason)

    label = _short_source(limit.source)
    cap = format_bytes(limit.limit_bytes)
    if limit.limit_bytes >= total:
        reason = (
            f"container limit {cap} ({label}) is not below physical RAM {format_bytes(total)}, "
            f"so RAM is what counts; {format_bytes(available)} of it is available"
        )
        return Memory(total, available, swap_total, swap_free, None, None, reason)

    if limit.usage_bytes is None:
        headroom = limit.limit_bytes
        unused = f"its usage is unknown, so all {cap} is counted as free"
    else:
        headroom = max(0, limit.limit_bytes - limit.usage_bytes)
        unused = f"{format_bytes(headroom)} of it is unused"
    if headroom <= available:
        reason = (
            f"container limit {cap} ({label}) is below physical RAM {format_bytes(total)}; "
            f"{unused}"
        )
        avail = headroom
    else:
        reason = (
            f"container limit {cap} ({label}) is below physical RAM {format_bytes(total)}, but "
            f"the host has only {format_bytes(available)} available, less than the "
            f"{format_bytes(headroom)} the limit leaves"
        )
        avail = available
    return Memory(
        total, avail, swap_total, swap_free, limit.limit_bytes, limit.source, reason
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """(v1 memory controller path, v2 unified path) from /proc/self/cgroup."""
    v1 = v2 = None
    for line in proc_self_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v1, v2


def _walk_up(mount: Path, cgroup_path: str) -> list[Path]:
    """This cgroup's directory and each parent up to the mount, deepest first.

    In a container namespace the path from /proc/self/cgroup may not exist under the mount (or
    contain ".." when the cgroup lies outside the namespace); the mount root is then the container's
    own cgroup, and the walk still ends there.
    """
    parts = [p for p in cgroup_path.split("/") if p and p != "."]
    if ".." in parts:
        parts = []
    return [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def find_cgroup_limit(root: Path = Path("/")) -> ContainerLimit | None:
    """The memory limit on this process: the smallest along its cgroup path, or None."""
    text = _read(root / "proc/self/cgroup")
    if text is None:
        return None
    v1_path, v2_path = _cgroup_paths(text)
    found: list[ContainerLimit] = []
    # (mount, this process's path under it, limit file, usage file, parser) per cgroup version
    layouts = []
    if v1_path is not None:
        layouts.append((root / "sys/fs/cgroup/memory", v1_path, "memory.limit_in_bytes",
                        "memory.usage_in_bytes", parse_cgroup_v1))
    if v2_path is not None:
        layouts.append((root / "sys/fs/cgroup", v2_path, "memory.max", "memory.current",
                        parse_cgroup_v2))
    for mount, path, limit_file, usage_file, parse in layouts:
        for d in _walk_up(mount, path):
            raw = _read(d / limit_file)
            if raw is None:
                continue
            limit = parse(raw, _read(d / usage_file), _read(d / "memory.stat"),
                          str(d / limit_file))
            if limit:
                found.append(limit)

    return min(found, key=lambda c: c.limit_bytes) if found else None


def probe_memory(root: Path = Path("/")) -> Memory:
    """The I/O edge: /proc/meminfo plus any cgroup limit on Linux, psutil elsewhere."""
    text = _read(root / "proc/meminfo")
    info = parse_meminfo(text) if text else {}
    if "MemTotal" not in info:
        import psutil

        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        return resolve_memory(
            int(vm.total), int(vm.available), int(swap.total), int(swap.free), None
        )

    total = info["MemTotal"]
    available = info.get("MemAvailable")
    if available is None:  # kernels before 3.14 have no MemAvailable
        available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    return resolve_memory(
        total,
        min(available, total),
        info.get("SwapTotal", 0),
        info.get("SwapFree", 0),
        find_cgroup_limit(root),
    )
