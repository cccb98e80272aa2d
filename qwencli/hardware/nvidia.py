"""NVIDIA GPUs through NVML (the `pynvml` module of the nvidia-ml-py package).

NVML ships with the driver, so it answers on any machine where CUDA could run, without a CUDA
toolkit. The module is passed in so tests can hand a fake one; every NVML failure becomes a status
string, never an exception, because a machine without NVIDIA hardware is the common case.

Bandwidth comes from the bus width and the maximum memory clock: bytes/s = bits/8 x MHz x 1e6 x 2
(the NVML memory clock is half the data rate). That gives 1008 GB/s for an RTX 4090 (384-bit,
10501 MHz) and 3.35 TB/s for an H100 SXM (5120-bit, 2619 MHz), the published figures.

Unified-memory parts (DGX Spark's GB10) have no framebuffer: nvmlDeviceGetMemoryInfo answers
NotSupported there, and the GPU's memory is system RAM (nvitop, gpustat and all-smi handle it the
same way). Grace Hopper also reports ATS addressing but keeps its own HBM, so ATS alone does not
make a GPU unified.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from qwencli.hardware.model import Bandwidth, Gpu

_LIBRARY_NOT_FOUND = ("LibraryNotFound", 12)
_DRIVER_NOT_LOADED = ("DriverNotLoaded", 9)
_NO_PERMISSION = ("NoPermission", 4)
_NOT_SUPPORTED = ("NotSupported", 3)
_ATS = 2  # NVML_DEVICE_ADDRESSING_MODE_ATS


def _is(nvml: Any, err: BaseException, kind: tuple[str, int]) -> bool:
    """Whether `err` is NVMLError_<name>, by class when the module defines it, else by code."""
    name, code = kind
    cls = getattr(nvml, f"NVMLError_{name}", None)
    if isinstance(cls, type) and isinstance(err, cls):
        return True
    return getattr(err, "value", None) == code


def _errors(nvml: Any) -> tuple[type[BaseException], ...]:
    base = getattr(nvml, "NVMLError", None)
    errors: tuple[type[BaseException], ...] = (OSError, AttributeError)
    if isinstance(base, type) and issubclass(base, BaseException):
        errors = (base, *errors)
    return errors


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip()


def cuda_version(value: int) -> str:
    """NVML's integer CUDA version (12040) as people write it ("12.4")."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def nvml_bandwidth(bus_width_bits: int, mem_clock_mhz: int) -> Bandwidth:
    """Peak memory bandwidth from NVML's bus width and maximum memory clock (x2, DDR)."""
    return Bandwidth(
        bytes_per_s=int(bus_width_bits / 8 * mem_clock_mhz * 1_000_000 * 2),
        source="nvml",
        detail=f"NVML: {bus_width_bits}-bit bus x {mem_clock_mhz} MHz x 2 (DDR)",
    )


def _init_failure(nvml: Any, err: BaseException) -> str:
    if isinstance(err, OSError) or _is(nvml, err, _LIBRARY_NOT_FOUND):
        return "NVIDIA driver not found (NVML library missing)"
    if _is(nvml, err, _DRIVER_NOT_LOADED):
        return "NVIDIA driver not loaded"
    if _is(nvml, err, _NO_PERMISSION):
        return "no permission to query the NVIDIA driver"
    return f"NVML could not start: {_text(err) or type(err).__name__}"


def _host_memory() -> tuple[int, int]:
    """(total, available) system RAM, for GPUs whose memory is system RAM."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


def _read_gpu(
    nvml: Any,
    index: int,
    driver: str | None,
    cuda: str | None,
    host_memory: Callable[[], tuple[int, int]],
) -> Gpu:
    errors = _errors(nvml)

    def optional(fn_name: str, *args: Any) -> Any:
        """A field NVML may not support on this GPU (or this driver): None instead of an error."""
        fn = getattr(nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except errors:
            return None

    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    notes: list[str] = []

    mode = optional("nvmlDeviceGetAddressingMode", handle)
    ats = mode == getattr(nvml, "NVML_DEVICE_ADDRESSING_MODE_ATS", _ATS)

    unified = False
    try:
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
        total, free = int(info.total), int(info.free)
    except errors as err:
        if not _is(nvml, err, _NOT_SUPPORTED):
            raise
        # No framebuffer to report (GB10): the GPU allocates from system RAM.
        total, free = host_memory()
        unified = True
        notes.append("NVML reports no dedicated memory: the GPU uses system RAM")
    if ats and not unified:
        notes.append("can also address system RAM coherently (ATS)")

    cc = optional("nvmlDeviceGetCudaComputeCapability", handle)
    compute = f"{cc[0]}.{cc[1]}" if isinstance(cc, tuple | list) and len(cc) == 2 else None

    bandwidth = None
    bus = optional("nvmlDeviceGetMemoryBusWidth", handle)
    clock = optional("nvmlDeviceGetMaxClockInfo", handle, getattr(nvml, "NVML_CLOCK_MEM", 2))
    if isinstance(bus, int) and isinstance(clock, int) and bus > 0 and clock > 0:
        bandwidth = nvml_bandwidth(bus, clock)

    return Gpu(
        index=index,
        name=name,
        vendor="nvidia",
        total_bytes=total,
        free_bytes=free,
        unified=unified,
        backend="cuda",
        integrated=unified,
        bandwidth=bandwidth,
        driver_version=driver,
        cuda_version=cuda,
        compute_capability=compute,
        notes=tuple(notes),
    )


def _status(gpus: list[Gpu], skipped: list[str]) -> str:
    n = len(gpus)
    status = f"{n} NVIDIA GPU{'' if n == 1 else 's'}"
    if n == 0 and not skipped:
        return "NVIDIA driver loaded but it reports no GPUs"
    if skipped:
        status += f" ({'; '.join(skipped)})"
    return status


_LINUX_DRIVER = "/proc/driver/nvidia"  # present whenever the kernel driver is (containers too)


def probe_nvidia(
    nvml: ModuleType | None = None,
    *,
    host_memory: Callable[[], tuple[int, int]] | None = None,
) -> tuple[tuple[Gpu, ...], str]:
    """NVIDIA GPUs and a one-line status ("2 NVIDIA GPUs", "NVIDIA driver not loaded", ...).

    Never raises. nvmlShutdown runs whenever nvmlInit succeeded. `host_memory` gives
    (total, available) system RAM for unified-memory GPUs; psutil by default.
    """
    if nvml is None:
        if sys.platform == "linux" and not os.path.exists(_LINUX_DRIVER):
            # no NVIDIA kernel driver: NVML cannot start, and importing it costs start-up time
            return (), "NVIDIA driver not found (NVML library missing)"
        try:
            import pynvml as nvml_module
        except ImportError:
            return (), "nvidia-ml-py is not installed, so NVIDIA GPUs were not probed"
        nvml = nvml_module
    mod: Any = nvml
    errors = _errors(mod)

    try:
        mod.nvmlInit()
    except errors as err:
        return (), _init_failure(mod, err)
    except Exception as err:  # a broken binding must not take `qwen hw` down with it
        return (), f"NVML could not start: {err}"

    try:
        count = int(mod.nvmlDeviceGetCount())
        try:
            driver: str | None = _text(mod.nvmlSystemGetDriverVersion())
        except errors:
            driver = None
        try:
            cuda: str | None = cuda_version(int(mod.nvmlSystemGetCudaDriverVersion()))
        except errors:
            cuda = None
        gpus: list[Gpu] = []
        skipped: list[str] = []
        for i in range(count):
            try:
                gpus.append(_read_gpu(mod, i, driver, cuda, host_memory or _host_memory))
            except errors as err:
                skipped.append(f"GPU {i} skipped: {_text(err) or type(err).__name__}")
        return tuple(gpus), _status(gpus, skipped)
    except errors as err:
        return (), f"NVML error: {_text(err) or type(err).__name__}"
    except Exception as err:  # see above: report, do not crash
        return (), f"NVML error: {err}"
    finally:
        with contextlib.suppress(Exception):
            mod.nvmlShutdown()
