"""A stored run's turns through the speed model of another placement (`plan.speed`).

Each turn prefills the tokens the target's prefix cache does not hold, at the turn's context, then decodes the
turn's output tokens; the tools take what they took in the recorded run. A task's agent time is compared with
its time limit. Uncertainty comes from the speed model's own calibration error (`Coefficients.*_uncertainty`),
taken as one error for the whole placement (a placement predicted 20% slow is slow on every turn), so a task's
range is its prefill and decode time scaled by those errors, plus the recorded tool time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from rigbench.hardware import Rig
from rigbench.model import ModelSpec
from rigbench.plan import speed
from rigbench.plan.memory import Plan
from rigbench.whatif.trace import RunTrace, TaskTrace

CacheMode = Literal["auto", "on", "off"]


class Target(BaseModel):
    """One placement to predict: a model, a rig and the engine's flags, planned."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    label: str
    spec: ModelSpec
    rig: Rig
    plan: Plan
    prefix_cache: CacheMode = "auto"


class TurnPrediction(BaseModel):
    prefill_tokens: int
    context: int
    output_tokens: int
    prefill_s: float
    decode_s: float
    tool_s: float


class TaskPrediction(BaseModel):
    task: str
    recorded_status: str
    recorded_agent_s: float
    recorded_wall_s: float
    time_limit_s: float | None
    turns: int
    prefill_s: float
    decode_s: float
    tools_s: float
    other_s: float                     # setup and verifier, as recorded
    agent_s: speed.Estimate            # model + tools: what the time limit counts
    wall_s: speed.Estimate
    in_time: Literal["yes", "no", "uncertain"] | None   # None: no time limit on record
    lower_bound: bool                  # the recorded run timed out: turns after the limit are unknown
    turn_times: list[TurnPrediction] = []


class Totals(BaseModel):
    tasks: int
    wall_s: speed.Estimate
    prefill_s: float
    decode_s: float
    tools_s: float
    other_s: float
    timeouts: int                      # predicted past the limit (point estimate)
    timeouts_low: int                  # at the fast end of the range
    timeouts_high: int                 # at the slow end
    recorded_timeouts: int


class WhatIf(BaseModel):
    run: int
    target: str
    model: str
    rig: str
    engine: str
    command: list[str]
    fits: bool
    prefix_cache: str                  # what the target reuses between turns, in words
    calibration: str
    prefill_uncertainty: float
    decode_uncertainty: float
    tasks: list[TaskPrediction]
    totals: Totals
    notes: list[str] = []


def _recurrent(spec: ModelSpec) -> bool:
    return bool(spec.recurrent_layers())


def reuse_rule(target: Target) -> tuple[str, int | None, str]:
    """(description, block, kind) of the target engine's prefix cache between an agent's turns; kind is
    `prefix` (any common prefix), `checkpoint` (only up to a checkpoint) or `none`.

    llama-server keeps the last prompt of a slot and reuses its longest common prefix; for a model with
    recurrent layers (Gated DeltaNet, Mamba) the state cannot be cut back, so it restores the latest context
    checkpoint inside the common prefix (`--ctx-checkpoints`: two near the end of each prompt, 4 + n_ubatch and
    4 tokens before it; catalog engines.yaml `checkpoint_lag_tokens`, `speed.ServerState.new_checkpoints`). vLLM
    caches whole blocks (`--enable-prefix-caching`, on by default in V1); a hybrid model only with
    `--mamba-cache-mode align|all` (plan.memory), in blocks of the hybrid block size.
    """
    p, spec, mode = target.plan, target.spec, target.prefix_cache
    if mode == "off":
        return "off (every turn prefills its whole prompt)", None, "none"
    if p.engine == "vllm":
        cmd = " ".join(p.command)
        if mode == "auto" and "--no-enable-prefix-caching" in cmd:
            return "off (--no-enable-prefix-caching)", None, "none"
        if mode == "auto" and _recurrent(spec) and not any(f"--mamba-cache-mode {m}" in cmd for m in ("align", "all")):
            return "off (hybrid model without --mamba-cache-mode align)", None, "none"
        block = p.block_size or 16
        return f"vLLM prefix caching in blocks of {block} tokens", block, "prefix"
    if _recurrent(spec) and mode == "auto":
        return ("llama-server: the latest checkpoint inside the shared prefix (hybrid model: two near the end of "
                "each prompt)"), None, "checkpoint"
    return "llama-server: longest common prefix with the previous prompt", None, "prefix"


class _Slot:
    """What the server holds between turns, carried across tasks in the order the run went: for a hybrid model,
    the live state at the end of the last request (prompt and reply) and the checkpoints it can go back to; for
    llama-server also what it copies to host memory on the way (`speed.ServerState`): the whole slot saved to the
    RAM prompt cache when a new task's prompt displaces it, and a checkpoint restored (the checkpoints each request
    writes are in `speed.agent_turn_seconds`)."""

    def __init__(self, kind: str, block: int | None, state: speed.ServerState | None):
        self.kind, self.block, self.state = kind, block, state
        self.checkpoints: list[int] = []
        self.live = self.tokens = 0

    def turn(self, shared: int, prompt: int, output: int) -> tuple[int, float]:
        """(tokens reused, seconds of state copies) of one request."""
        st, copies = self.state, 0.0
        if st is not None and st.saves(self.tokens, shared, prompt):
            copies += st.save_s(self.tokens, len(self.checkpoints))
        cached = self._reused(shared, prompt)
        if self.kind == "checkpoint":               # llama-server only (reuse_rule), so `st` is there
            if cached and cached != self.live:
                copies += st.restore_s()
            made = st.new_checkpoints(cached, prompt)   # their copies: speed.agent_turn_seconds
            self.checkpoints = sorted(set(self.checkpoints) | set(made))[-st.max_checkpoints:]
            self.live = prompt + output - 1        # the last generated token is sampled, not yet in the state
        self.tokens = prompt + output - 1 if self.kind != "none" else 0
        return cached, copies

    def _reused(self, shared: int, prompt: int) -> int:
        if self.kind == "none":
            return 0
        if self.kind == "checkpoint":
            self.checkpoints = [c for c in self.checkpoints if c <= shared]   # the rest lie past the divergence
            return self.live if self.live and shared >= self.live else max(self.checkpoints, default=0)
        return shared // self.block * self.block if self.block else shared


def _task(t: TaskTrace, target: Target, coef: speed.Coefficients, slot: _Slot,
          limit_override: float | None) -> TaskPrediction:
    turns = []
    for turn in t.turns:
        cached, copies = slot.turn(turn.shared_prefix, turn.prompt_tokens, turn.output_tokens)
        new = max(1, turn.prompt_tokens - cached)     # a server always runs the prompt's last token
        pre, dec = speed.agent_turn_seconds(target.plan, target.spec, target.rig, coef, new, turn.prompt_tokens,
                                            turn.output_tokens, slot.state)
        pre += copies                                 # before and between its prompt batches
        turns.append(TurnPrediction(prefill_tokens=new, context=turn.prompt_tokens, output_tokens=turn.output_tokens,
                                    prefill_s=round(pre, 4), decode_s=round(dec, 4), tool_s=turn.tool_s))
    pre = sum(x.prefill_s for x in turns)
    dec = sum(x.decode_s for x in turns)
    tools = sum(x.tool_s for x in turns)
    up, ud = coef.prefill_uncertainty, coef.decode_uncertainty
    agent = _range(tools, pre, dec, up, ud)
    other = t.setup_s + t.finish_s
    wall = _range(tools + other, pre, dec, up, ud)
    limit = limit_override or t.time_limit_s
    verdict = None
    if limit:
        verdict = "yes" if agent.high <= limit else "no" if agent.low > limit else "uncertain"
        if t.truncated and verdict == "yes":
            verdict = "uncertain"        # its recorded turns fit, but the task had more to do
    return TaskPrediction(task=t.task, recorded_status=t.status, recorded_agent_s=round(t.agent_s, 2),
                          recorded_wall_s=round(t.wall_s, 2), time_limit_s=limit, turns=len(turns),
                          prefill_s=round(pre, 3), decode_s=round(dec, 3), tools_s=round(tools, 3),
                          other_s=round(other, 3), agent_s=agent, wall_s=wall, in_time=verdict,
                          lower_bound=t.truncated, turn_times=turns)


def _range(fixed: float, pre: float, dec: float, up: float, ud: float) -> speed.Estimate:
    value = fixed + pre + dec
    low = fixed + pre / (1 + up) + dec / (1 + ud)
    high = fixed + pre * (1 + up) + dec * (1 + ud)
    return speed.Estimate(value=round(value, 2), low=round(low, 2), high=round(high, 2),
                          uncertainty=round(high / value - 1, 3) if value else 0.0)


def predict(trace: RunTrace, target: Target, time_limit_s: float | None = None,
            calibration: speed.Calibration | None = None) -> WhatIf:
    """Every task of the run under the target placement."""
    coef = (calibration or speed.load_calibration()).for_plan(target.plan, target.rig)
    rule, block, kind = reuse_rule(target)
    slot = _Slot(kind, block, speed.server_state(target.plan, target.spec, target.rig))
    tasks = [_task(t, target, coef, slot, time_limit_s) for t in trace.tasks if t.turns]
    notes = []
    if not target.plan.fits:
        notes.append(f"this placement does not fit: {target.plan.reason}")
    if skipped := [t.task for t in trace.tasks if not t.turns]:
        notes.append(f"no model turns on record, left out: {', '.join(skipped)}")
    if any(t.lower_bound for t in tasks):
        notes.append("tasks that timed out in the recorded run are predicted on their recorded turns only "
                     "(a lower bound: what they would have done after the limit is unknown)")
    up, ud = coef.prefill_uncertainty, coef.decode_uncertainty
    pre, dec = sum(t.prefill_s for t in tasks), sum(t.decode_s for t in tasks)
    tools, other = sum(t.tools_s for t in tasks), sum(t.other_s for t in tasks)
    limited = [t for t in tasks if t.time_limit_s]
    totals = Totals(tasks=len(tasks), wall_s=_range(tools + other, pre, dec, up, ud), prefill_s=round(pre, 2),
                    decode_s=round(dec, 2), tools_s=round(tools, 2), other_s=round(other, 2),
                    timeouts=sum(t.agent_s.value > t.time_limit_s for t in limited),
                    timeouts_low=sum(t.agent_s.low > t.time_limit_s for t in limited),
                    timeouts_high=sum(t.agent_s.high > t.time_limit_s for t in limited),
                    recorded_timeouts=sum(t.recorded_status == "timeout" for t in tasks))
    return WhatIf(run=trace.run, target=target.label, model=target.spec.name, rig=target.rig.name,
                  engine=target.plan.engine, command=target.plan.command, fits=target.plan.fits, prefix_cache=rule,
                  calibration=coef.source, prefill_uncertainty=up, decode_uncertainty=ud, tasks=tasks, totals=totals,
                  notes=notes)


class StoredRunTimes:
    """A stored run's tasks as `plan.advise.rank` takes them (its `times`): each placement's task times predicted
    from the run's recorded turns, the range from the speed model's calibration error."""

    def __init__(self, trace: RunTrace):
        self.trace = trace
        n = sum(1 for t in trace.tasks if t.turns)
        self.source = f"the {n} tasks of stored run {trace.run}, predicted from their recorded turns"

    def __call__(self, label: str, spec: ModelSpec, rig: Rig, plan: Plan, time_limit_s: float,
                 cal: speed.Calibration) -> tuple[list[float], list[float], list[float]]:
        w = predict(self.trace, Target(label=label, spec=spec, rig=rig, plan=plan), time_limit_s, cal)
        return ([t.agent_s.value for t in w.tasks], [t.agent_s.low for t in w.tasks],
                [t.agent_s.high for t in w.tasks])
