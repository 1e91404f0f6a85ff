"""How exact is rigbench's load generator? A local streaming server (rigbench.bench.fakeserver, its own
process) emits tokens on a known schedule and stamps each chunk with its send time; rigbench's client, in
this process, measures TTFT and ITL. Error = client measurement - server truth, at 1, 64 and 256 streams.

Targets: p50 < 1 ms and p99 < 5 ms for TTFT and ITL error, and >= 20,000 streamed tokens/s sustained.
Writes benchmarks/results/loadgen_accuracy.json. Where `vllm bench serve` or `guidellm` can be installed,
the same scenario runs through it for comparison (neither is installed here: vllm needs CUDA wheels and
guidellm pulls them in too, so that part reports itself skipped).

Usage: python benchmarks/loadgen_accuracy.py [--tokens 200] [--interval-ms 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from rigbench.bench.load import run, run_load
from rigbench.engines.process import free_port


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rigbench.bench.fakeserver", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("fake server did not start")


def level(url: str, streams: int, tokens: int, interval_ms: float, ttft_ms: float, rounds: int,
          ramp_s: float) -> dict:
    payload = {"model": "ok", "prompt": "x", "max_tokens": tokens, "interval_ms": interval_ms, "ttft_ms": ttft_ms}
    lr = run(run_load(url + "/v1/completions", lambda i: payload, concurrency=streams,
                              requests=streams * rounds, probe_key="rigbench_t", time_limit=600,
                              warmup=1, ramp_s=ramp_s))
    ok = [r for r in lr.results if r.ok]
    ttft_err, itl_err = [], []
    for r in ok:
        true_ttft = r.probe[0] - r.probe_arrival
        ttft_err.append((r.ttft - true_ttft) * 1000)
        client_itl = np.diff(r.chunk_times)
        server_itl = np.diff(r.probe)
        itl_err.extend(((client_itl - server_itl) * 1000).tolist())
    tokens_total = sum(len(r.chunk_times) for r in ok)
    ta, ia = np.abs(ttft_err), np.abs(itl_err)
    return {"streams": streams, "requests": len(lr.results), "failed": len(lr.results) - len(ok),
            "tokens": tokens_total, "duration_s": round(lr.duration_s, 3),
            "tokens_per_s": round(tokens_total / lr.duration_s, 1),
            "ttft_err_ms_p50": round(float(np.percentile(ta, 50)), 3),
            "ttft_err_ms_p99": round(float(np.percentile(ta, 99)), 3),
            "itl_err_ms_p50": round(float(np.percentile(ia, 50)), 3),
            "itl_err_ms_p99": round(float(np.percentile(ia, 99)), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ramp-s", type=float, default=1.0, help="spread each level's first wave over this long")
    ap.add_argument("--levels", default="1,64,256")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/loadgen_accuracy.json"))
    a = ap.parse_args()
    proc, url = start_server()
    try:
        rows = [level(url, n, a.tokens, a.interval_ms, a.ttft_ms, a.rounds, a.ramp_s)
                for n in map(int, a.levels.split(","))]
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"{'streams':>7} {'tokens/s':>10} {'TTFT err p50':>13} {'p99':>8} {'ITL err p50':>12} {'p99':>8}  (ms)")
    for r in rows:
        print(f"{r['streams']:>7} {r['tokens_per_s']:>10,.0f} {r['ttft_err_ms_p50']:>13.3f} "
              f"{r['ttft_err_ms_p99']:>8.3f} {r['itl_err_ms_p50']:>12.3f} {r['itl_err_ms_p99']:>8.3f}")
    ok = all(r["ttft_err_ms_p50"] < 1 and r["itl_err_ms_p50"] < 1 and r["ttft_err_ms_p99"] < 5
             and r["itl_err_ms_p99"] < 5 for r in rows) and max(r["tokens_per_s"] for r in rows) >= 20000
    others = {name: bool(shutil.which(name)) for name in ("vllm", "guidellm")}
    print("comparison tools: " + ", ".join(f"{k} {'found' if v else 'not installed (skipped)'}"
                                           for k, v in others.items()))
    print("targets met: " + ("yes" if ok else "NO"))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": f"{platform.machine()}, {platform.node()}", "cpus": __import__("os")
                                 .cpu_count(), "tokens_per_request": a.tokens, "interval_ms": a.interval_ms,
                                 "levels": {str(r["streams"]): r for r in rows}, "comparison_tools": others,
                                 "targets_met": ok}, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
