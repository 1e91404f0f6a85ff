"""The real `rigbench` command, run as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

RB = [sys.executable, "-m", "rigbench"]


def run(*args, check=True, timeout=120):
    p = subprocess.run([*RB, *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "COLUMNS": "160"})
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_plan_json_has_the_promised_keys():
    d = json.loads(run("plan", "qwen3.6-35b-a3b", "--rig", "rtx5080", "--cpu-moe", "--ctx", "32768",
                       "--kv-type", "q4_0", "--json").stdout)
    for key in ("weights_bytes", "weights_by_group", "devices", "kv_cache_bytes", "kv_cache_tokens",
                "max_concurrency", "fits", "reason"):
        assert key in d
    assert {"name", "vram_bytes", "ram_bytes"} <= set(d["devices"][0])
    assert d["fits"] is True and d["kv_cache_tokens"] == 32768


def test_plan_pasted_vllm_command():
    p = run("plan", "--model", "qwen3.6-35b-a3b", "--rig", "2x-rtx3090", "--json", "--",
            "vllm", "serve", "/models/awq", "--tensor-parallel-size", "2", "--quantization", "awq_marlin",
            "--max-model-len", "262144", "--gpu-memory-utilization", "0.92", "--kv-cache-dtype", "fp8_e5m2",
            "--max-num-batched-tokens", "8192", "--mamba-cache-mode", "align", "--enable-prefix-caching")
    d = json.loads(p.stdout)
    assert d["engine"] == "vllm" and d["block_size"] == 2096 and d["max_concurrency"] > 1


def test_plan_gguf_path(qwen_gguf):
    d = json.loads(run("plan", str(qwen_gguf), "--rig", "cpu", "--ctx", "4096", "--json").stdout)
    assert d["quant"] == "Q4_K_M" and d["kv_cache_bytes"] == 48 * 2**20


def test_does_not_fit_exits_3_with_the_cheapest_change():
    p = run("plan", "qwen3.6-27b", "--rig", "rtx4090", "--ctx", "262144", "--ngl", "99", check=False)
    assert p.returncode == 3
    assert "does not fit" in p.stdout and "cheapest change" in p.stdout


@pytest.mark.parametrize("args, msg", [
    (["plan", "qwen3.7-27b", "--rig", "rtx4090"], "unknown model"),
    (["plan", "qwen3.6-27b", "--rig", "rtx9999"], "unknown rig"),
    (["plan", "qwen3.6-27b", "--rig", "cpu", "--engine", "vllm"], "needs a GPU"),
    (["plan", "--model", "qwen3.6-27b", "--rig", "h100", "--", "llama-server", "--bogus"], "no flag --bogus"),
    (["plan", "/nonexistent/model.gguf", "--rig", "cpu"], "no such file"),
])
def test_bad_input_is_one_line_without_traceback(args, msg):
    p = run(*args, check=False)
    assert p.returncode != 0
    assert msg in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_models_and_rigs_json():
    names = {m["name"] for m in json.loads(run("models", "--json").stdout)}
    assert {"qwen3.6-27b", "qwen3.6-35b-a3b", "gpt-oss-20b", "nemotron-3-nano-30b-a3b"} <= names
    rigs = json.loads(run("rigs", "--json").stdout)
    assert any(r["name"] == "detected" for r in rigs)


def test_demo_writes_a_report(tmp_path):
    """Slow by nature (about 2.5 minutes on 2 cores): `rigbench demo` is the whole main job, as `make demo` runs it:
    catalog plans, two llama-servers benched with repeats, two starter tasks each in the sandbox, the report."""
    p = run("demo", "--out-dir", str(tmp_path), timeout=900)
    assert f"report: {tmp_path / 'report.html'}" in p.stdout
    html = (tmp_path / "report.html").read_text()
    assert "fix-failing-test" in html and "gauntlet-train-bird" in html   # two starter tasks ran
    assert "1-slot" in html and "2-slots" in html and "Verdict" in html
    rows = json.loads((tmp_path / "plans.json").read_text())
    assert {r["model"] for r in rows} >= {"qwen3.6-27b", "qwen3.6-35b-a3b"}
    assert any(r["fits"] for r in rows) and any(not r["fits"] for r in rows)
