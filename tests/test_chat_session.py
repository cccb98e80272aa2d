"""The interactive `qwen chat` session, driven through a pseudo-terminal the way a person types.

The model is a tiny synthetic qwen3 file with the real Qwen3 tokenizer and template; with a
fixed seed and --max-tokens every answer is 8 tokens, so the status line's context count
("context N/4,096") tells exactly what the conversation holds.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests import blocked, ceilings, hold
from tests.chat_process import PROMPT, STATUS, terminal_env


def spawn(model: Path, cache: Path, *args: str, held: bool = False) -> pexpect.spawn:
    """`qwen chat` on a terminal, at its first prompt. `held`: answers wait for Ctrl-C after
    their first visible text (tests/hold.py). Every expect waits for a marker; the timeout is
    only a ceiling for a marker that never comes."""
    env = terminal_env(cache)
    command = ["chat", "-m", str(model), "--threads", "1", *args]
    program, *argv = hold.argv(*command) if held else [sys.executable, "-m", "qwencli",
                                                       *command]
    child = pexpect.spawn(program, argv, env=env, encoding="utf-8",
                          timeout=ceilings.PROCESS_S, dimensions=(50, 250))
    child.expect_exact("/bye or Ctrl-D to leave")
    child.expect_exact(PROMPT)
    return child


@pytest.fixture
def session(model: Path, cache: Path) -> Iterator[pexpect.spawn]:
    child = spawn(model, cache, "--seed", "1", "-n", "8")
    yield child
    if child.isalive():
        child.terminate(force=True)


def ask(child: pexpect.spawn, text: str) -> tuple[str, int]:
    """Type a message; the text shown before the status line, and the context it reports."""
    child.sendline(text)
    child.expect(STATUS)
    shown = child.before
    used = int(child.match.group(1).replace(",", ""))
    child.expect_exact(PROMPT)
    return shown, used


def command(child: pexpect.spawn, text: str) -> str:
    child.sendline(text)
    child.expect_exact(PROMPT)
    return child.before


def test_type_a_prompt_and_read_the_answer(session: pexpect.spawn) -> None:
    shown, used = ask(session, "hello")
    answer = shown.split("hello", 1)[1].strip()
    assert answer  # random words from random weights, but words
    assert used == 9 + 8  # "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n" + 8
    _shown, second = ask(session, "hello")
    assert second > used  # the first turn is part of the conversation now
    session.sendline("/bye")
    session.expect(pexpect.EOF)
    session.close()
    assert session.exitstatus == 0


def test_set_changes_sampling(session: pexpect.spawn) -> None:
    assert "temperature = 0.3" in command(session, "/set temperature 0.3")
    listing = command(session, "/set")
    assert "temperature = 0.3 (set)" in listing
    assert "top_p = 0.95" in listing and "max_tokens = 8 (set)" in listing
    assert "error: top_k must be an integer" in command(session, "/set top_k lots")
    assert "top_p = 0.5" in command(session, "/set top-p 0.5")
    assert "temperature = 0.6 (default)" in command(session, "/set temperature default")
    stats = command(session, "/stats")
    assert "no answer yet" in stats and "top_p=0.5" in stats
    assert "thinking off" in command(session, "/no_think")
    assert "temperature=0.7" in command(session, "/stats")  # the non-thinking preset


def test_clear_forgets_the_conversation(session: pexpect.spawn) -> None:
    _shown, first = ask(session, "hello")
    _shown, second = ask(session, "and again")
    assert second > first
    assert "conversation cleared" in command(session, "/clear")
    _shown, third = ask(session, "hello")
    assert third == first


def test_multi_line_input_save_and_load(session: pexpect.spawn, tmp_path: Path) -> None:
    session.sendline('"""')
    session.expect_exact("... ")
    session.sendline("line one")
    session.expect_exact("... ")
    session.sendline("/not a command")
    session.expect_exact("... ")
    session.sendline('line three"""')
    session.expect(STATUS)
    session.expect_exact(PROMPT)
    saved = tmp_path / "talk.json"
    assert f"saved 2 messages to {saved}" in command(session, f"/save {saved}")
    document = json.loads(saved.read_text())
    assert document["messages"][0] == {"role": "user",
                                       "content": "line one\n/not a command\nline three"}
    assert document["messages"][1]["role"] == "assistant"
    assert "<think>" not in document["messages"][1]["content"]
    command(session, "/clear")
    assert "loaded 2 messages" in command(session, f"/load {saved}")
    _shown, used = ask(session, "next")
    assert used > 9 + 8 + 8  # the loaded turn is in the context
    assert "system prompt set" in command(session, "/system Answer in French.")
    assert "Answer in French." in command(session, "/system")


def test_a_full_context_drops_the_oldest_turns_with_a_notice(model: Path, cache: Path) -> None:
    child = spawn(model, cache, "--seed", "1", "-n", "8", "--ctx", "256")
    try:
        long_message = "word " * 50  # about 60 tokens with the template
        used = [ask(child, long_message)[1] for _ in range(3)]
        assert used[0] < used[1] < used[2] < 256
        shown, fourth = ask(child, long_message)
        assert "note: dropped the 2 oldest messages to fit the 256-token context" in shown
        assert fourth == used[2]  # one turn out, one the same size in
    finally:
        child.terminate(force=True)


def test_ctrl_c_stops_an_answer_and_keeps_the_session(model: Path, cache: Path) -> None:
    # no --max-tokens: a long answer, and held after its first words until the Ctrl-C is in
    child = spawn(model, cache, "--seed", "3", held=True)
    try:
        child.sendline("Write a very long story.")
        child.expect_exact("Write a very long story.\r\n")  # the terminal's echo of the line
        child.expect(r"\S")  # the answer is streaming (and waits for the Ctrl-C)
        child.sendcontrol("c")
        child.expect_exact("(interrupted)")
        child.expect(STATUS)
        used = int(child.match.group(1).replace(",", ""))
        assert used < 4096
        child.expect_exact(PROMPT)
        # A Ctrl-C between the prompt and readline's wait for a key would wait for that key
        # (tests/blocked.py): send it once the session is waiting for one.
        blocked.until_waiting_for_input(child.pid, child.isalive)
        child.sendcontrol("c")  # at the prompt: a new line, not an exit
        child.expect_exact("(Ctrl-D or /bye leaves)")
        child.expect_exact(PROMPT)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert "Traceback" not in child.before
    finally:
        if child.isalive():  # a failed expect leaves it waiting for the Ctrl-C
            child.terminate(force=True)


def test_help_unknown_commands_and_history(session: pexpect.spawn) -> None:
    from qwencli.paths import config_dir

    shown = command(session, "/help")
    for name in ("/clear", "/system", "/set", "/think", "/no_think", "/stats", "/save",
                 "/load", "/bye", '"""'):
        assert name in shown
    assert "unknown command /tmep" in command(session, "/tmep 1")
    ask(session, "remember this line")
    session.sendline("/bye")
    session.expect(pexpect.EOF)
    session.close()
    history = (config_dir() / "history").read_text()
    assert "remember this line" in history and "/help" in history


def test_thinking_is_dimmed_on_a_colour_terminal(tmp_path: Path, cache: Path) -> None:
    # A template that opens <think> in the prompt (Qwen3-Thinking-2507 style): the whole
    # answer of random weights is thinking, shown dimmed on stderr, nothing on stdout.
    from tests.gguf_fixtures import qwen3_tokenizer, thinking_only, write_qwen_gguf

    thinker = write_qwen_gguf(tmp_path / "thinker.gguf", vocab=151_936, ctx=1024, seed=1,
                              tokenizer=thinking_only(qwen3_tokenizer()))
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    env.update({"QWEN_CACHE_DIR": str(cache), "TERM": "xterm-256color"})
    child = pexpect.spawn(sys.executable, ["-m", "qwencli", "chat", "-m", str(thinker),
                                           "--threads", "1", "--seed", "4", "-n", "6",
                                           "Think about it"],
                          env=env, encoding="utf-8", timeout=ceilings.PROCESS_S)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "\x1b[2m" in child.before and "\x1b[0m" in child.before  # dim, then reset
    assert "Thinking..." not in child.before  # the plain-text frame is for no-colour only


def test_json_needs_a_prompt(model: Path, cache: Path) -> None:
    env = {**os.environ, "QWEN_CACHE_DIR": str(cache), "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "qwencli", "chat", "-m", str(model), "--json"],
                          env=env, encoding="utf-8", timeout=ceilings.PROCESS_S)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert "--json needs a prompt" in child.before
