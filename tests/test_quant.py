import pytest

from rigbench import quant
from rigbench.errors import EngineOptionError


def test_block_sizes_from_ggml():
    # Q4_K: 256 weights in 144 bytes (2 f16 scales + 12 bytes of 6-bit scales + 128 bytes of nibbles)
    assert quant.tensor_bytes((4096, 4096), "Q4_K") == 4096 * 4096 // 256 * 144
    # Q8_0: 32 weights in 34 bytes; Q6_K: 256 in 210; F16: 2 bytes
    assert quant.tensor_bytes((2048, 10), "Q8_0") == 2048 * 10 // 32 * 34
    assert quant.tensor_bytes((512, 3), "Q6_K") == 2 * 3 * 210
    assert quant.tensor_bytes((7, 3), "F16") == 42
    assert quant.bits_per_weight("Q4_K") == pytest.approx(4.5)
    assert quant.bits_per_weight("Q8_0") == pytest.approx(8.5)


def test_row_not_multiple_of_block_is_rejected():
    with pytest.raises(ValueError):
        quant.tensor_bytes((896, 10), "Q4_K")


def test_use_more_bits_matches_llama_quant():
    # n = 24: first 3 (< 24/8), last 3 (>= 21), and every third from layer 3 offset by 2: 5, 8, 11, 14, 17, 20
    got = [i for i in range(24) if quant.use_more_bits(i, 24)]
    assert got == [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]


def test_q4_k_m_mix():
    _, scheme = quant.resolve_file_type("Q4_K_M")
    c: dict = {}
    assert quant.assign_gguf_type("output.weight", (4096, 1000), "output", scheme, c, 8, 8) == "Q6_K"
    assert quant.assign_gguf_type("blk.0.attn_norm.weight", (4096,), "norms", scheme, c, 8, 8) == "F32"
    assert quant.assign_gguf_type("blk.3.ffn_gate_inp.weight", (4096, 64), "router", scheme, c, 8, 8) == "F32"
    # attn_v of attention layer 0 of 8 gets more bits; layer 1 does not (1 >= 8/8 and (1-1)%3 != 2)
    assert quant.assign_gguf_type("blk.0.attn_v.weight", (4096, 512), "attention", scheme, c, 8, 8) == "Q6_K"
    assert quant.assign_gguf_type("blk.1.attn_v.weight", (4096, 512), "attention", scheme, c, 8, 8) == "Q4_K"
    assert quant.assign_gguf_type("blk.7.ffn_down.weight", (11008, 4096), "dense_ffn", scheme, c, 8, 8) == "Q6_K"
    assert quant.assign_gguf_type("blk.1.attn_qkv.weight", (4096, 8192), "linear_attention", scheme, c, 8, 8) == "Q5_K"
    # K-quants need rows of 256: an 896-wide row falls back (Q4_K -> Q5_0)
    assert quant.assign_gguf_type("blk.1.ffn_up.weight", (896, 4864), "dense_ffn", scheme, c, 8, 24) == "Q5_0"


def test_checkpoint_bits_and_kv_types():
    # AWQ int4, group 128: 4 bits + (16-bit scale + 4-bit zero) / 128
    assert quant.checkpoint_bits("awq", True) == pytest.approx(4 + 20 / 128)
    assert quant.checkpoint_bits("awq", False) == 16
    assert quant.kv_bytes_per_element("q8_0") == pytest.approx(34 / 32)
    assert quant.kv_bytes_per_element("q4_0") == pytest.approx(18 / 32)
    assert quant.kv_bytes_per_element("fp8_e5m2") == 1
    with pytest.raises(EngineOptionError):
        quant.kv_bytes_per_element("q3_x")
    with pytest.raises(EngineOptionError):
        quant.resolve_file_type("Q9_K")
