"""One model across several computers, on llama.cpp's RPC backend (`qwen worker`).

- `library`: ctypes bindings to the installed llama-cpp-python's libggml-rpc (checked against
  ggml-rpc.h of the llama.cpp that llama-cpp-python 0.3.36 vendors).
- `protocol`: asks a worker what it serves and measures the link, in Python, with timeouts:
  llama.cpp's own client blocks without a timeout and aborts the process when a worker does not
  answer, so nothing reaches it before this has seen the worker answer.
- `server`: the worker, llama.cpp's RPC server in this process.
- `runtime`: loading a model with workers (their devices first, as the plan placed them), and
  what happens when a worker is lost.
- `threads`: how llama.cpp's CPU threads wait between graphs when processes take turns.

Every module imports llama_cpp and ctypes only inside its functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qwencli.hardware.remote import Worker


def probe(endpoint: str, timeout_s: float = 5.0) -> tuple[Worker, ...]:
    """A worker's devices, free memory and link (qwencli.rpc.protocol.probe): what the
    planner places layers on. WorkerUnreachable, naming the worker, within about timeout_s."""
    from qwencli.rpc.protocol import probe as probe_worker

    return probe_worker(endpoint, timeout_s)


def supports_rpc() -> bool:
    """Whether the installed llama-cpp-python was built with the RPC backend."""
    from qwencli.rpc.library import supports_rpc as library_supports_rpc

    return library_supports_rpc()
