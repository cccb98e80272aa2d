"""Writing files so that nothing is ever seen half-written, with several qwen processes at once.

Every file qwen writes (the config, the chat history, saved conversations, the header and
bandwidth caches, the Hub cache's refs and records) is written to a temporary file with a unique
name in the same folder, then renamed over the target: a reader sees the old file or the new
one, never a mixture, and two processes writing the same file at once each rename a whole file
(the last one wins) instead of tripping over one shared temporary name. Folders are created with
`exist_ok`, so two processes creating the same tree do not race.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def ensure_dir(folder: Path) -> Path:
    """Create `folder` and its parents; safe when another process does the same."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """A temporary file beside `path` (its descriptor and name) that replaces `path` in one
    rename when the block ends well, and is removed when it does not."""
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, data: bytes | str, *, encoding: str = "utf-8",
                 durable: bool = False) -> None:
    """Replace `path` with `data` in one rename. `durable` also syncs the bytes to disk first
    (for what a person would miss after a power cut: a saved conversation, the config).

    Raises OSError (the caller maps it to a message); the temporary file never stays behind.
    """
    payload = data.encode(encoding) if isinstance(data, str) else data
    with _replacing(path) as (fd, _tmp), os.fdopen(fd, "wb") as out:
        out.write(payload)
        if durable:
            out.flush()
            os.fsync(out.fileno())


def atomic_copy(source: Path, path: Path) -> None:
    """Copy `source` over `path` in one rename (streamed: blobs are gigabytes)."""
    with _replacing(path) as (fd, tmp):
        os.close(fd)
        shutil.copyfile(source, tmp)


def atomic_symlink(target: str, link: Path) -> None:
    """Point `link` at `target` (a relative path, as the Hugging Face cache does) in one rename,
    replacing whatever `link` was; two processes linking the same entry both succeed."""
    ensure_dir(link.parent)
    for attempt in range(100):
        tmp = link.with_name(f".{link.name}.{os.getpid()}.{attempt}.link")
        try:
            os.symlink(target, tmp)
        except FileExistsError:
            continue
        try:
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    raise FileExistsError(f"cannot create a temporary link beside {link}")
