"""A chat's turns, written to the conversation log (qwencli.logs) without slowing the answer.

`ChatLog` takes the chat's events (a user message, an answer, /undo, /regen, /clear, /load,
/system) and writes them from a background thread, in order, one transaction per message. The
chat never waits for the log except at `flush()`, after its last answer, for the last message
to be committed (a fraction of a millisecond once the file is open). Opening the file, the
first commit's sync and the checkpoint when the file is closed happen while the model loads,
answers, or after the answer: a process that ends in the middle loses nothing committed (SQLite
replays its write-ahead log on the next open).

A log that cannot be written (read-only, damaged, locked for too long) is reported once through
`warnings()` and then left alone: the chat goes on, unlogged. Nothing here prints.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwencli.errors import QwenError

if TYPE_CHECKING:
    from qwencli.chat.engine import Sampling
    from qwencli.chat.session import Reply
    from qwencli.logs import ConversationLog, LoggedConversation, NewConversation

FLUSH_TIMEOUT_S = 60.0  # longer than logs.BUSY_TIMEOUT_S: a locked log gives up first


@dataclass(frozen=True)
class Header:
    """What a conversation's log row says about it."""

    model: str | None
    quant: str | None
    path: str | None
    system: str | None
    thinking: bool | None
    think: bool | None  # what was asked (--think/--no-think), for a continuation
    overrides: Mapping[str, Any]


def _new_conversation(header: Header) -> NewConversation:
    from qwencli.logs import NewConversation

    return NewConversation(model=header.model, quant=header.quant, path=header.path,
                           system=header.system, thinking=header.thinking,
                           settings={"think": header.think,
                                     "overrides": dict(header.overrides)})


def sampling_dict(sampling: Sampling) -> dict[str, Any]:
    return {f.name: getattr(sampling, f.name) for f in fields(sampling)}


class ChatLog:
    """The log of one chat process. `path` None: logging is off (every call does nothing).

    `conversation`: a logged conversation this chat continues (its active messages are
    the ones /undo and /regen may replace)."""

    def __init__(self, path: Path | None, header: Header | None = None,
                 conversation: LoggedConversation | None = None) -> None:
        self.path = path
        self.header = header or Header(None, None, None, None, None, None, {})
        self.conversation_id: int | None = conversation.id if conversation else None
        self.waited_s = 0.0  # time the chat spent waiting for the log (flush)
        self.worked_s = 0.0  # time the writer spent (open, writes), in the background
        self._ids: list[tuple[str, int]] = [  # (role, id) of the active messages, in order
            (m.role, m.id) for m in (conversation.active if conversation else ())]
        self._pending: list[dict[str, str]] = []  # messages to write when a new one starts
        self._warnings: list[str] = []
        self._failed = False
        self._log: ConversationLog | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = \
            queue.Queue()
        self._thread: threading.Thread | None = None
        if path is not None:
            self._thread = threading.Thread(target=self._run, name="qwen-log", daemon=True)
            self._thread.start()
            self._put(self._open)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    # -- what the chat tells it (returns at once)

    def user(self, text: str) -> None:
        self._put(self._user, text)

    def answer(self, reply: Reply, sampling: Sampling) -> None:
        """An answer (`sampling`: the settings it was made with)."""
        self._put(self._answer, reply, sampling_dict(sampling))

    def not_kept(self) -> None:
        """The last user message got no answer (too long, or stopped before the first
        token): the chat forgot it, so a continuation should too."""
        self._put(self._drop_last, ("user",))

    def undo(self) -> None:
        """/undo: the last exchange is gone from the conversation."""
        self._put(self._drop_last, ("assistant", "user"))

    def regenerated(self, reply: Reply, sampling: Sampling) -> None:
        """/regen: a new answer replaces the last one."""
        self._put(self._drop_last, ("assistant",))
        self._put(self._answer, reply, sampling_dict(sampling))

    def restart(self, system: str | None, messages: Sequence[Mapping[str, str]] = (),
                **changes: Any) -> None:
        """/clear or /load: the next message starts a new logged conversation, which begins
        with `messages` (those /load read)."""
        self._put(self._restart, system, [dict(m) for m in messages], changes)

    def system(self, text: str | None) -> None:
        """/system TEXT."""
        self._put(self._change, {"system": text})

    def settings(self, think: bool | None, thinking: bool,
                 overrides: Mapping[str, Any]) -> None:
        """/set, /think, /no_think: the conversation records its latest settings (a
        continuation uses them)."""
        self._put(self._change, {"think": think, "thinking": thinking,
                                 "overrides": dict(overrides)})

    def describe(self, header: Header) -> None:
        """What the conversation records about itself: the model is known only once it is
        loaded (the log is opened before, while it loads); a continued conversation takes
        this run's model and settings as its latest."""
        self._put(self._describe, header)

    def flush(self) -> None:
        """Wait until everything told so far is committed (or has failed)."""
        if self._thread is None:
            return
        start = time.perf_counter()
        done = threading.Event()
        self._queue.put((lambda: done.set(), ()))
        done.wait(FLUSH_TIMEOUT_S)
        self.waited_s += time.perf_counter() - start

    def close(self) -> None:
        """Commit what is left and let the writer close the file in the background."""
        if self._thread is None:
            return
        self.flush()
        self._queue.put(None)

    def warnings(self) -> list[str]:
        """Warnings not shown yet (at most one: the log gives up after its first failure)."""
        with self._lock:
            out, self._warnings = self._warnings, []
        return out

    # -- the writer thread

    def _put(self, operation: Callable[..., None], *args: Any) -> None:
        if self._thread is not None:
            self._queue.put((operation, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                if self._log is not None:
                    self._log.close()  # the checkpoint: nothing is lost if cut short
                return
            operation, args = item
            if self._failed and getattr(operation, "__self__", None) is self:
                continue  # the log gave up; flush markers still answer
            start = time.perf_counter()
            try:
                operation(*args)
            except QwenError as exc:
                self._fail(exc.message)
            except Exception as exc:  # a log must never take the chat down
                self._fail(f"the conversation log failed: {type(exc).__name__}: {exc}")
            self.worked_s += time.perf_counter() - start

    def _fail(self, message: str) -> None:
        self._failed = True
        with self._lock:
            self._warnings.append(f"{message}; this chat is not logged")
        if self._log is not None:
            with contextlib.suppress(Exception):  # already failing; the warning says so
                self._log.close()
            self._log = None

    def _open(self) -> None:
        from qwencli.logs import ConversationLog

        self._log = ConversationLog.open(self.path)

    def _write_log(self) -> ConversationLog:
        assert self._log is not None
        return self._log

    def _ensure_conversation(self) -> int:
        """The logged conversation's id, created (with any /load-ed messages) on first use."""
        if self.conversation_id is None:
            from qwencli.logs import NewMessage

            log = self._write_log()
            self.conversation_id = log.start(_new_conversation(self.header))
            for message in self._pending:
                message_id = log.add(self.conversation_id,
                                     NewMessage(message["role"], message["content"]))
                self._ids.append((message["role"], message_id))
            self._pending = []
        return self.conversation_id

    def _user(self, text: str) -> None:
        from qwencli.logs import NewMessage

        cid = self._ensure_conversation()
        self._ids.append(("user", self._write_log().add(cid, NewMessage("user", text))))

    def _answer(self, reply: Reply, sampling: dict[str, Any]) -> None:
        from qwencli.logs import NewMessage

        s = reply.stats
        cid = self._ensure_conversation()
        message_id = self._write_log().add(cid, NewMessage(
            "assistant", reply.answer, thinking=reply.thinking, sampling=sampling,
            prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens,
            ttft_s=round(s.ttft_s, 4), decode_tok_s=round(s.decode_tok_s, 2),
            total_s=round(s.total_s, 4), finish_reason=s.finish_reason))
        self._ids.append(("assistant", message_id))

    def _drop_last(self, roles: tuple[str, ...]) -> None:
        """Supersede the newest active messages when their roles are `roles` (newest
        first); a shorter match drops what matches."""
        gone: list[int] = []
        for role in roles:
            if self._ids and self._ids[-1][0] == role:
                gone.append(self._ids.pop()[1])
        if gone:
            self._write_log().supersede(gone)

    def _restart(self, system: str | None, messages: list[dict[str, str]],
                 changes: dict[str, Any]) -> None:
        self.conversation_id = None
        self._ids = []
        self._pending = messages
        self.header = _replace(self.header, system=system, **changes)

    def _change(self, changes: dict[str, Any]) -> None:
        self._describe(_replace(self.header, **changes))

    def _describe(self, header: Header) -> None:
        changed = header != self.header
        self.header = header
        if changed and self.conversation_id is not None:
            self._write_log().describe(self.conversation_id, _new_conversation(header))


def _replace(header: Header, **changes: Any) -> Header:
    from dataclasses import replace

    return replace(header, **changes)


# ------------------------------------------------------------------------------------------
# Continuing a logged conversation (`qwen chat -c`, `--cid ID`)


def read_continued(conversation_id: int | None, path: Path | None = None) -> LoggedConversation:
    """The conversation to continue: `conversation_id`, or the latest one (None). LogError
    when the log has none, or cannot be read."""
    from qwencli.logs import ConversationLog, LogError, log_path

    with ConversationLog.open(path or log_path(), read_only=True) as log:
        wanted = conversation_id if conversation_id is not None else log.latest_id()
        if wanted is None:
            raise LogError("there is no conversation in the log to continue",
                           hint='start one: qwen chat "..."')
        return log.get(wanted)


def continued_model(past: LoggedConversation) -> str | None:
    """The model a continuation runs: the very file when it is still there, else the
    reference it was chosen by."""
    if past.path and Path(past.path).is_file():
        return past.path
    return past.model


def continued_settings(past: LoggedConversation) -> tuple[bool | None, dict[str, Any]]:
    """The --think choice and sampling overrides a conversation was logged with (values of
    the wrong kind, from a hand-edited file, are left out)."""
    from qwencli.chat.session import SAMPLING_KEYS

    think = past.settings.get("think")
    overrides = past.settings.get("overrides")
    kept = {key: value for key, value in (overrides if isinstance(overrides, dict) else {})
            .items() if key in SAMPLING_KEYS and isinstance(value, (int, float))
            and not isinstance(value, bool)}
    return (think if isinstance(think, bool) else None), kept


def past_messages(past: LoggedConversation) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in past.active]
