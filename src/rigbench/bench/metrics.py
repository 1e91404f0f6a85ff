"""Per-run statistics with `vllm bench serve`'s definitions: mean, median, p90, p99; throughputs; goodput."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from rigbench.bench.client import RequestResult


class Stat(BaseModel):
    mean: float | None = None
    median: float | None = None
    p90: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        if not values:
            return cls()
        a = np.asarray(values, dtype=float)
        return cls(mean=float(a.mean()), median=float(np.median(a)), p90=float(np.percentile(a, 90)),
                   p99=float(np.percentile(a, 99)))


class Summary(BaseModel):
    scenario: str
    completed: int
    failed: int
    errors: dict[str, int] = {}
    duration_s: float
    concurrency: int | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    request_throughput: float = 0.0      # completed requests / s
    output_throughput: float = 0.0       # output tokens / s, all streams together
    per_stream_output_tok_s: float | None = None
    goodput: float | None = None         # requests / s that met every SLO
    ttft_ms: Stat = Stat()
    tpot_ms: Stat = Stat()
    itl_ms: Stat = Stat()
    e2e_ms: Stat = Stat()
    prefill_tok_s: Stat = Stat()
    cached_tokens: int = 0


def _ms(xs: list[float | None]) -> list[float]:
    return [x * 1000 for x in xs if x is not None]


def summarize(scenario: str, results: list[RequestResult], duration_s: float, concurrency: int | None = None,
              slo_ms: dict[str, float] | None = None) -> Summary:
    ok = [r for r in results if r.ok]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            kind = (r.error or "error").split(":")[0]
            errors[kind] = errors.get(kind, 0) + 1
    out_tok = sum(r.output_tokens or 0 for r in ok)
    s = Summary(
        scenario=scenario, completed=len(ok), failed=len(results) - len(ok), errors=errors, duration_s=duration_s,
        concurrency=concurrency, prompt_tokens=sum(r.prompt_tokens or 0 for r in ok), output_tokens=out_tok,
        request_throughput=len(ok) / duration_s if duration_s > 0 else 0.0,
        output_throughput=out_tok / duration_s if duration_s > 0 else 0.0,
        ttft_ms=Stat.of(_ms([r.ttft for r in ok])), tpot_ms=Stat.of(_ms([r.tpot for r in ok])),
        itl_ms=Stat.of(_ms([x for r in ok for x in r.itl])), e2e_ms=Stat.of(_ms([r.e2e for r in ok])),
        prefill_tok_s=Stat.of([r.prefill_tok_s for r in ok if r.prefill_tok_s]),
        cached_tokens=sum(r.cached_tokens or 0 for r in ok),
    )
    tpots = [r.tpot for r in ok if r.tpot]
    if tpots:
        s.per_stream_output_tok_s = float(np.mean([1.0 / t for t in tpots]))
    if slo_ms:
        good = 0
        for r in ok:
            vals = {"ttft": _ms([r.ttft]), "tpot": _ms([r.tpot]), "e2e": _ms([r.e2e])}
            if all(vals[k] and vals[k][0] <= v for k, v in slo_ms.items()):
                good += 1
        s.goodput = good / duration_s if duration_s > 0 else 0.0
    return s


class Spread(BaseModel):
    """A figure as the median of its repeats, with the lowest and highest repeat."""
    median: float
    low: float
    high: float
    n: int

    def overlaps(self, other: Spread) -> bool:
        return self.low <= other.high and other.low <= self.high


def spread(xs: list[float]) -> Spread | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return Spread(median=round(float(np.median(xs)), 3), low=round(min(xs), 3), high=round(max(xs), 3), n=len(xs))


# the speed figures with a repeat per request: scenario -> what each request gives
PER_REQUEST = {"short_ttft": "ttft_ms", "ttft_3500": "ttft_ms", "decode": "tok_s", "long_decode": "tok_s",
               "turn": "tok_s"}


def repeat_values(scenario: str, ttft_tpot: list[tuple[float | None, float | None]]) -> list[float]:
    """Each request's figure for a single-stream scenario: TTFT in ms, or its decode speed (1 / TPOT)."""
    kind = PER_REQUEST.get(scenario)
    if kind == "ttft_ms":
        return [t * 1000 for t, _ in ttft_tpot if t]
    if kind == "tok_s":
        return [1 / p for _, p in ttft_tpot if p]
    return []
