"""What a hostile or broken network and environment cannot do to `qwen pull` and `qwen fit`:
loop forever, retry without end, or pass a local mistake off as a network failure."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli import hub
from qwencli.cli import app
from tests import ceilings, fake_hub
from tests.test_hub import payload, serve


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_hub.FakeHub]:
    yield from serve(tmp_path, monkeypatch)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_listing_larger_than_the_file_is_a_size_mismatch_not_a_loop(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    listed = hub.repo_listing

    def inflated(repo: str, revision: str | None = None) -> hub.Listing:
        listing = listed(repo, revision)
        return replace(listing, files=tuple(replace(f, size=1500) for f in listing.files))

    monkeypatch.setattr(hub, "repo_listing", inflated)
    result = run("pull", "o/r")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "error: m-Q4_K_M.gguf: the server sends 1,000 bytes but the Hub's listing says 1,500; "
        "not downloading a file that cannot match its listing")
    assert len(fake.ranges("m-Q4_K_M.gguf")) <= 3  # not thousands


def test_a_server_that_ignores_range_and_sends_too_little_gives_up(fake, monkeypatch) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    fake.ignore_range = True
    listed = hub.repo_listing
    monkeypatch.setattr(hub, "repo_listing", lambda repo, revision=None: replace(
        listed(repo, revision), files=tuple(replace(f, size=1500)
                                            for f in listed(repo, revision).files)))
    result = run("pull", "o/r")
    assert result.exit_code == 1
    assert "the Hub's listing says 1,500" in result.stderr
    assert len(fake.ranges("m-Q4_K_M.gguf")) <= 8


@pytest.fixture
def hangs_up() -> Iterator[tuple[str, list[int]]]:
    """An endpoint that accepts every connection and closes it at once; counts them."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[int] = []
    stop = threading.Event()

    def serve_forever() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _address = server.accept()
            except OSError:
                continue
            accepted.append(1)
            connection.close()

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join(5)
    server.close()


def test_an_unreachable_endpoint_is_said_once_without_a_retry_storm(hangs_up,
                                                                    monkeypatch) -> None:
    url, accepted = hangs_up
    monkeypatch.setenv("HF_ENDPOINT", url)
    result = run("pull", "o/r")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: cannot reach {url} for o/r")
    assert len(lines) == 2 and lines[1].startswith("hint: check the network")
    assert "Retrying" not in result.stderr
    assert len(accepted) <= 2  # one listing request (and at most one hint lookup)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("HF_HUB_DOWNLOAD_TIMEOUT", "abc",
     "error: HF_HUB_DOWNLOAD_TIMEOUT='abc' is not a whole number of seconds (1 to 86400)"),
    ("HF_HUB_DOWNLOAD_TIMEOUT", "-1",
     "error: HF_HUB_DOWNLOAD_TIMEOUT='-1' is not a whole number of seconds (1 to 86400)"),
    ("HF_HUB_ETAG_TIMEOUT", "1.5",
     "error: HF_HUB_ETAG_TIMEOUT='1.5' is not a whole number of seconds (1 to 86400)"),
    ("HF_ENDPOINT", "ftp://mirror", "error: HF_ENDPOINT='ftp://mirror' is not an http(s) "
                                    "address"),
])
def test_a_bad_variable_is_named_not_blamed_on_the_network(fake, monkeypatch, variable, value,
                                                           message) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    monkeypatch.setenv(variable, value)
    for args in (["pull", "o/r"], ["fit", "o/r:Q4_K_M"]):
        result = run(*args)
        assert result.exit_code == 1, result.stderr
        assert result.stderr.splitlines()[0] == message
        assert "cannot reach" not in result.stderr and "Traceback" not in result.stderr


def test_hf_home_that_is_a_file_is_named(fake, monkeypatch, tmp_path) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    home = tmp_path / "not-a-folder"
    home.write_text("x")
    monkeypatch.setenv("HF_HOME", str(home))
    result = run("pull", "o/r")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"error: HF_HOME='{home}' is a file, not a folder"
    assert home.read_text() == "x"


def test_a_cache_that_cannot_be_created_is_not_a_disk_space_problem(fake, monkeypatch,
                                                                    tmp_path) -> None:
    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(1000))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")  # HF_HUB_CACHE below a file: mkdir fails with ENOTDIR
    monkeypatch.setenv("HF_HUB_CACHE", str(blocker / "hub"))
    result = run("pull", "o/r")
    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: cannot create the download folder in {blocker / 'hub'}")
    assert first.endswith("part of that path is a file, not a folder")
    assert "disk space" not in result.stderr and "cannot reach" not in result.stderr


def test_no_color_on_a_terminal_gives_progress_without_escape_codes(fake) -> None:
    import io
    import os
    import sys

    import pexpect

    from tests.test_cli_hub import LAUNCH

    fake.add_file("o/r", "m-Q4_K_M.gguf", payload(3 * 1024 * 1024))
    seen = io.StringIO()
    child = pexpect.spawn(sys.executable, ["-c", LAUNCH, "pull", "o/r"],
                          env={**os.environ, "NO_COLOR": "1"}, encoding="utf-8",
                          timeout=ceilings.PROCESS_S, dimensions=(24, 120))
    child.logfile_read = seen
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    screen = seen.getvalue()
    assert "m-Q4_K_M.gguf: 100.0%" in screen  # progress was shown, as plain lines
    assert "\x1b[" not in screen
