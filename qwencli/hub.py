"""The Hugging Face Hub: which GGUF files a repository holds, and where to read them.

huggingface_hub does the talking; this module turns its answers and errors into ours. The Hub is
named by HF_ENDPOINT and reached with HF_TOKEN (or a saved `hf auth login`), both read at call
time so that a test (or a user) can point them elsewhere. HF_HUB_OFFLINE=1 forbids the network.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from qwencli.errors import QwenError

DEFAULT_ENDPOINT = "https://huggingface.co"
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


class HubError(QwenError):
    """The Hub could not answer: offline, unreachable, a missing or gated repository."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def auth_headers() -> dict[str, str]:
    """Authorization (when a token is known) and huggingface_hub's user agent."""
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(token=os.environ.get("HF_TOKEN") or None,
                            library_name="qwencli")


def file_url(repo: str, path: str, revision: str | None = None) -> str:
    return f"{endpoint()}/{repo}/resolve/{revision or 'main'}/{path}"


def _hub_error(repo: str, exc: Exception) -> HubError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return HubError(f"{repo} is gated: accept its licence on the Hub, then give a token",
                        hint="export HF_TOKEN=hf_... or run `hf auth login`")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"repository {repo} not found on {endpoint()} (or it is private)",
                        hint="check the name; for a private repository set HF_TOKEN")
    return HubError(f"cannot list {repo} on {endpoint()}: {type(exc).__name__}: {exc}",
                    hint="check the network, or set HF_HUB_OFFLINE=1 to work offline")


def list_gguf_files(repo: str, revision: str | None = None) -> list[RemoteFile]:
    """Every .gguf file in a repository (sub-folders included), with size and sha256."""
    if offline():
        raise HubError(f"cannot list {repo}: HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint(), token=os.environ.get("HF_TOKEN") or None,
                library_name="qwencli")
    try:
        entries = list(api.list_repo_tree(repo, recursive=True, revision=revision))
    except Exception as exc:  # huggingface_hub raises many types; all end here as one line
        raise _hub_error(repo, exc) from exc
    files = []
    for entry in entries:
        if isinstance(entry, RepoFile) and entry.path.lower().endswith(".gguf"):
            sha = entry.lfs.sha256 if entry.lfs is not None else None
            files.append(RemoteFile(entry.path, int(entry.size), sha))
    return files


def _quant_token(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return _SPLIT_RE.sub(".gguf", name)[: -len(".gguf")]


def match_quant(files: list[RemoteFile], quant: str) -> list[RemoteFile]:
    """The files of one quant, matched case-insensitively on a whole name part (so Q4_K does
    not match Q4_K_M, nor Q4_K_M match UD-Q4_K_M); all split parts, in order. Projector files
    (mmproj) are never a match."""
    wanted = quant.lower()
    pattern = re.compile(rf"(^|[-_.]){re.escape(wanted)}$")
    chosen = [f for f in files
              if "mmproj" not in f.path.lower() and pattern.search(_quant_token(f.path).lower())
              and not _quant_token(f.path).lower().endswith(f"ud-{wanted}")]
    return sorted(chosen, key=lambda f: f.path)


def quants_in(files: list[RemoteFile]) -> list[str]:
    """The quant labels present, for "did you mean" messages."""
    labels = set()
    for f in files:
        if "mmproj" in f.path.lower():
            continue
        match = re.search(r"((?:UD-)?(?:I?Q\d\w*|BF16|F16|F32))$", _quant_token(f.path),
                          re.IGNORECASE)
        if match:
            labels.add(match.group(1).upper())
    return sorted(labels)
