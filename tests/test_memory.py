"""The memory planner against numbers derived by hand from the engines' rules."""

import pytest

from rigbench import hardware, model
from rigbench.engines.options import parse_command
from rigbench.errors import EngineOptionError
from rigbench.plan import memory

MiB = 2**20


def llama(cmd: str):
    return parse_command("llama-server -m x.gguf " + cmd)


def test_kv_cache_of_a_dense_model_by_hand(qwen_gguf):
    s = model.load(str(qwen_gguf))
    cpu = hardware.load("cpu")
    p = memory.plan(s, cpu, llama("-c 4096"))
    # 4096 cells x 24 layers x (K + V) x 2 KV heads x 64 dims x 2 bytes (f16) = 48 MiB (llama-server logs 48.00 MiB)
    assert p.kv_cache_bytes == 4096 * 24 * 2 * 2 * 64 * 2 == 48 * MiB
    assert p.weights_bytes == sum(t.nbytes for t in s.tensors)
    q8 = memory.plan(s, cpu, llama("-c 4096 -ctk q8_0 -ctv q8_0"))
    assert q8.kv_cache_bytes == 4096 * 24 * 2 * (128 // 32 * 34)
    # -c is padded up to a multiple of 256 (llama-context.cpp)
    assert memory.plan(s, cpu, llama("-c 4000")).context == 4096
    # output buffer: logits of n_seq_max (4 by default) outputs, f32
    assert p.devices[-1].other_bytes == 151936 * 4 * 4


def test_hybrid_model_kv_and_recurrent_state_by_hand():
    s = model.from_catalog("qwen3.6-35b-a3b")
    p = memory.plan_llamacpp(s, hardware.load("h100"), llama("-c 32768 -np 2"))
    # only the 10 full-attention layers hold KV: 32768 cells x (K + V) x 2 heads x 256 dims x 2 bytes
    assert p.kv_cache_bytes == 10 * 32768 * 2 * 2 * 256 * 2
    # Gated DeltaNet: conv state (4-1) x (2*16*128 + 32*128) + state 128 x 32*128, f32, per sequence
    per_layer = ((4 - 1) * (2 * 16 * 128 + 32 * 128) + 128 * 32 * 128) * 4
    assert p.recurrent_state_bytes == 30 * per_layer * 2


def test_sliding_window_layers_are_capped():
    s = model.from_catalog("gpt-oss-20b")
    p = memory.plan_llamacpp(s, hardware.load("h100"), llama("-c 65536"))
    row = 8 * 64 * 2  # 8 KV heads x 64 dims x f16
    # 12 full layers hold 65536 cells; 12 SWA layers GGML_PAD(min(65536, 128 * 4 seqs + 512 ubatch), 256) = 1024
    assert p.kv_cache_bytes == 12 * 65536 * 2 * row + 12 * 1024 * 2 * row
    full = memory.plan_llamacpp(s, hardware.load("h100"), llama("-c 65536 --swa-full"))
    assert full.kv_cache_bytes == 24 * 65536 * 2 * row


def _gpu(p):
    return next(d for d in p.devices if d.kind == "gpu")


def _cpu(p):
    return next(d for d in p.devices if d.kind == "cpu")


def test_cpu_moe_puts_every_routed_expert_in_ram():
    s = model.from_catalog("qwen3.6-35b-a3b")
    p = memory.plan_llamacpp(s, hardware.load("rtx5080"), llama("-c 8192 -ngl 99 --cpu-moe"), "Q4_K_M")
    experts = p.weights_by_group["routed_experts"]
    embd = p.weights_by_group["embeddings"]
    # token embeddings always stay on the CPU (llama.cpp's input layer)
    assert _cpu(p).weights_bytes == experts + embd
    assert p.placement["routed_experts"] == {"CPU (system RAM)": experts}
    assert _gpu(p).weights_bytes == p.weights_bytes - experts - embd


def test_n_cpu_moe_takes_the_first_layers():
    s = model.from_catalog("qwen3.6-35b-a3b")
    base = memory.plan_llamacpp(s, hardware.load("rtx5080"), llama("-c 8192 -ngl 99"), "Q4_K_M")
    p = memory.plan_llamacpp(s, hardware.load("rtx5080"), llama("-c 8192 -ngl 99 --n-cpu-moe 10"), "Q4_K_M")
    moved = _cpu(p).weights_bytes - _cpu(base).weights_bytes
    rows, _ = memory.weight_table(s, "Q4_K_M", include_mtp=False)
    expect = sum(t.nbytes for t in rows if t.group == "routed_experts" and t.layer < 10)
    assert moved == expect > 0


def test_override_tensor_pattern_and_partial_ngl():
    s = model.from_catalog("qwen3.6-27b")
    rows, _ = memory.weight_table(s, "Q4_K_M", include_mtp=False)
    p = memory.plan_llamacpp(s, hardware.load("rtx4090"), llama(r"-c 8192 -ngl 99 -ot blk\.[0-3]\.ffn_.*=CPU"),
                             "Q4_K_M")
    expect = sum(t.nbytes for t in rows if t.layer is not None and t.layer < 4 and ".ffn_" in t.name)
    embd = p.weights_by_group["embeddings"]
    assert _cpu(p).weights_bytes == expect + embd
    # -ngl 40 of 64 layers: i_gpu_start = 65 - 40 = 25, so layers 0..24 on the CPU and the output on the GPU
    p = memory.plan_llamacpp(s, hardware.load("rtx4090"), llama("-c 8192 -ngl 40"), "Q4_K_M")
    expect = sum(t.nbytes for t in rows if t.layer is not None and t.layer < 25) + embd
    assert _cpu(p).weights_bytes == expect


def test_no_kv_offload_and_two_gpus():
    s = model.from_catalog("qwen3.6-27b")
    p = memory.plan_llamacpp(s, hardware.load("rtx4090"), llama("-c 16384 -ngl 99 --no-kv-offload"), "Q4_K_M")
    assert _gpu(p).kv_cache_bytes == 0 and _cpu(p).kv_cache_bytes == p.kv_cache_bytes > 0
    two = memory.plan_llamacpp(s, hardware.load("2x rtx3090"), llama("-c 16384 -ngl 99"), "Q4_K_M")
    g0, g1 = (d for d in two.devices if d.kind == "gpu")
    # equal cards: the 65 layer slots split 33 / 32 (cumulative split 0.5), so both carry about half
    assert abs(g0.weights_bytes - g1.weights_bytes) < 0.1 * g0.weights_bytes
    assert g0.kv_cache_bytes + g1.kv_cache_bytes == two.kv_cache_bytes


def test_fit_shrinks_context_then_moves_experts():
    s = model.from_catalog("qwen3.6-27b")
    p = memory.plan(s, hardware.load("rtx4090"), llama(""), "Q4_K_M")
    assert p.fits and 4096 <= p.context < 262144
    assert any("context reduced" in n for n in p.notes)
    moe = memory.plan(model.from_catalog("qwen3.6-35b-a3b"), hardware.load("rtx5080"), llama(""), "Q4_K_M")
    assert moe.fits and any("experts of the last" in n for n in moe.notes)
    assert any("exps=CPU" in a for a in moe.command)


def test_does_not_fit_says_by_how_much_and_what_to_change():
    s = model.from_catalog("qwen3.6-27b")
    p = memory.plan(s, hardware.load("rtx4090"), llama("-c 262144 -ngl 99"), "Q4_K_M")
    assert not p.fits and p.shortfall_bytes > 0
    assert "short by" in p.reason and "RTX 4090" in p.reason
    assert p.suggestion and p.suggestion.startswith(("-c", "-ctk", "-ngl"))
    # the suggestion really fits
    ctx = int(p.suggestion.split()[1]) if p.suggestion.startswith("-c") else None
    if ctx:
        assert memory.plan_llamacpp(s, hardware.load("rtx4090"), llama(f"-c {ctx} -ngl 99"), "Q4_K_M").fits


def test_cpu_only_rig_is_planned():
    p = memory.plan(model.from_catalog("qwen3.6-35b-a3b"), hardware.load("cpu"), llama("-c 8192"), "Q4_K_M")
    assert [d.kind for d in p.devices] == ["cpu"] and p.fits  # ~20 GiB of weights in 24 GiB less 2 for the OS
    p = memory.plan(model.from_catalog("qwen3-next-80b-a3b"), hardware.load("cpu"), llama("-c 8192"), "Q4_K_M")
    assert not p.fits and "CPU (system RAM) needs" in p.reason


SETUP_C_35B = (
    "vllm serve /m --port 8007 --tensor-parallel-size 2 --disable-custom-all-reduce --quantization awq_marlin "
    "--max-model-len 262144 --gpu-memory-utilization 0.92 --kv-cache-dtype fp8_e5m2 --max-num-seqs 16 "
    "--max-num-batched-tokens 8192 --enable-prefix-caching --enable-chunked-prefill --mamba-cache-mode align "
    "--trust-remote-code"
)


def test_vllm_hybrid_block_size_by_hand():
    p = memory.plan(model.from_catalog("qwen3.6-35b-a3b"), hardware.load("2x rtx3090"), parse_command(SETUP_C_35B))
    # attention page per token per GPU: K+V x (2 KV heads / TP 2) x 256 x 1 byte (fp8) = 512 bytes
    # GDN state per GPU: conv 3 x (2*2048 + 4096)/2 x 2 bytes + ssm 16 heads x 128 x 128 x 4 bytes
    mamba = 3 * 8192 // 2 * 2 + 16 * 128 * 128 * 4
    assert p.block_size == 16 * -(-mamba // (16 * 512)) == 2096
    # groups: 10 attention layers, 30 GDN layers -> group size 10, 4 groups; concurrency = blocks / per-request
    blocks_per_req = -(-262144 // 2096) + 3 * 2  # attention blocks + 3 GDN groups x 2 (align mode)
    num_blocks = _gpu(p).kv_cache_bytes // (2096 * 512 * 10)
    assert p.max_concurrency == pytest.approx(num_blocks / blocks_per_req, abs=0.01)
    assert p.kv_cache_tokens == num_blocks // 4 * 2096
    assert p.fits


def test_vllm_traps_and_bad_options():
    cmd = SETUP_C_35B.replace("--max-num-batched-tokens 8192 ", "")
    p = memory.plan(model.from_catalog("qwen3.6-35b-a3b"), hardware.load("2x rtx3090"), parse_command(cmd))
    assert not p.fits and "2096" in p.reason and p.suggestion.startswith("--max-num-batched-tokens")
    with pytest.raises(EngineOptionError, match="needs a GPU"):
        memory.plan(model.from_catalog("qwen3.6-27b"), hardware.load("cpu"), parse_command("vllm serve m"))
    with pytest.raises(EngineOptionError, match="has 1 GPU"):
        memory.plan(model.from_catalog("qwen3.6-27b"), hardware.load("rtx4090"),
                    parse_command("vllm serve m --tensor-parallel-size 2"))


def test_vllm_max_model_len_larger_than_kv_cache():
    cmd = "vllm serve m --max-model-len 262144 --gpu-memory-utilization 0.9"
    p = memory.plan(model.from_catalog("qwen2.5-coder-32b"), hardware.load("rtx-a6000"), parse_command(cmd))
    # bf16 32B weights (~61 GiB) do not fit a 48 GB card at all
    assert not p.fits and "exceed" in p.reason
    p = memory.plan(model.from_catalog("qwen2.5-coder-32b"), hardware.load("rtx-a6000"),
                    parse_command("vllm serve m --quantization awq_marlin --max-model-len 1000000"))
    assert not p.fits and "refuses to start" in p.reason and p.suggestion.startswith("--max-model-len")


def test_compute_buffer_against_logged_figures_up_to_ubatch_4096():
    """llama-server's own "compute buffer size" for u-batch 512-4096 (benchmarks/compute_buffer_ub.py) and the
    CUDA0 buffer llama-bench logged on the GPU at -ub 2048 (its n_batch outputs of logits)."""
    import json
    from pathlib import Path

    from rigbench.model import from_catalog

    res = json.loads((Path(__file__).parents[1] / "benchmarks/results/compute_buffer_ub.json").read_text())
    rows = {(r["ubatch"], r["flash_attn"]): r for r in res["rows"]}
    assert (4096, "on") in rows and (4096, "off") in rows
    for r in rows.values():
        assert abs(r["predicted_mib"] / r["logged_mib"] - 1) < 0.05, r
    g = res["gpu_logged"]
    pred = memory.llama_compute_bytes(from_catalog(g["model"]), g["ubatch"], g["n_ctx"], g["flash_attn"],
                                      g["n_outputs"], True)
    assert abs(pred / g["logged_bytes"] - 1) < 0.05
    # the logits and a layer's tensors are never alive together: counting both would be over by more than the tolerance
    spec = from_catalog(g["model"])
    layer_only = memory.llama_compute_bytes(spec, g["ubatch"], g["n_ctx"], True, 1, False)
    assert layer_only + spec.vocab * g["n_outputs"] * 4 > 1.08 * g["logged_bytes"]


def test_cuda_pool_grows_with_the_ubatch_and_a_quantised_kv_cache():
    from rigbench.engines.options import parse_llama_args
    from rigbench.model import from_catalog

    spec = from_catalog("qwen3.6-35b-a3b")
    small = memory.llama_cuda_pool_bytes(spec, 512, 40960, True, "f16", "f16")
    big = memory.llama_cuda_pool_bytes(spec, 4096, 40960, True, "f16", "f16")
    # MMQ's q8_1 copy of every token once per chosen expert: 4096 x 8 x 2048 x 36/32 bytes
    assert big == 4096 * 8 * int(2048 * 36 / 32 + 8) and big == 8 * small
    q8 = memory.llama_cuda_pool_bytes(spec, 512, 40960, True, "q8_0", "q8_0")
    assert q8 == 40960 * spec.kv_heads * spec.head_dim * 2 * 2 > small
    rig = hardware.load("h200").with_vram(16)
    p = memory.plan(spec, rig, parse_llama_args(["-c", "40960", "-ngl", "999", "--n-cpu-moe", "14", "-ub", "4096",
                                                  "-b", "4096"]), "Q4_K_M")
    gpu = p.devices[0]
    assert gpu.other_bytes >= big + memory._llama_rules()["cuda_context_bytes"]
