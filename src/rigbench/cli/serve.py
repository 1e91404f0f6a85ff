"""`serve`, `synth`: an engine started with planned flags; a GGUF with random weights at a model's shapes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rigbench import model as model_mod
from rigbench.cli.common import (
    AgentOpt,
    BatchedOpt,
    ChunkedOpt,
    CliEngine,
    CpuMoeOpt,
    CtxOpt,
    DtypeOpt,
    EngineOpt,
    GiB,
    JsonOpt,
    KvOpt,
    MambaOpt,
    ModelArg,
    ModelOpt,
    MtpOpt,
    NameOpt,
    NCpuMoeOpt,
    NglOpt,
    ParOpt,
    PortOpt,
    PrefixOpt,
    QuantOpt,
    RigOpt,
    ThinkOpt,
    ToolsOpt,
    TpOpt,
    UtilOpt,
    WeightsOpt,
    emit_json,
    err,
    out,
    resolve,
)
from rigbench.engines.launch import EMBEDDED_NAME, embedded_default, launch_for
from rigbench.engines.options import LlamaCppOptions
from rigbench.errors import DoesNotFitError
from rigbench.plan import memory
from rigbench.plan.setup import default_quant
from rigbench.procs import stop_reason


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
    agent: AgentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start an engine with planned flags and keep it up until Ctrl-C (no MODEL: the embedded default). With
    --agent and no --ctx, the context is the one that agent needs (its profile's first request and room to work)."""
    from rigbench.engines.launch import start
    from rigbench.plan.speed import AgentProfile

    if agent and context is None:
        context = AgentProfile.named(agent).suggested_context

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
        return emit_json(info) if as_json else out.print(launch.shell(), soft_wrap=True, highlight=False)
    if not as_json:
        out.print(f"[dim]$ {launch.shell()}[/]", soft_wrap=True, highlight=False)
    log_path = Path(".rigbench/logs") / f"{launch.engine}-{launch.port}.log"
    server = start(launch, log_path, timeout)
    info["pid"] = server.proc.pid if server.proc else None
    info["log"] = str(log_path)
    if as_json:
        emit_json(info)
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
        return emit_json(info)
    out.print(f"wrote {path} ({info['bytes'] / GiB:.2f} GiB, {info['tensors']} tensors, {written.arch}, "
              f"{written.layers} layers)")
