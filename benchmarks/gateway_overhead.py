"""What does the recording gateway cost an agent? Added time to first token, per request, with recording on.

The gateway (rigbench.route.gateway, the router with sessions and a turn record per request) runs in its own
process in front of rigbench's fake OpenAI server (first token `--ttft-ms` after arrival, then one every
`--interval-ms`), with one session whose turns are written to a real SQLite store, as in an eval. Closed-loop
single-stream requests go direct and through the gateway, interleaved in `--repeats` rounds.

View A: p50/p99 of client TTFT through the gateway minus the same percentile direct.
View B: per request, client TTFT minus the server's own first-token delay (the first chunk carries the server's
monotonic stamp of arrival and of the chunk), through the gateway minus the same direct; medians.
The same process also serves the plain router path (no session, nothing recorded), interleaved with the others:
its added TTFT is the router's, and the difference is what recording costs.
Also checked: every request made through the gateway is in the store as a turn, with the server's token counts.

Budget: the router's, under 1 ms added at p50.

    flock /tmp/rigbench-cpu.lock python benchmarks/gateway_overhead.py

Writes benchmarks/results/gateway_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from rigbench import store
from rigbench.engines.process import free_port

ROOT = Path(__file__).resolve().parents[1]

GATEWAY = r"""
import sys, time
from rigbench import store
from rigbench.route.gateway import Gateway
db = store.connect(sys.argv[2])
rid = store.new_run(db, "eval")
seq = [0]
def write(kind, data, t):
    seq[0] += 1
    store.add_event(db, rid, "bench", 1, seq[0], t, kind, data)
gw = Gateway(sys.argv[1]).start()
s = gw.open(write)
print(gw.base(s), rid, flush=True)
while True:
    time.sleep(3600)
"""


def start_fake(ttft_ms: float, interval_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "rigbench.bench.fakeserver", "--port", str(port), "--ttft-ms",
                          str(ttft_ms), "--interval-ms", str(interval_ms)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/health", timeout=1)
            return p, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("the fake server did not start")


def ttft(client: httpx.Client, base: str) -> tuple[float, float]:
    """(client TTFT, server's own first-token delay) of one streamed request, seconds."""
    body = {"model": "ok", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]}
    t0 = time.perf_counter()
    first = server = None
    with client.stream("POST", base + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if first is None and line.startswith("data: {"):
                first = time.perf_counter() - t0
                d = json.loads(line[6:])
                server = d["rigbench_t"] - d["rigbench_arrival"]
    if first is None:
        raise RuntimeError("no chunk")
    return first, server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ttft-ms", type=float, default=5.0)
    ap.add_argument("--interval-ms", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gateway_overhead.json")
    args = ap.parse_args()
    fake, url = start_fake(args.ttft_ms, args.interval_ms)
    tmp = Path(tempfile.mkdtemp())
    db_url = f"sqlite:///{tmp / 'g.db'}"
    gw = subprocess.Popen([sys.executable, "-c", GATEWAY, url, db_url], stdout=subprocess.PIPE, text=True)
    try:
        base, rid = gw.stdout.readline().split()
        plain = base.split("/t/")[0]
        direct, through, routed, d_srv, t_srv = [], [], [], [], []
        with httpx.Client(timeout=30) as c:
            for _ in range(20):       # warm every path
                ttft(c, url), ttft(c, base), ttft(c, plain)
            for _ in range(args.repeats):
                for _ in range(args.requests):
                    a, sa = ttft(c, url)
                    b, sb = ttft(c, base)
                    routed.append(ttft(c, plain)[0])
                    direct.append(a)
                    through.append(b)
                    d_srv.append(a - sa)
                    t_srv.append(b - sb)
        time.sleep(1.0)
        turns = [e for e in store.task_events(store.connect(db_url), int(rid)) if e["kind"] == "turn"]
    finally:
        gw.kill()
        fake.kill()
    d, t, r = np.array(direct) * 1000, np.array(through) * 1000, np.array(routed) * 1000
    n = 20 + args.repeats * args.requests
    res = {
        "command": "python benchmarks/gateway_overhead.py " + " ".join(sys.argv[1:]),
        "requests": args.repeats * args.requests, "ttft_ms_upstream": args.ttft_ms,
        "direct_ttft_ms": {"p50": round(float(np.percentile(d, 50)), 3), "p99": round(float(np.percentile(d, 99)), 3)},
        "gateway_ttft_ms": {"p50": round(float(np.percentile(t, 50)), 3), "p99": round(float(np.percentile(t, 99)), 3)},
        "added_ms_view_a": {"p50": round(float(np.percentile(t, 50) - np.percentile(d, 50)), 3),
                            "p99": round(float(np.percentile(t, 99) - np.percentile(d, 99)), 3)},
        "router_added_ms_p50": round(float(np.percentile(r, 50) - np.percentile(d, 50)), 3),
        "recording_added_ms_p50": round(float(np.percentile(t, 50) - np.percentile(r, 50)), 3),
        "added_ms_view_b_median": round(float(np.median(np.array(t_srv) - np.array(d_srv)) * 1000), 3),
        "turns_recorded": len(turns), "turns_expected": n,
        "turns_with_tokens": sum(1 for e in turns if e["data"].get("output_tokens") == 4),
        "budget_p50_ms": 1.0,
    }
    print(json.dumps(res, indent=1))
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
