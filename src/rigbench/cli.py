"""The `rigbench` command: one subcommand per stage; options are parsed here, the work and the rendering
happen in the stage modules and in `report`."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table  # noqa: F401  (after a merge with main only other command blocks use it)

from rigbench import __version__, catalog, hardware
from rigbench import model as model_mod
from rigbench.bench import SCENARIOS
from rigbench.engines.launch import EMBEDDED, EMBEDDED_NAME, embedded_default, embedded_launch, launch_for
from rigbench.engines.options import LlamaCppOptions
from rigbench.errors import DoesNotFitError, RigbenchError, UsageError
from rigbench.plan import memory
from rigbench.plan import setup as plan_setup
from rigbench.plan.setup import EngineChoice as CliEngine
from rigbench.plan.setup import default_quant
from rigbench.procs import stop_exit_code, stop_on_signals, stop_reason
from rigbench.report import terminal
from rigbench.report.rows import plan_json
from rigbench.report.terminal import task_table as _task_table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Plan, serve, benchmark and evaluate open-weight coding models on your own rig.")
# wide enough for the tables when output goes to a file or a pipe
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)
GiB = 2**30

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()   # `serve --json` keeps running: a script reading it must see it now


_quote = shlex.quote   # kept for command blocks in other branches


def resolve(ctx_args: list[str], model: str | None, model_opt: str | None, rig: str | None, cli: CliEngine):
    try:
        return plan_setup.resolve(ctx_args, model, model_opt, rig, cli)
    except UsageError as e:   # shown with the command's usage line, exit 2
        raise typer.BadParameter(str(e)) from None


def print_plan(p: memory.Plan) -> None:
    terminal.print_plan(out, p)


def print_speed(sp) -> None:
    terminal.print_speed(out, sp)


def print_agent(a) -> None:
    terminal.print_agent(out, a)


def print_bench(rows: dict[str, dict], title: str) -> None:
    terminal.print_bench(out, rows, title)


def run_stored_suite(cfg, db_url: str | None, quiet: bool = False):
    from rigbench.bench.stored import run_stored_suite as run_suite
    return run_suite(cfg, db_url, progress=None if quiet else lambda n: err.print(f"[dim]bench: {n}[/]"))


def measure_turn(args: list[str], gguf: str, r: hardware.Rig, prompt: int, output: int,
                 server_bin: str | None) -> dict:
    from rigbench.bench.stored import measure_turn as measure
    return measure(args, gguf, r, prompt, output, server_bin, say=lambda m: err.print(f"[dim]{m}[/]"))


def _start_embedded(log_dir: Path, name: str = EMBEDDED_NAME, context: int = 16384):
    from rigbench.engines import llamacpp

    log_dir.mkdir(parents=True, exist_ok=True)
    spec = embedded_launch(context, name=name)
    err.print(f"[dim]eval: starting the embedded model: {spec.shell()}[/]")
    return llamacpp.start(spec, log_dir / "eval-llama-server.log", timeout=180)


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
    for name in model_mod.model_names():
        s = model_mod.from_catalog(name)
        rows.append({"name": name, "arch": s.arch, "params_b": round(s.total_params() / 1e9, 2),
                     "active_b": round(s.active_params() / 1e9, 2), "layers": s.layers,
                     "kind": ("MoE " if s.is_moe else "dense ") + _layout_kind(s), "context": s.context,
                     "quality": s.quality, "source": s.source})
    if as_json:
        return _emit_json(rows)
    terminal.print_models(out, rows)


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
    terminal.print_rigs(out, items)


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
    terminal.print_inspect(out, s, groups)


# ---- plan ----------------------------------------------------------------------------------------


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


# ---- serve / synth ---------------------------------------------------------------------------------


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
    from rigbench.engines.launch import start
    server = start(launch, log_path, timeout)
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
              "exact_prompt_lengths": suite.exact, "scenarios": rows,
              "machine": suite.machine.model_dump() if getattr(suite, "machine", None) else None}
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
    from rigbench.route.accounting import describe

    dbe = store.connect(db)
    rows = store.list_runs(dbe)
    for r in rows:   # a router run's per-upstream accounting; an escalated eval's cost
        r["upstreams"] = describe(store.run_summaries(dbe, r["id"])) if r["kind"] in ("route", "eval") else ""
    if as_json:
        return _emit_json(rows)
    terminal.print_runs(out, rows)


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
    terminal.print_tune(out, res, measured, p, g, context)


def parse_duration(text: str) -> float:
    """Seconds from `1200`, `90s`, `20m` or `1.5h`."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration; write it as 1200, 90s, 20m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@app.command()
def advise(
    rig: RigOpt = None, vram: VramOpt = None, bandwidth: BandwidthOpt = None,
    context: Annotated[int, typer.Option("--ctx", "-c", help="context the server must hold")] = 32768,
    turn: TurnOpt = "8000,256",
    time_limit: Annotated[str, typer.Option(help="time limit per task (20m, 1h, 900s)")] = "20m",
    run: Annotated[int | None, typer.Option("--run", help="task times from this stored eval run's turns instead "
                                            "of the agent profile")] = None,
    top: Annotated[int, typer.Option(help="rows to show")] = 20,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every catalog model x quant x engine x placement that fits the rig, ranked by expected tasks solved in the
    time limit (published pass rate x share of tasks finished in time here), with the quality-vs-speed Pareto
    front; models without published scores listed apart."""
    from rigbench.plan import advise as advise_mod
    from rigbench.plan.tune import Turn

    limit = parse_duration(time_limit)
    trace = None
    if run is not None:
        from rigbench import store
        from rigbench.whatif import load

        trace = load(store.connect(db), run)
    r = rig_for_tuning(rig, vram, bandwidth)
    p, g = (int(x) for x in turn.split(","))
    rows = advise_mod.advise(r, context, Turn(prompt=p, output=g),
                             progress=None if as_json else lambda n: err.print(f"[dim]advise: {n}[/]"))
    if not rows:
        err.print(f"[red]nothing in the catalog fits {r.describe()} at context {context:,}[/]; lower --ctx")
        raise typer.Exit(3)
    ranking = advise_mod.rank(rows, r, limit, trace)
    if as_json:
        return _emit_json(ranking.model_dump())
    from rigbench.whatif.render import advise_tables

    for t in advise_tables(ranking, top):
        out.print(t)
    out.print(f"[dim]task times: {ranking.distribution}. Pass rates are published figures of the exact model (source "
              f"and harness in `rigbench models --json`); quantisation loss not counted[/]")


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


@app.command(name="eval")
def eval_cmd(
    tasks: Annotated[Path | None, typer.Option(help="a task folder or a folder of tasks (default: the starter suite)")]
    = None,
    name: Annotated[list[str] | None, typer.Option("--task", help="task name or glob (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="only tasks with this tag (repeatable)")] = None,
    agent: Annotated[str, typer.Option(help="builtin | oracle | noop")] = "builtin",
    agent_cmd: Annotated[str | None, typer.Option(help="external CLI agent run inside the sandbox, pointed at the "
                                                  "endpoint by OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL "
                                                  "and ANTHROPIC_BASE_URL / ANTHROPIC_AUTH_TOKEN / ANTHROPIC_MODEL")]
    = None,
    agent_profile: Annotated[str | None, typer.Option(help="the agent's profile in the catalog (agents.yaml; "
                                                      "default: detected from --agent-cmd)")] = None,
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
    dataset: Annotated[str | None, typer.Option(help="a published task set, fetched with git and cached "
                                                "(terminal-bench@2.0)")] = None,
    agent_network: Annotated[str, typer.Option(help="task (its allow_internet, as Harbor) | on | off")] = "task",
    verifier_network: Annotated[str, typer.Option(help="task (its allow_internet, as Harbor) | on | off")] = "task",
    build: Annotated[bool, typer.Option("--build", help="docker: build the Dockerfile even when the task names a "
                                        "docker_image")] = False,
    retry_errors: Annotated[int, typer.Option(help="attempts more for a task that ends in error (with --resume: "
                                              "stored errors run again)")] = 0,
    escalate_to: Annotated[str | None, typer.Option(help="endpoint of a stronger model: tasks that fail or time "
                                                    "out are run again there (the cost in time is reported)")]
    = None,
    escalate_model: Annotated[str | None, typer.Option(help="model name to request from --escalate-to")] = None,
    embedded: Annotated[str, typer.Option(help="embedded model started without --url: "
                                          + " | ".join(EMBEDDED))] = EMBEDDED_NAME,
    db: DbOpt = None,
    ray: Annotated[str | None, typer.Option("--ray", help="run the tasks on Ray: auto (this machine's cluster, "
                                            "or a new local one) or the head's ADDRESS; one store for all, "
                                            "e.g. --db postgresql://...")] = None,
    worker_url: Annotated[list[str] | None, typer.Option(help="with --ray: NODE=URL, the endpoint of the "
                                                         "workers on NODE (IP or host name; * for any)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Agentic coding tasks in a sandbox: an agent works, the task's verifier grades, every step is stored."""
    from rigbench import store
    from rigbench.sandbox import bwrap_available, docker_available
    from rigbench.tasks import formats, runner

    if sandbox not in ("bwrap", "docker"):
        raise typer.BadParameter("--sandbox is bwrap or docker")
    if {agent_network, verifier_network} - {"task", "on", "off"}:
        raise typer.BadParameter("--agent-network and --verifier-network are task, on or off")
    if dataset and tasks:
        raise typer.BadParameter("give --dataset or --tasks, not both")
    why = docker_available() if sandbox == "docker" else bwrap_available()
    if why:
        raise RigbenchError(f"eval needs the {sandbox} sandbox: {why}")
    dbe = store.connect(db)
    endpoints = _worker_urls(worker_url)
    if ray:   # before a run is stored: a cluster that does not answer is an error, not a run left `running`
        from rigbench.scale import init
        init(ray)
    if resume is not None:
        cfg, task_list = runner.reopen_run(dbe, resume, tasks)
        cfg.retry_errors = retry_errors or cfg.retry_errors
        run_id = resume
    else:
        kind = "cmd" if agent_cmd else agent
        if kind not in ("builtin", "oracle", "noop", "cmd"):
            raise typer.BadParameter("--agent is builtin, oracle or noop (or give --agent-cmd)")
        pinned = None
        if dataset:
            from rigbench.tasks import datasets

            ds = datasets.fetch(dataset)
            folder, pinned = ds.path, ds.record()
            err.print(f"[dim]eval: {dataset} at commit {ds.commit[:12]} ({ds.path})[/]")
        else:
            folder = tasks or formats.starter_suite()
        task_list = formats.load_dataset(folder, name, tag)
        cfg = runner.EvalConfig(agent=kind, agent_cmd=agent_cmd, url=url, model=model_name, time_limit_s=time_limit,
                                max_steps=max_steps, parallel=parallel, max_response_tokens=max_response_tokens,
                                sandbox=sandbox, agent_network=agent_network, verifier_network=verifier_network,
                                build=build, retry_errors=retry_errors, escalate_to=escalate_to,
                                escalate_model=escalate_model, agent_profile=agent_profile)
        if not url and kind in ("builtin", "cmd"):
            cfg.model = embedded      # stored with the run, so --resume starts the same model
        elif url and kind in ("builtin", "cmd"):
            runner.preflight(cfg)     # refuse before a run is stored: the server's context vs the agent's first request
        run_id = runner.new_run(dbe, cfg, folder, name, tag, dataset=pinned)
    server = None
    try:   # from here on the run ends stored as done, interrupted or failed, never left `running`
        if cfg.agent in ("builtin", "cmd") and not cfg.url and not endpoints:
            if resume is not None and cfg.model in EMBEDDED:    # a resumed run keeps its embedded model
                embedded = cfg.model
            server = _start_embedded(Path(".rigbench"), embedded,
                                     max(16384, runner.profile_for(cfg).suggested_context))
            cfg.url, cfg.model = server.url, embedded
        progress = None if as_json else lambda o: err.print(f"[dim]eval: {o.task}: {o.status} in {o.wall_s:.1f} s[/]")
        if ray:
            from rigbench.scale import eval as ray_eval
            outcomes = ray_eval.run_eval(task_list, cfg, db or store.default_url(), run_id, address=ray,
                                         on_done=progress, endpoints=endpoints)
        else:
            from rigbench.monitor import recorded
            with recorded(dbe, run_id, cfg.url):
                outcomes = runner.run_eval(task_list, cfg, dbe, run_id, on_done=progress)
        cost = None
        if cfg.escalate_to:
            outcomes, cost = runner.escalate(task_list, outcomes, cfg, dbe, run_id, on_done=progress)
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
    summary = runner.Summary.of(outcomes)
    from rigbench.monitor import one_line, stored_summary
    machine = stored_summary(dbe, run_id)
    if as_json:
        return _emit_json({"run": run_id, "summary": summary.model_dump(), "escalation": cost, "machine": machine,
                           "tasks": [{"task": o.task, "status": o.status, "wall_s": o.wall_s, "turns": o.turns,
                                      "tokens_in": o.tokens_in, "tokens_out": o.tokens_out, "detail": o.detail,
                                      "escalated_from": o.escalated_from, "first_wall_s": o.first_wall_s}
                                     for o in outcomes]})
    out.print(_task_table(f"eval run {run_id}: {cfg.agent} agent, {len(outcomes)} tasks", outcomes))
    if cost:
        out.print(f"escalation: {cost['tasks']} tasks rerun on {cost['to']}, {cost['rescued']} solved there; "
                  f"+{cost['extra_s']:.1f} s on top of {cost['all_first_s']:.1f} s "
                  f"({cost['first_attempts_s']:.1f} s of it spent on the first attempts)")
    rate = "no task scored" if summary.pass_rate is None else f"pass rate {summary.pass_rate:.1%}"
    out.print(f"{summary.solved}/{summary.scored} solved ({rate}); {summary.errors} errors not counted "
              f"(the environment's, the verifier's or the engine's) · `rigbench show {run_id}` for every step")
    if line := one_line(machine):
        out.print(line, highlight=False)


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
    terminal.print_compare(out, run_a, run_b, runs_, rows)


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
    terminal.print_events(out, events)


# ---- experiment / report / demo ------------------------------------------------------------------

def _run_experiment(exp, experiment_id: int, db: str | None, quiet: bool):
    """The experiment with a progress bar per candidate (ETA from predicted task times)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn, TimeRemainingColumn

    from rigbench import experiment

    plans = experiment.plan_all(exp)
    units = experiment.work_units(exp, plans)
    with Progress("[progress.description]{task.description}", BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), "eta", TimeRemainingColumn(), console=err, disable=quiet) as prog:
        bars = {p.name: prog.add_task(p.name, total=max(units[p.name], 1.0)) for p in plans}

        def tick(name: str, w: float) -> None:
            prog.update(bars[name], advance=w)

        def say(msg: str) -> None:
            if not quiet:
                prog.console.print(f"[dim]{msg}[/]", highlight=False)

        try:
            steps = experiment.run(exp, experiment_id, db, experiment.Hooks(say=say, tick=tick))
        finally:
            for b in bars.values():
                prog.update(b, completed=prog.tasks[b].total)
    return plans, steps


@app.command(name="experiment")
def experiment_cmd(
    file: Annotated[Path | None, typer.Argument(help="experiment YAML (see examples/)")] = None,
    resume: Annotated[int | None, typer.Option(help="experiment id to resume: finished steps are kept")] = None,
    predict_only: Annotated[bool, typer.Option("--predict-only", help="plans, predicted speed and task times; "
                                               "nothing is started")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Candidates x stages: for each, plan (refuse what does not fit) -> serve -> bench -> eval -> stop."""
    from rigbench import experiment, report

    if file is None and resume is None:
        raise typer.BadParameter("give an experiment FILE.yaml, or --resume ID")
    exp = experiment.stored_spec(db, resume) if resume is not None else experiment.load(file)
    if predict_only:
        plans = experiment.plan_all(exp)
        if as_json:
            return _emit_json({"experiment": exp.name, "predict_only": True,
                               "candidates": [p.model_dump() for p in plans]})
        return terminal.print_candidates(out, plans)
    eid = experiment.start(exp, db, resume)
    try:
        plans, steps = _run_experiment(exp, eid, db, as_json)
    except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM or SIGHUP: what finished is kept
        reason, code = stop_reason(e)
        err.print(f"stopped ({reason}): experiment {eid} is stored as interrupted; "
                  f"`rigbench experiment --resume {eid}` runs what did not finish")
        raise typer.Exit(code) from None
    from rigbench import store
    rep = report.build(store.connect(db), [str(eid)])
    if as_json:
        return _emit_json({"experiment": eid, "candidates": [p.model_dump() for p in plans],
                           "steps": [s.model_dump() for s in steps], "report": rep.model_dump()})
    terminal.print_report(out, rep)
    out.print(f"experiment {eid} · `rigbench report {eid} -o report.html`")


@app.command(name="report")
def report_cmd(
    refs: Annotated[list[str] | None, typer.Argument(help="experiment ids (3) and runs (run:7); default: the "
                                                     "latest experiment")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--out", help="file to write (default: print tables)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="html or md")] = "html",
    list_: Annotated[bool, typer.Option("--list", help="list stored experiments")] = False,
    accept_disturbed: Annotated[bool, typer.Option("--accept-disturbed", help="let figures marked disturbed? "
                                                   "into the verdict")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A report of experiments or runs: plans, speed predicted beside measured, charts, eval, verdict."""
    from rigbench import report, store

    if fmt not in ("html", "md"):
        raise typer.BadParameter("--format is html or md")
    dbe = store.connect(db)
    if list_:
        rows = store.list_experiments(dbe)
        if as_json:
            return _emit_json(rows)
        for r in rows:
            out.print(f"{r['id']}: {r['name']} ({r['status']}, {str(r['started_at'])[:19]})", highlight=False)
        return None
    rep = report.build(dbe, refs or [], accept_disturbed=accept_disturbed)
    if output:
        report.write(rep, output, fmt)
    if as_json:
        return _emit_json({**rep.model_dump(), "path": str(output) if output else None})
    if output:
        out.print(f"report: {output.resolve()}", highlight=False)
    elif fmt == "md":
        from rigbench.report import markdown
        sys.stdout.write(markdown.render(rep))
    else:
        terminal.print_report(out, rep)


@app.command()
def demo(out_dir: Annotated[Path, typer.Option(help="where the report goes")] = Path(".rigbench/demo"),
         as_json: JsonOpt = False) -> None:
    """rigbench's main job on embedded defaults: plan every catalog model here and on a 24 GB GPU, then a small
    experiment with the embedded model on this machine (serve, bench, eval) and its HTML report."""
    from rigbench import experiment, report, store
    from rigbench.experiment import demo as demo_mod
    from rigbench.sandbox import bwrap_available

    out_dir.mkdir(parents=True, exist_ok=True)
    rigs_ = [hardware.detect(), hardware.load("rtx4090")]
    rows = demo_mod.catalog_plans(rigs_)
    (out_dir / "plans.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "plans.md").write_text(demo_mod.plans_markdown(rows))
    if not as_json:
        terminal.print_catalog_plans(out, rigs_, rows)
    if why := bwrap_available():
        err.print(f"the demo's eval part will be skipped: {why} (Debian/Ubuntu: `sudo apt-get install -y "
                  f"bubblewrap`; `make demo` installs it when it runs as root)")
    exp = experiment.load(demo_mod.DEMO_EXPERIMENT)
    db_url = store.default_url()   # the usual store: `rigbench report` afterwards shows the demo
    eid = experiment.start(exp, db_url)
    if not as_json:
        out.print(f"[bold]experiment {eid}[/]: {exp.name} ({demo_mod.DEMO_EXPERIMENT})", highlight=False)
    try:
        _run_experiment(exp, eid, db_url, as_json)
    except KeyboardInterrupt as e:
        reason, code = stop_reason(e)
        err.print(f"stopped ({reason}): `rigbench experiment --resume {eid}` runs what did not finish")
        raise typer.Exit(code) from None
    rep = report.build(store.connect(db_url), [str(eid)])
    html_path = report.write(rep, out_dir / "report.html")
    report.write(rep, out_dir / "report.md", "md")
    if as_json:
        return _emit_json({"plans": rows, "experiment": eid, "report": str(html_path.resolve()),
                           "verdict": rep.verdict})
    terminal.print_report(out, rep)
    out.print(f"report: {html_path.resolve()} (Markdown: {(out_dir / 'report.md').resolve()}; plans: "
              f"{(out_dir / 'plans.md').resolve()})", highlight=False)


# ---- scale (Ray, shared store) ---------------------------------------------------------------------

def _worker_urls(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs or []:
        node, sep, url = p.partition("=")
        if not sep or not node or not url.startswith(("http://", "https://")):
            raise typer.BadParameter(f"--worker-url {p!r}: give NODE=URL, e.g. 10.0.0.7=http://127.0.0.1:8080")
        out[node] = url
    return out


@app.command(name="ray-resources")
def ray_resources(
    rig: Annotated[str | None, typer.Option(help="rig name, YAML or `detect` (default: this machine)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The Ray resources of this node's GPUs, for `ray start --resources "$(rigbench ray-resources --json)"`:
    experiments place each candidate's engine on a node whose GPUs fit its plan."""
    from rigbench.scale.placement import node_resources

    res = node_resources(hardware.load(rig))
    if as_json:
        return _emit_json(res)
    out.print(" ".join(f"{k}={v:g}" for k, v in res.items()) or "no GPU: no GPU resources to advertise")


# ---- what-if / replay ------------------------------------------------------------------------------

@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def whatif(
    ctx: typer.Context, run: Annotated[int, typer.Argument(help="stored eval run (`rigbench runs`)")],
    rig: Annotated[list[str] | None, typer.Option(help="target rig (repeatable: targets side by side)")] = None,
    target: Annotated[list[str] | None, typer.Option(
        help="a target with its own engine command, 'RIG: llama-server -m M --cpu-moe ...' (repeatable)")] = None,
    model_opt: Annotated[str | None, typer.Option("--model", help="target model (default: the run's)")] = None,
    engine: EngineOpt = "llama.cpp", quant: QuantOpt = None, context: CtxOpt = None, ngl: NglOpt = None,
    cpu_moe: CpuMoeOpt = False, n_cpu_moe: NCpuMoeOpt = 0, kv_type: KvOpt = None, parallel: ParOpt = None,
    tp: TpOpt = 1, gpu_util: UtilOpt = 0.9, batched: BatchedOpt = None, prefix: PrefixOpt = False,
    mamba_mode: MambaOpt = None, mtp: MtpOpt = 0,
    prefix_cache: Annotated[str, typer.Option(help="what the target reuses between turns: auto (the engine's "
                                              "rule), on, off (old llama-server builds on hybrid models)")] = "auto",
    time_limit: Annotated[float | None, typer.Option(help="seconds per task (default: each task's recorded)")]
    = None,
    db: DbOpt = None, as_json: JsonOpt = False,
) -> None:
    """A stored run's tasks predicted on other placements: wall time, prefill/decode/tools, timeouts.

    Engine flags as options (`--rig rtx5080 --cpu-moe`) or a pasted command after `--`; each --rig is one
    target with the same flags.
    """
    from rigbench import store
    from rigbench.whatif import Target, load, predict
    from rigbench.whatif.render import task_table, totals_table

    if prefix_cache not in ("auto", "on", "off"):
        raise typer.BadParameter("--prefix-cache is auto, on or off")
    trace = load(store.connect(db), run)
    ref = model_opt or trace.model
    if not ref:
        raise typer.BadParameter(f"run {run} does not name its model; give the target's with --model")
    cli = CliEngine(engine=engine, quant=quant, context=context, ngl=ngl, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe,
                    kv_type=kv_type, parallel=parallel, tp=tp, gpu_util=gpu_util, batched=batched, prefix=prefix,
                    mamba_mode=mamba_mode, mtp=mtp)
    import shlex

    if not rig and not target:
        raise typer.BadParameter("give a target: --rig RIG (with engine flags) or --target 'RIG: engine command'")
    wanted = [(name, list(ctx.args)) for name in rig or []]
    for t in target or []:
        name, sep, command = t.partition(":")
        if not sep or not command.strip():
            raise typer.BadParameter(f"--target {t!r}: write it as 'RIG: llama-server -m M.gguf FLAGS'")
        wanted.append((name.strip(), shlex.split(command)))
    results = []
    for name, command in wanted:
        spec, r, options = resolve(command, None, ref, name, cli)
        p = memory.plan(spec, r, options, default_quant(spec, options, quant))
        flags = " ".join(_quote(a) for i, a in enumerate(p.command[1:], 1) if "-m" not in p.command[i - 1:i + 1])
        results.append(predict(trace, Target(label=f"{spec.name} on {r.name}: {flags}"[:120], spec=spec, rig=r,
                                             plan=p, prefix_cache=prefix_cache), time_limit))
    if as_json:
        return _emit_json({"run": run, "targets": [x.model_dump() for x in results]})
    out.print(task_table(results))
    out.print(totals_table(results))
    for i, x in enumerate(results, 1):
        out.print(f"[{i}] {x.target}: ±{x.prefill_uncertainty:.0%} prefill, ±{x.decode_uncertainty:.0%} decode "
                  f"({x.calibration})", highlight=False)
        for n in x.notes:
            out.print(f"[dim]note:[/] {n}")


@app.command()
def replay(
    run: Annotated[int, typer.Argument(help="stored eval run (`rigbench runs`)")],
    url: Annotated[str, typer.Option(help="OpenAI-compatible server to replay against (llama-server, vLLM)")],
    model_name: Annotated[str, typer.Option("--model", help="model name to request")] = "default",
    no_idle: Annotated[bool, typer.Option("--no-idle", help="add the recorded tool time instead of waiting it out")]
    = False,
    db: DbOpt = None, as_json: JsonOpt = False,
) -> None:
    """Resend a stored run's turns, shape for shape (prompt lengths, shared prefixes, output lengths, tool
    gaps), to a live server and measure each task's time; stored as a `replay` run."""
    from rigbench import store
    from rigbench.whatif import load
    from rigbench.whatif.render import replay_table
    from rigbench.whatif.replay import replay as replay_run

    dbe = store.connect(db)
    res = replay_run(load(dbe, run), url, dbe, model_name, idle=not no_idle,
                     progress=None if as_json else lambda m: err.print(f"[dim]replay: {m}[/]"))
    if as_json:
        return _emit_json(res.model_dump())
    out.print(replay_table(res))


# ---- tasks: what each task needs and where it runs ----------------------------------------------------

@app.command(name="tasks")
def tasks_cmd(
    tasks: Annotated[Path | None, typer.Option(help="a task folder or a folder of tasks (default: the starter suite)")]
    = None,
    dataset: Annotated[str | None, typer.Option(help="a published task set (terminal-bench@2.0), fetched and cached")]
    = None,
    name: Annotated[list[str] | None, typer.Option("--task", help="task name or glob (repeatable)")] = None,
    check: Annotated[bool, typer.Option("--check", help="also say whether bubblewrap and Docker can run each "
                                        "task on this machine")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Each task's requirements (workdir, image, network, limits, packages) and, with --check, which sandbox
    can run it here."""
    from rigbench.sandbox import bwrap_available, docker_available
    from rigbench.tasks import check as check_mod
    from rigbench.tasks import datasets, formats

    folder = datasets.fetch(dataset).path if dataset else tasks or formats.starter_suite()
    task_list = formats.load_dataset(folder, name)
    bw, dk = (bwrap_available(), docker_available()) if check else ("not checked", "not checked")
    rows = [check_mod.check(t, bw, dk) for t in task_list]
    if as_json:
        return _emit_json({"tasks": [r.model_dump() for r in rows]})
    t = Table(title=f"{len(rows)} tasks in {folder}")
    for c in ("task", "format", "workdir", "image", "network", "cpus", "memory", "needs", *(
            ("bubblewrap", "docker") if check else ())):
        t.add_column(c, overflow="fold")
    for r in rows:
        net = ("on" if r.allow_internet else "off") + (" · verifier downloads" if r.verifier_downloads else "")
        t.add_row(r.task, r.format, r.workdir, r.docker_image or "Dockerfile", net, f"{r.cpus:g}",
                  f"{r.memory_mb} MiB", ", ".join(r.needs) or "-", *((r.bwrap, r.docker) if check else ()))
    out.print(t)


# ---- route ---------------------------------------------------------------------------------------

@app.command()
def route(
    config: Annotated[Path, typer.Argument(help="router config YAML (upstreams, rules, escalation, fallback)")],
    host: Annotated[str | None, typer.Option(help="address to listen on (default: the config's)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: the config's; 0 = a free one)")] = None,
    db: DbOpt = None,
    check: Annotated[bool, typer.Option("--check", help="plan the upstreams, say which get swapped, and exit")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """One OpenAI- and Anthropic-compatible endpoint in front of named upstreams, routed by the config's rules."""
    import logging

    from rigbench.route import config as route_config
    from rigbench.route.upstreams import Upstreams

    cfg = route_config.load(config)
    cfg = cfg.model_copy(update={k: v for k, v in (("host", host), ("port", port), ("db", db)) if v is not None})
    if check:
        ups = Upstreams(cfg)
        info = {"upstreams": {n: {"url": m.cfg.url, "command": m.launch.shell() if m.launch else None,
                                  "plan": m.plan.reason if m.plan else None} for n, m in ups.up.items()},
                "swaps": ups.fit_note()}
        if as_json:
            return _emit_json(info)
        for n, u in info["upstreams"].items():
            out.print(f"[bold]{n}[/]: {u['url'] or u['command']}" + (f" ({u['plan']})" if u["plan"] else ""),
                      soft_wrap=True, highlight=False)
        for line in info["swaps"] or ["all planned upstreams fit side by side"]:
            out.print(line)
        return
    try:
        from rigbench.route import server
    except ImportError as e:
        raise RigbenchError(f"rigbench route needs {e.name}: pip install 'rigbench[route]'") from None
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)   # its per-request lines (a planned upstream's health checks)

    def ready(url: str, router) -> None:
        for line in router.upstreams.fit_note():
            err.print(f"[dim]route: {line}[/]")
        if as_json:
            _emit_json({"url": url, "base_url": url + "/v1", "run": router.acct.run_id})
        else:
            out.print(f"[green]routing[/] on {url}/v1 (OpenAI) and {url}/v1/messages (Anthropic) · "
                      f"upstreams {', '.join(cfg.upstreams)} · run {router.acct.run_id} · Ctrl-C to stop")

    server.serve(cfg, on_ready=ready)


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
