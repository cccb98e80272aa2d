"""MODEL references: what a person types after `qwen fit`, `pull`, `chat -m`. Pure.

Three kinds, told apart by their shape (never by what happens to exist on disk):
- a catalog name, `qwen3-8b` or `qwen3-8b:q5_k_m`;
- a Hub reference in llama.cpp's `-hf` style, `owner/repo[:QUANT]`, a file in a repository,
  `owner/repo/path/file.gguf`, or a copied Hub URL (`.../resolve/<rev>/<file>`);
- a local `.gguf` file (a path that starts like one, or a name ending in `.gguf`); a file
  without the `.gguf` ending is named as a path (`./model`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qwencli.errors import UsageError

DEFAULT_HUB_QUANT = "Q4_K_M"  # llama.cpp's `-hf owner/repo` default tag

ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class CatalogRef:
    """`qwen3-8b` or `qwen3-8b:q5_k_m`: a model from the catalog, optionally a quant."""

    id: str
    quant: str | None = None


@dataclass(frozen=True)
class HubRef:
    """`owner/repo[:QUANT]` (llama.cpp -hf style) or `owner/repo/path/file.gguf`."""

    repo: str
    quant: str | None = DEFAULT_HUB_QUANT  # None when a file is named
    filename: str | None = None
    revision: str | None = None
    quant_given: bool = False


@dataclass(frozen=True)
class LocalRef:
    """A GGUF file on this machine."""

    path: Path


ModelRef = CatalogRef | HubRef | LocalRef

_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "https://hf.co/",
                 "http://hf.co/", "huggingface.co/", "hf.co/", "hf://")


def normalize_quant(name: str) -> str:
    """Quant names compare case-insensitively; the canonical form is upper case."""
    return name.strip().upper()


def parse_ref(text: str) -> ModelRef:
    """Classify a MODEL argument: a local path, a Hub reference or a catalog reference."""
    raw = text.strip()
    if not raw:
        raise UsageError("MODEL is empty; give a catalog name (qwen3-8b), a Hub reference "
                         "(Qwen/Qwen3-8B-GGUF:Q4_K_M) or a .gguf path")
    if _looks_local(raw):
        return LocalRef(Path(raw).expanduser())
    lowered = raw.lower()
    for prefix in _HUB_PREFIXES:
        if lowered.startswith(prefix):
            return _parse_hub(raw[len(prefix):], raw)
    if "/" in raw or "\\" in raw:
        segments = raw.replace("\\", "/").split("/")
        if lowered.endswith(".gguf") and len(segments) < 3:
            return LocalRef(Path(raw).expanduser())  # dir/file.gguf: a (missing) local file
        return _parse_hub(raw, raw)
    if lowered.endswith(".gguf"):
        return LocalRef(Path(raw))
    return _parse_catalog(raw)


def _looks_local(raw: str) -> bool:
    """A path by its shape (`./x`, `../x`, `/x`, `~/x`, `C:\\x`), never by what happens to be
    in the current folder: a file named `qwen3-8b` there must not hijack the catalog name."""
    if raw.startswith(("./", "../", "/", "~", ".\\", "..\\")) or re.match(r"^[A-Za-z]:[\\/]",
                                                                          raw):
        return True
    return raw in (".", "..")


def _parse_catalog(raw: str) -> CatalogRef:
    name, sep, quant = raw.partition(":")
    name = name.strip().lower()
    if not ID_RE.match(name):
        raise UsageError(f"{raw!r} is not a model name; use e.g. qwen3-8b or qwen3-8b:q5_k_m")
    if sep:
        if not quant or ":" in quant or not _TAG_RE.match(quant):
            raise UsageError(f"{raw!r}: expected NAME:QUANT, e.g. qwen3-8b:q5_k_m")
        return CatalogRef(name, normalize_quant(quant))
    return CatalogRef(name, None)


def _parse_hub(rest: str, raw: str) -> HubRef:
    body, sep, tag = rest.partition(":")
    segments = [s for s in body.split("/") if s]
    if len(segments) < 2:
        raise UsageError(f"{raw!r}: a Hub reference is owner/repo[:QUANT]")
    repo = f"{segments[0]}/{segments[1]}"
    if not REPO_RE.match(repo):
        raise UsageError(f"{raw!r}: {repo!r} is not a Hub repository name")
    tail = segments[2:]
    revision = None
    if len(tail) >= 2 and tail[0] in ("resolve", "blob", "tree"):
        revision, tail = tail[1], tail[2:]  # a copied Hub URL: .../resolve/<rev>/<file>
    if tail:
        filename = "/".join(tail)
        if sep:
            raise UsageError(f"{raw!r}: give either a file or a :QUANT tag, not both")
        if not filename.lower().endswith(".gguf"):
            raise UsageError(f"{raw!r}: {filename!r} is not a .gguf file")
        return HubRef(repo=repo, quant=None, filename=filename, revision=revision)
    if sep:
        if not tag or not _TAG_RE.match(tag):
            raise UsageError(f"{raw!r}: bad quant tag {tag!r}; e.g. {repo}:Q4_K_M")
        return HubRef(repo=repo, quant=normalize_quant(tag), revision=revision,
                      quant_given=True)
    return HubRef(repo=repo, revision=revision)


def with_quant(ref: CatalogRef | HubRef, quant: str | None) -> str:
    """The reference text that names exactly one quant (or file) of `ref`: how `qwen` spells a
    choice back to the person (`qwen3-8b:Q4_K_M`, `owner/repo:Q4_K_M`, `owner/repo/file.gguf`)."""
    if isinstance(ref, CatalogRef):
        chosen = quant or ref.quant
        return f"{ref.id}:{chosen}" if chosen else ref.id
    rev = f"/resolve/{ref.revision}" if ref.revision else ""
    if ref.filename:
        return f"{ref.repo}{rev}/{ref.filename}"
    chosen = quant or (ref.quant if ref.quant_given else None)
    return f"{ref.repo}{rev}:{chosen}" if chosen else f"{ref.repo}{rev}"


__all__ = ["DEFAULT_HUB_QUANT", "ID_RE", "REPO_RE", "CatalogRef", "HubRef", "LocalRef",
           "ModelRef", "normalize_quant", "parse_ref", "with_quant"]
