"""What the conversation log costs a one-shot `qwen chat` answer.

Usage: python benchmarks/log_overhead.py [--runs 10] [--model FILE.gguf]

Runs `qwen chat -v MODEL "..."` --runs times with the log on (in a fresh temporary log) and
--runs times with QWEN_NOLOG=1, interleaved, and prints:

- what the chat itself waited for the log (its `-v` line: the last message's commit; the log is
  opened, and earlier messages written, by a background thread while the model loads and
  answers), and the background thread's own work (open, schema, commits, first-commit sync);
- the median wall time of the whole process with the log and without (on a shared machine the
  difference is within the noise: read the first figure for the cost).

The default model is the tiny synthetic qwen3 file the tests use (written to a temp folder),
where an answer takes a few tens of milliseconds, so the log's share is as large as it gets.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WAITED = re.compile(r"the chat waited ([\d.]+) ms for it, ([\d.]+) ms of work in the background")


def _tiny_model(folder: Path) -> Path:
    from tests.gguf_fixtures import qwen3_tokenizer, write_qwen_gguf

    return write_qwen_gguf(folder / "tiny-qwen3.gguf", tokenizer=qwen3_tokenizer(),
                           vocab=151_936, ctx=4096)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model = args.model or _tiny_model(folder)
        base = {**os.environ, "QWEN_LOG_DB": str(folder / "logs.db"),
                "QWEN_CACHE_DIR": str(folder / "cache"), "NO_COLOR": "1"}
        command = [sys.executable, "-m", "qwencli", "chat", "-v", "-m", str(model),
                   "--threads", "1", "--seed", "1", "-n", "8", "Say hello"]
        subprocess.run(command, env=base, capture_output=True, check=True)  # warm-up
        waited: list[float] = []
        worked: list[float] = []
        wall = {"log on": [], "QWEN_NOLOG=1": []}
        for _ in range(args.runs):
            for label, env in (("log on", base), ("QWEN_NOLOG=1", {**base, "QWEN_NOLOG": "1"})):
                start = time.perf_counter()
                done = subprocess.run(command, env=env, capture_output=True, text=True,
                                      check=True)
                wall[label].append(time.perf_counter() - start)
                found = WAITED.search(done.stderr)
                if label == "log on":
                    if found is None:
                        sys.exit(f"no log line in the output:\n{done.stderr[-2000:]}")
                    waited.append(float(found.group(1)))
                    worked.append(float(found.group(2)))
    print(f"model: {model.name}, {args.runs} runs each")
    print(f"the chat waited for the log:      median {statistics.median(waited):.2f} ms, "
          f"max {max(waited):.2f} ms")
    print(f"background work of the log:       median {statistics.median(worked):.2f} ms, "
          f"max {max(worked):.2f} ms")
    for label, times in wall.items():
        print(f"wall time, {label:<13}         median {statistics.median(times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
