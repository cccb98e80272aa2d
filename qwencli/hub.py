"""The Hugging Face Hub: which GGUF files a repository holds, and where to read them.

huggingface_hub does the talking; this module turns its answers and errors into ours. The Hub is
named by HF_ENDPOINT and reached with HF_TOKEN (or a saved `hf auth login`), both read at call
time so that a test (or a user) can point them elsewhere. HF_HUB_OFFLINE=1 forbids the network.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from qwencli import gguf_names, store
from qwencli.catalog import load_catalog, quant_file, resolve_catalog_ref
from qwencli.errors import QwenError, UsageError, os_error
from qwencli.fileio import ensure_dir
from qwencli.refs import (
    DEFAULT_HUB_QUANT,
    CatalogRef,
    HubRef,
    LocalRef,
    normalize_quant,
    parse_ref,
    with_quant,
)

if TYPE_CHECKING:
    from qwencli.gguf_info import GgufModel, RangeReply

DEFAULT_ENDPOINT = "https://huggingface.co"


class HubError(QwenError):
    """The Hub could not answer: offline, unreachable, a missing or gated repository."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None
    blob_id: str | None = None  # git object id, the cache's blob name for a non-LFS file

    @property
    def blob(self) -> str:
        """The name huggingface_hub gives this file's blob: its sha256 (LFS) or git id."""
        if self.sha256 or self.blob_id:
            return self.sha256 or self.blob_id or ""
        return "unhashed-" + hashlib.sha1(f"{self.path}:{self.size}".encode()).hexdigest()


def offline() -> bool:
    """HF_HUB_OFFLINE read as huggingface_hub reads it (1/true/yes/on), so qwen and the other
    Hugging Face tools agree on whether the network may be used."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


_TIMEOUT_VARIABLES = ("HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT")
_MAX_TIMEOUT_S = 86_400


def check_environment() -> None:
    """The Hub's variables, checked before huggingface_hub reads them (at import it fails on a
    timeout that is not a whole number with a bare ValueError) and before any request, so that
    a local mistake is reported as one, not as "cannot reach" the network. Also keeps
    huggingface_hub's own retry chatter ("Retrying in 1s ...") off the terminal: one line says
    what failed, at the end."""
    from urllib.parse import urlsplit

    from qwencli.errors import ConfigError

    for name in _TIMEOUT_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text and not (text.isdigit() and 0 < int(text) <= _MAX_TIMEOUT_S):
            raise ConfigError(f"{name}={text!r} is not a whole number of seconds "
                              f"(1 to {_MAX_TIMEOUT_S})", hint=f"unset {name}, or set e.g. 30")
    value = os.environ.get("HF_ENDPOINT", "").strip()
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"HF_ENDPOINT={value!r} is not an http(s) address",
                              hint="unset HF_ENDPOINT to use the Hub, or set e.g. "
                                   "https://hf-mirror.example")
    for name in ("HF_HOME", "HF_HUB_CACHE"):
        folder = os.environ.get(name, "").strip()
        if folder and os.path.exists(os.path.expanduser(folder)) and not os.path.isdir(
                os.path.expanduser(folder)):
            raise ConfigError(f"{name}={folder!r} is a file, not a folder",
                              hint=f"point {name} at a folder, or unset it")
    import logging

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def auth_headers() -> dict[str, str]:
    """Authorization (when a token is known) and huggingface_hub's user agent."""
    check_environment()
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(token=os.environ.get("HF_TOKEN") or None,
                            library_name="qwencli")


def file_url(repo: str, path: str, revision: str | None = None) -> str:
    return f"{endpoint()}/{repo}/resolve/{revision or 'main'}/{path}"


class HubAuthError(HubError):
    """A gated or private repository, or a token the Hub refused."""


class HubNotFoundError(HubError):
    """No such repository, revision or file (the message carries the nearest names)."""


class HubUnreachableError(HubError):
    """The endpoint did not answer (network down, DNS, timeout)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _hub_error(repo: str, exc: Exception) -> QwenError:
    """huggingface_hub's many exceptions as one of ours; ours (a bad variable found on the
    way) pass through as they are."""
    if isinstance(exc, QwenError):
        return exc
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = bool(os.environ.get("HF_TOKEN")) or _saved_token()
    if isinstance(exc, GatedRepoError):
        if token:
            return HubAuthError(f"{repo} is gated and your token has no access to it",
                                hint=f"accept its licence at {endpoint()}/{repo}, with the "
                                     "account the token (HF_TOKEN or `hf auth login`) belongs "
                                     "to")
        return HubAuthError(f"{repo} is gated: accept its licence on the Hub, then give a token",
                            hint="export HF_TOKEN=hf_... or run `hf auth login`")
    if isinstance(exc, RepositoryNotFoundError):
        near = nearest_repos(repo)
        tip = f"; nearest: {', '.join(near)}" if near else ""
        hint = ("check the name" if token else
                "check the name; for a private repository export HF_TOKEN=hf_... or run "
                "`hf auth login`")
        return HubNotFoundError(f"repository {repo} not found on {endpoint()} (or it is "
                                f"private){tip}", hint=hint)
    if isinstance(exc, RevisionNotFoundError):
        return HubNotFoundError(f"{repo} has no revision named in the reference",
                                hint="use a branch, a tag or a commit hash the repository has")
    if isinstance(exc, RemoteEntryNotFoundError):
        return HubNotFoundError(f"{repo}: {_first_line(exc)}")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return HubAuthError(f"{endpoint()} refused the request for {repo} ({status})",
                                hint="check HF_TOKEN, or run `hf auth login` again")
        return HubError(f"{endpoint()} answered {status} for {repo}: {_first_line(exc)}",
                        hint="try again later")
    return HubUnreachableError(f"cannot reach {endpoint()} for {repo}: {_first_line(exc)}",
                               hint="check the network, or set HF_HUB_OFFLINE=1 to use only "
                                    "what is in the cache")


def _saved_token() -> bool:
    """Whether `hf auth login` saved a token (HF_TOKEN aside)."""
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # a broken token file must not hide the real error
        return False


def match_quant(files: Sequence[RemoteFile], quant: str) -> list[RemoteFile]:
    """The files of one quant (every split part, in path order); see gguf_names."""
    return sorted((f for f in files if gguf_names.matches_quant(f.path, quant)),
                  key=lambda f: f.path)


# --------------------------------------------------------------------------------------------
# Resolution: a MODEL reference -> the exact files (with sizes and sha256) at one commit

DISK_MARGIN_MIN = 512 * 1024**2  # never fill a disk to the last byte
DISK_MARGIN_SHARE = 0.05  # ... nor to the last 5% of what is downloaded
_CHUNK = 1 << 20  # bytes between progress updates and write batches
_RETRIES = 5  # attempts in a row that bring no new byte, before giving up
_NAMES_SHOWN = 3  # file names a message lists before "and N more" (a repo may hold thousands)


class DiskSpaceError(QwenError):
    """The download would not fit on the cache's disk (checked before writing a byte)."""


class ChecksumError(HubError):
    """A finished file's sha256 differs from the Hub's listing; the file was removed."""


class PullInterrupted(KeyboardInterrupt):
    """Ctrl-C during a transfer: the partial file is kept and the next pull resumes it."""

    def __init__(self, done: int, total: int, partial: Path | None) -> None:
        super().__init__()
        self.done, self.total, self.partial = done, total, partial


@dataclass(frozen=True)
class Listing:
    """A repository at one commit: its canonical name and every file with size and hash."""

    repo: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def gguf(self) -> tuple[RemoteFile, ...]:
        return tuple(f for f in self.files if f.path.lower().endswith(".gguf"))


@dataclass(frozen=True)
class PullPlan:
    """What a pull will fetch: one file or a whole split set, at one commit."""

    ref: str
    repo: str
    revision: str  # the branch/tag asked for (main) or the commit itself
    commit: str
    files: tuple[RemoteFile, ...]  # every part, in order
    quant: str | None
    model_id: str | None = None
    warnings: tuple[str, ...] = ()
    offline: bool = False  # resolved from the cache alone (HF_HUB_OFFLINE or no network)

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def path(self) -> Path:
        """Where the first part is (or will be) in the cache."""
        return store.snapshot_path(self.repo, self.commit, self.files[0].path)


@dataclass(frozen=True)
class DiskCheck:
    """The pre-flight numbers: what the transfer needs against what the disk has."""

    folder: Path
    needed_bytes: int  # still to download
    margin_bytes: int
    free_bytes: int

    @property
    def fits(self) -> bool:
        return self.needed_bytes + self.margin_bytes <= self.free_bytes


@dataclass(frozen=True)
class PullResult:
    """A finished pull: where the model is, and what the transfer did."""

    path: Path  # the first part, inside snapshots/
    repo: str
    files: tuple[Path, ...]  # every part's local path, in order
    quant: str | None
    bytes_downloaded: int
    resumed: bool
    already_present: bool
    commit: str = ""
    revision: str = "main"
    model_id: str | None = None
    remote: tuple[RemoteFile, ...] = ()
    size_bytes: int = 0
    verified: bool = True  # every file's sha256 matched (False: size only, no hash listed)
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()


def _api():  # -> HfApi
    check_environment()
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=os.environ.get("HF_TOKEN") or None,
                 library_name="qwencli")


def repo_listing(repo: str, revision: str | None = None) -> Listing:
    """The repository's files at a revision, from one model-info call (commit, sizes, sha256)."""
    if offline():
        raise HubError(f"cannot list {repo}: HF_HUB_OFFLINE is set")
    api = _api()
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True,
                                 timeout=_download_timeout())
    except Exception as exc:  # huggingface_hub raises many types; all end here as one line
        raise _hub_error(repo, exc) from exc
    files = []
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        size = sibling.size if sibling.size is not None else getattr(lfs, "size", None)
        files.append(RemoteFile(sibling.rfilename, int(size or 0), sha,
                                getattr(sibling, "blob_id", None)))
    if not info.sha:
        raise HubError(f"{endpoint()} gave no commit for {repo}")
    return Listing(info.id or repo, info.sha, tuple(files))


def nearest_repos(repo: str, n: int = 4) -> list[str]:
    """Repository names like `repo`: the catalog's repos, and the Hub's under the same owner."""
    import difflib

    names: dict[str, str] = {}
    try:
        for spec in load_catalog().all_models:
            for name in (spec.hf_repo, *(s.repo for s in spec.gguf)):
                names.setdefault(name.lower(), name)
    except QwenError:
        pass
    owner, _, name = repo.partition("/")
    word = re.split(r"[-_.]", name, maxsplit=1)[0]
    if word and not offline():
        try:  # one plain request, no retries: a hint must not make an error slow
            from huggingface_hub.utils import get_session

            response = get_session().get(f"{endpoint()}/api/models", headers=auth_headers(),
                                         params={"author": owner, "search": word,
                                                 "limit": 100}, timeout=5)
            if response.status_code == 200:
                for found in response.json():
                    name_found = str(found.get("id") or found.get("modelId") or "")
                    if "/" in name_found:
                        names.setdefault(name_found.lower(), name_found)
        except Exception:  # a hint is best effort: the real error is already known
            pass
    names.pop(repo.lower(), None)
    close = difflib.get_close_matches(repo.lower(), list(names), n=n, cutoff=0.6)
    return [names[c] for c in close]


def _nearest_files(wanted: str, files: Sequence[RemoteFile], n: int = 4) -> list[str]:
    import difflib

    paths = {f.path.lower(): f.path for f in files}
    bases = {f.path.rsplit("/", 1)[-1].lower(): f.path for f in files}
    key = wanted.lower()
    close = difflib.get_close_matches(key, list(paths), n=n, cutoff=0.5)
    close += difflib.get_close_matches(key.rsplit("/", 1)[-1], list(bases), n=n, cutoff=0.5)
    found = list(dict.fromkeys([paths.get(c) or bases[c] for c in close]))
    return found[:n]


def _split_set(listing: Listing, first: RemoteFile) -> tuple[RemoteFile, ...]:
    """All parts of the split set `first` belongs to, in order; an error if one is missing."""
    info = gguf_names.split_info(first.path)
    if info is None:
        return (first,)
    by_path = {f.path: f for f in listing.files}
    names = gguf_names.split_names(first.path, info[2])
    missing = [n for n in names if n not in by_path]
    if missing:
        raise HubNotFoundError(f"{listing.repo}: the split set {names[0]} lacks "
                               f"{', '.join(missing)}",
                               hint="the repository is incomplete; pick another quant")
    return tuple(by_path[n] for n in names)


def _sets(files: Sequence[RemoteFile]) -> list[list[RemoteFile]]:
    """Files grouped by split set (a single file is a set of one), in path order."""
    groups: dict[str, list[RemoteFile]] = {}
    for f in sorted(files, key=lambda f: f.path):
        info = gguf_names.split_info(f.path)
        groups.setdefault(info[0] if info else f.path, []).append(f)
    return list(groups.values())


def _pick_set(listing: Listing, matched: Sequence[RemoteFile], label: str
              ) -> tuple[tuple[RemoteFile, ...], list[str]]:
    """One set out of the quant's matches: the top-level one (fewest folders) first."""
    groups = _sets(matched)
    groups.sort(key=lambda g: (g[0].path.count("/"), g[0].path))
    chosen = _split_set(listing, groups[0][0])
    notes = []
    if len(groups) > 1:
        shown = [g[0].path for g in groups[1:1 + _NAMES_SHOWN]]
        more = len(groups) - 1 - len(shown)
        others = ", ".join(shown) + (f" and {more:,} more" if more else "")
        notes.append(f"{listing.repo} has several {label} files; took {chosen[0].path} "
                     f"(also: {others}; name one as {listing.repo}/FILE to choose)")
    return chosen, notes


def _model_id(repo: str) -> str | None:
    """The catalog id of a repository (the store's lookup: a broken overlay costs the name)."""
    return store.catalog_id_lookup()(repo)


def resolve_pull(ref: str, *, quant: str | None = None) -> PullPlan:
    """Turn a MODEL reference into exact files through the Hub's listing (never a name taken
    on trust). Offline (HF_HUB_OFFLINE, or the Hub unreachable with the model cached) it
    resolves from the cache alone."""
    parsed = parse_ref(ref)
    if isinstance(parsed, LocalRef):
        raise UsageError(f"{ref!r} is a local file: nothing to pull",
                         hint="give a catalog name (qwen3-8b) or a Hub reference "
                              "(Qwen/Qwen3-8B-GGUF:Q4_K_M)")
    if quant is not None:
        if not quant.strip():
            raise UsageError("--quant is empty")
        quant = normalize_quant(quant)
        if isinstance(parsed, HubRef) and parsed.filename is not None:
            raise UsageError(f"{ref!r} names a file; --quant does not apply")
        given = parsed.quant if isinstance(parsed, CatalogRef) else (
            parsed.quant if parsed.quant_given else None)
        if given is not None and given != quant:
            raise UsageError(f"{ref!r} says {given} but --quant says {quant}; give one")
    if offline():
        return _resolve_cached(ref, parsed, quant, reason="HF_HUB_OFFLINE is set")
    try:
        if isinstance(parsed, CatalogRef):
            return _resolve_catalog(ref, parsed, quant)
        return _resolve_hub(ref, parsed, quant)
    except HubUnreachableError as exc:
        try:
            plan = _resolve_cached(ref, parsed, quant, reason=exc.message)
        except HubError:
            raise exc from None
        return replace(plan, warnings=(*plan.warnings,
                                       f"{exc.message}; using the copy in the cache"))


def _resolve_cached(ref: str, parsed, quant: str | None, *, reason: str) -> PullPlan:
    wanted = with_quant(parsed, quant)
    found = store.find_model(wanted)
    models = [m for m in store.matching(wanted, include_partial=True)]
    complete = next((m for m in models if m.complete and m.path == found), None)
    if complete is None:
        broken = next((m for m in models if m.problem), None)
        partial = next((m for m in models if not m.complete and not m.problem), None)
        if broken is not None and broken.problem.startswith("damaged"):
            raise HubError(f"cannot pull {ref}: {reason}; the copy in the cache is "
                           f"{broken.problem} ({broken.path})",
                           hint=f"unset HF_HUB_OFFLINE (or restore the network): `qwen pull "
                                f"{ref}` fetches it again")
        have = (f"; only a partial download ({partial.percent or 0:.0f}%) is in the cache"
                if partial else
                f"; the cache holds only a {broken.problem} ({broken.path})" if broken else
                f"; it is not in the cache ({store.hub_cache()})")
        raise HubError(f"cannot pull {ref}: {reason}{have}",
                       hint="unset HF_HUB_OFFLINE (or restore the network) to download it; "
                            "`qwen list` shows what is here")
    files = []
    for local, name in zip(complete.snapshot_files, complete.files, strict=False):
        blob = local.resolve().name if local.is_symlink() else None
        sha = blob if blob and re.fullmatch(r"[0-9a-f]{64}", blob) else None
        files.append(RemoteFile(name, local.stat().st_size, sha))
    return PullPlan(ref=ref, repo=complete.repo, revision=complete.commit or "",
                    commit=complete.commit or "", files=tuple(files), quant=complete.quant,
                    model_id=complete.model_id or _model_id(complete.repo), offline=True)


def _resolve_hub(ref: str, parsed, quant: str | None) -> PullPlan:  # (HubRef)
    listing = repo_listing(parsed.repo, parsed.revision)
    ggufs = listing.gguf
    revision = parsed.revision or "main"
    notes: list[str] = []
    if parsed.filename is not None:
        by_path = {f.path: f for f in ggufs}
        by_key = {gguf_names.file_key(f.path): f for f in ggufs}
        found = by_path.get(parsed.filename) or by_key.get(gguf_names.file_key(parsed.filename))
        if found is None:
            near = _nearest_files(parsed.filename, ggufs)
            tip = f"; nearest: {', '.join(near)}" if near else ""
            raise HubNotFoundError(f"{listing.repo} has no file {parsed.filename}{tip}",
                                   hint=f"`qwen pull {listing.repo}:QUANT` picks by quant")
        info = gguf_names.split_info(found.path)
        if info is not None and info[1] != 1:
            found = by_path.get(gguf_names.split_names(found.path, info[2])[0], found)
        files = _split_set(listing, found)
        label = gguf_names.quant_label(files[0].path)
    else:
        label = quant or (parsed.quant if parsed.quant_given else None) or DEFAULT_HUB_QUANT
        matched = match_quant(list(ggufs), label)
        if not matched:
            present = gguf_names.quants_in(f.path for f in ggufs)
            tip = (f"; it has {', '.join(present)}" if present else
                   "; it has no GGUF files" if not ggufs else "")
            example = f"{listing.repo}:{present[0]}" if present else listing.repo + "/FILE.gguf"
            raise HubNotFoundError(f"{listing.repo} has no {label} file{tip}",
                                   hint=f"e.g. `qwen pull {example}`")
        files, notes = _pick_set(listing, matched, label)
    return PullPlan(ref=ref, repo=listing.repo, revision=revision, commit=listing.commit,
                    files=files, quant=label, model_id=_model_id(listing.repo),
                    warnings=tuple(notes))


def _resolve_catalog(ref: str, parsed, quant: str | None) -> PullPlan:  # (CatalogRef)
    catalog = load_catalog()
    spec, ref_quant = resolve_catalog_ref(catalog, parsed)
    notes: list[str] = []
    chosen = quant or ref_quant
    if chosen is None:  # the recommender chooses (recommend.quant_for); never this module
        raise ValueError(f"resolve_pull({ref!r}) needs a quant")
    quant_file(spec, chosen)  # UsageError with the model's quants when it has none such
    sources = [s for s in spec.gguf if chosen in s.quants]
    failures: list[HubError] = []
    tried: list[str] = []
    for source in sources:
        expected = source.quants[chosen].files
        try:
            listing = repo_listing(source.repo)
        except HubUnreachableError:
            raise
        except HubError as exc:
            failures.append(exc)
            tried.append(source.repo)
            continue
        by_path = {f.path: f for f in listing.gguf}
        if all(name in by_path for name in expected):
            files = tuple(by_path[name] for name in expected)
            files = _split_set(listing, files[0]) if len(files) == 1 else files
            found_notes: list[str] = []
        else:
            matched = match_quant(list(listing.gguf), chosen)
            if not matched:
                near = _nearest_files(expected[0], listing.gguf)
                tip = f" (nearest: {', '.join(near)})" if near else ""
                failures.append(HubNotFoundError(f"{listing.repo} has no {expected[0]}{tip}"))
                tried.append(source.repo)
                continue
            files, found_notes = _pick_set(listing, matched, chosen)
            found_notes.insert(0, f"the catalog names {expected[0]}, {listing.repo} has "
                                  f"{files[0].path}: taking that")
        if failures:
            notes.append(f"{'; '.join(f.message for f in failures)}; using {listing.repo}")
        return PullPlan(ref=ref, repo=listing.repo, revision="main", commit=listing.commit,
                        files=files, quant=chosen, model_id=spec.id,
                        warnings=(*notes, *found_notes))
    if len(failures) == 1:
        raise failures[0]
    auth = [f for f in failures if isinstance(f, HubAuthError)]
    if auth and len(auth) == len(failures):
        raise auth[0]
    reasons = "; ".join(f.message for f in failures)
    raise HubNotFoundError(f"no {chosen} file for {spec.id} in {', '.join(tried)}: {reasons}",
                           hint=f"`qwen pull {spec.id}:QUANT` with another quant "
                                f"({', '.join(spec.quants)})")


# --------------------------------------------------------------------------------------------
# Pre-flight


def _existing_folder(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def check_disk(needed: int, folder: Path | None = None) -> DiskCheck:
    """Free space on the cache's filesystem against `needed` bytes plus a margin."""
    target = _existing_folder(folder or store.hub_cache())
    free = shutil.disk_usage(target).free
    margin = max(DISK_MARGIN_MIN, int(needed * DISK_MARGIN_SHARE))
    return DiskCheck(target, needed, margin, free)


def _disk_error(check: DiskCheck, plan: PullPlan) -> DiskSpaceError:
    from qwencli.units import format_bytes

    return DiskSpaceError(
        f"not enough disk space for {plan.files[0].path}: "
        f"{format_bytes(check.needed_bytes)} to download + {format_bytes(check.margin_bytes)} "
        f"margin, {format_bytes(check.free_bytes)} free on {check.folder}",
        hint="free some space (`qwen list`, `qwen rm MODEL`) or point HF_HUB_CACHE at a "
             "bigger disk")


# --------------------------------------------------------------------------------------------
# Progress: what a transfer reports while it runs (output draws it; the library never prints)


class Progress(Protocol):
    def start(self, label: str, total: int, done: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# The transfer


def _is_complete(repo: str, commit: str, f: RemoteFile) -> bool:
    """The file is in the cache whole: its blob (a regular file in the repository's own
    blobs/, never reached through a link) or the snapshot's own copy, at the listed size. A
    shorter (truncated) or foreign file is not complete: the pull fetches it again."""
    folder = store.repo_dir(repo)
    for path in (store.blob_path(repo, f.blob), store.snapshot_path(repo, commit, f.path)):
        if store.own_file(path, folder) and path.stat().st_size == f.size:
            return True
    return False


def _partial_size(repo: str, f: RemoteFile) -> int:
    try:
        return min(store.partial_path(repo, f.blob).lstat().st_size, f.size)
    except OSError:
        return 0


def _link(plan: PullPlan, f: RemoteFile, *, new_blob: bool = False) -> Path:
    blob = store.blob_path(plan.repo, f.blob)
    snap = store.snapshot_path(plan.repo, plan.commit, f.path)
    if not blob.exists() and snap.is_file():
        path = snap  # the file itself, where symlinks fail: already in place
    else:
        path = store.link_snapshot(plan.repo, plan.commit, f.path, f.blob, new_blob=new_blob)
    store.write_ref(plan.repo, plan.revision, plan.commit)
    return path


def download(plan: PullPlan, *, progress: Progress | None = None,
             on_wait: Callable[[str], None] | None = None) -> PullResult:
    """Fetch what the cache lacks, resuming partials, verifying each file's sha256.

    Pre-flight first: nothing is written when the disk is too small. Ctrl-C raises
    PullInterrupted with the partial kept; the next call resumes it with an HTTP Range. A file
    another process is downloading is waited for (`on_wait` says so), not fetched twice.
    """
    t0 = time.monotonic()
    paths: list[Path] = []
    if plan.offline:
        paths = [store.snapshot_path(plan.repo, plan.commit, f.path) for f in plan.files]
        return _result(plan, paths, 0, False, True, t0)
    missing = [f for f in plan.files if not _is_complete(plan.repo, plan.commit, f)]
    if not missing:
        paths = [_link(plan, f) for f in plan.files]
        return _result(plan, paths, 0, False, True, t0)
    cache = store.hub_cache()
    try:  # a cache that cannot be written is a local problem, said before any transfer
        ensure_dir(cache)
    except OSError as exc:
        raise os_error(exc, cache, "create the download folder in",
                       hint="set HF_HUB_CACHE (or HF_HOME) to a writable folder") from exc
    have = {f.path: _partial_size(plan.repo, f) for f in missing}
    needed = sum(f.size - have[f.path] for f in missing)
    check = check_disk(needed)
    if not check.fits:
        raise _disk_error(check, plan)
    try:
        return _download_missing(plan, missing, have, progress, on_wait, t0)
    except OSError as exc:  # the cache's disk, not the network (those are HubErrors by now)
        if exc.errno == errno.ENOSPC:
            raise DiskSpaceError(f"the disk filled up while downloading {plan.files[0].path} "
                                 f"({store.hub_cache()}); what arrived is kept",
                                 hint=f"free some space, then `qwen pull {plan.ref}` resumes"
                                 ) from exc
        raise os_error(exc, store.hub_cache(), "write to the cache",
                       hint="set HF_HUB_CACHE (or HF_HOME) to a writable folder") from exc


def _download_missing(plan: PullPlan, missing: list[RemoteFile], have: dict[str, int],
                      progress: Progress | None, on_wait: Callable[[str], None] | None,
                      t0: float) -> PullResult:
    paths: list[Path] = []
    set_record = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in plan.files]
    total = sum(f.size for f in missing)
    done = sum(have.values())
    downloaded = 0
    resumed = done > 0
    if progress is not None:
        label = plan.files[0].path.rsplit("/", 1)[-1]
        if len(plan.files) > 1:
            label += f" (+{len(plan.files) - 1} parts)"
        progress.start(label, total, done)
    try:
        for f in plan.files:
            if f in missing:  # beside its partial; _fetch drops both if no byte came
                store.write_sidecar(plan.repo, f.blob, {
                    "repo": plan.repo, "path": f.path, "commit": plan.commit,
                    "revision": plan.revision, "size": f.size, "sha256": f.sha256,
                    "blob": f.blob, "quant": plan.quant, "set": set_record, "ref": plan.ref})
            got = _fetch(plan, f, progress, have[f.path], on_wait) if f in missing else 0
            downloaded += got
            paths.append(_link(plan, f, new_blob=got > 0))
            with contextlib.suppress(OSError):
                store.sidecar_path(plan.repo, f.blob).unlink()
    finally:
        if progress is not None:
            progress.close()
    return _result(plan, paths, downloaded, resumed, False, t0)


def _result(plan: PullPlan, paths: list[Path], downloaded: int, resumed: bool,
            present: bool, t0: float) -> PullResult:
    return PullResult(path=paths[0], repo=plan.repo, files=tuple(paths), quant=plan.quant,
                      bytes_downloaded=downloaded, resumed=resumed, already_present=present,
                      commit=plan.commit, revision=plan.revision, model_id=plan.model_id,
                      remote=plan.files, size_bytes=plan.size_bytes,
                      verified=all(f.sha256 for f in plan.files),
                      seconds=time.monotonic() - t0, warnings=plan.warnings)


def _fetch(plan: PullPlan, f: RemoteFile, progress: Progress | None, counted: int,
           on_wait: Callable[[str], None] | None) -> int:
    """One file into blobs/<sha>.incomplete, resumed from its size, verified, renamed.

    The blob's lock is huggingface_hub's own, so `hf download` and qwen never write one partial
    at once. When another process holds it, wait (saying so through `on_wait`), then take what
    it left: the finished file, or its partial to resume. `counted` is what the progress bar
    already counts as done for this file.
    """
    from filelock import FileLock, Timeout

    lock_file = store.lock_path(plan.repo, f.blob)
    ensure_dir(lock_file.parent)  # (older filelock releases do not create it)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        if on_wait is not None:
            on_wait(f"{f.path} is being downloaded by another process; waiting for it "
                    "(Ctrl-C stops waiting)")
        lock.acquire(timeout=-1, poll_interval=0.1)
    try:
        if _is_complete(plan.repo, plan.commit, f):  # the other process finished it
            if progress is not None:
                progress.advance(f.size - counted)
            return 0
        partial = store.partial_path(plan.repo, f.blob)
        if progress is not None:
            progress.advance(_partial_size(plan.repo, f) - counted)
        try:  # never through a link: the partial is this cache's file, or nothing
            with open(partial, "ab+", buffering=0, opener=_open_no_follow) as out:
                got, sha = _transfer(plan, f, out, progress, partial)
        except BaseException:
            if _partial_size(plan.repo, f) == 0 or partial.is_symlink():
                _discard(plan, f)  # not a byte arrived: nothing to resume, nothing to list
            raise
        if f.sha256 and sha != f.sha256:
            _discard(plan, f)
            raise ChecksumError(
                f"{f.path}: sha256 mismatch (got {sha[:12]}..., the Hub lists "
                f"{f.sha256[:12]}...); the file was removed",
                hint="run the pull again; if it repeats, the server or a proxy corrupts it")
        os.replace(partial, store.blob_path(plan.repo, f.blob))
        return got
    finally:
        lock.release()


def _open_no_follow(path: str, flags: int) -> int:
    """open()'s opener for a partial: a link there is refused (ELOOP), never written through."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise store.StoreError(f"{path} is a link, not a partial download: refusing to "
                                   "write through it", hint="remove that link, then pull "
                                                            "again") from None
        raise


def _discard(plan: PullPlan, f: RemoteFile) -> None:
    folder = store.repo_dir(plan.repo)
    for path in (store.partial_path(plan.repo, f.blob), store.sidecar_path(plan.repo, f.blob)):
        with contextlib.suppress(store.StoreError):
            store.delete(path, folder)


def _download_timeout() -> float:
    """Seconds to wait for the Hub (HF_HUB_DOWNLOAD_TIMEOUT, checked by check_environment)."""
    text = os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT", "").strip()
    return float(text) if text.isdigit() and int(text) > 0 else 10.0


def _timeout():  # -> httpx2.Timeout
    """One bound for connecting and for each read, from HF_HUB_DOWNLOAD_TIMEOUT."""
    import httpx2

    return httpx2.Timeout(_download_timeout(), connect=_download_timeout())


def _transfer(plan: PullPlan, f: RemoteFile, out, progress: Progress | None,
              partial: Path) -> tuple[int, str]:
    """Stream the rest of the file with Range requests, retrying cut connections from the
    last byte on disk. Returns the bytes received and the whole file's sha256."""
    import httpx2
    from huggingface_hub.utils import get_session, hf_raise_for_status

    have = out.seek(0, os.SEEK_END)
    if have > f.size:  # more than the file has: not ours to trust
        have = _restart(out, None, 0)
    digest = hashlib.sha256()
    out.seek(0)
    for chunk in iter(lambda: out.read(8 << 20), b""):  # the kept bytes count in the hash
        digest.update(chunk)
    session = get_session()
    url = file_url(plan.repo, f.path, plan.commit)
    received = 0
    pending = 0  # bytes not yet reported to the progress bar
    idle = 0  # attempts in a row that brought no new byte
    restarts = 0  # times the partial was thrown away and the file started again
    timeout = _timeout()
    try:
        while have < f.size:
            headers = {**auth_headers(), "Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
            before = have
            try:
                with session.stream("GET", url, headers=headers, timeout=timeout) as response:
                    if response.status_code == 416 and have:
                        served = _content_range(response.headers.get("Content-Range"))[1]
                        if (served is not None and served != f.size) or restarts:
                            raise _size_mismatch(plan, f, served)
                        restarts += 1  # the partial is not the start of this file
                        have, digest = _restart(out, progress, have), hashlib.sha256()
                        continue
                    try:
                        hf_raise_for_status(response)
                    except Exception as exc:
                        raise _hub_error(plan.repo, exc) from exc
                    if have and (response.status_code != 206 or _content_range(
                            response.headers.get("Content-Range"))[0] != have):
                        # the server ignored Range: it sends the whole file
                        restarts += 1
                        have, digest = _restart(out, progress, have), hashlib.sha256()
                    for chunk in response.iter_raw():
                        if have + len(chunk) > f.size:
                            raise HubError(f"{f.path}: the server sent more than the "
                                           f"{f.size} bytes the Hub lists")
                        out.write(chunk)
                        digest.update(chunk)
                        have += len(chunk)
                        received += len(chunk)
                        pending += len(chunk)
                        if pending >= _CHUNK and progress is not None:
                            progress.advance(pending)
                            pending = 0
            except httpx2.TransportError as exc:
                idle = 0 if have > before else idle + 1
                if idle >= _RETRIES:
                    kept = (f"{have:,} of {f.size:,} bytes kept" if have else
                            "nothing was written")
                    again = "to resume" if have else "when the network is back"
                    raise HubUnreachableError(
                        f"transfer of {f.path} failed: {_first_line(exc)}; {kept}",
                        hint=f"run `qwen pull {plan.ref}` again {again}") from exc
                if idle:  # straight back after progress; back off while nothing comes
                    time.sleep(min(0.5 * 2 ** (idle - 1), 8.0))
                continue
            if have < f.size:
                idle = 0 if have > before else idle + 1
                if idle >= _RETRIES or restarts > _RETRIES:
                    raise _size_mismatch(plan, f, have) if restarts else HubError(
                        f"transfer of {f.path} keeps ending early at byte {have} of {f.size}",
                        hint=f"run `qwen pull {plan.ref}` again")
    except KeyboardInterrupt:
        raise PullInterrupted(have, f.size, partial) from None
    finally:
        if progress is not None and pending:
            progress.advance(pending)
    return received, digest.hexdigest()


def _size_mismatch(plan: PullPlan, f: RemoteFile, served: int | None) -> HubError:
    """The server's file and the Hub's listing disagree on the size: retrying cannot help."""
    sent = f"{served:,} bytes" if served is not None else "a different size"
    return HubError(f"{f.path}: the server sends {sent} but the Hub's listing says "
                    f"{f.size:,}; not downloading a file that cannot match its listing",
                    hint="try again later (the repository may be changing); if it persists, "
                         f"report it to the owners of {plan.repo}")


def _restart(out, progress: Progress | None, have: int) -> int:
    """Throw away what the partial holds (the caller starts a fresh hash)."""
    out.truncate(0)
    out.seek(0)
    if progress is not None and have:
        progress.advance(-have)
    return 0


# --------------------------------------------------------------------------------------------
# The whole pull


def pull_model(ref: str, *, quant: str | None = None, progress: Progress | None = None,
               confirm: Callable[[str], bool] | None = None,
               on_wait: Callable[[str], None] | None = None) -> PullResult:
    """Resolve a MODEL reference through the Hub, then download and verify what is missing.

    `confirm` asks the person before a download starts (None: no consent needed); a "no" is an
    error that says how to download it later.
    """
    from qwencli.units import format_bytes

    plan = resolve_pull(ref, quant=quant)
    if confirm is not None and not plan.offline:
        missing = [f for f in plan.files if not _is_complete(plan.repo, plan.commit, f)]
        if missing:
            size = format_bytes(sum(f.size for f in missing))
            what = f"{plan.files[0].path} ({size}) from {plan.repo}"
            if not confirm(f"Download {what}?"):
                raise HubError(f"{ref} is not downloaded ({what} needed)",
                               hint=f"run `qwen pull {ref}`, or pass --yes")
    return download(plan, progress=progress, on_wait=on_wait)


# --------------------------------------------------------------------------------------------
# GGUF headers by HTTP Range: gguf_info's RangeReader on huggingface_hub's session, so that
# reading a header and `qwen pull` share one client (proxies, TLS, token, errors).

def read_remote_model(repo: str, path: str, revision: str | None = None, *,
                      use_cache: bool = True) -> GgufModel:
    """The GGUF header(s) of `path` in `repo` (every part when it is a split set), a few MB
    read by Range instead of the weights. Raises HubError like `qwen pull`, or GgufError."""
    from functools import partial

    from qwencli.gguf_info import read_model

    return read_model(file_url(repo, path, revision), open_reader=partial(HubRangeReader, repo),
                      use_cache=use_cache)


class HubRangeReader:
    """Byte ranges of one file of `repo` at `url` (a gguf_info.RangeReader).

    Redirects are followed by httpx2, which drops Authorization when a redirect leaves the
    origin (the Hub sends LFS files to a CDN host). Later ranges go straight to where the
    redirect led, with the token only if httpx2 kept it on that last hop: one request per
    range, and the token never goes where httpx2 would not send it. A server that ignores
    Range (200, the whole file) is read only as far as asked, then the connection is dropped.
    """

    def __init__(self, repo: str, url: str) -> None:
        self.repo = repo
        self.url = url  # where the next request goes: the CDN after a redirect
        self._name = url.rsplit("/", 1)[-1]
        self._send_token = True
        self._etag: str | None = None
        self._open = contextlib.ExitStack()  # the open response (kept only when Range is ignored)
        self._body: Iterator[bytes] | None = None
        self._spare = b""  # received beyond what was asked
        self._at = 0  # file offset of the next body byte (after _spare)

    def read_range(self, start: int, n: int) -> RangeReply:
        from qwencli.gguf_info import RangeReply

        if self._body is not None and start == self._at - len(self._spare):
            return RangeReply(self._take(n), etag=self._etag, range_honoured=False,
                              requests=0)  # read on in the same whole-file response
        self.close()
        if offline():
            raise HubError(f"cannot read {self._name} from {self.repo}: HF_HUB_OFFLINE is set",
                           hint="unset HF_HUB_OFFLINE to read the header from the Hub")
        import httpx2

        try:
            return self._request(start, n)
        except (httpx2.HTTPError, OSError) as exc:  # DNS, refused, timeout, cut, redirect loop
            self.close()
            raise _hub_error(self.repo, exc) from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._body, self._spare = None, b""
        self._open.close()

    def _request(self, start: int, n: int) -> RangeReply:
        from huggingface_hub.utils import get_session, hf_raise_for_status

        from qwencli.gguf_info import RangeReply

        headers = {**auth_headers(), "Accept-Encoding": "identity",
                   "Range": f"bytes={start}-{start + n - 1}"}
        if not self._send_token:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        timeout = _timeout()
        response = self._open.enter_context(
            get_session().stream("GET", self.url, headers=headers, timeout=timeout))
        hops = (*response.history, response)
        if response.history:  # next time straight there, with what httpx2 sent there
            self.url = str(response.url)
            self._send_token = "authorization" in response.request.headers
        if self._etag is None:
            linked = [h.headers["X-Linked-Etag"] for h in hops if "X-Linked-Etag" in h.headers]
            self._etag = linked[0] if linked else response.headers.get("ETag")
        first, total = _content_range(response.headers.get("Content-Range"))
        if response.status_code == 416:  # nothing at or after `start`: the file is shorter
            self.close()
            return RangeReply(b"", total, self._etag, requests=len(hops))
        try:
            hf_raise_for_status(response)
        except Exception as exc:
            raise _hub_error(self.repo, exc) from exc
        if response.status_code == 206:
            if first != start:
                raise HubError(f"{self._name}: {endpoint()} answered a range request for byte "
                               f"{start} with {response.headers.get('Content-Range')!r}")
            self._body, self._at = response.iter_raw(), start
            data = self._take(n)
            if not self._spare:  # reach the body's end, so the connection can be reused
                next(self._body, None)
            self.close()
            return RangeReply(data, total, self._etag, requests=len(hops))
        if response.status_code != 200:
            raise HubError(f"{endpoint()} answered {response.status_code} for {self._name} "
                           f"in {self.repo}")
        length = response.headers.get("Content-Length", "")
        self._body, self._at = response.iter_raw(), 0
        while self._at - len(self._spare) < start:  # skip to `start` (only after a reopen)
            if not self._take(min(start - (self._at - len(self._spare)), 1 << 20)):
                break
        data = self._take(n)
        return RangeReply(data, int(length) if length.isdigit() else None, self._etag,
                          range_honoured=False, requests=len(hops))

    def _take(self, n: int) -> bytes:
        """Up to n bytes of the open body, fewer only where it ends."""
        out, self._spare = bytearray(self._spare[:n]), self._spare[n:]
        while len(out) < n and self._body is not None:
            chunk = next(self._body, b"")
            if not chunk:
                break
            self._at += len(chunk)
            need = n - len(out)
            out += chunk[:need]
            self._spare = chunk[need:]
        return bytes(out)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 0-99/1234' -> (0, 1234); 'bytes */1234' -> (None, 1234)."""
    match = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    return start, int(match.group(2)) if match.group(2) != "*" else None
