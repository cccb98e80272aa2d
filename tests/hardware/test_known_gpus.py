"""The known-GPU table: bundled data, loose name matching, schema errors that name file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qwencli.errors import ConfigError
from qwencli.hardware import metal
from qwencli.hardware.known_gpus import (
    default_table_path,
    load_known_gpus,
    lookup,
    nearest_names,
    normalise,
    split_cores,
)

GIB = 1024**3

# Every card the table must cover, as a user or a driver would spell it.
REQUIRED = [
    "RTX 2060", "RTX 2070", "RTX 2080", "RTX 2080 Ti", "RTX 3060 12GB", "RTX 3060 Ti",
    "RTX 3070", "RTX 3080 10GB", "RTX 3080 Ti", "RTX 3090", "RTX 3090 Ti", "RTX 4060",
    "RTX 4060 Ti 8GB", "RTX 4060 Ti 16GB", "RTX 4070", "RTX 4070 Super", "RTX 4070 Ti",
    "RTX 4070 Ti Super", "RTX 4080", "RTX 4080 Super", "RTX 4090", "RTX 5060 Ti 16GB",
    "RTX 5070", "RTX 5070 Ti", "RTX 5080", "RTX 5090", "RTX 4060 Laptop GPU",
    "RTX 4070 Laptop GPU", "RTX 3050", "T4", "A10", "L4", "A100 40GB", "A100 80GB",
    "H100 PCIe", "H100 SXM", "H200", "RTX A6000", "RTX 6000 Ada", "Jetson AGX Orin",
    "RX 6700 XT", "RX 6800", "RX 6800 XT", "RX 6900 XT", "RX 7600", "RX 7700 XT", "RX 7800 XT",
    "RX 7900 GRE", "RX 7900 XT", "RX 7900 XTX", "RX 9070", "RX 9070 XT", "MI300X",
    "Arc A770 16GB", "Arc A750", "Arc B580", "M1", "M1 Pro", "M1 Max", "M1 Ultra", "M2",
    "M2 Pro", "M2 Max", "M2 Ultra", "M3", "M3 Pro", "M3 Max", "M4", "M4 Pro", "M4 Max",
]


@pytest.fixture
def table_file(tmp_path: Path):
    """Write a small table and return its path; each test gets its own (the loader caches)."""

    def write(text: str, name: str = "gpus.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


GOOD_ENTRY = """
[[gpu]]
name = "Test Card"
vendor = "nvidia"
backend = "cuda"
memory = "12GB"
bandwidth_gbs = 360
"""


SOC_KEYS = """cpu_model = "Test SoC"
cpu_arch = "arm64"
cpu_cores = 8
cpu_features = ["neon", "dotprod"]
os = "linux"
"""


def test_a_system_on_a_chip_brings_its_cpu(table_file) -> None:
    path = table_file(GOOD_ENTRY.replace('memory = "12GB"\n', 'unified = true\nmemory = "8GB"\n')
                      + SOC_KEYS)
    (gpu,) = load_known_gpus(path)
    assert gpu.os == "linux" and gpu.cpu is not None
    assert gpu.cpu.arch == "arm64" and gpu.cpu.physical_cores == gpu.cpu.logical_cores == 8
    assert gpu.cpu.features == ("dotprod", "neon") and gpu.cpu.performance_cores is None


@pytest.mark.parametrize("name", REQUIRED)
def test_bundled_table_covers_required_cards(name: str) -> None:
    assert lookup(name) is not None, name


def test_bundled_table_loads_and_is_cached() -> None:
    table = load_known_gpus()
    assert len(table) >= len(REQUIRED)
    assert load_known_gpus() is table
    assert {gpu.vendor for gpu in table} == {"nvidia", "amd", "intel", "apple"}


def test_every_number_in_the_table_has_a_source_comment() -> None:
    lines = default_table_path().read_text(encoding="utf-8").splitlines()
    for before, line in zip(["", *lines], lines, strict=False):
        if re.match(r"^(memory|bandwidth_gbs|gpu_cores|cpu_cores|cpu_performance_cores)\s*=",
                    line):
            assert "# source:" in line, line
        if line.startswith("cpu_features"):  # a list: its source is the line above
            assert before.startswith("# source:"), line


@pytest.mark.parametrize(
    ("name", "canonical", "memory_gib", "gbs", "backend"),
    [
        ("RTX 4090", "RTX 4090", 24, 1008, "cuda"),
        ("RTX 3060", "RTX 3060 12GB", 12, 360, "cuda"),
        ("RTX 4060 Ti", "RTX 4060 Ti 8GB", 8, 288, "cuda"),
        ("RTX 4060 Ti 16 GB", "RTX 4060 Ti 16GB", 16, 288, "cuda"),
        ("RTX 4080", "RTX 4080", 16, 716.8, "cuda"),
        ("RTX 5090", "RTX 5090", 32, 1792, "cuda"),
        ("RTX 2080 Ti", "RTX 2080 Ti", 11, 616, "cuda"),
        ("H200", "H200", 141, 4800, "cuda"),
        ("RX 7900 XTX", "RX 7900 XTX", 24, 960, "hip"),
        ("RX 7900 XT", "RX 7900 XT", 20, 800, "hip"),
        ("Arc B580", "Arc B580", 12, 456, "sycl"),
        ("MI300X", "Instinct MI300X", 192, 5300, "hip"),
    ],
)
def test_table_values(name: str, canonical: str, memory_gib: int, gbs: float, backend: str) -> None:
    gpu = lookup(name)
    assert gpu is not None
    assert gpu.name == canonical
    assert gpu.memory_bytes == memory_gib * GIB
    assert gpu.bandwidth_bytes_per_s == round(gbs * 1e9)
    assert gpu.bandwidth_gbs == pytest.approx(gbs)
    assert gpu.backend == backend
    assert not gpu.unified


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("rtx4090", "RTX 4090"),
        ("4090", "RTX 4090"),
        ("geforce rtx 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 4060 Laptop GPU", "RTX 4060 Laptop"),
        ("RTX 4070 Mobile", "RTX 4070 Laptop"),
        ("RTX 4060 Max-Q", "RTX 4060 Laptop"),
        ("NVIDIA GeForce RTX 4060", "RTX 4060"),
        ("AMD Radeon RX 7900 XTX", "RX 7900 XTX"),
        ("7900xt", "RX 7900 XT"),
        ("Radeon RX 7900 GRE", "RX 7900 GRE"),
        ("Intel(R) Arc(TM) A770 Graphics", "Arc A770 16GB"),
        ("a750", "Arc A750"),
        ("Tesla T4", "T4"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
        ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"),
        ("NVIDIA RTX A6000", "RTX A6000"),
        ("Apple M2", "Apple M2"),
        ("m2 ultra", "Apple M2 Ultra"),
    ],
)
def test_lookup_spellings(spelling: str, canonical: str) -> None:
    gpu = lookup(spelling)
    assert gpu is not None, spelling
    assert gpu.name == canonical


def test_lookup_unknown_and_empty() -> None:
    assert lookup("Voodoo 5 6000") is None
    assert lookup("") is None
    assert lookup("NVIDIA GeForce") is None


@pytest.mark.parametrize(
    ("name", "cores", "gbs"),
    [
        ("Apple M3 Max", 30, 300),
        ("Apple M3 Max", 40, 400),
        ("Apple M3 Max", None, 300),  # unknown variant: the slower one, so estimates err low
        ("M3 Max 40-core GPU", None, 400),
        ("Apple M3 Max (40-core GPU)", None, 400),
        ("Apple M4 Max", 32, 410),
        ("Apple M4 Max", 40, 546),
        ("M4 Max 40 core", None, 546),
        ("Apple M4 Max", 99, 410),
        ("Apple M2", 10, 100),  # single-entry chips ignore the core count
        ("Apple M1", None, 68.25),
    ],
)
def test_apple_variants_by_gpu_cores(name: str, cores: int | None, gbs: float) -> None:
    gpu = lookup(name, cores=cores)
    assert gpu is not None
    assert gpu.bandwidth_gbs == pytest.approx(gbs)
    assert gpu.unified and gpu.backend == "metal" and gpu.memory_bytes is None


def test_normalise_and_split_cores() -> None:
    assert normalise("NVIDIA GeForce RTX 4060 Laptop GPU") == "rtx4060laptop"
    assert normalise("AMD Radeon(TM) RX 7900 XTX") == "rx7900xtx"
    assert split_cores("Apple M3 Max (40-core GPU)") == ("Apple M3 Max ()", 40)
    assert split_cores("RTX 4090") == ("RTX 4090", None)


def test_nearest_names() -> None:
    assert "RTX 4090" in nearest_names("RTX 4091")
    near = nearest_names("m3 maxx", n=3)
    assert len(near) == 3
    assert near[0].startswith("Apple M3 Max")
    assert nearest_names("") == []
    assert nearest_names("zzzzzzzzzzzz") == []


def test_to_gpu_discrete_is_idle_with_table_bandwidth() -> None:
    known = lookup("RTX 3090")
    assert known is not None
    gpu = known.to_gpu(1)
    assert (gpu.index, gpu.name, gpu.vendor, gpu.backend) == (1, "RTX 3090", "nvidia", "cuda")
    assert gpu.total_bytes == gpu.free_bytes == 24 * GIB
    assert gpu.bandwidth is not None
    assert (gpu.bandwidth.bytes_per_s, gpu.bandwidth.source) == (936 * 10**9, "table")
    resized = known.to_gpu(0, vram_bytes=20 * GIB)
    assert resized.total_bytes == resized.free_bytes == 20 * GIB


def test_to_gpu_apple_uses_the_pool_and_metal_working_set() -> None:
    known = lookup("M3 Max", cores=40)
    assert known is not None
    gpu = known.to_gpu(0, pool_bytes=64 * GIB)
    assert gpu.unified and gpu.integrated
    assert gpu.total_bytes == 64 * GIB
    assert gpu.working_set_bytes == gpu.free_bytes == metal.default_working_set(64 * GIB)
    assert gpu.free_bytes == 48 * GIB
    assert gpu.working_set_source == metal.DEFAULT_SHARE_SOURCE
    assert gpu.cores == 40
    with pytest.raises(ValueError):
        known.to_gpu(0)


def test_to_gpu_jetson_brings_its_memory() -> None:
    known = lookup("Jetson AGX Orin 64GB")
    assert known is not None and known.unified and known.backend == "cuda"
    gpu = known.to_gpu(0)
    assert gpu.total_bytes == gpu.free_bytes == 64 * GIB
    assert gpu.working_set_bytes is None


def test_custom_table(table_file) -> None:
    path = table_file(GOOD_ENTRY)
    table = load_known_gpus(path)
    assert len(table) == 1
    assert lookup("test card", table=table) == table[0]
    assert table[0].memory_bytes == 12 * GIB
    assert lookup("RTX 4090", table=table) is None


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (GOOD_ENTRY + "bandwdith = 1\n", "gpu[0].bandwdith", "unknown key"),
        (GOOD_ENTRY.replace('memory = "12GB"\n', ""), "gpu[0].memory", "missing required key"),
        (GOOD_ENTRY.replace('vendor = "nvidia"', 'vendor = "3dfx"'), "gpu[0].vendor",
         "unknown value '3dfx'"),
        (GOOD_ENTRY.replace('"12GB"', '"twelve"'), "gpu[0].memory", "'twelve' is not a size"),
        (GOOD_ENTRY.replace("360", "-1"), "gpu[0].bandwidth_gbs", "must be greater than 0"),
        (GOOD_ENTRY.replace("360", '"fast"'), "gpu[0].bandwidth_gbs", "expected a number"),
        (GOOD_ENTRY + "unified = 1\n", "gpu[0].unified", "expected true or false"),
        (GOOD_ENTRY + "gpu_cores = [0]\n", "gpu[0].gpu_cores[0]", "must be at least 1"),
        ("[[card]]\nname = 'x'\n", "card", "unknown key"),
        (GOOD_ENTRY + GOOD_ENTRY, None, "all match the name"),
        (GOOD_ENTRY.replace('memory = "12GB"\n', "unified = true\n") + 'cpu_model = "X"\n',
         "gpu[0]", "needs all of its CPU keys: missing cpu_arch, cpu_cores"),
        (GOOD_ENTRY + SOC_KEYS, "gpu[0].cpu_model", "only a unified GPU"),
        (GOOD_ENTRY.replace('memory = "12GB"\n', "unified = true\n") + SOC_KEYS
         + "cpu_performance_cores = 9\n", "gpu[0].cpu_performance_cores",
         "9 is more than cpu_cores 8"),
    ],
)
def test_schema_errors_name_file_and_key(
    table_file, text: str, key: str | None, problem: str
) -> None:
    path = table_file(text)
    with pytest.raises(ConfigError) as info:
        load_known_gpus(path)
    message = info.value.message
    assert message.startswith(f"{path}: {key}: " if key else f"{path}: ")
    assert problem in message


def test_syntax_error_names_file_and_line(table_file) -> None:
    path = table_file(GOOD_ENTRY + "oops = \n")
    with pytest.raises(ConfigError) as info:
        load_known_gpus(path)
    assert info.value.message.startswith(f"{path}: line 8: ")
