"""What to plan: a model, a rig and engine options, from rigbench's own options or a pasted engine command."""

from __future__ import annotations

from pathlib import Path

from rigbench import hardware
from rigbench import model as model_mod
from rigbench.checkpoint import published as published_checkpoint
from rigbench.engines.options import VllmOptions, parse_command, parse_llama_args
from rigbench.errors import UsageError

ENGINE_PROGRAMS = ("llama-server", "llama-cli", "vllm", "python", "python3", "env")


class EngineChoice:
    """The engine flags a user gave as rigbench options, turned into the engine's own option record."""

    def __init__(self, **kw):
        self.kw = kw

    def build(self, spec: model_mod.ModelSpec, ref: str, rig: hardware.Rig):
        k = self.kw
        engine = k["engine"]
        weights = k.get("weights") or spec.path or ref
        if engine.lower() == "vllm":
            passthrough: list[str] = []
            if k.get("tp", 1) > 1 and rig.gpus and rig.link_gbs < 100:
                passthrough.append("--disable-custom-all-reduce")  # no NVLink: custom all-reduce needs P2P
            if spec.arch.startswith("qwen3") and k.get("reasoning", True):
                passthrough += ["--reasoning-parser", "qwen3"]
            if k.get("tools", True):
                parser = "qwen3_coder" if spec.arch.startswith(("qwen35", "qwen3next", "qwen3moe")) else "hermes"
                passthrough += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
            if not k.get("thinking", True):
                passthrough += ["--default-chat-template-kwargs", '{"enable_thinking": false}']
            passthrough.append("--trust-remote-code")
            from rigbench.engines.others import CONSUMER_TP_ENV
            env = dict(CONSUMER_TP_ENV) if k.get("tp", 1) > 1 and rig.link_gbs < 100 else {}
            quant = k.get("quant")
            vq = {"autoround": "auto_round", "awq": "awq_marlin", "gptq": "gptq_marlin"}.get((quant or "").lower(),
                                                                                          quant)
            return VllmOptions(
                model_path=weights, env=env, tensor_parallel=k.get("tp", 1),
                gpu_memory_utilization=k.get("gpu_util", 0.9), max_model_len=k.get("context"),
                max_num_seqs=k.get("parallel"), quantization=vq, kv_cache_dtype=k.get("kv_type") or "auto",
                max_num_batched_tokens=k.get("batched"), enable_prefix_caching=k.get("prefix") or None,
                enable_chunked_prefill=k.get("chunked") or None, mamba_cache_mode=k.get("mamba_mode"),
                dtype=k.get("dtype") or "auto", served_model_name=k.get("name"), port=k.get("port") or 8000,
                speculative_config={"method": "mtp", "num_speculative_tokens": k["mtp"]} if k.get("mtp") else None,
                passthrough=passthrough)
        if engine.lower() not in ("llama.cpp", "llama-server", "llamacpp"):
            raise UsageError(f"unknown engine {engine!r}; use llama.cpp or vllm")
        args = ["-m", weights]
        if k.get("context"):
            args += ["-c", str(k["context"])]
        if k.get("ngl") is not None:
            args += ["-ngl", str(k["ngl"])]
        if k.get("cpu_moe"):
            args += ["--cpu-moe"]
        if k.get("n_cpu_moe"):
            args += ["--n-cpu-moe", str(k["n_cpu_moe"])]
        if k.get("kv_type"):
            args += ["-ctk", k["kv_type"], "-ctv", k["kv_type"]]
        if k.get("parallel"):
            args += ["-np", str(k["parallel"])]
        if k.get("tools", True):
            args += ["--jinja"]
        return parse_llama_args(args)


def resolve(command_args: list[str], model: str | None, model_opt: str | None, rig: str | hardware.Rig | None,
            choice: EngineChoice | None):
    """(spec, rig, options) from either a pasted command or rigbench's own options."""
    command = list(command_args)
    if model and (Path(model).name.startswith(ENGINE_PROGRAMS) or "=" in model):
        # `rigbench plan --model M --rig R -- vllm serve ...`: click hands the program name over as MODEL
        command, model = [model, *command], None
    if model and model.startswith("-"):
        raise UsageError(f"No such option: {model}")
    if command and not (Path(command[0]).name.startswith(ENGINE_PROGRAMS) or "=" in command[0]):
        # the commands take unknown options only as part of a pasted engine command
        raise UsageError(f"No such option: {command[0]}" if command[0].startswith("-") else
                         f"unexpected {command[0]!r}: a pasted engine command starts with llama-server or vllm")
    r = rig if isinstance(rig, hardware.Rig) else hardware.load(rig)
    if command:
        options = parse_command(command)
        ref = model_opt or model or options.model_path or _hf_repo(options)
        if not ref:
            raise UsageError("name the model with --model (the command has no model path)")
        spec = model_mod.load(ref)
        known = published_checkpoint(options.model_path) if options.model_path and spec.checkpoint is None else None
        if known is not None:
            spec = spec.model_copy(update={"checkpoint": known[1]})
        if options.model_path is None:
            options.model_path = ref
        return spec, r, options
    ref = model_opt or model
    if not ref:
        raise UsageError("give a MODEL (catalog name, config.json or .gguf)")
    if choice is None:
        raise UsageError("give engine options or an engine command")
    spec = model_mod.load(ref)
    return spec, r, choice.build(spec, ref, r)


def _hf_repo(options) -> str | None:
    """`llama-server -hf ORG/REPO[:QUANT]`: the Hub model the server would download."""
    args = getattr(options, "passthrough", [])
    for flag in ("-hf", "-hfr", "--hf-repo"):
        if flag in args[:-1]:
            return "hf://" + args[args.index(flag) + 1]
    return None


def default_quant(spec: model_mod.ModelSpec, options, quant: str | None) -> str | None:
    if isinstance(options, VllmOptions) or spec.tensors is not None:
        return None
    return quant or ("MXFP4_MOE" if spec.native_quant == "MXFP4" else "Q4_K_M")


def rig_for_tuning(rig: str | None, vram: float | None, bandwidth: float | None) -> hardware.Rig:
    """The rig, with the VRAM budget applied; an unknown GPU is built from --vram and --bandwidth."""
    from rigbench.errors import UnknownRigError

    try:
        r = hardware.load(rig)
    except UnknownRigError:
        if vram is None or bandwidth is None:
            raise UnknownRigError(f"unknown GPU or rig {rig!r}: give its memory and bandwidth with --vram GB "
                                  f"--bandwidth GB/s, or a rig YAML (see `rigbench rigs`)") from None
        gpu = hardware.GPU(name=str(rig), vram_bytes=int(vram * hardware.GIB), bandwidth_gbs=bandwidth,
                           fp16_tflops=50.0, source="given on the command line")
        base = hardware.from_catalog("rtx4090")
        return base.model_copy(update={"name": str(rig), "gpus": [gpu]})
    return r.with_vram(vram)
