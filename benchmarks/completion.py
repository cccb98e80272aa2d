"""How long shell completion takes to answer, through the protocol bash uses.

Usage: python benchmarks/completion.py [--runs 10]

Each line runs `_QWEN_COMPLETE=complete_bash COMP_WORDS=... COMP_CWORD=... qwen` (what the
bash script does on Tab): once with the completion cache removed (the first Tab after qwen is
installed or the catalog changes), then --runs times warm; medians are printed with the
0.3 s target, beside `qwen --help` (0.15 s) and the interpreter's own start as a floor. Run it
alone: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from startup import installed_qwen  # benchmarks/, on the path when run as a script

TARGET_S = 0.3
CASES = ("qwen chat -m qwen3-", "qwen chat -m qwen3-8b:", "qwen recommend --hardware ",
         "qwen recommend --use ", "qwen rm ", "qwen ")


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    qwen = installed_qwen()
    with tempfile.TemporaryDirectory() as cache:
        base = {**os.environ, "QWEN_CACHE_DIR": cache}
        rows = [("python -c pass (floor)", None,
                 statistics.median(_time([sys.executable, "-c", "pass"], base)
                                   for _ in range(args.runs)), None),
                ("qwen --help", None,
                 statistics.median(_time([qwen, "--help"], base) for _ in range(args.runs)),
                 0.15)]
        for words in CASES:
            env = {**base, "_QWEN_COMPLETE": "complete_bash", "COMP_WORDS": words,
                   "COMP_CWORD": str(len(words.split(" ")) - 1)}
            Path(cache, "completion.json").unlink(missing_ok=True)
            cold = _time([qwen], env)
            warm = statistics.median(_time([qwen], env) for _ in range(args.runs))
            rows.append((f"complete '{words}'", cold, warm, TARGET_S))
    print(f"{'command':<40}{'cold s':>8}{'warm s':>8}{'target':>8}  verdict ({args.runs} runs)")
    for name, cold, warm, target in rows:
        verdict = "" if target is None else ("ok" if warm <= target else "OVER")
        cold_text = "-" if cold is None else f"{cold:.3f}"
        target_text = "-" if target is None else f"{target:.2f}"
        print(f"{name:<40}{cold_text:>8}{warm:>8.3f}{target_text:>8}  {verdict}")


if __name__ == "__main__":
    main()
