"""What does watching the machine cost? rigbench.monitor.Sampler takes one sample every half second in a thread
of the measuring process (`rigbench bench`, `eval`, `experiment`, `tune --measure`, `replay`). This measures
one sample's CPU time (the sampler thread's own clock) and wall time with a measured process tree like a bench
run's (this process and `--children` busy-waiting children standing in for an engine's processes), and the
share of one CPU the sampler takes at its default interval.

Second view: the process's own CPU time (`resource.getrusage`) over the same sampling, against the thread's.

Target: under 1% of one CPU at the default interval. The timing accuracy of the load generator with the
sampler on is benchmarks/loadgen_accuracy.py's (p99 TTFT and ITL error < 5 ms at 256 streams).
Writes benchmarks/results/sampler_cost.json.

Usage: python benchmarks/sampler_cost.py [--samples 200] [--children 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from provenance import machine
from rigbench.monitor import Sampler

CHILD = "import time\nwhile True: time.sleep(0.01)\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sampler_cost.json"))
    a = ap.parse_args()
    kids = [subprocess.Popen([sys.executable, "-c", CHILD]) for _ in range(a.children)]
    try:
        s = Sampler()
        s.sample()
        cpu, wall = [], []
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(a.samples):
            c0, w0 = time.thread_time(), time.perf_counter()
            s.sample()
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        # the thread as bench runs it, for a few seconds at the default interval
        live = Sampler().start()
        time.sleep(5)
        live.stop()
    finally:
        for k in kids:
            k.kill()
            k.wait(10)
    per_cpu_ms = statistics.median(cpu) * 1000
    process_ms = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / a.samples * 1000
    share = per_cpu_ms / 1000 / s.interval
    row = {"machine": machine(), "cpus": os.cpu_count(),
           "gpu_reader": type(s.gpu).__name__ if s.gpu else None, "measured_processes": len(s.own()),
           "samples": a.samples, "interval_s": s.interval,
           "sample_cpu_ms_p50": round(per_cpu_ms, 3),
           "sample_cpu_ms_p99": round(sorted(cpu)[int(.99 * len(cpu))] * 1000, 3),
           "sample_wall_ms_p50": round(statistics.median(wall) * 1000, 3),
           "process_cpu_ms_per_sample": round(process_ms, 3),
           "share_of_one_cpu": round(share, 5),
           "live_thread": {"seconds": 5, "samples": len(live.samples), "cpu_s": round(live.cost_s, 4),
                           "share_of_one_cpu": round(live.cost_s / 5, 5)},
           "target_met": share < 0.01,
           "command": f"python benchmarks/sampler_cost.py --samples {a.samples} --children {a.children}"}
    print(f"one sample ({row['measured_processes']} measured processes): {per_cpu_ms:.2f} ms CPU (thread), "
          f"{process_ms:.2f} ms CPU (process), {row['sample_wall_ms_p50']:.2f} ms wall")
    print(f"at {s.interval} s: {share:.2%} of one CPU; the live thread: {row['live_thread']['share_of_one_cpu']:.2%} "
          f"over {row['live_thread']['samples']} samples")
    print("target met: " + ("yes" if row["target_met"] else "NO"))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0 if row["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
