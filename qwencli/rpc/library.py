"""ctypes bindings to llama.cpp's RPC backend in the installed llama-cpp-python.

Signatures are those of ggml-rpc.h and ggml-backend.h in the llama.cpp that llama-cpp-python
0.3.36 vendors (RPC protocol 7.0.0):

    void ggml_backend_rpc_start_server(const char * endpoint, const char * cache_dir,
                                       size_t n_threads, size_t n_devices,
                                       ggml_backend_dev_t * devices);
    ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint);
    void ggml_backend_rpc_get_device_memory(const char * endpoint, uint32_t device,
                                            size_t * free, size_t * total);
    ggml_abort_callback_t ggml_set_abort_callback(ggml_abort_callback_t callback);

llama.cpp's RPC client has no timeouts and calls abort() when a worker cannot be reached or
stops answering (`GGML_ABORT("Failed to connect to ...")`, `RPC_STATUS_ASSERT`): callers
check a worker with `protocol.probe` before anything here talks to it, and `runtime` installs
an abort callback while workers are in use.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwencli.errors import QwenError

# enum ggml_backend_dev_type (ggml-backend.h)
DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}



class RpcUnavailable(QwenError):
    """The installed llama-cpp-python was built without the RPC backend."""


@dataclass(frozen=True)
class Device:
    """One ggml device (a local one, or one a worker serves)."""

    pointer: int  # ggml_backend_dev_t
    name: str  # "CPU", "CUDA0", "RPC0", ...
    description: str
    kind: str  # DEVICE_TYPES' values
    free_bytes: int
    total_bytes: int
    registry: str  # the backend's name: "CPU", "CUDA", "RPC[host:port]", ...


def rpc_library_path() -> Path | None:
    """libggml-rpc of the installed llama-cpp-python (None: built without RPC)."""
    from qwencli.hardware.llama_build import library_file, package_lib_dir

    lib_dir = package_lib_dir()
    return library_file(lib_dir, "ggml-rpc") if lib_dir is not None else None


def reinstall_hint() -> str:
    from qwencli.hardware.llama_build import probe_llama_build, reinstall_command

    backend = probe_llama_build().backend
    return f"rebuild it with RPC: {reinstall_command(backend, rpc=True)}"


@functools.cache
def _libraries() -> tuple[Any, Any]:
    """(libggml, libggml-rpc), loaded the way llama-cpp-python loads them and typed once."""
    import ctypes

    path = rpc_library_path()
    if path is None:
        raise RpcUnavailable("the installed llama-cpp-python was built without RPC "
                             "(llama.cpp's -DGGML_RPC=on)", hint=reinstall_hint())
    from llama_cpp import _ggml  # loads libggml (and its backends) as llama_cpp does

    ggml = _ggml.libggml
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import os

        os.add_dll_directory(str(path.parent))
    rpc = ctypes.CDLL(str(path))
    size_p = ctypes.POINTER(ctypes.c_size_t)
    for lib, name, argtypes, restype in (
        (rpc, "ggml_backend_rpc_add_server", [ctypes.c_char_p], ctypes.c_void_p),
        (rpc, "ggml_backend_rpc_get_device_memory",
         [ctypes.c_char_p, ctypes.c_uint32, size_p, size_p], None),
        (rpc, "ggml_backend_rpc_start_server",
         [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
          ctypes.POINTER(ctypes.c_void_p)], None),
        (ggml, "ggml_backend_reg_dev_count", [ctypes.c_void_p], ctypes.c_size_t),
        (ggml, "ggml_backend_reg_dev_get", [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_void_p),
        (ggml, "ggml_backend_reg_name", [ctypes.c_void_p], ctypes.c_char_p),
        (ggml, "ggml_backend_dev_count", [], ctypes.c_size_t),
        (ggml, "ggml_backend_dev_get", [ctypes.c_size_t], ctypes.c_void_p),
        (ggml, "ggml_backend_dev_name", [ctypes.c_void_p], ctypes.c_char_p),
        (ggml, "ggml_backend_dev_description", [ctypes.c_void_p], ctypes.c_char_p),
        (ggml, "ggml_backend_dev_memory", [ctypes.c_void_p, size_p, size_p], None),
        (ggml, "ggml_backend_dev_type", [ctypes.c_void_p], ctypes.c_int),
        (ggml, "ggml_backend_dev_backend_reg", [ctypes.c_void_p], ctypes.c_void_p),
        (ggml, "ggml_set_abort_callback", [abort_callback_type()], ctypes.c_void_p),
    ):
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype
    return ggml, rpc


def supports_rpc() -> bool:
    """Whether the installed llama-cpp-python can use RPC (llama.cpp's own answer, and the
    library being there to bind to)."""
    if rpc_library_path() is None:
        return False
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_rpc())
    except (ImportError, AttributeError, OSError):
        return False


@functools.cache
def abort_callback_type() -> Any:
    """ggml_abort_callback_t: void (*)(const char * error_message)."""
    import ctypes

    return ctypes.CFUNCTYPE(None, ctypes.c_char_p)


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


def describe(pointer: int) -> Device:
    """A device's name, kind and memory (for a worker's device: asks the worker)."""
    import ctypes

    ggml, _ = _libraries()
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    ggml.ggml_backend_dev_memory(pointer, ctypes.byref(free), ctypes.byref(total))
    reg = ggml.ggml_backend_dev_backend_reg(pointer)
    return Device(pointer=pointer, name=_text(ggml.ggml_backend_dev_name(pointer)),
                  description=_text(ggml.ggml_backend_dev_description(pointer)),
                  kind=DEVICE_TYPES.get(ggml.ggml_backend_dev_type(pointer), "unknown"),
                  free_bytes=free.value, total_bytes=total.value,
                  registry=_text(ggml.ggml_backend_reg_name(reg)) if reg else "")


def local_devices() -> tuple[Device, ...]:
    """This process's ggml devices (the CPU, its GPUs), in llama.cpp's registry order."""
    ggml, _ = _libraries()
    return tuple(describe(ggml.ggml_backend_dev_get(i))
                 for i in range(ggml.ggml_backend_dev_count()))


def add_server(endpoint: str) -> tuple[int, ...]:
    """Register a worker's devices with llama.cpp (once per endpoint and process) and return
    them in the worker's order. Blocks and may abort on an unresponsive worker: probe first."""
    ggml, rpc = _libraries()
    reg = rpc.ggml_backend_rpc_add_server(endpoint.encode("ascii"))
    if not reg:
        raise QwenError(f"worker {endpoint} serves no devices")
    return tuple(ggml.ggml_backend_reg_dev_get(reg, i)
                 for i in range(ggml.ggml_backend_reg_dev_count(reg)))


def device_memory(endpoint: str, device: int) -> tuple[int, int]:
    """(free, total) bytes of a worker's device, as the worker's backend reports them."""
    import ctypes

    _, rpc = _libraries()
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    rpc.ggml_backend_rpc_get_device_memory(endpoint.encode("ascii"), device,
                                           ctypes.byref(free), ctypes.byref(total))
    return free.value, total.value


def start_server(endpoint: str, cache_dir: str | None, n_threads: int,
                 devices: tuple[int, ...]) -> None:
    """Serve `devices` on `endpoint` ("IPv4:port"). Returns only when the server could not
    start (llama.cpp writes why to stderr); run it in a thread."""
    import ctypes

    _, rpc = _libraries()
    array = (ctypes.c_void_p * len(devices))(*devices)
    rpc.ggml_backend_rpc_start_server(endpoint.encode("ascii"),
                                      cache_dir.encode() if cache_dir else None,
                                      n_threads, len(devices), array)


def set_abort_callback(callback: Any) -> None:
    """ggml calls `callback` (made with `abort_callback_type()`) with its message before
    abort(); None restores ggml's own message and backtrace."""
    ggml, _ = _libraries()
    ggml.ggml_set_abort_callback(callback if callback is not None else abort_callback_type()())
