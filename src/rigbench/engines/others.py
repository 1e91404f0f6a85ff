"""Launch specs for vLLM, SGLang and Ollama (processes are run by engines.process.Server)."""

from __future__ import annotations

import shutil
import sys

from rigbench.engines.options import VllmOptions, vllm_args
from rigbench.engines.process import LaunchSpec, free_port

# Two consumer cards without NVLink (FACTS.md setup C): NCCL peer-to-peer and cuMem off, spawn workers.
CONSUMER_TP_ENV = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "NCCL_P2P_DISABLE": "1", "NCCL_CUMEM_ENABLE": "0",
                   "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}


def vllm_launch(o: VllmOptions, host: str = "127.0.0.1", port: int = 0) -> LaunchSpec:
    o = o.model_copy(update={"host": host, "port": port or free_port(host)})
    return LaunchSpec(engine="vllm", argv=vllm_args(o), env=o.env, host=o.host, port=o.port,
                      model_name=o.served_model_name, health_paths=["/health"])


def sglang_launch(model_path: str, tp: int = 1, context: int | None = None, mem_fraction: float | None = None,
                  host: str = "127.0.0.1", port: int = 0, served_name: str | None = None) -> LaunchSpec:
    """`python -m sglang.launch_server` (flags from sglang/srt/server_args.py)."""
    port = port or free_port(host)
    argv = [sys.executable, "-m", "sglang.launch_server", "--model-path", model_path, "--host", host,
            "--port", str(port)]
    if tp != 1:
        argv += ["--tp-size", str(tp)]
    if context:
        argv += ["--context-length", str(context)]
    if mem_fraction:
        argv += ["--mem-fraction-static", f"{mem_fraction:g}"]
    if served_name:
        argv += ["--served-model-name", served_name]
    return LaunchSpec(engine="sglang", argv=argv, host=host, port=port, model_name=served_name,
                      health_paths=["/health", "/v1/models"])


def ollama_launch(host: str = "127.0.0.1", port: int = 0) -> LaunchSpec:
    """`ollama serve` on its own port; models are then created from a Modelfile (`FROM path.gguf`)."""
    port = port or free_port(host)
    return LaunchSpec(engine="ollama", argv=[shutil.which("ollama") or "ollama", "serve"],
                      env={"OLLAMA_HOST": f"{host}:{port}"}, host=host,
                      port=port, health_paths=["/api/version"])


def ollama_modelfile(gguf_path: str, num_ctx: int, num_gpu: int | None = None) -> str:
    """A Modelfile that serves a GGUF with the planned context (and GPU layers, Ollama's num_gpu)."""
    lines = [f"FROM {gguf_path}", f"PARAMETER num_ctx {num_ctx}"]
    if num_gpu is not None:
        lines.append(f"PARAMETER num_gpu {num_gpu}")
    return "\n".join(lines) + "\n"
