"""The MoE expert placement plan beside published llama.cpp `--n-cpu-moe` results.

Each row is a machine someone measured and published (source below), rebuilt as a what-if
machine from the known-GPU table and the stated RAM: the planner's own choice of N (experts of
the first N layers in RAM) and its speed range, then the planner's speed at the N the author
used, against the author's measured decode speed. Catalog shapes (file sizes are estimates).

    python benchmarks/moe_published.py
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwencli.catalog import load_catalog, quant_file
from qwencli.fit import Options, plan
from qwencli.hardware.budget import plan_budget
from qwencli.hardware.known_gpus import lookup
from qwencli.hardware.model import Bandwidth, Cpu, Hardware, LlamaCppBuild, Memory
from qwencli.shapes import shape_from_catalog

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Published:
    label: str
    source: str
    gpu: str
    ram_gib: int
    ram_gbs: float  # the author's figure, or the platform's spec where none was given
    ram_note: str
    model: str
    quant: str
    ctx: int
    kv_type: str
    runs: tuple[tuple[int, float, str], ...]  # (N, measured tok/s, VRAM or "")


ROWS = (
    Published(
        "RTX 2080 8GB, i9-10900X", "AlexsJones/llmfit PR #755 (llama-server, single request)",
        "RTX 2080", 64, 102, "measured ~102 GB/s (quad-channel DDR4), as the author states",
        "qwen3-30b-a3b-instruct-2507", "Q4_K_M", 8192, "f16",
        ((36, 36.7, ""),)),
    Published(
        "RTX 5080 16GB, Ryzen 9 9950X", "r/LocalLLaMA post, Qwen3.5-35B-A3B on RTX 5080 "
        "(snapshot 2026-02-25), 65K ctx, q8_0 KV, -fa, --no-mmap",
        "RTX 5080", 128, 77, "DDR5-4800 dual channel, ~77 GB/s as the author states",
        "qwen3.5-35b-a3b", "Q4_K_M", 65536, "q8_0",
        ((40, 51.0, "7217 MB"), (24, 69.6, "14874 MB"))),
)


def machine(row: Published) -> Hardware:
    known = lookup(row.gpu)
    assert known is not None, row.gpu
    memory = Memory(total_bytes=row.ram_gib * GIB, available_bytes=row.ram_gib * GIB - 2 * GIB,
                    swap_total_bytes=0, swap_free_bytes=0, limit_bytes=None, limit_source=None,
                    reason="published", bandwidth=Bandwidth(int(row.ram_gbs * 1e9), "stated",
                                                            row.ram_note))
    cpu = Cpu(model="published", arch="x86_64", physical_cores=16, logical_cores=32,
              features=("avx2", "fma", "f16c"))
    return Hardware(os="linux", cpu=cpu, memory=memory, gpus=(known.to_gpu(0),),
                    llama_cpp=LlamaCppBuild(installed=True, version=None, gpu_offload=True,
                                            backend="cuda", source="assumed"),
                    source=row.label)


def main() -> None:
    catalog = load_catalog()
    print("| machine (source) | model, ctx | published: N -> tok/s (VRAM) | plan: N, tok/s, VRAM "
          "| plan at the published N | whole-layer plan |")
    print("|---|---|---|---|---|---|")
    for row in ROWS:
        hw = machine(row)
        budget = plan_budget(hw)
        spec = next(m for m in catalog.models() if m.id == row.model)
        shape = shape_from_catalog(spec, quant_file(spec, row.quant))
        opts = Options(ctx=row.ctx, kv_type=row.kv_type)
        chosen = plan(shape, hw, budget, opts, find_usable_ctx=False)
        whole = plan(shape, hw, budget, dataclasses.replace(opts, moe_cpu_layers=0),
                     find_usable_ctx=False)
        published = "; ".join(f"N={n} -> {tok:g}" + (f" ({vram})" if vram else "")
                              for n, tok, vram in row.runs)
        at_theirs = "; ".join(
            f"N={n}: {p.speed.low:.0f}-{p.speed.high:.0f} tok/s, "
            f"{sum(d.bytes for d in p.devices) / 2**20:,.0f} MiB"
            + ("" if p.fits else " (over budget)")
            for n, _, _ in row.runs
            for p in [plan(shape, hw, budget, dataclasses.replace(opts, moe_cpu_layers=n),
                           find_usable_ctx=False)])
        vram = sum(d.bytes for d in chosen.devices) / 2**20
        print(f"| {row.label} ({row.source}) | {row.model} {row.quant}, {row.ctx // 1024}K "
              f"{row.kv_type} KV | {published} | N={chosen.moe_cpu_layers} of "
              f"{shape.n_layers}, {chosen.speed.low:.0f}-{chosen.speed.high:.0f} tok/s, "
              f"{vram:,.0f} MiB | {at_theirs} | ngl {whole.n_gpu_layers}/{shape.n_layers + 1}: "
              f"{whole.speed.low:.0f}-{whole.speed.high:.0f} |")


if __name__ == "__main__":
    main()
