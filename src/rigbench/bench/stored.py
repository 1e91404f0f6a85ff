"""The speed suite with every request and summary written to the store, and one measured agent turn."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rigbench import hardware
from rigbench.bench.suite import BenchConfig
from rigbench.procs import stop_reason


def scenario_row(name: str, res, machine=None, repeats=None) -> dict:
    """One table row; `repeats` is the scenario's figure per request (median, lowest, highest, N) and `machine`
    the sampler's summary of the scenario's window, whose `disturbed` list marks the row "disturbed?"."""
    s = res.summary
    return {"scenario": name, "completed": s.completed, "failed": s.failed,
            "ttft_ms_p50": s.ttft_ms.median, "ttft_ms_p99": s.ttft_ms.p99, "tpot_ms_p50": s.tpot_ms.median,
            "itl_ms_p99": s.itl_ms.p99, "output_tok_s": s.output_throughput,
            "per_stream_tok_s": s.per_stream_output_tok_s, "prefill_tok_s": s.prefill_tok_s.median,
            "request_throughput": s.request_throughput, "goodput": s.goodput,
            "repeats": repeats.model_dump() if repeats else None,
            "disturbed": list(machine.disturbed) if machine else [],
            "others_cpu": machine.others_cpu if machine and machine.samples else None,
            "errors": s.errors, "facts": res.facts}


def run_stored_suite(cfg: BenchConfig, db_url: str | None, progress: Callable[[str], None] | None = None,
                     on_scenario: Callable[[str], None] | None = None, gpu=True):
    """Run the speed suite with every request and summary written to the store as it arrives, while a
    sampler watches the machine (its samples stored with the run, summarised per scenario).

    Returns (run id, status, error, table rows, suite); Ctrl-C (or SIGTERM, SIGHUP) and a server that dies
    end the run as `interrupted` / `failed` with what was measured kept.
    """
    from rigbench import monitor, store
    from rigbench.bench.metrics import repeat_values, spread
    from rigbench.bench.suite import ServerGone, Suite, metrics_snapshot

    db = store.connect(db_url)
    rows: dict[str, dict] = {}
    run_id = 0
    began: dict[str, float] = {}
    per_request: dict[str, list] = {}
    sampler = monitor.Sampler(gpu=gpu)
    flushed = 0

    def flush() -> None:
        nonlocal flushed
        new = sampler.samples[flushed:]
        flushed += len(new)
        store.add_samples(db, run_id, new)

    def on_begin(name: str) -> None:
        began[name] = time.time()
        if progress:
            progress(name)

    def on_result(r) -> None:
        per_request.setdefault(r.scenario, []).append((r.ttft, r.tpot) if r.ok else (None, None))
        store.add_request(db, run_id, r)

    def on_summary(name, res):
        machine = sampler.window(began[name], time.time()) if name in began else None
        reps = spread(repeat_values(name, per_request.get(name, [])))
        rows[name] = scenario_row(name, res, machine, reps)
        store.add_summary(db, run_id, name, {"summary": res.summary.model_dump(), "facts": res.facts,
                                             "repeats": reps.model_dump() if reps else None,
                                             "machine": machine.model_dump() if machine else None})
        flush()
        if on_scenario and name in cfg.scenarios:
            on_scenario(name)

    suite = Suite(cfg, on_result=on_result, on_summary=on_summary, progress=on_begin)
    pid = monitor.listener_pid(suite.info.base)
    if pid:
        sampler.roots.add(pid)
    info = suite.info
    gpu = ", ".join(g.name for g in hardware.detect().gpus) or "none (CPU)"
    run_id = store.new_run(db, "bench", url=info.base, model=info.model, engine=info.engine,
                           engine_version=info.version, gpu=gpu,
                           environment={"host_gpu": gpu, "context": info.context, "slots": info.slots,
                                        "metrics_at_start": metrics_snapshot(info.base)},
                           config=cfg.model_dump())
    status, error = "done", None
    t0 = time.time()
    sampler.start()
    try:
        suite.run()
    except KeyboardInterrupt as e:
        status, error = "interrupted", stop_reason(e)[0]
    except ServerGone as e:
        status, error = "failed", str(e)
    finally:
        sampler.stop()
        flush()
        whole = sampler.window(t0, time.time())
        store.add_summary(db, run_id, "machine", {**whole.model_dump(), "sampler_cpu_s": round(sampler.cost_s, 3)})
        store.finish_run(db, run_id, status, error)
    suite.machine = whole
    return run_id, status, error, rows, suite


def measure_turn(args: list[str], gguf: str, r: hardware.Rig, prompt: int, output: int,
                 server_bin: str | None, say: Callable[[str], None] | None = None) -> dict:
    """One llama-server run of a candidate: the turn scenario, as `rigbench bench` measures it."""
    import tempfile

    from rigbench.bench.suite import Suite
    from rigbench.engines import llamacpp
    from rigbench.engines.options import parse_llama_args

    o = parse_llama_args(["-m", gguf, *args[1:]])
    spec = llamacpp.launch_spec(o, llamacpp.find_binary(server_bin), gpu=r.has_gpu)
    from rigbench import monitor

    with tempfile.TemporaryDirectory() as tmp:
        if say:
            say(f"measure: {' '.join(args[1:])}")
        server = llamacpp.start(spec, Path(tmp) / "server.log")
        try:
            cfg = BenchConfig(url=server.url, scenarios=["turn"], turn_prompt=prompt, turn_output=output, repeats=1)
            t0 = time.time()
            with monitor.watching(server.url) as watch:
                s = Suite(cfg).run()["turn"]
            machine = watch.window(t0, time.time())
        finally:
            server.stop()
    return {"turn_s": s.facts.get("turn_s"), "prefill_tok_s": s.summary.prefill_tok_s.median,
            "decode_tok_s": s.summary.per_stream_output_tok_s, "failed": s.summary.failed,
            "others_cpu": machine.others_cpu, "disturbed": machine.disturbed, "machine": machine.model_dump()}
