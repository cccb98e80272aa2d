"""Each bundled machine described two ways, as `--hardware NAME` and as what-if flags, gets the
same budget and the same top pick (issue 11: the flags once kept this host's CPU and reserve).

Flags cannot describe a discrete-GPU machine's CPU, so for those the flags are applied to a probe
of a machine with the profile's CPU, OS and RAM bandwidth but other RAM and GPUs: what the flags
say (RAM, GPUs, reserve, build) must then replace what the probe said. A system on a chip (the
Apple profiles) brings its own CPU, so there the flags start from an unrelated x86 host with an
NVIDIA card and AVX-512: nothing of it may survive.
"""

from __future__ import annotations

import dataclasses

import pytest

from qwencli.catalog import load_catalog
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.model import Bandwidth, Cpu, Hardware, LlamaCppBuild, Memory
from qwencli.hardware.profiles import list_profiles, load_profile, profile_to_hardware
from qwencli.hardware.whatif import WhatIf, apply
from qwencli.recommend import rank
from tests.hardware import factories

GIB = 1024**3

FLAGS = {
    "apple-m2-8gb": WhatIf(ram_bytes=8 * GIB, unified=True, gpu_name="Apple M2"),
    "apple-m3-max-64gb": WhatIf(ram_bytes=64 * GIB, unified=True, gpu_name="M3 Max 40-core GPU"),
    "desktop-rtx4090-64gb": WhatIf(ram_bytes=64 * GIB, gpu_name="RTX 4090"),
    "desktop-rx7900xtx": WhatIf(ram_bytes=64 * GIB, gpu_name="RX 7900 XTX"),
    "dual-rtx3090": WhatIf(ram_bytes=128 * GIB, gpu_name="RTX 3090", gpu_count=2),
    "laptop-rtx4060-32gb": WhatIf(ram_bytes=32 * GIB, gpu_name="RTX 4060 Laptop"),
    "raspberry-pi-5-8gb": WhatIf(ram_bytes=8 * GIB, cpu_only=True),
    "vps-4gb": WhatIf(ram_bytes=4 * GIB, cpu_only=True),
}


def x86_host() -> Hardware:
    """An unrelated probed host: x86 with AVX-512, an RTX 4090, a CUDA build, 16 GiB."""
    cpu = Cpu(model="Intel Xeon (test)", arch="x86_64", physical_cores=2, logical_cores=4,
              features=("avx2", "avx512f", "avx512vnni", "fma"))
    memory = dataclasses.replace(factories.memory(16, 10),
                                 bandwidth=Bandwidth(9 * 10**9, "measured", "test"))
    return Hardware(os="linux", cpu=cpu, memory=memory, gpus=(factories.nvidia(),),
                    llama_cpp=LlamaCppBuild(installed=True, version="0.3.36", gpu_offload=True,
                                            backend="cuda", cpu_features=cpu.features))


def same_cpu_host(profile: Hardware) -> Hardware:
    """A probe of the profile's CPU and RAM bandwidth, with 16 GiB (12 free) and no GPU."""
    memory = Memory(total_bytes=16 * GIB, available_bytes=12 * GIB, swap_total_bytes=4 * GIB,
                    swap_free_bytes=4 * GIB, limit_bytes=None, limit_source=None,
                    reason="probed", bandwidth=profile.memory.bandwidth)
    return Hardware(os=profile.os, cpu=profile.cpu, memory=memory, gpus=(),
                    llama_cpp=LlamaCppBuild(installed=True, version="0.3.36", gpu_offload=False,
                                            backend="cpu", cpu_features=profile.cpu.features))


def test_every_bundled_profile_has_a_flag_equivalent() -> None:
    assert sorted(FLAGS) == sorted(list_profiles())
    assert len(FLAGS) == 8


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_profile_and_flags_give_the_same_budget_and_top_pick(name: str) -> None:
    profile = profile_to_hardware(load_profile(name))
    soc = any(gpu.unified for gpu in profile.gpus)
    base = x86_host() if soc else same_cpu_host(profile)
    flags = apply(base, FLAGS[name])
    assert flags.os == profile.os
    assert flags.cpu == profile.cpu
    assert flags.llama_cpp.cpu_features == profile.llama_cpp.cpu_features
    assert flags.memory.bandwidth is not None and profile.memory.bandwidth is not None
    assert flags.memory.bandwidth.bytes_per_s == profile.memory.bandwidth.bytes_per_s
    assert plan_budget(flags) == plan_budget(profile)
    catalog = load_catalog()
    by_flags = rank(catalog, flags, plan_budget(flags), top=1)
    by_profile = rank(catalog, profile, plan_budget(profile), top=1)
    assert [(p.spec.id, p.quant.quant) for p in by_flags] == \
        [(p.spec.id, p.quant.quant) for p in by_profile]
    assert by_profile  # every bundled machine runs something


def test_an_apple_what_if_never_keeps_the_hosts_instruction_sets() -> None:
    hw = apply(x86_host(), FLAGS["apple-m2-8gb"])
    assert hw.cpu.arch == "arm64" and hw.os == "darwin"
    assert not any(f.startswith("avx") for f in hw.cpu.features + hw.llama_cpp.cpu_features)
    assert {"neon", "dotprod", "i8mm"} <= set(hw.llama_cpp.cpu_features)
    assert hw.memory.bandwidth is not None and hw.memory.bandwidth.bytes_per_s == 100 * 10**9
    assert hw.memory.swap_total_bytes == 0
    assert hw.memory.available_bytes == int(5.5 * GIB)  # macOS's 2.5 GiB, as the profile


def test_a_jetson_brings_its_arm_cpu_and_linux() -> None:
    hw = apply(x86_host(), WhatIf(gpu_name="Jetson Orin Nano"))
    assert hw.os == "linux" and hw.cpu.arch == "arm64" and hw.cpu.physical_cores == 6
    assert hw.memory.total_bytes == 8 * GIB
    assert "i8mm" not in hw.cpu.features and "avx2" not in hw.llama_cpp.cpu_features


def test_every_system_on_a_chip_in_the_table_states_its_cpu_and_os() -> None:
    from qwencli.hardware.known_gpus import load_known_gpus

    unified = [gpu for gpu in load_known_gpus() if gpu.unified]
    assert len(unified) >= 20
    for gpu in unified:
        assert gpu.cpu is not None and gpu.os in ("darwin", "linux"), gpu.name
        assert gpu.cpu.arch == "arm64" and "neon" in gpu.cpu.features, gpu.name
        assert (gpu.os == "darwin") == (gpu.vendor == "apple"), gpu.name
