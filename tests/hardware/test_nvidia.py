"""NVIDIA probing against a fake `pynvml` module built the way nvidia-ml-py builds its own.

nvidia-ml-py makes one NVMLError subclass per NVML_ERROR_* code (NVMLError_NotSupported = 3,
NVMLError_LibraryNotFound = 12, ...) whose instances carry the code in `.value`; the fake does the
same, so the code under test cannot tell the difference.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from qwencli.hardware.model import Bandwidth, Gpu
from qwencli.hardware.nvidia import cuda_version, nvml_bandwidth, probe_nvidia

GIB = 1024**3
MIB = 1024**2


@dataclass
class FakeDevice:
    name: str | bytes
    total: int
    free: int
    cc: tuple[int, int]
    bus_bits: int | None  # None: NotSupported
    mem_clock_mhz: int | None
    addressing_mode: int | None = None  # None: function missing from this "driver"
    memory_supported: bool = True
    lost: bool = False


@dataclass
class FakeNvml:
    devices: list[FakeDevice]
    driver: str | bytes = "550.54.15"
    cuda: int = 12040
    init_error: int | None = None
    calls: list[str] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("pynvml")

        class NVMLError(Exception):
            def __init__(self, value: int) -> None:
                super().__init__(value)
                self.value = value

            def __str__(self) -> str:
                return {3: "Not Supported", 9: "Driver Not Loaded", 12: "NVML Shared Library Not "
                        "Found", 15: "GPU is lost"}.get(self.value, f"Unknown Error {self.value}")

        def subclass(name: str, code: int) -> type[NVMLError]:
            def init(self: NVMLError) -> None:
                NVMLError.__init__(self, code)

            return type(f"NVMLError_{name}", (NVMLError,), {"__init__": init})

        mod.NVMLError = NVMLError
        mod.NVMLError_NotSupported = subclass("NotSupported", 3)
        mod.NVMLError_DriverNotLoaded = subclass("DriverNotLoaded", 9)
        mod.NVMLError_LibraryNotFound = subclass("LibraryNotFound", 12)
        mod.NVMLError_GpuIsLost = subclass("GpuIsLost", 15)
        mod.NVML_CLOCK_MEM = 2
        mod.NVML_DEVICE_ADDRESSING_MODE_ATS = 2
        errors = {3: mod.NVMLError_NotSupported, 9: mod.NVMLError_DriverNotLoaded,
                  12: mod.NVMLError_LibraryNotFound}

        def record(name: str) -> None:
            self.calls.append(name)

        def nvmlInit() -> None:
            record("init")
            if self.init_error is not None:
                raise errors[self.init_error]()

        def nvmlShutdown() -> None:
            record("shutdown")

        def handle(h: Any) -> FakeDevice:
            device = self.devices[h]
            if device.lost:
                raise mod.NVMLError_GpuIsLost()
            return device

        def get_memory(h: int) -> Any:
            device = handle(h)
            if not device.memory_supported:
                raise mod.NVMLError_NotSupported()
            return types.SimpleNamespace(total=device.total, free=device.free,
                                         used=device.total - device.free)

        def bus_width(h: int) -> int:
            value = handle(h).bus_bits
            if value is None:
                raise mod.NVMLError_NotSupported()
            return value

        def max_clock(h: int, clock: int) -> int:
            assert clock == mod.NVML_CLOCK_MEM
            value = handle(h).mem_clock_mhz
            if value is None:
                raise mod.NVMLError_NotSupported()
            return value

        mod.nvmlInit = nvmlInit
        mod.nvmlShutdown = nvmlShutdown
        mod.nvmlDeviceGetCount = lambda: len(self.devices)
        mod.nvmlSystemGetDriverVersion = lambda: self.driver
        mod.nvmlSystemGetCudaDriverVersion = lambda: self.cuda
        mod.nvmlDeviceGetHandleByIndex = lambda i: i
        mod.nvmlDeviceGetName = lambda h: handle(h).name
        mod.nvmlDeviceGetMemoryInfo = get_memory
        mod.nvmlDeviceGetCudaComputeCapability = lambda h: handle(h).cc
        mod.nvmlDeviceGetMemoryBusWidth = bus_width
        mod.nvmlDeviceGetMaxClockInfo = max_clock
        if any(d.addressing_mode is not None for d in self.devices):
            mod.nvmlDeviceGetAddressingMode = lambda h: handle(h).addressing_mode
        return mod


RTX_4090 = FakeDevice("NVIDIA GeForce RTX 4090", 24564 * MIB, 23000 * MIB, (8, 9), 384, 10501)
RTX_3090 = FakeDevice(b"NVIDIA GeForce RTX 3090", 24576 * MIB, 24000 * MIB, (8, 6), 384, 9751)


def test_formulas() -> None:
    assert cuda_version(12040) == "12.4"
    assert cuda_version(13000) == "13.0"
    assert cuda_version(11080) == "11.8"
    assert nvml_bandwidth(384, 10501).bytes_per_s == 1_008_096_000_000  # RTX 4090: 1008 GB/s
    assert nvml_bandwidth(5120, 2619).bytes_per_s == 3_352_320_000_000  # H100 SXM: 3.35 TB/s


def test_one_rtx_4090_every_field() -> None:
    fake = FakeNvml([RTX_4090])
    gpus, status = probe_nvidia(fake.module())
    assert status == "1 NVIDIA GPU"
    assert gpus == (
        Gpu(
            index=0,
            name="NVIDIA GeForce RTX 4090",
            vendor="nvidia",
            total_bytes=24564 * MIB,
            free_bytes=23000 * MIB,
            unified=False,
            backend="cuda",
            integrated=False,
            bandwidth=Bandwidth(1_008_096_000_000, "nvml",
                                "NVML: 384-bit bus x 10501 MHz x 2 (DDR)"),
            driver_version="550.54.15",
            cuda_version="12.4",
            compute_capability="8.9",
            cores=None,
            working_set_bytes=None,
            working_set_source=None,
            notes=(),
        ),
    )
    assert fake.calls == ["init", "shutdown"]


def test_two_rtx_3090_with_bytes_names() -> None:
    second = FakeDevice("NVIDIA GeForce RTX 3090", 24576 * MIB, 20000 * MIB, (8, 6), 384, 9751)
    fake = FakeNvml([RTX_3090, second], driver=b"535.183.01", cuda=12020)
    gpus, status = probe_nvidia(fake.module())
    assert status == "2 NVIDIA GPUs"
    assert [g.index for g in gpus] == [0, 1]
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 3090"] * 2
    assert [g.free_bytes for g in gpus] == [24000 * MIB, 20000 * MIB]
    for g in gpus:
        assert g.total_bytes == 24576 * MIB
        assert (g.driver_version, g.cuda_version, g.compute_capability) == (
            "535.183.01", "12.2", "8.6")
        assert g.bandwidth == Bandwidth(936_096_000_000, "nvml",
                                        "NVML: 384-bit bus x 9751 MHz x 2 (DDR)")
        assert (g.vendor, g.backend, g.unified, g.integrated) == ("nvidia", "cuda", False, False)
    assert fake.calls == ["init", "shutdown"]


def test_library_not_found_is_a_status_not_an_error() -> None:
    fake = FakeNvml([RTX_4090], init_error=12)
    assert probe_nvidia(fake.module()) == ((), "NVIDIA driver not found (NVML library missing)")
    assert fake.calls == ["init"]  # nothing to shut down when init failed


def test_driver_not_loaded() -> None:
    fake = FakeNvml([RTX_4090], init_error=9)
    assert probe_nvidia(fake.module()) == ((), "NVIDIA driver not loaded")


def test_error_recognised_by_code_when_the_module_lacks_the_subclass() -> None:
    mod = FakeNvml([RTX_4090], init_error=12).module()
    del mod.NVMLError_LibraryNotFound
    base = mod.NVMLError

    def init() -> None:
        raise base(12)

    mod.nvmlInit = init
    assert probe_nvidia(mod)[1] == "NVIDIA driver not found (NVML library missing)"


def test_oserror_from_loading_the_library() -> None:
    mod = FakeNvml([RTX_4090]).module()

    def init() -> None:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    mod.nvmlInit = init
    assert probe_nvidia(mod) == ((), "NVIDIA driver not found (NVML library missing)")


def test_bus_width_not_supported_leaves_bandwidth_empty() -> None:
    laptop = FakeDevice("NVIDIA GeForce RTX 4060 Laptop GPU", 8188 * MIB, 7800 * MIB, (8, 9),
                        None, 8001)
    fake = FakeNvml([laptop])
    (gpu,), status = probe_nvidia(fake.module())
    assert status == "1 NVIDIA GPU"
    assert gpu.bandwidth is None
    assert (gpu.name, gpu.total_bytes, gpu.free_bytes) == (
        "NVIDIA GeForce RTX 4060 Laptop GPU", 8188 * MIB, 7800 * MIB)
    assert gpu.compute_capability == "8.9"
    assert fake.calls == ["init", "shutdown"]


def test_zero_gpus() -> None:
    fake = FakeNvml([])
    assert probe_nvidia(fake.module()) == ((), "NVIDIA driver loaded but it reports no GPUs")
    assert fake.calls == ["init", "shutdown"]


def test_a_lost_gpu_is_skipped_and_named() -> None:
    lost = FakeDevice("NVIDIA GeForce RTX 3090", 0, 0, (8, 6), 384, 9751, lost=True)
    fake = FakeNvml([RTX_3090, lost])
    gpus, status = probe_nvidia(fake.module())
    assert [g.index for g in gpus] == [0]
    assert status == "1 NVIDIA GPU (GPU 1 skipped: GPU is lost)"
    assert fake.calls == ["init", "shutdown"]


def test_dgx_spark_gb10_has_no_framebuffer_and_uses_system_ram() -> None:
    gb10 = FakeDevice("NVIDIA GB10", 0, 0, (12, 1), None, None, addressing_mode=2,
                      memory_supported=False)
    fake = FakeNvml([gb10], driver="580.95.05", cuda=13000)
    (gpu,), status = probe_nvidia(fake.module(), host_memory=lambda: (128 * GIB, 110 * GIB))
    assert status == "1 NVIDIA GPU"
    assert (gpu.total_bytes, gpu.free_bytes) == (128 * GIB, 110 * GIB)
    assert (gpu.unified, gpu.integrated, gpu.backend) == (True, True, "cuda")
    assert (gpu.cuda_version, gpu.compute_capability, gpu.bandwidth) == ("13.0", "12.1", None)
    assert gpu.notes == ("NVML reports no dedicated memory: the GPU uses system RAM",)


def test_grace_hopper_ats_with_its_own_hbm_stays_discrete() -> None:
    gh200 = FakeDevice("NVIDIA GH200 480GB", 97871 * MIB, 97000 * MIB, (9, 0), 6144, 2619,
                       addressing_mode=2)
    (gpu,), _ = probe_nvidia(FakeNvml([gh200]).module())
    assert (gpu.unified, gpu.total_bytes) == (False, 97871 * MIB)
    assert gpu.notes == ("can also address system RAM coherently (ATS)",)


def test_hmm_addressing_is_not_ats() -> None:
    hmm = FakeDevice("NVIDIA GeForce RTX 4090", 24564 * MIB, 23000 * MIB, (8, 9), 384, 10501,
                     addressing_mode=1)
    (gpu,), _ = probe_nvidia(FakeNvml([hmm]).module())
    assert (gpu.unified, gpu.notes) == (False, ())


def test_missing_pynvml_is_a_status(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    import qwencli.hardware.nvidia as nvidia_module

    monkeypatch.setattr(nvidia_module, "_LINUX_DRIVER", "/")  # as if the driver were loaded

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    assert probe_nvidia() == ((), "nvidia-ml-py is not installed, so NVIDIA GPUs were not probed")


def test_real_pynvml_on_this_machine_never_raises() -> None:
    gpus, status = probe_nvidia()
    assert isinstance(status, str) and status
    assert all(g.vendor == "nvidia" for g in gpus)


def test_unexpected_exception_inside_becomes_a_status() -> None:
    fake = FakeNvml([RTX_4090])
    mod = fake.module()

    def broken(h: int) -> Any:
        raise TypeError("binding changed its signature")

    mod.nvmlDeviceGetName = broken
    assert probe_nvidia(mod) == ((), "NVML error: binding changed its signature")
    assert fake.calls == ["init", "shutdown"]


def test_without_the_kernel_driver_nvml_is_not_even_imported(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path) -> None:
    import sys as system

    import qwencli.hardware.nvidia as nvidia_module

    monkeypatch.setattr(nvidia_module.sys, "platform", "linux")
    monkeypatch.setattr(nvidia_module, "_LINUX_DRIVER", str(tmp_path / "absent"))
    monkeypatch.delitem(system.modules, "pynvml", raising=False)
    assert nvidia_module.probe_nvidia() == ((), "NVIDIA driver not found (NVML library missing)")
    assert "pynvml" not in system.modules
