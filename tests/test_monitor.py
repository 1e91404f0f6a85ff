"""Measurements that know when they were disturbed: the sampler against the real machine, the real llama-server
beside a CPU hog, and (the one stand-in) a fake GPU reader for throttling and foreign GPU processes."""

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time

import pytest

from rigbench import monitor, store
from rigbench.bench.metrics import Spread, spread
from rigbench.report.build import build, speed_verdict
from rigbench.report.rows import Cell, SpeedRow
from tests.conftest import fakeserver

RB = [sys.executable, "-m", "rigbench"]
HOG = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 600: pass\n"


@contextlib.contextmanager
def cpu_lock(wait_s: float = 60.0):
    """Timed work on this machine takes turns through this lock; a holder that keeps it past `wait_s` is
    something the sampler will see (and mark) rather than a reason to hang."""
    with open("/tmp/rigbench-cpu.lock", "a") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
        yield


@contextlib.contextmanager
def hogs(n: int):
    procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def others_now(seconds: float = 3.0) -> float:
    s = monitor.Sampler(interval=0.5, gpu=False).start()
    time.sleep(seconds)
    s.stop()
    return s.window(0, time.time() + 1).others_cpu


# ---- the sampler on the real machine ----------------------------------------------------------------

def test_a_hog_that_is_not_measured_counts_as_others_and_the_measured_processes_do_not():
    """A sampler that measures a child process counts its CPU as its own; the same hog outside is others'."""
    with hogs(1) as (hog,):
        time.sleep(0.5)
        mine = monitor.Sampler(interval=0.5, gpu=False).start()        # the hog is this process's child: measured
        time.sleep(3)
        mine.stop()
    w = mine.window(0, time.time() + 1)
    ncpu = os.cpu_count() or 1
    # one busy process is 1/ncpu of the machine; on a shared machine it gets less, never nothing
    assert w.samples >= 5 and w.own_cpu > 0.1 / ncpu
    assert all(0 <= s.others_cpu <= 1 and abs(s.cpu - s.own_cpu - s.others_cpu) < 1e-3 for s in mine.samples)


def test_samples_are_stored_with_the_run_and_summarised_per_scenario(tmp_path):
    with fakeserver() as (url, _proc):
        p = subprocess.run([*RB, "bench", "--url", url, "--model", "ok", "--quick", "--scenarios",
                            "short_ttft,decode", "--repeats", "3", "--db", f"sqlite:///{tmp_path}/s.db", "--json"],
                           capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    dec = d["scenarios"]["decode"]
    assert dec["repeats"]["n"] == 3 and dec["repeats"]["low"] <= dec["repeats"]["median"] <= dec["repeats"]["high"]
    assert dec["others_cpu"] is not None and d["machine"]["samples"] >= 2
    db = store.connect(f"sqlite:///{tmp_path}/s.db")
    rows = store.run_samples(db, d["run"])
    assert len(rows) >= d["machine"]["samples"] and {"others_cpu", "own_cpu", "steal", "gpus"} <= set(rows[0])
    summ = {s["scenario"]: s["summary"] for s in store.run_summaries(db, d["run"])}
    assert summ["decode"]["machine"]["samples"] >= 1 and summ["machine"]["sampler_cpu_s"] >= 0


# ---- the GPU through a fake reader -------------------------------------------------------------------

class FakeGpu:
    """NVML's answers on a GPU that a neighbour shares and that overheats: a foreign process at 60% SM, the
    hardware thermal slowdown bit set, clocks down from 2,520 to 1,400 MHz."""

    def __init__(self):
        self.reads = 0

    def read(self, own: set[int]) -> list[monitor.GpuReading]:
        self.reads += 1
        return [monitor.GpuReading(index=0, name="Fake RTX", util=95.0, mem_used_mib=20000, mem_total_mib=24576,
                                   sm_clock_mhz=1400, sm_clock_max_mhz=2520, throttle=["hw_thermal"],
                                   foreign=[monitor.GpuProcess(pid=4242, mem_mib=6000, sm_util=60.0)],
                                   foreign_util=60.0)]


def test_throttling_and_foreign_gpu_processes_reach_the_marks(tmp_path):
    from rigbench.bench.stored import run_stored_suite
    from rigbench.bench.suite import BenchConfig

    gpu = FakeGpu()
    db = f"sqlite:///{tmp_path}/g.db"
    with fakeserver() as (url, _proc):
        cfg = BenchConfig(url=url, model="ok", scenarios=["short_ttft", "decode"], repeats=3, short_prompt=16,
                          decode_output=32)
        run_id, status, _, rows, suite = run_stored_suite(cfg, db, gpu=gpu)
    assert status == "done" and gpu.reads >= 2
    for name in ("short_ttft", "decode"):
        marks = " | ".join(rows[name]["disturbed"])
        assert "others used 60% of GPU 0" in marks and "4242" in marks
        assert "GPU 0 throttled: hw_thermal in 100% of samples" in marks
    g = suite.machine.gpus[0]
    assert g.foreign_pids == [4242] and g.throttled == {"hw_thermal": 1.0} and g.sm_clock_mhz == 1400
    rep = build(store.connect(db), [f"run:{run_id}"])
    dec = next(r for r in rep.speed if r.metric == "decode_tok_s")
    assert any("throttled" in m for m in next(iter(dec.cells.values())).disturbed)
    assert any("disturbed?" in n and "GPU 0" in n for n in rep.notes)
    assert rep.load is not None and any(s.kind == "others' GPU 0 %" and set(s.y) == {60.0} for s in rep.load.series)


def test_a_gpu_at_its_power_cap_alone_is_not_disturbed():
    s = [monitor.Sample(t=float(i), dt=1.0, cpu=0.1, own_cpu=0.1, others_cpu=0.0, steal=0.0, load_per_cpu=0.1,
                        mem_available=0.5, swap_used=0.0,
                        gpus=[monitor.GpuReading(index=0, util=99, throttle=["sw_power_cap"])]) for i in range(1, 6)]
    assert monitor.summarize(s, 0, 6).disturbed == []


# ---- verdicts with spreads ---------------------------------------------------------------------------

def _row(a: Cell, b: Cell) -> SpeedRow:
    return SpeedRow(metric="decode_tok_s", label="decode, one stream", unit="tok/s", higher_is_better=True,
                    cells={"A": a, "B": b})


def test_a_win_needs_separate_spreads_and_no_disturbed_figure():
    apart = _row(Cell(measured=48.0, spread=spread([47, 48, 49])), Cell(measured=30.0, spread=spread([29, 30, 31])))
    assert speed_verdict(apart).startswith("decode, one stream: A wins, 48.0 tok/s against B's 30.0 (1.60x, measured")
    close = _row(Cell(measured=48.0, spread=spread([40, 48, 55])), Cell(measured=45.0, spread=spread([41, 45, 50])))
    assert speed_verdict(close).startswith("decode, one stream: inconclusive (overlapping spreads")
    once = _row(Cell(measured=48.0, spread=None), Cell(measured=6.1, spread=None))
    assert speed_verdict(once).startswith("decode, one stream: inconclusive (one measurement")
    marked = _row(Cell(measured=48.3, spread=spread([48, 48.3, 49])),
                  Cell(measured=6.1, spread=spread([6, 6.1, 6.3]), disturbed=["others used 80% of the CPU"]))
    assert speed_verdict(marked).startswith("decode, one stream: inconclusive (B disturbed?")
    assert " A wins" in speed_verdict(marked, accept_disturbed=True)
    assert Spread(median=1, low=0, high=2, n=3).overlaps(Spread(median=2, low=2, high=3, n=3))


def test_measured_beyond_twice_the_prediction_is_marked():
    assert monitor.ratio_mark(6.1, 25.0) == "measured/predicted 0.24x (beyond 2x)"
    assert monitor.ratio_mark(48.3, 25.0) is None
    assert monitor.ratio_mark(60.0, 25.0).startswith("measured/predicted 2.40x")


# ---- the real engine, quiet and beside a CPU hog -----------------------------------------------------

def _bench(url: str, db: str) -> dict:
    p = subprocess.run([*RB, "bench", "--url", url, "--quick", "--scenarios", "short_ttft,decode", "--repeats", "3",
                        "--db", db, "--json"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


@pytest.mark.llama
def test_a_cpu_hog_marks_the_figures_disturbed_and_the_verdict_inconclusive(llama_server, qwen_gguf, tmp_path):
    from rigbench.engines import llamacpp
    from rigbench.engines.options import parse_llama_args

    db = f"sqlite:///{tmp_path}/h.db"
    limit = monitor.Limits().cpu_share
    with cpu_lock():
        spec = llamacpp.launch_spec(parse_llama_args(["-m", str(qwen_gguf), "-c", "2048", "-np", "1"]), llama_server)
        server = llamacpp.start(spec, tmp_path / "s.log", timeout=180)
        try:
            # the machine may be shared: wait (a while) for a quiet moment before the quiet run
            deadline, before = time.monotonic() + 120, 1.0
            while time.monotonic() < deadline and (before := others_now()) > limit / 2:
                time.sleep(5)
            quiet = _bench(server.url, db)
            with hogs(2 * (os.cpu_count() or 1)):
                time.sleep(1)
                loud = _bench(server.url, db)
        finally:
            server.stop()
    for name in ("short_ttft", "decode"):
        row = loud["scenarios"][name]
        assert row["others_cpu"] > limit and any("others used" in m for m in row["disturbed"]), row
    p = subprocess.run([*RB, "report", f"run:{quiet['run']}", f"run:{loud['run']}", "--db", db, "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout)
    loud_name = rep["candidates"][1]
    for metric in ("ttft_short_ms", "decode_tok_s"):
        row = next(r for r in rep["speed"] if r["metric"] == metric)
        assert row["cells"][loud_name]["disturbed"]
        assert any(v.startswith(f"{row['label']}: inconclusive ({loud_name} disturbed?") for v in rep["verdict"])
    seen = [quiet["scenarios"][n]["others_cpu"] for n in ("short_ttft", "decode")]
    if max(seen) > limit:    # the marks are right (others were at work), but there was no quiet run to show
        pytest.skip(f"no quiet moment on this shared machine: others used {before:.0%} of the CPU before the quiet "
                    f"run and {max(seen):.0%} during it (limit {limit:.0%}); the hog half passed")
    assert all(not quiet["scenarios"][n]["disturbed"] for n in ("short_ttft", "decode"))
    assert all(not row["cells"][rep["candidates"][0]]["disturbed"] for row in rep["speed"])
