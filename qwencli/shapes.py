"""Build the planner's `ModelShape`: exactly from a GGUF header, or estimated from the catalog.

From a header every byte is known: tensor sizes per layer, which layers keep a KV cache (those
with attention K tensors), the expert tensors of MoE layers, the matrices the CPU may repack.
From the catalog only the file size and the architecture are known, so per-layer bytes are the
file size less the embeddings and the metadata, spread evenly; the output says "catalog".

Header numbers are untrusted: `shape_from_gguf` has them checked first (`gguf_checks`, the
bounds and why), before anything loops over them or the file reaches llama.cpp.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from qwencli.catalog import ModelSpec, QuantFile
from qwencli.fit import LayerShape, ModelShape

if TYPE_CHECKING:
    from qwencli.gguf_info import GgufModel

# Share of a repeating layer's bytes held in each repackable type, by file quant, measured on
# synthetic Qwen3-shaped files written by llama.cpp's quantizer (Q4_K_M keeps ffn_down and
# attn_v at Q6_K in half the layers). Used only for catalog estimates.
REPACKABLE_SHARE = {
    "Q4_K_M": {"Q4_K": 0.55},
    "Q4_K_S": {"Q4_K": 0.9},
    "Q4_0": {"Q4_0": 1.0},
    "IQ4_NL": {"IQ4_NL": 1.0},
    "Q8_0": {"Q8_0": 1.0},
    "Q5_K_M": {"Q5_K": 0.55},
    "Q6_K": {"Q6_K": 1.0},
    "Q2_K": {"Q2_K": 0.3},
}
HEADER_BYTES_PER_VOCAB_ENTRY = 45  # token text, type and merges: about 6.5 MB for 151,936 tokens

def _vocab_size(model: GgufModel, token_embd_shape: tuple[int, ...] | None) -> int:
    from qwencli.gguf_info import ArraySummary

    if token_embd_shape and len(token_embd_shape) >= 2:
        return int(token_embd_shape[1])
    tokens = model.get("tokenizer.ggml.tokens")
    if isinstance(tokens, ArraySummary):
        return tokens.length
    vocab = model.arch_value("vocab_size")
    return vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else 0


def _display_name(model: GgufModel) -> str:
    """general.name when it is a short printable text, else the file's name: it is printed."""
    from qwencli.gguf_checks import MAX_NAME_CHARS
    from qwencli.gguf_info import file_label

    name = model.get("general.name")
    if isinstance(name, str) and name.strip() and len(name) <= MAX_NAME_CHARS \
            and name.isprintable():
        return name
    return file_label(model.source)


def shape_from_gguf(model: GgufModel, name: str | None = None) -> ModelShape:
    """The exact shape of a GGUF model (all split parts), its numbers checked first
    (GgufValueError: see gguf_checks)."""
    from qwencli.gguf_checks import check_numbers

    numbers = check_numbers(model)
    arch = model.architecture or "unknown"

    weights: dict[int, int] = defaultdict(int)
    experts: dict[int, int] = defaultdict(int)
    repackable: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    has_kv: set[int] = set()
    # A Gated DeltaNet layer's fused projection is also named attn_qkv (llama.cpp's converter
    # maps Qwen3.5's linear_attn.in_proj_qkv to it): its ssm_* tensors say it keeps a state.
    recurrent_layers: set[int] = set()
    token_embd = output = 0
    output_repackable: dict[str, int] = defaultdict(int)
    token_embd_shape = None
    has_output = False
    for tensor in model.tensors:
        layer = tensor.layer
        if layer is None:
            if tensor.name.startswith("token_embd."):
                token_embd += tensor.n_bytes
                token_embd_shape = tuple(tensor.shape)
            elif tensor.name.startswith("output"):
                output += tensor.n_bytes
                if tensor.name == "output.weight":
                    has_output = True
                    if len(tensor.shape) >= 2 and tensor.shape[1] % 4 == 0:
                        output_repackable[tensor.ggml_type] += tensor.n_bytes
            else:
                token_embd += tensor.n_bytes  # other input-side tensors stay on the host too
            continue
        weights[layer] += tensor.n_bytes
        if "_exps." in tensor.name:
            experts[layer] += tensor.n_bytes
        if ".attn_k." in tensor.name or ".attn_qkv." in tensor.name:
            has_kv.add(layer)
        if ".ssm_" in tensor.name:
            recurrent_layers.add(layer)
        if len(tensor.shape) >= 2 and tensor.shape[1] % 4 == 0:
            repackable[layer][tensor.ggml_type] += tensor.n_bytes
    if not has_output:  # tied embeddings: llama.cpp uses the token embedding as the output layer
        output += token_embd
    has_kv -= recurrent_layers
    recurrent = numbers.recurrent_bytes
    layers = tuple(
        LayerShape(
            weight_bytes=weights.get(i, 0),
            kv=i in has_kv,
            recurrent_bytes=0 if i in has_kv else recurrent,
            expert_bytes=experts.get(i, 0),
            repackable=dict(repackable.get(i, {})),
        )
        for i in range(numbers.n_layers)  # every blk.N is below it (check_numbers)
    )
    return ModelShape(
        name=name or _display_name(model),
        quant=model.quant_label,
        source="header",
        arch=arch,
        layers=layers,
        token_embd_bytes=token_embd,
        output_bytes=output,
        output_tied=not has_output,
        n_embd=numbers.n_embd,
        n_head=numbers.n_head,
        n_kv_head=numbers.n_kv_head,
        head_dim_k=numbers.head_k,
        head_dim_v=numbers.head_v,
        n_ff=numbers.n_ff,
        n_vocab=_vocab_size(model, token_embd_shape),
        ctx_train=numbers.ctx_train,
        n_expert=numbers.n_expert,
        n_expert_used=numbers.n_expert_used,
        output_repackable=dict(output_repackable),
    )


def _layer_params(spec: ModelSpec) -> tuple[float, float]:
    """(all weights, routed-expert weights) of one repeating layer, in parameters."""
    h = spec.hidden_size
    attention = h * spec.n_heads * spec.head_dim_k * 2 + h * spec.n_kv_heads * (
        spec.head_dim_k + spec.head_dim_v)
    if spec.experts is not None:
        routed = 3 * h * spec.experts.ffn_size * spec.experts.total
        shared = 3 * h * spec.experts.ffn_size * spec.experts.shared
        return attention + routed + shared, routed
    return attention + 3 * h * (spec.ffn_size or 0), 0.0


def shape_from_catalog(spec: ModelSpec, quant_file: QuantFile) -> ModelShape:
    """An estimated shape from catalog facts and the file's size."""
    header = HEADER_BYTES_PER_VOCAB_ENTRY * spec.vocab_size
    tensor_bytes = max(0, quant_file.size_bytes - header)
    bits_per_param = tensor_bytes * 8 / max(1, spec.params_total)
    embedding = int(spec.vocab_size * spec.hidden_size * bits_per_param / 8)
    output = embedding  # tied or not, the output matrix has the embedding's shape
    untied_output = 0 if spec.tie_embeddings else output
    blocks = max(1, spec.gguf_block_count)
    per_layer = max(0, tensor_bytes - embedding - untied_output) // blocks
    layer_total, layer_experts = _layer_params(spec)
    expert_share = layer_experts / layer_total if layer_total else 0.0
    shares = REPACKABLE_SHARE.get(quant_file.quant, {})
    kv_layers = set(spec.kv_layer_indices)
    recurrent = 0
    if spec.linear_attention is not None:
        la = spec.linear_attention
        d_inner = la.v_heads * la.head_dim
        conv = ((la.conv_kernel or 4) - 1) * (d_inner + 2 * la.qk_heads * la.head_dim)
        recurrent = 4 * (conv + la.v_heads * la.head_dim * la.head_dim)
    layers = tuple(
        LayerShape(
            weight_bytes=per_layer,
            kv=i in kv_layers,
            recurrent_bytes=0 if i in kv_layers else recurrent,
            expert_bytes=int(per_layer * expert_share),
            repackable={t: int(per_layer * share) for t, share in shares.items()},
        )
        for i in range(blocks)
    )
    n_ff = spec.experts.ffn_size if spec.experts is not None else (spec.ffn_size or 0)
    return ModelShape(
        name=spec.id,
        quant=quant_file.quant,
        source="catalog",
        arch=spec.arch,
        layers=layers,
        token_embd_bytes=embedding,
        output_bytes=output,
        output_tied=spec.tie_embeddings,
        n_embd=spec.hidden_size,
        n_head=spec.n_heads,
        n_kv_head=spec.n_kv_heads,
        head_dim_k=spec.head_dim_k,
        head_dim_v=spec.head_dim_v,
        n_ff=n_ff,
        n_vocab=spec.vocab_size,
        ctx_train=spec.context_max,
        n_expert=spec.experts.total if spec.experts else 0,
        n_expert_used=spec.experts.active if spec.experts else 0,
        output_repackable={t: int(output * s) for t, s in shares.items()}
        if not spec.tie_embeddings else {},
    )
