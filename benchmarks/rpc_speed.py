"""Decode speed and memory of one model split across this machine and 0, 1 or 2 `qwen worker`
processes on loopback (llama.cpp's RPC backend), beside the plan's estimates.

What it does:
1. Builds (once, in a child process) a synthetic Qwen3-0.6B-shaped Q4_K_M file with the real
   Qwen3 tokenizer (benchmarks/synthetic.py).
2. For each setup (local; 1 worker; 2 workers) starts fresh `qwen worker --threads T`
   processes (tests/rpc_workers.py: waited for by their ready line), asks
   `qwen fit FILE --rpc WORKERS --gpu-layers N --ctx 256 --json` for the plan (N = 15 with one
   worker, 19 with two, as llama.cpp counts layers: the output layer first; the planner chooses
   how they are split over the workers), then runs
   `qwen chat -m FILE --rpc WORKERS --gpu-layers N --ctx 256 --threads T --json --max-tokens K`
   RUNS times: the real command line, loading exactly that plan.
3. Prints per setup: decode tok/s (median of the runs, and the best) beside the plan's typical
   estimate, the main process's peak RSS (wait4's ru_maxrss) and peak anonymous RSS (sampled)
   beside the plan's host bytes and host peak (loading: llama.cpp's RPC client copies each
   tensor it sends into a message), and
   per worker the plan's bytes and its peak (`peak_bytes`: while loading, the worker holds a
   tensor twice, as received and as stored) beside its peak RSS growth (VmHWM at the end less
   VmRSS when it was ready).

The planner's estimate assumes this machine's default thread count (its physical cores, the
count its CPU constants are fitted at), which is the default of `--threads` here too. Only one
process computes at a time (the layers run in turn), so each may use every core; `qwen worker`
and `qwen chat --rpc` keep their idle threads from spinning (qwencli/rpc/threads.py), which
is what lets three processes share two cores.

The main process maps the model file and reads every tensor from it, the workers' too (it
sends them), so its RSS counts the whole file's pages however few layers it keeps: clean
file pages the kernel drops under pressure, not memory the process needs. Its anonymous RSS
(KV cache, compute buffers, the CPU's repacked copies, Python) is what falls with workers.

The model is built in a child process: a child started from a large parent inherits the
parent's peak RSS through exec (Linux keeps ru_maxrss across it), which would inflate the main
process's figure.

    python benchmarks/rpc_speed.py [--runs 3] [--tokens 64] [--threads T] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tests.rpc_workers import rss_bytes, workers  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper and the sea."
GPU_LAYERS = {1: 15, 2: 19}  # llama.cpp's n_gpu_layers (the output layer first) per setup


def build_in_child(shape: str, quant: str) -> Path:
    """benchmarks/synthetic.build, run in a child process (see the module docstring)."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path[:0] = sys.argv[1:3]; "
         "from synthetic import build; print(build(sys.argv[3], sys.argv[4]))",
         str(REPO), str(REPO / "benchmarks"), shape, quant],
        cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"building the synthetic model failed: {done.stderr.strip()}")
    return Path(done.stdout.strip().splitlines()[-1])


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _placement(endpoints: list[str]) -> list[str]:
    if not endpoints:
        return []
    return ["--rpc", ",".join(endpoints), "--gpu-layers", str(GPU_LAYERS[len(endpoints)])]


def plan_of(model: Path, endpoints: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "qwencli", "fit", str(model), "--ctx", "256", "--json",
         *_placement(endpoints)], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"qwen fit failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


def _rss_parts(pid: int) -> tuple[int, int] | None:
    """(RssAnon, RssFile) of a running process, bytes; None once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    found = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines
             if line.startswith(("RssAnon:", "RssFile:"))}
    return found.get("RssAnon", 0), found.get("RssFile", 0)


def chat_once(model: Path, endpoints: list[str], tokens: int, seed: int,
              threads: int) -> tuple[dict, int, int]:
    """One one-shot answer: (its JSON document, the process's own peak RSS in bytes from
    os.wait4 on its pid, and its peak anonymous RSS, sampled every 20 ms: the part that is not
    the model file's mapped pages)."""
    env = {**os.environ, "NO_COLOR": "1", "QWEN_NOLOG": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "qwencli", "chat", "-m", str(model), "--json",
             "--no-think", "--max-tokens", str(tokens), "--threads", str(threads),
             "--seed", str(seed),
             "--temperature", "1.0", "--ctx", "256", *_placement(endpoints), PROMPT],
            cwd=REPO, env=env, stdout=out, stderr=err)
        anon_peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal anon_peak
            while not done.wait(0.02):
                parts = _rss_parts(process.pid)
                if parts is not None:
                    anon_peak = max(anon_peak, parts[0])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"qwen chat failed ({process.returncode}): "
                             f"{err.read().decode().strip()}")
        return json.loads(out.read()), usage.ru_maxrss * 1024, anon_peak


def run_setup(model: Path, n_workers: int, runs: int, tokens: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as folder, \
            workers(Path(folder), n_workers, threads) as started:
        endpoints = [w.endpoint for w in started]
        plan = plan_of(model, endpoints)
        ready = {w.pid: rss_bytes(w.pid) for w in started}
        speeds, peaks, anon_peaks = [], [], []
        for run in range(runs):
            document, peak, anon = chat_once(model, endpoints, tokens, run + 1, threads)
            if document["usage"]["completion_tokens"] < tokens:
                continue  # stopped early (an end-of-turn token): not a full decode run
            speeds.append(document["timings"]["decode_tok_s"])
            peaks.append(peak)
            anon_peaks.append(anon)
        worker_peaks = [_vm_hwm(w.pid) for w in started]
    by_name = {d["name"]: d for d in plan["memory"]["devices"]}
    planned = [by_name.get(f"RPC0[{e}]", {}) for e in endpoints]
    return {
        "workers": n_workers,
        "placement": plan.get("placement") or [(d["name"], d["layers"])
                                               for d in plan["memory"]["devices"]],
        "decode_tok_s_median": statistics.median(speeds) if speeds else None,
        "decode_tok_s_best": max(speeds) if speeds else None,
        "runs": len(speeds),
        "estimate_tok_s": plan["speed"]["decode_tok_s"]["typical"],
        "network_share": plan["speed"].get("network_share"),
        "main_peak_rss_bytes": max(peaks) if peaks else None,
        "main_planned_bytes": plan["memory"]["host_bytes"],
        "main_planned_peak_bytes": plan["memory"]["host_peak_bytes"],
        "main_peak_anon_bytes": max(anon_peaks) if anon_peaks else None,

        "worker_layers": [d.get("layers") for d in planned],
        "worker_planned_bytes": [d.get("bytes") for d in planned],
        "worker_planned_peak_bytes": [d.get("peak_bytes") for d in planned],
        "worker_peak_rss_bytes": worker_peaks,
        "worker_rss_growth_bytes": [p - ready[w.pid] for p, w in zip(worker_peaks, started,
                                                                      strict=True)],
    }


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _main_memory(row: dict) -> str:
    measured = "/".join(_mib(row[k]) for k in ("main_peak_rss_bytes", "main_peak_anon_bytes"))
    planned = "/".join(_mib(row[k]) for k in ("main_planned_bytes", "main_planned_peak_bytes"))
    return f"{measured}, {planned}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every process (default: this machine's default, its "
                             "physical cores, the count the plan's CPU constants are fitted at)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.threads is None:
        from qwencli.hardware.cpu import default_threads

        args.threads = default_threads(None)
    model = build_in_child("qwen3-0.6b", "Q4_K_M")
    print(f"model: {model.name}; {args.tokens} tokens; {args.threads} thread(s) per process; "
          f"{args.runs} runs per setup")
    rows = [run_setup(model, n, args.runs, args.tokens, args.threads) for n in (0, 1, 2)]
    print(f"{'setup':<10} {'tok/s med':>9} {'best':>6} {'estimate':>8} "
          f"{'main: peak/anon, plan/peak MiB':>30}  workers: layers, plan MiB, plan peak MiB, "
          "peak RSS growth MiB")
    for row in rows:
        label = "local" if not row["workers"] else f"{row['workers']} worker" + (
            "s" if row["workers"] > 1 else "")
        med, best = row["decode_tok_s_median"], row["decode_tok_s_best"]
        per_worker = "; ".join(
            f"{layers}, {_mib(planned)}, {_mib(peak)}, {_mib(growth)}"
            for layers, planned, peak, growth in zip(
                row["worker_layers"], row["worker_planned_bytes"],
                row["worker_planned_peak_bytes"], row["worker_rss_growth_bytes"], strict=True)
        ) or "-"
        print(f"{label:<10} {med if med is None else f'{med:.1f}':>9} "
              f"{best if best is None else f'{best:.1f}':>6} {row['estimate_tok_s']:>8.1f} "
              f"{_main_memory(row):>30}"
              f"  {per_worker}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
