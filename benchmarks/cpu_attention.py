"""Flash attention on the CPU: what a decoded token's attention over its cache costs a CPU core.

llama.cpp decodes (a batch of one, below ggml-cuda's op offload size) the attention of the layers whose KV cache
sits in RAM on the CPU, in ggml-cpu's flash attention, which reads the f16 cache key by key with an online
soft-max: far below the int8 dot-product rate of the CPU's weight matmuls (speed.yaml cpu_core_gflops). The
rate comes from llama-server decodes already measured on the 2-core dev box (cpu_dev.calib.jsonl, written by
benchmarks/speed_prediction.py --measure-cpu): the same Qwen2.5-Coder-0.5B line with an f16 cache decoding at
context 64 and at context 1056; the extra seconds per token over the attention FLOPs the 992 extra keys add
(4 per head dim per key per layer) give GFLOP/s per core (speed.yaml cpu_attn_gflops). The q8_0-cache pair is
left out: its cache is read by another kernel.

Usage: python benchmarks/cpu_attention.py [--out benchmarks/results/cpu_attention.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from provenance import command
from rigbench import model

SRC = Path(__file__).parent / "results" / "cpu_dev.calib.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_attention.json"))
    a = ap.parse_args()
    runs = {r["name"]: r for r in map(json.loads, SRC.read_text().splitlines())}
    pairs = []
    for name, long in runs.items():
        short = runs.get(name + "-short")
        if short is None or "-ctk" in long["args"]:
            continue
        spec = model.load(long["model"])
        threads = int(long["args"][long["args"].index("-t") + 1])
        extra_s = 1 / long["decode_tok_s"] - 1 / short["decode_tok_s"]
        keys = long["decode_context"] - short["decode_context"]
        flops = 4.0 * spec.heads * spec.head_dim * len(spec.attention_layers()) * keys
        pairs.append({"line": name, "keys_added": keys, "extra_ms_per_token": round(extra_s * 1e3, 2),
                      "attention_mflop_added": round(flops / 1e6, 1), "threads": threads,
                      "gflops_per_core": round(flops / extra_s / 1e9 / threads, 2)})
    res = {"command": command(), "source": "benchmarks/results/cpu_dev.calib.jsonl (2-core dev box)",
           "pairs": pairs, "gflops_per_core": round(statistics.median(p["gflops_per_core"] for p in pairs), 2)}
    print(json.dumps(res, indent=1))
    a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
