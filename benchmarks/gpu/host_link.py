"""On the GPU machine: host-to-GPU copy bandwidth as llama.cpp's op offload sees it.

llama.cpp copies CPU-held expert weights to the GPU once per u-batch with cudaMemcpyAsync from wherever
they live: an mmap'd file (pageable page cache, the default load mode) or a CUDA_Host buffer (pinned, with
`--load-mode none` / the older `--no-mmap`; src/llama-model-loader.cpp "avoid using a host buffer when using
mmap"). This measures both, plus plain pageable malloc'd memory, at the sizes of one expert group copy
(a layer's used experts: 1-100 MiB), and prints one JSON line.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import tempfile
import time

import torch


def bandwidth(src: torch.Tensor, dst: torch.Tensor, repeats: int = 20) -> float:
    dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    return src.numel() * src.element_size() * repeats / (time.perf_counter() - t0) / 1e9


def main() -> None:
    out = {"device": torch.cuda.get_device_name(0), "source": "benchmarks/gpu/host_link.py"}
    for mib in (4, 32, 256):
        n = mib << 20
        dst = torch.empty(n, dtype=torch.uint8, device="cuda")
        pinned = torch.empty(n, dtype=torch.uint8).pin_memory()
        pinned.fill_(1)
        pageable = torch.ones(n, dtype=torch.uint8)
        with tempfile.NamedTemporaryFile(dir=os.environ.get("TMPDIR", "/tmp")) as f:
            f.write(os.urandom(n))
            f.flush()
            mm = mmap.mmap(f.fileno(), n, prot=mmap.PROT_READ)
            mapped = torch.frombuffer(mm, dtype=torch.uint8)
            out[f"mmap_{mib}mib_gbs"] = round(bandwidth(mapped, dst), 2)
            del mapped
            mm.close()
        out[f"pinned_{mib}mib_gbs"] = round(bandwidth(pinned, dst), 2)
        out[f"pageable_{mib}mib_gbs"] = round(bandwidth(pageable, dst), 2)
    print(json.dumps(out), flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main()
