"""Every catalog model x quant x engine x placement that fits a rig: ranked by predicted agent-turn time
(`advise`), or by expected tasks solved inside a time limit (`rank`): the model's published agentic pass rate
times the share of tasks it would finish in time on this rig, with the quality-vs-speed Pareto front."""

from __future__ import annotations

import math
import re
import shlex
import statistics
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel

from rigbench import catalog
from rigbench.engines.options import LlamaCppOptions, VllmOptions, parse_command
from rigbench.errors import RigbenchError
from rigbench.hardware import Rig
from rigbench.model import ModelSpec, catalog_names, from_catalog
from rigbench.plan import speed, tune
from rigbench.plan.memory import Plan, plan, plan_vllm

LLAMA_QUANTS = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
VLLM_FORMATS = {"awq": "awq_marlin", "fp8": "fp8"}


class Advice(BaseModel):
    model: str
    quant: str
    engine: str
    turn_s: float
    decode_tok_s: float
    prefill_tok_s: float
    task_s: float
    vram_bytes: int
    quality: dict | None = None
    quant_loss: dict | None = None          # published next-token divergence of this quant from FP16, or unknown
    command: str
    # filled by rank(): the figure ranked on, the share of tasks in time, and their product
    metric: str | None = None
    pass_rate: float | None = None          # % of the benchmark's tasks solved (published)
    in_time_share: float | None = None      # share of tasks predicted to finish inside the limit
    in_time_range: tuple[float, float] | None = None   # the same at the slow and the fast end of the speed model
    expected_solved: float | None = None    # pass_rate / 100 x in_time_share
    task_s_median: float | None = None      # the median task's predicted agent time (None: past the limit)
    pareto: bool = False


def quant_loss(quant: str) -> dict:
    """What is published about a quant's distance from FP16 (catalog quants.yaml `quant_loss`), as ranges; its effect
    on an agentic pass rate is always "unknown": the published pass rate is of the publisher's weights."""
    data = catalog.quants().get("quant_loss", {})
    row = data.get(quant)
    if row is None:
        return {"quant": quant, "task_effect": "unknown", "divergence": "unknown (no published figure)"}
    return {"quant": quant, "task_effect": "unknown", **row, "source": data["source"]}


def _advice(spec: ModelSpec, quant: str, engine: str, c: tune.Candidate) -> Advice:
    return Advice(model=spec.name, quant=quant, engine=engine, turn_s=c.turn_s, decode_tok_s=c.decode_tok_s,
                  prefill_tok_s=c.prefill_tok_s, task_s=c.task_s, vram_bytes=c.vram_bytes, quality=spec.quality,
                  quant_loss=quant_loss(quant.upper() if engine == "llama.cpp" else quant), command=" ".join(c.args))


def _llama(spec: ModelSpec, rig: Rig, quant: str, context: int, turn: tune.Turn, cal) -> Advice | None:
    own = spec.tensors is not None          # a GGUF: its own tensor types, its own path
    base = LlamaCppOptions(model_path=spec.path if own and spec.path else f"{spec.name}-{quant}.gguf")
    try:
        r = tune.tune(spec, rig, None if own else quant, context, turn, calibration=cal, top=1, base=base,
                      coarse=True)
    except tune.BudgetTooSmall:
        return None
    return _advice(spec, quant, "llama.cpp", r.pick)


def _vllm(spec: ModelSpec, rig: Rig, fmt: str, context: int, turn: tune.Turn, cal) -> Advice | None:
    ck = spec.checkpoint
    o = VllmOptions(model_path=ck.path if ck else spec.name, tensor_parallel=len(rig.gpus),
                    quantization=(ck.vllm_quantization if ck else None) or VLLM_FORMATS.get(fmt),
                    max_model_len=context, enable_prefix_caching=True, max_num_batched_tokens=8192)
    try:
        p = plan_vllm(spec, rig, o)
    except RigbenchError:
        return None
    return _advice(spec, fmt, "vllm", tune.score("vllm", p, spec, rig, turn, cal)) if p.fits else None


def _choices(spec: ModelSpec, rig: Rig) -> tuple[list[str], list[str]]:
    """(llama.cpp quants, vLLM formats) to try: a GGUF's own type, a checkpoint's own format, else all."""
    if spec.tensors is not None:
        named = re.search(r"(?i)[:/_.-]((?:UD-)?(?:I?Q\d\w*|BF16|F16|F32|MXFP4\w*))(?:\.gguf)?$", spec.source or "")
        return [spec.file_type or (named.group(1).upper() if named else "GGUF")], []
    vllm = [f for f in VLLM_FORMATS if f != "fp8" or rig.gpus[0].fp8] if rig.gpus else []
    if spec.checkpoint is not None:
        return [], ([spec.checkpoint.quant_method or "checkpoint"] if rig.gpus else [])
    return list(LLAMA_QUANTS), vllm


def advise(rig: Rig, context: int = 32768, turn: tune.Turn | None = None, models: list[str] | None = None,
           progress: Callable[[str], None] | None = None, specs: list[ModelSpec] | None = None) -> list[Advice]:
    """Every placement of each model that fits: the catalog's (or `models`), or the loaded `specs` (a GGUF in
    its own type, a published checkpoint in its own format)."""
    turn = turn or tune.Turn()
    cal = speed.load_calibration()
    out: list[Advice] = []
    seen = set()
    for spec in specs or (from_catalog(n) for n in models or catalog_names()):
        if spec.name in seen:
            continue
        seen.add(spec.name)
        if progress:
            progress(spec.name)
        quants, formats = _choices(spec, rig)
        for q in quants:
            a = _llama(spec, rig, q, min(context, spec.context), turn, cal)
            if a:
                out.append(a)
        for fmt in formats:
            a = _vllm(spec, rig, fmt, min(context, spec.context), turn, cal)
            if a:
                out.append(a)
    out.sort(key=lambda a: a.turn_s)
    return out


# ---- expected tasks solved in a time limit ----------------------------------------------------------

METRICS = ("terminal_bench_2", "swe_bench_verified")   # ranked on the first one a model has


class Ranking(BaseModel):
    rig: str
    time_limit_s: float
    distribution: str            # where the task-time distribution comes from
    scored: list[Advice]         # by expected tasks solved in time, best first
    unscored: list[Advice]       # no published figure: by median task time, apart
    pareto: list[Advice]         # scored rows no other row beats on both pass rate and median task time


def task_turns(n: int = 20) -> tuple[list[int], str]:
    """Turns per task at the n quantile midpoints of the Terminal-Bench 2.0 trajectory distribution (lognormal
    with the published median and mean; catalog speed.yaml agent_profile)."""
    a = catalog.speed()["agent_profile"]
    med, mean = a["task_turns_median"], a["task_turns_mean"]
    sigma = math.sqrt(2 * math.log(mean / med))
    dist = statistics.NormalDist(math.log(med), sigma)
    turns = [max(1, round(math.exp(dist.inv_cdf((i + 0.5) / n)))) for i in range(n)]
    return turns, (f"tasks of {turns[0]}-{turns[-1]} turns (lognormal, median {med}, mean {mean}: "
                   f"{a['task_turns_source']}), the agent profile's tokens per turn, {a['tool_s']:g} s of tools "
                   f"per turn")


def _profile_times(p, spec: ModelSpec, rig: Rig, coef, turns: list[int], give_up: float,
                   prof: speed.AgentProfile) -> list[float]:
    """Predicted agent time of a task of each length in `turns` under the agent profile; the context stops growing
    at the server's (an agent past it must drop history), and the loop stops once past `give_up` seconds."""
    a = catalog.speed()["agent_profile"]
    ctx, total, cum, state = 0, 0.0, [], speed.server_state(p, spec, rig)
    for k in range(1, max(turns) + 1):
        new = prof.first_prompt if k == 1 else prof.turn_new_tokens + prof.output_tokens
        ctx = min(ctx + new, max(new, p.context - prof.output_tokens))
        pre, dec = speed.agent_turn_seconds(p, spec, rig, coef, new, ctx, prof.output_tokens, state)
        total += pre + dec + a["tool_s"]
        cum.append(total)
        if total > give_up:
            break
    return [cum[k - 1] if k <= len(cum) else math.inf for k in turns]


def _replan(a: Advice, rig: Rig, specs: dict[str, ModelSpec]):
    spec = specs.get(a.model) or from_catalog(a.model)
    options = parse_command(shlex.split(a.command))
    quant = a.quant if a.engine == "llama.cpp" and spec.tensors is None else None
    return spec, plan(spec, rig, options, quant)


def _pareto(rows: list[Advice]) -> list[Advice]:
    front = []
    for a in rows:
        beaten = any(b is not a and b.pass_rate >= a.pass_rate and _t(b) <= _t(a)
                     and (b.pass_rate > a.pass_rate or _t(b) < _t(a)) for b in rows)
        if not beaten:
            front.append(a)
    return sorted(front, key=_t)


def _t(a: Advice) -> float:
    return math.inf if a.task_s_median is None else a.task_s_median


class TaskTimes(Protocol):
    """Task times of one placement from elsewhere than the agent profile (`whatif.StoredRunTimes`: a stored run's
    recorded turns, predicted). `source` says where they come from; a call gives (times, lows, highs) in seconds,
    one per task. The caller hands it in: planning knows nothing of stored runs."""
    source: str

    def __call__(self, label: str, spec: ModelSpec, rig: Rig, plan: Plan, time_limit_s: float,
                 cal: speed.Calibration) -> tuple[list[float], list[float], list[float]]: ...


def rank(rows: list[Advice], rig: Rig, time_limit_s: float, times: TaskTimes | None = None,
         profile: speed.AgentProfile | None = None, specs: list[ModelSpec] | None = None) -> Ranking:
    """Expected share of tasks solved inside `time_limit_s`: pass rate x share of tasks finished in time, where
    task times come from `times` (a stored run's turns: `whatif.StoredRunTimes`) or the agent profile's
    distribution (`profile`: the catalog's default agent when None)."""
    profile = profile or speed.AgentProfile.typical()
    cal = speed.load_calibration()
    by_name = {s.name: s for s in specs or []}
    turns, source = task_turns()
    source = f"{profile.name} agent: {source}"
    if times is not None:
        source = times.source
    out = []
    for a in rows:
        spec, p = _replan(a, rig, by_name)
        coef = cal.for_plan(p, rig)
        u = max(coef.prefill_uncertainty, coef.decode_uncertainty)
        if times is not None:
            task_s, lows, highs = times(a.model, spec, rig, p, time_limit_s, cal)
        else:
            task_s = _profile_times(p, spec, rig, coef, turns, time_limit_s * (1 + u), profile)
            lows, highs = [t / (1 + u) for t in task_s], [t * (1 + u) for t in task_s]
        share = sum(t <= time_limit_s for t in task_s) / len(task_s)
        metric = next((m for m in METRICS if (a.quality or {}).get(m) is not None), None)
        rate = float(a.quality[metric]) if metric else None
        out.append(a.model_copy(update={
            "metric": metric, "pass_rate": rate, "in_time_share": round(share, 3),
            "in_time_range": (round(sum(t <= time_limit_s for t in highs) / len(task_s), 3),
                              round(sum(t <= time_limit_s for t in lows) / len(task_s), 3)),
            "expected_solved": round(rate / 100 * share, 4) if rate is not None else None,
            "task_s_median": None if math.isinf(med := statistics.median(task_s)) else round(med, 1)}))
    scored = sorted((a for a in out if a.pass_rate is not None), key=lambda a: (-a.expected_solved, _t(a)))
    front = _pareto(scored)
    marked = {id(a) for a in front}
    scored = [a.model_copy(update={"pareto": id(a) in marked}) for a in scored]
    unscored = sorted((a for a in out if a.pass_rate is None), key=_t)
    return Ranking(rig=rig.describe(), time_limit_s=time_limit_s, distribution=source, scored=scored,
                   unscored=unscored, pareto=[a for a in scored if a.pareto])
