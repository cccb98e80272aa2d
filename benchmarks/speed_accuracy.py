"""How close the speed estimate is to llama-bench, before and after one `qwen bench`.

What it does:
1. Builds (once) synthetic files of four shapes (benchmarks/synthetic.py): Qwen3-0.6B Q4_K_M,
   Qwen2.5-1.5B Q4_K_M, Qwen3-1.7B Q8_0, and a Qwen3-30B-A3B-shaped MoE (qwen3moe, 128
   experts, 8 used, expert FFN 768, hidden 2048) cut to 4 layers, Q4_K_M.
2. Builds (once) llama-bench as benchmarks/decode_speed.py does (the bindings' llama.cpp
   commit, Release, shared libraries, GGML_NATIVE).
3. Agreement: on the calibration model, RUNS interleaved rounds of `llama-bench -p 512 -n 128
   -t T -fa on -r 1` and `qwen bench FILE --depth 0 -r 1 --json --no-save` (a fresh process
   each, as a person runs it): medians of pp512 and tg128 side by side.
4. Measures every shape with llama-bench (RUNS interleaved rounds, medians).
5. Predicts each shape's typical decode and prompt speed with `fit.plan` (what `qwen fit`
   says) without a calibration, then runs `qwen bench` once on the calibration model (it
   stores the calibration) and predicts again with it: the table of predicted vs measured.

Everything runs with a private QWEN_CACHE_DIR (a copy of the RAM bandwidth and llama.cpp
probes from the real one, so that both sides plan with the same bandwidth figure), so your own
calibration is not touched. llama.cpp's threads spin: run it on a quiet machine, and read the
spread columns before the medians.

    python benchmarks/speed_accuracy.py [--runs 3] [--threads 2] [--calibrate qwen3-0.6b]
        [--depth 1024] [--save FILE | --measured FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from decode_speed import llama_bench  # noqa: E402
from synthetic import ACCURACY_SET, build  # noqa: E402


def llama_bench_once(exe: Path, model: Path, threads: int, depth: int = 0) -> tuple[float, float]:
    """(pp512, tg128) tok/s of one llama-bench repetition (after its own warm-up), after
    `depth` tokens already in the context."""
    done = subprocess.run([str(exe), "-m", str(model), "-p", "512", "-n", "128", "-t",
                           str(threads), "-fa", "on", "-r", "1", "-d", str(depth), "-o", "json"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"llama-bench failed ({done.returncode}): {done.stderr[-800:]}")
    rows = json.loads(done.stdout)
    pp = next(float(r["avg_ts"]) for r in rows if r["n_prompt"] == 512 and r["n_gen"] == 0)
    tg = next(float(r["avg_ts"]) for r in rows if r["n_gen"] == 128 and r["n_prompt"] == 0)
    return pp, tg


def qwen_bench_once(model: Path, threads: int, env: dict[str, str], *extra: str) -> dict:
    cmd = [sys.executable, "-m", "qwencli", "bench", str(model), "--threads", str(threads),
           "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"qwen bench failed ({done.returncode}): {done.stderr[-800:]}")
    return json.loads(done.stdout)


def tests_of(doc: dict) -> dict[str, float]:
    return {t["test"]: t["tok_s"] for t in doc["tests"]}


def predict(models: dict[str, Path], threads: int, calibrated: bool,
            depth: int = 0) -> dict[str, tuple]:
    """(typical decode, prompt) tok/s per shape, as `qwen fit --ctx 4096` plans it; after
    `depth` tokens, as `qwen bench --depth` compares them (tg128 and pp512 at that depth)."""
    from qwencli.calibration import load
    from qwencli.fit import Options, plan, predict_at
    from qwencli.gguf_info import read_model
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.shapes import shape_from_gguf

    hw = probe()
    calibration = None
    if calibrated:
        loaded = load(hw, threads)
        if loaded.calibration is None:
            raise SystemExit(f"no calibration stored for {threads} threads: {loaded.warning}")
        calibration = loaded.calibration.speed
    out = {}
    for name, path in models.items():
        shape = shape_from_gguf(read_model(path))
        p = plan(shape, hw, plan_budget(hw), Options(ctx=4096), calibration=calibration,
                 find_usable_ctx=False)
        out[name] = (p.speed.typical, p.speed.prompt_tok_s) if depth == 0 else \
            predict_at(shape, hw, p, depth, 512, calibration)
    return out


def spread(values: list[float]) -> float:
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibrate", default="qwen3-0.6b",
                        choices=[name for name, _ in ACCURACY_SET])
    parser.add_argument("--jobs", type=int, default=2, help="compile jobs for llama-bench")
    parser.add_argument("--save", type=Path, metavar="FILE",
                        help="write llama-bench's figures per shape to FILE (JSON)")
    parser.add_argument("--depth", type=int, default=0, metavar="D",
                        help="also compare after D tokens of context (llama-bench -d D, qwen "
                             "bench --depth 0 D for the calibration)")
    parser.add_argument("--measured", type=Path, metavar="FILE",
                        help="take llama-bench's figures from FILE (a --save of an earlier run) "
                             "instead of measuring them again, and skip the agreement runs")
    args = parser.parse_args()

    models = {f"{name} {quant}": build(name, quant) for name, quant in ACCURACY_SET}
    exe = llama_bench(args.jobs)
    calibrate_key = next(k for k in models if k.startswith(args.calibrate + " "))

    private = Path(tempfile.mkdtemp(prefix="qwen-speed-accuracy-"))
    real_cache = Path(os.environ.get("QWEN_CACHE_DIR") or Path.home() / ".cache" / "qwen")
    for probe_file in ("ram_bandwidth.json", "llama_build.json"):
        if (real_cache / probe_file).exists():
            shutil.copy(real_cache / probe_file, private / probe_file)
    os.environ["QWEN_CACHE_DIR"] = str(private)
    env = {**os.environ, "NO_COLOR": "1"}

    # Agreement on the calibration model: interleaved, rotating which side goes first.
    target = models[calibrate_key]
    ours: dict[str, list[float]] = {"pp512": [], "tg128": []}
    theirs: dict[str, list[float]] = {"pp512": [], "tg128": []}
    for run in range(0 if args.measured else args.runs):
        sides = ("llama-bench", "qwen bench") if run % 2 == 0 else ("qwen bench", "llama-bench")
        for side in sides:
            if side == "llama-bench":
                pp, tg = llama_bench_once(exe, target, args.threads)
                theirs["pp512"].append(pp)
                theirs["tg128"].append(tg)
            else:
                figures = tests_of(qwen_bench_once(target, args.threads, env, "--depth", "0",
                                                   "-r", "1", "--no-save"))
                ours["pp512"].append(figures["pp512"])
                ours["tg128"].append(figures["tg128"])
        print(f"  agreement run {run + 1}: llama-bench pp512 {theirs['pp512'][-1]:.1f} tg128 "
              f"{theirs['tg128'][-1]:.2f}; qwen bench pp512 {ours['pp512'][-1]:.1f} tg128 "
              f"{ours['tg128'][-1]:.2f}", file=sys.stderr, flush=True)

    # Every shape with llama-bench, interleaved across shapes.
    measured: dict[str, dict[str, list[float]]] = {k: {"pp512": [], "tg128": []}
                                                    for k in models}
    if args.measured:
        measured = json.loads(args.measured.read_text())
    depths = (0, args.depth) if args.depth else (0,)
    for depth in depths:
        pp_key, tg_key = (f"pp512@{depth}", f"tg128@{depth}") if depth else ("pp512", "tg128")
        if all(measured.get(k, {}).get(tg_key) for k in models):
            continue  # taken from --measured
        for run in range(args.runs):
            for key, path in models.items():
                pp, tg = llama_bench_once(exe, path, args.threads, depth)
                measured[key].setdefault(pp_key, []).append(pp)
                measured[key].setdefault(tg_key, []).append(tg)
                print(f"  {key} run {run + 1}: {pp_key} {pp:.1f} {tg_key} {tg:.2f}",
                      file=sys.stderr, flush=True)

    if args.save:
        args.save.write_text(json.dumps(measured, indent=1))
    before = {depth: predict(models, args.threads, False, depth) for depth in depths}
    depth_args = [arg for depth in depths for arg in ("--depth", str(depth))]
    print(f"  calibrating: qwen bench {target.name} --threads {args.threads} -r {args.runs} "
          + " ".join(depth_args), file=sys.stderr, flush=True)
    # The calibration bench measures the depths the comparison uses (only the empty context
    # without --depth: the depth tests take minutes on a busy machine).
    bench_doc = qwen_bench_once(target, args.threads, env, "-r", str(args.runs), *depth_args)
    after = {depth: predict(models, args.threads, True, depth) for depth in depths}

    median = statistics.median
    print(f"\nqwen bench vs llama-bench on {target.name}, {args.threads} threads, "
          f"{args.runs} interleaved runs (median, spread = (max-min)/median):")
    for test in ("pp512", "tg128") if ours["pp512"] else ():
        q, b = median(ours[test]), median(theirs[test])
        print(f"  {test}: qwen bench {q:8.2f} ({spread(ours[test]):.0%})  llama-bench "
              f"{b:8.2f} ({spread(theirs[test]):.0%})  ratio {q / b:.3f}")
    print(f"\ncalibration: {calibrate_key} ({bench_doc['calibration']['source']})")
    for depth in depths:
        pp_key, tg_key = (f"pp512@{depth}", f"tg128@{depth}") if depth else ("pp512", "tg128")
        print(f"\nafter {depth:,} tokens of context:" if depth else "\nempty context:")
        print(f"{'shape':28} {'tg128':>7} {'before':>7} {'err':>6} {'after':>7} {'err':>6} | "
              f"{'pp512':>7} {'before':>7} {'err':>6} {'after':>7} {'err':>6}")
        for key in models:
            tg, pp = median(measured[key][tg_key]), median(measured[key][pp_key])
            (tb, pb), (ta, pa) = before[depth][key], after[depth][key]

            def err(pred: float, real: float) -> str:
                return f"{(pred - real) / real:+.0%}"

            mark = " *" if key == calibrate_key else ""
            print(f"{key + mark:28} {tg:7.2f} {tb:7.2f} {err(tb, tg):>6} {ta:7.2f} "
                  f"{err(ta, tg):>6} | {pp:7.1f} {pb:7.1f} {err(pb, pp):>6} {pa:7.1f} "
                  f"{err(pa, pp):>6}")
        print("(* the benched model; tg128/pp512: llama-bench medians, spread "
              + ", ".join(f"{k.split()[0]} {spread(measured[k][tg_key]):.0%}/"
                          f"{spread(measured[k][pp_key]):.0%}" for k in models) + ")")
    shutil.rmtree(private, ignore_errors=True)


if __name__ == "__main__":
    main()
