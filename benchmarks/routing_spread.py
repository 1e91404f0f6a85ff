"""How a synthetic twin's router spreads one u-batch over its experts, read from llama.cpp itself.

For each router skew, writes a scaled-down synthetic Qwen3.6-35B-A3B (all 256 experts, top-8, 4 layers),
runs llama.cpp's `llama-imatrix` (its eval callback counts the tokens each expert of each MUL_MAT_ID gets)
over single u-batches of real code (rigbench's own source), and compares the experts touched per layer and
the share of the most popular 10% with `rigbench.plan.routing.spread`, the model the speed prediction uses.
Writes benchmarks/results/routing_spread.json.

Usage: python benchmarks/routing_spread.py [--skews 0,0.3,0.5] [--tokens 512] [--batches 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader

from rigbench import synth
from rigbench.engines import llamacpp
from rigbench.model import load
from rigbench.plan import routing

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def code_text() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "src" / "rigbench").rglob("*.py")))


def counts_per_layer(imatrix: Path) -> list[np.ndarray]:
    """Tokens per expert of each layer's ffn_up_exps, from llama-imatrix's GGUF output."""
    r = GGUFReader(str(imatrix))
    out = []
    for t in r.tensors:
        if t.name.endswith("ffn_up_exps.weight.counts"):
            out.append(np.asarray(t.data, dtype=np.float64).ravel())
    return out


def measure(model: Path, text: str, tokens: int, batches: int, work: Path) -> list[np.ndarray]:
    imatrix = llamacpp.find_binary(name="llama-imatrix")
    step = len(text) // batches
    layers = []
    for b in range(batches):
        src = work / f"text{b}.txt"
        src.write_text(text[b * step:])
        out = work / f"im{b}.gguf"
        subprocess.run([str(imatrix), "-m", str(model), "-f", str(src), "-c", str(tokens), "-b", str(tokens),
                        "-ub", str(tokens), "--chunks", "1", "-o", str(out), "--no-repack", "-t", "2"],
                       check=True, capture_output=True, text=True)
        layers += counts_per_layer(out)
    return layers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skews", default="0,0.3,0.5,0.8")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS / "routing_spread.json")
    a = ap.parse_args()
    spec = synth.scale_down(load("qwen3.6-35b-a3b"), layers=4)
    assert spec.moe
    text, rows = code_text(), []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for s in (float(x) for x in a.skews.split(",")):
            model = synth.write(spec, work / "twin.gguf", "Q4_K_M", router_skew=s)
            layers = measure(model, text, a.tokens, a.batches, work)
            model.unlink()
            distinct = [float(np.count_nonzero(c)) for c in layers]
            top10 = [float(np.sort(c)[::-1][: spec.moe.experts // 10].sum() / c.sum()) for c in layers]
            model_sp = routing.spread(spec.moe.experts, spec.moe.top_k, a.tokens, s)
            row = {"skew": s, "tokens": a.tokens, "layers_measured": len(layers),
                   "distinct_measured": round(statistics.mean(distinct), 1),
                   "distinct_model": round(model_sp.distinct, 1),
                   "top10_share_measured": round(statistics.mean(top10), 3),
                   "top10_share_model": round(model_sp.top10_share, 3)}
            row["distinct_error"] = round(row["distinct_model"] / row["distinct_measured"] - 1, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {"max_abs_distinct_error": max(abs(r["distinct_error"]) for r in rows),
               "source": "llama-imatrix per-expert counts (llama.cpp eval callback), CPU backend, 2 threads"}
    print(json.dumps(summary))
    a.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
