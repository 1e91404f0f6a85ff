"""rigbench's machine sampler (rigbench.monitor.Sampler, NVML through nvidia-ml-py) on a real NVIDIA GPU, in two
phases of about 10 s each: (a) this process keeps the GPU busy with a matmul loop (its own work: no mark expected);
(b) a process that is not this one's descendant does the same (another user's job: the figures of that window must
be marked "others used N% of GPU 0"). nvidia-smi, polled beside it, is the second view of utilisation, memory and
clocks. Needs PyTorch with CUDA.

Usage: python benchmarks/gpu/sampler_run.py OUT_DIR   (writes gpu_sampler_run.json and nvidia_smi.csv there)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from rigbench.monitor import NvmlReader, Sampler, summarize

LOOP = """import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
end = time.time() + {seconds}
while time.time() < end:
    for _ in range(20):
        b = a @ a
    torch.cuda.synchronize()
"""


def busy(seconds: float) -> None:
    exec(LOOP.format(seconds=seconds), {})


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm,"
                            "clocks_event_reasons.active", "--format=csv", "-lms", "500"],
                           stdout=open(out / "nvidia_smi.csv", "w"), stderr=subprocess.STDOUT)
    reader = NvmlReader.open()
    s = Sampler(interval=0.5, gpu=reader if reader else True).start()
    t0 = time.time()
    time.sleep(2)
    a0 = time.time()
    busy(10)                                   # (a) our own work
    a1 = time.time()
    time.sleep(1)
    # (b) another user's job: started through a shell that exits at once, so it is not our descendant
    subprocess.run(["setsid", "bash", "-c", f"{sys.executable} -c '{LOOP.format(seconds=10)}' "
                    f">/dev/null 2>&1 & echo $! > {out}/foreign.pid"], check=True)
    b0 = time.time()
    time.sleep(3)
    apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv"],
                          capture_output=True, text=True).stdout
    time.sleep(7.5)
    b1 = time.time()
    s.stop()
    smi.terminate()
    foreign = int((out / "foreign.pid").read_text())
    (out / "foreign.pid").unlink()
    phases = {"own_work": summarize(s.samples, a0, a1).model_dump(),
              "others_work": summarize(s.samples, b0, b1).model_dump()}
    doc = {
        "command": "python benchmarks/gpu/sampler_run.py OUT_DIR (PyTorch matmul loops on the GPU: this process's, "
                   "then another process's)",
        "gpu": torch.cuda.get_device_name(0), "nvml": reader is not None,
        "own_pid": os.getpid(), "foreign_pid": foreign, "nvidia_smi_compute_apps": apps.strip().splitlines(),
        "phases": phases, "sampler_cpu_s": round(s.cost_s, 3), "seconds": round(time.time() - t0, 1),
        "samples": [x.model_dump() for x in s.samples],
    }
    (out / "gpu_sampler_run.json").write_text(json.dumps(doc, indent=1) + "\n")
    for k, v in phases.items():
        g = v["gpus"][0] if v["gpus"] else {}
        print(k, "util", g.get("util"), "others", g.get("others_util"), "foreign", g.get("foreign_pids"),
              "clock", g.get("sm_clock_mhz"), "throttled", g.get("throttled"), "marks", v["disturbed"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
