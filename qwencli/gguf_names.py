"""What a GGUF file's name says: split parts, the quant label, projector files. Pure.

The Hub, the local cache and the header reader all meet the same names (`x-Q4_K_M.gguf`,
`x-Q4_K_M-00001-of-00003.gguf`, `mmproj-F16.gguf`), so the rules live here once:

- A split set is `<stem>-NNNNN-of-MMMMM.gguf`; its key is `<stem>.gguf`, and llama.cpp is handed
  part 1, from which it finds the others.
- A quant label is the last `-`/`_`/`.`-separated part of the name without the split suffix
  (`Q4_K_M`, `UD-Q4_K_XL`, `IQ4_XS`, `BF16`), compared case-insensitively: `Q4_K` does not match
  `Q4_K_M`, nor `Q4_K_M` match `UD-Q4_K_M` (Unsloth's dynamic quants are another file).
- A multimodal projector (`mmproj`) is never a model file.
- A file's path inside a repository is compared case-insensitively everywhere (the Hub's
  resolution, the local cache, `qwen chat -m owner/repo/FILE.gguf`): `file_key` is the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SUFFIX = ".gguf"
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_LABEL_RE = re.compile(r"((?:UD-)?(?:I?Q\d\w*|BF16|F16|F32))$", re.IGNORECASE)


def base_name(path: str) -> str:
    """The last path segment (Hub paths use `/`)."""
    return path.rsplit("/", 1)[-1]


def file_key(path: str) -> str:
    """What two repo-relative file names are compared by: `TINY-Q4_K_M.GGUF` names the same
    file as `tiny-Q4_K_M.gguf`."""
    return path.casefold()


def same_file(a: str, b: str) -> bool:
    """Whether two repo-relative paths name the same file (see `file_key`)."""
    return file_key(a) == file_key(b)


def is_gguf(path: str) -> bool:
    return path.lower().endswith(SUFFIX)


def is_projector(path: str) -> bool:
    """A multimodal projector file (`mmproj-*.gguf`): loaded beside a model, never as one."""
    return "mmproj" in base_name(path).lower()


def is_model_file(path: str) -> bool:
    return is_gguf(path) and not is_projector(path)


def split_info(path: str) -> tuple[str, int, int] | None:
    """(set key, part number, part count) for `x-00002-of-00003.gguf`; None for one file."""
    match = _SPLIT_RE.search(path)
    if not match:
        return None
    return path[: match.start()] + SUFFIX, int(match.group(1)), int(match.group(2))


def part_name(set_key: str, number: int, count: int) -> str:
    """The name of part `number` of a set (the key itself for a single file)."""
    if count == 1:
        return set_key
    return f"{set_key[: -len(SUFFIX)]}-{number:05d}-of-{count:05d}{SUFFIX}"


def split_names(path: str, count: int) -> list[str]:
    """Every part of the split set `path` belongs to, in order, given any part."""
    key = _SPLIT_RE.sub(SUFFIX, path)
    return [part_name(key, i, count) for i in range(1, count + 1)]


def set_key(path: str) -> str:
    """The name shared by every part of a split set (the file itself when not split)."""
    info = split_info(path)
    return info[0] if info else path


def _token(path: str) -> str:
    """The file name without the split suffix and the extension."""
    name = _SPLIT_RE.sub(SUFFIX, base_name(path))
    return name[: -len(SUFFIX)] if name.lower().endswith(SUFFIX) else name


def quant_label(path: str) -> str | None:
    """The quant a file name carries, upper case (Q4_K_M, UD-Q4_K_XL, BF16), or None."""
    if is_projector(path):
        return None
    match = _LABEL_RE.search(_token(path))
    return match.group(1).upper() if match else None


def matches_quant(path: str, quant: str) -> bool:
    """Whether a model file is of `quant`: a whole name part, case-insensitive, never a
    projector, and `Q4_K_M` is not Unsloth's `UD-Q4_K_M`."""
    if not is_model_file(path):
        return False
    wanted = quant.lower()
    token = _token(path).lower()
    if not re.search(rf"(^|[-_.]){re.escape(wanted)}$", token):
        return False
    return wanted.startswith("ud-") or not token.endswith(f"ud-{wanted}")


def quants_in(paths: Iterable[str]) -> list[str]:
    """The quant labels present among model files, sorted (for "it has: ..." messages)."""
    return sorted({label for path in paths if (label := quant_label(path))})
