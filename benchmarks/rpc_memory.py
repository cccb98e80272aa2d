"""What each loopback `qwen worker` holds beside what `qwen fit --rpc` plans for it, after a
prompt longer than one micro-batch (so every activation the plan counts has been written).

1. Starts WORKERS fresh `qwen worker` processes (tests/rpc_workers.py: waited for by their
   ready line) and asks `qwen fit MODEL --rpc ... --gpu-layers N --ctx C --json` for the plan.
2. Runs `qwen chat -m MODEL --rpc ... --gpu-layers N --ctx C` in a pseudo-terminal: waits for
   the prompt, asks a short question, then a prompt of about 560 tokens, and reads each worker's
   resident memory growth (VmRSS less its VmRSS when ready) after each, and its peak (VmHWM).
3. Prints per worker: layers, the plan's bytes and peak, and the measured growth and peak.

Needs the test extra (pexpect). MODEL defaults to the synthetic Qwen3-0.6B-shaped Q4_K_M file
that benchmarks/rpc_speed.py builds.

    python benchmarks/rpc_memory.py [--model FILE] [--workers 2] [--gpu-layers 19] [--ctx 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from rpc_speed import build_in_child  # noqa: E402

from tests.rpc_workers import LONG_PROMPT, chat_memory, workers  # noqa: E402


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpu-layers", type=int, default=19)
    parser.add_argument("--ctx", type=int, default=1024)
    args = parser.parse_args()
    model = args.model or build_in_child("qwen3-0.6b", "Q4_K_M")
    env = {**os.environ, "NO_COLOR": "1", "QWEN_NOLOG": "1", "TERM": "dumb"}
    with tempfile.TemporaryDirectory() as folder, \
            workers(Path(folder), args.workers, 1) as started:
        placement = ["--rpc", ",".join(w.endpoint for w in started), "--gpu-layers",
                     str(args.gpu_layers), "--ctx", str(args.ctx)]
        done = subprocess.run([sys.executable, "-m", "qwencli", "fit", str(model), "--json",
                               *placement], cwd=REPO, env=env, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"qwen fit failed ({done.returncode}): {done.stderr.strip()}")
        devices = {d["name"]: d for d in json.loads(done.stdout)["memory"]["devices"]}
        planned = [devices[f"RPC0[{w.endpoint}]"] for w in started]
        measured = chat_memory(model, started, placement, ["hi", LONG_PROMPT], env)
    short, long = measured.after
    peaks = measured.peaks
    print(f"model: {model.name}; {args.workers} worker(s); --gpu-layers {args.gpu_layers} "
          f"--ctx {args.ctx}")
    print(f"{'worker':<8} {'layers':>6} {'plan MiB':>9} {'after short':>11} {'after long':>10} "
          f"{'plan peak':>9} {'peak':>7}")
    for number, device in enumerate(planned):
        print(f"{number:<8} {device['layers']:>6} {_mib(device['bytes']):>9} "
              f"{_mib(short[number]):>11} {_mib(long[number]):>10} "
              f"{_mib(device['peak_bytes']):>9} {_mib(peaks[number]):>7}")


if __name__ == "__main__":
    main()
