"""The typed rows every rendering draws from: terminal tables, Markdown and HTML show the same records."""

from __future__ import annotations

from pydantic import BaseModel

from rigbench.bench.metrics import Spread

GiB = 2**30


def plan_json(p) -> dict:
    """A memory.Plan as JSON, whole: each device's parts and what a token reads there (plan.speed reads those
    back: the report's what-if predicts from the stored plan)."""
    return p.model_dump(mode="json")


class DeviceRow(BaseModel):
    device: str
    weights_gib: float
    kv_gib: float
    state_gib: float
    compute_gib: float
    other_gib: float
    total_gib: float
    capacity_gib: float


class PlanRow(BaseModel):
    candidate: str
    model: str
    engine: str
    rig: str
    quant: str | None
    fits: bool
    reason: str = ""
    devices: list[DeviceRow]
    kv_tokens: int
    max_concurrency: float
    context: int
    command: str           # the launch command: as served where it ran, else as planned

    @classmethod
    def of(cls, candidate: str, plan: dict, command: str, rig: str = "") -> PlanRow:
        devs = []
        for d in plan.get("devices", []):
            total = sum(d[k] for k in ("weights_bytes", "kv_cache_bytes", "recurrent_bytes", "compute_bytes",
                                       "other_bytes"))
            if total == 0 and d["kind"] == "gpu":
                continue
            devs.append(DeviceRow(device=d["name"], weights_gib=round(d["weights_bytes"] / GiB, 2),
                                  kv_gib=round(d["kv_cache_bytes"] / GiB, 2),
                                  state_gib=round(d["recurrent_bytes"] / GiB, 2),
                                  compute_gib=round(d["compute_bytes"] / GiB, 2),
                                  other_gib=round(d["other_bytes"] / GiB, 2), total_gib=round(total / GiB, 2),
                                  capacity_gib=round(d["capacity_bytes"] / GiB, 2)))
        return cls(candidate=candidate, model=plan["model"], engine=plan["engine"], rig=rig or plan["rig"],
                   quant=plan.get("quant"), fits=plan["fits"], reason=plan.get("reason", "") if not plan["fits"]
                   else "", devices=devs, kv_tokens=plan["kv_cache_tokens"],
                   max_concurrency=plan["max_concurrency"], context=plan["context"], command=command)


class Cell(BaseModel):
    predicted: float | None = None
    measured: float | None = None
    spread: Spread | None = None       # the repeats behind `measured`: median, lowest, highest, N
    sampled: bool = False              # the machine was watched while it was measured
    disturbed: list[str] = []          # why the measured figure may not be trusted ("disturbed?")


class SpeedRow(BaseModel):
    metric: str            # key, e.g. ttft_short_ms
    label: str
    unit: str
    higher_is_better: bool
    cells: dict[str, Cell]  # candidate -> predicted / measured

    def value(self, candidate: str) -> float | None:
        c = self.cells.get(candidate)
        return None if c is None else (c.measured if c.measured is not None else c.predicted)

    def best(self) -> tuple[str, float, str, float] | None:
        """(winner, its value, runner-up, its value) on measured figures where all have one, else predicted."""
        measured = {k: c.measured for k, c in self.cells.items() if c.measured is not None}
        vals = measured if len(measured) == len(self.cells) else {k: c.predicted for k, c in self.cells.items()
                                                                    if c.predicted is not None}
        vals = {k: v for k, v in vals.items() if v and v > 0}
        if len(vals) < 2:
            return None
        order = sorted(vals, key=lambda k: vals[k], reverse=self.higher_is_better)
        return order[0], vals[order[0]], order[1], vals[order[1]]

    def ratio(self) -> float | None:
        """How much better the winner is than the runner-up (always >= 1)."""
        b = self.best()
        if b is None:
            return None
        _, w, _, r = b
        return w / r if self.higher_is_better else r / w


class Series(BaseModel):
    name: str
    kind: str              # measured | predicted
    x: list[float]
    y: list[float]


class Chart(BaseModel):
    key: str
    title: str
    x_label: str
    y_label: str
    log_x: bool = False
    series: list[Series]


class EvalCounts(BaseModel):
    candidate: str
    success: int = 0
    failure: int = 0
    timeout: int = 0
    error: int = 0
    other: int = 0
    wall_s: float = 0.0


class GridCell(BaseModel):
    status: str
    wall_s: float
    turns: int = 0
    run_id: int | None = None


class GridRow(BaseModel):
    task: str
    cells: dict[str, GridCell]


class Segment(BaseModel):
    kind: str              # prefill | decode | waiting | model | tool | agent | verifier | other
    start: float
    end: float


class Timeline(BaseModel):
    task: str
    candidate: str
    segments: list[Segment]

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.segments:
            out[s.kind] = round(out.get(s.kind, 0.0) + s.end - s.start, 3)
        return out


class WhatIfCell(BaseModel):
    predicted_s: float                 # whatif's wall time of the task on this placement
    low_s: float
    high_s: float
    in_time: str | None = None         # yes / no / uncertain against the task's limit; None without one


class WhatIfRow(BaseModel):
    """One stored task, measured where it ran, and predicted on every candidate's placement (`rigbench whatif`)."""
    task: str
    ran_on: str                        # the candidate whose eval run it is
    run_id: int
    status: str
    measured_s: float                  # its wall time as stored
    cells: dict[str, WhatIfCell]       # target candidate -> prediction


class Report(BaseModel):
    title: str
    sources: list[str]                 # experiment / run ids the report was built from
    candidates: list[str]
    plans: list[PlanRow] = []
    speed: list[SpeedRow] = []
    charts: list[Chart] = []
    eval_counts: list[EvalCounts] = []
    grid: list[GridRow] = []
    timelines: list[Timeline] = []
    whatif: list[WhatIfRow] = []
    verdict: list[str] = []
    notes: list[str] = []
    load: Chart | None = None          # the machine over each candidate's bench runs: CPU used by others
    accept_disturbed: bool = False     # verdicts compared figures marked "disturbed?" too


def model_rows() -> list[dict]:
    """The catalog's models, one row each: size, kind and where its quality figure comes from."""
    from rigbench import model as model_mod

    rows = []
    for name in model_mod.model_names():
        s = model_mod.from_catalog(name)
        rows.append({"name": name, "arch": s.arch, "params_b": round(s.total_params() / 1e9, 2),
                     "active_b": round(s.active_params() / 1e9, 2), "layers": s.layers,
                     "kind": ("MoE " if s.is_moe else "dense ") + _layout_kind(s), "context": s.context,
                     "quality": s.quality, "source": s.source})
    return rows


def _layout_kind(s) -> str:
    kinds = {"L": "Gated DeltaNet", "M": "Mamba2", "S": "sliding window", "C": "chunked attention"}
    extra = [v for k, v in kinds.items() if k in s.layout]
    return " + ".join(["attention", *extra]) if extra else "attention"


def inspect_info(s) -> dict:
    """A model's shape and its parameters per tensor group, as JSON."""
    info = s.model_dump(exclude={"tensors"})
    info.update({"params_by_group": s.params_by_group(), "total_params": s.total_params(),
                 "active_params": s.active_params(), "tensor_count": len(s.table())})
    return info
