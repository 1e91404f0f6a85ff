"""A power-capped GPU: fit speed.yaml `power_clock_exponent` on one published sweep, check it on the others.

Physics: a card at its power limit settles at the clock where its draw meets the cap. Dynamic power goes as
C V^2 f, and along the card's voltage/frequency curve V rises with f, so draw grows faster than the clock and the
clock a cap allows falls slower than the cap: f / f_boost = (cap / stock TDP) ** a, 1 at and above stock TDP
(hardware.GPU.clock_scale). Pure V proportional to f and no fixed draw gives a = 1/3; the memory's and the
board's fixed draw and the voltage floor at low clocks make the clock fall faster, so a is fitted, once.
Compute-bound time (prefill matmuls, attention) scales with 1/f; memory-bound decode keeps the memory clock.

Fit: the `fit` sweep of benchmarks/data/power_cap_sweeps.yaml (club-3090, RTX 3090, Qwen3.6-27B dense, caps
190-390 W): each cap's predicted prefill over the prediction at the reference cap, against the measured ratio
(the model's absolute error at the reference cap is the speed model's, not the cap's). Check: the `heldout`
sweep (Qwen3.6-35B-A3B MoE, same card) and the published vLLM run at 230 W/card
(qwen3.6-35b-a3b-shape-agentworld-awq-2x3090-tp2-club-10k), never used in the fit. It also states the clock
the model takes against the SM clock the sweep logged.

Usage: python benchmarks/power_limit.py [--out benchmarks/results/power_limit.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import yaml

import speed_prediction as sp
from provenance import command
from rigbench import catalog
from rigbench.plan import speed

DATA = Path(__file__).parent / "data"
RESULTS = Path(__file__).parent / "results"
GRID = [round(0.30 + 0.05 * i, 2) for i in range(27)]        # 0.30 .. 1.60
VLLM_CHECK = "qwen3.6-35b-a3b-shape-agentworld-awq-2x3090-tp2-club-10k"


def _prefill(base: dict, cap: float | None, cal) -> float:
    spec, rig, plan = sp._PLANS[base["id"]]
    prompt, depth = int(base["prompt_tokens"]), int(base.get("prefill_depth") or 0)
    return speed.predict(plan, spec, rig.with_power_limit(cap), prompt_tokens=prompt, context=prompt + depth,
                         calibration=cal).prefill_tok_s.value


def sweep_rows(sweep: dict, base: dict, cal) -> list[dict]:
    ref = next(p for p in sweep["points"] if p[0] == sweep["reference_cap_w"])
    pref = _prefill(base, ref[0], cal)
    rows = []
    for cap, tps, _draw, mhz in sweep["points"]:
        g = sp._PLANS[base["id"]][1].with_power_limit(cap).gpus[0]
        ratio = _prefill(base, cap, cal) / pref
        rows.append({"cap_w": cap, "measured_ratio": round(tps / ref[1], 4), "predicted_ratio": round(ratio, 4),
                     "error": round(ratio / (tps / ref[1]) - 1, 4), "sm_mhz_logged": mhz,
                     "sm_mhz_model": round(g.boost_mhz)})
    return rows


def _loss(rows: list[dict]) -> float:
    return statistics.fmean(abs(math.log(1 + r["error"])) for r in rows)


def _stats(rows: list[dict]) -> dict:
    a = [abs(r["error"]) for r in rows]
    return {"points": len(a), "median_abs_error": round(statistics.median(a), 4), "worst_abs_error": round(max(a), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS / "power_limit.json")
    a = ap.parse_args()
    sweeps = yaml.safe_load((DATA / "power_cap_sweeps.yaml").read_text())
    entries = {e["id"]: e for e in yaml.safe_load((DATA / "published_speeds.yaml").read_text())}
    cal = speed.load_calibration()
    bases = {s["id"]: entries[s["base"]] for s in sweeps}
    for e in bases.values():
        sp.predict_published(e, cal, fitting=True)       # builds and caches the memory plan once
    defaults = catalog.speed()["defaults"]
    shipped = defaults["power_clock_exponent"]
    fit = [s for s in sweeps if s["split"] == "fit"]
    scores = {}
    try:
        for x in GRID:
            defaults["power_clock_exponent"] = x
            scores[x] = _loss([r for s in fit for r in sweep_rows(s, bases[s["id"]], cal)])
        best = min(scores, key=scores.get)
        defaults["power_clock_exponent"] = best
        out = {"command": command(), "fitted_exponent": best, "shipped_exponent": shipped,
               "fitted_on": [s["id"] for s in fit],
               "loss_by_exponent": {str(k): round(v, 4) for k, v in scores.items()},
               "sweeps": {}}
        for s in sweeps:
            rows = sweep_rows(s, bases[s["id"]], cal)
            below = [r for r in rows if r["cap_w"] < 350]
            out["sweeps"][s["id"]] = {"split": s["split"], "source": s["source"], "all": _stats(rows),
                                      "caps_below_tdp": _stats(below), "rows": rows}
            print(f"{s['id']} ({s['split']}): median |error| {_stats(rows)['median_abs_error']:.1%}, "
                  f"worst {_stats(rows)['worst_abs_error']:.1%}")
            for r in rows:
                print(f"  {r['cap_w']:4d} W  measured x{r['measured_ratio']:.3f}  "
                      f"predicted x{r['predicted_ratio']:.3f}  {r['error']:+.1%}   "
                      f"SM {r['sm_mhz_logged']} MHz logged, {r['sm_mhz_model']} modelled")
        e = entries[VLLM_CHECK]
        uncapped = sp.predict_published({k: v for k, v in e.items() if k != "power_limit_w"}, cal)
        capped = sp.predict_published(e, cal)
        out["vllm_check"] = {"id": VLLM_CHECK, "power_limit_w": e.get("power_limit_w"),
                             "measured": e["prefill_tok_s"], "predicted_without_cap": uncapped["prefill_predicted"],
                             "error_without_cap": uncapped["prefill_error"],
                             "predicted_with_cap": capped["prefill_predicted"],
                             "error_with_cap": capped["prefill_error"]}
        print(json.dumps(out["vllm_check"]))
    finally:
        defaults["power_clock_exponent"] = shipped
    print(f"fitted power_clock_exponent {best} (shipped {shipped})")
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if best == shipped else 1


if __name__ == "__main__":
    raise SystemExit(main())
