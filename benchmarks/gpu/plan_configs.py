"""The head-to-head configurations for the GPU machine: `rigbench tune`'s pick under each VRAM budget beside
llama.cpp's `--cpu-moe` and `--fit` under the same budget (and the whole model on the GPU), each with what the
speed model predicts for it. Runs wherever the calibration to use is (the GPU machine fits one from the
sweeps first; RIGBENCH_CALIBRATION names it).

Usage: python benchmarks/gpu/plan_configs.py --file MODEL.gguf --skew S [--budgets 16,12] [--out configs.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rigbench import hardware
from rigbench.engines.options import parse_llama_args
from rigbench.model import load
from rigbench.plan import memory, speed, tune

MODEL = "qwen3.6-35b-a3b"


def strip(args: list[str]) -> list[str]:
    return args[1:] if args and args[0] == "llama-server" else args


def predicted(spec, rig, args: list[str], turn: tune.Turn) -> dict:
    p = memory.plan(spec, rig, parse_llama_args(args), "Q4_K_M")
    s = speed.predict(p, spec, rig, prompt_tokens=turn.prompt)
    dec = speed.predict(p, spec, rig, prompt_tokens=1, context=turn.prompt + turn.output // 2)
    pre_s = turn.prompt / s.prefill_tok_s.value
    return {"prefill_tok_s": s.prefill_tok_s.value, "decode_tok_s": dec.decode_tok_s.value,
            "turn_s": round(pre_s + turn.output / dec.decode_tok_s.value, 3), "prefill_split": s.prefill_split,
            "calibration": s.calibration}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", required=True)
    ap.add_argument("--skew", type=float, required=True)
    ap.add_argument("--budgets", default="16,12")
    ap.add_argument("--full", action="store_true", help="also the whole model on the GPU")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("configs.json"))
    a = ap.parse_args()
    spec = load(MODEL).model_copy(update={"router_skew": a.skew})
    turn = tune.Turn()
    configs = []
    base = {"model": MODEL, "file": a.file, "router_skew": a.skew}
    for budget in (float(b) for b in a.budgets.split(",")):
        rig = hardware.load("h100").with_vram(budget)
        r = tune.tune(spec, rig, "Q4_K_M")
        b = f"{budget:g}"
        rows = [("tuned", strip(r.pick.args)), ("fit", ["-c", "32768", "-np", "1"]),
                ("cpumoe", ["-c", "32768", "-np", "1", "-ngl", "99", "--cpu-moe"])]
        for kind, args in rows:
            configs.append({**base, "name": f"35b-{kind}{b}", "budget_gib": budget, "args": args,
                            "predicted": predicted(spec, rig, args, turn)})
    if a.full:
        args = ["-ngl", "99", "-c", "32768", "-np", "1"]
        configs.append({**base, "name": "35b-full", "budget_gib": None, "args": args,
                        "predicted": predicted(spec, hardware.load("h100"), args, turn)})
    a.out.write_text(json.dumps(configs, indent=1))
    for c in configs:
        print(c["name"], " ".join(c["args"]), c["predicted"]["turn_s"], flush=True)


if __name__ == "__main__":
    main()
