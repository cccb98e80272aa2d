"""Median wall time of `qwen --help`, `qwen hw --json` and `qwen recommend --json`.

Usage: python benchmarks/startup.py [--runs 10]

Each command runs once first (to fill the caches: RAM bandwidth, the llama.cpp build probe), then
--runs times; the median is printed with the target. `--help` is timed piped (plain help) and on a
pseudo-terminal (Rich help), since the two take different paths. Run it alone: the machines are
shared and noisy, which is why it reports medians.
"""

from __future__ import annotations

import argparse
import os
import pty
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"qwen --help": 0.15, "qwen hw --json": 0.4, "qwen recommend --json": 0.35}


def installed_qwen() -> str:
    """The `qwen` of this environment (beside this Python), else the one on PATH."""
    beside = Path(sys.executable).with_name("qwen")
    found = str(beside) if beside.exists() else shutil.which("qwen")
    if not found:
        sys.exit("qwen is not installed in this environment: pip install -e .")
    return found


def _time(argv: list[str], tty: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.setdefault("TERM", "xterm-256color")
    if tty:
        leader, follower = pty.openpty()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=follower, stderr=follower, env=env)
        os.close(follower)
        while True:  # drain the terminal so the child never blocks on a full buffer
            try:
                if not os.read(leader, 65536):
                    break
            except OSError:
                break
        proc.wait()
        elapsed = time.perf_counter() - start
        os.close(leader)
    else:
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                       check=True)
        elapsed = time.perf_counter() - start
    return elapsed


def median_time(argv: list[str], runs: int, tty: bool = False) -> float:
    _time(argv, tty)  # warm-up: caches and the OS page cache
    return statistics.median(_time(argv, tty) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    qwen = installed_qwen()
    rows = [
        ("python -c pass (floor)", median_time([sys.executable, "-c", "pass"], args.runs), None),
        ("qwen --help (piped)", median_time([qwen, "--help"], args.runs), TARGETS["qwen --help"]),
        ("qwen --help (terminal)", median_time([qwen, "--help"], args.runs, tty=True),
         TARGETS["qwen --help"]),
        ("qwen hw --json", median_time([qwen, "hw", "--json"], args.runs),
         TARGETS["qwen hw --json"]),
        ("qwen recommend --json", median_time([qwen, "recommend", "--json"], args.runs),
         TARGETS["qwen recommend --json"]),
    ]
    print(f"{'command':<26}{'median s':>10}{'target s':>10}  verdict   ({args.runs} runs)")
    for name, seconds, target in rows:
        verdict = "" if target is None else ("ok" if seconds <= target else "OVER")
        target_text = "-" if target is None else f"{target:.2f}"
        print(f"{name:<26}{seconds:>10.3f}{target_text:>10}  {verdict}")


if __name__ == "__main__":
    main()
