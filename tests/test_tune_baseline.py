"""tune against a baseline: the pasted line, the KV type it keeps, the agent's context."""

import json

from rigbench import hardware
from rigbench.engines.options import parse_command
from rigbench.model import from_catalog
from rigbench.plan import speed, tune

MOE = "qwen3.6-35b-a3b"


def _tune(vram: float, **kw) -> tune.TuneResult:
    return tune.tune(from_catalog(MOE), hardware.load("h200").with_vram(vram), "Q4_K_M", coarse=True, **kw)


def test_pasted_command_becomes_the_baseline():
    line = parse_command("llama-server -m q.gguf -c 32768 -ngl 99 --cpu-moe")
    r = _tune(16, baseline=line)
    assert r.baseline.label == "your line" and "--cpu-moe" in r.baseline.args
    assert r.gain == round(r.baseline.turn_s / r.pick.turn_s, 3) and r.gain > 2
    assert "faster than your line" in r.verdict
    # without a line the baseline is the community recipe, and a line that is already the best is said to be close
    r = _tune(16)
    assert r.baseline.args[r.baseline.args.index("-ub") + 1] == "2048" and "--load-mode" in r.baseline.args
    best = parse_command(["llama-server", *r.pick.args[1:]])
    again = _tune(16, baseline=best)
    assert again.gain < tune.CLOSE_GAIN and "within 10% of the best found" in again.verdict


def test_kv_type_is_kept_unless_allowed():
    r = _tune(12)
    assert r.baseline.kv_type == "f16" and r.pick.kv_type == "f16"
    assert all(c.kv_type == "f16" for c in r.candidates)
    alt = r.kv_alternative
    assert alt is not None and alt.kv_type == "q8_0" and r.kv_alternative_gain > r.gain
    allowed = _tune(12, kv_types=("q8_0",))
    assert allowed.pick.kv_type == "q8_0" and allowed.gain > r.gain
    quantised_line = parse_command("llama-server -m q.gguf -c 32768 -ctk q8_0 -ctv q8_0")
    assert _tune(12, baseline=quantised_line).pick.kv_type == "q8_0"


def test_agent_profile_changes_the_pick_where_its_context_demands_it():
    small, big = speed.AgentProfile.named("builtin"), speed.AgentProfile.named("claude-code")
    assert tune.task_context(big) > tune.task_context(small)
    a, b = _tune(11, context=0, profile=small), _tune(11, context=0, profile=big)
    assert (a.context, b.context) == (tune.task_context(small), tune.task_context(big))
    assert a.objective == b.objective == "task" and a.agent == "builtin"
    assert a.pick.args != b.pick.args
    assert b.pick.vram_bytes <= 11 * 2**30


def test_lower_bound_is_below_the_prediction():
    r = _tune(16)
    for c in (r.pick, r.baseline, *r.baselines):
        assert 0 < c.bound_s < c.turn_s and c.bound_ratio > 1


def test_h200_decodes_a_dense_model_no_faster_than_the_h100():
    from rigbench.engines.options import parse_llama_args
    from rigbench.plan import memory

    spec = from_catalog("qwen3.6-27b")
    tok_s = {}
    for name in ("h100", "h200"):
        rig = hardware.load(name)
        p = memory.plan(spec, rig, parse_llama_args(["-ngl", "99", "-c", "32768", "-np", "1"]), "Q4_K_M")
        tok_s[name] = speed.predict(p, spec, rig, prompt_tokens=1, context=8000).decode_tok_s.value
    # measured: 76.8 tok/s on the H100, 71 on the H200 (same SMs and clocks, 1.4x the bandwidth)
    assert abs(tok_s["h200"] / tok_s["h100"] - 1) < 0.02 and 60 < tok_s["h200"] < 80
    assert hardware.load("h200").link_gbs > 50


def test_cli_tune_json_has_baseline_pick_and_gain(run_cli):
    res = run_cli("tune", MOE, "--rig", "h200", "--vram", "16", "--top", "1", "--json", "--", "llama-server",
                  "-m", "q.gguf", "-c", "32768", "--no-mmap")
    d = json.loads(res.stdout)
    for k in ("baseline", "pick"):
        assert {"args", "turn_s", "task_s", "kv_type"} <= set(d[k])
    assert d["baseline"]["label"] == "your line" and d["gain"] >= 1.0


def test_cli_plan_vram_is_the_free_budget(run_cli):
    full = json.loads(run_cli("plan", MOE, "--rig", "h200", "--ngl", "99", "--json").stdout)
    tight = run_cli("plan", MOE, "--rig", "h200", "--ngl", "99", "--vram", "12", "--json", ok=False)
    assert full["fits"] and tight.returncode == 3 and not json.loads(tight.stdout)["fits"]


def test_advise_carries_per_quant_loss_as_a_sourced_range_or_unknown():
    from rigbench.plan import advise

    q4, q8 = advise.quant_loss("Q4_K_M"), advise.quant_loss("Q8_0")
    assert q4["kld"][0] > q8["kld"][1] and "llama.cpp" in q4["source"] and q4["task_effect"] == "unknown"
    assert advise.quant_loss("awq")["divergence"].startswith("unknown")


def test_pick_fits_the_budget_with_the_ubatch_buffers_counted():
    """The pick's GPU total (compute buffer at its u-batch, the CUDA pool, the context) leaves tune's margin;
    the u-batch 4096 line that ran out of memory on the H200 at 16 GiB free (experts of 13 layers and a half in
    RAM, 516 MiB predicted spare before the CUDA pool was counted) is no longer one tune would keep."""
    from rigbench.engines.options import parse_llama_args
    from rigbench.plan import memory

    spec = from_catalog(MOE)
    for vram in (16, 12):
        r = _tune(vram)
        assert r.pick.vram_bytes + 512 * memory.MIB <= vram * 2**30
        p = memory.plan(spec, hardware.load("h200").with_vram(vram), parse_command(r.pick.args), "Q4_K_M")
        assert p.devices[0].total == r.pick.vram_bytes and p.devices[0].other_bytes > 350 * memory.MIB
    oom = ["-c", "40960", "-np", "1", "-ngl", "999", "--n-cpu-moe", "13", "-ot", r"blk\.13\.ffn_(up|gate)_exps=CPU",
           "-b", "4096", "-ub", "4096", "--fit", "off", "--load-mode", "none"]
    p = memory.plan(spec, hardware.load("h200").with_vram(16), parse_llama_args(oom), "Q4_K_M")
    assert not memory.fits_with_margin(p, 512 * memory.MIB)
