"""Decode speed and memory of one model split across this machine and 0, 1 or 2 `qwen worker`
processes on loopback (llama.cpp's RPC backend), one thread per process.

What it does:
1. Builds (once) a synthetic Qwen3-0.6B-shaped Q4_K_M file with the real Qwen3 tokenizer
   (benchmarks/synthetic.py).
2. For each setup (local; 1 worker; 2 workers) starts fresh `qwen worker --threads 1`
   processes (tests/rpc_workers.py: waited for by their ready line), and runs
   `qwen chat --json --threads 1 --max-tokens N --ctx 256 --seed S` RUNS times, with a plan
   that puts the 28 repeating layers evenly over the processes (workers first, as llama.cpp
   orders devices; the rest, the embeddings and the output layer on the main process's CPU).
   That plan is built by hand (tests/rpc_workers.py run as `qwen`), not by the planner.
3. Prints per setup: decode tok/s (median of the runs, and the best), the main process's
   peak RSS (wait4's ru_maxrss), and each worker's peak RSS and its growth over the RSS it had
   when ready (VmHWM - VmRSS at ready: what the model costs there).

The column for the planner's estimate is filled only when the planner that places layers on
workers is in this tree (`fit.plan` with workers); otherwise it says so.

llama.cpp's OpenMP threads spin while they wait: run this alone on the machine.

    python benchmarks/rpc_speed.py [--runs 3] [--tokens 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from synthetic import build as build_model  # noqa: E402

from tests.rpc_workers import rss_bytes, workers  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper and the sea."
N_LAYERS = 28  # Qwen3-0.6B


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def chat_once(model: Path, endpoints: list[str], tokens: int,
                      seed: int) -> tuple[dict, int]:
    """chat_once, with the child's own peak RSS (os.wait4 on its pid, before Popen reaps it)."""
    n_procs = len(endpoints) + 1
    remote = N_LAYERS * len(endpoints) // n_procs
    env = {**os.environ, "NO_COLOR": "1", "QWEN_NOLOG": "1"}
    if endpoints:
        env.update(QWEN_TEST_RPC_WORKERS=",".join(endpoints), QWEN_TEST_RPC_LAYERS=str(remote))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.rpc_workers", "chat", "-m", str(model), "--json",
             "--no-think", "--max-tokens", str(tokens), "--threads", "1", "--seed", str(seed),
             "--temperature", "1.0", "--ctx", "256", PROMPT],
            cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"qwen chat failed ({process.returncode}): "
                             f"{err.read().decode().strip()}")
        return json.loads(out.read()), usage.ru_maxrss * 1024


def planner_estimate(model: Path, n_workers: int) -> str:
    """The planner's decode estimate for this split: not in this tree yet (the planner that
    places layers on workers is another branch's work)."""
    return "n/a (no planner for workers in this tree)"


def run_setup(model: Path, n_workers: int, runs: int, tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as folder, workers(Path(folder), n_workers) as started:
        endpoints = [w.endpoint for w in started]
        ready = {w.pid: rss_bytes(w.pid) for w in started}
        speeds, peaks = [], []
        for run in range(runs):
            document, peak = chat_once(model, endpoints, tokens, seed=run + 1)
            if document["usage"]["completion_tokens"] < tokens:
                continue  # stopped early (an end-of-turn token): not a full decode run
            speeds.append(document["timings"]["decode_tok_s"])
            peaks.append(peak)
        worker_peaks = [_vm_hwm(w.pid) for w in started]
    return {
        "workers": n_workers,
        "layers_on_workers": N_LAYERS * n_workers // (n_workers + 1),
        "decode_tok_s_median": statistics.median(speeds) if speeds else None,
        "decode_tok_s_best": max(speeds) if speeds else None,
        "runs": len(speeds),
        "main_peak_rss_bytes": max(peaks) if peaks else None,
        "worker_peak_rss_bytes": worker_peaks,
        "worker_rss_growth_bytes": [p - ready[w.pid] for p, w in zip(worker_peaks, started,
                                                                      strict=True)],
        "estimate": planner_estimate(model, n_workers),
    }


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    model = build_model("qwen3-0.6b", "Q4_K_M")
    print(f"model: {model.name}; {args.tokens} tokens; 1 thread per process; "
          f"{args.runs} runs per setup")
    rows = [run_setup(model, n, args.runs, args.tokens) for n in (0, 1, 2)]
    print(f"{'setup':<10} {'layers remote':>13} {'tok/s med':>9} {'best':>6} "
          f"{'main peak MiB':>13} {'worker peak MiB':>16} {'worker growth MiB':>18}  estimate")
    for row in rows:
        label = "local" if not row["workers"] else f"{row['workers']} worker" + (
            "s" if row["workers"] > 1 else "")
        med, best = row["decode_tok_s_median"], row["decode_tok_s_best"]
        print(f"{label:<10} {row['layers_on_workers']:>13} "
              f"{med if med is None else f'{med:.1f}':>9} "
              f"{best if best is None else f'{best:.1f}':>6} "
              f"{_mib(row['main_peak_rss_bytes']):>13} "
              f"{'/'.join(_mib(p) for p in row['worker_peak_rss_bytes']) or '-':>16} "
              f"{'/'.join(_mib(g) for g in row['worker_rss_growth_bytes']) or '-':>18}  "
              f"{row['estimate']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
