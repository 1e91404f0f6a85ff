"""Bits per weight: GGUF tensor types and file-type mixes, safetensors formats, KV cache types."""

from __future__ import annotations

import re

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from rigbench import catalog
from rigbench.errors import EngineOptionError

# Types whose blocks span 256 weights along a row; rows not a multiple of 256 fall back
# (llama-quant.cpp: "falling back to" table in llama_tensor_get_type).
_FALLBACK = {
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
    "IQ4_XS": "IQ4_NL", "IQ2_XXS": "Q4_0", "IQ2_XS": "Q4_0", "IQ3_XXS": "Q4_0", "IQ3_S": "Q4_0",
}


def ggml_type(name: str) -> GGMLQuantizationType:
    try:
        return GGMLQuantizationType[name.upper()]
    except KeyError:
        raise EngineOptionError(f"unknown GGML type {name!r}; use one of Q4_K, Q8_0, F16, ...") from None


def tensor_bytes(shape: tuple[int, ...] | list[int], type_name: str) -> int:
    """Bytes of a tensor of `shape` (ggml order, ne0 first) stored as `type_name`."""
    block, size = GGML_QUANT_SIZES[ggml_type(type_name)]
    n = 1
    for d in shape:
        n *= d
    if shape[0] % block:
        raise ValueError(f"row of {shape[0]} is not a multiple of the {type_name} block ({block})")
    return n // block * size


def bits_per_weight(type_name: str) -> float:
    block, size = GGML_QUANT_SIZES[ggml_type(type_name)]
    return size * 8 / block


def file_types() -> dict[str, dict[str, str]]:
    return catalog.quants()["gguf_file_types"]


def checkpoint_formats() -> dict[str, dict]:
    return catalog.quants()["checkpoint_formats"]


def resolve_file_type(name: str) -> tuple[str, dict[str, str]]:
    table = file_types()
    key = name.upper().replace("UD_", "UD-")
    if key in table:
        return key, table[key]
    raise EngineOptionError(
        f"unknown quantisation {name!r}; GGUF types: {', '.join(table)}; "
        f"checkpoint formats: {', '.join(checkpoint_formats())}"
    )


def use_more_bits(i: int, n: int) -> bool:
    # llama-quant.cpp use_more_bits: first and last eighth, and every third layer between
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


_KEEP_F32 = re.compile(r"(_norm|ssm_conv1d|ffn_gate_inp|ssm_a|ssm_d|ssm_dt|attn_sinks|\.bias)")


def assign_gguf_type(name: str, shape: tuple[int, ...], group: str, scheme: dict[str, str],
                     counters: dict[str, int], n_attn_v: int, n_layers: int) -> str:
    """The GGML type llama.cpp's quantizer gives tensor `name` under a file-type `scheme`.

    `counters` carries the running attn_v index across calls, as llama-quant.cpp's i_attention_wv does.
    """
    base = scheme["base"]
    if len(shape) == 1 or _KEEP_F32.search(name):
        return "F32"
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    t = base
    if group == "embeddings":
        t = scheme.get("embed", base)
    elif group == "output":
        t = scheme.get("output", base)
    elif group == "routed_experts":
        t = scheme.get("experts", base)
        if name.endswith("ffn_down_exps.weight") and "more_bits" in scheme and use_more_bits(layer, n_layers):
            t = scheme["more_bits"]
    elif group == "shared_experts":
        t = scheme.get("shared", base)
    elif name.endswith("attn_v.weight"):
        i = counters.get("attn_v", 0)
        counters["attn_v"] = i + 1
        if "attn_v" in scheme:
            t = scheme["attn_v"]
        elif "more_bits" in scheme and use_more_bits(i, n_attn_v):
            t = scheme["more_bits"]
        elif "attention" in scheme:
            t = scheme["attention"]
    elif name.endswith("ffn_down.weight"):
        if "ffn_down" in scheme:
            t = scheme["ffn_down"]
        elif "more_bits" in scheme and use_more_bits(layer, n_layers):
            t = scheme["more_bits"]
    elif name.endswith("attn_qkv.weight"):
        t = scheme.get("qkv", base)
    elif name.endswith("attn_output.weight") and "attn_output" in scheme:
        t = scheme["attn_output"]
    elif group in ("attention", "linear_attention") and "attention" in scheme:
        t = scheme["attention"]
    elif "first_eighth" in scheme and 0 <= layer < n_layers // 8:
        t = scheme["first_eighth"]
    block = GGML_QUANT_SIZES[ggml_type(t)][0]
    while shape[0] % block:
        t = _FALLBACK.get(t, "F16")
        block = GGML_QUANT_SIZES[ggml_type(t)][0]
    return t


def checkpoint_bits(fmt: str, quantized: bool) -> float:
    """Effective bits per weight of a safetensors tensor in `fmt` (quantized = a linear layer the format quantises)."""
    formats = checkpoint_formats()
    if fmt not in formats:
        raise EngineOptionError(f"unknown checkpoint format {fmt!r}; use one of {', '.join(formats)}")
    spec = formats[fmt]
    if not quantized or spec["bits"] >= 16:
        return 16.0
    bits = float(spec["bits"])
    if "group_size" in spec:
        bits += (spec.get("scale_bits", 0) + spec.get("zero_bits", 0)) / spec["group_size"]
    return bits


def kv_bytes_per_element(kv_type: str) -> float:
    types = catalog.quants()["kv_types"]
    key = kv_type.lower()
    if key not in types:
        raise EngineOptionError(f"unknown KV cache type {kv_type!r}; use one of {', '.join(types)}")
    return float(types[key]["bytes"])
