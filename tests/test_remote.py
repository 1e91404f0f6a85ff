"""Remote models against a real HTTP server with range support that serves a Hub-shaped folder.

The server answers the two things rigbench asks the Hub: the model API (`/api/models/ORG/REPO/revision/REV`, file
list with sizes and the commit) and `/ORG/REPO/resolve/REV/FILE` with HTTP ranges. It counts the bytes it sends,
so the fraction of each file that crossed the wire is measured on the server's side, not rigbench's.
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from rigbench import hardware, model, remote, synth
from rigbench.engines.llamacpp import find_binary
from rigbench.engines.options import parse_command
from rigbench.errors import RigbenchError
from rigbench.plan import memory

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_token"


class Hub(BaseHTTPRequestHandler):
    root: Path
    sent: dict
    private = {"test-org/private-model"}

    def log_message(self, *a):
        pass

    def _json(self, code: int, body: dict, headers: dict | None = None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo = "/".join(parts[2:4])
            if repo in self.private and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._json(401, {"error": "Invalid username or password."})
            folder = self.root / repo
            if not folder.is_dir():
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if len(parts) > 5 and parts[5] not in ("main", SHA):
                return self._json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
            files = [{"rfilename": str(p.relative_to(folder)), "size": p.stat().st_size}
                     for p in sorted(folder.rglob("*")) if p.is_file()]
            return self._json(200, {"id": repo, "modelId": repo, "sha": SHA, "siblings": files, "private": False})
        if len(parts) >= 5 and parts[2] == "resolve":
            f = self.root / "/".join(parts[:2]) / "/".join(parts[4:])
            if not f.is_file():
                return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            size = f.stat().st_size
            rng = self.headers.get("Range")
            start, end = 0, size - 1
            if rng:
                a, b = rng.removeprefix("bytes=").split("-")
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
            with f.open("rb") as fh:
                fh.seek(start)
                data = fh.read(end - start + 1)
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.sent[str(f)] = self.sent.get(str(f), 0) + len(data)
            return
        self._json(404, {"error": "not found"})


def _tiny_moe(hidden: int = 256) -> model.ModelSpec:
    """Qwen3.6-35B-A3B's layout (Gated DeltaNet + gated attention + MoE) made narrow (the synthetic tokenizer sets
    the vocabulary: a real 152k-token one, whose header of ~6 MB is a third of a real Q4 file's first 1%)."""
    s = synth.scale_down(model.from_catalog("qwen3.6-35b-a3b"), layers=4, experts=8)
    return s.model_copy(update={"hidden": hidden, "vocab": 151936})


def _write_safetensors_repo(folder: Path) -> None:
    """A dense Qwen3 checkpoint in two shards with its index, as `save_pretrained` lays it out."""
    h, ff, v, layers, heads, kv, hd = 512, 1536, 16384, 2, 8, 2, 64
    cfg = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": h, "intermediate_size": ff,
           "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
           "vocab_size": v, "tie_word_embeddings": False, "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    z = np.zeros
    shards = [{"model.embed_tokens.weight": z((v, h), np.float16)}, {"lm_head.weight": z((v, h), np.float16),
                                                                     "model.norm.weight": z((h,), np.float16)}]
    for i in range(layers):
        p = f"model.layers.{i}."
        shards[i % 2].update({
            p + "self_attn.q_proj.weight": z((heads * hd, h), np.float16),
            p + "self_attn.k_proj.weight": z((kv * hd, h), np.float16),
            p + "self_attn.v_proj.weight": z((kv * hd, h), np.float16),
            p + "self_attn.o_proj.weight": z((h, heads * hd), np.float16),
            p + "self_attn.q_norm.weight": z((hd,), np.float16), p + "self_attn.k_norm.weight": z((hd,), np.float16),
            p + "mlp.gate_proj.weight": z((ff, h), np.float16), p + "mlp.up_proj.weight": z((ff, h), np.float16),
            p + "mlp.down_proj.weight": z((h, ff), np.float16),
            p + "input_layernorm.weight": z((h,), np.float16),
            p + "post_attention_layernorm.weight": z((h,), np.float16)})
    weight_map, total = {}, 0
    for i, tensors in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / name))
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.nbytes for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    gguf_repo = root / "test-org" / "Tiny-MoE-GGUF"
    # wide enough that the tokenizer's header is 2% of the file, as it is far less of a real one
    synth.write(_tiny_moe(1024), gguf_repo / "Tiny-MoE-Q4_K_M.gguf", "Q4_K_M")
    # a quant split by llama.cpp's gguf-split into parts in a folder, as the Hub's large GGUFs are
    split = gguf_repo / "Q8_0" / "Tiny-MoE-Q8_0"
    split.parent.mkdir()
    single = root / "Tiny-MoE-Q8_0.gguf"
    synth.write(_tiny_moe(), single, "Q8_0")
    subprocess.run([str(find_binary(name="llama-gguf-split")), "--split", "--split-max-tensors", "40", str(single),
                    str(split)], check=True, capture_output=True)
    single.unlink()
    (gguf_repo / "README.md").write_text("tiny")
    _write_safetensors_repo(root / "test-org" / "Tiny-Dense")
    _write_safetensors_repo(root / "test-org" / "private-model")
    handler = type("H", (Hub,), {"root": root, "sent": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", handler.sent
    server.shutdown()


@pytest.fixture
def env(hub, tmp_path, monkeypatch):
    root, url, sent = hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("RIGBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    sent.clear()
    return root, url, sent


LLAMA = "llama-server -m M -c 8192 -np 1 -ngl 99"
VLLM = "vllm serve M --max-model-len 32768 --gpu-memory-utilization 0.9"


def _plan(spec, cmd):
    return memory.plan(spec, hardware.load("rtx4090"), parse_command(cmd), None).model_dump_json()


def test_remote_gguf_plan_equals_local_plan_and_reads_a_small_fraction(env):
    root, url, sent = env
    local = root / "test-org" / "Tiny-MoE-GGUF" / "Tiny-MoE-Q4_K_M.gguf"
    spec = model.load("hf://test-org/Tiny-MoE-GGUF:Q4_K_M")
    assert spec.source == "hf://test-org/Tiny-MoE-GGUF:Q4_K_M"
    assert _plan(spec, LLAMA) == _plan(model.load(str(local)), LLAMA)
    read, header = sent[str(local)], remote.gguf_header_length(local.read_bytes())
    # the server's own count: the header and key-values with the tensor table, a few KiB past their end
    assert header <= read < 1.01 * header + remote.MIN_READ
    assert read < 0.025 * local.stat().st_size
    assert not [p for p in sent if "Q8_0" in p]         # the other quant is not read
    # the header cache: a second plan sends nothing for the file
    sent.clear()
    assert _plan(model.load("hf://test-org/Tiny-MoE-GGUF:Q4_K_M"), LLAMA) == _plan(model.load(str(local)), LLAMA)
    assert str(local) not in sent


def test_remote_safetensors_plan_equals_local_plan(env):
    root, url, sent = env
    local = root / "test-org" / "Tiny-Dense"
    spec = model.load("hf://test-org/Tiny-Dense")
    assert spec.checkpoint is not None and spec.checkpoint.exact
    assert _plan(spec, VLLM) == _plan(model.load(str(local)), VLLM)
    for shard in local.glob("*.safetensors"):
        assert 0 < sent[str(shard)] < 0.01 * shard.stat().st_size
    # a bare ORG/REPO (as `vllm serve` takes it) and a pinned revision give the same plan
    assert _plan(model.load("test-org/Tiny-Dense"), VLLM) == _plan(spec, VLLM)
    assert _plan(model.load(f"hf://test-org/Tiny-Dense@{SHA}"), VLLM) == _plan(spec, VLLM)


def test_plain_https_url_of_a_gguf(env):
    root, url, sent = env
    local = root / "test-org" / "Tiny-MoE-GGUF" / "Tiny-MoE-Q4_K_M.gguf"
    spec = model.load(f"{url}/test-org/Tiny-MoE-GGUF/resolve/main/Tiny-MoE-Q4_K_M.gguf")
    assert _plan(spec, LLAMA) == _plan(model.load(str(local)), LLAMA)
    assert sent[str(local)] < 0.025 * local.stat().st_size


def test_a_repo_with_several_quants_lists_their_exact_sizes(env):
    root, url, sent = env
    repo = root / "test-org" / "Tiny-MoE-GGUF"
    sizes = {"Q4_K_M": (repo / "Tiny-MoE-Q4_K_M.gguf").stat().st_size,
             "Q8_0": sum(p.stat().st_size for p in (repo / "Q8_0").glob("*.gguf"))}
    with pytest.raises(remote.ChooseQuantError) as e:
        model.load("hf://test-org/Tiny-MoE-GGUF")
    for size in sizes.values():
        assert f"{size:,d} bytes" in str(e.value)
    listed = remote.list_quants("hf://test-org/Tiny-MoE-GGUF")
    assert {q.quant: q.bytes for q in listed} == sizes
    assert [q.quant for q in listed] == sorted(sizes, key=sizes.get)       # smallest first
    assert not sent                                     # listing reads the API only


def test_a_split_gguf_is_read_part_by_part(env):
    root, url, sent = env
    parts = sorted((root / "test-org" / "Tiny-MoE-GGUF" / "Q8_0").glob("*.gguf"))
    assert len(parts) > 1
    spec = model.load("hf://test-org/Tiny-MoE-GGUF:Q8_0")
    assert _plan(spec, LLAMA) == _plan(model.load(str(parts[0])), LLAMA)
    assert spec.tensors is not None and len(spec.tensors) == len(model.load(str(parts[0])).tensors)
    for p in parts:                                     # every part's header, none of its data
        assert 0 < sent[str(p)] <= remote.gguf_header_length(p.read_bytes()) + 2 * remote.MIN_READ
    # a part named by its path gives the same plan
    sent.clear()
    first = parts[0].relative_to(root / "test-org" / "Tiny-MoE-GGUF")
    assert _plan(model.load(f"hf://test-org/Tiny-MoE-GGUF/{first}"), LLAMA) == _plan(spec, LLAMA)


def test_token_revision_and_not_found_errors(env, monkeypatch):
    with pytest.raises(RigbenchError, match="set HF_TOKEN") as e:
        model.load("hf://test-org/private-model")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert model.load("hf://test-org/private-model").checkpoint.exact
    with pytest.raises(RigbenchError, match="not found") as e:
        model.load("hf://test-org/no-such-model")
    assert "\n" not in str(e.value)
    with pytest.raises(RigbenchError, match="no revision 'v9'"):
        model.load("hf://test-org/Tiny-Dense@v9")


def test_offline_uses_the_header_cache_or_says_what_to_do(env, monkeypatch):
    first = _plan(model.load("hf://test-org/Tiny-Dense"), VLLM)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # nothing listens there
    assert _plan(model.load("hf://test-org/Tiny-Dense"), VLLM) == first
    with pytest.raises(RigbenchError, match="cannot reach") as e:
        model.load("hf://test-org/Tiny-MoE-GGUF:Q8_0")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _plan(model.load("hf://test-org/Tiny-Dense"), VLLM) == first
    with pytest.raises(RigbenchError, match="HF_HUB_OFFLINE"):
        model.load("hf://test-org/Tiny-MoE-GGUF:Q8_0")


# ---- the commands, as a user runs them ------------------------------------------------------------------------

def _json_plan(run_cli, *args: str) -> dict:
    d = json.loads(run_cli("plan", "--rig", "rtx4090", "--json", *args).stdout)
    d.pop("command")                                    # names the model as given: the path, URL or hf:// reference
    return d


def _unplaced(info: dict) -> dict:
    """A model's description without where it was read from."""
    info = {k: v for k, v in info.items() if k not in ("source", "path")}
    if info.get("checkpoint"):
        info["checkpoint"] = {k: v for k, v in info["checkpoint"].items() if k != "path"}
    return info


def test_plan_tune_inspect_and_advise_take_a_remote_model(env, run_cli):
    """plan, tune, inspect and advise each run as their own process on the remote model and on its local copy."""
    root, url, sent = env
    local = root / "test-org" / "Tiny-MoE-GGUF" / "Tiny-MoE-Q4_K_M.gguf"
    ref = "hf://test-org/Tiny-MoE-GGUF:Q4_K_M"
    want = _json_plan(run_cli, str(local))
    assert _json_plan(run_cli, ref) == want
    # the command it prints downloads the model as llama-server does it
    shown = json.loads(run_cli("plan", ref, "--rig", "rtx4090", "--json").stdout)["command"]
    assert shown[1:3] == ["-hf", "test-org/Tiny-MoE-GGUF:Q4_K_M"]
    # pasted engine commands: llama-server -hf ORG/REPO:QUANT and -m URL, vllm serve ORG/REPO
    assert _json_plan(run_cli, "--", "llama-server", "-hf", "test-org/Tiny-MoE-GGUF:Q4_K_M") == want
    gguf_url = f"{url}/test-org/Tiny-MoE-GGUF/resolve/main/Tiny-MoE-Q4_K_M.gguf"
    assert _json_plan(run_cli, "--", "llama-server", "-m", gguf_url) == want
    dense = root / "test-org" / "Tiny-Dense"
    assert (_json_plan(run_cli, "--", "vllm", "serve", "test-org/Tiny-Dense", "--max-model-len", "8192")
            == _json_plan(run_cli, "--", "vllm", "serve", str(dense), "--max-model-len", "8192"))
    info = json.loads(run_cli("inspect", "hf://test-org/Tiny-Dense", "--json").stdout)
    assert _unplaced(info) == _unplaced(json.loads(run_cli("inspect", str(dense), "--json").stdout))
    assert info["checkpoint"]["exact"]
    tuned = run_cli("tune", ref, "--rig", "rtx4090", "--json").stdout
    assert json.loads(tuned)["candidates"]
    assert tuned == run_cli("tune", str(local), "--rig", "rtx4090", "--json").stdout
    adv = json.loads(run_cli("advise", "--model", ref, "--rig", "rtx4090", "--json").stdout)
    rows = adv["scored"] + adv["unscored"]
    assert rows and {a["engine"] for a in rows} == {"llama.cpp"} and {a["quant"] for a in rows} == {"Q4_K_M"}
    # a safetensors checkpoint is advised as vLLM serves it
    adv = json.loads(run_cli("advise", "--model", "hf://test-org/Tiny-Dense", "--rig", "rtx4090", "--json").stdout)
    assert {a["engine"] for a in adv["scored"] + adv["unscored"]} == {"vllm"}


def test_plan_of_a_repo_with_several_quants_prints_them(env, run_cli):
    root, url, sent = env
    res = run_cli("plan", "hf://test-org/Tiny-MoE-GGUF", "--rig", "rtx4090", ok=False)
    assert res.returncode == 2
    size = (root / "test-org" / "Tiny-MoE-GGUF" / "Tiny-MoE-Q4_K_M.gguf").stat().st_size
    text = " ".join(res.stderr.split())
    assert "hf://test-org/Tiny-MoE-GGUF:QUANT" in text and f"{size:,d} bytes" in text and "Q8_0" in text


@pytest.mark.parametrize("ref,endpoint,says", [
    ("hf://test-org/no-such-model", None, "(404): check the repo id"),
    ("hf://test-org/private-model", None, "set HF_TOKEN"),
    ("hf://test-org/Tiny-Dense", "http://127.0.0.1:9", "cannot reach"),
], ids=["404", "401", "offline"])
def test_a_remote_model_that_cannot_be_read_is_one_line_and_a_non_zero_exit(env, run_cli, ref, endpoint, says):
    res = run_cli("plan", ref, "--rig", "rtx4090", ok=False, env={"HF_ENDPOINT": endpoint} if endpoint else None)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in res.stderr


# ---- offline: the catalog's published checkpoints stand in for the Hub ------------------------------------------

SETUP_C_35B = ("--port 8007 --served-model-name qwen3.6-35b-a3b --tensor-parallel-size 2 --disable-custom-all-reduce "
               "--quantization awq_marlin --max-model-len 262144 --gpu-memory-utilization 0.92 --kv-cache-dtype "
               "fp8_e5m2 --max-num-seqs 16 --max-num-batched-tokens 8192 --enable-prefix-caching "
               "--enable-chunked-prefill --mamba-cache-mode align --reasoning-parser qwen3 --enable-auto-tool-choice "
               "--tool-call-parser qwen3_coder --trust-remote-code").split()


def test_setup_c_command_plans_offline_from_the_published_checkpoint_size(run_cli):
    """Setup C's 35B-A3B line as pasted, offline: the checkpoint's published size (vision tower and 16-bit modules
    included), not the config estimate, sets vLLM's KV cache."""
    offline = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    repo = "cyankiwi/Qwen3.6-35B-A3B-AWQ-4bit"
    d = json.loads(run_cli("plan", "--rig", "2x-rtx3090", "--json", "--", "vllm", "serve", repo, *SETUP_C_35B,
                           env=offline).stdout)
    assert d["model"] == "qwen3.6-35b-a3b" and any("index total" in n for n in d["notes"])
    assert d["weights_bytes"] == pytest.approx(24_407_727_072, rel=1e-6)
    # the config estimate (all but the experts quantised too, no vision) leaves a KV cache a fifth larger
    est = json.loads(run_cli("plan", "--rig", "2x-rtx3090", "--json", "--model", "qwen3.6-35b-a3b", "--", "vllm",
                             "serve", "some/other-checkpoint", *SETUP_C_35B, env=offline).stdout)
    assert est["weights_bytes"] < 0.85 * d["weights_bytes"]
    assert d["kv_tokens_logged"] < 0.87 * est["kv_tokens_logged"]
    # hf:// asks the Hub first; unreachable, it falls back to the same entry
    hf = json.loads(run_cli("plan", "--rig", "2x-rtx3090", "--json", "--", "vllm", "serve", f"hf://{repo}",
                            *SETUP_C_35B, env=offline).stdout)
    assert hf["kv_tokens_logged"] == d["kv_tokens_logged"]
