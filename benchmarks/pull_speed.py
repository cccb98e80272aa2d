"""`qwen pull` against `hf download` of the same file from a local imitation of the Hub.

Usage: python benchmarks/pull_speed.py [--sizes 200,50] [--runs 3]

Starts tests/fake_hub.py on 127.0.0.1 serving synthetic GGUF files of the given sizes (MB), then
for each size times, alternately and --runs times, `qwen pull` and huggingface_hub's
`hf download` of the same file, each into a fresh HF_HOME, both without progress bars. Prints
median wall time, the ratio (target: qwen within 1.3x of hf) and each process's peak RSS (from
wait4's ru_maxrss; target: it does not grow with the file's size, i.e. the transfer streams).
Run it alone: the machines are shared and noisy, which is why it reports medians.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import fake_hub  # noqa: E402 - needs the repository root on sys.path

RATIO_TARGET = 1.3
REPO = "bench/Synthetic-GGUF"
# `qwen` as a user runs it
LAUNCH = "import sys; from qwencli.cli import main; sys.argv[0] = 'qwen'; main()"


def _write(path: Path, size: int) -> None:
    """A file of `size` bytes starting like a GGUF, from a repeated 1 MiB random block."""
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        f.write(b"GGUF")
        left = size - 4
        while left > 0:
            f.write(block[: min(len(block), left)])
            left -= len(block)


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} failed ({proc.returncode}):\n{err}")
    return wall, usage.ru_maxrss * 1024  # KiB on Linux


def _check(cache: Path, name: str, digest: str) -> None:
    found = list(cache.glob(f"hub/models--bench--Synthetic-GGUF/snapshots/*/{name}"))
    if len(found) != 1:
        sys.exit(f"{name} not found in {cache}")
    h = hashlib.sha256()
    with found[0].open("rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != digest:
        sys.exit(f"{found[0]}: wrong content")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,50", help="file sizes in MB (10^6 bytes)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    hf = Path(sys.executable).with_name("hf")
    if not hf.exists():
        sys.exit("the `hf` CLI (huggingface_hub) is not installed next to this Python")
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="pull-speed-"))
    try:
        hub, server = fake_hub.start(work / "remote")
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("HF_", "HUGGINGFACE_"))}
        base |= {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "HF_HUB_DISABLE_TELEMETRY": "1", "NO_COLOR": "1",
                 "QWEN_CACHE_DIR": str(work / "qwen-cache"),
                 "QWEN_CONFIG_DIR": str(work / "qwen-config")}
        rows = []
        for mb in sizes:
            name = f"Synthetic-{mb}MB-Q4_K_M.gguf"
            source = hub.root / REPO / name
            source.parent.mkdir(parents=True, exist_ok=True)
            _write(source, mb * 1_000_000)
            digest = hub.sha256(source)
            commands = {
                "qwen pull": [sys.executable, "-c", LAUNCH, "pull", f"{REPO}/{name}", "--json",
                              "--no-progress"],
                "hf download": [str(hf), "download", REPO, name, "--quiet"],
            }
            times: dict[str, list[float]] = {k: [] for k in commands}
            rss: dict[str, list[int]] = {k: [] for k in commands}
            for run in range(args.runs):
                order = list(commands) if run % 2 == 0 else list(reversed(commands))
                for tool in order:
                    home = work / f"home-{tool.split()[0]}-{mb}-{run}"
                    wall, peak = _run(commands[tool], base | {"HF_HOME": str(home)})
                    _check(home, name, digest)
                    shutil.rmtree(home)
                    times[tool].append(wall)
                    rss[tool].append(peak)
            rows.append((mb, {k: statistics.median(v) for k, v in times.items()},
                         {k: max(v) for k, v in rss.items()}))
        server.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"pull of a synthetic GGUF from a local Hub (127.0.0.1), median of {args.runs} runs")
    print(f"{'size':>7}  {'qwen pull':>10}  {'hf download':>11}  {'ratio':>6}  "
          f"{'qwen RSS':>9}  {'hf RSS':>9}")
    for mb, wall, peak in rows:
        ratio = wall["qwen pull"] / wall["hf download"]
        print(f"{mb:>4} MB  {wall['qwen pull']:>9.2f}s  {wall['hf download']:>10.2f}s  "
              f"{ratio:>5.2f}x  {peak['qwen pull'] / 2**20:>5.0f} MiB  "
              f"{peak['hf download'] / 2**20:>5.0f} MiB")
    big = max(rows, key=lambda r: r[0])
    ratio = big[1]["qwen pull"] / big[1]["hf download"]
    verdict = "ok" if ratio <= RATIO_TARGET else "MISSED"
    print(f"time: qwen pull / hf download at {big[0]} MB = {ratio:.2f}x "
          f"(target <= {RATIO_TARGET}x: {verdict})")
    if len(rows) > 1:
        small = min(rows, key=lambda r: r[0])
        growth = big[2]["qwen pull"] - small[2]["qwen pull"]
        print(f"memory: qwen pull peak RSS {small[2]['qwen pull'] / 2**20:.0f} MiB at "
              f"{small[0]} MB, {big[2]['qwen pull'] / 2**20:.0f} MiB at {big[0]} MB "
              f"({growth / 2**20:+.1f} MiB for {big[0] - small[0]} MB more file)")


if __name__ == "__main__":
    main()
