"""Memory: /proc/meminfo, cgroup v1/v2 limits on recorded trees, and which of them wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwencli.hardware.memory import (
    find_cgroup_limit,
    parse_cgroup_v1,
    parse_cgroup_v2,
    parse_meminfo,
    probe_memory,
    resolve_memory,
)
from qwencli.hardware.model import ContainerLimit, Memory

GIB = 1024**3


def _hw(data_dir: Path) -> Path:
    return data_dir / "hw"


# --- /proc/meminfo -------------------------------------------------------------------------------


def test_meminfo_in_bytes(data_dir: Path) -> None:
    info = parse_meminfo((_hw(data_dir) / "meminfo/arm64_raspberry_pi_5_8g.txt").read_text())
    assert info["MemTotal"] == 8252368 * 1024
    assert info["MemAvailable"] == 6126208 * 1024
    assert info["SwapTotal"] == info["SwapFree"] == 2097136 * 1024
    assert info["Inactive(file)"] == 1626160 * 1024
    assert info["VmallocTotal"] == 68447887360 * 1024


def test_meminfo_unitless_counts_stay_counts() -> None:
    info = parse_meminfo("HugePages_Total:       4\nHugepagesize:       2048 kB\nbroken line\n")
    assert info == {"HugePages_Total": 4, "Hugepagesize": 2048 * 1024}


# --- cgroup parsers ------------------------------------------------------------------------------


def test_v2_max_is_no_limit() -> None:
    assert parse_cgroup_v2("max\n", "123", None, "/sys/fs/cgroup/memory.max") is None


def test_v2_usage_excludes_inactive_page_cache() -> None:
    got = parse_cgroup_v2(
        "4294967296\n", "1288490188\n", "anon 100\ninactive_file 429496730\nactive_file 5\n",
        "/sys/fs/cgroup/memory.max",
    )
    assert got == ContainerLimit(
        4 * GIB, 1288490188 - 429496730, "cgroup v2 memory.max (/sys/fs/cgroup/memory.max)"
    )


def test_v2_without_current_has_unknown_usage_and_without_stat_counts_all() -> None:
    assert parse_cgroup_v2("1073741824", None, None, "p").usage_bytes is None
    assert parse_cgroup_v2("1073741824", "500", None, "p").usage_bytes == 500
    # The page cache can exceed the charge briefly; usage never goes below zero.
    assert parse_cgroup_v2("1073741824", "500", "inactive_file 900\n", "p").usage_bytes == 0


def test_v1_unlimited_value_is_no_limit() -> None:
    assert parse_cgroup_v1("9223372036854771712\n", "1", None, "p") is None
    assert parse_cgroup_v1(str(2**62), "1", None, "p") is None
    assert parse_cgroup_v1("-1", "1", None, "p") is None
    assert parse_cgroup_v1("garbage", "1", None, "p") is None


def test_v1_usage_uses_total_inactive_file_over_inactive_file() -> None:
    stat = "inactive_file 10\ntotal_inactive_file 209715200\n"
    got = parse_cgroup_v1("2147483648", "734003200", stat, "/x/memory.limit_in_bytes")
    assert got == ContainerLimit(
        2 * GIB, 734003200 - 209715200, "cgroup v1 memory.limit_in_bytes (/x/memory.limit_in_bytes)"
    )
    assert parse_cgroup_v1("2147483648", "734003200", "inactive_file 4\n", "p").usage_bytes == (
        734003196
    )


# --- resolve_memory ------------------------------------------------------------------------------


def test_no_limit_keeps_memavailable() -> None:
    got = resolve_memory(24 * GIB, 20 * GIB, 2 * GIB, GIB, None)
    assert got == Memory(
        total_bytes=24 * GIB, available_bytes=20 * GIB, swap_total_bytes=2 * GIB,
        swap_free_bytes=GIB, limit_bytes=None, limit_source=None,
        reason="no container memory limit; 20.0 GiB of 24.0 GiB physical RAM is available "
        "(the kernel's estimate of what can be allocated without swapping)",
        bandwidth=None,
    )


def test_limit_below_ram_wins_with_its_unused_part() -> None:
    source = "cgroup v2 memory.max (/sys/fs/cgroup/memory.max)"
    limit = ContainerLimit(4 * GIB, int(0.8 * GIB), source)
    got = resolve_memory(24 * GIB, 20 * GIB, 0, 0, limit)
    assert got.available_bytes == 4 * GIB - int(0.8 * GIB)
    assert got.limit_bytes == 4 * GIB
    assert got.limit_source == "cgroup v2 memory.max (/sys/fs/cgroup/memory.max)"
    assert got.reason == (
        "container limit 4.0 GiB (cgroup v2 memory.max) is below physical RAM 24.0 GiB; "
        "3.2 GiB of it is unused"
    )
    assert got.bandwidth is None


def test_limit_below_ram_but_host_has_less_free() -> None:
    limit = ContainerLimit(16 * GIB, 4 * GIB, "cgroup v1 memory.limit_in_bytes (/p)")
    got = resolve_memory(24 * GIB, 5 * GIB, 0, 0, limit)
    assert got.available_bytes == 5 * GIB
    assert got.limit_bytes == 16 * GIB
    assert got.reason == (
        "container limit 16.0 GiB (cgroup v1 memory.limit_in_bytes) is below physical RAM "
        "24.0 GiB, but the host has only 5.0 GiB available, less than the 12.0 GiB the limit "
        "leaves"
    )


def test_limit_above_ram_is_not_a_limit() -> None:
    limit = ContainerLimit(64 * GIB, GIB, "cgroup v2 memory.max (/m)")
    got = resolve_memory(24 * GIB, 20 * GIB, 0, 0, limit)
    assert (got.available_bytes, got.limit_bytes, got.limit_source) == (20 * GIB, None, None)
    assert got.reason == (
        "container limit 64.0 GiB (cgroup v2 memory.max) is not below physical RAM 24.0 GiB, "
        "so RAM is what counts; 20.0 GiB of it is available"
    )


def test_limit_with_unknown_usage_counts_all_of_it() -> None:
    got = resolve_memory(24 * GIB, 20 * GIB, 0, 0, ContainerLimit(4 * GIB, None, "cgroup v2 x (y)"))
    assert got.available_bytes == 4 * GIB
    assert got.reason.endswith("its usage is unknown, so all 4.0 GiB is counted as free")


def test_limit_already_overused_leaves_nothing() -> None:
    got = resolve_memory(24 * GIB, 20 * GIB, 0, 0, ContainerLimit(4 * GIB, 5 * GIB, "cgroup v2 x"))
    assert got.available_bytes == 0
    assert got.reason.endswith("0 B of it is unused")


# --- find_cgroup_limit on recorded trees ---------------------------------------------------------


def test_docker_v2_4g(data_dir: Path) -> None:
    root = _hw(data_dir) / "cgroup/v2_docker_4g"
    got = find_cgroup_limit(root)
    assert got == ContainerLimit(
        4 * GIB, 1288490188 - 429496730,
        f"cgroup v2 memory.max ({root / 'sys/fs/cgroup/memory.max'})",
    )


def test_systemd_v2_parent_slice_limit_is_the_smallest(data_dir: Path) -> None:
    root = _hw(data_dir) / "cgroup/v2_systemd_nested"
    got = find_cgroup_limit(root)
    assert got is not None
    # session-3.scope has 16 GiB, user-1000.slice "max", user.slice 8 GiB: 8 GiB wins, with the
    # usage of user.slice (3 GiB charged, 0.5 GiB of it inactive page cache).
    assert got.limit_bytes == 8 * GIB
    assert got.usage_bytes == 3 * GIB - GIB // 2
    assert got.source.endswith("user.slice/memory.max)")


def test_docker_v1_without_namespace_falls_back_to_the_mount_root(data_dir: Path) -> None:
    root = _hw(data_dir) / "cgroup/v1_docker_2g"
    got = find_cgroup_limit(root)
    assert got == ContainerLimit(
        2 * GIB, 734003200 - 209715200,
        f"cgroup v1 memory.limit_in_bytes ({root / 'sys/fs/cgroup/memory/memory.limit_in_bytes'})",
    )


def test_unlimited_v1_host_recorded_on_the_development_machine(data_dir: Path) -> None:
    assert find_cgroup_limit(_hw(data_dir) / "cgroup/v1_host_unlimited") is None


def test_no_proc_self_cgroup_means_no_limit(tmp_path: Path) -> None:
    assert find_cgroup_limit(tmp_path) is None


def test_path_outside_the_namespace_reads_the_mount_root(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/../../user.slice/other.scope\n")
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/memory.max").write_text("1073741824\n")
    got = find_cgroup_limit(tmp_path)
    assert got is not None
    assert (got.limit_bytes, got.usage_bytes) == (GIB, None)


# --- probe_memory --------------------------------------------------------------------------------


def test_probe_memory_in_a_4g_container_on_a_24g_host(data_dir: Path) -> None:
    root = _hw(data_dir) / "cgroup/v2_docker_4g"
    got = probe_memory(root)
    info = parse_meminfo((root / "proc/meminfo").read_text())
    assert got.total_bytes == info["MemTotal"]
    assert got.available_bytes == 4 * GIB - (1288490188 - 429496730)
    assert got.limit_bytes == 4 * GIB
    assert got.reason == (
        "container limit 4.0 GiB (cgroup v2 memory.max) is below physical RAM 23.5 GiB; "
        "3.2 GiB of it is unused"
    )


def test_probe_memory_on_the_unlimited_host(data_dir: Path) -> None:
    root = _hw(data_dir) / "cgroup/v1_host_unlimited"
    got = probe_memory(root)
    assert got.total_bytes == 24683652 * 1024
    assert got.available_bytes == 24324624 * 1024
    assert (got.swap_total_bytes, got.swap_free_bytes, got.limit_bytes) == (0, 0, None)


def test_probe_memory_without_memavailable_uses_free_buffers_cached(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(
        "MemTotal: 4000 kB\nMemFree: 1000 kB\nBuffers: 100 kB\nCached: 900 kB\n"
    )
    got = probe_memory(tmp_path)
    assert (got.total_bytes, got.available_bytes) == (4000 * 1024, 2000 * 1024)


def test_probe_memory_on_this_machine_agrees_with_proc_meminfo() -> None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("not Linux")
    got = probe_memory()
    info = parse_meminfo(meminfo.read_text())
    assert got.total_bytes == info["MemTotal"]
    assert got.swap_total_bytes == info["SwapTotal"]
    if got.limit_bytes is None:
        # MemAvailable moves between two reads; a few MiB is the noise of a busy machine.
        assert abs(got.available_bytes - info["MemAvailable"]) < 256 * 1024**2


def test_probe_memory_off_linux_uses_psutil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    class VM:
        total, available = 16 * GIB, 9 * GIB

    class Swap:
        total, free = 2 * GIB, GIB

    monkeypatch.setattr(psutil, "virtual_memory", lambda: VM)
    monkeypatch.setattr(psutil, "swap_memory", lambda: Swap)
    got = probe_memory(tmp_path)
    assert (got.total_bytes, got.available_bytes) == (16 * GIB, 9 * GIB)
    assert (got.swap_total_bytes, got.swap_free_bytes, got.limit_bytes) == (2 * GIB, GIB, None)
