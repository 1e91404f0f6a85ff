"""Every agent an eval runs talks to the engine through the recording gateway: its profile is detected or named,
the server's context is checked against the agent's first request before a run is stored, and a request the
engine refuses or answers oddly is the harness's fault (`error` with the reason), never the model's `failure`.
Against a real llama-server (the embedded model at a small context) and rigbench's fake OpenAI server."""

from __future__ import annotations

import json
import shlex

import pytest

from rigbench import store
from rigbench.plan.speed import AgentProfile
from rigbench.sandbox import bwrap_available, docker_available
from tests.conftest import fakeserver, make_task

pytestmark = pytest.mark.skipif(bool(bwrap_available()), reason=str(bwrap_available()))

# an agent written for this test: one streamed chat request of ~N tokens to the endpoint it is given, reading
# only the SSE lines of the reply (as most agents do), then exits
STREAMING_AGENT = r"""
import json, os, sys, urllib.request
words = int(sys.argv[1])
body = {"model": os.environ["OPENAI_MODEL"], "stream": True, "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello " * words}]}
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json", "Authorization": "Bearer x"})
try:
    with urllib.request.urlopen(req, timeout=120) as r:
        text = "".join(json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
                       for line in r.read().decode().splitlines()
                       if line.startswith("data:") and line[5:].strip() != "[DONE]"
                       and json.loads(line[5:]).get("choices"))
    print("reply:", repr(text))
except Exception as e:
    print("agent saw:", e)
"""


def _agent_cmd(words: int) -> str:
    return f"python3 -c {shlex.quote(STREAMING_AGENT)} {words}"


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """The embedded model at a 4,096-token context (too small for any real agent)."""
    from rigbench.engines import llamacpp
    from rigbench.engines.launch import embedded_launch

    log = tmp_path_factory.mktemp("srv") / "llama-server.log"
    server = llamacpp.start(embedded_launch(4096), log, timeout=180)
    try:
        yield server.url
    finally:
        server.stop()


def _tasks(tmp_path):
    root = tmp_path / "tasks"
    make_task(root, "t1", "test -f /app/done && echo 1 > /logs/verifier/reward.txt || "
                          "echo 0 > /logs/verifier/reward.txt\n")
    return root


def test_profiles_are_detected_from_the_command_or_named():
    assert AgentProfile.detect('claude -p "$TASK_INSTRUCTION" --dangerously-skip-permissions') == "claude-code"
    assert AgentProfile.detect("/opt/rigbench/agents/mini-swe-agent/bin/mini -y -t x") == "mini-swe-agent"
    assert AgentProfile.detect("aider --message x") == "aider"
    assert AgentProfile.detect("python3 my_agent.py") is None
    assert AgentProfile.named("claude-code").suggested_context >= 16384


def test_an_agents_own_settings_follow_the_server_and_the_eval():
    """Claude Code is told the server's context, and a reply limit only where eval was given one."""
    from rigbench.tasks.formats import Task
    from rigbench.tasks.runner import EvalConfig, agent_env

    task = Task.model_construct(instruction="do it")
    cfg = EvalConfig(agent="cmd", agent_cmd="claude -p x", model="m", agent_profile="claude-code")
    env = agent_env(task, cfg, "http://127.0.0.1:1/t/abc", n_ctx=32768)
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "32768" and env["ANTHROPIC_BASE_URL"].endswith("/t/abc")
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS" not in env and env["IS_SANDBOX"] == "1"
    env = agent_env(task, cfg.model_copy(update={"max_response_tokens": 256}), "http://127.0.0.1:1/t/abc")
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "256" and "CLAUDE_CODE_MAX_CONTEXT_TOKENS" not in env


def test_the_preflight_refuses_a_context_the_agent_cannot_start_in(run_cli, small_server, tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    r = run_cli("eval", "--url", small_server, "--tasks", str(_tasks(tmp_path)), "--db", db,
                "--agent-cmd", 'claude -p "$TASK_INSTRUCTION"', ok=False)
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "server's context (4,096 tokens)" in line and "claude-code" in line
    assert "rigbench serve -c 32768" in line
    assert json.loads(run_cli("runs", "--db", db, "--json").stdout) == []      # nothing stored, nothing lost


def test_a_prompt_over_the_context_is_an_error_with_the_reason(run_cli, small_server, tmp_path):
    """The agent (profile named: its first request fits the preflight) sends a prompt of ~6,000 tokens to a
    4,096-token server: llama-server refuses it; the task is not solved, and the run says why (`error`)."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    d = json.loads(run_cli("eval", "--url", small_server, "--tasks", str(_tasks(tmp_path)), "--db", db, "--json",
                           "--agent-cmd", _agent_cmd(6000), "--agent-profile", "mini-swe-agent").stdout)
    [t] = d["tasks"]
    assert t["status"] == "error", t
    assert t["detail"].startswith("request of ") and "exceeds the server's 4,096-token context" in t["detail"]
    turns = [e["data"] for e in store.task_events(store.connect(db), d["run"]) if e["kind"] == "turn"]
    assert [x["status"] for x in turns] == [400] and turns[0]["fault"] == t["detail"]


def test_a_json_body_to_a_streamed_request(run_cli, tmp_path):
    """A server answering a streamed request with one JSON body: the built-in agent reads it (its verdict is the
    verifier's); an agent that reads only SSE gets nothing, and the run says why (`error`), not `failure`."""
    with fakeserver("--ttft-ms", "1", "--interval-ms", "1") as (url, _):
        db = f"sqlite:///{tmp_path / 'r.db'}"
        root = tmp_path / "tasks"
        make_task(root, "needs-a-file", "test -f /app/done && echo 1 > /logs/verifier/reward.txt || "
                                        "echo 0 > /logs/verifier/reward.txt\n")
        common = ("--url", url, "--model", "json", "--tasks", str(root), "--db", db, "--json")
        built_in = json.loads(run_cli("eval", *common, "--max-steps", "2").stdout)["tasks"][0]
        assert built_in["status"] == "failure" and built_in["turns"] >= 1 and built_in["tokens_out"] > 0
        sse = json.loads(run_cli("eval", *common, "--agent-cmd", _agent_cmd(5)).stdout)["tasks"][0]
        assert sse["status"] == "error", sse
        assert sse["detail"].startswith("the engine answered a streamed request with one JSON body")


def test_an_agent_that_cannot_start_is_an_error_not_the_models_failure(run_cli, tmp_path):
    with fakeserver() as (url, _):
        db = f"sqlite:///{tmp_path / 'r.db'}"
        d = json.loads(run_cli("eval", "--url", url, "--tasks", str(_tasks(tmp_path)), "--db", db, "--json",
                               "--agent-cmd", "no-such-agent-binary -p x").stdout)
    [t] = d["tasks"]
    assert t["status"] == "error" and t["turns"] == 0
    assert t["detail"].startswith("the agent command exited with code 127") and "never asked the model" in t["detail"]


# an agent that also tries the engine itself, past the gateway: the container must not reach it
PROBE = r"""
import os, socket, sys
engine = int(sys.argv[1])
try:
    socket.create_connection(("127.0.0.1", engine), timeout=3).close()
    print("engine reachable")
except OSError as e:
    print("engine unreachable:", e)
"""


@pytest.mark.skipif(docker_available() is not None, reason=f"no Docker sandbox: {docker_available()}")
def test_an_agent_in_a_container_without_network_reaches_only_the_gateway(run_cli, tmp_path):
    """Docker, a task without internet (`--network none`): the agent's requests reach the engine through the
    gateway's port relayed into the container, and are recorded; the engine's own port is not reachable."""
    with fakeserver("--ttft-ms", "1", "--interval-ms", "1") as (url, _):
        db = f"sqlite:///{tmp_path / 'r.db'}"
        root = tmp_path / "tasks"
        make_task(root, "boxed", "test -f /app/done && echo 1 > /logs/verifier/reward.txt || "
                                 "echo 0 > /logs/verifier/reward.txt\n",
                  dockerfile="FROM debian:bookworm-slim\nWORKDIR /app\n", environment="allow_internet = false\n")
        port = url.rsplit(":", 1)[1]
        cmd = (f"python3 -c {shlex.quote(PROBE)} {port}; python3 -c {shlex.quote(STREAMING_AGENT)} 5 && "
               f"touch /app/done")
        d = json.loads(run_cli("eval", "--url", url, "--model", "ok", "--tasks", str(root), "--db", db, "--json",
                               "--sandbox", "docker", "--agent-cmd", cmd, "--agent-profile", "mini-swe-agent",
                               timeout=600).stdout)
    [t] = d["tasks"]
    events = store.task_events(store.connect(db), d["run"])
    output = next(e["data"]["output"] for e in events if e["kind"] == "tool_output")
    assert "engine unreachable" in output and "reply: 't0 t1 t2 t3 t4 t5 t6 t7 '" in output, output
    assert t["status"] == "success" and t["turns"] == 1 and t["tokens_out"] == 8
    note = next(e["data"] for e in events if e["kind"] == "note")
    assert note["sandbox"] == "docker" and note["network"]["agent"] is False


def test_advise_predicts_each_agents_own_tasks():
    """Claude Code's first request (its profile) is nearly twice the built-in agent's: the same model on the same
    rig takes longer per task for it, and the ranking says which agent it predicted for."""
    from rigbench import hardware
    from rigbench.plan import advise as advise_mod

    rig = hardware.from_catalog("rtx4090")
    rows = advise_mod.advise(rig, 32768, models=["qwen3.6-35b-a3b"])[:2]
    builtin, claude = (advise_mod.rank(rows, rig, 1200, None, AgentProfile.named(n))
                       for n in ("builtin", "claude-code"))
    assert claude.distribution.startswith("claude-code agent:") and builtin.distribution.startswith("builtin agent:")
    by = {(a.model, a.quant, a.engine): a.task_s_median for a in builtin.scored + builtin.unscored}
    for a in claude.scored + claude.unscored:
        assert a.task_s_median > by[(a.model, a.quant, a.engine)]
