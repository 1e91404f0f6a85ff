"""Bench load from several Ray workers against one endpoint, merged exactly: every worker returns its raw
requests and the merged summary is computed from all of them (percentiles of the union, never averages of
the workers' percentiles)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rigbench.bench.client import RequestResult
from rigbench.bench.load import LoadResult, run, run_load
from rigbench.scale.cluster import RayUnavailable, init


def _worker_load(url: str, payload: Callable[[int], dict], offset: int, requests: int, concurrency: int,
                 scenario: str, time_limit: float, start_at: float, kwargs: dict) -> dict:
    import socket

    time.sleep(max(0.0, start_at - time.time()))     # all workers begin together
    # monotonic clocks of different machines do not compare: shift this worker's to the wall clock
    shift = time.time() - time.monotonic()
    t0 = time.time()
    lr = run(run_load(url, lambda i: payload(offset + i), scenario=scenario, concurrency=concurrency,
                      requests=requests, time_limit=time_limit, **kwargs))
    for r in lr.results:
        r.index += offset
        r.start += shift
        r.chunk_times = [t + shift for t in r.chunk_times]
    return {"load": lr.model_dump(), "t0": t0, "t1": time.time(), "host": socket.gethostname()}


def load_on_ray(url: str, payload: Callable[[int], dict], *, workers: int, requests: int, concurrency: int = 1,
                scenario: str = "", time_limit: float = 600.0, address: str = "auto", start_delay_s: float = 2.0,
                **kwargs) -> tuple[LoadResult, list[dict]]:
    """`bench.load.run_load` on `workers` Ray workers at once, each a closed loop of `concurrency` streams;
    the `requests` are split between them (request i is built by `payload(i)` on whichever worker has it).

    Returns the merged load (requests in index order, duration from the first worker's start to the last
    one's end on the wall clock) and, per worker, its host, window and request count."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    init(address)
    # one CPU slot per worker, held together: workers that waited for each other would not load at once
    pg = placement_group([{"CPU": 1}] * workers, strategy="SPREAD")
    if not pg.wait(timeout_seconds=60):
        remove_placement_group(pg)
        raise RayUnavailable(f"the cluster has not {workers} free CPU slots for the load generators")
    try:
        fn = ray.remote(num_cpus=1, max_retries=0)(_worker_load)
        shares = [requests // workers + (k < requests % workers) for k in range(workers)]
        start_at = time.time() + start_delay_s
        refs, offset = [], 0
        for k, n in enumerate(shares):
            strategy = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=k)
            refs.append(fn.options(scheduling_strategy=strategy).remote(
                url, payload, offset, n, concurrency, scenario, time_limit, start_at, kwargs))
            offset += n
        parts = ray.get(refs)
    finally:
        remove_placement_group(pg)
    loads = [LoadResult.model_validate(p["load"]) for p in parts]
    results: list[RequestResult] = sorted((r for lr in loads for r in lr.results), key=lambda r: r.index)
    merged = LoadResult(results=results, duration_s=max(p["t1"] for p in parts) - min(p["t0"] for p in parts),
                        server_down=any(lr.server_down for lr in loads),
                        stopped=next((lr.stopped for lr in loads if lr.stopped), None))
    per_worker = [{"host": p["host"], "t0": p["t0"], "t1": p["t1"], "requests": len(lr.results)}
                  for p, lr in zip(parts, loads, strict=True)]
    return merged, per_worker
