"""Nothing rigbench starts outlives it: SIGINT, SIGTERM and SIGHUP stop engines and runs like Ctrl-C (runs
stored as `interrupted`), and SIGKILL still takes the engine and the sandboxes with it. Real processes:
llama-server with the packaged model, bubblewrap sandboxes, a process group standing in for vLLM's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rigbench import store
from rigbench.sandbox import bwrap_available
from tests.conftest import make_task

needs_bwrap = pytest.mark.skipif(bwrap_available() is not None, reason=f"no bubblewrap sandbox: {bwrap_available()}")


def gone(pid: int) -> bool:
    """No thread of it runs (a zombie holds neither memory nor a port; a zombie leader can still have threads)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().split(")")[-1].split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return all(s in "ZX" for s in states)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def pids_with(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "--", marker], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def background(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """`rigbench ARGS &` from a non-interactive shell script (which starts it with SIGINT ignored); returns
    the shell and rigbench's pid."""
    pidf = tmp_path / "rigbench.pid"
    cmd = " ".join([sys.executable, "-m", "rigbench", *args])
    sh = subprocess.Popen(["bash", "-c", f"{cmd} > {tmp_path}/out.json 2> {tmp_path}/err.txt & echo $! > {pidf}; "
                                         f"wait"], start_new_session=True)
    pid = wait_until(lambda: pidf.exists() and pidf.read_text().strip() and int(pidf.read_text()), 30, "a pid")
    return sh, pid


def test_a_killed_rigbench_takes_the_engines_whole_process_group_with_it(tmp_path):
    """A stand-in for vLLM: a leader with children in its group. SIGKILL of the parent: the leader dies by its
    parent-death signal, the children by the watchdog."""
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from rigbench.engines.process import LaunchSpec, Server, free_port
        argv = ["bash", "-c", "sleep 301 & sleep 302 & exec -a rigbench-leader-marker sleep 303"]
        s = Server(LaunchSpec(engine="fake", argv=argv, port=free_port()), Path(sys.argv[1])).start()
        print(s.proc.pid, flush=True)
        time.sleep(600)
        """)
    p = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True)
    pgid = int(p.stdout.readline())
    wait_until(lambda: pids_with("rigbench-leader-marker"), 10, "the leader")
    members = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    assert len(members) == 3
    p.kill()
    p.wait()
    wait_until(lambda: all(gone(int(m)) for m in members), 20, "the group to go")


@pytest.mark.llama
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL],
                         ids=lambda s: s.name)
def test_serve_in_the_background_leaves_no_engine_whatever_stops_it(tmp_path, qwen_gguf, llama_server, sig):
    sh, pid = background(tmp_path, "serve", "--json", "--port", "0")
    info = wait_until(lambda: _json(tmp_path / "out.json"), 120, "the server to be ready")
    engine, port = info["pid"], int(info["url"].rsplit(":", 1)[1])
    assert not gone(engine) and port_open(port)
    os.kill(pid, sig)
    sh.wait(60)
    wait_until(lambda: gone(engine), 15, f"llama-server to stop after {sig.name}")
    assert not port_open(port)
    wait_until(lambda: not pids_with(f"sys.stdin.buffer.read.* {engine} "), 20, "its watchdog to go")
    if sig != signal.SIGKILL:
        assert f"stopping llama.cpp ({'Ctrl-C' if sig == signal.SIGINT else sig.name})" in \
            (tmp_path / "err.txt").read_text()


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def slow_suite(folder: Path) -> Path:
    for name, solve in (("a-quick", "true"), ("b-slow", "exec -a rigbench-slow-marker sleep 60"),
                        ("c-never", "true")):
        make_task(folder, name, solve=solve + "\n", timeout=120)
    return folder


def task_status(db, run_id: int) -> dict[str, str]:
    return {r["task"]: r["status"] for r in store.task_rows(db, run_id)} if store.get_run(db, run_id) else {}


@needs_bwrap
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_eval_stopped_by_a_signal_is_stored_interrupted_and_leaves_no_sandbox(tmp_path, sig):
    suite = slow_suite(tmp_path / "suite")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    sh, pid = background(tmp_path, "eval", "--tasks", str(suite), "--agent", "oracle", "--db", url, "--json")
    db = store.connect(url)
    wait_until(lambda: task_status(db, 1).get("b-slow") == "running" and pids_with("rigbench-slow-marker"), 60,
               "the slow task")
    os.kill(pid, sig)
    assert sh.wait(60) == 0   # the shell's wait; rigbench's own exit code is checked below
    run = store.get_run(db, 1)
    assert (run["status"], run["error"]) == ("interrupted", sig.name)
    assert task_status(db, 1) == {"a-quick": "success", "b-slow": "interrupted"}
    assert not pids_with("rigbench-slow-marker")
    assert f"stopped ({sig.name}): run 1 is stored as interrupted" in (tmp_path / "err.txt").read_text()


@needs_bwrap
def test_eval_exits_with_the_signals_code(tmp_path):
    suite = slow_suite(tmp_path / "suite")
    p = subprocess.Popen([sys.executable, "-m", "rigbench", "eval", "--tasks", str(suite), "--agent", "oracle",
                          "--db", f"sqlite:///{tmp_path / 'r.db'}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_until(lambda: pids_with("rigbench-slow-marker"), 60, "the slow task")
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM


@pytest.mark.llama
@needs_bwrap
@pytest.mark.parametrize("when", ["while the model starts", "while the agent works"])
def test_eval_with_the_embedded_model_stopped_by_sigterm_leaves_no_llama_server(tmp_path, qwen_gguf, llama_server,
                                                                                 when):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    sh, pid = background(tmp_path, "eval", "--task", "fix-failing-test", "--agent-cmd",
                         "'exec -a rigbench-agent-marker sleep 300'", "--db", url, "--json")
    db = store.connect(url)
    engines = wait_until(lambda: [int(x) for x in subprocess.run(["pgrep", "-P", str(pid), "llama-server"],
                                                                 capture_output=True, text=True).stdout.split()],
                         120, "llama-server to start")
    if when == "while the agent works":
        wait_until(lambda: pids_with("^rigbench-agent-marker"), 180, "the agent to start")
    os.kill(pid, signal.SIGTERM)
    sh.wait(60)
    wait_until(lambda: gone(engines[0]), 15, "llama-server to stop")
    assert not pids_with("^rigbench-agent-marker")
    run = store.get_run(db, 1)
    assert (run["status"], run["error"]) == ("interrupted", "SIGTERM")
    assert task_status(db, 1) == ({"fix-failing-test": "interrupted"} if when == "while the agent works" else {})
