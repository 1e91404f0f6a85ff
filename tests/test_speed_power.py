"""A GPU power limit (nvidia-smi -pl): the card's clock, so its compute-bound prefill, drops with the cap; its
memory-bound decode much less; a cap rigbench cannot apply is a one-line error."""

from __future__ import annotations

import json

import pytest
import yaml

from rigbench import hardware
from rigbench.engines.options import parse_llama_args, parse_vllm_args
from rigbench.model import from_catalog
from rigbench.plan import memory, speed


def _speeds(rig: hardware.Rig, engine: str) -> tuple[float, float]:
    if engine == "vllm":
        spec = from_catalog("qwen3.6-35b-a3b")
        o = parse_vllm_args(["MODEL", "--quantization", "awq", "--tensor-parallel-size", "2", "--max-model-len",
                             "32768", "--max-num-seqs", "4", "--max-num-batched-tokens", "8192"])
        p = memory.plan(spec, rig, o, "awq")
    else:
        spec = from_catalog("qwen3.6-27b")
        p = memory.plan(spec, rig, parse_llama_args(["-m", "m.gguf", "-c", "16384", "-np", "1", "-ngl", "99"]),
                        "Q4_K_M")
    assert p.fits
    s = speed.predict(p, spec, rig, prompt_tokens=8000, context=8000)
    return s.prefill_tok_s.value, s.decode_tok_s.value


@pytest.mark.parametrize("engine,rig", [("llama.cpp", "rtx3090"), ("vllm", "2x-rtx3090")])
def test_a_lower_cap_lowers_prefill_more_than_decode(engine, rig):
    stock = hardware.from_catalog(rig)
    pre, dec = _speeds(stock, engine)
    pre_c, dec_c = _speeds(stock.with_power_limit(230), engine)
    assert pre_c / pre < 0.85                      # the clock at 230 of 350 W: (230/350) ** a
    assert pre_c / pre < dec_c / dec <= 1.0
    assert dec_c / dec > 0.9                       # decode reads memory at the memory clock
    # at and above stock TDP the card runs at its boost clock: nothing changes
    assert _speeds(stock.with_power_limit(350), engine) == (pre, dec)
    assert _speeds(stock.with_power_limit(390), engine) == (pre, dec)


def test_the_cap_comes_from_the_rig_yaml_per_rig_or_per_card(tmp_path):
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump({"gpus": ["rtx3090", {"gpu": "rtx3090", "power_limit_w": 250}],
                                    "power_limit_w": 300}))
    r = hardware.from_yaml(path)
    assert [g.power_limit_w for g in r.gpus] == [300, 250]
    assert r.gpus[1].fp16_tflops < r.gpus[0].fp16_tflops < hardware.gpu_from_catalog("rtx3090").fp16_tflops
    assert r.gpus[0].bandwidth_gbs == r.gpus[1].bandwidth_gbs == 936
    # capping again starts from the card's own clock, not from the clock of the earlier cap
    assert r.with_power_limit(250).gpus[0].fp16_tflops == pytest.approx(r.gpus[1].fp16_tflops)


def test_plan_takes_power_limit_and_predicts_a_slower_prefill(run_cli):
    args = ["plan", "qwen3.6-27b", "--rig", "rtx3090", "--quant", "Q4_K_M", "--prompt-tokens", "8000", "--json"]
    stock = json.loads(run_cli(*args).stdout)["speed"]
    capped = json.loads(run_cli(*args, "--power-limit", "250").stdout)["speed"]
    assert capped["prefill_tok_s"]["value"] < 0.9 * stock["prefill_tok_s"]["value"]


@pytest.mark.parametrize("watts,says", [("-5", "positive number of watts"), ("0", "positive number of watts"),
                                        ("900", "above the most any board allows")])
def test_a_cap_that_cannot_be_applied_is_a_one_line_error(run_cli, watts, says):
    for cmd in (["plan", "qwen3.6-27b", "--rig", "rtx3090"], ["tune", "qwen3.6-27b", "--rig", "rtx3090"]):
        p = run_cli(*cmd, f"--power-limit={watts}", ok=False)
        assert p.returncode != 0
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and says in lines[0], p.stderr
