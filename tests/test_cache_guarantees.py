"""What the cache promises, through the command line, on hostile and damaged cache layouts built
with real files and links under the test's HF_HOME:

- `qwen rm` deletes only snapshot entries (a link itself, never its target) and files in the
  repository's own blobs/; it never follows a linked folder out of the cache.
- Foreign links, broken links and truncated files are listed as what they are, never as
  complete, and never handed to `qwen chat` through the cache; `qwen pull` fetches a damaged
  file again (offline it says the copy is damaged).
- One malformed cache file never breaks `qwen list` for the rest.
- A pull that fails before a byte arrives leaves nothing behind; one that got bytes keeps them.
- A repository's file names compare case-insensitively everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qwencli import store
from qwencli.cli import app
from tests import fake_hub
from tests.test_hub import payload, serve

COMMIT = "c" * 40
GOOD = b"GGUF a good stand-in model" + b"g" * 200  # not a valid GGUF: counts as complete


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_hub.FakeHub]:
    yield from serve(tmp_path, monkeypatch)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A user's folder outside the cache, with files that must survive everything."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def put(repo: str, path: str, data: bytes, commit: str = COMMIT) -> Path:
    """A complete file laid out as huggingface_hub lays it out; returns the snapshot link."""
    blob = hashlib.sha256(data).hexdigest()
    target = store.blob_path(repo, blob)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    link = store.link_snapshot(repo, commit, path, blob)
    store.write_ref(repo, "main", commit)
    return link


def snapshot(repo: str, commit: str = COMMIT) -> Path:
    folder = store.repo_dir(repo) / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def line_of(output: str, needle: str) -> str:
    [line] = [x for x in output.splitlines() if needle in x]
    return line


def listed() -> dict[tuple[str, str], dict]:
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    return {(m["repo"], m["files"][0] if m["files"] else ""): m
            for m in json.loads(result.stdout)["models"]}


def assert_good_model_untouched(link: Path) -> None:
    assert link.read_bytes() == GOOD
    assert listed()[("o/good", "g-Q4_K_M.gguf")]["complete"] is True


# --- (10) file names compare case-insensitively --------------------------------------------


def test_a_file_named_in_another_case_is_the_same_file_everywhere(fake) -> None:
    data = payload(4000)
    fake.add_file("acme/tiny-GGUF", "tiny-Q4_K_M.gguf", data)
    ref = "acme/tiny-GGUF/TINY-Q4_K_M.GGUF"
    pulled = run("pull", ref)
    assert pulled.exit_code == 0, pulled.output
    assert pulled.stdout.splitlines()[-1] == f"  next: qwen chat -m {ref}"
    path = store.snapshot_path("acme/tiny-GGUF", fake_hub.COMMIT, "tiny-Q4_K_M.gguf")
    assert store.find_model(ref) == path
    # `qwen chat -m` finds it (then fails on the stand-in's header: the path proves it was found)
    chat = run("chat", "-m", ref, "hi")
    assert chat.exit_code == 1
    assert chat.stderr.startswith(f"error: {path}: unsupported GGUF version")
    assert "not downloaded" not in chat.output
    again = run("pull", ref)
    assert again.stdout.splitlines()[0] == "Already downloaded: acme/tiny-GGUF Q4_K_M"
    removed = run("rm", ref, "--yes")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.splitlines()[0] == "Removed 1 download(s), 3.9 KiB freed"
    assert not os.path.lexists(path)
