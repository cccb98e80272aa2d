"""The conversation log (qwencli.logs) and `qwen logs`: schema, search with and without FTS5,
superseded messages, removal, files that are damaged or newer, and the command line with --json.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pexpect
import pytest
from typer.testing import CliRunner

from qwencli import logs
from qwencli.cli import app
from qwencli.logs import ConversationLog, LogError, NewConversation, NewMessage, log_path
from tests import ceilings


def _fill(path: Path | None = None, use_fts: bool = True) -> list[int]:
    """Two conversations: an exchange about Rust, then a question about 50% off."""
    ids = []
    with ConversationLog.open(path, use_fts=use_fts) as log:
        a = log.start(NewConversation(model="qwen3-8b", quant="Q4_K_M", path="/m/a.gguf",
                                      system="Be brief.", thinking=True,
                                      settings={"think": True, "overrides": {"seed": 7}}))
        log.add(a, NewMessage("user", "How do Rust lifetimes work?"))
        log.add(a, NewMessage("assistant", "They bound references.", thinking="borrowck",
                              sampling={"seed": 7}, prompt_tokens=20, completion_tokens=5,
                              ttft_s=0.1, decode_tok_s=30.0, total_s=0.3,
                              finish_reason="stop"))
        b = log.start(NewConversation(model="qwen3-4b"))
        log.add(b, NewMessage("user", "Shoes are 50% off_today, what's the price?"))
        ids += [a, b]
    return ids


def test_messages_round_trip_and_the_schema_version_is_in_the_file() -> None:
    a, b = _fill()
    with ConversationLog.open(read_only=True) as log:
        got = log.get(a)
        assert (got.model, got.quant, got.system, got.thinking) == ("qwen3-8b", "Q4_K_M",
                                                                    "Be brief.", True)
        assert got.settings == {"think": True, "overrides": {"seed": 7}}
        user, answer = got.messages
        assert (user.role, user.content, user.thinking) == ("user",
                                                            "How do Rust lifetimes work?", None)
        assert answer.thinking == "borrowck" and answer.sampling == {"seed": 7}
        assert (answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == (
            20, 5, "stop")
        assert log.latest_id() == b
        assert [s.id for s in log.recent()] == [b, a]  # the one written to last first
        assert log.recent(1)[0].first.startswith("Shoes are 50%")
    db = sqlite3.connect(log_path())
    assert db.execute("PRAGMA user_version").fetchone()[0] == logs.SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


@pytest.mark.parametrize("use_fts", [True, False])
def test_search_finds_every_word_with_or_without_fts5(use_fts: bool) -> None:
    a, b = _fill(use_fts=use_fts)
    with ConversationLog.open(read_only=True, use_fts=use_fts) as log:
        assert log.fts is use_fts
        hits = log.search("rust LIFETIMES")
        assert [(h.conversation_id, h.role) for h in hits] == [(a, "user")]
        assert "lifetimes" in hits[0].snippet.lower()
        assert [h.conversation_id for h in log.search("borrowck")] == [a]  # the thinking too
        assert [h.conversation_id for h in log.search("50%")] == [b]
        assert log.search("rust shoes") == ()  # every word, in one message
        # text that means something to FTS5 or LIKE is only text
        for text in ('"', "AND", "NEAR(", "*", "%", "_", "what's", "off_today"):
            log.search(text)  # no error
        assert [h.conversation_id for h in log.search("off_today")] == [b]


def test_superseded_messages_stay_but_leave_the_conversation() -> None:
    a, _b = _fill()
    with ConversationLog.open() as log:
        answer = log.get(a).messages[1]
        log.supersede([answer.id])
        got = log.get(a)
        assert len(got.messages) == 2 and [m.role for m in got.active] == ["user"]
        assert log.recent()[1].messages == 1


def test_remove_deletes_conversations_messages_and_their_search_entries() -> None:
    a, b = _fill()
    with ConversationLog.open() as log:
        assert log.remove([a]) == 1
        assert log.search("lifetimes") == ()
        with pytest.raises(LogError, match=f"no conversation {a} in the log"):
            log.get(a)
        assert [s.id for s in log.recent()] == [b]
        db = sqlite3.connect(log.path)
        assert db.execute("SELECT count(*) FROM messages WHERE conversation_id = ?",
                          (a,)).fetchone()[0] == 0


def test_a_missing_log_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "none" / "logs.db"
    with ConversationLog.open(path, read_only=True) as log:
        assert log.recent() == () and log.latest_id() is None and log.search("x") == ()
    assert not path.parent.exists()


def test_damaged_and_newer_files_are_one_line_errors(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(LogError, match="is damaged"):
        ConversationLog.open(damaged)
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {logs.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LogError, match="written by a newer qwen"):
        ConversationLog.open(newer)


def test_a_writer_waits_for_another_ones_transaction() -> None:
    _fill()
    holder = sqlite3.connect(log_path(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    written = threading.Event()

    def write() -> None:
        with ConversationLog.open() as log:
            log.add(log.start(NewConversation()), NewMessage("user", "after the lock"))
        written.set()

    writer = threading.Thread(target=write)
    writer.start()
    holder.execute("COMMIT")  # whether the writer was already waiting or not, it gets in
    holder.close()
    writer.join(ceilings.PROCESS_S)
    assert written.is_set()
    with ConversationLog.open(read_only=True) as log:
        assert log.recent(1)[0].first == "after the lock"


def test_the_log_lives_in_the_data_dir_unless_qwen_log_db_says(tmp_path: Path) -> None:
    from qwencli.paths import data_dir

    assert log_path() == data_dir() / "logs.db"
    assert log_path({"QWEN_LOG_DB": str(tmp_path / "x.db")}) == tmp_path / "x.db"
    assert logs.logging_enabled() and not logs.logging_enabled(no_log=True)
    assert not logs.logging_enabled(environ={"QWEN_NOLOG": "yes"})


# ------------------------------------------------------------------------------------------
# `qwen logs`


def _run(*args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(app, ["logs", *args])
    return done.exit_code, done.stdout, done.stderr


def test_logs_list_show_search_with_json() -> None:
    a, b = _fill()
    code, out, _err = _run("list", "--json")
    document = json.loads(out)
    assert code == 0 and document["schema_version"] == 1
    assert document["path"] == str(log_path())
    assert [(c["id"], c["model"], c["messages"]) for c in document["conversations"]] == [
        (b, "qwen3-4b", 1), (a, "qwen3-8b", 2)]
    code, out, _err = _run("list", "-n", "1")
    assert code == 0 and "qwen3-4b" in out and "qwen3-8b" not in out

    code, out, _err = _run("show", str(a), "--json")
    document = json.loads(out)
    assert document["schema_version"] == 1 and document["id"] == a
    assert document["system"] == "Be brief." and document["thinking_mode"] is True
    assert [(m["role"], m["content"]) for m in document["messages"]] == [
        ("user", "How do Rust lifetimes work?"), ("assistant", "They bound references.")]
    assert document["messages"][1]["completion_tokens"] == 5
    code, out, _err = _run("show", str(a))
    assert code == 0
    assert out.startswith(f"# conversation {a} · qwen3-8b (Q4_K_M) · started ")
    assert "## system\n\nBe brief." in out and "<think>\nborrowck\n</think>" in out
    code, out, _err = _run("show")  # the latest
    assert code == 0 and "Shoes are 50%" in out

    code, out, _err = _run("search", "lifetimes", "--json")
    document = json.loads(out)
    assert code == 0 and document["query"] == "lifetimes"
    assert [r["conversation_id"] for r in document["results"]] == [a]
    code, out, _err = _run("search", "nothing-like-this")
    assert code == 0 and "none found" in out

    code, _out, err = _run("show", "99")
    assert code == 1 and "no conversation 99 in the log" in err


def test_logs_rm_asks_or_needs_yes() -> None:
    a, _b = _fill()
    code, _out, err = _run("rm", str(a))  # CliRunner: no terminal to ask on
    assert code == 1
    assert f"qwen logs rm asks before removing conversation {a}" in err and "--yes" in err
    code, out, _err = _run("rm", str(a), "--yes", "--json")
    assert code == 0 and json.loads(out)["removed"] == [a]
    code, _out, err = _run("rm", "--yes")
    assert code == 2 and "give conversation IDs or --all" in err
    code, _out, err = _run("rm", str(a), "--yes")
    assert code == 1 and f"no conversation {a} in the log" in err
    code, _out, err = _run("rm", "--all", "--yes")
    assert code == 0 and "removed all 1 logged conversations" in err
    code, out, _err = _run("list", "--json")
    assert json.loads(out)["conversations"] == []
    assert _run("path") == (0, f"{log_path()}\n", "")


def test_logs_rm_asks_on_a_terminal() -> None:
    a, b = _fill()

    def rm(answer: str) -> tuple[int, str]:
        child = pexpect.spawn(sys.executable, ["-m", "qwencli", "logs", "rm", str(a)],
                              env=dict(os.environ), encoding="utf-8",
                              timeout=ceilings.PROCESS_S)
        child.expect_exact(f"Remove conversation {a}? [y/N] ")
        child.sendline(answer)
        child.expect(pexpect.EOF)
        child.close()
        return child.exitstatus, child.before

    code, shown = rm("n")
    assert code == 1 and "nothing removed" in shown
    code, shown = rm("y")
    assert code == 0 and f"removed conversation {a}" in shown
    with ConversationLog.open(read_only=True) as log:
        assert [s.id for s in log.recent()] == [b]


def test_logs_commands_on_a_damaged_file_say_so_in_one_line(tmp_path: Path) -> None:
    damaged = tmp_path / "x.db"
    damaged.write_bytes(b"not sqlite at all" * 100)
    done = subprocess.run([sys.executable, "-m", "qwencli", "logs", "search", "x"],
                          capture_output=True, text=True, timeout=ceilings.PROCESS_S,
                          env={**os.environ, "QWEN_LOG_DB": str(damaged)})
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (f"error: the conversation log {damaged} is "
                                           "damaged (file is not a database)")
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------
# chat.logbook: a chat's events, written in order from the background


def _reply(answer: str, seed: int | None = None) -> object:
    from qwencli.chat.engine import Sampling, Stats
    from qwencli.chat.session import Reply

    stats = Stats(10, 10, 4, 0.1, 100.0, 20.0, 0.3, "stop", False)
    return Reply(answer=answer, thinking="hmm", stats=stats, dropped=0,
                 thinking_unfinished=False, sampling=Sampling(seed=seed))


def _header(system: str | None = None) -> object:
    from qwencli.chat.logbook import Header

    return Header(model="m", quant="Q8_0", path="/m.gguf", system=system, thinking=True,
                  think=None, overrides={"seed": 1})


def test_chat_log_writes_turns_undo_regen_and_load_in_order() -> None:
    from qwencli.chat.engine import Sampling
    from qwencli.chat.logbook import ChatLog

    chat_log = ChatLog(log_path())
    chat_log.describe(_header("sys"))
    chat_log.user("one")
    chat_log.answer(_reply("first"), Sampling(seed=1))
    chat_log.user("two")
    chat_log.answer(_reply("second"), Sampling(seed=1))
    chat_log.regenerated(_reply("second again", seed=9), Sampling(seed=9))
    chat_log.user("too long")
    chat_log.not_kept()
    chat_log.undo()  # drops "two" and its (regenerated) answer
    chat_log.system("new system")
    chat_log.restart("loaded system", [{"role": "user", "content": "from a file"},
                                       {"role": "assistant", "content": "saved answer"}])
    chat_log.user("three")
    chat_log.close()
    assert chat_log.warnings() == []
    with ConversationLog.open(read_only=True) as log:
        first, second = sorted(s.id for s in log.recent())
        one = log.get(first)
        assert one.system == "new system" and one.settings["overrides"] == {"seed": 1}
        assert [(m.role, m.content) for m in one.active] == [("user", "one"),
                                                            ("assistant", "first")]
        assert [m.content for m in one.messages if m.superseded] == [
            "two", "second", "second again", "too long"]
        assert one.messages[-2].sampling["seed"] == 9  # the regenerated answer's seed
        two = log.get(second)
        assert two.system == "loaded system"
        assert [m.content for m in two.active] == ["from a file", "saved answer", "three"]


def test_a_chat_log_that_fails_warns_once_and_never_blocks(tmp_path: Path) -> None:
    from qwencli.chat.engine import Sampling
    from qwencli.chat.logbook import ChatLog

    damaged = tmp_path / "bad.db"
    damaged.write_bytes(b"x" * 4096)
    chat_log = ChatLog(damaged)
    for n in range(5):
        chat_log.user(f"message {n}")
        chat_log.answer(_reply("answer"), Sampling())
    chat_log.flush()
    [warning] = chat_log.warnings()
    assert "is damaged" in warning and warning.endswith("this chat is not logged")
    chat_log.close()
    assert chat_log.warnings() == [] and chat_log.conversation_id is None
    off = ChatLog(None)  # logging off: nothing happens, nothing waits
    off.user("x")
    off.close()
    assert not off.enabled and off.warnings() == []
