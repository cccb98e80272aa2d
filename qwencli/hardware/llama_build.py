"""What the installed llama-cpp-python was compiled with, and what it can offload to.

`import llama_cpp` pulls in numpy and jinja2 and costs a few hundred milliseconds, so the probe
loads the package's shared libraries directly with ctypes and asks llama.cpp itself:
`llama_supports_gpu_offload()`, the registered ggml backends (their names say how it was built:
CUDA, ROCm, MTL, Vulkan, SYCL...) and `llama_print_system_info()` for the CPU features compiled in.
The answer depends only on the installed files, so it is cached keyed by the library's path, size
and mtime. The cache file is outside data: an entry whose fields are not what the probe writes
(a known backend name, a boolean, short lists of short names) is a miss, probed and rewritten.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from qwencli.fileio import atomic_write
from qwencli.hardware.model import LlamaCppBuild

# ggml backend registry names -> our backend names (vendor/llama.cpp/ggml/include/ggml-*.h).
_REGISTRY_BACKENDS = {
    "CUDA": "cuda",
    "ROCm": "hip",
    "MUSA": "musa",
    "MTL": "metal",
    "Metal": "metal",
    "Vulkan": "vulkan",
    "SYCL": "sycl",
    "CANN": "cann",
    "OpenCL": "opencl",
}

# The CMake switch for each backend, as llama-cpp-python's README documents them.
_CMAKE_ARGS = {
    "cuda": "-DGGML_CUDA=on",
    "metal": "-DGGML_METAL=on",
    "hip": "-DGGML_HIP=on",
    "vulkan": "-DGGML_VULKAN=on",
    "sycl": "-DGGML_SYCL=on -DCMAKE_C_COMPILER=icx -DCMAKE_CXX_COMPILER=icpx",
}


def reinstall_command(backend: str, python: str | None = None, *, rpc: bool = False) -> str:
    """The exact command that rebuilds llama-cpp-python for `backend` in this environment, with
    the RPC backend too when `rpc` (`qwen worker`, `--rpc`). `--no-cache-dir`: pip's wheel cache
    is keyed on the version, not on CMAKE_ARGS, so without it pip reinstalls the wheel it built
    before."""
    exe = shlex.quote(python or sys.executable)
    args = " ".join(part for part in ("-DGGML_RPC=on" if rpc else "",
                                      _CMAKE_ARGS.get(backend, "")) if part)
    prefix = "source /opt/intel/oneapi/setvars.sh && " if backend == "sycl" else ""
    return (f'{prefix}CMAKE_ARGS="{args}" {exe} -m pip install --force-reinstall '
            f"--no-cache-dir llama-cpp-python")


def parse_system_info(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split `llama_print_system_info()` into (backend names, CPU features set to 1).

    The text looks like "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | ... | CUDA : ARCHS = 890 | ...".
    """
    backends: list[str] = []
    features: list[str] = []
    current = None
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        match = re.match(r"^(\w[\w-]*)\s*:\s*(.*)$", part)
        if match:
            current = match.group(1)
            backends.append(current)
            part = match.group(2)
        if current == "CPU" and "=" in part:
            name, value = (s.strip() for s in part.split("=", 1))
            if value == "1":
                features.append(name.lower())
    return tuple(backends), tuple(features)


def backend_from_registry(names: tuple[str, ...]) -> str:
    """The GPU backend among the registered ggml backends, "cpu" when there is none."""
    for name in names:
        if name in _REGISTRY_BACKENDS:
            return _REGISTRY_BACKENDS[name]
    return "cpu"


def package_lib_dir() -> Path | None:
    """The installed llama-cpp-python's folder of shared libraries (None: not installed)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "lib"


def library_file(lib_dir: Path, base: str) -> Path | None:
    """lib`base`.so / .dylib / .dll in `lib_dir`, whichever this platform built."""
    for name in (f"lib{base}.so", f"lib{base}.dylib", f"{base}.dll", f"lib{base}.dll"):
        if (lib_dir / name).exists():
            return lib_dir / name
    return None


def _query_libraries(lib_dir: Path) -> tuple[bool, tuple[str, ...], tuple[str, ...], bool]:
    """Load libllama (and libggml for the registry) and ask: offload?, backends, CPU features,
    RPC?"""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import os

        os.add_dll_directory(str(lib_dir))
    llama_path = library_file(lib_dir, "llama")
    if llama_path is None:
        raise OSError(f"no llama library in {lib_dir}")
    llama = ctypes.CDLL(str(llama_path))
    llama.llama_supports_gpu_offload.restype = ctypes.c_bool
    llama.llama_print_system_info.restype = ctypes.c_char_p
    offload = bool(llama.llama_supports_gpu_offload())
    rpc = False
    if hasattr(llama, "llama_supports_rpc"):
        llama.llama_supports_rpc.restype = ctypes.c_bool
        rpc = bool(llama.llama_supports_rpc())
    info = (llama.llama_print_system_info() or b"").decode("utf-8", "replace")
    info_backends, cpu_features = parse_system_info(info)
    registry: list[str] = []
    ggml_path = library_file(lib_dir, "ggml")
    if ggml_path is not None:
        ggml = ctypes.CDLL(str(ggml_path))
        ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
        ggml.ggml_backend_reg_get.restype = ctypes.c_void_p
        ggml.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
        ggml.ggml_backend_reg_name.restype = ctypes.c_char_p
        ggml.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
        for index in range(ggml.ggml_backend_reg_count()):
            name = ggml.ggml_backend_reg_name(ggml.ggml_backend_reg_get(index))
            registry.append((name or b"?").decode("utf-8", "replace"))
    return offload, tuple(dict.fromkeys([*registry, *info_backends])), cpu_features, rpc


_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def _installed_version() -> str | None:
    """llama-cpp-python's version, read from its `__init__.py` without importing it (that
    pulls in numpy and jinja2) or importlib.metadata (tens of ms at every start-up)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    try:
        with open(spec.origin, encoding="utf-8") as source:
            match = _VERSION_LINE.search(source.read(1 << 16))
    except (OSError, UnicodeDecodeError):
        return None
    return match.group(1) if match else None


def probe_llama_build(cache_file: Path | None = None) -> LlamaCppBuild:
    """Describe the installed llama-cpp-python build; never raises."""
    version = _installed_version()
    lib_dir = package_lib_dir()
    if lib_dir is None:
        return LlamaCppBuild(installed=False, version=version, gpu_offload=False,
                             backend="cpu", error="llama-cpp-python is not installed")
    llama_path = library_file(lib_dir, "llama")
    key = None
    if llama_path is not None:
        stat = llama_path.stat()
        key = f"{llama_path}:{stat.st_size}:{stat.st_mtime_ns}:{version}"
        cached = _read_cache(cache_file, key, version)
        if cached is not None:
            return cached
    try:
        offload, backends, cpu_features, rpc = _query_libraries(lib_dir)
    except (OSError, AttributeError) as exc:
        return LlamaCppBuild(installed=True, version=version, gpu_offload=False,
                             backend="unknown", error=f"could not load llama.cpp: {exc}")
    backend = backend_from_registry(backends)
    # llama.cpp says "offload" for any non-CPU device, the RPC client included: a CPU build
    # with RPC compiled in cannot offload to a GPU of this machine.
    build = LlamaCppBuild(installed=True, version=version,
                          gpu_offload=offload and backend != "cpu", backend=backend,
                          cpu_features=cpu_features, backends=backends, rpc=rpc)
    _write_cache(cache_file, key, build)
    return build


_CACHED_BACKENDS = frozenset({"cpu", *_REGISTRY_BACKENDS.values()})
_NAME = re.compile(r"^[\w.+\-?() ]{1,64}$")  # "CUDA", "avx512_vnni", "?" for a nameless one
_MAX_NAMES = 64


def _names(value: Any) -> tuple[str, ...] | None:
    """A cached list of backend or feature names, or None when it is not one."""
    if not isinstance(value, list) or len(value) > _MAX_NAMES:
        return None
    if not all(isinstance(v, str) and _NAME.match(v) for v in value):
        return None
    return tuple(value)


def cache_entry(data: Any, key: str, version: str | None) -> LlamaCppBuild | None:
    """The build a cache entry describes for this library and version; None when it is for
    another one or any field is not what `_write_cache` writes (the caller probes again)."""
    if not isinstance(data, dict) or data.get("key") != key or data.get("version") != version:
        return None
    offload, backend = data.get("gpu_offload"), data.get("backend")
    features, backends = _names(data.get("cpu_features")), _names(data.get("backends"))
    rpc = data.get("rpc")
    if not isinstance(offload, bool) or backend not in _CACHED_BACKENDS or features is None \
            or backends is None or not isinstance(rpc, bool):
        return None
    return LlamaCppBuild(installed=True, version=version, gpu_offload=offload, backend=backend,
                         cpu_features=features, backends=backends, rpc=rpc)


def _read_cache(cache_file: Path | None, key: str, version: str | None) -> LlamaCppBuild | None:
    if cache_file is None:
        return None
    try:
        return cache_entry(json.loads(cache_file.read_text()), key, version)
    except (OSError, ValueError, RecursionError):
        return None


def _write_cache(cache_file: Path | None, key: str | None, build: LlamaCppBuild) -> None:
    if cache_file is None or key is None:
        return
    with contextlib.suppress(OSError):
        atomic_write(cache_file, json.dumps({
            "key": key, "version": build.version, "gpu_offload": build.gpu_offload,
            "backend": build.backend, "cpu_features": list(build.cpu_features),
            "backends": list(build.backends), "rpc": build.rpc,
        }))
