"""`whatif`, `replay`: a stored run's tasks predicted on other placements, or resent to a live server."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from rigbench.cli.common import (
    BatchedOpt,
    CliEngine,
    CpuMoeOpt,
    CtxOpt,
    DbOpt,
    EngineOpt,
    JsonOpt,
    KvOpt,
    MambaOpt,
    MtpOpt,
    NCpuMoeOpt,
    NglOpt,
    ParOpt,
    PrefixOpt,
    QuantOpt,
    TpOpt,
    UtilOpt,
    emit_json,
    err,
    out,
    resolve,
)
from rigbench.plan import memory
from rigbench.plan.setup import default_quant


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
    from rigbench.report.whatif import print_whatif
    from rigbench.whatif import Target, load, predict

    if prefix_cache not in ("auto", "on", "off"):
        raise typer.BadParameter("--prefix-cache is auto, on or off")
    trace = load(store.connect(db), run)
    ref = model_opt or trace.model
    if not ref:
        raise typer.BadParameter(f"run {run} does not name its model; give the target's with --model")
    cli = CliEngine(engine=engine, quant=quant, context=context, ngl=ngl, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe,
                    kv_type=kv_type, parallel=parallel, tp=tp, gpu_util=gpu_util, batched=batched, prefix=prefix,
                    mamba_mode=mamba_mode, mtp=mtp)
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
        flags = " ".join(shlex.quote(a) for i, a in enumerate(p.command[1:], 1) if "-m" not in p.command[i - 1:i + 1])
        results.append(predict(trace, Target(label=f"{spec.name} on {r.name}: {flags}"[:120], spec=spec, rig=r,
                                             plan=p, prefix_cache=prefix_cache), time_limit))
    if as_json:
        return emit_json({"run": run, "targets": [x.model_dump() for x in results]})
    print_whatif(out, results)


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
    from rigbench.report.whatif import replay_table
    from rigbench.whatif import load
    from rigbench.whatif.replay import replay as replay_run

    dbe = store.connect(db)
    res = replay_run(load(dbe, run), url, dbe, model_name, idle=not no_idle,
                     progress=None if as_json else lambda m: err.print(f"[dim]replay: {m}[/]"))
    if as_json:
        return emit_json(res.model_dump())
    out.print(replay_table(res))
