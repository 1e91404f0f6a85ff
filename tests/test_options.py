import shlex

import pytest

from rigbench.engines.options import llama_args, parse_command, vllm_args
from rigbench.errors import EngineOptionError

SETUP_C = [
    """vllm serve /path/to/qwen3.6-27b-autoround-int4 --port 8004 --served-model-name qwen3.6-27b-coder \\
  --tensor-parallel-size 2 --disable-custom-all-reduce --quantization auto_round --dtype float16 \\
  --max-model-len 262144 --gpu-memory-utilization 0.92 --kv-cache-dtype fp8_e5m2 \\
  --max-num-seqs 4 --max-num-batched-tokens 8192 --enable-prefix-caching --enable-chunked-prefill \\
  --mamba-cache-mode align --reasoning-parser qwen3 --enable-auto-tool-choice \\
  --tool-call-parser qwen3_coder --default-chat-template-kwargs '{"enable_thinking": false}' \\
  --speculative-config '{"method":"mtp","num_speculative_tokens":3}' --trust-remote-code""",
    """vllm serve /path/to/qwen3.6-35b-a3b-awq --port 8007 --served-model-name qwen3.6-35b-a3b \\
  --tensor-parallel-size 2 --disable-custom-all-reduce --quantization awq_marlin \\
  --max-model-len 262144 --gpu-memory-utilization 0.92 --kv-cache-dtype fp8_e5m2 \\
  --max-num-seqs 16 --max-num-batched-tokens 8192 --enable-prefix-caching --enable-chunked-prefill \\
  --mamba-cache-mode align --reasoning-parser qwen3 --enable-auto-tool-choice \\
  --tool-call-parser qwen3_coder --default-chat-template-kwargs '{"enable_thinking": false}' \\
  --trust-remote-code""",
]
ENV = "CUDA_DEVICE_ORDER=PCI_BUS_ID NCCL_P2P_DISABLE=1 NCCL_CUMEM_ENABLE=0 VLLM_WORKER_MULTIPROC_METHOD=spawn "


@pytest.mark.parametrize("cmd", SETUP_C)
def test_setup_c_parses_and_prints_back_flag_for_flag(cmd):
    o = parse_command(ENV + cmd)
    assert o.engine == "vllm" and o.tensor_parallel == 2 and o.max_model_len == 262144
    assert o.kv_cache_dtype == "fp8_e5m2" and o.mamba_cache_mode == "align" and o.gpu_memory_utilization == 0.92
    assert o.env["NCCL_P2P_DISABLE"] == "1"
    back = vllm_args(o)
    original = shlex.split(cmd.replace("\\\n", " "))
    # JSON values come back in compact form; compare them parsed
    norm = [a.replace(" ", "") if a.startswith("{") else a for a in original]
    assert [a.replace(" ", "") if a.startswith("{") else a for a in back] == norm


def test_27b_speculative_config():
    o = parse_command(SETUP_C[0])
    assert o.speculative_config == {"method": "mtp", "num_speculative_tokens": 3}
    assert o.num_speculative_tokens == 3


def test_llama_server_round_trip_and_aliases():
    o = parse_command("./build/bin/llama-server --model m.gguf --ctx-size=32768 -ngl all --n-cpu-moe 12 "
                      "-ot 'blk\\.1\\.ffn_.*=CPU' --cache-type-k q8_0 -ctv q8_0 -fa on -ub 2048 -b 2048 --jinja")
    assert (o.ctx, o.ngl, o.n_cpu_moe, o.cache_type_k, o.ubatch) == (32768, -2, 12, "q8_0", 2048)
    assert o.overrides == [("blk\\.1\\.ffn_.*", "CPU")] and o.passthrough == ["--jinja"]
    again = parse_command(llama_args(o))
    assert again.model_dump(exclude={"binary"}) == o.model_dump(exclude={"binary"})


@pytest.mark.parametrize("cmd, msg", [
    ("llama-server -m m.gguf --ctx 4096", "no flag --ctx"),
    ("llama-server -m m.gguf -c", "needs a value"),
    ("llama-server -m m.gguf -c lots", "whole number"),
    ("vllm serve m --tensor-parallel 2", "did you mean --tensor-parallel-size"),
    ("vllm serve m --speculative-config {method:mtp}", "takes JSON"),
    ("vllm serve m --gpu-memory-utilization 1.5", "fraction"),
    ("ollama run qwen", "not an engine"),
    ("", "empty engine command"),
])
def test_bad_commands(cmd, msg):
    with pytest.raises(EngineOptionError, match=msg):
        parse_command(cmd)
