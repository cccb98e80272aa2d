"""What the tests that run `qwen chat` as a process share: the tiny model they chat with, the
markers they wait for, and the environment of a plain terminal."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.gguf_fixtures import qwen3_tokenizer, write_qwen_gguf

PROMPT = ">>> "
STATUS = re.compile(r"\[tiny-qwen3\.gguf \(F32\) · context ([\d,]+)/([\d,]+)[^\]]*\]")


def write_tiny_qwen3(folder: Path) -> Path:
    """A Qwen3-shaped model with the real tokenizer and chat template (random weights)."""
    return write_qwen_gguf(folder / "tiny-qwen3.gguf", tokenizer=qwen3_tokenizer(),
                           vocab=151_936, ctx=4096)


def terminal_env(cache: Path, **extra: str) -> dict[str, str]:
    """This environment on a plain terminal (no colour), with a cache shared by a module's
    chats so that the RAM bandwidth is measured once."""
    return {**os.environ, "QWEN_CACHE_DIR": str(cache), "TERM": "dumb", "NO_COLOR": "1",
            **extra}
