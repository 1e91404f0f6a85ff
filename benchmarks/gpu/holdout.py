"""A held-out check of the prefill model on the GPU: a model shape the calibration never saw.

`predict` (here, before any measurement): the shipped calibration predicts llama-bench prefill and decode of a
synthetic Qwen3-Coder-30B-A3B (48 full-attention layers, 128 experts of 768, no Gated DeltaNet: nothing like
the Qwen3.6 twins it was fitted on) on the test H100, whole on the GPU and with experts in RAM, mmap'd or
pinned, and writes benchmarks/results/gpu_h100_s5_holdout_predicted.json. Commit that file before measuring.
`measure FILE` (on the GPU machine): llama-bench of the same configurations, to $OUT/holdout_measured.jsonl.
`cachetest FILE` (on the GPU machine): one llama-server, three unrelated 8,000-token prompts, with and without
its RAM prompt cache (--cache-ram 0): client TTFT against the server's prompt timing.

`compare MEASURED.jsonl OUT.json` (here): the measured rows against predictions of the shipped calibration for
the machine they ran on (`--gpu`, default h100; the host link is the test H100 VM's, measured there).

Usage: python benchmarks/gpu/holdout.py predict | measure MODEL.gguf | cachetest MODEL.gguf
       | compare MEASURED.jsonl OUT.json [GPU]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

MODEL = "qwen3-coder-30b-a3b"
RESULTS = Path(__file__).resolve().parent.parent / "results"
PREDICTED = RESULTS / "gpu_h100_s5_holdout_predicted.json"
CONFIGS = [  # (name, llama-server flags, prompt tokens, generated tokens)
    ("full-ub512", ["-ngl", "99"], 4096, 0),
    ("full-ub2048", ["-ngl", "99", "-ub", "2048"], 4096, 0),
    ("cpumoe-ub512-mmap", ["-ngl", "99", "--cpu-moe"], 2048, 0),
    ("cpumoe-ub2048-mmap", ["-ngl", "99", "--cpu-moe", "-ub", "2048"], 2048, 0),
    ("cpumoe-ub512-pinned", ["-ngl", "99", "--cpu-moe", "--load-mode", "none"], 2048, 0),
    ("cpumoe-ub2048-pinned", ["-ngl", "99", "--cpu-moe", "-ub", "2048", "--load-mode", "none"], 2048, 0),
    ("ncmoe24-ub2048-pinned", ["-ngl", "99", "--n-cpu-moe", "24", "-ub", "2048", "--load-mode", "none"], 2048, 0),
    ("full-tg", ["-ngl", "99"], 0, 128),
    ("cpumoe-tg", ["-ngl", "99", "--cpu-moe"], 0, 128),
]


def predict() -> None:
    from rigbench import hardware
    from rigbench.engines.options import parse_llama_args
    from rigbench.model import load
    from rigbench.plan import memory, speed

    spec, rig = load(MODEL), hardware.load("h100")
    rows = []
    for name, args, prompt, gen in CONFIGS:
        p = memory.plan(spec, rig, parse_llama_args(["-m", "m.gguf", "-c", "8192", *args]), "Q4_K_M")
        if prompt:
            s = speed.predict(p, spec, rig, prompt_tokens=prompt)
            rows.append({"config": name, "args": args, "prompt": prompt, "predicted_tok_s": s.prefill_tok_s.value,
                         "split": s.prefill_split, "calibration": s.calibration})
        else:
            s = speed.predict(p, spec, rig, prompt_tokens=1, context=gen // 2)
            rows.append({"config": name, "args": args, "gen": gen, "predicted_tok_s": s.decode_tok_s.value,
                         "split": s.decode_split, "calibration": s.calibration})
        print(json.dumps(rows[-1]))
    PREDICTED.write_text(json.dumps({"model": MODEL, "router_skew": spec.router_skew, "rows": rows}, indent=1))


def measure(gguf: str) -> None:
    from rigbench.engines import llamabench
    from rigbench.engines.options import parse_llama_args

    out = Path(os.environ.get("OUT", ".")) / "holdout_measured.jsonl"
    for name, args, prompt, gen in CONFIGS:
        o = parse_llama_args(["-m", gguf, *args])
        row = {"config": name}
        try:
            r = llamabench.run(Path("build/bin/llama-bench"), o, prompt, gen=gen, repeats=2 if "cpumoe" not in name
                               else 1, timeout=300)
            row["tok_s"] = round(r.tok_s, 1)
        except Exception as e:  # record and go on
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def compare(measured: str, out: str, gpu: str = "h100") -> None:
    from rigbench import hardware
    from rigbench.engines.options import parse_llama_args
    from rigbench.model import load
    from rigbench.plan import memory, speed

    host = hardware.catalog.hardware()["rigs"]["h100"]
    rig = hardware._build(f"{gpu} (test machine)", {**host, "gpus": [gpu]})
    spec = load(MODEL)
    got = {r["config"]: r for r in map(json.loads, Path(measured).read_text().splitlines()) if "tok_s" in r}
    rows = []
    for name, args, prompt, gen in CONFIGS:
        if name not in got:
            continue
        p = memory.plan(spec, rig, parse_llama_args(["-m", "m.gguf", "-c", "8192", *args]), "Q4_K_M")
        s = speed.predict(p, spec, rig, prompt_tokens=prompt or 1, context=prompt or gen // 2)
        pred = s.prefill_tok_s.value if prompt else s.decode_tok_s.value
        m = got[name]["tok_s"]
        rows.append({"config": name, "measured_tok_s": m, "predicted_tok_s": round(pred, 1),
                     "error": round(pred / m - 1, 3), "split": s.prefill_split if prompt else s.decode_split})
        print(f"{name:24s} measured {m:9.1f} predicted {pred:9.1f} {pred / m - 1:+.1%}")
    errs = sorted(abs(r["error"]) for r in rows)
    summary = {"median_abs_error": errs[len(errs) // 2], "worst_abs_error": errs[-1], "points": len(rows)}
    print(json.dumps(summary))
    Path(out).write_text(json.dumps({"model": MODEL, "gpu": gpu, "calibration": s.calibration, "summary": summary,
                                     "rows": rows}, indent=1))


def cachetest(gguf: str) -> None:
    from rigbench.bench.suite import BenchConfig, Suite
    from rigbench.engines import llamacpp
    from rigbench.engines.options import parse_llama_args

    out = Path(os.environ.get("OUT", ".")) / "prompt_cache_gap.jsonl"
    for extra in ([], ["--cache-ram", "0"]):
        o = parse_llama_args(["-m", gguf, "-ngl", "99", "-c", "32768", "-np", "1", *extra])
        server = llamacpp.start(llamacpp.launch_spec(o, Path("build/bin/llama-server"), gpu=True),
                                Path(os.environ.get("OUT", ".")) / "cachetest.log", timeout=300)
        try:
            suite = Suite(BenchConfig(url=server.url, scenarios=["turn"], request_timeout=120))
            for i in range(3):
                r = suite.load("turn", lambda k, i=i, s=suite: s.completion(8000, 16, 500 + i), requests=1).results[0]
                t = r.server_timings or {}
                row = {"flags": extra, "request": i, "ttft_ms": round(r.ttft * 1000, 1),
                       "server_prompt_ms": round(t.get("prompt_ms", 0.0), 1),
                       "gap_ms": round(r.ttft * 1000 - t.get("prompt_ms", 0.0), 1)}
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
        finally:
            server.stop()
    (Path(os.environ.get("OUT", ".")) / "cachetest.log").unlink(missing_ok=True)


if __name__ == "__main__":
    {"predict": lambda: predict(), "measure": lambda: measure(sys.argv[2]),
     "cachetest": lambda: cachetest(sys.argv[2]),
     "compare": lambda: compare(sys.argv[2], sys.argv[3], *sys.argv[4:5])}[sys.argv[1]]()
