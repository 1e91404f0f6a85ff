"""`rigbench tune`'s pick against what people run, on the GPU machine, with the model's prediction beside each.

`plan` (anywhere: the predictions use the catalog's H200 rig and the shipped calibration) writes the
configurations: per model twin and VRAM budget, the pick, the hand-tuned line (`--fit -ub 2048 -b 2048
--no-mmap`), `--no-mmap` alone, `--fit` (llama.cpp's defaults) and `--cpu-moe`, each with its predicted short
turn (a fresh 8K code prompt) and long turn (3K new tokens after 32K cached), and the predicted gains.

`measure` (the GPU machine) runs each configuration under a ballast that leaves only the budget free, and sees
every turn three ways: rigbench's client (TTFT and streamed tokens), llama-server's own `timings`, and, for the
pick and the hand-tuned line, llama-bench with the same placement (the short prompt). It appends one record per
configuration to $OUT/tune_views.jsonl as it goes and stops starting new ones near DEADLINE seconds, so a
later call carries on with what is left (records already in .device/results are skipped).

`summarize` joins the records with the predictions into benchmarks/results/tune_vs_baselines.json.

Usage: python benchmarks/gpu/tune_vs_baselines.py plan [--out configs.json]
       python benchmarks/gpu/tune_vs_baselines.py measure CONFIGS.json [NAME ...]
       python benchmarks/gpu/tune_vs_baselines.py summarize CONFIGS.json RECORDS.jsonl... [--out FILE]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("OUT", "."))
SERVER = Path(os.environ.get("SERVER_BIN", "build/bin/llama-server"))
BENCH = Path(os.environ.get("BENCH_BIN", "build/bin/llama-bench"))
SHORT, CACHED, NEW, OUTPUT = (int(os.environ.get(k, v)) for k, v in
                              (("SHORT", 8192), ("CACHED", 32768), ("NEW", 3072), ("OUTPUT", 64)))
CTX = int(os.environ.get("CTX", 40960))
MODELS = {"35b": ("qwen3.6-35b-a3b", ".device/models/q35b-real.gguf", 0.4),
          "27b": ("qwen3.6-27b", ".device/models/q27b.gguf", None)}
BUDGETS = (16.0, 12.0)
HAND = ["--fit", "on", "-ub", "2048", "-b", "2048", "--no-mmap"]


# ---- plan ----------------------------------------------------------------------------------------------------

def predict(spec, rig, args: list[str]) -> dict:
    from rigbench.engines.options import parse_llama_args
    from rigbench.plan import memory, speed, tune

    p = memory.plan(spec, rig, parse_llama_args(args), "Q4_K_M")
    cal = speed.load_calibration()
    coef = cal.for_plan(p, rig)
    out = {}
    for name, new, ctx, n_out in (("short", SHORT, SHORT, OUTPUT), ("fill", CACHED, CACHED, 1),
                                  ("long", NEW, CACHED + NEW, OUTPUT)):
        pre, dec = speed.agent_turn_seconds(p, spec, rig, coef, new, ctx, n_out)
        out[name] = {"prefill_tok_s": round(new / pre, 1), "decode_tok_s": round(n_out / dec, 2),
                     "turn_s": round(pre + dec, 3),
                     "bound_s": round(tune.lower_bound(p, spec, rig, new, ctx, n_out), 3)}
    out["placement"] = [a for a in p.command[1:]]        # --fit resolved into explicit flags: llama-bench's view
    out["calibration"] = coef.source
    return out


def repredict(path: Path) -> None:
    """The predictions of a configurations file again (another OUTPUT, a changed model), the picks kept."""
    from rigbench import hardware
    from rigbench.model import load

    configs = json.loads(path.read_text())
    for c in configs:
        spec = load(c["model"])
        if c["router_skew"] is not None:
            spec = spec.model_copy(update={"router_skew": c["router_skew"]})
        c["predicted"] = predict(spec, hardware.load("h200").with_vram(c["budget_gib"]), c["args"])
    path.write_text(json.dumps(configs, indent=1))


def plan(out: Path) -> None:
    from rigbench import hardware
    from rigbench.model import load
    from rigbench.plan import tune

    configs = []
    for key, (model, file, skew) in MODELS.items():
        spec = load(model)
        if skew is not None:
            spec = spec.model_copy(update={"router_skew": skew})
        for budget in BUDGETS:
            rig = hardware.load("h200").with_vram(budget)
            r = tune.tune(spec, rig, "Q4_K_M", CTX, tune.Turn(prompt=SHORT, output=OUTPUT))
            common = ["-c", str(CTX), "-np", "1"]
            pick = [a for a in r.pick.args[1:] if a not in ("-m",)]
            rows = {"pick": pick, "hand": common + HAND, "nommap": common + ["--no-mmap"], "fit": common}
            if spec.is_moe:
                rows["cpumoe"] = common + ["-ngl", "99", "--cpu-moe"]
            b = f"{budget:g}"
            for kind, args in rows.items():
                same = None
                if kind == "pick" and r.pick.args == r.baseline.args:
                    same = f"{key}-hand{b}"
                elif kind == "cpumoe" and budget != BUDGETS[0]:
                    same = f"{key}-cpumoe{BUDGETS[0]:g}"   # --cpu-moe needs a few GiB: the budget does not bind
                configs.append({"name": f"{key}-{kind}{b}", "kind": kind, "model": model, "file": file,
                                "router_skew": skew, "budget_gib": budget, "args": args, "same_as": same,
                                "predicted": predict(spec, rig, args), "tune_gain": r.gain, "verdict": r.verdict})
            print(key, b, "pick:", " ".join(pick), "| gain", r.gain, "|", r.verdict, flush=True)
    out.write_text(json.dumps(configs, indent=1))


# ---- measure (the GPU machine) -------------------------------------------------------------------------------

def ballast(budget_gib: float) -> subprocess.Popen:
    code = (f"import torch,time\nfree,total=torch.cuda.mem_get_info()\nn=free-int({budget_gib}*2**30)\n"
            "x=torch.empty(n,dtype=torch.uint8,device='cuda')\nprint('held',n,flush=True)\ntime.sleep(3600)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    print(p.stdout.readline().strip(), flush=True)
    return p


def _views(r, new_tokens: int) -> dict:
    if r.error or r.ttft is None:
        return {"error": r.error or "no first token"}
    t = r.server_timings or {}
    e2e = r.e2e or 0.0
    return {"prompt_tokens": r.prompt_tokens, "server_prompt_n": t.get("prompt_n"), "output_tokens": r.output_tokens,
            "rigbench_prefill_tok_s": round(new_tokens / r.ttft, 1),
            "rigbench_decode_tok_s": round((r.output_tokens - 1) / (e2e - r.ttft), 2) if e2e > r.ttft else None,
            "server_prefill_tok_s": round(t.get("prompt_per_second", 0.0), 1),
            "server_decode_tok_s": round(t.get("predicted_per_second", 0.0), 2),
            "ttft_s": round(r.ttft, 3), "turn_s": round(e2e, 3)}


def turns(url: str) -> dict:
    """A fresh short prompt; then a long context: CACHED tokens sent once (the cache fill, timed too) and the
    same tokens with NEW more, cached prefix reused."""
    from rigbench.bench.suite import BenchConfig, Suite

    suite = Suite(BenchConfig(url=url, scenarios=["turn"], repeats=1, request_timeout=400, stall_timeout=300,
                              time_limit=500))

    def one(prompt: str, out: int, cache: bool) -> object:
        payload = {"model": suite.info.model, "prompt": prompt, "max_tokens": out, "min_tokens": out,
                   "ignore_eos": True, "temperature": 0.0, "cache_prompt": cache}
        return suite.load("turn", lambda k: payload, requests=1).results[0]

    res = {"short": _views(one(suite.prompt(SHORT, 9100), OUTPUT, False), SHORT)}
    prefix = suite.prompt(CACHED, 9200)
    res["fill"] = _views(one(prefix, 1, True), CACHED)
    r = one(prefix + suite.prompt(NEW, 9300), OUTPUT, True)
    res["long"] = _views(r, (r.server_timings or {}).get("prompt_n") or NEW)
    return res


def measure(c: dict) -> dict:
    from rigbench.engines import llamabench, llamacpp
    from rigbench.engines.options import parse_llama_args

    rec = {k: c[k] for k in ("name", "kind", "model", "budget_gib", "args", "predicted")}
    hold = ballast(c["budget_gib"]) if c.get("budget_gib") and os.environ.get("NO_BALLAST") != "1" else None
    t0 = time.monotonic()
    try:
        o = parse_llama_args(["-m", c["file"], *c["args"]])
        log = OUT / f"server-{c['name']}.log"
        server = llamacpp.start(llamacpp.launch_spec(o, SERVER, gpu=True), log, timeout=400)
        rec["load_s"] = round(time.monotonic() - t0, 1)
        try:
            rec.update(turns(server.url))
        finally:
            server.stop()
        log.unlink(missing_ok=True)      # few files come back: logs of failures only
        if c["kind"] in ("pick", "hand") and BENCH.exists():
            time.sleep(3)
            try:
                b = llamabench.run(BENCH, o, SHORT, repeats=1, timeout=300)
                rec["llama_bench"] = {"pp_tok_s": round(b.tok_s, 1), "raw": b.model_dump()}
            except Exception as e:  # the other two views stand on their own
                rec["llama_bench_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    finally:
        if hold:
            hold.kill()
            hold.wait()
            time.sleep(2)
    rec["wall_s"] = round(time.monotonic() - t0, 1)
    return rec


def measure_all(configs_path: Path, names: list[str]) -> None:
    configs = json.loads(configs_path.read_text())
    done_dir = Path(".device/results")
    done = set()
    for f in done_dir.glob("*tune_views.jsonl") if done_dir.is_dir() else []:
        done |= {json.loads(line)["name"] for line in f.read_text().splitlines() if line.strip()
                 and "error" not in json.loads(line)}
    deadline = float(os.environ.get("DEADLINE", 1e9))
    start = time.monotonic()
    # the comparisons that matter first: the pick and the hand-tuned line of every model and budget
    # (named configurations go in the order named)
    order = {"pick": 0, "hand": 1, "nommap": 2, "fit": 3, "cpumoe": 4}
    key = (lambda c: names.index(c["name"]) if c["name"] in names else 99) if names else \
        (lambda c: order.get(c["kind"], 9))
    for c in sorted(configs, key=key):
        if (names and c["name"] not in names) or c["name"] in done or c.get("same_as"):
            continue
        left = deadline - (time.monotonic() - start)
        p = c["predicted"]
        need = 25 + 1.4 * (p["short"]["turn_s"] + p["long"]["turn_s"] + p["fill"]["turn_s"])
        need += 25 if c["kind"] in ("pick", "hand") else 0
        if left < need:
            print(f"skip {c['name']}: {left:.0f} s left, about {need:.0f} needed", flush=True)
            continue
        rec = measure(c)
        with (OUT / "tune_views.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if done_dir.is_dir():
            with (done_dir / "tune_views.jsonl").open("a") as f:
                f.write(json.dumps(rec) + "\n")
        brief = {k: rec.get(k) for k in ("name", "load_s", "wall_s", "error")}
        for t in ("short", "fill", "long"):
            v = rec.get(t) or {}
            brief[t] = (v.get("turn_s"), v.get("rigbench_prefill_tok_s"), v.get("server_prefill_tok_s"),
                        v.get("rigbench_decode_tok_s"), v.get("server_decode_tok_s"), v.get("error"))
        brief["pred"] = {t: rec["predicted"][t]["turn_s"] for t in ("short", "long")}
        brief["bench"] = (rec.get("llama_bench") or {}).get("pp_tok_s") or rec.get("llama_bench_error")
        print(json.dumps(brief), flush=True)


# ---- summarize -----------------------------------------------------------------------------------------------

def summarize(configs_path: Path, records: list[Path], out: Path) -> None:
    configs = {c["name"]: c for c in json.loads(configs_path.read_text())}
    # the newest good record of each configuration (records carry their run: a day, a letter for a later machine
    # or repeat that day); every run's measured gains are kept beside the newest for the checks
    recs: dict[str, dict] = {}
    history: dict[str, list[dict]] = {}
    for f in records:
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r["name"] in configs and r["args"] != configs[r["name"]]["args"]:
                    continue                      # an earlier pick under the same name: not this configuration
                if "error" not in r or r["name"] not in recs:
                    recs[r["name"]] = r
                if "error" not in r and "turn_s" in (r.get("short") or {}):
                    history.setdefault(r["name"], []).append(r)
    rows, errors = [], []
    by_run: dict[str, list[float]] = {}
    for name, c in configs.items():
        r = recs.get(c.get("same_as") or name)
        failed = r is not None and "turn_s" not in (r.get("short") or {})
        if r is None or "error" in r or failed:
            err = (r or {}).get("error") or ((r or {}).get("short") or {}).get("error") or "not measured (time)"
            rows.append({"name": name, "kind": c["kind"], "args": c["args"], "measured": None, "error": err,
                         "predicted": c["predicted"]})
            continue
        row = {"name": name, "kind": c["kind"], "model": c["model"], "budget_gib": c["budget_gib"],
               "args": c["args"], "same_as": c.get("same_as"), "note": c.get("note"), "run": r.get("run"),
               "views": r.get("views", "rigbench's client, llama-server's timings")}
        for t in ("short", "fill", "long"):
            m, p = r.get(t) or {}, c["predicted"][t]
            if "turn_s" not in m:
                continue
            row[t] = {"predicted": p, "measured": {k: m.get(k) for k in (
                "turn_s", "ttft_s", "rigbench_prefill_tok_s", "server_prefill_tok_s", "rigbench_decode_tok_s",
                "server_decode_tok_s", "server_prompt_n")},
                "turn_error": round(p["turn_s"] / m["turn_s"] - 1, 3),
                "bound_ratio": round(m["turn_s"] / p["bound_s"], 2) if p["bound_s"] else None}
            errors.append(abs(row[t]["turn_error"]))
            by_run.setdefault(r.get("run"), []).append(abs(row[t]["turn_error"]))
        if r.get("llama_bench"):
            row["llama_bench_pp_tok_s"] = r["llama_bench"]["pp_tok_s"]
        row["fill_prefill_tok_s"] = (r.get("fill") or {}).get("server_prefill_tok_s")
        rows.append(row)
    by = {r["name"]: r for r in rows}
    checks = []
    for key in MODELS:
        for b in BUDGETS:
            g = f"{b:g}"
            pick = by.get(f"{key}-pick{g}")
            if pick is None or "short" not in pick:
                pick = by.get(f"{key}-pick{g}b")          # the planned pick failed: the adjusted one
            hands = [by.get(f"{key}-hand{g}"), by.get(f"{key}-nommap{g}")]
            for t in ("short", "long"):
                if not pick or t not in pick:
                    continue
                hs = [h for h in hands if h and t in h]
                if not hs:
                    continue
                best = min(hs, key=lambda h: h[t]["measured"]["turn_s"])
                hand = by.get(f"{key}-hand{g}")
                pred_gain = (hand[t]["predicted"]["turn_s"] / pick[t]["predicted"]["turn_s"]) if hand and t in hand \
                    else None
                meas_gain = (hand[t]["measured"]["turn_s"] / pick[t]["measured"]["turn_s"]) if hand and t in hand \
                    else None
                vs_best = best[t]["measured"]["turn_s"] / pick[t]["measured"]["turn_s"]
                # every run that measured both lines (a gain's spread between machines and repeats); the
                # check is on their median, each run's gain is kept beside it
                by_run_gain = {}
                if hand:
                    for rp in history.get(pick["name"], []):
                        for rh in history.get(hand["name"], []):
                            if rp.get("run") == rh.get("run") and t in rp and t in rh:
                                by_run_gain[rp["run"]] = round(rh[t]["turn_s"] / rp[t]["turn_s"], 3)
                gains = list(by_run_gain.values()) or ([meas_gain] if meas_gain else [])
                median_gain = statistics.median(gains) if gains else None
                checks.append({"model": key, "budget_gib": b, "turn": t, "pick": pick["name"], "run": pick.get("run"),
                               "measured_gain_by_run": by_run_gain,
                               "best_hand_tuned": best["name"],
                               "pick_vs_best_hand_tuned": round(vs_best, 3),
                               "not_slower_beyond_5pct": vs_best >= 0.95 and min(gains or [1.0]) >= 0.95,
                               "predicted_gain_vs_hand": round(pred_gain, 3) if pred_gain else None,
                               "measured_gain_vs_hand": round(meas_gain, 3) if meas_gain else None,
                               "median_measured_gain": round(median_gain, 3) if median_gain else None,
                               "runs_gain_at_least_15pct": f"{sum(g >= 1.15 for g in gains)}/{len(gains)}",
                               "gain_holds": None if not pred_gain or pred_gain < 1.2 else (median_gain or 0) >= 1.15})
    # every run's record of each configuration, not only the newest: the spread between machines and repeats
    every = [abs(configs[n]["predicted"][t]["turn_s"] / r[t]["turn_s"] - 1) for n, rs in history.items()
             if n in configs for r in rs for t in ("short", "fill", "long") if "turn_s" in (r.get(t) or {})]
    summary = {"predictions": len(errors),
               "median_abs_turn_error": round(statistics.median(errors), 3) if errors else None,
               "max_abs_turn_error": round(max(errors), 3) if errors else None,
               "within_25pct": sum(e <= 0.25 for e in errors), "median_within_12pct":
               bool(errors) and statistics.median(errors) <= 0.12,
               "pick_never_slower_beyond_5pct": all(c["not_slower_beyond_5pct"] for c in checks) if checks else None,
               "gains_hold": all(c["gain_holds"] is not False for c in checks) if checks else None,
               "every_run": {"predictions": len(every),
                             "median_abs_turn_error": round(statistics.median(every), 3) if every else None,
                             "max_abs_turn_error": round(max(every), 3) if every else None,
                             "within_25pct": sum(e <= 0.25 for e in every)},
               "by_run": {run: {"predictions": len(e), "median_abs_turn_error": round(statistics.median(e), 3),
                                "max_abs_turn_error": round(max(e), 3)} for run, e in sorted(by_run.items())}}
    doc = {"command": "SKEW=S OUT=DIR benchmarks/gpu/phases.sh tune, then python benchmarks/gpu/tune_vs_baselines.py "
                      "summarize",
           "device": os.environ.get("DEVICE", "NVIDIA H200, 16 cores, 128 GiB (GPU machine)"),
           "method": f"short: a fresh {SHORT}-token code prompt then {OUTPUT} tokens; long: {CACHED} tokens cached, "
                     f"{NEW} new, {OUTPUT} out; context {CTX}; VRAM budget made real by a ballast allocation; "
                     "views: rigbench client (TTFT, streamed tokens), llama-server timings, llama-bench (pick and "
                     "hand-tuned, short prompt); prediction: rigbench.plan.speed on the catalog h200 rig",
           "summary": summary, "checks": checks, "rows": rows}
    out.write_text(json.dumps(doc, indent=1))
    print(json.dumps(summary, indent=1))
    for c in checks:
        print(json.dumps(c))


def main() -> None:
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "plan":
        plan(Path(a[a.index("--out") + 1]) if "--out" in a else Path("benchmarks/gpu/tune_configs.json"))
    elif a[0] == "repredict":
        repredict(Path(a[1]))
    elif a[0] == "measure":
        measure_all(Path(a[1]), a[2:])
    elif a[0] == "summarize":
        out = Path(a[a.index("--out") + 1]) if "--out" in a else Path("benchmarks/results/tune_vs_baselines.json")
        files = [Path(x) for x in a[2:] if x != "--out" and Path(x) != out]
        summarize(Path(a[1]), files, out)


if __name__ == "__main__":
    main()
