"""The top pick for every bundled hardware profile and use case, as a table.

Usage: python benchmarks/recommend_table.py [--ctx N] [--min-speed T]

Planned from catalog figures (no network), exactly as `qwen recommend --hardware NAME --use USE`.
"""

from __future__ import annotations

import argparse

from qwencli.catalog import load_catalog
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.profiles import list_profiles, load_profile, profile_to_hardware
from qwencli.recommend import DEFAULT_MIN_SPEED, USES, rank
from qwencli.units import format_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, default=None)
    parser.add_argument("--min-speed", type=float, default=DEFAULT_MIN_SPEED)
    args = parser.parse_args()
    catalog = load_catalog()
    rows = [("machine", "use", "model", "quant", "ctx", "GPU layers", "memory", "tok/s")]
    for name in sorted(list_profiles()):
        hw = profile_to_hardware(load_profile(name))
        budget = plan_budget(hw)
        for use in USES:
            picks = rank(catalog, hw, budget, use=use, ctx=args.ctx, min_speed=args.min_speed,
                         top=1)
            if not picks:
                rows.append((name, use, "(nothing fits)", "", "", "", "", ""))
                continue
            p = picks[0].plan
            gpu = sum(d.bytes for d in p.devices)
            memory = format_bytes(p.host_bytes + gpu)
            layers = f"{p.n_gpu_layers}/{p.n_layers + 1}" if p.devices else "CPU"
            rows.append((name, use, picks[0].spec.id, picks[0].quant.quant, str(p.ctx), layers,
                         memory, f"{p.speed.low:.0f}-{p.speed.high:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if number == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
