"""A packaged GGUF and its synthetic twin, side by side: prompt processing and generation speed.

The twin has the real file's exact tensor table (names, shapes, types) with random weights, written by
`rigbench synth`. If rigbench's synthetic models are to stand in for real ones when measuring speed,
the two must run at the same speed: the target is within 5% on pp and tg.

Usage: python benchmarks/synth_speed.py [--threads N] [--reps N] [--out benchmarks/results/synth_speed.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from provenance import command, machine
from rigbench import model, packaged, synth
from rigbench.engines.llamacpp import cpu_has_amx, find_binary


def bench(llama_bench: Path, gguf: Path, threads: int, reps: int, pp: int, tg: int) -> dict[str, float]:
    cmd = [str(llama_bench), "-m", str(gguf), "-p", str(pp), "-n", str(tg), "-r", str(reps), "-t", str(threads),
           "-o", "json"]
    if cpu_has_amx():
        cmd += ["--repack", "0"]  # ggml's AMX path crashes on some Q4_K models with repacked weights
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise SystemExit(f"llama-bench failed: {res.stderr.strip().splitlines()[-1:]}")
    out = {}
    for row in json.loads(res.stdout):
        key = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        out[key] = row["avg_ts"]
        out[key + "_stddev"] = row["stddev_ts"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/synth_speed.json"))
    a = ap.parse_args()
    real = packaged.qwen_coder_05b()
    twin = packaged.cache_dir() / "synth-twin-qwen2.5-coder-0.5b-q4_k_m.gguf"
    if not twin.exists():
        synth.write(model.load(str(real)), twin)
    llama_bench = find_binary(name="llama-bench")
    # alternate the two so drift in machine load hits both alike
    runs = {"real": [], "synthetic": []}
    for _ in range(2):
        runs["real"].append(bench(llama_bench, real, a.threads, a.reps, a.pp, a.tg))
        runs["synthetic"].append(bench(llama_bench, twin, a.threads, a.reps, a.pp, a.tg))
    pp_key, tg_key = f"pp{a.pp}", f"tg{a.tg}"
    rows = []
    for key in (pp_key, tg_key):
        r = sum(x[key] for x in runs["real"]) / len(runs["real"])
        s = sum(x[key] for x in runs["synthetic"]) / len(runs["synthetic"])
        rows.append({"test": key, "real_tok_s": round(r, 2), "synthetic_tok_s": round(s, 2),
                     "diff_pct": round(100 * (s - r) / r, 2)})
    print(f"{'test':<8} {'real tok/s':>11} {'synthetic tok/s':>16} {'diff %':>8}")
    for r in rows:
        print(f"{r['test']:<8} {r['real_tok_s']:>11.2f} {r['synthetic_tok_s']:>16.2f} {r['diff_pct']:>+8.2f}")
    ok = all(abs(r["diff_pct"]) <= 5 for r in rows)
    print("within 5%: " + ("yes" if ok else "NO"))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"model": real.name, "twin": twin.name, "threads": a.threads, "reps": a.reps,
                                 "command": command(), "machine": machine(),
                                 "python": sys.version.split()[0], "rows": rows, "runs": runs,
                                 "within_5pct": ok}, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
