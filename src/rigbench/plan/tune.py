"""Offload and flag search for llama.cpp: the placement with the best predicted agent turn, or agent task, in a
VRAM budget, beside the line the user runs today.

Candidates: how many layers' experts stay in RAM (`--n-cpu-moe N`), a finer step that moves only the
gate/up experts of one more layer (`-ot`), the layers on the GPU (`-ngl`, dense models), the u-batch and
batch up to 4096 (large ones cut the PCIe copies of CPU-held weights during prefill and fill more of each
expert's tile), whether RAM-held weights are pinned (`--load-mode none`) or memory-mapped, and the KV cache
type. Each is planned by plan.memory, kept if it fits with a margin, and scored by plan.speed.

The baseline is the user's own command line, or, without one, what a reader of llama.cpp's threads runs:
`--fit` with `-ub 2048 -b 2048 --no-mmap`. The pick keeps the baseline's KV cache type: a quantised cache
changes the model's output, so it is a candidate only where the user allows it (`kv_types`), and is otherwise
shown as its own row. Beside each pick: the physical lower bound of its turn (every part at the devices' peak,
no per-kernel overhead) and how far the prediction is above it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from rigbench.engines.options import EngineOptions, LlamaCppOptions, VllmOptions
from rigbench.errors import RigbenchError
from rigbench.hardware import GIB, Rig
from rigbench.model import ModelSpec
from rigbench.plan import speed
from rigbench.plan.memory import MIB, Plan, fit_llamacpp, fits_with_margin, plan, plan_llamacpp

# below this gain the user's line is reported as already within that of the best found
CLOSE_GAIN = 1.10
UBATCHES = (512, 1024, 2048, 4096)
KV_TYPES = ("f16", "q8_0")


class BudgetTooSmall(RigbenchError):
    pass


class TuneInputError(RigbenchError):
    """A tune option the user can correct."""


class Turn(BaseModel):
    prompt: int = 8000
    output: int = 256


class Candidate(BaseModel):
    label: str
    args: list[str]
    turn_s: float
    prefill_s: float
    decode_s: float
    prefill_tok_s: float
    decode_tok_s: float
    task_s: float                     # the agent task (the profile given, else the catalog's default agent)
    vram_bytes: int
    fits: bool
    kv_type: str = "f16"
    bound_s: float = 0.0              # the physical lower bound of the turn: every part at peak, no overhead
    bound_ratio: float = 0.0          # turn_s / bound_s
    note: str = ""


class TuneResult(BaseModel):
    model: str
    rig: str
    vram_budget_bytes: int | None
    context: int
    turn: Turn
    agent: str | None = None          # the agent profile optimised for (objective "task"), else None
    objective: Literal["turn", "task"] = "turn"
    baseline: Candidate
    pick: Candidate
    gain: float                       # baseline task time / pick task time
    verdict: str
    kv_alternative: Candidate | None = None   # the best candidate with another KV cache type, not picked
    kv_alternative_gain: float | None = None
    candidates: list[Candidate]
    baselines: list[Candidate]
    searched: int
    uncertainty: float
    calibration: str


def kv_type_of(o: EngineOptions) -> str:
    if isinstance(o, VllmOptions):
        return "fp8" if "fp8" in (o.kv_cache_dtype or "") else "auto"
    return o.cache_type_k if o.cache_type_k == o.cache_type_v else f"{o.cache_type_k}/{o.cache_type_v}"


def community_recipe(base: LlamaCppOptions | None = None) -> LlamaCppOptions:
    """What people who read llama.cpp's threads run when a model spills out of VRAM: --fit places the layers,
    with large batches and the model read into (pinned) memory instead of memory-mapped."""
    return (base or LlamaCppOptions()).model_copy(update={"fit": True, "ubatch": 2048, "batch": 2048,
                                                          "load_mode": "none"})


def lower_bound(plan_: Plan, spec: ModelSpec, rig: Rig, new_tokens: int, context: int, output: int) -> float:
    """Seconds of one turn at the machine's limit for this placement: the bytes that must cross the host link and
    the GPU's and CPU's compute and memory time, each at its peak (efficiency 1), without per-kernel overhead."""
    # the link's pinned rate: a memory-mapped copy's slower rate is a software choice, not the machine's limit
    plan_ = plan_.model_copy(update={"host_pinned": True})
    pre = speed.prefill_parts(plan_, spec, rig, new_tokens, context - new_tokens)
    pre_s = sum(v for k, v in pre.items() if k != "overhead")
    mem, comp = speed.decode_parts(plan_, spec, rig, context + output // 2)
    step = max(mem["vram"], comp["gpu_compute"] + comp["gpu_experts"]) + max(mem["ram"], comp["cpu_compute"])
    return pre_s + output * step / speed.speculative_speedup(plan_, spec)


def task_seconds(plan_: Plan, spec: ModelSpec, rig: Rig, cal: speed.Calibration,
                 profile: speed.AgentProfile | None = None) -> float:
    return round(speed.agent_task(plan_, spec, rig, profile, calibration=cal).total_s.value, 1)


def score(label: str, plan_: Plan, spec: ModelSpec, rig: Rig, turn: Turn, cal: speed.Calibration,
          note: str = "", profile: speed.AgentProfile | None = None, kv_type: str = "f16",
          task: bool = True) -> Candidate:
    """The candidate's predicted turn and task; `task=False` leaves task_s at 0 for the caller to fill in
    (task_seconds) where it is shown: predicting every turn of a whole task is most of a score."""
    coef = cal.for_plan(plan_, rig)
    pre, dec = speed.agent_turn_seconds(plan_, spec, rig, coef, turn.prompt, turn.prompt, turn.output)
    bound = lower_bound(plan_, spec, rig, turn.prompt, turn.prompt, turn.output)
    return Candidate(label=label, args=plan_.command, turn_s=round(pre + dec, 3), prefill_s=round(pre, 3),
                     decode_s=round(dec, 3), prefill_tok_s=round(turn.prompt / pre, 1),
                     decode_tok_s=round(turn.output / dec, 1) if dec else 0.0,
                     task_s=task_seconds(plan_, spec, rig, cal, profile) if task else 0.0,
                     vram_bytes=sum(d.total for d in plan_.devices if d.kind == "gpu"), fits=plan_.fits, note=note,
                     kv_type=kv_type, bound_s=round(bound, 3), bound_ratio=round((pre + dec) / bound, 2) if bound
                     else 0.0)


def task_context(profile: speed.AgentProfile) -> int:
    """The context a server needs for the profile's whole task: its last request plus a reply (or the agent's
    own minimum), rounded up to 4096."""
    last = profile.first_prompt + (profile.turns - 1) * (profile.turn_new_tokens + profile.output_tokens)
    need = max(last + profile.output_tokens, profile.min_context)
    return -(-need // 4096) * 4096


def candidates(spec: ModelSpec, rig: Rig, base: LlamaCppOptions, coarse: bool = False,
               kv_types: tuple[str, ...] = KV_TYPES) -> list[tuple[str, LlamaCppOptions]]:
    """The placements and flags worth planning, most GPU-heavy first (`coarse`: one u-batch, whole layers)."""
    out: list[tuple[str, LlamaCppOptions]] = []
    ubatches = ((2048,) if coarse else UBATCHES) if rig.gpus else (256, 512)
    # the search owns placement and batching: what the user's line set there is replaced, the rest kept
    base = base.model_copy(update={"cpu_moe": False, "n_cpu_moe": 0, "overrides": [], "ngl": None,
                                   "load_mode": "auto", "no_host": False})
    for ub in ubatches:
        for kv in kv_types:
            o = base.model_copy(update={"ubatch": ub, "batch": max(ub, 2048), "cache_type_k": kv,
                                        "cache_type_v": kv, "fit": False})
            if not rig.gpus:
                out.append((f"-ub {ub}, KV {kv}", o))
                continue
            if spec.is_moe:
                for n in range(0, spec.layers + 1):
                    o2 = o.model_copy(update={"ngl": 999, "n_cpu_moe": n})
                    out += _with_load_modes(f"--n-cpu-moe {n}, -ub {ub}, KV {kv}", o2, n > 0)
                    if 0 < n < spec.layers and not coarse:
                        # one step finer: also the gate/up experts of layer n (down stays on the GPU)
                        pat = rf"blk\.{n}\.ffn_(up|gate)_exps"
                        out += _with_load_modes(f"--n-cpu-moe {n} + gate/up of layer {n}, -ub {ub}, KV {kv}",
                                                o2.model_copy(update={"overrides": [(pat, "CPU")]}), True)
            else:
                for ngl in range(spec.layers + 1, -1, -4 if coarse else -1):
                    out += _with_load_modes(f"-ngl {ngl}, -ub {ub}, KV {kv}", o.model_copy(update={"ngl": ngl}),
                                            ngl <= spec.layers)
    return out


def _with_load_modes(label: str, o: LlamaCppOptions, on_cpu: bool) -> list[tuple[str, LlamaCppOptions]]:
    """The candidate memory-mapped and, when weights stay in RAM, pinned (`--load-mode none`: not memory-mapped,
    so llama.cpp's per-u-batch copies to the GPU run at the link's pinned rate)."""
    out = [(label, o)]
    if on_cpu and o.load_mode == "auto":
        out.append((label + ", pinned", o.model_copy(update={"load_mode": "none"})))
    return out


def tune(spec: ModelSpec, rig: Rig, quant: str | None = None, context: int = 32768, turn: Turn | None = None,
         margin_mib: int = 512, calibration: speed.Calibration | None = None, top: int = 5,
         base: LlamaCppOptions | None = None, coarse: bool = False, baseline: EngineOptions | None = None,
         kv_types: tuple[str, ...] = (), profile: speed.AgentProfile | None = None) -> TuneResult:
    """Search placements and flags against `baseline` (the user's line; None: the community recipe); raise
    BudgetTooSmall (with the smallest budget that works) if nothing fits.

    `kv_types`: KV cache types the pick may use besides the baseline's. `profile`: optimise that agent's whole
    task (its context included) instead of one turn."""
    turn = turn or Turn()
    cal = calibration or speed.load_calibration()
    if profile is not None:
        context = max(context, task_context(profile))
    user_line = baseline is not None
    if isinstance(baseline, LlamaCppOptions):
        context = max(context, baseline.ctx or 0)
        base = baseline
    base = (base or LlamaCppOptions()).model_copy(update={"ctx": context, "parallel": 1})
    base_opts = baseline if user_line else community_recipe(base)
    if isinstance(base_opts, LlamaCppOptions):
        base_opts = base_opts.model_copy(update={"ctx": base_opts.ctx or context,
                                                 "parallel": base_opts.parallel if base_opts.parallel > 0 else 1})
    keep_kv = kv_type_of(base_opts) if isinstance(base_opts, LlamaCppOptions) else "f16"
    allowed = {keep_kv, *kv_types}
    searched_kv = tuple(dict.fromkeys([keep_kv, *KV_TYPES, *kv_types]))
    margin = margin_mib * MIB

    def key(c: Candidate) -> tuple:
        return (c.task_s if profile is not None else c.turn_s, -c.decode_tok_s, c.vram_bytes)

    # ranked on the turn, a candidate's task time is only shown: it is predicted for the candidates shown
    found: list[Candidate] = []
    unscored: dict[tuple[str, ...], Plan] = {}       # command -> plan of the candidates without a task time
    tried = 0
    for label, o in candidates(spec, rig, base, coarse, searched_kv):
        tried += 1
        p = plan_llamacpp(spec, rig, o, quant)
        if fits_with_margin(p, margin):
            found.append(score(label, p, spec, rig, turn, cal, profile=profile, kv_type=kv_type_of(o),
                               task=profile is not None))
            if profile is None:
                unscored[tuple(p.command)] = p

    def shown(c: Candidate | None) -> Candidate | None:
        p = unscored.get(tuple(c.args)) if c is not None and not c.task_s else None
        return c if p is None else c.model_copy(update={"task_s": task_seconds(p, spec, rig, cal, profile)})

    if not found:
        raise BudgetTooSmall(_too_small_message(spec, rig, base, quant, margin))
    bp = plan(spec, rig, base_opts, quant)
    label = "your line" if user_line else "--fit -ub 2048 -b 2048 --no-mmap (hand-tuned)"
    note = "" if bp.fits else "does not fit: " + bp.reason
    base_c = score(label, bp, spec, rig, turn, cal, note, profile, kv_type_of(base_opts))
    base_cands = baselines(spec, rig, base, quant, turn, cal, profile)
    found.sort(key=key)
    unique: list[Candidate] = []
    for c in found:
        if all(c.args != u.args for u in unique):
            unique.append(c)
    keep = [c for c in unique if c.kv_type in allowed]
    pick = keep[0] if keep else unique[0]
    if base_c.fits and key(base_c) <= key(pick):
        pick = base_c.model_copy(update={"note": "no candidate beats it"})
    other = next((c for c in unique if c.kv_type != pick.kv_type), None)
    if other is not None and key(other) >= key(pick):
        other = None        # a quantised cache that gains nothing is not worth its quality risk
    gain_of = (lambda c: base_c.task_s / c.task_s) if profile is not None else (lambda c: base_c.turn_s / c.turn_s)
    gain = gain_of(pick) if base_c.fits else float("inf")
    coef = cal.for_rig(rig)
    u = max(coef.decode_uncertainty, coef.prefill_uncertainty)
    return TuneResult(model=spec.name, rig=rig.name, vram_budget_bytes=rig.gpus[0].vram_bytes if rig.gpus else None,
                      context=context, turn=turn, agent=profile.name if profile else None,
                      objective="task" if profile is not None else "turn", baseline=base_c, pick=shown(pick),
                      gain=round(gain, 3) if gain != float("inf") else 0.0,
                      verdict=verdict(gain, user_line, base_c, u),
                      kv_alternative=shown(other), kv_alternative_gain=round(gain_of(other), 3) if other and base_c.fits
                      else None, candidates=[shown(c) for c in
                                             [c for c in unique if c.kv_type in allowed][:top] or unique[:top]],
                      baselines=base_cands, searched=tried, uncertainty=u, calibration=coef.source)


def tune_command(model: str, pasted: list[str], rig: Rig, quant: str | None = None, context: int | None = None,
                 turn: str = "8000,256", agent: str | None = None, kv_types: tuple[str, ...] = (),
                 margin_mib: int = 512, top: int = 5, router_skew: float | None = None) -> TuneResult:
    """`rigbench tune`: the model, the pasted engine line after `--` (empty: the community recipe), the agent."""
    from rigbench.engines.options import parse_command
    from rigbench.model import load

    spec = load(model)
    if router_skew is not None:
        spec = spec.model_copy(update={"router_skew": router_skew})
    try:
        p, g = (int(x) for x in turn.split(","))
    except ValueError:
        raise TuneInputError(f"--turn {turn!r}: write it as PROMPT,OUTPUT tokens, e.g. 8000,256") from None
    for k in kv_types:
        if k not in ("f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl", "f32"):
            raise TuneInputError(f"--kv-type {k!r} is not a llama.cpp KV cache type; use f16, q8_0 or q4_0")
    baseline = parse_command(pasted) if pasted else None
    profile = speed.AgentProfile.named(agent) if agent else None
    q = quant or (spec.file_type if spec.tensors is not None else "Q4_K_M")
    return tune(spec, rig, q, context or (0 if profile else 32768), Turn(prompt=p, output=g), margin_mib=margin_mib,
                top=top,
                baseline=baseline, kv_types=kv_types, profile=profile)


def verdict(gain: float, user_line: bool, base_c: Candidate, uncertainty: float) -> str:
    who = "your line" if user_line else "the hand-tuned line (--fit -ub 2048 -b 2048 --no-mmap)"
    if not base_c.fits:
        return f"{who} does not fit this budget: {base_c.note.removeprefix('does not fit: ')}"
    if gain < CLOSE_GAIN:
        return (f"{who} is within {CLOSE_GAIN - 1:.0%} of the best found ({gain:.2f}x); "
                f"the difference is inside the prediction's ±{uncertainty:.0%}")
    return f"the pick is {gain:.2f}x faster than {who} (predicted, ±{uncertainty:.0%})"


def baselines(spec: ModelSpec, rig: Rig, base: LlamaCppOptions, quant: str | None, turn: Turn,
              cal: speed.Calibration, profile: speed.AgentProfile | None = None) -> list[Candidate]:
    """What people run without a tuner: --cpu-moe and --fit with llama.cpp's default flags, --no-mmap alone."""
    out = []
    base = base.model_copy(update={"cache_type_k": "f16", "cache_type_v": "f16", "ubatch": 512, "batch": 2048,
                                   "load_mode": "auto", "cpu_moe": False, "n_cpu_moe": 0, "overrides": [],
                                   "ngl": None})
    if rig.gpus and spec.is_moe:
        p = plan_llamacpp(spec, rig, base.model_copy(update={"ngl": 999, "cpu_moe": True}), quant)
        out.append(score("--cpu-moe (default flags)", p, spec, rig, turn, cal,
                         "" if p.fits else "does not fit: " + p.reason, profile))
    if rig.gpus:
        p = fit_llamacpp(spec, rig, base.model_copy(update={"fit": True}), quant)
        note = "; ".join(n for n in p.notes if n.startswith("--fit"))
        out.append(score("--fit (llama.cpp default)", p, spec, rig, turn, cal, note, profile))
        p = fit_llamacpp(spec, rig, base.model_copy(update={"fit": True, "load_mode": "none"}), quant)
        out.append(score("--no-mmap (otherwise defaults)", p, spec, rig, turn, cal, "", profile))
    return out


def _too_small_message(spec: ModelSpec, rig: Rig, base: LlamaCppOptions, quant: str | None, margin: int) -> str:
    if not rig.gpus:
        return (f"{spec.name} does not fit in {rig.ram_bytes / GIB:.0f} GiB of RAM at context {base.ctx}; "
                f"lower --context or pick a smaller quant")
    lean = base.model_copy(update={"ngl": 999, "cpu_moe": True, "cache_type_k": "q8_0", "cache_type_v": "q8_0",
                                   "ubatch": 512, "fit": False}) if spec.is_moe else \
        base.model_copy(update={"ngl": 0, "cache_type_k": "q8_0", "cache_type_v": "q8_0", "fit": False})
    p = plan_llamacpp(spec, rig, lean, quant)
    need = max(d.total for d in p.devices if d.kind == "gpu") + margin
    return (f"no placement of {spec.name} fits {rig.gpus[0].vram_bytes / GIB:.1f} GiB of VRAM at context {base.ctx}; "
            f"the smallest that works is about {need / GIB:.1f} GiB (--vram {need / GIB + 0.05:.1f}), "
            f"or lower --context")
