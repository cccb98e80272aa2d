"""Decode speed of `qwen chat` against raw llama.cpp (`llama-bench`) on the same file and threads.

What it does:
1. Builds (once) a synthetic Qwen3-0.6B-shaped Q4_K_M file with the real Qwen3 tokenizer
   (benchmarks/synthetic.py): speed depends on the shape, not on the weight values.
2. Builds (once) `llama-bench` from the `vendor/llama.cpp` folder of the llama-cpp-python source
   distribution on PyPI, the same version as the installed bindings (so the same llama.cpp
   commit), configured like the bindings' own build (Release, shared libraries) with
   -DGGML_NATIVE=ON, in a cache folder outside the repository. Only the `llama-bench` target is
   built; none of llama.cpp's code is committed here.
3. Runs, interleaved RUNS times in a rotating order:
   - `llama-bench -m FILE -p 0 -n 128 -d 25 -t 2 -fa on -r 1` (tg128: 128 decode steps, no
     sampling, after 25 tokens of context: the length of qwen's prompt with the chat template);
   - the same binary on the bindings' own libllama/libggml (LD_LIBRARY_PATH), which separates
     "how llama.cpp was compiled" from "what qwen adds";
   - `qwen chat -m FILE --json --no-think --max-tokens 128 --threads 2 --ctx 256 --seed N`
     (decode tok/s and TTFT from its JSON: wall clock over the 127 steps after the first
     token, sampling and detokenization included). Random weights rarely sample an
     end-of-turn token; runs that stop before 128 tokens are left out.
4. Measures, in one process, what qwen adds per token over llama.cpp's own decode time
   (llama.cpp's perf counters): a figure that background load barely moves.
5. Prints the medians (and the best runs: background load only ever slows a run down), the
   ratio qwen / llama-bench (target >= 0.95), the TTFT, and the ceiling: the measured RAM
   bandwidth (qwencli.hardware.bandwidth) over the bytes read per token.

llama.cpp's OpenMP threads spin while they wait: run this alone on the machine, or the figures
mean nothing (with other load a run with as many threads as cores can be 100x slower).

    python benchmarks/decode_speed.py [--runs 5] [--threads 2] [--tokens 128] [--build-only]

Cache: $QWEN_BENCH_MODELS (default ~/.cache/qwen-bench) for the model and the llama.cpp build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from synthetic import build as build_model  # noqa: E402
from synthetic import models_dir  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper and the sea."
# llama-bench's tg128 runs with n_ctx = 128; qwen needs the 25-token prompt + 128 tokens, and
# 256 is the smallest context it takes. Attention reads the KV cache in 256-cell steps, so a
# larger --ctx (the chat default is 8192) costs a little at this model size, not the weights.
BENCH_CTX = 256


def bindings_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def llama_bench(jobs: int) -> Path:
    """The llama-bench binary of the installed bindings' llama.cpp, building it when missing."""
    version = bindings_version()
    root = models_dir() / f"llama.cpp-{version}"
    build = root / "build-shared"
    exe = build / "bin" / "llama-bench"
    if exe.exists():
        return exe
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        _run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
              f"llama-cpp-python=={version}", "-d", str(root)])
    source = root / f"llama_cpp_python-{version}"
    if not source.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(root, filter="data")
    vendor = source / "vendor" / "llama.cpp"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(["cmake", "-S", str(vendor), "-B", str(build), *generator,
          "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=ON",
          "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
          "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF"])
    _run(["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(jobs)])
    if not exe.exists():
        found = next(build.rglob("llama-bench"), None)
        if found is None:
            raise SystemExit("the build finished but produced no llama-bench binary")
        return found
    return exe


def qwen_once(model: Path, threads: int, tokens: int, seed: int) -> dict:
    """One `qwen chat` one-shot with --json: its usage and timings."""
    env = {**os.environ, "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "qwencli", "chat", "-m", str(model), "--json", "--no-think",
           "--max-tokens", str(tokens), "--threads", str(threads), "--seed", str(seed),
           "--temperature", "1.0", "--ctx", str(BENCH_CTX), PROMPT]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"qwen chat failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


def bindings_lib_dir() -> Path:
    """The folder of the installed bindings' libllama.so / libggml*.so."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "lib"


def llama_once(exe: Path, model: Path, threads: int, tokens: int, depth: int,
               lib_dir: Path | None = None) -> float:
    """One llama-bench tg`tokens` repetition at `depth` tokens of context (after its own
    warm-up run): tok/s. With `lib_dir`, llama-bench runs on those shared libraries."""
    env = dict(os.environ)
    if lib_dir is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(lib_dir), env.get("LD_LIBRARY_PATH", "")) if p)
    done = subprocess.run([str(exe), "-m", str(model), "-p", "0", "-n", str(tokens),
                           "-d", str(depth), "-t", str(threads), "-r", "1", "-fa", "on",
                           "-o", "json"],
                          capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"llama-bench failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    [test] = [t for t in json.loads(done.stdout) if t["n_gen"] == tokens]
    return float(test["avg_ts"])


def own_overhead(model: Path, threads: int, tokens: int) -> tuple[float, float]:
    """(ms per token that qwen adds, ms per token llama_decode takes), measured in one process:
    the wall clock per generated token less llama.cpp's own decode time per token. Unlike the
    end-to-end ratio this barely moves with background load."""
    import llama_cpp

    from qwencli.chat.engine import Engine, Sampling
    from qwencli.fit import Options, plan
    from qwencli.gguf_info import read_model
    from qwencli.hardware.budget import plan_budget
    from qwencli.hardware.probe import probe
    from qwencli.shapes import shape_from_gguf

    hw = probe()
    the_plan = plan(shape_from_gguf(read_model(model)), hw, plan_budget(hw),
                    Options(ctx=BENCH_CTX))
    engine = Engine.load(model, the_plan, n_threads=threads)
    prompt = engine.prompt([{"role": "user", "content": PROMPT}], {"enable_thinking": False})
    overheads, evals = [], []
    for seed in (1, 2, 3):
        llama_cpp.llama_perf_context_reset(engine.llm.ctx)
        generation = engine.generate(prompt, Sampling(temperature=1.0, top_p=0.8, top_k=20,
                                                      seed=seed, max_tokens=tokens))
        for _piece in generation:
            pass
        perf = llama_cpp.llama_perf_context(engine.llm.ctx)
        per_eval = perf.t_eval_ms / max(1, perf.n_eval)
        overheads.append(1000 / generation.stats.decode_tok_s - per_eval)
        evals.append(per_eval)
    engine.close()
    return statistics.median(overheads), statistics.median(evals)


def ceiling(model: Path) -> tuple[float, int, float]:
    """(RAM bytes/s, weight bytes read per token, tok/s ceiling) for this file on this machine.
    The bandwidth is the figure `qwen hw` reports and the planner uses (measured once, cached)."""
    from qwencli.gguf_info import read_model
    from qwencli.hardware.probe import probe
    from qwencli.shapes import shape_from_gguf

    shape = shape_from_gguf(read_model(model))
    per_token = sum(layer.weight_bytes for layer in shape.layers) + shape.output_bytes
    measured = probe().memory.bandwidth
    bandwidth = measured.bytes_per_s if measured else 0
    return bandwidth, per_token, bandwidth / per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                        help="parallel compile jobs for the llama-bench build")
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()

    model = build_model("qwen3-0.6b", "Q4_K_M")
    exe = llama_bench(args.jobs)
    if args.build_only:
        print(model)
        print(exe)
        return
    libs = bindings_lib_dir()
    # A first qwen run (not counted) warms the page cache and tells the prompt's length: the
    # chat template makes it 25 tokens, and llama-bench decodes at that depth too (-d).
    depth = qwen_once(model, args.threads, args.tokens, 0)["usage"]["prompt_tokens"]
    print(f"model: {model} ({model.stat().st_size / 1e6:.0f} MB), {args.threads} threads, "
          f"{args.tokens} new tokens, {args.runs} runs", flush=True)
    # Interleaved, in a rotating order, so that background load hits every side alike.
    sides = ("bench", "bench-on-bindings", "qwen")
    results: dict[str, list] = {side: [] for side in sides}
    for run in range(args.runs):
        for side in sides[run % 3:] + sides[:run % 3]:
            if side == "qwen":
                results[side].append(qwen_once(model, args.threads, args.tokens, run + 1))
            else:
                results[side].append(llama_once(exe, model, args.threads, args.tokens, depth,
                                                libs if side == "bench-on-bindings" else None))
        doc = results["qwen"][-1]
        print(f"  run {run + 1}: llama-bench {results['bench'][-1]:.2f} tok/s, on the bindings' "
              f"libraries {results['bench-on-bindings'][-1]:.2f} tok/s, qwen chat "
              f"{doc['timings']['decode_tok_s']:.2f} tok/s ({doc['usage']['completion_tokens']} "
              f"tokens, TTFT {doc['timings']['ttft_s']:.3f} s)", file=sys.stderr, flush=True)
    qwen = results["qwen"]
    complete = [i for i, d in enumerate(qwen) if d["usage"]["completion_tokens"] == args.tokens]
    if len(complete) < len(qwen):
        print(f"note: {len(qwen) - len(complete)} qwen run(s) stopped before {args.tokens} "
              "tokens and are left out", file=sys.stderr)
    speeds = [qwen[i]["timings"]["decode_tok_s"] for i in complete]
    bench = [results["bench"][i] for i in complete]
    on_bindings = [results["bench-on-bindings"][i] for i in complete]
    median = statistics.median
    ratio = median(speeds) / median(bench)
    pairwise = median(q / b for q, b in zip(speeds, bench, strict=True))
    same_code = median(q / b for q, b in zip(speeds, on_bindings, strict=True))
    ttft = median(d["timings"]["ttft_s"] for d in qwen)
    prompt_tokens = qwen[0]["usage"]["prompt_tokens"]
    overhead_ms, eval_ms = own_overhead(model, args.threads, args.tokens)
    bandwidth, per_token, limit = ceiling(model)
    verdict = "met" if ratio >= 0.95 else "NOT met"
    n = len(speeds)
    print(f"qwen chat decode        {median(speeds):7.2f} tok/s median, {max(speeds):.2f} best "
          f"(of {n})")
    print(f"llama-bench tg{args.tokens}@d{depth:<5} {median(bench):7.2f} tok/s median, "
          f"{max(bench):.2f} best (its own build: shared libraries, Release, GGML_NATIVE)")
    print(f"  on qwen's libraries   {median(on_bindings):7.2f} tok/s median, "
          f"{max(on_bindings):.2f} best (LD_LIBRARY_PATH={libs})")
    print(f"ratio                   {ratio:7.4f} median / median (target >= 0.95: {verdict}); "
          f"{pairwise:.3f} median of pairwise ratios; {max(speeds) / max(bench):.3f} best / best")
    print(f"ratio, same libraries   {same_code:7.3f}  median of pairwise ratios against "
          "llama-bench on the bindings' own libllama")
    print(f"qwen's own cost         {overhead_ms:7.3f} ms per token over llama.cpp's "
          f"{eval_ms:.2f} ms decode ({overhead_ms / (eval_ms + overhead_ms):.1%}: sampling, "
          "Python, detokenizing; in-process, llama.cpp's perf counters)")
    print(f"time to first token     {ttft:7.3f} s ({prompt_tokens} prompt tokens, median)")
    print(f"ceiling                 {limit:7.2f} tok/s = {bandwidth / 1e9:.1f} GB/s RAM bandwidth "
          f"(`qwen hw`) / {per_token / 1e6:.0f} MB of weights read per token")
    print("  (the bandwidth is a memmove copy, read + write bytes; a decode only reads, which a "
          "CPU does faster,\n   so a run can pass this figure: qwencli.fit allows up to 1.3x)")


if __name__ == "__main__":
    main()
