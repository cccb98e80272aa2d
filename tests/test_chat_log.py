"""`qwen chat` and its conversation log, end to end: every turn logged, `-c`/`--cid` continue
(one-shot, piped and in the REPL), /regen /undo /history in a pseudo-terminal, and a log that
cannot be written never costs an answer.

The model is the tiny synthetic qwen3 file with the real Qwen3 tokenizer and template (random
weights: the assertions are about structure). What the engine was asked is recorded by the
spy hook (tests/spy.py): the rendered prompt shows exactly which turns a continuation sent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from qwencli.logs import ConversationLog, NewConversation, NewMessage, log_path
from tests import ceilings, hold, spy
from tests.chat_process import PROMPT, STATUS, terminal_env


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    return tmp_path / "prompts.jsonl"


def _env(cache: Path, prompts_file: Path | None = None, **extra: str) -> dict[str, str]:
    """A plain terminal's environment; `prompts_file`: where tests/spy.py records prompts."""
    spied = {"QWEN_TEST_PROMPTS": str(prompts_file)} if prompts_file is not None else {}
    return terminal_env(cache, **spied, **extra)


def chat(cache: Path, prompts_file: Path, *args: str, stdin: str = "",
         **env: str) -> subprocess.CompletedProcess[str]:
    """`qwen chat ARGS` (through the spy), one thread, stdin piped."""
    return subprocess.run(spy.argv("chat", "--threads", "1", *args), input=stdin,
                          capture_output=True, text=True, env=_env(cache, prompts_file, **env),
                          timeout=ceilings.PROCESS_S, check=False)


def logged() -> list[dict[str, Any]]:
    """Every logged conversation (`qwen logs show ID --json --all`), oldest first."""
    with ConversationLog.open(read_only=True) as log:
        ids = sorted(s.id for s in log.recent(1000))
    documents = []
    for cid in ids:
        done = subprocess.run([sys.executable, "-m", "qwencli", "logs", "show", str(cid),
                               "--json", "--all"], capture_output=True, text=True,
                              timeout=ceilings.PROCESS_S, check=True)
        documents.append(json.loads(done.stdout))
    return documents


def active(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in document["messages"] if not m["superseded"]]


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def until(condition: Callable[[], Any], what: str) -> Any:
    """Wait for `condition` (a marker another process writes), polling; the ceiling only
    bounds a marker that never comes."""
    import time

    give_up = time.monotonic() + ceilings.PROCESS_S
    while time.monotonic() < give_up:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


# ------------------------------------------------------------------------------------------
# One-shot, piped, -c and --cid


def test_one_shot_then_continue_sends_the_first_exchange(model: Path, cache: Path,
                                                           prompts_file: Path) -> None:
    first = chat(cache, prompts_file, "-m", str(model), "--seed", "1", "-n", "8",
                 "What is the capital of France?")
    assert first.returncode == 0, first.stderr
    answer = first.stdout.strip()
    assert answer and not warnings_in(first.stderr)
    # -c without -m: the model, its settings (--seed 1, -n 8) come from the log
    second = chat(cache, prompts_file, "-c", "shorter, please")
    assert second.returncode == 0, second.stderr
    assert "continuing conversation 1 (2 messages)" in second.stderr
    asked = spy.prompts(prompts_file)
    assert len(asked) == 2
    text = asked[1]["text"]
    # the whole first exchange, then the new message, in Qwen's chat format
    assert text.index("What is the capital of France?") < text.index(answer) \
        < text.index("shorter, please")
    assert asked[1]["seed"] == 1  # the logged conversation's settings came with it
    [conversation] = logged()
    assert conversation["schema_version"] == 1
    assert conversation["model"] == "tiny-qwen3.gguf" and conversation["quant"] == "F32"
    assert conversation["path"] == str(model)
    assert active(conversation) == [("user", "What is the capital of France?"),
                                    ("assistant", answer), ("user", "shorter, please"),
                                    ("assistant", second.stdout.strip())]
    reply = conversation["messages"][1]
    assert reply["sampling"]["seed"] == 1 and reply["sampling"]["max_tokens"] == 8
    assert reply["completion_tokens"] == 8 and reply["finish_reason"] == "length"
    assert reply["prompt_tokens"] > 0 and reply["total_s"] > 0


def test_piped_continue_and_json_give_the_conversation_id(model: Path, cache: Path,
                                                          prompts_file: Path) -> None:
    first = chat(cache, prompts_file, "-m", str(model), "--seed", "2", "-n", "8", "--json",
                 stdin="def add(a, b): return a + b")
    assert first.returncode == 0, first.stderr
    cid = json.loads(first.stdout)["conversation_id"]
    assert cid == 1
    more = chat(cache, prompts_file, "-c", stdin="now with type hints\n")  # echo ... | qwen chat -c
    assert more.returncode == 0, more.stderr
    text = spy.prompts(prompts_file)[1]["text"]
    assert text.index("def add(a, b)") < text.index("now with type hints")
    [conversation] = logged()
    assert [role for role, _ in active(conversation)] == ["user", "assistant"] * 2


def test_cid_continues_the_conversation_it_names(model: Path, cache: Path,
                                                 prompts_file: Path) -> None:
    for question in ("about cats", "about dogs"):
        done = chat(cache, prompts_file, "-m", str(model), "--seed", "1", "-n", "4", question)
        assert done.returncode == 0, done.stderr
    done = chat(cache, prompts_file, "--cid", "1", "and their food?")
    assert done.returncode == 0, done.stderr
    text = spy.prompts(prompts_file)[-1]["text"]
    assert "about cats" in text and "about dogs" not in text
    first, second = logged()
    assert len(active(first)) == 4 and len(active(second)) == 2
    # -c now means conversation 1: it was written to last
    chat(cache, prompts_file, "-c", "-n", "4", "one more")
    assert "about cats" in spy.prompts(prompts_file)[-1]["text"]
    missing = chat(cache, prompts_file, "--cid", "99", "hello")
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[0] == "error: no conversation 99 in the log"


def test_a_continued_history_beyond_the_context_drops_the_oldest_turns(
        model: Path, cache: Path, prompts_file: Path) -> None:
    with ConversationLog.open() as log:
        cid = log.start(NewConversation(model=model.name, path=str(model)))
        for n in range(6):  # about 60 tokens a turn: more than a 256-token context holds
            log.add(cid, NewMessage("user", f"turn {n} " + "word " * 25))
            log.add(cid, NewMessage("assistant", "answer " * 25))
    done = chat(cache, prompts_file, "--cid", str(cid), "--ctx", "256", "-n", "8", "short")
    assert done.returncode == 0, done.stderr
    found = re.search(r"note: dropped the (\d+) oldest messages to fit the 256-token context",
                      done.stderr)
    assert found and int(found.group(1)) % 2 == 0, done.stderr  # whole turns
    text = spy.prompts(prompts_file)[0]["text"]
    assert "turn 0 " not in text and "turn 5 " in text and text.rstrip().endswith(
        "<|im_start|>assistant")
    with ConversationLog.open(read_only=True) as log:  # the log keeps every turn
        assert len(log.get(cid).active) == 14


def test_continue_with_nothing_logged_says_so(cache: Path, prompts_file: Path) -> None:
    done = chat(cache, prompts_file, "-c", "hello")
    assert done.returncode == 1
    assert "error: there is no conversation in the log to continue" in done.stderr
    assert "Traceback" not in done.stderr


def test_system_file_is_the_system_prompt(model: Path, cache: Path, prompts_file: Path,
                                          tmp_path: Path) -> None:
    system = tmp_path / "system.txt"
    system.write_text("You answer in French.\n", encoding="utf-8")
    done = chat(cache, prompts_file, "-m", str(model), "-n", "4", "--system-file", str(system),
                "hello")
    assert done.returncode == 0, done.stderr
    assert "<|im_start|>system\nYou answer in French." in spy.prompts(prompts_file)[0]["text"]
    assert logged()[0]["system"] == "You answer in French."
    chat(cache, prompts_file, "-c", "-n", "4", "again")  # the system prompt came with it
    assert "You answer in French." in spy.prompts(prompts_file)[1]["text"]
    both = chat(cache, prompts_file, "-m", str(model), "--system", "x", "--system-file",
                str(system), "hello")
    assert both.returncode == 2 and "contradict" in both.stderr
    missing = chat(cache, prompts_file, "-m", str(model), "--system-file",
                   str(tmp_path / "nope.txt"), "hello")
    assert missing.returncode == 1 and "nope.txt: no such file" in missing.stderr


# ------------------------------------------------------------------------------------------
# Turning it off


@pytest.mark.parametrize("how", ["--no-log", "QWEN_NOLOG", "config"])
def test_no_log_leaves_no_row(model: Path, cache: Path, prompts_file: Path, how: str) -> None:
    args = ["-m", str(model), "-n", "4"]
    env: dict[str, str] = {}
    if how == "--no-log":
        args.append("--no-log")
    elif how == "QWEN_NOLOG":
        env["QWEN_NOLOG"] = "1"
    else:
        subprocess.run([sys.executable, "-m", "qwencli", "config", "set", "log", "false"],
                       check=True, capture_output=True, timeout=ceilings.PROCESS_S)
    done = chat(cache, prompts_file, *args, "--json", "do not keep this", **env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["conversation_id"] is None
    assert not log_path().exists()  # not even an empty file
    assert logged() == []


# ------------------------------------------------------------------------------------------
# A log that cannot be written never costs an answer


def test_a_corrupted_log_gives_one_warning_and_the_answer(model: Path, cache: Path,
                                                          prompts_file: Path,
                                                          tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.db"
    junk = os.urandom(8192)
    damaged.write_bytes(junk)
    done = chat(cache, prompts_file, "-m", str(model), "-n", "4", "hello",
                QWEN_LOG_DB=str(damaged))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert warnings_in(done.stderr) == [
        f"warning: the conversation log {damaged} is damaged (file is not a database); "
        "this chat is not logged"]
    assert damaged.read_bytes() == junk  # left as it was, for someone to look at
    # and `qwen logs` says so in one line, exit 1
    shown = subprocess.run([sys.executable, "-m", "qwencli", "logs", "list"],
                           capture_output=True, text=True, timeout=ceilings.PROCESS_S,
                           env={**os.environ, "QWEN_LOG_DB": str(damaged)})
    assert shown.returncode == 1
    assert shown.stderr.splitlines()[0].startswith(f"error: the conversation log {damaged} "
                                                   "is damaged")


def _read_only(path: Path) -> Callable[[], None]:
    """Make an existing file unwritable, even for root (the immutable flag); the undo."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        path.parent.chmod(0o555)
        return lambda: (path.parent.chmod(0o755), path.chmod(0o644))
    subprocess.run(["chattr", "+i", str(path)], check=True)
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_log_gives_one_warning_and_the_answer(model: Path, cache: Path,
                                                          prompts_file: Path,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "ro" / "logs.db"
    with ConversationLog.open(path) as log:
        cid = log.start(NewConversation(model="earlier"))
        log.add(cid, NewMessage("user", "kept"))
    undo = _read_only(path)
    try:
        done = chat(cache, prompts_file, "-m", str(model), "-n", "4", "hello",
                    QWEN_LOG_DB=str(path))
    finally:
        undo()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    [warning] = warnings_in(done.stderr)
    assert warning.endswith("this chat is not logged")
    assert "read-only" in warning or "permission denied" in warning, warning
    with ConversationLog.open(path, read_only=True) as log:
        assert [s.first for s in log.recent()] == ["kept"]  # nothing half-written


def test_a_log_on_a_read_only_disk_gives_one_warning_and_the_answer(
        model: Path, cache: Path, prompts_file: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere a mode allows: sysfs is read-only for all
        path = Path("/sys/qwen-chat-test/logs.db")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        path = locked / "sub" / "logs.db"
    done = chat(cache, prompts_file, "-m", str(model), "-n", "4", "hello",
                QWEN_LOG_DB=str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    [warning] = warnings_in(done.stderr)
    assert str(path) in warning and warning.endswith("this chat is not logged")


def test_two_chats_writing_at_once_are_both_logged(model: Path, cache: Path,
                                                   prompts_file: Path) -> None:
    # Create the log, then hold its write lock until both chats are answering (each writes
    # its message as the answer starts): both queue behind the lock, and behind each other.
    with ConversationLog.open():
        pass
    holder = sqlite3.connect(log_path(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        chats = [subprocess.Popen(spy.argv("chat", "--threads", "1", "-m", str(model), "-n",
                                           "4", f"question {n}"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_env(cache, prompts_file)) for n in (1, 2)]
        until(lambda: len(spy.prompts(prompts_file)) == 2, "both chats asked the model")
    finally:
        holder.execute("COMMIT")
        holder.close()
    for process in chats:
        _out, err = process.communicate(timeout=ceilings.PROCESS_S)
        assert process.returncode == 0, err
        assert not warnings_in(err)
    conversations = logged()
    assert sorted(active(c)[0][1] for c in conversations) == ["question 1", "question 2"]
    assert all(len(active(c)) == 2 for c in conversations)


def test_a_killed_chat_leaves_the_log_readable_to_its_last_message(model: Path, cache: Path,
                                                                   tmp_path: Path) -> None:
    done = chat(cache, tmp_path / "prompts.jsonl", "-m", str(model), "--seed", "3", "-n", "8",
                "a complete exchange")
    assert done.returncode == 0, done.stderr
    # continued in a session whose answer is held after its first words (tests/hold.py),
    # and killed then
    program, *argv = hold.argv("chat", "-c", "--threads", "1", "-n", "200")
    child = pexpect.spawn(program, argv, env=_env(cache), encoding="utf-8",
                          timeout=ceilings.PROCESS_S, dimensions=(50, 250))
    try:
        child.expect_exact(PROMPT)
        child.sendline("Write a very long story.")
        child.expect_exact("Write a very long story.\r\n")
        child.expect(r"\S")  # the answer is streaming, and held

        def messages() -> list[tuple[str, str]]:
            with ConversationLog.open(read_only=True) as log:
                latest = log.latest_id()
                return [] if latest is None else [(m.role, m.content)
                                                  for m in log.get(latest).active]

        until(lambda: len(messages()) == 3, "the second message is committed")
        os.kill(child.pid, signal.SIGKILL)
        child.expect(pexpect.EOF)
    finally:
        if child.isalive():
            child.terminate(force=True)
    found = messages()
    assert [role for role, _ in found] == ["user", "assistant", "user"]
    assert found[0][1] == "a complete exchange" and found[2][1] == "Write a very long story."
    done = subprocess.run([sys.executable, "-m", "qwencli", "logs", "show"],
                          capture_output=True, text=True, timeout=ceilings.PROCESS_S)
    assert done.returncode == 0 and "Write a very long story." in done.stdout


# ------------------------------------------------------------------------------------------
# The REPL: /regen, /undo, /history, and -c


def spawn(cache: Path, prompts_file: Path, *args: str) -> pexpect.spawn:
    program, *argv = spy.argv("chat", "--threads", "1", *args)
    child = pexpect.spawn(program, argv, env=_env(cache, prompts_file), encoding="utf-8",
                          timeout=ceilings.PROCESS_S, dimensions=(50, 250))
    child.expect_exact("/bye or Ctrl-D to leave")
    child.expect_exact(PROMPT)
    return child


def ask(child: pexpect.spawn, text: str) -> str:
    """Type a message; the answer shown (the text between the echo and the status line)."""
    child.sendline(text)
    child.expect(STATUS)
    shown = child.before.replace("\r", "")
    child.expect_exact(PROMPT)
    return shown.split(text, 1)[-1].strip()


def command(child: pexpect.spawn, text: str) -> str:
    child.sendline(text)
    child.expect_exact(PROMPT)
    return child.before.replace("\r", "").split("\n", 1)[-1]


@pytest.fixture
def repl(model: Path, cache: Path, prompts_file: Path) -> Iterator[pexpect.spawn]:
    child = spawn(cache, prompts_file, "-m", str(model), "--seed", "1", "-n", "8")
    yield child
    if child.isalive():
        child.terminate(force=True)


def test_regen_undo_and_history_in_a_terminal(repl: pexpect.spawn, prompts_file: Path) -> None:
    assert command(repl, "/history").strip() == "no messages yet"
    first = ask(repl, "first question")
    second = ask(repl, "second question")
    shown = command(repl, "/history")
    assert re.search(r"^\s+1  you:   first question$", shown, re.M), shown
    assert re.search(r"^\s+2  you:   second question$", shown, re.M), shown
    assert shown.count("model: ") == 2

    # /regen: the same prompt again, a new seed, a new answer in place of the old one
    repl.sendline("/regen")
    repl.expect(r"\(answering again with seed (\d+)\)")
    seed = int(repl.match.group(1))
    repl.expect(STATUS)
    repl.expect_exact(PROMPT)
    asked = spy.prompts(prompts_file)
    assert len(asked) == 3
    assert asked[2]["text"] == asked[1]["text"] and asked[1]["seed"] == 1
    assert asked[2]["seed"] == seed != 1
    shown = command(repl, "/history")
    assert shown.count("you: ") == 2 and shown.count("model: ") == 2

    # /undo: the last exchange is gone from what the model is sent next
    assert "dropped the last exchange (2 messages); 2 left" in command(repl, "/undo")
    shown = command(repl, "/history")
    assert "first question" in shown and "second question" not in shown
    ask(repl, "third question")
    text = spy.prompts(prompts_file)[-1]["text"]
    assert "first question" in text and "second question" not in text
    assert first and second  # answers were shown
    repl.sendline("/bye")
    repl.expect(pexpect.EOF)
    repl.close()
    assert repl.exitstatus == 0

    # the log keeps everything, marking what /regen and /undo replaced
    [conversation] = logged()
    assert [content for role, content in active(conversation) if role == "user"] == [
        "first question", "third question"]
    superseded = [(m["role"], m["content"]) for m in conversation["messages"]
                  if m["superseded"]]
    assert ("user", "second question") in superseded
    assert [role for role, _ in superseded] == ["user", "assistant", "assistant"]  # by id
    regenerated = [m for m in conversation["messages"] if m["role"] == "assistant"][2]
    assert regenerated["sampling"]["seed"] == seed
    first_answer = active(conversation)[1][1]
    assert text.index("first question") < text.index(first_answer) \
        < text.index("third question")


def test_undo_and_regen_with_nothing_to_do(repl: pexpect.spawn) -> None:
    assert "nothing to undo" in command(repl, "/undo")
    assert "error: nothing to answer again yet" in command(repl, "/regen")
    shown = command(repl, "/help")
    for name in ("/regen", "/undo", "/history"):
        assert name in shown


def test_continue_in_the_repl(model: Path, cache: Path, prompts_file: Path) -> None:
    done = chat(cache, prompts_file, "-m", str(model), "--seed", "1", "-n", "8",
                "remember the number 42")
    assert done.returncode == 0, done.stderr
    child = spawn(cache, prompts_file, "-c")
    try:
        shown = command(child, "/history")
        assert "1  you:   remember the number 42" in shown
        assert "temperature = 0.25" in command(child, "/set temperature 0.25")
        ask(child, "which number?")
        text = spy.prompts(prompts_file)[-1]["text"]
        assert text.index("remember the number 42") < text.index("which number?")
        child.sendline("/clear")  # a new conversation from here on
        child.expect_exact(PROMPT)
        ask(child, "fresh start")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        if child.isalive():
            child.terminate(force=True)
    first, second = logged()
    assert [c for r, c in active(first) if r == "user"] == ["remember the number 42",
                                                            "which number?"]
    assert [c for r, c in active(second) if r == "user"] == ["fresh start"]
    # the settings changed in the session are the conversation's now: --cid 1 uses them
    assert first["settings"]["overrides"] == {"seed": 1, "max_tokens": 8, "temperature": 0.25}
    assert second["settings"]["overrides"]["temperature"] == 0.25
    done = chat(cache, prompts_file, "--cid", "1", "and now?")
    assert done.returncode == 0, done.stderr
    last = logged()[0]["messages"][-1]
    assert last["sampling"]["temperature"] == 0.25 and last["sampling"]["max_tokens"] == 8
