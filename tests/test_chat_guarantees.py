"""What `qwen chat` promises when things go wrong: nothing typed or said is lost, a person's
files are never replaced without asking, input from outside is bounded and checked, and every
failure is one line with the documented exit code.

Sessions run in a pseudo-terminal (pexpect) the way a person types, one-shot answers in real
subprocesses; every wait is for an output marker (the timeouts are only ceilings). The model is
the tiny synthetic qwen3 file with the real Qwen3 tokenizer and template (random weights: the
words are random, the structure is not).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest

from qwencli.chat.engine import Prompt, Sampling, Stats
from qwencli.chat.session import (
    Command,
    ContextOverflowError,
    Conversation,
    Session,
    ThinkingSupport,
    parse_command,
    parse_set,
)
from qwencli.envvars import env_bool
from qwencli.errors import QwenError, UsageError
from tests import ceilings
from tests.chat_process import PROMPT, STATUS, terminal_env

CEILING = ceilings.PROCESS_S  # a ceiling for a marker to appear, never a pause


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = terminal_env(cache)
    env.pop("QWEN_NOHISTORY", None)
    env.update(extra)
    return env


def _default_hangup() -> None:
    """A session in a terminal gets SIGHUP's default disposition, even when the test run itself
    ignores it (`nohup pytest`, as a CI runner may): qwen chat rightly leaves an ignored SIGHUP
    ignored, and the closed-terminal test would wait for an exit that never comes."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start(model: Path, cache: Path, *args: str, env: dict[str, str] | None = None,
          ready: bool = True) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "qwencli", "chat", "-m", str(model),
                                           "--threads", "1", *args],
                          env=env or _env(cache), encoding="utf-8", timeout=CEILING,
                          dimensions=(50, 250), preexec_fn=_default_hangup)
    if ready:
        child.expect_exact("/bye or Ctrl-D to leave")
        child.expect_exact(PROMPT)
    return child


@pytest.fixture
def session(model: Path, cache: Path) -> Iterator[pexpect.spawn]:
    child = start(model, cache, "--seed", "1", "-n", "8")
    yield child
    if child.isalive():
        child.terminate(force=True)


def ask(child: pexpect.spawn, text: str) -> int:
    """Type a message; the context the status line reports after the answer."""
    child.sendline(text)
    child.expect(STATUS)
    used = int(child.match.group(1).replace(",", ""))
    child.expect_exact(PROMPT)
    return used


def command(child: pexpect.spawn, text: str) -> str:
    """Type a line; what was shown before the next prompt (without the echoed line)."""
    child.sendline(text)
    child.expect_exact(PROMPT)
    return child.before.replace("\r", "").split("\n", 1)[-1]


def leave(child: pexpect.spawn) -> int:
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def one_line_error(shown: str) -> str:
    """The error line of a command's output, checking it is the only one."""
    errors = [line for line in shown.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, shown
    assert "Traceback" not in shown
    return errors[0]


def saved_messages(child: pexpect.spawn, path: Path) -> list[dict[str, str]]:
    shown = command(child, f"/save! {path}")
    assert f"to {path}" in shown, shown
    return json.loads(path.read_text())["messages"]


# ------------------------------------------------------------------------------------------
# (2) A message too long for the context leaves the conversation as it was


def test_a_message_too_long_for_the_context_keeps_the_conversation(
        model: Path, cache: Path, tmp_path: Path) -> None:
    child = start(model, cache, "--seed", "1", "-n", "8", "--ctx", "512")
    try:
        ask(child, "hello")
        before = ask(child, "and again")
        shown = command(child, " ".join(f"w{i}" for i in range(700)))  # a pasted page
        error = one_line_error(shown)
        assert re.fullmatch(r"error: the input is [\d,]+ tokens, more than the 512-token "
                            r"context", error), error
        assert "hint: run again with --ctx" in shown
        messages = saved_messages(child, tmp_path / "after.json")
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
        assert [messages[0]["content"], messages[2]["content"]] == ["hello", "and again"]
        assert ask(child, "still here?") > before  # the earlier turns are still in the context
        assert leave(child) == 0
    finally:
        child.terminate(force=True)


@dataclass
class _Template:
    has_enable_thinking: bool = True
    mentions_thinking: bool = True
    stops: tuple[str, ...] = ()


class _Generation:
    """Yields `pieces`; raises `fail` after them (an engine error, Ctrl-C)."""

    def __init__(self, prompt: Prompt, pieces: Sequence[str], fail: BaseException | None,
                 should_stop: Any) -> None:
        self.prompt, self.pieces, self.fail = prompt, pieces, fail
        self.should_stop = should_stop or (lambda: False)
        self.count = 0
        self.reason = "stop"

    def __iter__(self) -> Iterator[str]:
        if self.should_stop():
            self.reason = "interrupted"
            return
        for piece in self.pieces:
            self.count += 1
            yield piece
        if self.fail is not None:
            raise self.fail

    def interrupt(self) -> None:
        self.reason = "interrupted"

    @property
    def stats(self) -> Stats:
        n = len(self.prompt.tokens)
        return Stats(n, n, self.count, 0.1, 10.0, 10.0, 0.2, self.reason, False)


class _Engine:
    """One token per word plus three per message; each answer from a script."""

    n_ctx = 64

    def __init__(self, *answers: tuple[Sequence[str], BaseException | None]) -> None:
        self.answers = list(answers)
        self.template = _Template()

    def prompt(self, messages: Sequence[dict[str, str]], template_kwargs: Any = None) -> Prompt:
        n = sum(3 + len(m["content"].split()) for m in messages)
        return Prompt(text="", tokens=tuple(range(n)), opens_thinking=False)

    def generate(self, prompt: Prompt, sampling: Sampling, should_stop: Any = None) -> Any:
        pieces, fail = self.answers.pop(0)
        return _Generation(prompt, pieces, fail, should_stop)


def test_any_failed_turn_leaves_the_conversation_exactly_as_it_was() -> None:
    from qwencli.chat.engine import EngineError

    engine = _Engine((["one"], None), (["half"], EngineError("decode failed")),
                     ([], KeyboardInterrupt()), ([], None), (["two"], None))
    session = Session(engine=engine, support=ThinkingSupport("hybrid", "enable_thinking", True),
                      conversation=Conversation(system="S"), max_ctx=4096)
    session.reply("a " * 20)  # 23 + 3 (system) tokens; room for an answer: 64 // 4 = 16
    before = [dict(m) for m in session.conversation.messages]
    with pytest.raises(ContextOverflowError):  # can never fit: nothing is dropped for it
        session.reply("b " * 70)
    assert session.conversation.messages == before
    with pytest.raises(EngineError):  # fails after a piece was shown
        session.reply("c")
    assert session.conversation.messages == before
    interrupted = session.reply("d")  # Ctrl-C before the first token
    assert not interrupted.kept and interrupted.stats.finish_reason == "interrupted"
    assert session.conversation.messages == before
    stopped = session.reply("e", should_stop=lambda: True)  # the flag was up before it began
    assert not stopped.kept and session.conversation.messages == before
    assert session.reply("f " * 20).dropped == 2  # a message that fits still trims
    assert [m["content"] for m in session.conversation.messages] == ["f " * 20, "two"]
    assert session.conversation.system == "S"


# ------------------------------------------------------------------------------------------
# (3) /save asks before replacing a file, writes whole files, and says why it cannot


def test_save_asks_before_replacing_a_file(session: pexpect.spawn, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    target = folder / "notes.json"
    target.write_bytes(b"my own notes\n")
    ask(session, "hello")
    session.sendline(f"/save {target}")
    session.expect_exact(f"overwrite {target}? [y/N] ")
    assert f"not saved; {target} is unchanged" in command(session, "n")
    assert target.read_bytes() == b"my own notes\n"
    session.sendline(f"/save {target}")
    session.expect_exact("[y/N] ")
    assert command(session, "")  # Enter: the default is no
    assert target.read_bytes() == b"my own notes\n"
    session.sendline(f"/save {target}")
    session.expect_exact("[y/N] ")
    session.sendcontrol("c")  # Ctrl-C at the question: not saved, the session goes on
    session.expect_exact("(interrupted)")
    session.expect_exact(PROMPT)
    assert target.read_bytes() == b"my own notes\n"
    session.sendline(f"/save {target}")
    session.expect_exact("[y/N] ")
    assert f"saved 2 messages to {target}" in command(session, "y")
    assert len(json.loads(target.read_text())["messages"]) == 2
    ask(session, "more")
    shown = command(session, f"/save! {target}")  # no question
    assert "overwrite" not in shown and f"saved 4 messages to {target}" in shown
    assert len(json.loads(target.read_text())["messages"]) == 4
    assert [p.name for p in folder.iterdir()] == ["notes.json"]  # no temporary file left
    assert leave(session) == 0


def test_save_says_in_one_line_where_it_cannot_write(session: pexpect.spawn,
                                                     tmp_path: Path) -> None:
    ask(session, "hello")
    missing = tmp_path / "no" / "such" / "folder" / "talk.json"
    error = one_line_error(command(session, f"/save {missing}"))
    assert error == (f"error: cannot write {missing}: the folder {missing.parent} does not "
                     "exist")
    assert not (tmp_path / "no").exists()  # a typo creates no folders
    assert one_line_error(command(session, f"/save {tmp_path}")) == \
        f"error: {tmp_path} is a folder"
    assert "not a regular file" in one_line_error(command(session, "/save! /dev/null"))
    if os.geteuid() == 0:  # root writes anywhere a mode allows: use a place nobody may write
        locked = Path("/sys/qwen-chat-test.json")
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        locked = folder / "talk.json"
    assert one_line_error(command(session, f"/save {locked}")) == \
        f"error: cannot write {locked}: permission denied"
    assert "/save needs a file name" in one_line_error(command(session, "/save"))
    assert ask(session, "still here") > 0
    assert len(saved_messages(session, tmp_path / "ok.json")) == 4


def test_save_without_a_terminal_to_ask_on_refuses(model: Path, cache: Path,
                                                    tmp_path: Path) -> None:
    # stdin is the terminal (a session), but stderr goes to a file: nobody sees a question.
    target = tmp_path / "keep.json"
    target.write_bytes(b"keep me\n")
    errors = tmp_path / "stderr.txt"
    line = (f"exec {sys.executable} -m qwencli chat -m {model} --threads 1 -n 4 "
            f"2> {errors}")
    child = pexpect.spawn("/bin/sh", ["-c", line], env=_env(cache), encoding="utf-8",
                          timeout=CEILING)
    try:
        child.expect_exact(PROMPT)
        child.sendline(f"/save {target}")
        child.expect_exact(PROMPT)
        assert target.read_bytes() == b"keep me\n"
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.terminate(force=True)
    err = errors.read_text()
    assert f"error: {target} exists; not replaced" in err
    assert f"hint: /save! {target} replaces it" in err


def test_save_and_its_force_form_parse() -> None:
    assert parse_command("/save! a b.json") == Command("save", "a b.json", force=True)
    assert parse_command("/save x") == Command("save", "x")
    with pytest.raises(UsageError, match="unknown command /load!"):
        parse_command("/load! x")


# ------------------------------------------------------------------------------------------
# (4) The history survives a closed terminal; /load and the history file are bounded


def test_the_history_survives_a_closed_terminal(model: Path, cache: Path) -> None:
    from qwencli.paths import config_dir

    history = config_dir() / "history"
    child = start(model, cache, "--seed", "1", "-n", "8")
    command(child, "/help")
    ask(child, "typed before the terminal closed")
    os.kill(child.pid, signal.SIGHUP)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 128 + signal.SIGHUP
    lines = history.read_text().splitlines()
    assert lines[-2:] == ["/help", "typed before the terminal closed"]
    assert history.stat().st_mode & 0o077 == 0  # private: it holds what was typed

    child = start(model, cache, "--seed", "1", "-n", "8")  # even a kill loses no line
    ask(child, "typed before a kill -9")
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.close()
    assert history.read_text().splitlines()[-1] == "typed before a kill -9"


def test_sigterm_during_an_answer_ends_the_session_cleanly(model: Path, cache: Path) -> None:
    from qwencli.paths import config_dir

    child = start(model, cache, "--seed", "3")  # no --max-tokens: a long answer
    child.sendline("Write a very long story.")
    child.expect(r"\S{8}")  # the answer is streaming
    os.kill(child.pid, signal.SIGTERM)
    child.expect_exact("ended by SIGTERM")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 128 + signal.SIGTERM
    assert "Traceback" not in child.before and "Exception ignored" not in child.before
    assert (config_dir() / "history").read_text().splitlines()[-1] == \
        "Write a very long story."


def test_load_reads_only_a_bounded_regular_json_file(session: pexpect.spawn,
                                                     tmp_path: Path) -> None:
    ask(session, "hello")
    big = tmp_path / "big.json"
    with big.open("wb") as out:  # sparse: 17 MiB on paper, nothing on the disk
        out.truncate(17 * 2**20)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    cases = {
        "/dev/zero": "error: /dev/zero is not a regular file; /load reads a JSON file",
        str(fifo): f"error: {fifo} is not a regular file; /load reads a JSON file",
        str(tmp_path): f"error: {tmp_path} is a folder; /load reads a JSON file",
        str(big): f"error: {big} is 17 MiB; /load reads at most 16 MiB",
        str(tmp_path / "none.json"): f"error: {tmp_path / 'none.json'}: no such file",
        str(deep): f"error: {deep}: not a conversation (JSON nested too deeply)",
    }
    shapes = {"text.json": (b"hello\n", "not a JSON conversation"),
              "binary.json": (b"\xff\xfe\x00junk", "not UTF-8 text (byte 0)"),
              "dict.json": (b'{"messages": {"role": "user"}}', "expected a list of messages"),
              "role.json": (b'[{"role": "tool", "content": "x"}]', "has role 'tool'"),
              "content.json": (b'[{"role": "user", "content": 5}]', "needs a string 'content'"),
              "newer.json": (b'{"schema_version": 9, "messages": []}', "written by a newer qwen"),
              "system.json": (b'{"system": 3, "messages": []}', "'system' must be a string")}
    for name, (data, message) in shapes.items():
        (tmp_path / name).write_bytes(data)
        cases[str(tmp_path / name)] = message
    for path, message in cases.items():
        error = one_line_error(command(session, f"/load {path}"))
        assert message in error, (path, error)
    assert len(saved_messages(session, tmp_path / "after.json")) == 2  # unchanged
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"schema_version": 1, "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    assert f"loaded 2 messages from {good}" in command(session, f"/load {good}")
    assert [m["content"] for m in saved_messages(session, tmp_path / "b.json")] == ["q", "a"]


@pytest.mark.parametrize("kind", ["binary", "huge", "fifo", "folder"])
def test_a_broken_history_file_never_stops_a_session(model: Path, cache: Path,
                                                     kind: str) -> None:
    from qwencli.paths import config_dir

    history = config_dir() / "history"
    history.parent.mkdir(parents=True, exist_ok=True)
    if kind == "binary":
        history.write_bytes(os.urandom(4096).replace(b"\n", b"") + b"\nrecall me\n\x00\x01\n")
    elif kind == "huge":
        with history.open("wb") as out:
            out.truncate(1 << 30)  # 1 GiB of zeros, sparse
    elif kind == "fifo":
        os.mkfifo(history)
    else:
        history.mkdir()
    child = start(model, cache, "--seed", "1", "-n", "4", ready=False)
    try:
        if kind in ("fifo", "folder"):
            child.expect_exact(f"warning: the history file {history} is not a regular file; "
                               "this session's lines are not kept in the history")
        child.expect_exact(PROMPT)
        if kind == "binary":  # the one good line is there to recall (Ctrl-P: previous line)
            child.sendcontrol("p")
            child.sendline("")
            child.expect_exact("recall me")
            child.expect(STATUS)
            child.expect_exact(PROMPT)
        else:
            ask(child, "hello")
        assert leave(child) == 0
    finally:
        child.terminate(force=True)
    if kind == "huge":  # cut back to what is worth keeping, in one rename
        assert history.read_text() == "hello\n/bye\n"
    if kind == "binary":  # appended to (a repeated line once), not rewritten while small
        assert history.read_bytes().endswith(b"\nrecall me\n\x00\x01\n/bye\n")


# ------------------------------------------------------------------------------------------
# (7) Ctrl-C while the model loads: exit 130, "interrupted", no answer


def test_ctrl_c_while_loading_exits_130(model: Path, cache: Path) -> None:
    # The signal is sent with llama.cpp's first log line. Whether it lands in the load (the
    # usual case; the test below pins that path down in-process) or, on a busy machine, just
    # after it, the outcome a person sees is the same: exit 130 and "interrupted". A long
    # answer (-n 4096) makes sure a late signal still finds the process at work.
    process = subprocess.Popen(
        [sys.executable, "-m", "qwencli", "chat", "-m", str(model), "--threads", "1",
         "--verbose", "--seed", "1", "-n", "4096", "hi"],
        env=_env(cache), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    assert process.stderr is not None
    first = process.stderr.readline()  # llama.cpp's first log line: the load has begun
    assert first.startswith(b"llama_model_loader")
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=CEILING)
    assert process.returncode == 130
    assert err.decode().splitlines()[-1] == "interrupted"
    assert b"Traceback" not in err and b"Exception ignored" not in err


def test_the_load_is_abandoned_at_the_next_tensor(model: Path) -> None:
    # In-process, deterministic: SIGINT arrives with llama.cpp's first log line, long before
    # the tensors; the progress callback then makes llama.cpp give the load up.
    from qwencli.chat import engine as engine_module
    from qwencli.chat.select import LoadRequest, plan_load
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.hardware.whatif import WhatIf, resolve_hardware

    hw = resolve_hardware(WhatIf(hardware="laptop-rtx4060-32gb", cpu_only=True), probe)
    the_plan = plan_load(model, LoadRequest(ctx=512), hw, plan_budget(hw))[0]
    sink = engine_module._LOG
    original = sink.write
    sent: list[int] = []

    def write(level: int, text: str) -> None:
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        original(level, text)

    before = signal.getsignal(signal.SIGINT)
    sink.write = write  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            engine_module.Engine.load(model, the_plan, n_threads=1)
    finally:
        del sink.write
    assert any("cancelled model load" in line for line in sink.recent())
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C is Python's again


# ------------------------------------------------------------------------------------------
# (12) One rule for --ctx above the model's maximum: qwen chat agrees with qwen fit


def test_chat_and_fit_refuse_a_ctx_beyond_the_model_alike(model: Path, cache: Path) -> None:
    def qwen(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qwencli", *args], env=_env(cache),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=CEILING, check=False)

    chat = qwen("chat", "-m", str(model), "--threads", "1", "--ctx", "8192", "hi")
    fit = qwen("fit", str(model), "--ctx", "8192")
    assert chat.returncode == fit.returncode == 2
    assert chat.stdout == ""
    assert chat.stderr == fit.stderr == (
        "error: tiny-qwen3.gguf supports at most 4,096 tokens of context; --ctx 8,192 is "
        "more\nhint: use --ctx 4096 or less\n")


# ------------------------------------------------------------------------------------------
# (20) Integers print as integers; one reading of yes/no environment variables


def test_set_limits_print_as_typed() -> None:
    with pytest.raises(UsageError) as error:
        parse_set("seed", "-5")
    assert error.value.message == "seed must be between 0 and 4294967294"
    with pytest.raises(UsageError, match=r"^max_tokens must be between 1 and 1000000000$"):
        parse_set("max_tokens", "0")
    with pytest.raises(UsageError, match=r"^top_p must be between 0 and 1$"):
        parse_set("top_p", "2")


def test_yes_no_environment_variables() -> None:
    for value in ("1", "true", "YES", " on "):
        assert env_bool("X", environ={"X": value}) is True
    for value in ("0", "false", "No", "off", ""):
        assert env_bool("X", environ={"X": value}, default=True) is False
    assert env_bool("X", environ={}, default=True) is True
    with pytest.raises(UsageError) as error:
        env_bool("QWEN_NOHISTORY", environ={"QWEN_NOHISTORY": "maybe"})
    assert error.value.message == "QWEN_NOHISTORY='maybe' is neither yes nor no"
    assert error.value.exit_code == 2


def test_qwen_nohistory_false_keeps_the_history(model: Path, cache: Path) -> None:
    from qwencli.paths import config_dir

    history = config_dir() / "history"
    child = start(model, cache, "-n", "4", env=_env(cache, QWEN_NOHISTORY="false"))
    ask(child, "remember me")
    assert leave(child) == 0
    assert "remember me" in history.read_text()
    history.unlink()
    child = start(model, cache, "-n", "4", env=_env(cache, QWEN_NOHISTORY="1"))
    ask(child, "forget me")
    assert leave(child) == 0
    assert not history.exists()
    child = start(model, cache, env=_env(cache, QWEN_NOHISTORY="maybe"), ready=False)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    lines = child.before.replace("\r", "").strip().splitlines()
    assert lines == ["error: QWEN_NOHISTORY='maybe' is neither yes nor no",
                     "hint: set QWEN_NOHISTORY to 1, true, yes or on, or to 0, false, no, "
                     "off or nothing"]


def test_conversation_documents_are_checked() -> None:
    with pytest.raises(QwenError, match="'schema_version' must be a positive integer"):
        Conversation.from_document({"schema_version": "1", "messages": []})
    with pytest.raises(QwenError, match="'schema_version' must be a positive integer"):
        Conversation.from_document({"schema_version": True, "messages": []})
    assert Conversation.from_document({"messages": [{"role": "user", "content": "x"}]}) \
        .messages == [{"role": "user", "content": "x"}]


# ------------------------------------------------------------------------------------------
# (17) stdout redirected in a session: the prompts stay on the terminal


def test_prompts_stay_on_the_terminal_when_stdout_is_a_file(model: Path, cache: Path,
                                                            tmp_path: Path) -> None:
    answers = tmp_path / "answers.txt"
    command = (f"exec {shlex.quote(sys.executable)} -m qwencli chat -m {shlex.quote(str(model))}"
               f" --threads 1 --seed 1 -n 4 > {shlex.quote(str(answers))}")
    child = pexpect.spawn("/bin/sh", ["-c", command], env=_env(cache), encoding="utf-8",
                          timeout=CEILING, dimensions=(50, 250))
    try:
        child.expect_exact(PROMPT)  # seen on the terminal, though stdout is the file
        child.sendline("hello")
        child.expect(STATUS)
        child.expect_exact(PROMPT)
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.terminate(force=True)
    child.close()
    assert child.exitstatus == 0
    written = answers.read_text()
    assert written.strip() and PROMPT.strip() not in written and "[tiny-qwen3" not in written
