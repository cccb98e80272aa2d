"""What-if hardware: every rule of whatif.apply, the conflicts, and resolve_hardware's probing."""

from __future__ import annotations

import dataclasses

import pytest

from qwencli.errors import EXIT_USAGE, UsageError
from qwencli.hardware import metal
from qwencli.hardware.model import Bandwidth, ContainerLimit, Hardware, LlamaCppBuild, Memory
from qwencli.hardware.whatif import (
    ASSUMED_GPU_BANDWIDTH,
    ASSUMED_UNIFIED_BANDWIDTH,
    GENERIC_GPU_NAME,
    GENERIC_UNIFIED_NAME,
    WhatIf,
    apply,
    parse_whatif,
    resolve_hardware,
)
from tests.hardware import factories

GIB = 1024**3
RAM_BW = Bandwidth(40 * 10**9, "measured", "test")


def probed_memory() -> Memory:
    """32 GiB, 20 GiB available, inside an 28 GiB container limit, with swap."""
    limit = ContainerLimit(28 * GIB, 10 * GIB, "test cgroup")
    return Memory(total_bytes=32 * GIB, available_bytes=20 * GIB, swap_total_bytes=8 * GIB,
                  swap_free_bytes=6 * GIB, limit_bytes=limit.limit_bytes,
                  limit_source=limit.source, reason="probed", bandwidth=RAM_BW)


def nvidia_box() -> Hardware:
    """A probed Linux box: one RTX 4090 (1 GiB in use), a CPU-only llama.cpp build."""
    return factories.machine(gpus=(factories.nvidia(total_gib=24, free_gib=23),),
                             backend="cpu", mem=probed_memory())


def cpu_box() -> Hardware:
    return factories.machine(mem=probed_memory())


def mac() -> Hardware:
    mem = dataclasses.replace(probed_memory(), total_bytes=64 * GIB, limit_bytes=None,
                              limit_source=None)
    return dataclasses.replace(factories.machine(gpus=(factories.apple(64, 48),),
                                                 backend="metal", mem=mem), os="darwin")


def fail(base: Hardware, whatif: WhatIf) -> str:
    with pytest.raises(UsageError) as info:
        apply(base, whatif)
    assert info.value.exit_code == EXIT_USAGE
    return info.value.message


# --------------------------------------------------------------------------------------------
# WhatIf itself


def test_empty_whatif_returns_the_base_unchanged() -> None:
    assert WhatIf().is_empty()
    assert not WhatIf(cpu_only=True).is_empty()
    assert not WhatIf(hardware="vps-4gb").is_empty()
    base = nvidia_box()
    assert apply(base, WhatIf()) is base


@pytest.mark.parametrize("size", ["16GB", "16GiB", "16G", "16384MB"])
def test_parse_whatif_sizes(size: str) -> None:
    whatif = parse_whatif(ram=size, vram=size)
    assert whatif.ram_bytes == whatif.vram_bytes == 16 * GIB


def test_parse_whatif_bad_size_names_the_option() -> None:
    with pytest.raises(UsageError) as info:
        parse_whatif(vram="lots")
    assert info.value.message.startswith("--vram: ")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"cpu_only": True, "gpu_name": "RTX 4090"}, ["--cpu-only", "--gpu"]),
        ({"cpu_only": True, "vram_bytes": GIB}, ["--cpu-only", "--vram"]),
        ({"cpu_only": True, "gpu_count": 2}, ["--cpu-only", "--gpus"]),
        ({"cpu_only": True, "unified": True}, ["--cpu-only", "--unified"]),
        ({"unified": True, "vram_bytes": GIB}, ["--unified", "--vram", "--ram"]),
        ({"unified": True, "gpu_count": 2}, ["--unified", "--gpus"]),
        ({"gpu_count": 0}, ["--gpus"]),
        ({"ram_bytes": 0}, ["--ram"]),
        ({"gpu_name": " "}, ["--gpu"]),
    ],
)
def test_conflicts_fail_before_any_probe(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        WhatIf(**kwargs)
    for word in words:
        assert word in info.value.message


# --------------------------------------------------------------------------------------------
# --ram


@pytest.mark.parametrize(
    ("ram_gib", "available"),
    [(4, 4 * GIB - GIB // 2), (16, 16 * GIB - int(1.6 * GIB)), (64, 62 * GIB)],
)
def test_ram_sets_total_and_available_less_idle_reserve(ram_gib: int, available: int) -> None:
    hw = apply(nvidia_box(), WhatIf(ram_bytes=ram_gib * GIB))
    assert hw.memory.total_bytes == ram_gib * GIB
    assert hw.memory.available_bytes == available
    assert hw.memory.limit_bytes is None and hw.memory.limit_source is None
    assert hw.memory.bandwidth == RAM_BW  # probed bandwidth kept
    assert (hw.memory.swap_total_bytes, hw.memory.swap_free_bytes) == (8 * GIB, 6 * GIB)
    assert "--ram" in hw.memory.reason
    assert hw.source == f"probed + what-if (--ram {ram_gib}GiB)"


def test_ram_alone_keeps_probed_gpus_and_the_probed_build() -> None:
    base = nvidia_box()
    hw = apply(base, WhatIf(ram_bytes=16 * GIB))
    assert hw.gpus == base.gpus  # probed GPU untouched, including its probed free memory
    assert hw.llama_cpp == base.llama_cpp  # a CPU-only build stays CPU-only: its warning stands
    assert hw.warnings == base.warnings
    assert hw.cpu == base.cpu and hw.os == base.os


def test_other_gpus_assume_a_build_for_them() -> None:
    hw = apply(nvidia_box(), WhatIf(vram_bytes=16 * GIB))
    assert hw.llama_cpp == LlamaCppBuild(installed=True, version="0.3.36", gpu_offload=True,
                                         backend="cuda", source="assumed")
    assert hw.warnings == ()


def test_ram_alone_on_cpu_box_keeps_the_build() -> None:
    base = cpu_box()
    hw = apply(base, WhatIf(ram_bytes=8 * GIB))
    assert hw.gpus == () and hw.llama_cpp == base.llama_cpp


def test_ram_on_a_mac_resizes_the_unified_pool() -> None:
    hw = apply(mac(), WhatIf(ram_bytes=32 * GIB))
    (gpu,) = hw.gpus
    assert gpu.name == "Apple M3 Max" and gpu.unified
    assert gpu.total_bytes == 32 * GIB
    assert gpu.free_bytes == gpu.working_set_bytes == metal.default_working_set(32 * GIB)
    assert hw.llama_cpp.backend == "metal"


# --------------------------------------------------------------------------------------------
# --gpu, --gpus, --vram


def test_gpu_replaces_the_gpus_from_the_table() -> None:
    hw = apply(nvidia_box(), WhatIf(ram_bytes=16 * GIB, gpu_name="radeon rx 7900 xtx"))
    (gpu,) = hw.gpus
    assert (gpu.name, gpu.vendor, gpu.backend) == ("RX 7900 XTX", "amd", "hip")
    assert gpu.total_bytes == gpu.free_bytes == 24 * GIB  # a what-if card is idle
    assert gpu.bandwidth == Bandwidth(960 * 10**9, "table", gpu.bandwidth.detail)
    assert hw.llama_cpp == LlamaCppBuild(installed=True, version="0.3.36", gpu_offload=True,
                                         backend="hip", source="assumed")
    assert hw.source == "probed + what-if (--ram 16GiB, --gpu RX 7900 XTX)"


def test_gpu_on_a_cpu_box_without_llama_cpp_assumes_an_installed_build() -> None:
    base = dataclasses.replace(cpu_box(), llama_cpp=LlamaCppBuild(
        installed=False, version=None, gpu_offload=False, backend="unknown", error="missing"))
    hw = apply(base, WhatIf(gpu_name="4090"))
    assert hw.llama_cpp.installed and hw.llama_cpp.gpu_offload
    assert hw.llama_cpp.backend == "cuda" and hw.llama_cpp.error is None


def test_unknown_gpu_lists_nearest_names() -> None:
    message = fail(nvidia_box(), WhatIf(gpu_name="RTX 4091"))
    assert "'RTX 4091'" in message and "RTX 4090" in message


def test_gpu_with_count_and_vram() -> None:
    hw = apply(cpu_box(), WhatIf(gpu_name="RTX 3090", gpu_count=2, vram_bytes=20 * GIB))
    assert [(g.index, g.name, g.total_bytes, g.free_bytes) for g in hw.gpus] == [
        (0, "RTX 3090", 20 * GIB, 20 * GIB), (1, "RTX 3090", 20 * GIB, 20 * GIB)]
    assert hw.source == "probed + what-if (--gpu RTX 3090, --gpus 2, --vram 20GiB)"


def test_gpus_repeats_the_probed_gpu_as_idle_cards() -> None:
    hw = apply(nvidia_box(), WhatIf(gpu_count=3))
    assert [(g.index, g.name, g.total_bytes, g.free_bytes) for g in hw.gpus] == [
        (i, "NVIDIA GeForce RTX 4090", 24 * GIB, 24 * GIB) for i in range(3)]
    assert hw.llama_cpp.backend == "cuda" and hw.llama_cpp.gpu_offload


def test_gpus_alone_without_any_gpu_is_a_usage_error() -> None:
    message = fail(cpu_box(), WhatIf(gpu_count=2))
    assert "--gpus" in message
    with pytest.raises(UsageError) as info:
        apply(cpu_box(), WhatIf(gpu_count=2))
    assert "--gpu" in (info.value.hint or "") and "--vram" in (info.value.hint or "")


def test_vram_resizes_probed_gpus() -> None:
    base = factories.machine(gpus=(factories.nvidia(0, 24, 20), factories.nvidia(1, 24, 10)),
                             backend="cuda")
    hw = apply(base, WhatIf(vram_bytes=12 * GIB))
    assert [(g.index, g.name, g.total_bytes, g.free_bytes) for g in hw.gpus] == [
        (0, "NVIDIA GeForce RTX 4090", 12 * GIB, 12 * GIB),
        (1, "NVIDIA GeForce RTX 4090", 12 * GIB, 12 * GIB)]


def test_vram_without_any_gpu_creates_a_generic_gpu_with_assumed_bandwidth() -> None:
    hw = apply(cpu_box(), WhatIf(vram_bytes=16 * GIB, gpu_count=2))
    assert len(hw.gpus) == 2
    for index, gpu in enumerate(hw.gpus):
        assert (gpu.index, gpu.name, gpu.vendor, gpu.backend) == (
            index, GENERIC_GPU_NAME, "nvidia", "cuda")
        assert gpu.total_bytes == gpu.free_bytes == 16 * GIB
        assert gpu.bandwidth is not None
        assert gpu.bandwidth.bytes_per_s == ASSUMED_GPU_BANDWIDTH == 360 * 10**9
        assert gpu.bandwidth.source == "assumed" and "assumed" in gpu.bandwidth.detail
    assert hw.llama_cpp.backend == "cuda" and hw.llama_cpp.source == "assumed"
    assert hw.source == "probed + what-if (--gpus 2, --vram 16GiB)"


def test_vram_on_a_unified_gpu_is_a_usage_error() -> None:
    message = fail(mac(), WhatIf(vram_bytes=24 * GIB))
    assert "--ram" in message and "Apple M3 Max" in message


def test_discrete_gpu_on_a_mac_replaces_the_unified_gpu() -> None:
    hw = apply(mac(), WhatIf(gpu_name="RTX 4090"))
    (gpu,) = hw.gpus
    assert not gpu.unified and gpu.total_bytes == 24 * GIB
    assert hw.llama_cpp.backend == "cuda"


# --------------------------------------------------------------------------------------------
# --unified


def test_unified_alone_makes_a_generic_apple_gpu_over_the_ram() -> None:
    hw = apply(nvidia_box(), WhatIf(unified=True, ram_bytes=16 * GIB))
    (gpu,) = hw.gpus
    assert (gpu.name, gpu.vendor, gpu.backend) == (GENERIC_UNIFIED_NAME, "apple", "metal")
    assert gpu.unified and gpu.total_bytes == 16 * GIB
    assert gpu.free_bytes == gpu.working_set_bytes == metal.default_working_set(16 * GIB)
    assert gpu.bandwidth is not None and gpu.bandwidth.source == "assumed"
    assert gpu.bandwidth.bytes_per_s == ASSUMED_UNIFIED_BANDWIDTH
    assert hw.llama_cpp.backend == "metal" and hw.llama_cpp.gpu_offload
    assert hw.source == "probed + what-if (--ram 16GiB, --unified)"


def test_unified_without_ram_uses_the_probed_ram_as_the_pool() -> None:
    # Changed with the honest what-if (issue 11): a bare --unified is an assumed M2-class Mac, so
    # the pool is the probed RAM's size but availability follows macOS's reserve and the
    # bandwidth is the assumed chip's, not this x86 host's measured figure.
    hw = apply(cpu_box(), WhatIf(unified=True))
    assert hw.gpus[0].total_bytes == 32 * GIB
    assert hw.memory.total_bytes == cpu_box().memory.total_bytes
    assert hw.memory.available_bytes == 32 * GIB - 5 * GIB // 2
    assert hw.memory.bandwidth is not None and hw.memory.bandwidth.source == "assumed"
    assert hw.os == "darwin" and hw.cpu.arch == "arm64"
    assert "assumed" in hw.cpu.model


def test_unified_with_an_apple_chip() -> None:
    hw = apply(cpu_box(), WhatIf(unified=True, ram_bytes=64 * GIB, gpu_name="M4 Max 40-core"))
    (gpu,) = hw.gpus
    assert gpu.name == "Apple M4 Max 40-core GPU" and gpu.cores == 40
    assert gpu.bandwidth is not None and gpu.bandwidth.bytes_per_s == 546 * 10**9
    assert gpu.total_bytes == 64 * GIB and gpu.free_bytes == 48 * GIB


def test_an_apple_chip_is_unified_without_the_flag() -> None:
    hw = apply(cpu_box(), WhatIf(ram_bytes=8 * GIB, gpu_name="Apple M2"))
    (gpu,) = hw.gpus
    assert gpu.unified and gpu.total_bytes == 8 * GIB
    assert gpu.free_bytes == metal.default_working_set(8 * GIB)


def test_unified_keeps_a_probed_apple_gpu() -> None:
    hw = apply(mac(), WhatIf(unified=True, ram_bytes=128 * GIB))
    (gpu,) = hw.gpus
    assert gpu.name == "Apple M3 Max" and gpu.total_bytes == 128 * GIB
    assert gpu.free_bytes == 96 * GIB


def test_unified_with_a_discrete_gpu_is_a_usage_error() -> None:
    message = fail(cpu_box(), WhatIf(unified=True, gpu_name="RTX 4090"))
    assert "--unified" in message and "RTX 4090" in message


def test_jetson_brings_its_own_memory() -> None:
    hw = apply(cpu_box(), WhatIf(gpu_name="Jetson AGX Orin 64GB"))
    (gpu,) = hw.gpus
    assert gpu.unified and gpu.backend == "cuda"
    assert hw.memory.total_bytes == gpu.total_bytes == 64 * GIB
    assert hw.llama_cpp.backend == "cuda"


# --------------------------------------------------------------------------------------------
# --cpu-only


def test_cpu_only_removes_gpus_and_offload() -> None:
    base = dataclasses.replace(nvidia_box(), llama_cpp=factories.build("cuda"))
    hw = apply(base, WhatIf(cpu_only=True))
    assert hw.gpus == ()
    assert hw.llama_cpp == dataclasses.replace(base.llama_cpp, gpu_offload=False, backend="cpu",
                                               source="assumed")
    assert hw.memory == base.memory
    assert hw.source == "probed + what-if (--cpu-only)"


# --------------------------------------------------------------------------------------------
# --hardware and resolve_hardware


def no_probe() -> Hardware:
    raise AssertionError("probe() must not run when --hardware is given")


def test_hardware_profile_skips_the_probe() -> None:
    hw = resolve_hardware(WhatIf(hardware="desktop-rtx4090-64gb"), no_probe)
    assert hw.source == "profile desktop-rtx4090-64gb"
    assert hw.gpus[0].name == "RTX 4090"


def test_options_apply_on_top_of_a_profile() -> None:
    hw = resolve_hardware(WhatIf(hardware="desktop-rtx4090-64gb", ram_bytes=32 * GIB,
                                 gpu_count=2), no_probe)
    assert hw.source == "profile desktop-rtx4090-64gb + what-if (--ram 32GiB, --gpus 2)"
    assert hw.memory.total_bytes == 32 * GIB and hw.memory.available_bytes == 30 * GIB
    assert hw.memory.bandwidth is not None
    assert hw.memory.bandwidth.bytes_per_s == 83_200_000_000  # the profile's, not a probe's
    assert [g.name for g in hw.gpus] == ["RTX 4090", "RTX 4090"]


def test_profile_apple_with_more_ram() -> None:
    hw = resolve_hardware(WhatIf(hardware="apple-m2-8gb", ram_bytes=24 * GIB), no_probe)
    assert hw.gpus[0].total_bytes == 24 * GIB
    assert hw.gpus[0].free_bytes == 16 * GIB


def test_unknown_profile_is_a_usage_error_before_probing() -> None:
    with pytest.raises(UsageError) as info:
        resolve_hardware(WhatIf(hardware="nope"), no_probe)
    assert "vps-4gb" in info.value.message


def test_without_hardware_the_probe_runs_once() -> None:
    calls = []

    def probe() -> Hardware:
        calls.append(1)
        return nvidia_box()

    hw = resolve_hardware(WhatIf(gpu_name="RTX 5090"), probe)
    assert calls == [1]
    assert hw.gpus[0].total_bytes == 32 * GIB
    assert resolve_hardware(WhatIf(), probe) == nvidia_box()


# --------------------------------------------------------------------------------------------
# Warnings


def test_stale_offload_warnings_are_judged_again() -> None:
    base = dataclasses.replace(nvidia_box(), warnings=("RTX 4090 found, but cannot use it",))
    assert apply(base, WhatIf(vram_bytes=8 * GIB)).warnings == ()
    assert apply(base, WhatIf(cpu_only=True)).warnings == ()


def test_missing_llama_cpp_is_still_reported_for_cpu_only() -> None:
    build = LlamaCppBuild(installed=False, version=None, gpu_offload=False, backend="unknown")
    base = dataclasses.replace(nvidia_box(), llama_cpp=build, warnings=("not installed",))
    (warning,) = apply(base, WhatIf(cpu_only=True)).warnings
    assert "not installed" in warning


def test_warnings_kept_when_only_ram_changes_on_a_cpu_box() -> None:
    base = dataclasses.replace(cpu_box(), warnings=("something the probe saw",))
    assert apply(base, WhatIf(ram_bytes=8 * GIB)).warnings == base.warnings
