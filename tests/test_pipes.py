"""A reader that goes away (`| head -c 5`, `| grep -q`, `less` quitting) stops a command quietly:
nothing on stderr, exit 141 (what a Unix tool killed by SIGPIPE reports), and a streaming answer
stops being generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwencli.errors import EXIT_PIPE
from tests import ceilings
from tests.gguf_fixtures import qwen3_tokenizer, write_qwen_gguf


def _into_a_reader_that_leaves(args: list[str], *, read: int, env: dict[str, str] | None = None
                               ) -> tuple[int, bytes, bytes]:
    """Run `python -m qwencli ARGS | head -c READ`: read that many bytes of stdout (0: the
    reader is gone before the first byte), close the pipe, and return (exit code, what was
    read, stderr)."""
    reader, writer = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "qwencli", *args], stdout=writer,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env={**os.environ, **(env or {})})
    os.close(writer)
    got = b""
    with os.fdopen(reader, "rb", buffering=0) as pipe:
        while len(got) < read:
            chunk = pipe.read(read - len(got))
            if not chunk:
                break
            got += chunk
    # the read end is closed now: every later write of the process meets a broken pipe
    _out, err = process.communicate(timeout=ceilings.PROCESS_S)
    return process.returncode, got, err


@pytest.mark.parametrize("args", [["models"], ["recommend", "--json"], ["hw"],
                                  ["list", "--json"], ["config", "path"], ["--version"]])
def test_a_reader_gone_before_the_output_is_a_quiet_exit(args: list[str]) -> None:
    code, _got, err = _into_a_reader_that_leaves(args, read=0)
    assert (code, err) == (EXIT_PIPE, b"")


def test_a_long_answer_into_head_stops_quietly(tmp_path: Path) -> None:
    model = write_qwen_gguf(tmp_path / "tiny-qwen3.gguf", tokenizer=qwen3_tokenizer(),
                            vocab=151_936, ctx=4096)
    cache = tmp_path / "cache"
    code, got, err = _into_a_reader_that_leaves(
        ["chat", "-m", str(model), "--threads", "1", "--seed", "1", "--no-think",
         "Write a very long story."], read=5, env={"QWEN_CACHE_DIR": str(cache)})
    assert len(got) == 5  # the answer was streaming when the reader left
    assert (code, err) == (EXIT_PIPE, b"")
