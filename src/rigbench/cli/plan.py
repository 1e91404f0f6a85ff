"""`plan`, `tune`, `advise`, `calibrate`: memory and speed predicted before anything is downloaded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from rigbench import model as model_mod
from rigbench.cli.common import (
    MODEL_HELP,
    AgentOpt,
    BatchedOpt,
    ChunkedOpt,
    CliEngine,
    CpuMoeOpt,
    CtxOpt,
    DbOpt,
    DtypeOpt,
    EngineOpt,
    JsonOpt,
    KvOpt,
    MambaOpt,
    ModelArg,
    ModelOpt,
    MtpOpt,
    NCpuMoeOpt,
    NglOpt,
    ParOpt,
    PrefixOpt,
    QuantOpt,
    RigOpt,
    RouterSkewOpt,
    TpOpt,
    UtilOpt,
    WeightsOpt,
    emit_json,
    err,
    out,
    resolve,
)
from rigbench.plan import memory
from rigbench.plan.setup import ENGINE_PROGRAMS, default_quant, rig_for_tuning
from rigbench.report import terminal
from rigbench.report.rows import plan_json

VramOpt = Annotated[float | None, typer.Option("--vram", help="VRAM budget per GPU in GiB (free for the model)")]
BandwidthOpt = Annotated[float | None, typer.Option("--bandwidth", help="an unknown GPU's memory bandwidth, GB/s")]
TurnOpt = Annotated[str, typer.Option("--turn", help="agent turn to optimise: PROMPT,OUTPUT tokens")]
PowerOpt = Annotated[float | None, typer.Option("--power-limit", help="each GPU's power cap in W (nvidia-smi -pl): "
                                                "a cap below stock TDP lowers the clock, so prefill; decode much less")]


def plan(
    ctx: typer.Context, model: ModelArg = None, model_opt: ModelOpt = None, rig: RigOpt = None,
    engine: EngineOpt = "llama.cpp", quant: QuantOpt = None, context: CtxOpt = None, ngl: NglOpt = None,
    cpu_moe: CpuMoeOpt = False, n_cpu_moe: NCpuMoeOpt = 0, kv_type: KvOpt = None, parallel: ParOpt = None,
    tp: TpOpt = 1, gpu_util: UtilOpt = 0.9, batched: BatchedOpt = None, prefix: PrefixOpt = False,
    chunked: ChunkedOpt = False, mamba_mode: MambaOpt = None, dtype: DtypeOpt = None, mtp: MtpOpt = 0,
    prompt_tokens: Annotated[int, typer.Option(help="speed: new prompt tokens for TTFT and prefill")] = 512,
    at_context: Annotated[int | None, typer.Option("--context", help="speed: context the prompt ends at")] = None,
    concurrency: Annotated[int, typer.Option(help="speed: streams decoding at once")] = 4,
    agent_profile: Annotated[bool, typer.Option("--agent-profile", help="predict a task of the default agent")]
    = False,
    agent: AgentOpt = None,
    no_prefix_cache: Annotated[bool, typer.Option("--no-prefix-cache", help="agent profile: every turn re-reads the "
                                                  "whole prompt (llama.cpp hybrid models in some versions)")] = False,
    router_skew: RouterSkewOpt = None,
    vram: Annotated[float | None, typer.Option("--vram", help="VRAM free for the model per GPU, GiB (a display "
                                               "or another process holds the rest)")] = None,
    power_limit: PowerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Memory placement of a model on a rig (per device weights, KV cache, state, buffers) and its speed.

    Either options (`rigbench plan qwen3.6-35b-a3b --rig rtx5080 --cpu-moe`) or a pasted engine command
    after `--` (`rigbench plan --model qwen3.6-27b --rig 2x-rtx3090 -- vllm serve ... --tensor-parallel-size 2`).
    """
    from rigbench.plan import speed

    cli = CliEngine(engine=engine, quant=quant, context=context, ngl=ngl, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe,
                    kv_type=kv_type, parallel=parallel, tp=tp, gpu_util=gpu_util, batched=batched, prefix=prefix,
                    chunked=chunked, mamba_mode=mamba_mode, dtype=dtype, mtp=mtp)
    spec, r, options = resolve(ctx.args, model, model_opt, rig, cli)
    if router_skew is not None:
        spec = spec.model_copy(update={"router_skew": router_skew})
    if vram is not None:
        r = r.with_vram(vram)
    r = r.with_power_limit(power_limit)
    p = memory.plan(spec, r, options, default_quant(spec, options, quant))
    sp = speed.predict(p, spec, r, prompt_tokens, at_context, concurrency)
    agent = (speed.agent_task(p, spec, r, speed.AgentProfile.named(agent, not no_prefix_cache))
             if agent_profile or agent else None)
    if as_json:
        d = plan_json(p)
        d["speed"] = sp.model_dump()
        if agent:
            d["agent_profile"] = agent.model_dump()
        emit_json(d)
    else:
        terminal.print_plan(out, p)
        terminal.print_speed(out, sp)
        if agent:
            terminal.print_agent(out, agent)
    if not p.fits:
        raise typer.Exit(3)


def _turn(text: str) -> tuple[int, int]:
    p, g = (int(x) for x in text.split(","))
    return p, g


def tune(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    rig: RigOpt = None, vram: VramOpt = None, bandwidth: BandwidthOpt = None, quant: QuantOpt = None,
    context: Annotated[int | None, typer.Option("--ctx", "-c", help="context the server must hold (default 32768; "
                                                "with --agent, what the agent's task needs)")] = None,
    turn: TurnOpt = "8000,256",
    agent: Annotated[str | None, typer.Option("--agent", help="optimise this agent profile's whole task "
                                              "(catalog agents.yaml) instead of one --turn")] = None,
    kv_type: Annotated[list[str] | None, typer.Option("--kv-type", help="a KV cache type the pick may use besides "
                                                      "the baseline's (repeatable: q8_0, q4_0)")] = None,
    margin: Annotated[int, typer.Option(help="MiB left free on each GPU")] = 512,
    top: Annotated[int, typer.Option(help="candidates to show")] = 5,
    measure: Annotated[bool, typer.Option("--measure", help="confirm the baseline and the best candidate with "
                                          "real llama-server runs (needs --weights or a .gguf MODEL)")] = False,
    weights: WeightsOpt = None,
    server_bin: Annotated[str | None, typer.Option(help="path to llama-server")] = None,
    router_skew: RouterSkewOpt = None,
    power_limit: PowerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search -ngl, --n-cpu-moe, -ot expert placements, u-batch, batch, pinned memory and KV type for the best
    predicted agent turn (or --agent task), against your own line pasted after `--`
    (`rigbench tune qwen3.6-35b-a3b --rig h200 --vram 16 -- llama-server -m m.gguf -ub 2048`) or, with none,
    against `--fit -ub 2048 -b 2048 --no-mmap`."""
    from rigbench.bench.stored import measure_turn
    from rigbench.monitor import ratio_mark
    from rigbench.plan.tune import tune_command

    for arg in [model, *ctx.args[:1]]:
        # unknown options are taken only as part of a pasted engine command
        if arg.startswith("-"):
            raise typer.BadParameter(f"No such option: {arg}")
    if ctx.args and not (Path(ctx.args[0]).name.startswith(ENGINE_PROGRAMS) or "=" in ctx.args[0]):
        raise typer.BadParameter(f"unexpected {ctx.args[0]!r}: a pasted engine command starts with llama-server or "
                                 f"vllm")
    r = rig_for_tuning(rig, vram, bandwidth).with_power_limit(power_limit)
    res = tune_command(model, ctx.args, r, quant, context, turn, agent, tuple(kv_type or ()), margin, top,
                       router_skew)
    p, g = res.turn.prompt, res.turn.output
    measured: dict[str, dict] = {}
    if measure:
        gguf = weights or (model if model.endswith(".gguf") else None)
        if not gguf:
            raise typer.BadParameter("--measure runs llama-server: give the model as a .gguf or --weights PATH "
                                     "(`rigbench synth` writes a synthetic one)")
        for c in [res.baseline, *res.candidates[:1], *res.baselines]:
            m = measure_turn(c.args, gguf, r, p, g, server_bin, say=lambda m: err.print(f"[dim]{m}[/]"))
            # a turn this far from its prediction is more likely disturbed (or mispredicted) than news
            m["ratio"] = ratio_mark(m["turn_s"], c.turn_s)
            m["disturbed"] = m["disturbed"] + ([m["ratio"]] if m["ratio"] else [])
            measured[c.label] = m
    if as_json:
        d = res.model_dump()
        d["measured"] = measured
        return emit_json(d)
    terminal.print_tune(out, res, measured, p, g, res.context)


def parse_duration(text: str) -> float:
    """Seconds from `1200`, `90s`, `20m` or `1.5h`."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration; write it as 1200, 90s, 20m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def advise(
    rig: RigOpt = None, vram: VramOpt = None, bandwidth: BandwidthOpt = None,
    context: Annotated[int, typer.Option("--ctx", "-c", help="context the server must hold")] = 32768,
    turn: TurnOpt = "8000,256",
    time_limit: Annotated[str, typer.Option(help="time limit per task (20m, 1h, 900s)")] = "20m",
    run: Annotated[int | None, typer.Option("--run", help="task times from this stored eval run's turns instead "
                                            "of the agent profile")] = None,
    top: Annotated[int, typer.Option(help="rows to show")] = 20,
    agent: AgentOpt = None,
    db: DbOpt = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="rank this model instead of the catalog's "
                                                    "(repeatable): a catalog name, a local file or folder, "
                                                    "hf://ORG/REPO[:QUANT] or an https URL")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every catalog model x quant x engine x placement that fits the rig, ranked by expected tasks solved in the
    time limit (published pass rate x share of tasks finished in time here), with the quality-vs-speed Pareto
    front; models without published scores listed apart."""
    from rigbench.plan import advise as advise_mod
    from rigbench.plan.speed import AgentProfile
    from rigbench.plan.tune import Turn
    from rigbench.report.whatif import print_advise

    limit = parse_duration(time_limit)
    times = None
    if run is not None:
        from rigbench import store
        from rigbench.whatif import StoredRunTimes, load

        times = StoredRunTimes(load(store.connect(db), run))
    r = rig_for_tuning(rig, vram, bandwidth)
    profile = AgentProfile.named(agent)
    context = max(context, profile.suggested_context)   # the agent's first request must fit
    p, g = _turn(turn)
    specs = [model_mod.load(m) for m in model] if model else None
    rows = advise_mod.advise(r, context, Turn(prompt=p, output=g), specs=specs,
                             progress=None if as_json else lambda n: err.print(f"[dim]advise: {n}[/]"))
    if not rows:
        what = "the model" if specs else "the catalog"
        err.print(f"[red]nothing in {what} fits {r.describe()} at context {context:,}[/]; lower --ctx")
        raise typer.Exit(3)
    ranking = advise_mod.rank(rows, r, limit, times, profile, specs)
    if as_json:
        return emit_json(ranking.model_dump())
    print_advise(out, ranking, top)


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
                                 f"or benchmarks/gpu/phases.sh on a GPU first")
    cal = speed.calibrate(ms)
    path = output or speed.calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cal.model_dump_json(indent=1))
    if as_json:
        return emit_json({"path": str(path), **cal.model_dump()})
    terminal.print_calibration(out, cal)
    out.print(f"written to {path}")
