"""Hold an answer until Ctrl-C arrives: a hook for tests that interrupt `qwen chat` mid-answer.

Pressing Ctrl-C "while the answer streams" races the answer's end: on a busy machine the test
may see the first words only after the answer is over, and then there is nothing left to stop.
`argv(...)` runs `qwen` in a fresh interpreter with one hook installed: once the answer has
shown its first visible text, the next token is not asked for until the chat's Ctrl-C flag is
set (what `should_stop` polls). The test waits for that text (an output marker), then sends
Ctrl-C: the answer cannot end in between, however slow the machine. Everything else is the
product's own path: the SIGINT handler, the poll after every token, the "interrupted" ending.

If no Ctrl-C comes within ceilings.PROCESS_S the hook says so on stderr and lets the answer go
on, so the test fails on its own assertions instead of hanging.
"""

from __future__ import annotations

import sys

from tests import ceilings

_HOOK = f"""
import sys, time
from qwencli.chat import engine as _engine

_answer = _engine.Generation.__iter__

def _held(self):
    waiting = True
    for piece in _answer(self):
        yield piece
        if waiting and piece.strip():  # the first visible text is out: wait for Ctrl-C
            waiting = False
            give_up = time.monotonic() + {ceilings.PROCESS_S}
            while not self._should_stop():
                if time.monotonic() > give_up:
                    sys.stderr.write("tests.hold: no Ctrl-C came; the answer goes on\\n")
                    break
                time.sleep(0.01)

_engine.Generation.__iter__ = _held
sys.argv[0] = "qwen"
from qwencli.cli import main
main()
"""


def argv(*args: str) -> list[str]:
    """The command line of `qwen ARGS` with the hold installed."""
    return [sys.executable, "-c", _HOOK, *args]
