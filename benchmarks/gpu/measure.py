"""On the GPU machine: agent-turn time (8,000 new prompt tokens, then 256 generated) of the full-size
synthetic Qwen3.6-35B-A3B under a 16 GiB VRAM budget (the rest of the card held by a ballast allocation),
for --cpu-moe, llama.cpp's --fit, and rigbench-planned placements; plus the model fully on the GPU, and
the 27B dense on the GPU. Each result line goes to $OUT/gpu_turns.jsonl as soon as it is measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rigbench.bench.suite import BenchConfig, Suite
from rigbench.engines import llamacpp
from rigbench.engines.llamacpp_log import parse_memory_log
from rigbench.engines.options import parse_llama_args

OUT = Path(os.environ.get("OUT", "."))
SERVER = Path("build/bin/llama-server")
M35 = ".device/models/q35b-a3b-q4km.gguf"
M27 = ".device/models/q27b-q4km.gguf"
BUDGET_GIB = 16


def nvidia_used_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    return int(out.split(",")[0])


def ballast(budget_gib: float) -> subprocess.Popen:
    code = (f"import torch,time\nfree,total=torch.cuda.mem_get_info()\nn=free-int({budget_gib}*2**30)\n"
            "x=torch.empty(n,dtype=torch.uint8,device='cuda')\nprint('held',n,flush=True)\ntime.sleep(3600)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    print(p.stdout.readline().strip(), flush=True)
    return p


def measure(name: str, model: str, args: list[str], budget: bool, turn=(8000, 256), repeats: int = 2) -> None:
    row = {"config": name, "model": Path(model).name, "args": args, "budget_gib": BUDGET_GIB if budget else None}
    hold = ballast(BUDGET_GIB) if budget else None
    t0 = time.monotonic()
    try:
        row["free_mib_before"] = None
        spec = llamacpp.launch_spec(parse_llama_args(["-m", model, *args, "-lv", "4"]), SERVER, gpu=True)
        log = OUT / f"server-{name}.log"
        server = llamacpp.start(spec, log, timeout=300)
        row["load_s"] = round(time.monotonic() - t0, 1)
        row["vram_used_mib"] = nvidia_used_mib()
        mem = parse_memory_log(server.log_text())
        row["llama_memory"] = mem.model_dump()
        try:
            cfg = BenchConfig(url=server.url, scenarios=["turn", "decode"], turn_prompt=turn[0], turn_output=turn[1],
                              repeats=repeats, short_prompt=64, decode_output=128, time_limit=240,
                              request_timeout=240, stall_timeout=120)
            res = Suite(cfg).run()
            for k, v in res.items():
                s = v.summary
                row[k] = {"ttft_ms": s.ttft_ms.median, "tpot_ms": s.tpot_ms.median, "e2e_ms": s.e2e_ms.median,
                          "prefill_tok_s": s.prefill_tok_s.median, "decode_tok_s": s.per_stream_output_tok_s,
                          "failed": s.failed, "facts": v.facts}
        finally:
            server.stop()
        if not row.get("turn", {}).get("failed"):
            log.unlink(missing_ok=True)  # only 8 files come back from the machine: keep logs of failures only
    except Exception as e:  # record and go on: one failing config must not lose the others
        row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    finally:
        if hold:
            hold.kill()
            hold.wait()
    row["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(row)[:600], flush=True)
    with (OUT / "gpu_turns.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    which = sys.argv[1:] or ["full", "tuned13", "tuned15", "fit", "cpumoe", "dense27"]
    configs = {
        "full": (M35, ["-ngl", "99", "-c", "32768"], False),
        "tuned13": (M35, ["-ngl", "99", "--n-cpu-moe", "13", "-c", "32768", "-ub", "2048", "-b", "2048"], True),
        "tuned15": (M35, ["-ngl", "99", "--n-cpu-moe", "15", "-c", "32768", "-ub", "2048", "-b", "2048"], True),
        "fit": (M35, ["-c", "32768"], True),
        "cpumoe": (M35, ["-ngl", "99", "--cpu-moe", "-c", "32768"], True),
        "dense27": (M27, ["-ngl", "99", "-c", "32768"], False),
    }
    for name in which:
        model, args, budget = configs[name]
        measure(name, model, args, budget)


if __name__ == "__main__":
    main()
