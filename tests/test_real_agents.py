"""The agents people run, for real: Claude Code (npm) and mini-swe-agent (PyPI, in a virtualenv of its own;
scripts/install_agents.sh installs both at pinned versions) work on a starter task through `eval --agent NAME`
against the embedded model in a real llama-server. Every request they make is recorded by the gateway, and the
run's token sums equal llama-server's own counters exactly; then everything downstream (show, whatif, report,
advise --run, compare) works on those runs.

The engine serves the embedded model cut to 2 of its 24 blocks (tests/conftest.py `fast_twin`): the same tokenizer
and chat template, so every request and token count is what the full model would get, but Claude Code's first
request (over 11,000 tokens of system prompt and tool definitions) prefills in seconds instead of 3.5 minutes on
two CPU cores. Its replies are noise, so the agents stop early; what is tested here is the traffic, not the work."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import pytest

from rigbench import store
from rigbench.sandbox import bwrap_available
from rigbench.tasks.runner import agents_dir

CLAUDE = shutil.which("claude")
MINI = agents_dir() / "mini-swe-agent" / "bin" / "mini"
INSTALL = "install the agents with scripts/install_agents.sh (.ci/run does)"

pytestmark = pytest.mark.skipif(bool(bwrap_available()), reason=str(bwrap_available()))
COUNTERS = ("prompt_tokens_total", "prompt_tokens_cached_total", "tokens_predicted_total")


@pytest.fixture(scope="module")
def engine(tmp_path_factory, fast_twin, llama_server):
    """The embedded model's fast twin with room for Claude Code's first request; one slot, so the counters are this
    test's; no reply longer than 160 tokens (`-n` caps what a request asks: a model of noise rarely ends on its own)."""
    from rigbench.engines import llamacpp
    from rigbench.engines.launch import EMBEDDED_NAME
    from rigbench.engines.options import parse_llama_args

    log = tmp_path_factory.mktemp("engine") / "llama-server.log"
    o = parse_llama_args(["-m", str(fast_twin), "-c", "32768", "-np", "1", "--jinja", "-n", "160"])
    server = llamacpp.start(llamacpp.launch_spec(o, llama_server, alias=EMBEDDED_NAME), log, timeout=180)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'agents.db'}"


RUNS: dict[str, int] = {}


def _counters(url: str) -> dict[str, int]:
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).text
    return {k: int(float(re.search(rf"^llamacpp:{k} (\S+)$", text, re.M)[1])) for k in COUNTERS}


def _eval(run_cli, engine: str, db: str, agent: str, steps: int, *extra: str) -> tuple[dict, list[dict], dict]:
    """One starter task by `agent`; its gateway turns and the server's counter deltas over the run."""
    before = _counters(engine)
    d = json.loads(run_cli("eval", "--url", engine, "--model", "qwen2.5-coder-0.5b", "--agent", agent,
                           "--max-steps", str(steps), "--task", "csv-to-json", "--db", db, "--json",
                           "--time-limit", "600", *extra, timeout=900).stdout)
    after = _counters(engine)
    RUNS[agent] = d["run"]
    turns = [e["data"] for e in store.task_events(store.connect(db), d["run"]) if e["kind"] == "turn"]
    return d, turns, {k: after[k] - before[k] for k in COUNTERS}


def _exact(d: dict, turns: list[dict], delta: dict[str, int]) -> None:
    model = [t for t in turns if t["api"] != "count_tokens"]
    assert model and all(t["status"] == 200 and t["usage_from"] != "none" and not t.get("client_left")
                         for t in model), model
    prompt = sum(t["prompt_tokens"] for t in model)
    cached = sum(t["cached_tokens"] for t in model)
    output = sum(t["output_tokens"] for t in model)
    assert (prompt - cached, cached, output) == (delta["prompt_tokens_total"], delta["prompt_tokens_cached_total"],
                                                 delta["tokens_predicted_total"])
    [task] = d["tasks"]
    assert (task["turns"], task["tokens_in"], task["tokens_out"]) == (len(model), prompt, output)
    assert task["status"] != "error", task["detail"]


@pytest.mark.skipif(CLAUDE is None, reason=f"Claude Code is not installed: {INSTALL}")
def test_claude_code_is_recorded_to_the_token(run_cli, engine, db):
    # its replies held to 256 tokens (CLAUDE_CODE_MAX_OUTPUT_TOKENS, set by eval): a 0.5B model may ramble
    d, turns, delta = _eval(run_cli, engine, db, "claude-code", 1, "--max-response-tokens", "256")
    assert max(t.get("prompt_tokens") or 0 for t in turns if t["api"] != "count_tokens") >= 10_000, turns
    assert any(t["api"] == "messages" and t["stream"] for t in turns)
    _exact(d, turns, delta)


@pytest.mark.skipif(not MINI.exists(), reason=f"mini-swe-agent is not installed: {INSTALL}")
def test_mini_swe_agent_is_recorded_to_the_token(run_cli, engine, db):
    d, turns, delta = _eval(run_cli, engine, db, "mini-swe-agent", 3)
    assert any(t["api"] == "chat" for t in turns)
    _exact(d, turns, delta)


@pytest.mark.parametrize("agent", ["claude-code", "mini-swe-agent"])
def test_everything_downstream_reads_an_external_agents_run(run_cli, engine, db, tmp_path, agent):
    if agent not in RUNS:
        pytest.skip(f"no {agent} run in this session ({INSTALL})")
    rid = str(RUNS[agent])
    shown = run_cli("show", rid, "--db", db).stdout
    assert "prompt tokens" in shown and "agent time" in shown
    w = json.loads(run_cli("whatif", rid, "--rig", "rtx4090", "-c", "32768", "--db", db, "--json").stdout)
    [target] = w["targets"]
    [task] = target["tasks"]
    assert task["wall_s"]["value"] > 0 and target["totals"]["prefill_s"] > 0
    rep = json.loads(run_cli("report", f"run:{rid}", "--db", db, "-o", str(tmp_path / "r.html"), "--json").stdout)
    [line] = rep["timelines"]
    kinds = {s["kind"] for s in line["segments"]}
    assert {"prefill", "decode", "verifier"} <= kinds
    assert (tmp_path / "r.html").stat().st_size > 10_000
    adv = json.loads(run_cli("advise", "--rig", "rtx4090", "--run", rid, "--db", db, "--json", timeout=600).stdout)
    assert f"stored run {rid}" in adv["distribution"]
    if agent == "mini-swe-agent":     # (Claude Code's 11,000-token prompt would take minutes more to replay)
        rep = json.loads(run_cli("replay", rid, "--url", engine, "--no-idle", "--db", db, "--json",
                                 timeout=900).stdout)
        [task] = rep["tasks"]
        recorded = [e["data"] for e in store.task_events(store.connect(db), int(rid)) if e["kind"] == "turn"]
        assert len(task["turns"]) == len(recorded)
        assert [x["prompt_tokens"] for x in task["turns"]] == [t["prompt_tokens"] for t in recorded]


def test_two_agents_compared(run_cli, db):
    if len(RUNS) < 2:
        pytest.skip(f"needs both agents' runs ({INSTALL})")
    d = json.loads(run_cli("compare", str(RUNS["claude-code"]), str(RUNS["mini-swe-agent"]), "--db", db,
                           "--json").stdout)
    [row] = d["tasks"]
    assert row["turns_0"] >= 1 and row["turns_1"] >= 1
