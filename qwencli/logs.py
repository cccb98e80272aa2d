"""The conversation log: every chat turn in one SQLite file, to list, search and continue.

One file (`log_path()`: `QWEN_LOG_DB`, else `logs.db` in the data directory) in WAL mode, so
readers never wait for a writer and two `qwen chat` processes can write at once (the second
waits up to BUSY_TIMEOUT_S for the first's short transaction). Every message is its own
transaction: a process killed mid-answer leaves the conversation readable up to the last
complete message. Messages are never rewritten: /undo and /regen mark the ones they replace
`superseded`, which a continuation leaves out and `qwen logs show --all` still shows.

The database carries its schema version in `PRAGMA user_version`; a newer file than this qwen
reads is refused in one line. Search uses SQLite's FTS5 where the sqlite3 module has it, and
LIKE otherwise. Every failure of the file (missing folder that cannot be made, read-only,
damaged, locked too long) is a LogError with one line; the chat turns it into one warning.

Nothing here prints; functions take and return plain values and frozen dataclasses.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwencli.errors import QwenError, os_error

if TYPE_CHECKING:  # sqlite3 is imported where it is used: `qwen chat` imports it off its path
    import sqlite3

SCHEMA_VERSION = 1  # PRAGMA user_version of the file this code writes
# How long a writer waits for another one's transaction; the chat writes from a background
# thread, so only its last flush ever waits this long.
BUSY_TIMEOUT_S = 30.0
DB_NAME = "logs.db"
SNIPPET_CHARS = 80

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started TEXT NOT NULL,
        model TEXT,
        quant TEXT,
        path TEXT,
        system TEXT,
        thinking INTEGER,
        settings TEXT NOT NULL DEFAULT '{}')""",
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        created TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        thinking TEXT,
        sampling TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        ttft_s REAL,
        decode_tok_s REAL,
        total_s REAL,
        finish_reason TEXT,
        superseded INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id)",
)

_FTS_SCHEMA = (  # the first statement fails on a sqlite3 without FTS5; then none is run
    """CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
        content, thinking, content='messages', content_rowid='id')""",
    """CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, content, thinking)
        VALUES (new.id, new.content, coalesce(new.thinking, ''));
    END""",
    """CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content, thinking)
        VALUES ('delete', old.id, old.content, coalesce(old.thinking, ''));
    END""",
)


class LogError(QwenError):
    """The conversation log cannot be read or written."""


# ------------------------------------------------------------------------------------------
# Where, and whether


def log_path(environ: Mapping[str, str] | None = None) -> Path:
    """The log file: QWEN_LOG_DB, else logs.db in the data directory."""
    env = os.environ if environ is None else environ
    override = env.get("QWEN_LOG_DB", "").strip()
    if override:
        return Path(override).expanduser()
    from qwencli.paths import data_dir

    return data_dir() / DB_NAME


def logging_enabled(no_log: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `qwen chat` writes the log: not with --no-log, QWEN_NOLOG=1 or `log = false`
    in the config (UsageError for a QWEN_NOLOG that is neither yes nor no)."""
    from qwencli.config import log_enabled
    from qwencli.envvars import env_bool

    if no_log or env_bool("QWEN_NOLOG", environ=environ):
        return False
    return log_enabled()


# ------------------------------------------------------------------------------------------
# What goes in, what comes out


@dataclass(frozen=True)
class NewConversation:
    """A conversation's header, written with its first message."""

    model: str | None = None
    quant: str | None = None
    path: str | None = None
    system: str | None = None
    thinking: bool | None = None  # the thinking mode in effect
    settings: Mapping[str, Any] = field(default_factory=dict)  # `think` and sampling overrides


@dataclass(frozen=True)
class NewMessage:
    role: str  # "user" | "assistant"
    content: str
    thinking: str | None = None
    sampling: Mapping[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    decode_tok_s: float | None = None
    total_s: float | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    created: str
    role: str
    content: str
    thinking: str | None
    sampling: Mapping[str, Any] | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    decode_tok_s: float | None
    total_s: float | None
    finish_reason: str | None
    superseded: bool


@dataclass(frozen=True)
class Summary:
    """One line of `qwen logs list`."""

    id: int
    started: str
    updated: str
    model: str | None
    quant: str | None
    messages: int  # not superseded
    first: str  # the first user message, shortened


@dataclass(frozen=True)
class LoggedConversation:
    id: int
    started: str
    model: str | None
    quant: str | None
    path: str | None
    system: str | None
    thinking: bool | None
    settings: Mapping[str, Any]
    messages: tuple[Message, ...]  # all of them, oldest first; see `active`

    @property
    def active(self) -> tuple[Message, ...]:
        """The messages a continuation sends: none that /undo or /regen replaced."""
        return tuple(m for m in self.messages if not m.superseded)


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    message_id: int
    created: str
    role: str
    model: str | None
    snippet: str


# ------------------------------------------------------------------------------------------
# The file


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _failure(exc: Exception, path: Path, doing: str) -> LogError:
    """One line for anything the file does wrong."""
    import sqlite3

    if isinstance(exc, OSError):
        error = os_error(exc, path, doing)
        return LogError(f"the conversation log: {error.message}", hint=error.hint)
    text = str(exc)
    if type(exc) is sqlite3.DatabaseError or "not a database" in text or "malformed" in text:
        return LogError(f"the conversation log {path} is damaged ({text})",
                        hint=f"move it away (mv {path} {path}.bad); a new one is started")
    if "readonly" in text or "read-only" in text:
        return LogError(f"cannot {doing} the conversation log {path}: it is read-only")
    if "locked" in text or "busy" in text:
        return LogError(f"the conversation log {path} stayed locked by another qwen for "
                        f"{BUSY_TIMEOUT_S:g} s")
    return LogError(f"cannot {doing} the conversation log {path}: {text}")


class ConversationLog:
    """An open log file. `ConversationLog.open(path)` creates it (and its folder) when
    missing; `read_only=True` never creates anything: a missing file reads as empty."""

    def __init__(self, connection: sqlite3.Connection, path: Path, fts: bool) -> None:
        self._db = connection
        self.path = path
        self.fts = fts  # search through FTS5 (else LIKE)

    @classmethod
    def open(cls, path: Path | None = None, *, read_only: bool = False,
             use_fts: bool = True) -> ConversationLog:
        import sqlite3

        path = path or log_path()
        empty = read_only and not path.exists()  # nothing logged yet: an empty log in memory
        try:
            if empty:
                db = sqlite3.connect(":memory:")
            else:
                if not read_only:
                    path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                     check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise _failure(exc, path, "read" if read_only else "write") from None
        try:
            db.isolation_level = None  # transactions are ours: BEGIN ... COMMIT per message
            fts = _prepare(db, use_fts, writable=empty or not read_only)
        except sqlite3.Error as exc:
            db.close()
            raise _failure(exc, path, "open" if read_only else "write") from None
        except LogError:
            db.close()
            raise
        return cls(db, path, fts)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ConversationLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, taken with the write lock at once (no upgrade deadlock between
        two writers), committed when the block ends well."""
        import sqlite3

        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _failure(exc, self.path, "write") from None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        import sqlite3

        try:
            cursor = self._db.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()
        except sqlite3.Error as exc:
            raise _failure(exc, self.path, "read") from None

    # -- writing

    def start(self, header: NewConversation) -> int:
        """A new conversation; its id."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO conversations (started, model, quant, path, system, thinking, "
                "settings) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), header.model, header.quant, header.path, header.system,
                 None if header.thinking is None else int(header.thinking),
                 json.dumps(dict(header.settings))))
            return int(cursor.lastrowid or 0)

    def add(self, conversation_id: int, message: NewMessage) -> int:
        """Append one message (committed before this returns); its id."""
        if message.role not in ("user", "assistant"):
            raise ValueError(f"role {message.role!r}")
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, created, role, content, thinking, "
                "sampling, prompt_tokens, completion_tokens, ttft_s, decode_tok_s, total_s, "
                "finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, _now(), message.role, message.content, message.thinking,
                 None if message.sampling is None else json.dumps(dict(message.sampling)),
                 message.prompt_tokens, message.completion_tokens, message.ttft_s,
                 message.decode_tok_s, message.total_s, message.finish_reason))
            return int(cursor.lastrowid or 0)

    def supersede(self, message_ids: Sequence[int]) -> None:
        """Mark messages replaced (/undo, /regen): kept, but no longer sent on."""
        if not message_ids:
            return
        marks = ",".join("?" * len(message_ids))
        with self._write() as db:
            db.execute(f"UPDATE messages SET superseded = 1 WHERE id IN ({marks})",
                       tuple(message_ids))

    def describe(self, conversation_id: int, header: NewConversation) -> None:
        """Replace a conversation's header (its model, system prompt or settings changed:
        a continuation uses the latest)."""
        with self._write() as db:
            db.execute(
                "UPDATE conversations SET model = ?, quant = ?, path = ?, system = ?, "
                "thinking = ?, settings = ? WHERE id = ?",
                (header.model, header.quant, header.path, header.system,
                 None if header.thinking is None else int(header.thinking),
                 json.dumps(dict(header.settings)), conversation_id))

    def remove(self, conversation_ids: Sequence[int]) -> int:
        """Delete conversations and their messages; how many conversations went."""
        if not conversation_ids:
            return 0
        marks = ",".join("?" * len(conversation_ids))
        ids = tuple(conversation_ids)
        with self._write() as db:
            db.execute(f"DELETE FROM messages WHERE conversation_id IN ({marks})", ids)
            cursor = db.execute(f"DELETE FROM conversations WHERE id IN ({marks})", ids)
            return cursor.rowcount

    # -- reading

    def latest_id(self) -> int | None:
        """The conversation written to last (a continued one counts as new)."""
        rows = self._read("SELECT conversation_id FROM messages ORDER BY id DESC LIMIT 1")
        if rows:
            return int(rows[0][0])
        rows = self._read("SELECT id FROM conversations ORDER BY id DESC LIMIT 1")
        return int(rows[0][0]) if rows else None

    def get(self, conversation_id: int) -> LoggedConversation:
        """A conversation with all its messages; LogError when there is none with that id."""
        rows = self._read("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise LogError(f"no conversation {conversation_id} in the log",
                           hint="`qwen logs list` shows the ids")
        head = rows[0]
        messages = tuple(_message(row) for row in self._read(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,)))
        return LoggedConversation(
            id=int(head["id"]), started=head["started"], model=head["model"],
            quant=head["quant"], path=head["path"], system=head["system"],
            thinking=None if head["thinking"] is None else bool(head["thinking"]),
            settings=_json_object(head["settings"]), messages=messages)

    def recent(self, limit: int = 20) -> tuple[Summary, ...]:
        """The latest conversations, the one written to last first."""
        rows = self._read(
            "SELECT c.id, c.started, c.model, c.quant, "
            "  (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id "
            "   AND m.superseded = 0) AS n, "
            "  (SELECT max(m.id) FROM messages m WHERE m.conversation_id = c.id) AS last, "
            "  (SELECT m.created FROM messages m WHERE m.conversation_id = c.id "
            "   ORDER BY m.id DESC LIMIT 1) AS updated, "
            "  (SELECT m.content FROM messages m WHERE m.conversation_id = c.id "
            "   AND m.role = 'user' ORDER BY m.id LIMIT 1) AS first "
            "FROM conversations c ORDER BY coalesce(last, 0) DESC, c.id DESC LIMIT ?",
            (max(0, limit),))
        return tuple(Summary(id=int(r["id"]), started=r["started"],
                             updated=r["updated"] or r["started"], model=r["model"],
                             quant=r["quant"], messages=int(r["n"]),
                             first=shorten(r["first"] or "")) for r in rows)

    def search(self, text: str, limit: int = 20) -> tuple[SearchHit, ...]:
        """Messages that hold every word of `text` (thinking included), newest first."""
        words = text.split()
        if not words:
            return ()
        if self.fts:
            query = " ".join('"' + word.replace('"', '""') + '"' for word in words)
            rows = self._read(
                "SELECT m.id, m.conversation_id, m.created, m.role, c.model, m.content, "
                "  snippet(messages_fts, 0, '[', ']', '...', 12) AS snip "
                "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
                "JOIN conversations c ON c.id = m.conversation_id "
                "WHERE messages_fts MATCH ? ORDER BY m.id DESC LIMIT ?",
                (query, max(0, limit)))
        else:
            like = " AND ".join(
                "((m.content LIKE ? ESCAPE '\\') OR (coalesce(m.thinking, '') LIKE ? "
                "ESCAPE '\\'))" for _ in words)
            params: list[Any] = []
            for word in words:
                pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%") \
                    .replace("_", "\\_") + "%"
                params += [pattern, pattern]
            rows = self._read(
                "SELECT m.id, m.conversation_id, m.created, m.role, c.model, m.content, "
                "  NULL AS snip FROM messages m JOIN conversations c "
                f"ON c.id = m.conversation_id WHERE {like} ORDER BY m.id DESC LIMIT ?",
                (*params, max(0, limit)))
        return tuple(SearchHit(conversation_id=int(r["conversation_id"]),
                               message_id=int(r["id"]), created=r["created"], role=r["role"],
                               model=r["model"],
                               snippet=_snippet(r["snip"], r["content"], words))
                     for r in rows)


def _prepare(db: sqlite3.Connection, use_fts: bool, writable: bool) -> bool:
    """Check the schema version, create the schema when the file is new; whether FTS5 is
    there for search."""
    import sqlite3

    version = db.execute("PRAGMA user_version").fetchone()[0]  # a damaged file fails here
    if version > SCHEMA_VERSION:
        raise LogError(f"the conversation log was written by a newer qwen (schema "
                       f"{version}; this one reads {SCHEMA_VERSION})",
                       hint="upgrade qwen, or point QWEN_LOG_DB at another file")
    db.execute("PRAGMA foreign_keys = ON")
    if version == 0 and writable:
        # kept in the file from now on; fails only while another qwen creates it (it sets WAL)
        with contextlib.suppress(sqlite3.OperationalError):
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # not made meanwhile
                for statement in _SCHEMA:
                    db.execute(statement)
                if use_fts:
                    try:
                        db.execute(_FTS_SCHEMA[0])
                    except sqlite3.OperationalError:  # a sqlite3 without FTS5: LIKE search
                        pass
                    else:
                        for statement in _FTS_SCHEMA[1:]:
                            db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    db.execute("PRAGMA synchronous = NORMAL")  # WAL: a commit survives a killed process
    if version == 0 and not writable:
        return False
    found = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone()
    return found is not None and use_fts


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=int(row["id"]), conversation_id=int(row["conversation_id"]),
        created=row["created"], role=row["role"], content=row["content"],
        thinking=row["thinking"],
        sampling=_json_object(row["sampling"]) if row["sampling"] is not None else None,
        prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
        ttft_s=row["ttft_s"], decode_tok_s=row["decode_tok_s"], total_s=row["total_s"],
        finish_reason=row["finish_reason"], superseded=bool(row["superseded"]))


def _json_object(text: str | None) -> dict[str, Any]:
    """A JSON object column; anything else (a hand-edited file) reads as empty."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def shorten(text: str, limit: int = SNIPPET_CHARS) -> str:
    """One line of at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."


def _snippet(found: str | None, content: str, words: Sequence[str]) -> str:
    """FTS5's snippet, or a window around the first word found (LIKE search, or a match in
    the thinking only)."""
    if found and "[" in found:
        return " ".join(found.split())
    text = " ".join(content.split())
    at = min((i for i in (text.lower().find(w.lower()) for w in words) if i >= 0), default=0)
    start = max(0, at - SNIPPET_CHARS // 3)
    piece = text[start:start + SNIPPET_CHARS]
    return ("..." if start else "") + piece + ("..." if start + SNIPPET_CHARS < len(text) else "")
