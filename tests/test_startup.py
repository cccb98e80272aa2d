"""Start-up stays light: `qwen --help` must not import the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

from tests import ceilings

HEAVY = ("llama_cpp", "huggingface_hub", "gguf", "numpy", "psutil", "pynvml", "rich.table",
         "rich.progress", "starlette", "uvicorn", "anyio", "openai")

PROBE = """
import json, sys
sys.argv = ["qwen", *{args!r}]
from qwencli.cli import main
try:
    main()
except SystemExit:
    pass
sys.stdout.flush()
sys.__stderr__.write(json.dumps(sorted(sys.modules)))
"""


def _run(*args: str) -> tuple[set[str], str]:
    """Run the app in a fresh interpreter: the modules it imported, and its stdout."""
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=list(args))],
                            capture_output=True, text=True, timeout=ceilings.PROCESS_S, check=True)
    return set(json.loads(result.stderr.strip().splitlines()[-1])), result.stdout


def _modules_after(*args: str) -> set[str]:
    return _run(*args)[0]


def test_help_imports_none_of_the_heavy_libraries() -> None:
    loaded = _modules_after("--help")
    assert "qwencli.cli" in loaded  # the probe really ran the app
    assert not [name for name in HEAVY if name in loaded]


def test_version_imports_none_of_the_heavy_libraries() -> None:
    loaded = _modules_after("--version")
    assert not [name for name in HEAVY if name in loaded]


def test_hw_does_not_import_llama_cpp_python() -> None:
    # The build is asked through ctypes, without the package's numpy/jinja2 imports.
    loaded, stdout = _run("hw", "--json")
    assert json.loads(stdout)["cpu"]["logical_cores"] >= 1  # the probe really ran
    assert not {"llama_cpp", "numpy", "huggingface_hub", "gguf"} & loaded
