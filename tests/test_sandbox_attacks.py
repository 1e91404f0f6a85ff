"""An adversarial agent and someone else's task folder against the sandboxes, for real: bubblewrap always
(CI installs it), Docker where a daemon runs. Each test asserts the host is unchanged (a sentinel file's
hash, mtime and inode; its free disk; no process left) and that the verdict is the verifier's alone."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from rigbench import store
from rigbench.sandbox import BwrapSandbox, DockerSandbox, Limits, bwrap_available, docker_available
from rigbench.sandbox.docker import storage_limit_unsupported
from rigbench.tasks import formats, runner
from tests.conftest import make_task

needs_bwrap = pytest.mark.skipif(bwrap_available() is not None, reason=f"no bubblewrap sandbox: {bwrap_available()}")
needs_docker = pytest.mark.skipif(docker_available() is not None, reason=f"no Docker sandbox: {docker_available()}")
KINDS = [pytest.param("bwrap", marks=needs_bwrap), pytest.param("docker", marks=needs_docker)]
BASE = "FROM debian:bookworm-slim\nWORKDIR /app\n"   # Docker: a local image (see the README's Development)


class Sentinel:
    """A host file outside every task folder; `unchanged()` compares content hash, mtime and inode."""

    def __init__(self, path: Path, text: str = "host secret: do not touch\n"):
        path.write_text(text)
        self.path = path
        self.before = self._state()

    def _state(self):
        st = self.path.lstat()
        return hashlib.sha256(self.path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_ino, st.st_mode

    def unchanged(self) -> bool:
        return self.path.is_file() and not self.path.is_symlink() and self._state() == self.before


@pytest.fixture
def sentinel(tmp_path):
    return Sentinel(tmp_path / "host-sentinel.txt")


def work_folder() -> Path:
    """Where a run keeps its sandboxes: below /tmp, passable by the sandbox user (pytest's tmp_path is not)."""
    d = Path(tempfile.mkdtemp(prefix="rigbench-test-"))
    d.chmod(0o711)
    return d


def run_tasks(paths: list[Path], kind: str, agent_cmd: str, db_path: Path,
              workdir: Path | None = None) -> dict[str, runner.TaskOutcome]:
    db = store.connect(f"sqlite:///{db_path}")
    rid = store.new_run(db, "eval")
    cfg = runner.EvalConfig(agent="cmd", agent_cmd=agent_cmd, sandbox=kind, workdir=workdir)
    return {o.task: o for o in runner.run_eval([formats.load_task(p) for p in paths], cfg, db, rid)}


def open_sandbox(kind: str, limits: Limits, folder: Path):
    root = Path(tempfile.mkdtemp(prefix="rigbench-attack-"))
    if kind == "bwrap":
        return BwrapSandbox(limits, root)
    (folder / "Dockerfile").write_text(BASE)
    return DockerSandbox(limits, root, folder / "Dockerfile", folder, "attack-sandbox")


def leftovers(marker: str) -> str:
    return subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout.strip()


# ---- the verdict ----------------------------------------------------------------------------------------

FORGE = """
mkdir -p /logs/verifier /tests 2>/dev/null
for f in /logs/verifier/reward.txt /tests/reward.txt /app/reward.txt; do echo 1 > $f; done 2>/dev/null
echo '{"reward": 1}' > /logs/verifier/reward.json 2>/dev/null
chmod -R a-w /logs/verifier /logs 2>/dev/null
cp /bin/true /tests/test.sh 2>/dev/null
echo bad > /app/result
# writers that wait for the agent to stop, then forge: setsid + nohup, and a double fork
setsid nohup sh -c 'sleep 1; while :; do echo 1 > /logs/verifier/reward.txt; echo good > /app/result; sleep 0.1; done' \
  >/dev/null 2>&1 < /dev/null &
( ( sleep 1; echo good > /app/result; echo 1 > /logs/verifier/reward.txt; echo rigbench-forger-marker ) \
  >/dev/null 2>&1 < /dev/null & ) &
exit 0
"""

# the verifier: waits past the forger's delay, reports what it sees, and fails the task unless it is "good"
JUDGE = """
sleep 3
echo "result: $(cat /app/result)"
if [ "$(cat /app/result)" = good ]; then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi
"""


@pytest.mark.parametrize("kind", KINDS)
def test_an_agent_cannot_forge_the_verdict_or_keep_writing_after_it_stops(tmp_path, kind):
    task = make_task(tmp_path, "forge", JUDGE)
    out = run_tasks([task], kind, FORGE, tmp_path / "s.db")["forge"]
    # the files at the agent's stop said "bad"; only the verifier's 0 counts
    assert (out.status, out.reward) == ("failure", 0.0), out.detail
    assert not leftovers("rigbench-forger-marker") and not leftovers("while :; do echo 1")


@pytest.mark.parametrize("kind", KINDS)
def test_a_verifier_that_writes_no_reward_is_an_error_never_a_pass(tmp_path, kind):
    task = make_task(tmp_path, "no-reward", "echo 'all good'\nexit 0\n")
    out = run_tasks([task], kind, "echo 1 > /app/reward.txt", tmp_path / "s.db")["no-reward"]
    assert (out.status, out.reward) == ("error", None)
    assert "wrote no reward" in out.detail


@needs_bwrap
def test_an_agent_cannot_hook_the_verifiers_python_through_its_home(tmp_path):
    """A .pth file in the agent's user site-packages (HOME=/app for the agent) would run in every python the
    verifier starts and could exit 0 before any check. The verifier's HOME is a fresh folder. (Docker is
    not tested: there the agent is root in the image and can change python itself; see the threat model.)"""
    hook = ('d=$(python3 -c "import site; print(site.getusersitepackages())"); mkdir -p "$d" && '
            'echo "import os; os._exit(0)" > "$d/hook.pth" && python3 -c "print(\'not reached\')"; echo "hooked=$?"')
    task = make_task(tmp_path, "hook", """
        if python3 -c "import sys; sys.exit(1)"; then echo 1; else echo 0; fi > /logs/verifier/reward.txt
        """)
    out = run_tasks([task], "bwrap", hook, tmp_path / "s.db")["hook"]
    db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    agent_out = next(e for e in store.task_events(db, 1) if e["kind"] == "tool_output")["data"]["output"]
    assert "hooked=0" in agent_out and "not reached" not in agent_out     # the hook works in the agent's phase
    assert (out.status, out.reward) == ("failure", 0.0), out.detail


# what a verifier (the task's, or one an agent tampered with) leaves as its reward -> the error it must give
REWARD_CASES = {
    "symlink": ("echo 1 > /tmp/one; ln -s /tmp/one /logs/verifier/reward.txt", "symbolic link"),
    "fifo": ("mkfifo /logs/verifier/reward.txt", "FIFO"),
    "folder": ("mkdir /logs/verifier/reward.txt", "folder"),
    "device": ("mknod /logs/verifier/reward.txt c 1 5 2>/dev/null || ln -s /dev/zero /logs/verifier/reward.txt",
               "device|symbolic link"),
    "huge": ("head -c 1000000 /dev/zero | tr '\\0' 1 > /logs/verifier/reward.txt", "larger than"),
    "words": ("echo yes > /logs/verifier/reward.txt", "no valid reward"),
    "nan": ("echo nan > /logs/verifier/reward.txt", "no valid reward"),
    "json-bool": ("echo '{\"reward\": true}' > /logs/verifier/reward.json", "no valid reward"),
    "hard-link": ("ln /etc/hostname /logs/verifier/reward.txt 2>/dev/null; true", "wrote no reward"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_rewards_that_are_not_a_plain_number_in_a_regular_file_are_errors(tmp_path, kind):
    import re

    tasks = [make_task(tmp_path, f"reward-{name}", script + "\n") for name, (script, _) in REWARD_CASES.items()]
    t0 = time.monotonic()
    outs = run_tasks(tasks, kind, "true", tmp_path / "s.db")
    assert time.monotonic() - t0 < 60 * len(tasks)     # a FIFO never hangs the reader
    for name, (_, why) in REWARD_CASES.items():
        o = outs[f"reward-{name}"]
        assert o.status == "error" and o.reward is None and re.search(why, o.detail), (name, o.detail)


@pytest.mark.parametrize("kind", KINDS)
def test_very_long_names_and_deep_trees_are_cleaned_up_and_the_reward_still_counts(tmp_path, kind):
    deep = ('n=$(printf "a%.0s" $(seq 250)); d=/logs/verifier; for i in $(seq 20); do d=$d/$n; done; '
            'mkdir -p "$d" && echo 1 > "$d/reward.txt"; m=/tmp; for i in $(seq 20); do m=$m/$n; done; mkdir -p "$m";'
            'echo 1 > /logs/verifier/reward.txt')
    task = make_task(tmp_path, "long-names", deep + "\n")
    work = work_folder()
    out = run_tasks([task], kind, "true", tmp_path / "s.db", work)["long-names"]
    assert (out.status, out.reward) == ("success", 1.0), out.detail
    assert list(work.iterdir()) == []           # nothing of the run is left
    work.rmdir()


# ---- host files -----------------------------------------------------------------------------------------

def plant_links(sentinel: Path) -> str:
    s = str(sentinel)
    return f"""
for d in /tests /logs/verifier /solution /logs/agent /app /tmp /root; do
  mkdir -p $d 2>/dev/null
  for f in test.sh test_outputs.py reward.txt reward.json run-tests.sh solve.sh instruction.md response.md; do
    ln -sfn {s} $d/$f 2>/dev/null
  done
  ln -sfn $(dirname {s}) $d/hostdir 2>/dev/null
  ln {s} $d/hard 2>/dev/null
done
# the verifier's folders themselves as links to host paths (Docker resolves mounts inside the container)
rm -rf /tests /logs/verifier 2>/dev/null; ln -s $(dirname {s}) /tests; ln -s $(dirname {s})/v /logs/verifier
echo planted
"""


@pytest.mark.parametrize("kind", KINDS)
def test_links_an_agent_plants_never_let_rigbench_write_or_read_a_host_file(tmp_path, kind, sentinel):
    task = make_task(tmp_path, "plant", """
        grep -q marker-from-the-task /tests/test_outputs.py && echo 1 > /logs/verifier/reward.txt
        """, files={"tests/test_outputs.py": "# marker-from-the-task\n"})
    out = run_tasks([task], kind, plant_links(sentinel.path), tmp_path / "s.db")["plant"]
    assert sentinel.unchanged()
    # the verifier saw the task's own tests (copied in fresh), and its reward is what counts
    assert (out.status, out.reward) == ("success", 1.0), out.detail


@pytest.mark.parametrize("kind", KINDS)
def test_rigbench_writes_into_the_sandbox_never_through_a_planted_link(tmp_path, kind, sentinel):
    sb = open_sandbox(kind, Limits(storage_mb=600), tmp_path)
    try:
        sb.run(f"ln -sfn {sentinel.path} /app/response.md; mkdir -p /logs/agent; "
               f"ln -sfn {sentinel.path} /logs/agent/instruction.md")
        sb.write_file("/app/response.md", "the model's answer")
        sb.write_file("/logs/agent/instruction.md", "the instruction")
        assert sb.run("cat /app/response.md").output == "the model's answer"
    finally:
        sb.close()
    assert sentinel.unchanged()


LINKS_OUT = {
    "absolute link in environment": lambda d, s: (d / "environment" / "secret").symlink_to(s),
    "relative link climbing out": lambda d, s: (d / "environment" / "secret").symlink_to(
        os.path.relpath(s, d / "environment")),
    "link to a folder outside": lambda d, s: (d / "environment" / "hostdir").symlink_to(s.parent),
    "link in tests": lambda d, s: (d / "tests" / "helper.py").symlink_to(s),
    "instruction.md is a link": lambda d, s: ((d / "instruction.md").unlink(), (d / "instruction.md").symlink_to(s)),
    "chain through a link inside": lambda d, s: ((d / "environment" / "out").symlink_to(s),
                                                 (d / "environment" / "secret").symlink_to("out")),
    "FIFO in environment": lambda d, s: os.mkfifo(d / "environment" / "secret"),
}


@pytest.mark.parametrize("case", LINKS_OUT)
def test_a_task_folder_with_a_link_out_of_it_is_refused_naming_the_link(tmp_path, sentinel, case, run_cli):
    d = make_task(tmp_path / "suite", "borrowed", "echo 1 > /logs/verifier/reward.txt\n",
                  dockerfile=BASE + "COPY secret /app/secret\n")
    LINKS_OUT[case](d, sentinel.path)
    with pytest.raises(formats.TaskFormatError, match="refused") as e:
        formats.load_task(d)
    assert str(d) in str(e.value) and "\n" not in str(e.value)
    res = run_cli("eval", "--tasks", str(tmp_path / "suite"), "--agent", "oracle", "--db",
                  f"sqlite:///{tmp_path / 's.db'}", ok=False)
    assert res.returncode != 0 and "refused" in res.stderr and "Traceback" not in res.stderr
    assert sentinel.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_links_inside_a_task_folder_are_copied_as_links(tmp_path, kind):
    d = make_task(tmp_path, "inner-links", """
        [ "$(readlink /app/env/alias)" = data.txt ] && [ "$(cat /app/env/alias)" = payload ] \
          && echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt
        """, dockerfile=BASE + "COPY . /app/env/\n", files={"environment/data.txt": "payload"})
    (d / "environment" / "alias").symlink_to("data.txt")
    out = run_tasks([d], kind, "true", tmp_path / "s.db")["inner-links"]
    assert (out.status, out.reward) == ("success", 1.0), out.detail


# ---- resources ------------------------------------------------------------------------------------------

FILL = ("for f in /app/fill /tmp/fill /root/fill /logs/agent/fill /dev/shm/fill /fill; do "
        "dd if=/dev/zero of=$f bs=1M count=1500 2>&1; done; df -m /app | tail -1")


@pytest.mark.parametrize("kind", KINDS)
def test_an_agent_that_fills_the_disk_stops_at_the_task_limit(tmp_path, kind):
    # btrfs counts the image's own ~370 MB in a container's size
    limit = 64 if kind == "bwrap" else 600
    task = make_task(tmp_path, "fill", f"""
        used=$(du -skx /app /tmp /logs/agent 2>/dev/null | awk '{{s += $1}} END {{print s}}')
        echo "used $used KiB"
        [ "$used" -le {limit * 1024} ] && echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt
        """, environment=f"storage_mb = {limit}", timeout=120)
    if kind == "docker" and (why := storage_limit_unsupported("debian:bookworm-slim")):
        out = run_tasks([task], kind, FILL, tmp_path / "s.db")["fill"]
        assert out.status == "error" and "cannot limit a container's disk" in out.detail and why in out.detail
        pytest.skip(f"refused as it should be: {why}")
    free = shutil.disk_usage(tempfile.gettempdir()).free
    out = run_tasks([task], kind, FILL, tmp_path / "s.db")["fill"]
    # the agent tried 9 GB; the host lost at most the task's limit (plus others' writes meanwhile)
    assert free - shutil.disk_usage(tempfile.gettempdir()).free < (limit + 300) * 2**20
    assert (out.status, out.reward) == ("success", 1.0), out.detail
    db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    agent_out = next(e for e in store.task_events(db, 1) if e["kind"] == "tool_output")["data"]["output"]
    assert "No space left on device" in agent_out or "Disk quota exceeded" in agent_out


@pytest.mark.parametrize("kind", KINDS)
def test_memory_processes_and_output_are_capped(tmp_path, kind):
    sb = open_sandbox(kind, Limits(memory_mb=256, max_procs=64, output_bytes=100_000, storage_mb=600), tmp_path)
    try:
        r = sb.run("python3 -c 'b = bytearray(1024**3); print(\"allocated\")'", timeout=60)
        assert "allocated" not in r.output and r.exit_code != 0
        # `wait`: the sleeps hold the container's pids until they end, and `docker exec` needs one for the next
        r = sb.run("{ for i in $(seq 200); do sleep 5 & done; wait; } 2>&1 | tail -1; echo spawned", timeout=60)
        assert "fork:" in r.output      # bash could not start them all
        r = sb.run("head -c 20000000 /dev/zero | tr '\\0' x", timeout=60)
        assert len(r.output) < 100_200 and r.dropped_bytes == 20_000_000 - 100_000
    finally:
        sb.close()


@pytest.mark.parametrize("kind", KINDS)
def test_killing_rigbench_with_sigkill_leaves_no_sandbox_process_or_container(tmp_path, kind):
    task = make_task(tmp_path, "killed", "echo 1 > /logs/verifier/reward.txt\n", timeout=300)
    work = work_folder()
    script = textwrap.dedent(f"""
        import sys
        from rigbench import store
        from rigbench.tasks import formats, runner
        db = store.connect("sqlite:///{tmp_path / 's.db'}")
        # the marker is joined here so that only the sandboxed command's own command line holds it
        cfg = runner.EvalConfig(agent="cmd", agent_cmd="sleep 300; echo rigbench-sig" + "kill-marker", sandbox="{kind}",
                                workdir="{work}")
        runner.run_eval([formats.load_task(__import__("pathlib").Path("{task}"))], cfg, db, store.new_run(db, "eval"))
        """)
    p = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while not leftovers("sleep 300; echo rigbench-sigkill-marker") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers("sleep 300; echo rigbench-sigkill-marker"), "the agent never started"
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 30
    while leftovers("sleep 300; echo rigbench-sigkill-marker") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers("sleep 300; echo rigbench-sigkill-marker")
    if kind == "docker":
        from rigbench.sandbox.docker import _remove_stale

        def containers(*flags):
            return subprocess.run(["docker", "ps", *flags, "--filter", "name=rigbench-killed", "-q"],
                                  capture_output=True, text=True).stdout.strip()

        deadline = time.monotonic() + 30
        while containers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert containers() == ""           # stopped when rigbench's end of its stdin closed
        _remove_stale()                     # what the next Docker sandbox does first
        assert containers("-a") == ""
    shutil.rmtree(work)   # a killed rigbench cannot remove its (empty) work folder


# ---- the bubblewrap root overlay -------------------------------------------------------------------------

OVERLAY_ATTACK = """
for f in /usr/bin/bash /usr/bin/python3 /etc/passwd /etc/rigbench-overlay-sentinel /root/.bashrc \\
         /usr/local/share/rigbench-overlay-sentinel; do
  echo pwned > "$f"; rm -f "$f"; mv "$f" "$f.moved"
done 2>/dev/null
mkdir -p /usr/rigbench-new /etc/rigbench-new /root/rigbench-new /usr/src/proj/sub 2>/dev/null
echo planted > /usr/src/proj/sub/file; echo planted > /root/rigbench-new/file 2>/dev/null
ln -sfn /etc /usr/src/proj/etc-link; echo through > /usr/src/proj/etc-link/rigbench-through 2>/dev/null
cat /usr/src/proj/sub/file
exit 0
"""


@needs_bwrap
def test_the_root_overlay_keeps_the_hosts_usr_etc_and_root_unchanged(tmp_path):
    """The overlay gives a task any WORKDIR (here /usr/src/proj, a system folder): the agent writes to
    /usr, /etc and /root inside, and the host's files stay exactly as they were."""
    sentinels = [Sentinel(Path(p)) for p in ("/etc/rigbench-overlay-sentinel", "/usr/local/share/"
                                             "rigbench-overlay-sentinel")]
    host = [Path(p) for p in ("/usr/bin/bash", "/usr/bin/python3", "/etc/passwd")]
    before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in host}
    try:
        task = make_task(tmp_path, "overlay", "test -f /usr/src/proj/sub/file && bash -c 'echo 1' > "
                         "/logs/verifier/reward.txt\n", dockerfile="FROM debian:bookworm-slim\nWORKDIR /usr/src/proj\n")
        out = run_tasks([task], "bwrap", OVERLAY_ATTACK, tmp_path / "s.db")["overlay"]
        assert (out.status, out.reward) == ("success", 1.0), out.detail   # the workdir's files reach the verifier
        assert all(s.unchanged() for s in sentinels)
        assert {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in host} == before
        for p in ("/usr/rigbench-new", "/etc/rigbench-new", "/root/rigbench-new", "/usr/src/proj",
                  "/etc/rigbench-through", "/usr/bin/bash.moved"):
            assert not Path(p).exists(), p
    finally:
        for s in sentinels:
            s.path.unlink()
