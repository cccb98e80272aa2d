"""Probe this machine: the one place that puts the parsers' answers together into a `Hardware`.

Each source fails soft: a missing driver or library means "no such GPU", never a crash. Known-part
tables fill in what the drivers do not report (bandwidth of AMD and Apple GPUs), and the result says
where each figure came from.
"""

from __future__ import annotations

import dataclasses
import sys

from qwencli.hardware.model import Bandwidth, Gpu, Hardware, LlamaCppBuild, Memory
from qwencli.paths import cache_dir


def _os_name() -> str:
    if sys.platform == "darwin":
        return "darwin"
    if sys.platform == "win32":
        return "windows"
    return "linux" if sys.platform.startswith("linux") else sys.platform


def _table_bandwidth(gpu: Gpu) -> Bandwidth | None:
    from qwencli.hardware.known_gpus import lookup

    known = lookup(gpu.name, cores=gpu.cores)
    return known.bandwidth if known is not None else None


def _probe_gpus(os_name: str) -> tuple[list[Gpu], list[str]]:
    gpus: list[Gpu] = []
    notes: list[str] = []
    from qwencli.hardware.nvidia import probe_nvidia

    nvidia, status = probe_nvidia()
    gpus.extend(nvidia)
    if not nvidia and status:
        notes.append(status)
    if os_name == "darwin":
        from qwencli.hardware.apple import probe_apple

        apple = probe_apple()
        if apple is not None:
            gpus.append(apple)
    elif os_name == "linux":
        from qwencli.hardware.drm import scan_drm

        gpus.extend(scan_drm())
    return gpus, notes


def _finish_gpus(gpus: list[Gpu], memory: Memory) -> tuple[Gpu, ...]:
    """Number the GPUs, fill bandwidth from the table, cap shared-memory GPUs by free RAM."""
    finished = []
    for index, gpu in enumerate(gpus):
        bandwidth = gpu.bandwidth or _table_bandwidth(gpu)
        free = gpu.free_bytes
        if gpu.unified:
            free = min(free, memory.available_bytes)
        finished.append(dataclasses.replace(gpu, index=index, bandwidth=bandwidth,
                                            free_bytes=free))
    return tuple(finished)


def _ram_bandwidth(gpus: tuple[Gpu, ...], cpu_model: str, total: int,
                   physical_cores: int) -> Bandwidth:
    for gpu in gpus:  # Apple Silicon: CPU and GPU read the same unified memory
        if gpu.vendor == "apple" and gpu.bandwidth is not None:
            return dataclasses.replace(gpu.bandwidth,
                                       detail=gpu.bandwidth.detail + " (unified memory)")
    from qwencli.hardware.bandwidth import cached_ram_bandwidth

    return cached_ram_bandwidth(cache_dir() / "ram_bandwidth.json",
                                f"{cpu_model}|{total}|{physical_cores}", physical_cores)


def offload_warnings(gpus: tuple[Gpu, ...], build: LlamaCppBuild) -> list[str]:
    """A warning, with the exact reinstall command, for each GPU the build cannot drive."""
    from qwencli.hardware.budget import build_can_drive
    from qwencli.hardware.llama_build import reinstall_command

    if not build.installed:
        return ["llama-cpp-python is not installed: `qwen chat` will not work; "
                f"install it with: {sys.executable} -m pip install llama-cpp-python"]
    warnings = []
    for backend in dict.fromkeys(gpu.backend for gpu in gpus
                                 if not build_can_drive(build, gpu)):
        names = ", ".join(gpu.name for gpu in gpus if gpu.backend == backend)
        built = "CPU-only" if build.backend == "cpu" else f"built for {build.backend}"
        warnings.append(
            f"{names} found, but the installed llama.cpp is {built} and cannot use it; "
            f"rebuild with: {reinstall_command(backend)}")
    return warnings


def probe() -> Hardware:
    """Probe CPU, memory, GPUs and the llama.cpp build. Takes well under a second once cached."""
    from qwencli.hardware.cpu import probe_cpu
    from qwencli.hardware.llama_build import probe_llama_build
    from qwencli.hardware.memory import probe_memory

    os_name = _os_name()
    cpu = probe_cpu()
    memory = probe_memory()
    raw_gpus, gpu_notes = _probe_gpus(os_name)
    gpus = _finish_gpus(raw_gpus, memory)
    memory = dataclasses.replace(
        memory, bandwidth=_ram_bandwidth(gpus, cpu.model, memory.total_bytes, cpu.physical_cores))
    build = probe_llama_build(cache_dir() / "llama_build.json")
    return Hardware(os=os_name, cpu=cpu, memory=memory, gpus=gpus, llama_cpp=build,
                    source="probed", warnings=tuple(offload_warnings(gpus, build)),
                    notes=tuple(gpu_notes))
