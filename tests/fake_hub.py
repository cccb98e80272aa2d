"""A local imitation of the Hugging Face Hub's HTTP API, for tests of the real huggingface_hub
client and of our own HTTP Range reads. It serves files from a folder per repository.

Endpoints (as the Hub answers them):
- GET /api/models/{repo}/tree/{revision}[/{path}]?recursive=1 : JSON listing with size and
  lfs.oid (sha256) for every file.
- GET /api/models/{repo}[/revision/{revision}] : model info with `siblings`.
- GET|HEAD /{repo}/resolve/{revision}/{path} : the file, with Range (206), ETag and
  X-Linked-Etag (the sha256), X-Linked-Size, X-Repo-Commit.
- A gated repository answers 401 with X-Error-Code: GatedRepo unless the request carries the
  repository's token; an unknown repository 401 RepoNotFound; an unknown file 404 EntryNotFound.

Every request is recorded (method, path, Range header) so tests can count requests and bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    bytes_sent: int = 0


@dataclass
class FakeHub:
    root: Path
    url: str = ""
    gated: dict[str, str] = field(default_factory=dict)  # repo -> token that opens it
    requests: list[Request] = field(default_factory=list)
    _sha: dict[Path, str] = field(default_factory=dict)

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
        siblings = [{"rfilename": e["path"], "size": e["size"], "lfs": e["lfs"]}
                    for e in (self._entry(repo, f) for f in self.hub.files(repo))]
        self._send_json(200, {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                              "gated": repo in self.hub.gated, "siblings": siblings})

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
        wanted = self.headers.get("Range")
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
        with file.open("rb") as f:
            f.seek(start)
            remaining = length
            try:
                while remaining:
                    chunk = f.read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self._record.bytes_sent += len(chunk)
                    remaining -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client had what it needed (a header read) and hung up


def start(root: Path) -> tuple[FakeHub, ThreadingHTTPServer]:
    """Start the server on 127.0.0.1 (a free port) in a daemon thread."""
    hub = FakeHub(root=root)
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hub, server
