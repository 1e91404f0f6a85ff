"""Speed from a memory plan: a roofline of bytes read and FLOPs per token against each device.

Decode is bound by the bytes each device reads per token (weights, KV cache, recurrent state) over its
bandwidth; prefill by FLOPs, plus the PCIe copies llama.cpp makes when a GPU runs CPU-held weights
(ggml-backend op offload: at a batch of 32 tokens or more the whole host tensor is uploaded, once per
u-batch; ggml/src/ggml-backend.cpp, ggml-cuda.cu offload_op). Each part is computed at the devices' peak,
then scaled by an efficiency coefficient that `calibrate()` fits per device class from measured runs.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from types import EllipsisType

import numpy as np
from pydantic import BaseModel, model_validator

from rigbench import catalog
from rigbench.errors import RigbenchError
from rigbench.hardware import Rig
from rigbench.model import ATTENTION_CODES, ModelSpec
from rigbench.plan import routing
from rigbench.plan.memory import Plan, recurrent_state_bytes_per_seq

DECODE_PARTS = ("vram", "ram", "overhead")
PREFILL_PARTS = ("gpu_compute", "gpu_experts", "attention", "scan", "cpu_compute", "pcie", "overhead")
# a part's coefficient is 1 / efficiency: the measured time over the time at the device's peak
_DEFAULT_KEYS = {"vram": "gpu_mem_eff", "ram": "cpu_mem_eff", "gpu_compute": "gpu_flops_eff",
                 "gpu_experts": "gpu_expert_flops_eff", "attention": "attn_flops_eff", "scan": "scan_eff",
                 "pcie": "link_eff"}


def constants() -> dict:
    return catalog.speed()["defaults"]


class Coefficients(BaseModel):
    decode: dict[str, float]
    prefill: dict[str, float]
    decode_uncertainty: float
    prefill_uncertainty: float
    points: int = 0
    source: str = "catalog defaults (uncalibrated)"

    @classmethod
    def defaults(cls) -> Coefficients:
        c = constants()
        coef = {k: 1 / c[v] for k, v in _DEFAULT_KEYS.items()}
        return cls(decode={k: coef.get(k, 1.0) for k in DECODE_PARTS},
                   prefill={k: coef.get(k, 1.0) for k in PREFILL_PARTS},
                   decode_uncertainty=c["uncertainty"], prefill_uncertainty=c["uncertainty"])


    @model_validator(mode="after")
    def _complete(self) -> Coefficients:
        """A calibration written before a part existed gets that part's default."""
        d = Coefficients.defaults() if (set(self.decode) != set(DECODE_PARTS)
                                        or set(self.prefill) != set(PREFILL_PARTS)) else None
        if d is not None:
            self.decode = {**d.decode, **{k: v for k, v in self.decode.items() if k in DECODE_PARTS}}
            self.prefill = {**d.prefill, **{k: v for k, v in self.prefill.items() if k in PREFILL_PARTS}}
        return self


class Calibration(BaseModel):
    """Coefficients per device class: a rig name (everything measured on that machine) or a GPU
    architecture such as `gpu:hopper` (the GPU-side coefficients only)."""

    classes: dict[str, Coefficients] = {}

    def for_rig(self, rig: Rig) -> Coefficients:
        if rig.name in self.classes:
            return self.classes[rig.name]
        if not rig.gpus:
            return self.classes.get("cpu") or Coefficients.defaults()
        arch = f"gpu:{rig.gpus[0].arch}"
        if arch in self.classes:
            a = self.classes[arch]
            return a.model_copy(update={"source": f"calibrated on {a.points} runs of {arch} GPUs"})
        other = [k for k in self.classes if k.startswith("gpu:")]
        if not other:
            return Coefficients.defaults()
        # efficiencies (shares of peak) carry over between GPU generations better than raw numbers do;
        # say so with a wider uncertainty. Not the memory one: HBM and GDDR reach different shares of their
        # peak, so another architecture keeps the catalog's (from consumer-card figures)
        a = self.classes[other[0]]
        return a.model_copy(update={
            "decode": {**a.decode, "vram": Coefficients.defaults().decode["vram"]},
            "decode_uncertainty": max(0.25, 1.5 * a.decode_uncertainty),
            "prefill_uncertainty": max(0.3, 1.5 * a.prefill_uncertainty),
            "source": f"efficiencies calibrated on {other[0]} ({a.points} runs), applied to {rig.gpus[0].name}"})


    def for_plan(self, plan: Plan, rig: Rig) -> Coefficients:
        """The rig's coefficients; a vLLM plan's prefill uses vLLM's own (calibrated per GPU architecture
        when vLLM runs were measured, else the kernel-level defaults in catalog speed.yaml)."""
        base = self.for_rig(rig)
        if plan.engine != "vllm" or not rig.gpus:
            return base
        key = f"vllm:gpu:{rig.gpus[0].arch}"
        if key in self.classes:
            return self.classes[key]
        v = catalog.speed()["vllm"]
        pre = {k: (1 / v[_DEFAULT_KEYS[k]] if _DEFAULT_KEYS.get(k) in v else 1.0) for k in PREFILL_PARTS}
        return base.model_copy(update={"prefill": pre, "prefill_uncertainty": v["uncertainty"],
                                       "source": f"{base.source}; vLLM prefill: {v['source']}"})


class Estimate(BaseModel):
    value: float
    low: float
    high: float
    uncertainty: float   # relative: the true value is expected within value / (1+u) .. value * (1+u)

    @classmethod
    def of(cls, value: float, u: float) -> Estimate:
        return cls(value=round(value, 2), low=round(value / (1 + u), 2), high=round(value * (1 + u), 2),
                   uncertainty=round(u, 3))


class Speed(BaseModel):
    prefill_tok_s: Estimate
    decode_tok_s: Estimate
    ttft_ms: Estimate
    decode_tok_s_concurrent: Estimate    # all streams together
    concurrency: int
    prompt_tokens: int
    context: int
    decode_split: dict[str, float]       # share of one token's time: vram, ram, overhead
    prefill_split: dict[str, float]      # share of prefill time, by PREFILL_PARTS
    speculative_speedup: float = 1.0
    calibration: str
    notes: list[str] = []


# ---- the parts, at peak ----------------------------------------------------------------------------

def _gpus(plan: Plan, rig: Rig):
    return list(zip(rig.gpus, [d for d in plan.devices if d.kind == "gpu"], strict=False))


def _cpu(plan: Plan):
    return next((d for d in plan.devices if d.kind == "cpu"), None)


def cpu_peak_gbs(rig: Rig) -> float:
    """A CPU decodes at the lower of its RAM bandwidth and what its cores can dot-multiply."""
    return min(rig.ram_bandwidth_gbs, rig.cores * constants()["cpu_core_gbs"])


def _kv_per_token(plan: Plan, spec: ModelSpec, dev) -> float:
    """KV bytes one sequence reads per token of context on this device."""
    if plan.engine == "vllm":
        full = sum(1 for c in spec.layout if c in "A*")
        kv_heads = max(1, spec.kv_heads // plan.tensor_parallel)
        elem = 1 if "fp8" in " ".join(plan.command) else 2
        return 2 * kv_heads * spec.head_dim * elem * full if dev.kind == "gpu" else 0.0
    return dev.kv_cache_bytes / plan.kv_cache_tokens if plan.kv_cache_tokens else 0.0


def _state_per_token(plan: Plan, spec: ModelSpec, dev) -> float:
    """Recurrent state read and written once per token per sequence."""
    if plan.engine == "vllm":
        return 2 * recurrent_state_bytes_per_seq(spec) / plan.tensor_parallel if dev.kind == "gpu" else 0.0
    return 2 * dev.recurrent_bytes / max(1, plan.parallel)


def _routed_share_read(plan: Plan, spec: ModelSpec, dev, n: int) -> float:
    """Extra expert bytes n streams read beyond one: each stream picks its own top-k experts."""
    if not spec.moe or n <= 1:
        return 0.0
    routed = plan.placement.get("routed_experts", {}).get(dev.name, 0)
    share = spec.moe.top_k / spec.moe.experts
    touched = 1 - (1 - share) ** n
    return routed * (touched - share)


def _attention_flops(spec: ModelSpec, tokens: int, start: int) -> float:
    """QK^T and AV of `tokens` new tokens after `start` cached ones: 4 FLOPs per head dim per key."""
    n_attn = _count_codes(spec.layout, _ATTENTION)
    return 4.0 * spec.heads * spec.head_dim * n_attn * tokens * (start + tokens / 2)


def graph_nodes(spec: ModelSpec) -> int:
    """ggml graph nodes of one token through every layer, from llama.cpp's own counts per layer kind (catalog
    speed.yaml `graph_nodes`): each node is at least one kernel, so per-token overhead follows the node count,
    not the layer count (a Gated DeltaNet layer runs about twice the ops of an attention layer)."""
    return _graph_nodes(tuple(catalog.speed()["graph_nodes"].items()), spec.layout, bool(spec.moe),
                        bool(spec.moe and spec.moe.shared_ffn), spec.qk_norm, spec.attn_output_gate)


_ATTENTION = frozenset(ATTENTION_CODES)


@functools.lru_cache(maxsize=256)
def _count_codes(layout: str, codes: frozenset[str]) -> int:
    return sum(1 for c in layout if c in codes)


@functools.lru_cache(maxsize=256)
def _graph_nodes(counts: tuple[tuple[str, int], ...], layout: str, moe: bool, shared_expert: bool, qk_norm: bool,
                 output_gate: bool) -> int:
    """graph_nodes of a shape, kept: every turn of every placement a search scores asks for it."""
    n = dict(counts)
    ffn = n["moe"] + (n["shared_expert"] if shared_expert else 0) if moe else n["dense_ffn"]
    attn = n["attention"] + (n["qk_norm"] if qk_norm else 0) + (n["output_gate"] if output_gate else 0)
    mixer = {"L": n["linear_attention"], "M": n["mamba"], "E": 0, "-": 0}
    total = n["model"]
    for code in layout:
        if code in ("E", "-"):
            total += ffn if code == "E" else n["dense_ffn"]
        elif code in ("*",):
            total += attn
        else:
            total += mixer.get(code, attn) + ffn
    return total


def _overhead_per_token(plan: Plan, spec: ModelSpec, rig: Rig) -> float:
    c = constants()
    if not rig.gpus:
        return spec.layers * c["cpu_layer_us"] * 1e-6
    t = graph_nodes(spec) * c["gpu_node_us"] + plan.device_switches * c["switch_us"]
    t += plan.device_switches / 2 * c["cpu_layer_us"]      # a CPU part per hand-over pair
    if plan.tensor_parallel > 1:
        t += 2 * spec.layers * c["allreduce_us"]           # attention and FFN outputs are all-reduced
    return t * 1e-6


def decode_parts(plan: Plan, spec: ModelSpec, rig: Rig, context: int, n: int = 1) -> tuple[dict, dict]:
    """(memory parts, compute parts) in seconds at peak for one decode step of n streams."""
    mem = dict.fromkeys(DECODE_PARTS, 0.0)
    comp = {"gpu_compute": 0.0, "gpu_experts": 0.0, "cpu_compute": 0.0}
    attn = _attention_flops(spec, 1, context) * n
    gpus = _gpus(plan, rig)
    cpu = _cpu(plan)
    # a decoded token is a batch of one (below ggml-cuda's op offload size), so the attention of the layers whose
    # KV cache is in RAM runs on the CPU, in ggml-cpu's flash attention (the rig's cpu_attn_gflops), not on a GPU
    cpu_attn = attn * cpu.kv_cache_bytes / plan.kv_cache_bytes if (gpus and cpu is not None and
                                                                    plan.kv_cache_bytes) else 0.0
    attn -= cpu_attn
    vram, dense, experts = [], [], []
    for g, d in gpus:
        b = d.read_bytes_per_token + _routed_share_read(plan, spec, d, n)
        b += n * (_kv_per_token(plan, spec, d) * context + _state_per_token(plan, spec, d))
        vram.append(b / (g.stream_gbs * 1e9))
        peak = (g.fp16_tflops if plan.engine == "vllm" else g.mmq_tops) * 1e12
        dense.append((2 * (d.active_params - d.expert_params) * n + attn / len(gpus)) / peak)
        experts.append(2 * d.expert_params * n / peak)
    if gpus:
        # tensor parallel GPUs work at once; a layer split one after another
        together = max if plan.tensor_parallel > 1 else sum
        mem["vram"] = together(vram)
        comp["gpu_compute"], comp["gpu_experts"] = together(dense), together(experts)
    if cpu is not None and (cpu.read_bytes_per_token or not rig.gpus):
        b = cpu.read_bytes_per_token + _routed_share_read(plan, spec, cpu, n)
        b += n * (_kv_per_token(plan, spec, cpu) * context + _state_per_token(plan, spec, cpu))
        mem["ram"] += b / (cpu_peak_gbs(rig) * 1e9)
        flops = 2 * cpu.active_params * n + (0 if rig.gpus else attn)
        comp["cpu_compute"] += flops / (rig.cores * constants()["cpu_core_gflops"] * 1e9)
        comp["cpu_compute"] += cpu_attn / (rig.cores * (rig.cpu_attn_gflops or constants()["cpu_attn_gflops"]) * 1e9)
    mem["overhead"] = _overhead_per_token(plan, spec, rig)
    return mem, comp


def prefill_parts(plan: Plan, spec: ModelSpec, rig: Rig, tokens: int, cached: int = 0) -> dict:
    """Seconds at peak to process `tokens` new prompt tokens after `cached` ones already in the cache."""
    if plan.engine == "vllm" and rig.gpus:
        return _vllm_prefill_parts(plan, spec, rig, tokens, cached)
    return _llama_prefill_parts(plan, spec, rig, tokens, cached)


def _skew(spec: ModelSpec) -> float:
    return routing.default_skew() if spec.router_skew is None else spec.router_skew


def _padded_expert_flops(spec: ModelSpec, routed_params: int, batch: float, batches: int, tile: int) -> float:
    """FLOPs of the grouped expert matmuls of `batches` batches of `batch` tokens each, counted on whole tiles:
    every used expert runs ceil(its tokens / tile) tiles of `tile` token columns, padding included."""
    if not spec.moe or not routed_params:
        return 0.0
    sp = routing.spread(spec.moe.experts, spec.moe.top_k, max(1, round(batch)), _skew(spec), tile)
    return 2.0 * routed_params / spec.moe.experts * sp.tile_loads * tile * batches


def _scan_work(spec: ModelSpec, tokens: int) -> float:
    """FLOPs of the recurrent layers' state updates (Gated DeltaNet, Mamba2): ~8 per state element per token."""
    return 8.0 * (_gdn_state(spec) + _mamba_state(spec)) * tokens


def _gdn_state(spec: ModelSpec) -> int:
    la = spec.linear
    return spec.layout.count("L") * la.v_heads * la.k_dim * la.v_dim if la else 0


def _mamba_state(spec: ModelSpec) -> int:
    m = spec.mamba
    return spec.layout.count("M") * m.heads * m.head_dim * m.state if m else 0


def _llama_scan_seconds(spec: ModelSpec, g, tokens: int) -> float:
    """Seconds at peak of llama.cpp's CUDA scans. Its Gated DeltaNet kernel (ggml-cuda gated_delta_net.cu)
    runs one thread block per value head and sequence, each looping over the tokens, so a prompt keeps only
    `v_heads` SMs busy; Mamba2's scan is counted on the whole GPU."""
    gdn = 8.0 * _gdn_state(spec) * tokens
    mamba = 8.0 * _mamba_state(spec) * tokens
    blocks = spec.linear.v_heads if spec.linear else 0
    return gdn / (g.fp32_tflops_on(blocks) * 1e12) + mamba / (g.cuda_fp32_tflops * 1e12)


def _dense_params(d) -> int:
    """Parameters a prompt token multiplies outside the routed experts; the output head runs for the last
    token only (llama-server and llama-bench ask for one set of logits per prompt)."""
    return max(0, d.active_params - d.expert_params - d.head_params)


def _llama_prefill_parts(plan: Plan, spec: ModelSpec, rig: Rig, tokens: int, cached: int) -> dict:
    c = constants()
    parts = dict.fromkeys(PREFILL_PARTS, 0.0)
    n_ub = max(1, math.ceil(tokens / max(1, plan.ubatch)))
    per_ub = tokens / n_ub
    tile = c["mmq_tile"]
    attn = _attention_flops(spec, tokens, cached)
    cpu = _cpu(plan)
    gpus = _gpus(plan, rig)
    if not gpus:
        flops = 2 * (cpu.active_params - cpu.head_params) * tokens + attn + _scan_work(spec, tokens)
        parts["cpu_compute"] = flops / (rig.cores * c["cpu_core_gflops"] * 1e9)
        parts["overhead"] = n_ub * spec.layers * c["cpu_layer_us"] * 1e-6
        return parts
    # the GPUs of a layer split run one after another, so their times add up
    for g, d in gpus:
        mma = g.mmq_tops * 1e12
        parts["gpu_compute"] += 2 * _dense_params(d) * tokens / mma
        parts["gpu_experts"] += _padded_expert_flops(spec, d.routed_params, per_ub, n_ub, tile) / mma
    g0 = gpus[0][0]
    parts["attention"] = attn / (g0.fa_tflops * 1e12)
    parts["scan"] = _llama_scan_seconds(spec, g0, tokens)
    if cpu is not None and cpu.active_params:
        if plan.op_offload and per_ub >= c["op_offload_min_batch"] and plan.offload_bytes:
            # ggml-backend op offload: the GPU runs the CPU-held layers, copying their weights in once per
            # u-batch, and of a routed expert tensor only the experts the u-batch uses
            mma = g0.mmq_tops * 1e12
            parts["gpu_compute"] += 2 * _dense_params(cpu) * tokens / mma
            parts["gpu_experts"] += _padded_expert_flops(spec, cpu.routed_params, per_ub, n_ub, tile) / mma
            used = 1.0
            if spec.moe:
                used = routing.spread(spec.moe.experts, spec.moe.top_k, round(per_ub), _skew(spec)).used_fraction
            dense_b = plan.offload_bytes - plan.offload_expert_bytes
            if plan.host_pinned:
                parts["pcie"] = n_ub * (dense_b + plan.offload_expert_bytes * used) / (rig.link_gbs * 1e9)
            else:
                # from pageable memory the rate depends on the copy's size: ggml-backend.cpp copies an expert
                # tensor one run of consecutive used experts at a time (about 1 / (1 - used) experts, a few MiB),
                # other weights whole (tens to hundreds of MiB)
                parts["pcie"] = n_ub * (dense_b / (rig.pageable_gbs * 1e9)
                                        + plan.offload_expert_bytes * used / (rig.pageable_small_gbs * 1e9))
            if cpu.kv_cache_bytes and plan.kv_cache_tokens:
                # the flash attention of a CPU layer joins the GPU split around it (ggml-backend.cpp gives
                # FLASH_ATTN_EXT no backend from its inputs), so each u-batch copies that layer's KV cells in use
                # (a plain, pageable CPU buffer) to the GPU: on average the cached tokens and half the new ones
                cells = min(plan.kv_cache_tokens, cached + tokens / 2 + per_ub / 2)
                parts["pcie"] += n_ub * cells * cpu.kv_cache_bytes / plan.kv_cache_tokens / (rig.pageable_gbs * 1e9)
        else:
            parts["cpu_compute"] = 2 * _dense_params(cpu) * tokens / (rig.cores * c["cpu_core_gflops"] * 1e9)
            parts["cpu_compute"] += 2 * cpu.expert_params * tokens / (rig.cores * c["cpu_core_gflops"] * 1e9)
    parts["overhead"] = n_ub * (graph_nodes(spec) * c["gpu_node_us"] + plan.device_switches * c["switch_us"]) * 1e-6
    return parts


def _vllm_prefill_parts(plan: Plan, spec: ModelSpec, rig: Rig, tokens: int, cached: int) -> dict:
    """vLLM: chunked prefill of at most --max-num-batched-tokens per step, compute-bound fp16 (or fp8)
    tensor-core GEMMs (Marlin W4A16 for AWQ/GPTQ/AutoRound), fused-MoE tiles, and two all-reduces per
    layer over the link when tensor parallel."""
    v = catalog.speed()["vllm"]
    parts = dict.fromkeys(PREFILL_PARTS, 0.0)
    tp = max(1, plan.tensor_parallel)
    chunk = max(1, plan.ubatch)
    n_chunks = max(1, math.ceil(tokens / chunk))
    per_chunk = tokens / n_chunks
    g, d = _gpus(plan, rig)[0]
    peak = g.fp16_tflops * 1e12 * (2 if (g.fp8 and "fp8" in plan.quant.lower()) else 1)
    peak *= vllm_terms()["prefill_eff"] / v["gpu_flops_eff"]   # fitted share of peak, in the catalog's units
    parts["gpu_compute"] = 2 * _dense_params(d) * tokens / peak
    parts["gpu_experts"] = _padded_expert_flops(spec, d.routed_params, per_chunk, n_chunks, v["moe_tile"]) / peak
    parts["attention"] = _attention_flops(spec, tokens, cached) / (tp * g.fp16_tflops * 1e12)
    # chunked Gated DeltaNet kernels (flash-linear-attention) turn the scan into small matmuls
    parts["scan"] = _scan_work(spec, tokens) / (tp * g.fp16_tflops * 1e12)
    per_chunk_s = v["step_ms"] * 1e-3
    if tp > 1:
        # a ring all-reduce of the chunk's activations moves 2(tp-1)/tp of them over the GPU-to-GPU path
        # (NVLink, PCIe peer copies, or PCIe twice through host memory: hardware.Rig.collective_gbs)
        ring = 2 * (tp - 1) / tp * per_chunk * spec.hidden * 2 / (rig.collective_gbs * 1e9)
        t = vllm_terms()
        ar = t["ar_fast_us"] if _vllm_fast_allreduce(plan, rig) else t["ar_slow_us"]
        per_chunk_s += 2 * spec.layers * (ar * 1e-6 + ring)
    parts["overhead"] = n_chunks * per_chunk_s
    return parts


# ---- vLLM's own time terms ---------------------------------------------------------------------------
# Fitted on the `fit` part of the published set by benchmarks/speed_prediction.py (never on `heldout`);
# the catalog speed.yaml `vllm.terms` gives the starting points when the fitted file is missing.
VLLM_FIT = Path(__file__).parents[1] / "catalog" / "data" / "vllm_fit.json"
VLLM_TERMS = ("decode_bw_eff", "graph_step_ms", "eager_layer_us", "ar_fast_us", "ar_slow_us", "prefill_eff",
              "mtp_acceptance")
_vllm_override: dict | None = None


def vllm_terms() -> dict[str, float]:
    """The vLLM terms in use: a fit in progress (set_vllm_terms), the fitted file, or the catalog defaults."""
    if _vllm_override is not None:
        return _vllm_override
    base = dict(catalog.speed()["vllm"]["terms"])
    if VLLM_FIT.exists():
        import json
        base.update(json.loads(VLLM_FIT.read_text())["terms"])
    return base


def set_vllm_terms(terms: dict | None) -> None:
    """Use these terms until reset with None (the benchmark's fit)."""
    global _vllm_override
    _vllm_override = terms


def _vllm_fast_allreduce(plan: Plan, rig: Rig) -> bool:
    """vLLM's custom all-reduce needs peer access (NVLink or PCIe P2P); without it, or when disabled, NCCL
    stages the reduce through host memory (vllm/distributed/device_communicators/custom_all_reduce.py checks
    peer access and turns itself off otherwise)."""
    if "--disable-custom-all-reduce" in plan.command:
        return False
    return rig.collective_gbs >= 0.9 * rig.link_gbs


def vllm_decode_seconds(plan: Plan, spec: ModelSpec, rig: Rig, context: int, n: int = 1) -> float:
    """One vLLM decode step: weights, KV and recurrent state read at a fitted share of the memory bandwidth;
    the step's fixed cost (scheduler, sampling, one CUDA graph replay: vLLM captures the decode step for batch
    sizes up to its capture sizes) or, with --enforce-eager, one launch cost per layer; two all-reduces per
    layer when tensor parallel, cheap with custom all-reduce over P2P/NVLink, dear through the host."""
    t = vllm_terms()
    mem, comp = decode_parts(plan, spec, rig, context, n)
    gpu = comp["gpu_compute"] + comp["gpu_experts"]
    s = max(mem["vram"] / t["decode_bw_eff"], gpu / 0.5) + t["graph_step_ms"] * 1e-3
    if "--enforce-eager" in plan.command:
        s += spec.layers * t["eager_layer_us"] * 1e-6
    if plan.tensor_parallel > 1:
        ar = t["ar_fast_us"] if _vllm_fast_allreduce(plan, rig) else t["ar_slow_us"]
        s += 2 * spec.layers * ar * 1e-6
    return s


# ---- predictions ---------------------------------------------------------------------------------

def _decode_time(mem: dict, comp: dict, coef: Coefficients) -> float:
    d, p = coef.decode, coef.prefill
    gpu_compute = comp["gpu_compute"] * p["gpu_compute"] + comp["gpu_experts"] * p["gpu_experts"]
    return (max(mem["vram"] * d["vram"], gpu_compute)
            + max(mem["ram"] * d["ram"], comp["cpu_compute"] * p["cpu_compute"])
            + mem["overhead"] * d["overhead"])


def decode_seconds(plan: Plan, spec: ModelSpec, rig: Rig, coef: Coefficients, context: int, n: int = 1) -> float:
    if plan.engine == "vllm" and rig.gpus:
        return vllm_decode_seconds(plan, spec, rig, context, n)
    return _decode_time(*decode_parts(plan, spec, rig, context, n), coef)


def _scaled(parts: dict, coef: dict, keys: tuple[str, ...]) -> dict[str, float]:
    return {k: parts[k] * coef[k] for k in keys}


def prefill_seconds(plan: Plan, spec: ModelSpec, rig: Rig, coef: Coefficients, tokens: int, cached: int = 0) -> float:
    return sum(_scaled(prefill_parts(plan, spec, rig, tokens, cached), coef.prefill, PREFILL_PARTS).values())


def speculative_speedup(plan: Plan, spec: ModelSpec) -> float:
    """Expected decode speed-up of MTP / draft speculation: accepted tokens per step over the step's cost.

    With per-token acceptance a and n drafted tokens a step yields (1 - a^(n+1)) / (1 - a) tokens
    (Leviathan et al. 2023, eq. 1); the step costs one verify pass plus n passes of the one-layer MTP
    head and the output matmul.
    """
    n = plan.speculative_tokens
    if n <= 0:
        return 1.0
    a = vllm_terms()["mtp_acceptance"] if plan.engine == "vllm" else constants()["mtp_acceptance"]
    tokens = (1 - a ** (n + 1)) / (1 - a)
    out = plan.weights_by_group.get("output") or plan.weights_by_group.get("embeddings", 0)
    read = sum(d.read_bytes_per_token for d in plan.devices) or 1
    layer = max(0, read - out) / max(1, spec.layers)
    draft_share = min(1.0, (out + layer) / read)
    verify_extra = 0.05 * n          # verifying n+1 tokens at once costs a little more than one
    return tokens / (1 + verify_extra + n * draft_share)


def predict(plan: Plan, spec: ModelSpec, rig: Rig, prompt_tokens: int = 128, context: int | None = None,
            concurrency: int = 1, calibration: Calibration | None = None) -> Speed:
    """Prefill, decode, TTFT and concurrent decode of one placement, each with its uncertainty."""
    coef = (calibration or load_calibration()).for_plan(plan, rig)
    ctx = max(prompt_tokens, context or prompt_tokens)
    cached = ctx - prompt_tokens
    p_scaled = _scaled(prefill_parts(plan, spec, rig, prompt_tokens, cached), coef.prefill, PREFILL_PARTS)
    pre_s = sum(p_scaled.values())
    spd = speculative_speedup(plan, spec)
    mem, comp = decode_parts(plan, spec, rig, ctx)
    d_scaled = _scaled(mem, coef.decode, DECODE_PARTS)
    tok_s = decode_seconds(plan, spec, rig, coef, ctx)
    slots = max(1, plan.parallel if plan.engine == "llama.cpp" else plan.parallel or concurrency)
    n = max(1, min(concurrency, slots))
    step_n = decode_seconds(plan, spec, rig, coef, ctx, n)
    ttft = pre_s + tok_s + constants()["request_ms"] / 1000
    notes = []
    if concurrency > slots:
        notes.append(f"{concurrency} streams but {slots} slots: the rest wait in the queue")
    if spd > 1:
        notes.append(f"speculative decoding: x{spd:.2f} at an assumed acceptance of {constants()['mtp_acceptance']}")
    if spec.moe and rig.gpus:
        batch = min(plan.ubatch, prompt_tokens)
        sp = routing.spread(spec.moe.experts, spec.moe.top_k, batch, _skew(spec))
        notes.append(f"a batch of {batch} prompt tokens uses {sp.used_fraction:.0%} of each layer's experts, "
                     f"~{sp.tokens_per_used_expert:.0f} tokens each (router skew {sp.skew:g})")
    ud, up = coef.decode_uncertainty, coef.prefill_uncertainty
    return Speed(
        prefill_tok_s=Estimate.of(prompt_tokens / pre_s, up),
        decode_tok_s=Estimate.of(spd / tok_s, ud),
        ttft_ms=Estimate.of(ttft * 1000, max(ud, up)),
        decode_tok_s_concurrent=Estimate.of(spd * n / step_n, max(ud, 0.2) if n > 1 else ud),
        concurrency=concurrency, prompt_tokens=prompt_tokens, context=ctx,
        decode_split=_shares(d_scaled), prefill_split=_shares(p_scaled), speculative_speedup=round(spd, 3),
        calibration=coef.source, notes=notes,
    )


def _shares(parts: dict[str, float]) -> dict[str, float]:
    total = sum(parts.values()) or 1.0
    return {k: round(v / total, 3) for k, v in parts.items()}


# ---- the agent turn ------------------------------------------------------------------------------

class UnknownAgent(RigbenchError):
    """An agent profile name the catalog does not have."""


class AgentProfile(BaseModel):
    """What an agent sends the model over one task (catalog agents.yaml: measured through the recording gateway,
    or assumed where `measured` is empty)."""
    name: str = "builtin"
    turns: int
    first_prompt: int
    turn_new_tokens: int
    output_tokens: int
    min_context: int = 8192
    version: str | None = None
    context_setting: str | None = None
    measured: dict | None = None
    env: dict[str, str] = {}           # what the agent's command gets besides the endpoint ({n_ctx}, {model})
    command: str | None = None         # the --agent-cmd `eval --agent NAME` runs ({max_steps})
    install: str | None = None         # how to install the agent (said when it is missing)
    prefix_cache: bool = True
    source: str = ""

    @property
    def suggested_context(self) -> int:
        """A server context for this agent: the power of two that holds its first request, a reply and room to
        work (min_context)."""
        need = max(self.first_prompt + self.output_tokens, self.min_context)
        return 1 << (need - 1).bit_length()

    @classmethod
    def named(cls, name: str | None = None, prefix_cache: bool = True) -> AgentProfile:
        """The catalog profile `name` (the catalog's default agent when None)."""
        data = catalog.agents()
        name = name or data["default"]
        if name not in data["profiles"]:
            raise UnknownAgent(f"no agent profile {name!r}; known: {', '.join(sorted(data['profiles']))}")
        fields = {k: v for k, v in data["profiles"][name].items() if k in cls.model_fields}
        return cls(**fields, name=name, prefix_cache=prefix_cache)

    @classmethod
    def typical(cls, prefix_cache: bool = True) -> AgentProfile:
        return cls.named(None, prefix_cache)

    @staticmethod
    def detect(command: str) -> str | None:
        """The profile whose `detect` patterns match an --agent-cmd command line, or None."""
        for name, p in catalog.agents()["profiles"].items():
            if any(re.search(rx, command) for rx in p.get("detect") or []):
                return name
        return None


class TurnTime(BaseModel):
    turn: int
    context: int
    prefill_tokens: int
    prefill_s: float
    decode_s: float

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s


class AgentEstimate(BaseModel):
    profile: AgentProfile
    turns: list[TurnTime]
    total_s: Estimate
    prefill_share: float
    first_turn_s: float
    last_turn_s: float


def agent_turn_seconds(plan: Plan, spec: ModelSpec, rig: Rig, coef: Coefficients, new_tokens: int, context: int,
                       output: int, state: ServerState | None | EllipsisType = ...) -> tuple[float, float]:
    """(prefill, decode) seconds of one turn: new tokens at the end of `context`, then `output` tokens. On
    llama-server a hybrid model's prompt also writes its context checkpoints to host memory (`ServerState`: a
    caller predicting many turns of one placement passes `server_state(plan, spec, rig)` once)."""
    pre = prefill_seconds(plan, spec, rig, coef, new_tokens, context - new_tokens)
    if state is ...:
        state = server_state(plan, spec, rig)
    if state is not None and state.checkpoints:
        pre += state.checkpoint_s(len(state.new_checkpoints(context - new_tokens, context)))
    mid = context + output // 2
    dec = output * decode_seconds(plan, spec, rig, coef, mid) / speculative_speedup(plan, spec)
    return pre + constants()["request_ms"] / 1000, dec


def agent_task(plan: Plan, spec: ModelSpec, rig: Rig, profile: AgentProfile | None = None,
               calibration: Calibration | None = None) -> AgentEstimate:
    """Turn k prefills the tokens new since turn k-1 (all of them without a prefix cache), then decodes."""
    profile = profile or AgentProfile.typical()
    coef = (calibration or load_calibration()).for_plan(plan, rig)
    turns, ctx, state = [], 0, server_state(plan, spec, rig)
    for k in range(1, profile.turns + 1):
        new = profile.first_prompt if k == 1 else profile.turn_new_tokens + profile.output_tokens
        ctx += new
        prefill_tokens = new if profile.prefix_cache else ctx
        pre, dec = agent_turn_seconds(plan, spec, rig, coef, prefill_tokens, ctx, profile.output_tokens, state)
        turns.append(TurnTime(turn=k, context=ctx, prefill_tokens=prefill_tokens, prefill_s=round(pre, 3),
                              decode_s=round(dec, 3)))
    total = sum(t.total_s for t in turns)
    pre_total = sum(t.prefill_s for t in turns)
    u = max(coef.decode_uncertainty, coef.prefill_uncertainty)
    return AgentEstimate(profile=profile, turns=turns, total_s=Estimate.of(total, u),
                         prefill_share=round(pre_total / total, 3) if total else 0.0,
                         first_turn_s=turns[0].total_s, last_turn_s=turns[-1].total_s)


# ---- calibration ---------------------------------------------------------------------------------

class Measurement(BaseModel):
    """One measured configuration: a model under llama-server/vLLM flags on a rig, and what it did."""

    name: str
    rig: str
    vram_gib: float | None = None        # a VRAM budget held by a ballast allocation
    model: str
    quant: str | None = None
    args: list[str]
    prompt_tokens: int | None = None
    prefill_tok_s: float | None = None
    decode_context: int | None = None
    decode_tok_s: float | None = None
    prefill_depth: int = 0               # tokens already in the cache when the prompt was processed
    router_skew: float | None = None     # a synthetic MoE's router skew (None: the model's default)
    layers: int | None = None            # a scaled-down synthetic twin (rigbench synth --layers / --experts)
    experts: int | None = None
    view: str = "client"                 # client (rigbench's TTFT) | server (its own timings) | llama-bench
    source: str = ""


def _spec_plan_rig(m: Measurement):
    from rigbench import hardware
    from rigbench.engines.options import parse_command
    from rigbench.model import load, scale_down
    from rigbench.plan.memory import plan as make_plan

    rig = hardware.load(m.rig).with_vram(m.vram_gib)
    spec = load(m.model)
    if m.layers or m.experts:
        spec = scale_down(spec, m.layers, m.experts)
    if m.router_skew is not None:
        spec = spec.model_copy(update={"router_skew": m.router_skew})
    opts = parse_command(["llama-server", "-m", m.model, *m.args])
    return spec, make_plan(spec, rig, opts, m.quant), rig


def _fit(rows: list[tuple[dict, float]], defaults: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    """Coefficients minimising the squared relative error, pulled gently toward the defaults."""
    active = [k for k in keys if any(r[k] > 0 for r, _ in rows)]
    if not active:
        return dict(defaults)
    a, b = [], []
    for parts, y in rows:
        a.append([parts[k] / y for k in active])
        b.append(1.0)
    ridge = 0.05
    for i, k in enumerate(active):
        row = [0.0] * len(active)
        row[i] = ridge / defaults[k]
        a.append(row)
        b.append(ridge)
    sol, *_ = np.linalg.lstsq(np.array(a), np.array(b), rcond=None)
    out = dict(defaults)
    for k, v in zip(active, sol, strict=True):
        out[k] = float(min(100.0, max(1.0, v))) if k != "overhead" else float(min(20.0, max(0.2, v)))
    return out


def _spread(errors: list[float]) -> float:
    """The relative uncertainty: the 80th percentile of |measured/predicted - 1|, at least the floor."""
    if not errors:
        return constants()["uncertainty"]
    return max(constants()["min_uncertainty"], float(np.percentile(np.abs(errors), 80)))


def fit_class(points: list[tuple[Measurement, ModelSpec, Plan, Rig]], name: str) -> Coefficients:
    base = Coefficients.defaults()
    dec_rows, pre_rows = [], []
    for m, spec, p, rig in points:
        if m.decode_tok_s:
            mem, _ = decode_parts(p, spec, rig, m.decode_context or 1)
            dec_rows.append((mem, 1 / m.decode_tok_s))
        if m.prefill_tok_s and m.prompt_tokens:
            pre_rows.append((prefill_parts(p, spec, rig, m.prompt_tokens, m.prefill_depth),
                             m.prompt_tokens / m.prefill_tok_s))
    dec = _fit(dec_rows, base.decode, DECODE_PARTS)
    pre = _fit(pre_rows, base.prefill, PREFILL_PARTS)
    dec_err = [sum(_scaled(r, dec, DECODE_PARTS).values()) / y - 1 for r, y in dec_rows]
    pre_err = [sum(_scaled(r, pre, PREFILL_PARTS).values()) / y - 1 for r, y in pre_rows]
    return Coefficients(decode=dec, prefill=pre, decode_uncertainty=_spread(dec_err),
                        prefill_uncertainty=_spread(pre_err), points=len(points),
                        source=f"calibrated on {len(points)} measured runs ({name})")


def calibrate(measurements: list[Measurement]) -> Calibration:
    """Fit coefficients per rig, and per GPU architecture from every rig with that GPU."""
    from rigbench.errors import RigbenchError

    resolved = []
    for m in measurements:
        try:
            spec, p, rig = _spec_plan_rig(m)
        except RigbenchError:
            continue
        resolved.append((m, spec, p, rig))
    classes: dict[str, Coefficients] = {}
    for key in sorted({m.rig for m, *_ in resolved}):
        classes[key] = fit_class([x for x in resolved if x[0].rig == key], key)
    cpu_points = [x for x in resolved if not x[3].gpus]
    if cpu_points:
        classes["cpu"] = fit_class(cpu_points, "CPU-only rigs")
    for arch in sorted({r.gpus[0].arch for *_, r in resolved if r.gpus}):
        pts = [x for x in resolved if x[3].gpus and x[3].gpus[0].arch == arch]
        classes[f"gpu:{arch}"] = fit_class(pts, f"gpu:{arch}")
    return Calibration(classes=classes)


def read_measurements(folder: Path) -> list[Measurement]:
    """Every `*.calib.jsonl` line in a results folder."""
    out = []
    for f in sorted(folder.glob("*.calib.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                out.append(Measurement.model_validate_json(line))
    return out


def calibration_path() -> Path:
    import os
    return Path(os.environ.get("RIGBENCH_CALIBRATION") or Path.home() / ".config" / "rigbench" / "calibration.json")


def load_calibration() -> Calibration:
    """The user's calibration (`rigbench calibrate`) if there is one, else the one shipped with rigbench."""
    user = calibration_path()
    if user.is_file():
        return Calibration.model_validate_json(user.read_text())
    shipped = Path(str(catalog.DATA / "calibration.json"))
    return Calibration.model_validate_json(shipped.read_text()) if shipped.is_file() else Calibration()


# ---- what llama-server copies to host memory around a request ----------------------------------------------------

class ServerState(BaseModel):
    """llama-server's host-memory copies of a slot's state (catalog engines.yaml, from tools/server): a hybrid
    model's context checkpoints (two per request) and the RAM prompt cache's save of a slot a new prompt
    displaces. Seconds come from the bytes and the rig's fresh-memory write rate (`Rig.state_copy_gbs`)."""

    recurrent_bytes: int              # one checkpoint: the recurrent state of one sequence
    kv_bytes_per_token: float         # the KV cache of one token, all layers
    ubatch: int
    lag: int                          # checkpoints are taken this many tokens (and lag + ubatch) before the end
    checkpoints: bool                 # hybrid model with --ctx-checkpoints > 0
    max_checkpoints: int
    prompt_cache: bool                # --cache-ram not 0
    similarity: float
    keep: float
    copy_gbs: float
    restore_gbs: float                # a checkpoint back into the model's memory

    def checkpoint_s(self, n: int = 1) -> float:
        return n * self.recurrent_bytes / (self.copy_gbs * 1e9)

    def restore_s(self) -> float:
        return self.recurrent_bytes / (self.restore_gbs * 1e9)

    def saves(self, slot_tokens: int, shared: int, prompt: int) -> bool:
        """Does a prompt sharing `shared` tokens with a slot of `slot_tokens` make the server save the slot?"""
        if not self.prompt_cache or slot_tokens <= 0:
            return False
        lcp = min(shared, slot_tokens)
        return lcp / max(1, prompt) <= self.similarity or lcp / slot_tokens < self.keep

    def save_s(self, slot_tokens: int, checkpoints: int) -> float:
        state = self.kv_bytes_per_token * slot_tokens + self.recurrent_bytes * (1 + checkpoints)
        return state / (self.copy_gbs * 1e9)

    def new_checkpoints(self, cached: int, prompt: int) -> list[int]:
        """Positions (n_tokens) of the checkpoints a request creates: before each prompt batch that starts within
        lag + ubatch of the end, once the sequence holds anything (server-context.cpp update_slots)."""
        if not self.checkpoints:
            return []
        early, late = prompt - self.lag - self.ubatch, prompt - self.lag
        if early > cached:          # [cached, early) first, then a checkpoint before [early, late) and [late, end)
            return [early, late]
        head = [cached] if cached > 0 else []     # nothing to checkpoint before the first batch of an empty slot
        return head + [late] if late > cached else head


def _flag(cmd: list[str], names: tuple[str, ...], default: float) -> float:
    for i, a in enumerate(cmd[:-1]):
        if a in names:
            try:
                return float(cmd[i + 1])
            except ValueError:
                return default
    return default


def server_state(plan: Plan, spec: ModelSpec, rig: Rig) -> ServerState | None:
    """llama-server's state copies for this placement; None for another engine."""
    if plan.engine != "llama.cpp":
        return None
    rules = catalog.engines()["llama_cpp"]
    rec = recurrent_state_bytes_per_seq(spec)
    n_ckpt = int(_flag(plan.command, ("--ctx-checkpoints", "-ctxcp"), rules["ctx_checkpoints"]))
    cache = _flag(plan.command, ("--cache-ram", "-cram"), rules["cache_ram_mib"]) != 0
    kv_tok = plan.kv_cache_bytes / plan.kv_cache_tokens if plan.kv_cache_tokens else 0.0
    on_gpu = any(d.kind == "gpu" and d.recurrent_bytes > 0 for d in plan.devices)
    return ServerState(recurrent_bytes=rec, kv_bytes_per_token=kv_tok, ubatch=plan.ubatch,
                       lag=rules["checkpoint_lag_tokens"], checkpoints=rec > 0 and n_ckpt > 0,
                       max_checkpoints=n_ckpt, prompt_cache=cache, similarity=rules["slot_prompt_similarity"],
                       keep=rules["prompt_cache_keep"], copy_gbs=rig.state_copy_gbs or constants()["state_copy_gbs"],
                       restore_gbs=rig.pageable_gbs if on_gpu else rig.ram_bandwidth_gbs)
