"""Record what the engine is asked: a hook for tests that check what `qwen chat` sent the model.

`argv(...)` runs `qwen` in a fresh interpreter with one hook installed: every call of the real
`Engine.generate` first appends one JSON line to the file named by $QWEN_TEST_PROMPTS, holding
the rendered prompt text (the whole conversation as the model sees it) and the sampling seed.
Everything else is the product's own path: the real engine answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

_HOOK = """
import json, os, sys
from qwencli.chat import engine as _engine

_generate = _engine.Engine.generate

def _spy(self, prompt, sampling, should_stop=None):
    with open(os.environ["QWEN_TEST_PROMPTS"], "a", encoding="utf-8") as record:
        record.write(json.dumps({"text": prompt.text, "seed": sampling.seed}) + "\\n")
    return _generate(self, prompt, sampling, should_stop)

_engine.Engine.generate = _spy
sys.argv[0] = "qwen"
from qwencli.cli import main
main()
"""


def argv(*args: str) -> list[str]:
    """The command line of `qwen ARGS` with the spy installed."""
    return [sys.executable, "-c", _HOOK, *args]


def prompts(path: Path) -> list[dict[str, Any]]:
    """What the engine was asked, in order: {"text": ..., "seed": ...} per answer."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
