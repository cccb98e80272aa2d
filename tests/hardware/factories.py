"""Small builders of hardware records for tests."""

from __future__ import annotations

from qwencli.hardware.model import Cpu, Gpu, Hardware, LlamaCppBuild, Memory

GIB = 1024**3


def cpu(cores: int = 8) -> Cpu:
    return Cpu(model="Test CPU", arch="x86_64", physical_cores=cores, logical_cores=cores * 2,
               features=("avx2",))


def memory(total_gib: float = 32, available_gib: float = 24) -> Memory:
    return Memory(total_bytes=int(total_gib * GIB), available_bytes=int(available_gib * GIB),
                  swap_total_bytes=0, swap_free_bytes=0, limit_bytes=None, limit_source=None,
                  reason="test")


def nvidia(index: int = 0, total_gib: float = 24, free_gib: float = 23) -> Gpu:
    return Gpu(index=index, name="NVIDIA GeForce RTX 4090", vendor="nvidia",
               total_bytes=int(total_gib * GIB), free_bytes=int(free_gib * GIB), unified=False,
               backend="cuda")


def apple(total_gib: float = 64, working_set_gib: float = 48) -> Gpu:
    return Gpu(index=0, name="Apple M3 Max", vendor="apple", total_bytes=int(total_gib * GIB),
               free_bytes=int(working_set_gib * GIB), unified=True, backend="metal",
               working_set_bytes=int(working_set_gib * GIB), working_set_source="test")


def build(backend: str = "cpu") -> LlamaCppBuild:
    return LlamaCppBuild(installed=True, version="0.3.36", gpu_offload=backend != "cpu",
                         backend=backend)


def machine(gpus: tuple[Gpu, ...] = (), backend: str = "cpu", mem: Memory | None = None
            ) -> Hardware:
    return Hardware(os="linux", cpu=cpu(), memory=mem or memory(), gpus=gpus,
                    llama_cpp=build(backend))
