"""Per-upstream accounting of a router run: requests, tokens, time, escalations, fallbacks, swaps.

Totals are kept in memory and written to the store by a background thread every second (the request path only
appends to a list), as one `requests` row per routed request (scenario = the upstream) and one aggregate per
upstream (`upstream:NAME`), so `rigbench runs` shows them while the router is still up.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass

from rigbench import store


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    escalations: int = 0        # conversations escalated to this upstream (the request that set it off)
    escalated_requests: int = 0 # requests it served because their conversation was escalated
    fallbacks: int = 0          # requests this upstream served after another failed
    swaps: int = 0              # times it was started in place of another


class Accounting:
    def __init__(self, db_url: str | None, upstreams: list[str], config: dict, url: str):
        self.totals = {n: Totals() for n in upstreams}
        self.pending: deque[dict] = deque()   # appended on the event loop, drained by the writer thread
        self.n = 0
        self.db = self.run_id = None
        if db_url != "none":
            self.db = store.connect(db_url)
            self.run_id = store.new_run(self.db, "route", url=url, model=", ".join(upstreams), engine="rigbench route",
                                        config=config)
        self._stop = threading.Event()
        self._dirty = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="route-accounting")
        if self.db is not None:
            self._thread.start()

    def record(self, upstream: str, *, ttft: float | None, e2e: float, prompt_tokens: int, output_tokens: int,
               error: str | None, route: str, api: str, escalated: bool, triggered: bool,
               fallback_from: str | None, swap: str | None, start: float) -> None:
        t = self.totals[upstream]
        t.requests += 1
        t.errors += error is not None
        t.prompt_tokens += prompt_tokens
        t.output_tokens += output_tokens
        t.seconds += e2e
        t.escalations += triggered
        t.escalated_requests += escalated
        t.fallbacks += fallback_from is not None
        t.swaps += bool(swap and swap.startswith("swapped"))
        self.n += 1
        if self.db is not None:
            self.pending.append({"scenario": upstream, "idx": self.n, "start": start, "ttft": ttft, "e2e": e2e,
                                 "prompt_tokens": prompt_tokens, "output_tokens": output_tokens, "error": error,
                                 "server_timings": {"route": route, "api": api, "escalated": escalated,
                                                    "triggered": triggered,
                                                    "fallback_from": fallback_from, "swap": swap}})
            self._dirty = True

    def summary(self) -> dict[str, dict]:
        return {n: {**asdict(t), "seconds": round(t.seconds, 3)} for n, t in self.totals.items()}

    def flush(self) -> None:
        if self.db is None or not self._dirty:
            return
        self._dirty = False
        rows = [self.pending.popleft() for _ in range(len(self.pending))]
        store.add_request_rows(self.db, self.run_id, rows)
        for name, s in self.summary().items():
            store.set_summary(self.db, self.run_id, f"upstream:{name}", s)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.flush()

    def close(self, status: str = "done", error: str | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.db is not None:
            self._dirty = True
            self.flush()
            store.finish_run(self.db, self.run_id, status, error)


def describe(summaries: list[dict]) -> str:
    """One line per stored route run for `rigbench runs`: `fast 12 req 3.4k/0.9k tok 20 s, 2 esc · ...`."""
    parts = []
    for s in summaries:
        if s["scenario"] == "escalation":   # an eval run's task-level escalation
            d = s["summary"]
            parts.append(f"escalated {d['tasks']} tasks to {d['model']}: {d['rescued']} solved, "
                         f"+{d['extra_s']:.0f} s on {d['all_first_s']:.0f} s")
            continue
        if not str(s["scenario"]).startswith("upstream:"):
            continue
        d = s["summary"]
        extra = ", ".join(f"{d[k]} {label}" for k, label in (("escalations", "esc"), ("fallbacks", "fallback"),
                                                             ("swaps", "swaps"), ("errors", "err")) if d.get(k))
        parts.append(f"{s['scenario'][9:]} {d['requests']} req {d['prompt_tokens']}/{d['output_tokens']} tok "
                     f"{d['seconds']:.0f} s" + (f" ({extra})" if extra else ""))
    return " · ".join(parts)
