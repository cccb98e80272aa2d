"""The README's "What-if clusters" table: `qwen fit --rpc-whatif` for three real cases.

Usage: python benchmarks/rpc_whatif_table.py   (prints a Markdown table)

Each case runs `qwen fit MODEL:QUANT --json` with the what-if options shown (catalog figures:
HF_HUB_OFFLINE=1, so the table is the same on every machine and needs no network), and prints
the plan beside the same model on the first machine alone: where the layers go, the estimated
decode speed, the network's share of each token and what limits the speed. Every machine is a
named profile (with what-if changes), so no figure depends on the machine running the script:
the PCs are the desktop-rtx4090-64gb profile (Ryzen 9 7950X, DDR5-5200) without its GPU and with
128 GB, or with an RTX 4060 Ti 16GB instead of its 4090 and 32 GB. The speeds are the
planner's estimates (fit.py and placement.py say which constants are sourced and which are
fitted), not measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3

CASES = [
    ("Qwen3.5-122B-A10B Q6_K on two 64 GB Macs (Thunderbolt)", "qwen3.5-122b-a10b:Q6_K",
     ["--hardware", "apple-m3-max-64gb"],
     ["--rpc-whatif", "apple-m3-max-64gb", "--link", "thunderbolt"]),
    ("Qwen3.5-122B-A10B Q6_K on two 64 GB Macs (10 GbE)", "qwen3.5-122b-a10b:Q6_K",
     ["--hardware", "apple-m3-max-64gb"],
     ["--rpc-whatif", "apple-m3-max-64gb", "--link", "10gbe"]),
    ("Qwen3-235B-A22B Q4_K_M on three 128 GB PCs (10 GbE)", "qwen3-235b-a22b:Q4_K_M",
     ["--hardware", "desktop-rtx4090-64gb", "--cpu-only", "--ram", "128GB"],
     ["--rpc-whatif", "128GB,128GB", "--link", "10gbe"]),
    ("Qwen3.8-27B Q8_0 on two 16 GB GPUs in two PCs (1 GbE)", "qwen3.8-27b:Q8_0",
     ["--hardware", "desktop-rtx4090-64gb", "--gpu", "RTX 4060 Ti 16GB", "--ram", "32GB"],
     ["--rpc-whatif", "16GB", "--link", "1gbe"]),
    ("Qwen3.8-27B Q8_0 on two 16 GB GPUs in two PCs (10 GbE)", "qwen3.8-27b:Q8_0",
     ["--hardware", "desktop-rtx4090-64gb", "--gpu", "RTX 4060 Ti 16GB", "--ram", "32GB"],
     ["--rpc-whatif", "16GB", "--link", "10gbe"]),
]


def fit(model: str, options: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    result = subprocess.run([sys.executable, "-m", "qwencli", "fit", model, *options, "--json"],
                            capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"qwen fit {model} {' '.join(options)}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def where(doc: dict) -> str:
    parts = []
    n_layers = doc["n_layers"]
    devices = doc["memory"]["devices"]
    on_devices = sum(d["layers"] for d in devices)
    host = n_layers + 1 - on_devices if on_devices else n_layers
    if host > 0:
        parts.append(f"{min(host, n_layers)} CPU here")
    for d in devices:
        if d["layers"]:
            label = "worker" if d["kind"] == "worker" else "GPU here"
            parts.append(f"{d['layers']} {label} ({d['bytes'] / GIB:.0f} GiB)")
    return ", ".join(parts)


def speed(doc: dict) -> str:
    if not doc["fits"]:
        return "does not fit"
    s = doc["speed"]
    return f"{s['decode_tok_s']['typical']:.1f} ({s['decode_tok_s']['low']:.1f}-" \
           f"{s['decode_tok_s']['high']:.1f})"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("| case | command | placement | tok/s | network | limited by | alone |")
    print("|---|---|---|---|---|---|---|")
    for title, model, machine, workers in CASES:
        cluster = fit(model, [*machine, *workers])
        alone = fit(model, machine)
        command = f"`qwen fit {model} {' '.join(_quoted(machine + workers))}`"
        limit = cluster["speed"]["limited_by"]
        network = f"{cluster['speed']['network_share']:.0%} " \
                  f"({cluster['speed']['network_s_per_token'] * 1e3:.1f} ms)"
        alone_text = speed(alone) if alone["fits"] else \
            f"does not fit ({_need(alone) / GIB:.0f} GiB needed)"
        print(f"| {title} | {command} | {where(cluster)} | {speed(cluster)} | {network} | "
              f"{limit} | {alone_text} |")


def _need(doc: dict) -> int:
    return doc["memory"]["breakdown"]["total"]


def _quoted(args: list[str]) -> list[str]:
    return [f'"{a}"' if " " in a else a for a in args]


if __name__ == "__main__":
    main()
