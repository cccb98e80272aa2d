"""The share of Apple unified memory that Metal lets the GPU use (its working set).

macOS caps what the GPU may wire at `MTLDevice.recommendedMaxWorkingSetSize`. A user can raise
it with `sudo sysctl iogpu.wired_limit_mb=N`; when that is set (non-zero) it is the limit.
Otherwise the default share is about 2/3 of RAM up to 32 GiB and 3/4 above, as llama.cpp's
`ggml_metal_init` logs show (recommendedMaxWorkingSetSize 5461 MB on 8 GB, 10923 MB on 16 GB,
21845 MB on 32 GB, 27648 MB on 36 GB, 49152 MB on 64 GB). Recent macOS releases report somewhat
more on large machines (107.5 GiB on 128 GiB, antirez/ds4#893), so the default is, if anything,
cautious there.
"""

from __future__ import annotations

GIB = 1024**3

DEFAULT_SHARE_SOURCE = (
    "macOS default Metal working set (about 2/3 of RAM up to 32 GiB, 3/4 above; "
    "raise it with sudo sysctl iogpu.wired_limit_mb=N)"
)


def default_working_set(total_ram_bytes: int) -> int:
    """What Metal grants the GPU by default on a Mac with this much unified memory."""
    share = 2 / 3 if total_ram_bytes <= 32 * GIB else 3 / 4
    return int(total_ram_bytes * share)


def working_set(total_ram_bytes: int, wired_limit_mb: int | None) -> tuple[int, str]:
    """The GPU working set and its source: the sysctl when set, the default share otherwise."""
    if wired_limit_mb and wired_limit_mb > 0:
        limit = min(wired_limit_mb * 1024 * 1024, total_ram_bytes)
        return limit, f"iogpu.wired_limit_mb = {wired_limit_mb}"
    return default_working_set(total_ram_bytes), DEFAULT_SHARE_SOURCE
