"""Shared fixtures: every test runs with its own config, cache and HF directories, no colour."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import ceilings

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def sigint_reaches_started_processes() -> Iterator[None]:
    """Processes the tests start get SIGINT as a terminal gives it, however pytest was started.

    A shell without job control starts `pytest &` (a script, some CI runners, `nohup`) with
    SIGINT ignored, and an ignored signal stays ignored through fork and exec: every `qwen` a
    test starts would ignore the Ctrl-C the test sends it (no KeyboardInterrupt, the pull or the
    prompt goes on), and the test would wait in vain. A handled signal is reset to the default
    on exec, so handling it here gives the children the default."""
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, before)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every state directory at a temp folder and turn colour off."""
    state = tmp_path / "state"
    monkeypatch.setenv("QWEN_CONFIG_DIR", str(state / "config"))
    monkeypatch.setenv("QWEN_CACHE_DIR", str(state / "cache"))
    monkeypatch.setenv("QWEN_DATA_DIR", str(state / "data"))  # the conversation log
    monkeypatch.setenv("HF_HOME", str(state / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    # A transfer that the test Hub holds (a `pause_at` fault) must wait for the test, however
    # long: with the default 10 s read timeout a busy machine lets the client give up, retry
    # from the last byte and finish the file before the test's signal. Processes the tests
    # start inherit these.
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", str(ceilings.HTTP_S))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", str(ceilings.HTTP_S))
    for var in ("QWEN_DEBUG", "QWEN_MODEL", "QWEN_API_KEY", "HF_TOKEN", "HF_ENDPOINT",
                "HF_HUB_OFFLINE",
                "HF_HUB_CACHE", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "FORCE_COLOR",
                "XDG_DATA_HOME", "QWEN_LOG_DB", "QWEN_NOLOG",
                # local test servers must be reached directly, whatever the machine's proxy says
                "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return state


@pytest.fixture
def data_dir() -> Path:
    """Recorded outputs (sysfs trees, sysctl text, ...) that parser tests read."""
    return DATA


@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3-shaped model with the real tokenizer and chat template, written once per
    test module (the chat, session, log and RPC tests start real `qwen chat` processes on it)."""
    from tests.chat_process import write_tiny_qwen3

    return write_tiny_qwen3(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder shared by a module's `qwen` processes, so that the RAM bandwidth is
    measured once per module."""
    return tmp_path_factory.mktemp("cache")
