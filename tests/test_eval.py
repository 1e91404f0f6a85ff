"""Tasks, the bubblewrap sandbox, agents, traces and resume, run for real."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rigbench import store
from rigbench.agent.parse import parse_content
from rigbench.sandbox import BwrapSandbox, TaskUnsupported, bwrap_available, docker_available
from rigbench.tasks import formats, runner
from rigbench.tasks.environment import apply_dockerfile
from tests.conftest import make_task

needs_bwrap = pytest.mark.skipif(bwrap_available() is not None, reason=f"no sandbox: {bwrap_available()}")
STARTER = formats.starter_suite()


def test_starter_suite_is_terminal_bench_2_format_and_big_enough():
    tasks = formats.load_dataset(STARTER)
    assert len([t for t in tasks if t.mode == "agent"]) >= 12
    assert {t.name for t in tasks if "setup-c" in t.tags} == {"gauntlet-lru-cache", "gauntlet-interval-bugs",
                                                               "gauntlet-train-bird"}
    for t in tasks:
        verifier = t.tests_dir / "test.sh" if t.format == "tb2" else t.path / "run-tests.sh"
        assert t.solution and verifier.is_file() and t.dockerfile
    assert [t.name for t in tasks if t.format == "tb1"] == ["tb1-word-count"]   # the rest are TB2 / Harbor
    assert [t.name for t in formats.load_dataset(STARTER, names=["fix-*"])] == ["fix-backup-script",
                                                                             "fix-failing-test", "fix-git"]
    assert {t.name for t in formats.load_dataset(STARTER, tags=["git"])} >= {"fix-git", "merge-conflict"}


def test_reads_a_terminal_bench_1_task(tmp_path):
    d = tmp_path / "hello-tb1"
    (d / "tests").mkdir(parents=True)
    (d / "task.yaml").write_text("instruction: |\n  Write hello to /app/out.txt\nmax_agent_timeout_sec: 90\n"
                                 "max_test_timeout_sec: 30\ntags: [demo]\ndifficulty: easy\n")
    (d / "Dockerfile").write_text("FROM python:3.11\nWORKDIR /app\n")
    (d / "run-tests.sh").write_text("cd /app && grep -q hello out.txt && echo PASSED || { echo FAILED; exit 1; }\n")
    (d / "solution.sh").write_text("echo hello > /app/out.txt\n")
    t = formats.load_task(d)
    assert (t.format, t.agent_timeout_s, t.verifier_timeout_s, t.tags) == ("tb1", 90.0, 30.0, ["demo"])
    if bwrap_available() is None:
        db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
        for agent, want in (("oracle", "success"), ("noop", "failure")):
            rid = store.new_run(db, "eval")
            out = runner.run_eval([t], runner.EvalConfig(agent=agent), db, rid)
            assert out[0].status == want


def test_bad_task_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "task.toml").write_text("not = [valid")
    with pytest.raises(formats.TaskFormatError, match="not valid TOML"):
        formats.load_task(tmp_path / "t")
    with pytest.raises(formats.TaskFormatError, match="no task folder"):
        formats.load_dataset(tmp_path / "missing")


@needs_bwrap
@pytest.mark.parametrize("agent,want", [("oracle", "success"), ("noop", "failure")])
def test_oracle_passes_and_noop_fails_every_starter_task(tmp_path, agent, want):
    db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    rid = store.new_run(db, "eval")
    out = runner.run_eval(formats.load_dataset(STARTER), runner.EvalConfig(agent=agent, parallel=2), db, rid)
    assert len(out) == 20
    assert {o.task: o.status for o in out} == {o.task: want for o in out}


# ---- containment -----------------------------------------------------------------------------------

@pytest.fixture
def sandbox(tmp_path):
    task = formats.load_task(STARTER / "fix-failing-test")
    if bwrap_available():
        pytest.skip(bwrap_available())
    sb = BwrapSandbox(task.limits(), Path(tempfile.mkdtemp()))
    yield sb
    sb.close()


def test_writes_outside_the_workspace_fail_and_leave_the_host_alone(sandbox, tmp_path):
    marker = tmp_path / "host-file"
    r = sandbox.run(f"echo x > /usr/rigbench-escape; echo x > {marker}; echo x > /app/inside; echo done")
    assert "Read-only file system" in r.output and not Path("/usr/rigbench-escape").exists()
    assert not marker.exists()
    assert sandbox.run("cat /app/inside").output == "x\n"


def test_no_network(sandbox):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    r = sandbox.run(f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected")
    srv.close()
    assert "connected" not in r.output and r.exit_code != 0


def test_fork_bomb_is_contained(sandbox):
    before = len(os.listdir("/proc"))
    r = sandbox.run("f(){ f | f & }; f; sleep 1; echo survived", timeout=20)
    assert "Resource temporarily unavailable" in r.output or "retry" in r.output
    time.sleep(0.5)
    assert len(os.listdir("/proc")) < before + 50   # nothing left running on the host


def test_a_command_that_never_returns_is_killed_with_its_children(sandbox):
    t0 = time.monotonic()
    r = sandbox.run("sleep 1000 & sleep 1000", timeout=2)
    assert r.timed_out and time.monotonic() - t0 < 10
    ps = subprocess.run(["pgrep", "-f", "sleep 1000"], capture_output=True, text=True)
    assert not ps.stdout.strip()


def test_host_secrets_do_not_reach_the_sandbox(sandbox, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret-123456")
    r = sandbox.run("env; cat /proc/1/environ | tr '\\0' '\\n'; ls /root /home 2>&1")
    assert "sk-host-secret" not in r.output
    assert "No such file or directory" in r.output


def test_secrets_are_redacted_from_traces(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdef-987")
    cfg = runner.EvalConfig(api_key="sk-live-zzz999")
    data = runner.redact({"content": "key sk-live-zzz999 and tok-abcdef-987"}, runner.secrets(cfg))
    assert data["content"] == "key [REDACTED] and [REDACTED]"


def test_dockerfile_steps_that_need_a_container_skip_the_task(tmp_path):
    if bwrap_available():
        pytest.skip(bwrap_available())
    d = tmp_path / "needs-apt"
    for sub in ("environment", "tests", "solution"):
        (d / sub).mkdir(parents=True)
    (d / "task.toml").write_text("[agent]\ntimeout_sec = 10\n")
    (d / "instruction.md").write_text("x")
    # a package the host has is satisfied by the host (tests/test_harbor_tasks.py); this one it lacks
    (d / "environment" / "Dockerfile").write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y "
                                                  "rigbench-no-such-package\n")
    t = formats.load_task(d)
    sb = BwrapSandbox(t.limits(), Path(tempfile.mkdtemp()))
    with pytest.raises(TaskUnsupported, match="--sandbox docker"):
        apply_dockerfile(sb, t)
    sb.close()
    db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    rid = store.new_run(db, "eval")
    out = runner.run_eval([t], runner.EvalConfig(agent="oracle"), db, rid)
    assert out[0].status == "error" and out[0].detail.startswith("skipped:")


# ---- the agent's parsers -------------------------------------------------------------------------

def test_recovers_qwen_xml_json_and_fenced_calls_from_content():
    xml = ("I'll look.\n<tool_call>\n<function=bash>\n<parameter=command>\nls -la /app\n</parameter>\n"
           "</function>\n</tool_call>")
    assert [(c.name, c.arguments) for c in parse_content(xml)] == [("bash", {"command": "ls -la /app"})]
    js = '<tool_call>{"name": "write_file", "arguments": {"path": "/app/a.py", "content": "x=1"}}</tool_call>'
    assert parse_content(js)[0].arguments == {"path": "/app/a.py", "content": "x=1"}
    assert parse_content("Run this:\n```bash\npython3 t.py\n```")[0].arguments == {"command": "python3 t.py"}
    fenced = '```json\n{"name": "bash", "arguments": {"command": "cat /app/people.csv"}}\n```'
    assert parse_content(fenced)[0].arguments == {"command": "cat /app/people.csv"}
    assert parse_content("nothing to do") == []


# ---- end to end with the embedded model, and resume -------------------------------------------------

@needs_bwrap
def test_eval_with_a_live_model_stores_the_whole_trace(tmp_path, live_model, run_cli):
    """A multi-turn task and a single-turn one on the session's llama-server (the embedded model's own start and
    stop are test_lifetime's): two steps of 96 tokens at most (192 for the single-turn answer) keep it near half a
    minute on two cores."""
    db = f"sqlite:///{tmp_path / 'e.db'}"
    res = run_cli("eval", "--url", live_model.url, "--task", "fix-failing-test", "--task", "gauntlet-train-bird",
                  "--time-limit", "90", "--max-steps", "2", "--max-response-tokens", "96", "--db", db, "--json",
                  timeout=600)
    d = json.loads(res.stdout)
    assert [t["task"] for t in d["tasks"]] == ["fix-failing-test", "gauntlet-train-bird"]
    for t in d["tasks"]:
        assert t["status"] in ("success", "failure", "timeout") and t["turns"] >= 1 and t["tokens_out"] > 0
    events = store.task_events(store.connect(db), d["run"])
    kinds = {e["kind"] for e in events}
    assert {"request", "response", "verifier"} <= kinds
    responses = [e for e in events if e["kind"] == "response"]
    assert all(e["data"]["completion_tokens"] for e in responses)
    shown = run_cli("show", str(d["run"]), "--db", db)
    assert "verifier" in shown.stdout and "gauntlet-train-bird" in shown.stdout


@needs_bwrap
def test_killed_eval_resumes_without_rerunning_or_duplicating(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("a-quick", "b-quick", "c-slow", "d-quick"):
        make_task(suite, name, solve="sleep 30\n" if name == "c-slow" else "true\n")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    cmd = [sys.executable, "-m", "rigbench", "eval", "--tasks", str(suite), "--agent", "oracle", "--db", db, "--json"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    engine = store.connect(db)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = {r["task"]: r["status"] for r in store.task_rows(engine, 1)} if store.get_run(engine, 1) else {}
        if rows.get("c-slow") == "running":
            break
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    rows = {r["task"]: r["status"] for r in store.task_rows(engine, 1)}
    assert rows == {"a-quick": "success", "b-quick": "success", "c-slow": "running"}
    for sub in (suite / "c-slow" / "solution" / "solve.sh",):
        sub.write_text("true\n")
    res = subprocess.run([sys.executable, "-m", "rigbench", "eval", "--resume", "1", "--db", db, "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert [(t["task"], t["status"]) for t in d["tasks"]] == [(n, "success") for n in
                                                             ("a-quick", "b-quick", "c-slow", "d-quick")]
    attempts = store.task_rows(engine, 1, final_only=False)
    by_task = {}
    for r in attempts:
        by_task.setdefault(r["task"], []).append(r["status"])
    assert by_task == {"a-quick": ["success"], "b-quick": ["success"], "c-slow": ["interrupted", "success"],
                       "d-quick": ["success"]}
    ev = store.task_events(engine, 1, "a-quick")
    assert len({(e["attempt"], e["seq"]) for e in ev}) == len(ev)   # no duplicated steps


@needs_bwrap
def test_agent_cmd_runs_inside_the_sandbox_and_reaches_the_endpoint(tmp_path):
    from rigbench.engines.process import free_port

    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "rigbench.bench.fakeserver", "--port", str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        agent = ("python3 -c \"import os, urllib.request; "
                 "b = urllib.request.urlopen(os.environ['OPENAI_BASE_URL'] + '/models').read(); "
                 "open('/app/models.json', 'wb').write(b); print(os.environ['OPENAI_API_KEY'])\"; "
                 "cat /tests/test.sh 2>&1 | head -1; echo $HOSTNAME")
        db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
        rid = store.new_run(db, "eval")
        t = formats.load_task(STARTER / "fix-failing-test")
        cfg = runner.EvalConfig(agent="cmd", agent_cmd=agent, url=f"http://127.0.0.1:{port}", api_key="sk-test-777777")
        out = runner.run_eval([t], cfg, db, rid)
        assert out[0].status == "failure"       # the command did not fix the bug; the verifier says so
        ev = [e for e in store.task_events(db, rid) if e["kind"] == "tool_output"][0]["data"]
        assert ev["exit_code"] == 0, ev
        assert "[REDACTED]" in ev["output"] and "sk-test-777777" not in ev["output"]   # the key is redacted
        assert "No such file" in ev["output"]     # the tests are not in the sandbox while the agent runs
    finally:
        fake.kill()


def test_compare_two_runs_side_by_side(tmp_path, run_cli):
    if bwrap_available():
        pytest.skip(bwrap_available())
    db = f"sqlite:///{tmp_path / 'c.db'}"
    for agent in ("oracle", "noop"):
        run_cli("eval", "--agent", agent, "--task", "fix-*", "--db", db, "--json")
    d = json.loads(run_cli("compare", "1", "2", "--db", db, "--json").stdout)
    assert [(r["task"], r["status_0"], r["status_1"]) for r in d["tasks"]] == [
        (n, "success", "failure") for n in ("fix-backup-script", "fix-failing-test", "fix-git")]


needs_docker = pytest.mark.skipif(docker_available() is not None,
                                  reason="no Docker daemon here (tasks run in bubblewrap)")


@needs_docker
@pytest.mark.parametrize("agent,want", [("oracle", "success"), ("noop", "failure")])
def test_docker_built_task_oracle_passes_noop_fails(tmp_path, agent, want):
    """The task's environment/Dockerfile is built into an image (its base image must exist locally: no
    registry is reachable here, so `debian:bookworm-slim` is made with debootstrap + docker import)."""
    db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    rid = store.new_run(db, "eval")
    tasks = formats.load_dataset(STARTER, names=["fix-failing-test", "git-leak-recovery"])
    out = runner.run_eval(tasks, runner.EvalConfig(agent=agent, sandbox="docker"), db, rid)
    assert [(o.task, o.status) for o in out] == [(t.name, want) for t in tasks], [o.detail for o in out]
    note = next(e for e in store.task_events(db, rid) if e["kind"] == "note")["data"]
    assert note["sandbox"] == "docker"
