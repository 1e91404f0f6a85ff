"""What does a proxy in front of a model server cost? rigbench's router and LiteLLM's proxy side by side, in
one run, in front of the same local fake upstream (rigbench.bench.fakeserver: first token `--ttft-ms` after
arrival, then one every `--interval-ms`, each chunk stamped with the server's monotonic clock).

- Added TTFT: closed-loop single-stream requests, direct and through each proxy, interleaved in `--repeats`
  rounds. View A: p50/p99 of TTFT through the proxy minus the same percentile direct. View B (only where the
  proxy passes chunks unchanged, so the server's stamps survive): per request, client TTFT minus the server's
  own first-token delay (first chunk's stamp - arrival stamp), through the proxy minus the same direct.
- Max sustained tokens/s: many concurrent streams at a token rate above what any of them can carry; the
  highest streamed-chunk rate over `--streams` levels (two waves of requests per level, one at 256). The
  client, the fake upstream and the proxy share this machine's cores, so these are ceilings of the whole
  loop, the same for each proxy.

LiteLLM runs its real proxy (`litellm --config ...`), installed from PyPI in its own virtualenv because its
pins would change the shared one (rich): `python -m venv .venv-litellm && .venv-litellm/bin/pip install
'litellm[proxy]'`. Run under the shared CPU lock:

    flock /tmp/rigbench-cpu.lock python benchmarks/router_overhead.py

Writes benchmarks/results/router_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from provenance import command, machine
from rigbench.bench.load import run, run_load
from rigbench.engines.process import free_port

ROOT = Path(__file__).resolve().parents[1]


def wait(url: str, proc: subprocess.Popen, what: str, timeout: float = 120, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not come up in {timeout:.0f} s")


def start_fake(ttft_ms: float, interval_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "rigbench.bench.fakeserver", "--port", str(port),
                          "--ttft-ms", str(ttft_ms), "--interval-ms", str(interval_ms)])
    url = f"http://127.0.0.1:{port}"
    wait(url + "/health", p, "the fake upstream")
    return p, url


def start_rigbench(upstream: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = tmp / "route.yaml"
    # a rule and an escalation policy are evaluated on every request, as in real use; accounting goes to a store
    cfg.write_text(yaml.safe_dump({
        "host": "127.0.0.1", "port": port, "db": f"sqlite:///{tmp / 'route.db'}", "log_requests": False,
        "upstreams": {"fast": {"url": upstream + "/v1"}, "strong": {"url": upstream + "/v1"}},
        "default": "fast", "rules": [{"to": "strong", "when": {"prompt_tokens_over": 100000}}],
        "escalation": {"to": "strong", "after_failed_tools": 3}, "fallback": {"fast": "strong"}}))
    p = subprocess.Popen([sys.executable, "-m", "rigbench", "route", str(cfg)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait(url + "/health", p, "rigbench route")
    return p, url


def start_litellm(binary: Path, upstream: str, tmp: Path) -> tuple[subprocess.Popen, str, dict]:
    port = free_port()
    key = "sk-" + secrets.token_hex(16)
    cfg = tmp / "litellm.yaml"
    cfg.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "ok", "litellm_params": {"model": "openai/ok", "api_base": upstream + "/v1",
                                                                "api_key": "fake"}}],
        "litellm_settings": {"telemetry": False}}))
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    p = subprocess.Popen([str(binary), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1"],
                         env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "litellm.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    wait(url + "/health/liveliness", p, "litellm", 180)
    return p, url, headers


def stream_load(url: str, headers: dict, **kw):
    """run_load with the proxy's auth header, if it needs one."""
    return run(run_load(url, headers=headers or None, **kw))


def payload(tokens: int) -> dict:
    return {"model": "ok", "max_tokens": tokens, "messages": [{"role": "user", "content": "Say hello."}]}


def ttft_round(url: str, headers: dict, n: int) -> dict:
    lr = stream_load(url + "/v1/chat/completions", headers, payload=lambda i: payload(4), concurrency=1,
                     requests=n, warmup=5, probe_key="rigbench_t")
    ok = [r for r in lr.results if r.ok and r.ttft is not None]
    ttft = np.array([r.ttft for r in ok]) * 1000
    # the server's own first-token delay, where its stamps came back unchanged
    stamped = [r for r in ok if r.probe and r.probe[0] and r.probe_arrival]
    beyond = np.array([r.ttft - (r.probe[0] - r.probe_arrival) for r in stamped]) * 1000 if stamped else None
    return {"ttft_ms": ttft, "beyond_server_ms": beyond, "failed": len(lr.results) - len(ok)}


def throughput(url: str, headers: dict, streams: int, tokens: int) -> dict:
    lr = stream_load(url + "/v1/chat/completions", headers, payload=lambda i: payload(tokens), concurrency=streams,
                     requests=streams * 2 if streams <= 64 else streams, warmup=1, time_limit=180)
    ok = [r for r in lr.results if r.ok]
    chunks = sum(len(r.chunk_times) for r in ok)
    return {"streams": streams, "requests": len(lr.results), "failed": len(lr.results) - len(ok),
            "tokens": chunks, "duration_s": round(lr.duration_s, 3), "tokens_per_s": round(chunks / lr.duration_s, 1)}


def pct(a: np.ndarray, q: float) -> float:
    return round(float(np.percentile(a, q)), 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200, help="TTFT requests per proxy per round")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--ttft-ms", type=float, default=5.0)
    ap.add_argument("--interval-ms", type=float, default=1.0)
    ap.add_argument("--streams", default="16,64,256", help="concurrency levels for the throughput ceiling")
    ap.add_argument("--tokens", type=int, default=300, help="tokens per throughput request")
    ap.add_argument("--litellm", type=Path, default=ROOT / ".venv-litellm/bin/litellm")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/router_overhead.json")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="router-overhead-"))
    procs: list[subprocess.Popen] = []
    try:
        fake, upstream = start_fake(a.ttft_ms, a.interval_ms)
        procs.append(fake)
        rb, rb_url = start_rigbench(upstream, tmp)
        procs.append(rb)
        targets = {"direct": (upstream, {}), "rigbench": (rb_url, {})}
        litellm_note = None
        if a.litellm.is_file():
            ll, ll_url, ll_headers = start_litellm(a.litellm, upstream, tmp)
            procs.append(ll)
            targets["litellm"] = (ll_url, ll_headers)
        else:
            litellm_note = f"skipped: {a.litellm} not found (see the docstring to install it)"
            print(litellm_note)
        rounds: dict[str, list[dict]] = {k: [] for k in targets}
        for rep in range(a.repeats):
            order = list(targets)[rep % len(targets):] + list(targets)[:rep % len(targets)]
            for name in order:
                rounds[name].append(ttft_round(*targets[name], a.requests))
                r = rounds[name][-1]
                print(f"round {rep + 1} {name}: TTFT p50 {pct(r['ttft_ms'], 50):.3f} ms p99 "
                      f"{pct(r['ttft_ms'], 99):.3f} ms ({r['failed']} failed)", flush=True)
        result: dict = {"command": command(), "machine": machine(), "python": platform.python_version(),
                        "cores": os.cpu_count(),
                        "upstream": {"ttft_ms": a.ttft_ms, "interval_ms": a.interval_ms},
                        "requests_per_round": a.requests, "repeats": a.repeats, "proxies": {}}
        direct = rounds["direct"]
        for name in targets:
            if name == "direct":
                continue
            per_round = []
            for mine, base in zip(rounds[name], direct, strict=True):
                d = {"added_ttft_ms_p50": round(pct(mine["ttft_ms"], 50) - pct(base["ttft_ms"], 50), 3),
                     "added_ttft_ms_p99": round(pct(mine["ttft_ms"], 99) - pct(base["ttft_ms"], 99), 3)}
                if mine["beyond_server_ms"] is not None and base["beyond_server_ms"] is not None:
                    d["view_b_added_ms_p50"] = round(pct(mine["beyond_server_ms"], 50)
                                                     - pct(base["beyond_server_ms"], 50), 3)
                    d["view_b_added_ms_p99"] = round(pct(mine["beyond_server_ms"], 99)
                                                     - pct(base["beyond_server_ms"], 99), 3)
                per_round.append(d)
            all_mine = np.concatenate([r["ttft_ms"] for r in rounds[name]])
            all_base = np.concatenate([r["ttft_ms"] for r in direct])
            result["proxies"][name] = {
                "added_ttft_ms_p50": round(pct(all_mine, 50) - pct(all_base, 50), 3),
                "added_ttft_ms_p99": round(pct(all_mine, 99) - pct(all_base, 99), 3),
                "ttft_ms_p50": pct(all_mine, 50), "ttft_ms_p99": pct(all_mine, 99),
                "stamps_pass_through": rounds[name][0]["beyond_server_ms"] is not None,
                "rounds": per_round, "failed": sum(r["failed"] for r in rounds[name])}
        all_base = np.concatenate([r["ttft_ms"] for r in direct])
        result["direct"] = {"ttft_ms_p50": pct(all_base, 50), "ttft_ms_p99": pct(all_base, 99)}
        if litellm_note:
            result["litellm_note"] = litellm_note
        levels = [int(x) for x in a.streams.split(",")]
        for name in targets:
            runs = [throughput(*targets[name], s, a.tokens) for s in levels]
            for t in runs:
                print(f"throughput {name} at {t['streams']} streams: {t['tokens_per_s']:,.0f} tok/s "
                      f"({t['failed']} failed)", flush=True)
            best = max(runs, key=lambda t: t["tokens_per_s"])
            dest = result["direct"] if name == "direct" else result["proxies"][name]
            dest["max_tokens_per_s"] = best["tokens_per_s"]
            dest["throughput_levels"] = runs
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")
        for name, r in result["proxies"].items():
            print(f"{name}: added TTFT p50 {r['added_ttft_ms_p50']:.3f} ms, p99 {r['added_ttft_ms_p99']:.3f} ms; "
                  f"max {r['max_tokens_per_s']:,.0f} tok/s (direct {result['direct']['max_tokens_per_s']:,.0f})")
        print(f"written to {a.out}")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
