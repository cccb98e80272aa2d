"""What the tool believes about a machine: frozen records shared by the probe, what-if and planner.

All sizes are bytes, all rates bytes per second; human units only appear in `output`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qwencli.hardware.remote import Worker


@dataclass(frozen=True)
class Bandwidth:
    """A memory read bandwidth and where the figure came from, so the user can judge it."""

    bytes_per_s: int
    source: str  # "measured" | "nvml" | "table" | "profile" | "assumed"
    detail: str  # e.g. "NVML: 384-bit bus x 10501 MHz x 2 (DDR)"


@dataclass(frozen=True)
class Cpu:
    model: str
    arch: str  # normalised: "x86_64" | "arm64" | other uname machine string
    physical_cores: int
    logical_cores: int
    features: tuple[str, ...]  # llama.cpp-relevant instruction sets present, lower case
    performance_cores: int | None = None  # Apple P-cores (hw.perflevel0), when known


@dataclass(frozen=True)
class ContainerLimit:
    """A cgroup memory limit that applies to this process."""

    limit_bytes: int
    usage_bytes: int | None  # what the cgroup already uses (page cache included)
    source: str  # e.g. "cgroup v2 memory.max (/sys/fs/cgroup/memory.max)"


@dataclass(frozen=True)
class Memory:
    total_bytes: int  # physical RAM the kernel sees
    available_bytes: int  # what can be allocated without swapping (MemAvailable), limit applied
    swap_total_bytes: int
    swap_free_bytes: int
    limit_bytes: int | None  # container limit when one is set below physical RAM, else None
    limit_source: str | None
    reason: str  # one sentence: why available_bytes is what it is
    bandwidth: Bandwidth | None = None


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    vendor: str  # "nvidia" | "apple" | "amd" | "intel"
    total_bytes: int
    free_bytes: int
    unified: bool  # shares system RAM (Apple Silicon, integrated GPUs)
    backend: str  # llama.cpp backend that drives it: "cuda" | "metal" | "hip" | "vulkan" | "sycl"
    integrated: bool = False
    bandwidth: Bandwidth | None = None
    driver_version: str | None = None
    cuda_version: str | None = None  # highest CUDA version the NVIDIA driver supports
    compute_capability: str | None = None
    cores: int | None = None  # Apple GPU cores
    working_set_bytes: int | None = None  # Apple: what Metal lets the GPU wire
    working_set_source: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LlamaCppBuild:
    """The installed llama-cpp-python and what its compiled llama.cpp can offload to."""

    installed: bool
    version: str | None
    gpu_offload: bool
    backend: str  # "cpu" | "cuda" | "metal" | "hip" | "vulkan" | "sycl" | "unknown"
    cpu_features: tuple[str, ...] = ()  # what the CPU backend was built to use
    backends: tuple[str, ...] = ()  # ggml backend registry names, e.g. ("CUDA", "CPU")
    source: str = "probed"  # "probed" | "assumed" (what-if machines assume a matching build)
    error: str | None = None
    rpc: bool = False  # llama_supports_rpc(): built with -DGGML_RPC=on (`qwen worker`, --rpc)


@dataclass(frozen=True)
class Hardware:
    os: str  # "linux" | "darwin" | "windows"
    cpu: Cpu
    memory: Memory
    gpus: tuple[Gpu, ...]
    llama_cpp: LlamaCppBuild
    source: str = "probed"  # "probed", "profile NAME", with "+ what-if" when options changed it
    warnings: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # e.g. "NVIDIA driver not found"
    # other machines' devices this plan may use over RPC (--rpc, --rpc-whatif), in llama.cpp's
    # device order: hardware.cluster
    workers: tuple[Worker, ...] = field(default=())


@dataclass(frozen=True)
class GpuBudget:
    index: int
    name: str
    bytes: int
    usable: bool  # False when the installed llama.cpp build cannot offload to this GPU
    reason: str


@dataclass(frozen=True)
class Budget:
    """The memory the planner may fill: free memory less documented margins."""

    host_bytes: int
    host_reason: str
    gpus: tuple[GpuBudget, ...]
    unified_pool: bool  # GPU and host budgets are the same memory: count it once
    workers: tuple[WorkerBudget, ...] = ()  # one per Hardware.workers entry, in that order


@dataclass(frozen=True)
class WorkerBudget:
    """What the planner may fill on one worker's device (hardware.budget gives the margin)."""

    name: str
    endpoint: str
    bytes: int
    reason: str
