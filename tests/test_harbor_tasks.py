"""The Terminal-Bench 2.0 / Harbor task contract, for real: task.toml's fields as Harbor reads them, the
bubblewrap root overlay running Dockerfiles with any WORKDIR, prebuilt images in Docker, the network policy
per phase, outcomes that say whose fault it was, what --agent-cmd is given, and published datasets."""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from rigbench import store
from rigbench.sandbox import bwrap_available, docker_available
from rigbench.tasks import check as check_mod
from rigbench.tasks import datasets, environment, formats, runner
from tests.conftest import make_task

needs_bwrap = pytest.mark.skipif(bwrap_available() is not None, reason=f"no bubblewrap sandbox: {bwrap_available()}")
needs_docker = pytest.mark.skipif(docker_available() is not None, reason=f"no Docker sandbox: {docker_available()}")
KINDS = [pytest.param("bwrap", marks=needs_bwrap), pytest.param("docker", marks=needs_docker)]
STARTER = formats.starter_suite()
CONTRACT = ["inventory-total", "revert-bad-commit", "greet-script", "tb1-word-count", "render-config"]


def work_folder() -> Path:
    d = Path(tempfile.mkdtemp(prefix="rigbench-test-"))
    d.chmod(0o711)
    return d


def sub(tmp_path: Path, name: str) -> Path:
    """A fresh folder for one more run (its own store)."""
    (tmp_path / name).mkdir()
    return tmp_path / name


def run(tasks: list[formats.Task], tmp_path: Path, **cfg) -> tuple[list[runner.TaskOutcome], object, int]:
    db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    rid = store.new_run(db, "eval")
    out = runner.run_eval(tasks, runner.EvalConfig(workdir=work_folder(), **cfg), db, rid)
    return out, db, rid


# ---- task.toml as Harbor reads it ---------------------------------------------------------------------

def test_task_toml_fields_and_harbor_defaults(tmp_path):
    d = make_task(tmp_path, "fields", environment='docker_image = "org/img:1"\nbuild_timeout_sec = 90\n'
                  'allow_internet = false\ncpus = 2\nmemory = "2G"\nstorage = "512M"\n')
    t = formats.load_task(d)
    assert (t.docker_image, t.build_timeout_s, t.allow_internet, t.cpus, t.memory_mb, t.storage_mb) == \
        ("org/img:1", 90.0, False, 2.0, 2048, 512)
    assert t.storage_declared
    t2 = formats.load_task(make_task(tmp_path, "mb", environment="memory_mb = 1536\nstorage_mb = 10240\n"))
    assert (t2.memory_mb, t2.storage_mb) == (1536, 10240)
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "task.toml").write_text("")
    (tmp_path / "bare" / "instruction.md").write_text("x")
    t3 = formats.load_task(tmp_path / "bare")
    # Harbor's EnvironmentConfig / VerifierConfig defaults
    assert (t3.allow_internet, t3.verifier_timeout_s, t3.build_timeout_s, t3.cpus, t3.memory_mb, t3.docker_image) == \
        (True, 600.0, 600.0, 1.0, 2048, None)
    with pytest.raises(formats.TaskFormatError, match="is not a size"):
        formats.load_task(make_task(tmp_path, "bad", environment='memory = "lots"\n'))


def test_network_policy_follows_the_task_unless_overridden(tmp_path):
    on = formats.load_task(make_task(tmp_path, "on"))
    off = formats.load_task(make_task(tmp_path, "off", environment="allow_internet = false\n"))
    cfg = runner.EvalConfig()
    assert runner.network_policy(on, cfg) == {"agent": True, "verifier": True}
    assert runner.network_policy(off, cfg) == {"agent": False, "verifier": False}
    assert runner.network_policy(on, runner.EvalConfig(agent_network="off")) == {"agent": False, "verifier": True}
    assert runner.network_policy(off, runner.EvalConfig(verifier_network="on")) == {"agent": False, "verifier": True}


def test_dockerfile_requirements_and_the_hosts_packages(tmp_path):
    df = ("FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends git \\\n"
          "    && rm -rf /var/lib/apt/lists/*\nWORKDIR /usr/src/proj\nCOPY a.txt b.txt /opt/data/\nCOPY c.txt ./\n")
    t = formats.load_task(make_task(tmp_path, "req", dockerfile=df))
    req = environment.requirements(t)
    assert req.workdir == "/usr/src/proj" and req.apt == ["git"] and not req.fetches
    assert req.writable == ["/usr/src/proj", "/opt/data"]
    assert environment.unsupported_reason(req) is None            # the host has git (dpkg-query)
    absent = environment.Requirements(apt=["git", "rigbench-no-such-package"])
    assert environment.unsupported_reason(absent) == "apt packages not on this host: rigbench-no-such-package"
    assert "installs or fetches" in environment.unsupported_reason(environment.Requirements(fetches=["curl x | sh"]))
    pinned = environment.Requirements(pip=["pip==0.0.1"])
    assert environment.unsupported_reason(pinned) == "python packages not on this host: pip==0.0.1"
    assert environment._segments("a && b 'c && d'; e") == ["a", "b 'c && d'", "e"]


def test_summary_counts_only_what_the_agent_can_be_blamed_for():
    outs = [runner.TaskOutcome(task=str(i), status=s, wall_s=1) for i, s in
            enumerate(["success", "failure", "timeout", "error", "error", "success"])]
    s = runner.Summary.of(outs)
    assert (s.tasks, s.scored, s.solved, s.errors, s.pass_rate) == (6, 4, 2, 2, 0.5)
    assert runner.Summary.of([outs[3]]).pass_rate is None


# ---- the starter tasks that exercise the contract -------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("agent,want", [("oracle", "success"), ("noop", "failure")])
def test_contract_starter_tasks_oracle_passes_noop_fails(tmp_path, kind, agent, want):
    """A WORKDIR outside /app (/srv, /workspace, /root, /usr/src), a RUN step that builds a git repository
    (and an apt-get install the host/image already has), reward.json, [verifier] env, a TB1 task, and
    memory in "2G", "1G", "512M" and _mb forms (storage forms are in the unit test above: a task that
    declares storage is refused by a Docker daemon that cannot enforce it, vfs here)."""
    tasks = formats.load_dataset(STARTER, names=CONTRACT)
    out, db, rid = run(tasks, tmp_path, agent=agent, sandbox=kind, parallel=2)
    assert {o.task: o.status for o in out} == {t: want for t in CONTRACT}, [(o.task, o.detail) for o in out]
    notes = [e["data"] for e in store.task_events(db, rid) if e["kind"] == "note" and "sandbox" in e["data"]]
    assert {n["sandbox"] for n in notes} == {kind}
    assert {n["workdir"] for n in notes} >= {"/srv/inventory", "/usr/src/calc", "/workspace", "/root/project"}
    if agent == "oracle":
        rewards = [e["data"] for e in store.task_events(db, rid) if e["kind"] == "verifier"]
        assert all(r["reward"] == 1.0 for r in rewards)


def test_tasks_check_lists_requirements_and_what_runs_here(run_cli):
    r = run_cli("tasks", "--check", "--json", "--task", "revert-bad-commit", "--task", "tb1-word-count")
    import json

    rows = {x["task"]: x for x in json.loads(r.stdout)["tasks"]}
    calc = rows["revert-bad-commit"]
    assert calc["workdir"] == "/usr/src/calc" and calc["needs"] == ["apt:git", "apt:python3"]
    assert calc["memory_mb"] == 1024 and calc["allow_internet"] is False
    assert rows["tb1-word-count"]["format"] == "tb1"
    want_bwrap = "yes" if bwrap_available() is None else f"no: {bwrap_available()}"
    assert calc["bwrap"] == want_bwrap
    assert calc["docker"].startswith("yes" if docker_available() is None else "no:")


@needs_bwrap
def test_tasks_check_says_a_task_needs_docker_and_why(tmp_path):
    t = formats.load_task(make_task(tmp_path, "needs", dockerfile="FROM ubuntu:24.04\n"
                                    "RUN apt-get update && apt-get install -y rigbench-no-such-package\n"))
    c = check_mod.check(t, None, "no Docker daemon is running")
    assert c.bwrap == "no: apt packages not on this host: rigbench-no-such-package (needs Docker)"
    assert c.docker == "no: no Docker daemon is running"


# ---- whose fault it was ---------------------------------------------------------------------------------

PUBLISHED_STYLE = """\
#!/bin/bash
# as published TB2 tasks do: fetch the test runner, run pytest through it, write 0 when that fails
apt-get update
apt-get install -y curl
curl -LsSf https://astral.sh/uv/0.9.5/install.sh | sh
source $HOME/.local/bin/env
uvx -p 3.13 -w pytest==8.4.1 pytest /tests/test_outputs.py -rA
if [ $? -eq 0 ]; then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi
"""


@pytest.mark.parametrize("kind", KINDS)
def test_a_verifier_that_cannot_run_is_an_error_with_its_reason_not_a_failure(tmp_path, kind):
    task = formats.load_task(make_task(tmp_path, "published-style", PUBLISHED_STYLE, solve="true\n"))
    out, db, rid = run([task], tmp_path, agent="oracle", sandbox=kind, verifier_network="off")
    o = out[0]
    assert (o.status, o.reward) == ("error", None), o.detail
    assert "verifier needs the network" in o.detail and "--verifier-network on" in o.detail
    # with the network on (here there is no route out: curl fails, then uvx is missing), still an error
    missing = formats.load_task(make_task(tmp_path, "no-uvx", "uvx -p 3.13 pytest /tests\n"
                                          "echo 0 > /logs/verifier/reward.txt\n"))
    out, _, _ = run([missing], sub(tmp_path, "2"), agent="oracle",
                    sandbox=kind)
    assert out[0].status == "error" and "its script calls uvx" in out[0].detail, out[0].detail
    # a verifier that ran and said no stays a failure
    said_no = formats.load_task(make_task(tmp_path, "said-no", "echo 0 > /logs/verifier/reward.txt\n"))
    out, _, _ = run([said_no], sub(tmp_path, "3"), agent="oracle",
                    sandbox=kind)
    assert (out[0].status, out[0].reward) == ("failure", 0.0)


@needs_bwrap
def test_errors_are_retried_and_not_counted(tmp_path):
    task = formats.load_task(make_task(tmp_path, "flaky-verifier", "echo 'no reward written'\n"))
    out, db, rid = run([task], tmp_path, agent="noop", retry_errors=2)
    assert out[0].status == "error" and "wrote no reward" in out[0].detail
    attempts = [r for r in store.task_rows(db, rid, final_only=False) if r["task"] == "flaky-verifier"]
    assert len(attempts) == 3
    assert runner.Summary.of(out).pass_rate is None and runner.Summary.of(out).errors == 1


@needs_bwrap
def test_the_engine_dying_is_an_error_not_the_agents_failure(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # nothing listens there now
    task = formats.load_task(make_task(tmp_path, "engine-gone"))
    out, _, _ = run([task], tmp_path, agent="builtin", url=f"http://127.0.0.1:{port}", time_limit_s=30)
    assert out[0].status == "error" and out[0].detail.startswith("engine died:"), out[0].detail


# ---- the network, per phase ------------------------------------------------------------------------------

@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                c.sendall(b"hello\n")
                c.close()
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    yield srv.getsockname()[1]
    stop.set()
    th.join(2)
    srv.close()


@needs_bwrap
def test_bwrap_verifier_and_agent_networks_follow_the_policy(tmp_path, listener):
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{listener} && head -1 <&3"
    test_sh = f"if {probe} | grep -q hello; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n"
    solve = f"if {probe} | grep -q hello; then echo reached > /app/agent-net; fi; true\n"
    task = formats.load_task(make_task(tmp_path, "net", test_sh, solve=solve))
    on, db, rid = run([task], tmp_path, agent="oracle")                      # Harbor's default: allow_internet
    assert on[0].status == "success"
    off, _, _ = run([task], sub(tmp_path, "off"), agent="oracle",
                    verifier_network="off")
    assert off[0].status == "failure"
    # the oracle's command runs under the agent's policy: on by default, off when asked
    task_check = formats.load_task(make_task(tmp_path, "agent-net", "test -f /app/agent-net && echo 1 > "
                                             "/logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt\n",
                                             solve=solve))
    a_on, _, _ = run([task_check], sub(tmp_path, "a"), agent="oracle")
    a_off, _, _ = run([task_check], sub(tmp_path, "b"), agent="oracle",
                      agent_network="off")
    assert (a_on[0].status, a_off[0].status) == ("success", "failure")


# ---- external agents --------------------------------------------------------------------------------------

@needs_bwrap
def test_agent_cmd_talks_to_the_engine_through_its_own_gateway_session(tmp_path):
    """--agent-cmd gets a recording gateway session (OpenAI-style and Anthropic-style), never the engine itself;
    a Claude Code command also gets its profile's settings (IS_SANDBOX for --dangerously-skip-permissions as
    root)."""
    task = formats.load_task(make_task(tmp_path, "env"))
    cmd = "env | grep -E '^(OPENAI|ANTHROPIC|IS_SANDBOX)' | sort; true claude"
    out, db, rid = run([task], tmp_path, agent="cmd", agent_cmd=cmd,
                       url="http://127.0.0.1:9/v1", model="qwen-coder", api_key="sk-local")
    output = next(e["data"]["output"] for e in store.task_events(db, rid) if e["kind"] == "tool_output")
    env = dict(line.split("=", 1) for line in output.split())
    base = env["ANTHROPIC_BASE_URL"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/t/[\w-]+", base), base
    assert env["OPENAI_BASE_URL"] == env["OPENAI_API_BASE"] == base + "/v1"
    # the key reaches the agent; the stored trace has it redacted
    assert env["OPENAI_API_KEY"] == env["ANTHROPIC_AUTH_TOKEN"] == "[REDACTED]"
    assert env["OPENAI_MODEL"] == env["ANTHROPIC_MODEL"] == "qwen-coder"
    assert env["IS_SANDBOX"] == "1"
    note = next(e["data"] for e in store.task_events(db, rid) if e["kind"] == "note")
    assert note["gateway"] == base and note["agent_profile"] == "claude-code"


# ---- prebuilt images --------------------------------------------------------------------------------------

@needs_docker
def test_docker_uses_the_tasks_image_and_builds_only_when_asked(tmp_path):
    image = "rigbench-test-prebuilt:1"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN echo prebuilt > /marker\nWORKDIR /app\n")
    assert subprocess.run(["docker", "build", "-q", "-t", image, str(ctx)], capture_output=True).returncode == 0
    try:
        # the Dockerfile would fail: the image the task names is used instead, as Harbor does
        d = make_task(tmp_path, "prebuilt", "grep -q prebuilt /marker && echo 1 > /logs/verifier/reward.txt\n",
                      dockerfile="FROM debian:bookworm-slim\nRUN exit 3\n",
                      environment=f'docker_image = "{image}"\nallow_internet = false\n')
        task = formats.load_task(d)
        out, db, rid = run([task], tmp_path, agent="oracle", sandbox="docker")
        assert out[0].status == "success", out[0].detail
        note = next(e["data"] for e in store.task_events(db, rid) if e["kind"] == "note")
        assert f"image {image} (already loaded)" in note["notes"]
        built, _, _ = run([task], sub(tmp_path, "b"), agent="oracle",
                          sandbox="docker", build=True)
        assert built[0].status == "error" and "docker build failed" in built[0].detail
        gone = formats.load_task(make_task(tmp_path, "gone", environment='docker_image = "rigbench-no-such:0"\n'))
        out, _, _ = run([gone], sub(tmp_path, "c"), agent="oracle",
                        sandbox="docker")
        assert out[0].status == "error" and "image not found: rigbench-no-such:0" in out[0].detail
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


# ---- datasets -----------------------------------------------------------------------------------------------

def _repo_of(folder: Path, dest: Path) -> str:
    """A git repository holding `folder`'s tasks; returns its commit."""
    subprocess.run(["cp", "-r", str(folder), str(dest)], check=True)
    git = ["git", "-C", str(dest), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "tasks"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_a_dataset_is_cloned_once_cached_and_pinned(tmp_path, monkeypatch):
    monkeypatch.setenv("RIGBENCH_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "published"
    (src / "tasks").mkdir(parents=True)
    make_task(src / "tasks", "hello")
    commit = _repo_of(src, tmp_path / "repo")
    ds = datasets.fetch("demo@1", url=str(tmp_path / "repo"))
    assert ds.commit == commit and ds.path == tmp_path / "cache" / "datasets" / "demo@1" / "tasks"
    assert [t.name for t in formats.load_dataset(ds.path)] == ["hello"]
    subprocess.run(["rm", "-rf", str(tmp_path / "repo")], check=True)       # the source is gone: the cache serves
    again = datasets.fetch("demo@1", url=str(tmp_path / "repo"))
    assert again.commit == commit and again.record() == {"name": "demo@1", "url": str(tmp_path / "repo"),
                                                           "commit": commit}


def test_a_dataset_offline_is_a_one_line_error(tmp_path, run_cli):
    r = run_cli("eval", "--dataset", "terminal-bench@2.0", "--agent", "oracle", "--db",
                f"sqlite:///{tmp_path / 's.db'}", ok=False, env={"RIGBENCH_CACHE": str(tmp_path / "cache")})
    if r.returncode == 0:
        pytest.skip("github.com is reachable here: the published set was fetched")
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "cannot fetch terminal-bench@2.0 from https://github.com/laude-institute/" \
        "terminal-bench-2.git" in err and "--tasks DIR" in err, err
    assert "Traceback" not in r.stderr
    r = run_cli("tasks", "--dataset", "nothing@0", ok=False)
    assert r.returncode != 0 and "unknown dataset 'nothing@0'" in r.stderr


def test_the_run_record_pins_the_datasets_commit(tmp_path, monkeypatch):
    src = tmp_path / "published"
    src.mkdir()
    make_task(src, "hello")
    commit = _repo_of(src, tmp_path / "repo")
    monkeypatch.setenv("RIGBENCH_CACHE", str(tmp_path / "cache"))
    ds = datasets.fetch("pinned@1", url=str(tmp_path / "repo"))
    db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    rid = runner.new_run(db, runner.EvalConfig(agent="noop"), ds.path, None, None, dataset=ds.record())
    assert store.get_run(db, rid)["config"]["dataset"] == {"name": "pinned@1", "url": str(tmp_path / "repo"),
                                                            "commit": commit}

