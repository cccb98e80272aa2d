"""Streaming decode speed through `qwen serve` against `qwen chat --json`, on the same file and
threads, and what the server adds to the time to the first token, side by side.

What it does:
1. Builds (once) the synthetic Qwen3-0.6B-shaped Q4_K_M file with the real Qwen3 tokenizer
   (benchmarks/synthetic.py): speed depends on the shape, not on the weight values.
2. Starts one `qwen serve -m FILE --threads T --ctx 512 --port 0 --quiet` and waits for its
   "ready" line.
3. Runs, interleaved RUNS times:
   - `qwen chat -m FILE --json --no-think --max-tokens N --threads T --ctx 512 --seed S PROMPT`:
     decode tok/s and the time to the first token from its JSON (wall clock in the process,
     after the load);
   - the same prompt and settings as one streamed request to the server, read as raw SSE by a
     client in this process: the time to the first byte (the role chunk, sent when the
     request is queued), to the first text chunk, and decode tok/s as the client sees it
     ((completion_tokens - 1) over the time from the first text chunk to the last).
   Each run's prompt starts with the run number, so neither side reuses a KV cache of the
   prompt (the server would: a repeated prompt is measured separately, at the end).
4. Prints medians and best runs side by side, the ratio server / chat (target >= 0.9, goal
   0.97), and, on the same requests, what the server adds: the client's time to the first
   text minus the engine's own (the `timings` the server sends beside `usage`), and the
   client's decode rate over the engine's. Those two are the server's overhead proper; the
   chat / serve ratio also carries whatever else the machine was doing between runs.

llama.cpp's threads spin while they wait: run this alone on the machine, or the figures mean
little (on a shared 2-core box, --threads 1 keeps them steadier).

    python benchmarks/serve_speed.py [--runs 5] [--threads 1] [--tokens 128]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from synthetic import build as build_model  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper and the sea."
CTX = 512


def chat_once(model: Path, threads: int, tokens: int, seed: int, prompt: str) -> dict | None:
    done = subprocess.run(
        [sys.executable, "-m", "qwencli", "chat", "-m", str(model), "--json", "--no-think",
         "--max-tokens", str(tokens), "--threads", str(threads), "--ctx", str(CTX), "--seed",
         str(seed), prompt], capture_output=True, check=True, stdin=subprocess.DEVNULL)
    doc = json.loads(done.stdout)
    if doc["usage"]["completion_tokens"] != tokens:
        return None  # stopped early (random weights sampled an end of turn)
    return {"decode": doc["timings"]["decode_tok_s"], "ttft": doc["timings"]["ttft_s"]}


class Server:
    def __init__(self, model: Path, threads: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qwencli", "serve", "-m", str(model), "--threads",
             str(threads), "--ctx", str(CTX), "--port", "0", "--quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.process.stderr is not None
        self.port = 0
        for raw in self.process.stderr:
            line = raw.decode()
            found = re.match(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
            if line.startswith("ready: "):
                break
        else:
            raise SystemExit("qwen serve did not start")

    def stream(self, tokens: int, seed: int, prompt: str) -> dict | None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        body = json.dumps({
            "messages": [{"role": "user", "content": prompt}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": tokens, "seed": seed,
            "chat_template_kwargs": {"enable_thinking": False}})
        start = time.perf_counter()
        connection.request("POST", "/v1/chat/completions", body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        first_byte = first_text = last_text = None
        usage = timings = None
        for raw in response:
            now = time.perf_counter()
            if first_byte is None:
                first_byte = now
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage, timings = chunk["usage"], chunk["timings"]
            for choice in chunk["choices"]:
                if choice["delta"].get("content") or choice["delta"].get("reasoning_content"):
                    first_text = first_text or now
                    last_text = now
        connection.close()
        if usage is None or usage["completion_tokens"] != tokens or first_text is None:
            return None
        assert first_byte is not None and last_text is not None and timings is not None
        return {"decode": (tokens - 1) / (last_text - first_text),
                "ttfb": first_byte - start, "ttft": first_text - start,
                "cached": usage["prompt_tokens_details"]["cached_tokens"],
                "engine_ttft": timings["ttft_s"], "engine_decode": timings["decode_tok_s"]}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def _fmt(values: list[float], unit: str, scale: float = 1.0) -> str:
    if not values:
        return "n/a"
    return (f"median {statistics.median(values) * scale:8.2f} {unit}  "
            f"best {max(values) * scale if unit == 'tok/s' else min(values) * scale:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    model = build_model("qwen3-0.6b", "Q4_K_M")
    os.environ.setdefault("QWEN_CACHE_DIR", str(Path.home() / ".cache" / "qwen"))
    server = Server(model, args.threads)
    chat: list[dict] = []
    served: list[dict] = []
    try:
        server.stream(8, 0, "warm up")  # first request: the server's lazy imports and buffers
        for run in range(args.runs):
            prompt = f"Run {run}. {PROMPT}"
            seed = 1000 + run
            order = (chat_once, None) if run % 2 == 0 else (None, chat_once)
            for step in order:
                if step is None:
                    result = server.stream(args.tokens, seed, prompt)
                    if result:
                        served.append(result)
                else:
                    result = chat_once(model, args.threads, args.tokens, seed, prompt)
                    if result:
                        chat.append(result)
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
        repeat = server.stream(args.tokens, 999, f"Run {args.runs - 1}. {PROMPT}")
    finally:
        server.stop()

    print(f"\nmodel: {model.name}, {args.threads} thread(s), {args.tokens} tokens, "
          f"context {CTX}, {len(chat)}/{args.runs} chat and {len(served)}/{args.runs} "
          "server runs complete")
    print(f"{'':26}{'qwen chat --json':40}{'qwen serve (streamed, client side)'}")
    print(f"{'decode':26}{_fmt([c['decode'] for c in chat], 'tok/s'):40}"
          f"{_fmt([s['decode'] for s in served], 'tok/s')}")
    print(f"{'time to first token':26}{_fmt([c['ttft'] for c in chat], 'ms', 1000):40}"
          f"{_fmt([s['ttft'] for s in served], 'ms', 1000)}")
    print(f"{'time to first byte':26}{'':40}{_fmt([s['ttfb'] for s in served], 'ms', 1000)}")
    if served:
        cached = statistics.median(s["cached"] for s in served)
        print(f"{'prompt tokens cached':26}{'0':40}median {cached:g} (the template's opening)")
    if chat and served:
        ratio = (statistics.median(s["decode"] for s in served)
                 / statistics.median(c["decode"] for c in chat))
        best = max(s["decode"] for s in served) / max(c["decode"] for c in chat)
        print(f"\ndecode ratio serve / chat: median {ratio:.3f}, best {best:.3f} "
              "(target >= 0.9, goal 0.97)")
    if served:
        # What HTTP, the queue, the template and tokenizing add to a request, on the same
        # request: the client's time to the first text minus the engine's own (its `timings`).
        # (`qwen chat`'s first token also pays for the weights' first read from the page
        # cache right after its load, so its TTFT is no fair baseline for this.)
        overhead = [s["ttft"] - s["engine_ttft"] for s in served]
        streaming = [s["decode"] / s["engine_decode"] for s in served]
        print(f"first token: client minus engine, per request: median "
              f"{statistics.median(overhead) * 1000:.1f} ms, best {min(overhead) * 1000:.1f} ms")
        print(f"streamed decode as the client sees it / the engine's own: median "
              f"{statistics.median(streaming):.3f}")
    if repeat:
        print(f"a repeated prompt ({repeat['cached']} of its tokens cached): first token after "
              f"{repeat['ttft'] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
