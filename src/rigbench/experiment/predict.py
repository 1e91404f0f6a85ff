"""Each candidate planned and predicted with no hardware: the placement, the speed suite's figures at the
experiment's sizes, and the time of a typical agent task against the eval's limit."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rigbench import hardware
from rigbench import model as model_mod
from rigbench.bench.suite import BenchConfig
from rigbench.engines.launch import EMBEDDED_NAME, embedded_default
from rigbench.engines.options import LlamaCppOptions, parse_command
from rigbench.experiment.spec import Candidate, ExperimentSpec
from rigbench.plan import memory, speed
from rigbench.plan.setup import default_quant


class Point(BaseModel):
    x: float
    y: float


class Predicted(BaseModel):
    """The speed table's figures as the model predicts them (None where a scenario is not in the suite)."""
    ttft_short_ms: float | None = None
    decode_tok_s: float | None = None
    ttft_long_ms: float | None = None
    long_decode_tok_s: float | None = None
    throughput_tok_s: float | None = None
    kv_contexts: float | None = None
    uncertainty: float = 0.0
    calibration: str = ""
    ttft_curve: list[Point] = []          # prompt tokens -> TTFT ms
    decode_curve: list[Point] = []        # context tokens -> decode tok/s
    throughput_curve: list[Point] = []    # streams -> output tok/s, all together
    agent_task_s: float | None = None     # a typical agent task's model time (catalog agent profile)
    agent_turns: int = 0
    notes: list[str] = []


class CandidatePlan(BaseModel):
    name: str
    model: str
    engine: str
    rig: str
    quant: str | None
    weights: str | None                   # what will be served; None = nothing local to serve
    fits: bool
    reason: str = ""
    suggestion: str | None = None
    plan: dict                            # memory.Plan as JSON, devices included
    rig_spec: dict | None = None          # hardware.Rig as JSON: what the plan was made for (the report's what-if)
    command: str                          # the engine command line the plan stands for
    predicted: Predicted
    notes: list[str] = []

    @property
    def runnable(self) -> bool:
        return self.fits and self.weights is not None


def bench_config(exp: ExperimentSpec, url: str = "http://127.0.0.1:0") -> BenchConfig:
    b = exp.bench
    cfg = BenchConfig(url=url, **(b.config if b else {}))
    if b:
        cfg.scenarios = list(b.scenarios)
    return cfg


def synth_path(exp: ExperimentSpec, c: Candidate) -> Path:
    s = c.synth
    tag = "-".join(x for x in (c.model.replace("/", "_"), c.quant or "default", f"L{s.layers}" if s.layers else "",
                               f"E{s.experts}" if s.experts else "", f"s{s.seed}") if x)
    return Path(".rigbench/synth") / f"{tag}.gguf"


def model_ref(c: Candidate) -> str:
    return str(embedded_default()) if c.model == "embedded" else c.model


def weights_of(exp: ExperimentSpec, c: Candidate) -> str | None:
    if c.embedded:
        return str(embedded_default())
    if c.synth:
        return str(synth_path(exp, c))
    if c.weights:
        local = exp.path(c.weights)
        # vLLM serves a hub repo id (org/name) as well as a folder
        return c.weights if c.engine == "vllm" and not local.exists() and not c.weights.startswith((".", "~", "/")) \
            else str(local)
    if c.model.endswith(".gguf") or Path(c.model).is_dir():
        return str(exp.path(c.model))
    return None


def resolve(exp: ExperimentSpec, c: Candidate):
    """(spec, rig, options) of a candidate: its flags parsed as the engine's own command line."""
    ref = model_ref(c)
    if ref.endswith(".gguf") or "/" in ref:
        ref = str(exp.path(ref)) if not Path(ref).is_absolute() else ref
    spec = model_mod.load(ref)
    if c.synth:
        from rigbench import synth
        spec = synth.scale_down(spec, c.synth.layers, c.synth.experts)
    weights = weights_of(exp, c) or ref
    flags = list(c.flags)
    if c.engine == "llama.cpp":
        if exp.eval and "--jinja" not in flags:
            flags.append("--jinja")   # the chat template's tool calling, for the agent
        command = ["llama-server", "-m", weights, *flags]
    else:
        command = ["vllm", "serve", weights, *flags]
    options = parse_command(command)
    rig = hardware.load(c.rig or exp.rig)
    return spec, rig, options


def plan_candidate(exp: ExperimentSpec, c: Candidate) -> CandidatePlan:
    spec, rig, options = resolve(exp, c)
    p = memory.plan(spec, rig, options, default_quant(spec, options, c.quant))
    if isinstance(options, LlamaCppOptions) and options.ctx is None:
        options.ctx = p.context
    return _candidate(exp, c, spec, rig, p)


def _candidate(exp, c, spec, rig, p) -> CandidatePlan:
    from rigbench.report.rows import plan_json

    weights = weights_of(exp, c)
    notes = list(p.notes)
    if weights is None:
        notes.append("no weights given (weights: PATH or synth:): planned and predicted only")
    return CandidatePlan(
        name=c.name, model=EMBEDDED_NAME if c.model == "embedded" else c.model, engine=p.engine,
        rig=rig.describe(), quant=p.quant, weights=weights, fits=p.fits, reason=p.reason if not p.fits else "",
        suggestion=p.suggestion, plan=plan_json(p), rig_spec=rig.model_dump(mode="json"),
        command=" ".join(_quote(a) for a in p.command), predicted=predict(exp, p, spec, rig), notes=notes)


def _quote(a: str) -> str:
    import shlex
    return shlex.quote(a)


def predict(exp: ExperimentSpec, p: memory.Plan, spec, rig) -> Predicted:
    cfg = bench_config(exp)
    sc = set(cfg.scenarios)

    def at(prompt: int, context: int | None = None, n: int = 1) -> speed.Speed:
        return speed.predict(p, spec, rig, prompt, context, n)

    short = at(cfg.short_prompt)
    out = Predicted(uncertainty=max(short.ttft_ms.uncertainty, short.decode_tok_s.uncertainty),
                    calibration=short.calibration)
    ctx_cap = max(256, p.context - cfg.decode_output - 64)
    if "short_ttft" in sc:
        out.ttft_short_ms = short.ttft_ms.value
    if "decode" in sc:
        out.decode_tok_s = at(cfg.short_prompt, cfg.short_prompt + cfg.decode_output // 2).decode_tok_s.value
    if "ttft_3500" in sc:
        out.ttft_long_ms = at(min(cfg.long_prompt, ctx_cap)).ttft_ms.value
    if "long_decode" in sc:
        out.long_decode_tok_s = at(64, min(cfg.long_context, ctx_cap)).decode_tok_s.value
    if "concurrency" in sc:
        mid = cfg.sweep_prompt + cfg.sweep_output // 2
        out.throughput_curve = [Point(x=n, y=at(cfg.sweep_prompt, mid, n).decode_tok_s_concurrent.value)
                                for n in cfg.sweep]
        out.throughput_tok_s = out.throughput_curve[-1].y
    if "kv_capacity" in sc:
        per = cfg.kv_prompt + 16
        slots = p.parallel if p.engine == "llama.cpp" and p.parallel > 0 else cfg.kv_max_streams
        out.kv_contexts = float(min(slots, cfg.kv_max_streams, p.kv_cache_tokens // per))
    lengths = sorted({x for x in (cfg.short_prompt, 256, 1024, cfg.long_prompt, 8192, 16384) if x <= ctx_cap})
    out.ttft_curve = [Point(x=n, y=at(n).ttft_ms.value) for n in lengths]
    contexts = sorted({x for x in (cfg.short_prompt + cfg.decode_output // 2, 2048, 8192, cfg.long_context, 32768)
                       if x <= ctx_cap})
    out.decode_curve = [Point(x=n, y=at(64, n).decode_tok_s.value) for n in contexts]
    if exp.eval:
        typical = speed.AgentProfile.typical()
        prof = typical.model_copy(update={"turns": min(typical.turns, exp.eval.max_steps),
                                          "output_tokens": min(typical.output_tokens, exp.eval.max_response_tokens)})
        if prof.first_prompt + prof.turns * (prof.turn_new_tokens + prof.output_tokens) <= p.context:
            a = speed.agent_task(p, spec, rig, prof)
            out.agent_task_s, out.agent_turns = a.total_s.value, prof.turns
        else:
            out.notes.append(f"a typical {prof.turns}-turn agent task outgrows the {p.context:,}-token context: "
                             f"no task time predicted")
    return out


def plan_all(exp: ExperimentSpec) -> list[CandidatePlan]:
    return [plan_candidate(exp, c) for c in exp.candidates]
