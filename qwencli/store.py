"""The local side of downloads: GGUF models in the standard Hugging Face cache.

Files live where `hf download` and every other Hub client put them, so a model fetched by one
tool is seen by the others:

    <HF_HUB_CACHE>/models--<owner>--<name>/
        blobs/<sha256>                 the content, named by its hash
        blobs/<sha256>.incomplete      a partial transfer (resumable)
        blobs/<sha256>.qwen-pull.json  ours: what the partial will become (repo path, size, set)
        snapshots/<commit>/<path>      a relative symlink to ../../blobs/<sha256> (a copy where
                                       symlinks fail)
        refs/main                      the commit `main` pointed to

A file is *complete* only when it is in a snapshot (blobs are moved there only after the sha256
check) and, for a split GGUF set, only when every part is; `.incomplete` blobs are always
partial. Nothing here touches the network.

Everything in the cache comes from outside (other tools, other people, a disk that filled up),
so it is read with bounds and checked, never trusted:

- A snapshot entry is a model of this cache only when it is a regular file, or a link that
  resolves to a regular file directly inside the same repository's `blobs/`. A link anywhere
  else is a *foreign link* (listed as such, never complete, never loaded through the cache); a
  link to nothing is a *broken link*; a GGUF file shorter than its own header says is
  *damaged* (truncated). None of them is complete; `qwen rm` removes the entry (never a link's
  target) and `qwen pull` fetches a damaged file again.
- A folder is never followed through a link: a `snapshots/<commit>` that is a link is one
  foreign entry, and nothing behind it is listed, written or deleted.
- `deletable` is the one rule for what may be deleted; every deletion goes through `delete`.
- Refs and our records are read with a size bound and validated field by field; a malformed
  one is skipped, never fatal to the listing of the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwencli import gguf_names
from qwencli.catalog import load_catalog, resolve_catalog_ref
from qwencli.errors import QwenError
from qwencli.fileio import atomic_copy, atomic_symlink, atomic_write
from qwencli.paths import hub_cache
from qwencli.refs import CatalogRef, HubRef, LocalRef, parse_ref

SIDECAR_SUFFIX = ".qwen-pull.json"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_BLOB_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # sha256, git object id, unhashed-<sha1>
_MAX_REF_BYTES = 256  # a ref holds one commit hash
_MAX_RECORD_BYTES = 1 << 20  # our record: a few hundred bytes per part of a set
_MAX_FILE_BYTES = 1 << 50  # 1 PiB: a size beyond this in a record is not a size


class StoreError(QwenError):
    """The cache could not be read or changed (permissions, a download in progress)."""


# --------------------------------------------------------------------------------------------
# Where things are


def repo_dir(repo: str, cache: Path | None = None) -> Path:
    """`models--owner--name`; an existing folder whose name differs only in case is reused."""
    base = cache or hub_cache()
    name = "models--" + "--".join(repo.split("/"))
    exact = base / name
    if exact.is_dir() or not base.is_dir():
        return exact
    lowered = name.lower()
    for entry in _iterdir(base):
        if entry.name.lower() == lowered and entry.is_dir():
            return entry
    return exact


def repo_of_dir(folder: Path) -> str | None:
    """The `owner/name` a cache folder holds (None for datasets, spaces, stray folders)."""
    if not folder.name.startswith("models--"):
        return None
    parts = folder.name[len("models--"):].split("--")
    return "/".join(parts) if len(parts) == 2 and all(parts) else None


def blob_path(repo: str, blob: str, cache: Path | None = None) -> Path:
    return repo_dir(repo, cache) / "blobs" / blob


def partial_path(repo: str, blob: str, cache: Path | None = None) -> Path:
    return repo_dir(repo, cache) / "blobs" / f"{blob}.incomplete"


def sidecar_path(repo: str, blob: str, cache: Path | None = None) -> Path:
    return repo_dir(repo, cache) / "blobs" / f"{blob}{SIDECAR_SUFFIX}"


def snapshot_path(repo: str, commit: str, path: str, cache: Path | None = None) -> Path:
    return repo_dir(repo, cache) / "snapshots" / commit / path


def lock_path(repo: str, blob: str, cache: Path | None = None) -> Path:
    """The lock huggingface_hub takes for the same blob, so `hf download` and we never write
    one partial file at the same time."""
    base = cache or hub_cache()
    return base / ".locks" / repo_dir(repo, base).name / f"{blob}.lock"


def read_ref(repo: str, revision: str, cache: Path | None = None) -> str | None:
    """The commit a branch or tag points to in the cache; a full commit hash is itself."""
    if _COMMIT_RE.match(revision):
        return revision
    folder = repo_dir(repo, cache)
    ref = folder / "refs" / revision
    if not _real_below(ref, folder):
        return None
    return _read_commit(ref)


def _read_commit(ref: Path) -> str | None:
    """The commit a ref file names: a bounded read, one 40-hex hash or nothing."""
    data = _read_small(ref, _MAX_REF_BYTES)
    if data is None:
        return None
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return text if _COMMIT_RE.match(text) else None


def write_ref(repo: str, revision: str, commit: str, cache: Path | None = None) -> None:
    if revision == commit:
        return
    folder = repo_dir(repo, cache)
    ref = folder / "refs" / revision
    _check_writable(ref, folder)
    if _read_commit(ref) == commit:
        return
    atomic_write(ref, commit)


def link_snapshot(repo: str, commit: str, path: str, blob: str,
                  cache: Path | None = None, *, new_blob: bool = False) -> Path:
    """Point `snapshots/<commit>/<path>` at the blob: a relative symlink like huggingface_hub
    makes (replaced in one rename, so two processes linking it both succeed), or where symlinks
    fail (Windows without developer mode) the file itself: a new blob is moved there (no second
    copy on disk), an older one is copied."""
    source = blob_path(repo, blob, cache)
    target = snapshot_path(repo, commit, path, cache)
    folder = repo_dir(repo, cache)
    _check_writable(target, folder)  # never write through a linked folder
    _check_writable(source, folder)
    if target.is_symlink() and target.resolve() == source.resolve():
        return target
    try:
        atomic_symlink(os.path.relpath(source, target.parent), target)
    except (OSError, NotImplementedError):
        if new_blob:
            os.replace(source, target)
        else:
            atomic_copy(source, target)
    return target


def write_sidecar(repo: str, blob: str, record: dict[str, Any], cache: Path | None = None
                  ) -> None:
    """What a partial blob will become, so `qwen list` can name it and give a percentage."""
    target = sidecar_path(repo, blob, cache)
    _check_writable(target, repo_dir(repo, cache))
    atomic_write(target, json.dumps(record, indent=1))


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """Our record beside a partial, validated field by field; None when anything is off (the
    partial is then shown as another tool's, with no name and no percentage)."""
    raw = _read_small(path, _MAX_RECORD_BYTES)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    repo, rel, commit, size, blob = (data.get(k) for k in ("repo", "path", "commit", "size",
                                                             "blob"))
    if not (isinstance(repo, str) and _valid_repo_path(rel) and isinstance(commit, str)
            and _COMMIT_RE.match(commit) and _valid_size(size) and isinstance(blob, str)
            and _BLOB_RE.match(blob) and path.name == f"{blob}{SIDECAR_SUFFIX}"):
        return None
    siblings = data.get("set")
    valid_set = [{"path": x["path"], "size": x["size"]} for x in siblings
                 if isinstance(x, dict) and _valid_repo_path(x.get("path"))
                 and _valid_size(x.get("size"))] if isinstance(siblings, list) else []
    return {**data, "set": valid_set}


def _valid_size(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_FILE_BYTES


def _valid_repo_path(value: object) -> bool:
    """A file path inside a repository: relative, `/`-separated, no `.`/`..`/empty parts."""
    if not isinstance(value, str) or not value or len(value) > 1024 or "\\" in value \
            or "\0" in value:
        return False
    return all(part not in ("", ".", "..") for part in value.split("/"))


def _read_small(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes when it holds at most `limit` (never a link, a FIFO, a folder);
    None when it is anything else or cannot be read."""
    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


# --------------------------------------------------------------------------------------------
# Containment: what belongs to a repository's folder, and what may be deleted


def _real_below(path: Path, folder: Path) -> bool:
    """Whether `path` lies lexically below `folder` and no folder on the way (`folder` itself
    included) is a link: what is found there is the cache's, not somewhere a link leads.
    `path` itself may be a link (it is looked at, never followed)."""
    lexical_folder = os.path.abspath(folder)
    parent = os.path.dirname(os.path.abspath(path))
    rel = os.path.relpath(parent, lexical_folder)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return False
    real_folder = os.path.realpath(lexical_folder)
    if real_folder != os.path.join(os.path.realpath(os.path.dirname(lexical_folder)),
                                   os.path.basename(lexical_folder)):
        return False  # the repository folder itself is a link
    return os.path.realpath(parent) == os.path.normpath(os.path.join(real_folder, rel))


def _check_writable(path: Path, folder: Path) -> None:
    """Refuse to write `path` when a folder on its way (existing, below the repo folder) is a
    link: the write would land outside the cache, over whatever is there."""
    existing = Path(os.path.abspath(path)).parent
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    probe = existing / "x"
    if _inside(probe, folder) and os.path.lexists(folder) and not _real_below(probe, folder):
        where = next((p for p in (existing, *existing.parents) if p.is_symlink()), existing)
        raise StoreError(f"{where} is a link to {os.path.realpath(where)}, outside the "
                         f"cache: refusing to write through it",
                         hint="remove that link (`qwen rm MODEL` removes one in snapshots/), "
                              "then run it again")


def deletable(path: Path, folder: Path) -> str | None:
    """THE rule for what qwen may delete, for the repository folder `folder`
    (`<cache>/models--owner--name`); every deletion goes through `delete`, which asks it.

    Deletable, and what kind it is:
    - "entry": a snapshot entry inside `folder/snapshots/` (a link, never its target: the link
      itself is removed; or a regular file, the copy made where symlinks fail; or a
      `snapshots/<commit>` that is itself a link);
    - "blob": a regular file directly inside `folder/blobs/` (content, our `.incomplete`
      partials and `.qwen-pull.json` records);
    - "ref": a regular file inside `folder/refs/`; "marker": one inside `folder/.no_exist/`
      (huggingface_hub's notes of files a revision lacks);
    - "lock": a regular file inside `<cache>/.locks/<folder name>/`.
    Nothing else: never a folder (folders are only ever `rmdir`-ed when empty), and nothing
    reached through a linked folder (checked with realpath: every folder between the cache and
    `path` must be the real one). None when `path` may not be deleted.
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    locks = folder.parent / ".locks" / folder.name
    if _inside(path, locks):
        real = (stat.S_ISREG(mode) and _real_below(path, locks)
                and not os.path.islink(locks.parent))
        return "lock" if real else None
    if not _real_below(path, folder):
        return None
    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).parts
    if len(rel) >= 2 and rel[0] == "snapshots":
        if stat.S_ISLNK(mode) or (len(rel) >= 3 and stat.S_ISREG(mode)):
            return "entry"
        return None
    if len(rel) == 2 and rel[0] == "blobs" and stat.S_ISREG(mode):
        return "blob"
    if len(rel) >= 2 and rel[0] == "refs" and stat.S_ISREG(mode):
        return "ref"
    if len(rel) >= 2 and rel[0] == ".no_exist" and stat.S_ISREG(mode):
        return "marker"
    return None


def own_file(path: Path, folder: Path) -> bool:
    """A regular file (not a link) in `folder`'s blobs/ or snapshots/, reached through no
    link: what the cache itself holds, as opposed to whatever a link leads to."""
    return deletable(path, folder) in ("blob", "entry") and not os.path.islink(path)


def delete(path: Path, folder: Path) -> int:
    """Delete one path the `deletable` rule allows (the only place the cache loses a file);
    returns the bytes freed (a link frees none). A path that is already gone is fine."""
    if not os.path.lexists(path):
        return 0
    if deletable(path, folder) is None:
        raise _refusal(path, folder)
    try:
        st = os.lstat(path)
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StoreError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


# --------------------------------------------------------------------------------------------
# What is there


@dataclass(frozen=True)
class LocalModel:
    """One GGUF model in the cache: a single file or a whole split set, complete or not."""

    repo: str
    commit: str | None
    files: tuple[str, ...]  # repo paths of every part, in order ("" for an unnamed partial)
    quant: str | None
    parts: int
    parts_complete: int
    size_bytes: int | None  # the full size when known (complete, or recorded by a pull)
    downloaded_bytes: int  # complete parts plus partial bytes
    complete: bool
    path: Path  # the first part's snapshot path (where it is or will be)
    model_id: str | None = None
    refs: tuple[str, ...] = ()
    snapshot_files: tuple[Path, ...] = ()  # entries under snapshots/ (every commit)
    blobs: tuple[Path, ...] = ()  # complete blobs the entries point to
    partials: tuple[Path, ...] = ()  # .incomplete files and our records
    other_tool: bool = False  # a partial without our record (another client's transfer)
    # why entries that look downloaded are not a usable model (then `complete` is False):
    # "damaged (...)", "broken link (...)", "foreign link (...)", "unreadable (...)"
    problem: str | None = None

    @property
    def percent(self) -> float | None:
        if self.complete:
            return 100.0
        if self.problem:
            return None
        if not self.size_bytes:
            return None
        return min(99.9, 100.0 * self.downloaded_bytes / self.size_bytes)

    @property
    def name(self) -> str:
        return self.files[0].rsplit("/", 1)[-1] if self.files and self.files[0] else "?"


def _iterdir(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _walk_files(root: Path) -> Iterator[Path]:
    """Files and links under `root`, never through a linked folder (nor a linked `root`)."""
    if os.path.islink(root):
        return
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into linked folders
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


@dataclass
class _Part:
    """What one part of a set is: complete (a snapshot entry) or pending (a record)."""

    path: str
    size: int | None = None
    complete: bool = False
    have: int = 0
    entries: list[Path] = field(default_factory=list)
    blob: Path | None = None
    partials: list[Path] = field(default_factory=list)
    problem: str | None = None  # an entry is there but is no usable file (see LocalModel)
    recorded: bool = False  # our pull is fetching it: a record and its partial


def _entry_state(entry: Path, folder: Path) -> tuple[str | None, Path | None, int]:
    """One snapshot entry, looked at without trusting it: (problem or None, the blob it links
    to inside this repository's blobs/ (None for a copy), its size). Links are resolved with
    realpath and must land directly in `folder/blobs/` on a regular file."""
    try:
        st = os.lstat(entry)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})", None, 0
    if stat.S_ISREG(st.st_mode):
        return None, None, st.st_size  # the file itself, where symlinks fail
    if not stat.S_ISLNK(st.st_mode):
        return "foreign link (not a file)", None, 0
    try:
        target = os.readlink(entry)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})", None, 0
    real = os.path.realpath(entry)
    if os.path.dirname(real) != os.path.join(os.path.realpath(folder), "blobs"):
        return f"foreign link (to {target})", None, 0
    try:
        blob_st = os.stat(real)
    except FileNotFoundError:
        return "broken link (its blob is missing)", None, 0
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})", None, 0
    if not stat.S_ISREG(blob_st.st_mode):
        return f"foreign link (to {target}, not a file)", None, 0
    return None, folder / "blobs" / os.path.basename(real), blob_st.st_size


_GGUF_PREAMBLES = (b"GGUF\x02\x00\x00\x00", b"GGUF\x03\x00\x00\x00",
                   b"GGUF\x00\x00\x00\x02", b"GGUF\x00\x00\x00\x03")


def _truncated(path: Path) -> bool:
    """Whether a GGUF file is shorter than its own header says (a download cut short), as
    gguf_info's header reader finds it (cheaply: the header, cached by size and mtime). Only
    a file that starts as a GGUF of a version we read (magic and version) is judged, and only
    a GgufTruncatedError counts: anything else is not this module's judgement."""
    from qwencli.gguf_info import GgufTruncatedError, read_header

    if _read_start(path, 8) not in _GGUF_PREAMBLES:
        return False
    try:
        read_header(path)
    except GgufTruncatedError:
        return True
    except (QwenError, OSError, ValueError, MemoryError):
        return False
    return False


def _read_start(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _foreign_folder(folder: Path, repo: str, link: Path, what: str) -> LocalModel:
    """A folder of the repository that is a link: listed as one foreign entry, never walked."""
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    name = link.name
    return LocalModel(
        repo=repo, commit=name if _COMMIT_RE.match(name) else None, files=("",), quant=None,
        parts=1, parts_complete=0, size_bytes=None, downloaded_bytes=0, complete=False,
        path=link, snapshot_files=(link,),
        problem=f"foreign link ({what}, to {target})")


def _scan_repo(folder: Path, repo: str) -> list[LocalModel]:
    if os.path.islink(folder):
        return [_foreign_folder(folder, repo, folder, "the repository's folder")]
    refs: dict[str, list[str]] = {}
    refs_dir = folder / "refs"
    if refs_dir.is_dir():
        for ref in _walk_files(refs_dir):
            commit = _read_commit(ref)
            if commit is not None:
                refs.setdefault(commit, []).append(ref.relative_to(refs_dir).as_posix())
    # group key: (commit, set key) -> part number -> _Part
    groups: dict[tuple[str | None, str], dict[int, _Part]] = {}
    parts_of: dict[tuple[str | None, str], int] = {}

    def slot(commit: str | None, rel: str) -> _Part:
        info = gguf_names.split_info(rel)
        key, number, total = (info if info else (rel, 1, 1))
        parts_of[(commit, key)] = max(parts_of.get((commit, key), 1), total)
        group = groups.setdefault((commit, key), {})
        return group.setdefault(number, _Part(rel))

    models: list[LocalModel] = []
    snapshots = folder / "snapshots"
    if os.path.islink(snapshots):
        models.append(_foreign_folder(folder, repo, snapshots, "the snapshots folder"))
    for commit_dir in [] if os.path.islink(snapshots) else _iterdir(snapshots):
        if os.path.islink(commit_dir):
            models.append(_foreign_folder(folder, repo, commit_dir, "a folder"))
            continue
        if not commit_dir.is_dir():
            continue
        for entry in _walk_files(commit_dir):
            rel = entry.relative_to(commit_dir).as_posix()
            if not gguf_names.is_model_file(rel):
                continue
            problem, blob, size = _entry_state(entry, folder)
            part = slot(commit_dir.name, rel)
            part.entries.append(entry)
            if problem is None and _truncated(entry):
                problem = "damaged (truncated)"
            if problem is None:
                part.complete, part.size, part.have, part.blob = True, size, size, blob
            else:
                part.problem = part.problem or problem
                part.blob = part.blob or blob  # a damaged blob is ours to remove
                part.have = size

    blobs_dir = folder / "blobs"
    recorded: set[str] = set()
    blob_files = [] if os.path.islink(blobs_dir) else _iterdir(blobs_dir)
    for record_file in blob_files:
        if not record_file.name.endswith(SIDECAR_SUFFIX):
            continue
        record = read_sidecar(record_file)
        if record is None or not gguf_names.is_model_file(record["path"]):
            continue
        blob = record["blob"]
        recorded.add(blob)
        commit = record["commit"]
        part = slot(commit, record["path"])
        part.partials.append(record_file)
        if part.complete and part.size != record["size"]:
            # our pull recorded another size for this very file: what is there is damaged
            part.complete, part.problem = False, "damaged (not the size the Hub lists)"
        if part.complete:
            continue  # finished meanwhile; the record is stale
        part.size = record["size"]
        incomplete = blobs_dir / f"{blob}.incomplete"
        with contextlib.suppress(OSError):
            st = os.lstat(incomplete)
            if stat.S_ISREG(st.st_mode):
                part.partials.append(incomplete)
                part.have, part.recorded, part.problem = st.st_size, True, None
        for sibling in record["set"]:
            other = slot(commit, sibling["path"])
            if other.complete and other.size != sibling["size"]:
                other.complete, other.problem = False, "damaged (not the size the Hub lists)"
            if other.size is None or other.problem:
                other.size = sibling["size"]

    seen_complete: dict[tuple[str, tuple[Path | None, ...]], int] = {}
    # the commit refs/main names first, so duplicates across revisions keep that one
    order = sorted(groups, key=lambda k: ("main" not in refs.get(k[0] or "", []), k[0] or "",
                                          k[1]))
    for key in order:
        commit, set_key = key
        group = groups[key]
        total = parts_of[key]
        parts = [group.get(i) or _Part(gguf_names.part_name(set_key, i, total)) for i in
                 range(1, total + 1)]
        complete = all(p.complete for p in parts)
        files = tuple(p.path for p in parts)
        blobs = tuple(p.blob for p in parts)
        if complete:  # the same files at another commit: one model, entries in both
            marker = (set_key, blobs if all(blobs) else tuple(p.entries[0] for p in parts))
            if marker in seen_complete:
                index = seen_complete[marker]
                extra = tuple(e for p in parts for e in p.entries)
                models[index] = replace(models[index], snapshot_files=(
                    *models[index].snapshot_files, *extra))
                continue
            seen_complete[marker] = len(models)
        sizes = [p.size for p in parts]
        first = parts[0].entries[0] if parts[0].entries else snapshots / (commit or "?") / \
            files[0]
        problem = next((p.problem for p in parts if p.problem and not p.recorded), None)
        models.append(LocalModel(
            repo=repo, commit=commit, files=files, quant=gguf_names.quant_label(files[0]),
            parts=total, parts_complete=sum(p.complete for p in parts),
            size_bytes=sum(s for s in sizes if s is not None) if None not in sizes else None,
            downloaded_bytes=sum(p.have for p in parts), complete=complete, path=first,
            refs=tuple(sorted(refs.get(commit or "", []))),
            snapshot_files=tuple(e for p in parts for e in p.entries),
            blobs=tuple(b for b in blobs if b is not None),
            partials=tuple(x for p in parts for x in p.partials), problem=problem))

    for item in blob_files:  # another client's partial: no record, no name
        if item.name.endswith(".incomplete") and item.name[: -len(".incomplete")] not in recorded:
            try:
                st = os.lstat(item)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # not a partial download (a link is never written through)
            models.append(LocalModel(
                repo=repo, commit=None, files=("",), quant=None, parts=1, parts_complete=0,
                size_bytes=None, downloaded_bytes=st.st_size, complete=False, path=item,
                partials=(item,), other_tool=True))
    return models


def _unreadable(folder: Path, repo: str, exc: StoreError) -> LocalModel:
    return LocalModel(repo=repo, commit=None, files=("",), quant=None, parts=1,
                      parts_complete=0, size_bytes=None, downloaded_bytes=0, complete=False,
                      path=folder, problem=f"unreadable ({exc.message})")


def scan(cache: Path | None = None,
         model_id: Callable[[str], str | None] | None = None) -> list[LocalModel]:
    """Every GGUF model in the cache (ours and other tools'), complete and partial, and entries
    that look downloaded but are not usable (`LocalModel.problem`). One repository that cannot
    be read is listed as unreadable; the others are listed as usual.

    `model_id` maps a repo to a catalog id (e.g. `Catalog.by_repo`), for display.
    """
    base = cache or hub_cache()
    found: list[LocalModel] = []
    for folder in _iterdir(base):
        repo = repo_of_dir(folder)
        if repo is None or not (folder.is_dir() or os.path.islink(folder)):
            continue
        try:
            models = _scan_repo(folder, repo)
        except StoreError as exc:
            models = [_unreadable(folder, repo, exc)]
        for m in models:
            found.append(_with_id(m, model_id))
    return found


def _with_id(m: LocalModel, model_id: Callable[[str], str | None] | None) -> LocalModel:
    return m if model_id is None else replace_id(m, model_id(m.repo))


def scan_repo(repo: str, cache: Path | None = None) -> list[LocalModel]:
    folder = repo_dir(repo, cache)
    if not (folder.is_dir() or os.path.islink(folder)):
        return []
    return _scan_repo(folder, repo_of_dir(folder) or repo)


def catalog_id_lookup() -> Callable[[str], str | None]:
    """repo -> catalog id; a broken user overlay only costs the names, not the listing."""
    try:
        catalog = load_catalog()
    except QwenError:
        return lambda repo: None

    def lookup(repo: str) -> str | None:
        spec = catalog.by_repo(repo)
        return spec.id if spec else None

    return lookup


# --------------------------------------------------------------------------------------------
# Finding a model for a MODEL reference


def _matches_quant(m: LocalModel, quant: str) -> bool:
    return gguf_names.matches_quant(m.files[0], quant)


def _revision_ok(m: LocalModel, repo: str, revision: str | None) -> bool:
    if revision is None:
        return True
    if m.commit is None:
        return False
    commit = read_ref(repo, revision)
    if commit is not None:
        return m.commit == commit
    return len(revision) >= 7 and m.commit.startswith(revision.lower())


def _preferred(models: Iterable[LocalModel]) -> list[LocalModel]:
    """The revision `main` names first, then the top-level file (as `qwen pull` picks a quant
    offered both as one file and as a split set in a folder), then the most recent download."""
    def key(m: LocalModel) -> tuple[bool, int, float]:
        try:
            mtime = m.path.stat().st_mtime
        except OSError:
            mtime = 0.0
        return ("main" not in m.refs, m.files[0].count("/"), -mtime)

    return sorted(models, key=key)


def matching(ref: str, *, include_partial: bool, cache: Path | None = None
             ) -> list[LocalModel]:
    """Downloads a MODEL reference names. Raises UsageError for a malformed reference or an
    unknown catalog model (with the nearest names). A catalog id or `owner/repo` without a
    quant names every quant of it."""
    parsed = parse_ref(ref)
    if isinstance(parsed, LocalRef):
        target = parsed.path.expanduser()
        with contextlib.suppress(OSError):
            target = target.absolute()
        found = []
        for m in scan(cache):
            if not include_partial and not m.complete:
                continue
            if target in m.snapshot_files or target == m.path or target in m.partials:
                found.append(m)
        return found
    if isinstance(parsed, HubRef):
        models = [m for m in scan_repo(parsed.repo, cache)
                  if (include_partial or m.complete)
                  and _revision_ok(m, parsed.repo, parsed.revision)]
        if parsed.filename is not None:
            wanted = parsed.filename
            models = [m for m in models
                      if any(gguf_names.same_file(wanted, f) for f in m.files if f)]
        elif parsed.quant_given or not include_partial:
            quant = parsed.quant or "Q4_K_M"
            models = [m for m in models if not m.other_tool and _matches_quant(m, quant)]
        return _preferred(models)
    assert isinstance(parsed, CatalogRef)
    catalog = load_catalog()
    spec, quant = resolve_catalog_ref(catalog, parsed)
    repos = list(dict.fromkeys(source.repo for source in spec.gguf
                               if quant is None or quant in source.quants))
    found = []
    for repo in repos:
        for m in _preferred(scan_repo(repo, cache)):
            if not include_partial and not m.complete:
                continue
            if quant is None or (not m.other_tool and _matches_quant(m, quant)):
                found.append(replace_id(m, spec.id))
    return found


def replace_id(m: LocalModel, model_id: str | None) -> LocalModel:
    return replace(m, model_id=model_id)


def find_model(ref: str, prefer: Sequence[str] = ()) -> Path | None:
    """The local path of a COMPLETE download a MODEL reference names (the first part of a
    split set, every part present), or None. Never a partial file; no network, no hardware.

    A local path is returned as it is when it exists. Raises UsageError for a malformed
    reference or an unknown catalog model. See `find_download` for `prefer`.
    """
    parsed = parse_ref(ref)
    if isinstance(parsed, LocalRef):
        path = parsed.path.expanduser()
        if not path.is_file():
            return None
        cache = hub_cache()
        entry = os.path.abspath(path)
        rel = Path(os.path.relpath(entry, os.path.abspath(cache))).parts
        if _inside(path, cache) and len(rel) >= 2 and rel[0].startswith("models--"):
            # reached through a linked folder, or a file of an incomplete, damaged or foreign
            # entry: not a model of this cache
            if not _real_below(Path(entry), cache / rel[0]):
                return None
            for m in scan():
                if not m.complete and entry in {os.path.abspath(e) for e in m.snapshot_files}:
                    return None
        return path
    found = find_download(ref, prefer)
    return found.path if found is not None else None


def find_download(ref: str, prefer: Sequence[str] = ()) -> LocalModel | None:
    """The complete download a catalog or Hub reference names, or None.

    When several match (a catalog id or `owner/repo` without a quant), the first quant in
    `prefer` that is here wins (the recommender's order for this machine: the caller asks it),
    then the revision `main` names, then the most recent.
    """
    found = [m for m in matching(ref, include_partial=False) if m.complete]
    if not found:
        return None
    rank = {quant.upper(): i for i, quant in enumerate(prefer)}
    ordered = sorted(enumerate(found), key=lambda item: (
        rank.get((item[1].quant or "").upper(), len(rank)), item[0]))
    return ordered[0][1]


def _inside(path: Path, folder: Path) -> bool:
    """Lexically below (or at) `folder`, after `..` is resolved by name."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return not (rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel))


# --------------------------------------------------------------------------------------------
# Removing


@dataclass(frozen=True)
class RemoveResult:
    removed: tuple[LocalModel, ...]
    freed_bytes: int


def _other_links(folder: Path, skip: set[Path]) -> set[Path]:
    """Blobs still linked from snapshot entries we are not removing (as `folder/blobs/<name>`,
    the way `LocalModel.blobs` names them)."""
    linked: set[Path] = set()
    blobs = os.path.join(os.path.realpath(folder), "blobs")
    for entry in _walk_files(folder / "snapshots"):
        if entry in skip or not entry.is_symlink():
            continue
        real = os.path.realpath(entry)
        if os.path.dirname(real) == blobs:
            linked.add(folder / "blobs" / os.path.basename(real))
    return linked


def _refused(models: Sequence[LocalModel], base: Path) -> None:
    """Check every path a removal would delete against `deletable` before deleting any."""
    for m in models:
        folder = repo_dir(m.repo, base)
        for path in (*m.snapshot_files, *m.blobs, *m.partials):
            if os.path.lexists(path) and deletable(path, folder) is None:
                raise _refusal(path, folder)


def _refusal(path: Path, folder: Path) -> StoreError:
    link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    return StoreError(f"refusing to delete {path}{link}: qwen deletes only snapshot entries "
                      f"and files in blobs/ of {repo_of_dir(folder) or folder.name}, never "
                      "through a link", hint="remove it yourself if it is yours to remove")


def remove(models: Iterable[LocalModel], cache: Path | None = None) -> RemoveResult:
    """Delete downloads: snapshot entries (a link itself, never its target), blobs no other
    entry uses, partials and records; every path through `delete` (see `deletable`).

    Refuses (StoreError), before deleting anything, when a path is not the cache's to delete,
    and while another process is downloading one of the partials."""
    from filelock import FileLock, Timeout

    models = list(models)
    base = cache or hub_cache()
    _refused(models, base)
    freed = 0
    for m in models:
        folder = repo_dir(m.repo, base)
        locks = []
        try:
            for partial in m.partials:
                if partial.name.endswith(".incomplete") and os.path.lexists(partial):
                    where = lock_path(m.repo, partial.name[: -len(".incomplete")], base)
                    where.parent.mkdir(parents=True, exist_ok=True)
                    lock = FileLock(str(where), timeout=0)
                    try:
                        lock.acquire()
                    except Timeout:
                        raise StoreError(f"{m.repo} {m.name} is being downloaded right now",
                                         hint="stop that `qwen pull` first") from None
                    locks.append(lock)
            skip = set(m.snapshot_files)
            still_linked = _other_links(folder, skip)
            for entry in m.snapshot_files:
                freed += delete(entry, folder)
            for blob in m.blobs:
                if blob not in still_linked:
                    freed += delete(blob, folder)
            for partial in m.partials:
                gone = delete(partial, folder)
                freed += gone if partial.name.endswith(".incomplete") else 0
        finally:
            for lock in locks:
                lock.release()
        _tidy(folder)
    return RemoveResult(tuple(models), freed)


def _rmdir_empty(root: Path) -> None:
    """Remove the empty folders of a tree, deepest first; never through a link (os.walk does
    not follow them, and rmdir only removes an empty real folder)."""
    if os.path.islink(root) or not root.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(root), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _tidy(folder: Path) -> None:
    """Drop empty snapshot folders (and refs naming them), and the repo when nothing is left,
    so `hf cache scan` still finds a consistent cache. Only `delete` and empty-folder removal:
    a file that is not the cache's (a user's, behind a link) stays, and so does its folder."""
    if os.path.islink(folder) or not folder.is_dir():
        return
    snapshots = folder / "snapshots"
    if os.path.islink(snapshots):
        return
    for commit_dir in _iterdir(snapshots):
        if not os.path.islink(commit_dir):
            _rmdir_empty(commit_dir)
    remaining = {d.name for d in _iterdir(snapshots)}
    refs = folder / "refs"
    for ref in _walk_files(refs):
        commit = _read_commit(ref)
        if commit is not None and commit not in remaining:
            with contextlib.suppress(StoreError):
                delete(ref, folder)
    blobs = folder / "blobs"
    if remaining or os.path.islink(blobs) or _iterdir(blobs):
        return
    for marker in _walk_files(folder / ".no_exist"):  # huggingface_hub's "no such file" notes
        with contextlib.suppress(StoreError):
            delete(marker, folder)
    for sub in (refs, snapshots, blobs, folder / ".no_exist"):
        _rmdir_empty(sub)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty: whatever else is there stays
    locks = folder.parent / ".locks" / folder.name
    if os.path.islink(locks.parent) or os.path.islink(locks):
        return
    for lock in _walk_files(locks):
        with contextlib.suppress(StoreError):
            delete(lock, folder)
    _rmdir_empty(locks)


__all__ = [
    "LocalModel", "RemoveResult", "StoreError", "blob_path", "deletable", "delete", "find_download",
    "find_model", "hub_cache",
    "link_snapshot", "lock_path", "matching", "own_file", "partial_path", "read_ref",
    "remove", "repo_dir", "repo_of_dir", "scan", "scan_repo", "sidecar_path", "snapshot_path",
    "write_ref", "write_sidecar",
]
