"""On the GPU machine: one agent turn (P new prompt tokens, then G generated) per configuration, seen three ways.

1. rigbench's client: prefill = prompt tokens / TTFT (request sent -> first streamed token);
2. llama-server's own `timings` of the same request (prompt_per_second, predicted_per_second);
3. llama-bench with the same placement and batch flags (engines.llamabench), pp`P`.

The first request after the server starts is kept apart from later ones (cold pages of an mmap'd model,
first CUDA graph captures). A VRAM budget is made real by a ballast allocation holding the rest of the card.
Each configuration appends to $OUT/prefill_views.jsonl (records for issue 11's gpu_prefill_views.json) and
its client-view measurement to $OUT/views.calib.jsonl as soon as it is measured.

Usage: python benchmarks/gpu/prefill_views.py CONFIGS.json [NAME ...]
CONFIGS.json: [{"name", "file", "model", "router_skew", "budget_gib", "args": [llama-server flags],
                "predicted": {...}}]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rigbench.bench.suite import BenchConfig, Suite
from rigbench.engines import llamabench, llamacpp
from rigbench.engines.options import parse_llama_args
from rigbench.plan.speed import Measurement

OUT = Path(os.environ.get("OUT", "."))
SERVER, BENCH = Path("build/bin/llama-server"), Path("build/bin/llama-bench")
DEVICE = os.environ.get("DEVICE", "NVIDIA H100 80GB HBM3") + ", 16 cores, 128 GiB (GPU test machine)"
PROMPT, OUTPUT = int(os.environ.get("PROMPT", 8000)), int(os.environ.get("OUTPUT", 256))


def ballast(budget_gib: float) -> subprocess.Popen:
    code = (f"import torch,time\nfree,total=torch.cuda.mem_get_info()\nn=free-int({budget_gib}*2**30)\n"
            "x=torch.empty(n,dtype=torch.uint8,device='cuda')\nprint('held',n,flush=True)\ntime.sleep(3600)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    print(p.stdout.readline().strip(), flush=True)
    return p


def turns(url: str, n: int) -> list[dict]:
    """n agent turns, one after another, each a fresh prompt (nothing cached); per request: the client's and
    the server's prefill and decode."""
    cfg = BenchConfig(url=url, scenarios=["turn"], turn_prompt=PROMPT, turn_output=OUTPUT, repeats=1,
                      request_timeout=300, stall_timeout=200, time_limit=400)
    suite = Suite(cfg)
    out = []
    for i in range(n):
        lr = suite.load("turn", lambda k, i=i: suite.completion(PROMPT, OUTPUT, 9000 + i), requests=1)
        r = lr.results[0]
        if r.error or r.ttft is None:
            out.append({"error": r.error or "no first token"})
            continue
        t = r.server_timings or {}
        e2e = r.e2e or 0.0
        out.append({"prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
                    "rigbench_prefill_tok_s": round(r.prompt_tokens / r.ttft, 1),
                    "rigbench_decode_tok_s": round((r.output_tokens - 1) / (e2e - r.ttft), 2),
                    "server_prefill_tok_s": round(t.get("prompt_per_second", 0.0), 1),
                    "server_decode_tok_s": round(t.get("predicted_per_second", 0.0), 2),
                    "ttft_ms": round(r.ttft * 1000, 1), "turn_s": round(e2e, 3)})
    return out


def measure(c: dict, later: int) -> None:
    name, args, budget = c["name"], c["args"], c.get("budget_gib")
    base = {"config": name, "args": args, "budget_gib": budget, "router_skew": c.get("router_skew"),
            "prompt_tokens": PROMPT, "output_tokens": OUTPUT, "predicted": c.get("predicted")}
    hold = ballast(budget) if budget else None
    t0 = time.monotonic()
    rows, bench = [], None
    try:
        o = parse_llama_args(["-m", c["file"], *args])
        server = llamacpp.start(llamacpp.launch_spec(o, SERVER, gpu=True), OUT / f"server-{name}.log", timeout=400)
        load_s = round(time.monotonic() - t0, 1)
        try:
            rows = turns(server.url, 1 + later)
        finally:
            server.stop()
        time.sleep(5)  # the driver frees the server's memory after it exits; a tight budget needs all of it
        try:
            bench = llamabench.run(BENCH, o, PROMPT, repeats=1, timeout=400).tok_s
        except Exception as e:  # the other two views stand on their own
            bench = None
            base["llama_bench_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        (OUT / f"server-{name}.log").unlink(missing_ok=True)  # 8 files come back: logs of failures only
        base["load_s"] = load_s
    except Exception as e:
        base["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    finally:
        if hold:
            hold.kill()
            hold.wait()
    base["wall_s"] = round(time.monotonic() - t0, 1)
    records = []
    for i, r in enumerate(rows):
        records.append({**base, **r, "first_request": i == 0, "llama_bench_pp_tok_s": round(bench, 1) if bench
                        else None})
    if not rows:
        records.append({**base, "first_request": True})
    with (OUT / "prefill_views.jsonl").open("a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
            print(json.dumps({k: rec.get(k) for k in ("config", "first_request", "rigbench_prefill_tok_s",
                                                       "server_prefill_tok_s", "llama_bench_pp_tok_s",
                                                       "rigbench_decode_tok_s", "turn_s", "error")}), flush=True)
    ok = [r for r in rows if "rigbench_prefill_tok_s" in r]
    if ok:
        # the first request's prefill: a later one with an unrelated prompt also waits while llama-server saves
        # the previous prompt's state to its RAM prompt cache (--cache-ram, tools/server/server-context.cpp
        # "updating prompt cache"), outside its own prompt timing
        m = Measurement(name=name, rig="h100", vram_gib=budget, model=c["model"], quant="Q4_K_M", args=args,
                        prompt_tokens=PROMPT, prefill_tok_s=ok[0]["rigbench_prefill_tok_s"],
                        decode_context=PROMPT + OUTPUT // 2,
                        decode_tok_s=round(statistics.median(r["rigbench_decode_tok_s"] for r in ok), 2),
                        router_skew=c.get("router_skew"), view="client",
                        source=f"benchmarks/gpu/prefill_views.py on {DEVICE}")
        with (OUT / "views.calib.jsonl").open("a") as f:
            f.write(m.model_dump_json() + "\n")


def main() -> None:
    configs = json.loads(Path(sys.argv[1]).read_text())
    which = sys.argv[2:] or [c["name"] for c in configs]
    by_name = {c["name"]: c for c in configs}
    for name in which:
        c = by_name[name]
        slow = "--cpu-moe" in c["args"]
        measure(c, later=int(os.environ.get("LATER", 1 if slow else 2)))


if __name__ == "__main__":
    main()
