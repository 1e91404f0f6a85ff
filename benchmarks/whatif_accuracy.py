"""What-if accuracy: `whatif`'s predicted per-task time against `replay`'s measurement on another placement.

1. Record: a real eval run of the built-in agent on a few starter tasks, served by llama-server (the packaged
   Qwen2.5-Coder-0.5B; on a GPU machine, fully offloaded), stored like any `rigbench eval`.
2. For each target placement (another KV type / u-batch of the same model, and a synthetic GGUF of another
   architecture written by `rigbench synth`): predict every task with `rigbench.whatif.predict`, then start
   that placement, replay the run's turns against it (`rigbench.whatif.replay`, tool time added without
   waiting), `--repeats` times, and compare per task with the least disturbed (fastest) replay: the 2-core dev
   box is shared, and one replay of the same turns measured 12 s and another 46 s for one task. Two views per
   task: the agent time (model + recorded tools: what the time limit counts) and the model time alone
   (stricter: tools are identical by construction); and beside the client's time, llama-server's own prompt +
   generation timings.

Usage (model work: run under the shared lock on the dev box):
  flock /tmp/rigbench-cpu.lock timeout 1800 python benchmarks/whatif_accuracy.py
  python benchmarks/whatif_accuracy.py --gpu --server-bin /path/to/cuda/llama-server \
      --trace benchmarks/results/whatif_recorded_run.json                              # on a GPU machine
  (benchmarks/gpu/phases.sh whatif [run TRACES REPEATS]: the GPU test machine, per-turn rows and llama-server's
  -lv 4 cache lines kept)
  RIGBENCH_CATALOG=benchmarks/results/gpu_s9_rig.yaml python benchmarks/whatif_accuracy.py --gpu --rig h100 \
      --rescore benchmarks/results/gpu_s9_whatif_measured_b.json --trace benchmarks/results/whatif_recorded_run_b.json \
      --out benchmarks/results/whatif_accuracy_gpu_b.json           # those replays against this code's predictions
Writes benchmarks/results/whatif_accuracy.json (`--gpu`: whatif_accuracy_gpu.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from provenance import command, machine
from rigbench import hardware, packaged, store
from rigbench import model as model_mod
from rigbench.engines import llamacpp
from rigbench.engines.options import parse_llama_args
from rigbench.plan import memory
from rigbench.tasks import formats, runner
from rigbench.whatif import RunTrace, Target, load, predict
from rigbench.whatif.replay import replay

TASKS = ["fix-failing-test", "csv-to-json", "wordfreq-cli"]
TRACE_OUT = "benchmarks/results/whatif_recorded_run.json"
CPU_RECORD = ["-c", "8192", "-np", "1", "--jinja"]
CPU_TARGETS = [
    # (name, model: "packaged" or a catalog model to synthesise, synth layers, experts, server args)
    ("0.5b-q8kv-ub128", "packaged", None, None, ["-c", "8192", "-np", "1", "-ctk", "q8_0", "-ctv", "q8_0",
                                                 "-ub", "128", "-b", "128"]),
    ("35b-a3b-twin-l4e8", "qwen3.6-35b-a3b", 4, 8, ["-c", "8192", "-np", "1"]),
]
GPU_RECORD = ["-c", "16384", "-np", "1", "--jinja", "-ngl", "99"]
GPU_TARGETS = [
    ("35b-a3b-full-gpu", "qwen3.6-35b-a3b", None, None, ["-c", "32768", "-np", "1", "-ngl", "99"]),
    ("35b-a3b-cpu-moe", "qwen3.6-35b-a3b", None, None, ["-c", "32768", "-np", "1", "-ngl", "99", "--cpu-moe"]),
    ("27b-full-gpu", "qwen3.6-27b", None, None, ["-c", "32768", "-np", "1", "-ngl", "99"]),
]


def start(gguf: Path, args: list[str], server_bin: str | None, gpu: bool, log: Path, alias: str | None = None):
    o = parse_llama_args(["-m", str(gguf), *args])
    if not gpu:
        o.repack = False          # the dev box's AMX CPU: llama.cpp's repacked Q4_K matmul can crash there
    spec = llamacpp.launch_spec(o, llamacpp.find_binary(server_bin), gpu=gpu, alias=alias)
    print(f"start: {spec.shell()}", flush=True)
    return llamacpp.start(spec, log, timeout=600), spec


def record(db, tmp: Path, args: list[str], server_bin: str | None, gpu: bool, steps: int, tasks: list[str]) -> int:
    server, spec = start(packaged.qwen_coder_05b(), args, server_bin, gpu, tmp / "record.log", "qwen2.5-coder-0.5b")
    try:
        task_list = formats.load_dataset(formats.starter_suite(), names=tasks)
        cfg = runner.EvalConfig(url=server.url, model="qwen2.5-coder-0.5b", time_limit_s=600, max_steps=steps,
                                max_response_tokens=256)
        run_id = runner.new_run(db, cfg, formats.starter_suite(), tasks, None)
        for o in runner.run_eval(task_list, cfg, db, run_id):
            print(f"record: {o.task}: {o.status}, {o.turns} turns, {o.wall_s:.1f} s", flush=True)
        store.finish_run(db, run_id, "done")
    finally:
        server.stop()
    return run_id


def target_gguf(model: str, layers: int | None, experts: int | None, folder: Path) -> Path:
    if model == "packaged":
        return packaged.qwen_coder_05b()
    from rigbench import synth

    out = folder / f"whatif-{model}-l{layers or 'all'}e{experts or 'all'}.gguf"
    if not out.exists():
        spec = model_mod.load(model)
        if layers or experts:
            spec = synth.scale_down(spec, layers, experts)
        print(f"synth: {spec.name} -> {out}", flush=True)
        synth.write(spec, out, "Q4_K_M")
    return out


def _err(pred: float, meas: float) -> float:
    return round(pred / meas - 1, 4) if meas else 0.0


def _summary(rows: list[dict], gpu: bool) -> dict:
    agent_err = [abs(r["agent_error"]) for r in rows]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    return {
        "median_abs_error": round(statistics.median(agent_err), 4),
        "median_abs_model_error": round(statistics.median(abs(r["model_error"]) for r in rows), 4),
        "worst_abs_error": round(max(agent_err), 4),
        "per_target": {t: round(statistics.median([abs(r["agent_error"]) for r in rows if r["target"] == t]), 4)
                       for t in targets},
        "within_predicted_range": sum(r["within_range"] for r in rows), "tasks_compared": len(rows),
        "target_median_abs_error": 0.20 if gpu else 0.25,
    }


def rescore(a, gpu: bool, out: Path) -> None:
    """The stored replays of an earlier run of this benchmark against this code's predictions: the targets are
    planned from the catalog models the synthetic GGUFs were written from (same shapes, default router skew)."""
    old = json.loads(Path(a.rescore).read_text())
    trace = RunTrace.model_validate_json(Path(a.trace).read_text())
    rig = hardware.load(a.rig) if a.rig else hardware.detect()
    rows = []
    for name, model, layers, experts, args in (GPU_TARGETS if gpu else CPU_TARGETS):
        measured = {r["task"]: r for r in old["rows"] if r["target"] == name}
        if not measured:
            continue
        spec = model_mod.load(model)
        if layers or experts:
            from rigbench import synth
            spec = synth.scale_down(spec, layers, experts)
        p = memory.plan(spec, rig, parse_llama_args(["-m", f"{model}.gguf", *args]), "Q4_K_M")
        wi = predict(trace, Target(label=name, spec=spec, rig=rig, plan=p))
        for tp in wi.tasks:
            m = measured[tp.task]
            pred_model = tp.prefill_s + tp.decode_s
            rows.append({**{k: m[k] for k in ("target", "task", "turns", "measured_agent_s", "measured_model_s",
                                              "measured_server_s", "tools_s")},
                         "previous_predicted_agent_s": m["predicted_agent_s"],
                         "predicted_agent_s": tp.agent_s.value, "predicted_low_s": tp.agent_s.low,
                         "predicted_high_s": tp.agent_s.high, "predicted_prefill_s": tp.prefill_s,
                         "predicted_decode_s": tp.decode_s, "predicted_model_s": round(pred_model, 3),
                         "agent_error": _err(tp.agent_s.value, m["measured_agent_s"]),
                         "model_error": _err(pred_model, m["measured_model_s"]),
                         "within_range": tp.agent_s.low <= m["measured_agent_s"] <= tp.agent_s.high,
                         "turn_rows": [{**mt, "predicted_s": round(pt.prefill_s + pt.decode_s, 4),
                                        "prefill_tokens_predicted": pt.prefill_tokens}
                                       for pt, mt in zip(tp.turn_times, m.get("turn_rows", []), strict=False)]})
    res = {"rescored": a.rescore, "trace": a.trace, "rig": rig.model_dump(mode="json"),
           "measured_on": old.get("machine"), "rows": rows, **_summary(rows, gpu)}
    out.write_text(json.dumps(res, indent=2) + "\n")
    for r in rows:
        print(f"{r['target']:<20} {r['task']:<20} pred {r['predicted_agent_s']:>6.2f} (was "
              f"{r['previous_predicted_agent_s']:>6.2f}) meas {r['measured_agent_s']:>6.2f} {r['agent_error']:>+7.1%}")
    print(f"median |error| per task {res['median_abs_error']:.1%} (target {res['target_median_abs_error']:.0%}), "
          f"per target {res['per_target']}; written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="GPU machine: record fully offloaded, full-size synthetic "
                    "targets on the GPU")
    ap.add_argument("--server-bin", help="llama-server to use (a CUDA build on a GPU machine)")
    ap.add_argument("--repeats", type=int, default=2, help="replays per target; the fastest counts")
    ap.add_argument("--steps", type=int, default=4, help="agent turns per task in the recorded run")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--run", type=int, help="use this stored eval run instead of recording one (with --db)")
    ap.add_argument("--db", help="store URL (default: a temporary SQLite file)")
    ap.add_argument("--trace", help=f"replay these recorded turns (a JSON RunTrace such as {TRACE_OUT}) instead of "
                    f"recording: what a GPU machine without the sandbox runs")
    ap.add_argument("--synth-dir", default=".rigbench/synth")
    ap.add_argument("--rig", help="the machine as a catalog rig (with RIGBENCH_CATALOG: a rig YAML carrying the "
                    "measured host link) instead of what `hardware.detect()` reads")
    ap.add_argument("--record-only", metavar="TRACE", help="record the run, write its turns to TRACE (JSON) and stop: "
                    "a trace for another machine")
    ap.add_argument("--server-args", default="", help="extra llama-server arguments for every target (e.g. '-lv 4' "
                    "for its trace log)")
    ap.add_argument("--logs", help="keep the targets' llama-server logs in this folder")
    ap.add_argument("--rescore", metavar="JSON", help="predict again, with this code, the replays a run of this "
                    "benchmark measured (its per-turn rows; --trace and --rig as that run had them), and write the "
                    "comparison to --out: no server")
    ap.add_argument("--prepare", action="store_true", help="only write the targets' synthetic GGUFs, then exit "
                    "(on a GPU machine: while llama.cpp builds)")
    ap.add_argument("--out")
    a = ap.parse_args()
    gpu = a.gpu
    if a.prepare:
        for _name, model, layers, experts, _args in (GPU_TARGETS if gpu else CPU_TARGETS):
            print(f"prepared: {target_gguf(model, layers, experts, Path(a.synth_dir))}", flush=True)
        return
    out = Path(a.out or f"benchmarks/results/whatif_accuracy{'_gpu' if gpu else ''}.json")
    if a.rescore:
        rescore(a, gpu, out)
        return
    tmp = Path(tempfile.mkdtemp(prefix="whatif-accuracy-"))
    db = store.connect(a.db or f"sqlite:///{tmp / 'store.db'}")
    t0 = time.monotonic()
    if a.trace:
        trace = RunTrace.model_validate_json(Path(a.trace).read_text())
        run_id = trace.run
    else:
        run_id = a.run or record(db, tmp, GPU_RECORD if gpu else CPU_RECORD, a.server_bin, gpu, a.steps,
                                 a.tasks.split(","))
        trace = load(db, run_id)
        # the recorded turns as JSON, so another machine replays exactly these (`--trace`)
        Path(a.record_only or TRACE_OUT).write_text(trace.model_dump_json(indent=1) + "\n")
        if a.record_only:
            print(f"recorded run {run_id} written to {a.record_only}")
            return
    rig = hardware.load(a.rig) if a.rig else hardware.detect()
    # a third view: the recording placement predicted against the recorded run itself (its own timings included);
    # only where it was recorded here (a --trace comes from another machine, whose rig this one is not)
    rec_args = GPU_RECORD if gpu else CPU_RECORD
    self_check = None
    if not a.trace:
        rec_gguf = packaged.qwen_coder_05b()
        rec_spec = model_mod.load(str(rec_gguf))
        rec_plan = memory.plan(rec_spec, rig, parse_llama_args(["-m", str(rec_gguf), *rec_args]), None)
        self_check = predict(trace, Target(label="recording", spec=rec_spec, rig=rig, plan=rec_plan))
    rows, targets = [], []
    for name, model, layers, experts, args in (GPU_TARGETS if gpu else CPU_TARGETS):
        gguf = target_gguf(model, layers, experts, Path(a.synth_dir))
        spec = model_mod.load(str(gguf))
        p = memory.plan(spec, rig, parse_llama_args(["-m", str(gguf), *args]), None)
        wi = predict(trace, Target(label=name, spec=spec, rig=rig, plan=p))
        logs = Path(a.logs) if a.logs else tmp
        logs.mkdir(parents=True, exist_ok=True)
        server, _ = start(gguf, [*args, *a.server_args.split()], a.server_bin, gpu, logs / f"{name}.log")
        try:
            runs = [replay(trace, server.url, db, idle=False, seed=k,
                           progress=lambda m: print(f"replay: {m}", flush=True)) for k in range(a.repeats)]
        finally:
            server.stop()
        for tp in wi.tasks:
            reps = [next(x for x in r.tasks if x.task == tp.task) for r in runs]
            m = min(reps, key=lambda x: x.agent_s)
            server_s = sum(((x.prompt_ms or 0) + (x.predicted_ms or 0)) / 1000 for x in m.turns)
            pred_model = tp.prefill_s + tp.decode_s
            rows.append({
                "target": name, "task": tp.task, "turns": tp.turns,
                "prompt_tokens": sum(x.prompt_tokens for x in m.turns),
                "prefill_tokens_predicted": sum(x.prefill_tokens for x in tp.turn_times),
                "prefill_tokens_measured": sum(x.prompt_tokens - (x.cached_tokens or 0) for x in m.turns),
                "output_tokens": sum(x.output_tokens for x in m.turns),
                "predicted_agent_s": tp.agent_s.value, "predicted_low_s": tp.agent_s.low,
                "predicted_high_s": tp.agent_s.high, "measured_agent_s": m.agent_s,
                "measured_agent_s_repeats": [x.agent_s for x in reps],
                "reused_predicted": sum(x.context - x.prefill_tokens for x in tp.turn_times),
                "reused_measured": sum(x.cached_tokens or 0 for x in m.turns),
                "agent_error": _err(tp.agent_s.value, m.agent_s),
                "predicted_model_s": round(pred_model, 3), "predicted_prefill_s": tp.prefill_s,
                "predicted_decode_s": tp.decode_s, "measured_model_s": m.model_s,
                "measured_server_s": round(server_s, 3), "model_error": _err(pred_model, m.model_s),
                "tools_s": tp.tools_s, "within_range": tp.agent_s.low <= m.agent_s <= tp.agent_s.high,
                # turn by turn: what was predicted beside every replay's measurement (client and server views)
                "turn_rows": [{"prefill_tokens": pt.prefill_tokens, "context": pt.context,
                               "predicted_s": round(pt.prefill_s + pt.decode_s, 4),
                               "replays": [{"e2e_s": x.turns[k].e2e_s, "cached": x.turns[k].cached_tokens,
                                            "prompt_ms": x.turns[k].prompt_ms,
                                            "predicted_ms": x.turns[k].predicted_ms} for x in reps]}
                              for k, pt in enumerate(tp.turn_times)],
            })
        targets.append({"name": name, "command": p.command, "prefix_cache": wi.prefix_cache,
                        "calibration": wi.calibration, "replay_runs": [r.run for r in runs]})
    res = {
        "command": command(), "machine": machine(), "rig": rig.describe(), "recorded_run": run_id,
        "recorded": {"command": None if a.trace else rec_args, "trace": a.trace, "tasks": [
            {"task": t.task, "status": t.status, "turns": len(t.turns), "agent_s": round(t.agent_s, 2),
             "model_s": round(sum(x.model_s for x in t.turns), 2),
             **({"predicted_agent_s": p.agent_s.value, "error": _err(p.agent_s.value, t.agent_s)} if p else {})}
            for t, p in zip((t for t in trace.tasks if t.turns),
                            self_check.tasks if self_check else [None] * len(trace.tasks), strict=False)]},
        "targets": targets, "rows": rows, **_summary(rows, gpu),
        "median_abs_error_slowest_replay": round(statistics.median(
            abs(_err(r["predicted_agent_s"], max(r["measured_agent_s_repeats"]))) for r in rows), 4),
        "repeats": a.repeats, "seconds": round(time.monotonic() - t0, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"{'target':<20} {'task':<18} {'pred s':>8} {'meas s':>8} {'err':>7} {'model pred':>10} {'meas':>7} "
          f"{'server':>7} {'err':>7}")
    for r in rows:
        print(f"{r['target']:<20} {r['task']:<18} {r['predicted_agent_s']:>8.1f} {r['measured_agent_s']:>8.1f} "
              f"{r['agent_error']:>+7.1%} {r['predicted_model_s']:>10.1f} {r['measured_model_s']:>7.1f} "
              f"{r['measured_server_s']:>7.1f} {r['model_error']:>+7.1%}")
    print(f"median |error| per task: agent time {res['median_abs_error']:.1%}, model time "
          f"{res['median_abs_model_error']:.1%} (target {res['target_median_abs_error']:.0%}); "
          f"{res['within_predicted_range']}/{len(rows)} inside the predicted range; written to {out}")


if __name__ == "__main__":
    main()
