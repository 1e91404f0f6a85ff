"""Summarise benchmarks/results/gpu_turns_h100.jsonl (written on the test H100 by an earlier measure.py):
agent-turn times under the 16 GiB budget with ratios against --cpu-moe and --fit, and the planner's predicted
bytes per GPU buffer against llama.cpp's own allocation log. Writes benchmarks/results/gpu_calibration_h100.json.

Usage: python benchmarks/gpu/summarize.py
"""

from __future__ import annotations

import json
from pathlib import Path

from rigbench import hardware, model
from rigbench.engines.options import parse_llama_args
from rigbench.plan import memory

SRC = Path("benchmarks/results/gpu_turns_h100.jsonl")
OUT = Path("benchmarks/results/gpu_calibration_h100.json")


def main() -> int:
    rows = [json.loads(line) for line in SRC.read_text().splitlines() if line.strip()]
    by = {r["config"]: r for r in rows}
    turn = {k: r["turn"]["e2e_ms"] / 1000 for k, r in by.items() if "turn" in r}
    print(f"{'config':<9} {'turn s':>7} {'TTFT s':>7} {'prefill tok/s':>14} {'decode tok/s':>13}  args")
    for k, r in by.items():
        t, d = r.get("turn", {}), r.get("decode", {})
        print(f"{k:<9} {turn.get(k, 0):>7.2f} {t.get('ttft_ms', 0) / 1000:>7.2f} {t.get('prefill_tok_s') or 0:>14.0f} "
              f"{d.get('decode_tok_s') or 0:>13.1f}  {' '.join(r['args'])}")
    decode = {k: r["decode"]["decode_tok_s"] for k, r in by.items() if "decode" in r}
    ratios = {"tuned_vs_cpu_moe": round(turn["cpumoe"] / turn["tuned13"], 2),
              "tuned_vs_fit": round(turn["fit"] / turn["tuned13"], 2),
              "tuned_decode_vs_fit": round(decode["tuned13"] / decode["fit"], 2)}
    print("16 GiB budget, 35B-A3B, 8,000 new prompt tokens + 256 generated:", ratios)
    mem = []
    h100 = hardware.load("h100")
    for k, r in by.items():
        if k == "fit":  # --fit's placement is llama.cpp's choice on the real free memory, not these flags
            continue
        spec = model.from_catalog("qwen3.6-35b-a3b" if "35b" in r["model"] else "qwen3.6-27b")
        p = memory.plan_llamacpp(spec, h100, parse_llama_args(["-m", "x", *r["args"]]), "Q4_K_M")
        g, m = p.devices[0], r["llama_memory"]
        for what, pred, actual in (("weights", g.weights_bytes, m["model"].get("CUDA0", 0)),
                                   ("KV cache", g.kv_cache_bytes, m["kv"].get("CUDA0", 0)),
                                   ("recurrent", g.recurrent_bytes, m["recurrent"].get("CUDA0", 0)),
                                   ("compute", g.compute_bytes, m["compute"].get("CUDA0", 0))):
            mem.append({"config": k, "what": what, "predicted_bytes": pred, "actual_bytes": actual,
                        "error_pct": round(100 * (pred - actual) / actual, 2) if actual else None})
    for x in mem:
        print(f"{x['config']:<9} {x['what']:<10} predicted {x['predicted_bytes'] / 2**20:>9.0f} MiB  "
              f"llama.cpp {x['actual_bytes'] / 2**20:>9.0f} MiB  {x['error_pct']:+.2f}%")
    OUT.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3, 16 cores, 128 GiB (GPU test machine)",
                               "turn_s": turn, "ratios": ratios, "memory": mem, "runs": rows}, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
