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


BUSY = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.15: pass"
SPAWNER = f"""import resource, subprocess, sys
for _ in range(8):   # short-lived busy grandchildren, each over before a sample could see it
    subprocess.run([sys.executable, "-c", "{BUSY}"])
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(ru.ru_utime + ru.ru_stime)
"""


def test_short_lived_processes_of_the_measured_tree_count_as_its_own():
    """A measured child running compilers that live a fraction of a sample's interval: their CPU still comes
    back as the measured processes' (through the reaped children's count), not as others'."""
    s = monitor.Sampler(interval=2.0, gpu=False).start()     # intervals longer than a grandchild's life
    p = subprocess.run([sys.executable, "-c", SPAWNER], capture_output=True, text=True, timeout=120)
    time.sleep(0.2)
    s.stop()
    used = float(p.stdout.split()[-1])                       # the grandchildren's CPU seconds, their parent's view
    own_s = sum(x.own_cpu * x.dt * s.ncpu for x in s.samples)
    assert used > 1.0 and own_s >= 0.8 * used, (used, own_s)


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


# ---- every measuring command samples -----------------------------------------------------------------

def test_eval_stores_its_samples_and_a_summary_per_task(tmp_path):
    from rigbench.sandbox import bwrap_available
    from tests.conftest import make_task

    if why := bwrap_available():
        pytest.skip(f"eval needs bubblewrap: {why}")
    suite = tmp_path / "suite"
    make_task(suite, "slow", solve="sleep 2\n")
    make_task(suite, "quick")
    db = f"sqlite:///{tmp_path}/e.db"
    p = subprocess.run([*RB, "eval", "--tasks", str(suite), "--agent", "oracle", "--db", db, "--json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads(p.stdout)
    m = d["machine"]
    assert m["samples"] >= 4 and set(m["tasks"]) == {"slow", "quick"} and m["tasks"]["slow"]["samples"] >= 3
    assert m["sampler_cpu_s"] >= 0 and isinstance(m["disturbed"], list)
    rows = store.run_samples(store.connect(db), d["run"])
    assert len(rows) >= m["samples"]
    assert all(0 <= r["others_cpu"] <= 1 for r in rows) and rows[-1]["t"] - rows[0]["t"] >= 2
    assert monitor.one_line(m).startswith(("machine: quiet", "disturbed? others used"))


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
    """The speed suite against the embedded model twice: quiet (holding the machine's CPU lock, retried while others
    were at work), then beside CPU hogs this test starts. The second run's figures are marked, the verdict between
    the two is inconclusive, the quiet run has no marks. Slow by nature (about 3.5 minutes on 2 cores): the speed
    suite runs in full twice, the second time at a third of the machine."""
    from rigbench.engines import llamacpp
    from rigbench.engines.launch import embedded_launch

    db = f"sqlite:///{tmp_path}/h.db"
    limit = monitor.Limits().cpu_share
    quiet, seen = None, []
    with cpu_lock(wait_s=240):
        server = llamacpp.start(embedded_launch(2048), tmp_path / "s.log", timeout=180)
        try:
            # the machine may be shared: wait (a bounded time) for a quiet moment, and run again if it was not
            for _ in range(3):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and others_now() > limit / 2:
                    time.sleep(5)
                quiet = _bench(server.url, db)
                seen.append(max(quiet["scenarios"][n]["others_cpu"] for n in ("short_ttft", "decode")))
                if not any(quiet["scenarios"][n]["disturbed"] for n in ("short_ttft", "decode")):
                    break
            with hogs(2 * (os.cpu_count() or 1)):
                time.sleep(1)
                loud = _bench(server.url, db)
        finally:
            server.stop()
    for name in ("short_ttft", "decode"):
        row = loud["scenarios"][name]
        assert row["others_cpu"] > limit and any("others used" in m for m in row["disturbed"]), row
    assert loud["machine"]["disturbed"] and loud["machine"]["others_cpu"] > limit
    p = subprocess.run([*RB, "report", f"run:{quiet['run']}", f"run:{loud['run']}", "--db", db, "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout)
    quiet_name, loud_name = rep["candidates"]
    for metric in ("ttft_short_ms", "decode_tok_s"):
        row = next(r for r in rep["speed"] if r["metric"] == metric)
        assert row["cells"][loud_name]["disturbed"]
        v = next(v for v in rep["verdict"] if v.startswith(f"{row['label']}: "))
        assert v.startswith(f"{row['label']}: inconclusive (") and f"{loud_name} disturbed?" in v, v
    if any(quiet["scenarios"][n]["disturbed"] for n in ("short_ttft", "decode")):
        # the marks are right (others were at work), but this shared machine gave no quiet run to show
        pytest.skip(f"no quiet moment on this shared machine: others used {', '.join(f'{x:.0%}' for x in seen)} of "
                    f"the CPU during {len(seen)} quiet attempts (limit {limit:.0%}); the hog half passed")
    assert all(not row["cells"][quiet_name]["disturbed"] for row in rep["speed"])


# ---- the HTML report in a real browser ---------------------------------------------------------------

def test_html_report_shows_a_badge_per_figure_and_the_machine_load_in_a_real_browser(tmp_path):
    """Two stored bench runs, one beside a (fake) neighbour on an overheating GPU: the real HTML, opened in
    headless Chromium, carries a `disturbed?` badge on exactly the figures `report --json` marks (its reasons on
    hover), `quiet` on the others, and the chart of the machine's load drawn from the stored samples."""
    from playwright.sync_api import sync_playwright

    from rigbench.bench.stored import run_stored_suite
    from rigbench.bench.suite import BenchConfig
    from tests.test_report import chromium

    exe = chromium()
    db = f"sqlite:///{tmp_path}/r.db"
    with fakeserver() as (url, _proc):
        cfg = BenchConfig(url=url, model="ok", scenarios=["short_ttft", "decode"], repeats=3, short_prompt=16,
                          decode_output=32)
        plain, *_ = run_stored_suite(cfg, db, gpu=False)
        shared, *_ = run_stored_suite(cfg, db, gpu=FakeGpu())
    p = subprocess.run([*RB, "report", f"run:{plain}", f"run:{shared}", "--db", db, "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout)
    a, b = rep["candidates"]
    # --json carries the marks per cell and the load chart's series, from the stored samples
    cells = {(r["label"], c): cell for r in rep["speed"] for c, cell in r["cells"].items()
             if cell["measured"] is not None}
    assert all(cells[(label, b)]["disturbed"] for label, c in cells if c == b)
    assert all(cell["sampled"] for cell in cells.values())
    series = {(s["name"], s["kind"]): s for s in rep["load"]["series"]}
    assert {(a, "others' CPU %"), (a, "measured CPU %"), (b, "others' CPU %"), (b, "others' GPU 0 %")} <= set(series)
    assert set(series[(b, "others' GPU 0 %")]["y"]) == {60.0} and (a, "others' GPU 0 %") not in series
    db_rows = store.run_samples(store.connect(db), shared)
    assert len(series[(b, "others' CPU %")]["y"]) == len(db_rows) >= 2

    out = tmp_path / "report.html"
    p = subprocess.run([*RB, "report", f"run:{plain}", f"run:{shared}", "--db", db, "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_function("() => document.querySelector('#chart-load svg.main-svg g.trace path')",
                               timeout=30000)
        speed = page.eval_on_selector(
            "table", "t => [...t.rows].map(r => [...r.cells].map(c => [c.innerText.trim(), [...c.querySelectorAll("
            "'.badge')].map(b => [b.className, b.title, getComputedStyle(b).backgroundColor])]))")
        load = page.eval_on_selector("#chart-load", "e => [e.querySelectorAll('g.trace').length, "
                                     "e.querySelector('.gtitle').textContent, "
                                     "[...e.querySelectorAll('.legendtext')].map(t => t.textContent)]")
        browser.close()
    assert errors == []
    header, rows = [c[0] for c in speed[0]], speed[1:]
    badges = 0
    for row in rows:
        for cand in (a, b):
            text, marks = row[header.index(f"{cand} measured")]
            cell = cells[(row[0][0], cand)]
            assert len(marks) == 1, (row[0][0], cand, marks)      # one badge per measured figure
            cls, title, colour = marks[0]
            if cell["disturbed"]:
                badges += 1
                assert cls == "badge disturbed" and text.endswith("disturbed?") and title == "; ".join(
                    cell["disturbed"]) and colour != "rgba(0, 0, 0, 0)"
            else:
                assert cls == "badge quiet" and text.endswith("quiet")
    assert badges == sum(bool(c["disturbed"]) for c in cells.values()) >= 2
    traces, title, legend = load
    assert traces == len(rep["load"]["series"]) and title == rep["load"]["title"]
    assert f"{b}: others' GPU 0 %" in legend and f"{a}: others' CPU %" in legend
