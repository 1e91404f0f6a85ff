"""ModelSpec: a model's shape from a catalog name, an HF config.json, or a GGUF file.

The tensor table is the common ground: `tensor_table(spec)` lists every tensor with llama.cpp's
name and shape, the planner counts bytes from it, and `synth` writes exactly it. A spec read from a
GGUF carries the file's own table, types and byte counts.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from rigbench import catalog
from rigbench.checkpoint import Checkpoint, is_checkpoint
from rigbench.checkpoint import published as published_checkpoint
from rigbench.checkpoint import read as read_checkpoint
from rigbench.errors import ModelFileError, UnknownModelError

if TYPE_CHECKING:
    from rigbench import ggufread

Group = Literal[
    "embeddings", "output", "attention", "linear_attention", "dense_ffn", "routed_experts",
    "shared_experts", "router", "norms", "mtp", "vision",
]
GROUPS: tuple[str, ...] = Group.__args__  # type: ignore[attr-defined]

# Layer mixer codes (see catalog/data/models.yaml)
FULL, SLIDING, CHUNKED, LINEAR, MAMBA = "A", "S", "C", "L", "M"
ATTENTION_CODES = {FULL, SLIDING, CHUNKED, "*"}


class MoE(BaseModel):
    experts: int
    top_k: int
    expert_ffn: int
    shared_ffn: int = 0
    shared_gate: bool = False


class LinearAttention(BaseModel):
    """Gated DeltaNet dimensions."""

    k_heads: int
    v_heads: int
    k_dim: int
    v_dim: int
    conv_kernel: int = 4


class Mamba2(BaseModel):
    heads: int
    head_dim: int
    state: int
    groups: int
    conv_kernel: int = 4

    @property
    def d_inner(self) -> int:
        return self.heads * self.head_dim


class Vision(BaseModel):
    depth: int
    hidden: int
    intermediate: int
    heads: int = 16
    patch: int = 16
    out_hidden: int = 0

    def params(self) -> int:
        h, i = self.hidden, self.intermediate
        blocks = self.depth * (4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h)
        patch_embed = 3 * 2 * self.patch * self.patch * h  # temporal patch 2, RGB
        merger = (4 * h) * (4 * h) + (4 * h) * (self.out_hidden or h)  # 2x2 spatial merge then projection
        return blocks + patch_embed + merger


class Tensor(BaseModel):
    name: str
    shape: tuple[int, ...]          # ggml order: ne0 (row length) first
    group: str
    layer: int | None = None
    type: str | None = None         # GGML type, when known (GGUF files)
    nbytes: int | None = None

    @property
    def n_params(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class ModelSpec(BaseModel):
    name: str
    arch: str
    family: str = ""
    source: str = ""
    hidden: int
    layers: int
    vocab: int
    tie_embeddings: bool = False
    context: int = 32768
    heads: int
    kv_heads: int
    head_dim: int
    attn_output_gate: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    layout: str = Field(description="one mixer code per layer: A S C L M E * -")
    ffn: Literal["dense", "moe", "moe+dense"] = "dense"
    intermediate: int = 0
    activation: Literal["swiglu", "relu2"] = "swiglu"
    moe: MoE | None = None
    linear: LinearAttention | None = None
    mamba: Mamba2 | None = None
    mtp_layers: int = 0
    vision: Vision | None = None
    native_quant: str | None = None
    quality: dict | None = None             # published scores, with their source
    file_type: str | None = None            # GGUF: the file's quantisation (e.g. Q4_K_M)
    router_skew: float | None = None        # MoE routing spread (plan.routing); None = a trained router's
    checkpoint: Checkpoint | None = None     # a published checkpoint folder's real bytes (vLLM plans)
    tensors: list[Tensor] | None = None      # GGUF: the file's exact tensor table
    path: str | None = None

    # ---- derived shape facts -------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def attention_layers(self, kind: str | None = None) -> list[int]:
        codes = {kind} if kind else ATTENTION_CODES
        return [i for i, c in enumerate(self.layout) if c in codes]

    def recurrent_layers(self) -> list[int]:
        return [i for i, c in enumerate(self.layout) if c in (LINEAR, MAMBA)]

    def table(self) -> list[Tensor]:
        return self.tensors if self.tensors is not None else tensor_table(self)

    def params_by_group(self, include_mtp: bool = True, include_vision: bool = True) -> dict[str, int]:
        out = dict.fromkeys(GROUPS, 0)
        for t in self.table():
            out[t.group] += t.n_params
        if include_vision and self.vision and self.tensors is None:
            out["vision"] = self.vision.params()
        if not include_mtp:
            out["mtp"] = 0
        return out

    def total_params(self, include_mtp: bool = False, include_vision: bool = False) -> int:
        return sum(self.params_by_group(include_mtp, include_vision).values())

    def active_params(self) -> int:
        """Parameters read per token: everything but the unselected routed experts (and vision, MTP)."""
        p = self.params_by_group(include_mtp=False, include_vision=False)
        routed = p.pop("routed_experts")
        p.pop("embeddings")  # a row lookup, not a matmul
        share = self.moe.top_k / self.moe.experts if self.moe else 1.0
        return int(sum(p.values()) + routed * share)


# ---- the llama.cpp tensor table of an architecture ------------------------------------------

def expand_layout(layout: str) -> str:
    """'LLLA x16' -> 'LLLA' * 16; a plain pattern is returned as is."""
    layout = layout.strip()
    m = re.fullmatch(r"(\S+)\s*x\s*(\d+)", layout)
    return m.group(1) * int(m.group(2)) if m else layout.replace(" ", "")


def _w(name: str, *shape: int) -> tuple[str, tuple[int, ...]]:
    return name, tuple(shape)


def _attention(spec: ModelSpec, p: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    q = spec.head_dim * spec.heads
    kv = spec.head_dim * spec.kv_heads
    yield _w(f"{p}.attn_q.weight", spec.hidden, q * (2 if spec.attn_output_gate else 1))
    yield _w(f"{p}.attn_k.weight", spec.hidden, kv)
    yield _w(f"{p}.attn_v.weight", spec.hidden, kv)
    yield _w(f"{p}.attn_output.weight", q, spec.hidden)
    if spec.qkv_bias:
        yield _w(f"{p}.attn_q.bias", q)
        yield _w(f"{p}.attn_k.bias", kv)
        yield _w(f"{p}.attn_v.bias", kv)
    if spec.arch == "gpt-oss":
        yield _w(f"{p}.attn_output.bias", spec.hidden)
        yield _w(f"{p}.attn_sinks.weight", spec.heads)
    if spec.qk_norm:
        yield _w(f"{p}.attn_q_norm.weight", spec.head_dim)
        yield _w(f"{p}.attn_k_norm.weight", spec.head_dim)


def _gated_deltanet(spec: ModelSpec, p: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    la = spec.linear
    assert la is not None
    key, value = la.k_heads * la.k_dim, la.v_heads * la.v_dim
    conv = 2 * key + value
    yield _w(f"{p}.attn_qkv.weight", spec.hidden, conv)
    yield _w(f"{p}.attn_gate.weight", spec.hidden, value)
    yield _w(f"{p}.ssm_conv1d.weight", la.conv_kernel, conv)
    yield _w(f"{p}.ssm_dt.bias", la.v_heads)
    yield _w(f"{p}.ssm_a", la.v_heads)
    yield _w(f"{p}.ssm_beta.weight", spec.hidden, la.v_heads)
    yield _w(f"{p}.ssm_alpha.weight", spec.hidden, la.v_heads)
    yield _w(f"{p}.ssm_norm.weight", la.v_dim)
    yield _w(f"{p}.ssm_out.weight", value, spec.hidden)


def _mamba2(spec: ModelSpec, p: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    m = spec.mamba
    assert m is not None
    conv = m.d_inner + 2 * m.groups * m.state
    yield _w(f"{p}.ssm_in.weight", spec.hidden, 2 * m.d_inner + 2 * m.groups * m.state + m.heads)
    yield _w(f"{p}.ssm_conv1d.weight", m.conv_kernel, conv)
    yield _w(f"{p}.ssm_conv1d.bias", conv)
    yield _w(f"{p}.ssm_dt.bias", m.heads)
    yield _w(f"{p}.ssm_a", 1, m.heads)
    yield _w(f"{p}.ssm_d", 1, m.heads)
    yield _w(f"{p}.ssm_norm.weight", m.d_inner // m.groups, m.groups)
    yield _w(f"{p}.ssm_out.weight", m.d_inner, spec.hidden)


def _dense_ffn(spec: ModelSpec, p: str, ff: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    if spec.activation == "swiglu":
        yield _w(f"{p}.ffn_gate.weight", spec.hidden, ff)
    yield _w(f"{p}.ffn_up.weight", spec.hidden, ff)
    yield _w(f"{p}.ffn_down.weight", ff, spec.hidden)


def _moe(spec: ModelSpec, p: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    moe = spec.moe
    assert moe is not None
    n, eff = moe.experts, moe.expert_ffn
    yield _w(f"{p}.ffn_gate_inp.weight", spec.hidden, n)
    if spec.activation == "swiglu":
        yield _w(f"{p}.ffn_gate_exps.weight", spec.hidden, eff, n)
    yield _w(f"{p}.ffn_up_exps.weight", spec.hidden, eff, n)
    yield _w(f"{p}.ffn_down_exps.weight", eff, spec.hidden, n)
    if spec.arch == "gpt-oss":
        yield _w(f"{p}.ffn_gate_inp.bias", n)
        yield _w(f"{p}.ffn_gate_exps.bias", eff, n)
        yield _w(f"{p}.ffn_up_exps.bias", eff, n)
        yield _w(f"{p}.ffn_down_exps.bias", spec.hidden, n)
    if moe.shared_ffn:
        if moe.shared_gate:
            yield _w(f"{p}.ffn_gate_inp_shexp.weight", spec.hidden)
        if spec.activation == "swiglu":
            yield _w(f"{p}.ffn_gate_shexp.weight", spec.hidden, moe.shared_ffn)
        yield _w(f"{p}.ffn_up_shexp.weight", spec.hidden, moe.shared_ffn)
        yield _w(f"{p}.ffn_down_shexp.weight", moe.shared_ffn, spec.hidden)


def _post_norm_name(spec: ModelSpec) -> str:
    return "post_attention_norm" if spec.arch in ("qwen35", "qwen35moe", "qwen3next", "gpt-oss") else "ffn_norm"


def _block(spec: ModelSpec, il: int, code: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    p = f"blk.{il}"
    yield _w(f"{p}.attn_norm.weight", spec.hidden)
    if code in ATTENTION_CODES:
        yield from _attention(spec, p)
    elif code == LINEAR:
        yield from _gated_deltanet(spec, p)
    elif code == MAMBA:
        yield from _mamba2(spec, p)
    if code in ("E", "*", "M", "-"):  # Nemotron-H: one sub-layer per block
        if code == "E":
            yield from _moe(spec, p)
        elif code == "-":
            yield from _dense_ffn(spec, p, spec.intermediate)
        return
    yield _w(f"{p}.{_post_norm_name(spec)}.weight", spec.hidden)
    if spec.ffn in ("moe", "moe+dense"):
        yield from _moe(spec, p)
    if spec.ffn in ("dense", "moe+dense"):
        yield from _dense_ffn(spec, p, spec.intermediate)


def _mtp_block(spec: ModelSpec, il: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield from _block(spec, il, FULL)
    p = f"blk.{il}"
    yield _w(f"{p}.nextn.eh_proj.weight", 2 * spec.hidden, spec.hidden)
    yield _w(f"{p}.nextn.enorm.weight", spec.hidden)
    yield _w(f"{p}.nextn.hnorm.weight", spec.hidden)
    yield _w(f"{p}.nextn.shared_head_norm.weight", spec.hidden)


def group_of(name: str, recurrent: bool = False, mtp: bool = False) -> str:
    """Tensor group of a llama.cpp tensor name (`recurrent`: the tensor's block is a linear-attention/Mamba one)."""
    if name.startswith("token_embd"):
        return "embeddings"
    if name.startswith("output.") or name == "output.weight":
        return "output"
    if name.startswith(("v.", "mm.")):
        return "vision"
    if mtp:
        return "mtp"
    if not name.startswith("blk."):
        return "norms"
    tail = name.split(".", 2)[2]
    if "_exps" in tail:
        return "routed_experts"
    if "shexp" in tail:
        return "shared_experts"
    if tail.startswith("ffn_gate_inp"):
        return "router"
    if "norm" in tail and not tail.startswith(("ssm_norm", "attn_q_norm", "attn_k_norm")):
        return "norms"
    if tail.startswith("ffn_"):
        return "dense_ffn"
    if tail.startswith("ssm_") or recurrent:
        return "linear_attention"
    return "attention"


def tensor_table(spec: ModelSpec, include_mtp: bool = True) -> list[Tensor]:
    """Every tensor of the text model, named and shaped as llama.cpp loads it."""
    rows: list[Tensor] = []

    def add(items: Iterator[tuple[str, tuple[int, ...]]], layer: int | None, recurrent=False, mtp=False):
        for name, shape in items:
            rows.append(Tensor(name=name, shape=shape, layer=layer,
                               group=group_of(name, recurrent=recurrent, mtp=mtp)))

    add(iter([_w("token_embd.weight", spec.hidden, spec.vocab)]), None)
    for il, code in enumerate(spec.layout):
        add(_block(spec, il, code), il, recurrent=code in (LINEAR, MAMBA))
    if include_mtp:
        for il in range(spec.layers, spec.layers + spec.mtp_layers):
            add(_mtp_block(spec, il), il, mtp=True)
    add(iter([_w("output_norm.weight", spec.hidden)]), None)
    if not spec.tie_embeddings:
        add(iter([_w("output.weight", spec.hidden, spec.vocab)]), None)
    return rows


# ---- readers --------------------------------------------------------------------------------

def catalog_names() -> list[str]:
    names = []
    for key, entry in catalog.models().items():
        names.append(key)
        names += entry.get("aliases", [])
        names += list(entry.get("variants", {}))
    return names


def model_names() -> list[str]:
    """Every distinct model in the catalog: entries and their same-shape variants (aliases left out)."""
    return [n for key, entry in catalog.models().items() for n in (key, *entry.get("variants", {}))]


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def from_catalog(name: str) -> ModelSpec:
    models = catalog.models()
    key = _norm(name)
    for k, entry in models.items():
        if key == k or key in entry.get("aliases", []):
            return _from_entry(k, entry)
        if key in entry.get("variants", {}):
            # same shape, another model: its own name and quality figures, never the entry's
            base = {f: v for f, v in entry.items() if f != "quality"}
            return _from_entry(key, {**base, **entry["variants"][key]})
    close = difflib.get_close_matches(key, catalog_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `rigbench models` lists them"
    raise UnknownModelError(f"unknown model {name!r}{hint} (or pass a config.json or .gguf path)")


def _from_entry(key: str, e: dict) -> ModelSpec:
    data = {k: v for k, v in e.items() if k not in ("aliases", "variants")}
    data["name"] = key
    data["layout"] = expand_layout(e["layout"])
    if len(data["layout"]) != e["layers"]:
        raise UnknownModelError(f"catalog entry {key}: layout has {len(data['layout'])} layers, not {e['layers']}")
    return ModelSpec(**data)


_HF_ARCH = {
    "qwen3_5": "qwen35", "qwen3_5_text": "qwen35", "qwen3_5_moe": "qwen35moe", "qwen3_5_moe_text": "qwen35moe",
    "qwen3_next": "qwen3next", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe",
    "llama": "llama", "mistral": "llama", "mixtral": "llama", "gemma4": "gemma4", "gemma4_text": "gemma4",
    "gemma3": "gemma3", "gemma3_text": "gemma3", "nemotron_h": "nemotron_h_moe", "gpt_oss": "gpt-oss",
    "llama4": "llama4", "llama4_text": "llama4",
}


def from_hf_config(path: Path) -> ModelSpec:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path} is not a readable config.json ({e}); pass the model's HF config.json") from None
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{path} is not an HF config.json (not a JSON object)")
    top = cfg
    text = cfg.get("text_config") or cfg
    mtype = text.get("model_type") or top.get("model_type")
    if mtype not in _HF_ARCH or "hidden_size" not in text:
        raise ModelFileError(
            f"{path}: model_type {mtype!r} is not one rigbench reads; supported: {', '.join(sorted(_HF_ARCH))}")
    g = text.get
    layers = g("num_hidden_layers")
    heads = g("num_attention_heads")
    head_dim = g("head_dim") or g("hidden_size") // heads
    # per-layer mixer
    if g("layer_types"):
        code = {"full_attention": FULL, "linear_attention": LINEAR, "sliding_attention": SLIDING,
                "chunked_attention": CHUNKED}
        layout = "".join(code.get(t, FULL) for t in g("layer_types"))
    elif g("hybrid_override_pattern"):
        layout = g("hybrid_override_pattern")
    elif g("full_attention_interval"):
        n = g("full_attention_interval")
        layout = "".join(FULL if (i + 1) % n == 0 else LINEAR for i in range(layers))
    elif g("sliding_window_pattern") or g("sliding_window_pattern") == 0:
        n = g("sliding_window_pattern")
        layout = "".join(FULL if n and (i + 1) % n == 0 else SLIDING for i in range(layers))
    else:
        layout = FULL * layers
    experts = g("num_experts") or g("num_local_experts") or g("n_routed_experts")
    moe = None
    if experts:
        shared = g("shared_expert_intermediate_size") or 0
        if not shared and g("n_shared_experts"):
            shared = g("n_shared_experts") * (g("moe_intermediate_size") or g("intermediate_size"))
        moe = MoE(experts=experts, top_k=g("num_experts_per_tok") or g("moe_topk") or 1,
                  expert_ffn=g("moe_intermediate_size") or g("intermediate_size"), shared_ffn=shared,
                  shared_gate=mtype.startswith(("qwen3_5", "qwen3_next", "qwen2_moe")))
    linear = None
    if g("linear_num_value_heads"):
        linear = LinearAttention(k_heads=g("linear_num_key_heads"), v_heads=g("linear_num_value_heads"),
                                 k_dim=g("linear_key_head_dim"), v_dim=g("linear_value_head_dim"),
                                 conv_kernel=g("linear_conv_kernel_dim", 4))
    mamba = None
    if g("mamba_num_heads"):
        mamba = Mamba2(heads=g("mamba_num_heads"), head_dim=g("mamba_head_dim"), state=g("ssm_state_size"),
                       groups=g("n_groups", 1), conv_kernel=g("conv_kernel", 4))
    vision = None
    vc = top.get("vision_config")
    if vc and vc.get("depth"):
        vision = Vision(depth=vc["depth"], hidden=vc["hidden_size"], intermediate=vc["intermediate_size"],
                        heads=vc.get("num_heads", 16), patch=vc.get("patch_size", 16),
                        out_hidden=vc.get("out_hidden_size", 0))
    q = top.get("quantization_config") or {}
    native = {"awq": "awq", "gptq": "gptq", "fp8": "fp8", "auto-round": "autoround", "autoround": "autoround",
              "mxfp4": "mxfp4", "modelopt": "nvfp4"}.get(str(q.get("quant_method", "")).lower())
    dense_ff = g("intermediate_size") or 0
    ffn = "dense" if not moe else ("moe+dense" if g("enable_moe_block") and dense_ff else "moe")
    return ModelSpec(
        name=top.get("_name_or_path") or path.parent.name or "config", arch=_HF_ARCH[mtype],
        family=mtype, source=str(path), hidden=g("hidden_size"), layers=layers, vocab=g("vocab_size"),
        tie_embeddings=bool(top.get("tie_word_embeddings", g("tie_word_embeddings", False))),
        context=g("max_position_embeddings") or 32768, heads=heads,
        kv_heads=g("num_key_value_heads") or heads, head_dim=head_dim,
        attn_output_gate=bool(g("attn_output_gate", False)), qkv_bias=bool(g("attention_bias", False)),
        qk_norm=mtype.startswith(("qwen3", "gemma")), sliding_window=g("sliding_window") or g("attention_chunk_size"),
        layout=layout, ffn=ffn, intermediate=dense_ff, moe=moe, linear=linear, mamba=mamba,
        activation="relu2" if g("mlp_hidden_act") == "relu2" or mtype == "nemotron_h" else "swiglu",
        mtp_layers=g("mtp_num_hidden_layers") or g("num_nextn_predict_layers") or 0, vision=vision,
        native_quant=native,
    )


GGUF_MAGIC = b"GGUF"


def _gguf_splits(path: Path) -> list[Path]:
    m = re.match(r"(.*)-(\d{5})-of-(\d{5})\.gguf$", path.name)
    if not m:
        return [path]
    n = int(m.group(3))
    parts = [path.with_name(f"{m.group(1)}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise ModelFileError(f"split GGUF is missing {', '.join(missing)}; put all parts in one folder")
    return parts


def _read_gguf_part(path: Path) -> ggufread.Header:
    import struct

    from rigbench import ggufread

    try:
        with path.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise ModelFileError(f"{path} is not a GGUF file (bad magic); pass a .gguf model or a config.json")
        header = ggufread.read(path)
    except ModelFileError:
        raise
    except (ValueError, struct.error, OverflowError) as e:  # GgufFormatError is a ValueError
        raise ModelFileError(f"{path}: damaged or truncated GGUF ({e}); re-download the file") from None
    size = path.stat().st_size
    end = max((t.data_offset + t.n_bytes for t in header.tensors), default=0)
    if end > size:
        raise ModelFileError(f"{path} is truncated: tensor data needs {end} bytes, file has {size}; re-download it")
    return header


def _field(header: ggufread.Header, key: str, default=None):
    return header.fields.get(key, default)


def from_gguf(path: Path) -> ModelSpec:
    parts = _gguf_splits(path)
    readers = [_read_gguf_part(p) for p in parts]
    r0 = readers[0]
    arch = _field(r0, "general.architecture")
    if not arch:
        raise ModelFileError(f"{path}: GGUF has no general.architecture; is it a vision projector (mmproj)?")

    def k(key: str, default=None):
        return _field(r0, f"{arch}.{key}", default)

    n_total = k("block_count")
    nextn = k("nextn_predict_layers", 0) or 0
    layers = n_total - nextn
    heads = k("attention.head_count")
    heads = heads[0] if isinstance(heads, list) else heads
    kv = k("attention.head_count_kv", heads)
    kv = kv[0] if isinstance(kv, list) else kv
    hidden = k("embedding_length")
    head_dim = k("attention.key_length") or hidden // heads

    raw = [t for r in readers for t in r.tensors]
    by_layer: dict[int, set[str]] = {}
    for t in raw:
        if t.name.startswith("blk."):
            il = int(t.name.split(".")[1])
            by_layer.setdefault(il, set()).add(t.name.split(".", 2)[2])
    swa = k("attention.sliding_window")
    swa_pattern = k("attention.sliding_window_pattern")
    layout = []
    for il in range(layers):
        names = by_layer.get(il, set())
        if any(n.startswith("ssm_in") for n in names):
            layout.append(MAMBA)
        elif any(n.startswith("ssm_") for n in names):
            layout.append(LINEAR)
        elif any(n.startswith(("attn_q.", "attn_qkv.", "attn_q_a")) for n in names):
            if swa and isinstance(swa_pattern, list):
                layout.append(SLIDING if swa_pattern[il] else FULL)
            elif swa and isinstance(swa_pattern, int) and swa_pattern > 1:
                layout.append(FULL if (il + 1) % swa_pattern == 0 else SLIDING)
            elif swa and arch == "gpt-oss":
                layout.append(SLIDING if il % 2 == 0 else FULL)
            else:
                layout.append(FULL)
        elif any("_exps" in n for n in names):
            layout.append("E")
        else:
            layout.append("-")
    recurrent = {i for i, c in enumerate(layout) if c in (LINEAR, MAMBA)}
    tensors = []
    for t in raw:
        il = int(t.name.split(".")[1]) if t.name.startswith("blk.") else None
        tensors.append(Tensor(
            name=t.name, shape=tuple(int(x) for x in t.shape), layer=il, type=t.tensor_type.name,
            nbytes=int(t.n_bytes),
            group=group_of(t.name, recurrent=il in recurrent, mtp=il is not None and il >= layers)))
    experts = k("expert_count", 0) or 0
    moe = None
    if experts:
        moe = MoE(experts=experts, top_k=k("expert_used_count", 1), expert_ffn=k("expert_feed_forward_length", 0),
                  shared_ffn=k("expert_shared_feed_forward_length", 0) or 0,
                  shared_gate=any(t.name.endswith("ffn_gate_inp_shexp.weight") for t in raw))
    linear = mamba = None
    if LINEAR in layout:
        d_state, n_group, dt_rank = k("ssm.state_size"), k("ssm.group_count"), k("ssm.time_step_rank")
        linear = LinearAttention(k_heads=n_group, v_heads=dt_rank, k_dim=d_state, v_dim=d_state,
                                 conv_kernel=k("ssm.conv_kernel", 4))
    if MAMBA in layout:
        d_inner, n_group = k("ssm.inner_size"), k("ssm.group_count", 1)
        n_heads = k("ssm.time_step_rank")
        mamba = Mamba2(heads=n_heads, head_dim=d_inner // n_heads, state=k("ssm.state_size"), groups=n_group,
                       conv_kernel=k("ssm.conv_kernel", 4))
    vocab_tokens = _field(r0, "tokenizer.ggml.tokens")
    embd = next((t for t in raw if t.name == "token_embd.weight"), None)
    vocab = int(embd.shape[1]) if embd is not None else len(vocab_tokens or [])
    ff = k("feed_forward_length", 0)
    ff = ff[0] if isinstance(ff, list) else ff
    has_dense = any(t.name.endswith("ffn_up.weight") for t in raw)
    file_type = _field(r0, "general.file_type")
    # a rigbench synthetic twin says how its router spreads tokens; one written before that key spread evenly
    skew = _field(r0, "rigbench.synth.router_skew", 0.0 if _field(r0, "rigbench.synth") else None)
    return ModelSpec(
        name=_field(r0, "general.name") or path.stem, arch=arch, family=arch, source=str(path),
        hidden=hidden, layers=layers, vocab=vocab,
        tie_embeddings=not any(t.name == "output.weight" for t in raw), context=k("context_length", 32768),
        heads=heads, kv_heads=kv, head_dim=head_dim,
        attn_output_gate=arch in ("qwen35", "qwen35moe", "qwen3next"),
        qkv_bias=any(t.name.endswith("attn_q.bias") for t in raw),
        qk_norm=any(t.name.endswith("attn_q_norm.weight") for t in raw), sliding_window=swa,
        layout="".join(layout), ffn=("moe+dense" if has_dense else "moe") if moe else "dense",
        intermediate=ff or 0, moe=moe, linear=linear, mamba=mamba, mtp_layers=nextn,
        file_type=_FILE_TYPES.get(file_type, str(file_type)) if file_type is not None else None,
        tensors=tensors, path=str(path), router_skew=skew,
    )


# llama.h enum llama_ftype (subset that people ship)
_FILE_TYPES = {0: "F32", 1: "F16", 7: "Q8_0", 2: "Q4_0", 3: "Q4_1", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               12: "Q3_K_M", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               30: "IQ4_XS", 25: "IQ4_NL", 32: "BF16", 38: "MXFP4_MOE"}


def load(ref: str) -> ModelSpec:
    """A ModelSpec from a catalog name, a config.json path (or its folder), a .gguf path, or a remote model
    (hf://ORG/REPO[@REV][/FILE], ORG/REPO[:QUANT], an https:// .gguf or config.json) read from its headers.
    A bare ORG/REPO that the catalog's checkpoints list is planned from that entry, offline."""
    from rigbench import remote

    if remote.is_remote(ref) or (remote.looks_like_repo(ref) and published_checkpoint(ref) is None):
        try:
            spec = load(str(remote.mirror(ref)))
        except remote.OfflineError:
            # offline, the catalog's published checkpoints stand in for the Hub
            known = published_checkpoint(remote.repo_id(ref) or "")
            if known is None:
                raise
            return from_catalog(known[0]).model_copy(update={"checkpoint": known[1], "source": ref})
        # the mirror's files are headers over zeros: the launch command names the remote model, never them
        update = {"source": ref, "path": ref if spec.path else None}
        if spec.checkpoint is not None:
            update["checkpoint"] = spec.checkpoint.model_copy(update={"path": ref})
        return spec.model_copy(update=update)
    p = Path(ref).expanduser()
    if p.is_dir() and (p / "config.json").exists():
        spec = from_hf_config(p / "config.json")
        if is_checkpoint(p):
            spec = spec.model_copy(update={"checkpoint": read_checkpoint(p)})
        return spec
    if p.is_file():
        if p.suffix == ".json":
            return from_hf_config(p)
        return from_gguf(p)
    known = published_checkpoint(ref)
    if known is not None:
        return from_catalog(known[0]).model_copy(update={"checkpoint": known[1]})
    if ref.endswith((".gguf", ".json")) or "/" in ref:
        raise ModelFileError(f"no such file: {ref}")
    return from_catalog(ref)


def scale_down(spec: ModelSpec, layers: int | None = None, experts: int | None = None) -> ModelSpec:
    """The same architecture with fewer layers (keeping the layer pattern) and/or fewer experts."""
    upd: dict = {}
    if layers:
        period = layer_period(spec.layout)
        n = max(period, layers // period * period) if period > 1 else layers
        upd["layout"] = (spec.layout * (n // len(spec.layout) + 1))[:n]
        upd["layers"] = n
    if experts and spec.moe:
        upd["moe"] = MoE(**{**spec.moe.model_dump(), "experts": experts, "top_k": min(spec.moe.top_k, experts)})
    if not upd:
        return spec
    tag = "-".join(f"{k}{v if not isinstance(v, MoE) else v.experts}" for k, v in upd.items() if k != "layout")
    return spec.model_copy(update={**upd, "name": f"{spec.name}-synth-{tag}", "tensors": None})


def layer_period(layout: str) -> int:
    """The shortest run of layer kinds whose repeats make the layout."""
    for p in range(1, len(layout) + 1):
        if len(layout) % p == 0 and layout[:p] * (len(layout) // p) == layout:
            return p
    return len(layout)
