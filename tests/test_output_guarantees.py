"""Output that survives the places it goes: a console without UTF-8, a full disk, a closed
stdout, JSON readers that reject Infinity; and options given empty are mistakes, not defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli import output
from qwencli.cli import app
from tests import ceilings
from tests.gguf_fixtures import write_qwen_gguf


def qwen(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run([sys.executable, "-m", "qwencli", *args],
                          env={**os.environ, **(env or {})}, timeout=ceilings.PROCESS_S, **streams)


def test_a_console_without_utf8_gets_escapes_not_an_error(tmp_path: Path) -> None:
    model = write_qwen_gguf(tmp_path / "模型-Q8_0.gguf")
    plain = qwen("fit", str(model), env={"PYTHONIOENCODING": "cp1252"})
    assert plain.returncode == 0, plain.stderr
    assert "\\u6a21\\u578b-Q8_0.gguf" in plain.stdout.decode("cp1252")
    as_json = qwen("fit", str(model), "--json", env={"PYTHONIOENCODING": "cp1252"})
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout.isascii()  # valid in any encoding, and nothing lost:
    assert json.loads(as_json.stdout)["file"] == str(model)


def test_json_never_carries_infinity() -> None:
    result = CliRunner().invoke(app, ["recommend", "--min-speed", "inf", "--json"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: --min-speed must be a finite number, not inf"
    written = []

    class Stream:
        encoding = "utf-8"

        def write(self, text: str) -> None:
            written.append(text)

        def flush(self) -> None:
            pass

    output.print_json({"speed": float("inf"), "nested": [float("nan"), 1.5]}, Stream())
    assert json.loads("".join(written)) == {"schema_version": 1, "speed": None,
                                            "nested": [None, 1.5]}


def test_a_full_disk_on_stdout_is_one_line_and_exit_1() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")  # Linux has it; CI runs on Linux
    with open("/dev/full", "w") as full:
        result = qwen("hw", "--json", stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "error: cannot write the output: No space left on device"]


def test_a_closed_stdout_is_one_line_and_exit_1() -> None:
    result = subprocess.run([sys.executable, "-m", "qwencli", "models"], stderr=subprocess.PIPE,
                            timeout=ceilings.PROCESS_S, preexec_fn=lambda: os.close(1))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "error: cannot write the output: stdout is closed"]


@pytest.mark.parametrize(("args", "message"), [
    (["pull", "o/r", "--quant", ""], "error: --quant is empty"),
    (["fit", "qwen3-8b", "--hardware", ""], "error: --hardware is empty; give a name"),
    (["recommend", "--hardware", " "], "error: --hardware is empty; give a name"),
    (["chat", "-m", "", "hi"], "error: MODEL is empty"),
])
def test_an_option_given_empty_is_a_usage_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines()[0].startswith(message)


def test_a_cpu_build_with_the_rpc_backend_does_not_offload(monkeypatch, tmp_path) -> None:
    from qwencli.hardware import llama_build

    monkeypatch.setattr(llama_build, "_query_libraries",
                        lambda lib_dir: (True, ("CPU", "RPC"), ("avx2",), True))
    build = llama_build.probe_llama_build(tmp_path / "cache.json")
    assert (build.gpu_offload, build.backend) == (False, "cpu")
    monkeypatch.setattr(llama_build, "_query_libraries",
                        lambda lib_dir: (True, ("CUDA", "CPU", "RPC"), ("avx2",), True))
    assert llama_build.probe_llama_build(tmp_path / "other.json").gpu_offload


def test_a_repository_with_many_matches_names_a_few(tmp_path, monkeypatch) -> None:
    from qwencli import hub
    from tests.test_hub import serve

    for served in serve(tmp_path, monkeypatch):
        served.add_file("o/r", "m-Q4_K_M.gguf", b"GGUF0")
        for n in range(1, 1500):
            served.add_file("o/r", f"v{n:04d}/m-Q4_K_M.gguf", b"GGUF1")
        plan = hub.resolve_pull("o/r:Q4_K_M")
        [warning] = plan.warnings
        assert len(warning) < 300 and warning.endswith(
            "v0001/m-Q4_K_M.gguf, v0002/m-Q4_K_M.gguf, v0003/m-Q4_K_M.gguf and 1,496 more; "
            "name one as o/r/FILE to choose)")
