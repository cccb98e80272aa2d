"""Apple Silicon GPU on recorded sysctl, ioreg and system_profiler outputs (see SOURCES.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qwencli.hardware import apple, metal
from qwencli.hardware.apple import (
    apple_gpu,
    parse_ioreg_gpu_cores,
    parse_sysctl,
    parse_system_profiler_displays,
    probe_apple,
    run_command,
    run_sysctl,
)
from qwencli.hardware.model import Gpu

GIB = 1024**3


def _read(data_dir: Path, name: str) -> str:
    return (data_dir / "hw" / name).read_text()


def _sysctl(data_dir: Path, name: str) -> dict[str, str]:
    return parse_sysctl(_read(data_dir, f"sysctl/{name}"))


# --- parsers -------------------------------------------------------------------------------------


def test_parse_sysctl_keeps_values_and_skips_errors(data_dir: Path) -> None:
    values = _sysctl(data_dir, "m2_macbook_air_8gb.txt")
    assert values["hw.memsize"] == "8589934592"
    assert values["machdep.cpu.brand_string"] == "Apple M2"
    assert values["hw.cachesize"] == "3499458560 65536 4194304 0 0 0 0 0 0 0"
    assert values["hw.osenvironment"] == ""
    assert "iogpu.wired_limit_mb" not in values
    assert not any(k.startswith("sysctl") for k in values)


def test_parse_sysctl_value_with_equals_signs() -> None:
    text = "vm.swapusage: total = 2048.00M  used = 1024.00M  free = 1024.00M  (encrypted)\n"
    assert parse_sysctl(text) == {
        "vm.swapusage": "total = 2048.00M  used = 1024.00M  free = 1024.00M  (encrypted)"
    }


def test_ioreg_core_counts(data_dir: Path) -> None:
    assert parse_ioreg_gpu_cores(_read(data_dir, "ioreg/m2_macbook_air.txt")) == 8
    assert parse_ioreg_gpu_cores(_read(data_dir, "ioreg/m3_max.txt")) == 40
    assert parse_ioreg_gpu_cores("") is None
    assert parse_ioreg_gpu_cores('"gpu-core-count" = lots') is None


def test_system_profiler_m2_ignores_the_cpu_core_line(data_dir: Path) -> None:
    # SPHardwareDataType's "Total Number of Cores: 8 (4 Performance and 4 Efficiency)" comes first.
    text = _read(data_dir, "system_profiler/m2_macbook_air.txt")
    assert parse_system_profiler_displays(text) == ("Apple M2", 8)


def test_system_profiler_m3_max(data_dir: Path) -> None:
    text = _read(data_dir, "system_profiler/m3_max.txt")
    assert parse_system_profiler_displays(text) == ("Apple M3 Max", 40)


def test_system_profiler_intel_mac_has_no_core_count(data_dir: Path) -> None:
    text = _read(data_dir, "system_profiler/intel_mac_uhd630_radeon5500m.txt")
    assert parse_system_profiler_displays(text) == ("Intel UHD Graphics 630", None)
    assert parse_system_profiler_displays("") == (None, None)


# --- apple_gpu -----------------------------------------------------------------------------------


def test_m2_macbook_air_8gb(data_dir: Path) -> None:
    sysctl = _sysctl(data_dir, "m2_macbook_air_8gb.txt")
    cores = parse_ioreg_gpu_cores(_read(data_dir, "ioreg/m2_macbook_air.txt"))
    ws = int(8 * GIB * 2 / 3)  # 5461 MiB, what llama.cpp logs as recommendedMaxWorkingSetSize
    assert apple_gpu(sysctl, cores, "Apple M2") == Gpu(
        index=0,
        name="Apple M2",
        vendor="apple",
        total_bytes=8 * GIB,
        free_bytes=ws,
        unified=True,
        backend="metal",
        integrated=True,
        cores=8,
        working_set_bytes=ws,
        working_set_source=metal.DEFAULT_SHARE_SOURCE,
    )
    assert ws // 1024**2 == 5461


def test_m3_max_64gb_default_share(data_dir: Path) -> None:
    sysctl = _sysctl(data_dir, "m3_max_64gb.txt")
    assert sysctl["iogpu.wired_limit_mb"] == "0"  # present but unset on macOS 14+
    gpu = apple_gpu(sysctl, 40, "Apple M3 Max")
    assert gpu is not None
    assert (gpu.name, gpu.cores, gpu.total_bytes) == ("Apple M3 Max", 40, 64 * GIB)
    assert gpu.working_set_bytes == gpu.free_bytes == 48 * GIB  # 49152 MB in llama.cpp's log
    assert gpu.working_set_source == metal.DEFAULT_SHARE_SOURCE


def test_m3_max_with_raised_wired_limit(data_dir: Path) -> None:
    sysctl = {**_sysctl(data_dir, "m3_max_64gb.txt"), "iogpu.wired_limit_mb": "57344"}
    gpu = apple_gpu(sysctl, 40, "Apple M3 Max")
    assert gpu is not None
    assert gpu.working_set_bytes == gpu.free_bytes == 56 * GIB
    assert gpu.working_set_source == "iogpu.wired_limit_mb = 57344"


def test_name_falls_back_to_brand_string(data_dir: Path) -> None:
    gpu = apple_gpu(_sysctl(data_dir, "m3_max_64gb.txt"), None, None)
    assert gpu is not None
    assert (gpu.name, gpu.cores) == ("Apple M3 Max", None)


def test_rosetta_python_gets_a_note(data_dir: Path) -> None:
    sysctl = {**_sysctl(data_dir, "m2_macbook_air_8gb.txt"), "sysctl.proc_translated": "1"}
    gpu = apple_gpu(sysctl, 8, "Apple M2")
    assert gpu is not None and len(gpu.notes) == 1 and "Rosetta" in gpu.notes[0]


def test_intel_mac_has_no_apple_gpu(data_dir: Path) -> None:
    assert apple_gpu(_sysctl(data_dir, "intel_mac_i7_8750h_16gb.txt"), None, None) is None


def test_no_memsize_no_gpu(data_dir: Path) -> None:
    sysctl = _sysctl(data_dir, "m2_macbook_air_8gb.txt")
    del sysctl["hw.memsize"]
    assert apple_gpu(sysctl, 8, "Apple M2") is None


def test_linux_like_sysctl_has_no_apple_gpu() -> None:
    assert apple_gpu({"kernel.ostype": "Linux", "vm.swappiness": "60"}, None, None) is None
    assert apple_gpu({}, 10, "Apple M2") is None


# --- I/O edges -----------------------------------------------------------------------------------


def test_run_command_never_raises() -> None:
    assert run_command(["/nonexistent/tool"], timeout=1) == ""
    assert run_command(["sleep", "5"], timeout=0.1) == ""


def test_run_sysctl_asks_once_and_parses(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    seen: list[list[str]] = []

    def fake_run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(args)
        assert kwargs["timeout"] == 2
        return subprocess.CompletedProcess(args, 1, _read(data_dir, "sysctl/m3_max_64gb.txt"), "")

    monkeypatch.setattr(apple.subprocess, "run", fake_run)
    values = run_sysctl(["hw.memsize", "iogpu.wired_limit_mb"])
    assert values["hw.memsize"] == str(64 * GIB)
    assert len(seen) == 1 and seen[0][1:] == ["hw.memsize", "iogpu.wired_limit_mb"]
    assert run_sysctl([]) == {}


def test_probe_apple_off_macos_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apple.sys, "platform", "linux")
    assert probe_apple() is None


def test_probe_apple_prefers_ioreg(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    commands: list[str] = []

    def fake_command(args: list[str], timeout: float) -> str:
        commands.append(args[0])
        if args[0] == "ioreg":
            return _read(data_dir, "ioreg/m3_max.txt")
        raise AssertionError("system_profiler should not run when ioreg answers")

    monkeypatch.setattr(apple.sys, "platform", "darwin")
    monkeypatch.setattr(apple, "run_sysctl", lambda keys: _sysctl(data_dir, "m3_max_64gb.txt"))
    monkeypatch.setattr(apple, "run_command", fake_command)
    gpu = probe_apple()
    assert gpu is not None
    assert (gpu.name, gpu.cores, gpu.total_bytes) == ("Apple M3 Max", 40, 64 * GIB)
    assert commands == ["ioreg"]


def test_probe_apple_falls_back_to_system_profiler(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    def fake_command(args: list[str], timeout: float) -> str:
        if args[0] == "system_profiler":
            return _read(data_dir, "system_profiler/m2_macbook_air.txt")
        return ""

    monkeypatch.setattr(apple.sys, "platform", "darwin")
    recorded = _sysctl(data_dir, "m2_macbook_air_8gb.txt")
    monkeypatch.setattr(apple, "run_sysctl", lambda keys: recorded)
    monkeypatch.setattr(apple, "run_command", fake_command)
    gpu = probe_apple()
    assert gpu is not None and (gpu.name, gpu.cores) == ("Apple M2", 8)


def test_probe_apple_on_intel_mac_runs_nothing_else(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    monkeypatch.setattr(apple.sys, "platform", "darwin")
    monkeypatch.setattr(
        apple, "run_sysctl", lambda keys: _sysctl(data_dir, "intel_mac_i7_8750h_16gb.txt")
    )

    def no_command(args: list[str], timeout: float) -> str:
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(apple, "run_command", no_command)
    assert probe_apple() is None
