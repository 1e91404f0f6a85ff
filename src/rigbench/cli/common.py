"""What every command group shares: the consoles, JSON output, and the option types of the engine flags."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from rigbench.errors import UsageError
from rigbench.plan import setup as plan_setup
from rigbench.plan.setup import EngineChoice as CliEngine

# wide enough for the tables when output goes to a file or a pipe
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)
GiB = 2**30

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}   # a pasted engine command after `--`

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store (default .rigbench/rigbench.db)")]

MODEL_HELP = "catalog name, config.json, .gguf, hf://ORG/REPO[:QUANT] or URL"
ModelArg = Annotated[str | None, typer.Argument(help=MODEL_HELP)]
ModelOpt = Annotated[str | None, typer.Option("--model", help="what a pasted command's model path is")]
RigOpt = Annotated[str | None, typer.Option(help="catalog rig, 'Nx GPU', a YAML file, or 'detect'")]
EngineOpt = Annotated[str, typer.Option(help="llama.cpp or vllm")]
QuantOpt = Annotated[str | None, typer.Option(help="GGUF type (Q4_K_M, UD-Q4_K_XL, ...) or vLLM format")]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="the agent's profile (catalog agents.yaml: builtin, "
                                             "claude-code, mini-swe-agent, aider; `rigbench agents`)")]
CtxOpt = Annotated[int | None, typer.Option("--ctx", "-c", help="context length (vLLM: --max-model-len)")]
NglOpt = Annotated[int | None, typer.Option(help="llama.cpp: layers on the GPU")]
CpuMoeOpt = Annotated[bool, typer.Option("--cpu-moe", help="llama.cpp: all experts in RAM")]
NCpuMoeOpt = Annotated[int, typer.Option(help="llama.cpp: experts of the first N layers in RAM")]
KvOpt = Annotated[str | None, typer.Option(help="KV cache type (q8_0, q4_0, fp8_e5m2, ...)")]
ParOpt = Annotated[int | None, typer.Option(help="sequences served at once (-np / --max-num-seqs)")]
TpOpt = Annotated[int, typer.Option(help="vLLM tensor parallel size")]
UtilOpt = Annotated[float, typer.Option(help="vLLM --gpu-memory-utilization")]
BatchedOpt = Annotated[int | None, typer.Option(help="vLLM --max-num-batched-tokens")]
PrefixOpt = Annotated[bool, typer.Option("--prefix-caching", help="vLLM --enable-prefix-caching")]
ChunkedOpt = Annotated[bool, typer.Option("--chunked-prefill", help="vLLM --enable-chunked-prefill")]
MambaOpt = Annotated[str | None, typer.Option(help="vLLM --mamba-cache-mode (none, align, all)")]
DtypeOpt = Annotated[str | None, typer.Option(help="vLLM --dtype")]
MtpOpt = Annotated[int, typer.Option(help="speculative decoding with the model's MTP head, N draft tokens")]
ToolsOpt = Annotated[bool, typer.Option("--tools/--no-tools", help="tool calling with the model's parser")]
ThinkOpt = Annotated[bool, typer.Option("--thinking/--no-thinking", help="let the chat template think")]
NameOpt = Annotated[str | None, typer.Option("--name", help="served model name")]
WeightsOpt = Annotated[str | None, typer.Option(help="local weights for a catalog model (.gguf or a folder)")]
PortOpt = Annotated[int, typer.Option(help="port (0 = a free one)")]
RouterSkewOpt = Annotated[float | None, typer.Option(
    "--router-skew", help="MoE: how unevenly the router spreads a u-batch over the experts (0 = evenly; default "
    "0.4, a trained router's; a synthetic GGUF carries its own)")]


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()   # `serve --json` keeps running: a script reading it must see it now


def resolve(ctx_args: list[str], model: str | None, model_opt: str | None, rig: str | None, cli: CliEngine):
    try:
        return plan_setup.resolve(ctx_args, model, model_opt, rig, cli)
    except UsageError as e:   # shown with the command's usage line, exit 2
        raise typer.BadParameter(str(e)) from None


def say(prefix: str):
    """A progress callback printing dim lines to stderr, or None when the output is JSON."""
    return lambda msg: err.print(f"[dim]{prefix}: {msg}[/]")
