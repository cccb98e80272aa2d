"""How llama.cpp's CPU threads wait between graphs, in processes that take turns.

llama-cpp-python's CPU backend runs each graph as an OpenMP parallel region (libgomp on Linux).
After a region ends, libgomp keeps its threads spinning for GOMP_SPINCOUNT iterations (300,000
by default, milliseconds) so that the next region starts at once. With workers the processes
take turns: while a worker computes its layers, the main process waits for the answer and its
threads spin; while the main process computes, the worker's threads spin. On one machine
(workers on loopback, or a worker beside the main process) those spinning threads take the
cores the other process needs: measured on this project's two-core build machine (2 threads
per process, Qwen3-0.6B-shaped Q4_K_M, benchmarks/rpc_speed.py), one loopback worker decoded at
37.9 tok/s with the default and 60.1 with GOMP_SPINCOUNT=3000, two workers 29.6 and 55.6; the
model alone decodes as fast either way (72.7 and 73.5 tok/s), because ggml's barriers inside a
graph wait far less than 3,000 spins. OMP_WAIT_POLICY=PASSIVE (no spinning at all) is no
substitute: it makes those barriers sleep, and the model alone fell to 40 tok/s.

So `qwen worker`, and a command that loads a model with `--rpc` workers, set GOMP_SPINCOUNT
before llama.cpp's libraries load (libgomp reads it once, when it is loaded), unless the person
set it. A model run on one machine alone is left as it was.
"""

from __future__ import annotations

import os
import sys

SPIN_ENV = "GOMP_SPINCOUNT"
IDLE_SPINS = "3000"


def quiet_idle_threads() -> bool:
    """Set GOMP_SPINCOUNT for this process (a value already in the environment wins). Returns
    whether it can still take effect: False once llama_cpp is loaded in this process."""
    os.environ.setdefault(SPIN_ENV, IDLE_SPINS)
    return "llama_cpp" not in sys.modules
