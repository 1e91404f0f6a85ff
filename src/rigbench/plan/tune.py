"""Offload and flag search for llama.cpp: the placement with the best predicted agent turn in a VRAM budget.

Candidates: how many layers' experts stay in RAM (`--n-cpu-moe N`), a finer step that moves only the
gate/up experts of one more layer (`-ot`), the layers on the GPU (`-ngl`, dense models), the u-batch
(large ones cut the PCIe copies of CPU-held weights during prefill and fill more of each expert's tile),
whether RAM-held weights are pinned (`--load-mode none`) and the KV cache type. Each is
planned by plan.memory, kept if it fits with a margin, and scored by plan.speed. The baselines people
use today, `--cpu-moe` and llama.cpp's own `--fit`, are planned and scored the same way beside the pick.
"""

from __future__ import annotations

from pydantic import BaseModel

from rigbench.engines.options import LlamaCppOptions
from rigbench.errors import RigbenchError
from rigbench.hardware import GIB, Rig
from rigbench.model import ModelSpec
from rigbench.plan import speed
from rigbench.plan.memory import MIB, Plan, fit_llamacpp, fits_with_margin, plan_llamacpp

# a pick must decode at least this much faster than --fit's placement, by prediction (a margin for its error)
DECODE_GUARD = 0.03


class BudgetTooSmall(RigbenchError):
    pass


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
    task_s: float                     # the typical 30-turn agent task
    vram_bytes: int
    fits: bool
    note: str = ""


class TuneResult(BaseModel):
    model: str
    rig: str
    vram_budget_bytes: int | None
    context: int
    turn: Turn
    pick: Candidate
    candidates: list[Candidate]
    baselines: list[Candidate]
    searched: int
    uncertainty: float
    calibration: str


def score(label: str, plan: Plan, spec: ModelSpec, rig: Rig, turn: Turn, cal: speed.Calibration,
          note: str = "") -> Candidate:
    coef = cal.for_plan(plan, rig)
    pre, dec = speed.agent_turn_seconds(plan, spec, rig, coef, turn.prompt, turn.prompt, turn.output)
    task = speed.agent_task(plan, spec, rig, calibration=cal)
    return Candidate(label=label, args=plan.command, turn_s=round(pre + dec, 3), prefill_s=round(pre, 3),
                     decode_s=round(dec, 3), prefill_tok_s=round(turn.prompt / pre, 1),
                     decode_tok_s=round(turn.output / dec, 1) if dec else 0.0, task_s=round(task.total_s.value, 1),
                     vram_bytes=sum(d.total for d in plan.devices if d.kind == "gpu"), fits=plan.fits, note=note)


def candidates(spec: ModelSpec, rig: Rig, base: LlamaCppOptions,
               coarse: bool = False) -> list[tuple[str, LlamaCppOptions]]:
    """The placements and flags worth planning, most GPU-heavy first (`coarse`: one u-batch, whole layers)."""
    out: list[tuple[str, LlamaCppOptions]] = []
    ubatches = ((2048,) if coarse else (512, 1024, 2048, 4096)) if rig.gpus else (256, 512)
    kv_types = ("f16", "q8_0")
    for ub in ubatches:
        for kv in kv_types:
            o = base.model_copy(update={"ubatch": ub, "batch": max(ub, base.batch if ub <= 2048 else ub),
                                        "cache_type_k": kv, "cache_type_v": kv, "fit": False})
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
    """The candidate as given and, when weights stay in RAM, with them in pinned memory (`--load-mode none`:
    not memory-mapped, so llama.cpp's per-u-batch copies to the GPU run at the link's pinned rate)."""
    out = [(label, o)]
    if on_cpu and o.load_mode == "auto":
        out.append((label + ", pinned", o.model_copy(update={"load_mode": "none"})))
    return out


def tune(spec: ModelSpec, rig: Rig, quant: str | None = None, context: int = 32768, turn: Turn | None = None,
         margin_mib: int = 512, calibration: speed.Calibration | None = None, top: int = 5,
         base: LlamaCppOptions | None = None, coarse: bool = False) -> TuneResult:
    """Search placements and flags; raise BudgetTooSmall (with the smallest budget that works) if none fits."""
    turn = turn or Turn()
    cal = calibration or speed.load_calibration()
    base = (base or LlamaCppOptions()).model_copy(update={"ctx": context, "parallel": 1})
    margin = margin_mib * MIB
    found: list[Candidate] = []
    tried = 0
    for label, o in candidates(spec, rig, base, coarse):
        tried += 1
        p = plan_llamacpp(spec, rig, o, quant)
        if fits_with_margin(p, margin):
            found.append(score(label, p, spec, rig, turn, cal))
    if not found:
        raise BudgetTooSmall(_too_small_message(spec, rig, base, quant, margin))
    base_cands = baselines(spec, rig, base, quant, turn, cal)
    fit = next((b for b in base_cands if b.label.startswith("--fit") and b.fits), None)
    if fit is not None and any(c.decode_tok_s >= fit.decode_tok_s * (1 + DECODE_GUARD) for c in found):
        # never trade decode below llama.cpp's own placement: long answers and many turns live on decode
        found = [c for c in found if c.decode_tok_s >= fit.decode_tok_s * (1 + DECODE_GUARD)]
    found.sort(key=lambda c: (c.turn_s, -c.decode_tok_s, c.vram_bytes))
    unique: list[Candidate] = []
    for c in found:
        if all(c.args != u.args for u in unique):
            unique.append(c)
    coef = cal.for_rig(rig)
    return TuneResult(model=spec.name, rig=rig.name, vram_budget_bytes=rig.gpus[0].vram_bytes if rig.gpus else None,
                      context=context, turn=turn, pick=unique[0], candidates=unique[:top],
                      baselines=base_cands, searched=tried,
                      uncertainty=max(coef.decode_uncertainty, coef.prefill_uncertainty), calibration=coef.source)


def baselines(spec: ModelSpec, rig: Rig, base: LlamaCppOptions, quant: str | None, turn: Turn,
              cal: speed.Calibration) -> list[Candidate]:
    out = []
    if rig.gpus and spec.is_moe:
        p = plan_llamacpp(spec, rig, base.model_copy(update={"ngl": 999, "cpu_moe": True}), quant)
        out.append(score("--cpu-moe (default flags)", p, spec, rig, turn, cal,
                         "" if p.fits else "does not fit: " + p.reason))
    if rig.gpus:
        p = fit_llamacpp(spec, rig, base.model_copy(update={"fit": True}), quant)
        note = "; ".join(n for n in p.notes if n.startswith("--fit"))
        out.append(score("--fit (llama.cpp default)", p, spec, rig, turn, cal, note))
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

