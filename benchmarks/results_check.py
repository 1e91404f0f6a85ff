"""Do the committed results still come out of their commands? Regenerates the cheap ones and compares:

- speed_prediction.json, power_limit.json: every figure is computed from committed inputs (the *.calib.jsonl
  measurements, the published set and power-cap sweeps, the shipped calibration), so each must match exactly;
- plan_accuracy.json: the planner's bytes are computed (exact); the actual bytes of the weights come from the
  GGUF's tensor table (exact); the other actual bytes are llama-server's own allocation log, measured here,
  so they may move with the llama.cpp build: within 3%. Without a llama-server only the weights are compared.

Usage: python benchmarks/results_check.py [speed_prediction] [plan_accuracy] [power_limit]  (make results-check)
Prints one line per difference and exits 1 if there is any; the command that remakes a file is in its
`command` field and in benchmarks/results/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEASURED_TOLERANCE = 0.03
IGNORED = {"command", "machine", "python", "llama_server"}     # how and where, not what


def _walk(committed, fresh, path: str = "") -> list[str]:
    """Every place where two JSON values differ (dict keys in IGNORED left out at the top level)."""
    if isinstance(committed, dict) and isinstance(fresh, dict):
        out = []
        for k in sorted(set(committed) | set(fresh)):
            if not path and k in IGNORED:
                continue
            if k not in fresh:
                out.append(f"{path}{k}: committed, not made any more")
            elif k not in committed:
                out.append(f"{path}{k}: made now, not committed")
            else:
                out += _walk(committed[k], fresh[k], f"{path}{k}.")
        return out
    if isinstance(committed, list) and isinstance(fresh, list):
        if len(committed) != len(fresh):
            return [f"{path.rstrip('.')}: {len(committed)} entries committed, {len(fresh)} made now"]
        return [d for i, (a, b) in enumerate(zip(committed, fresh, strict=True)) for d in _walk(a, b, f"{path}{i}.")]
    if committed != fresh:
        return [f"{path.rstrip('.')}: committed {committed!r}, made now {fresh!r}"]
    return []


def compare_speed_prediction(committed: dict, fresh: dict) -> list[str]:
    return _walk(committed, fresh)


def compare_plan_accuracy(committed: dict, fresh: dict) -> list[str]:
    def key(r):
        return r["model"], r["what"], r["config"]

    have = {key(r): r for r in fresh["rows"]}
    server = any(not r["what"].startswith("weights") for r in fresh["rows"])
    out = []
    for r in committed["rows"]:
        if not server and not r["what"].startswith("weights"):
            continue
        k = key(r)
        if k not in have:
            out.append(f"{' / '.join(k)}: committed, not made any more")
            continue
        f = have.pop(k)
        if f["predicted_bytes"] != r["predicted_bytes"]:
            out.append(f"{' / '.join(k)}: predicted {r['predicted_bytes']} committed, {f['predicted_bytes']} now")
        exact = r["what"].startswith("weights")
        a, b = r["actual_bytes"], f["actual_bytes"]
        if (a != b) if exact else abs(b - a) > MEASURED_TOLERANCE * max(a, 1):
            out.append(f"{' / '.join(k)}: actual {a} committed, {b} now"
                       + ("" if exact else f" (more than {MEASURED_TOLERANCE:.0%} apart)"))
    out += [f"{' / '.join(k)}: made now, not committed" for k, r in have.items()
            if server or r["what"].startswith("weights")]
    return out


CHECKS = {
    "speed_prediction": (["benchmarks/speed_prediction.py"], compare_speed_prediction),
    "plan_accuracy": (["benchmarks/plan_accuracy.py"], compare_plan_accuracy),
    "power_limit": (["benchmarks/power_limit.py"], compare_speed_prediction),     # computed, so exact
}


def check(name: str) -> list[str]:
    argv, compare = CHECKS[name]
    committed = json.loads((RESULTS / f"{name}.json").read_text())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                       if p)}
    with tempfile.TemporaryDirectory(prefix="results-check-") as tmp:
        out = Path(tmp) / f"{name}.json"
        r = subprocess.run([sys.executable, *argv, "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                           text=True)
        if not out.exists():
            tail = (r.stdout + r.stderr).strip().splitlines()[-5:]
            return [f"`{committed.get('command')}` wrote nothing (exit {r.returncode}): " + " | ".join(tail)]
        return compare(committed, json.loads(out.read_text()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", choices=[[], *CHECKS], default=[])
    names = ap.parse_args().names or list(CHECKS)
    bad = 0
    for name in names:
        diffs = check(name)
        print(f"{name}.json: " + ("agrees with its command" if not diffs else f"{len(diffs)} differences"))
        for d in diffs[:40]:
            print(f"  {d}")
        bad += bool(diffs)
    if bad:
        print("a committed result no longer matches its command: run the command (benchmarks/results/README.md) "
              "and commit the file, or find what changed the figures")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
