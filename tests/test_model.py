import json
from pathlib import Path

import pytest

from rigbench import model, quant
from rigbench.errors import ModelFileError, UnknownModelError
from tests.conftest import write_gguf


def test_qwen36_35b_a3b_params_by_hand():
    s = model.from_catalog("qwen3.6-35b-a3b")
    assert s.layout.count("L") == 30 and s.layout.count("A") == 10 and s.layout[:4] == "LLLA"
    embed = 2048 * 248320
    attn = 2048 * (16 * 256 * 2) + 2 * 2048 * (2 * 256) + (16 * 256) * 2048 + 2 * 256  # gated q, k, v, o, q/k norms
    key, value = 16 * 128, 32 * 128
    gdn = 2048 * (2 * key + value) + 2048 * value + 4 * (2 * key + value) + 32 + 32 + 2 * 2048 * 32 + 128 \
        + value * 2048
    experts = 3 * 2048 * 512 * 256
    shared = 2048 + 3 * 2048 * 512
    router = 2048 * 256
    norms = 2 * 2048
    total = 2 * embed + 10 * attn + 30 * gdn + 40 * (experts + shared + router + norms) + 2048
    g = s.params_by_group(include_mtp=False, include_vision=False)
    assert g["routed_experts"] == 40 * experts
    assert g["attention"] == 10 * attn
    assert g["linear_attention"] == 30 * gdn
    assert s.total_params() == total
    # active: everything but embeddings, with 8 of 256 experts
    assert s.active_params() == total - embed - 40 * experts + 40 * experts * 8 // 256


def test_every_catalog_model_loads_with_a_consistent_layout():
    for name in model.catalog_names():
        s = model.from_catalog(name)
        assert len(s.layout) == s.layers
        assert s.total_params() > 0 and s.source


def test_published_sizes():
    # model cards: GPT-OSS-20B 20.9B total / 3.6B active; 120B 116.8B / 5.1B; Nemotron 3 Nano 31.6B
    assert model.from_catalog("gpt-oss-20b").total_params() / 1e9 == pytest.approx(20.9, abs=0.1)
    assert model.from_catalog("gpt-oss-20b").active_params() / 1e9 == pytest.approx(3.6, abs=0.1)
    assert model.from_catalog("gpt-oss-120b").total_params() / 1e9 == pytest.approx(116.8, abs=0.2)
    assert model.from_catalog("nemotron-3-nano-30b-a3b").total_params() / 1e9 == pytest.approx(31.6, abs=0.2)


def test_unknown_model_suggests_names():
    with pytest.raises(UnknownModelError, match="did you mean.*qwen3.6"):
        model.load("qwen3.6-72b")


def _qwen36_config(tmp_path: Path) -> Path:
    text = {
        "model_type": "qwen3_5_moe_text", "hidden_size": 2048, "num_hidden_layers": 40, "vocab_size": 248320,
        "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256, "attn_output_gate": True,
        "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 10, "num_experts": 256,
        "num_experts_per_tok": 8, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
        "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
        "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "max_position_embeddings": 262144,
        "mtp_num_hidden_layers": 1, "mamba_ssm_dtype": "float32",
    }
    cfg = {"architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
           "tie_word_embeddings": False, "text_config": text,
           "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                             "patch_size": 16, "out_hidden_size": 2048}}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def test_hf_config_with_nested_text_config_matches_catalog(tmp_path):
    s = model.load(str(_qwen36_config(tmp_path)))
    c = model.from_catalog("qwen3.6-35b-a3b")
    assert s.arch == "qwen35moe" and s.layout == c.layout and s.mtp_layers == 1
    assert s.total_params() == c.total_params()
    assert s.params_by_group()["vision"] == c.params_by_group()["vision"]


def test_bad_config_files(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(ModelFileError, match="not a readable config.json"):
        model.load(str(p))
    p.write_text(json.dumps({"model_type": "deepseek_v3", "hidden_size": 7168}))
    with pytest.raises(ModelFileError, match="not one rigbench reads"):
        model.load(str(p))
    with pytest.raises(ModelFileError, match="no such file"):
        model.load(str(tmp_path / "missing.gguf"))


def test_real_gguf_tensor_table_equals_the_catalog_shape(qwen_gguf):
    s = model.load(str(qwen_gguf))
    assert (s.arch, s.layers, s.hidden, s.heads, s.kv_heads, s.file_type) == ("qwen2", 24, 896, 14, 2, "Q4_K_M")
    derived = {(t.name, t.shape) for t in model.tensor_table(model.from_catalog("qwen2.5-coder-0.5b"))}
    assert {(t.name, t.shape) for t in s.tensors} == derived


def test_real_gguf_bytes_are_exact(qwen_gguf):
    from gguf import GGUFReader

    s = model.load(str(qwen_gguf))
    for t in s.tensors:
        assert t.nbytes == quant.tensor_bytes(t.shape, t.type), t.name
    r = GGUFReader(qwen_gguf)
    end = max(t.data_offset + t.n_bytes for t in r.tensors)
    padding = sum((-t.n_bytes) % 32 for t in sorted(r.tensors, key=lambda t: t.data_offset)[:-1])
    assert sum(t.nbytes for t in s.tensors) == end - r.data_offset - padding


def _tiny_gguf(path: Path) -> Path:
    return write_gguf(path, {"block_count": 1, "embedding_length": 32, "head_count": 4},
                      {"token_embd.weight": (64, 32), "blk.0.attn_q.weight": (32, 32)})


def test_gguf_errors(tmp_path):
    ok = model.load(str(_tiny_gguf(tmp_path / "tiny.gguf")))
    assert ok.layers == 1 and ok.vocab == 64
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        model.load(str(bad))
    data = (tmp_path / "tiny.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFileError, match="truncated"):
        model.load(str(cut))


def test_gguf_header_reads_as_gguf_py_reads_it(tmp_path):
    """rigbench's own header reader (ggufread) gives gguf-py's values, types and tensor table, and says when the
    header is cut."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFEndian, GGUFReader, GGUFWriter

    from rigbench import ggufread

    for endian in (GGUFEndian.LITTLE, GGUFEndian.BIG):
        path = tmp_path / f"kinds-{endian.name}.gguf"
        w = GGUFWriter(str(path), "llama", endianess=endian)
        w.data_alignment = 64
        w.add_custom_alignment(64)
        w.add_block_count(2)
        w.add_float32("x.f32", 0.8)
        w.add_float64("x.f64", 1 / 3)
        w.add_bool("x.bool", True)
        w.add_uint64("x.u64", 2**40)
        w.add_int8("x.i8", -3)
        w.add_string("x.str", "naïve ✓")
        w.add_token_list(["a", "ßb", "", "<|x|>"])
        w.add_array("x.ints", [1, -2, 3])
        w.add_array("x.floats", [0.5, 0.25])
        w.add_array("x.bools", [True, False])
        w.add_tensor("token_embd.weight", np.zeros((3, 32), dtype=np.float32))
        w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 2 * 34), dtype=np.uint8), raw_dtype=GGMLQuantizationType.Q8_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        mine, theirs = ggufread.read(path), GGUFReader(path)
        fields = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
        assert mine.fields == fields and list(mine.fields) == list(fields)
        assert [type(v) for v in mine.fields.values()] == [type(v) for v in fields.values()]
        assert mine.alignment == 64 and mine.data_offset == theirs.data_offset
        assert [(t.name, t.shape, t.tensor_type, t.data_offset, t.n_bytes) for t in mine.tensors] == \
            [(t.name, tuple(int(x) for x in t.shape), t.tensor_type, int(t.data_offset), int(t.n_bytes))
             for t in theirs.tensors]
    data = path.read_bytes()
    with pytest.raises(ggufread.GgufFormatError, match="ends"):
        ggufread.parse(data[:mine.data_offset - 200])
    with pytest.raises(ggufread.GgufFormatError, match="magic"):
        ggufread.parse(b"GGML" + data[4:])


def test_split_gguf_needs_every_part(tmp_path):
    _tiny_gguf(tmp_path / "m-00001-of-00002.gguf")
    with pytest.raises(ModelFileError, match="missing m-00002-of-00002.gguf"):
        model.load(str(tmp_path / "m-00001-of-00002.gguf"))


def test_user_yaml_adds_models_and_rigs(tmp_path, monkeypatch):
    from rigbench import catalog, hardware

    f = tmp_path / "mine.yaml"
    f.write_text("""
models:
  my-coder-7b:
    family: mine
    arch: qwen2
    source: "my own config"
    hidden: 3584
    layers: 28
    vocab: 152064
    heads: 28
    kv_heads: 4
    head_dim: 128
    qkv_bias: true
    layout: "A x28"
    ffn: dense
    intermediate: 18944
rigs:
  my-box: {gpus: [rtx3090, rtx4090], ram_gb: 96, memory: ddr5-dual}
""")
    monkeypatch.setenv("RIGBENCH_CATALOG", str(f))
    catalog.clear_cache()
    try:
        s = model.load("my-coder-7b")
        assert s.total_params() / 1e9 == pytest.approx(7.6, abs=0.1)  # Qwen2.5-7B's published size
        assert [g.name for g in hardware.load("my-box").gpus] == ["RTX 3090", "RTX 4090"]
    finally:
        monkeypatch.delenv("RIGBENCH_CATALOG")
        catalog.clear_cache()


def _tiny_checkpoint(folder: Path, with_files: bool = True) -> dict[str, int]:
    """A Qwen3.6-35B-A3B AWQ checkpoint folder as published (config, quantization_config with the modules
    kept in 16 bits, two safetensors shards, the index), at toy tensor sizes. Returns bytes per group."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = _qwen36_config(folder)
    cfg = json.loads(cfg_path.read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                                  "modules_to_not_convert": ["visual", "mlp.gate", "shared_expert_gate",
                                                             "linear_attn"]}
    cfg_path.write_text(json.dumps(cfg))
    tensors = {
        "model.language_model.embed_tokens.weight": (np.float16, (64, 32), "embeddings"),
        "lm_head.weight": (np.float16, (64, 32), "output"),
        "model.language_model.norm.weight": (np.float32, (32,), "norms"),
        "model.language_model.layers.0.linear_attn.in_proj_qkvz.weight": (np.float16, (48, 32), "linear_attention"),
        "model.language_model.layers.0.mlp.gate.weight": (np.float16, (8, 32), "router"),
        "model.language_model.layers.0.mlp.experts.3.gate_proj.qweight": (np.int32, (32, 16), "routed_experts"),
        "model.language_model.layers.0.mlp.experts.3.gate_proj.qzeros": (np.int32, (1, 16), "routed_experts"),
        "model.language_model.layers.0.mlp.experts.3.gate_proj.scales": (np.float16, (1, 128), "routed_experts"),
        "model.language_model.layers.0.mlp.shared_expert.up_proj.qweight": (np.int32, (32, 8), "shared_experts"),
        "model.language_model.layers.0.mlp.shared_expert_gate.weight": (np.float16, (1, 32), "shared_experts"),
        "model.language_model.layers.3.self_attn.q_proj.qweight": (np.int32, (32, 24), "attention"),
        "model.visual.blocks.0.attn.qkv.weight": (np.float16, (96, 32), "vision"),
        "mtp.layers.0.mlp.experts.0.up_proj.qweight": (np.int32, (16, 8), "mtp"),
    }
    arrays = {k: np.ones(shape, dtype=dt) for k, (dt, shape, _) in tensors.items()}
    names = sorted(arrays)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    if with_files:
        for f, keys in shards.items():
            save_file({k: arrays[k] for k in keys}, str(folder / f))
    total = sum(a.nbytes for a in arrays.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}))
    out: dict[str, int] = {}
    for k, (_, _, g) in tensors.items():
        out[g] = out.get(g, 0) + arrays[k].nbytes
    return out


def test_checkpoint_bytes_come_from_the_safetensors_headers(tmp_path):
    truth = _tiny_checkpoint(tmp_path / "ckpt")
    spec = model.load(str(tmp_path / "ckpt"))
    ck = spec.checkpoint
    assert ck is not None and ck.exact and ck.files == 2
    assert ck.bytes_by_group == truth and ck.total_bytes == sum(truth.values())
    assert ck.quant_method == "awq" and ck.vllm_quantization == "awq_marlin" and "linear_attn" in ck.not_converted


def test_vllm_plan_of_a_checkpoint_folder_uses_its_bytes(tmp_path, run_cli):
    truth = _tiny_checkpoint(tmp_path / "ckpt")
    folder = str(tmp_path / "ckpt")
    cmd = ["vllm", "serve", folder, "--tensor-parallel-size", "2", "--max-model-len", "32768",
           "--max-num-batched-tokens", "8192"]
    d = json.loads(run_cli("plan", "--model", folder, "--rig", "2x-rtx3090", "--json", "--", *cmd).stdout)
    loaded = {g: b for g, b in truth.items() if g != "mtp"}     # no MTP speculation: vLLM skips the MTP head
    assert d["weights_by_group"] == loaded and d["weights_bytes"] == sum(loaded.values())
    assert any("tensor headers" in n for n in d["notes"])
    # the same model from its config alone: ~19 GB of weights, so far less room for the KV cache
    cfg = json.loads(run_cli("plan", "--model", str(tmp_path / "ckpt" / "config.json"), "--rig", "2x-rtx3090",
                             "--json", "--", *cmd[:2], "m", *cmd[3:], "--quantization", "awq_marlin").stdout)
    assert cfg["weights_bytes"] > 1000 * d["weights_bytes"] and cfg["kv_cache_tokens"] < d["kv_cache_tokens"]


def test_index_only_checkpoint_scales_the_estimate_to_its_total(tmp_path):
    truth = _tiny_checkpoint(tmp_path / "ckpt", with_files=False)
    from rigbench import hardware
    from rigbench.engines.options import parse_command
    from rigbench.plan.memory import plan

    spec = model.load(str(tmp_path / "ckpt"))
    assert spec.checkpoint and not spec.checkpoint.exact
    p = plan(spec, hardware.load("2x-rtx3090"), parse_command(
        f"vllm serve {tmp_path / 'ckpt'} --tensor-parallel-size 2 --max-model-len 32768 --language-model-only"))
    # every group present in the index, scaled so all of them add up to its total size (vision left out here)
    assert set(p.weights_by_group) == set(truth) - {"vision", "mtp"}
    assert p.weights_bytes < sum(truth.values())


def test_checkpoint_folder_errors(tmp_path):
    from rigbench.checkpoint import read

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="neither"):
        read(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        read(bad)
