"""On the GPU machine: llama-bench sweeps of the synthetic Qwen3.6-35B-A3B twins, for calibrating and checking the
prefill model: u-batch size (how full each expert's tile is), router skew (realistic against even routing),
experts in RAM with mmap'd (pageable) or pinned host memory, and a cached-context depth. Each result is a
calibration measurement (view "llama-bench") appended to $OUT/sweeps.calib.jsonl as soon as it is measured.

Usage: python benchmarks/gpu/sweeps.py MODEL_GGUF SKEW [full|offload|all]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from rigbench.engines import llamabench
from rigbench.engines.options import parse_llama_args
from rigbench.plan.speed import Measurement

OUT = Path(os.environ.get("OUT", "."))
BENCH = Path("build/bin/llama-bench")
DEVICE = "NVIDIA H100 80GB HBM3, 16 cores, 128 GiB (GPU test machine)"


def sweep(gguf: str, skew: float, name: str, args: list[str], prompt: int, depth: int = 0, repeats: int = 2,
          gen: int = 0) -> None:
    o = parse_llama_args(["-m", gguf, *args])
    t0 = time.monotonic()
    row = {"config": name, "args": args, "skew": skew, "prompt": prompt, "depth": depth, "gen": gen}
    try:
        r = llamabench.run(BENCH, o, prompt, gen=gen, depth=depth, repeats=repeats, timeout=400)
        row.update(tok_s=round(r.tok_s, 1), sd=round(r.tok_s_sd, 1))
    except Exception as e:  # record and go on: one failing configuration must not lose the others
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    row["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(row), flush=True)
    with (OUT / "sweeps.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    if "tok_s" in row:
        kw = ({"prompt_tokens": prompt, "prefill_tok_s": row["tok_s"], "prefill_depth": depth} if prompt else
              {"decode_context": depth + gen // 2, "decode_tok_s": row["tok_s"]})
        m = Measurement(name=name, rig="h100", model=os.environ.get("MODEL", "qwen3.6-35b-a3b"), quant="Q4_K_M",
                        args=args,
                        router_skew=skew, view="llama-bench",
                        source=f"benchmarks/gpu/sweeps.py (llama-bench) on {DEVICE}", **kw)
        with (OUT / "sweeps.calib.jsonl").open("a") as f:
            f.write(m.model_dump_json() + "\n")


def main() -> None:
    gguf, skew, what = sys.argv[1], float(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "all")
    tag = f"s{skew:g}"
    if what in ("full", "all"):
        for ub in (128, 256, 512, 1024, 2048, 4096):
            b = max(2048, ub)
            sweep(gguf, skew, f"35b-{tag}-full-ub{ub}", ["-ngl", "99", "-ub", str(ub), "-b", str(b)], 4096)
        sweep(gguf, skew, f"35b-{tag}-full-pp512", ["-ngl", "99"], 512)
        sweep(gguf, skew, f"35b-{tag}-full-d16k", ["-ngl", "99"], 2048, depth=16384, repeats=1)
        sweep(gguf, skew, f"35b-{tag}-full-tg", ["-ngl", "99"], 0, gen=128)
    if what == "dense":
        for ub in (256, 512, 2048):
            sweep(gguf, skew, f"27b-full-ub{ub}", ["-ngl", "99", "-ub", str(ub)], 4096)
        sweep(gguf, skew, "27b-full-tg", ["-ngl", "99"], 0, gen=128)
    if what in ("offload", "all"):
        for mode in ("mmap", "none"):
            for ub in (512, 2048):
                args = ["-ngl", "99", "--cpu-moe", "-ub", str(ub), "-lm", mode]
                sweep(gguf, skew, f"35b-{tag}-cpumoe-ub{ub}-{mode}", args, 2048, repeats=1)
        for ub in (512, 2048):
            args = ["-ngl", "99", "--n-cpu-moe", "20", "-ub", str(ub)]
            sweep(gguf, skew, f"35b-{tag}-ncmoe20-ub{ub}", args, 2048, repeats=1)


if __name__ == "__main__":
    main()
