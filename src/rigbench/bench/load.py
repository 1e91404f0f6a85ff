"""Load shapes: closed loop at a fixed concurrency, open loop at a Poisson rate. Always bounded in
requests and time, and it stops itself when the server is gone."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from pydantic import BaseModel

from rigbench.bench.client import RequestResult, Session, stream


def run(coro):
    """asyncio.run on uvloop when it is installed: less client overhead per streamed chunk."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class LoadResult(BaseModel):
    results: list[RequestResult]
    duration_s: float
    server_down: bool = False
    stopped: str | None = None    # why issuing stopped early (time limit, server down, interrupted)


async def run_load(url: str, payload: Callable[[int], dict], *, scenario: str = "", concurrency: int = 1,
                   requests: int = 1, rate: float | None = None, time_limit: float = 600.0, warmup: int = 0,
                   timeout: float = 600.0, stall_timeout: float = 60.0,
                   on_result: Callable[[RequestResult], None] | None = None, seed: int = 0,
                   probe_key: str | None = None, ramp_s: float = 0.0,
                   headers: dict[str, str] | None = None) -> LoadResult:
    """Send `requests` requests built by `payload(i)`; closed loop with `concurrency` workers, or open loop
    with Poisson arrivals at `rate` req/s (at most `concurrency` in flight when concurrency > 0).
    `ramp_s` spreads the closed loop's first wave over that many seconds, as `vllm bench serve --ramp-up`;
    `headers` go with every request (an API key)."""
    results: list[RequestResult] = []
    state = {"next": 0, "conn_errors": 0, "down": False, "stopped": None}
    down_after = max(3, concurrency)

    async with Session(headers) as s:
        for i in range(warmup):  # warm-up: compile kernels, fill caches; discarded
            await stream(s, url, payload(-1 - i), scenario="warmup", timeout=timeout, stall_timeout=stall_timeout)
        t0 = time.monotonic()
        deadline = t0 + time_limit

        def record(r: RequestResult) -> None:
            results.append(r)
            if r.error and r.error.startswith("connection"):
                state["conn_errors"] += 1
                if state["conn_errors"] >= down_after:
                    state["down"] = True
            else:
                state["conn_errors"] = 0
            if on_result:
                on_result(r)

        async def one(i: int) -> None:
            r = await stream(s, url, payload(i), scenario=scenario, index=i, stall_timeout=stall_timeout,
                             timeout=min(timeout, deadline - time.monotonic() + 1), probe_key=probe_key)
            record(r)

        if rate is None:
            async def worker(k: int) -> None:
                if ramp_s:
                    await asyncio.sleep(ramp_s * k / max(1, concurrency))
                while not state["down"]:
                    if time.monotonic() >= deadline:
                        state["stopped"] = state["stopped"] or "time limit"
                        return
                    i = state["next"]
                    if i >= requests:
                        return
                    state["next"] = i + 1
                    await one(i)

            tasks = [asyncio.create_task(worker(k)) for k in range(max(1, concurrency))]
        else:
            rng = random.Random(seed)
            sem = asyncio.Semaphore(concurrency) if concurrency > 0 else None
            tasks = []

            async def gated(i: int) -> None:
                if sem:
                    async with sem:
                        await one(i)
                else:
                    await one(i)

            for i in range(requests):
                if state["down"] or time.monotonic() >= deadline:
                    state["stopped"] = "server down" if state["down"] else "time limit"
                    break
                tasks.append(asyncio.create_task(gated(i)))
                await asyncio.sleep(rng.expovariate(rate))
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(1.0, deadline - time.monotonic() + timeout))
        except TimeoutError:
            state["stopped"] = "time limit"
        except asyncio.CancelledError:
            state["stopped"] = "interrupted"
            for t in tasks:
                t.cancel()
            raise
        finally:
            for t in tasks:
                t.cancel()
        if state["down"]:
            state["stopped"] = "server down"
        return LoadResult(results=sorted(results, key=lambda r: r.index), duration_s=time.monotonic() - t0,
                          server_down=state["down"], stopped=state["stopped"])
