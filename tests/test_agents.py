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
from rigbench.sandbox import bwrap_available
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
