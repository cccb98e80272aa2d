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
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwencli import gguf_names
from qwencli.catalog import load_catalog, resolve_catalog_ref
from qwencli.errors import QwenError
from qwencli.fileio import atomic_copy, atomic_symlink, atomic_write
from qwencli.refs import CatalogRef, HubRef, LocalRef, parse_ref

SIDECAR_SUFFIX = ".qwen-pull.json"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class StoreError(QwenError):
    """The cache could not be read or changed (permissions, a download in progress)."""


# --------------------------------------------------------------------------------------------
# Where things are


def hub_cache() -> Path:
    """The Hub cache folder, resolved like huggingface_hub does, but at call time."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expanduser(os.path.expandvars(explicit)))
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expanduser(os.path.expandvars(home))) / "hub"


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
    ref = repo_dir(repo, cache) / "refs" / revision
    try:
        text = ref.read_text().strip()
    except OSError:
        return None
    return text or None


def write_ref(repo: str, revision: str, commit: str, cache: Path | None = None) -> None:
    if revision == commit:
        return
    ref = repo_dir(repo, cache) / "refs" / revision
    with contextlib.suppress(OSError):
        if ref.read_text().strip() == commit:
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
    atomic_write(sidecar_path(repo, blob, cache), json.dumps(record, indent=1))


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    needed = ("repo", "path", "commit", "size", "blob")
    if not isinstance(data, dict) or any(k not in data for k in needed):
        return None
    return data


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

    @property
    def percent(self) -> float | None:
        if self.complete:
            return 100.0
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
    for dirpath, dirnames, filenames in os.walk(root):
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


def _scan_repo(folder: Path, repo: str) -> list[LocalModel]:
    refs: dict[str, list[str]] = {}
    refs_dir = folder / "refs"
    if refs_dir.is_dir():
        for ref in _walk_files(refs_dir):
            with contextlib.suppress(OSError):
                refs.setdefault(ref.read_text().strip(), []).append(
                    ref.relative_to(refs_dir).as_posix())
    # group key: (commit, set key) -> part number -> _Part
    groups: dict[tuple[str | None, str], dict[int, _Part]] = {}
    parts_of: dict[tuple[str | None, str], int] = {}

    def slot(commit: str | None, rel: str) -> _Part:
        info = gguf_names.split_info(rel)
        key, number, total = (info if info else (rel, 1, 1))
        parts_of[(commit, key)] = max(parts_of.get((commit, key), 1), total)
        group = groups.setdefault((commit, key), {})
        return group.setdefault(number, _Part(rel))

    snapshots = folder / "snapshots"
    for commit_dir in _iterdir(snapshots):
        if not commit_dir.is_dir():
            continue
        for entry in _walk_files(commit_dir):
            rel = entry.relative_to(commit_dir).as_posix()
            if not gguf_names.is_model_file(rel):
                continue
            try:
                size = entry.stat().st_size  # follows the link: a broken one raises
            except OSError:
                continue
            part = slot(commit_dir.name, rel)
            part.complete, part.size, part.have = True, size, size
            part.entries.append(entry)
            part.blob = entry.resolve() if entry.is_symlink() else None

    blobs_dir = folder / "blobs"
    recorded: set[str] = set()
    for record_file in _iterdir(blobs_dir):
        if not record_file.name.endswith(SIDECAR_SUFFIX):
            continue
        record = read_sidecar(record_file)
        if record is None or not gguf_names.is_model_file(str(record["path"])):
            continue
        blob = str(record["blob"])
        recorded.add(blob)
        commit = str(record["commit"])
        part = slot(commit, str(record["path"]))
        part.partials.append(record_file)
        if part.complete:
            continue  # finished meanwhile; the record is stale
        part.size = int(record["size"])
        incomplete = blobs_dir / f"{blob}.incomplete"
        part.partials.append(incomplete)
        with contextlib.suppress(OSError):
            part.have = incomplete.stat().st_size
        for sibling in record.get("set", []) or []:
            if isinstance(sibling, dict) and "path" in sibling:
                other = slot(commit, str(sibling["path"]))
                if other.size is None and "size" in sibling:
                    other.size = int(sibling["size"])

    models: list[LocalModel] = []
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
        models.append(LocalModel(
            repo=repo, commit=commit, files=files, quant=gguf_names.quant_label(files[0]),
            parts=total, parts_complete=sum(p.complete for p in parts),
            size_bytes=sum(s for s in sizes if s is not None) if None not in sizes else None,
            downloaded_bytes=sum(p.have for p in parts), complete=complete, path=first,
            refs=tuple(sorted(refs.get(commit or "", []))),
            snapshot_files=tuple(e for p in parts for e in p.entries),
            blobs=tuple(b for b in blobs if b is not None),
            partials=tuple(x for p in parts for x in p.partials)))

    for item in _iterdir(blobs_dir):  # another client's partial: no record, no name
        if item.name.endswith(".incomplete") and item.name[: -len(".incomplete")] not in recorded:
            try:
                have = item.stat().st_size
            except OSError:
                continue
            models.append(LocalModel(
                repo=repo, commit=None, files=("",), quant=None, parts=1, parts_complete=0,
                size_bytes=None, downloaded_bytes=have, complete=False, path=item,
                partials=(item,), other_tool=True))
    return models


def scan(cache: Path | None = None,
         model_id: Callable[[str], str | None] | None = None) -> list[LocalModel]:
    """Every GGUF model in the cache (ours and other tools'), complete and partial.

    `model_id` maps a repo to a catalog id (e.g. `Catalog.by_repo`), for display.
    """
    base = cache or hub_cache()
    found: list[LocalModel] = []
    for folder in _iterdir(base):
        repo = repo_of_dir(folder)
        if repo is None or not folder.is_dir():
            continue
        for m in _scan_repo(folder, repo):
            found.append(_with_id(m, model_id))
    return found


def _with_id(m: LocalModel, model_id: Callable[[str], str | None] | None) -> LocalModel:
    return m if model_id is None else replace_id(m, model_id(m.repo))


def scan_repo(repo: str, cache: Path | None = None) -> list[LocalModel]:
    folder = repo_dir(repo, cache)
    if not folder.is_dir():
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
        if _inside(path, hub_cache()):  # a file of an incomplete split set is no model yet
            entry = path.absolute()
            for m in scan():
                if entry in m.snapshot_files and not m.complete:
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
    try:
        path.absolute().relative_to(folder.absolute())
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Removing


@dataclass(frozen=True)
class RemoveResult:
    removed: tuple[LocalModel, ...]
    freed_bytes: int


def _other_links(folder: Path, skip: set[Path]) -> set[Path]:
    """Blobs still linked from snapshot entries we are not removing."""
    linked: set[Path] = set()
    for entry in _walk_files(folder / "snapshots"):
        if entry in skip or not entry.is_symlink():
            continue
        with contextlib.suppress(OSError):
            linked.add(entry.resolve())
    return linked


def remove(models: Iterable[LocalModel], cache: Path | None = None) -> RemoveResult:
    """Delete downloads: snapshot entries, blobs no other entry uses, partials and records.

    Refuses (StoreError) while another process is downloading one of the partials."""
    from filelock import FileLock, Timeout

    models = list(models)
    base = cache or hub_cache()
    freed = 0
    for m in models:
        folder = repo_dir(m.repo, base)
        locks = []
        try:
            for partial in m.partials:
                if partial.name.endswith(".incomplete") and partial.exists():
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
                freed += _size_if_regular(entry)
                _unlink(entry)
            for blob in m.blobs:
                if blob not in still_linked:
                    freed += _size_if_regular(blob)
                    _unlink(blob)
            for partial in m.partials:
                freed += _size_if_regular(partial) if partial.suffix == ".incomplete" else 0
                _unlink(partial)
        finally:
            for lock in locks:
                lock.release()
        _tidy(folder)
    return RemoveResult(tuple(models), freed)


def _size_if_regular(path: Path) -> int:
    try:
        return path.stat().st_size if not path.is_symlink() else 0
    except OSError:
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot remove {path}: {exc.strerror or exc}") from exc


def _tidy(folder: Path) -> None:
    """Drop empty snapshot folders (and refs naming them), and the repo when nothing is left,
    so `hf cache scan` still finds a consistent cache."""
    snapshots = folder / "snapshots"
    for commit_dir in _iterdir(snapshots):
        for dirpath, _dirs, _files in sorted(os.walk(commit_dir), reverse=True):
            with contextlib.suppress(OSError):
                Path(dirpath).rmdir()  # only succeeds when empty
    remaining = {d.name for d in _iterdir(snapshots)}
    refs = folder / "refs"
    for ref in list(_walk_files(refs)) if refs.is_dir() else []:
        with contextlib.suppress(OSError):
            if ref.read_text().strip() not in remaining:
                ref.unlink()
    blobs = _iterdir(folder / "blobs")
    if not remaining and not blobs:
        shutil.rmtree(folder, ignore_errors=True)
        locks = folder.parent / ".locks" / folder.name
        shutil.rmtree(locks, ignore_errors=True)


__all__ = [
    "LocalModel", "RemoveResult", "StoreError", "blob_path", "find_download", "find_model",
    "hub_cache",
    "link_snapshot", "lock_path", "matching", "partial_path", "read_ref",
    "remove", "repo_dir", "repo_of_dir", "scan", "scan_repo", "sidecar_path", "snapshot_path",
    "write_ref", "write_sidecar",
]
