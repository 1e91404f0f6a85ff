"""Wall time of the same oracle suite (the 15 starter tasks) in-process and on Ray with 2 workers, on this
machine. Writes benchmarks/results/scale_eval.json.

Three executors, one store: in-process one task at a time (today's default), in-process with --parallel 2
(threads), and a local Ray instance of 2 CPU slots (its start is timed apart from the suite). Two views of
each suite's wall time: the driver's clock around the call, and the store's own rows (last finished_at minus
first started_at), which leaves out the executor's start and its final hand-back.

Usage: python benchmarks/scale_eval.py [--db URL] [--repeats N]   (run it under flock /tmp/rigbench-cpu.lock)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from provenance import command, machine
from rigbench import store
from rigbench.tasks import formats, runner

OUT = Path(__file__).parent / "results" / "scale_eval.json"


def suite(db_url: str, executor: str) -> dict:
    db = store.connect(db_url)
    tasks = formats.load_dataset(formats.starter_suite())
    cfg = runner.EvalConfig(agent="oracle", parallel=2 if executor == "threads-2" else 1)
    run = runner.new_run(db, cfg, formats.starter_suite(), None, None)
    t0 = time.monotonic()
    if executor == "ray-2":
        from rigbench.scale import eval as ray_eval
        out = ray_eval.run_eval(tasks, cfg, db_url, run)
    else:
        out = runner.run_eval(tasks, cfg, db, run)
    wall = time.monotonic() - t0
    store.finish_run(db, run, "done")
    rows = store.task_rows(db, run, final_only=False)
    span = (max(r["finished_at"] for r in rows) - min(r["started_at"] for r in rows)).total_seconds()
    return {"executor": executor, "run": run, "tasks": len(out), "successes": sum(o.status == "success" for o in out),
            "rows": len(rows), "wall_s": round(wall, 2), "store_span_s": round(span, 2),
            "task_s_sum": round(sum(o.wall_s for o in out), 2)}


def ray_overhead(n: int = 20) -> dict:
    """What Ray adds per task on this machine: a round trip of an empty task, and of one that imports the
    runner and opens a bundle of a starter task the way each eval task does."""
    import ray

    from rigbench.scale import eval as ray_eval

    def empty() -> None:
        return None

    def unpack(data: bytes) -> str:
        with tempfile.TemporaryDirectory() as d:
            return ray_eval.load_task(ray_eval.unbundle(data, Path(d))).name

    data = ray_eval.bundle(formats.starter_suite() / "csv-to-json")
    out = {"bundle_bytes": len(data)}
    for name, fn, args in (("empty_task_s", empty, ()), ("unbundle_task_s", unpack, (data,))):
        f = ray.remote(num_cpus=1)(fn)
        ray.get(f.remote(*args))
        t0 = time.monotonic()
        for _ in range(n):
            ray.get(f.remote(*args))
        out[name] = round((time.monotonic() - t0) / n, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", help="store URL (default: a SQLite file in a temporary folder)")
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    db_url = a.db or f"sqlite:///{tempfile.mkdtemp(prefix='scale-eval-')}/store.db"
    rows = []
    ray_start = None
    for rep in range(a.repeats):
        for executor in ("in-process", "threads-2", "ray-2"):
            if executor == "ray-2" and ray_start is None:   # started only now: idle Ray takes CPU too
                from rigbench.scale import init
                t0 = time.monotonic()
                init("auto", num_cpus=2)
                ray_start = round(time.monotonic() - t0, 2)
            r = suite(db_url, executor) | {"repeat": rep}
            rows.append(r)
            print(json.dumps(r), flush=True)
    result_overhead = ray_overhead()
    best = {e: min(r["wall_s"] for r in rows if r["executor"] == e) for e in ("in-process", "threads-2", "ray-2")}
    result = {"command": command(), "machine": machine() + " (shared with other work)",
              "store": db_url.split(":")[0], "ray_start_s": ray_start, "ray_overhead": result_overhead, "rows": rows,
              "best_wall_s": best,
              "ray_2_speedup_vs_in_process": round(best["in-process"] / best["ray-2"], 2)}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
