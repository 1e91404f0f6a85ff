"""Reading llama.cpp's own account of its memory from a llama-server / llama-cli log (run with -lv 4)."""

from __future__ import annotations

import re

from pydantic import BaseModel

MIB = 1024 * 1024
_LINE = re.compile(r"(?P<buf>[\w.\-]+)\s+(?P<kind>model|KV|RS|compute|output)\s+buffer size\s*=\s*(?P<mib>[\d.]+) MiB")


class MemoryLog(BaseModel):
    """Bytes per buffer name (CPU, CPU_Mapped, CUDA0, ...) for each kind of allocation."""

    model: dict[str, int] = {}
    kv: dict[str, int] = {}
    recurrent: dict[str, int] = {}
    compute: dict[str, int] = {}
    output: dict[str, int] = {}

    def total(self, kind: str) -> int:
        return sum(getattr(self, kind).values())


def parse_memory_log(text: str) -> MemoryLog:
    log = MemoryLog()
    key = {"model": "model", "KV": "kv", "RS": "recurrent", "compute": "compute", "output": "output"}
    for m in _LINE.finditer(text):
        d = getattr(log, key[m.group("kind")])
        # the last report wins: llama.cpp may reserve the compute graph more than once
        d[m.group("buf")] = int(round(float(m.group("mib")) * MIB))
    return log
