"""Model shapes: exact from a GGUF header, estimated from the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwencli.catalog import load_catalog, quant_file
from qwencli.gguf_info import read_model
from qwencli.shapes import shape_from_catalog, shape_from_gguf
from tests.gguf_fixtures import (
    QWEN3_0_6B,
    TensorSpec,
    write_header_only_gguf,
    write_qwen_gguf,
)


def test_header_shape_accounts_for_every_tensor_byte(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf", n_layers=3, tied_embeddings=False)
    model = read_model(path)
    shape = shape_from_gguf(model)
    assert shape.source == "header" and shape.n_layers == 3 and shape.arch == "qwen3"
    assert shape.weight_bytes == model.total_tensor_bytes()
    assert [layer.weight_bytes for layer in shape.layers] == [
        model.layer_bytes()[i] for i in range(3)]
    assert all(layer.kv for layer in shape.layers)
    assert not shape.output_tied
    assert (shape.n_embd, shape.n_head, shape.n_kv_head, shape.head_dim_k) == (64, 4, 2, 16)


def test_tied_embedding_is_the_output_layer(tmp_path: Path) -> None:
    path = write_qwen_gguf(tmp_path / "m.gguf", tied_embeddings=True)
    shape = shape_from_gguf(read_model(path))
    assert shape.output_tied
    assert shape.output_bytes > shape.token_embd_bytes  # the embedding plus output_norm
    assert shape.weight_bytes == read_model(path).total_tensor_bytes()


def test_repackable_matrices_are_recorded_by_type(tmp_path: Path) -> None:
    specs = QWEN3_0_6B.tensor_specs("Q4_K", embd_type="Q6_K")
    path = write_header_only_gguf(tmp_path / "q.gguf", specs, arch="qwen3",
                                  metadata=QWEN3_0_6B.arch_metadata())
    shape = shape_from_gguf(read_model(path))
    layer = shape.layers[0]
    assert set(layer.repackable) == {"Q4_K"}
    assert layer.repackable["Q4_K"] < layer.weight_bytes  # norms are not matrices
    assert shape.n_vocab == 151_936 and shape.ctx_train == 40_960


@pytest.mark.parametrize("model_id", ["qwen3-8b", "qwen3.5-9b", "qwen3-30b-a3b",
                                      "qwen2.5-7b", "qwen3.6-27b"])
def test_catalog_shape_spreads_the_file_size(model_id: str) -> None:
    spec = load_catalog().get(model_id)
    qf = quant_file(spec, "Q4_K_M")
    shape = shape_from_catalog(spec, qf)
    assert shape.source == "catalog" and shape.quant == "Q4_K_M"
    assert shape.n_layers == spec.gguf_block_count
    # Within the header's few MB of the file size.
    assert 0 < qf.size_bytes - shape.weight_bytes < 16 * 1024**2
    kv_layers = sum(layer.kv for layer in shape.layers)
    assert kv_layers == len(spec.kv_layer_indices)
    if spec.is_moe:
        assert all(0 < layer.expert_bytes < layer.weight_bytes for layer in shape.layers)
    if spec.is_hybrid:
        assert all(layer.recurrent_bytes > 0 for layer in shape.layers if not layer.kv)


def test_deltanet_layers_with_a_fused_qkv_keep_a_state_not_a_kv_cache(tmp_path: Path) -> None:
    """Qwen3.5/3.6/3.8 and Qwen3-Next GGUFs name a Gated DeltaNet layer's projection attn_qkv
    (llama.cpp's converter maps linear_attn.in_proj_qkv to it): its ssm_* tensors make it a
    recurrent layer, so only every 4th layer holds a KV cache."""
    n_embd, vocab = 256, 1024
    tensors = [TensorSpec("token_embd.weight", (n_embd, vocab), "F16"),
               TensorSpec("output_norm.weight", (n_embd,))]
    for i in range(8):
        if i % 4 == 3:  # gated attention
            tensors += [TensorSpec(f"blk.{i}.attn_q.weight", (n_embd, 512), "F16"),
                        TensorSpec(f"blk.{i}.attn_k.weight", (n_embd, 64), "F16"),
                        TensorSpec(f"blk.{i}.attn_v.weight", (n_embd, 64), "F16"),
                        TensorSpec(f"blk.{i}.attn_output.weight", (256, n_embd), "F16")]
        else:  # Gated DeltaNet
            tensors += [TensorSpec(f"blk.{i}.attn_qkv.weight", (n_embd, 384), "F16"),
                        TensorSpec(f"blk.{i}.attn_gate.weight", (n_embd, 128), "F16"),
                        TensorSpec(f"blk.{i}.ssm_conv1d.weight", (4, 384)),
                        TensorSpec(f"blk.{i}.ssm_out.weight", (128, n_embd), "F16")]
        tensors += [TensorSpec(f"blk.{i}.ffn_up.weight", (n_embd, 512), "F16"),
                    TensorSpec(f"blk.{i}.ffn_down.weight", (512, n_embd), "F16")]
    metadata = {f"qwen35.{k}": v for k, v in {
        "block_count": 8, "embedding_length": n_embd, "attention.head_count": 4,
        "attention.head_count_kv": 1, "attention.key_length": 64,
        "attention.value_length": 64, "rope.dimension_count": 16, "context_length": 4096,
        "feed_forward_length": 512, "ssm.state_size": 32, "ssm.conv_kernel": 4,
        "ssm.inner_size": 128, "ssm.group_count": 2, "ssm.time_step_rank": 4}.items()}
    path = write_header_only_gguf(tmp_path / "hybrid.gguf", tensors, arch="qwen35",
                                  metadata=metadata)
    shape = shape_from_gguf(read_model(path))
    assert [layer.kv for layer in shape.layers] == [False, False, False, True] * 2
    assert all(layer.recurrent_bytes > 0 for layer in shape.layers if not layer.kv)
    assert all(layer.recurrent_bytes == 0 for layer in shape.layers if layer.kv)
