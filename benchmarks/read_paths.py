"""Median time of the reads behind `qwen recommend` and `qwen fit`, against their budgets.

Usage: python benchmarks/read_paths.py [--runs 10]

These budgets were once asserted by unit tests, which failed whenever the machine was busy. The
tests now assert what makes each path fast (the catalog parses each file once, a header read
touches < 1 MiB of the file, a cached header reads none of it); this script measures the time:

- catalog cold load: parsing profiles/ (`qwen recommend --json` has 0.4 s in all)
- GGUF header of a sparse 8 GiB Qwen2.5-7B file, cache off
- the same header served from the header cache
- `qwen fit` of a sparse 4.4 GB Qwen2.5-7B file, a whole process

Needs the test extra (pip install -e ".[test]"): the files are written with tests/gguf_fixtures.
Run it alone: the machines are shared and noisy, which is why it reports medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GIB = 1024**3
TARGETS = {"catalog": 0.050, "header": 0.2, "cached": 0.05, "fit": 3.0}


def median_time(action: Callable[[], object], runs: int,
                before: Callable[[], object] = lambda: None) -> float:
    """Median seconds of `action` over `runs` runs (after one warm-up); `before` is untimed."""
    before()
    action()
    timings = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qwen-read-paths-"))
    os.environ["QWEN_CONFIG_DIR"] = str(work / "config")  # no user overlay, no user cache
    os.environ["QWEN_CACHE_DIR"] = str(work / "cache")
    try:
        from qwencli import gguf_info
        from qwencli.catalog import clear_cache, load_catalog
        from tests.gguf_fixtures import QWEN25_7B, write_header_only_gguf

        meta = QWEN25_7B.arch_metadata()
        big = write_header_only_gguf(work / "qwen2.5-7b-q4_k-8g.gguf",
                                     QWEN25_7B.tensor_specs("Q4_K", output_type="Q6_K"),
                                     8 * GIB, arch="qwen2", metadata=meta)
        fit_file = write_header_only_gguf(
            work / "qwen2.5-7b-q4_k.gguf",
            QWEN25_7B.tensor_specs("Q4_K", embd_type="Q4_K", output_type="Q6_K"),
            arch="qwen2", metadata=meta)
        gguf_info.read_header(big)  # fills the header cache for the cached row
        fit = [sys.executable, "-m", "qwencli", "fit", str(fit_file), "--ctx", "8192", "--json"]
        rows = [
            ("catalog cold load", median_time(load_catalog, args.runs, before=clear_cache),
             TARGETS["catalog"]),
            ("GGUF header, 8 GiB file", median_time(
                lambda: gguf_info.read_header(big, use_cache=False), args.runs),
             TARGETS["header"]),
            ("GGUF header, from cache", median_time(
                lambda: gguf_info.read_header(big), args.runs), TARGETS["cached"]),
            ("qwen fit, 4.4 GB file", median_time(
                lambda: subprocess.run(fit, stdout=subprocess.DEVNULL, check=True),
                args.runs), TARGETS["fit"]),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'path':<26}{'median s':>10}{'target s':>10}  verdict   ({args.runs} runs)")
    for name, seconds, target in rows:
        verdict = "ok" if seconds <= target else "OVER"
        print(f"{name:<26}{seconds:>10.3f}{target:>10.2f}  {verdict}")


if __name__ == "__main__":
    main()
