"""The memory budget the planner may fill: free memory less documented margins.

Margins, and why:
- Host: the available memory (the kernel's MemAvailable, or the container limit less its usage,
  whichever is smaller) less HOST_HEADROOM (512 MiB). Available memory already excludes what other
  programs use; the headroom covers the qwen process itself (Python, llama.cpp allocations outside
  its buffers) and allocator slack, so a plan that fits does not push the machine into swap.
- Discrete GPU: its *free* memory (not total: a desktop and other programs hold some) less
  GPU_HEADROOM (1 GiB), the margin llama.cpp's own `--fit` keeps free on each device by default
  (`--fit-target 1024`). It covers the CUDA/ROCm context and allocations made after the fit.
- Unified memory (Apple Silicon, integrated GPUs): GPU and CPU share one pool. The GPU may use at
  most its Metal working set (or its share) less GPU_HEADROOM, and never more than the host budget:
  the planner counts the pool once (`unified_pool`).
- A worker's device (`qwen worker`, planned with --rpc or --rpc-whatif): the free memory the
  worker reports for it (a what-if worker: what hardware.cluster assumes) less a margin: the
  GPU margin (1 GiB) for a GPU, the host headroom (512 MiB) for a CPU, which covers the
  worker's allocations outside its buffers. The worker's own process is already running when
  it reports, so its baseline is outside the free figure.
- A GPU the installed llama.cpp build cannot drive is listed with `usable = False` and is not
  planned on; `qwen hw` prints the reinstall command.
"""

from __future__ import annotations

from qwencli.hardware.model import (
    Budget,
    Gpu,
    GpuBudget,
    Hardware,
    LlamaCppBuild,
    WorkerBudget,
)
from qwencli.hardware.remote import Worker, is_gpu
from qwencli.units import format_bytes

MIB = 1024**2
GIB = 1024**3
HOST_HEADROOM = 512 * MIB
GPU_HEADROOM = 1 * GIB


def build_can_drive(build: LlamaCppBuild, gpu: Gpu) -> bool:
    """Whether the installed llama.cpp build can offload to this GPU."""
    if not build.gpu_offload:
        return False
    if build.backend in ("unknown", gpu.backend):
        return True
    # Vulkan drives every vendor's GPU.
    return build.backend == "vulkan"


def plan_budget(hw: Hardware) -> Budget:
    """Compute the budget from a (probed or what-if) machine. Pure."""
    host = max(0, hw.memory.available_bytes - HOST_HEADROOM)
    host_reason = (
        f"{format_bytes(hw.memory.available_bytes)} available less "
        f"{format_bytes(HOST_HEADROOM)} headroom for the qwen process"
    )
    gpus: list[GpuBudget] = []
    unified_pool = False
    for gpu in hw.gpus:
        usable = build_can_drive(hw.llama_cpp, gpu)
        if gpu.unified:
            unified_pool = unified_pool or usable
            ceiling = gpu.working_set_bytes or gpu.free_bytes
            size = max(0, min(ceiling - GPU_HEADROOM, host))
            what = "Metal working set" if gpu.working_set_bytes else "GPU share"
            reason = (
                f"{what} {format_bytes(ceiling)} less {format_bytes(GPU_HEADROOM)} headroom, "
                f"within the host budget (one shared pool)"
            )
        else:
            size = max(0, gpu.free_bytes - GPU_HEADROOM)
            reason = (f"{format_bytes(gpu.free_bytes)} free less "
                      f"{format_bytes(GPU_HEADROOM)} headroom")
        if not usable:
            reason = f"not usable: the installed llama.cpp build is {hw.llama_cpp.backend}-only"
            if hw.llama_cpp.backend not in ("cpu", "unknown"):
                reason = f"not usable: the installed llama.cpp build uses {hw.llama_cpp.backend}"
        gpus.append(GpuBudget(index=gpu.index, name=gpu.name, bytes=size, usable=usable,
                              reason=reason))
    return Budget(host_bytes=host, host_reason=host_reason, gpus=tuple(gpus),
                  unified_pool=unified_pool,
                  workers=tuple(worker_budget(worker) for worker in hw.workers))


def worker_budget(worker: Worker) -> WorkerBudget:
    """One worker device's budget: its free memory less the margin for its kind."""
    margin = GPU_HEADROOM if is_gpu(worker) else HOST_HEADROOM
    kind = "GPU" if is_gpu(worker) else "CPU"
    return WorkerBudget(worker.name, worker.endpoint, max(0, worker.free_bytes - margin),
                        f"{format_bytes(worker.free_bytes)} free on the worker less "
                        f"{format_bytes(margin)} headroom ({kind})")
