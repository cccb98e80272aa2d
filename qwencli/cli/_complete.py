"""Shell completion values: model names, quants, downloaded models, hardware profiles, uses.

Typer calls these when the shell asks (`qwen --install-completion` sets that up for bash, zsh
and fish); a completion must answer within 0.3 s. Loading the catalog (nine TOML files, checked)
or importing the recommender costs more than that budget leaves on a small machine, so the
values are kept in `<cache dir>/completion.json` with a fingerprint of what they come from (the
files' sizes and times, the folders' times, qwen's version): the first completion after a change
computes them the slow way through the modules that own them (catalog, store, profiles,
recommend), later ones read the file. This module imports nothing heavy at module level (the
command modules import it for `qwen --help`). A completer never raises (a shell shows a
traceback as garbage): anything that goes wrong offers nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Choices = list[tuple[str, str]]
CACHE_NAME = "completion.json"


def _safe(make: Callable[[str], Iterable[tuple[str, str]]]) -> Callable[[str], Choices]:
    def complete(incomplete: str) -> Choices:
        try:
            return [(value, help_text) for value, help_text in make(incomplete)
                    if value.lower().startswith(incomplete.lower())]
        except Exception:  # a bad profile, an unreadable cache: offer nothing
            return []

    complete.__name__ = make.__name__
    complete.__doc__ = make.__doc__
    return complete


# ------------------------------------------------------------------------------------------
# The cache


def _stamp(path: Path) -> list[Any]:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path), st.st_mtime_ns, st.st_size]


def _folder_stamps(folder: Path, suffix: str = "") -> list[Any]:
    """The folder's time (a file added or removed changes it) and its files' stamps."""
    stamps = [_stamp(folder)]
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return stamps
    return stamps + [_stamp(Path(e.path)) for e in entries if e.name.endswith(suffix)]


def _cached(key: str, fingerprint: list[Any], compute: Callable[[], Any]) -> Any:
    """`compute()`, or what it gave last time for the same fingerprint."""
    import json

    from qwencli import __version__
    from qwencli.paths import cache_dir

    fingerprint = json.loads(json.dumps([__version__, *fingerprint]))  # tuples as lists
    path = cache_dir() / CACHE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    entry = data.get(key)
    if isinstance(entry, dict) and entry.get("fingerprint") == fingerprint:
        return entry.get("values")
    values = compute()
    data[key] = {"fingerprint": fingerprint, "values": values}
    try:
        from qwencli.fileio import atomic_write

        atomic_write(path, json.dumps(data))
    except OSError:
        pass  # a read-only cache: slower completions, the same values
    return values


def _catalog_stamps() -> list[Any]:
    from qwencli.paths import bundled_profiles_dir, config_dir

    bundled = bundled_profiles_dir()
    return [_stamp(bundled / "quants.toml"), _folder_stamps(bundled / "models", ".toml"),
            _folder_stamps(config_dir() / "models", ".toml")]


# ------------------------------------------------------------------------------------------
# The values


def _catalog_entries() -> list[list[Any]]:
    """[id, name, quants, aliases] for every catalog model."""
    from qwencli.catalog import load_catalog

    return [[spec.id, spec.name, list(spec.quants), list(spec.aliases)]
            for spec in load_catalog().all_models]


def _catalog_models(incomplete: str) -> Iterable[tuple[str, str]]:
    """Catalog ids; with a `:` (or a whole id typed), that model's quants."""
    entries = _cached("catalog", _catalog_stamps(), _catalog_entries)
    name, colon, _quant = incomplete.partition(":")
    for model_id, title, quants, aliases in entries:
        if name.lower() in (model_id.lower(), *(a.lower() for a in aliases)):
            yield from ((f"{name}:{quant.lower()}", f"{title} {quant}") for quant in quants)
    if colon:
        return
    for model_id, title, _quants, aliases in entries:
        yield model_id, title
        for alias in aliases:
            yield alias, title


def _download_stamps() -> list[Any]:
    """Every repository folder of the Hugging Face cache with its blobs and snapshots
    (a download that completes renames a blob and links a snapshot file)."""
    from qwencli.paths import hub_cache

    base = hub_cache()
    stamps: list[Any] = [_stamp(base)]
    try:
        repos = sorted(e.path for e in os.scandir(base) if e.name.startswith("models--"))
    except OSError:
        return stamps
    for repo in repos:
        stamps += [_stamp(Path(repo) / "blobs"), _folder_stamps(Path(repo) / "snapshots")]
        try:
            commits = sorted(e.path for e in os.scandir(Path(repo) / "snapshots"))
        except OSError:
            continue
        for commit in commits:  # split files may sit one folder down
            stamps.append([_stamp(Path(commit)), *(
                _stamp(Path(e.path)) for e in os.scandir(commit) if e.is_dir())])
    return stamps


def _download_entries() -> list[str]:
    from qwencli import store

    refs = []
    for m in store.scan(model_id=store.catalog_id_lookup()):
        if m.complete and m.quant:
            refs.append(f"{m.model_id}:{m.quant.lower()}" if m.model_id
                        else f"{m.repo}:{m.quant}")
    return sorted(set(refs))


def _downloaded(incomplete: str) -> Iterable[tuple[str, str]]:
    """Complete downloads in the Hugging Face cache, by catalog name where there is one."""
    fingerprint = [*_catalog_stamps(), *_download_stamps()]
    return ((ref, "downloaded") for ref in _cached("downloads", fingerprint, _download_entries))


def _models(incomplete: str) -> Iterable[tuple[str, str]]:
    """Downloaded models first, then the catalog (each name once)."""
    seen: set[str] = set()
    for value, help_text in (*_downloaded(incomplete), *_catalog_models(incomplete)):
        if value not in seen:
            seen.add(value)
            yield value, help_text


def _profile_names() -> list[str]:
    from qwencli.hardware.profiles import list_profiles

    return list(list_profiles())


def _hardware_profiles(incomplete: str) -> Iterable[tuple[str, str]]:
    """Named machines for --hardware (bundled and the user's own)."""
    from qwencli.paths import bundled_profiles_dir, config_dir

    fingerprint = [_stamp(bundled_profiles_dir() / "hardware"),
                   _stamp(config_dir() / "hardware")]
    return ((name, "hardware profile") for name in
            _cached("hardware", fingerprint, _profile_names))


def _use_names() -> list[str]:
    from qwencli.recommend import USES

    return list(USES)


def _uses(incomplete: str) -> Iterable[tuple[str, str]]:
    """What a model is for (--use); they change only with qwen's version."""
    return ((use, "use") for use in _cached("uses", [], _use_names))


models = _safe(_models)
downloaded = _safe(_downloaded)
hardware_profiles = _safe(_hardware_profiles)
uses = _safe(_uses)
