"""CPU parsing on recorded /proc/cpuinfo and sysctl outputs (see tests/data/hw/SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwencli.hardware import cpu
from qwencli.hardware.apple import parse_sysctl
from qwencli.hardware.cpu import (
    llama_features,
    normalize_arch,
    parse_darwin_sysctl_cpu,
    parse_proc_cpuinfo,
    probe_cpu,
)
from qwencli.hardware.model import Cpu


def _text(data_dir: Path, name: str) -> str:
    return (data_dir / "hw" / name).read_text()


# --- llama_features ------------------------------------------------------------------------------


def test_kernel_spells_sse3_as_pni() -> None:
    assert llama_features(["pni", "ssse3", "sse4_1"], "x86_64") == ("sse3", "ssse3")


def test_x86_full_house_is_sorted_unique_and_lower_case() -> None:
    flags = [
        "avx", "avx2", "avx_vnni", "f16c", "fma", "bmi2", "avx512f", "avx512bw", "avx512vbmi",
        "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "amx_tile", "pni", "ssse3", "avx2",
        "fma4", "sse4a",
    ]
    assert llama_features(flags, "AMD64") == (
        "amx_bf16", "amx_int8", "avx", "avx2", "avx512_bf16", "avx512_vnni", "avx512bw",
        "avx512f", "avx512vbmi", "avx_vnni", "bmi2", "f16c", "fma", "sse3", "ssse3",
    )


def test_arm64_always_has_neon_and_fma_and_maps_kernel_names() -> None:
    flags = ["fp", "asimd", "asimdhp", "asimddp", "i8mm", "sve", "sve2", "sme", "bf16"]
    assert llama_features(flags, "aarch64") == (
        "arm_fma", "dotprod", "fp16_va", "i8mm", "neon", "sme", "sve", "sve2",
    )
    assert llama_features([], "arm64") == ("arm_fma", "neon")


def test_fphp_alone_counts_as_fp16_vector_arithmetic() -> None:
    assert "fp16_va" in llama_features(["fphp"], "aarch64")


def test_macos_keys_are_mapped_through_their_prefixes() -> None:
    keys = [
        "hw.optional.arm.FEAT_DotProd", "hw.optional.arm.FEAT_I8MM", "hw.optional.arm.FEAT_FP16",
        "hw.optional.arm.FEAT_SME2", "hw.optional.arm.FEAT_BF16", "hw.optional.neon",
    ]
    assert llama_features(keys, "arm64") == (
        "arm_fma", "dotprod", "fp16_va", "i8mm", "neon", "sme",
    )


def test_32_bit_arm_gets_neon_and_fma_only_when_listed() -> None:
    flags = ["half", "thumb", "fastmult", "vfp", "edsp", "neon", "vfpv3", "tls", "vfpv4"]
    assert llama_features(flags, "armv7l") == ("arm_fma", "neon")
    assert llama_features(["half", "thumb", "vfp"], "armv7l") == ()


def test_x86_flags_mean_nothing_on_arm_and_vice_versa() -> None:
    assert llama_features(["avx2", "fma"], "aarch64") == ("arm_fma", "neon")
    assert llama_features(["asimddp", "neon"], "x86_64") == ()
    assert llama_features(["avx2"], "riscv64") == ()


@pytest.mark.parametrize(
    ("machine", "arch"),
    [("AMD64", "x86_64"), ("x86_64", "x86_64"), ("aarch64", "arm64"), ("arm64", "arm64"),
     ("ARM64", "arm64"), ("armv7l", "armv7l"), ("riscv64", "riscv64"), ("", "unknown")],
)
def test_normalize_arch(machine: str, arch: str) -> None:
    assert normalize_arch(machine) == arch


# --- /proc/cpuinfo -------------------------------------------------------------------------------


def test_epyc_vm_recorded_on_the_development_machine(data_dir: Path) -> None:
    text = _text(data_dir, "cpuinfo/x86_64_epyc_2vcpu.txt")
    got = parse_proc_cpuinfo(text, "x86_64", None, 2)
    assert got == Cpu(
        model="AMD EPYC",
        arch="x86_64",
        physical_cores=2,
        logical_cores=2,
        features=(
            "avx", "avx2", "avx512_bf16", "avx512_vnni", "avx512bw", "avx512f", "avx512vbmi",
            "bmi2", "f16c", "fma", "sse3", "ssse3",
        ),
        performance_cores=None,
    )


def test_two_sockets_with_hyperthreading_count_distinct_cores(data_dir: Path) -> None:
    text = _text(data_dir, "cpuinfo/x86_64_xeon_e5_2670_2socket.txt")
    got = parse_proc_cpuinfo(text, "x86_64", None, 8)
    assert got.model == "Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz"
    assert (got.physical_cores, got.logical_cores) == (4, 8)
    # Sandy Bridge: AVX but no AVX2, FMA or F16C.
    assert got.features == ("avx", "sse3", "ssse3")


def test_caller_counts_win_over_the_text(data_dir: Path) -> None:
    text = _text(data_dir, "cpuinfo/x86_64_xeon_e5_2670_2socket.txt")
    assert parse_proc_cpuinfo(text, "x86_64", 2, 4).physical_cores == 2
    # Never more physical than logical cores.
    assert parse_proc_cpuinfo(text, "x86_64", 16, 8).physical_cores == 8


def test_raspberry_pi_5_is_a_cortex_a76(data_dir: Path) -> None:
    text = _text(data_dir, "cpuinfo/arm64_raspberry_pi_5.txt")
    got = parse_proc_cpuinfo(text, "aarch64", None, 4)
    assert got == Cpu(
        model="Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)",
        arch="arm64",
        physical_cores=4,
        logical_cores=4,
        features=("arm_fma", "dotprod", "fp16_va", "neon"),
    )


def test_big_little_rk3588_names_both_core_types(data_dir: Path) -> None:
    text = _text(data_dir, "cpuinfo/arm64_rock5b_rk3588.txt")
    got = parse_proc_cpuinfo(text, "aarch64", None, 8)
    assert got.model == "Cortex-A55 + Cortex-A76"
    assert (got.physical_cores, got.logical_cores) == (8, 8)
    assert got.features == ("arm_fma", "dotprod", "fp16_va", "neon")


def test_hybrid_cpu_keeps_only_the_flags_every_core_has() -> None:
    text = (
        "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU implementer\t: 0x41\n"
        "CPU part\t: 0xd4d\n\n"
        "processor\t: 1\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd46\n"
    )
    got = parse_proc_cpuinfo(text, "aarch64", None, 2)
    assert got.features == ("arm_fma", "dotprod", "neon")
    assert got.model == "Cortex-A715 + Cortex-A510"


def test_unknown_arm_part_is_named_by_its_numbers() -> None:
    text = "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xfff\n"
    assert parse_proc_cpuinfo(text, "aarch64", None, 1).model == "ARM part 0xfff"
    text = "processor\t: 0\nCPU implementer\t: 0x99\nCPU part\t: 0x001\n"
    assert parse_proc_cpuinfo(text, "aarch64", None, 1).model == "implementer 0x99 part 0x001"


def test_32_bit_pi_kernel_text() -> None:
    text = (
        "processor\t: 0\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\n"
        "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae\n"
        "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU part\t: 0xd08\n\n"
        "Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    )
    got = parse_proc_cpuinfo(text, "armv7l", None, 1)
    assert got.model == "Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"
    assert got.arch == "armv7l"
    assert got.features == ("arm_fma", "neon")


def test_empty_text_degrades_to_counts() -> None:
    got = parse_proc_cpuinfo("", "x86_64", None, 4)
    assert got == Cpu("unknown x86_64 CPU", "x86_64", 4, 4, ())


# --- macOS sysctl --------------------------------------------------------------------------------


def test_m2_macbook_air(data_dir: Path) -> None:
    values = parse_sysctl(_text(data_dir, "sysctl/m2_macbook_air_8gb.txt"))
    assert parse_darwin_sysctl_cpu(values) == Cpu(
        model="Apple M2",
        arch="arm64",
        physical_cores=8,
        logical_cores=8,
        features=("arm_fma", "dotprod", "fp16_va", "i8mm", "neon"),
        performance_cores=4,
    )


def test_m3_max(data_dir: Path) -> None:
    values = parse_sysctl(_text(data_dir, "sysctl/m3_max_64gb.txt"))
    got = parse_darwin_sysctl_cpu(values)
    assert (got.model, got.arch) == ("Apple M3 Max", "arm64")
    assert (got.physical_cores, got.logical_cores, got.performance_cores) == (16, 16, 12)
    assert got.features == ("arm_fma", "dotprod", "fp16_va", "i8mm", "neon")


def test_m1_has_no_i8mm_because_its_key_is_zero() -> None:
    values = {
        "machdep.cpu.brand_string": "Apple M1", "hw.optional.arm64": "1", "hw.physicalcpu": "8",
        "hw.logicalcpu": "8", "hw.perflevel0.physicalcpu": "4",
        "hw.optional.arm.FEAT_DotProd": "1", "hw.optional.arm.FEAT_I8MM": "0",
        "hw.optional.arm.FEAT_FP16": "1",
    }
    assert parse_darwin_sysctl_cpu(values).features == ("arm_fma", "dotprod", "fp16_va", "neon")


def test_intel_mac_reads_machdep_feature_lists(data_dir: Path) -> None:
    values = parse_sysctl(_text(data_dir, "sysctl/intel_mac_i7_8750h_16gb.txt"))
    assert parse_darwin_sysctl_cpu(values) == Cpu(
        model="Intel(R) Core(TM) i7-8750H CPU @ 2.20GHz",
        arch="x86_64",
        physical_cores=6,
        logical_cores=12,
        features=("avx", "avx2", "bmi2", "f16c", "fma", "sse3", "ssse3"),
        performance_cores=None,
    )


def test_intel_mac_from_machdep_alone() -> None:
    values = {
        "machdep.cpu.brand_string": "Intel(R) Xeon(R) W-3245 CPU @ 3.20GHz",
        "hw.ncpu": "32",
        "machdep.cpu.features": "SSE3 SSSE3 FMA AVX1.0 F16C",
        "machdep.cpu.leaf7_features": "BMI2 AVX2 AVX512F AVX512BW AVX512VNNI",
    }
    got = parse_darwin_sysctl_cpu(values)
    assert (got.physical_cores, got.logical_cores) == (32, 32)
    assert got.features == (
        "avx", "avx2", "avx512_vnni", "avx512bw", "avx512f", "bmi2", "f16c", "fma", "sse3",
        "ssse3",
    )


# --- probe_cpu (the I/O edge) --------------------------------------------------------------------


def test_probe_cpu_on_this_machine_matches_proc_cpuinfo() -> None:
    got = probe_cpu()
    assert got.logical_cores >= got.physical_cores >= 1
    if Path("/proc/cpuinfo").exists():
        expected = parse_proc_cpuinfo(
            Path("/proc/cpuinfo").read_text(), cpu.platform.machine(), got.physical_cores,
            got.logical_cores,
        )
        assert got == expected


def test_probe_cpu_on_windows_keeps_name_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu.sys, "platform", "win32")
    monkeypatch.setattr(cpu.platform, "machine", lambda: "AMD64")
    monkeypatch.setattr(
        cpu.platform, "processor", lambda: "Intel64 Family 6 Model 183 Stepping 1, GenuineIntel"
    )
    monkeypatch.setattr(cpu, "_cpu_counts", lambda: (None, 24))
    assert probe_cpu() == Cpu(
        "Intel64 Family 6 Model 183 Stepping 1, GenuineIntel", "x86_64", 24, 24, ()
    )


def test_probe_cpu_on_macos_uses_sysctl(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    from qwencli.hardware import apple

    recorded = parse_sysctl(_text(data_dir, "sysctl/m3_max_64gb.txt"))
    asked: list[tuple[str, ...]] = []

    def fake_run_sysctl(keys: tuple[str, ...]) -> dict[str, str]:
        asked.append(tuple(keys))
        return recorded

    monkeypatch.setattr(cpu.sys, "platform", "darwin")
    monkeypatch.setattr(apple, "run_sysctl", fake_run_sysctl)
    got = probe_cpu()
    assert asked == [cpu.DARWIN_CPU_SYSCTL_KEYS]
    assert (got.model, got.performance_cores) == ("Apple M3 Max", 12)


def test_probe_cpu_on_macos_without_sysctl_degrades(monkeypatch: pytest.MonkeyPatch) -> None:
    from qwencli.hardware import apple

    monkeypatch.setattr(cpu.sys, "platform", "darwin")
    monkeypatch.setattr(apple, "run_sysctl", lambda keys: {})
    monkeypatch.setattr(cpu.platform, "machine", lambda: "arm64")
    monkeypatch.setattr(cpu.platform, "processor", lambda: "arm")
    monkeypatch.setattr(cpu, "_cpu_counts", lambda: (8, 8))
    assert probe_cpu() == Cpu("arm", "arm64", 8, 8, ())
