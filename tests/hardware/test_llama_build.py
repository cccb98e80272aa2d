"""The installed llama.cpp build, asked through its own libraries."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qwencli.hardware import llama_build
from qwencli.hardware.llama_build import (
    backend_from_registry,
    parse_system_info,
    probe_llama_build,
    reinstall_command,
)

CPU_INFO = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
            "AVX512 = 0 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
CUDA_INFO = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | " + CPU_INFO


def test_system_info_gives_backends_and_enabled_cpu_features() -> None:
    backends, features = parse_system_info(CUDA_INFO)
    assert backends == ("CUDA", "CPU")
    assert features == ("sse3", "ssse3", "avx", "avx2", "f16c", "fma", "llamafile", "openmp",
                        "repack")


def test_backend_from_registry_names() -> None:
    assert backend_from_registry(("CUDA", "CPU")) == "cuda"
    assert backend_from_registry(("ROCm", "CPU")) == "hip"
    assert backend_from_registry(("MTL", "BLAS", "CPU")) == "metal"
    assert backend_from_registry(("Vulkan", "CPU")) == "vulkan"
    assert backend_from_registry(("CPU",)) == "cpu"


def test_reinstall_command_is_exact_for_this_interpreter() -> None:
    command = reinstall_command("cuda", python="/opt/venv/bin/python")
    assert command == ('CMAKE_ARGS="-DGGML_CUDA=on" /opt/venv/bin/python -m pip install '
                       "--force-reinstall --no-cache-dir llama-cpp-python")
    assert "-DGGML_METAL=on" in reinstall_command("metal")
    assert "-DGGML_HIP=on" in reinstall_command("hip")
    assert "-DGGML_VULKAN=on" in reinstall_command("vulkan")
    assert reinstall_command("sycl").startswith("source /opt/intel/oneapi/setvars.sh && ")
    assert sys.executable in reinstall_command("cuda")


def test_real_installed_build_is_probed_and_cached(tmp_path: Path) -> None:
    cache = tmp_path / "llama_build.json"
    build = probe_llama_build(cache)
    assert build.installed and build.version
    assert "CPU" in build.backends
    # This machine's wheel is compiled from source without GPU backends.
    assert build.backend == "cpu" and build.gpu_offload is False
    assert "avx2" in build.cpu_features or "neon" in build.cpu_features or build.cpu_features
    cached = json.loads(cache.read_text())
    assert cached["backend"] == "cpu"
    # A cached answer is used without loading the libraries again.
    cached["backend"] = "cuda"
    cache.write_text(json.dumps(cached))
    assert probe_llama_build(cache).backend == "cuda"


def test_missing_package_is_reported_not_raised(monkeypatch) -> None:
    monkeypatch.setattr(llama_build, "package_lib_dir", lambda: None)
    build = probe_llama_build(None)
    assert not build.installed
    assert build.error == "llama-cpp-python is not installed"


def test_unloadable_library_is_reported_not_raised(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "libllama.so").write_bytes(b"not a library")
    (tmp_path / "llama.dll").write_bytes(b"not a library")
    monkeypatch.setattr(llama_build, "package_lib_dir", lambda: tmp_path)
    build = probe_llama_build(None)
    assert build.installed and build.backend == "unknown"
    assert build.error and build.error.startswith("could not load llama.cpp")
