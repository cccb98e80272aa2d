"""`qwen hw` end to end: the real probe on this machine, what-if options, errors, output modes."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli.cli import app
from tests import ceilings

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def meminfo_bytes(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        if name == key:
            return int(value.split()[0]) * 1024
    raise KeyError(key)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="Linux /proc only")
def test_hw_json_agrees_with_proc_meminfo_and_nproc() -> None:
    result = run("hw", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1
    assert doc["memory"]["total_bytes"] == meminfo_bytes("MemTotal")
    available = meminfo_bytes("MemAvailable")
    assert abs(doc["memory"]["available_bytes"] - available) < 0.05 * available
    nproc = int(subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout)
    assert doc["cpu"]["logical_cores"] == nproc
    assert 1 <= doc["cpu"]["physical_cores"] <= nproc


def test_hw_json_carries_the_documented_keys() -> None:
    doc = json.loads(run("hw", "--json").stdout)
    for key in ("physical_cores", "logical_cores"):
        assert isinstance(doc["cpu"][key], int)
    for key in ("total_bytes", "available_bytes"):
        assert isinstance(doc["memory"][key], int)
    assert "limit_bytes" in doc["memory"]
    assert isinstance(doc["gpus"], list)
    assert isinstance(doc["budget"]["host_bytes"], int)
    assert isinstance(doc["budget"]["gpus"], list)
    assert set(doc["llama_cpp"]) >= {"version", "gpu_offload", "backend"}
    assert doc["llama_cpp"]["version"]  # llama-cpp-python is a dependency: it is installed


@pytest.mark.parametrize("name", ["desktop-rtx4090-64gb", "dual-rtx3090", "apple-m2-8gb",
                                  "apple-m3-max-64gb", "desktop-rx7900xtx", "vps-4gb",
                                  "raspberry-pi-5-8gb", "laptop-rtx4060-32gb"])
def test_every_bundled_machine_reports(name: str) -> None:
    result = run("hw", "--hardware", name, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == f"profile {name}"
    for gpu in doc["gpus"]:
        assert set(gpu) >= {"name", "vendor", "total_bytes", "free_bytes", "unified"}
    assert len(doc["budget"]["gpus"]) == len(doc["gpus"])


def test_gpu_box_budget_uses_free_memory_less_a_gib() -> None:
    doc = json.loads(run("hw", "--hardware", "dual-rtx3090", "--json").stdout)
    assert [g["vendor"] for g in doc["gpus"]] == ["nvidia", "nvidia"]
    for gpu, budget in zip(doc["gpus"], doc["budget"]["gpus"], strict=True):
        assert budget["bytes"] == gpu["free_bytes"] - 1024**3
        assert budget["usable"]


def test_apple_machine_is_one_unified_pool() -> None:
    doc = json.loads(run("hw", "--hardware", "apple-m2-8gb", "--json").stdout)
    (gpu,) = doc["gpus"]
    assert gpu["vendor"] == "apple" and gpu["unified"]
    assert gpu["working_set_bytes"] == int(8 * 1024**3 * 2 / 3)
    assert doc["budget"]["unified_pool"] is True
    assert doc["budget"]["gpus"][0]["bytes"] <= doc["budget"]["host_bytes"]


def test_whatif_options_replace_probed_values() -> None:
    doc = json.loads(run("hw", "--gpu", "RTX 4090", "--gpus", "2", "--ram", "64GB",
                         "--json").stdout)
    assert doc["memory"]["total_bytes"] == 64 * 1024**3
    assert [g["total_bytes"] for g in doc["gpus"]] == [24 * 1024**3] * 2
    assert doc["llama_cpp"]["backend"] == "cuda" and doc["llama_cpp"]["source"] == "assumed"
    assert "what-if" in doc["source"]
    doc = json.loads(run("hw", "--hardware", "desktop-rtx4090-64gb", "--cpu-only",
                         "--json").stdout)
    assert doc["gpus"] == [] and doc["budget"]["gpus"] == []


def test_plain_report_when_piped_has_no_escape_codes() -> None:
    result = run("hw", "--hardware", "desktop-rtx4090-64gb")
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout
    assert "Budget for models" in result.stdout and "RTX 4090" in result.stdout


def _on_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run `python -m qwencli ARGS` on a pseudo-terminal and return what it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "qwencli", *args], stdout=follower,
                            stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=ceilings.PROCESS_S)
    os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_terminal_is_coloured_unless_no_color() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    args = ["hw", "--hardware", "apple-m3-max-64gb"]
    assert "\x1b[" in _on_terminal(args, env)
    plain = _on_terminal(args, {**env, "NO_COLOR": "1"})
    assert "\x1b" not in plain and "Apple M3 Max" in plain


def test_bad_size_is_a_usage_error() -> None:
    result = run("hw", "--ram", "abc")
    assert result.exit_code == 2
    assert "'abc' is not a size" in result.stderr
    assert result.stdout == ""


def test_unknown_machine_lists_the_known_ones() -> None:
    result = run("hw", "--hardware", "cray-1")
    assert result.exit_code == 2
    assert "cray-1" in result.stderr and "apple-m2-8gb" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_user_machine_names_file_and_problem(isolated_state: Path) -> None:
    folder = isolated_state / "config" / "hardware"
    folder.mkdir(parents=True)
    (folder / "broken.toml").write_text('name = "broken"\nram = \n')
    result = run("hw", "--hardware", "broken")
    assert result.exit_code == 1
    assert "broken.toml" in result.stderr and "line 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # the error and perhaps a hint


def test_unknown_gpu_suggests_nearest() -> None:
    result = run("hw", "--gpu", "RTX 4095")
    assert result.exit_code == 2
    assert "RTX 4090" in result.stderr


def test_conflicting_options_are_usage_errors() -> None:
    result = run("hw", "--cpu-only", "--gpu", "RTX 4090")
    assert result.exit_code == 2


def test_unexpected_error_is_one_line_unless_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    from qwencli.hardware import probe

    def broken() -> None:
        raise RuntimeError("sensor on fire")

    monkeypatch.setattr(probe, "probe", broken)
    result = run("hw")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unexpected RuntimeError: sensor on fire\n")
    assert "Traceback" not in result.stderr
    monkeypatch.setenv("QWEN_DEBUG", "1")
    result = run("hw")
    assert isinstance(result.exception, RuntimeError)


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    from qwencli.hardware import probe

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(probe, "probe", interrupted)
    assert run("hw").exit_code == 130


def test_version_and_module_entry_point() -> None:
    from qwencli import __version__

    assert run("--version").stdout == f"qwen {__version__}\n"
    result = subprocess.run([sys.executable, "-m", "qwencli", "--version"],
                            capture_output=True, text=True, timeout=ceilings.PROCESS_S)
    assert result.returncode == 0 and result.stdout == f"qwen {__version__}\n"


def test_no_command_shows_help_and_unknown_command_is_usage_error() -> None:
    assert "Usage" in run().stdout + run().stderr
    assert run("frobnicate").exit_code == 2
