"""The roofline against hand-derived numbers, calibration, the agent-turn model, tune and advise."""

from __future__ import annotations

import json

import pytest

from rigbench import hardware
from rigbench.engines.options import LlamaCppOptions, parse_command
from rigbench.model import from_catalog
from rigbench.plan import advise, routing, speed, tune
from rigbench.plan.memory import plan, plan_llamacpp

DEFAULTS = speed.Calibration()   # no calibrated classes: catalog defaults only


def _full_gpu(model: str, rig: str = "h100", **kw):
    spec, r = from_catalog(model), hardware.load(rig)
    p = plan_llamacpp(spec, r, LlamaCppOptions(ngl=999, ctx=4096, parallel=1, **kw), "Q4_K_M")
    return spec, r, p


def test_dense_decode_reads_every_weight_once_per_token():
    spec, rig, p = _full_gpu("qwen3.6-27b")
    g = p.weights_by_group
    # by hand: all weights but the embedding matrix (one row of it), the Gated DeltaNet state read and
    # written back, and one token of KV, at the H100's 3350 GB/s
    read = p.weights_bytes - g["embeddings"] + g["embeddings"] / spec.vocab
    read += 2 * p.recurrent_state_bytes + p.kv_cache_bytes / p.kv_cache_tokens
    mem, _ = speed.decode_parts(p, spec, rig, context=1)
    assert mem["vram"] == pytest.approx(read / 3350e9, rel=0.01)
    assert mem["ram"] < 1e-6   # the embedding row lookup on the CPU


def test_moe_decode_reads_top_k_of_the_routed_experts():
    spec, rig, p = _full_gpu("qwen3.6-35b-a3b")
    g = p.weights_by_group
    dense = p.weights_bytes - g["embeddings"] - g["routed_experts"] - g.get("mtp", 0)
    read = dense + g["routed_experts"] * 8 / 256 + 2 * p.recurrent_state_bytes + p.kv_cache_bytes / p.kv_cache_tokens
    mem, _ = speed.decode_parts(p, spec, rig, context=1)
    assert mem["vram"] == pytest.approx(read / 3350e9, rel=0.01)
    # 35B of weights but ~1.1 GB read per token: the MoE decodes far faster than the dense 27B
    spec27, rig27, p27 = _full_gpu("qwen3.6-27b")
    d35 = speed.predict(p, spec, rig, calibration=DEFAULTS).decode_tok_s.value
    d27 = speed.predict(p27, spec27, rig27, calibration=DEFAULTS).decode_tok_s.value
    assert d35 > 2 * d27


def test_cpu_moe_moves_the_expert_reads_to_system_ram():
    spec, rig = from_catalog("qwen3.6-35b-a3b"), hardware.load("rtx5080")
    p = plan_llamacpp(spec, rig, LlamaCppOptions(ngl=999, cpu_moe=True, ctx=4096, parallel=1), "Q4_K_M")
    mem, _ = speed.decode_parts(p, spec, rig, context=1)
    routed_read = p.weights_by_group["routed_experts"] * 8 / 256
    # RTX 5080 rig: 16 cores x 6 GB/s = 96 > 70 GB/s DDR5, so RAM bandwidth bounds the CPU side
    assert mem["ram"] == pytest.approx(routed_read / 70e9, rel=0.02)
    assert p.device_switches >= 2 * spec.layers   # GPU -> CPU -> GPU in every layer
    s = speed.predict(p, spec, rig, calibration=DEFAULTS)
    assert s.decode_split["ram"] > 0.5


def test_prefill_with_experts_in_ram_copies_the_used_experts_per_ubatch():
    spec, rig = from_catalog("qwen3.6-35b-a3b"), hardware.load("rtx5080")
    spec = spec.model_copy(update={"router_skew": 0.0})     # even routing: a u-batch of 512 uses every expert
    o = LlamaCppOptions(ngl=999, cpu_moe=True, ctx=16384, parallel=1)
    p512 = plan_llamacpp(spec, rig, o, "Q4_K_M")
    p2048 = plan_llamacpp(spec, rig, o.model_copy(update={"ubatch": 2048}), "Q4_K_M")
    a = speed.prefill_parts(p512, spec, rig, 8000)
    b = speed.prefill_parts(p2048, spec, rig, 8000)
    # 8000 tokens: 16 u-batches of 512 against 4 of 2048, each copying every CPU-held expert from mmap'd
    # (pageable) memory: the link's pageable rate
    assert p512.offload_expert_bytes == p512.offload_bytes > 0
    assert a["pcie"] == pytest.approx(16 * p512.offload_bytes / (rig.pageable_gbs * 1e9))
    assert b["pcie"] == pytest.approx(a["pcie"] / 4)
    # pinned host memory (--load-mode none) copies at the link's pinned rate
    pinned = plan_llamacpp(spec, rig, o.model_copy(update={"load_mode": "none"}), "Q4_K_M")
    assert pinned.host_pinned and not p512.host_pinned
    assert speed.prefill_parts(pinned, spec, rig, 8000)["pcie"] == pytest.approx(a["pcie"] * rig.pageable_gbs
                                                                                 / rig.link_gbs)
    # a skewed router leaves experts unused in a u-batch of 32, and those are not copied
    skewed = spec.model_copy(update={"router_skew": 0.8})
    p32 = plan_llamacpp(skewed, rig, o.model_copy(update={"ubatch": 32, "batch": 32}), "Q4_K_M")
    used = routing.spread(256, 8, 32, 0.8).used_fraction
    assert used < 0.5
    assert speed.prefill_parts(p32, skewed, rig, 320)["pcie"] == pytest.approx(
        10 * p32.offload_bytes * used / (rig.pageable_gbs * 1e9))
    # under 32 tokens a u-batch runs CPU weights on the CPU (ggml op offload threshold)
    p16 = plan_llamacpp(spec, rig, o.model_copy(update={"ubatch": 16, "batch": 16}), "Q4_K_M")
    c = speed.prefill_parts(p16, spec, rig, 8000)
    assert c["pcie"] == 0 and c["cpu_compute"] > 0


def test_expert_tiles_fill_with_larger_ubatches_and_skewed_routers():
    """Grouped expert matmuls run whole tiles of 128 tokens per used expert: at u-batch 512 an even router
    gives each of 256 experts 16 tokens (8x padding), a larger u-batch or a skewed router fills them."""
    spec, rig, p = _full_gpu("qwen3.6-35b-a3b")
    even = spec.model_copy(update={"router_skew": 0.0})
    routed = p.devices[0].routed_params
    per_expert_flop = 2 * routed / 256
    parts = speed.prefill_parts(p, even, rig, 512)
    assert parts["gpu_experts"] == pytest.approx(per_expert_flop * 256 * 128 / (rig.gpus[0].mmq_tops * 1e12),
                                                 rel=1e-6)
    p2048 = p.model_copy(update={"ubatch": 2048})
    per_token = {ub: speed.prefill_parts(q, even, rig, 8192)["gpu_experts"] for ub, q in ((512, p), (2048, p2048))}
    assert per_token[2048] < per_token[512] / 3
    skewed = spec.model_copy(update={"router_skew": 0.5})
    assert speed.prefill_parts(p, skewed, rig, 512)["gpu_experts"] < 0.8 * parts["gpu_experts"]


def test_routing_spread_counts_experts_and_tiles():
    even = routing.spread(256, 8, 512, 0.0)
    assert even.distinct == 256 and even.tile_loads == 256          # 16 tokens each: one tile each
    assert routing.spread(256, 8, 8, 0.0).distinct == pytest.approx(64 * (1 - 1 / 256 * 0), rel=0.12)
    skewed = routing.spread(256, 8, 512, 0.5)
    assert skewed.distinct < 200 and skewed.top10_share > 2 * even.top10_share
    assert skewed.tokens_per_used_expert > even.tokens_per_used_expert


def test_mtp_speedup_follows_the_acceptance_formula():
    spec, rig = from_catalog("qwen3.6-27b"), hardware.load("2x-rtx3090")
    cmd = ("vllm serve m --tensor-parallel-size 2 --quantization auto_round --max-model-len 32768 "
           "--max-num-batched-tokens 8192 --speculative-config '{\"method\":\"mtp\",\"num_speculative_tokens\":3}'")
    with_mtp = plan(spec, rig, parse_command(cmd))
    without = plan(spec, rig, parse_command(cmd.split(" --speculative-config")[0]))
    s1 = speed.predict(with_mtp, spec, rig, calibration=DEFAULTS)
    s0 = speed.predict(without, spec, rig, calibration=DEFAULTS)
    accepted = (1 - 0.7**4) / (1 - 0.7)       # 2.53 tokens a step at acceptance 0.7
    # below the accepted length: each step also runs the one-layer MTP head and its output matmul 3 times
    assert 1.1 < s1.decode_tok_s.value / s0.decode_tok_s.value < accepted
    assert s1.speculative_speedup == pytest.approx(s1.decode_tok_s.value / s0.decode_tok_s.value, rel=0.01)


def test_concurrency_shares_the_weight_reads():
    spec, rig, p = _full_gpu("qwen3.6-27b")
    p = p.model_copy(update={"parallel": 8})
    s = speed.predict(p, spec, rig, prompt_tokens=128, concurrency=8, calibration=DEFAULTS)
    assert s.decode_tok_s_concurrent.value > 4 * s.decode_tok_s.value
    one = speed.predict(p, spec, rig, prompt_tokens=128, concurrency=1, calibration=DEFAULTS)
    assert one.decode_tok_s_concurrent.value == pytest.approx(one.decode_tok_s.value, rel=0.01)


def test_ttft_grows_with_the_prompt_and_estimates_carry_uncertainty():
    spec, rig, p = _full_gpu("qwen3.6-27b")
    short = speed.predict(p, spec, rig, prompt_tokens=128, calibration=DEFAULTS)
    long = speed.predict(p, spec, rig, prompt_tokens=4000, calibration=DEFAULTS)
    assert long.ttft_ms.value > 10 * short.ttft_ms.value
    e = short.decode_tok_s
    assert e.low < e.value < e.high and e.uncertainty == pytest.approx(0.35)


def test_calibration_recovers_known_efficiencies():
    """Measurements made up from chosen coefficients: the fit must find those coefficients again."""
    truth = speed.Coefficients.defaults()
    truth.decode.update(vram=2.0, ram=3.0, overhead=1.5)
    truth.prefill.update(gpu_compute=8.0, gpu_experts=4.0, pcie=2.0)
    ms = []
    # the u-batch sweep (as benchmarks/gpu/sweeps.py runs it) tells padded expert tiles from dense work
    configs = [["-ngl", "99"], ["-ngl", "99", "--cpu-moe"], ["-ngl", "99", "--n-cpu-moe", "10", "-ub", "2048"],
               ["-ngl", "99", "--n-cpu-moe", "20"], ["-ngl", "99", "--n-cpu-moe", "30", "-ub", "1024"],
               ["-ngl", "99", "-ub", "128"], ["-ngl", "99", "-ub", "2048"], ["-ngl", "99", "-ub", "4096"]]
    for model in ("qwen3.6-35b-a3b", "qwen3.6-27b"):
        for i, args in enumerate(configs):
            if model == "qwen3.6-27b" and "moe" in " ".join(args):
                args = ["-ngl", str(30 + 8 * i)]
            m = speed.Measurement(name=f"{model}-{i}", rig="h100", model=model, quant="Q4_K_M",
                                  args=["-c", "16384", "-np", "1", *args], prompt_tokens=8000, decode_context=8000)
            spec, p, rig = speed._spec_plan_rig(m)
            m.decode_tok_s = 1 / speed.decode_seconds(p, spec, rig, truth, 8000)
            m.prefill_tok_s = 8000 / speed.prefill_seconds(p, spec, rig, truth, 8000)
            ms.append(m)
    got = speed.calibrate(ms).classes["h100"]
    for k in ("vram", "ram"):
        assert got.decode[k] == pytest.approx(truth.decode[k], rel=0.1)
    for k in ("gpu_compute", "gpu_experts", "pcie"):
        assert got.prefill[k] == pytest.approx(truth.prefill[k], rel=0.1)
    assert got.decode_uncertainty < 0.1


def test_shipped_calibration_is_used_and_names_its_source():
    spec, rig, p = _full_gpu("qwen3.6-35b-a3b")
    s = speed.predict(p, spec, rig)
    assert "calibrated" in s.calibration and s.decode_tok_s.uncertainty < 0.35


def test_agent_task_without_prefix_cache_rereads_the_growing_prompt():
    spec, rig = from_catalog("qwen3.6-35b-a3b"), hardware.load("rtx5080")
    p = plan_llamacpp(spec, rig, LlamaCppOptions(ngl=999, cpu_moe=True, ctx=65536, parallel=1), "Q4_K_M")
    prof = speed.AgentProfile.named("claude-code")
    cached = speed.agent_task(p, spec, rig, prof, DEFAULTS)
    uncached = speed.agent_task(p, spec, rig, speed.AgentProfile.named("claude-code", prefix_cache=False), DEFAULTS)
    assert len(cached.turns) == prof.turns == 30
    assert cached.turns[1].prefill_tokens == prof.turn_new_tokens + prof.output_tokens
    assert uncached.turns[29].prefill_tokens == uncached.turns[29].context
    assert uncached.total_s.value > 3 * cached.total_s.value


def test_tune_beats_cpu_moe_and_fit_without_slower_decode():
    spec = from_catalog("qwen3.6-35b-a3b")
    r = tune.tune(spec, hardware.load("h100").with_vram(16), "Q4_K_M")
    cpu_moe, fit, no_mmap = r.baselines
    assert r.pick.fits and r.pick.vram_bytes <= 16 * 2**30 - 512 * 2**20
    assert cpu_moe.turn_s > 2 * r.pick.turn_s and fit.turn_s > r.pick.turn_s and no_mmap.turn_s > r.pick.turn_s
    assert r.gain >= 1.0 and r.baseline.turn_s >= r.pick.turn_s
    assert "--n-cpu-moe" in r.pick.args and "--fit" in r.pick.args


def test_tune_dense_model_that_fits_keeps_every_layer_on_the_gpu():
    r = tune.tune(from_catalog("qwen3.6-27b"), hardware.load("rtx4090"), "Q4_K_M", context=16384)
    ngl = int(r.pick.args[r.pick.args.index("-ngl") + 1])
    assert ngl >= 65


def test_tune_budget_too_small_says_the_smallest_that_works():
    with pytest.raises(tune.BudgetTooSmall, match=r"smallest that works is about \d+\.\d GiB"):
        tune.tune(from_catalog("qwen3.6-35b-a3b"), hardware.load("rtx5080").with_vram(1.5), "Q4_K_M")


def test_advise_ranks_what_fits_with_quality_beside_it():
    rows = advise.advise(hardware.load("rtx4090"), models=["qwen3.6-35b-a3b", "qwen3.6-27b", "gpt-oss-120b"])
    assert rows == sorted(rows, key=lambda a: a.turn_s)
    names = {(a.model, a.engine) for a in rows}
    assert ("qwen3.6-35b-a3b", "llama.cpp") in names and ("qwen3.6-27b", "llama.cpp") in names
    top = next(a for a in rows if a.model == "qwen3.6-35b-a3b" and a.engine == "llama.cpp")
    assert top.quality and "source" in top.quality
    assert top.command.startswith("llama-server -m ")


def test_cli_plan_json_has_speed_and_agent_profile(run_cli):
    res = run_cli("plan", "qwen3.6-35b-a3b", "--rig", "rtx5080", "--cpu-moe", "--prompt-tokens", "3525",
                  "--context", "20000", "--concurrency", "4", "--agent-profile", "--json")
    d = json.loads(res.stdout)
    for k in ("prefill_tok_s", "decode_tok_s", "ttft_ms", "decode_tok_s_concurrent"):
        assert set(d["speed"][k]) == {"value", "low", "high", "uncertainty"}
    assert d["speed"]["prompt_tokens"] == 3525 and d["speed"]["context"] == 20000
    assert d["agent_profile"]["total_s"]["value"] > 0 and len(d["agent_profile"]["turns"]) == 30


def test_cli_pasted_vllm_command_gets_speed_with_mtp(run_cli):
    res = run_cli("plan", "--model", "qwen3.6-27b", "--rig", "2x-rtx3090", "--json", "--", "vllm", "serve", "m",
                  "--tensor-parallel-size", "2", "--quantization", "auto_round", "--max-model-len", "65536",
                  "--max-num-batched-tokens", "8192",
                  "--speculative-config", '{"method":"mtp","num_speculative_tokens":3}')
    d = json.loads(res.stdout)
    assert d["speed"]["speculative_speedup"] > 1.1


def test_cli_tune_unknown_gpu_asks_for_bandwidth_and_memory(run_cli):
    res = run_cli("tune", "qwen3.6-27b", "--rig", "rtx9999", ok=False)
    assert res.returncode == 2 and "--bandwidth" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("tune", "qwen3.6-27b", "--rig", "rtx9999", "--vram", "20", "--bandwidth", "1000", "--json")
    assert json.loads(res.stdout)["pick"]["fits"]


def test_cli_tune_budget_too_small_exits_non_zero(run_cli):
    res = run_cli("tune", "qwen3.6-35b-a3b", "--rig", "rtx5080", "--vram", "1", ok=False)
    assert res.returncode == 2 and "smallest that works" in res.stderr


def test_cli_tune_measure_runs_llama_server(run_cli, qwen_gguf, llama_server):
    """Slow by nature (over a minute on 2 cores): tune --measure starts llama-server for each of its top picks and
    times a real turn on each."""
    res = run_cli("tune", str(qwen_gguf), "--rig", "cpu", "--ctx", "4096", "--turn", "512,16", "--top", "2",
                  "--measure", "--json", timeout=600)
    d = json.loads(res.stdout)
    measured = d["measured"]
    assert len(measured) == 2 and d["baseline"]["label"] in measured
    for m in measured.values():
        assert m["turn_s"] > 0 and m["failed"] == 0
        # the machine was watched while the turn was measured
        assert m["machine"]["samples"] >= 1 and m["others_cpu"] == m["machine"]["others_cpu"]
        assert m["disturbed"] == m["machine"]["disturbed"] + ([m["ratio"]] if m["ratio"] else [])


def test_cli_plan_takes_the_router_skew(run_cli):
    """An evenly spreading router touches every expert in a u-batch: experts in RAM cost more to copy."""
    def prefill(*extra):
        res = run_cli("plan", "qwen3.6-35b-a3b", "--rig", "rtx5080", "--cpu-moe", "--prompt-tokens", "2700",
                      "--json", *extra)
        return json.loads(res.stdout)["speed"]
    even, trained = prefill("--router-skew", "0"), prefill()
    assert even["prefill_tok_s"]["value"] < 0.9 * trained["prefill_tok_s"]["value"]
    assert any("uses 100% of each layer's experts" in n for n in even["notes"])


def test_llama_cpp_rates_follow_sms_and_clock():
    """Ampere/Ada/Blackwell datasheets are SMs x clock x the per-SM mma.sync rates; Hopper's SMs count at those."""
    from rigbench import catalog

    for key, e in catalog.hardware()["gpus"].items():
        if not e.get("sms") or e.get("arch") in ("hopper",) or key.startswith("a100"):
            continue
        g = hardware.gpu_from_catalog(key)
        assert g.mmq_tops == pytest.approx(e["int8_tops"], rel=0.005), key
        assert g.fa_tflops == pytest.approx(e["fp16_tflops"], rel=0.005), key
    h100 = hardware.gpu_from_catalog("h100")
    assert h100.mmq_tops == pytest.approx(132 * 1.98e9 * 2048 / 1e12, rel=1e-3) and h100.mmq_tops < h100.int8_tops / 2


def test_gated_deltanet_scan_runs_on_one_sm_per_value_head():
    spec = from_catalog("qwen3.6-35b-a3b")
    h100, rtx3090 = hardware.gpu_from_catalog("h100"), hardware.gpu_from_catalog("rtx3090")
    state = spec.layout.count("L") * spec.linear.v_heads * spec.linear.k_dim * spec.linear.v_dim
    for g in (h100, rtx3090):
        busy = spec.linear.v_heads / g.sms          # 32 blocks: 32 of the GPU's SMs
        assert speed._llama_scan_seconds(spec, g, 1000) == pytest.approx(8 * state * 1000 / (g.fp32_tflops * 1e12
                                                                                              * busy))
    # per busy SM an H100 and a 3090 scan alike, so the 3090 is not 1.9x slower as their FP32 peaks would say
    ratio = speed._llama_scan_seconds(spec, rtx3090, 1000) / speed._llama_scan_seconds(spec, h100, 1000)
    assert ratio == pytest.approx((67 / 132) / (35.6 / 82), rel=1e-3) and ratio < 1.2


def test_mmapped_experts_cross_the_link_in_small_copies():
    """Expert tensors from pageable memory are copied a run of used experts at a time (a few MiB): the rig's
    small-copy pageable rate, not the 256 MiB one; pinned copies are unchanged."""
    spec = from_catalog("qwen3.6-35b-a3b")
    rig = hardware.load("h200").with_vram(16)
    assert rig.pageable_small_gbs > rig.pageable_gbs
    mapped = plan(spec, rig, parse_command("llama-server -c 40960 -np 1 -ngl 99 --n-cpu-moe 13"), "Q4_K_M")
    pinned = plan(spec, rig, parse_command("llama-server -c 40960 -np 1 -ngl 99 --n-cpu-moe 13 --no-mmap"), "Q4_K_M")
    assert not mapped.host_pinned and pinned.host_pinned
    pm = speed.prefill_parts(mapped, spec, rig, 8192)["pcie"]
    pp = speed.prefill_parts(pinned, spec, rig, 8192)["pcie"]
    assert pm / pp == pytest.approx(rig.link_gbs / rig.pageable_small_gbs, rel=0.05)


def test_decode_runs_the_attention_of_layers_in_ram_on_the_cpu():
    spec = from_catalog("qwen3.6-27b")
    rig = hardware.load("h200").with_vram(12)
    p = plan(spec, rig, parse_command("llama-server -c 40960 -np 1 -ngl 37"), "Q4_K_M")
    cpu = next(d for d in p.devices if d.kind == "cpu")
    assert cpu.kv_cache_bytes > 0
    _, short = speed.decode_parts(p, spec, rig, 8192)
    _, long = speed.decode_parts(p, spec, rig, 35840)
    share = cpu.kv_cache_bytes / p.kv_cache_bytes
    extra = speed._attention_flops(spec, 1, 35840 - 8192) * share
    assert rig.cpu_attn_gflops          # the H200 test host's own rate (hardware.yaml)
    rate = rig.cores * rig.cpu_attn_gflops * 1e9
    assert long["cpu_compute"] - short["cpu_compute"] == pytest.approx(extra / rate, rel=1e-3)
    # a rig with no rate of its own takes speed.yaml's
    bare = rig.model_copy(update={"cpu_attn_gflops": 0.0})
    _, bare_short = speed.decode_parts(p, spec, bare, 8192)
    _, bare_long = speed.decode_parts(p, spec, bare, 35840)
    rate = rig.cores * speed.constants()["cpu_attn_gflops"] * 1e9
    assert bare_long["cpu_compute"] - bare_short["cpu_compute"] == pytest.approx(extra / rate, rel=1e-3)
    # in a prompt that attention runs on the GPU, with the CPU layers' KV cells copied over each u-batch
    cold = speed.prefill_parts(p, spec, rig, 3072, 0)["pcie"]
    warm = speed.prefill_parts(p, spec, rig, 3072, 32768)["pcie"]
    assert warm > cold
