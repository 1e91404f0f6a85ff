"""How fast does this host write a sequence state into fresh memory? llama-server does it for every context
checkpoint of a hybrid model (two per request) and for every prompt it saves to its RAM prompt cache
(tools/server/server-task.cpp `server_prompt_cache::alloc`: a zero-filled std::vector, then the state copied in):
first-touch page faults, then the copy. The same two steps here, with numpy, on blocks of a checkpoint's size.

A second view on the GPU test machine is llama-server's own trace log (`-lv 4`): "prompt cache update took N ms"
beside "saving prompt ... total state size" and the checkpoints it holds (benchmarks/gpu/phases.sh whatif).

    python benchmarks/state_copy.py      # writes benchmarks/results/state_copy.json
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from provenance import command, machine

SIZES_MIB = [64, 150, 256]


def main() -> None:
    rows = []
    for mib in SIZES_MIB:
        src = np.ones(mib << 20, dtype=np.uint8)
        rates = []
        for _ in range(5):
            t = time.perf_counter()
            dst = np.zeros(mib << 20, dtype=np.uint8)   # calloc: pages are touched by the first write
            dst[:] = 0                                  # the vector's zero-fill
            dst[:] = src                                # the state copied in
            rates.append((mib << 20) / (time.perf_counter() - t) / 1e9)
            del dst
        rows.append({"mib": mib, "gbs_median": round(statistics.median(rates), 2), "gbs": [round(r, 2) for r in rates]})
        print(f"{mib:>4} MiB: {rows[-1]['gbs_median']:.2f} GB/s (fresh memory, zero-fill + copy)")
    out = Path("benchmarks/results/state_copy.json")
    out.write_text(json.dumps({"command": command(), "machine": machine(), "cores": os.cpu_count(), "rows": rows,
                               "state_copy_gbs": statistics.median(r["gbs_median"] for r in rows)}, indent=1) + "\n")
    print(f"state copy {statistics.median(r['gbs_median'] for r in rows):.2f} GB/s; written to {out}")


if __name__ == "__main__":
    main()
