"""Named hardware profiles: bundled files, user overlay, validation, conversion to Hardware."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qwencli.errors import EXIT_USAGE, ConfigError, UsageError
from qwencli.hardware import metal
from qwencli.hardware.profiles import (
    HardwareProfile,
    idle_os_reserve,
    list_profiles,
    load_profile,
    profile_to_hardware,
)
from qwencli.paths import bundled_profiles_dir, config_dir

GIB = 1024**3

BUNDLED = {
    "vps-4gb",
    "raspberry-pi-5-8gb",
    "laptop-rtx4060-32gb",
    "desktop-rtx4090-64gb",
    "dual-rtx3090",
    "apple-m2-8gb",
    "apple-m3-max-64gb",
    "desktop-rx7900xtx",
}

VALID = """\
name = "{name}"
description = "a test machine"
os = "linux"
ram = "{ram}"
ram_bandwidth_gbs = 50

[cpu]
model = "Test CPU"
arch = "x86_64"
physical_cores = 8
logical_cores = 16
features = ["FMA", "avx2", "fma"]
{extra}"""


BW_LINE = "ram_bandwidth_gbs = 50"


def write_user_profile(name: str, text: str) -> Path:
    """Write a profile into the user's overlay folder (the temp QWEN_CONFIG_DIR)."""
    folder = config_dir() / "hardware"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def profile_text(name: str = "test-box", ram: str = "16GB", extra: str = "") -> str:
    return VALID.format(name=name, ram=ram, extra=extra)


def config_error(name: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_profile(name)
    return info.value.message


# --------------------------------------------------------------------------------------------
# Bundled profiles


def test_bundled_profiles_are_listed() -> None:
    profiles = list_profiles()
    assert set(profiles) >= BUNDLED
    assert list(profiles) == sorted(profiles)
    assert profiles["vps-4gb"] == bundled_profiles_dir() / "hardware" / "vps-4gb.toml"


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_every_bundled_profile_loads_and_converts(name: str) -> None:
    profile = load_profile(name)
    assert isinstance(profile, HardwareProfile)
    assert profile.name == name and profile.description
    hw = profile_to_hardware(profile)
    assert hw.source == f"profile {name}"
    assert hw.memory.total_bytes == profile.ram_bytes
    assert 0 < hw.memory.available_bytes < hw.memory.total_bytes
    assert hw.memory.bandwidth is not None and hw.memory.bandwidth.source == "profile"
    assert hw.llama_cpp.source == "assumed" and hw.llama_cpp.installed
    assert hw.llama_cpp.gpu_offload == bool(hw.gpus)
    for gpu in hw.gpus:
        assert gpu.bandwidth is not None and gpu.bandwidth.source == "table"
        assert gpu.free_bytes <= gpu.total_bytes


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_every_number_in_a_bundled_profile_has_a_source(name: str) -> None:
    lines = (bundled_profiles_dir() / "hardware" / f"{name}.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^(ram|ram_bandwidth_gbs|\w+_cores)\s*=", line):
            assert "# source:" in line, line
        if line.startswith("features"):
            assert lines[i - 1].startswith("# source:"), line


def test_desktop_rtx4090_values() -> None:
    hw = profile_to_hardware(load_profile("desktop-rtx4090-64gb"))
    assert hw.os == "linux"
    assert (hw.cpu.model, hw.cpu.physical_cores, hw.cpu.logical_cores) == (
        "AMD Ryzen 9 7950X", 16, 32)
    assert {"avx512f", "avx512_vnni", "bmi2"} <= set(hw.cpu.features)
    assert hw.memory.total_bytes == 64 * GIB
    assert hw.memory.available_bytes == 62 * GIB  # the idle-OS reserve is capped at 2 GiB
    assert hw.memory.bandwidth is not None
    assert hw.memory.bandwidth.bytes_per_s == 83_200_000_000
    assert hw.memory.limit_bytes is None and hw.memory.swap_total_bytes == 0
    (gpu,) = hw.gpus
    assert (gpu.name, gpu.vendor, gpu.backend) == ("RTX 4090", "nvidia", "cuda")
    assert gpu.total_bytes == gpu.free_bytes == 24 * GIB
    assert hw.llama_cpp.backend == "cuda" and hw.llama_cpp.cpu_features == hw.cpu.features


def test_dual_rtx3090_has_two_numbered_gpus() -> None:
    hw = profile_to_hardware(load_profile("dual-rtx3090"))
    assert [(g.index, g.name, g.total_bytes) for g in hw.gpus] == [
        (0, "RTX 3090", 24 * GIB), (1, "RTX 3090", 24 * GIB)]
    assert hw.memory.total_bytes == 128 * GIB


def test_apple_m2_is_unified_with_metal_working_set() -> None:
    profile = load_profile("apple-m2-8gb")
    assert profile.unified and profile.os == "darwin"
    hw = profile_to_hardware(profile)
    (gpu,) = hw.gpus
    assert gpu.unified and gpu.backend == "metal" and gpu.vendor == "apple"
    assert gpu.total_bytes == 8 * GIB
    assert gpu.free_bytes == gpu.working_set_bytes == metal.default_working_set(8 * GIB)
    assert hw.cpu.performance_cores == 4
    assert hw.llama_cpp.backend == "metal"


def test_apple_m3_max_is_the_40_core_variant() -> None:
    hw = profile_to_hardware(load_profile("apple-m3-max-64gb"))
    (gpu,) = hw.gpus
    assert gpu.bandwidth is not None and gpu.bandwidth.bytes_per_s == 400 * 10**9
    assert gpu.cores == 40
    assert gpu.free_bytes == 48 * GIB


def test_cpu_only_profiles() -> None:
    pi = profile_to_hardware(load_profile("raspberry-pi-5-8gb"))
    assert pi.gpus == () and pi.cpu.arch == "arm64"
    assert pi.cpu.features == ("arm_fma", "dotprod", "fp16_va", "neon")
    assert pi.llama_cpp.backend == "cpu" and not pi.llama_cpp.gpu_offload
    assert pi.memory.bandwidth is not None
    assert pi.memory.bandwidth.bytes_per_s == 17_100_000_000
    vps = profile_to_hardware(load_profile("vps-4gb"))
    assert vps.memory.total_bytes == 4 * GIB
    assert vps.memory.available_bytes == 4 * GIB - GIB // 2
    assert vps.cpu.logical_cores == 2


def test_amd_profile_uses_hip() -> None:
    hw = profile_to_hardware(load_profile("desktop-rx7900xtx"))
    assert [(g.vendor, g.backend, g.total_bytes) for g in hw.gpus] == [("amd", "hip", 24 * GIB)]
    assert hw.llama_cpp.backend == "hip"


@pytest.mark.parametrize(
    ("total", "reserve"),
    [(GIB // 2, GIB // 4), (4 * GIB, GIB // 2), (8 * GIB, int(0.8 * GIB)), (64 * GIB, 2 * GIB)],
)
def test_idle_os_reserve(total: int, reserve: int) -> None:
    assert idle_os_reserve(total) == reserve


# --------------------------------------------------------------------------------------------
# User profiles and validation


@pytest.mark.parametrize("size", ["16GB", "16GiB", "16G", "16384MB", "16 gb"])
def test_size_forms(size: str) -> None:
    write_user_profile("test-box", profile_text(ram=size))
    assert load_profile("test-box").ram_bytes == 16 * GIB


def test_features_are_lower_cased_and_ram_available_is_used() -> None:
    write_user_profile(
        "test-box", profile_text().replace(BW_LINE, BW_LINE + '\nram_available = "12GB"'))
    profile = load_profile("test-box")
    assert profile.cpu.features == ("avx2", "fma")
    hw = profile_to_hardware(profile)
    assert hw.memory.available_bytes == 12 * GIB
    assert "as stated" in hw.memory.reason


def test_vram_override_and_count() -> None:
    write_user_profile("test-box", profile_text(
        extra='\n[[gpus]]\nname = "NVIDIA GeForce RTX 3060"\ncount = 3\nvram = "8GB"\n'))
    profile = load_profile("test-box")
    assert profile.gpus[0].name == "RTX 3060 12GB"
    hw = profile_to_hardware(profile)
    assert [(g.index, g.total_bytes, g.free_bytes) for g in hw.gpus] == [
        (0, 8 * GIB, 8 * GIB), (1, 8 * GIB, 8 * GIB), (2, 8 * GIB, 8 * GIB)]


def test_user_overlay_overrides_bundled_profile() -> None:
    path = write_user_profile(
        "desktop-rtx4090-64gb", profile_text(name="desktop-rtx4090-64gb", ram="128GB"))
    assert list_profiles()["desktop-rtx4090-64gb"] == path
    profile = load_profile("desktop-rtx4090-64gb")
    assert profile.path == path and profile.ram_bytes == 128 * GIB
    assert profile.gpus == ()


def test_user_only_profile_is_listed() -> None:
    write_user_profile("my-box", profile_text(name="my-box"))
    assert "my-box" in list_profiles()
    assert set(list_profiles()) >= BUNDLED


def test_unknown_profile_lists_known_names() -> None:
    with pytest.raises(UsageError) as info:
        load_profile("desktop-rtx9090")
    assert info.value.exit_code == EXIT_USAGE
    assert "'desktop-rtx9090'" in info.value.message
    for name in BUNDLED:
        assert name in info.value.message
    assert info.value.hint is not None and "desktop-rtx9090.toml" in info.value.hint


def test_malformed_toml_names_file_and_line() -> None:
    path = write_user_profile("test-box", 'name = "test-box"\ndescription = "x"\nos = linux\n')
    message = config_error("test-box")
    assert message.startswith(f"{path}: line 3: ")
    assert "invalid value" in message.lower()


def test_profile_saved_with_a_byte_order_mark_loads() -> None:
    path = write_user_profile("test-box", "")
    path.write_bytes(b"\xef\xbb\xbf" + profile_text().encode("utf-8"))
    assert load_profile("test-box").ram_bytes == 16 * GIB


def test_a_folder_named_like_a_profile_is_a_one_line_error() -> None:
    folder = config_dir() / "hardware" / "test-box.toml"
    folder.mkdir(parents=True)
    assert config_error("test-box").startswith(f"{folder}: cannot read: ")


def test_unterminated_toml_names_the_last_line() -> None:
    path = write_user_profile("test-box", 'name = "test-box"\nfeatures = ["a",\n')
    assert config_error("test-box").startswith(f"{path}: line 2: ")


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (profile_text(extra="colour = 'red'\n"), "cpu.colour", "unknown key"),
        (profile_text() + "\n[gpu]\nname = 'x'\n", "gpu", "unknown key"),
        (profile_text().replace("os = \"linux\"\n", ""), "os", "missing required key"),
        (profile_text().replace("physical_cores = 8", "physical_cores = \"8\""),
         "cpu.physical_cores", "expected an integer"),
        (profile_text().replace("physical_cores = 8", "physical_cores = true"),
         "cpu.physical_cores", "boolean"),
        (profile_text().replace("logical_cores = 16", "logical_cores = 4"),
         "cpu.logical_cores", "fewer than"),
        (profile_text().replace("ram_bandwidth_gbs = 50", "ram_bandwidth_gbs = 0"),
         "ram_bandwidth_gbs", "greater than 0"),
        (profile_text(ram="lots"), "ram", "not a size"),
        (profile_text(ram="16"), "ram", "no unit"),
        (profile_text(ram="16").replace('"16"', "16"), "ram", "size string"),
        (profile_text().replace('os = "linux"', 'os = "beos"'), "os",
         "unknown value 'beos'; expected one of linux, darwin, windows"),
        (profile_text().replace('features = ["FMA", "avx2", "fma"]', "features = [1]"),
         "cpu.features", "list of strings"),
        (profile_text().replace('features = ["FMA", "avx2", "fma"]', 'features = ["avx2", ""]'),
         "cpu.features[1]", "must not be empty"),
        (profile_text().replace('model = "Test CPU"', 'model = " "'), "cpu.model",
         "must not be empty"),
        (profile_text(name="other-name"), "name", "must equal the file name"),
        (profile_text(extra='\n[[gpus]]\nname = "RTX 4091"\n'), "gpus[0].name", "RTX 4090"),
        (profile_text(extra='\n[[gpus]]\nname = "RTX 4090"\nvram = "big"\n'),
         "gpus[0].vram", "not a size"),
        (profile_text(extra='\n[[gpus]]\nname = "RTX 4090"\ncount = 0\n'),
         "gpus[0].count", "at least 1"),
        (profile_text(extra='\n[[gpus]]\nname = "RTX 4090"\nslots = 2\n'),
         "gpus[0].slots", "unknown key"),
        (profile_text(extra='\n[[gpus]]\nname = "Apple M2"\n'), "unified", "unified = true"),
        (profile_text(extra='\n[[gpus]]\nname = "Apple M2"\nvram = "8GB"\n'),
         "gpus[0].vram", "shares system RAM"),
        (profile_text().replace(BW_LINE, BW_LINE + "\nunified = true"),
         "unified", "exactly one unified GPU"),
        (profile_text().replace(BW_LINE, BW_LINE + '\nram_available = "20GB"'),
         "ram_available", "larger than ram"),
    ],
)
def test_schema_errors_name_file_and_key(text: str, key: str, problem: str) -> None:
    path = write_user_profile("test-box", text)
    message = config_error("test-box")
    assert message.startswith(f"{path}: {key}: ")
    assert problem in message
