"""Where qwen keeps its data: bundled profiles, the user's config and cache directories.

Follows each platform's convention (XDG on Linux, ~/Library on macOS, %APPDATA% on Windows);
`QWEN_CONFIG_DIR`, `QWEN_CACHE_DIR` and `QWEN_DATA_DIR` override them (the tests point them at a
temp folder).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def bundled_profiles_dir() -> Path:
    """The `profiles/` data shipped with the package (inside the wheel, or the source checkout)."""
    here = Path(__file__).resolve().parent
    packaged = here / "_profiles"
    if packaged.is_dir():
        return packaged
    return here.parent / "profiles"


def _settings_dir(override_var: str, xdg_var: str, xdg_default: Path) -> Path:
    """$override_var, else the platform's folder for what a user keeps: Application Support on
    macOS, %APPDATA% on Windows (config and data share it there), $xdg_var (default
    ~/xdg_default) elsewhere."""
    override = os.environ.get(override_var)
    if override:
        return Path(override)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "qwen"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "qwen"
    return Path(os.environ.get(xdg_var) or Path.home() / xdg_default) / "qwen"


def config_dir() -> Path:
    """The user's config directory: config file, overlay profiles (`hardware/`, `models/`)."""
    return _settings_dir("QWEN_CONFIG_DIR", "XDG_CONFIG_HOME", Path(".config"))


def cache_dir() -> Path:
    """The user's cache directory: probe results worth keeping (bandwidth, llama.cpp build)."""
    override = os.environ.get("QWEN_CACHE_DIR")
    if override:
        return Path(override)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "qwen"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
        return Path(base) / "qwen" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwen"


def data_dir() -> Path:
    """The user's data directory: what qwen keeps that is neither a setting nor re-creatable
    (the conversation log). XDG_DATA_HOME on Linux; on macOS and Windows the same folder as
    the config (Application Support, %APPDATA%), as those platforms do."""
    return _settings_dir("QWEN_DATA_DIR", "XDG_DATA_HOME", Path(".local", "share"))


def hub_cache() -> Path:
    """The Hugging Face Hub cache folder, resolved like huggingface_hub does, but at call time
    (here, not in `store`, so that shell completion finds it without loading the catalog)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expanduser(os.path.expandvars(explicit)))
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expanduser(os.path.expandvars(home))) / "hub"
