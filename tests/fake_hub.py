"""A local imitation of the Hugging Face Hub's HTTP API, for tests of the real huggingface_hub
client and of our own HTTP Range reads. It serves files from a folder per repository.

Endpoints (as the Hub answers them):
- GET /api/models/{repo}/tree/{revision}[/{path}]?recursive=1 : JSON listing with size and
  lfs.oid (sha256) for every file.
- GET /api/models/{repo}[/revision/{revision}] : model info with `siblings`.
- GET|HEAD /{repo}/resolve/{revision}/{path} : the file, with Range (206), ETag and
  X-Linked-Etag (the sha256), X-Linked-Size, X-Repo-Commit.
- GET /api/models?author=&search= : repositories whose name contains `search` (nearest names).
- A gated repository answers 401 with X-Error-Code: GatedRepo unless the request carries the
  repository's token; an unknown repository 401 RepoNotFound; an unknown file 404 EntryNotFound.

Every request is recorded (method, path, Range header) so tests can count requests and bytes.

Fault injection, for transfers that go wrong: `faults["repo/path"] = Fault(...)` cuts the
connection at a file offset, pauses there until the test releases it (so a client can be
killed at an exact byte), or flips a byte of the body; `throttle_bps` slows every body down;
`ignore_range` answers 200 with the whole file to a Range request, like some proxies do.

A pause is an event for the test to wait on (`fault.reached`), never a delay: it holds until
`fault.released` is set, however long that takes. It never gives up and sends the rest on its
own; what would make a paused transfer go on without the test is reported in `problems`
(checked by `check()`, which the fixtures call at teardown): a pause never released within
ceilings.PAUSE_S (the connection is cut, not finished), and a new request for a file whose
transfer is held (the client gave up waiting: its read timeout is shorter than the pause).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from tests import ceilings

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    bytes_sent: int = 0


@dataclass
class Fault:
    """What goes wrong while one file's body is sent (offsets are positions in the file)."""

    cut_at: int | None = None  # close the connection when the body reaches this offset
    pause_at: int | None = None  # stop there until `released` is set (then carry on)
    corrupt_at: int | None = None  # send the byte at this offset flipped
    times: int = 1  # GET requests it applies to; 0 = every request
    reached: threading.Event = field(default_factory=threading.Event)  # cut/pause offset hit
    released: threading.Event = field(default_factory=threading.Event)
    held: bool = False  # a transfer is stopped at pause_at now


@dataclass
class FakeHub:
    root: Path
    url: str = ""
    gated: dict[str, str] = field(default_factory=dict)  # repo -> token that opens it
    requests: list[Request] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)  # "repo/path" -> fault
    throttle_bps: int | None = None  # body bytes per second, for every file
    ignore_range: bool = False
    problems: list[str] = field(default_factory=list)  # what check() reports
    _armed: list[tuple[str, Fault]] = field(default_factory=list)  # every fault, even used up
    _sha: dict[Path, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fault(self, repo: str, path: str, **kwargs: object) -> Fault:
        """Arm a fault for `repo/path` (see Fault)."""
        armed = Fault(**kwargs)  # type: ignore[arg-type]
        self.faults[f"{repo}/{path}"] = armed
        self._armed.append((f"{repo}/{path}", armed))
        return armed

    def take_fault(self, key: str) -> Fault | None:
        with self._lock:
            fault = self.faults.get(key)
            if fault is None:
                return None
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    del self.faults[key]
            return fault

    def release_all(self) -> None:
        """Let every paused transfer go on (tests call it when they are done), including those
        of faults already used up and so no longer in `faults`."""
        for _key, fault in self._armed:
            fault.released.set()

    def held_at(self, key: str) -> int | None:
        """The offset where a transfer of `repo/path` is held by a pause now, if one is."""
        for armed_key, fault in self._armed:
            if armed_key == key and fault.held and not fault.released.is_set():
                return fault.pause_at
        return None

    def check(self) -> None:
        """Fail the test if the server saw a paused transfer go wrong (see the module doc)."""
        assert not self.problems, "the fake Hub saw: " + "; ".join(self.problems)

    def ranges(self, path_end: str) -> list[str | None]:
        """The Range headers of the GET requests for a file (URL ending with `path_end`)."""
        return [r.range for r in self.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(path_end)]

    def add_file(self, repo: str, path: str, source: Path | bytes) -> Path:
        """Put a file into a repository (copied, or written from bytes)."""
        target = self.root / repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)
        self._sha.pop(target, None)
        return target

    def sha256(self, file: Path) -> str:
        if file not in self._sha:
            digest = hashlib.sha256()
            with file.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            self._sha[file] = digest.hexdigest()
        return self._sha[file]

    def files(self, repo: str) -> Iterator[Path]:
        base = self.root / repo
        return (p for p in sorted(base.rglob("*")) if p.is_file())

    def bytes_served(self) -> int:
        return sum(r.bytes_sent for r in self.requests)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    # -- helpers ---------------------------------------------------------------------------
    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None
                   ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._record.bytes_sent += len(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send_json(status, {"error": message}, {"X-Error-Code": code,
                                                     "X-Error-Message": message})

    def _repo_allowed(self, repo: str) -> bool:
        if not (self.hub.root / repo).is_dir():
            self._error(401, "RepoNotFound", "Repository not found")
            return False
        token = self.hub.gated.get(repo)
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            self._error(401, "GatedRepo", f"Access to model {repo} is restricted.")
            return False
        return True

    # -- routes ----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._record = Request(self.command, self.path, self.headers.get("Range"))
        self.hub.requests.append(self._record)
        path = unquote(urlparse(self.path).path)
        if path == "/api/models":
            self._search(parse_qs(urlparse(self.path).query))
            return
        tree = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path)
        info = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
        resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if tree:
            self._tree(tree.group(1), tree.group(3) or "")
        elif info:
            self._info(info.group(1))
        elif resolve:
            self._resolve(resolve.group(1), resolve.group(3))
        else:
            self._error(404, "NotFound", f"no route for {path}")

    def _entry(self, repo: str, file: Path) -> dict[str, object]:
        rel = file.relative_to(self.hub.root / repo).as_posix()
        size = file.stat().st_size
        sha = self.hub.sha256(file)
        return {"type": "file", "path": rel, "size": size, "oid": sha[:40],
                "lfs": {"oid": sha, "size": size, "pointerSize": 134}}

    def _tree(self, repo: str, sub: str) -> None:
        if not self._repo_allowed(repo):
            return
        entries = [self._entry(repo, f) for f in self.hub.files(repo)
                   if f.relative_to(self.hub.root / repo).as_posix().startswith(sub)]
        self._send_json(200, entries)

    def _info(self, repo: str) -> None:
        if not self._repo_allowed(repo):
            return
        siblings = [{"rfilename": e["path"], "size": e["size"],
                     "lfs": {"sha256": e["lfs"]["oid"], "size": e["size"],  # type: ignore[index]
                             "pointerSize": 134}}
                    for e in (self._entry(repo, f) for f in self.hub.files(repo))]
        self._send_json(200, {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                              "gated": repo in self.hub.gated, "siblings": siblings})

    def _search(self, query: dict[str, list[str]]) -> None:
        author = (query.get("author") or [""])[0].lower()
        word = (query.get("search") or [""])[0].lower()
        found = []
        owners = sorted(p for p in self.hub.root.iterdir() if p.is_dir()) \
            if self.hub.root.is_dir() else []
        for owner in owners:
            if author and owner.name.lower() != author:
                continue
            for repo in sorted(p for p in owner.iterdir() if p.is_dir()):
                name = f"{owner.name}/{repo.name}"
                if word in name.lower():
                    found.append({"id": name, "modelId": name, "_id": name, "private": False})
        self._send_json(200, found)

    def _resolve(self, repo: str, rel: str) -> None:
        if not self._repo_allowed(repo):
            return
        file = self.hub.root / repo / rel
        if not file.is_file():
            self._error(404, "EntryNotFound", f"{rel} does not exist")
            return
        size = file.stat().st_size
        sha = self.hub.sha256(file)
        start, end = 0, size - 1
        status = 200
        wanted = None if self.hub.ignore_range else self.headers.get("Range")
        match = re.match(r"bytes=(\d+)-(\d*)$", wanted or "")
        if match:
            start = int(match.group(1))
            end = min(size - 1, int(match.group(2))) if match.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha}"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(size))
        self.send_header("X-Repo-Commit", COMMIT)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        held = self.hub.held_at(f"{repo}/{rel}")
        if held is not None:
            self.hub.problems.append(
                f"GET {self.path} (Range {self.headers.get('Range')}) while its transfer was "
                f"held at byte {held}: the client stopped waiting (a read timeout shorter "
                "than the pause?) and would finish the file without the test")
        fault = self.hub.take_fault(f"{repo}/{rel}")
        # a client that had what it needed (a header read), or was killed, hangs up
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._send_body(file, start, end + 1, fault)

    def _hold(self, fault: Fault, pos: int) -> bool:
        """Stop the body at a pause until the test releases it; False: never released."""
        self.wfile.flush()
        fault.held = True
        fault.reached.set()
        try:
            if fault.released.wait(ceilings.PAUSE_S):
                return True
        finally:
            fault.held = False
        self.hub.problems.append(f"{self.path}: the pause at byte {pos} was never released "
                                 f"({ceilings.PAUSE_S} s); the connection was cut")
        return False

    def _send_body(self, file: Path, start: int, stop: int, fault: Fault | None) -> None:
        step = 64 << 10 if self.hub.throttle_bps else 1 << 20
        t0 = time.monotonic()
        sent = 0
        if fault and fault.cut_at == start:  # a resumed request that starts at the cut
            fault.reached.set()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        with file.open("rb") as f:
            f.seek(start)
            pos = start
            while pos < stop:
                limit = stop
                for mark in (fault.cut_at, fault.pause_at) if fault else ():
                    if mark is not None and pos < mark < limit:
                        limit = mark
                chunk = f.read(min(step, limit - pos))
                if not chunk:
                    break
                if fault and fault.corrupt_at is not None and \
                        pos <= fault.corrupt_at < pos + len(chunk):
                    at = fault.corrupt_at - pos
                    chunk = chunk[:at] + bytes([chunk[at] ^ 0xFF]) + chunk[at + 1:]
                self.wfile.write(chunk)
                self._record.bytes_sent += len(chunk)
                pos += len(chunk)
                sent += len(chunk)
                if self.hub.throttle_bps:
                    ahead = sent / self.hub.throttle_bps - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                if fault and pos == fault.pause_at and not self._hold(fault, pos):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault and pos == fault.cut_at:
                    self.wfile.flush()
                    fault.reached.set()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return


def start(root: Path) -> tuple[FakeHub, ThreadingHTTPServer]:
    """Start the server on 127.0.0.1 (a free port) in a daemon thread."""
    hub = FakeHub(root=root)
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return hub, server
